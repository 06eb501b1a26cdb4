"""The model a run trains and serves, settled once at start-up, before Ray or an engine starts.

`model.path` may be `embedded:<name>` (prepared by `launch.py prepare-model` in the per-user models directory,
codealign.models.models_dir), a local directory, or a Hugging Face name. This is the one resolver: the run, its
distillation teacher, the oracle and `launch.py eval` all go through `resolve_model`. Every later stage (vLLM, the
learner, the merge of a LoRA round into full weights) reads one local directory, so a name is downloaded here, once,
with `huggingface_hub.snapshot_download`; when the hub cannot be reached the run stops here with an error naming the
model, not at the end of its first round. A checkpoint stored as PyTorch `.bin` files works like a safetensors one
(vLLM, transformers and `trainers.modeling.checkpoint_weights` read both).

Also refused here: LoRA on the input or output embedding of a model whose two are tied. PEFT would give the trainer
an adapter on a tensor that the engine's loader re-ties or drops, so the trainer and the generators would run two
different models without a word.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from codealign.models import EMBEDDED_PREFIX, embedded_model_dir

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# what the embedding and output-head modules are called in the common causal-LM families
EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_in", "embed_out")


class ModelSourceError(ValueError):
    """The model cannot be used; the message names `model.path` (or the LoRA field) and the model."""


def weight_files(model_dir: str | Path) -> list[Path]:
    """The checkpoint's weight files: safetensors if any, else PyTorch `.bin` files (not training-state files)."""
    directory = Path(model_dir)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        files = [f for f in sorted(directory.glob("*.bin")) if f.name not in ("training_args.bin", "optimizer.bin")]
    return files


def _download(name: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        # config, tokenizer and weights; safetensors preferred, .bin for checkpoints that have only those
        return snapshot_download(repo_id=name, allow_patterns=["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken",
                                                               "*.safetensors", "*.bin", "*.py"])
    except Exception as exc:  # noqa: BLE001 - offline, unknown repository, gated, ...: one clear message
        raise ModelSourceError(
            f"model.path: {name!r} is not a local directory, and downloading it from the Hugging Face hub failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). Download it where the "
            f"hub is reachable and set model.path to that directory.") from None


@functools.cache
def resolve_model(path: str) -> str:
    """A local directory holding config.json and weights for `path` (see the module docstring)."""
    if path.startswith(EMBEDDED_PREFIX):
        local = embedded_model_dir(path)
    elif Path(path).expanduser().exists():
        local = str(Path(path).expanduser().resolve())
        if not Path(local).is_dir():
            raise ModelSourceError(f"model.path: {path!r} is a file; point it at the checkpoint's directory")
    elif path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or not path.strip():
        raise ModelSourceError(f"model.path: {path!r} does not exist")
    else:
        local = _download(path)
    if not (Path(local) / "config.json").is_file():
        raise ModelSourceError(f"model.path: {path!r} ({local}) has no config.json")
    if not weight_files(local):
        raise ModelSourceError(f"model.path: {path!r} ({local}) has no weights (*.safetensors or *.bin)")
    return local


def ties_embeddings(model_dir: str | Path) -> bool:
    """Whether the checkpoint's output head is its input embedding (transformers' default when the key is absent)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    text = config.get("text_config") or {}
    return bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", True)))


def _targets_embedding(target: str) -> str | None:
    for module in EMBEDDING_MODULES:
        if target == module or target.endswith(f".{module}"):
            return module
        try:
            if re.fullmatch(target, module) or re.fullmatch(target, f"model.{module}"):
                return module
        except re.error:
            continue
    return None


def check_lora_targets(model_dir: str | Path, target_modules: list[str], enabled: bool = True) -> None:
    """Refuse LoRA targets on the embedding or output head of a model whose two are tied."""
    if not enabled or not ties_embeddings(model_dir):
        return
    for target in target_modules:
        module = _targets_embedding(target)
        if module is not None:
            raise ModelSourceError(
                f"train.lora.target_modules: {target!r} puts an adapter on {module!r}, but this model ties its "
                f"input embedding and output head (tie_word_embeddings in {model_dir}/config.json); the trainer and "
                f"the generators would run different models. Remove it from target_modules.")
