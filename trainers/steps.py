"""The optimizer loop every algorithm shares: gradient accumulation over micro-batches, the loss-spike guard,
the NaN stop, progress, and resumable checkpoints (trainable weights, optimizer, step, data position).

AdamW with decoupled weight decay on weight matrices only (never biases or norms), linear warm-up over the run's
first `warmup_steps` optimizer steps and a schedule after it (with `job`, over the learner's whole job),
gradient clipping at `max_grad_norm`, and the optimizer's moments carried from one batch to the next
(`carry_optimizer`).

An algorithm supplies its micro-batches and a function micro-batch -> `MicroStep`; everything about *when* to
step, skip, checkpoint or stop lives here once.
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codealign.config import LossGuardConfig, TrainConfig

STATE_FILE = "train_state.pt"
OPTIMIZER_FILE = "optimizer.pt"  # in every published version: what a restarted or resumed optimizer continues from


@dataclass
class MicroStep:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: int = 0


@dataclass
class LossGuard:
    """The seeds' loss-spike guard, applied per micro-batch before backward. Absolute thresholds, or
    (`relative`) multiples of the mean |loss| of the last `window` accepted micro-batches. A non-finite loss is
    malformed when `malformed` is set; otherwise it stops the batch (FloatingPointError in run_steps)."""

    cfg: LossGuardConfig
    skipped: int = 0
    scaled: int = 0
    recent: deque = field(default_factory=deque)

    def weight(self, loss: float) -> float:
        if not math.isfinite(loss):
            if self.cfg.malformed:
                self.skipped += 1
                return 0.0
            return math.nan
        malformed, spike = self.cfg.malformed, self.cfg.spike
        if self.cfg.relative:
            if len(self.recent) < self.cfg.window:  # no baseline yet: accept, and learn the scale
                self._accept(loss)
                return 1.0
            scale = statistics.fmean(abs(x) for x in self.recent)
            malformed, spike = malformed * scale, spike * scale
        if malformed and loss > malformed:
            self.skipped += 1
            return 0.0
        self._accept(loss)
        if spike and loss > spike:
            self.scaled += 1
            return self.cfg.spike_scale
        return 1.0

    def _accept(self, loss: float) -> None:
        self.recent.append(loss)
        while len(self.recent) > self.cfg.window:
            self.recent.popleft()


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    index: int = 0  # micro-batches of this epoch's order already consumed
    tokens: int = 0
    history: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    guard_skipped: int = 0
    guard_scaled: int = 0
    resumed_from_step: int = 0
    global_step: int = 0  # optimizer steps over the whole run (warm-up counts these across batches)
    skipped_steps: int = 0  # optimizer steps not taken: no micro-batch contributed, or a non-finite gradient
    guard_recent: list[float] = field(default_factory=list)  # the relative loss guard's window, carried on
    batch: int | None = None  # the learner's batch this position belongs to


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return order


def trainable_state(model) -> dict[str, torch.Tensor]:
    unwrapped = getattr(model, "module", model)
    return {n: p.detach().clone() for n, p in unwrapped.named_parameters() if p.requires_grad}


def save_state(directory: Path, model, optimizer, pos: Position) -> None:
    state = {"params": trainable_state(model), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
             "position": {**pos.__dict__, "history": dict(pos.history)}}
    torch.save(state, directory / STATE_FILE)


def load_params(model, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy saved parameters into `model` by name; a name the model lacks is an error naming `where`."""
    unwrapped = getattr(model, "module", model)
    params = dict(unwrapped.named_parameters())
    missing = set(state) - set(params)
    if missing:
        raise ValueError(f"checkpoint {where} holds parameters the model lacks: {sorted(missing)[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def load_state(directory: Path, model, optimizer, batch: int | None = None) -> Position:
    """The saved position, its parameters and optimizer loaded; a fresh position (nothing loaded) when the
    checkpoint belongs to another long-lived batch than `batch`."""
    state = torch.load(directory / STATE_FILE, weights_only=False)
    if state["position"].get("batch") != batch:
        return Position(batch=batch)
    load_params(model, state["params"], str(directory))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    raw = state["position"]
    pos = Position(**{**raw, "history": defaultdict(list, raw["history"])})
    pos.resumed_from_step = pos.step
    return pos


def resume_point(model, optimizer, batch: int | None = None) -> Position:
    """The position of the latest checkpoint Ray Train hands a restarted worker group; a fresh one otherwise.
    In a long-lived run Ray Train hands back the latest checkpoint reported in the run, so one written in an
    earlier batch is not this `batch`'s resume point."""
    import ray.train

    try:
        checkpoint = ray.train.get_checkpoint()
    except RuntimeError:  # called outside a Ray Train worker (an in-process batch): nothing to resume
        return Position(batch=batch)
    if checkpoint is None:
        return Position(batch=batch)
    with checkpoint.as_directory() as d:
        if not (Path(d) / STATE_FILE).is_file():
            return Position(batch=batch)
        return load_state(Path(d), model, optimizer, batch)


def summarize(prefix: str, pos: Position, seconds: float, tokens: int) -> dict[str, Any]:
    """`seconds` and `tokens`: this attempt's (after a resume, the steps redone since the checkpoint)."""
    h = pos.history
    metrics = {f"{prefix}/{k}": statistics.fmean(v) for k, v in h.items() if v}
    loss = h.get("loss", [])
    metrics.update({
        f"{prefix}/loss_first": loss[0] if loss else math.nan,
        f"{prefix}/loss_last": loss[-1] if loss else math.nan,
        f"{prefix}/steps": pos.step,
        f"{prefix}/tokens": pos.tokens,
        f"{prefix}/tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        f"{prefix}/train_s": seconds,
        f"{prefix}/guard_skipped": pos.guard_skipped,
        f"{prefix}/guard_scaled": pos.guard_scaled,
        f"{prefix}/resumed_from_step": pos.resumed_from_step,
        f"{prefix}/skipped_steps": pos.skipped_steps,
        f"{prefix}/global_step": pos.global_step,
    })
    return metrics


def param_groups(model, params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices (LoRA's A and B included), none on biases and norm scales."""
    names = {id(p): n for n, p in getattr(model, "module", model).named_parameters()}
    decay = [p for p in params if p.ndim >= 2 and "norm" not in names.get(id(p), "")]
    kept = {id(p) for p in decay}
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in kept], "weight_decay": 0.0}]


