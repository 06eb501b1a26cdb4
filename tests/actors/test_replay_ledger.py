"""The replay buffer's rules (admission, staleness, reuse, eviction, the ledger) and the off-policy PPO loss."""

import pytest
import torch

from codealign.actors.replay_buffer import LedgerConfig, SampleLedger
from codealign.config import ConfigError, config_from_dict
from codealign.trainers.losses import clipped_policy_loss
from codealign.trainers.offpolicy import off_policy_loss


def ids(r: int, n: int = 2) -> list[str]:
    return [f"r{r}-{k}" for k in range(n)]


def balanced(ledger: SampleLedger) -> dict:
    """The events counted as they happened agree with the states the samples are in."""
    out = ledger.ledger()
    ev = out["events"]
    assert out["consistent"], out
    assert ev["admitted"] == ev["arrived"] + ev["lost"] + out["in_flight"] == len(ledger.samples)
    assert ev["lost"] == out["lost"] and ev["evicted"] <= out["evicted"] and ev["dropped"] <= out["dropped"]
    assert ledger.buffered == out["buffered"]  # the running count eviction uses agrees with the states
    return out


def test_admission_counts_samples_in_flight_against_the_bound():
    ledger = SampleLedger(LedgerConfig(max_staleness=1))
    assert ledger.admit(0, ids(0)) and ledger.admit(1, ids(1))
    # round 2 would be two versions ahead of version 0: refused although nothing has been produced yet
    assert not ledger.admit(2, ids(2))
    assert balanced(ledger)["in_flight"] == 4
    ledger.put("r0-0", "ref", 0)
    assert not ledger.admit(2, ids(2))
    ledger.advance(1, 1)
    assert ledger.admit(2, ids(2))
    with pytest.raises(ValueError, match="admitted twice"):
        ledger.admit(2, ["r2-0"])


def test_synchronous_bound_admits_one_round_at_a_time():
    ledger = SampleLedger(LedgerConfig(max_staleness=0))
    assert ledger.admit(0, ids(0)) and not ledger.admit(1, ids(1))
    for sid in ids(0):
        ledger.put(sid, sid, 0)
    assert ledger.round_complete(0)
    batch = ledger.take_round(0, 0)
    assert batch["ids"] == ids(0) and batch["staleness"] == [0, 0]
    ledger.advance(1, 1)
    assert ledger.admit(1, ids(1))
    assert balanced(ledger)["trained"] == 2


def test_ledger_balances_by_id_through_drops_losses_reuse_and_eviction():
    ledger = SampleLedger(LedgerConfig(max_staleness=1, reuse=2, capacity=3))
    ledger.admit(0, ids(0, 3))
    ledger.put("r0-0", "a", 0)
    ledger.put("r0-1", "b", 0)
    ledger.lose("r0-2")  # its execution failed for good: lost, counted, not produced
    assert ledger.round_complete(0) and not ledger.round_complete(1)
    batch = ledger.take_round(0, 0)
    assert batch["refs"] == ["a", "b"]
    assert ledger.states() == {"r0-0": "buffered", "r0-1": "buffered", "r0-2": "lost"}  # kept for reuse
    ledger.advance(1, 1)
    ledger.admit(1, ids(1, 2))
    ledger.put("r1-0", "c", 1)
    ledger.put("r1-1", "d", 1)  # 4 buffered > capacity 3: the oldest leaves; trained once, so counted trained
    assert ledger.states()["r0-0"] == "trained"
    batch = ledger.take_round(1, 1)
    assert batch["ids"] == ["r1-0", "r1-1", "r0-1"] and batch["reused"] == 1 and batch["staleness"] == [0, 0, 1]
    out = balanced(ledger)
    assert out["staleness_histogram"] == {0: 4, 1: 1} and out["max_staleness_seen"] == 1
    ledger.advance(2, 3)  # version 3: r1's samples, kept for reuse, are now beyond the bound
    assert ledger.states()["r1-0"] == "trained"
    assert balanced(ledger)["buffered"] == 0


