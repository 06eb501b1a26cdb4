"""Every sample accounted for, by counts that three different components keep for themselves.

- the rollout (`Rollout.counts`, per round): samples admitted, generated (a completion came back), judged (sent to
  the buffer) and lost (generation or execution failed for good);
- the replay buffer (`SampleLedger.events`): admitted, arrived, lost, taken by a batch, evicted and dropped (stale)
  before any use, and the ids it handed out with how many batches each served;
- the driver: the ids each batch took from the buffer (`sent`), the ids in the data it built from them (`data`: a
  sample in no preference pair, or in a group without reward signal, is left out there), and the ids of rounds
  that had no training data (taken, so retired, but never sent);
- the learner: the ids in the data it received (`received`) and those it trained (`trained`), both read from the
  data itself, never from the driver's list; what it received and did not train (items cut to a multiple of the
  ranks, groups without reward signal, an example too long to learn anything from) is `excluded`.

`settle` compares them; a mismatch is a sample produced twice, lost silently, delivered to the wrong batch,
trained twice or trained without being handed out. At the end of a run nothing may be in flight; with `reuse: 1`
every taken id is in exactly one batch and no id is trained twice.
"""

from __future__ import annotations

from collections import Counter


def settle(rollout: dict, ledger: dict, taken: dict[str, int], learner_batches: list[dict],
           untrained: list[str], reuse: int, final: bool) -> dict:
    """`rollout`: the rollout's totals; `ledger`: `SampleLedger.ledger()`; `taken`: `SampleLedger.taken_ids()`;
    `learner_batches`: per batch, {"sent", "data"} as the driver counted and {"received", "trained"} as the learner
    did; `untrained`: ids taken for rounds without training data. `final`: the run is over (nothing may be in
    flight). Returns the counts and any problems."""
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
    sent = Counter(sid for batch in learner_batches for sid in batch["sent"])
    served = sent + Counter(untrained)
    if served != Counter(taken):
        missing = sorted(set(taken) - set(served))[:5]
        extra = sorted(set(served) - set(taken))[:5]
        problems.append(f"sent to the learner ({sum(sent.values())} ids) + rounds without data ({len(untrained)}) "
                        f"!= the buffer's {sum(taken.values())} uses (never sent: {missing}; not taken: {extra})")
    trained: Counter = Counter()
    left_out = excluded = 0
    for i, batch in enumerate(learner_batches, 1):
        took, data = set(batch["sent"]), set(batch["data"])
        received, mine = set(batch["received"]), set(batch["trained"])
        if data - took:
            problems.append(f"batch {i}: its data holds ids the buffer did not hand out: {sorted(data - took)[:5]}")
        if received != data:
            problems.append(f"batch {i}: the learner received {len(received)} ids, the driver sent data with "
                            f"{len(data)} (differ: {sorted(received ^ data)[:5]})")
        if mine - received:
            problems.append(f"batch {i}: the learner trained ids it did not receive: {sorted(mine - received)[:5]}")
        trained.update(mine)
        left_out += len(took - data)
        excluded += len(received - mine)
    if reuse == 1 and any(n > 1 for n in trained.values()):
        twice = sorted(s for s, n in trained.items() if n > 1)[:5]
        problems.append(f"trained in more than one batch with reuse 1: {twice}")
    if sum(taken.values()) != ev.get("uses", 0):
        problems.append(f"uses: ids {sum(taken.values())}, events {ev.get('uses', 0)}")
    return {"rollout": dict(rollout), "learner_batches": len(learner_batches), "sent_ids": sum(sent.values()),
            "learner_ids": sum(trained.values()), "learner_excluded": excluded, "left_out": left_out,
            "untrained": len(untrained), "buffer": ev, "balanced": not problems, "problems": problems}


def batches_from_state(saved: list) -> list[dict]:
    """The accounts' batches as a resume reads them back; state files before 2026-12-05 kept one id list per batch,
    the driver's, which the learner echoed."""
    return [{"data": b["sent"], "received": b["sent"], **b} if isinstance(b, dict)
            else dict.fromkeys(("sent", "data", "received", "trained"), list(b)) for b in saved]
