"""PPO on unit-test rewards, critic-free: the group of samples for one exercise is the baseline (GRPO's
normalised advantage, or RLOO's leave-one-out mean). Clipped surrogate on the sampled tokens, against the
generator's own log-probs of them, with a KL penalty to the frozen base model (k3 estimator)."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import defaultdict

import torch

from codealign.chat import prompt_token_ids
from codealign.records import Experience
from trainers.modeling import frozen_reference, load_policy, replica_spread
from trainers.worker import report_round, setup_worker, use_autocast


def advantages(experiences: list[Experience], kind: str) -> list[float]:
    """Per sample, relative to the other samples of the same exercise."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(experiences):
        groups[e.exercise_id].append(i)
    out = [0.0] * len(experiences)
    for members in groups.values():
        rewards = [experiences[i].result.reward for i in members]
        if len(rewards) < 2:
            continue
        mean = statistics.fmean(rewards)
        for i, r in zip(members, rewards):
            if kind == "rloo":
                out[i] = r - (sum(rewards) - r) / (len(rewards) - 1)
            elif kind == "group":
                out[i] = (r - mean) / (statistics.pstdev(rewards) + 1e-4)
            else:
                raise ValueError(f"train.advantage: unknown kind {kind!r}; choose group or rloo")
    return out


def rollout_batch(tokenizer, exp: Experience, max_length: int) -> dict:
    prompt = prompt_token_ids(tokenizer, exp.prompt)
    completion = list(exp.token_ids)[: max(1, max_length - len(prompt))]
    old = torch.tensor(exp.logprobs[: len(completion)], dtype=torch.float32)
    ids = torch.tensor([prompt + completion])
    return {"input_ids": ids, "prompt_len": len(prompt), "labels": ids[:, len(prompt):], "old_logps": old}


def token_logps(model, batch: dict, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the completion and the policy's entropy at each of those positions."""
    keep = batch["input_ids"].shape[1] - batch["prompt_len"] + 1
    with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=batch["input_ids"], logits_to_keep=keep).logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)
    taken = torch.gather(logps, 2, batch["labels"].unsqueeze(-1)).squeeze(-1)[0]
    entropy = -(logps.exp() * logps).sum(-1)[0]
    return taken, entropy


def ppo_train_loop(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer

    cfg, rank, world, data = setup_worker(config)
    adv = advantages(data, cfg.advantage)
    # samples with no advantage carry no gradient signal: skip them
    rollouts = [(e, a) for e, a in zip(data, adv) if a != 0.0 and e.token_ids and len(e.logprobs) == len(e.token_ids)]
    random.Random(cfg.seed).shuffle(rollouts)
    rollouts = rollouts[: len(rollouts) // world * world][rank::world]

    tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
    device = ray.train.torch.get_device()
    batches = []
    for exp, a in rollouts:
        b = rollout_batch(tokenizer, exp, cfg.max_length)
        batches.append({**{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}, "adv": a})
    model = load_policy(config["model_path"], cfg.lora, config.get("adapter_from")).to(device)
    autocast = use_autocast(cfg, device)
    # the reference: the frozen base model (adapter disabled); in full fine-tuning, the policy as it starts
    with torch.no_grad(), frozen_reference(model):
        ref = [token_logps(model, b, autocast)[0] for b in batches]
    model = ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    progress = config.get("progress") if rank == 0 else None
    total_steps = cfg.epochs * math.ceil(len(batches) / cfg.batch_size) if batches else 0

    history = defaultdict(list)
    start, tokens = time.monotonic(), 0
    model.train()
    for _epoch in range(cfg.epochs):
        for s in range(0, len(batches), cfg.batch_size):
            chunk = range(s, min(s + cfg.batch_size, len(batches)))
            optimizer.zero_grad(set_to_none=True)
            step = defaultdict(float)
            for i in chunk:
                b = batches[i]
                new, entropy = token_logps(model, b, autocast)
                ratio = torch.exp(new - b["old_logps"])
                clipped = torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps)
                surrogate = -torch.min(ratio * b["adv"], clipped * b["adv"]).mean()
                log_ref_ratio = ref[i] - new
                kl = (torch.exp(log_ref_ratio) - log_ref_ratio - 1).mean()
                loss = surrogate + cfg.kl_coef * kl
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"PPO loss is {loss.item()} at rollout {i}; stopping this round")
                (loss / len(chunk)).backward()
                step["loss"] += loss.item() / len(chunk)
                step["kl"] += kl.item() / len(chunk)
                step["clip_fraction"] += ((ratio - clipped).abs() > 1e-6).float().mean().item() / len(chunk)
                step["entropy"] += entropy.mean().item() / len(chunk)
                tokens += b["input_ids"].shape[1]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            for k, v in step.items():
                history[k].append(v)
            if progress is not None:
                progress.update.remote(len(history["loss"]), total_steps)

    seconds = time.monotonic() - start
    spread = replica_spread(model, world)
    rewards = [e.result.reward for e in data]
    metrics = {f"ppo/{k}": statistics.fmean(v) for k, v in history.items() if v}
    metrics.update({
        "ppo/loss_first": history["loss"][0] if history["loss"] else math.nan,
        "ppo/loss_last": history["loss"][-1] if history["loss"] else math.nan,
        "ppo/steps": len(history["loss"]), "ppo/rollouts": len(batches), "ppo/tokens": tokens,
        "ppo/reward_mean": statistics.fmean(rewards) if rewards else math.nan,
        "ppo/reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        "ppo/tokens_per_s": tokens / seconds if seconds > 0 else 0.0, "ppo/train_s": seconds,
        "ppo/workers": world, "ppo/replica_spread": spread,
    })
    report_round(model, metrics, rank)
