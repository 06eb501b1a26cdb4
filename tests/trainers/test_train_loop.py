"""The shared optimizer loop: schedule, weight-decay groups, the loss guard on NaN and relative thresholds, steps
skipped when nothing contributed, the optimizer carried between batches; FIM per block; chat-rendered answers."""

import math
from pathlib import Path

import pytest
import torch

from codealign.config import LoraConfig, LossGuardConfig, SftConfig, TrainConfig
from codealign.records import PreferencePair, SftExample
from codealign.trainers.steps import OPTIMIZER_FILE, LossGuard, learning_rate, param_groups
from tests.conftest import train_batches
from tests.toy_data import ToyTokenizer

LORA = LoraConfig(r=8, alpha=16)
SOLUTIONS = [
    SftExample("Write add(a, b).", "```python\ndef add(a, b):\n    return a + b\n```", "reference"),
    SftExample("Write neg(x).", "```python\ndef neg(x):\n    return -x\n```", "reference"),
]


def test_warm_up_then_the_schedule():
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=4, lr_schedule="cosine")
    assert [learning_rate(cfg, g, g, 10) for g in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(cfg, 4, 0, 10) == 1.0 and learning_rate(cfg, 9, 5, 10) == pytest.approx(0.5)
    cfg.lr_schedule = "linear"
    assert learning_rate(cfg, 20, 5, 10) == pytest.approx(0.5)  # warm-up counts the run's steps, not the round's
    cfg.lr_schedule = "constant"
    assert learning_rate(cfg, 20, 9, 10) == 1.0


def test_no_weight_decay_on_biases_and_norms(tiny_model_path):
    from codealign.trainers.critic import PolicyWithValue
    from codealign.trainers.modeling import load_policy

    model = PolicyWithValue(load_policy(tiny_model_path, TrainConfig(bf16=False, lora=LoraConfig(enabled=False))))
    params = [p for p in model.parameters() if p.requires_grad]
    decay, none = param_groups(model, params, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and none["weight_decay"] == 0.0
    assert {names[id(p)] for p in none["params"]} >= {"value_head.bias", "policy.model.norm.weight"}
    assert all("norm" not in names[id(p)] and p.ndim == 2 for p in decay["params"])
    assert len(decay["params"]) + len(none["params"]) == len(params)


def test_guard_treats_non_finite_as_malformed_and_can_be_relative():
    guard = LossGuard(LossGuardConfig(malformed=20.0))
    assert guard.weight(math.nan) == 0.0 and guard.weight(math.inf) == 0.0 and guard.skipped == 2
    assert math.isnan(LossGuard(LossGuardConfig()).weight(math.nan))  # no guard: run_steps stops the round
    rel = LossGuard(LossGuardConfig(malformed=3.0, spike=1.5, spike_scale=0.5, relative=True, window=3))
    assert [rel.weight(x) for x in (100.0, 100.0, 100.0)] == [1.0, 1.0, 1.0]  # learning the scale
    assert [rel.weight(x) for x in (120.0, 200.0, 500.0)] == [1.0, 0.5, 0.0]  # 1.2x, 1.8x, then 3.6x the mean


def test_a_step_nothing_contributed_to_leaves_the_weights(ray_cluster, tiny_model_path, tmp_path):
    # a random-weight model starts near ln(vocab) ~ 10.8: every micro-batch is "malformed" at 5
    cfg = TrainConfig(algorithm="sft", learning_rate=1e-2, batch_size=2, lora=LoraConfig(enabled=False),
                      loss_guard=LossGuardConfig(malformed=5.0))
    (report,) = train_batches(cfg, tiny_model_path, tmp_path / "train", [SOLUTIONS])
    metrics = report["metrics"]
    assert metrics["sft/guard_skipped"] == 2 and metrics["sft/skipped_steps"] == 1
    from safetensors.torch import load_file

    base = load_file(f"{tiny_model_path}/model.safetensors")
    trained = torch.load(Path(report["weights"]).parent / "policy_fp32.pt")
    # AdamW's decay would have shrunk every matrix had optimizer.step() run
    assert all(torch.equal(trained[k], base[k].float()) for k in trained if k in base)


def test_optimizer_state_carries_to_the_next_batch(ray_cluster, tiny_model_path, tmp_path):
    cfg = TrainConfig(algorithm="sft", learning_rate=1e-3, batch_size=2, warmup_steps=3, lora=LORA)
    r1, r2 = train_batches(cfg, tiny_model_path, tmp_path / "train", [SOLUTIONS, SOLUTIONS])
    m1, m2 = r1["metrics"], r2["metrics"]
    # what each published version holds, for a restarted or resumed learner
    first = torch.load(Path(r1["weights"]).parent / OPTIMIZER_FILE, weights_only=False)
    second = torch.load(Path(r2["weights"]).parent / OPTIMIZER_FILE, weights_only=False)
    assert (m1["sft/optimizer_carried"], m2["sft/optimizer_carried"]) == (0, 1)
    assert (first["global_step"], second["global_step"]) == (1, 2)
    # AdamW's step count continues: 1 after batch 1, 2 after batch 2 (a fresh optimizer would be at 1 again)
    steps = [s["step"].item() for s in second["optimizer"]["state"].values()]
    assert steps and all(s == 2 for s in steps)


def test_fim_is_applied_per_block():
    from codealign.trainers.sft import tokenize_examples

    doc = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(12))  # ~330 characters
    sft = SftConfig(fim_rate=1.0, fim_spm_rate=0.0, fim_tokens=["<pre>", "<suf>", "<mid>"])
    items, kinds = tokenize_examples(ToyTokenizer(), [SftExample("", doc, "corpus:a.py")], 64, sft, seed=0)
    assert len(items) >= 5 and kinds["psm"] == len(items)
    text = ""
    for item in items:
        ids = item["input_ids"][0].tolist()
        assert len(ids) <= 64 and [ids.count(s) for s in (1, 2, 3)] == [1, 1, 1]  # each block its own FIM
        assert ids[0] == 1
        decoded = "".join(chr(i) if i > 3 else f"<{i}>" for i in ids)
        prefix, rest = decoded[3:].split("<2>")
        suffix, middle = rest.split("<3>")
        text += prefix + middle + suffix
    assert text == doc


def test_answers_are_the_chat_templates_assistant_turn(real_model_path):
    from transformers import AutoTokenizer

    from codealign.trainers.dpo import tokenize_pair
    from codealign.trainers.sft import tokenize_examples

    tok = AutoTokenizer.from_pretrained(real_model_path)
    pair = PreferencePair("Write add(a, b).", "def add(a, b):\n    return a + b", "def add(a, b):\n    return 0", "")
    rendered = tok.apply_chat_template([{"role": "user", "content": pair.prompt},
                                        {"role": "assistant", "content": pair.chosen}], tokenize=False)
    t = tokenize_pair(tok, pair, 512)
    assert tok.decode(t.prompt_ids + t.chosen_ids) == rendered  # the whole exchange, as TRL renders it
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in t.chosen_ids[-2:] and end_of_turn in t.rejected_ids[-2:]
    items, _ = tokenize_examples(tok, [SftExample(pair.prompt, pair.chosen, "reference")], 512, SftConfig(), 0)
    ids, start = items[0]["input_ids"][0].tolist(), items[0]["start"]
    assert ids[:start] == t.prompt_ids and ids[start:] == t.chosen_ids  # the prompt masked, the turn learned


def test_sft_reports_as_trained_only_the_samples_some_rank_trains(real_model_path):
    """The learner's own count for the sample accounts: an example that makes no item (nothing to learn after
    its prompt) and items cut to a multiple of the ranks are received, not trained."""
    from transformers import AutoTokenizer

    from codealign.config import TrainConfig
    from codealign.trainers.sft import prepare_items

    tok = AutoTokenizer.from_pretrained(real_model_path)
    examples = [SftExample(f"Write f{i}.", f"def f{i}():\n    return {i}\n", "passed_sample", f"r0-{i}")
                for i in range(3)] + [SftExample("Write g.", "", "passed_sample", "r0-empty"),
                                      SftExample("", "x = 1\n" * 4, "corpus:a.py")]  # a document: no sample
    cfg = TrainConfig(algorithm="sft", max_length=64, sft={"fim_rate": 0.0})
    shares = [prepare_items(examples, cfg, tok, rank, 2, "cpu") for rank in (0, 1)]
    trained = shares[0][2]
    assert trained == shares[1][2]  # every rank reports the same, for all ranks together
    # 4 items (3 chat turns, 1 document block) for 2 ranks: all kept; the empty answer made none
    assert trained == ["r0-0", "r0-1", "r0-2"]
    assert sorted(it["sample_id"] for items, _, _ in shares for it in items if it["sample_id"]) == trained
    (items, _, cut), _ = [prepare_items(examples[:3], cfg, tok, rank, 2, "cpu") for rank in (0, 1)]
    assert len(cut) == 2 and set(cut) < {"r0-0", "r0-1", "r0-2"}  # 3 items for 2 ranks: one is not trained


def test_bf16_supported_asks_the_cpu():
    from pathlib import Path

    from codealign.trainers.modeling import bf16_compute, bf16_supported

    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert bf16_supported() == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert bf16_compute(TrainConfig(bf16=True)) == bf16_supported() and not bf16_compute(TrainConfig(bf16=False))
