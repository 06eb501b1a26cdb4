"""Preference losses on per-sequence log-probabilities, with TRL's conventions (tests compare against TRL).

TRL 1.16 computes its DPO loss inline in `DPOTrainer._compute_loss`, so it cannot be called on tensors from a
Ray-driven loop; this is the same arithmetic, checked against DPOTrainer's loss on identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


@dataclass
class PreferenceLoss:
    loss: torch.Tensor  # scalar
    chosen_rewards: torch.Tensor  # beta * (log pi - log ref), detached, per pair
    rejected_rewards: torch.Tensor


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    rpo_alpha: float = 0.0,
) -> PreferenceLoss:
    """sigmoid: DPO (label_smoothing > 0 gives conservative DPO); ipo: IPO, length-normalised as TRL does;
    hinge: SLiC; robust: robust DPO (Chowdhury et al.). rpo_alpha > 0 adds RPO's NLL of the chosen answers, a
    token mean over the batch (TRL's loss_type=["sigmoid", "sft"] with loss_weights=[1, rpo_alpha])."""
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("ipo loss needs chosen_lengths and rejected_lengths")
        ipo_delta = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        per_pair = (ipo_delta - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        per_pair = torch.relu(1 - beta * delta)
    elif loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta)
        per_pair = (clean - flipped) / (1 - 2 * label_smoothing)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose from {LOSS_TYPES}")
    loss = per_pair.mean()
    if rpo_alpha:
        if chosen_lengths is None:
            raise ValueError("rpo_alpha needs chosen_lengths")
        loss = loss + rpo_alpha * -(chosen_logps.sum() / chosen_lengths.sum().clamp(min=1))
    return PreferenceLoss(
        loss=loss,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over masked positions; logits[:, t] predicts labels[:, t]."""
    logps = torch.log_softmax(logits.float(), dim=-1)
    token_logps = torch.gather(logps, 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(dim=-1)


@dataclass
class PolicyLoss:
    loss: torch.Tensor  # scalar: clipped surrogate + kl_coef * KL, aggregated over the completion's tokens
    kl: torch.Tensor  # detached, k3 estimate of KL(policy || reference), mean over tokens
    clip_fraction: torch.Tensor  # detached, share of tokens where the clip bound (TRL's is_low/high_clipped)
    ratio: torch.Tensor  # detached, mean importance ratio pi / pi_old over tokens


def clipped_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor,
                        advantages: torch.Tensor | float, clip_eps: float, kl_coef: float,
                        clip_eps_high: float = 0.0, weights: torch.Tensor | None = None,
                        normaliser: float | None = None) -> PolicyLoss:
    """PPO's clipped surrogate on one completion's tokens (1-D tensors), with the k3 KL penalty to the reference;
    the same arithmetic as TRL's GRPOTrainer with loss_type="grpo" (checked in tests).

    clip_eps_high: the upper bound 1 + clip_eps_high (DAPO's clip-higher; 0: symmetric). weights: per-token
    importance weights (truncated IS against the engine), detached. normaliser: the loss is the token sum over
    it (token_mean and Dr. GRPO's constant); None: the token mean."""
    ratio = torch.exp(logps - old_logps)
    high = clip_eps_high or clip_eps
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    if weights is not None:
        per_token = per_token * weights
    log_ref_ratio = ref_logps - logps
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    if kl_coef:
        per_token = per_token + kl_coef * kl
    loss = per_token.sum() / normaliser if normaliser else per_token.mean()
    adv = torch.as_tensor(advantages, dtype=ratio.dtype)
    bound = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
    return PolicyLoss(loss, kl.mean().detach(), bound.float().mean().detach(), ratio.mean().detach())
