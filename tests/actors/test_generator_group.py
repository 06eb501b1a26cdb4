"""Replicas behind one handle, and recovery from an engine crash (real actors, real vLLM, tiny model).

The crash is a real one: `ray.kill(..., no_restart=False)` kills the replica's process while it is generating;
Ray restarts it from its constructor, i.e. with the base weights."""

import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from codealign.actors.generator_group import GeneratorGroup
from codealign.config import GeneratorConfig, ModelConfig
from codealign.records import GenerationRequest
from codealign.weights import to_numpy

PROMPT = "Write a Python function that adds two numbers."


@pytest.fixture(scope="module")
def group(ray_cluster, tiny_model_path):
    g = GeneratorGroup(tiny_model_path, ModelConfig(max_model_len=512), GeneratorConfig(num_cpus=1, kv_cache_gib=1),
                       replicas=2, max_restarts=2)
    yield g
    g.shutdown()


def greedy(i: int, tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(f"{PROMPT} Variant {i}.", temperature=0.0, max_tokens=tokens, request_id=str(i))


def test_requests_are_spread_and_answered_in_order(group):
    out = group.generate([greedy(i) for i in range(6)])
    assert [o[0].request_id for o in out] == [str(i) for i in range(6)]
    assert len(group.ready()) == 2


def test_a_crashed_replica_comes_back_with_the_latest_weights(ray_cluster, group, tiny_model_path):
    base = load_file(f"{tiny_model_path}/model.safetensors")
    torch.manual_seed(3)
    new = {k: v + 0.5 * torch.randn_like(v) if v.dim() == 2 else v for k, v in base.items()}
    group.update_weights(to_numpy(new), 5)
    expected = [o[0].token_ids for o in group.generate([greedy(i) for i in range(4)])]

    # the engine of replica 0 dies between calls; then replica 1 dies while a batch is in flight on it
    start = time.monotonic()
    ray_cluster.kill(group.replicas[0], no_restart=False)
    killer = threading.Timer(0.3, lambda: ray_cluster.kill(group.replicas[1], no_restart=False))
    killer.start()
    out = group.generate([greedy(i, tokens=300) for i in range(8)] * 4)
    killer.join()
    assert len(out) == 32 and all(o and o[0].finish_reason != "error" for o in out)
    assert {o[0].policy_version for o in out} == {5}
    # the restarted replica serves version 5 again, not the base weights it was constructed with
    assert [r["policy_version"] for r in group.ready()] == [5, 5]
    again = [o[0].token_ids for o in group.generate([greedy(i) for i in range(4)])]
    assert again == expected
    assert time.monotonic() - start < 240


def test_tensor_parallel_layout_for_gpu_clusters(ray_cluster):
    # No GPU exists here: the placement group is created (it stays pending) but never scheduled. Checked: what the
    # actor itself asks for, and the group its engine's TP workers are placed in (the OpenRLHF layout).
    from codealign.actors.generator import actor_options

    single = actor_options(GeneratorConfig(num_gpus=1.0))
    assert single["num_gpus"] == 1.0 and "scheduling_strategy" not in single
    opts = actor_options(GeneratorConfig(tensor_parallel_size=2, num_gpus=1.0), max_restarts=2)
    strategy = opts["scheduling_strategy"]
    try:
        assert opts["num_gpus"] == 0 and opts["max_restarts"] == 2  # the GPUs belong to the TP workers' bundles
        assert strategy.placement_group_capture_child_tasks  # vLLM's Ray workers land in the actor's group
        assert strategy.placement_group.bundle_specs == [{"GPU": 1, "CPU": 1}] * 2
    finally:
        ray_cluster.util.remove_placement_group(strategy.placement_group)


def test_zero_replicas_is_refused(ray_cluster, tiny_model_path):
    with pytest.raises(ValueError, match="generator.replicas must be >= 1"):
        GeneratorGroup(tiny_model_path, ModelConfig(), GeneratorConfig(), replicas=0)
