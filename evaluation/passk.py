"""pass@k: the unbiased estimator (Chen et al., 2021) and evaluation of a generator on exercises."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from codealign.exercises.extract import extract_code
from codealign.records import Completion, ExecutionResult, Exercise, GenerationRequest


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k), in the numerically stable product form."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class EvalReport:
    pass_at: dict[int, float]
    n_exercises: int
    per_exercise: dict[str, int] = field(default_factory=dict)  # exercise id -> samples passed
    verdicts: dict[str, int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)  # one per completion: id, text, verdict, policy version


def evaluate(
    generate: Callable[[list[GenerationRequest]], list[list[Completion]]],
    execute: Callable[[list[tuple[str, str]]], list[ExecutionResult]],
    exercises: Sequence[Exercise],
    n: int = 1,
    ks: Sequence[int] = (1,),
    temperature: float = 0.0,
    max_tokens: int = 384,
    seed: int = 0,
) -> EvalReport:
    requests = [
        GenerationRequest(ex.prompt, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, request_id=ex.id)
        for ex in exercises
    ]
    completions = generate(requests)
    flat = [(ex, comp) for ex, comps in zip(exercises, completions) for comp in comps]
    results = execute([(extract_code(comp.text), ex.tests) for ex, comp in flat])
    passed = {ex.id: 0 for ex in exercises}
    verdicts: dict[str, int] = {}
    samples = []
    for (ex, comp), res in zip(flat, results):
        passed[ex.id] += res.verdict.value == "passed"
        verdicts[res.verdict.value] = verdicts.get(res.verdict.value, 0) + 1
        samples.append({"exercise_id": ex.id, "text": comp.text, "verdict": res.verdict.value,
                        "policy_version": comp.policy_version, "error": comp.error})
    scores = {k: float(np.mean([pass_at_k(n, c, k) for c in passed.values()])) if passed else 0.0 for k in ks}
    return EvalReport(scores, len(exercises), passed, verdicts, samples)
