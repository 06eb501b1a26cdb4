"""The driver's resumable state, written atomically after every completed iteration.

A run directory holds everything a killed driver needs to go on (`launch.py run --resume runs/<dir>`):
`driver_state.json` (next iteration, policy version, the sampling RNG, the learner's last good round checkpoint,
stage seconds, failures, and the state of pluggable components such as the curriculum) and
`experience/iter_NNNN.pkl` (each iteration's judged samples: what the replay buffer held). Anything written after
the last state file (a half-done iteration, a Ray Train round that never finished, its metrics line) is discarded
on resume, so no experience is lost or trained twice.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "driver_state.json"
EXPERIENCE_DIR = "experience"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any instant leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


@dataclass
class DriverState:
    next_iteration: int = 0  # iterations [0, next_iteration) are complete
    policy_version: int = 0
    pass_at_1_before: float | None = None  # the baseline evaluation, done once
    rng_state: list | None = None  # random.Random.getstate() of the exercise sampler
    learner_checkpoint: str = ""  # the last published version's directory, relative to the run directory
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    # name -> JSON-able state of a pluggable part (the oracle's game saves here: "game")
    components: dict[str, Any] = field(default_factory=dict)
    # the stream: {"trained": learner steps, "released": rounds published, "buffer": the replay
    # buffer's file under stream/} (next_iteration is the next round to train; see StreamCheckpoint)
    stream: dict[str, Any] = field(default_factory=dict)

    def save(self, run_dir: Path) -> None:
        atomic_write(Path(run_dir) / STATE_FILE, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, run_dir: Path) -> DriverState | None:
        path = Path(run_dir) / STATE_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        saved.pop("learner_rounds", None)  # written before 2026-12-05: the stream's "trained" says the same
        return cls(**saved)

    # the exercise sampler's RNG
    def capture_rng(self, rng: random.Random) -> None:
        version, internal, gauss = rng.getstate()
        self.rng_state = [version, list(internal), gauss]

    def restore_rng(self, rng: random.Random) -> None:
        if self.rng_state is not None:
            version, internal, gauss = self.rng_state
            rng.setstate((version, tuple(internal), gauss))

    # the learner's last published version
    def published_dir(self, run_dir: Path) -> Path | None:
        """Where the last published version (adapter, merged weights) lives, or None before the first."""
        return Path(run_dir) / self.learner_checkpoint if self.learner_checkpoint else None

    def published_checkpoint(self, run_dir: Path) -> Path | None:
        """`published_dir`, which a resume needs to exist."""
        ckpt = self.published_dir(run_dir)
        if ckpt is not None and not ckpt.is_dir():
            raise FileNotFoundError(f"resume: the learner checkpoint {ckpt} recorded in {STATE_FILE} is missing")
        return ckpt


def sample_ids(iteration: int, experiences: list) -> list[str]:
    """A stable id per judged sample: the replay buffer's ledger id where it has one (the stream schedule), else
    iteration, exercise and the sample's index among that exercise's."""
    seen: dict[str, int] = {}
    out = []
    for e in experiences:
        k = seen.get(e.exercise_id, 0)
        seen[e.exercise_id] = k + 1
        out.append(getattr(e, "sample_id", "") or f"{iteration}/{e.exercise_id}/{k}")
    return out


def save_experiences(run_dir: Path, iteration: int, version: int, experiences: list) -> None:
    payload = {"iteration": iteration, "policy_version": version, "sample_ids": sample_ids(iteration, experiences),
               "experiences": experiences}
    atomic_write(Path(run_dir) / EXPERIENCE_DIR / f"iter_{iteration:04d}.pkl", pickle.dumps(payload))


def load_experiences(run_dir: Path, below: int) -> list[dict]:
    """Every completed iteration's experience, in order (iterations >= `below` were not completed)."""
    out = []
    for path in sorted((Path(run_dir) / EXPERIENCE_DIR).glob("iter_*.pkl")):
        payload = pickle.loads(path.read_bytes())
        if payload["iteration"] < below:
            out.append(payload)
        else:
            path.unlink()
    return out


def truncate_metrics(run_dir: Path, next_iteration: int) -> None:
    """Drop metrics lines of iterations that did not complete (written before the crash, after the last state)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("iteration", -1) < next_iteration]
    atomic_write(path, "".join(line + "\n" for line in keep).encode())


STREAM_DIR = "stream"


def save_buffer(run_dir: Path, round_: int, snapshot: dict, experiences: dict[str, object]) -> str:
    """The replay buffer at the commit of `round_` (its ledger and the buffered samples' experiences), in a file of
    its own: the state file names it, so a crash between the two writes leaves the previous pair intact. Returns
    the name to record."""
    name = f"buffer_{round_:04d}.pkl"
    payload = {k: v for k, v in snapshot.items() if k != "refs"}
    payload["experiences"] = experiences
    atomic_write(Path(run_dir) / STREAM_DIR / name, pickle.dumps(payload))
    return name


def load_buffer(run_dir: Path, name: str) -> dict:
    path = Path(run_dir) / STREAM_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"resume: the replay buffer {path} recorded in {STATE_FILE} is missing")
    return pickle.loads(path.read_bytes())


def prune_buffers(run_dir: Path, keep: str) -> None:
    """After the state file names `keep`, the older buffer files are not needed."""
    for path in (Path(run_dir) / STREAM_DIR).glob("buffer_*.pkl"):
        if path.name != keep:
            path.unlink(missing_ok=True)
