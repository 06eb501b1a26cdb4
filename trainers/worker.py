"""What every train loop does on its Ray Train worker: set up, and hand back the round's result."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from codealign.config import TrainConfig
from trainers.modeling import save_for_generators


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


def bf16_supported() -> bool:
    try:
        a = torch.ones(4, 4, dtype=torch.bfloat16)
        return bool(torch.isfinite(a @ a).all())
    except RuntimeError:
        return False


def use_autocast(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast (fp32 master weights) where the device runs bf16 matrix products."""
    return cfg.bf16 and (device.type == "cuda" or bf16_supported())


def report_round(model, metrics: dict, rank: int) -> None:
    """Rank 0 writes the adapter and merged weights into the round's checkpoint; every rank reports."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_for_generators(getattr(model, "module", model), Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
