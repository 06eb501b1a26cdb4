"""Benchmarks by name: HumanEval, HumanEval+, MBPP test and validation, or an exercise file (exercises/schema.py)."""

from __future__ import annotations

from pathlib import Path

from codealign.exercises.loaders import (
    MBPP_TEST_IDS,
    MBPP_VALIDATION_IDS,
    load_humaneval,
    load_humaneval_plus,
    load_mbpp,
)
from codealign.exercises.schema import load_exercises_jsonl
from codealign.records import Exercise

BENCHMARKS = {
    "humaneval": "HumanEval, 164 tasks",
    "humaneval+": "HumanEval+ (EvalPlus v0.1.10 tests), 164 tasks",
    "mbpp": "MBPP test, task ids 11-510 (500)",
    "mbpp-val": "MBPP validation, task ids 511-600 (90)",
}


def benchmark_name(spec: str) -> str:
    """A short name for output paths: the benchmark's own, or the exercise file's stem."""
    return spec if spec in BENCHMARKS else Path(spec).stem


def load_benchmark(spec: str, data_dir: str | Path, limit: int = 0) -> list[Exercise]:
    """The tasks of `spec` (a name in BENCHMARKS or a path to a .jsonl exercise file), the first `limit` if > 0."""
    if spec == "humaneval":
        tasks = load_humaneval(data_dir)
    elif spec == "humaneval+":
        tasks = load_humaneval_plus(data_dir)
    elif spec == "mbpp":
        tasks = load_mbpp(data_dir, MBPP_TEST_IDS)
    elif spec == "mbpp-val":
        tasks = load_mbpp(data_dir, MBPP_VALIDATION_IDS)
    elif spec.endswith(".jsonl") or Path(spec).is_file():
        tasks = load_exercises_jsonl(spec)
    else:
        raise ValueError(f"--benchmark: unknown benchmark {spec!r}; choose from {', '.join(BENCHMARKS)} "
                         f"or give a .jsonl file of exercises")
    if limit < 0:
        raise ValueError(f"--limit: must be >= 0, got {limit}")
    return tasks[:limit] if limit else tasks
