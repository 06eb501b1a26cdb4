"""Turn judged samples into DPO preference pairs."""

from __future__ import annotations

import random
from collections import defaultdict

from codealign.records import Exercise, Experience, PreferencePair
from exercises.extract import as_answer
from sandbox import Verdict


def build_pairs(
    exercises: dict[str, Exercise],
    experiences: list[Experience],
    max_pairs: int,
    per_exercise: int = 2,
    seed: int = 0,
) -> list[PreferencePair]:
    """A passing and a failing sample of the same exercise make a pair. Where no sample passes, the exercise's
    reference solution stands in for the oracle as the chosen answer. Exercises every sample passes teach
    nothing here and give no pair."""
    rng = random.Random(seed)
    by_exercise: dict[str, list[Experience]] = defaultdict(list)
    for exp in experiences:
        by_exercise[exp.exercise_id].append(exp)
    pairs: list[PreferencePair] = []
    for ex_id, group in by_exercise.items():
        ex = exercises[ex_id]
        good = [e for e in group if e.result.verdict is Verdict.PASSED]
        seen: set[str] = set()
        bad = []
        for e in sorted(group, key=lambda e: e.result.reward):  # worst first
            if e.result.verdict is not Verdict.PASSED and e.completion not in seen and e.completion.strip():
                seen.add(e.completion)
                bad.append(e)
        if not bad:
            continue
        for i, rejected in enumerate(bad[:per_exercise]):
            if good:
                chosen, why = good[i % len(good)].completion, "passed"
            elif ex.reference:
                chosen, why = as_answer(ex.reference), "reference"
            else:
                continue
            pairs.append(PreferencePair(ex.prompt, chosen, rejected.completion,
                                        f"{why}>{rejected.result.verdict.value}", ex_id))
    rng.shuffle(pairs)
    return pairs[:max_pairs]
