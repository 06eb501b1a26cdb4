"""The oracle's game (`launch.py run` with `oracle.exercise_source: oracle`): each round the oracle writes
exercises (plus harder variants of the curriculum's hardest failed ones), the filters keep the sound ones, the
student samples the curriculum's picks, and DPO pulls it toward the oracle's sandbox-verified solution (chosen)
away from its own failing sample (rejected). The curriculum's state is saved each round.

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
from pathlib import Path

import ray

from codealign.config import RunConfig
from codealign.exercises.curriculum import STATE_FILE, Curriculum
from codealign.exercises.extract import as_answer
from codealign.exercises.generation import Generated, with_visible_tests
from codealign.exercises.loaders import load_mbpp
from codealign.exercises.training_data import load_training_data
from codealign.exercises.validation import RunJobs
from codealign.model_source import resolve_model
from codealign.pipeline.loop import RunResult, Stages, build_system, iteration_metrics, run_eval, sample_and_judge
from codealign.pipeline.operations import start_ray
from codealign.pipeline.oracle_run import Oracle, filter_generated, writer_for
from codealign.pipeline.report import RunDir
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
                                    f"{chosen_from}>{e.result.verdict.value}", ex.id))
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


def run_adversarial(cfg: RunConfig) -> RunResult:
    data_dir = cfg.resolved_data_dir()
    eval_set = load_mbpp(data_dir, cfg.data.eval_ids)[: cfg.data.eval_size]
    sources = load_training_data(cfg)  # the gate every source passes: the MBPP seeds here, the oracle's below
    held, decon = sources.exercises, sources.guard
    model_path = resolve_model(cfg.model.path)
    run_dir = RunDir.create(cfg)
    state_path = run_dir.path / STATE_FILE
    curriculum = Curriculum.load(cfg.oracle.resume_curriculum) if cfg.oracle.resume_curriculum else Curriculum()
    stages = Stages()
    start_ray(cfg)
    with stages.time("startup"):
        system = build_system(cfg, model_path, run_dir)
        oracle = Oracle(cfg)
    writer = writer_for(cfg, oracle)
    writer.counter = len(curriculum.entries)  # fresh ids after a resume
    rng = random.Random(cfg.seed + curriculum.round)
    totals: Counter = Counter()
    try:
        before = run_eval(system, cfg, eval_set, "before", stages, run_dir)
        print(f"pass@1 before: {before:.3f} on {len(eval_set)} MBPP test exercises", flush=True)
        version = 0
        first = curriculum.round
        for it in range(first, first + cfg.loop.iterations):
            it_stages = Stages()
            with it_stages.time("oracle"):
                templates = curriculum.hardest(cfg.oracle.hardest_as_templates)
                gen = writer.write(round_=it, count=cfg.oracle.exercises_per_round)
                if templates:
                    merge(gen, writer.write(round_=it, templates=templates))
                outcome = filter_generated(gen, cfg, system.executors.run,
                                           held + [curriculum.exercise(k) for k in curriculum.entries], decon, writer)
            curriculum.add(outcome.kept, it)
            counts = {**outcome.generation, "dropped": outcome.counts(), "kept": len(outcome.kept),
                      "harder_variants_of": [t.id for t in templates]}
            totals.update({"requested": gen.requested, "kept": len(outcome.kept)})
            seeded = (top_up(curriculum, held, cfg.loop.exercises_per_iteration, it, system.executors.run, rng,
                             cfg.oracle.visible_tests) if cfg.oracle.seed_from_mbpp else [])
            counts["seeded_from_mbpp"] = len(seeded)
            batch = curriculum.sample(cfg.loop.exercises_per_iteration, rng)
            source = dict(Counter(ex.source or "oracle" for ex in batch))
            if batch:
                experiences = sample_and_judge(system, cfg, batch, version, it_stages, seed=cfg.seed + 1000 * it)
            else:  # nothing sound to give the student this round (no oracle exercise, no MBPP seeding)
                experiences = []
            rates = curriculum.record(it, experiences)
            by_id = {ex.id: ex for ex in batch}
            pairs = oracle_pairs(by_id, experiences, cfg.train.max_pairs, seed=cfg.seed + it)
            metrics = {"iteration": it, "policy_version": version, "exercise_source": source,
                       "oracle": counts, **iteration_metrics(experiences), "train_items": len(pairs),
                       "pass_rate_histogram": curriculum.histograms[-1], "pass_rates": rates,
                       "chosen_from": dict(Counter(p.reason.split(">")[0] for p in pairs)),
                       "curriculum_size": len(curriculum.entries)}
            if pairs:
                with it_stages.time("train"):
                    train_metrics, weights_path = system.learner.train_round(pairs)
                with it_stages.time("sync"):
                    from codealign.weights import load_for_generators

                    version += 1
                    system.generator.update_weights(load_for_generators(weights_path), version)
                metrics.update(train_metrics)
            curriculum.save(state_path)
            metrics["new_policy_version"] = version
            metrics["seconds"] = dict(it_stages.seconds)
            for name, secs in it_stages.seconds.items():
                stages.seconds[name] = stages.seconds.get(name, 0.0) + secs
            run_dir.log_metrics(metrics)
            print(f"round {it}: oracle {counts}; student pass rate {metrics['sample_pass_rate']:.2f} on {len(batch)} "
                  f"exercises {source}; histogram {metrics['pass_rate_histogram']}; {len(pairs)} pairs; "
                  f"policy v{version}", flush=True)
        after = run_eval(system, cfg, eval_set, "after", stages, run_dir)
        buffer_stats = ray.get(system.buffer.stats.remote())
        run_dir.finish(before, after, len(eval_set), stages.seconds, buffer_stats, system.learner.adapter_dir,
                       version, extra_summary=decon.summary(), extra_report=decon.report_section())
    finally:
        oracle.shutdown()
    return RunResult(run_dir, system, before, after, version)


def state_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / STATE_FILE
