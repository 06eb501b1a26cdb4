"""What `--model` may name: a model directory, `embedded:<name>`, or a run directory, whose latest weights are used.

A run directory (it has the `config.yaml` the loop writes) is turned into an ordinary model directory,
`<run>/model/`: the base model's config and tokenizer beside the latest round's merged weights
(`train/**/merged.safetensors`, written by the learner with any LoRA folded in), or, when only the LoRA adapter
was kept (`<run>/adapter/`), base + adapter merged with PEFT. vLLM and transformers both load the result.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from codealign.models import resolve_model_path

MODEL_SUBDIR = "model"
WEIGHTS_NAME = "model.safetensors"


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and not (path / "config.json").is_file()


def resolve_eval_model(spec: str) -> str:
    """A directory vLLM can load for `spec`."""
    path = Path(spec)
    if spec.startswith("embedded:") or not path.exists():
        return resolve_model_path(spec)  # embedded, or a hub name (which only works where a hub is reachable)
    if (path / "config.json").is_file():
        return str(path)
    if is_run_dir(path):
        return str(model_from_run(path))
    raise FileNotFoundError(f"--model: {path} is neither a model directory (config.json) nor a run directory "
                            f"(config.yaml)")


def base_model_of(run_dir: Path) -> str:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return resolve_model_path(((cfg.get("model") or {}).get("path")) or "embedded:smollm2-135m-instruct")


def latest_merged(run_dir: Path) -> Path | None:
    found = list((run_dir / "train").glob("**/merged.safetensors"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def model_from_run(run_dir: Path) -> Path:
    target = run_dir / MODEL_SUBDIR
    merged = latest_merged(run_dir)
    if (target / "config.json").is_file() and (merged is None or (target / WEIGHTS_NAME).stat().st_mtime
                                                >= merged.stat().st_mtime):
        return target
    base = Path(base_model_of(run_dir))
    tmp = run_dir / f".{MODEL_SUBDIR}-building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if merged is not None:
            for item in base.iterdir():  # config, tokenizer, generation config: everything but the weights
                if item.is_file() and not item.name.endswith((".safetensors", ".bin")) and \
                        item.name != "model.safetensors.index.json":
                    shutil.copy2(item, tmp / item.name)
            shutil.copy2(merged, tmp / WEIGHTS_NAME)
        elif (run_dir / "adapter" / "adapter_config.json").is_file():
            merge_adapter(base, run_dir / "adapter", tmp)
        else:
            raise FileNotFoundError(f"--model: run directory {run_dir} has no trained weights "
                                    f"(no train/**/merged.safetensors and no adapter/)")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def merge_adapter(base: Path, adapter: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
