"""The long-lived learner: ONE Ray Train run for the whole job.

Its workers load the model once, then loop: read the next batch from the mailbox (an ObjectRef: the data stays
in the object store until a worker fetches it), train it with the shared optimizer loop (`steps.run_steps`), and
every `publish_every` batches rank 0 writes versioned weights (merged, plus the LoRA adapter) that the driver
hands to the generators between their requests.

A batch is trained exactly as a round of the round-based learner trains it (the same seeds and reference, the
optimizer's moments carried from the previous batch as a round carries them from the previous round with
`train.carry_optimizer`), so with no staleness the losses are the same as the per-round `TorchTrainer`s'; what
goes away is the per-round start-up (worker group, model load). DPO and critic-free PPO run here; the others go
through `PerRoundLearner`, the round-based learner behind the same interface.
"""

from __future__ import annotations

import copy
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ray
import torch

from codealign.config import PipelineConfig, TrainConfig
from codealign.placement import on_driver_node
from codealign.trainers.learner import Learner, TrainingFailed, worker_resources
from codealign.trainers.modeling import (
    ADAPTER_DIR,
    MERGED_FILE,
    bf16_compute,
    frozen_reference,
    replica_spread,
    save_for_generators,
)
from codealign.trainers.scoring import Sampling

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


def trained_ids(items: list) -> list[str]:
    """The replay buffer's ids of the samples behind `items` (a judged sample's `sample_id`; a pair's
    `sample_ids`, chosen and rejected), for the ledger's count of what the learner trained."""
    ids: list[str] = []
    for item in items:
        ids.extend([item.sample_id] if getattr(item, "sample_id", "") else getattr(item, "sample_ids", ()))
    return ids


