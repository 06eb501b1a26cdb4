"""The single controller: builds the actors from a config and runs evaluate -> the stream (pipeline/stream.py:
sample, judge, learn and sync, overlapping up to `pipeline.max_staleness` versions; 0 is synchronous) -> evaluate."""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import ray
from tqdm import tqdm

from codealign.actors.executor import ExecutorPool
from codealign.actors.generator_group import GeneratorGroup
from codealign.actors.replay_buffer import ReplayBuffer
from codealign.config import RunConfig
from codealign.exercises.extract import as_answer
from codealign.exercises.training_data import load_training_data
from codealign.model_source import resolve_model
from codealign.pipeline.evaluate import LoopEvaluator
from codealign.pipeline.preferences import build_pairs, references_to_check
from codealign.pipeline.report import RunDir
from codealign.pipeline.resilience import failure
from codealign.pipeline.schedule import plan_rounds
from codealign.pipeline.serving import ServingProbe
from codealign.pipeline.stream import ledger_config, stream_job
from codealign.placement import on_driver_node
from codealign.records import Completion, Exercise, Experience, GenerationRequest, SftExample
from codealign.sandbox import Verdict
from codealign.trainers.modeling import ADAPTER_DIR

CHUNK = 16  # requests per generator call, so the progress bar moves; large enough to keep vLLM batching