def test_a_lost_sample_was_never_produced():
    ledger = SampleLedger(LedgerConfig())
    ledger.admit(0, ids(0, 3))
    ledger.put("r0-0", "a", 0)
    ledger.put("r0-1", "b", 0)
    ledger.lose("r0-2")
    out = balanced(ledger)
    assert (out["produced"], out["lost"], out["dropped"], out["admitted"]) == (2, 1, 0, 3)
    with pytest.raises(ValueError, match="not in flight"):
        ledger.lose("r0-0")  # it arrived: it cannot also be lost


def test_the_ledger_notices_a_state_changed_without_its_event():
    """The states alone always add up (each sample has one); the events counted as they happened catch a sample
    that changed state behind the ledger's back."""
    ledger = SampleLedger(LedgerConfig())
    ledger.admit(0, ids(0, 3))
    for sid in ids(0, 3):
        ledger.put(sid, sid, 0)
    assert balanced(ledger)["produced"] == 3
    ledger.samples["r0-1"].state = "trained"  # retired without being taken by any batch
    assert not ledger.ledger()["consistent"]


def test_a_sample_older_than_the_bound_is_dropped_not_trained():
    ledger = SampleLedger(LedgerConfig(max_staleness=1))
    ledger.admit(0, ids(0))
    ledger.put("r0-0", "a", 0)
    ledger.put("r0-1", "b", 1)
    batch = ledger.take_round(0, 2)
    assert batch["ids"] == ["r0-1"] and batch["dropped"] == ["r0-0"]
    out = balanced(ledger)
    assert out["dropped"] == 1 and out["trained"] == 1 and out["max_staleness_seen"] == 1


def test_pipeline_config_is_checked_at_load():
    base = {"model": {}, "train": {}, "loop": {}}
    assert config_from_dict(base).pipeline.max_staleness == 1
    for bad, field in [({"max_staleness": -1}, "pipeline.max_staleness"), ({"schedule": "stream"}, "pipeline.schedule"),
                       ({"publish_every": 3, "max_staleness": 1}, "pipeline.publish_every"),
                       ({"off_policy": "vtrace"}, "pipeline.off_policy"), ({"reuse": 0}, "pipeline.reuse"),
                       ({"learner": "long_lived"}, "pipeline.learner")]:
        with pytest.raises(ConfigError, match=field):
            config_from_dict({**base, "pipeline": bad})


def test_off_policy_loss_corrects_stale_tokens_and_reduces_to_ppo_on_policy():
    torch.manual_seed(0)
    new = torch.randn(6, requires_grad=True)
    ref = torch.randn(6)
    behav = new.detach() + 0.3 * torch.randn(6)
    # on-policy (proximal == behaviour): the decoupled loss is today's clipped loss
    same = off_policy_loss(new, behav, behav, ref, 0.7, 0.2, 0.05, cap=2.0)
    assert torch.allclose(same.loss, clipped_policy_loss(new, behav, ref, 0.7, 0.2, 0.05).loss)
    assert same.iw_mean.item() == pytest.approx(1.0) and same.truncated_fraction.item() == 0.0
    # a behaviour policy far from the proximal one: weights above the cap are truncated, and counted
    prox = behav + torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0, -3.0])
    out = off_policy_loss(new, prox, behav, ref, 1.0, 0.2, 0.0, cap=2.0)
    assert out.truncated_fraction.item() == pytest.approx(1 / 6) and out.iw_max.item() > 2.0
    uncapped = off_policy_loss(new, prox, behav, ref, 1.0, 0.2, 0.0, cap=1e9)
    assert out.loss.item() > uncapped.loss.item()  # the weight of e^3 was cut to 2 (advantage > 0: less reward)
    out.loss.backward()
    assert new.grad is not None and torch.isfinite(new.grad).all()
    tis = off_policy_loss(new, prox, behav, ref, 1.0, 0.2, 0.0, cap=1.1, mode="truncated_is")
    assert torch.isfinite(tis.loss)


