"""What the pipeline works through: rounds of exercises (drawn exactly as the round-based loop draws them, so
`max_staleness: 0` samples the same exercises with the same seeds), their sample ids, and per-stage busy clocks."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from codealign.config import RunConfig
from codealign.records import Exercise, GenerationRequest


@dataclass
class RoundPlan:
    round: int
    exercises: list[Exercise]
    requests: list[GenerationRequest]

    def sample_ids(self, samples_per_exercise: int) -> list[str]:
        return [sample_id(self.round, i, k) for i in range(len(self.exercises)) for k in range(samples_per_exercise)]


def sample_id(round_: int, exercise_index: int, k: int) -> str:
    return f"r{round_:04d}-e{exercise_index:03d}-s{k:02d}"


def plan_rounds(cfg: RunConfig, train_set: list[Exercise], rng: random.Random) -> list[RoundPlan]:
    """The rounds of the run, in order: round r is what iteration r of the round-based loop samples."""
    plans = []
    for it in range(cfg.loop.iterations):
        batch = rng.sample(train_set, min(cfg.loop.exercises_per_iteration, len(train_set)))
        seed = cfg.seed + 1000 * it
        requests = [
            GenerationRequest(ex.prompt, n=cfg.loop.samples_per_exercise, temperature=cfg.loop.temperature,
                              top_p=cfg.loop.top_p, max_tokens=cfg.generator.max_tokens, seed=seed + i,
                              request_id=ex.id)
            for i, ex in enumerate(batch)
        ]
        plans.append(RoundPlan(it, batch, requests))
    return plans


@dataclass
class BusyClock:
    """Seconds during which at least one task of a stage was running (the union of their intervals)."""

    busy: dict[str, float] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def begin(self, stage: str, n: int = 1) -> None:
        if not self.active.get(stage):
            self.since[stage] = time.monotonic()
        self.active[stage] = self.active.get(stage, 0) + n

    def end(self, stage: str, n: int = 1) -> None:
        self.active[stage] -= n
        if self.active[stage] == 0:
            self.busy[stage] = self.busy.get(stage, 0.0) + time.monotonic() - self.since.pop(stage)

    def snapshot(self) -> dict[str, float]:
        now = time.monotonic()
        out = dict(self.busy)
        for stage, t0 in self.since.items():
            out[stage] = out.get(stage, 0.0) + now - t0
        return out

    def fractions(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self.started)
        return {k: round(v / wall, 3) for k, v in self.snapshot().items()}
