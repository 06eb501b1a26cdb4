"""A short loop end to end on the real SmolLM2-135M-Instruct: vLLM actor, sandbox executors, replay buffer,
the long-lived Ray Train DPO learner and the in-place weight update (the default config: pipelined)."""

import json

import pytest
import yaml

from codealign.config import config_from_dict
from codealign.pipeline.loop import run
from tests.conftest import LOCAL


@pytest.mark.slow
def test_short_loop_on_the_real_model(ray_cluster, tmp_path, real_model_path):
    raw = yaml.safe_load(LOCAL.read_text())
    raw.update(name="e2e", output_dir=str(tmp_path))
    raw["data"]["eval_size"] = 6
    raw["loop"].update(iterations=1, exercises_per_iteration=4, samples_per_exercise=2)
    raw["train"].update(max_pairs=4, learning_rate=5e-4)
    raw["generator"]["max_tokens"] = 256
    raw["eval"].update(validation_size=3, every=1)
    result = run(config_from_dict(raw))
    try:
        run_dir = result.run_dir.path
        [metrics] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert metrics["samples"] == 8 and sum(metrics["verdicts"].values()) == 8
        assert metrics["train_items"] > 0 and metrics["dpo/pairs"] == metrics["train_items"]
        assert metrics["dpo/loss"] == metrics["dpo/loss"]  # not NaN
        assert set(metrics["seconds"]) >= {"generate", "execute", "train", "sync"}

        # the policy version went up, in the run's record and in the live generator
        assert result.policy_version == 1 and metrics["new_policy_version"] == 1
        assert [r["policy_version"] for r in result.system.generator.ready()] == [1]

        # the generator's output changed after the weight update (same greedy prompts before and after)
        before = [json.loads(x) for x in (run_dir / "eval_before.jsonl").read_text().splitlines()]
        after = [json.loads(x) for x in (run_dir / "eval_after.jsonl").read_text().splitlines()]
        assert [s["exercise_id"] for s in before] == [s["exercise_id"] for s in after]
        assert {s["policy_version"] for s in before} == {0} and {s["policy_version"] for s in after} == {1}
        assert any(b["text"] != a["text"] for b, a in zip(before, after))

        # every sample went through the replay buffer (pipelined, max_staleness 1) and was trained: none lost
        ledger = ray_cluster.get(result.system.buffer.ledger.remote())
        assert ledger["produced"] == ledger["trained"] == 8 and ledger["consistent"]
        accounts = json.loads((run_dir / "summary.json").read_text())["replay_buffer"]["accounts"]
        assert accounts["balanced"] and accounts["sent_ids"] == accounts["rollout"]["judged"] == 8
        assert 0 < accounts["learner_ids"] <= 8
        assert metrics["staleness_histogram"] == {"0": 8}

        report = (run_dir / "report.md").read_text()
        assert "pass@1" in report and (run_dir / "adapter" / "adapter_config.json").is_file()
        # evaluation: both test benchmarks before/after with the paired comparison, validation, plots
        assert "exact McNemar p =" in report and "![Stage timings](plots/stages.png)" in report
        assert "![DPO: chosen/rejected rewards, margin, accuracy, loss](plots/dpo.png)" in report
        assert metrics["validation"]["tasks"] == 3 and metrics["validation"]["iteration"] == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert set(summary["benchmarks"]) == {"mbpp", "humaneval"}
        assert summary["benchmarks"]["humaneval"]["paired"]["tasks"] == 6
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "e2e"
    finally:
        result.system.shutdown()