def dpo_batch(model, policy, ref_model, tokenizer, pairs, cfg: TrainConfig, rank: int, world: int, device,
              train_version: int, carry: dict | None = None, job: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """One batch of preference pairs, as `dpo.dpo_train_loop` trains a round (the same batches and micro-step).
    `carry`: the optimizer state the previous batch left (as a round continues the previous round's); `job`:
    (this batch's index, batches in the job), over which the learning-rate schedule runs; returns (metrics, the
    state to carry on)."""
    from codealign.trainers.dpo import dpo_batches, dpo_micro_step, pair_logps, selected_pairs
    from codealign.trainers.steps import OPTIMIZER_FILE, optimizer_carry, run_steps

    batches = dpo_batches(tokenizer, pairs, cfg, rank, world, device)
    autocast = bf16_compute(cfg)
    policy.eval()  # the reference without LoRA dropout: the previous batch left the model in train mode
    with torch.no_grad():
        ref = [pair_logps(ref_model, b, autocast) for b in batches] if ref_model is not None else None
        if ref is None:
            with frozen_reference(policy) if cfg.reference == "frozen" else _null():
                ref = [pair_logps(policy, b, autocast) for b in batches]
    params = [p for p in model.parameters() if p.requires_grad]
    metrics, pos, optimizer = run_steps(model, params, batches, dpo_micro_step(model, ref, cfg, autocast), cfg,
                                        name="dpo", rank=rank, carry=carry, job=job)
    metrics.update({"dpo/pairs": len(batches), "dpo/workers": world,
                    "dpo/replica_spread": replica_spread(model, world), "trained_ids": trained_ids(
                        [pairs[i] for i in selected_pairs(len(pairs), cfg, world)])})
    return metrics, optimizer_carry(optimizer, pos)[OPTIMIZER_FILE]


def ppo_batch(model, policy, ref_model, tokenizer, data, cfg: TrainConfig, rank: int, world: int, device,
              train_version: int, pipe: PipelineConfig, sampling=None, carry: dict | None = None,
              job: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """One batch of judged samples, as `ppo.ppo_train_loop` trains a round (critic-free: the same rollouts,
    behaviour log-probs and micro-step); a sample made by an older policy than `train_version` is trained with the
    off-policy correction of `pipe.off_policy`, its proximal policy being these weights as the batch starts.
    `carry`, `job` and the second value returned: as in `dpo_batch`."""
    from codealign.trainers.ppo import (
        batch_metrics,
        behaviour_logps,
        forward_tokens,
        loss_normaliser,
        mark_stale,
        policy_micro_step,
        rollout_batches,
        select_rollouts,
        stale_metrics,
        trained_rollouts,
    )
    from codealign.trainers.steps import OPTIMIZER_FILE, optimizer_carry, run_steps

    sampling = sampling or Sampling()
    rollouts, rewards, dropped = select_rollouts(data, cfg, rank, world)
    batches = rollout_batches(tokenizer, rollouts, cfg, device)
    autocast = bf16_compute(cfg)

    def score(m):
        return [forward_tokens(m, b, autocast, False, sampling)[0] for b in batches]

    policy.eval()  # reference and proximal log-probs without LoRA dropout noise (train mode after a batch)
    with torch.no_grad():
        if ref_model is not None:
            ref = score(ref_model)
        else:
            with frozen_reference(policy) if cfg.reference == "frozen" else _null():
                ref = score(policy)
        # the policy as this batch starts: the trainer's behaviour log-probs and the proximal policy
        mine = ref if cfg.reference == "refreshed" else score(policy)
    engine_gap = behaviour_logps(batches, mine, cfg)
    mark_stale(batches, rollouts, mine, train_version, pipe)
    micro_step = policy_micro_step(model, ref, cfg, autocast, sampling, loss_normaliser(cfg, sampling, batches),
                                   off_policy=pipe)
    params = [p for p in model.parameters() if p.requires_grad]
    metrics, pos, optimizer = run_steps(model, params, batches, micro_step, cfg, name="ppo", rank=rank, carry=carry,
                                        job=job)
    metrics.update(batch_metrics(data, rewards, dropped, batches, pos, world, engine_gap, sampling))
    metrics.update(stale_metrics(batches, pipe))
    metrics["ppo/replica_spread"] = replica_spread(model, world)
    metrics["trained_ids"] = trained_ids([e for e, _, _ in trained_rollouts(data, cfg, world)[0]])
    return metrics, optimizer_carry(optimizer, pos)[OPTIMIZER_FILE]


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def streaming_train_loop(config: dict) -> None:
    """Runs on every Ray Train worker for the whole job."""
    import os

    import ray.train
    import ray.train.torch
    from transformers import AutoTokenizer

    from codealign.trainers.modeling import checkpoint_weights, load_policy
    from codealign.trainers.steps import OPTIMIZER_FILE, load_params, trainable_state
    from codealign.trainers.worker import FULL_WEIGHTS_FILE

    cfg: TrainConfig = config["train"]
    pipe: PipelineConfig = config["pipeline"]
    mailbox = config["mailbox"]
    out_root = Path(config["storage_dir"])
    torch.set_num_threads(int(config.get("num_threads") or os.cpu_count() or 1))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)  # as setup_worker: the fresh adapter's initialisation
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
    model = ray.train.torch.prepare_model(policy)
    base = checkpoint_weights(config["model_path"]) if cfg.quantization != "none" else None
    carry = None
    if saved and (saved / OPTIMIZER_FILE).is_file():  # AdamW's moments as the published batch left them
        carry = torch.load(saved / OPTIMIZER_FILE, weights_only=False)
    last_published = step

    def publish() -> str:
        nonlocal last_published
        directory = out_root / f"v{step:05d}"
        unwrapped = getattr(policy, "module", policy)
        # in the generators' dtype, as a round checkpoint (fp32 serving keeps what bf16 would round away)
        save_for_generators(unwrapped, directory, dtype=getattr(torch, config.get("served_dtype") or "bfloat16"),
                            base_weights=base)
        if not hasattr(unwrapped, "peft_config"):  # full fine-tuning: what the serving probe loads
            torch.save(trainable_state(unwrapped), directory / FULL_WEIGHTS_FILE)
        if carry is not None:  # a resumed driver continues from this version with the same optimizer
            torch.save(carry, directory / OPTIMIZER_FILE)
        for old in sorted(out_root.glob("v*"))[:-2]:  # the driver loads a version as soon as it is reported
            shutil.rmtree(old, ignore_errors=True)
        last_published = step
        return str(directory / MERGED_FILE)

    while True:
        payload = _wait_batch(mailbox, step, rank)
        if payload == "stop":
            # a trained batch never published (publish_every > 1 and no later batch): published now, so the
            # driver's final evaluation and kept adapter are the trained model (StreamingLearner.finish)
            if rank == 0 and step > last_published:
                mailbox.report.remote({"step": step, "metrics": {}, "weights": publish(), "seconds": 0.0, "ids": [],
                                       "trained_ids": [], "final": True})
            break
        data = ray.get(payload["data"][0])
        torch.manual_seed(cfg.seed)  # every batch as a fresh round would see it
        start = time.monotonic()
        job = (step, config.get("total_batches") or 0)  # the schedule's span; whose checkpoints resume
        if cfg.algorithm == "dpo":
            metrics, carry = dpo_batch(model, policy, ref_model, tokenizer, data, cfg, rank, world, device,
                                       payload["version"], carry, job)
        else:
            metrics, carry = ppo_batch(model, policy, ref_model, tokenizer, data, cfg, rank, world, device,
                                       payload["version"], pipe, config["sampling"], carry, job)
        step += 1
        weights, ids = None, metrics.pop("trained_ids")
        if rank == 0:
            if payload["publish"]:
                weights = publish()
            # trained_ids: what the batch trained (the learner's own count); ids: the batch as the driver sent it
            mailbox.report.remote({"step": step, "metrics": metrics, "weights": weights, "trained_ids": ids,
                                   "ids": payload.get("ids", []), "seconds": time.monotonic() - start})


class StreamingLearner:
    """Driver side of the long-lived run: `submit` a batch, `poll` for finished steps, `close` at the end."""

    def __init__(self, cfg: TrainConfig, pipe: PipelineConfig, model_path: str, storage_dir: Path, sampling=None,
                 served_dtype: str = "bfloat16", resume_weights: str | None = None, start_step: int = 0,
                 total_batches: int = 0):
        """`resume_weights`/`start_step`: a resumed driver's committed version (its merged file, beside the
        adapter and the optimizer state carried from batch to batch) and the batches trained up to it.
        `total_batches`: the batches in the job, over which `train.lr_schedule` runs (0: over each batch)."""
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        if cfg.algorithm not in ("dpo", "ppo") or cfg.critic:
            raise ValueError("pipeline.learner: long_lived trains DPO and critic-free PPO; use per_round for "
                             f"{cfg.algorithm}{' with a critic' if cfg.critic else ''}")
        # a resumed run is a new Ray Train run (its own name: Ray Train would otherwise restore the killed one)
        name = f"stream_{start_step:05d}" if start_step else "stream"
        self.storage_dir = Path(storage_dir).resolve() / name
        if start_step:  # left by an earlier resume that died before committing past this step: nothing reads it
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
                               "total_batches": total_batches},
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker=worker_resources(cfg)),
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            # a lost worker: Ray Train restarts the group, which goes on from the last published version
            run_config=RunConfig(name=name, storage_path=str(Path(storage_dir).resolve()),
                                 failure_config=FailureConfig(max_failures=cfg.max_failures)),
        )
        self._pool = ThreadPoolExecutor(1)
        self._fit: Future = self._pool.submit(trainer.fit)

    def submit(self, step: int, data_ref: ray.ObjectRef, train_version: int, publish: bool,
               ids: list[str] = ()) -> None:
        """`ids`: the batch's sample ids, reported back once trained (the driver's sample accounts)."""
        self.mailbox.put_batch.remote(step, {"data": [data_ref], "version": train_version, "publish": publish,
                                             "ids": list(ids)})

    def poll(self) -> list[dict]:
        """Finished steps since the last call: {step, metrics, weights (path or None), trained_ids (the replay
        buffer ids of the samples the batch trained, on every rank together), seconds}."""
        if self._fit.done() and self._fit.exception() is not None:
            raise TrainingFailed(f"the long-lived learner stopped: {self._fit.exception()}")
        new = ray.get(self.mailbox.reports_since.remote(self.seen))
        self.seen += len(new)
        for r in new:
            if r["weights"]:
                self.last_weights = r["weights"]
        return new

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


