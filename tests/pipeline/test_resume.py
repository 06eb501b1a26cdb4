"""Checkpoint and resume: a training worker killed mid-batch is restarted by Ray Train, picks up the last
`ray.train.Checkpoint` (weights, optimizer, step, data position) and ends where an uninterrupted run ends."""

import threading
import time
from pathlib import Path

import psutil
import pytest

from codealign.config import LoraConfig, TrainConfig
from codealign.records import SftExample
from tests.conftest import train_batches

EXAMPLES = [SftExample(f"Write f{i}(x).", f"```python\ndef f{i}(x):\n    return x * {i} + {i * i}\n```")
            for i in range(16)]


def config(**kw) -> TrainConfig:
    return TrainConfig(algorithm="sft", learning_rate=2e-3, epochs=4, batch_size=2, checkpoint_every=4,
                       lora=LoraConfig(r=8, alpha=16), **kw)


def kill_worker_after_checkpoints(storage: Path, killed: list) -> None:
    """SIGKILL the Ray Train worker process once the controller has registered a resumable checkpoint (it is in
    the run's checkpoint-manager snapshot; a checkpoint written but not yet registered is lost with the worker,
    as in any crash): a real crash, mid-batch."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        snapshots = list(storage.rglob("checkpoint_manager_snapshot.json"))
        if snapshots and "checkpoint_" in snapshots[0].read_text():
            break
        time.sleep(0.02)
    # only this session's workers (descendants of this process, which started the raylet): another test run on
    # the same host keeps its own
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in proc.cmdline()):
                proc.kill()
                killed.append(proc.pid)
        except psutil.NoSuchProcess:
            continue


def test_a_killed_worker_resumes_from_its_checkpoint_and_matches_the_uninterrupted_run(
        ray_cluster, tiny_model_path, tmp_path):
    (report,) = train_batches(config(), tiny_model_path, tmp_path / "plain", [EXAMPLES])
    reference = report["metrics"]
    assert reference["sft/steps"] == 32 and reference["sft/resumed_from_step"] == 0

    storage = tmp_path / "interrupted"
    killed: list[int] = []
    killer = threading.Thread(target=kill_worker_after_checkpoints, args=(storage, killed), daemon=True)
    killer.start()
    (report,) = train_batches(config(max_failures=1), tiny_model_path, storage, [EXAMPLES])
    resumed, merged = report["metrics"], Path(report["weights"])
    killer.join(timeout=5)
    assert killed, "no training worker was found to kill"
    assert 0 < resumed["sft/resumed_from_step"] < 32 and resumed["sft/resumed_from_step"] % 4 == 0
    assert resumed["sft/steps"] == 32
    assert resumed["sft/loss_last"] == pytest.approx(reference["sft/loss_last"], rel=1e-3)
    assert resumed["sft/loss"] == pytest.approx(reference["sft/loss"], rel=1e-3)  # the whole history, restored
    assert merged.is_file()


def test_without_failures_allowed_the_crash_is_reported(ray_cluster, tiny_model_path, tmp_path):
    from codealign.trainers.streaming import TrainingFailed

    storage = tmp_path / "fails"
    killed: list[int] = []
    killer = threading.Thread(target=kill_worker_after_checkpoints, args=(storage, killed), daemon=True)
    killer.start()
    with pytest.raises(TrainingFailed, match="learner stopped"):
        train_batches(config(), tiny_model_path, storage, [EXAMPLES])
    killer.join(timeout=5)
    assert killed