def test_ppo_batch_trains_stale_samples_with_the_correction_and_reports_it(tiny_model_path):
    """The learner's PPO batch, in-process on the tiny model (outside a Ray Train session, so the
    resume point, which asks the session for a checkpoint, is a fresh one)."""
    from transformers import AutoTokenizer

    from codealign.config import PipelineConfig, TrainConfig
    from codealign.records import ExecutionResult, Experience
    from codealign.sandbox import Verdict
    from codealign.trainers.modeling import load_policy
    from codealign.trainers.ppo import ppo_batch
    from codealign.trainers.trainee import Trainee

    cfg = TrainConfig(algorithm="ppo", batch_size=2, max_length=128)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    torch.manual_seed(0)
    policy = load_policy(tiny_model_path, cfg)
    data = [Experience("ex", "Write add.", "x", "x",
                       ExecutionResult(Verdict.PASSED if i % 2 else Verdict.FAILED, 4.0 if i % 2 else -0.3, 0.0),
                       i % 2, [5 + i, 7, 9, 11], [-2.0, -1.5, -3.0, -2.5], f"s{i}") for i in range(4)]
    # trained at version 1: the samples of version 0 are one version stale, those of version 1 are on-policy
    trainee = Trainee.local(policy, tokenizer, cfg, pipe=PipelineConfig())
    m, carry = ppo_batch(trainee, data, 1)
    assert m["ppo/stale_fraction"] == 0.5 and m["ppo/rollouts"] == 4
    assert 0 < m["ppo/iw_mean"] <= m["ppo/iw_max"] and m["ppo/iw_truncated_fraction"] == 0.0
    assert m["ppo/loss"] == m["ppo/loss"]  # finite, not NaN
    assert m["ppo/optimizer_carried"] == 0 and m["ppo/global_step"] == 2
    # the next batch continues the optimizer (AdamW's moments and the step count)
    on_policy, _ = ppo_batch(trainee, data, 0, carry=carry)
    assert on_policy["ppo/stale_fraction"] == 0.0 and "ppo/iw_mean" not in on_policy
    assert on_policy["ppo/optimizer_carried"] == 1 and on_policy["ppo/global_step"] == 4


def test_a_snapshot_restores_trained_and_complete_rounds_and_leaves_rounds_in_flight_to_be_produced_again():
    # reuse 2: a trained sample stays buffered for the next batch, and must come back with its experience
    ledger = SampleLedger(LedgerConfig(max_staleness=1, reuse=2))
    for r in (0, 1):
        assert ledger.admit(r, ids(r))
    for sid in ids(0) + ids(1):
        ledger.put(sid, f"exp-{sid}", 0)
    ledger.take_round(0, 0)
    ledger.advance(1, 1)
    assert ledger.admit(2, ids(2))
    ledger.put("r2-0", "exp-r2-0", 1)  # round 2 is half judged when the driver commits round 0
    snap = ledger.snapshot(next_round=1)
    assert snap["complete_rounds"] == [1]
    assert set(snap["refs"]) == set(ids(0) + ids(1))  # buffered: round 0 kept for reuse, round 1 untrained
    assert not any(s["id"].startswith("r2") for s in snap["samples"])

    restored = SampleLedger(LedgerConfig(max_staleness=1, reuse=2))
    restored.restore(snap, {sid: f"new-{sid}" for sid in snap["refs"]})
    out, before = restored.ledger(), ledger.ledger()
    assert out["consistent"] and (out["buffered"], out["in_flight"], out["admitted"], out["produced"]) == (4, 0, 4, 4)
    assert out["events"]["taken"] == 2 and out["staleness_histogram"] == before["staleness_histogram"]
    assert (out["learner_version"], out["released_rounds"]) == (before["learner_version"], before["released_rounds"])
    batch = restored.take_round(1, 1)
    assert batch["ids"] == ids(1) + ids(0)  # its own round, then round 0's reuse
    assert batch["refs"] == [f"new-{sid}" for sid in ids(1) + ids(0)]
    assert restored.admit(2, ids(2))  # round 2 is admitted again, under the same ids
    with pytest.raises(ValueError, match="not empty"):
        restored.restore(snap, {})


