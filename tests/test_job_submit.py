"""`ray job submit --working-dir . -- python launch.py run ...` against a head started with `ray start --head`: the
Jobs API uploads the checkout (models/ and runs/ are git-ignored and not uploaded, so the job is given the model by
absolute path), the driver joins the cluster with --address auto, runs a tiny loop and writes its run directory."""

import json
import time
from pathlib import Path

import yaml

from tests.private_ray import private_head
from tests.tiny_runs import tiny_run_config

ROOT = Path(__file__).resolve().parent.parent


def test_ray_job_submit_runs_the_loop_on_a_ray_start_head(tiny_model_path, data_dir, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    raw = tiny_run_config(tmp_path / "runs", tiny_model_path, loop={"iterations": 1}, name="job")
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
            "env_vars": {"CODEALIGN_DATA": str(data_dir), "RAY_AUTH_MODE": "disabled"}})
        deadline = time.monotonic() + 900
        while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                  JobStatus.STOPPED}:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(2)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
        info = client.get_job_info(job)
    assert "pass@1 before" in logs and "iteration 0:" in logs and "run directory:" in logs
    assert info.runtime_env["working_dir"].startswith("gcs://")  # the checkout went through the Jobs API
    [run_dir] = list((tmp_path / "runs").glob("job-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations_done"] == 1 and summary["policy_version"] == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["ray_address"] == "auto"
    assert (run_dir / "report.md").is_file() and list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
