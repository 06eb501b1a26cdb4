"""A failing learner batch or a refused weight update does not end the run: the last good version keeps serving,
the version counter stays, and the run still evaluates and writes summary.json and report.md (the long-lived Ray
Train learner and real vLLM on the tiny model; the failures are real too: an infinite learning rate makes the
weights NaN)."""

import json
import math

import pytest

from codealign.config import config_from_dict
from codealign.pipeline.loop import run
from tests.tiny_runs import tiny_run_config


@pytest.mark.parametrize("stage", ["train", "sync"])
def test_a_failed_round_keeps_the_last_good_version_and_the_run_still_reports(ray_cluster, tiny_model_path, tmp_path,
                                                                              stage):
    # lr = inf: the first optimizer step turns the adapter into NaN.
    # train: one pair per optimizer step, so the second micro-batch's loss is NaN and the long-lived learner's run
    #   ends (TrainingFailed);
    # sync: every pair in one optimizer step, so the loss is finite and the batch is published, but its weights are
    #   NaN and every replica refuses them (what pipeline/resilience.learn_and_sync contained in the round-by-round
    #   loop; before, the stream's ray.get on the update's answer raised out of the run: no summary, no report).
    # on_train_failure: stop ends the stream after the failed round, in both cases.
    raw = tiny_run_config(tmp_path, tiny_model_path,
                          train={"learning_rate": float("inf"), "batch_size": 1 if stage == "train" else 4},
                          loop={"on_train_failure": "stop"}, pipeline={"max_staleness": 1})
    result = run(config_from_dict(raw))
    try:
        run_dir = result.run_dir.path
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(metrics) == 1, "on_train_failure: stop ends the loop after the failed round"
        [m] = metrics
        assert m["failure"]["stage"] == stage
        if stage == "train":
            assert m["failure"]["error"] == "TrainingFailed" and "nan" in m["failure"]["cause"].lower()
        else:
            assert "NaN or infinite" in m["failure"]["cause"] and m["train_items"] > 0
            assert "weights_published" not in m and "served_as" not in m
        assert m["policy_version"] == m["new_policy_version"] == 0
        assert result.policy_version == 0
        assert [r["policy_version"] for r in result.system.generator.ready()] == [0]
        assert result.system.generator.policy_version == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["failed_rounds"] == 1 and summary["policy_version"] == 0
        assert summary["failures"][0]["stage"] == stage
        assert summary["iterations_done"] == 1
        assert not math.isnan(summary["pass@1_after"])  # the closing evaluation ran, on the base weights
        assert {json.loads(x)["policy_version"] for x in (run_dir / "eval_after.jsonl").read_text().splitlines()} \
            == {0}
        report = (run_dir / "report.md").read_text()
        assert "## Failures" in report
        # the failed batch's samples are accounted for: taken, trained by no published batch
        assert "Sample accounts balance: 8 samples judged" in report
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    finally:
        result.system.shutdown()


def test_a_refused_update_rolls_back_and_on_train_failure_continue_trains_on(ray_cluster):
    """Stand-in replicas (plain Ray actors, no engine) refuse the first update to version 2: round 1's record
    carries the `sync` failure, the version rolls back to 1, the learner is started again from version 1's weights
    (loop.on_train_failure: continue), round 2 trains and is published as version 2, and the accounts balance."""
    import random

    import ray

    from bench.pipeline import SimLearner, SimPool
    from codealign.actors.replay_buffer import LedgerConfig, ReplayBuffer
    from codealign.config import RunConfig
    from codealign.pipeline.schedule import plan_rounds
    from codealign.pipeline.stream import run_stream
    from codealign.records import Completion, Exercise

    @ray.remote(num_cpus=0)
    class Replica:
        def __init__(self):
            self.version, self.refused = 0, 0

        def generate(self, requests):
            return [[Completion(r.request_id, "def f():\n    return 1\n", [1] * 4, [-0.5] * 4, "stop", self.version)
                     for _ in range(r.n)] for r in requests]

        def update_weights(self, weights, version: int) -> dict:
            if version == 2 and not self.refused:
                self.refused += 1
                raise ValueError("weight 'w' has NaN or infinite values")
            self.version = version
            return {"policy_version": version}

        def ready(self):
            return {"policy_version": self.version}

    class Group:
        replicas = [Replica.remote()]
        sent: list = []

        def recover(self, i: int) -> None:
            pass

        def start_update(self, weights, version: int):
            self.sent.append((weights, version))
            return [r.update_weights.remote(weights, version) for r in self.replicas]

    cfg = RunConfig()
    cfg.loop.iterations, cfg.loop.exercises_per_iteration, cfg.loop.samples_per_exercise = 3, 2, 2
    cfg.train.algorithm, cfg.pipeline.max_staleness, cfg.loop.on_train_failure = "ppo", 0, "continue"
    plans = plan_rounds(cfg, [Exercise(f"ex{i}", f"exercise {i}", "assert True") for i in range(4)],
                        random.Random(0))
    restarts, learners = [], [SimLearner(1e-3)]

    def restart(weights, version):
        restarts.append((weights, version))
        learners.append(SimLearner(1e-3))
        return learners[-1]

    gen, pool, buffer = Group(), SimPool(1, 1e-3), ReplayBuffer.remote(ledger=LedgerConfig())
    try:
        result = run_stream(cfg, plans, gen, pool, buffer, learners[0], make_data=lambda plan, exps: exps,
                            load_weights=lambda path: f"weights of {path}", restart_learner=restart)
        served = ray.get(gen.replicas[0].ready.remote())["policy_version"]
    finally:
        for actor in gen.replicas + pool.actors + [buffer]:
            ray.kill(actor)
        for learner in learners:
            learner.close()
    assert [r["iteration"] for r in result.rounds] == [0, 1, 2]
    first, second, third = result.rounds
    assert "failure" not in first and first["new_policy_version"] == 1
    assert second["failure"]["stage"] == "sync" and "NaN or infinite" in second["failure"]["cause"]
    assert second["new_policy_version"] == 1 and "weights_published" not in second
    assert restarts == [("sim", 1)]  # the learner trains on from what the replicas serve
    # the refused version was followed by version 1's weights again (the group's record of what it serves)
    assert [v for _, v in gen.sent] == [1, 2, 1, 2]
    assert third["policy_version"] == 1 and third["new_policy_version"] == 2 and "failure" not in third
    assert result.version == served == 2 and len(result.failures) == 1
    assert result.accounts["balanced"], result.accounts["problems"]


@pytest.mark.parametrize("value", ["later", 3])
def test_on_train_failure_is_checked(value, tmp_path):
    from codealign.config import ConfigError

    raw = tiny_run_config(tmp_path, "unused", loop={"on_train_failure": value})
    with pytest.raises(ConfigError, match="loop.on_train_failure"):
        config_from_dict(raw)


