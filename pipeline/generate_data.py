"""`launch.py generate-data`: (oracle generation ->) validation -> dedup -> decontamination -> dataset on disk.

With `--input FILE.jsonl` the exercises come from the file (no oracle) and are judged in an in-process sandbox;
with `--config` alone the configured oracle writes them and the executor actors judge them across the cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from codealign.config import ConfigError, RunConfig, load_config
from codealign.records import Exercise
from exercises.build import FilterOutcome, filter_exercises, write_output
from exercises.decontamination import Decontaminator, load_benchmarks
from exercises.loaders import load_mbpp
from exercises.schema import ExerciseFileError, load_exercises_jsonl


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run config with an oracle: section (generation settings and filters)")
    p.add_argument("--input", help="exercises in the JSONL schema, reference set: filter them, no oracle")
    p.add_argument("--out", required=True, help="new directory for the dataset, exercises.jsonl and report.json")
    p.add_argument("--held", action="append", default=[], metavar="FILE.jsonl",
                   help="training data already held: near-duplicates of it are dropped (repeatable)")
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
    from sandbox import Sandbox

    bar = tqdm(total=3, desc="filters", unit="stage")

    def tick(stage: str, n: int) -> None:
        bar.set_postfix_str(f"{stage}: {n} in")
        bar.update(1)

    with Sandbox(timeout_s=cfg.executor.timeout_s, memory_mb=cfg.executor.memory_mb, rewards=cfg.reward) as box:
        outcome = filter_exercises(exercises, box.run_many, cfg.oracle, held, decon, progress=tick)
    bar.close()
    return outcome


def main(args: argparse.Namespace) -> int:
    try:
        if args.config:
            cfg = load_config(args.config, args.overrides)
        else:
            cfg = RunConfig()
            if args.overrides:
                raise ConfigError("--set needs --config")
        if not args.input and cfg.oracle.backend == "none":
            raise ConfigError("oracle.backend: generate-data without --input needs an oracle (vllm or remote)")
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"output directory {out} exists and is not empty; choose a new one")
        exercises = load_exercises_jsonl(args.input) if args.input else None
        held = held_exercises(cfg, args.held)
        decon = Decontaminator(load_benchmarks(cfg.resolved_data_dir()), ngram=cfg.oracle.contamination_ngram)
    except (ConfigError, ExerciseFileError, FileNotFoundError, FileExistsError) as exc:
        print(f"generate-data: {exc}", file=sys.stderr)
        return 2
    if exercises is not None:
        outcome = filter_with_sandbox(exercises, cfg, held, decon)
    else:
        from pipeline.oracle_run import generate_and_filter

        outcome = generate_and_filter(cfg, held, decon)
    write_output(out, outcome)
    print(f"kept {len(outcome.kept)}, dropped {len(outcome.dropped)} {outcome.counts()}; wrote {out}")
    return 0
