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
                          loop={"on_train_failure": "stop"}, pipeline={"max_staleness": 1, "learner": "long_lived"})
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
        assert "## Failures" in (run_dir / "report.md").read_text()
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    finally:
        result.system.shutdown()


@pytest.mark.parametrize("value", ["later", 3])
def test_on_train_failure_is_checked(value, tmp_path):
    from codealign.config import ConfigError

    raw = tiny_run_config(tmp_path, "unused", loop={"on_train_failure": value})
    with pytest.raises(ConfigError, match="loop.on_train_failure"):
        config_from_dict(raw)


