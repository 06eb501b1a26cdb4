"""Peak memory of training SmolLM2-135M: full fine-tuning against LoRA, QLoRA (NF4) and gradient checkpointing.

    .venv/bin/python bench/learner_memory.py [--model PATH] [--length 512] [--steps 3]

Each variant runs in its own fresh process: load the policy as the learner does (`trainers.modeling.load_policy`,
fp32 master weights, bf16 autocast), then `--steps` AdamW steps on one `--length`-token sequence, the SFT loss.
Reported: the process's peak resident memory (ru_maxrss) in MiB, and the same for a process that only imports
torch and transformers (the floor every variant pays). Last line: JSON with <variant>_peak_mib and
lora_vs_full (LoRA's peak over full fine-tuning's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "full": {"lora": False},
    "full_gc": {"lora": False, "gradient_checkpointing": True},
    "lora": {},
    "lora_gc": {"gradient_checkpointing": True},
    "qlora_nf4": {"quantization": "nf4"},
}

CHILD = r"""
import json, resource, sys
sys.path.insert(0, {root!r})
import torch, transformers  # noqa: F401
spec = json.loads({spec!r})
if spec.get("variant") != "floor":
    from codealign.config import LoraConfig, TrainConfig
    from codealign.trainers.modeling import load_policy
    from codealign.trainers.sft import sft_loss
    torch.set_num_threads(2)
    cfg = TrainConfig(lora=LoraConfig(enabled=spec.get("lora", True)),
                      gradient_checkpointing=spec.get("gradient_checkpointing", False),
                      quantization=spec.get("quantization", "none"))
    model = load_policy({model!r}, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    item = {{"input_ids": torch.randint(100, 40000, (1, {length})), "start": 0}}
    for _ in range({steps}):
        opt.zero_grad()
        sft_loss(model, item, autocast=True).backward()
        opt.step()
    trainable = sum(p.numel() for p in params)
else:
    trainable = 0
print(json.dumps({{"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "trainable": trainable}}))
"""


def measure(spec: dict, model: str, length: int, steps: int) -> dict:
    code = CHILD.format(root=str(ROOT), spec=json.dumps(spec), model=model, length=length, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from codealign.model_source import resolve_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    model = resolve_model(args.model)

    result = {"length": args.length, "floor_peak_mib": round(measure({"variant": "floor"}, model, 0, 0)["peak_mib"])}
    for name, spec in VARIANTS.items():
        got = measure(spec, model, args.length, args.steps)
        result[f"{name}_peak_mib"] = round(got["peak_mib"])
        result[f"{name}_trainable_params"] = got["trainable"]
        print(f"{name}: peak {got['peak_mib']:.0f} MiB, {got['trainable']:,} trainable parameters", flush=True)
    result["lora_vs_full"] = round(result["lora_peak_mib"] / result["full_peak_mib"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
