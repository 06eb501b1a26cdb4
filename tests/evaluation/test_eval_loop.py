"""Evaluation inside the loop: config, test benchmarks before/after, validation every N iterations, the paired
comparison and the PNG plots of report.md."""

import json

import pytest
import yaml

from codealign.config import ConfigError, config_from_dict
from codealign.evaluation.compare import compare_dirs
from codealign.pipeline.evaluate import LoopEvaluator
from codealign.pipeline.plots import draw_all
from codealign.sandbox import Sandbox
from tests.conftest import LOCAL

PNG = b"\x89PNG\r\n\x1a\n"


def local_raw() -> dict:
    return yaml.safe_load(LOCAL.read_text())


@pytest.mark.parametrize("override, message", [
    ({"prompt": "plain"}, "eval.prompt: unknown 'plain'"),
    ({"benchmarks": ["mbpp", "apps"]}, "eval.benchmarks[1]: unknown benchmark 'apps'"),
    ({"validation": "mbpp-train"}, "eval.validation: unknown benchmark"),
    ({"every": -1}, "eval.every: must be >= 0"),
    ({"benchmarks": []}, "eval.benchmarks: needs at least one"),
    ({"limt": 3}, "eval.limt: unknown field"),
])
def test_eval_config_errors_name_the_field(override, message):
    raw = local_raw()
    raw["eval"].update(override)
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert message in str(err.value)


def test_default_eval_config_is_mbpp_and_humaneval_with_mbpp_validation():
    cfg = config_from_dict(local_raw())
    assert cfg.eval.benchmarks == ["mbpp", "humaneval"] and cfg.eval.validation == "mbpp-val"
    raw = local_raw()
    del raw["eval"]
    assert config_from_dict(raw).eval.every == 0  # a config without the section: no validation during training


def synthetic_metrics(algo: str) -> list[dict]:
    out = []
    for it in range(3):
        m = {"iteration": it, "samples": 8, "reward_mean": -0.5 + it, "reward_std": 1.0,
             "verdicts": {"passed": it, "failed": 8 - it}, "seconds": {"generate": 3.0, "train": 2.0 + it}}
        if algo == "dpo":
            m.update({"dpo/chosen_rewards": 0.1 * it, "dpo/rejected_rewards": -0.1 * it, "dpo/margin": 0.2 * it,
                      "dpo/accuracy": 0.5 + 0.1 * it, "dpo/loss": 0.69 - 0.05 * it})
        else:
            m.update({"ppo/kl": 0.01 * it, "ppo/clip_fraction": 0.02, "ppo/entropy": 1.5})
        out.append(m)
    return out


def test_plots_are_drawn_for_what_the_run_has(tmp_path):
    made = dict(draw_all(tmp_path, synthetic_metrics("dpo"), []))
    assert set(made) == {"Reward and verdict mix per iteration", "DPO: chosen/rejected rewards, margin, accuracy, loss",
                         "Stage timings"}
    for path in made.values():
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 2000
    made = dict(draw_all(tmp_path, synthetic_metrics("ppo"), [{"iteration": -1, "pass@1": 0.1, "ci95": [0, 0.2]}]))
    assert "PPO: KL, clip fraction, entropy" in made and "Validation pass@1 over iterations" in made


def test_loop_evaluator_before_validation_after_and_report(tmp_path, tiny_generator, ray_cluster):
    exercises = tmp_path / "small.jsonl"
    exercises.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "add", "prompt": "Write add(a, b) returning a + b.", "tests": "assert add(1, 2) == 3\n"},
        {"id": "neg", "prompt": "Write neg(x) returning -x.", "tests": "assert neg(3) == -3\n"},
    ]))
    raw = local_raw()
    raw["eval"] = {"benchmarks": [str(exercises)], "validation": str(exercises), "every": 2, "limit": 0}
    raw["generator"]["max_tokens"] = 16
    cfg = config_from_dict(raw)

    def generate(requests, desc):
        return ray_cluster.get(tiny_generator.generate.remote(requests))

    with Sandbox() as sb:
        ev = LoopEvaluator.create(cfg, tmp_path, generate, sb.run_many)
        before = ev.test_benchmarks("before")
        assert ev.validate(-1)["validation"]["iteration"] == -1
        assert ev.validate(0) == {}  # every 2 iterations: after iterations 1, 3, ...
        assert ev.validate(1)["validation"]["tasks"] == 2
        after = ev.test_benchmarks("after")
    assert 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    assert (tmp_path / "eval" / "before" / "small" / "tasks.jsonl").is_file()
    assert (tmp_path / "eval" / "val_1" / "small" / "summary.json").is_file()
    samples = [json.loads(x) for x in (tmp_path / "eval_after.jsonl").read_text().splitlines()]
    assert [s["exercise_id"] for s in samples] == ["add", "neg"] and "policy_version" in samples[0]
    summary = ev.summary()
    assert summary["benchmarks"]["small"]["paired"]["tasks"] == 2
    assert [p["iteration"] for p in summary["validation"]] == [-1, 1]
    report = ev.report_section(synthetic_metrics("dpo"))
    assert "exact McNemar p =" in report
    assert "![Validation pass@1 over iterations](plots/validation_pass1.png)" in report
    assert (tmp_path / "plots" / "dpo.png").read_bytes().startswith(PNG)
    # a run directory compares like an eval directory: its after-evaluation of the named benchmark
    assert compare_dirs(tmp_path, tmp_path, "small").p_value == 1.0
