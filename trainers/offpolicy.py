"""PPO on stale samples: the policy that sampled a completion (behaviour, version v) is older than the one the
learner holds when it trains on it (version v + staleness).

- "decoupled" (AReaL, Fu et al. 2025; Hilton et al. 2022): the trust region is taken around the *proximal* policy
  (the learner's weights as the batch starts), and the behaviour policy enters only as an importance weight
  pi_prox / pi_behav, truncated at `cap` and detached:
      loss = -min(w, cap) * min(r * A, clip(r, 1 - eps, 1 + eps) * A),  r = pi / pi_prox
- "truncated_is": the ratio against the behaviour log-probs as today, truncated at `cap` from above before the
  clipped surrogate (IMPALA's rho-bar), so a very stale token cannot blow up the update:
      loss = -min(min(r_b, cap) * A, clip(r_b, 1 - eps, 1 + eps) * A),  r_b = pi / pi_behav

Both add the same k3 KL penalty to the reference as `losses.clipped_policy_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class OffPolicyLoss:
    loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor  # tokens whose ratio was clipped
    iw_mean: torch.Tensor  # behaviour importance weight pi_prox / pi_behav, before truncation
    iw_max: torch.Tensor
    truncated_fraction: torch.Tensor  # tokens whose weight was above the cap
    ratio: torch.Tensor  # mean ratio of the surrogate (against the proximal policy, or the behaviour one)


def off_policy_loss(logps: torch.Tensor, prox_logps: torch.Tensor, behav_logps: torch.Tensor,
                    ref_logps: torch.Tensor, advantages: torch.Tensor | float, clip_eps: float, kl_coef: float,
                    cap: float, mode: str = "decoupled", clip_eps_high: float = 0.0,
                    normaliser: float | None = None) -> OffPolicyLoss:
    """One completion's tokens (1-D tensors). `prox_logps` and `behav_logps` carry no gradient. `clip_eps_high`
    and `normaliser` as in `losses.clipped_policy_loss` (DAPO's upper bound; the token sum over a constant)."""
    iw = torch.exp(prox_logps - behav_logps).detach()
    high = clip_eps_high or clip_eps
    if mode == "decoupled":
        ratio = torch.exp(logps - prox_logps)
        clipped = torch.clamp(ratio, 1 - clip_eps, 1 + high)
        per_token = -torch.clamp(iw, max=cap) * torch.min(ratio * advantages, clipped * advantages)
    elif mode == "truncated_is":
        ratio = torch.exp(logps - behav_logps)
        clipped = torch.clamp(ratio, 1 - clip_eps, 1 + high)
        per_token = -torch.min(torch.clamp(ratio, max=cap) * advantages, clipped * advantages)
    else:
        raise ValueError(f"pipeline.off_policy: unknown mode {mode!r}; choose decoupled or truncated_is")
    log_ref_ratio = ref_logps - logps
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    if kl_coef:
        per_token = per_token + kl_coef * kl
    loss = per_token.sum() / normaliser if normaliser else per_token.mean()
    return OffPolicyLoss(loss, kl.mean().detach(), ((ratio - clipped).abs() > 1e-6).float().mean().detach(),
                         iw.mean(), iw.max(), (iw > cap).float().mean(), ratio.mean().detach())
