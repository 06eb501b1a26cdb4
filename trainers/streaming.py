"""The learner: ONE Ray Train run for the whole job, for every algorithm.

Its workers load the model once, then loop: read the next batch from the mailbox (an ObjectRef: the data stays
in the object store until a worker fetches it), train it with the algorithm's batch function (`dpo.dpo_batch`,
`ppo.ppo_batch` with or without a critic, `distill.distill_batch`, `sft.sft_batch` for SFT, continued pre-training
and sequence distillation: each supplies its micro-batches, its reference and its micro-step to the shared
optimizer loop, `steps.run_steps`), and every `publish_every` batches rank 0 writes a versioned directory (merged
weights, the LoRA adapter, the optimizer state, a critic's value head) that the driver hands to the generators
between their requests. Written once for all of them: the placement (`train.resources_per_worker`), a restarted
worker group going on from the last published version (`train.max_failures`), mid-batch checkpoints
(`train.checkpoint_every`), AdamW's moments carried from batch to batch and the schedule over the job.
"""

from __future__ import annotations

import copy
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ray
import torch

from codealign.config import PipelineConfig, TrainConfig
from codealign.placement import on_driver_node
from codealign.records import sample_ids_behind
from codealign.trainers.modeling import ADAPTER_DIR, MERGED_FILE, save_for_generators
from codealign.trainers.scoring import Sampling
from codealign.trainers.trainee import FULL_WEIGHTS_FILE, Trainee

POLL_S = 0.05


@ray.remote(num_cpus=0)
class Mailbox:
    """Batches in (by step, as ObjectRefs), step reports out. Every rank reads the same batch for a step.

    A batch stays until every rank has read it (a rank with nothing to train can report before a slower rank has
    even read the batch) and a published version covers it (a worker group restarted after a failure goes on from
    the last published version and trains the batches after it again)."""

    def __init__(self, world: int):
        self.world = world
        self.batches: dict[int, dict] = {}
        self.readers: dict[int, set[int]] = {}
        self.reports: list[dict] = []
        self.published: tuple[int, str] | None = None  # (step, merged weights) of the last publication
        self.stopped = False

    def put_batch(self, step: int, payload: dict) -> None:
        self.batches[step] = payload
        self.readers[step] = set()

    def get_batch(self, step: int, rank: int) -> dict | str | None:
        if step in self.batches:
            self.readers[step].add(rank)
            payload = self.batches[step]
            self._prune()
            return payload
        return "stop" if self.stopped else None

    def stop(self) -> None:
        self.stopped = True

    def report(self, info: dict) -> None:
        if self.reports and info["step"] <= self.reports[-1]["step"] and not info.get("final"):
            return  # a restarted worker group trained again a batch the driver has had
        self.reports.append(info)
        if info["weights"]:
            self.published = (info["step"], info["weights"])
        self._prune()

    def _prune(self) -> None:
        covered = self.published[0] if self.published else 0
        for step in [s for s in self.batches if s < covered and len(self.readers[s]) == self.world]:
            del self.batches[step], self.readers[step]

    def held(self) -> list[int]:
        return sorted(self.batches)

    def last_published(self) -> tuple[int, str] | None:
        return self.published

    def reports_since(self, n: int) -> list[dict]:
        return self.reports[n:]


def _wait_batch(mailbox, step: int, rank: int):
    while True:
        payload = ray.get(mailbox.get_batch.remote(step, rank))
        if payload is not None:
            return payload
        time.sleep(POLL_S)


class TrainingFailed(RuntimeError):
    pass


def worker_resources(cfg: TrainConfig) -> dict[str, float]:
    """What each Ray Train worker asks for besides its GPU (custom resources steer it to the learner nodes)."""
    return {"CPU": cfg.num_cpus_per_worker, **cfg.resources_per_worker}


def batch_function(cfg: TrainConfig):
    """The algorithm's batch: (Trainee, data, train version, optimizer carry, job) -> (metrics, carry)."""
    if cfg.algorithm == "dpo":
        from codealign.trainers.dpo import dpo_batch

        return dpo_batch
    if cfg.algorithm == "ppo":
        from codealign.trainers.ppo import ppo_batch

        return ppo_batch
    if cfg.algorithm == "distill" and cfg.distill.mode == "logit":
        from codealign.trainers.distill import distill_batch

        return distill_batch
    from codealign.trainers.sft import sft_batch  # SFT, continued pre-training, sequence-level distillation

    return sft_batch


