"""PPO's critic: a value head on the policy's trunk or on a trunk of its own, and GAE over a completion."""

from __future__ import annotations

import torch


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
    """The policy and the critic as one module, so DDP all-reduces both. `trunk`: the critic's own model
    (`train.critic_model: separate`, with its own parameters); None: the value head reads the policy's last
    hidden state (a head on the shared trunk)."""

    def __init__(self, policy, trunk=None):
        super().__init__()
        self.policy = policy
        self.trunk = trunk
        hidden = (trunk or policy).config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, logits_to_keep: int):
        shared = self.trunk is None
        out = self.policy(input_ids=input_ids, logits_to_keep=logits_to_keep, output_hidden_states=shared)
        if shared:
            hidden = out.hidden_states[-1]
        else:  # one LM-head position only: the critic needs hidden states, not logits
            hidden = self.trunk(input_ids=input_ids, logits_to_keep=1, output_hidden_states=True).hidden_states[-1]
        hidden = hidden[:, -logits_to_keep:]
        return out.logits, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The separate trunk's trainable parameters (what the next round's critic continues from)."""
        if self.trunk is None:
            return {}
        return {n: p.detach().clone() for n, p in self.trunk.named_parameters() if p.requires_grad}
