"""Log-probabilities of sampled tokens under the distribution the generator sampled from.

vLLM samples from softmax(logits / T), cut to the top-p nucleus and renormalised, and (asked for
`processed_logprobs`) reports log-probs of that distribution. PPO's ratio and KL must use the same distribution:
scoring with log_softmax(logits) at temperature 1 treats samples from pi^(1/T) as samples from pi, which biases
the gradient. `sampling_log_probs` applies the same temperature and top-p mask as vLLM's sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# A masked logit: finite, so exp() is exactly 0 and p * log p stays 0 (with -inf, gradients of the entropy are NaN)
MASKED = -1e9


@dataclass(frozen=True)
class Sampling:
    """How the rollouts were sampled (the loop's `loop.temperature` / `loop.top_p` / `generator.max_tokens`)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 0  # the generation budget: Dr. GRPO's constant normaliser; 0: use train.max_length


def top_p_mask(logits: torch.Tensor, top_p: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """True where a token is outside the top-p nucleus (vLLM's rule: drop the ascending-sorted tokens whose
    cumulative probability is <= 1 - top_p, always keeping the most likely). `keep`: token ids (one per
    position) never masked, so a sampled token at the edge of the nucleus, where the trainer's and the engine's
    rounding disagree, is not given probability 0."""
    sorted_logits, idx = logits.sort(dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - top_p
    drop_sorted[..., -1] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
    if keep is not None:
        drop = drop.scatter(-1, keep.unsqueeze(-1), False)
    return drop


def sampling_log_probs(logits: torch.Tensor, sampling: Sampling, labels: torch.Tensor | None = None) -> torch.Tensor:
    """log-probs over the vocabulary of the sampling distribution: log_softmax(top_p(logits / T))."""
    scaled = logits.float() / sampling.temperature
    if sampling.top_p < 1.0:
        with torch.no_grad():
            drop = top_p_mask(scaled.detach(), sampling.top_p, labels)
        scaled = scaled.masked_fill(drop, MASKED)
    return torch.log_softmax(scaled, dim=-1)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor,
                    sampling: Sampling) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each label, entropy of the sampling distribution at each position)."""
    logps = sampling_log_probs(logits, sampling, labels)
    taken = torch.gather(logps, -1, labels.unsqueeze(-1)).squeeze(-1)
    entropy = -(logps.exp() * logps).sum(-1)
    return taken, entropy
