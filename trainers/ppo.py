"""PPO on unit-test rewards. Two baselines:

- critic-free (default): the group of samples for one exercise is the baseline (GRPO's normalised advantage, or
  RLOO's leave-one-out mean); the KL to the frozen base is a loss penalty (k3 estimator).
- critic (`train.critic`): a value head on the policy's last hidden state, GAE over the completion's tokens
  with the test reward on the last token, a clipped value loss; the KL can also go into the per-token reward.

Both clip the surrogate on the sampled tokens against the generator's own log-probs of them.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

import torch

from codealign.chat import prompt_token_ids
from codealign.records import Experience
from trainers.losses import clipped_policy_loss
from trainers.modeling import bf16_compute, replica_spread
from trainers.steps import MicroStep, run_steps
from trainers.worker import build_policy, report_round, setup_worker

VALUE_HEAD_FILE = "value_head.pt"


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


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over one completion (the value after the last token is 0).
    Returns (advantages, returns)."""
    adv = torch.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, adv + values


class PolicyWithValue(torch.nn.Module):
    """The policy and its value head as one module, so DDP all-reduces both."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        hidden = policy.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, logits_to_keep: int):
        out = self.policy(input_ids=input_ids, logits_to_keep=logits_to_keep, output_hidden_states=True)
        hidden = out.hidden_states[-1][:, -logits_to_keep:]
        return out.logits, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)


def rollout_batch(tokenizer, exp: Experience, max_length: int) -> dict:
    prompt = prompt_token_ids(tokenizer, exp.prompt)
    completion = list(exp.token_ids)[: max(1, max_length - len(prompt))]
    old = torch.tensor(exp.logprobs[: len(completion)], dtype=torch.float32)
    ids = torch.tensor([prompt + completion])
    return {"input_ids": ids, "prompt_len": len(prompt), "labels": ids[:, len(prompt):], "old_logps": old,
            "reward": exp.result.reward}


def forward_tokens(model, batch: dict, autocast: bool, critic: bool):
    """Per-token log-probs of the completion, the policy's entropy there, and the values (critic only)."""
    keep = batch["input_ids"].shape[1] - batch["prompt_len"] + 1
    values = None
    with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=autocast):
        if critic:
            logits, values = model(batch["input_ids"], keep)
            values = values[0, :-1].float()
        else:
            logits = model(input_ids=batch["input_ids"], logits_to_keep=keep).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    taken = torch.gather(logps, 2, batch["labels"].unsqueeze(-1)).squeeze(-1)[0]
    entropy = -(logps.exp() * logps).sum(-1)[0]
    return taken, entropy, values


def critic_targets(batches: list[dict], ref: list[torch.Tensor], model, autocast: bool, cfg) -> None:
    """Old values, per-token rewards, whitened GAE advantages and returns, computed once before training."""
    with torch.no_grad():
        for b, r in zip(batches, ref):
            _, _, values = forward_tokens(model, b, autocast, critic=True)
            rewards = torch.zeros_like(values)
            rewards[-1] = b["reward"]
            if cfg.kl_in_reward:
                rewards -= cfg.kl_coef * (b["old_logps"] - r)  # k1 estimate of the KL, token by token
            b["old_values"] = values
            b["adv"], b["returns"] = gae(rewards, values, cfg.gamma, cfg.gae_lambda)
    flat = torch.cat([b["adv"] for b in batches])
    mean, std = flat.mean(), flat.std() if len(flat) > 1 else torch.tensor(1.0)
    for b in batches:
        b["adv"] = (b["adv"] - mean) / (std + 1e-8)


def ppo_train_loop(config: dict) -> None:
    import ray.train.torch
    from transformers import AutoTokenizer

    cfg, rank, world, data = setup_worker(config)
    usable = [bool(e.token_ids) and len(e.logprobs) == len(e.token_ids) for e in data]
    if cfg.critic:
        rollouts = [(e, None) for e, ok in zip(data, usable) if ok]
    else:  # samples with no group advantage carry no gradient signal: skip them
        adv = advantages(data, cfg.advantage)
        rollouts = [(e, a) for e, a, ok in zip(data, adv, usable) if a != 0.0 and ok]
    rollouts = rollouts[: len(rollouts) // world * world][rank::world]

    tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
    device = ray.train.torch.get_device()
    batches = []
    for exp, a in rollouts:
        b = rollout_batch(tokenizer, exp, cfg.max_length)
        batches.append({**{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}, "adv": a})
    autocast = bf16_compute(cfg)
    policy, ref = build_policy(config, cfg, device,
                               lambda m: [forward_tokens(m, b, autocast, critic=False)[0] for b in batches])
    model = policy
    if cfg.critic:
        model = PolicyWithValue(policy).to(device)
        previous = config.get("previous_checkpoint")
        if previous and (Path(previous) / VALUE_HEAD_FILE).is_file():
            model.value_head.load_state_dict(torch.load(Path(previous) / VALUE_HEAD_FILE))
        critic_targets(batches, ref, model, autocast, cfg)
    model = ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]

    def micro_step(b, i: int) -> MicroStep:
        new, entropy, values = forward_tokens(model, b, autocast, cfg.critic)
        kl_coef = 0.0 if cfg.critic and cfg.kl_in_reward else cfg.kl_coef  # kl_in_reward: the KL is in the reward
        out = clipped_policy_loss(new, b["old_logps"], ref[i], b["adv"], cfg.clip_eps, kl_coef)
        loss = out.loss
        metrics = {"kl": out.kl.item(), "entropy": entropy.mean().item(), "clip_fraction": out.clip_fraction.item()}
        if cfg.critic:
            v_clipped = b["old_values"] + torch.clamp(values - b["old_values"], -cfg.clip_eps, cfg.clip_eps)
            value_loss = 0.5 * torch.max((values - b["returns"]) ** 2, (v_clipped - b["returns"]) ** 2).mean()
            loss = loss + cfg.value_coef * value_loss
            metrics["value_loss"] = value_loss.item()
        return MicroStep(loss, metrics, b["input_ids"].shape[1])

    progress = config.get("progress") if rank == 0 else None
    metrics, _ = run_steps(model, params, batches, micro_step, cfg, name="ppo", rank=rank, progress=progress)
    rewards = [e.result.reward for e in data]
    verdicts = Counter(e.result.verdict.value for e in data)
    metrics.update({
        "ppo/rollouts": len(batches), "ppo/workers": world, "ppo/replica_spread": replica_spread(model, world),
        "ppo/reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "ppo/reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        **{f"ppo/verdict_{k}": v / max(1, len(data)) for k, v in verdicts.items()},
    })
    extra = {VALUE_HEAD_FILE: getattr(model, "module", model).value_head.state_dict()} if cfg.critic else {}
    report_round(policy, metrics, rank, config, extra)
