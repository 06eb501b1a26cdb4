"""`launch.py generate-data`: (oracle generation ->) validation -> dedup -> decontamination -> dataset on disk;
or, with `--backtranslate DIR`, instructions for code files written by the oracle and rated by another model.

With `--input FILE.jsonl` the exercises come from the file (no oracle) and are judged in an in-process sandbox;
with `--config` alone the configured oracle writes them and the executor actors judge them across the cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from codealign.config import ConfigError, RunConfig, load_config
from codealign.exercises.build import FilterOutcome, filter_exercises, write_output
from codealign.exercises.decontamination import Decontaminator, load_benchmarks
from codealign.exercises.loaders import load_mbpp
from codealign.exercises.schema import ExerciseFileError, load_exercises_jsonl
from codealign.records import Exercise


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run config with an oracle: section (generation settings and filters)")
    p.add_argument("--input", help="exercises in the JSONL schema, reference set: filter them, no oracle")
    p.add_argument("--out", required=True, help="new directory for the dataset, exercises.jsonl and report.json")
    p.add_argument("--held", action="append", default=[], metavar="FILE.jsonl",
                   help="training data already held: near-duplicates of it are dropped (repeatable)")
    p.add_argument("--backtranslate", metavar="DIR",
                   help="instruction back-translation: code files under DIR (--glob) -> the oracle's instructions "
                        "-> rated by oracle.rater_model -> DIR_OUT/sft.jsonl")
    p.add_argument("--glob", default="**/*.py", help="files of --backtranslate DIR (default **/*.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def held_exercises(cfg: RunConfig, extra: list[str]) -> list[Exercise]:
    held: list[Exercise] = []
    if cfg.oracle.dedup_against_mbpp_train:
        held += load_mbpp(cfg.resolved_data_dir(), cfg.data.train_ids)
    for path in extra:
        held += load_exercises_jsonl(path)
    return held


def filter_with_sandbox(exercises: list[Exercise], cfg: RunConfig, held: list[Exercise],
                        decon: Decontaminator) -> FilterOutcome:
    from codealign.sandbox import Sandbox

    bar = tqdm(total=3, desc="filters", unit="stage")

    def tick(stage: str, n: int) -> None:
        bar.set_postfix_str(f"{stage}: {n} in")
        bar.update(1)

    with Sandbox(timeout_s=cfg.executor.timeout_s, memory_mb=cfg.executor.memory_mb, rewards=cfg.reward,
                 in_process=cfg.executor.in_process) as box:
        outcome = filter_exercises(exercises, box.run_many, cfg.oracle, held, decon, progress=tick)
    bar.close()
    return outcome


def read_code_files(root: str, pattern: str) -> list[tuple[str, str]]:
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"--backtranslate {root}: not a directory")
    files = []
    for path in sorted(p for p in base.glob(pattern) if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text we can learn from
        if text.strip():
            files.append((str(path.relative_to(base)), text))
    if not files:
        raise FileNotFoundError(f"--backtranslate {root}: no readable files match {pattern!r}")
    return files


def write_backtranslation(out: Path, result) -> None:
    """sft.jsonl (prompt = instruction, completion = the file's code, path, rating) and report.json, into a
    temporary sibling renamed into place."""
    import json
    import os
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ratings = {r["path"]: r["rating"] for r in result.rows}
        lines = [json.dumps({"prompt": e.prompt, "completion": e.completion, "path": e.source.split(":", 1)[1],
                             "rating": ratings[e.source.split(":", 1)[1]]}) for e in result.examples]
        (tmp / "sft.jsonl").write_text("".join(line + "\n" for line in lines))
        (tmp / "report.json").write_text(json.dumps({**result.report(), "rows": result.rows}, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def backtranslate_main(args: argparse.Namespace, cfg: RunConfig, out: Path) -> int:
    try:
        if cfg.oracle.backend == "none":
            raise ConfigError("oracle.backend: --backtranslate needs an oracle to write instructions (vllm or remote)")
        if not cfg.oracle.rater_model:
            raise ConfigError("oracle.rater_model: --backtranslate needs a rater, a model other than oracle.model")
        files = read_code_files(args.backtranslate, args.glob)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"generate-data: {exc}", file=sys.stderr)
        return 2
    from codealign.pipeline.oracle_run import backtranslate_corpus

    result = backtranslate_corpus(cfg, files)
    write_backtranslation(out, result)
    print(f"back-translation: {dict(result.counts)}, ratings {result.report()['ratings']}; wrote {out}")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        if args.config:
            cfg = load_config(args.config, args.overrides)
        else:
            cfg = RunConfig()
            if args.overrides:
                raise ConfigError("--set needs --config")
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"output directory {out} exists and is not empty; choose a new one")
        if args.backtranslate:
            if args.input:
                raise ConfigError("--backtranslate and --input: choose one")
            return backtranslate_main(args, cfg, out)
        if not args.input and cfg.oracle.backend == "none":
            raise ConfigError("oracle.backend: generate-data without --input needs an oracle (vllm or remote)")
        exercises = load_exercises_jsonl(args.input) if args.input else None
        held = held_exercises(cfg, args.held)
        decon = Decontaminator(load_benchmarks(cfg.resolved_data_dir()), ngram=cfg.oracle.contamination_ngram)
    except (ConfigError, ExerciseFileError, FileNotFoundError, FileExistsError) as exc:
        print(f"generate-data: {exc}", file=sys.stderr)
        return 2
    if exercises is not None:
        outcome = filter_with_sandbox(exercises, cfg, held, decon)
    else:
        from codealign.pipeline.oracle_run import generate_and_filter

        outcome = generate_and_filter(cfg, held, decon)
    write_output(out, outcome)
    print(f"kept {len(outcome.kept)}, dropped {len(outcome.dropped)} {outcome.counts()}; wrote {out}")
    return 0
