"""Functional correctness of a sample file, human-eval style, judged by `sandbox.Sandbox`.

A sample is {"task_id": ..., "completion": ...}; for completion-style tasks (HumanEval) the program is the task's
stub followed by the completion, as in openai/human-eval. pass@k is reported for every k that all tasks have
enough samples for, as `evaluate_functional_correctness` does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from codealign.evaluation.passk import pass_at_k
from codealign.records import Exercise
from codealign.sandbox import Result, Sandbox


def read_samples(path: str | Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def program_for(exercise: Exercise, completion: str) -> str:
    return exercise.stub + completion if exercise.stub else completion


def evaluate_samples(
    samples: Iterable[dict], exercises: dict[str, Exercise], ks: Sequence[int], sandbox: Sandbox
) -> tuple[dict[str, float], list[Result]]:
    samples = list(samples)
    unknown = sorted({str(s["task_id"]) for s in samples} - set(exercises))
    if unknown:
        raise KeyError(f"samples name tasks that are not in the benchmark: {unknown[:5]}")
    jobs = []
    for s in samples:
        ex = exercises[str(s["task_id"])]
        jobs.append((program_for(ex, s["completion"]), ex.tests))
    results = sandbox.run_many(jobs)
    per_task: dict[str, list[bool]] = defaultdict(list)
    for s, r in zip(samples, results):
        per_task[str(s["task_id"])].append(r.passed)
    n = np.array([len(v) for v in per_task.values()])
    c = np.array([sum(v) for v in per_task.values()])
    scores = {
        f"pass@{k}": float(np.mean([pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n, c)]))
        for k in ks
        if (n >= k).all()
    }
    return scores, results
