"""Critic-free PPO: group advantages, and a learner batch through Ray Train on rollouts the tiny vLLM engine sampled;
stale samples with a critic."""

import math
from pathlib import Path

import pytest

from codealign.config import LoraConfig, TrainConfig
from codealign.records import ExecutionResult, Experience, GenerationRequest
from codealign.sandbox import Verdict
from codealign.trainers.ppo import advantages
from tests.conftest import train_batches


def judged(ex: str, reward: float, tokens=(1, 2), logps=(-1.0, -1.0)) -> Experience:
    verdict = Verdict.PASSED if reward > 0 else Verdict.FAILED
    return Experience(ex, "p", "c", "c", ExecutionResult(verdict, reward, 0.0), 0, list(tokens), list(logps))


def test_group_and_leave_one_out_advantages():
    batch = [judged("a", 4.0), judged("a", -0.3), judged("a", -0.3), judged("b", 4.0), judged("b", 4.0),
             judged("c", -1.0)]
    g = advantages(batch, "group")
    assert g[0] > 0 > g[1] == g[2] and g[3] == g[4] == 0.0 and g[5] == 0.0
    assert sum(g[:3]) == pytest.approx(0.0, abs=1e-9)
    r = advantages(batch, "rloo")
    assert r[0] == pytest.approx(4.0 - (-0.3)) and r[1] == pytest.approx(-0.3 - (4.0 - 0.3) / 2)
    with pytest.raises(ValueError, match="unknown kind 'nope'"):
        advantages(batch, "nope")


def test_ppo_batch_on_sampled_rollouts(ray_cluster, tiny_generator, tiny_model_path, tmp_path):
    prompts = ["Write a function that adds two numbers.", "Write a function that reverses a list."]
    reqs = [GenerationRequest(p, n=4, temperature=1.0, max_tokens=24, request_id=str(i)) for i, p in enumerate(prompts)]
    completions = ray_cluster.get(tiny_generator.generate.remote(reqs))
    data = []
    for i, (prompt, comps) in enumerate(zip(prompts, completions)):
        for j, c in enumerate(comps):  # half of each group "passes"
            reward = 4.0 if j % 2 == 0 else -0.3
            verdict = Verdict.PASSED if reward > 0 else Verdict.FAILED
            data.append(Experience(f"ex{i}", prompt, c.text, c.text, ExecutionResult(verdict, reward, 0.0),
                                   c.policy_version, c.token_ids, c.logprobs))
    cfg = TrainConfig(algorithm="ppo", learning_rate=1e-3, epochs=4, batch_size=4, lora=LoraConfig(r=8, alpha=16))
    (report,) = train_batches(cfg, tiny_model_path, tmp_path / "train", [data])
    metrics, merged = report["metrics"], Path(report["weights"])
    assert metrics["ppo/rollouts"] == 8 and metrics["ppo/steps"] == 8
    assert metrics["ppo/loss_last"] < metrics["ppo/loss_first"]
    # the trainer scores vLLM's tokens as vLLM did (fp32 here, bf16 there): the first step's ratio is ~1; and the
    # policy has moved away from the frozen reference (k3 is 0 exactly while they agree)
    assert metrics["ppo/ratio_first"] == pytest.approx(1.0, abs=0.02) and metrics["ppo/engine_logp_gap"] < 0.05
    assert metrics["ppo/kl"] > 1e-6
    assert math.isfinite(metrics["ppo/entropy"]) and metrics["ppo/reward_mean"] == pytest.approx(1.85)
    assert merged.is_file()


def test_stale_samples_get_the_off_policy_correction_with_a_critic(ray_cluster, tiny_model_path, tmp_path):
    """PPO with a critic in the stream schedule: the batch's train version reaches the learner, so samples older
    than it train with `pipeline.off_policy`'s correction and say so."""
    import ray

    from codealign.config import PipelineConfig
    from codealign.trainers.streaming import StreamingLearner

    data = [judged("a", 4.0, (5, 7, 9), (-2.0,) * 3), judged("a", -0.3, (6, 7, 9), (-2.0,) * 3)]
    cfg = TrainConfig(algorithm="ppo", critic=True, batch_size=2, max_length=64, lora=LoraConfig(r=4, alpha=8))

    def train(pipe: PipelineConfig) -> dict:
        learner = StreamingLearner(cfg, pipe, tiny_model_path, tmp_path / pipe.off_policy)
        try:
            learner.submit(0, ray.put(data), 1, True)  # made by version 0, trained by version 1: stale by one
            (report,) = learner.wait(1)
        finally:
            learner.close()
        return report["metrics"]

    metrics = train(PipelineConfig(importance_cap=1.5))
    assert metrics["ppo/stale_fraction"] == 1.0 and metrics["ppo/value_loss"] > 0
    assert metrics["ppo/iw_mean"] > 0 and 0.0 <= metrics["ppo/iw_truncated_fraction"] <= 1.0
    # the correction reaches the loss: the same stale batch without it trains on another objective
    uncorrected = train(PipelineConfig(off_policy="none"))
    assert abs(uncorrected["ppo/loss_first"] - metrics["ppo/loss_first"]) > 1e-3