@dataclass
class Stages:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def time(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start


@dataclass
class System:
    """The actors of one run."""

    generator: GeneratorGroup
    executors: ExecutorPool
    buffer: ray.actor.ActorHandle
    oracle: object | None = None  # pipeline.oracle_run.Oracle, when sequence distillation takes its solutions

    def generate(self, requests: list[GenerationRequest], desc: str) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        with tqdm(total=len(requests), desc=desc, unit="prompt", leave=False) as bar:
            for i in range(0, len(requests), CHUNK):
                out += self.generator.generate(requests[i : i + CHUNK])
                bar.update(min(CHUNK, len(requests) - i))
        return out


    def shutdown(self) -> None:
        if self.oracle is not None:
            self.oracle.shutdown()
        self.executors.shutdown()
        self.generator.shutdown()
        ray.kill(self.buffer)


def published_adapter(state, run_dir: Path) -> str | None:
    """The adapter of the last version the learner published (kept when the stream ended without its own)."""
    published = state.published_dir(run_dir)
    return str(published / ADAPTER_DIR) if published is not None and (published / ADAPTER_DIR).is_dir() else None


def build_system(cfg: RunConfig, model_path: str, run_dir: RunDir) -> System:
    generator = GeneratorGroup(model_path, cfg.model, cfg.generator, role="student",
                               replicas=cfg.generator.replicas, max_restarts=cfg.generator.max_restarts)
    executors = ExecutorPool(cfg.executor, cfg.reward)
    buffer = ReplayBuffer.options(**on_driver_node()).remote(ledger=ledger_config(cfg))
    t = cfg.train  # the oracle: for its game, or sequence distillation on its solutions
    oracle = None
    if cfg.oracle.exercise_source == "oracle" or (
            t.algorithm == "distill" and t.distill.sequences == "oracle" and cfg.oracle.backend != "none"):
        from codealign.pipeline.oracle_run import Oracle

        oracle = Oracle(cfg)
    return System(generator, executors, buffer, oracle)


def verified_solutions(system: System, batch: list[Exercise], experiences: list[Experience]) -> list[SftExample]:
    """What the oracle knows to be right, checked in the sandbox: the student's passing samples, and for
    exercises none passed, the reference solution (the oracle's stand-in) if it passes its own tests."""
    passing = [e for e in experiences if e.result.verdict is Verdict.PASSED]
    solved = {e.exercise_id for e in passing}
    missing = [ex for ex in batch if ex.id not in solved and ex.reference]
    results = system.executors.run([(ex.reference, ex.tests) for ex in missing])
    return [SftExample(e.prompt, e.completion, "passed_sample", e.sample_id) for e in passing] + [
        SftExample(ex.prompt, as_answer(ex.reference), "reference")
        for ex, r in zip(missing, results) if r.verdict is Verdict.PASSED
    ]


def round_data(system: System, cfg: RunConfig, batch: list[Exercise], experiences: list[Experience],
               by_id: dict[str, Exercise], corpus: list[SftExample], it: int) -> list:
    """What the learner trains on this round, by algorithm."""
    t = cfg.train
    if t.algorithm == "dpo":  # a reference stands in as "chosen" only once it passed its own tests
        check = references_to_check(by_id, experiences)
        results = system.executors.run([(ex.reference, ex.tests) for ex in check]) if check else []
        verified = {ex.id for ex, r in zip(check, results) if r.verdict is Verdict.PASSED}
        return build_pairs(by_id, experiences, t.max_pairs, seed=cfg.seed + it, rejected=t.rejected,
                           verified_references=verified)
    if t.algorithm == "ppo":  # the judged samples themselves, with the generator's logprobs
        from codealign.trainers.ppo import select_rollouts

        # none left once the exercises without reward signal are dropped: nothing to train (not a NaN loss)
        return experiences if t.critic or select_rollouts(experiences, t, 0, t.num_workers)[0] else []
    if t.algorithm == "sft":
        return corpus or verified_solutions(system, batch, experiences)
    if t.distill.mode == "logit" and t.distill.sequences == "student":  # on-policy, as in GKD
        return [SftExample(e.prompt, e.completion, "student_sample", e.sample_id) for e in experiences
                if e.completion.strip()]
    if t.distill.sequences == "oracle" and getattr(system, "oracle", None) is not None:
        from codealign.pipeline.oracle_run import (
            oracle_solutions,  # the oracle's own solutions, verified in the sandbox
        )

        return oracle_solutions(system.oracle.generate, system.executors.run, batch, cfg)
    return verified_solutions(system, batch, experiences)  # no oracle: the MBPP reference stands in


def round_metrics(cfg: RunConfig, experiences: list[Experience]) -> dict:
    """The round's rewards and verdicts, and for critic-free PPO how many exercises carry no reward signal (all
    their samples got the same reward): the learner drops those, so a round of nothing else has no trainable data."""
    rewards = [e.result.reward for e in experiences]
    verdicts = Counter(e.result.verdict.value for e in experiences)
    out = {
        "samples": len(experiences),
        "reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        "verdicts": dict(verdicts),
        "sample_pass_rate": verdicts.get("passed", 0) / max(1, len(experiences)),
    }
    t = cfg.train
    if t.algorithm == "ppo" and not t.critic:
        from codealign.trainers.ppo import rl_rewards, zero_signal_groups

        out["groups"] = len({e.exercise_id for e in experiences})
        out["groups_without_signal"] = len(zero_signal_groups(experiences, rl_rewards(experiences, t.rl_reward)))
    return out


@dataclass
class RunResult:
    run_dir: RunDir
    system: System
    pass_at_1_before: float
    pass_at_1_after: float
    policy_version: int


def run(cfg: RunConfig, resume_dir: str | None = None) -> RunResult:
    """The whole local loop: returns what it wrote and the live actors (the caller may keep using them).
    With `resume_dir`, continues a run directory from its last completed iteration (pipeline/state.py)."""
    from codealign.pipeline.operations import Operations, start_ray

    sources = load_training_data(cfg)  # every training source, through the decontamination gate
    train_set, corpus = sources.exercises, sources.corpus  # corpus: sft.data_file's turns or corpus_dir's files
    model_path = resolve_model(cfg.model.path)  # embedded, local (.safetensors or .bin) or downloaded once
    run_dir = RunDir.open(resume_dir) if resume_dir else RunDir.create(cfg)
    ops = Operations.start(cfg, run_dir)
    stages = Stages(dict(ops.state.stage_seconds))
    start_ray(cfg)
    with stages.time("startup"):
        system = build_system(cfg, model_path, run_dir)
    rng = random.Random(cfg.seed)
    by_id = {ex.id: ex for ex in train_set}

    probe = ServingProbe.build(train_set, model_path, cfg.generator.fidelity_probes)
    if probe is not None:
        probe.record_base(system.generator)
    evaluator = LoopEvaluator.create(cfg, run_dir.path, system.generate, system.executors.run)
    if cfg.oracle.exercise_source == "oracle":  # the oracle's game writes the rounds' exercises as they come
        from codealign.pipeline.adversarial import OracleGame

        plans = OracleGame(cfg, train_set, sources.guard, system.oracle, system.executors.run, run_dir.path)
        make_data = plans.make_data
        ops.register("game", plans.save, plans.load)
    else:
        plans = None  # drawn below, after the RNG is restored

        def make_data(plan, exps):
            return round_data(system, cfg, plan.exercises, exps, by_id, corpus, plan.round)
    ops.restore(system, rng)
    before = ops.state.pass_at_1_before
    if before is None:
        with stages.time("eval_before"):
            before = evaluator.test_benchmarks("before")
            evaluator.validate(-1)
        ops.baseline_done(before, stages)

    def after_round(record: dict) -> dict:
        """Measured after a round's weights are served, before the next round is admitted (so with
        max_staleness 0 the engine's calls, and the tokens it samples, do not depend on how long training took)."""
        out = {}
        if probe is not None and record.get("weights_published"):
            out.update(probe.measure(system.generator, Path(record["weights_published"]).parent))
        with stages.time("validate"):
            out.update(evaluator.validate(record["iteration"]))
        return out

    ops.state.capture_rng(rng)  # before planning: a resumed run plans the same rounds from it
    try:
        version, adapter_dir, accounts = stream_job(
            system, cfg, plans or plan_rounds(cfg, train_set, rng), model_path=model_path, run_dir=run_dir,
            stages=stages, make_data=make_data, round_metrics=partial(round_metrics, cfg), after_round=after_round,
            on_commit=lambda cp: ops.stream_round_done(cp, system, stages), resume=ops.stream_resume(system),
            on_logged=lambda record: ops.sinks.log(record, step=record["iteration"]), on_failure=ops.failed)
    except Exception as exc:  # anything not contained in the stream: stop cleanly, still evaluate and report
        version, adapter_dir, accounts = ops.state.policy_version, None, {}  # not settled: the report says so
        ops.failed(failure("stream", exc, ops.state.next_iteration, version))
        print(f"the stream failed, stopping: {exc}", flush=True)
    try:
        with stages.time("eval_after"):
            after = evaluator.test_benchmarks("after")
    except Exception as exc:  # the summary and report are still written, with the failure in them
        ops.failed(failure("eval_after", exc, cfg.loop.iterations, version))
        after = float("nan")
    buffer_stats = ray.get(system.buffer.stats.remote())
    buffer_stats["ledger"] = ray.get(system.buffer.ledger.remote())
    buffer_stats["accounts"] = accounts  # rollout, buffer and learner counts checked against each other
    run_dir.finish(before, after, len(evaluator.tests[evaluator.primary]), stages.seconds, buffer_stats,
                   adapter_dir or published_adapter(ops.state, run_dir.path), version,
                   extra_summary={**evaluator.summary(), **ops.summary_extra(), **sources.guard.summary(),
                                  "headline_benchmark": evaluator.primary},
                   extra_report=evaluator.report_section(run_dir.metrics()) + sources.guard.report_section())
    ops.close(before, after)
    return RunResult(run_dir, system, before, after, version)
