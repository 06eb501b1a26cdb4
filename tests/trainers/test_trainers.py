"""SFT / continued pre-training with FIM, logit distillation, PPO with a critic, QLoRA: each lowers its loss on a
fixed batch of the tiny model through the learner's real Ray Train run; the pieces they share are checked on numbers."""

import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from codealign.config import DistillConfig, LoraConfig, LossGuardConfig, SftConfig, TrainConfig
from codealign.records import ExecutionResult, Experience, GenerationRequest, SftExample
from codealign.sandbox import Verdict
from codealign.trainers.critic import gae
from codealign.trainers.distill import distill_loss
from codealign.trainers.fim import fim_token_ids, sentinel_ids
from codealign.trainers.steps import LossGuard
from tests.conftest import train_batches
from tests.toy_data import ToyTokenizer

LORA = LoraConfig(r=8, alpha=16)
SOLUTIONS = [
    SftExample("Write add(a, b).", "```python\ndef add(a, b):\n    return a + b\n```", "reference"),
    SftExample("Write neg(x).", "```python\ndef neg(x):\n    return -x\n```", "reference"),
    SftExample("Write is_even(n).", "```python\ndef is_even(n):\n    return n % 2 == 0\n```", "reference"),
    SftExample("Write first(xs).", "```python\ndef first(xs):\n    return xs[0]\n```", "reference"),
]
CODE_FILE = '''import os


def walk(root):
    """Every file under root."""
    for base, _dirs, files in os.walk(root):
        for name in files:
            yield os.path.join(base, name)
'''


def decode(ids):
    names = {v: k for k, v in ToyTokenizer.vocab.items()}
    return "".join(names.get(i, chr(i) if i > 3 else "?") for i in ids)


def test_fim_layouts_keep_every_character_and_follow_the_rate():
    tok, text = ToyTokenizer(), "def f(x):\n    return x + 1\n"
    sentinels = sentinel_ids(tok, ["<pre>", "<suf>", "<mid>"])
    seen = set()
    rng = random.Random(0)
    for _ in range(200):
        ids, kind = fim_token_ids(tok, text, rng, SftConfig(fim_rate=1.0, fim_spm_rate=0.5), sentinels)
        out = decode(ids)
        seen.add(kind)
        if kind == "psm":  # <pre> prefix <suf> suffix <mid> middle
            pre, rest = out[len("<pre>"):].split("<suf>")
            suf, mid = rest.split("<mid>")
        else:  # <pre><suf> suffix <mid> prefix middle: prefix + middle is one run of the text
            assert kind == "spm" and out.startswith("<pre><suf>")
            suf, pre_mid = out[len("<pre><suf>"):].split("<mid>")
            assert pre_mid + suf == text
            continue
        assert pre + mid + suf == text
    assert seen == {"psm", "spm"}
    plain, kind = fim_token_ids(tok, text, rng, SftConfig(fim_rate=0.0), sentinels)
    assert kind == "plain" and decode(plain) == text
    kinds = [fim_token_ids(tok, text, random.Random(i), SftConfig(fim_rate=0.3), sentinels)[1] for i in range(400)]
    assert 0.2 < sum(k != "plain" for k in kinds) / 400 < 0.4