class PerRoundLearner:
    """The round-based learner (a `TorchTrainer` per batch) behind the streaming interface, in a thread so the
    rollout goes on meanwhile: for SFT, distillation and PPO with a critic."""

    def __init__(self, learner: Learner, pipe: PipelineConfig):
        self.learner, self.pipe = learner, pipe
        self._pool = ThreadPoolExecutor(1)
        self._jobs: list[tuple[int, bool, list[str], Future]] = []
        self._lock = threading.Lock()

    def submit(self, step: int, data_ref: ray.ObjectRef, train_version: int, publish: bool,
               ids: list[str] = ()) -> None:
        self._jobs.append((step, publish, list(ids), self._pool.submit(self._train, data_ref, train_version)))

    def _train(self, data_ref, train_version: int):
        start = time.monotonic()
        metrics, path = self.learner.train_round(ray.get(data_ref), train_version, self.pipe)
        return metrics, path, time.monotonic() - start

    def poll(self) -> list[dict]:
        out = []
        while self._jobs and self._jobs[0][3].done():
            step, publish, ids, fut = self._jobs.pop(0)
            metrics, path, seconds = fut.result()  # TrainingFailed goes up to the driver
            out.append({"step": step + 1, "metrics": metrics, "weights": str(path) if publish else None,
                        "seconds": seconds, "ids": ids})
            self._last = (step + 1, str(path), publish)
        return out

    def finish(self) -> dict | None:
        """The last trained round's weights if they were not published (every round writes them)."""
        self._pool.shutdown(wait=True)
        self.poll()
        last = getattr(self, "_last", None)
        if last is None or last[2]:
            return None
        return {"step": last[0], "metrics": {}, "weights": last[1], "seconds": 0.0, "ids": [], "final": True}

    @property
    def adapter_dir(self) -> str | None:
        return self.learner.adapter_dir

    def close(self) -> None:
        self._pool.shutdown(wait=True)
