"""A failing learner round does not end the run: the last good version keeps serving, the version counter stays,
and the run still evaluates and writes summary.json and report.md (real Ray Train rounds and real vLLM on the
tiny model; the failures are real too: an infinite learning rate makes the weights NaN)."""

import json
import math
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file

from codealign.config import LoraConfig, TrainConfig, config_from_dict
from codealign.pipeline.loop import Stages, run
from codealign.pipeline.resilience import learn_and_sync
from codealign.records import GenerationRequest, PreferencePair
from codealign.trainers.learner import Learner
from codealign.weights import to_numpy
from tests.tiny_runs import tiny_run_config

PAIRS = [PreferencePair(f"Write f{i}(x).", f"def f{i}(x):\n    return x + {i}\n", "def f(:\n", "reference>syntax_error")
         for i in range(4)]


@pytest.mark.parametrize("schedule", ["rounds", "stream"])
def test_a_nan_round_keeps_the_last_good_version_and_the_run_still_reports(ray_cluster, tiny_model_path, tmp_path,
                                                                           schedule):
    # lr = inf: the first optimizer step turns the adapter into NaN, the second micro-batch's loss is NaN; in the
    # stream schedule that ends the long-lived learner's run, and on_train_failure: stop ends the stream
    raw = tiny_run_config(tmp_path, tiny_model_path, train={"learning_rate": float("inf"), "batch_size": 1},
                          loop={"on_train_failure": "stop"},
                          pipeline={"schedule": schedule, "max_staleness": 1})
    result = run(config_from_dict(raw))
    try:
        run_dir = result.run_dir.path
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(metrics) == 1, "on_train_failure: stop ends the loop after the failed round"
        [m] = metrics
        assert m["failure"]["stage"] == "train" and "TrainingFailed" == m["failure"]["error"]
        assert "nan" in m["failure"]["cause"].lower()
        assert m["policy_version"] == m["new_policy_version"] == 0
        assert result.policy_version == 0
        assert [r["policy_version"] for r in result.system.generator.ready()] == [0]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["failed_rounds"] == 1 and summary["policy_version"] == 0
        assert summary["iterations_done"] == 1
        assert not math.isnan(summary["pass@1_after"])  # the closing evaluation ran
        assert (run_dir / "eval_after.jsonl").is_file()
        assert "## Failures" in (run_dir / "report.md").read_text()
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    finally:
        result.system.shutdown()


def catch_up_group(handle, ray_cluster):
    """A GeneratorGroup around the session's engine (starting a second vLLM engine would cost half a minute)."""
    from codealign.actors.generator_group import GeneratorGroup

    group = GeneratorGroup.__new__(GeneratorGroup)
    group.replicas, group.max_attempts, group._latest = [handle], 1, None
    group.policy_version = ray_cluster.get(handle.ready.remote())["policy_version"]
    return group


def test_a_refused_weight_update_keeps_serving_and_the_learner_rolls_back(ray_cluster, tiny_generator,
                                                                          tiny_model_path, tmp_path):
    group = catch_up_group(tiny_generator, ray_cluster)
    cfg = TrainConfig(learning_rate=1e-3, batch_size=4, max_length=128, num_cpus_per_worker=1,
                      lora=LoraConfig(r=4, alpha=8))
    learner = Learner(cfg, tiny_model_path, tmp_path / "train")
    system = SimpleNamespace(learner=learner, generator=group)
    greedy = [GenerationRequest("Write f1(x).", temperature=0.0, max_tokens=8)]
    try:
        good = learn_and_sync(system, PAIRS, 0, Stages(), iteration=0)
        assert good.failure is None and good.version == 1
        first_round = learner.last_checkpoint
        [[served]] = ray_cluster.get(tiny_generator.generate.remote(greedy))

        # one optimizer step at lr = inf: the loss was finite, the merged weights are not; vLLM refuses them
        cfg.learning_rate = float("inf")
        bad = learn_and_sync(system, PAIRS, 1, Stages(), iteration=1)
        assert bad.failure is not None and bad.failure["stage"] == "sync", bad.failure
        assert "NaN or infinite" in bad.failure["cause"]
        assert bad.version == 1 and group.policy_version == 1
        assert learner.last_checkpoint == first_round  # the next round trains on from what is served
        [[after]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
        assert after.policy_version == 1 and after.token_ids == served.token_ids
    finally:  # the engine is shared by the session: put the original weights back
        original = load_file(f"{tiny_model_path}/model.safetensors")
        ray_cluster.get(tiny_generator.update_weights.remote(ray_cluster.put(to_numpy(original)), 0))


@pytest.mark.parametrize("value", ["later", 3])
def test_on_train_failure_is_checked(value, tmp_path):
    from codealign.config import ConfigError

    raw = tiny_run_config(tmp_path, "unused", loop={"on_train_failure": value})
    with pytest.raises(ConfigError, match="loop.on_train_failure"):
        config_from_dict(raw)


