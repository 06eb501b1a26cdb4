"""The long-lived learner's Ray Train run (trainers/streaming.py) on the tiny model with real `TorchTrainer`s:
data parallelism (gloo on CPU), placement on custom resources, a lost worker, and mid-batch checkpoints."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import ray

from codealign.config import LoraConfig, PipelineConfig, TrainConfig
from codealign.records import PreferencePair


def pair(i: int, chosen: str | None = None) -> PreferencePair:
    return PreferencePair(f"Write f{i}.", chosen or f"def f{i}():\n    return {i}\n", "def f(:\n", "passed>failed",
                          f"t/{i}", (f"s{i}-chosen", f"s{i}-rejected"))


def start(cfg: TrainConfig, tiny_model_path, tmp_path, **kw):
    from codealign.trainers.streaming import StreamingLearner

    return StreamingLearner(cfg, PipelineConfig(), tiny_model_path, tmp_path / "train", **kw)


def drain(learner, n: int, timeout: float = 400) -> list[dict]:
    reports, deadline = [], time.monotonic() + timeout
    while len(reports) < n:
        assert time.monotonic() < deadline, f"{len(reports)} of {n} batches reported"
        reports += learner.poll()
        time.sleep(0.2)
    return reports


def dpo_cfg(**options) -> TrainConfig:
    return TrainConfig(algorithm="dpo", batch_size=1, max_length=64, lora=LoraConfig(r=4, alpha=8), **options)


def test_mailbox_keeps_a_batch_until_every_rank_has_read_it(ray_cluster):
    """Rank 0 may train an empty share and report before rank 1 has read the batch: rank 1 still gets it."""
    from codealign.trainers.streaming import Mailbox

    box = Mailbox.remote(2)
    box.put_batch.remote(0, {"data": ["x"], "version": 0, "publish": True})
    assert ray.get(box.get_batch.remote(0, 0))["data"] == ["x"]
    ray.get(box.report.remote({"step": 1, "metrics": {}, "weights": "v1/merged.safetensors"}))
    assert ray.get(box.get_batch.remote(0, 1))["data"] == ["x"]
    assert ray.get(box.held.remote()) == []  # read by both and published: gone
    ray.kill(box)


def test_two_workers_get_through_batches_with_fewer_pairs_than_workers(ray_cluster, tiny_model_path, tmp_path):
    """One pair for two workers trains nothing on either rank; neither rank waits for ever, and the trained ids
    say what each batch trained."""
    learner = start(dpo_cfg(num_workers=2, num_cpus_per_worker=1), tiny_model_path, tmp_path)
    try:
        for step in range(3):
            learner.submit(step, ray.put([pair(step)]), step, True)
        learner.submit(3, ray.put([pair(3), pair(4)]), 3, True)
        reports = drain(learner, 4)
    finally:
        learner.close()
    assert [r["step"] for r in reports] == [1, 2, 3, 4]
    assert [r["trained_ids"] for r in reports[:3]] == [[], [], []]
    assert sorted(reports[3]["trained_ids"]) == ["s3-chosen", "s3-rejected", "s4-chosen", "s4-rejected"]
    assert reports[3]["metrics"]["dpo/replica_spread"] == 0.0


def first_losses(tiny_model_path, pairs: list[PreferencePair], cfg: TrainConfig) -> list[float]:
    """Each pair's first loss, in-process (one worker, the same seed and weights as a fresh learner's)."""
    import copy

    import torch
    from transformers import AutoTokenizer

    from codealign.trainers.dpo import dpo_batch
    from codealign.trainers.modeling import load_policy
    from codealign.trainers.trainee import Trainee

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    torch.manual_seed(cfg.seed)
    base = load_policy(tiny_model_path, cfg)
    out = []
    for p in pairs:
        policy = copy.deepcopy(base)
        out.append(dpo_batch(Trainee.local(policy, tokenizer, cfg), [p], 0)[0]["dpo/loss_first"])
    return out


def test_guard_skipping_one_ranks_chunk_still_steps_every_replica(ray_cluster, tiny_model_path, tmp_path):
    """The guard skips the one rank's whole chunk (its loss is above `malformed`) and not the other's: DDP averaged
    the other rank's gradient onto both, so both step and the replicas stay identical."""
    pairs = [pair(0), pair(1, "zzzz qqqq xxxx vvvv jjjj kkkk wwww\n" * 3)]
    cfg = dpo_cfg(num_workers=2, num_cpus_per_worker=1, rpo_alpha=1.0, learning_rate=1e-2)
    losses = first_losses(tiny_model_path, pairs, dpo_cfg(rpo_alpha=1.0))
    assert abs(losses[0] - losses[1]) > 0.05, losses
    cfg.loss_guard.malformed = sum(losses) / 2
    learner = start(cfg, tiny_model_path, tmp_path)
    try:
        learner.submit(0, ray.put(pairs), 0, True)
        (report,) = drain(learner, 1)
    finally:
        learner.close()
    metrics = report["metrics"]
    assert metrics["dpo/global_step"] == 1 and metrics["dpo/skipped_steps"] == 0
    assert metrics["dpo/replica_spread"] == 0.0


def test_checkpoint_every_does_not_resume_a_later_batch_from_an_earlier_ones_step(ray_cluster, tiny_model_path,
                                                                                  tmp_path):
    """Ray Train hands back the run's latest checkpoint: one written mid-way through batch 1 is not batch 2's.
    Batch 2 is trained unpublished (publish_every > 1): the workers publish it as the run finishes."""
    cfg = dpo_cfg(checkpoint_every=1, num_cpus_per_worker=1)
    learner = start(cfg, tiny_model_path, tmp_path)
    try:
        for step in range(2):
            learner.submit(step, ray.put([pair(i) for i in range(3)]), step, step == 0)
        reports = drain(learner, 2)
        final = learner.finish()
    finally:
        learner.close()
    second = reports[1]["metrics"]
    assert second["dpo/resumed_from_step"] == 0 and second["dpo/steps"] == 3 and second["dpo/global_step"] == 6
    assert reports[1]["weights"] is None and final["step"] == 2
    assert final["weights"].endswith("v00002/merged.safetensors") and Path(final["weights"]).is_file()


def test_workers_are_placed_on_their_resources_and_a_lost_worker_is_restarted(ray_cluster, tiny_model_path,
                                                                            tmp_path):
    """train.resources_per_worker reaches the placement (the custom resource is taken while the run lives);
    with train.max_failures a killed worker's group restarts from the last published version and goes on."""
    import psutil

    cfg = dpo_cfg(num_cpus_per_worker=1, max_failures=1, resources_per_worker={"learner_node": 1})
    learner = start(cfg, tiny_model_path, tmp_path)
    try:
        learner.submit(0, ray.put([pair(0), pair(1)]), 0, True)
        (first,) = drain(learner, 1)
        assert ray.available_resources().get("learner_node") == 3
        # the train worker: an actor process of this test's own Ray (started under this process)
        (worker,) = [p for p in psutil.Process().children(recursive=True)
                     if "RayTrainWorker" in " ".join(p.cmdline())]
        os.kill(worker.pid, signal.SIGKILL)
        learner.submit(1, ray.put([pair(2), pair(3)]), 1, True)
        (second,) = drain(learner, 1)
    finally:
        learner.close()
    assert first["step"] == 1 and second["step"] == 2
    # the restarted worker continued from version 1: its adapter and AdamW's moments and step count
    assert second["metrics"]["dpo/optimizer_carried"] == 1 and second["metrics"]["dpo/global_step"] == 4
    assert second["weights"].endswith("v00002/merged.safetensors")