def learning_rate(cfg: TrainConfig, global_step: int, step: int, total: int, job: tuple[int, int] | None = None
                  ) -> float:
    """Linear warm-up over the run's first `warmup_steps` steps; after it, `lr_schedule` over this batch's steps,
    or with `job` = (this batch's index, batches in the job) over the whole job."""
    if cfg.warmup_steps and global_step < cfg.warmup_steps:
        return cfg.learning_rate * (global_step + 1) / cfg.warmup_steps
    progress = step / total if total else 0.0
    if job is not None and job[1]:
        progress = min(1.0, (job[0] + progress) / max(1, job[1]))
    if cfg.lr_schedule == "linear":
        return cfg.learning_rate * (1 - progress)
    if cfg.lr_schedule == "cosine":
        return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.learning_rate


def carry_in(optimizer, cfg: TrainConfig, saved: dict | None) -> tuple[int, bool, list[float]]:
    """Load the previous batch's optimizer state (AdamW's moments, what `optimizer_carry` wrote) when asked;
    returns (global step, carried, the loss guard's window of recent losses)."""
    if saved is None:
        return 0, False, []
    recent = list(saved.get("guard_recent", []))  # the relative guard's baseline runs over the job too
    if not cfg.carry_optimizer:
        return saved["global_step"], False, recent
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except ValueError:  # another parameter layout (e.g. a critic added): start the moments afresh
        return saved["global_step"], False, recent
    return saved["global_step"], True, recent


def optimizer_carry(optimizer, pos: Position) -> dict:
    """What the next batch's optimizer continues from (and a published version holds): {file name: object}."""
    return {OPTIMIZER_FILE: {"optimizer": optimizer.state_dict(), "global_step": pos.global_step,
                             "guard_recent": list(pos.guard_recent)}}


def backward(model, out: MicroStep, weight: float, n: int) -> None:
    """Backward of the weighted loss. A skipped micro-batch (weight 0) needs none, except under DDP, where every
    rank must all-reduce the same number of times: then a zero-weighted one (a non-finite loss zeroed first; any
    non-finite gradient it still leaves makes the step skipped)."""
    if weight == 0.0 and not hasattr(model, "no_sync"):
        return
    loss = out.loss if math.isfinite(weight) and weight else torch.nan_to_num(out.loss, 0.0, 0.0, 0.0)
    (loss * (weight / n)).backward()


