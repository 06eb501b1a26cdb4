"""Time from "the learner has new weights" to "the generator serves them", full weights and a LoRA adapter.

    .venv/bin/python bench/weight_sync.py [--model PATH] [--repeat 3]

The learner side is this process: it holds a torch state dict (full) or a PEFT model (LoRA). Timed: conversion to
numpy, `ray.put`, the generator actor's update, until it returns, serving the new version. A greedy generation
before and after checks the new weights are really in use. Last line: JSON with full_sync_s and lora_sync_s
(medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch
    from safetensors.torch import load_file

    from codealign.actors.generator import create_generator
    from codealign.config import GeneratorConfig, LoraConfig, ModelConfig, TrainConfig
    from codealign.model_source import resolve_model
    from codealign.records import GenerationRequest
    from codealign.trainers.modeling import adapter_for_generators, load_policy
    from codealign.weights import to_numpy

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model_path = resolve_model(args.model)

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    gen = create_generator(model_path, ModelConfig(max_model_len=1024),
                           GeneratorConfig(enable_lora=True, max_lora_rank=16))
    probe = [GenerationRequest("Write a Python function that reverses a string.", max_tokens=24)]

    def sample() -> list[int]:
        return ray.get(gen.generate.remote(probe))[0][0].token_ids

    base_tokens = sample()
    state = load_file(f"{model_path}/model.safetensors")
    full_times, version = [], 0
    for i in range(args.repeat):
        torch.manual_seed(i)
        new = {k: v + 0.02 * torch.randn_like(v) if v.dim() == 2 else v for k, v in state.items()}
        start = time.perf_counter()
        ref = ray.put(to_numpy(new))
        version += 1
        ray.get(gen.update_weights.remote(ref, version))
        full_times.append(time.perf_counter() - start)
        del ref
    full_changed = sample() != base_tokens
    ray.get(gen.update_weights.remote(ray.put(to_numpy(state)), version + 1))  # back to the base
    version += 1

    policy = load_policy(model_path, TrainConfig(lora=LoraConfig(r=16, alpha=32)))
    lora_times = []
    for i in range(args.repeat):
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
        start = time.perf_counter()
        adapter, config = adapter_for_generators(policy)
        ref = ray.put(adapter)
        version += 1
        ray.get(gen.update_lora.remote(ref, config, version))
        lora_times.append(time.perf_counter() - start)
    lora_changed = sample() != base_tokens

    figures = {
        "full_sync_s": round(statistics.median(full_times), 3),
        "lora_sync_s": round(statistics.median(lora_times), 3),
        "full_sync_all_s": [round(t, 3) for t in full_times],
        "lora_sync_all_s": [round(t, 3) for t in lora_times],
        "outputs_changed_full": full_changed,
        "outputs_changed_lora": lora_changed,
    }
    print(f"full {figures['full_sync_s']} s, LoRA {figures['lora_sync_s']} s")
    print(json.dumps(figures))
    ray.shutdown()


if __name__ == "__main__":
    main()