def streaming_train_loop(config: dict) -> None:
    """Runs on every Ray Train worker for the whole job."""
    import os

    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer

    from codealign.trainers.modeling import checkpoint_weights, load_policy
    from codealign.trainers.ppo import critic_files, with_critic
    from codealign.trainers.steps import OPTIMIZER_FILE, load_params, trainable_state

    cfg: TrainConfig = config["train"]
    mailbox = config["mailbox"]
    out_root = Path(config["storage_dir"])
    torch.set_num_threads(int(config.get("num_threads") or os.cpu_count() or 1))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)  # the fresh adapter's (and value head's) initialisation
    tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
    device = ray.train.torch.get_device()
    # where to start: a worker group restarted after a failure (train.max_failures) goes on from the last version
    # published in this run; a resumed driver from its committed version; a fresh run from the base
    restart = ray.get(mailbox.last_published.remote())
    step, resume = restart if restart else (int(config.get("start_step", 0)), config.get("resume_weights"))
    saved = Path(resume).parent if resume else None  # the adapter, optimizer and fp32 weights beside the merged
    policy = load_policy(config["model_path"], cfg, str(saved / ADAPTER_DIR) if saved and cfg.lora.enabled else None)
    if cfg.quantization == "none":
        policy = policy.to(device)
    # full fine-tuning against the frozen base needs the base itself (LoRA reaches it by disabling the adapter)
    ref_model = copy.deepcopy(policy).eval() if not cfg.lora.enabled and cfg.reference == "frozen" else None
    if saved and (saved / FULL_WEIGHTS_FILE).is_file():  # full fine-tuning: the published fp32 weights
        load_params(policy, torch.load(saved / FULL_WEIGHTS_FILE, map_location=device), str(saved))
    teacher = None
    if config.get("teacher_path"):
        from codealign.trainers.distill import load_teacher

        teacher = load_teacher(config["teacher_path"], cfg, device)
    model = ray.train.torch.prepare_model(with_critic(policy, cfg, config["model_path"], saved, device))
    trainee = Trainee(model, policy, tokenizer, cfg, rank, world, device, config["pipeline"], config["sampling"],
                      ref_model, teacher)
    train_batch = batch_function(cfg)
    base = checkpoint_weights(config["model_path"]) if cfg.quantization != "none" else None
    carry = None
    if saved and (saved / OPTIMIZER_FILE).is_file():  # AdamW's moments as the published batch left them
        carry = torch.load(saved / OPTIMIZER_FILE, weights_only=False)
    last_published = step

    def publish() -> str:
        nonlocal last_published
        directory = out_root / f"v{step:05d}"
        # in the generators' dtype (fp32 serving keeps what bf16 would round away)
        save_for_generators(policy, directory, dtype=getattr(torch, config.get("served_dtype") or "bfloat16"),
                            base_weights=base)
        files = critic_files(model)
        if not hasattr(policy, "peft_config"):  # full fine-tuning: what a restart and the serving probe load
            files[FULL_WEIGHTS_FILE] = trainable_state(policy)
        if carry is not None:  # a resumed driver continues from this version with the same optimizer
            files[OPTIMIZER_FILE] = carry
        for name, obj in files.items():
            torch.save(obj, directory / name)
        keep = max(2, cfg.num_to_keep) if cfg.num_to_keep else 0  # the driver loads a version once reported
        for old in sorted(out_root.glob("v*"))[:-keep] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
        last_published = step
        return str(directory / MERGED_FILE)

    while True:
        payload = _wait_batch(mailbox, step, rank)
        if payload == "stop":
            # a trained batch never published (publish_every > 1 and no later batch): published now, so the
            # driver's final evaluation and kept adapter are the trained model (StreamingLearner.finish)
            if rank == 0 and step > last_published:
                mailbox.report.remote({"step": step, "metrics": {}, "weights": publish(), "seconds": 0.0,
                                       "received_ids": [], "trained_ids": [], "final": True})
            break
        data = ray.get(payload["data"][0])
        torch.manual_seed(cfg.seed)  # every batch as a fresh start would see it (LoRA dropout's draws)
        start = time.monotonic()
        job = (step, config.get("total_batches") or 0)  # the schedule's span; whose checkpoints resume
        metrics, carry = train_batch(trainee, data, payload["version"], carry, job)
        step += 1
        weights, ids = None, metrics.pop("trained_ids")
        if rank == 0:
            if payload["publish"]:
                weights = publish()
            # the ids in the data this worker got and those the batch trained, read from the data itself: the
            # learner's own count for the sample accounts (pipeline/accounts.py)
            mailbox.report.remote({"step": step, "metrics": metrics, "weights": weights,
                                   "trained_ids": sorted(set(ids)),
                                   "received_ids": sorted(set(sample_ids_behind(data))),
                                   "seconds": time.monotonic() - start})