def test_rollout_buffer_and_learner_accounts_add_up_and_a_broken_count_is_caught(ray_cluster):
    """Stand-in actors (no engine) through the real driver: the rollout's, the buffer's, the driver's and the
    learner's own counts (the learner's read from the data it trained) agree; a learner that trains a sample of
    another batch, or one batch's samples twice, breaks the accounts; one that leaves a sample out does not."""
    import random

    from bench.pipeline import SimGroup, SimLearner, SimPool
    from codealign.actors.replay_buffer import ReplayBuffer
    from codealign.config import RunConfig
    from codealign.pipeline.schedule import plan_rounds
    from codealign.pipeline.stream import run_stream
    from codealign.records import Exercise

    cfg = RunConfig()
    cfg.loop.iterations, cfg.loop.exercises_per_iteration, cfg.loop.samples_per_exercise = 3, 2, 2
    cfg.train.algorithm, cfg.pipeline.max_staleness = "ppo", 1
    plans = plan_rounds(cfg, [Exercise(f"ex{i}", f"exercise {i}", "assert True") for i in range(6)],
                        random.Random(0))

    def run(learner):
        gen, pool, buffer = SimGroup(1, 1e-3), SimPool(1, 1e-3), ReplayBuffer.remote(ledger=LedgerConfig(1))
        try:
            return run_stream(cfg, plans, gen, pool, buffer, learner, make_data=lambda plan, exps: exps,
                              load_weights=lambda path: None)
        finally:
            for actor in gen.replicas + pool.actors + [buffer]:
                ray_cluster.kill(actor)
            learner.close()

    class Edited(SimLearner):  # the second batch's report, edited by `change`
        def __init__(self, change):
            super().__init__(1e-3)
            self.change, self.seen = change, []

        def poll(self):
            out = super().poll()
            for r in out:
                self.seen.append(list(r["trained_ids"]))
                if r["step"] == 2:
                    self.change(r, self.seen[0])
            return out

    ok = run(SimLearner(1e-3))
    assert ok.accounts["balanced"], ok.accounts["problems"]
    assert ok.accounts["learner_ids"] == ok.accounts["rollout"]["judged"] == ok.accounts["buffer"]["taken"] == 12
    assert ok.accounts["learner_batches"] == 3 and ok.accounts["left_out"] == ok.accounts["learner_excluded"] == 0

    def stranger(report, first):  # trains a sample of batch 1 in batch 2
        report["trained_ids"] = report["trained_ids"][:-1] + first[:1]

    def wrong_batch(report, first):  # says it received batch 1's data
        report["received_ids"] = first

    def twice(report, first):
        report["trained_ids"] = report["trained_ids"] + first
        report["received_ids"] = report["received_ids"] + first

    def excludes_one(report, first):  # e.g. an item cut to a multiple of the ranks: accounted for, no fault
        report["trained_ids"] = report["trained_ids"][:-1]

    found = {change.__name__: run(Edited(change)).accounts for change in (stranger, wrong_batch, twice, excludes_one)}
    assert any("batch 2: the learner trained ids it did not receive" in p for p in found["stranger"]["problems"])
    assert any("batch 2: the learner received" in p for p in found["wrong_batch"]["problems"])
    assert any("more than one batch" in p for p in found["twice"]["problems"])
    assert found["excludes_one"]["balanced"], found["excludes_one"]["problems"]
    assert (found["excludes_one"]["learner_excluded"], found["excludes_one"]["learner_ids"]) == (1, 11)


