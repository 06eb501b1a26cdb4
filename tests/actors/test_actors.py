"""Generator, executor pool and replay buffer as real Ray actors (tiny random model in a real vLLM engine)."""

import math

import pytest
import torch
from safetensors.torch import load_file

from codealign.actors.executor import ExecutorPool
from codealign.actors.replay_buffer import ReplayBuffer
from codealign.config import ExecutorConfig
from codealign.records import GenerationRequest
from codealign.sandbox import RewardTable, Verdict
from codealign.weights import to_numpy

PROMPT = "Write a Python function that adds two numbers."


def test_generate_returns_text_tokens_and_logprobs(ray_cluster, tiny_generator):
    req = GenerationRequest(PROMPT, n=3, temperature=1.0, max_tokens=16, request_id="r1")
    [completions] = ray_cluster.get(tiny_generator.generate.remote([req]))
    assert len(completions) == 3
    for c in completions:
        assert c.request_id == "r1" and c.finish_reason in ("stop", "length") and not c.error
        assert 0 < len(c.token_ids) <= 16 and len(c.logprobs) == len(c.token_ids)
        assert all(lp <= 0 and math.isfinite(lp) for lp in c.logprobs)
        assert c.policy_version == 0 and c.role == "student"


def test_bad_requests_fail_alone_not_the_batch(ray_cluster, tiny_generator):
    reqs = [
        GenerationRequest("word " * 2000, max_tokens=8, request_id="too-long"),
        GenerationRequest("   ", request_id="empty"),
        GenerationRequest(PROMPT, temperature=-1.0, request_id="bad-temperature"),
        GenerationRequest(PROMPT, max_tokens=0, request_id="no-tokens"),
        GenerationRequest(PROMPT, max_tokens=8, request_id="fine"),
    ]
    out = ray_cluster.get(tiny_generator.generate.remote(reqs))
    by_id = {o[0].request_id: o[0] for o in out}
    assert "context holds 512" in by_id["too-long"].error
    assert by_id["empty"].error == "empty prompt"
    assert "temperature" in by_id["bad-temperature"].error
    assert "max_tokens" in by_id["no-tokens"].error
    assert all(by_id[k].finish_reason == "error" for k in ("too-long", "empty", "bad-temperature", "no-tokens"))
    assert by_id["fine"].finish_reason != "error" and by_id["fine"].token_ids


def test_weight_update_changes_outputs_and_version(ray_cluster, tiny_generator, tiny_model_path):
    greedy = [GenerationRequest(PROMPT, temperature=0.0, max_tokens=12, request_id="g")]
    [[before]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
    original = load_file(f"{tiny_model_path}/model.safetensors")
    torch.manual_seed(1)
    perturbed = {k: v + 0.5 * torch.randn_like(v) if v.dim() == 2 else v for k, v in original.items()}
    try:
        info = ray_cluster.get(tiny_generator.update_weights.remote(ray_cluster.put(to_numpy(perturbed)), 7))
        assert info["policy_version"] == 7
        [[after]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
        assert after.policy_version == 7 and after.token_ids != before.token_ids
    finally:  # the engine is shared by the session: put the original weights back
        ray_cluster.get(tiny_generator.update_weights.remote(ray_cluster.put(to_numpy(original)), 0))
    [[restored]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
    assert restored.token_ids == before.token_ids


def test_lora_update_changes_outputs_and_version(ray_cluster, tiny_generator, tiny_model_path):
    from codealign.config import LoraConfig, TrainConfig
    from codealign.trainers.modeling import adapter_for_generators, load_policy

    greedy = [GenerationRequest(PROMPT, temperature=0.0, max_tokens=12, request_id="g")]
    [[before]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
    policy = load_policy(tiny_model_path, TrainConfig(lora=LoraConfig(r=8, alpha=16)))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter, config = adapter_for_generators(policy)
    original = load_file(f"{tiny_model_path}/model.safetensors")
    try:
        info = ray_cluster.get(tiny_generator.update_lora.remote(ray_cluster.put(adapter), config, 3))
        assert info["policy_version"] == 3
        [[after]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
        assert after.policy_version == 3 and after.token_ids != before.token_ids
    finally:  # a full update drops the adapter: back to the base model for the rest of the session
        ray_cluster.get(tiny_generator.update_weights.remote(ray_cluster.put(to_numpy(original)), 0))
    [[restored]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
    assert restored.token_ids == before.token_ids


@pytest.mark.parametrize("bad, reason", [("unknown", "not a parameter"), ("nan", "NaN or infinite"),
                                         ("shape", "has shape")])
def test_a_refused_update_keeps_the_previous_version_serving(ray_cluster, tiny_generator, tiny_model_path,
                                                             bad, reason):
    greedy = [GenerationRequest(PROMPT, temperature=0.0, max_tokens=12, request_id="g")]
    [[before]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
    weights = load_file(f"{tiny_model_path}/model.safetensors")
    if bad == "unknown":
        weights["model.layers.99.mlp.up_proj.weight"] = torch.zeros(4, 4, dtype=torch.bfloat16)
    elif bad == "shape":
        weights = {k: v + 1.0 for k, v in weights.items()}  # would change the outputs if it were loaded
        weights["model.norm.weight"] = weights["model.norm.weight"][:-1].contiguous()
    else:
        first = next(k for k in weights if k.endswith("down_proj.weight"))
        weights = {k: v + 1.0 for k, v in weights.items()}  # would change the outputs if it were loaded
        weights[first][0, 0] = float("nan")
    with pytest.raises(Exception, match=reason):
        ray_cluster.get(tiny_generator.update_weights.remote(ray_cluster.put(to_numpy(weights)), 99))
    [[after]] = ray_cluster.get(tiny_generator.generate.remote(greedy))
    assert after.policy_version == before.policy_version and after.token_ids == before.token_ids


def test_executor_pool_keeps_order_and_rewards(ray_cluster):
    pool = ExecutorPool(ExecutorConfig(num_actors=2, timeout_s=2.0), RewardTable())
    try:
        good = ("def f(x):\n    return x * 2\n", "assert f(2) == 4\n")
        bad = ("def f(x):\n    return x\n", "assert f(2) == 4\n")
        broken = ("def f(x) return x\n", "assert f(2) == 4\n")
        results = pool.run([good, bad, broken, good, bad])
        assert [r.verdict for r in results] == [Verdict.PASSED, Verdict.FAILED, Verdict.SYNTAX_ERROR,
                                                Verdict.PASSED, Verdict.FAILED]
        assert [r.reward for r in results] == [4.0, -0.3, -1.0, 4.0, -0.3]
    finally:
        pool.shutdown()


def test_executor_pool_rejects_empty_pool():
    with pytest.raises(ValueError, match="num_actors"):
        ExecutorPool(ExecutorConfig(num_actors=0), RewardTable())


def test_replay_buffer_holds_refs_tagged_by_version(ray_cluster):
    buffer = ReplayBuffer.remote(capacity=10)
    refs = [ray_cluster.put([f"v{v}-{i}" for i in range(4)]) for v in range(3)]
    for version, ref in enumerate(refs):
        ray_cluster.get(buffer.add.remote([ref], version, 4))
    stats = ray_cluster.get(buffer.stats.remote())
    # capacity 10 records: the oldest batch of 4 was dropped
    assert stats == {"records": 8, "batches": 2, "by_version": {1: 4, 2: 4}}
    newest = ray_cluster.get(buffer.get.remote(min_version=2))
    assert len(newest) == 1 and isinstance(newest[0], ray_cluster.ObjectRef)
    assert ray_cluster.get(newest[0]) == [f"v2-{i}" for i in range(4)]
