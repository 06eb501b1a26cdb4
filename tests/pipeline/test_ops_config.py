"""The operations fields of the config are refused with the dotted field named; the CLI's subcommands explain
themselves and resume refuses a directory that is not a run."""

import re
import subprocess
import sys

import pytest

from codealign.config import ConfigError, config_from_dict
from tests.conftest import LOCAL, ROOT, raw_local


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["executor"].update(min_actors=3), "executor.min_actors/max_actors: need 1 <= min_actors (3)"),
    (lambda d: d["executor"].update(max_actors=1), "max_actors (1)"),
    (lambda d: d["executor"].update(chunk_size=0), "executor.chunk_size: must be >= 1"),
    (lambda d: d["executor"].update(resources={"sandbox": "many"}), "executor.resources.sandbox: expected a number"),
    (lambda d: d["executor"].update(resources=["sandbox"]), "executor.resources: expected a mapping"),
    (lambda d: d.update(metrics={"wandb": {"mode": "cloud"}}), "metrics.wandb.mode: unknown 'cloud'"),
    (lambda d: d.update(metrics={"tensorbord": True}), "metrics.tensorbord: unknown field"),
])
def test_operations_fields_are_checked(mutate, message):
    data = raw_local()
    mutate(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(data)


def test_resources_and_pool_bounds_load():
    data = raw_local()
    data["executor"].update(min_actors=1, max_actors=8, resources={"sandbox": 1})
    data["train"]["resources_per_worker"] = {"learner": 1}
    cfg = config_from_dict(data)
    assert cfg.executor.resources == {"sandbox": 1.0} and cfg.train.resources_per_worker == {"learner": 1.0}


def launch(*args):
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_every_subcommand_has_help_and_resume_needs_a_run_directory(tmp_path):
    top = launch("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("run", "check-config", "prepare-model"))
    run_help = launch("run", "--help").stdout
    assert "--resume" in run_help and "--address" in run_help and "dotted path" in run_help
    proc = launch("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    proc = launch("run")
    assert proc.returncode == 2 and "--config: required" in proc.stderr
    assert "check-config" in launch("check-config", "--help").stdout and LOCAL.is_file()
