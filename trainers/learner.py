"""The rounds loop's learner (`pipeline.schedule: rounds` in pipeline/loop.py and pipeline/adversarial.py), kept
only until those drivers are gone: each round is one batch of the one learner (trainers/streaming.py), started
from the previous round's published version (its adapter, fp32 weights, optimizer state and critic) and stopped
after it. Nothing else uses it; delete it with them."""

from __future__ import annotations

from pathlib import Path

import ray

from codealign.config import PipelineConfig, TrainConfig
from codealign.trainers.modeling import ADAPTER_DIR, MERGED_FILE
from codealign.trainers.scoring import Sampling
from codealign.trainers.streaming import StreamingLearner, TrainingFailed

__all__ = ["Learner", "TrainingFailed"]


class Learner:
    def __init__(self, cfg: TrainConfig, model_path: str, storage_dir: Path, teacher_path: str = "",
                 sampling: Sampling | None = None, served_dtype: str = "bfloat16"):
        self.cfg, self.model_path, self.teacher_path = cfg, model_path, teacher_path
        self.storage_dir = Path(storage_dir).resolve()
        self.sampling, self.served_dtype = sampling or Sampling(), served_dtype
        self.last_checkpoint: Path | None = None  # the last good round's published version
        self.rounds = 0

    @property
    def adapter_dir(self) -> str | None:
        if self.last_checkpoint is None or not (self.last_checkpoint / ADAPTER_DIR).is_dir():
            return None
        return str(self.last_checkpoint / ADAPTER_DIR)

    def train_round(self, data: list, train_version: int | None = None,
                    pipe: PipelineConfig | None = None) -> tuple[dict, Path]:
        if not data:
            raise ValueError(f"train_round needs data: {self.cfg.algorithm} got none")
        previous = str(self.last_checkpoint / MERGED_FILE) if self.last_checkpoint else None
        learner = StreamingLearner(self.cfg, pipe, self.model_path, self.storage_dir, self.sampling,
                                   self.served_dtype, previous, self.rounds, teacher_path=self.teacher_path)
        try:
            learner.submit(self.rounds, ray.put(data), train_version, True)
            (report,) = learner.wait(1)
        except Exception as exc:  # the last good version stays in place; the caller decides
            raise TrainingFailed(f"learner round {self.rounds + 1} failed: {exc}") from exc
        finally:
            try:
                learner.close()
            except Exception:  # its failure is the one raised above
                pass
        self.rounds += 1
        self.last_checkpoint = Path(report["weights"]).parent
        return report["metrics"], Path(report["weights"])
