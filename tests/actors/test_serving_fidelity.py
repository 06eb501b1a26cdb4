"""The generators serve the model the learner trained: after real rounds (full fine-tuning and LoRA) an engine that
took the weights in place scores a probe set exactly as a fresh engine started on the same weights, and as the
learner's own fp32 forward (real Ray Train rounds, real vLLM engines, tiny model with tied embeddings).

The engines here serve fp32: oneDNN repacks fp32 weights into its own layout on every x86 CPU, which is what made a
reloaded engine keep the first weights' output head (bf16 weights are repacked only on CPUs with bf16 matrix units,
which this machine lacks)."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codealign.actors.generator import create_generator
from codealign.chat import prompt_token_ids
from codealign.config import GeneratorConfig, LoraConfig, ModelConfig, TrainConfig
from codealign.pipeline.serving import load_adapter
from codealign.trainers.modeling import ADAPTER_DIR
from codealign.trainers.probe import trained_logprobs
from codealign.weights import load_for_generators
from tests.conftest import train_batches
from tests.toy_data import PAIRS

FP32 = ModelConfig(dtype="float32", max_model_len=512)
SERVE = GeneratorConfig(num_cpus=1, kv_cache_gib=1, enable_lora=True, max_lora_rank=16)


@pytest.fixture(scope="module")
def probe(tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    seqs, lens = [], []
    for pair in PAIRS[:2]:
        prompt = prompt_token_ids(tok, pair.prompt, chat=True)
        seqs.append(prompt + tok(pair.chosen, add_special_tokens=False)["input_ids"])
        lens.append(len(prompt))
    return seqs, lens


@pytest.fixture(scope="module")
def rounds(ray_cluster, tiny_model_path, tmp_path_factory):
    """One real DPO batch of each kind, published: {kind: (version dir, merged weights path)}."""
    out = {}
    for kind, lora in (("full", LoraConfig(enabled=False)), ("lora", LoraConfig(r=8, alpha=16))):
        cfg = TrainConfig(learning_rate=2e-3, batch_size=4, max_pairs=8, lora=lora)
        (report,) = train_batches(cfg, tiny_model_path, tmp_path_factory.mktemp(kind), [PAIRS], served_dtype="float32")
        merged = Path(report["weights"])
        out[kind] = (merged.parent, merged)
    return out


def gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for sa, sb in zip(a, b) for x, y in zip(sa, sb))


def test_served_policy_equals_a_fresh_engine_and_the_learner(ray_cluster, tiny_model_path, tmp_path, probe, rounds):
    seqs, lens = probe
    engine = create_generator(tiny_model_path, FP32, SERVE)
    fresh = None
    try:
        base = ray_cluster.get(engine.score.remote(seqs, lens))
        assert gap(base, trained_logprobs(tiny_model_path, None, seqs, lens)) < 1e-3

        # LoRA, served unmerged on the engine as started
        lora_dir, lora_merged = rounds["lora"]
        adapter, config = load_adapter(lora_dir / ADAPTER_DIR)  # what the loop sends with generator.enable_lora
        ray_cluster.get(engine.update_lora.remote(adapter, config, 1))
        lora_fresh = ray_cluster.get(engine.score.remote(seqs, lens))
        lora_trained = trained_logprobs(tiny_model_path, lora_dir, seqs, lens)
        assert gap(lora_trained, base) > 0.05  # the round moved the probe: the comparisons below can fail
        assert gap(lora_fresh, lora_trained) < 1e-2

        # full fine-tuning (the tied embeddings move), loaded in place
        full_dir, full_merged = rounds["full"]
        assert "lm_head.weight" not in load_file(str(full_merged))  # tied: the engine must re-derive the head
        ray_cluster.get(engine.update_weights.remote(load_for_generators(full_merged), 2))
        full_reloaded = ray_cluster.get(engine.score.remote(seqs, lens))
        full_trained = trained_logprobs(tiny_model_path, full_dir, seqs, lens)
        assert gap(full_trained, base) > 0.05

        # LoRA merged in the served dtype, loaded in place; then back to the base and the adapter again
        ray_cluster.get(engine.update_weights.remote(load_for_generators(lora_merged), 3))
        assert gap(ray_cluster.get(engine.score.remote(seqs, lens)), lora_trained) < 1e-2
        ray_cluster.get(engine.update_weights.remote(load_for_generators(f"{tiny_model_path}/model.safetensors"), 4))
        ray_cluster.get(engine.update_lora.remote(adapter, config, 5))
        assert gap(ray_cluster.get(engine.score.remote(seqs, lens)), lora_fresh) < 1e-5

        # a fresh engine started on the full round's weights
        shutil.copytree(tiny_model_path, tmp_path / "full", ignore=shutil.ignore_patterns("*.safetensors"))
        shutil.copy(full_merged, tmp_path / "full" / "model.safetensors")
        fresh = create_generator(str(tmp_path / "full"), FP32, GeneratorConfig(num_cpus=1, kv_cache_gib=1))
        full_fresh = ray_cluster.get(fresh.score.remote(seqs, lens))
        assert gap(full_reloaded, full_fresh) < 1e-5
        assert gap(full_reloaded, full_trained) < 1e-2
    finally:
        ray_cluster.kill(engine)
        if fresh is not None:
            ray_cluster.kill(fresh)


def test_scoring_refuses_a_sequence_with_nothing_to_score(ray_cluster, tiny_generator):
    with pytest.raises(Exception, match="leaves no token to score"):
        ray_cluster.get(tiny_generator.score.remote([[1, 2, 3]], [3]))


def test_probe_log_probs_match_a_plain_forward(tiny_model_path, probe):
    from transformers import AutoModelForCausalLM

    seqs, lens = probe
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    ids = torch.tensor([seqs[0]])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0].log_softmax(-1)
    expected = [float(logp[i - 1, seqs[0][i]]) for i in range(lens[0], len(seqs[0]))]
    got = trained_logprobs(tiny_model_path, None, seqs[:1], lens[:1])[0]
    assert got == pytest.approx(expected, abs=1e-5)
