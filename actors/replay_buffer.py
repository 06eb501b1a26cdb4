"""Experience in Ray's object store, indexed by an actor that holds only ObjectRefs and version tags."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import ray


@dataclass
class BufferEntry:
    ref: ray.ObjectRef
    policy_version: int
    count: int  # records inside the object


@ray.remote(num_cpus=0)
class ReplayBuffer:
    """Holds references, never the data: the objects stay in the store (and stay alive) while referenced here.

    Refs must be passed inside a list; a bare ObjectRef argument would be resolved by Ray before the call."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity  # in records
        self.entries: deque[BufferEntry] = deque()
        self.size = 0

    def add(self, refs: list[ray.ObjectRef], policy_version: int, count: int) -> int:
        for ref in refs:
            self.entries.append(BufferEntry(ref, policy_version, count))
            self.size += count
        while self.size > self.capacity and len(self.entries) > 1:
            self.size -= self.entries.popleft().count
        return self.size

    def get(self, min_version: int = 0, max_version: int | None = None) -> list[ray.ObjectRef]:
        """Refs to every batch produced by a policy version in [min_version, max_version]."""
        return [
            e.ref
            for e in self.entries
            if e.policy_version >= min_version and (max_version is None or e.policy_version <= max_version)
        ]

    def stats(self) -> dict:
        versions: dict[int, int] = {}
        for e in self.entries:
            versions[e.policy_version] = versions.get(e.policy_version, 0) + e.count
        return {"records": self.size, "batches": len(self.entries), "by_version": versions}
