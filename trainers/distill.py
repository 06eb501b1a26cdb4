"""Logit distillation (Hinton et al.; GKD's generalised JSD) as a Ray Train loop.

The teacher scores the same tokens as the student, so both must share a tokenizer; when they don't, sequence-
level distillation (`train.distill.mode: sequence`: SFT on the oracle's verified solutions) is the way. The
divergence is TRL's own `GKDTrainer.generalized_jsd_loss` (a static method, so it runs on our tensors):
beta 0 is forward KL(teacher || student), beta 1 reverse KL(student || teacher), in between the JSD.
"""

from __future__ import annotations

import os

import torch

from codealign.trainers.modeling import bf16_compute, replica_spread
from codealign.trainers.sft import completion_logits, prepare_items
from codealign.trainers.steps import MicroStep, optimizer_carry, run_steps
from codealign.trainers.worker import build_policy, report_round, setup_worker

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


def distill_train_loop(config: dict) -> None:
    import ray.train.torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, rank, world, examples = setup_worker(config)
    teacher_path = config["teacher_path"]
    tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
    check_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(teacher_path), teacher_path)
    device = ray.train.torch.get_device()
    items, _ = prepare_items(examples, cfg, tokenizer, rank, world, device)
    autocast = bf16_compute(cfg)

    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.bfloat16 if autocast else torch.float32)
    teacher.to(device).eval().requires_grad_(False)

    model = ray.train.torch.prepare_model(build_policy(config, cfg, device)[0])
    params = [p for p in model.parameters() if p.requires_grad]
    beta, temperature = divergence_beta(cfg.distill.divergence, cfg.distill.jsd_beta), cfg.distill.temperature

    def micro_step(item, i: int) -> MicroStep:
        with torch.no_grad():  # on the fly: caching [tokens x vocab] teacher logits costs more memory than time
            target, _ = completion_logits(teacher, item, autocast)
        logits, _ = completion_logits(model, item, autocast)
        loss = distill_loss(logits, target, beta, temperature)
        return MicroStep(loss, {}, int(item["input_ids"].shape[1]))

    progress = config.get("progress") if rank == 0 else None
    metrics, pos, optimizer = run_steps(model, params, items, micro_step, cfg, name="distill", rank=rank,
                                        progress=progress, previous=config.get("previous_checkpoint"))
    metrics.update({"distill/sequences": len(items), "distill/workers": world, "distill/beta": beta,
                    "distill/replica_spread": replica_spread(model, world)})
    report_round(model, metrics, rank, config, optimizer_carry(optimizer, pos))
