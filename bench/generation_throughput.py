"""Generation throughput: the generator actor, vLLM in this process, and Hugging Face `generate`, same prompts.

    .venv/bin/python bench/generation_throughput.py [--max-tokens 128] [--hf-batch 32]

The 164 HumanEval prompts (chat-formatted), greedy, the same token budget for all three. Generated tokens per
second of wall time. Last line: JSON with actor_tok_s, direct_tok_s, hf_tok_s, ratio_actor_vs_direct,
ratio_actor_vs_hf.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codealign.exercises.loaders import resolve_data_dir  # noqa: E402

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as inside the actor: the engine in-process
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    import ray
    import torch

    from codealign.actors.generator import Generator, create_generator
    from codealign.chat import format_prompt
    from codealign.config import GeneratorConfig, ModelConfig
    from codealign.exercises.loaders import load_humaneval
    from codealign.model_source import resolve_model
    from codealign.records import GenerationRequest

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--hf-batch", type=int, default=32)
    parser.add_argument("--data", default=str(resolve_data_dir()))
    args = parser.parse_args()
    model_path = resolve_model(args.model)
    prompts = [ex.prompt for ex in load_humaneval(args.data)]
    requests = [GenerationRequest(p, temperature=0.0, max_tokens=args.max_tokens, request_id=str(i))
                for i, p in enumerate(prompts)]
    model_cfg, gen_cfg = ModelConfig(max_model_len=2048), GeneratorConfig(num_cpus=2)

    def tokens(outputs) -> int:
        return sum(len(c.token_ids) for comps in outputs for c in comps)

    # (a) the Ray actor and (b) the same engine class in this process, both up at once and run in turns
    # (best of two each), so neither gains from going second
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    actor = create_generator(model_path, model_cfg, gen_cfg)
    direct = Generator(model_path, model_cfg, gen_cfg)
    ray.get(actor.generate.remote(requests[:4]))  # warm-up
    direct.generate(requests[:4])
    runs = {"actor": [], "direct": []}
    for _ in range(2):
        for name, call in (("actor", lambda: ray.get(actor.generate.remote(requests))),
                           ("direct", lambda: direct.generate(requests))):
            # no run may reuse the KV blocks of the prompts from the run before it
            ray.get(actor.reset_prefix_cache.remote())
            direct.reset_prefix_cache()
            start = time.perf_counter()
            n = tokens(call())
            runs[name].append((n / (time.perf_counter() - start), n))
    (actor_rate, actor_tokens), (direct_rate, direct_tokens) = max(runs["actor"]), max(runs["direct"])
    tokenizer = direct.tokenizer
    ray.kill(actor)
    ray.shutdown()
    direct = None  # free the engine before loading the HF model

    # (c) Hugging Face transformers, batched, left-padded, bf16
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).eval()
    tokenizer.padding_side = "left"
    texts = [format_prompt(tokenizer, p) for p in prompts]
    hf_tokens, start = 0, time.perf_counter()
    for i in range(0, len(texts), args.hf_batch):
        batch = tokenizer(texts[i : i + args.hf_batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=args.max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        # count up to and including the first end-of-sequence token, as vLLM does
        for row in new.tolist():
            hf_tokens += next((j + 1 for j, t in enumerate(row) if t == tokenizer.eos_token_id), len(row))
    hf_s = time.perf_counter() - start

    figures = {
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "actor_tok_s": round(actor_rate, 1),
        "direct_tok_s": round(direct_rate, 1),
        "all_runs_tok_s": {k: [round(r, 1) for r, _ in v] for k, v in runs.items()},
        "hf_tok_s": round(hf_tokens / hf_s, 1),
        "tokens": {"actor": actor_tokens, "direct": direct_tokens, "hf": hf_tokens},
    }
    figures["ratio_actor_vs_direct"] = round(figures["actor_tok_s"] / figures["direct_tok_s"], 3)
    figures["ratio_actor_vs_hf"] = round(figures["actor_tok_s"] / figures["hf_tok_s"], 2)
    print(f"actor {figures['actor_tok_s']} tok/s, direct {figures['direct_tok_s']} tok/s, "
          f"HF {figures['hf_tok_s']} tok/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