def run_steps(model, params: list[torch.nn.Parameter], items: list, micro_step: Callable[[Any, int], MicroStep],
              cfg: TrainConfig, *, name: str, rank: int, carry: dict | None = None,
              job: tuple[int, int] | None = None) -> tuple[dict[str, Any], Position, Any]:
    """Train `cfg.epochs` passes over `items`, `cfg.batch_size` micro-batches accumulated per optimizer step.

    `micro_step(item, index)` runs the forward pass and returns the loss. `carry`: the previous batch's optimizer
    state (`optimizer_carry(...)[OPTIMIZER_FILE]`), which this batch continues. `job`: (this batch's index, batches
    in the job): the schedule runs over the job (0 batches: over this one), and only this batch's checkpoints are
    resumed from. Returns (summary metrics, position, optimizer)."""

    optimizer = torch.optim.AdamW(param_groups(model, params, cfg.weight_decay), lr=cfg.learning_rate)
    global_step, carried, recent = carry_in(optimizer, cfg, carry)
    pos = resume_point(model, optimizer, job[0] if job is not None else None)
    if pos.step == 0:
        pos.global_step, pos.guard_recent = global_step, recent
    guard = LossGuard(cfg.loss_guard, pos.guard_skipped, pos.guard_scaled, deque(pos.guard_recent))
    steps_per_epoch = math.ceil(len(items) / cfg.batch_size) if items else 0
    total = cfg.epochs * steps_per_epoch
    start, tokens_before = time.monotonic(), pos.tokens
    model.train()
    while pos.epoch < cfg.epochs and items:
        order = epoch_order(len(items), cfg.seed, pos.epoch)
        while pos.index < len(order):
            chunk = order[pos.index : pos.index + cfg.batch_size]
            optimizer.zero_grad(set_to_none=True)
            step: dict[str, float] = defaultdict(float)
            contributed = 0
            for j, i in enumerate(chunk):
                # DDP: all-reduce once per optimizer step, on the last micro-batch
                last = j == len(chunk) - 1
                sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
                with sync:
                    out = micro_step(items[i], i)
                    value = out.loss.item()
                    weight = guard.weight(value)  # sees a non-finite loss first: malformed, if configured
                    if math.isnan(weight):
                        raise FloatingPointError(f"{name} loss is {value} at item {i} (step {pos.step + 1}); "
                                                 "stopping this batch, the last published version stays")
                    backward(model, out, weight, len(chunk))
                    contributed += weight > 0
                if math.isfinite(value):
                    step["loss"] += value / len(chunk)
                for k, v in out.metrics.items():
                    step[k] += v / len(chunk)
                pos.tokens += out.tokens
            grads = [p.grad for p in params if p.grad is not None]
            # DDP averaged the gradients over every rank: step on every rank when any rank contributed (a rank
            # whose whole chunk the guard skipped must not stay behind, or the replicas drift apart)
            if any_rank(contributed > 0, model, params) and all(bool(g.isfinite().all()) for g in grads):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(cfg, pos.global_step, pos.step, total, job)
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()  # only when something contributed: AdamW's momentum and decay move weights too
                pos.global_step += 1
            else:
                pos.skipped_steps += 1
            pos.step += 1
            pos.index += len(chunk)
            pos.guard_skipped, pos.guard_scaled, pos.guard_recent = guard.skipped, guard.scaled, list(guard.recent)
            for k, v in step.items():
                pos.history[k].append(v)
            if cfg.checkpoint_every and pos.step % cfg.checkpoint_every == 0 and pos.step < total:
                report_resumable(model, optimizer, pos, rank, {f"{name}/step": pos.step})
        pos.epoch += 1
        pos.index = 0
    metrics = summarize(name, pos, time.monotonic() - start, pos.tokens - tokens_before)
    metrics[f"{name}/optimizer_carried"] = int(carried)
    return metrics, pos, optimizer


def any_rank(flag: bool, model, params: list[torch.nn.Parameter]) -> bool:
    """`flag` or'ed over the data-parallel ranks (a collective call under DDP: every rank makes it)."""
    import torch.distributed as dist

    if not hasattr(model, "no_sync") or not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=params[0].device if params else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def report_checkpoint(metrics: dict, rank: int, write: Callable[[Path], None]) -> None:
    """Rank 0 fills a directory with `write(directory)` and reports it as a `ray.train.Checkpoint`; the other
    ranks report the metrics alone (every rank must call report)."""
    import ray.train

    metrics = with_rank_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            write(Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def with_rank_metrics(metrics: dict) -> dict:
    """Ray Train keeps rank 0's metrics only: add every rank's value as `<key>@rank<r>` for the numbers that differ
    between ranks (each rank's own loss, tokens, seconds). A collective call: every rank must make it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, metrics)
    out = dict(metrics)
    for key, value in metrics.items():
        values = [g.get(key) for g in gathered]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and any(v != value for v in values):
            out.update({f"{key}@rank{r}": v for r, v in enumerate(values)})
    return out


def report_resumable(model, optimizer, pos: Position, rank: int, metrics: dict) -> None:
    report_checkpoint(metrics, rank, lambda d: save_state(d, model, optimizer, pos))
