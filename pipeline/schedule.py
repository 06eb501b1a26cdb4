"""What the pipeline works through: rounds of exercises, their sample ids, and per-stage busy clocks.

The stream asks for round r's plan (`plans[r]`) when it admits round r, in order, so a source may decide a round's
exercises from the results of the rounds before it: `plan_rounds` draws them all up front from the training set;
the oracle's game (pipeline/adversarial.OracleGame) writes them from the student's pass rates as they come."""

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
    notes: dict = field(default_factory=dict)  # what the source says about the round, logged in its record

    def sample_ids(self, samples_per_exercise: int) -> list[str]:
        return [sample_id(self.round, i, k) for i in range(len(self.exercises)) for k in range(samples_per_exercise)]


def sample_id(round_: int, exercise_index: int, k: int) -> str:
    return f"r{round_:04d}-e{exercise_index:03d}-s{k:02d}"


def round_plan(cfg: RunConfig, round_: int, exercises: list[Exercise], notes: dict | None = None) -> RoundPlan:
    """Round `round_` sampling `exercises`: `loop.samples_per_exercise` each, seeded by round and position."""
    seed = cfg.seed + 1000 * round_
    requests = [
        GenerationRequest(ex.prompt, n=cfg.loop.samples_per_exercise, temperature=cfg.loop.temperature,
                          top_p=cfg.loop.top_p, max_tokens=cfg.generator.max_tokens, seed=seed + i, request_id=ex.id)
        for i, ex in enumerate(exercises)
    ]
    return RoundPlan(round_, exercises, requests, notes or {})


def plan_rounds(cfg: RunConfig, train_set: list[Exercise], rng: random.Random) -> list[RoundPlan]:
    """The rounds of the run, in order: `loop.exercises_per_iteration` exercises drawn from the training set."""
    return [round_plan(cfg, it, rng.sample(train_set, min(cfg.loop.exercises_per_iteration, len(train_set))))
            for it in range(cfg.loop.iterations)]


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
