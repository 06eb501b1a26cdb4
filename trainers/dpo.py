"""DPO as a Ray Train loop: tight per-pair sequences, reference log-probs computed once, bf16 autocast."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from codealign.chat import prompt_token_ids
from codealign.records import PreferencePair
from trainers.losses import dpo_loss, sequence_logps
from trainers.modeling import frozen_reference, load_policy, replica_spread
from trainers.worker import report_round, setup_worker, use_autocast


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def tokenize_pair(tokenizer, pair: PreferencePair, max_length: int) -> TokenizedPair:
    prompt = prompt_token_ids(tokenizer, pair.prompt)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    chosen = tokenizer(pair.chosen, add_special_tokens=False)["input_ids"] + eos
    rejected = tokenizer(pair.rejected, add_special_tokens=False)["input_ids"] + eos
    keep_prompt = max(1, min(len(prompt), max_length // 2))
    prompt = prompt[-keep_prompt:]
    room = max_length - len(prompt)
    return TokenizedPair(prompt, chosen[:room], rejected[:room])


def pair_batch(pair: TokenizedPair) -> dict[str, torch.Tensor | int]:
    """[chosen; rejected] right-padded to the longer of the two, never to a global maximum."""
    seqs = [pair.prompt_ids + pair.chosen_ids, pair.prompt_ids + pair.rejected_ids]
    width = max(map(len, seqs))
    ids = torch.zeros(2, width, dtype=torch.long)
    attn = torch.zeros(2, width, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
    p = len(pair.prompt_ids)
    labels = ids[:, p:]
    mask = attn[:, p:].float()
    return {"input_ids": ids, "attention_mask": attn, "labels": labels, "mask": mask, "prompt_len": p}


def pair_logps(model, batch, autocast: bool) -> torch.Tensor:
    """log pi(chosen), log pi(rejected). Only completion positions go through the LM head."""
    keep = batch["input_ids"].shape[1] - batch["prompt_len"] + 1
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[:, :-1]
    return sequence_logps(logits, batch["labels"], batch["mask"])


def reference_logps(model, batches, autocast: bool) -> list[torch.Tensor]:
    with torch.no_grad(), frozen_reference(model):
        return [pair_logps(getattr(model, "module", model), b, autocast) for b in batches]


def dpo_train_loop(config: dict) -> None:
    """Runs on every Ray Train worker. config: data (list[PreferencePair] or its ObjectRef), model_path,
    train (TrainConfig), adapter_from, num_threads, progress."""
    import ray
    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer

    cfg, rank, world, pairs = setup_worker(config)
    tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
    tokenized = [tokenize_pair(tokenizer, p, cfg.max_length) for p in pairs]
    random.Random(cfg.seed).shuffle(tokenized)
    # Every worker takes the same number of steps, or DDP's all-reduce would wait forever.
    tokenized = tokenized[: len(tokenized) // world * world][rank::world]
    device = ray.train.torch.get_device()
    batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in pair_batch(t).items()} for t in tokenized]

    model = load_policy(config["model_path"], cfg.lora, config.get("adapter_from")).to(device)
    autocast = use_autocast(cfg, device)
    ref = reference_logps(model, batches, autocast)
    model = ray.train.torch.prepare_model(model)  # DDP (gloo on CPU, NCCL on GPU) when world > 1
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)

    history = {"loss": [], "chosen_rewards": [], "rejected_rewards": [], "margin": [], "accuracy": []}
    progress = config.get("progress") if rank == 0 else None
    total_steps = cfg.epochs * math.ceil(len(batches) / cfg.batch_size)
    tokens = 0
    start = time.monotonic()
    model.train()
    for _epoch in range(cfg.epochs):
        for step_start in range(0, len(batches), cfg.batch_size):
            chunk = range(step_start, min(step_start + cfg.batch_size, len(batches)))
            optimizer.zero_grad(set_to_none=True)
            step_loss, chosen_r, rejected_r = 0.0, [], []
            for i in chunk:
                logps = pair_logps(model, batches[i], autocast)
                r = ref[i]
                lengths = batches[i]["mask"].sum(dim=1)  # completion tokens, for IPO's normalisation
                out = dpo_loss(logps[:1], logps[1:], r[:1], r[1:], cfg.beta, cfg.loss_type,
                               chosen_lengths=lengths[:1], rejected_lengths=lengths[1:])
                if not torch.isfinite(out.loss):
                    raise FloatingPointError(f"DPO loss is {out.loss.item()} at pair {i}; stopping this round")
                (out.loss / len(chunk)).backward()
                step_loss += out.loss.item() / len(chunk)
                chosen_r.append(out.chosen_rewards.item())
                rejected_r.append(out.rejected_rewards.item())
                tokens += int(batches[i]["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            margins = [c - r for c, r in zip(chosen_r, rejected_r)]
            history["loss"].append(step_loss)
            history["chosen_rewards"].append(sum(chosen_r) / len(chosen_r))
            history["rejected_rewards"].append(sum(rejected_r) / len(rejected_r))
            history["margin"].append(sum(margins) / len(margins))
            history["accuracy"].append(sum(m > 0 for m in margins) / len(margins))
            if progress is not None:
                progress.update.remote(len(history["loss"]), total_steps)

    seconds = time.monotonic() - start
    spread = replica_spread(model, world)
    metrics = {f"dpo/{k}": (sum(v) / len(v) if v else math.nan) for k, v in history.items()}
    metrics.update({"dpo/loss_first": history["loss"][0] if history["loss"] else math.nan,
                    "dpo/loss_last": history["loss"][-1] if history["loss"] else math.nan,
                    "dpo/steps": len(history["loss"]), "dpo/pairs": len(batches), "dpo/tokens": tokens,
                    "dpo/tokens_per_s": tokens / seconds if seconds > 0 else 0.0, "dpo/train_s": seconds,
                    "dpo/workers": world, "dpo/replica_spread": spread})
    report_round(model, metrics, rank)
