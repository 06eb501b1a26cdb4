"""What one learner batch trains, on one Ray Train worker, for every algorithm.

The long-lived learner (trainers/streaming.py) holds a `Trainee` for the whole job and hands each batch to its
algorithm's batch function (`dpo.dpo_batch`, `ppo.ppo_batch`, `sft.sft_batch`, `distill.distill_batch`): the
algorithm supplies its micro-batches, its reference and its micro-step; the optimizer loop (`steps.run_steps`),
the optimizer carried from batch to batch and the schedule over the job are the same for all.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from codealign.config import PipelineConfig, TrainConfig
from codealign.trainers.modeling import frozen_reference
from codealign.trainers.scoring import Sampling

FULL_WEIGHTS_FILE = "policy_fp32.pt"  # full fine-tuning: the fp32 weights a restarted or resumed learner loads


@dataclass
class Trainee:
    model: Any  # what the optimizer trains: the policy (with its critic), DDP-wrapped when world > 1
    policy: Any  # the policy alone, unwrapped: what the generators are sent
    tokenizer: Any
    cfg: TrainConfig
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    pipe: PipelineConfig | None = None  # the off-policy correction of stale PPO samples
    sampling: Sampling | None = None  # how the generators sampled PPO's rollouts
    ref_model: Any = None  # full fine-tuning against the frozen base: the base itself (LoRA disables the adapter)
    teacher: Any = None  # logit distillation's teacher

    @classmethod
    def local(cls, policy, tokenizer, cfg: TrainConfig, **kw) -> Trainee:
        """One in-process worker training `policy` itself (tests, benchmarks)."""
        return cls(policy, policy, tokenizer, cfg, **kw)

    def references(self, score, current: bool = True) -> tuple[list, list | None]:
        """`score(model)` on the reference (the frozen base, or the policy as the batch starts with
        `train.reference: refreshed`) and, with `current`, on the policy as the batch starts (the trainer's
        behaviour and proximal log-probs). In eval mode: the previous batch left the model in train mode, and
        LoRA dropout would add noise to numbers that are fixed for the batch."""
        getattr(self.model, "module", self.model).eval()
        with torch.no_grad():
            if self.ref_model is not None:
                ref = score(self.ref_model)
            else:
                with frozen_reference(self.policy) if self.cfg.reference == "frozen" else nullcontext():
                    ref = score(self.policy)
            mine = (ref if self.cfg.reference == "refreshed" else score(self.policy)) if current else None
        return ref, mine

    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]
