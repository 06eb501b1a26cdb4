"""The model is settled at start-up: hub names, `.bin` checkpoints, LoRA targets on tied embeddings, and a merge that
never skips an adapter tensor (real files, the tiny model, a real Ray Train round for the `.bin` merge)."""

import json
import shutil

import pytest
import torch

from codealign.config import LoraConfig, TrainConfig
from codealign.model_source import ModelSourceError, check_lora_targets, resolve_model
from codealign.trainers.modeling import checkpoint_weights, load_policy, merged_state_dict
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def bin_model(tiny_model_path, tmp_path_factory):
    """The tiny model stored as a PyTorch .bin checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path_factory.mktemp("bin") / "tiny-bin"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model.config.save_pretrained(target)  # this transformers writes safetensors only; a .bin as older ones did:
    torch.save(model.state_dict(), target / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(target)
    assert not list(target.glob("*.safetensors")) and list(target.glob("*.bin"))
    return str(target)


def test_a_hub_name_that_cannot_be_downloaded_is_refused_naming_the_model():
    # no model hub is reachable from this machine: the download fails, and the message says which model and why
    with pytest.raises(ModelSourceError, match=r"model.path: 'HuggingFaceTB/SmolLM2-135M-Instruct' is not a local"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_local_paths_are_checked_for_config_and_weights(tmp_path, tiny_model_path, bin_model):
    assert resolve_model(tiny_model_path) == tiny_model_path
    assert resolve_model(bin_model) == bin_model
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    empty = tmp_path / "no-weights"
    shutil.copytree(tiny_model_path, empty, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelSourceError, match=r"has no weights \(\*.safetensors or \*.bin\)"):
        resolve_model(str(empty))


def test_bin_checkpoint_weights_equal_the_safetensors_ones(tiny_model_path, bin_model):
    st, pt = checkpoint_weights(tiny_model_path), checkpoint_weights(bin_model)
    assert set(pt) - {"lm_head.weight"} == set(st)
    for name, value in st.items():
        assert torch.equal(pt[name].to(value.dtype), value)


def test_a_bin_checkpoint_goes_through_a_qlora_batch_and_its_merge(ray_cluster, bin_model, tiny_model_path, tmp_path):
    # the quantized base is merged from the checkpoint's own tensors: here read from .bin files
    from safetensors.torch import load_file

    from codealign.records import PreferencePair
    from tests.conftest import train_batches

    pairs = [PreferencePair("Write add(a, b).", "def add(a, b):\n    return a + b\n",
                            "def add(a, b):\n    return a - b\n", "passed>failed", "t/1")] * 2
    cfg = TrainConfig(learning_rate=2e-3, batch_size=2, quantization="nf4", lora=LoraConfig(r=4, alpha=8))
    (report,) = train_batches(cfg, bin_model, tmp_path / "train", [pairs])
    weights = load_file(report["weights"])
    base = load_file(f"{tiny_model_path}/model.safetensors")
    assert set(weights) == set(base)
    assert any(not torch.equal(weights[k], base[k]) for k in base if "q_proj" in k)


def test_a_lora_delta_that_matches_no_base_tensor_is_an_error(tiny_model_path):
    model = load_policy(tiny_model_path, TrainConfig(bf16=False, lora=LoraConfig(r=4, alpha=8)))
    renamed = {f"transformer.{k}": v for k, v in checkpoint_weights(tiny_model_path).items()}
    with pytest.raises(ValueError, match=r"LoRA deltas \['model.layers.0.mlp.down_proj.weight'.*match no tensor"):
        merged_state_dict(model, base_weights=renamed)


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens", "model.embed_tokens", ".*lm_head"])
def test_lora_on_tied_embeddings_is_refused(tiny_model_path, tmp_path, target):
    from codealign.trainers.streaming import StreamingLearner

    targets = ["q_proj", target]
    with pytest.raises(ModelSourceError, match=f"train.lora.target_modules: '{target}'.*tie"):
        check_lora_targets(tiny_model_path, targets)
    with pytest.raises(ModelSourceError, match="tie"):  # the learner refuses it too, before any worker starts
        StreamingLearner(TrainConfig(lora=LoraConfig(target_modules=targets)), None, tiny_model_path, tmp_path)
    untied = tmp_path / "untied"
    untied.mkdir()
    raw = json.loads(open(f"{tiny_model_path}/config.json").read())
    (untied / "config.json").write_text(json.dumps({**raw, "tie_word_embeddings": False}))
    check_lora_targets(untied, targets)  # an untied head may carry an adapter
    check_lora_targets(tiny_model_path, targets, enabled=False)  # LoRA off: nothing to refuse


def test_launch_refuses_tied_lora_targets_before_starting_anything(tiny_model_path, capsys):
    import codealign.pipeline.cli as launch

    config = ROOT / "configs" / "local.yaml"
    code = launch.main(["run", "--config", str(config), "--set", f"model.path={tiny_model_path}",
                        "--set", "train.lora.target_modules=[q_proj, lm_head]"])
    assert code == 2
    assert "train.lora.target_modules: 'lm_head'" in capsys.readouterr().err


def test_the_embedded_model_lives_in_the_per_user_cache_not_the_checkout(tmp_path, monkeypatch, real_model_path):
    from codealign.models import embedded_model_dir

    monkeypatch.delenv("CODEALIGN_MODELS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = tmp_path / "codealign" / "models" / "smollm2-135m-instruct"
    with pytest.raises(FileNotFoundError, match=rf"not prepared at {target}; run `python launch.py prepare-model`"):
        embedded_model_dir("embedded:smollm2-135m-instruct")
    target.parent.mkdir(parents=True)
    target.symlink_to(real_model_path)
    assert embedded_model_dir("embedded:smollm2-135m-instruct") == str(target)