def test_fim_sentinels_must_be_single_known_tokens(real_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_model_path)  # SmolLM2 was not trained with FIM sentinels
    with pytest.raises(ValueError, match="'<fim_prefix>' is not a single token"):
        sentinel_ids(tok, ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"])
    assert len(set(sentinel_ids(tok, ["<jupyter_start>", "<jupyter_text>", "<jupyter_code>"]))) == 3


def test_loss_guard_skips_malformed_and_scales_spikes():
    guard = LossGuard(LossGuardConfig(malformed=20.0, spike=8.0, spike_scale=0.25))
    assert [guard.weight(x) for x in (2.0, 9.0, 25.0, 7.9)] == [1.0, 0.25, 0.0, 1.0]
    assert (guard.skipped, guard.scaled) == (1, 1)
    assert LossGuard(LossGuardConfig()).weight(1e9) == 1.0  # off by default


def test_distillation_divergences_match_their_definitions():
    torch.manual_seed(0)
    s, t = torch.randn(1, 5, 11), torch.randn(1, 5, 11)
    ls, lt = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    forward = (lt.exp() * (lt - ls)).sum(-1).mean()  # KL(teacher || student), per token
    reverse = (ls.exp() * (ls - lt)).sum(-1).mean()
    torch.testing.assert_close(distill_loss(s, t, 0.0, 1.0), forward)
    torch.testing.assert_close(distill_loss(s, t, 1.0, 1.0), reverse)
    m = torch.log(0.5 * ls.exp() + 0.5 * lt.exp())
    jsd = 0.5 * (lt.exp() * (lt - m)).sum(-1).mean() + 0.5 * (ls.exp() * (ls - m)).sum(-1).mean()
    torch.testing.assert_close(distill_loss(s, t, 0.5, 1.0), jsd)
    # a padded teacher vocabulary is cut to the shared part
    padded = torch.cat([t, torch.full((1, 5, 3), -1e4)], dim=-1)
    torch.testing.assert_close(distill_loss(s, padded, 0.0, 1.0), forward)


def test_gae_matches_a_hand_computation():
    rewards, values = torch.tensor([0.0, 0.0, 4.0]), torch.tensor([0.5, 1.0, 2.0])
    adv, ret = gae(rewards, values, gamma=0.9, lam=0.8)
    d2 = 4.0 - 2.0
    d1 = 0.0 + 0.9 * 2.0 - 1.0
    d0 = 0.0 + 0.9 * 1.0 - 0.5
    expected = torch.tensor([d0 + 0.72 * (d1 + 0.72 * d2), d1 + 0.72 * d2, d2])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_sft_on_solutions_and_fim_corpus_lowers_the_loss(ray_cluster, tiny_model_path, tmp_path):
    corpus = tmp_path / "repo"
    (corpus / "pkg").mkdir(parents=True)
    (corpus / "pkg" / "walk.py").write_text(CODE_FILE)
    (corpus / "pkg" / "blob.py").write_bytes(b"\xff\xfe\x00binary")  # not UTF-8: skipped
    from codealign.trainers.sft import load_corpus

    sft = SftConfig(corpus_dir=str(corpus), fim_rate=1.0, fim_tokens=["<jupyter_start>", "<jupyter_text>",
                                                                       "<jupyter_code>"])
    docs = load_corpus(sft)
    assert [d.source for d in docs] == ["corpus:pkg/walk.py"]
    cfg = TrainConfig(algorithm="sft", learning_rate=3e-3, epochs=6, batch_size=2, max_length=64, lora=LORA, sft=sft)
    (report,) = train_batches(cfg, tiny_model_path, tmp_path / "train", [SOLUTIONS + docs * 2])
    metrics, merged = report["metrics"], Path(report["weights"])
    assert metrics["sft/loss_last"] < metrics["sft/loss_first"] - 0.5
    assert metrics["sft/examples"] == 6 and metrics["sft/sequences"] >= 6  # documents cut into 64-token blocks
    assert metrics["sft/fim_chat"] == 4 and metrics.get("sft/fim_psm", 0) + metrics.get("sft/fim_spm", 0) == 2
    assert merged.is_file()


@pytest.mark.parametrize("guard, scaled, skipped", [
    # a random-weight model starts near ln(vocab) ~ 10.8: every micro-batch is a "spike", none "malformed"
    (LossGuardConfig(malformed=50.0, spike=5.0, spike_scale=0.1), 4, 0),
    (LossGuardConfig(malformed=5.0), 0, 4),
])
def test_loss_guard_counts_in_a_real_batch(ray_cluster, tiny_model_path, tmp_path, guard, scaled, skipped):
    cfg = TrainConfig(algorithm="sft", learning_rate=1e-3, batch_size=2, lora=LORA, loss_guard=guard)
    (report,) = train_batches(cfg, tiny_model_path, tmp_path / "train", [SOLUTIONS])
    assert report["metrics"]["sft/guard_scaled"] == scaled and report["metrics"]["sft/guard_skipped"] == skipped


@pytest.mark.parametrize("divergence", ["forward", "reverse", "jsd"])
def test_logit_distillation_pulls_the_student_to_the_teacher(ray_cluster, tiny_model_path, tmp_path, divergence):
    # the teacher: the student's own weights, sharpened (a random model predicts nearly uniformly)
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model_path, teacher)
    weights = load_file(str(teacher / "model.safetensors"))
    weights["model.embed_tokens.weight"] *= 3
    save_file(weights, str(teacher / "model.safetensors"))
    cfg = TrainConfig(algorithm="distill", learning_rate=3e-3, epochs=5, batch_size=2, lora=LoraConfig(enabled=False),
                      distill=DistillConfig(divergence=divergence, temperature=1.0))
    batches = [SOLUTIONS, SOLUTIONS] if divergence == "forward" else [SOLUTIONS]
    report, *later = train_batches(cfg, tiny_model_path, tmp_path / "train", batches, teacher_path=str(teacher))
    metrics, merged = report["metrics"], Path(report["weights"])
    assert metrics["distill/loss_first"] > 0
    assert metrics["distill/loss_last"] < 0.8 * metrics["distill/loss_first"]
    assert merged.is_file()
    if later:  # full fine-tuning resumed from the published fp32 weights and optimizer state trains as the
        # uninterrupted run's second batch did (launch.py run --resume)
        (resumed,) = train_batches(cfg, tiny_model_path, tmp_path / "resumed", [SOLUTIONS],
                                   teacher_path=str(teacher), resume_weights=report["weights"], start_step=1)
        for key in ("distill/loss_first", "distill/loss_last"):
            assert resumed["metrics"][key] == pytest.approx(later[0]["metrics"][key], rel=1e-4), key
        assert later[0]["metrics"]["distill/loss_first"] < metrics["distill/loss_first"]


