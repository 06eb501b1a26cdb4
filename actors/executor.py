"""A pool of Ray actors, each wrapping a `sandbox.Sandbox`, that judge programs against tests."""

from __future__ import annotations

import ray

from codealign.config import ExecutorConfig
from codealign.records import ExecutionResult
from sandbox import RewardTable, Sandbox


class Executor:
    def __init__(self, cfg: ExecutorConfig, rewards: RewardTable, parallelism: int = 1):
        self.sandbox = Sandbox(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, parallelism=parallelism,
                               rewards=rewards, in_process=cfg.in_process)

    def protections(self) -> dict[str, bool]:
        return self.sandbox.protections

    def run_batch(self, jobs: list[tuple[str, str]]) -> list[ExecutionResult]:
        return self.sandbox.run_many(jobs)


class ExecutorPool:
    """Spreads (solution, tests) jobs over `num_actors` executor actors and returns results in order."""

    def __init__(self, cfg: ExecutorConfig, rewards: RewardTable):
        if cfg.num_actors < 1:
            raise ValueError(f"executor.num_actors must be >= 1, got {cfg.num_actors}")
        remote_cls = ray.remote(Executor).options(num_cpus=0.5, max_restarts=-1, max_task_retries=2)
        self.actors = [remote_cls.remote(cfg, rewards) for _ in range(cfg.num_actors)]

    def protections(self) -> dict[str, bool]:
        return ray.get(self.actors[0].protections.remote())

    def run(self, jobs: list[tuple[str, str]]) -> list[ExecutionResult]:
        if not jobs:
            return []
        n = len(self.actors)
        shards = [jobs[i::n] for i in range(n)]
        refs = [actor.run_batch.remote(shard) for actor, shard in zip(self.actors, shards) if shard]
        parts = ray.get(refs)
        out: list[ExecutionResult | None] = [None] * len(jobs)
        for shard_index, results in enumerate(parts):
            out[shard_index::n] = results
        return out  # type: ignore[return-value]

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
