"""The long-lived learner: ONE Ray Train run for the whole job.

Its workers load the model once, then loop: read the next batch from the mailbox (an ObjectRef: the data stays
in the object store until a worker fetches it), train it with the shared optimizer loop (`steps.run_steps`), and
every `publish_every` batches rank 0 writes versioned weights (merged, plus the LoRA adapter) that the driver
hands to the generators between their requests.

A batch is trained exactly as a round of the round-based learner trains it (a fresh optimizer per batch, the same
seeds, the same reference), so with no staleness the losses are the same as the per-round `TorchTrainer`s'; what
goes away is the per-round start-up (worker group, model load). DPO and critic-free PPO run here; the others go
through `PerRoundLearner`, the round-based learner behind the same interface.
"""

from __future__ import annotations

import copy
import random
import shutil
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ray
import torch

from codealign.config import PipelineConfig, TrainConfig
from trainers.learner import Learner, TrainingFailed
from trainers.modeling import ADAPTER_DIR, MERGED_FILE, bf16_compute, frozen_reference, save_for_generators
from trainers.scoring import Sampling

POLL_S = 0.05


@ray.remote(num_cpus=0)
class Mailbox:
    """Batches in (by step, as ObjectRefs), step reports out. Every rank reads the same batch for a step."""

    def __init__(self):
        self.batches: dict[int, dict] = {}
        self.reports: list[dict] = []
        self.stopped = False

    def put_batch(self, step: int, payload: dict) -> None:
        self.batches[step] = payload

    def get_batch(self, step: int) -> dict | str | None:
        if step in self.batches:
            return self.batches[step]
        return "stop" if self.stopped else None

    def stop(self) -> None:
        self.stopped = True

    def report(self, info: dict) -> None:
        self.batches.pop(info["step"] - 1, None)  # every rank has read it: rank 0 reports after the step
        self.reports.append(info)

    def reports_since(self, n: int) -> list[dict]:
        return self.reports[n:]


def _wait_batch(mailbox, step: int):
    while True:
        payload = ray.get(mailbox.get_batch.remote(step))
        if payload is not None:
            return payload
        time.sleep(POLL_S)


def dpo_batch(model, policy, ref_model, tokenizer, pairs, cfg: TrainConfig, rank: int, world: int, device,
              train_version: int) -> dict:
    """One batch of preference pairs, as `dpo.dpo_train_loop` trains a round."""
    from trainers.dpo import pair_batch, pair_logps, tokenize_pair
    from trainers.losses import dpo_loss
    from trainers.steps import MicroStep, run_steps

    tokenized = [tokenize_pair(tokenizer, p, cfg.max_length) for p in pairs]
    random.Random(cfg.seed).shuffle(tokenized)
    tokenized = tokenized[: len(tokenized) // world * world][rank::world]
    batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in pair_batch(t).items()} for t in tokenized]
    autocast = bf16_compute(cfg)
    with torch.no_grad():
        ref = [pair_logps(ref_model, b, autocast) for b in batches] if ref_model is not None else None
        if ref is None:
            with frozen_reference(policy) if cfg.reference == "frozen" else _null():
                ref = [pair_logps(policy, b, autocast) for b in batches]

    def micro_step(batch, i: int) -> MicroStep:
        logps = pair_logps(model, batch, autocast)
        lengths = batch["mask"].sum(dim=1)
        out = dpo_loss(logps[:1], logps[1:], ref[i][:1], ref[i][1:], cfg.beta, cfg.loss_type,
                       chosen_lengths=lengths[:1], rejected_lengths=lengths[1:])
        chosen, rejected = out.chosen_rewards.item(), out.rejected_rewards.item()
        return MicroStep(out.loss, {"chosen_rewards": chosen, "rejected_rewards": rejected,
                                    "margin": chosen - rejected, "accuracy": float(chosen > rejected)},
                         int(batch["attention_mask"].sum()))

    params = [p for p in model.parameters() if p.requires_grad]
    metrics, _, _ = run_steps(model, params, batches, micro_step, cfg, name="dpo", rank=rank)
    metrics.update({"dpo/pairs": len(batches), "dpo/workers": world})
    return metrics