def test_logit_distillation_refuses_a_teacher_with_another_tokenizer(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    from codealign.trainers.streaming import StreamingLearner

    other = tmp_path / "other"
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(other)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_model_path}/{f}", other / f)
    cfg = TrainConfig(algorithm="distill", lora=LORA)
    with pytest.raises(ValueError, match="another tokenizer than the student"):  # before any worker starts
        StreamingLearner(cfg, None, tiny_model_path, tmp_path / "train", teacher_path=str(other))
    with pytest.raises(ValueError, match="needs a teacher model"):
        StreamingLearner(cfg, None, tiny_model_path, tmp_path / "train")


def test_ppo_with_a_critic_learns_values_and_policy(ray_cluster, tiny_generator, tiny_model_path, tmp_path):
    reqs = [GenerationRequest(p, n=4, temperature=1.0, max_tokens=16, request_id=str(i))
            for i, p in enumerate(["Write add(a, b).", "Write neg(x)."])]
    completions = ray_cluster.get(tiny_generator.generate.remote(reqs))
    data = [Experience(f"ex{i}", r.prompt, c.text, c.text,
                       ExecutionResult(Verdict.PASSED if j % 2 else Verdict.FAILED, 4.0 if j % 2 else -0.3, 0.0),
                       0, c.token_ids, c.logprobs)
            for i, (r, comps) in enumerate(zip(reqs, completions)) for j, c in enumerate(comps)]
    cfg = TrainConfig(algorithm="ppo", critic=True, kl_in_reward=True, learning_rate=3e-3, epochs=6, batch_size=4,
                      lora=LORA)
    first, again = train_batches(cfg, tiny_model_path, tmp_path / "train", [data, data])
    metrics = first["metrics"]
    assert metrics["ppo/rollouts"] == 8 and metrics["ppo/steps"] == 12
    assert metrics["ppo/loss_last"] < metrics["ppo/loss_first"]
    assert metrics["ppo/value_loss"] > 0 and metrics["ppo/verdict_passed"] == 0.5
    assert (Path(first["weights"]).parent / "value_head.pt").is_file()  # what a restarted learner continues
    # the value head carries over to the next batch: its loss starts lower
    assert again["metrics"]["ppo/loss_first"] < metrics["ppo/loss_first"]
    # a resumed driver's learner (launch.py run --resume) goes on from the published version: adapter, value head
    # and optimizer state, so its batch trains as the uninterrupted run's second batch did
    (resumed,) = train_batches(cfg, tiny_model_path, tmp_path / "resumed", [data], resume_weights=first["weights"],
                               start_step=1)
    for key in ("ppo/loss_first", "ppo/loss_last", "ppo/value_loss"):
        assert resumed["metrics"][key] == pytest.approx(again["metrics"][key], rel=1e-4, abs=1e-6), key


def test_qlora_nf4_trains_and_merges_into_the_unquantized_base(ray_cluster, tiny_model_path, tmp_path):
    cfg = TrainConfig(algorithm="sft", quantization="nf4", learning_rate=3e-3, epochs=4, batch_size=2,
                      lora=LoraConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj", "gate_proj"]))
    (report,) = train_batches(cfg, tiny_model_path, tmp_path / "train", [SOLUTIONS])
    metrics, merged = report["metrics"], Path(report["weights"])
    assert metrics["sft/loss_last"] < metrics["sft/loss_first"] - 0.5
    weights, base = load_file(str(merged)), load_file(f"{tiny_model_path}/model.safetensors")
    assert set(weights) == set(base)
    # untouched weights are the checkpoint's own bits (not NF4-rounded); adapted ones moved
    k, q = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(weights[k], base[k]) and not torch.equal(weights[q], base[q])


def test_a_qlora_policy_trains_every_adapter_after_an_eval_mode_reference_pass(tiny_model_path):
    # DPO and PPO score the reference in eval mode without grad first; on an AVX512-BF16 CPU bitsandbytes then
    # repacked the 4-bit weights for a kernel without backward, and q/k/v/gate/up got zero gradient ever after
    from codealign.trainers.modeling import load_policy
    from codealign.trainers.sft import sft_loss

    item = {"input_ids": torch.randint(10, 1000, (1, 32), generator=torch.Generator().manual_seed(0)), "start": 4}
    model = load_policy(tiny_model_path, TrainConfig(quantization="nf4", lora=LORA))
    model.eval()
    with torch.no_grad():
        model(input_ids=item["input_ids"])
    model.train()
    sft_loss(model, item, autocast=True).backward()
    zero = [n for n, p in model.named_parameters() if "lora_B" in n and not p.grad.abs().sum() > 0]
    assert not zero, f"adapters without gradient: {zero}"


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_path):
    from codealign.trainers.modeling import load_policy
    from codealign.trainers.sft import sft_loss

    item = {"input_ids": torch.randint(10, 1000, (1, 48), generator=torch.Generator().manual_seed(0)), "start": 8}
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = load_policy(tiny_model_path, TrainConfig(gradient_checkpointing=checkpointing, bf16=False, lora=LORA))
        model.train()
        sft_loss(model, item, autocast=False).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        assert model.base_model.model.model.gradient_checkpointing == checkpointing
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)
