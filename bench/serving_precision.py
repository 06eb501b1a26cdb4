"""How much of a LoRA round survives each way of serving it, measured with transformers alone (no engine).

    .venv/bin/python bench/serving_precision.py [--model PATH] [--steps 4] [--lr 5e-5] [--probes 4]

Trains a LoRA adapter (the default recipe's r=16, alpha=32, AdamW) for a few steps of next-token loss on the
reference solutions of the first MBPP training exercises, then scores those answers (the probe set) with:
- `trained`: the fp32 adapter over the base, in fp32 (what the learner holds);
- `merged_bf16`: the adapter folded into bf16 weights rounded to nearest (what a bf16 engine loaded before);
- `merged_bf16_stochastic`: folded into bf16 weights rounded stochastically (`codealign.weights.round_stochastic`,
  what the learner now writes for a bf16 engine);
- `merged_fp32`: folded into fp32 weights (what `model.dtype: float32` serves);
- `adapter_bf16`: the bf16 base with the adapter kept apart, cast to bf16 (what `generator.enable_lora` serves).
Each variant's arithmetic runs in fp32 here, so the figures isolate what the stored weights keep.
Last line: JSON with gain_* (nats per answer over the base) and kept_* (gain / trained gain).

    .venv/bin/python bench/serving_precision.py --speed [--prompts 16] [--max-tokens 128]

instead measures what each way of serving costs on this machine: greedy answers to the first `--prompts` HumanEval
prompts (chat) from a vLLM engine in this process, per variant (`bf16` merged weights, `fp32` weights, `bf16+lora`:
the bf16 base with a rank-16 adapter kept apart), generated tokens per second of wall time, each variant in its own
process. Last line: JSON with tok_s_<variant>.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codealign.exercises.loaders import resolve_data_dir  # noqa: E402


def speed_one(variant: str, prompts: int, max_tokens: int) -> float:
    """Generated tokens per second of one engine serving `variant`."""
    import time

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from codealign.actors.generator import Generator
    from codealign.config import GeneratorConfig, ModelConfig
    from codealign.exercises.loaders import load_humaneval
    from codealign.models import resolve_model_path
    from codealign.records import GenerationRequest

    path = resolve_model_path("embedded:smollm2-135m-instruct")
    lora = variant == "bf16+lora"
    gen = Generator(path, ModelConfig(dtype="float32" if variant == "fp32" else "bfloat16", max_model_len=2048),
                    GeneratorConfig(kv_cache_gib=1, enable_lora=lora, max_lora_rank=16))
    if lora:  # a rank-16 adapter on every projection, as the default recipe trains
        import tempfile

        import torch

        from codealign.config import LoraConfig, TrainConfig
        from codealign.pipeline.serving import load_adapter
        from codealign.trainers.modeling import load_policy

        policy = load_policy(path, TrainConfig(bf16=False, lora=LoraConfig(r=16, alpha=32)))
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 1e-3)
        out = tempfile.mkdtemp()
        policy.save_pretrained(out)
        gen.update_lora(*load_adapter(Path(out)), version=1)
    tasks = load_humaneval(resolve_data_dir())[:prompts]
    requests = [GenerationRequest(t.prompt, n=1, temperature=0.0, max_tokens=max_tokens, request_id=t.id)
                for t in tasks]
    gen.generate(requests[:1])  # warm-up
    start = time.monotonic()
    done = gen.generate(requests)
    seconds = time.monotonic() - start
    tokens = sum(len(c.token_ids) for cs in done for c in cs)
    print(f"{variant}: {tokens} tokens in {seconds:.1f} s", flush=True)
    return tokens / seconds


def speed(args) -> None:
    import subprocess

    figures = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--speed-one", variant, "--prompts", str(args.prompts),
               "--max-tokens", str(args.max_tokens)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
            figures[f"tok_s_{variant}"] = json.loads(line)["tok_s"] if line.startswith("{") else None
            if figures[f"tok_s_{variant}"] is None:
                print(out.stderr[-2000:], flush=True)
        except subprocess.TimeoutExpired:
            figures[f"tok_s_{variant}"] = None
            print(f"{variant}: not done in {args.timeout} s", flush=True)
        print(variant, figures[f"tok_s_{variant}"], flush=True)
    figures.update(prompts=args.prompts, max_tokens=args.max_tokens)
    print(json.dumps(figures))


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codealign.chat import prompt_token_ids
    from codealign.config import LoraConfig, TrainConfig
    from codealign.exercises.extract import as_answer
    from codealign.exercises.loaders import load_mbpp
    from codealign.model_source import resolve_model
    from codealign.trainers.modeling import load_policy, merged_state_dict
    from codealign.trainers.probe import sequence_logprobs

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--speed", action="store_true", help="tokens per second of each way of serving instead")
    parser.add_argument("--variants", default="bf16,fp32,bf16+lora")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per variant (engine start included)")
    parser.add_argument("--speed-one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_one:
        print(json.dumps({"tok_s": speed_one(args.speed_one, args.prompts, args.max_tokens)}))
        return
    if args.speed:
        speed(args)
        return
    torch.manual_seed(0)
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    exercises = load_mbpp(resolve_data_dir(), (601, 974))[: args.probes]
    seqs, lens = [], []
    for ex in exercises:
        prompt = prompt_token_ids(tok, ex.prompt, chat=True)
        seqs.append(prompt + tok(as_answer(ex.reference), add_special_tokens=False)["input_ids"])
        lens.append(len(prompt))

    def gain(model) -> float:
        scores = sequence_logprobs(model, seqs, lens)
        return sum(sum(s) for s in scores) / len(scores)

    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    base_lp = gain(base)

    policy = load_policy(path, TrainConfig(bf16=False, lora=LoraConfig(r=16, alpha=32)))  # fp32 base and adapter
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    policy.train()
    for _ in range(args.steps):
        opt.zero_grad()
        for seq, start in zip(seqs, lens):
            ids = torch.tensor([seq])
            labels = ids.clone()
            labels[0, :start] = -100
            (policy(input_ids=ids, labels=labels).loss / len(seqs)).backward()
        opt.step()
    policy.eval()
    results = {"trained": gain(policy) - base_lp}

    for name, dtype, rounding in (("merged_bf16", torch.bfloat16, "nearest"),
                                  ("merged_bf16_stochastic", torch.bfloat16, "stochastic"),
                                  ("merged_fp32", torch.float32, "nearest")):
        weights = merged_state_dict(policy, dtype=dtype, rounding=rounding)
        base.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
        base.tie_weights()
        results[name] = gain(base) - base_lp
    # the adapter served apart: bf16 base weights, bf16 adapter tensors
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    results["adapter_bf16"] = gain(policy) - base_lp

    figures = {f"gain_{k}": round(v, 4) for k, v in results.items()}
    figures.update({f"kept_{k}": round(v / results["trained"], 4) for k, v in results.items() if k != "trained"})
    figures.update(steps=args.steps, lr=args.lr, probes=len(seqs))
    print(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
