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
from pathlib import Path

import ray

from codealign.config import RunConfig
from codealign.pipeline.accounts import batches_from_state, settle
from codealign.pipeline.resilience import failure
from codealign.pipeline.rollout import CHUNK, Rollout
from codealign.pipeline.schedule import BusyClock, RoundPlan
from codealign.records import Experience, sample_ids_behind

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
    accounts: dict = field(default_factory=dict)  # pipeline/accounts.settle at the end of the run
    failures: list[dict] = field(default_factory=list)  # learner batches that failed (pipeline.resilience.failure)


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
    # the rollout's counts per round, the ids of each learner batch, the ids of rounds without training data
    accounts: dict = field(default_factory=dict)


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
    accounts: dict = field(default_factory=dict)  # as StreamCheckpoint.accounts


def run_stream(cfg: RunConfig, plans: list[RoundPlan], generator, executors, buffer, learner,
               make_data: Callable[[RoundPlan, list[Experience]], list], load_weights: Callable[[str], object],
               on_round: Callable[[dict], None] = lambda m: None,
               round_metrics: Callable = lambda e: {}, chunk: int = CHUNK,
               on_commit: Callable[[StreamCheckpoint], None] | None = None,
               resume: StreamResume | None = None,
               restart_learner: Callable[[str | None, int], object] | None = None) -> StreamResult:
    """Drive all `plans` through the pipeline; returns the final policy version and what was measured.

    `plans[r]` is asked for when round r is admitted (in order; again at its training, so a source keeps what it
    planned): a source may write round r's exercises from the results of the rounds trained before it
    (pipeline/schedule.py). `make_data(plan, experiences)` may add to `plan.notes`, which the round's record logs.

    `learner`: a StreamingLearner (or a stand-in) with submit / poll / finish / close.
    `load_weights(path)`: what the generators are sent for a published version.
    `on_commit`: called after each round is logged whose weights are published (not while a trained batch is
    unpublished), to persist the run; `resume`: start from such a checkpoint instead of round 0.
    A learner batch that fails (a NaN loss, workers lost) is logged with its failure, the last published version
    keeps serving, and `cfg.loop.on_train_failure` decides: `stop` ends the stream (what is in flight is judged
    and counted, nothing more admitted), `continue` goes on with `restart_learner(weights, version)` (the learner
    to train on from the published version; None when it cannot, which stops)."""
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
        # the counts of rounds the restored buffer holds; a round in flight at the commit is produced again
        rollout.counts = {int(r): Counter(c) for r, c in resume.accounts.get("rollout", {}).items()
                          if int(r) < resume.next_round or int(r) in restored}
    # per batch: the ids the driver took and put in its data, and those the learner received and trained
    # (pipeline/accounts.py)
    learner_batches: list[dict] = batches_from_state(resume.accounts.get("learner_batches", []) if resume else [])
    untrained: list[str] = list(resume.accounts.get("untrained", [])) if resume else []
    # rounds without training data so far: they take no learner version, so they count as released when known
    # (released = published version + such rounds; see `release`)
    skipped = released - version
    waiting: dict[int, dict] = {}  # learner step -> the round it trains and what to log with it
    busy_learner = False
    unpublished = False  # a trained batch whose weights are not published yet
    last_experiences: list[Experience] = []  # the last logged round's, for the final commit
    sync_refs: list[ray.ObjectRef] = []  # every weight update sent, for the busy clock
    syncing: dict | None = None  # the publication not yet acknowledged by every replica (see settle_sync)
    last_busy = clock.snapshot()

    def release() -> None:
        """Admission moves to `version + skipped` rounds: round r is trained at version r minus the rounds before
        it without data, at most `version + max_staleness` once admitted, so the bound holds; and a round without
        data after a trained batch not yet published (publish_every > 1) moves admission on, where counting it as
        unreleased would wait for a publication that needs the next round."""
        nonlocal released, admission_may_change
        released = max(released, version + skipped)
        admission_may_change = True
        buffer.advance.remote(released, version)  # no wait: this driver's later calls to the buffer come after it

    admission_may_change = True  # the bound moves only when the learner releases a round

    def publish(report: dict, info: dict | None) -> None:
        """Weights the learner reported: to the generators, without waiting. The round that published them is
        logged, committed and released once every replica has taken them (`settle_sync`): a refused update is a
        failure of that round, not a generator serving something else than the driver thinks."""
        nonlocal version, last_weights, sync_refs, unpublished, syncing
        good = (version, last_weights)
        version = trained
        last_weights = report["weights"]
        new = generator.start_update(load_weights(report["weights"]), version)
        clock.begin("sync", len(new))
        sync_refs += new
        unpublished = False
        syncing = {"refs": new, "info": info, "good": good}

    def settle_sync(block: bool) -> bool:
        """The publication in progress: once every replica answered, log and commit its round and release the
        next one; a refusal (NaN weights, wrong names or shapes, a lost replica) rolls the published version
        back to the one the replicas still serve, and `loop.on_train_failure` decides as for a failed batch.
        Returns whether the stream stops."""
        nonlocal syncing, version, last_weights, trained, skipped
        if syncing is None:
            return False
        refs = syncing["refs"]
        if not block and len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):
            return False
        pending, syncing = syncing, None
        info, refused = pending["info"], None
        try:
            ray.get(refs)
        except (ray.exceptions.RayError, ValueError, TimeoutError, OSError) as exc:
            refused = exc
        stop = False
        if refused is not None:
            bad = version
            version, last_weights = pending["good"]
            f = failure("sync", refused, info["round"] if info else -1, version)
            out.failures.append(f)
            skipped += trained - version  # the refused version and the batches it covers take no version
            trained = version
            if last_weights:  # the group's record of what it serves (and what a restarted replica gets)
                new = generator.start_update(load_weights(last_weights), version)
                clock.begin("sync", len(new))
                sync_refs.extend(new)
            else:
                generator.forget_update(version)
            stop = carry_on()
            print(f"the generators refused policy v{bad} ({f['message']}); still serving v{version}"
                  f"{', stopping' if stop else ''}", flush=True)
        if info is not None:
            record = info["record"]
            if refused is None:
                record["weights_published"] = last_weights  # what the generators were sent
            else:
                record["failure"] = out.failures[-1]
            record["new_policy_version"] = version
            log(record)
        release()
        if info is not None:
            commit(info["round"], info["experiences"])
        return stop

    def accounts(final: bool) -> dict:
        ledger, taken = ray.get([buffer.ledger.remote(), buffer.taken_ids.remote()])
        return settle(rollout.totals(), ledger, taken, learner_batches, untrained, pipe.reuse, final)

    def log(record: dict) -> None:
        nonlocal last_busy
        now = clock.snapshot()
        record["seconds"] = {k: round(v - last_busy.get(k, 0.0), 3) for k, v in now.items()}
        last_busy = now
        record["ledger"] = ray.get(buffer.ledger.remote())
        checked = accounts(final=False)
        record["accounts"] = {"balanced": checked["balanced"], "problems": checked["problems"]}
        out.staleness_checks.append(record["ledger"])
        out.rounds.append(record)
        on_round(record)

    def commit(round_: int, experiences: list[Experience]) -> None:
        # the learner is idle here (one batch at a time) and every judged sample has been flushed to the buffer
        if on_commit is not None and not unpublished:
            counts = {"rollout": {r: dict(c) for r, c in rollout.counts.items()},
                      "learner_batches": [dict(b) for b in learner_batches], "untrained": list(untrained)}
            on_commit(StreamCheckpoint(round_, round_ + 1, trained, released, version, last_weights, experiences,
                                       counts))

    def carry_on() -> bool:
        """After a failed batch or a refused update, with the published version rolled back: whether the stream
        stops (`loop.on_train_failure`), else the learner to train on from that version."""
        nonlocal learner
        if cfg.loop.on_train_failure == "stop":
            return True
        new = restart_learner(last_weights, version) if restart_learner is not None else None
        learner = new if new is not None else learner
        return new is None

    def fail(exc: Exception) -> bool:
        """The learner's batch failed: log it, keep the published version; returns whether the stream stops."""
        nonlocal trained, busy_learner, unpublished, skipped
        if not waiting:  # not a batch's failure (nothing was being trained): nothing to contain it in
            raise exc
        [info] = waiting.values()  # one batch at a time
        waiting.clear()
        busy_learner = False
        clock.end("train")
        f = failure("train", exc, info["round"], version)
        out.failures.append(f)
        untrained.extend(info["ids"])  # taken from the buffer, trained by no batch
        skipped += trained - version  # the failed batch, and any trained but unpublished, take no version
        trained, unpublished = version, False
        info["record"].update(failure=f, new_policy_version=version)
        stop = carry_on()
        log(info["record"])
        print(f"round {info['round']}: learner failed ({f['message']}); still serving v{version}"
              f"{', stopping' if stop else ''}", flush=True)
        release()
        commit(info["round"], info["experiences"])
        return stop

    def drain() -> None:
        """Finish what the rollout has in flight (judged and counted in the buffer), admitting nothing more."""
        while rollout.pending():
            done, _ = ray.wait(rollout.pending(), num_returns=1)
            for ref in done:
                rollout.handle(ref)
            rollout.flush()

    last_poll = 0.0
    while next_train < len(plans) or waiting:
        while admission_may_change and next_admit < len(plans):
            if next_admit > released + pipe.max_staleness:  # the buffer's bound, known here: a round's plan is
                break  # asked for only once it may enter (the oracle's game writes it from the rounds before)
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
        if settle_sync(block=False):
            drain()
            break

        if time.monotonic() - last_poll < WAIT_S and not rollout.round_done(next_train):
            continue
        last_poll = time.monotonic()
        try:
            reports = learner.poll()
        except Exception as exc:  # the learner's batch failed: loop.on_train_failure
            if fail(exc):
                drain()
                break
            continue
        for report in reports:
            busy_learner = False
            clock.end("train")
            info = waiting.pop(report["step"])
            learner_batches.append({"sent": info["ids"], "data": info["data_ids"],
                                    "received": report["received_ids"], "trained": report["trained_ids"]})
            info["record"].update(report["metrics"])
            info["record"]["learner_seconds"] = round(report.get("seconds", 0.0), 3)
            last_experiences = info["experiences"]
            if report.get("weights"):  # logged and committed once the generators took them
                publish(report, info)
                continue
            info["record"]["new_policy_version"] = version
            log(info["record"])
            commit(info["round"], info["experiences"])

        # the learner trains on from weights the generators took: no batch while an update is unanswered
        if busy_learner or syncing is not None or next_train >= next_admit:
            continue
        if not rollout.round_done(next_train):
            continue
        plan = plans[next_train]
        batch = ray.get(buffer.take_round.remote(next_train, trained))
        experiences: list[Experience] = ray.get(batch["refs"])
        data = make_data(plan, experiences)
        record = {"iteration": plan.round, "policy_version": trained, **plan.notes, **round_metrics(experiences),
                  "train_items": len(data), "staleness_histogram": dict(Counter(batch["staleness"])),
                  "dropped_stale": len(batch["dropped"]), "reused": batch["reused"]}
        out.samples_trained += len(experiences)
        next_train += 1
        if not data:  # nothing to learn from this round: the policy stays; the round is done
            untrained.extend(batch["ids"])
            record["no_trainable_data"] = True
            record["new_policy_version"] = version
            skipped += 1
            release()
            log(record)
            last_experiences = experiences
            commit(plan.round, experiences)
            continue
        last = next_train == len(plans)
        publish_now = last or (trained + 1) % pipe.publish_every == 0
        learner.submit(trained, ray.put(data), trained, publish_now)
        # reported as the step count after it
        waiting[trained + 1] = {"round": plan.round, "record": record, "experiences": experiences,
                                "ids": list(batch["ids"]), "data_ids": sorted(set(sample_ids_behind(data)))}
        trained += 1
        unpublished = not publish_now
        busy_learner = True
        clock.begin("train")

    if unpublished:  # the last trained batch (publish_every > 1, then rounds without data): published at the end
        final = learner.finish()
        if final is None or not final.get("weights"):
            raise RuntimeError(f"the learner did not publish its last trained batch (step {trained})")
        publish(final, None)
        print(f"published the last trained batch at the end: policy v{version}", flush=True)
        settle_sync(block=True)
        commit(out.rounds[-1]["iteration"], last_experiences)
    settle_sync(block=True)
    if sync_refs:  # every publication's answers were settled above (a refusal is a failure, not an exception)
        ray.wait(sync_refs, num_returns=len(sync_refs))
        clock.end("sync", len(sync_refs))
    out.version = version
    out.busy = clock.snapshot()
    out.fractions = clock.fractions()
    out.wall_s = time.monotonic() - clock.started
    out.ledger = ray.get(buffer.ledger.remote())
    out.accounts = accounts(final=True)
    if not out.accounts["balanced"]:
        print(f"the sample accounts do not add up: {out.accounts['problems']}", flush=True)
    return out


