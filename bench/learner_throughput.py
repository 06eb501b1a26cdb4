"""DPO on the same preference pairs: the Ray Train learner against TRL's DPOTrainer in one plain process.

    .venv/bin/python bench/learner_throughput.py [--model PATH] [--pairs 16] [--no-lora]

Both sides: SmolLM2-135M-Instruct, the same LoRA (or full fine-tuning), bf16 autocast with fp32 master weights
where the CPU has bf16 matrix units, one epoch, 4 pairs per optimizer step, each pair its own micro-batch, the
frozen base as reference. Each side's time runs from "pairs and a model path in hand" to "trained weights
written" (Ray: one batch of `StreamingLearner`, worker start and publication included; TRL: model load, trainer set-up,
`train()`, `save_model()`). Tokens are the same count on both sides (prompt + chosen and prompt + rejected,
unpadded). roofline_frac: the learner's training-step FLOP/s (4 FLOPs per parameter per token with LoRA, 6 for
full fine-tuning) over a bf16 matrix-product rate measured here, in this run, on the same threads.
Last line: JSON with ray_tok_s, trl_tok_s, ratio and roofline_frac.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codealign.exercises.loaders import resolve_data_dir  # noqa: E402


def bf16_matmul_flops(threads: int, n: int = 1024, seconds: float = 3.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start)


def make_pairs(data_dir: Path, count: int):
    """Prompt, the reference solution as chosen, another exercise's solution as rejected: fixed and repeatable."""
    from codealign.exercises.extract import as_answer
    from codealign.exercises.loaders import load_mbpp
    from codealign.records import PreferencePair

    exercises = load_mbpp(data_dir, (601, 974))[: count + 1]
    return [PreferencePair(ex.prompt, as_answer(ex.reference), as_answer(exercises[i + 1].reference), "bench", ex.id)
            for i, ex in enumerate(exercises[:count])]


def count_tokens(model_path: str, pairs, max_length: int) -> int:
    from transformers import AutoTokenizer

    from codealign.trainers.dpo import tokenize_pair

    tok = AutoTokenizer.from_pretrained(model_path)
    total = 0
    for p in pairs:
        t = tokenize_pair(tok, p, max_length)
        total += 2 * len(t.prompt_ids) + len(t.chosen_ids) + len(t.rejected_ids)
    return total


def run_ray(model_path: str, pairs, cfg, threads: int) -> tuple[float, dict]:
    import ray

    from codealign.trainers.streaming import StreamingLearner

    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            learner = StreamingLearner(cfg, None, model_path, Path(tmp))
            try:
                learner.submit(0, ray.put(pairs), None, True)
                (report,) = learner.wait(1)
            finally:
                learner.close()
            return time.perf_counter() - start, report["metrics"]
    finally:
        ray.shutdown()


def run_trl(model_path: str, pairs, cfg, threads: int) -> float:
    import torch
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from codealign.trainers.modeling import bf16_compute

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": p.prompt}],
                                   "chosen": [{"role": "assistant", "content": p.chosen}],
                                   "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])
        args = DPOConfig(output_dir=tmp, beta=cfg.beta, loss_type=cfg.loss_type, learning_rate=cfg.learning_rate,
                         per_device_train_batch_size=1, gradient_accumulation_steps=cfg.batch_size,
                         num_train_epochs=cfg.epochs, max_length=cfg.max_length, report_to=[], use_cpu=True,
                         bf16=bf16_compute(cfg), logging_steps=100, save_strategy="no",
                         dataloader_num_workers=0, seed=cfg.seed)
        peft_config = None
        if cfg.lora.enabled:
            peft_config = PeftLoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                         target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
        trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                             peft_config=peft_config)
        trainer.train()
        trainer.save_model(tmp + "/final")
        return time.perf_counter() - start


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-lora", action="store_true")
    args = parser.parse_args()

    from codealign.config import LoraConfig, TrainConfig
    from codealign.model_source import resolve_model

    model_path = resolve_model(args.model)
    data_dir = resolve_data_dir()
    pairs = make_pairs(data_dir, args.pairs)
    cfg = TrainConfig(algorithm="dpo", learning_rate=5e-5, epochs=1, batch_size=4, max_pairs=len(pairs),
                      num_cpus_per_worker=args.threads, lora=LoraConfig(enabled=not args.no_lora))
    tokens = count_tokens(model_path, pairs, cfg.max_length)

    peak = bf16_matmul_flops(args.threads)
    ray_s, metrics = run_ray(model_path, pairs, cfg, args.threads)
    trl_s = run_trl(model_path, pairs, cfg, args.threads)

    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
                       .parameters())
    flops_per_token = (4 if cfg.lora.enabled else 6) * n_params
    step_flops = flops_per_token * metrics["dpo/tokens"] / metrics["dpo/train_s"]
    result = {
        "pairs": len(pairs), "tokens": tokens, "lora": cfg.lora.enabled, "threads": args.threads,
        "ray_s": round(ray_s, 2), "trl_s": round(trl_s, 2),
        "ray_tok_s": round(tokens / ray_s, 1), "trl_tok_s": round(tokens / trl_s, 1),
        "ratio": round(trl_s / ray_s, 3),
        "ray_train_step_tok_s": round(metrics["dpo/tokens_per_s"], 1),
        "learner_gflop_s": round(step_flops / 1e9, 1), "bf16_matmul_gflop_s": round(peak / 1e9, 1),
        "roofline_frac": round(step_flops / peak, 3),
        "dpo_loss_first": round(metrics["dpo/loss_first"], 4), "dpo_loss_last": round(metrics["dpo/loss_last"], 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