@pytest.mark.parametrize("rounds", [3, 2])
def test_publish_every_2_with_a_round_without_data_neither_waits_nor_leaves_a_batch_unpublished(ray_cluster, rounds):
    """publish_every 2, max_staleness 1; round 1 has no training data after round 0's batch, unpublished. With 3
    rounds the rollout must go on to round 2 (it used to wait for a publication that needed round 2 trained); with 2,
    round 0's batch is the last trained one and must reach the generators before the run ends."""
    import random
    import threading

    from bench.pipeline import SimGroup, SimLearner, SimPool
    from codealign.actors.replay_buffer import ReplayBuffer
    from codealign.config import RunConfig
    from codealign.pipeline.schedule import plan_rounds
    from codealign.pipeline.stream import run_stream
    from codealign.records import Exercise

    cfg = RunConfig()
    cfg.loop.iterations, cfg.loop.exercises_per_iteration, cfg.loop.samples_per_exercise = rounds, 2, 2
    cfg.train.algorithm, cfg.pipeline.max_staleness, cfg.pipeline.publish_every = "ppo", 1, 2
    plans = plan_rounds(cfg, [Exercise(f"ex{i}", f"exercise {i}", "assert True") for i in range(6)],
                        random.Random(0))
    gen, pool, buffer = SimGroup(1, 1e-3), SimPool(1, 1e-3), ReplayBuffer.remote(ledger=LedgerConfig(1))
    learner, out = SimLearner(1e-3), []
    run = threading.Thread(target=lambda: out.append(run_stream(
        cfg, plans, gen, pool, buffer, learner, load_weights=lambda path: None,
        make_data=lambda plan, exps: [] if plan.round == 1 else exps)), daemon=True)
    run.start()
    run.join(timeout=60)
    try:
        assert not run.is_alive(), "the stream waits for ever"
        [result] = out
        served = ray_cluster.get(gen.replicas[0].ready.remote())["policy_version"]
        trained = rounds - 1
        assert result.version == served == trained  # the last trained batch is what the generators serve
        assert [r["iteration"] for r in result.rounds] == list(range(rounds))
        assert result.ledger["max_staleness_seen"] <= 1 and result.ledger["dropped"] == 0
        assert result.accounts["balanced"], result.accounts["problems"]
    finally:
        for actor in gen.replicas + pool.actors + [buffer]:
            ray_cluster.kill(actor)
        learner.close()


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_failed_learner_batch_follows_loop_on_train_failure(ray_cluster, policy):
    """Round 1's batch fails in the learner (as a NaN loss ends the long-lived run). `stop`: the stream ends after
    logging the failure, what was in flight is judged and counted; `continue`: the learner is started again from
    the published version and round 2 trains on it. Either way the last good version serves and the accounts add
    up (the failed batch's samples were taken and trained by no batch)."""
    import random

    from bench.pipeline import SimGroup, SimLearner, SimPool
    from codealign.actors.replay_buffer import ReplayBuffer
    from codealign.config import RunConfig
    from codealign.pipeline.schedule import plan_rounds
    from codealign.pipeline.stream import run_stream
    from codealign.records import Exercise
    from codealign.trainers.streaming import TrainingFailed

    class FailsAtStep2(SimLearner):
        def poll(self):
            out = super().poll()
            if any(r["step"] == 2 for r in out):
                raise TrainingFailed("the long-lived learner stopped: ppo/loss is nan")
            return out

    cfg = RunConfig()
    cfg.loop.iterations, cfg.loop.exercises_per_iteration, cfg.loop.samples_per_exercise = 3, 2, 2
    cfg.train.algorithm, cfg.pipeline.max_staleness, cfg.loop.on_train_failure = "ppo", 1, policy
    plans = plan_rounds(cfg, [Exercise(f"ex{i}", f"exercise {i}", "assert True") for i in range(6)],
                        random.Random(0))
    gen, pool, buffer = SimGroup(1, 1e-3), SimPool(1, 1e-3), ReplayBuffer.remote(ledger=LedgerConfig(1))
    learners, restarts = [FailsAtStep2(1e-3)], []

    def restart(weights, version):
        restarts.append((weights, version))
        learners.append(SimLearner(1e-3))
        return learners[-1]

    try:
        result = run_stream(cfg, plans, gen, pool, buffer, learners[0], make_data=lambda plan, exps: exps,
                            load_weights=lambda path: None, restart_learner=restart)
        served = ray_cluster.get(gen.replicas[0].ready.remote())["policy_version"]
    finally:
        for actor in gen.replicas + pool.actors + [buffer]:
            ray_cluster.kill(actor)
        for learner in learners:
            learner.close()
    failed = result.rounds[1]
    assert failed["failure"]["stage"] == "train" and "nan" in failed["failure"]["message"]
    assert failed["new_policy_version"] == 1 and [f["iteration"] for f in result.failures] == [1]
    assert result.accounts["balanced"], result.accounts["problems"]
    assert result.accounts["untrained"] == 4 and result.ledger["in_flight"] == 0
    if policy == "stop":
        assert [r["iteration"] for r in result.rounds] == [0, 1] and restarts == []
        assert result.version == served == 1
    else:
        assert [r["iteration"] for r in result.rounds] == [0, 1, 2] and restarts == [("sim", 1)]
        assert result.rounds[2]["policy_version"] == 1 and result.version == served == 2
