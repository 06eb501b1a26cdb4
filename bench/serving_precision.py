"""How much of a LoRA round survives each way of serving it, measured with transformers alone (no engine).

    .venv/bin/python bench/serving_precision.py [--model PATH] [--steps 4] [--lr 5e-5] [--probes 4]

Trains a LoRA adapter (the default recipe's r=16, alpha=32, AdamW) for a few steps of next-token loss on the
reference solutions of the first MBPP training exercises, then scores those answers (the probe set) with:
- `trained`: the fp32 adapter over the base, in fp32 (what the learner holds);
- `merged_bf16`: the adapter folded into bf16 weights (what a bf16 engine loads as merged weights);
- `merged_fp32`: folded into fp32 weights (what `model.dtype: float32` serves);
- `adapter_bf16`: the bf16 base with the adapter kept apart, cast to bf16 (what `generator.enable_lora` serves).
Each variant's arithmetic runs in fp32 here, so the figures isolate what the stored weights keep.
Last line: JSON with gain_* (nats per answer over the base) and kept_* (gain / trained gain).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exercises.loaders import resolve_data_dir  # noqa: E402


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codealign.chat import prompt_token_ids
    from codealign.config import LoraConfig, TrainConfig
    from codealign.model_source import resolve_model
    from exercises.extract import as_answer
    from exercises.loaders import load_mbpp
    from trainers.modeling import load_policy, merged_state_dict
    from trainers.probe import sequence_logprobs

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--probes", type=int, default=4)
    args = parser.parse_args()
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

    for name, dtype in (("merged_bf16", torch.bfloat16), ("merged_fp32", torch.float32)):
        weights = merged_state_dict(policy, dtype=dtype)
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
