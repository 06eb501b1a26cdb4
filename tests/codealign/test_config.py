import re
import subprocess
import sys

import pytest
import yaml

from codealign.config import ConfigError, config_from_dict, load_config
from tests.conftest import LOCAL, ROOT, raw_local


def train(algorithm, **options):
    """A mutation picking `algorithm` with its own `options` (another algorithm's options are refused)."""
    return lambda d: d["train"].update(algorithm=algorithm, **options)


def test_local_config_loads_with_the_seed_reward_table():
    cfg = load_config(LOCAL)
    assert cfg.train.algorithm == "dpo"
    r = cfg.reward
    assert (r.timeout, r.syntax_error, r.runtime_error, r.failed, r.passed) == (-2.0, -1.0, -0.6, -0.3, 4.0)
    assert cfg.data.eval_ids == (11, 510) and cfg.data.train_ids == (601, 974)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("train"), "train: missing required section"),
        (lambda d: d["train"].update(algorithm="ppo2"), "train.algorithm: unknown algorithm 'ppo2'"),
        (lambda d: d["loop"].update(iteratoins=3), "loop.iteratoins: unknown field"),
        (lambda d: d["loop"].update(iterations="two"), "loop.iterations: expected int"),
        (lambda d: d["data"].update(eval_ids=[1, 2, 3]), "data.eval_ids: expected 2 items"),
        (lambda d: d["loop"].update(samples_per_exercise=1), "loop.samples_per_exercise: dpo needs at least 2"),
        (lambda d: (d["loop"].update(samples_per_exercise=1), d["train"].update(algorithm="ppo")),
         "loop.samples_per_exercise: ppo needs at least 2"),
        (lambda d: (d["loop"].update(samples_per_exercise=0), d["train"].update(algorithm="sft")),
         "loop.samples_per_exercise: must be >= 1"),
        (lambda d: d["train"].update(quantization="nf4", lora={"enabled": False}), "train.quantization: a quantized"),
        (lambda d: d["train"].update(quantization="fp4"), "train.quantization: unknown 'fp4'"),
        (train("distill", distill={"divergence": "kl"}), "train.distill.divergence: unknown 'kl'"),
        (train("distill", distill={"mode": "soft"}), "train.distill.mode: unknown 'soft'"),
        (train("distill", distill={"jsd_beta": 1.5}), "train.distill.jsd_beta: must be in [0, 1]"),
        (train("sft", sft={"fim_rate": 2}), "train.sft.fim_rate: must be in [0, 1]"),
        (train("sft", sft={"fim_tokens": ["<a>"]}), "train.sft.fim_tokens: needs exactly three"),
        (lambda d: d["train"].update(loss_guard={"malformed": 5, "spike": 9}), "train.loss_guard.spike: must be below"),
        (lambda d: d["train"].update(loss_guard={"spikes": 9}), "train.loss_guard.spikes: unknown field"),
        # every enumerated option is checked at load, not after the first round's sampling
        (lambda d: d["train"].update(loss_type="kto"), "train.loss_type: unknown 'kto'"),
        (lambda d: d["train"].update(rejected="easiest"), "train.rejected: unknown 'easiest'"),
        (train("ppo", loss_agg="sum"), "train.loss_agg: unknown 'sum'"),
        (train("ppo", scale_rewards="batch"), "train.scale_rewards: unknown 'batch'"),
        (train("ppo", rl_reward="shaped"), "train.rl_reward: unknown 'shaped'"),
        (lambda d: d["train"].update(lr_schedule="step"), "train.lr_schedule: unknown 'step'"),
        (train("ppo", critic=True, critic_model="shared"), "train.critic_model: unknown 'shared'"),
        (train("ppo", critic_model="separate"), "train.critic_model: 'separate' needs train.critic"),
        (lambda d: d["model"].update(dtype="bf16"), "model.dtype: unknown 'bf16'"),
        (lambda d: d["train"].update(label_smoothing=0.5), "train.label_smoothing: must be in [0, 0.5)"),
        (lambda d: d["train"].update(loss_type="ipo", label_smoothing=0.1), "train.label_smoothing: only the"),
        (lambda d: d["train"].update(rpo_alpha=-1), "train.rpo_alpha: must be >= 0"),
        (train("ppo", clip_eps_high=0.1), "train.clip_eps_high: must be >= train.clip_eps"),
        (train("ppo", tis_cap=0.5), "train.tis_cap: must be >= 1"),
        (train("ppo", tis_cap=2.0), "train.tis_cap: corrects the trainer's recomputed"),
        (train("ppo", kl_in_reward=True), "train.kl_in_reward: needs train.critic"),
        (lambda d: d["train"].update(loss_guard={"window": 0}), "train.loss_guard.window: must be >= 1"),
        (lambda d: d["train"].update(algorithm="ppo") or d["loop"].update(temperature=0.0), "loop.temperature:"),
        (lambda d: d["loop"].update(top_p=0), "loop.top_p: must be in (0, 1]"),
        # cross-field sense, at load rather than after Ray and the engines have started
        (lambda d: d.setdefault("executor", {}).update(num_actors=0), "executor.num_actors: must be >= 1"),
        (lambda d: d.setdefault("generator", {}).update(max_tokens=4096), "generator.max_tokens: 4096 leaves no"),
        (lambda d: d.setdefault("reward", {}).update(failed=5.0), "reward.passed: 4.0 must be the largest reward"),
        # each algorithm's options belong to it: one set for another algorithm would do nothing, so it is refused
        (lambda d: d["train"].update(critic=True), "train.critic: an option of ppo, not of train.algorithm dpo"),
        (train("sft", beta=0.2), "train.beta: an option of dpo, not of train.algorithm sft"),
        (train("ppo", sft={"fim_rate": 0.1}), "train.sft: an option of sft, not of train.algorithm ppo"),
        (train("ppo", reference="fresh"), "train.reference: unknown 'fresh'"),
        (lambda d: d["train"].update(lora={"rank": 8}), "train.lora.rank: unknown field"),
        (lambda d: d.setdefault("reward", {}).update(passing=5.0), "reward.passing: unknown field"),
        (lambda d: d["eval"].update(benchmarks=["mbpp", "apps"]), "eval.benchmarks[1]: unknown benchmark 'apps'"),
        # the round-by-round loop and the per-round learner are gone: their switches are refused by name
        (lambda d: d["pipeline"].update(schedule="rounds"), "pipeline.schedule: removed: the stream scheduler"),
        (lambda d: d["pipeline"].update(learner="per_round"), "pipeline.learner: removed: the long-lived learner"),
    ],
)
def test_config_errors_name_the_field(mutate, message):
    data = raw_local()
    mutate(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(data)


@pytest.mark.parametrize("name", ["distill.yaml", "cpt.yaml", "cluster.yaml"])
def test_every_shipped_config_loads(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.train.algorithm in ("dpo", "ppo", "distill", "sft")


def test_overrides_apply_dotted_keys():
    cfg = load_config(LOCAL, ["loop.iterations=5", "train.lora.r=4", "train.learning_rate=1e-5"])
    assert cfg.loop.iterations == 5 and cfg.train.lora.r == 4
    assert cfg.train.learning_rate == 1e-5 and isinstance(cfg.train.learning_rate, float)
    with pytest.raises(ConfigError, match="train.learning_rate: expected a number"):
        load_config(LOCAL, ["train.learning_rate=fast"])


def run_launch(*args, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_launch_exits_with_a_message_naming_an_unknown_algorithm():
    proc = run_launch("run", "--config", str(LOCAL), "--set", "train.algorithm=magic")
    assert proc.returncode == 2
    assert "train.algorithm" in proc.stderr and "magic" in proc.stderr


def test_launch_names_a_missing_data_file(tmp_path):
    proc = run_launch("run", "--config", str(LOCAL), "--set", f"data.data_dir={tmp_path}")
    assert proc.returncode == 2
    assert str(tmp_path / "mbpp.jsonl") in proc.stderr and "not found" in proc.stderr


def test_launch_names_a_missing_config_field(tmp_path):
    data = raw_local()
    del data["model"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    proc = run_launch("run", "--config", str(bad))
    assert proc.returncode == 2 and "model: missing required section" in proc.stderr


def test_launch_names_a_missing_config_file(tmp_path):
    proc = run_launch("run", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "nope.yaml: not found" in proc.stderr


def test_one_sample_per_exercise_is_enough_where_nothing_is_compared():
    """SFT, distillation and PPO with a critic learn from single samples (rejection-sampling SFT with one sample per
    exercise is a recipe); only DPO's pairs and PPO's group baseline need two or more."""
    for overrides in (["train.algorithm=sft"], ["train.algorithm=distill"],
                      ["train.algorithm=ppo", "train.critic=true"]):
        cfg = load_config(ROOT / "configs" / "local.yaml", ["loop.samples_per_exercise=1", *overrides])
        assert cfg.loop.samples_per_exercise == 1


def test_shared_code_reads_another_algorithms_option_as_its_default():
    """Code every algorithm runs asks `cfg.train.critic` or `cfg.train.distill.mode` whatever the algorithm; such an
    option of another algorithm reads as its default (what this algorithm does without it), also in a Ray worker's
    unpickled copy. A recipe that sets it is refused (test_config_errors_name_the_field)."""
    import cloudpickle

    cfg = cloudpickle.loads(cloudpickle.dumps(load_config(LOCAL, ["train.algorithm=sft"])))
    t = cfg.train
    assert type(t).__name__ == "SftTrain" and "critic" not in type(t).model_fields
    assert (t.critic, t.reference, t.max_pairs, t.distill.mode, t.sft.fim_rate) == (False, "frozen", 16, "logit", 0.5)
    with pytest.raises(AttributeError):
        t.no_such_option  # noqa: B018
