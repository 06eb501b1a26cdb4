"""Experience in Ray's object store, indexed by an actor that holds only ObjectRefs, version tags and a ledger.

Two ways in:
- `add(refs, version, count)`: whole batches, tagged by version (the round-based interface; `get` reads them back).
- the pipeline's per-sample interface: `admit` (admission control), `put` (a judged sample enters), `take_round`
  (the learner's batch), with every sample id in exactly one state of the ledger at all times:
  in flight -> buffered -> trained | evicted | dropped (stale), or in flight -> lost (never produced).
  Besides the states, the ledger counts events per round (admitted, arrived, lost, taken, evicted, dropped) as they
  happen; `pipeline/accounts.py` checks those counts against the rollout's and the learner's own.

The rules live in `SampleLedger`, plain Python (unit-tested without Ray); `ReplayBuffer` is the actor around it.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import ray


@dataclass
class BufferEntry:
    ref: ray.ObjectRef
    policy_version: int
    count: int  # records inside the object


@dataclass
class Sample:
    id: str
    round: int  # the admission round: the learner batch it was admitted for
    index: int  # admission order, so a batch comes back in the order it was asked for
    ref: object = None  # ObjectRef of the Experience (None while in flight)
    policy_version: int = -1
    uses: int = 0  # batches it was trained in (reuse > 1 lets a sample serve several)
    state: str = "in_flight"


STATES = ("in_flight", "buffered", "trained", "evicted", "dropped", "lost")
EVENTS = ("admitted", "arrived", "lost", "taken", "uses", "evicted", "dropped")


@dataclass
class LedgerConfig:
    """What the buffer admits and keeps (mirrors `codealign.config.PipelineConfig`)."""

    max_staleness: int = 0  # versions the rollout may run ahead of the learner, counting samples in flight
    reuse: int = 1  # batches a sample may be trained in (1: once)
    capacity: int = 100_000  # buffered samples kept; beyond it the oldest are evicted


@dataclass
class SampleLedger:
    cfg: LedgerConfig
    samples: dict[str, Sample] = field(default_factory=dict)
    learner_version: int = 0  # the version the generators serve (the last one published)
    released: int = 0  # learner batches done and published: admission counts rounds against it
    next_index: int = 0
    staleness_seen: Counter = field(default_factory=Counter)  # staleness -> samples trained at it
    buffered: int = 0  # samples in the "buffered" state, kept so an arrival costs O(1), not a scan of every id
    # round -> what happened to its samples, counted when it happened (not derived from the states): admitted,
    # arrived (judged, put), lost (never produced), taken (first use by a batch), uses (every use), evicted and
    # dropped (stale) before any use
    events: dict[int, Counter] = field(default_factory=dict)

    def _count(self, s: Sample, event: str) -> None:
        self.events.setdefault(s.round, Counter())[event] += 1

    # -- admission ---------------------------------------------------------------------------------------------
    def admissible_rounds(self) -> int:
        """Rounds the rollout may have admitted in total: AReaL's bound, (version + max_staleness + 1) batches,
        counting everything ever admitted (trained, buffered and still in flight alike)."""
        return self.released + self.cfg.max_staleness + 1

    def admit(self, round_: int, ids: list[str]) -> bool:
        """Admit the samples of `round_` if the bound allows it; refuses (False) and admits none otherwise."""
        if round_ >= self.admissible_rounds():
            return False
        for sid in ids:
            if sid in self.samples:
                raise ValueError(f"sample id {sid!r} admitted twice")
            self.samples[sid] = Sample(sid, round_, self.next_index)
            self._count(self.samples[sid], "admitted")
            self.next_index += 1
        return True

    # -- arrival -----------------------------------------------------------------------------------------------
    def put(self, sid: str, ref, policy_version: int) -> None:
        s = self.samples.get(sid)
        if s is None or s.state != "in_flight":
            raise ValueError(f"sample {sid!r} was not in flight (state: {s.state if s else 'unknown'})")
        s.ref, s.policy_version, s.state = ref, policy_version, "buffered"
        self._count(s, "arrived")
        self.buffered += 1
        if self.buffered > self.cfg.capacity:
            self._evict_over_capacity()

    def lose(self, sid: str) -> None:
        """A sample that cannot be produced (its generation or execution failed for good): lost, counted, and
        not produced."""
        s = self.samples.get(sid)
        if s is None or s.state != "in_flight":
            raise ValueError(f"sample {sid!r} lost but not in flight (state: {s.state if s else 'unknown'})")
        s.state = "lost"
        self._count(s, "lost")

    def _evict_over_capacity(self) -> None:
        buffered = sorted((s for s in self.samples.values() if s.state == "buffered"), key=lambda s: s.index)
        for s in buffered[: max(0, len(buffered) - self.cfg.capacity)]:
            self._retire(s, "evicted")

    def _retire(self, s: Sample, why: str) -> None:
        """Leave the buffer: a sample trained at least once counts as trained, whatever retires it."""
        if s.state == "buffered":
            self.buffered -= 1
        if not s.uses:
            self._count(s, why)
        s.state = "trained" if s.uses else why
        s.ref = None  # the object store may free it

    # -- the learner's side -----------------------------------------------------------------------------------
    def round_complete(self, round_: int) -> bool:
        members = [s for s in self.samples.values() if s.round == round_]
        return bool(members) and all(s.state != "in_flight" for s in members)

    def take_round(self, round_: int, train_version: int) -> dict:
        """The batch the learner trains at `train_version` (the batches it has trained so far): the samples
        admitted for `round_` (in admission order), plus earlier ones kept for reuse within the staleness bound.
        Samples that are too stale are dropped, not trained. Returns ids, refs, the staleness of each, and what was
        dropped."""
        v = train_version
        fresh = sorted((s for s in self.samples.values() if s.round == round_ and s.state == "buffered"),
                       key=lambda s: s.index)
        reused = sorted((s for s in self.samples.values()
                         if s.round < round_ and s.state == "buffered" and 0 < s.uses < self.cfg.reuse),
                        key=lambda s: s.index)
        batch, dropped = [], []
        for s in fresh + reused:
            if v - s.policy_version > self.cfg.max_staleness:
                self._retire(s, "dropped")
                dropped.append(s.id)
            else:
                batch.append(s)
        out = {"ids": [s.id for s in batch], "refs": [s.ref for s in batch],
               "staleness": [v - s.policy_version for s in batch], "dropped": dropped,
               "reused": sum(1 for s in batch if s.round < round_)}
        for s in batch:
            if not s.uses:
                self._count(s, "taken")
            self._count(s, "uses")
            s.uses += 1
            self.staleness_seen[v - s.policy_version] += 1
            if s.uses >= self.cfg.reuse:
                self._retire(s, "trained")
        return out

    def advance(self, released: int, version: int) -> None:
        """`released` learner batches are done and their weights published (the generators serve `version`):
        admission moves on, and samples kept for reuse that are now beyond the bound are evicted."""
        if version < self.learner_version or released < self.released:
            raise ValueError(f"the learner went back: {released} rounds, version {version}")
        self.released, self.learner_version = released, version
        for s in self.samples.values():
            if s.state == "buffered" and s.uses and version - s.policy_version > self.cfg.max_staleness:
                self._retire(s, "evicted")

    # -- accounting --------------------------------------------------------------------------------------------
    def totals(self) -> Counter:
        out = Counter({e: 0 for e in EVENTS})
        for c in self.events.values():
            out.update(c)
        return out

    def ledger(self) -> dict:
        """The states, the events counted as they happened, and whether the two agree (`consistent`): every
        admitted sample is in one state; what arrived was taken, evicted or dropped, or still waits untaken."""
        by_state = Counter(s.state for s in self.samples.values())
        counts = {state: by_state.get(state, 0) for state in STATES}
        ev = self.totals()
        waiting = sum(1 for s in self.samples.values() if s.state == "buffered" and not s.uses)
        consistent = (ev["admitted"] == len(self.samples) == sum(counts.values())
                      and ev["admitted"] == ev["arrived"] + ev["lost"] + counts["in_flight"]
                      and ev["arrived"] == ev["taken"] + ev["evicted"] + ev["dropped"] + waiting
                      and ev["lost"] == counts["lost"])
        return {**counts, "produced": ev["arrived"], "admitted": ev["admitted"], "events": dict(ev),
                "consistent": consistent, "learner_version": self.learner_version, "released_rounds": self.released,
                "staleness_histogram": dict(sorted(self.staleness_seen.items())),
                "max_staleness_seen": max(self.staleness_seen, default=0)}

    def taken_ids(self) -> dict[str, int]:
        """Sample id -> the batches it was taken for (what the learner must report having trained)."""
        return {s.id: s.uses for s in self.samples.values() if s.uses}

    def states(self) -> dict[str, str]:
        return {sid: s.state for sid, s in self.samples.items()}

    # -- a driver's resume (pipeline/state.py) -------------------------------------------------------------------
    def snapshot(self, next_round: int) -> dict:
        """What a resumed driver needs: every sample of the rounds below `next_round` (the learner has trained
        them; some may be buffered for reuse) and of later rounds that are complete (all judged or lost); rounds
        still in flight are left out, to be admitted and produced again under the same ids. Buffered samples come
        with their refs (the caller stores the objects)."""
        keep = {s.round for s in self.samples.values() if s.round < next_round}
        keep |= {r for r in {s.round for s in self.samples.values()} if r >= next_round and self.round_complete(r)}
        return {"samples": [{"id": s.id, "round": s.round, "index": s.index, "policy_version": s.policy_version,
                             "uses": s.uses, "state": s.state} for s in self.samples.values() if s.round in keep],
                "refs": {s.id: s.ref for s in self.samples.values() if s.round in keep and s.state == "buffered"},
                "learner_version": self.learner_version, "released": self.released, "next_index": self.next_index,
                "staleness_seen": dict(self.staleness_seen),
                "events": {r: dict(c) for r, c in self.events.items() if r in keep},
                "complete_rounds": sorted(r for r in keep if r >= next_round)}

    def restore(self, snap: dict, refs: dict[str, object]) -> None:
        """The inverse of `snapshot`, into an empty ledger; `refs`: sample id -> the buffered sample's new ref."""
        if self.samples:
            raise ValueError("restore: the ledger is not empty")
        for d in snap["samples"]:
            s = Sample(d["id"], d["round"], d["index"], refs.get(d["id"]), d["policy_version"], d["uses"], d["state"])
            if s.state == "buffered" and s.ref is None:
                raise ValueError(f"restore: buffered sample {s.id!r} has no experience")
            self.samples[s.id] = s
        self.learner_version, self.released = snap["learner_version"], snap["released"]
        self.next_index = snap["next_index"]
        self.staleness_seen = Counter({int(k): v for k, v in snap["staleness_seen"].items()})
        self.events = {int(r): Counter(c) for r, c in snap["events"].items()}
        self.buffered = sum(1 for s in self.samples.values() if s.state == "buffered")


