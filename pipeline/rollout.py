"""The rollout side of the pipeline: exercises -> generators -> executors -> replay buffer, with no batch barrier.

A round's prompts go to the generator replicas in chunks; each chunk's completions go to the executors as soon as
the chunk returns; each judged sample enters the replay buffer (its own ObjectRef, its policy version, its ledger
id) as soon as it is judged. Nothing waits for the rest of its round.

Execution is dispatched by availability, as `ExecutorPool.run` does: completions wait in the driver in small
chunks, and an executor gets the next chunk when its previous call returns (one call in flight each). Sharded up
front, a chunk behind a program that runs into the sandbox's timeout would wait seconds while other executors sit
idle, and the round, which trains only when complete, would wait with it.

Crashes: a generator replica lost mid-call is restarted by Ray, brought to the latest weights and given the chunk
again (`GeneratorGroup.recover`); an executor lost mid-call gets no more work and its chunk goes to another
executor; after `MAX_ATTEMPTS` a chunk's samples are dropped *and counted* in the ledger (never lost silently).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from codealign.exercises.extract import extract_code
from codealign.pipeline.schedule import BusyClock, RoundPlan, sample_id
from codealign.records import Completion, Exercise, Experience

CHUNK = 16  # requests per generator call: the round-based loop's chunk, so max_staleness 0 batches identically
MAX_ATTEMPTS = 3
LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


@dataclass
class GenerateTask:
    round: int
    replica: int
    indices: list[int]  # exercise indices within the round
    attempts: int = 1


@dataclass
class ExecuteTask:
    round: int
    actor: int  # -1 while it waits in the driver for a free executor
    items: list[tuple[int, int, Completion, str]]  # (exercise index, sample k, completion, extracted code)
    attempts: int = 0  # calls made so far


class Rollout:
    def __init__(self, generator, executors, buffer, samples_per_exercise: int, clock: BusyClock,
                 chunk: int = CHUNK):
        self.generator = generator  # GeneratorGroup (or a stand-in with .replicas, .recover)
        self.executors = executors  # ExecutorPool (or a stand-in with .actors)
        self.buffer = buffer
        self.n = samples_per_exercise
        self.clock = clock
        self.chunk = chunk
        self.plans: dict[int, RoundPlan] = {}
        self.tasks: dict[ray.ObjectRef, GenerateTask | ExecuteTask] = {}
        self._next_executor = 0
        # round -> the rollout's own count of its samples: admitted, generated, judged, lost (pipeline/accounts.py)
        self.counts: dict[int, Counter] = {}
        self.failures = {"generator": 0, "executor": 0}
        self.open: dict[int, int] = {}  # round -> samples neither judged nor lost yet
        self._arrived: list[tuple[str, list, int]] = []  # judged samples not yet sent to the buffer
        self._waiting: deque[ExecuteTask] = deque()  # chunks judged next, oldest round first
        self._busy: set[int] = set()  # executors with a call in flight
        self._lost: set[int] = set()  # executors that died (they are not restarted): no more work for them

    # -- submission ----------------------------------------------------------------------------------------------
    def try_start(self, plan: RoundPlan) -> bool:
        """Admit the round's samples if the buffer allows it (the staleness bound), and send its prompts out."""
        if not ray.get(self.buffer.admit.remote(plan.round, plan.sample_ids(self.n))):
            return False
        self.plans[plan.round] = plan
        self.open[plan.round] = len(plan.requests) * self.n
        self.counts[plan.round] = Counter(admitted=self.open[plan.round])
        replicas = len(self.generator.replicas)
        for start in range(0, len(plan.requests), self.chunk):
            chunk = list(range(start, min(start + self.chunk, len(plan.requests))))
            for r in range(replicas):  # as GeneratorGroup.generate shards a call
                shard = chunk[r::replicas]
                if shard:
                    self._generate(GenerateTask(plan.round, r, shard))
        return True

    def _generate(self, task: GenerateTask) -> None:
        reqs = [self.plans[task.round].requests[i] for i in task.indices]
        ref = self.generator.replicas[task.replica].generate.remote(reqs)
        self.tasks[ref] = task
        self.clock.begin("generate")

    def _dispatch(self) -> None:
        """Give waiting chunks to the executors that have nothing in flight, starting after the last one used."""
        n = len(self.executors.actors)
        if len(self._lost) == n:  # no executor left to judge them: dropped and counted, never waited for forever
            while self._waiting:
                task = self._waiting.popleft()
                for i, k, _, _ in task.items:
                    self._lose(task.round, i, k)
            return
        while self._waiting:
            free = [a for a in ((self._next_executor + j) % n for j in range(n))
                    if a not in self._busy and a not in self._lost]
            if not free:
                return
            task = self._waiting.popleft()
            task.actor = free[0]
            self._next_executor = (task.actor + 1) % n
            self._execute(task)

    def _execute(self, task: ExecuteTask) -> None:
        plan = self.plans[task.round]
        jobs = [(code, plan.exercises[i].tests) for i, _, _, code in task.items]
        ref = self.executors.actors[task.actor].run_batch.remote(jobs)
        task.attempts += 1
        self._busy.add(task.actor)
        self.tasks[ref] = task
        self.clock.begin("execute")

    # -- completion ----------------------------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        out = Counter({"admitted": 0, "generated": 0, "judged": 0, "lost": 0})
        for c in self.counts.values():
            out.update(c)
        return dict(out)

    def pending(self) -> list[ray.ObjectRef]:
        return list(self.tasks)

    def round_done(self, round_: int) -> bool:
        """Every sample of the round is in the buffer or counted as lost (the driver's own count: no round trip)."""
        return self.open.get(round_, -1) == 0

    def flush(self) -> None:
        """Send the judged samples to the buffer in one call (before any later call of this driver: Ray keeps the
        order of one caller's calls to an actor)."""
        if self._arrived:
            self.buffer.put_many.remote(self._arrived)
            self._arrived = []

    def _lose(self, round_: int, i: int, k: int) -> None:
        self.buffer.lose.remote(sample_id(round_, i, k))
        self.open[round_] -= 1
        self.counts[round_]["lost"] += 1

    def handle(self, ref: ray.ObjectRef) -> None:
        task = self.tasks.pop(ref)
        if isinstance(task, GenerateTask):
            self.clock.end("generate")
            self._generated(ref, task)
        else:
            self.clock.end("execute")
            self._busy.discard(task.actor)
            self._executed(ref, task)
        self._dispatch()

    def _generated(self, ref, task: GenerateTask) -> None:
        try:
            completions: list[list[Completion]] = ray.get(ref)
        except LOST:
            self.failures["generator"] += 1
            if task.attempts >= MAX_ATTEMPTS:
                for i in task.indices:
                    for k in range(self.n):
                        self._lose(task.round, i, k)
                return
            self.generator.recover(task.replica)
            task.attempts += 1
            self._generate(task)
            return
        plan = self.plans[task.round]
        items = [(i, k, c, extract_code(c.text)) for i, comps in zip(task.indices, completions)
                 for k, c in enumerate(comps)]
        produced = {(i, k) for i, k, _, _ in items}
        self.counts[task.round]["generated"] += len(produced)
        for i in task.indices:  # a request that came back with fewer than n completions (an error): counted
            for k in range(self.n):
                if (i, k) not in produced:
                    self._lose(plan.round, i, k)
        # chunks small enough that every executor gets a share of one call's completions
        size = max(1, -(-len(items) // len(self.executors.actors)))
        for start in range(0, len(items), size):
            self._waiting.append(ExecuteTask(task.round, -1, items[start : start + size]))

    def _executed(self, ref, task: ExecuteTask) -> None:
        try:
            results = ray.get(ref)
        except LOST:
            self.failures["executor"] += 1
            self._lost.add(task.actor)
            if task.attempts >= MAX_ATTEMPTS:
                for i, k, _, _ in task.items:
                    self._lose(task.round, i, k)
                return
            self._waiting.appendleft(task)  # first in line for the next free executor
            return
        plan = self.plans[task.round]
        for (i, k, c, code), res in zip(task.items, results):
            ex: Exercise = plan.exercises[i]
            sid = sample_id(task.round, i, k)
            exp = Experience(ex.id, ex.prompt, c.text, code, res, c.policy_version, c.token_ids, c.logprobs, sid)
            self._arrived.append((sid, [ray.put(exp)], c.policy_version))
            self.open[task.round] -= 1
            self.counts[task.round]["judged"] += 1
