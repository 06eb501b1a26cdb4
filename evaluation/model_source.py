"""What `--model` may name: a model directory, `embedded:<name>`, or a run directory, whose latest weights are used.

A run directory (it has the `config.yaml` the loop writes) is turned into an ordinary model directory,
`<run>/model/`, holding the trained model as the learner has it (docs/architecture.md, "What the trained model
is"): with a LoRA adapter (`<run>/adapter/`, the fp32 adapter of the last round) the base merged with it by PEFT
in float32, since a bf16 merge rounds away an update smaller than half a bf16 step; without one (full fine-tuning)
the latest round's merged weights (`train/**/merged.safetensors`, in the run's `model.dtype`). The directory's
`config.json` names the dtype of its weights, so `--dtype auto` serves them as they are. vLLM and transformers
both load the result.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from codealign.model_source import resolve_model

MODEL_SUBDIR = "model"
WEIGHTS_NAME = "model.safetensors"


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and not (path / "config.json").is_file()


def resolve_eval_model(spec: str) -> str:
    """A directory vLLM can load for `spec`: a run directory's trained model, else what `resolve_model` makes of
    it (embedded, a model directory, a hub name)."""
    path = Path(spec).expanduser()
    if path.is_dir() and is_run_dir(path):
        return str(model_from_run(path))
    return resolve_model(spec)


def base_model_of(run_dir: Path) -> str:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return resolve_model(((cfg.get("model") or {}).get("path")) or "embedded:smollm2-135m-instruct")


def latest_merged(run_dir: Path) -> Path | None:
    found = list((run_dir / "train").glob("**/merged.safetensors"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def trained_weights(run_dir: Path) -> Path | None:
    """The file that holds the run's trained model: its adapter (LoRA), else its latest merged weights."""
    adapter = run_dir / "adapter" / "adapter_model.safetensors"
    return adapter if adapter.is_file() else latest_merged(run_dir)


def model_from_run(run_dir: Path) -> Path:
    target = run_dir / MODEL_SUBDIR
    source = trained_weights(run_dir)
    if (target / "config.json").is_file() and (source is None or (target / WEIGHTS_NAME).stat().st_mtime
                                                >= source.stat().st_mtime):
        return target
    base = Path(base_model_of(run_dir))
    tmp = run_dir / f".{MODEL_SUBDIR}-building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if source is not None and source.parent.name == "adapter":
            merge_adapter(base, source.parent, tmp)
        elif source is not None:
            for item in base.iterdir():  # config, tokenizer, generation config: everything but the weights
                if item.is_file() and not item.name.endswith((".safetensors", ".bin")) and \
                        item.name != "model.safetensors.index.json":
                    shutil.copy2(item, tmp / item.name)
            shutil.copy2(source, tmp / WEIGHTS_NAME)
            name_dtype(tmp / "config.json", weights_dtype(source))
        else:
            raise FileNotFoundError(f"--model: run directory {run_dir} has no trained weights "
                                    f"(no train/**/merged.safetensors and no adapter/)")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def weights_dtype(path: Path) -> str:
    """The torch dtype name of a safetensors file's floating-point tensors (the first one found)."""
    from safetensors import safe_open

    names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
    with safe_open(str(path), "pt") as fh:
        for key in fh.keys():
            dtype = str(fh.get_slice(key).get_dtype())
            if dtype in names:
                return names[dtype]
    return "auto"


def name_dtype(config_json: Path, dtype: str) -> None:
    """Make a copied config.json name the dtype its weights are stored in (vLLM's and transformers' "auto")."""
    if dtype == "auto":
        return
    cfg = json.loads(config_json.read_text())
    cfg["dtype"] = cfg["torch_dtype"] = dtype  # transformers >= 5 reads "dtype", older ones "torch_dtype"
    config_json.write_text(json.dumps(cfg, indent=2))


def merge_adapter(base: Path, adapter: Path, out: Path) -> None:
    """base + adapter merged in float32 and saved in float32: exactly the model the learner trained."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
