"""Logit distillation (Hinton et al.; GKD's generalised JSD): a learner batch of sequences.

The teacher scores the same tokens as the student, so both must share a tokenizer; when they don't, sequence-
level distillation (`train.distill.mode: sequence`: SFT on the oracle's verified solutions) is the way. The
divergence is TRL's own `GKDTrainer.generalized_jsd_loss` (a static method, so it runs on our tensors):
beta 0 is forward KL(teacher || student), beta 1 reverse KL(student || teacher), in between the JSD.
"""

from __future__ import annotations

import os

import torch

from codealign.records import SftExample
from codealign.trainers.modeling import bf16_compute, replica_spread
from codealign.trainers.sft import completion_logits, prepare_items
from codealign.trainers.steps import OPTIMIZER_FILE, MicroStep, optimizer_carry, run_steps
from codealign.trainers.trainee import Trainee

BETAS = {"forward": 0.0, "reverse": 1.0}


def divergence_beta(divergence: str, jsd_beta: float) -> float:
    return BETAS.get(divergence, jsd_beta)


def check_same_tokenizer(student_tok, teacher_tok, teacher_path: str) -> None:
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise ValueError(
            f"train.distill: the teacher {teacher_path} has another tokenizer than the student, so their logits "
            "cannot be compared token by token; use train.distill.mode: sequence"
        )


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float,
                 temperature: float) -> torch.Tensor:
    """Mean over tokens of the generalised JSD between the two distributions (TRL's implementation)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GKD lives in trl.experimental in TRL 1.16
    from trl.experimental.gkd import GKDTrainer

    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])  # checkpoints may pad the vocabulary
    labels = torch.zeros(student_logits.shape[:2], dtype=torch.long, device=student_logits.device)
    return GKDTrainer.generalized_jsd_loss(student_logits[..., :vocab], teacher_logits[..., :vocab], labels=labels,
                                           beta=beta, temperature=temperature, reduction="batchmean")


def load_teacher(teacher_path: str, cfg, device):
    """Logit distillation's teacher, frozen, once per worker (its tokenizer checked by the driver)."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16_compute(cfg) else torch.float32
    return AutoModelForCausalLM.from_pretrained(teacher_path, dtype=dtype).to(device).eval().requires_grad_(False)


def distill_batch(t: Trainee, examples: list[SftExample], train_version: int | None = None,
                  carry: dict | None = None, job: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """One learner batch of sequences, the student pulled towards `t.teacher`'s logits on every learned token.
    `carry`, `job`, the result: as `dpo.dpo_batch`'s."""
    cfg = t.cfg
    items, _, trained = prepare_items(examples, cfg, t.tokenizer, t.rank, t.world, t.device)
    autocast = bf16_compute(cfg)
    beta, temperature = divergence_beta(cfg.distill.divergence, cfg.distill.jsd_beta), cfg.distill.temperature

    def micro_step(item, i: int) -> MicroStep:
        with torch.no_grad():  # on the fly: caching [tokens x vocab] teacher logits costs more memory than time
            target, _ = completion_logits(t.teacher, item, autocast)
        logits, _ = completion_logits(t.model, item, autocast)
        return MicroStep(distill_loss(logits, target, beta, temperature), {}, int(item["input_ids"].shape[1]))

    metrics, pos, optimizer = run_steps(t.model, t.params(), items, micro_step, cfg, name="distill", rank=t.rank,
                                        carry=carry, job=job)
    metrics.update({"distill/sequences": len(items), "distill/workers": t.world, "distill/beta": beta,
                    "distill/replica_spread": replica_spread(t.model, t.world), "trained_ids": trained})
    return metrics, optimizer_carry(optimizer, pos)[OPTIMIZER_FILE]
