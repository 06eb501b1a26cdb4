"""The oracle's game (`launch.py run` with `oracle.exercise_source: oracle`): each round the oracle writes
exercises (plus harder variants of the curriculum's hardest failed ones), the filters keep the sound ones, the
student samples the curriculum's picks, and DPO pulls it toward the oracle's sandbox-verified solution (chosen)
away from its own failing sample (rejected). It is a source of exercises for the one driver (`OracleGame`, the
stream's `plans`), so the game has the stream's resume, failure handling, LoRA serving and sample accounts. The
curriculum's state is saved each round (curriculum.json, and in the driver's state).

A weak oracle (the embedded 135M model) may write no sound exercise for many rounds. The game then still plays,
honestly: with `oracle.seed_from_mbpp` the curriculum is topped up from MBPP train (one assert shown, the MBPP
reference run in the sandbox and kept only if it passes, standing in as the verified solution and labelled so
in the pairs), the student's pass rates are recorded for those exercises like any other, and the ones it fails
go to the oracle as templates for harder variants, which enter the curriculum only through the same filters.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from codealign.config import RunConfig
from codealign.exercises.curriculum import STATE_FILE, Curriculum
from codealign.exercises.extract import as_answer
from codealign.exercises.generation import Generated, with_visible_tests
from codealign.exercises.validation import RunJobs
from codealign.pipeline.oracle_run import Oracle, filter_generated, writer_for
from codealign.pipeline.schedule import RoundPlan, round_plan
from codealign.records import Exercise, Experience, PreferencePair
from codealign.sandbox import Verdict


def oracle_pairs(exercises: dict[str, Exercise], experiences: list[Experience], max_pairs: int,
                 per_exercise: int = 2, seed: int = 0) -> list[PreferencePair]:
    """chosen = the oracle's verified solution, rejected = a distinct failing sample of the student."""
    rng = random.Random(seed)
    seen: dict[str, set[str]] = {}
    pairs = []
    for e in sorted(experiences, key=lambda e: e.result.reward):  # worst first
        ex = exercises.get(e.exercise_id)
        if ex is None or not ex.reference or e.result.verdict is Verdict.PASSED or not e.completion.strip():
            continue
        done = seen.setdefault(ex.id, set())
        if len(done) >= per_exercise or e.completion in done:
            continue
        done.add(e.completion)
        chosen_from = "oracle" if ex.source in ("oracle", "") else f"{ex.source}_reference"
        pairs.append(PreferencePair(ex.prompt, as_answer(ex.reference), e.completion,
                                    f"{chosen_from}>{e.result.verdict.value}", ex.id,
                                    (e.sample_id,) if e.sample_id else ()))
    rng.shuffle(pairs)
    return pairs[:max_pairs]


def top_up(curriculum: Curriculum, pool: Sequence[Exercise], k: int, round_: int, run_jobs: RunJobs,
           rng: random.Random, visible_tests: int = 1) -> list[str]:
    """Seed the curriculum from `pool` (MBPP train) until it holds `k` open exercises. Each seed shows the student
    `visible_tests` asserts and keeps all of them as its tests; its reference is run in the sandbox first and
    the seed is added only if it passes (so it can stand in as the verified "chosen"). Returns the ids added."""
    need = k - len(curriculum.open())
    fresh = [ex for ex in pool if ex.id not in curriculum.entries and ex.reference.strip()]
    if need <= 0 or not fresh:
        return []
    picks = rng.sample(fresh, min(len(fresh), need + 2))  # a few spare, in case a reference fails
    results = run_jobs([(ex.reference, ex.tests) for ex in picks])
    verified = [with_visible_tests(ex, visible_tests) for ex, r in zip(picks, results)
                if r.verdict is Verdict.PASSED][:need]
    curriculum.add(verified, round_)
    return [ex.id for ex in verified]


def merge(a: Generated, b: Generated) -> Generated:
    a.exercises += b.exercises
    a.candidates.update(b.candidates)
    a.provenance.update(b.provenance)
    a.malformed.update(b.malformed)
    a.tests_step.update(b.tests_step)
    a.requested += b.requested
    return a


