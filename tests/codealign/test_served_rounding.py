"""The merged weights a bf16 engine serves keep a LoRA update smaller than bf16's resolution (stochastic rounding),
where rounding to nearest put every such weight back on the base. Tiny model, PEFT adapter, no training."""

import torch
from safetensors.torch import load_file

from codealign.config import LoraConfig, TrainConfig
from codealign.trainers.modeling import load_policy, lora_deltas, merged_state_dict
from codealign.weights import round_stochastic


def test_a_sub_resolution_update_survives_the_bf16_merge(tiny_model_path):
    model = load_policy(tiny_model_path, TrainConfig(bf16=False, lora=LoraConfig(r=4, alpha=8)))
    torch.manual_seed(0)
    with torch.no_grad():  # an update about a tenth of a bf16 step: what a few small LoRA steps make
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2e-5)
    base = {k: v.bfloat16() for k, v in load_file(f"{tiny_model_path}/model.safetensors").items()}
    deltas = lora_deltas(model)
    merged = merged_state_dict(model, dtype=torch.bfloat16, base_weights=base)
    for name, delta in deltas.items():
        step = (merged[name].float() - base[name].float())
        # the served update, projected on the trained one: 1 in expectation; 0 when rounded to nearest
        kept = float((step * delta).sum() / (delta * delta).sum())
        assert 0.9 < kept < 1.1, (name, kept)
        nearest = (base[name].float() + delta).bfloat16().float() - base[name].float()
        assert float((nearest * delta).sum() / (delta * delta).sum()) < 0.5  # what the plain cast kept
    assert merged_state_dict(model, dtype=torch.bfloat16, base_weights=base).keys() == merged.keys()


def test_stochastic_rounding_is_unbiased_and_repeatable():
    value = torch.full((200_000,), 1.0) + 1e-3  # 1e-3 is 0.128 of a bf16 step at 1.0
    once = round_stochastic(value, torch.bfloat16, seed=3)
    assert set(once.float().unique().tolist()) == {1.0, 1.0078125}
    assert abs(float(once.float().mean()) - 1.001) < 5e-5
    assert torch.equal(once, round_stochastic(value, torch.bfloat16, seed=3))
    assert torch.equal(round_stochastic(-value, torch.bfloat16, seed=3), -once)
    assert round_stochastic(value, torch.float32).dtype == torch.float32


def test_a_bf16_copy_of_an_fp32_model_keeps_its_small_updates(tiny_model_path, tmp_path):
    """bench/quality.py's trained model is stored in fp32; its bf16 engines get this copy, not vLLM's nearest cast."""
    import json
    import shutil

    from codealign.weights import bf16_model_copy

    src = tmp_path / "fp32"
    shutil.copytree(tiny_model_path, src)
    weights = {k: v.bfloat16().float() for k, v in load_file(str(src / "model.safetensors")).items()}
    torch.manual_seed(0)
    updates = {k: torch.randn_like(v) * v.abs() * 1e-3 for k, v in weights.items()}  # a quarter of a bf16 step
    from safetensors.torch import save_file

    save_file({k: weights[k] + updates[k] for k in weights}, str(src / "model.safetensors"))
    out = bf16_model_copy(src, tmp_path / "bf16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    copied = load_file(str(out / "model.safetensors"))
    step = torch.cat([(copied[k].float() - weights[k]).flatten() for k in weights])
    delta = torch.cat([updates[k].flatten() for k in weights])
    assert 0.9 < float((step * delta).sum() / (delta * delta).sum()) < 1.1
