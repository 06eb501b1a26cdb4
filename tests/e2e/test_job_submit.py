"""`ray job submit --working-dir . -- python launch.py run --config configs/local.yaml` against a head started with
`ray start --head`, as the README shows it: the Jobs API uploads the checkout (runs/ and the other git-ignored
folders stay behind), the driver joins the cluster with --address auto and finds the embedded model where
`launch.py prepare-model` put it (the per-user models directory, outside the checkout) and the benchmark data where
`prepare-data` put it; it runs the default recipe scaled down by overrides and writes its run directory."""

import json
import time
from pathlib import Path

import yaml

from tests.private_ray import private_head
from tests.tiny_runs import tiny_run_config

ROOT = Path(__file__).resolve().parents[2]


def test_ray_job_submit_runs_the_default_recipe_on_a_ray_start_head(real_model_path, data_dir, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    raw = tiny_run_config(tmp_path / "runs", "unused", loop={"iterations": 1}, name="job")
    del raw["model"]["path"]  # the recipe's own: embedded:smollm2-135m-instruct
    overrides = [f"{section}.{key}={json.dumps(value)}" for section in ("model", "data", "generator", "executor",
                                                                        "train", "loop", "eval", "pipeline")
                 for key, value in raw[section].items() if not isinstance(value, dict)]
    overrides += [f"output_dir={tmp_path / 'runs'}", "name=job"]
    entrypoint = "python launch.py run --config configs/local.yaml --address auto " + " ".join(
        f"--set '{o}'" for o in overrides)
    with private_head(num_cpus=8) as head:
        client = JobSubmissionClient(head.dashboard)
        job = client.submit_job(entrypoint=entrypoint, runtime_env={
            "working_dir": str(ROOT), "excludes": ["models", "runs", ".venv", ".git"],
            "env_vars": {"RAY_AUTH_MODE": "disabled"}})
        deadline = time.monotonic() + 900
        while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                  JobStatus.STOPPED}:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(2)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
        info = client.get_job_info(job)
    assert "pass@1 before" in logs and "round 0:" in logs and "run directory:" in logs
    assert info.runtime_env["working_dir"].startswith("gcs://")  # the checkout went through the Jobs API
    [run_dir] = list((tmp_path / "runs").glob("job-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations_done"] == 1 and summary["policy_version"] == 1
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["ray_address"] == "auto" and saved["model"]["path"] == "embedded:smollm2-135m-instruct"
    assert (run_dir / "report.md").is_file() and list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