def ppo_batch(model, policy, ref_model, tokenizer, data, cfg: TrainConfig, rank: int, world: int, device,
              train_version: int, pipe: PipelineConfig, sampling=None) -> dict:
    """One batch of judged samples, as `ppo.ppo_train_loop` trains a round (critic-free); a sample made by an
    older policy than `train_version` is trained with the off-policy correction of `pipe.off_policy`."""
    from trainers.losses import clipped_policy_loss
    from trainers.offpolicy import off_policy_loss
    from trainers.ppo import advantages, forward_tokens, rollout_batch
    from trainers.steps import MicroStep, run_steps

    sampling = sampling or Sampling()
    usable = [bool(e.token_ids) and len(e.logprobs) == len(e.token_ids) for e in data]
    adv = advantages(data, cfg.advantage)
    rollouts = [(e, a) for e, a, ok in zip(data, adv, usable) if a != 0.0 and ok]
    no_signal = len(data) - len(rollouts)  # no group advantage (or no token log-probs): no gradient to give
    rollouts = rollouts[: len(rollouts) // world * world][rank::world]
    batches = []
    for exp, a in rollouts:
        b = rollout_batch(tokenizer, exp, cfg.max_length)
        b["old_logps"] = b["engine_logps"]  # the behaviour policy: the engine that sampled (no recompute here)
        batches.append({**{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}, "adv": a,
                        "staleness": train_version - exp.policy_version})
    autocast = bf16_compute(cfg)
    correct = pipe.off_policy != "none"
    with torch.no_grad():
        if ref_model is not None:
            ref = [forward_tokens(ref_model, b, autocast, False, sampling)[0] for b in batches]
        else:
            with frozen_reference(policy) if cfg.reference == "frozen" else _null():
                ref = [forward_tokens(policy, b, autocast, False, sampling)[0] for b in batches]
        for b in batches:  # the proximal policy: these weights, before this batch's updates
            if correct and b["staleness"] > 0:
                b["prox_logps"] = forward_tokens(policy, b, autocast, False, sampling)[0]

    def micro_step(b, i: int) -> MicroStep:
        new, entropy, _ = forward_tokens(model, b, autocast, False, sampling)
        if "prox_logps" in b:
            out = off_policy_loss(new, b["prox_logps"], b["old_logps"], ref[i], b["adv"], cfg.clip_eps, cfg.kl_coef,
                                  pipe.importance_cap, pipe.off_policy)
        else:  # on-policy: today's objective, unchanged
            out = clipped_policy_loss(new, b["old_logps"], ref[i], b["adv"], cfg.clip_eps, cfg.kl_coef)
        metrics = {"kl": out.kl.item(), "entropy": entropy.mean().item(), "clip_fraction": out.clip_fraction.item()}
        return MicroStep(out.loss, metrics, b["input_ids"].shape[1])

    params = [p for p in model.parameters() if p.requires_grad]
    metrics, _, _ = run_steps(model, params, batches, micro_step, cfg, name="ppo", rank=rank)
    rewards = [e.result.reward for e in data]
    verdicts = Counter(e.result.verdict.value for e in data)
    stale = [b["staleness"] for b in batches]
    metrics.update({
        "ppo/rollouts": len(batches), "ppo/workers": world,
        "ppo/reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "ppo/stale_fraction": sum(1 for s in stale if s > 0) / max(1, len(stale)),
        "ppo/no_signal": no_signal,
        **{f"ppo/verdict_{k}": v / max(1, len(data)) for k, v in verdicts.items()},
    })
    # behaviour importance weights pi_prox / pi_behav over the stale samples' tokens (fixed before the batch trains)
    weights = [torch.exp(b["prox_logps"] - b["old_logps"]) for b in batches if "prox_logps" in b]
    if weights:
        iw = torch.cat(weights)
        metrics.update({"ppo/iw_mean": iw.mean().item(), "ppo/iw_max": iw.max().item(),
                        "ppo/iw_truncated_fraction": (iw > pipe.importance_cap).float().mean().item()})
    return metrics


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

    from trainers.modeling import checkpoint_weights, load_policy

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
    resume = config.get("resume_weights")  # a resumed run: the adapter published with the committed version
    policy = load_policy(config["model_path"], cfg, str(Path(resume).parent / ADAPTER_DIR) if resume else None)
    if cfg.quantization == "none":
        policy = policy.to(device)
    # full fine-tuning against the frozen base needs the base itself (LoRA reaches it by disabling the adapter)
    ref_model = copy.deepcopy(policy).eval() if not cfg.lora.enabled and cfg.reference == "frozen" else None
    model = ray.train.torch.prepare_model(policy)
    base = checkpoint_weights(config["model_path"]) if cfg.quantization != "none" else None
    step, published = int(config.get("start_step", 0)), []
    while True:
        payload = _wait_batch(mailbox, step)
        if payload == "stop":
            break
        data = ray.get(payload["data"][0])
        torch.manual_seed(cfg.seed)  # every batch as a fresh round would see it
        start = time.monotonic()
        if cfg.algorithm == "dpo":
            metrics = dpo_batch(model, policy, ref_model, tokenizer, data, cfg, rank, world, device,
                                payload["version"])
        else:
            metrics = ppo_batch(model, policy, ref_model, tokenizer, data, cfg, rank, world, device,
                                payload["version"], pipe, config["sampling"])
        step += 1
        weights = None
        if rank == 0:
            if payload["publish"]:
                directory = out_root / f"v{step:05d}"
                save_for_generators(getattr(policy, "module", policy), directory, base_weights=base)
                weights = str(directory / MERGED_FILE)
                published.append(directory)
                for old in published[:-2]:  # the driver loads a version as soon as it is reported
                    shutil.rmtree(old, ignore_errors=True)
                published = published[-2:]
            mailbox.report.remote({"step": step, "metrics": metrics, "weights": weights,
                                   "seconds": time.monotonic() - start})


class StreamingLearner:
    """Driver side of the long-lived run: `submit` a batch, `poll` for finished steps, `close` at the end."""

    def __init__(self, cfg: TrainConfig, pipe: PipelineConfig, model_path: str, storage_dir: Path, sampling=None,
                 resume_weights: str | None = None, start_step: int = 0):
        """`resume_weights`/`start_step`: a resumed driver's committed version (its merged file, beside the
        adapter) and the batches trained up to it. Each batch starts a fresh optimizer and reseeds torch (as a
        round does), so the adapter is the whole of the learner's state to carry over."""
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        if cfg.algorithm not in ("dpo", "ppo") or cfg.critic:
            raise ValueError("pipeline.learner: long_lived trains DPO and critic-free PPO; use per_round for "
                             f"{cfg.algorithm}{' with a critic' if cfg.critic else ''}")
        if resume_weights and not cfg.lora.enabled:
            raise ValueError("--resume: the long-lived learner resumes LoRA training only (train.lora.enabled); "
                             "for full fine-tuning use pipeline.learner: per_round")
        # a resumed run is a new Ray Train run (its own name: Ray Train would otherwise restore the killed one)
        name = f"stream_{start_step:05d}" if start_step else "stream"
        self.storage_dir = Path(storage_dir).resolve() / name
        if start_step:  # left by an earlier resume that died before committing past this step: nothing reads it
            shutil.rmtree(self.storage_dir, ignore_errors=True)
        self.mailbox = Mailbox.remote()
        self.seen = 0
        self.last_weights: str | None = resume_weights
        trainer = TorchTrainer(
            train_loop_per_worker=streaming_train_loop,
            train_loop_config={"train": cfg, "pipeline": pipe, "mailbox": self.mailbox, "model_path": model_path,
                               "storage_dir": str(self.storage_dir), "num_threads": int(cfg.num_cpus_per_worker),
                               "sampling": sampling or Sampling(), "resume_weights": resume_weights,
                               "start_step": start_step},
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker={"CPU": cfg.num_cpus_per_worker}),
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            run_config=RunConfig(name=name, storage_path=str(Path(storage_dir).resolve())),
        )
        self._pool = ThreadPoolExecutor(1)
        self._fit: Future = self._pool.submit(trainer.fit)

    def submit(self, step: int, data_ref: ray.ObjectRef, train_version: int, publish: bool) -> None:
        self.mailbox.put_batch.remote(step, {"data": [data_ref], "version": train_version, "publish": publish})

    def poll(self) -> list[dict]:
        """Finished steps since the last call: {step, metrics, weights (path or None), seconds}."""
        if self._fit.done() and self._fit.exception() is not None:
            raise TrainingFailed(f"the long-lived learner stopped: {self._fit.exception()}")
        new = ray.get(self.mailbox.reports_since.remote(self.seen))
        self.seen += len(new)
        for r in new:
            if r["weights"]:
                self.last_weights = r["weights"]
        return new

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

    def __init__(self, learner: Learner):
        self.learner = learner
        self._pool = ThreadPoolExecutor(1)
        self._jobs: list[tuple[int, bool, Future]] = []
        self._lock = threading.Lock()

    def submit(self, step: int, data_ref: ray.ObjectRef, train_version: int, publish: bool) -> None:
        self._jobs.append((step, publish, self._pool.submit(self._train, data_ref)))

    def _train(self, data_ref):
        start = time.monotonic()
        metrics, path = self.learner.train_round(ray.get(data_ref))
        return metrics, path, time.monotonic() - start

    def poll(self) -> list[dict]:
        out = []
        while self._jobs and self._jobs[0][2].done():
            step, publish, fut = self._jobs.pop(0)
            metrics, path, seconds = fut.result()  # TrainingFailed goes up to the driver
            out.append({"step": step + 1, "metrics": metrics, "weights": str(path) if publish else None,
                        "seconds": seconds})
        return out

    @property
    def adapter_dir(self) -> str | None:
        return self.learner.adapter_dir

    def close(self) -> None:
        self._pool.shutdown(wait=True)
