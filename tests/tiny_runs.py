"""Configs for whole runs of the loop on the tiny random model: seconds per stage, not minutes."""

from __future__ import annotations

import yaml

from tests.conftest import LOCAL


def tiny_run_config(output_dir, model_path: str, **sections) -> dict:
    """configs/local.yaml shrunk: 2 eval exercises, 2 iterations of 2 exercises x 2 samples, 16 new tokens, one
    executor, no dashboard, MBPP only. `sections` update the raw mapping (section
    name -> dict of fields)."""
    raw = yaml.safe_load(LOCAL.read_text())
    raw.update(name="tiny", output_dir=str(output_dir), ray_dashboard=False)
    raw["model"].update(path=str(model_path), max_model_len=512)
    raw["data"]["eval_size"] = 2
    raw["generator"].update(num_cpus=1, max_tokens=16)
    raw["executor"].update(num_actors=1)
    raw["train"].update(max_pairs=4, max_length=256, batch_size=4, num_cpus_per_worker=1)
    raw["loop"].update(iterations=2, exercises_per_iteration=2, samples_per_exercise=2)
    raw["generator"]["fidelity_probes"] = 0
    raw["eval"].update(benchmarks=["mbpp"], validation_size=2)
    for name, fields in sections.items():
        if isinstance(fields, dict):
            raw.setdefault(name, {}).update(fields)
        else:
            raw[name] = fields
    return raw
