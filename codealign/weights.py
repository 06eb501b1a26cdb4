"""Weights on the wire: torch tensors <-> numpy arrays for Ray's object store.

Ray stores numpy arrays zero-copy and hands them back as read-only views, where pickled torch tensors are
copied (about 3 s for 135M parameters). numpy has no bfloat16, so bf16 travels as its uint16 bit pattern and
is viewed back, at no cost, on the receiving side.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def to_numpy(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = {}
    for name, t in state_dict.items():
        t = t.detach().contiguous().cpu()
        out[name] = t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
    return out


def to_torch(weights: dict[str, np.ndarray]) -> Iterator[tuple[str, torch.Tensor]]:
    for name, arr in weights.items():
        with warnings.catch_warnings():  # object-store arrays are read-only; the consumer only reads them
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.asarray(arr))
        yield name, t.view(torch.bfloat16) if t.dtype == torch.uint16 else t


def load_for_generators(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    return to_numpy(load_file(str(path)))


def round_stochastic(value: torch.Tensor, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """`value` (fp32) in `dtype`, rounded up or down at random in proportion to its distance from the two
    neighbours, so the served weights equal the trained ones in expectation. Round-to-nearest maps an update
    smaller than half a bf16 step back onto the old weight: a LoRA round's update is mostly that small, and the
    served model kept a third of what the learner gained (bench/serving_precision.py). Only bf16 is rounded this
    way (fp16 and fp32 are returned rounded to nearest); `seed` makes it repeatable."""
    if dtype != torch.bfloat16:
        return value.to(dtype)
    bits = value.float().contiguous().view(torch.int32)
    gen = torch.Generator(device=value.device).manual_seed(seed)
    # bf16 is fp32's upper 16 bits: adding uniform noise below them and truncating rounds up with probability
    # equal to the dropped fraction
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, generator=gen, device=value.device)
    finite = torch.isfinite(value)
    rounded = torch.where(finite, (bits + noise) & ~0xFFFF, bits)
    return rounded.view(torch.float32).to(torch.bfloat16)


def bf16_model_copy(model_dir: str | Path, out_dir: str | Path) -> Path:
    """A bf16 copy of an fp32 model directory (`<run>/model`, the trained model as the learner has it) with its
    weights rounded stochastically: what a bf16 engine should serve of it. Handing vLLM the fp32 directory with
    `dtype=bfloat16` rounds to nearest at load and drops the updates below half a bf16 step."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    src, out = Path(model_dir), Path(out_dir)
    marker = out / "bf16_from.json"
    files = sorted(src.glob("*.safetensors"))
    stamp = {f.name: f.stat().st_mtime for f in files}
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy2(item, out / item.name)
    for n, f in enumerate(files):
        tensors = load_file(str(f))
        save_file({k: round_stochastic(v, torch.bfloat16, seed=1000 * n + i).contiguous()
                   if v.is_floating_point() else v for i, (k, v) in enumerate(sorted(tensors.items()))},
                  str(out / f.name), metadata={"format": "pt"})
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = cfg["torch_dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    marker.write_text(json.dumps(stamp))
    return out
