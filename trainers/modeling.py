"""Loading the policy for training (full or LoRA through PEFT) and writing what the generators load."""

from __future__ import annotations

from pathlib import Path

import torch

from codealign.config import TrainConfig

ADAPTER_DIR = "adapter"
MERGED_FILE = "merged.safetensors"


def load_policy(model_path: str, cfg: TrainConfig, adapter_from: str | None = None):
    """fp32 master weights for what trains (autocast does the bf16 math); a LoRA adapter on top when enabled; with
    `cfg.quantization` the frozen base is held in 4-bit NF4 or 8-bit through bitsandbytes (QLoRA).

    `adapter_from`: an adapter directory from an earlier round to keep training (the reference stays the
    frozen base model, reached by disabling the adapter)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = cfg.lora
    quantized = cfg.quantization != "none"
    # A frozen base needs no fp32 master copy: with LoRA and bf16 it stays bf16 (half the memory, no per-step
    # cast); PEFT keeps the adapter itself in fp32. Only when the checkpoint itself is stored in bf16, though: a
    # float32 checkpoint (an earlier stage's fp32 merge) rounded to bf16 would lose updates below a bf16 step.
    frozen_bf16 = lora.enabled and bf16_compute(cfg) and stored_dtype(model_path) in ("bfloat16", "float16")
    kwargs = {"dtype": torch.bfloat16 if frozen_bf16 else torch.float32}
    if quantized:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
            if cfg.quantization == "nf4" else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": "cuda:0" if cfg.use_gpu else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        keep_4bit_weights_differentiable(model)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if not lora.enabled:
        return model
    if adapter_from:
        return PeftModel.from_pretrained(model, adapter_from, is_trainable=True)
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def keep_4bit_weights_differentiable(model) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight for its inference kernel the first time the
    layer runs in eval mode without grad (our reference pass) and keeps it so; that kernel has no backward, so
    every later training step gets no gradient through the layer's input and the adapters before it (q, k, v,
    gate, up) silently stay at zero. The repacking is an inference speed-up only: training turns it off."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def stored_dtype(model_path: str) -> str:
    """The dtype a model directory's config.json says its weights are stored in ("" when it does not say)."""
    import json

    config = Path(model_path) / "config.json"
    if not config.is_file():
        return ""
    cfg = json.loads(config.read_text())
    return str(cfg.get("dtype") or cfg.get("torch_dtype") or "")


def bf16_supported() -> bool:
    """Whether this CPU has bf16 matrix units (AVX512-BF16 or AMX). Without them PyTorch still multiplies bf16
    tensors, by emulation, and autocast would crawl: so ask the CPU, not whether a bf16 product runs."""
    import torch.cpu

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_compute(cfg: TrainConfig) -> bool:
    """Whether training computes in bf16 (autocast, fp32 master weights): asked for, and the device has bf16
    matrix units (any CUDA device here; on CPU, checked)."""
    return cfg.bf16 and (cfg.use_gpu or bf16_supported())


def frozen_reference(model):
    """Context in which `model` computes as the reference: the frozen base (adapter disabled) when training a
    LoRA adapter; in full fine-tuning, the model as it is (callers compute reference log-probs before training)."""
    from contextlib import nullcontext

    unwrapped = getattr(model, "module", model)
    return unwrapped.disable_adapter() if hasattr(unwrapped, "disable_adapter") else nullcontext()


def adapter_for_generators(model, dtype: torch.dtype = torch.bfloat16) -> tuple[dict, dict]:
    """(adapter tensors as numpy for the object store, adapter config as plain JSON) for Generator.update_lora."""
    from peft import get_peft_model_state_dict

    from codealign.weights import to_numpy

    tensors = to_numpy({k: v.detach().to(dtype) for k, v in get_peft_model_state_dict(model).items()})
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in model.peft_config["default"].to_dict().items()}
    return tensors, config


def lora_deltas(model) -> dict[str, torch.Tensor]:
    """checkpoint weight name -> the LoRA update (B @ A * scale) of that weight."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    deltas = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    delta = module.get_delta_weight(adapter).detach().float()
                    key = f"{name}.weight"
                    deltas[key] = deltas[key] + delta if key in deltas else delta
    return deltas


def merged_state_dict(model, dtype: torch.dtype = torch.bfloat16,
                      base_weights: dict[str, torch.Tensor] | None = None,
                      rounding: str = "stochastic") -> dict[str, torch.Tensor]:
    """Full weights with any LoRA folded in, named as the base checkpoint names them (what vLLM loads).

    `base_weights`: the checkpoint's own tensors, needed when the training base is quantized (folding into the
    NF4 copy would publish its rounding error). Computed on copies, so the trainable model is left as it is.
    `rounding`: "stochastic" rounds the updated tensors into bf16 unbiasedly (codealign.weights.round_stochastic:
    round-to-nearest drops every update below half a bf16 step); "nearest" is the plain cast."""
    from codealign.weights import round_stochastic

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base_weights is None:
        base_weights = {n.replace(".base_layer.", "."): t.detach() for n, t in base.state_dict().items()
                        if "lora_" not in n}
    deltas = lora_deltas(model)
    unmatched = sorted(set(deltas) - set(base_weights))
    if unmatched:  # skipping one would publish weights without part of the trained update
        raise ValueError(f"LoRA deltas {unmatched[:3]} ({len(unmatched)} in all) match no tensor of the base "
                         f"checkpoint (it names tensors like {sorted(base_weights)[:2]}); refusing to merge")
    out = {}
    for i, (name, tensor) in enumerate(sorted(base_weights.items())):
        if name in deltas and rounding == "stochastic":
            out[name] = round_stochastic(tensor.float() + deltas[name].to(tensor.device), dtype, seed=i).contiguous()
            continue
        value = tensor.float() + deltas[name].to(tensor.device) if name in deltas else tensor
        out[name] = value.to(dtype).contiguous()
    if getattr(base.config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)  # safetensors refuses shared tensors; the loader re-ties it
    return out


def checkpoint_weights(model_path: str) -> dict[str, torch.Tensor]:
    """The unquantized tensors of a local checkpoint, safetensors or PyTorch `.bin` files."""
    from safetensors.torch import load_file

    from codealign.model_source import weight_files

    files = weight_files(model_path)
    if not files:
        raise FileNotFoundError(f"{model_path}: no *.safetensors or *.bin files to merge the adapter into")
    out = {}
    for f in files:
        out.update(load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu",
                                                                                    weights_only=True))
    return out


def save_for_generators(model, out_dir: Path, dtype: torch.dtype = torch.bfloat16,
                        base_weights: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(out_dir / ADAPTER_DIR)
    path = out_dir / MERGED_FILE
    save_file(merged_state_dict(model, dtype, base_weights), str(path))
    return path


def replica_spread(model, world: int) -> float:
    """Data-parallel replicas must hold the same weights: the spread (max - min) over ranks of a checksum of the
    trainable parameters. 0.0 with one worker."""
    import torch.distributed as dist

    if world < 2 or not dist.is_initialized():
        return 0.0
    total = sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad)
    checksum = torch.as_tensor(total, dtype=torch.float64).reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    values = torch.cat(gathered)
    return float(values.max() - values.min())
