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


@dataclass
class StreamCheckpoint:
    """Where the stream stands once a round is logged and its weights (if any) published: the commit point of a
    resumable run. Rounds below `next_round` are trained; the learner has trained `trained` batches; the generators
    serve `version`, whose weights are `weights` (the merged file; None before the first publication)."""

    round: int
    next_round: int
    trained: int
    released: int
    version: int
    weights: str | None
    experiences: list[Experience]  # what the round trained


@dataclass
class StreamResume:
    """A checkpoint read back: the buffer and the generators are restored already; `complete_rounds` are rounds
    at or after `next_round` that were complete in the restored buffer (not produced again)."""

    next_round: int
    trained: int
    released: int
    version: int
    weights: str | None = None
    complete_rounds: list[int] = field(default_factory=list)


def run_stream(cfg: RunConfig, plans: list[RoundPlan], generator, executors, buffer, learner,
               make_data: Callable[[RoundPlan, list[Experience]], list], load_weights: Callable[[str], object],
               on_round: Callable[[dict], None] = lambda m: None,
               round_metrics: Callable = lambda e: {}, chunk: int = CHUNK,
               on_commit: Callable[[StreamCheckpoint], None] | None = None,
               resume: StreamResume | None = None) -> StreamResult:
    """Drive all `plans` through the pipeline; returns the final policy version and what was measured.

    `learner`: StreamingLearner / PerRoundLearner (or a stand-in) with submit / poll / close.
    `load_weights(path)`: what the generators are sent for a published version.
    `on_commit`: called after each round is logged whose weights are published (not while a trained batch is
    unpublished), to persist the run; `resume`: start from such a checkpoint instead of round 0."""
    pipe = cfg.pipeline
    clock = BusyClock()
    rollout = Rollout(generator, executors, buffer, cfg.loop.samples_per_exercise, clock, chunk)
    out = StreamResult(version=0)
    next_admit, next_train = 0, 0  # rounds
    trained = 0  # learner batches trained: the learner's version
    released, version = 0, 0  # rounds whose weights reached the generators; the version they serve
    last_weights: str | None = None  # the merged weights of `version`
    restored: set[int] = set()  # complete rounds the resumed buffer holds: not admitted again
    if resume is not None:
        next_admit = next_train = resume.next_round
        trained, released, version = resume.trained, resume.released, resume.version
        last_weights, restored = resume.weights, set(resume.complete_rounds)
        for r in restored:
            rollout.open[r] = 0
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

    def commit(round_: int, experiences: list[Experience]) -> None:
        # the learner is idle here (one batch at a time) and every judged sample has been flushed to the buffer
        if on_commit is not None and not unpublished:
            on_commit(StreamCheckpoint(round_, round_ + 1, trained, released, version, last_weights, experiences))

    admission_may_change = True  # the bound moves only when the learner releases a round
    last_poll = 0.0
    while next_train < len(plans) or waiting:
        while admission_may_change and next_admit < len(plans):
            if next_admit not in restored and not rollout.try_start(plans[next_admit]):
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
                last_weights = report["weights"]
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
            commit(info["round"], info["experiences"])

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
            commit(plan.round, experiences)
            continue
        last = next_train == len(plans)
        publish = last or (trained + 1) % pipe.publish_every == 0
        learner.submit(trained, ray.put(data), trained, publish)
        # reported as the step count after it
        waiting[trained + 1] = {"round": plan.round, "record": record, "experiences": experiences}
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


def long_lived(cfg: RunConfig) -> bool:
    """Whether the stream trains with the long-lived learner (DPO, critic-free PPO) or a TorchTrainer per batch."""
    t = cfg.train
    return cfg.pipeline.learner == "long_lived" and t.algorithm in ("dpo", "ppo") and not t.critic


def make_learner(cfg: RunConfig, round_learner, model_path: str, storage_dir, resume: StreamResume | None = None):
    """The long-lived learner where it applies (DPO, critic-free PPO), else the round-based one in a thread (a
    resumed round-based learner was pointed at its checkpoint by pipeline/operations.py already)."""
    from trainers.streaming import PerRoundLearner, StreamingLearner

    if long_lived(cfg):
        start = (resume.weights, resume.trained) if resume is not None and resume.weights else (None, 0)
        return StreamingLearner(cfg.train, cfg.pipeline, model_path, storage_dir, sampling=round_learner.sampling,
                                served_dtype=round_learner.served_dtype, resume_weights=start[0], start_step=start[1],
                                total_batches=cfg.loop.iterations)
    return PerRoundLearner(round_learner, cfg.pipeline)


def stream_job(system, cfg: RunConfig, plans: list[RoundPlan], make_data, model_path: str, run_dir, stages,
               round_metrics, after_round=None, on_commit=None, resume: StreamResume | None = None,
               on_logged=None) -> tuple[int, str | None]:
    """The training part of `pipeline.loop.run` when `pipeline.schedule` is stream: returns (final policy
    version, the adapter directory to keep). `after_round(record) -> dict` adds to each round's record before it
    is logged (the serving probe and the validation split, on the version served at that moment); `on_logged(record)`
    sees it after; `on_commit` / `resume`: see `run_stream`."""
    from codealign.weights import load_for_generators

    learner = make_learner(cfg, system.learner, model_path, run_dir.path / "train", resume)

    def on_round(record: dict) -> None:
        if after_round is not None:
            record.update(after_round(record))
        run_dir.log_metrics(record)
        if on_logged is not None:
            on_logged(record)
        loss = record.get(f"{cfg.train.algorithm}/loss", float("nan"))
        print(f"round {record['iteration']}: reward {record.get('reward_mean', 0.0):+.2f}, "
              f"{record['train_items']} training items, {cfg.train.algorithm} loss {loss:.4f}, "
              f"policy v{record['new_policy_version']}, staleness {record['staleness_histogram']}", flush=True)

    try:
        result = run_stream(cfg, plans, system.generator, system.executors, system.buffer, learner, make_data,
                            load_for_generators, on_round, round_metrics, on_commit=on_commit, resume=resume)
    finally:
        learner.close()
    for name, secs in result.busy.items():
        stages.seconds[name] = stages.seconds.get(name, 0.0) + secs
    stages.seconds["pipeline_wall"] = result.wall_s
    return result.version, learner.adapter_dir
