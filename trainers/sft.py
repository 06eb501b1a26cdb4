"""Supervised fine-tuning and continued pre-training: a learner batch of sequences.

Chat examples (prompt -> completion) learn the completion only; raw documents (code files) learn every token,
with fill-in-the-middle applied at `train.sft.fim_rate`, and are cut into blocks of `train.max_length`.
Sequence-level distillation is this batch on the oracle's execution-verified solutions.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from codealign.config import SftConfig
from codealign.records import SftExample
from codealign.trainers.chat_turns import answer_token_ids
from codealign.trainers.fim import fim_token_ids, sentinel_ids, text_blocks
from codealign.trainers.modeling import bf16_compute, replica_spread
from codealign.trainers.steps import OPTIMIZER_FILE, MicroStep, optimizer_carry, run_steps
from codealign.trainers.trainee import Trainee


def load_corpus(cfg: SftConfig) -> list[SftExample]:
    """Every file matching cfg.glob under cfg.corpus_dir, as raw documents (sorted, so runs repeat)."""
    root = Path(cfg.corpus_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"train.sft.corpus_dir: {root} is not a directory")
    files = sorted(p for p in root.glob(cfg.glob) if p.is_file())
    if cfg.max_documents:
        files = files[: cfg.max_documents]
    docs = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary or another encoding: not code we can learn from
        if text.strip():
            docs.append(SftExample("", text, f"corpus:{f.relative_to(root)}"))
    if not docs:
        raise ValueError(f"train.sft.corpus_dir: no readable files match {cfg.glob!r} under {root}")
    return docs


def load_sft_file(cfg: SftConfig) -> list[SftExample]:
    """cfg.data_file's chat turns: one JSON object per line with non-empty string `prompt` and `completion`
    (other keys, such as back-translation's `path` and `rating`, are kept out of training)."""
    import json

    path = Path(cfg.data_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"train.sft.data_file: {path} is not a file")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"train.sft.data_file: {path} line {n} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip()
                                                for k in ("prompt", "completion")):
            raise ValueError(f"train.sft.data_file: {path} line {n} needs non-empty string 'prompt' and "
                             f"'completion' fields")
        out.append(SftExample(row["prompt"], row["completion"], f"file:{path.name}:{n}"))
    if not out:
        raise ValueError(f"train.sft.data_file: {path} holds no examples")
    return out


FIM_ROOM = 6  # three sentinels, an eos, and a token at each of FIM's two cuts


def tokenize_examples(tokenizer, examples: list[SftExample], max_length: int, sft: SftConfig,
                      seed: int) -> tuple[list[dict], Counter]:
    """Items {input_ids [1, L], start: first position that is learned, sample_id: the example's}; and the mix of
    FIM kinds."""
    rng = random.Random(seed)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    # looked up only when raw documents are to be FIM-transformed: chat data needs no sentinels
    has_documents = any(not ex.prompt for ex in examples)
    sentinels = sentinel_ids(tokenizer, sft.fim_tokens) if sft.fim_rate > 0 and has_documents else []
    items, kinds = [], Counter()
    for ex in examples:
        if ex.prompt:  # the assistant turn as the chat template renders it; the prompt masked
            prompt, completion = answer_token_ids(tokenizer, ex.prompt, ex.completion)
            prompt = prompt[-(max_length // 2):]
            ids = (prompt + completion)[:max_length]
            if len(ids) > len(prompt):
                items.append({"input_ids": torch.tensor([ids]), "start": len(prompt), "sample_id": ex.sample_id})
            kinds["chat"] += 1
            continue
        if not sentinels:
            ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"] + eos
            kinds["plain"] += 1
            blocks = [ids[s : s + max_length] for s in range(0, len(ids), max_length)]
        else:  # cut first, then FIM each block, so a block's middle is written from its own prefix and suffix
            pieces = text_blocks(tokenizer, ex.completion, max_length - FIM_ROOM)
            blocks = []
            for n, piece in enumerate(pieces):
                ids, kind = fim_token_ids(tokenizer, piece, rng, sft, sentinels)
                kinds[kind] += 1
                blocks.append((ids + eos if n == len(pieces) - 1 else ids)[:max_length])
        for block in blocks:
            if len(block) > 1:
                items.append({"input_ids": torch.tensor([block]), "start": 0, "sample_id": ex.sample_id})
    return items, kinds


def completion_logits(model, item: dict, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits predicting each learned token [1, T, V], those tokens [1, T]); only learned positions go
    through the LM head."""
    ids = item["input_ids"]
    first = max(item["start"], 1)
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, logits_to_keep=ids.shape[1] - first + 1).logits[:, :-1]
    return logits.float(), ids[:, first:]


def sft_loss(model, item: dict, autocast: bool) -> torch.Tensor:
    logits, labels = completion_logits(model, item, autocast)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def prepare_items(examples: list[SftExample], cfg, tokenizer, rank: int, world: int,
                  device) -> tuple[list[dict], Counter, list[str]]:
    """This rank's share of the tokenized items (every rank the same number), on its device; the FIM mix; and the
    sample ids that some rank trains (an example with no item, or whose items fell in the cut to a multiple of
    the ranks, is not trained)."""
    items, kinds = tokenize_examples(tokenizer, examples, cfg.max_length, cfg.sft, cfg.seed)
    random.Random(cfg.seed).shuffle(items)
    kept = items[: len(items) // world * world]
    trained = sorted({it["sample_id"] for it in kept if it["sample_id"]})
    return [{**it, "input_ids": it["input_ids"].to(device)} for it in kept[rank::world]], kinds, trained


def sft_batch(t: Trainee, examples: list[SftExample], train_version: int | None = None,
              carry: dict | None = None, job: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """One learner batch of sequences (chat turns learn the completion; raw documents every token, FIM applied).
    `carry`, `job`, the result: as `dpo.dpo_batch`'s."""
    cfg = t.cfg
    items, kinds, trained = prepare_items(examples, cfg, t.tokenizer, t.rank, t.world, t.device)
    autocast = bf16_compute(cfg)

    def micro_step(item, i: int) -> MicroStep:
        return MicroStep(sft_loss(t.model, item, autocast), {}, int(item["input_ids"].shape[1]))

    metrics, pos, optimizer = run_steps(t.model, t.params(), items, micro_step, cfg, name="sft", rank=t.rank,
                                        carry=carry, job=job)
    metrics.update({"sft/examples": len(examples), "sft/sequences": len(items), "sft/workers": t.world,
                    "sft/replica_spread": replica_spread(t.model, t.world), "trained_ids": trained,
                    **{f"sft/fim_{k}": v for k, v in kinds.items()}})
    return metrics, optimizer_carry(optimizer, pos)[OPTIMIZER_FILE]