class OracleGame:
    """The game as the stream's source of exercises (`plans[r]`, asked when round r is admitted): the oracle writes
    round r's exercises (plus harder variants of the curriculum's hardest failed ones), the filters keep the sound
    ones, the curriculum picks the round's batch; `make_data` records the student's pass rates and pairs the
    oracle's verified solutions with the student's failing samples. Its state (the curriculum, the writer's id
    counter, the sampler's RNG and rounds planned but not yet trained) is a component of the driver's state, so a
    resumed run goes on with the same game. With `pipeline.max_staleness: 0` round r+1 is written after round r's
    results are recorded; with k > 0 the curriculum is up to k rounds behind, as the policy is."""

    def __init__(self, cfg: RunConfig, held: list[Exercise], decon, oracle: Oracle, run_jobs: RunJobs,
                 run_dir: Path):
        self.cfg, self.held, self.decon, self.run_jobs = cfg, held, decon, run_jobs
        self.state_path = Path(run_dir) / STATE_FILE
        o = cfg.oracle
        self.curriculum = Curriculum.load(o.resume_curriculum) if o.resume_curriculum else Curriculum()
        self.first = self.curriculum.round  # a continued game numbers its rounds on from the earlier run's
        self.writer = writer_for(cfg, oracle)
        self.writer.counter = len(self.curriculum.entries)  # fresh ids after a resume
        self.rng = random.Random(cfg.seed + self.first)
        self.planned: dict[int, RoundPlan] = {}

    def __len__(self) -> int:
        return self.cfg.loop.iterations

    def __getitem__(self, r: int) -> RoundPlan:
        if r not in self.planned:
            self.planned[r] = self._write(r)
        return self.planned[r]

    def _write(self, r: int) -> RoundPlan:
        cfg, it = self.cfg, self.first + r
        templates = self.curriculum.hardest(cfg.oracle.hardest_as_templates)
        gen = self.writer.write(round_=it, count=cfg.oracle.exercises_per_round)
        if templates:
            merge(gen, self.writer.write(round_=it, templates=templates))
        known = self.held + [self.curriculum.exercise(k) for k in self.curriculum.entries]
        outcome = filter_generated(gen, cfg, self.run_jobs, known, self.decon, self.writer)
        self.curriculum.add(outcome.kept, it)
        counts = {**outcome.generation, "dropped": outcome.counts(), "kept": len(outcome.kept),
                  "harder_variants_of": [t.id for t in templates]}
        seeded = (top_up(self.curriculum, self.held, cfg.loop.exercises_per_iteration, it, self.run_jobs, self.rng,
                         cfg.oracle.visible_tests) if cfg.oracle.seed_from_mbpp else [])
        counts["seeded_from_mbpp"] = len(seeded)
        batch = self.curriculum.sample(cfg.loop.exercises_per_iteration, self.rng)
        print(f"round {r}: oracle {counts}", flush=True)
        return round_plan(cfg, r, batch, {"oracle": counts,
                                          "exercise_source": dict(Counter(ex.source or "oracle" for ex in batch))})

    def make_data(self, plan: RoundPlan, experiences: list[Experience]) -> list[PreferencePair]:
        """The student's results into the curriculum; the round's DPO pairs."""
        self.planned.pop(plan.round, None)
        rates = self.curriculum.record(self.first + plan.round, experiences)
        self.curriculum.save(self.state_path)
        pairs = oracle_pairs({ex.id: ex for ex in plan.exercises}, experiences, self.cfg.train.max_pairs,
                             seed=self.cfg.seed + self.first + plan.round)
        plan.notes.update({"pass_rate_histogram": self.curriculum.histograms[-1], "pass_rates": rates,
                           "chosen_from": dict(Counter(p.reason.split(">")[0] for p in pairs)),
                           "curriculum_size": len(self.curriculum.entries)})
        return pairs

    # -- the driver's state (pipeline/operations.Operations.register) -------------------------------------------
    def save(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"curriculum": self.curriculum.to_dict(), "counter": self.writer.counter, "first": self.first,
                "rng": [version, list(internal), gauss],
                "planned": {str(r): {"exercises": [asdict(ex) for ex in p.exercises], "notes": p.notes}
                            for r, p in self.planned.items()}}

    def load(self, saved: dict) -> None:
        self.curriculum = Curriculum.from_dict(saved["curriculum"])
        self.writer.counter, self.first = saved["counter"], saved["first"]
        version, internal, gauss = saved["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.planned = {int(r): round_plan(self.cfg, int(r), [Exercise(**ex) for ex in p["exercises"]], p["notes"])
                        for r, p in saved["planned"].items()}
