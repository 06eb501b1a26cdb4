"""DPO: tight per-pair sequences, reference log-probs computed once per batch, bf16 autocast."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from codealign.records import PreferencePair, sample_ids_behind
from codealign.trainers.chat_turns import answer_token_ids
from codealign.trainers.losses import dpo_loss, sequence_logps
from codealign.trainers.modeling import bf16_compute, replica_spread
from codealign.trainers.steps import OPTIMIZER_FILE, MicroStep, optimizer_carry, run_steps
from codealign.trainers.trainee import Trainee


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def tokenize_pair(tokenizer, pair: PreferencePair, max_length: int) -> TokenizedPair:
    """Both answers as the chat template renders the assistant turn (its end-of-turn token learned)."""
    prompt, chosen = answer_token_ids(tokenizer, pair.prompt, pair.chosen)
    rejected = answer_token_ids(tokenizer, pair.prompt, pair.rejected)[1]
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


def dpo_batches(tokenizer, pairs: list[PreferencePair], cfg, rank: int, world: int, device) -> list[dict]:
    """This rank's pairs, tokenized, in the seeded order. Every worker takes the same number of steps, or DDP's
    all-reduce would wait forever."""
    mine = selected_pairs(len(pairs), cfg, world)[rank::world]
    tokenized = [tokenize_pair(tokenizer, pairs[i], cfg.max_length) for i in mine]
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in pair_batch(t).items()} for t in tokenized]


def selected_pairs(n: int, cfg, world: int) -> list[int]:
    """The indices of the pairs every rank trains together, in the seeded order (rank r takes [r::world])."""
    order = list(range(n))
    random.Random(cfg.seed).shuffle(order)
    return order[: n // world * world]


def dpo_micro_step(model, ref: list[torch.Tensor], cfg, autocast: bool):
    """The body of one DPO micro-step (every option of the loss): micro-batch i -> MicroStep."""

    def micro_step(batch, i: int) -> MicroStep:
        logps = pair_logps(model, batch, autocast)
        lengths = batch["mask"].sum(dim=1)  # completion tokens, for IPO's normalisation
        out = dpo_loss(logps[:1], logps[1:], ref[i][:1], ref[i][1:], cfg.beta, cfg.loss_type, cfg.label_smoothing,
                       chosen_lengths=lengths[:1], rejected_lengths=lengths[1:], rpo_alpha=cfg.rpo_alpha)
        chosen, rejected = out.chosen_rewards.item(), out.rejected_rewards.item()
        return MicroStep(out.loss, {"chosen_rewards": chosen, "rejected_rewards": rejected,
                                    "margin": chosen - rejected, "accuracy": float(chosen > rejected)},
                         int(batch["attention_mask"].sum()))

    return micro_step


def dpo_batch(t: Trainee, pairs: list[PreferencePair], train_version: int | None = None, carry: dict | None = None,
              job: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """One learner batch of preference pairs. `carry`: the optimizer state the previous batch left; `job`: (this
    batch's index, batches in the job), over which the learning-rate schedule runs; returns (metrics, the state to
    carry on)."""
    cfg = t.cfg
    batches = dpo_batches(t.tokenizer, pairs, cfg, t.rank, t.world, t.device)
    autocast = bf16_compute(cfg)
    ref, _ = t.references(lambda m: [pair_logps(m, b, autocast) for b in batches], current=False)
    metrics, pos, optimizer = run_steps(t.model, t.params(), batches, dpo_micro_step(t.model, ref, cfg, autocast),
                                        cfg, name="dpo", rank=t.rank, carry=carry, job=job)
    metrics.update({"dpo/pairs": len(batches), "dpo/workers": t.world,
                    "dpo/replica_spread": replica_spread(t.model, t.world),
                    "trained_ids": sample_ids_behind([pairs[i] for i in selected_pairs(len(pairs), cfg, t.world)])})
    return metrics, optimizer_carry(optimizer, pos)[OPTIMIZER_FILE]
