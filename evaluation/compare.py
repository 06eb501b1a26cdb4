"""How sure a pass rate is, and whether two models differ: bootstrap intervals over tasks, the paired difference
with its interval, and the exact McNemar test on the tasks where the two disagree.

Tasks are the unit of resampling: a benchmark of 164 or 500 tasks is a sample of the tasks one cares about, so
the interval says how much the number would move on another draw of tasks of the same kind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from math import comb
from pathlib import Path

import numpy as np

BOOTSTRAP_SAMPLES = 10_000


def bootstrap_ci(per_task: list[float] | np.ndarray, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-task scores (pass@1 of each task)."""
    x = np.asarray(per_task, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under no difference, of the b + c tasks where exactly one model passes,
    each is equally likely to be either's, so min(b, c) is Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


@dataclass
class PairedComparison:
    tasks: int
    pass_a: float
    pass_b: float
    difference: float  # b - a
    ci95: tuple[float, float]
    only_a: int  # tasks A solves and B does not
    only_b: int
    p_value: float  # exact McNemar (binary outcomes: a task counts as solved when its pass@1 is >= 0.5)

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self, a: str = "A", b: str = "B") -> str:
        lo, hi = self.ci95
        verdict = "significant" if self.p_value < 0.05 else "not significant"
        return (f"{b} − {a}: {self.difference:+.3f} pass@1 (95% CI {lo:+.3f} to {hi:+.3f}) over {self.tasks} tasks; "
                f"{self.only_a} solved only by {a}, {self.only_b} only by {b}; exact McNemar p = {self.p_value:.3g} "
                f"({verdict} at 0.05)")


def paired_comparison(a: dict[str, float], b: dict[str, float], seed: int = 0) -> PairedComparison:
    """a, b: task id -> pass@1 of that task (0/1 for greedy). Only tasks both evaluated are compared."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two evaluations share no task ids; compare evaluations of the same benchmark")
    xa = np.array([a[t] for t in common], dtype=float)
    xb = np.array([b[t] for t in common], dtype=float)
    diff = xb - xa
    solved_a, solved_b = xa >= 0.5, xb >= 0.5
    only_a = int((solved_a & ~solved_b).sum())
    only_b = int((solved_b & ~solved_a).sum())
    return PairedComparison(len(common), float(xa.mean()), float(xb.mean()), float(diff.mean()),
                            bootstrap_ci(diff, seed=seed), only_a, only_b, mcnemar_exact(only_a, only_b))


def per_task_pass1(tasks_file: str | Path) -> dict[str, float]:
    """task id -> pass@1 from an eval's tasks.jsonl (the fraction of its samples that passed)."""
    out = {}
    for line in Path(tasks_file).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["task_id"]] = row["passed"] / max(1, row["n"])
    return out


def find_tasks_file(path: str | Path, benchmark: str = "") -> Path:
    """An eval output directory holds tasks.jsonl; a run directory holds eval/after/<benchmark>/tasks.jsonl."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "tasks.jsonl").is_file():
        return path / "tasks.jsonl"
    found = sorted((path / "eval" / "after").glob(f"{benchmark or '*'}/tasks.jsonl"))
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(f.parent.name for f in found)
        raise ValueError(f"{path}: evaluated on several benchmarks ({names}); name one with --benchmark")
    raise FileNotFoundError(f"{path}: no tasks.jsonl (an eval --out directory) and no eval/after/*/tasks.jsonl")


def compare_dirs(a: str | Path, b: str | Path, benchmark: str = "") -> PairedComparison:
    return paired_comparison(per_task_pass1(find_tasks_file(a, benchmark)),
                             per_task_pass1(find_tasks_file(b, benchmark)))
