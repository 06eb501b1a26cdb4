"""The pipelined driver: the rollout streams into the replay buffer while the learner trains, within the bound.

One event loop, in the driver:
- admit the next round as soon as the buffer allows it (`max_staleness` rounds ahead of the last published
  weights, counting samples still in flight) and stream it through generators and executors (`rollout.py`);
- when the learner is free and the next round is complete in the buffer, take it (the buffer drops what is too
  stale and adds samples kept for reuse), turn it into training data, and hand the learner its ObjectRef;
- when the learner reports a step with weights, send them to the generators without waiting (each replica takes
  them between requests) and release the next round for admission.

With `max_staleness: 0` this is the round-based loop, step for step: round r+1 is admitted only once the weights
trained on round r are published. The same code drives the stand-in actors of `bench/pipeline.py`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from codealign.config import RunConfig
from codealign.records import Experience
from pipeline.rollout import CHUNK, Rollout
from pipeline.schedule import BusyClock, RoundPlan

WAIT_S = 0.05


@dataclass
class StreamResult:
    version: int
    rounds: list[dict] = field(default_factory=list)  # the metrics logged per round
    busy: dict[str, float] = field(default_factory=dict)  # seconds per stage
    fractions: dict[str, float] = field(default_factory=dict)  # busy / wall per stage
    wall_s: float = 0.0
    ledger: dict = field(default_factory=dict)
    samples_trained: int = 0
    staleness_checks: list[dict] = field(default_factory=list)  # every ledger snapshot taken during the run


def run_stream(cfg: RunConfig, plans: list[RoundPlan], generator, executors, buffer, learner,
               make_data: Callable[[RoundPlan, list[Experience]], list], load_weights: Callable[[str], object],
               on_round: Callable[[dict], None] = lambda m: None,
               round_metrics: Callable = lambda e: {}, chunk: int = CHUNK) -> StreamResult:
    """Drive all `plans` through the pipeline; returns the final policy version and what was measured.

    `learner`: StreamingLearner / PerRoundLearner (or a stand-in) with submit / poll / close.
    `load_weights(path)`: what the generators are sent for a published version."""
    pipe = cfg.pipeline
    clock = BusyClock()
    rollout = Rollout(generator, executors, buffer, cfg.loop.samples_per_exercise, clock, chunk)
    out = StreamResult(version=0)
    next_admit, next_train = 0, 0  # rounds
    trained = 0  # learner batches trained: the learner's version
    released, version = 0, 0  # rounds whose weights reached the generators; the version they serve
    waiting: dict[int, dict] = {}  # learner step -> the round it trains and what to log with it
    busy_learner = False
    unpublished = False
    sync_refs: list[ray.ObjectRef] = []
    last_busy = clock.snapshot()

    def release(rounds: int) -> None:
        nonlocal released
        released = max(released, rounds)
        buffer.advance.remote(released, version)  # no wait: this driver's later calls to the buffer come after it

    def log(record: dict) -> None:
        nonlocal last_busy
        now = clock.snapshot()
        record["seconds"] = {k: round(v - last_busy.get(k, 0.0), 3) for k, v in now.items()}
        last_busy = now
        record["ledger"] = ray.get(buffer.ledger.remote())
        out.staleness_checks.append(record["ledger"])
        out.rounds.append(record)
        on_round(record)

    admission_may_change = True  # the bound moves only when the learner releases a round
    last_poll = 0.0
    while next_train < len(plans) or waiting:
        while admission_may_change and next_admit < len(plans):
            if not rollout.try_start(plans[next_admit]):
                break
            next_admit += 1
        admission_may_change = False
        refs = rollout.pending()
        if refs:
            done, _ = ray.wait(refs, num_returns=1, timeout=WAIT_S)
            if done:  # and whatever else has finished meanwhile
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in done:
                rollout.handle(ref)
        else:
            time.sleep(WAIT_S / 5)
        rollout.flush()
        if sync_refs:
            done, sync_refs = ray.wait(sync_refs, num_returns=len(sync_refs), timeout=0)
            if done:
                clock.end("sync", len(done))
                ray.get(done)  # a refused update is an error, not a silent stale generator

        if time.monotonic() - last_poll < WAIT_S and not rollout.round_done(next_train):
            continue
        last_poll = time.monotonic()
        for report in learner.poll():
            busy_learner = False
            clock.end("train")
            info = waiting.pop(report["step"])
            if report.get("weights"):
                version = trained
                weights = load_weights(report["weights"])
                new = generator.start_update(weights, version)
                clock.begin("sync", len(new))
                sync_refs += new
                unpublished = False
                release(info["round"] + 1)
                admission_may_change = True
            info["record"].update(report["metrics"])
            info["record"]["new_policy_version"] = version
            if report.get("weights"):
                info["record"]["weights_published"] = report["weights"]  # what the generators were sent
            info["record"]["learner_seconds"] = round(report.get("seconds", 0.0), 3)
            log(info["record"])

        if busy_learner or next_train >= next_admit:
            continue
        if not rollout.round_done(next_train):
            continue
        plan = plans[next_train]
        batch = ray.get(buffer.take_round.remote(next_train, trained))
        experiences: list[Experience] = ray.get(batch["refs"])
        data = make_data(plan, experiences)
        record = {"iteration": plan.round, "policy_version": trained, **round_metrics(experiences),
                  "train_items": len(data), "staleness_histogram": dict(Counter(batch["staleness"])),
                  "dropped_stale": len(batch["dropped"]), "reused": batch["reused"]}
        out.samples_trained += len(experiences)
        next_train += 1
        if not data:  # nothing to learn from this round: the policy stays; the round is done
            record["new_policy_version"] = version
            if not unpublished:
                release(plan.round + 1)
                admission_may_change = True
            log(record)
            continue
        last = next_train == len(plans)
        publish = last or (trained + 1) % pipe.publish_every == 0
        learner.submit(trained, ray.put(data), trained, publish)
        waiting[trained + 1] = {"round": plan.round, "record": record}  # reported as the step count after it
        trained += 1
        unpublished = not publish
        busy_learner = True
        clock.begin("train")

    if sync_refs:
        ray.get(sync_refs)
        clock.end("sync", len(sync_refs))
    out.version = version
    out.busy = clock.snapshot()
    out.fractions = clock.fractions()
    out.wall_s = time.monotonic() - clock.started
    out.ledger = ray.get(buffer.ledger.remote())
    return out


def ledger_config(cfg: RunConfig):
    from actors.replay_buffer import LedgerConfig

    p = cfg.pipeline
    return LedgerConfig(max_staleness=p.max_staleness, reuse=p.reuse, capacity=p.capacity)


def make_learner(cfg: RunConfig, round_learner, model_path: str, storage_dir):
    """The long-lived learner where it applies (DPO, critic-free PPO), else the round-based one in a thread."""
    from trainers.streaming import PerRoundLearner, StreamingLearner

    t = cfg.train
    if cfg.pipeline.learner == "long_lived" and t.algorithm in ("dpo", "ppo") and not t.critic:
        return StreamingLearner(t, cfg.pipeline, model_path, storage_dir, sampling=round_learner.sampling,
                                served_dtype=round_learner.served_dtype)
    return PerRoundLearner(round_learner)


def stream_job(system, cfg: RunConfig, plans: list[RoundPlan], make_data, model_path: str, run_dir, stages,
               round_metrics, after_round=None) -> tuple[int, str | None]:
    """The training part of `pipeline.loop.run` when `pipeline.schedule` is stream: returns (final policy
    version, the adapter directory to keep). `after_round(record) -> dict` adds to each round's record before it
    is logged (the serving probe and the validation split, on the version served at that moment)."""
    from codealign.weights import load_for_generators

    learner = make_learner(cfg, system.learner, model_path, run_dir.path / "train")

    def on_round(record: dict) -> None:
        if after_round is not None:
            record.update(after_round(record))
        run_dir.log_metrics(record)
        loss = record.get(f"{cfg.train.algorithm}/loss", float("nan"))
        print(f"round {record['iteration']}: reward {record.get('reward_mean', 0.0):+.2f}, "
              f"{record['train_items']} training items, {cfg.train.algorithm} loss {loss:.4f}, "
              f"policy v{record['new_policy_version']}, staleness {record['staleness_histogram']}", flush=True)

    try:
        result = run_stream(cfg, plans, system.generator, system.executors, system.buffer, learner, make_data,
                            load_for_generators, on_round, round_metrics)
    finally:
        learner.close()
    for name, secs in result.busy.items():
        stages.seconds[name] = stages.seconds.get(name, 0.0) + secs
    stages.seconds["pipeline_wall"] = result.wall_s
    return result.version, learner.adapter_dir
