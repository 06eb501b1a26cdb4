"""PPO trains the policy that sampled: rollouts drawn by real vLLM (SmolLM2) at temperature 0.8 and top-p 0.95
are scored by the trainer under that same distribution; and the objective's options, on numbers."""

from pathlib import Path

import pytest
import torch

from codealign.config import LoraConfig, TrainConfig
from codealign.records import ExecutionResult, Experience, GenerationRequest
from codealign.sandbox import Verdict
from codealign.trainers.losses import clipped_policy_loss
from codealign.trainers.ppo import advantages, rl_rewards, zero_signal_groups
from codealign.trainers.scoring import Sampling, token_log_probs
from tests.conftest import train_batches

PROMPTS = ["Write a Python function that adds two numbers.", "Write a Python function that reverses a list."]
SAMPLING = Sampling(temperature=0.8, top_p=0.95, max_tokens=24)


@pytest.fixture(scope="module")
def smol_rollouts(ray_cluster, real_model_path):
    """Completions of the real model sampled by a real vLLM engine at T=0.8, top-p 0.95 (engine killed after)."""
    from codealign.actors.generator import create_generator
    from codealign.config import GeneratorConfig, ModelConfig

    handle = create_generator(real_model_path, ModelConfig(max_model_len=512), GeneratorConfig(kv_cache_gib=1))
    try:
        reqs = [GenerationRequest(p, n=4, temperature=SAMPLING.temperature, top_p=SAMPLING.top_p,
                                  max_tokens=SAMPLING.max_tokens, request_id=str(i)) for i, p in enumerate(PROMPTS)]
        yield reqs, ray_cluster.get(handle.generate.remote(reqs))
    finally:
        ray_cluster.kill(handle)