@ray.remote(num_cpus=0)
class ReplayBuffer:
    """Holds references, never the data: the objects stay in the store (and stay alive) while referenced here.

    Refs must be passed inside a list; a bare ObjectRef argument would be resolved by Ray before the call."""

    def __init__(self, capacity: int = 100_000, ledger: LedgerConfig | None = None):
        self.capacity = capacity  # in records
        self.entries: deque[BufferEntry] = deque()
        self.size = 0
        self.ledger_ = SampleLedger(ledger or LedgerConfig(capacity=capacity))

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
        for s in self.ledger_.samples.values():
            if s.state == "buffered":
                versions[s.policy_version] = versions.get(s.policy_version, 0) + 1
        records = self.size + sum(1 for s in self.ledger_.samples.values() if s.state == "buffered")
        return {"records": records, "batches": len(self.entries), "by_version": versions}

    # the pipeline's per-sample interface (see SampleLedger)
    def admit(self, round_: int, ids: list[str]) -> bool:
        return self.ledger_.admit(round_, ids)

    def put(self, sid: str, refs: list[ray.ObjectRef], policy_version: int) -> None:
        self.ledger_.put(sid, refs[0], policy_version)

    def put_many(self, samples: list[tuple[str, list[ray.ObjectRef], int]]) -> None:
        for sid, refs, version in samples:
            self.ledger_.put(sid, refs[0], version)

    def lose(self, sid: str) -> None:
        self.ledger_.lose(sid)

    def round_complete(self, round_: int) -> bool:
        return self.ledger_.round_complete(round_)

    def take_round(self, round_: int, train_version: int) -> dict:
        return self.ledger_.take_round(round_, train_version)

    def advance(self, released: int, version: int) -> None:
        self.ledger_.advance(released, version)

    def ledger(self) -> dict:
        return self.ledger_.ledger()

    def states(self) -> dict[str, str]:
        return self.ledger_.states()

    def taken_ids(self) -> dict[str, int]:
        return self.ledger_.taken_ids()

    def snapshot(self, next_round: int) -> dict:
        snap = self.ledger_.snapshot(next_round)
        snap["refs"] = {sid: [ref] for sid, ref in snap["refs"].items()}  # in lists: returned as refs, not values
        return snap

    def restore(self, snap: dict, refs: dict[str, list]) -> None:
        self.ledger_.restore(snap, {sid: r[0] for sid, r in refs.items()})
