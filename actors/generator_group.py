"""Several generator actors behind one handle.

Requests are spread over the replicas; every weight update goes to all of them and is remembered. A replica whose
engine dies is restarted by Ray (`max_restarts`), brought back to the latest weights before it serves again, and
the requests it had in flight are sent again: nothing is silently dropped."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from codealign.actors.generator import Generator, actor_options
from codealign.config import GeneratorConfig, ModelConfig
from codealign.records import Completion, GenerationRequest

LOST = (RayActorError, ActorDiedError, ActorUnavailableError)



@dataclass
class Adapter:
    """A LoRA adapter to serve unmerged (`update_lora`): its tensors as numpy and its PEFT config."""

    tensors: dict
    config: dict

class GeneratorGroup:
    def __init__(self, model_path: str, model: ModelConfig, cfg: GeneratorConfig, role: str = "student",
                 replicas: int = 1, max_restarts: int = 3, max_attempts: int = 3):
        if replicas < 1:
            raise ValueError(f"generator.replicas must be >= 1, got {replicas}")
        actor_cls = ray.remote(Generator).options(**actor_options(cfg, max_restarts))
        self.replicas = [actor_cls.remote(model_path, model, cfg, role) for _ in range(replicas)]
        self.max_attempts = max_attempts
        self.policy_version = 0
        self._latest: tuple | None = None  # the last update, to replay on a restarted replica
        ray.get([r.ready.remote() for r in self.replicas])

    def ready(self) -> list[dict]:
        """Each replica's state, once it is serving (a restarting one is waited for and caught up first)."""
        out = []
        for i, replica in enumerate(self.replicas):
            try:
                out.append(ray.get(replica.ready.remote()))
            except LOST:
                self._bring_back(i)
                out.append(ray.get(replica.ready.remote()))
        return out

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        n = len(self.replicas)
        shards = [list(range(i, len(requests), n)) for i in range(n)]
        out: list[list[Completion] | None] = [None] * len(requests)
        pending = {i: self.replicas[i].generate.remote([requests[j] for j in shard])
                   for i, shard in enumerate(shards) if shard}
        attempts = {i: 1 for i in pending}
        while pending:
            i, ref = next(iter(pending.items()))
            try:
                results = ray.get(ref)
            except LOST:
                if attempts[i] >= self.max_attempts:
                    raise
                attempts[i] += 1
                self._bring_back(i)
                pending[i] = self.replicas[i].generate.remote([requests[j] for j in shards[i]])
                continue
            del pending[i]
            for j, res in zip(shards[i], results):
                out[j] = res
        return out  # type: ignore[return-value]

    def _bring_back(self, i: int, wait_s: float = 600.0) -> None:
        """Wait for Ray to restart replica i, then give it the latest weights."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                info = ray.get(self.replicas[i].ready.remote())
                break
            except ActorUnavailableError:  # still restarting; ActorDiedError (out of restarts) goes up
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        if self._latest is not None and info["policy_version"] != self.policy_version:
            method, args = self._latest
            ray.get(getattr(self.replicas[i], method).remote(*args))

    def _broadcast(self, method: str, *args, timeout_s: float | None = None) -> list[dict]:
        """Every replica takes the update, or the caller hears why not. An engine serves one call at a time, so
        no request ever runs on half-loaded weights; a replica that refuses keeps its previous version."""
        refs = [getattr(r, method).remote(*args) for r in self.replicas]
        try:
            results = ray.get(refs, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            raise TimeoutError(f"{method} to version {args[-1]} did not finish within {timeout_s} s; replicas "
                               f"still serve version {self.policy_version} until it does") from exc
        self._latest = (method, args)
        return results

    def update_weights(self, weights, version: int, timeout_s: float | None = None) -> list[dict]:
        ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)
        results = self._broadcast("update_weights", ref, version, timeout_s=timeout_s)
        self.policy_version = version
        return results

    def start_update(self, weights, version: int) -> list[ray.ObjectRef]:
        """`update_weights` (or `update_lora` for an `Adapter`) without waiting: each replica takes the new
        weights after the requests it already holds (an actor serves one call at a time), so the stream of requests
        never stops; a replica restarted later is brought to this version too. Returns the acknowledgements."""
        if isinstance(weights, Adapter):  # hot-loaded unmerged over the base (generator.enable_lora)
            method, args = "update_lora", (ray.put(weights.tensors), weights.config, version)
        else:
            method, args = "update_weights", (weights if isinstance(weights, ray.ObjectRef) else ray.put(weights),
                                              version)
        self._latest = (method, args)
        self.policy_version = version
        return [getattr(r, method).remote(*args) for r in self.replicas]

    def forget_update(self, version: int) -> None:
        """Every replica refused the last `start_update` and serves `version` (the base model's, with nothing
        published before it): a replica restarted later is not given the refused weights."""
        self._latest, self.policy_version = None, version

    def recover(self, i: int) -> None:
        """Replica i was lost mid-call: wait for Ray to restart it and catch it up (see `generate`)."""
        self._bring_back(i)

    def update_lora(self, adapter, adapter_config: dict, version: int, timeout_s: float | None = None) -> list[dict]:
        if isinstance(adapter, Adapter):
            adapter, adapter_config = adapter.tensors, adapter.config
        ref = adapter if isinstance(adapter, ray.ObjectRef) else ray.put(adapter)
        results = self._broadcast("update_lora", ref, adapter_config, version, timeout_s=timeout_s)
        self.policy_version = version
        return results

    def score(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """Teacher-forced log-probs from one replica (they all serve the same version)."""
        try:
            return ray.get(self.replicas[0].score.remote(sequences, prompt_lens))
        except LOST:
            self._bring_back(0)
            return ray.get(self.replicas[0].score.remote(sequences, prompt_lens))

    def shutdown(self) -> None:
        for r in self.replicas:
            ray.kill(r)