class StreamingLearner:
    """Driver side of the long-lived run: `submit` a batch, `poll` for finished steps, `close` at the end."""

    def __init__(self, cfg: TrainConfig, pipe: PipelineConfig | None, model_path: str, storage_dir: Path,
                 sampling: Sampling | None = None, served_dtype: str = "bfloat16", resume_weights: str | None = None,
                 start_step: int = 0, total_batches: int = 0, teacher_path: str = ""):
        """`pipe`: the off-policy correction of stale PPO samples (None: nothing is stale). `sampling`: how the
        generators sampled PPO's rollouts. `served_dtype`: the generators' dtype, in which the merged weights are
        written (fp32 serving keeps updates bf16 would round away). `resume_weights`/`start_step`: a resumed
        driver's committed version (its merged file, beside the adapter and the optimizer state carried from batch
        to batch) and the batches trained up to it. `total_batches`: the batches in the job, over which
        `train.lr_schedule` runs (0: over each batch). `teacher_path`: logit distillation's teacher."""
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from codealign.model_source import check_lora_targets

        if cfg.algorithm not in ("dpo", "ppo", "distill", "sft"):
            raise ValueError(f"train.algorithm: unknown algorithm {cfg.algorithm!r}; choose dpo, ppo, distill or sft")
        if cfg.algorithm == "distill" and cfg.distill.mode == "logit" and not teacher_path:
            raise ValueError("train.distill: logit distillation needs a teacher model (train.distill.teacher)")
        check_lora_targets(model_path, list(cfg.lora.target_modules), cfg.lora.enabled)
        served_dtype = served_dtype if served_dtype in ("float32", "float16") else "bfloat16"
        teacher_path = teacher_path if cfg.algorithm == "distill" and cfg.distill.mode == "logit" else ""
        if teacher_path:  # refused here, before any worker loads a model
            from transformers import AutoTokenizer

            from codealign.trainers.distill import check_same_tokenizer

            check_same_tokenizer(AutoTokenizer.from_pretrained(model_path), AutoTokenizer.from_pretrained(teacher_path),
                                 teacher_path)
        # a resumed run is a new Ray Train run (its own name: Ray Train would otherwise restore the killed one)
        name = f"stream_{start_step:05d}" if start_step else "stream"
        self.storage_dir = Path(storage_dir).resolve() / name
        # left by an earlier run that died before committing past this step: nothing reads it (the version this
        # run starts from was published by another run, under another name)
        shutil.rmtree(self.storage_dir, ignore_errors=True)
        self.mailbox = Mailbox.options(**on_driver_node()).remote(cfg.num_workers)
        self.seen = 0
        self.last_weights: str | None = resume_weights
        trainer = TorchTrainer(
            train_loop_per_worker=streaming_train_loop,
            train_loop_config={"train": cfg, "pipeline": pipe, "mailbox": self.mailbox, "model_path": model_path,
                               "storage_dir": str(self.storage_dir), "num_threads": int(cfg.num_cpus_per_worker),
                               "sampling": sampling or Sampling(), "served_dtype": served_dtype,
                               "resume_weights": resume_weights, "start_step": start_step,
                               "total_batches": total_batches, "teacher_path": teacher_path},
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker=worker_resources(cfg)),
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            # a lost worker: Ray Train restarts the group, which goes on from the last published version
            run_config=RunConfig(name=name, storage_path=str(Path(storage_dir).resolve()),
                                 failure_config=FailureConfig(max_failures=cfg.max_failures)),
        )
        self._pool = ThreadPoolExecutor(1)
        self._fit: Future = self._pool.submit(trainer.fit)

    def submit(self, step: int, data_ref: ray.ObjectRef, train_version: int, publish: bool) -> None:
        self.mailbox.put_batch.remote(step, {"data": [data_ref], "version": train_version, "publish": publish})

    def poll(self) -> list[dict]:
        """Finished steps since the last call: {step, metrics, weights (path or None), received_ids and
        trained_ids (the replay buffer ids in the batch's data and of the samples it trained on every rank
        together, both read from the data), seconds}."""
        if self._fit.done() and self._fit.exception() is not None:
            raise TrainingFailed(f"the long-lived learner stopped: {self._fit.exception()}")
        new = ray.get(self.mailbox.reports_since.remote(self.seen))
        self.seen += len(new)
        for r in new:
            if r["weights"]:
                self.last_weights = r["weights"]
        return new

    def wait(self, n: int, timeout: float = 900.0) -> list[dict]:
        """Poll until `n` more steps are reported (tests, benchmarks and the rounds loop's one-batch runs)."""
        reports: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(reports) < n:
            if time.monotonic() > deadline:
                raise TrainingFailed(f"the learner reported {len(reports)} of {n} batches in {timeout:.0f} s")
            reports += [r for r in self.poll() if not r.get("final")]
            time.sleep(POLL_S)
        return reports

    def finish(self) -> dict | None:
        """End the run; a last trained batch that was not published is published by the workers as they stop.
        Returns that publication's report (None if every trained batch was published already)."""
        self.mailbox.stop.remote()
        self._fit.result(timeout=600)
        final = [r for r in self.poll() if r.get("final")]
        return final[-1] if final else None

    @property
    def adapter_dir(self) -> str | None:
        if not self.last_weights:
            return None
        adapter = Path(self.last_weights).parent / ADAPTER_DIR
        return str(adapter) if adapter.is_dir() else None

    def close(self) -> None:
        self.mailbox.stop.remote()
        try:
            self._fit.result(timeout=600)
        finally:
            self._pool.shutdown(wait=False)
            ray.kill(self.mailbox)
