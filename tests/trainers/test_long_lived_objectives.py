"""The long-lived learner (trainers/streaming.py) trains with the round-based learner's own DPO and PPO micro-step
bodies, so every objective option reaches its loss. In-process on the tiny model (outside a Ray Train worker the
resume point is a fresh one). Each option is checked against the
same batch without it, from the same weights."""

import copy
import statistics

import pytest
import torch

import codealign.trainers.steps as steps
from codealign.config import PipelineConfig, TrainConfig, load_config
from codealign.records import ExecutionResult, Experience, PreferencePair
from codealign.sandbox import Verdict
from codealign.trainers.streaming import dpo_batch, ppo_batch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    from transformers import AutoTokenizer

    from codealign.trainers.modeling import load_policy

    torch.manual_seed(0)
    policy = load_policy(tiny_model_path, TrainConfig())
    with torch.no_grad():  # a LoRA B other than zero: the policy is not its own reference, so the losses move
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return AutoTokenizer.from_pretrained(tiny_model_path), policy


def pairs() -> list[PreferencePair]:
    return [PreferencePair(f"Write f{i}.", f"def f{i}():\n    return {i}\n", "def f(:\n", "passed>failed")
            for i in range(4)]


def run_dpo(tiny, **options):
    tokenizer, base = tiny
    policy = copy.deepcopy(base)
    cfg = TrainConfig(algorithm="dpo", batch_size=2, max_length=96, **options)
    metrics, _ = dpo_batch(policy, policy, None, tokenizer, pairs(), cfg, 0, 1, CPU, 0)
    return metrics


def samples(version: int = 0, engine_logp: float = -2.0) -> list[Experience]:
    verdicts = [(Verdict.PASSED, 4.0), (Verdict.FAILED, -0.3), (Verdict.TIMEOUT, -2.0), (Verdict.FAILED, -0.3)]
    return [Experience("ex", "Write add.", "x", "x", ExecutionResult(v, r, 0.0), version, [5 + i, 7, 9, 11],
                       [engine_logp] * 4, f"s{i}") for i, (v, r) in enumerate(verdicts)]


def run_ppo(tiny, data=None, train_version: int = 0, **options):
    """One optimizer step over all four samples, so the first loss covers every advantage."""
    tokenizer, base = tiny
    policy = copy.deepcopy(base)
    cfg = TrainConfig(algorithm="ppo", batch_size=4, max_length=96, **options)
    metrics, _ = ppo_batch(policy, policy, None, tokenizer, data or samples(), cfg, 0, 1, CPU, train_version,
                           PipelineConfig())
    return metrics


def test_config_accepts_the_objective_options_with_the_long_lived_learner():
    options = ["train.label_smoothing=0.1", "train.rpo_alpha=0.5", "train.loss_agg=token_mean",
               "train.scale_rewards=none", "train.rl_reward=binary", "train.clip_eps_high=0.28",
               "train.entropy_coef=0.01", "train.recompute_old_logprobs=true", "train.tis_cap=2.0",
               "train.warmup_steps=10", "train.lr_schedule=cosine"]
    cfg = load_config("configs/local.yaml", options + ["pipeline.learner=long_lived"])
    assert cfg.train.rpo_alpha == 0.5 and cfg.train.tis_cap == 2.0 and cfg.pipeline.learner == "long_lived"


def test_dpo_options_reach_the_long_lived_loss(tiny):
    base = run_dpo(tiny)
    rpo = run_dpo(tiny, rpo_alpha=0.5)  # + alpha * NLL of the chosen answers, which is positive
    assert rpo["dpo/loss_first"] > base["dpo/loss_first"]
    smoothed = run_dpo(tiny, label_smoothing=0.2)
    assert smoothed["dpo/loss_first"] != pytest.approx(base["dpo/loss_first"], abs=1e-6)


@pytest.mark.parametrize("options, expected", [
    ({"warmup_steps": 4}, [0.25, 0.5, 0.75, 1.0]),  # the warm-up runs over the job's steps, across batches
    ({"lr_schedule": "linear"}, [1.0, 0.75, 0.5, 0.25]),  # the decay runs over the job's two batches, not each
])
def test_learning_rate_schedules_run_across_long_lived_batches(tiny, monkeypatch, options, expected):
    tokenizer, base = tiny
    policy = copy.deepcopy(base)
    cfg = TrainConfig(algorithm="dpo", batch_size=2, max_length=96, learning_rate=1e-3, **options)
    rates = []
    real = steps.learning_rate

    def recording(*args):
        rates.append(real(*args))
        return rates[-1]

    monkeypatch.setattr(steps, "learning_rate", recording)
    carry = None
    for version in range(2):  # two batches of two optimizer steps
        metrics, carry = dpo_batch(policy, policy, None, tokenizer, pairs(), cfg, 0, 1, CPU, version, carry,
                                   job=(version, 2))
    assert rates[::2] == pytest.approx([1e-3 * x for x in expected])  # set once per parameter group (two)
    assert metrics["dpo/global_step"] == 4 and metrics["dpo/optimizer_carried"] == 1


