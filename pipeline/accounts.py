"""Every sample accounted for, by counts that three different components keep for themselves.

- the rollout (`Rollout.counts`, per round): samples admitted, generated (a completion came back), judged (sent to
  the buffer) and lost (generation or execution failed for good);
- the replay buffer (`SampleLedger.events`): admitted, arrived, lost, taken by a batch, evicted and dropped (stale)
  before any use, and the ids it handed out with how many batches each served;
- the learner: the sample ids of each batch it reports trained (`report["ids"]`), and the driver's own list of ids
  whose round had no training data (taken, so retired, but never sent to the learner).

`settle` compares them; a mismatch is a sample produced twice, lost silently, trained twice or never trained.
At the end of a run nothing may be in flight; with `reuse: 1` every taken id is in exactly one learner batch.
"""

from __future__ import annotations

from collections import Counter


def settle(rollout: dict, ledger: dict, taken: dict[str, int], learner_batches: list[list[str]],
           untrained: list[str], reuse: int, final: bool) -> dict:
    """`rollout`: the rollout's totals; `ledger`: `SampleLedger.ledger()`; `taken`: `SampleLedger.taken_ids()`;
    `learner_batches`: ids per batch as the learner reported them; `untrained`: ids taken for rounds without
    training data. `final`: the run is over (nothing may be in flight). Returns the counts and any problems."""
    problems = []
    ev = ledger["events"]
    for name in ("admitted", "lost"):
        if rollout.get(name, 0) != ev.get(name, 0):
            problems.append(f"{name}: rollout {rollout.get(name, 0)}, buffer {ev.get(name, 0)}")
    if rollout.get("judged", 0) != ev.get("arrived", 0):
        problems.append(f"judged by the rollout {rollout.get('judged', 0)}, arrived in the buffer "
                        f"{ev.get('arrived', 0)}")
    if not ledger.get("consistent", False):
        problems.append(f"the buffer's events disagree with its states: {ev}")
    in_flight = rollout.get("admitted", 0) - rollout.get("judged", 0) - rollout.get("lost", 0)
    if final and (in_flight or ledger.get("in_flight", 0)):
        problems.append(f"in flight at the end: rollout {in_flight}, buffer {ledger.get('in_flight', 0)}")
    trained = Counter(sid for batch in learner_batches for sid in batch)
    skipped = Counter(untrained)
    served = trained + skipped
    if served != Counter(taken):
        missing = sorted(set(taken) - set(served))[:5]
        extra = sorted(set(served) - set(taken))[:5]
        problems.append(f"learner batches ({sum(trained.values())} ids) + rounds without data ({len(untrained)}) != "
                        f"the buffer's {sum(taken.values())} uses (not trained: {missing}; not taken: {extra})")
    if reuse == 1 and any(n > 1 for n in trained.values()):
        twice = sorted(s for s, n in trained.items() if n > 1)[:5]
        problems.append(f"trained in more than one batch with reuse 1: {twice}")
    if sum(taken.values()) != ev.get("uses", 0):
        problems.append(f"uses: ids {sum(taken.values())}, events {ev.get('uses', 0)}")
    return {"rollout": dict(rollout), "learner_batches": len(learner_batches), "learner_ids": sum(trained.values()),
            "untrained": len(untrained), "buffer": ev, "balanced": not problems, "problems": problems}
