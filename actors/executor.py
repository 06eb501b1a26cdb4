"""A pool of Ray actors, each wrapping a `sandbox.Sandbox`, that judge programs against tests.

Jobs go out in chunks to whichever actor is free. The pool grows (up to `executor.max_actors`) while chunks queue
up and shrinks back (to `min_actors`) once actors have idled `idle_timeout_s`; on an autoscaling cluster the new
actors' resource requests are what makes the autoscaler add sandbox nodes. An actor that dies mid-chunk is
dropped and replaced, and its chunk is sent again to another actor: every job gets exactly one result."""

from __future__ import annotations

import time
from collections import deque

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from tqdm import tqdm

from codealign.config import ExecutorConfig
from codealign.records import ExecutionResult
from codealign.sandbox import RewardTable, Sandbox

LOST = (RayActorError, ActorDiedError, ActorUnavailableError)
MAX_ATTEMPTS = 3  # per chunk: a chunk that kills three executors is not retried again


class Executor:
    def __init__(self, cfg: ExecutorConfig, rewards: RewardTable, parallelism: int = 1):
        self.sandbox = Sandbox(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, parallelism=parallelism,
                               rewards=rewards, in_process=cfg.in_process)

    def ready(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def protections(self) -> dict[str, bool]:
        return self.sandbox.protections

    def run_batch(self, jobs: list[tuple[str, str]]) -> list[ExecutionResult]:
        return self.sandbox.run_many(jobs)


def executor_options(cfg: ExecutorConfig) -> dict:
    # Ray does not retry a lost call itself: the pool re-sends the chunk to a live actor at once.
    return {"num_cpus": cfg.num_cpus, "resources": dict(cfg.resources), "max_restarts": 0, "max_task_retries": 0}


class ExecutorPool:
    """Spreads (solution, tests) jobs over executor actors and returns results in order."""

    def __init__(self, cfg: ExecutorConfig, rewards: RewardTable):
        if cfg.num_actors < 1:
            raise ValueError(f"executor.num_actors must be >= 1, got {cfg.num_actors}")
        self.cfg, self.rewards = cfg, rewards
        self.min_actors = cfg.min_actors or cfg.num_actors
        self.max_actors = max(cfg.max_actors or cfg.num_actors, cfg.num_actors)
        self._remote = ray.remote(Executor).options(**executor_options(cfg))
        self.actors: list = []
        self._idle_since: dict = {}  # actor -> monotonic time it last finished work
        self._pings: dict = {}  # ready() ref -> actor, until the actor has started
        self._ready: set = set()
        self.node_of: dict = {}  # actor -> the node it was placed on (from its ready() ping)
        self.replaced = 0  # actors lost and replaced
        self.peak = 0
        for _ in range(cfg.num_actors):
            self._spawn()

    @property
    def size(self) -> int:
        return len(self.actors)

    def _spawn(self):
        actor = self._remote.remote(self.cfg, self.rewards)
        self.actors.append(actor)
        self._pings[actor.ready.remote()] = actor
        self._idle_since[actor] = time.monotonic()
        self.peak = max(self.peak, len(self.actors))
        return actor

    def _drop(self, actor) -> None:
        self.actors.remove(actor)
        self._idle_since.pop(actor, None)
        self.node_of.pop(actor, None)
        self._ready.discard(actor)
        self._pings = {ref: a for ref, a in self._pings.items() if a is not actor}
        ray.kill(actor, no_restart=True)

    def node_ids(self, timeout_s: float | None = None) -> list[str]:
        """The node of every actor, once all have started (on an autoscaling cluster: once their nodes exist)."""
        return ray.get([a.ready.remote() for a in self.actors], timeout=timeout_s)

    def protections(self) -> dict[str, bool]:
        return ray.get(self.actors[0].protections.remote())

    def shrink(self) -> int:
        """Remove actors idle longer than idle_timeout_s, down to min_actors; returns how many went."""
        now, gone = time.monotonic(), 0
        for actor in sorted(self.actors, key=lambda a: self._idle_since.get(a, now)):
            if len(self.actors) <= self.min_actors:
                break
            if now - self._idle_since.get(actor, now) >= self.cfg.idle_timeout_s:
                self._drop(actor)
                gone += 1
        return gone

    def run(self, jobs: list[tuple[str, str]], desc: str = "") -> list[ExecutionResult]:
        if not jobs:
            return []
        size = self.cfg.chunk_size
        queue = deque((i, list(range(i, min(i + size, len(jobs))))) for i in range(0, len(jobs), size))
        attempts = {key: 0 for key, _ in queue}
        out: list[ExecutionResult | None] = [None] * len(jobs)
        in_flight: dict = {}  # ref -> (actor, chunk key, job indices)
        with tqdm(total=len(jobs), desc=desc or "execute", unit="program", leave=False, disable=not desc) as bar:
            while queue or in_flight:
                busy = {actor for actor, _, _ in in_flight.values()}
                free = [a for a in self.actors if a not in busy]
                # grow while chunks wait for actors that do not exist yet
                for _ in range(min(len(queue) - len(free), self.max_actors - len(self.actors))):
                    free.append(self._spawn())
                # a started actor first; an unstarted one only while nothing has started (it may never be placed)
                started = [a for a in free if a in self._ready]
                for actor in started or ([free[0]] if free and not self._ready else []):
                    if not queue:
                        break
                    key, indices = queue.popleft()
                    attempts[key] += 1
                    ref = actor.run_batch.remote([jobs[j] for j in indices])
                    in_flight[ref] = (actor, key, indices)
                done, _ = ray.wait(list(in_flight) + list(self._pings), num_returns=1)
                for ref in done:
                    if ref in self._pings:
                        actor = self._pings.pop(ref)
                        try:
                            self.node_of[actor] = ray.get(ref)
                            self._ready.add(actor)
                        except LOST:
                            self._replace(actor)
                        continue
                    actor, key, indices = in_flight.pop(ref)
                    try:
                        results = ray.get(ref)
                    except LOST:
                        if attempts[key] >= MAX_ATTEMPTS:
                            raise
                        self._replace(actor)
                        queue.appendleft((key, indices))
                        continue
                    self._idle_since[actor] = time.monotonic()
                    for j, res in zip(indices, results):
                        if out[j] is not None:
                            raise RuntimeError(f"job {j} answered twice")
                        out[j] = res
                    bar.update(len(indices))
        self.shrink()
        return out  # type: ignore[return-value]

    def _replace(self, actor) -> None:
        if actor in self.actors:
            self._drop(actor)
            self.replaced += 1
        if len(self.actors) < self.min_actors:
            self._spawn()

    def shutdown(self) -> None:
        for actor in list(self.actors):
            ray.kill(actor)
        self.actors.clear()
