"""Where the per-iteration metrics go besides `metrics.jsonl`: TensorBoard event files in the run directory
(always, unless `metrics.tensorboard: false`) and Weights & Biases when `metrics.wandb.project` is set.

A record is flattened to scalars (`verdicts.passed`, `seconds.train`, `dpo/loss`, per-rank `dpo/loss@rank1`), one
point per iteration. On resume, TensorBoard drops the points a killed driver wrote after its last saved state, and
W&B continues the same run (its id is kept in the run directory)."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

from codealign.config import RunConfig, config_to_dict

TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb_run_id"


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


class MetricSinks:
    def __init__(self, cfg: RunConfig, run_dir: Path, start_step: int = 0):
        self.run_dir = Path(run_dir)
        self.tb = None
        self.wandb = None
        if cfg.metrics.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events at or after it (written before a crash, after the last saved state) are dropped
            self.tb = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=start_step or None)
        w = cfg.metrics.wandb
        if w.project and (os.environ.get("WANDB_MODE") or w.mode) != "disabled":
            import wandb

            id_file = self.run_dir / WANDB_ID_FILE
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
            id_file.write_text(run_id)
            self.wandb = wandb.init(project=w.project, entity=w.entity or None, name=self.run_dir.name, id=run_id,
                                    resume="allow", dir=str(self.run_dir), config=config_to_dict(cfg),
                                    mode=os.environ.get("WANDB_MODE") or w.mode)

    def log(self, record: dict, step: int) -> None:
        scalars = flatten(record)
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, global_step=step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def summary(self, values: dict) -> None:
        scalars = flatten(values)
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(f"summary/{key}", value, global_step=0)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.summary.update(scalars)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            import wandb

            self.wandb.finish()
            # finish() can return before wandb's service has written the run's log (seen: an offline run file holding
            # only its header); teardown waits for the service to exit, so the file on disk is complete.
            wandb.teardown()