def test_ppo_options_reach_the_long_lived_loss(tiny):
    base = run_ppo(tiny)
    entropy = run_ppo(tiny, entropy_coef=0.5)  # minus coef * entropy, and the entropy is positive
    assert entropy["ppo/loss_first"] < base["ppo/loss_first"]
    summed = run_ppo(tiny, loss_agg="seq_mean_token_sum_norm")  # the token sum over max_length, not the mean
    assert summed["ppo/loss_first"] == pytest.approx(base["ppo/loss_first"] * 4 / 96, rel=1e-4)
    unscaled = run_ppo(tiny, scale_rewards="none")  # mean-centred, not divided by the group's deviation
    assert unscaled["ppo/loss_first"] != pytest.approx(base["ppo/loss_first"], abs=1e-6)
    binary = run_ppo(tiny, rl_reward="binary")  # 1 for the pass, 0 for the rest
    assert binary["ppo/rl_reward_mean"] == 0.25 and base["ppo/rl_reward_mean"] == pytest.approx(0.35)
    # the trainer's own log-probs as behaviour: the ratio is exactly 1 (against the engine's it is not), so the
    # surrogate is minus the mean advantage, 0 for a group-normalised one
    mixed = samples()
    for e in mixed[1:]:  # the engine gave the failing samples' tokens far less mass than the trainer does
        e.logprobs = [-30.0] * 4
    recomputed = run_ppo(tiny, data=mixed, recompute_old_logprobs=True, kl_coef=0.0)
    assert recomputed["ppo/ratio_first"] == pytest.approx(1.0, abs=1e-5)
    assert recomputed["ppo/loss_first"] == pytest.approx(0.0, abs=1e-5)
    assert base["ppo/ratio_first"] != pytest.approx(1.0, abs=1e-3)
    # truncated IS towards the engine, w = pi_trainer / pi_engine capped at 2: ~0 on the passing sample (the engine
    # gave it more mass), 2 on the failing ones, so the loss is -2 * (sum of their advantages) / 4 = 2 * A_pass / 4
    tis = run_ppo(tiny, data=mixed, recompute_old_logprobs=True, tis_cap=2.0, kl_coef=0.0)
    a_pass = (4.0 - 0.35) / statistics.pstdev([4.0, -0.3, -2.0, -0.3])
    assert tis["ppo/loss_first"] == pytest.approx(2 * a_pass / 4, rel=1e-3)
    # DAPO's clip-higher: engine log-probs below the trainer's put the ratio above 1 + eps; a higher bound lets the
    # positive-advantage tokens count more, so the surrogate (a loss) goes down
    low = samples(engine_logp=-14.0)
    symmetric = run_ppo(tiny, data=low)
    higher = run_ppo(tiny, data=low, clip_eps_high=5.0)
    assert higher["ppo/loss_first"] < symmetric["ppo/loss_first"]


def test_stale_ppo_samples_keep_the_objective_options(tiny):
    """The off-policy correction (decoupled objective) takes the loss normaliser and clip-higher too."""
    stale = samples(version=0)
    base = run_ppo(tiny, data=stale, train_version=1)
    assert base["ppo/stale_fraction"] == 1.0 and "ppo/iw_mean" in base
    summed = run_ppo(tiny, data=stale, train_version=1, loss_agg="seq_mean_token_sum_norm")
    assert summed["ppo/loss_first"] == pytest.approx(base["ppo/loss_first"] * 4 / 96, rel=1e-4)


def test_importance_cap_below_one_is_refused_at_load():
    """A cap below 1 truncates every weight, which zeroes every positive-advantage gradient."""
    from codealign.config import ConfigError

    with pytest.raises(ConfigError, match="pipeline.importance_cap"):
        load_config("configs/local.yaml", ["pipeline.importance_cap=0.5"])
    assert load_config("configs/local.yaml", ["pipeline.importance_cap=1.0"]).pipeline.importance_cap == 1.0


def test_proximal_log_probs_after_a_batch_have_no_dropout_noise(tiny_model_path):
    """After a batch the model is in train mode; the next batch's proximal (and reference) log-probs must still be
    computed without LoRA dropout: the behaviour importance weights of the same batch from the same weights agree
    whatever the RNG state."""
    from transformers import AutoTokenizer

    from codealign.trainers.modeling import load_policy

    cfg = TrainConfig(algorithm="ppo", batch_size=4, max_length=96, learning_rate=0.0)
    cfg.lora.dropout = 0.5
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    torch.manual_seed(0)
    policy = load_policy(tiny_model_path, cfg)
    with torch.no_grad():  # a LoRA B other than zero, so the adapter (and its dropout) matters
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    policy.train()  # as the previous batch leaves it
    weights = []
    for seed in (1, 2):
        model = copy.deepcopy(policy)
        torch.manual_seed(seed)
        metrics, _ = ppo_batch(model, model, None, tokenizer, samples(version=0), cfg, 0, 1, CPU, 1,
                               PipelineConfig())
        weights.append(metrics["ppo/iw_mean"])
    assert weights[0] == pytest.approx(weights[1], rel=1e-6)


def test_relative_loss_guard_window_runs_across_long_lived_batches(tiny):
    """The relative guard learns its scale from the first `window` losses of the job, not of every batch: with a
    threshold below the usual loss, the second batch's micro-batches are judged (and skipped) at once."""
    tokenizer, base = tiny
    policy = copy.deepcopy(base)
    cfg = TrainConfig(algorithm="dpo", batch_size=1, max_length=96)
    cfg.loss_guard.relative, cfg.loss_guard.window, cfg.loss_guard.malformed = True, 4, 0.01
    first, carry = dpo_batch(policy, policy, None, tokenizer, pairs(), cfg, 0, 1, CPU, 0, None, job=(0, 2))
    assert first["dpo/guard_skipped"] == 0  # the window fills: every loss accepted
    second, _ = dpo_batch(policy, policy, None, tokenizer, pairs(), cfg, 0, 1, CPU, 1, carry, job=(1, 2))
    assert second["dpo/guard_skipped"] == 4
