"""Turn judged samples into DPO preference pairs."""

from __future__ import annotations

import random
from collections import defaultdict

from codealign.exercises.extract import as_answer
from codealign.records import Exercise, Experience, PreferencePair
from codealign.sandbox import Verdict

# `hardest`: the most informative negatives first - code that ran and failed assertions, then code that crashed,
# and last the syntax errors and timeouts, which any pair already teaches to avoid
HARDEST_FIRST = (Verdict.FAILED, Verdict.RUNTIME_ERROR, Verdict.SYNTAX_ERROR, Verdict.TIMEOUT)
REJECTED_CHOICES = ("hardest", "worst", "random")


def order_rejected(failing: list[Experience], choice: str, rng: random.Random) -> list[Experience]:
    """The failing samples in the order they are taken as rejected answers (`train.rejected`)."""
    if choice == "hardest":
        return sorted(failing, key=lambda e: HARDEST_FIRST.index(e.result.verdict))
    if choice == "worst":
        return sorted(failing, key=lambda e: e.result.reward)
    if choice == "random":
        return rng.sample(failing, len(failing))
    raise ValueError(f"train.rejected: unknown {choice!r}; choose from {REJECTED_CHOICES}")


def build_pairs(
    exercises: dict[str, Exercise],
    experiences: list[Experience],
    max_pairs: int,
    per_exercise: int = 2,
    seed: int = 0,
    rejected: str = "hardest",
    verified_references: set[str] | None = None,
) -> list[PreferencePair]:
    """A passing and a failing sample of the same exercise make a pair. Where no sample passes, the exercise's
    reference solution stands in for the oracle as the chosen answer - only if it passed its own tests in the
    sandbox (`verified_references`: the ids of those exercises; None trusts every reference). Exercises every
    sample passes teach nothing here and give no pair."""
    rng = random.Random(seed)
    by_exercise: dict[str, list[Experience]] = defaultdict(list)
    for exp in experiences:
        by_exercise[exp.exercise_id].append(exp)
    pairs: list[PreferencePair] = []
    for ex_id, group in by_exercise.items():
        ex = exercises[ex_id]
        good = [e for e in group if e.result.verdict is Verdict.PASSED]
        seen: set[str] = set()
        failing = []
        for e in group:
            if e.result.verdict is not Verdict.PASSED and e.completion not in seen and e.completion.strip():
                seen.add(e.completion)
                failing.append(e)
        if not failing:
            continue
        reference_ok = ex.reference and (verified_references is None or ex_id in verified_references)
        for i, bad in enumerate(order_rejected(failing, rejected, rng)[:per_exercise]):
            if good:
                winner = good[i % len(good)]
                chosen, why, ids = winner.completion, "passed", (winner.sample_id, bad.sample_id)
            elif reference_ok:
                chosen, why, ids = as_answer(ex.reference), "reference", (bad.sample_id,)
            else:
                continue
            pairs.append(PreferencePair(ex.prompt, chosen, bad.completion, f"{why}>{bad.result.verdict.value}", ex_id,
                                        tuple(sid for sid in ids if sid)))  # the samples it trains (the accounts)
    rng.shuffle(pairs)
    return pairs[:max_pairs]


def references_to_check(exercises: dict[str, Exercise], experiences: list[Experience]) -> list[Exercise]:
    """The exercises whose reference would be a chosen answer: no sample passed, at least one failed."""
    passed = {e.exercise_id for e in experiences if e.result.verdict is Verdict.PASSED}
    ids = {e.exercise_id for e in experiences if e.result.verdict is not Verdict.PASSED}
    return [exercises[i] for i in sorted(ids - passed) if exercises[i].reference]