def test_engine_and_trainer_log_probs_describe_the_sampling_distribution(smol_rollouts, real_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codealign.chat import prompt_token_ids

    reqs, completions = smol_rollouts
    tok = AutoTokenizer.from_pretrained(real_model_path)
    model = AutoModelForCausalLM.from_pretrained(real_model_path, dtype=torch.float32).eval()
    tempered, raw = [], []
    for req, comps in zip(reqs, completions):
        prompt = prompt_token_ids(tok, req.prompt)
        for c in comps:
            ids = torch.tensor([prompt + c.token_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[:, len(prompt) - 1 : -1]
            labels = ids[:, len(prompt):]
            engine = torch.tensor(c.logprobs)
            tempered.append(token_log_probs(logits, labels, SAMPLING)[0][0] - engine)
            raw.append(torch.log_softmax(logits, -1).gather(2, labels.unsqueeze(-1))[0, :, 0] - engine)
    tempered, raw = torch.cat(tempered), torch.cat(raw)
    print(f"tempered |diff| mean {tempered.abs().mean():.4f} max {tempered.abs().max():.4f} signed "
          f"{tempered.mean():+.4f}; raw |diff| {raw.abs().mean():.4f} signed {raw.mean():+.4f}")
    # the engine reports log-probs of softmax(top_p(logits / T)); the trainer computes the same, up to bf16 noise
    # (fp32 here, bf16 in the engine): no systematic offset
    assert tempered.abs().mean() < 0.03 and abs(tempered.mean()) < 0.01
    # scoring at temperature 1 (the old trainer) is systematically off: the check is not vacuous
    assert raw.abs().mean() > 3 * tempered.abs().mean() and abs(raw.mean()) > 0.03


def test_first_ppo_step_has_importance_ratio_one(smol_rollouts, real_model_path, tmp_path):
    reqs, completions = smol_rollouts
    data = [Experience(f"ex{i}", r.prompt, c.text, c.text,
                       ExecutionResult(Verdict.PASSED if j % 2 else Verdict.FAILED, 4.0 if j % 2 else -0.3, 0.0),
                       0, c.token_ids, c.logprobs)
            for i, (r, comps) in enumerate(zip(reqs, completions)) for j, c in enumerate(comps)]
    cfg = TrainConfig(algorithm="ppo", learning_rate=1e-4, batch_size=4, max_length=256, lora=LoraConfig(r=8, alpha=16))
    (report,) = train_batches(cfg, real_model_path, tmp_path / "train", [data], sampling=SAMPLING)
    metrics = report["metrics"]
    assert metrics["ppo/temperature"] == 0.8 and metrics["ppo/rollouts"] == 8
    assert metrics["ppo/ratio_first"] == pytest.approx(1.0, abs=0.02)
    assert metrics["ppo/engine_logp_gap"] < 0.03


def test_rejected_choice_prefers_failed_assertions_by_default():
    from codealign.pipeline.preferences import build_pairs
    from codealign.records import Exercise

    ex = {"e": Exercise("e", "p", "assert f() == 1\n", reference="def f():\n    return 1\n")}
    verdicts = [(Verdict.TIMEOUT, -2.0), (Verdict.SYNTAX_ERROR, -1.0), (Verdict.FAILED, -0.3),
                (Verdict.RUNTIME_ERROR, -0.6), (Verdict.PASSED, 4.0)]
    group = [Experience("e", "p", f"c{i}", f"c{i}", ExecutionResult(v, r, 0.0), 0) for i, (v, r) in enumerate(verdicts)]

    def rejected(choice, per_exercise=2, **kw):
        return sorted(p.reason for p in build_pairs(ex, group, 10, per_exercise, rejected=choice, **kw))

    assert rejected("hardest") == ["passed>failed", "passed>runtime_error"]
    assert rejected("worst") == ["passed>syntax_error", "passed>timeout"]
    assert len({tuple(rejected("random", 1, seed=s)) for s in range(20)}) > 1
    no_pass = group[:4]
    assert build_pairs(ex, no_pass, 10, verified_references=set()) == []  # an unchecked reference is never chosen
    assert {p.reason for p in build_pairs(ex, no_pass, 10, verified_references={"e"})} == {"reference>failed",
                                                                                          "reference>runtime_error"}


def judged(ex: str, verdict: Verdict, reward: float) -> Experience:
    return Experience(ex, "p", "c", "c", ExecutionResult(verdict, reward, 0.0), 0, [1, 2], [-1.0, -1.0])


def test_reward_scaling_binary_reward_and_zero_signal_groups():
    F, P = Verdict.FAILED, Verdict.PASSED
    failing = [judged("a", F, -0.3), judged("a", Verdict.RUNTIME_ERROR, -0.6), judged("a", F, -0.3),
               judged("a", F, -0.3)]
    mixed = [judged("b", P, 4.0), judged("b", F, -0.3), judged("b", F, -0.3), judged("b", F, -0.3)]
    same = [judged("c", F, -0.3), judged("c", F, -0.3)]
    batch = failing + mixed + same
    scaled = advantages(batch, "group", "group")
    # GRPO's std scaling blows an all-failing group up to a pass-versus-fail group's size
    assert max(map(abs, scaled[:4])) == pytest.approx(max(map(abs, scaled[4:8])), rel=1e-3)
    centred = advantages(batch, "group", "none")
    assert centred[1] == pytest.approx(-0.225) and centred[4] == pytest.approx(4.3 * 0.75)
    binary = rl_rewards(batch, "binary")
    assert binary == [0.0] * 4 + [1.0, 0.0, 0.0, 0.0] + [0.0, 0.0]
    assert rl_rewards(batch, "table") == [e.result.reward for e in batch]
    # with the binary reward the all-failing group carries no signal; with the table only "c" is dropped
    assert zero_signal_groups(batch, binary) == {"a", "c"}
    assert zero_signal_groups(batch, rl_rewards(batch, "table")) == {"c"}
    assert advantages(batch, "group", "none", binary)[:4] == [0.0] * 4


def test_clip_fraction_kl_ratio_and_importance_weights_on_hand_numbers():
    old = torch.zeros(4)
    logps = torch.log(torch.tensor([1.0, 1.3, 0.7, 1.1]))  # ratios against old
    ref = torch.log(torch.tensor([0.5, 1.3, 1.0, 1.0]))
    out = clipped_policy_loss(logps, old, ref, 1.0, clip_eps=0.2, kl_coef=0.0)
    assert out.clip_fraction.item() == pytest.approx(0.25)  # only 1.3 binds for a positive advantage
    neg = clipped_policy_loss(logps, old, ref, -1.0, clip_eps=0.2, kl_coef=0.0)
    assert neg.clip_fraction.item() == pytest.approx(0.25)  # only 0.7 binds for a negative one
    assert clipped_policy_loss(logps, old, ref, 1.0, 0.2, 0.0, clip_eps_high=0.4).clip_fraction.item() == 0.0
    r = ref - logps
    torch.testing.assert_close(out.kl, (r.exp() - r - 1).mean())
    assert out.kl.item() > 0.05 and out.ratio.item() == pytest.approx(1.025)
    # loss with upper bound 1.2: -(1 + 1.2 + 0.7 + 1.1) / 4
    assert out.loss.item() == pytest.approx(-1.0)
    weighted = clipped_policy_loss(logps, old, ref, 1.0, 0.2, 0.0, weights=torch.tensor([2.0, 0.0, 0.0, 0.0]))
    assert weighted.loss.item() == pytest.approx(-0.5)
    assert clipped_policy_loss(logps, old, ref, 1.0, 0.2, 0.0, normaliser=8.0).loss.item() == pytest.approx(-0.5)


@pytest.fixture(scope="module")
def tiny_rollouts(ray_cluster, tiny_generator):
    reqs = [GenerationRequest(p, n=4, temperature=0.8, top_p=0.95, max_tokens=16, request_id=str(i))
            for i, p in enumerate(PROMPTS)]
    completions = ray_cluster.get(tiny_generator.generate.remote(reqs))
    return [Experience(f"ex{i}", r.prompt, c.text, c.text,
                       ExecutionResult(Verdict.PASSED if j % 2 else Verdict.FAILED, 4.0 if j % 2 else -0.3, 0.0),
                       0, c.token_ids, c.logprobs)
            for i, (r, comps) in enumerate(zip(reqs, completions)) for j, c in enumerate(comps)]


def test_recomputed_behaviour_log_probs_with_truncated_is_and_token_mean(ray_cluster, tiny_rollouts,
                                                                        tiny_model_path, tmp_path):
    failing_group = [Experience("all-fail", e.prompt, e.completion, e.code,
                                ExecutionResult(Verdict.FAILED, -0.3, 0.0), 0, e.token_ids, e.logprobs)
                     for e in tiny_rollouts[:4]]
    cfg = TrainConfig(algorithm="ppo", learning_rate=1e-3, batch_size=4, epochs=2, recompute_old_logprobs=True,
                      tis_cap=2.0, loss_agg="token_mean", rl_reward="binary", scale_rewards="none",
                      entropy_coef=0.01, clip_eps_high=0.28, lora=LoraConfig(r=8, alpha=16))
    sampling = Sampling(0.8, 0.95, 16)
    (report,) = train_batches(cfg, tiny_model_path, tmp_path / "train", [tiny_rollouts + failing_group],
                              sampling=sampling)
    metrics = report["metrics"]
    assert metrics["ppo/zero_signal_groups"] == 1 and metrics["ppo/rollouts"] == 8  # the all-failing group dropped
    assert metrics["ppo/rl_reward_mean"] == pytest.approx(4 / 12) and metrics["ppo/reward_mean"] != 4 / 12
    # recomputed: the first step's ratio is exactly 1 (same forward), and the engine gap is still reported
    assert metrics["ppo/ratio_first"] == pytest.approx(1.0, abs=1e-5)
    assert 0 < metrics["ppo/engine_logp_gap"] < 0.05


def test_separate_critic_has_its_own_parameters_and_carries_over(ray_cluster, tiny_rollouts, tiny_model_path,
                                                                 tmp_path):
    cfg = TrainConfig(algorithm="ppo", critic=True, critic_model="separate", value_clip=0.0, learning_rate=3e-3,
                      epochs=4, batch_size=4, lora=LoraConfig(r=8, alpha=16))
    first, second = train_batches(cfg, tiny_model_path, tmp_path / "train", [tiny_rollouts, tiny_rollouts],
                                  sampling=Sampling(0.8, 0.95, 16))
    trunk = torch.load(Path(first["weights"]).parent / "critic_trunk.pt")  # published, for a restart
    assert trunk and all("lora_" in k for k in trunk)  # the critic's own adapter, apart from the policy's
    assert any(float(v.abs().sum()) > 0 for k, v in trunk.items() if "lora_B" in k)  # and it trained
    # the critic continued where it was
    assert second["metrics"]["ppo/value_loss"] < first["metrics"]["ppo/value_loss"]
