"""The learner: one Ray Train `TorchTrainer.fit()` per round, and the weights it hands to the generators."""

from __future__ import annotations

from pathlib import Path

import ray

from codealign.config import PipelineConfig, TrainConfig
from codealign.placement import on_driver_node
from codealign.records import Experience, PreferencePair, SftExample
from codealign.trainers.distill import distill_train_loop
from codealign.trainers.dpo import dpo_train_loop
from codealign.trainers.modeling import ADAPTER_DIR, MERGED_FILE
from codealign.trainers.ppo import ppo_train_loop
from codealign.trainers.scoring import Sampling
from codealign.trainers.sft import sft_train_loop

# algorithm -> the train loop each Ray Train worker runs
TRAIN_LOOPS = {"dpo": dpo_train_loop, "ppo": ppo_train_loop, "distill": distill_train_loop, "sft": sft_train_loop}


class TrainingFailed(RuntimeError):
    pass


@ray.remote(num_cpus=0)
class Progress:
    """Steps done / total, written by rank 0 of the train loop, read by the driver for its progress bar."""

    def __init__(self):
        self.done, self.total = 0, 0

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def get(self) -> tuple[int, int]:
        return self.done, self.total


def fit_with_progress(trainer, progress, desc: str):
    """Run `trainer.fit()` in a thread; meanwhile show the train loop's steps as a progress bar."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from tqdm import tqdm

    with ThreadPoolExecutor(1) as pool, tqdm(desc=desc, unit="step", leave=False) as bar:
        future = pool.submit(trainer.fit)
        while not future.done():
            try:
                done, total = ray.get(progress.get.remote(), timeout=5)
            except ray.exceptions.GetTimeoutError:
                continue
            if total and bar.total != total:
                bar.reset(total=total)
            bar.n = done
            bar.refresh()
            wait([future], timeout=0.5)
        return future.result()


def worker_resources(cfg: TrainConfig) -> dict[str, float]:
    """What each Ray Train worker asks for besides its GPU (custom resources steer it to the learner nodes)."""
    return {"CPU": cfg.num_cpus_per_worker, **cfg.resources_per_worker}


class Learner:
    def __init__(self, cfg: TrainConfig, model_path: str, storage_dir: Path, teacher_path: str = "",
                 sampling: Sampling | None = None, served_dtype: str = "bfloat16"):
        if cfg.algorithm not in TRAIN_LOOPS:
            raise ValueError(f"train.algorithm: unknown algorithm {cfg.algorithm!r}; choose from {list(TRAIN_LOOPS)}")
        self.cfg = cfg
        self.model_path = model_path
        self.storage_dir = Path(storage_dir).resolve()
        self.last_checkpoint: Path | None = None
        self.round_dirs: list[Path] = []  # storage of the rounds that succeeded, oldest first (train.num_to_keep)
        self.rounds = 0
        self.teacher_path = teacher_path  # logit distillation's teacher (resolved by the caller)
        # how the generators sample the rollouts: PPO scores tokens under that same distribution
        self.sampling = sampling or Sampling()
        # the merged weights are written in the generators' dtype: fp32 serving keeps updates bf16 would round away
        self.served_dtype = served_dtype if served_dtype in ("float32", "float16") else "bfloat16"
        from codealign.model_source import check_lora_targets

        check_lora_targets(model_path, list(cfg.lora.target_modules), cfg.lora.enabled)
        if cfg.algorithm == "distill" and cfg.distill.mode == "logit" and not teacher_path:
            raise ValueError("train.distill: logit distillation needs a teacher model (train.distill.teacher)")

    @property
    def adapter_dir(self) -> str | None:
        """The adapter to keep training: the last good round's, when it trained one."""
        if self.last_checkpoint is None or not (self.last_checkpoint / ADAPTER_DIR).is_dir():
            return None
        return str(self.last_checkpoint / ADAPTER_DIR)

    def _prune(self) -> None:
        """Keep the newest `num_to_keep` successful rounds' storage (the last one always: the next round and the
        generators read it); failed rounds' directories go too, as they hold no checkpoint anyone reads."""
        import shutil

        keep = self.cfg.num_to_keep
        if not keep:
            return
        kept = set(self.round_dirs[-keep:])
        for directory in sorted(self.storage_dir.glob("round_*")):
            if directory.is_dir() and directory not in kept:
                shutil.rmtree(directory, ignore_errors=True)
        self.round_dirs = self.round_dirs[-keep:]

    def train_loop(self):
        if self.cfg.algorithm == "distill" and self.cfg.distill.mode == "sequence":
            return sft_train_loop  # sequence-level distillation is SFT on the oracle's verified solutions
        return TRAIN_LOOPS[self.cfg.algorithm]

    def train_round(self, data: list[PreferencePair] | list[Experience] | list[SftExample],
                    train_version: int | None = None, pipe: PipelineConfig | None = None) -> tuple[dict, Path]:
        """Train one round (DPO: preference pairs; PPO: judged samples with their token ids and logprobs;
        SFT and distillation: sequences); returns (metrics, path of the merged weights for the generators).
        `train_version` and `pipe`: a batch of the stream schedule, whose PPO samples older than `train_version`
        train with `pipe.off_policy`'s correction."""
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        if not data:
            raise ValueError(f"train_round needs data: {self.cfg.algorithm} got none")
        self.rounds += 1
        data_ref = ray.put(data)
        progress = Progress.options(**on_driver_node()).remote()
        trainer = TorchTrainer(
            train_loop_per_worker=self.train_loop(),
            train_loop_config={
                "data": data_ref,
                "model_path": self.model_path,
                "train": self.cfg,
                "adapter_from": self.adapter_dir,
                "previous_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                "num_threads": int(self.cfg.num_cpus_per_worker),
                "progress": progress,
                "teacher_path": self.teacher_path,
                "sampling": self.sampling,
                "served_dtype": self.served_dtype,
                "train_version": train_version,
                "pipeline": pipe,
            },
            scaling_config=ScalingConfig(
                num_workers=self.cfg.num_workers,
                use_gpu=self.cfg.use_gpu,
                resources_per_worker=worker_resources(self.cfg),
            ),
            torch_config=TorchConfig(backend="nccl" if self.cfg.use_gpu else "gloo"),
            run_config=RunConfig(name=f"round_{self.rounds:03d}", storage_path=str(self.storage_dir),
                                 failure_config=FailureConfig(max_failures=self.cfg.max_failures)),
        )
        try:
            result = fit_with_progress(trainer, progress, f"train round {self.rounds}")
        except Exception as exc:  # the last good checkpoint stays in place; the caller decides
            raise TrainingFailed(f"learner round {self.rounds} failed: {exc}") from exc
        finally:
            ray.kill(progress)
        if result.checkpoint is None:
            raise TrainingFailed(f"learner round {self.rounds} reported no checkpoint")
        ckpt = Path(result.checkpoint.path)
        self.last_checkpoint = ckpt
        self.round_dirs.append(self.storage_dir / f"round_{self.rounds:03d}")
        self._prune()
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        return metrics, ckpt / MERGED_FILE