def ledger_config(cfg: RunConfig):
    from codealign.actors.replay_buffer import LedgerConfig

    p = cfg.pipeline
    return LedgerConfig(max_staleness=p.max_staleness, reuse=p.reuse, capacity=p.capacity)


def make_learner(cfg: RunConfig, model_path: str, storage_dir, resume: StreamResume | None = None):
    """The learner of the whole job (trainers/streaming.py), every algorithm; from `resume`'s published version."""
    from codealign.model_source import resolve_model
    from codealign.trainers.scoring import Sampling
    from codealign.trainers.streaming import StreamingLearner

    start = (resume.weights, resume.trained) if resume is not None and resume.weights else (None, 0)
    teacher = resolve_model(cfg.train.distill.teacher) if cfg.train.distill.teacher else ""
    return StreamingLearner(cfg.train, cfg.pipeline, model_path, storage_dir,
                            sampling=Sampling(cfg.loop.temperature, cfg.loop.top_p, cfg.generator.max_tokens),
                            served_dtype=cfg.model.dtype, resume_weights=start[0], start_step=start[1],
                            total_batches=cfg.loop.iterations, teacher_path=teacher)


def stream_job(system, cfg: RunConfig, plans, make_data, model_path: str, run_dir, stages,
               round_metrics, after_round=None, on_commit=None, resume: StreamResume | None = None,
               on_logged=None, on_failure=None) -> tuple[int, str | None, dict]:
    """The training part of `pipeline.loop.run`: returns (final policy
    version, the adapter directory to keep, the sample accounts at the end). `after_round(record) -> dict` adds to
    each round's record before it is logged (the serving probe and the validation split, on the version served at
    that moment); `on_logged(record)` sees it after; `on_commit` / `resume`: see `run_stream`."""
    from codealign.pipeline.report import round_line
    from codealign.pipeline.serving import policy_for_generators, served_as

    learner = make_learner(cfg, model_path, run_dir.path / "train", resume)

    def restart(weights: str | None, version: int):
        """After a failed batch: the learner started again from the published version (its adapter or fp32
        weights, optimizer state and critic), or from the base model before the first publication."""
        nonlocal learner
        try:
            learner.close()
        except Exception:  # its run already failed; that failure is recorded
            pass
        learner = make_learner(cfg, model_path, run_dir.path / "train", StreamResume(0, version, 0, version, weights))
        return learner

    def load_weights(merged_file: str):
        """A published version as the generators take it: the adapter with enable_lora, else merged."""
        return policy_for_generators(cfg, Path(merged_file).parent)

    def on_round(record: dict) -> None:
        if record.get("weights_published"):
            record["served_as"] = served_as(cfg)
        if after_round is not None:
            record.update(after_round(record))
        run_dir.log_metrics(record)
        if on_logged is not None:
            on_logged(record)
        print(f"{round_line(record, cfg.train.algorithm)}, staleness {record['staleness_histogram']}", flush=True)

    result = None
    try:
        result = run_stream(cfg, plans, system.generator, system.executors, system.buffer, learner, make_data,
                            load_weights, on_round, round_metrics, on_commit=on_commit, resume=resume,
                            restart_learner=restart)
    finally:
        try:
            learner.close()
        except Exception:  # a learner whose batch failed: that failure is in the result already
            if result is None or not result.failures:
                raise
    for f in result.failures:  # into the summary and the report (loop.run: Operations.failed)
        if on_failure is not None:
            on_failure(f)
    for name, secs in result.busy.items():
        stages.seconds[name] = stages.seconds.get(name, 0.0) + secs
    stages.seconds["pipeline_wall"] = result.wall_s
    return result.version, learner.adapter_dir, result.accounts
