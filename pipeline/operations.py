"""What the loop needs to run for real, kept out of the loop itself: resumable state written after every
iteration (pipeline/state.py), metric sinks (pipeline/metrics.py), failures recorded for the summary, and the
options of a local Ray instance (dashboard on)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray

from codealign.config import RunConfig
from codealign.pipeline.metrics import MetricSinks
from codealign.pipeline.report import RunDir
from codealign.pipeline.serving import send_policy
from codealign.pipeline.state import (
    DriverState,
    load_buffer,
    load_experiences,
    prune_buffers,
    save_buffer,
    save_experiences,
    truncate_metrics,
)
from codealign.pipeline.stream import StreamResume
from codealign.trainers.modeling import MERGED_FILE


def start_ray(cfg: RunConfig | None = None, **local) -> bool:
    """The one place codealign starts Ray (the loop, the oracle's data generation, the evaluation CLI): the
    cluster at `cfg.ray_address`, else a local instance (`local_ray_options(cfg)`, or `local` without a config);
    nothing when this process has Ray up already. Returns whether it started it (the caller then shuts it down)."""
    import os

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if cfg is not None and cfg.ray_address:
        ray.init(address=cfg.ray_address)
    else:
        ray.init(**(local_ray_options(cfg) if cfg is not None else local))
    return True


def local_ray_options(cfg: RunConfig) -> dict:
    """A local Ray instance; the dashboard (http://127.0.0.1:<ray_dashboard_port>, default 8265) shows the
    actors, their logs, CPU/memory per process and the Ray Train run while the loop runs."""
    opts: dict = {"num_cpus": cfg.ray_num_cpus or None, "log_to_driver": False, "include_dashboard": cfg.ray_dashboard}
    if cfg.ray_dashboard:
        port = cfg.ray_dashboard_port
        if not port or not port_is_free(port):  # another local run holds it: Ray would refuse to start
            port = free_port()
            print(f"Ray dashboard: port {cfg.ray_dashboard_port} is taken; serving it at http://127.0.0.1:{port}",
                  flush=True)
        opts.update(dashboard_host="127.0.0.1", dashboard_port=port)
    return opts


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Operations:
    cfg: RunConfig
    run_dir: RunDir
    state: DriverState
    sinks: MetricSinks
    resumed: bool
    # name -> (save() -> JSON-able, load(saved)): parts whose state must survive a driver crash (the curriculum)
    components: dict[str, tuple[Callable[[], object], Callable[[object], None]]] = field(default_factory=dict)

    @classmethod
    def start(cls, cfg: RunConfig, run_dir: RunDir) -> Operations:
        state = DriverState.load(run_dir.path)
        resumed = state is not None
        if state is None:
            state = DriverState()
        else:
            truncate_metrics(run_dir.path, state.next_iteration)
            print(f"resuming {run_dir.path} at iteration {state.next_iteration} (policy v{state.policy_version})",
                  flush=True)
        return cls(cfg, run_dir, state, MetricSinks(cfg, run_dir.path, state.next_iteration), resumed)

    def register(self, name: str, save: Callable[[], object], load: Callable[[object], None]) -> None:
        """A component with state to persist; call before `restore` (e.g. the oracle's curriculum)."""
        self.components[name] = (save, load)

    def restore(self, system, rng) -> int:
        """Bring the fresh actors to the last completed iteration; returns the policy version serving."""
        if not self.resumed:
            return 0
        s = self.state
        s.restore_rng(rng)
        checkpoint = s.published_checkpoint(self.run_dir.path)
        load_experiences(self.run_dir.path, s.next_iteration)  # drops rounds after the commit; the buffer comes
        # back whole, ledger and all, in stream_resume
        if s.policy_version and checkpoint is not None:  # the adapter with enable_lora, as the run served it
            send_policy(system.generator, self.cfg, checkpoint, s.policy_version)
        for name, (_, load) in self.components.items():
            if name in s.components:
                load(s.components[name])
        return s.policy_version

    def baseline_done(self, pass_at_1: float, stages) -> None:
        self.state.pass_at_1_before = pass_at_1
        self.state.stage_seconds = dict(stages.seconds)
        self.state.save(self.run_dir.path)

    def failed(self, failure: dict) -> None:
        self.state.failures.append(failure)

    # -- the stream schedule (pipeline/stream.py) -----------------------------------------------------------------
    def stream_resume(self, system):
        """The stream's checkpoint read back, with the replay buffer refilled (its ledger and buffered samples);
        None for a fresh run or one killed before its first round. Call after `restore` (the generators then serve
        the committed version)."""
        s = self.state
        if not self.resumed or not s.stream:
            return None
        saved = load_buffer(self.run_dir.path, s.stream["buffer"])
        refs = {sid: [ray.put(exp)] for sid, exp in saved.pop("experiences").items()}
        ray.get(system.buffer.restore.remote(saved, refs))
        published = s.published_dir(self.run_dir.path)
        weights = str(published / MERGED_FILE) if published is not None else None
        return StreamResume(s.next_iteration, s.stream["trained"], s.stream["released"], s.policy_version, weights,
                            saved["complete_rounds"], s.stream.get("accounts", {}))

    def stream_round_done(self, cp, system, stages) -> None:
        """The stream's commit point (`run_stream`'s on_commit): the round's trained samples, the buffer, the
        learner's published version and the driver's counters, then the state file that makes them current."""
        s = self.state
        save_experiences(self.run_dir.path, cp.round, cp.version, cp.experiences)
        snap = ray.get(system.buffer.snapshot.remote(cp.next_round))
        experiences = dict(zip(snap["refs"], ray.get([r[0] for r in snap["refs"].values()])))
        name = save_buffer(self.run_dir.path, cp.round, snap, experiences)
        s.next_iteration, s.policy_version = cp.next_round, cp.version
        root = self.run_dir.path.resolve()
        s.learner_checkpoint = str(Path(cp.weights).parent.resolve().relative_to(root)) if cp.weights else ""
        s.stream = {"trained": cp.trained, "released": cp.released, "buffer": name, "accounts": cp.accounts}
        s.stage_seconds = dict(stages.seconds)
        s.components.update({n: save() for n, (save, _) in self.components.items()})
        s.save(self.run_dir.path)
        prune_buffers(self.run_dir.path, name)

    def summary_extra(self) -> dict:
        return {"iterations_done": self.state.next_iteration, "failed_rounds": len(self.state.failures),
                "failures": self.state.failures, "resumed": self.resumed}

    def close(self, before: float, after: float) -> None:
        self.sinks.summary({"pass@1_before": before, "pass@1_after": after,
                            "failed_rounds": len(self.state.failures)})
        self.sinks.close()
