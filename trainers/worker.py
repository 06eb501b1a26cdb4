"""What every train loop does on its Ray Train worker: set up, and hand back the round's result."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from codealign.config import TrainConfig
from codealign.trainers.modeling import (
    checkpoint_weights,
    frozen_reference,
    load_policy,
    save_for_generators,
)
from codealign.trainers.steps import load_params, report_checkpoint, trainable_state


def setup_worker(config: dict) -> tuple[TrainConfig, int, int, list]:
    """(train config, rank, world size, the round's data fetched from the object store)."""
    import ray
    import ray.train

    cfg: TrainConfig = config["train"]
    torch.set_num_threads(int(config.get("num_threads") or os.cpu_count() or 1))
    torch.manual_seed(cfg.seed)
    ctx = ray.train.get_context()
    data = config["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    return cfg, ctx.get_world_rank(), ctx.get_world_size(), data


FULL_WEIGHTS_FILE = "policy_fp32.pt"  # full fine-tuning: the fp32 weights the next round continues from


def build_policy(config: dict, cfg: TrainConfig, device: torch.device, reference: Callable | None = None):
    """The policy as the previous round left it, and `reference(model)` computed on the right reference model:
    the frozen base (`train.reference: frozen`) or the policy as this round starts (`refreshed`).
    Returns (model, what `reference` returned or None)."""
    model = load_policy(config["model_path"], cfg, config.get("adapter_from"))
    if cfg.quantization == "none":  # bitsandbytes placed a quantized model already
        model = model.to(device)
    ref = None
    if reference is not None and cfg.reference == "frozen":
        with torch.no_grad(), frozen_reference(model):  # LoRA: adapter off; full: the base, before restoring
            ref = reference(model)
    previous = config.get("previous_checkpoint")
    if not cfg.lora.enabled and previous and (Path(previous) / FULL_WEIGHTS_FILE).is_file():
        load_params(model, torch.load(Path(previous) / FULL_WEIGHTS_FILE, map_location=device), previous)
    if reference is not None and cfg.reference == "refreshed":
        with torch.no_grad():
            ref = reference(model)
    return model, ref


def report_round(model, metrics: dict, rank: int, config: dict, extra: dict | None = None) -> None:
    """Rank 0 writes the adapter and merged weights (and `extra`: file name -> object for torch.save, e.g. a
    value head) into the round's checkpoint; every rank reports."""
    cfg: TrainConfig = config["train"]
    policy = getattr(model, "module", model)

    def write(directory: Path) -> None:
        # a quantized base is folded from the checkpoint's own weights, not from its NF4 copy
        base = checkpoint_weights(config["model_path"]) if cfg.quantization != "none" else None
        served = getattr(torch, config.get("served_dtype") or "bfloat16")  # what the generators load
        save_for_generators(policy, directory, dtype=served, base_weights=base)
        files = dict(extra or {})
        if not hasattr(policy, "peft_config"):
            files[FULL_WEIGHTS_FILE] = trainable_state(policy)
        for name, obj in files.items():
            torch.save(obj, directory / name)

    report_checkpoint(metrics, rank, write)
