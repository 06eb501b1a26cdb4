"""The sample accounts (pipeline/accounts.settle) on hand-made counts: each component's count, broken on its own,
is a problem that names it; the counts of a clean run balance."""

from codealign.pipeline.accounts import batches_from_state, settle

IDS = [f"r0-{i}" for i in range(4)]


def counts(**change) -> dict:
    """A clean round: four samples admitted, judged and taken by one batch whose data (one pair) holds two of them;
    the learner received those two and trained one (the other rank's share)."""
    base = {
        "rollout": {"admitted": 4, "generated": 4, "judged": 4, "lost": 0},
        "ledger": {"events": {"admitted": 4, "arrived": 4, "lost": 0, "taken": 4, "uses": 4}, "consistent": True,
                   "in_flight": 0},
        "taken": dict.fromkeys(IDS, 1),
        "learner_batches": [{"sent": IDS, "data": IDS[:2], "received": IDS[:2], "trained": IDS[:1]}],
        "untrained": [],
        "reuse": 1,
        "final": True,
    }
    return {**base, **change}


def problems(**change) -> list[str]:
    return settle(**counts(**change))["problems"]


def test_the_counts_of_a_clean_run_balance_and_say_where_each_sample_went():
    out = settle(**counts())
    assert out["balanced"] and out["problems"] == []
    assert (out["sent_ids"], out["left_out"], out["learner_excluded"], out["learner_ids"]) == (4, 2, 1, 1)


def test_each_component_broken_alone_is_named():
    judged_3 = {"admitted": 4, "generated": 4, "judged": 3, "lost": 0}
    assert problems(rollout=judged_3)[0].startswith("judged by the rollout 3, arrived in the buffer 4")
    lost = counts()["ledger"] | {"events": {**counts()["ledger"]["events"], "lost": 1}}
    assert problems(ledger=lost)[0] == "lost: rollout 0, buffer 1"
    inconsistent = counts()["ledger"] | {"consistent": False}
    assert "disagree with its states" in problems(ledger=inconsistent)[0]
    in_flight = counts()["ledger"] | {"in_flight": 1}
    assert "in flight at the end" in problems(ledger=in_flight)[0]
    assert problems(ledger=in_flight, final=False) == []  # mid-run, samples in flight are expected
    one_more_taken = dict.fromkeys(IDS + ["r0-9"], 1)
    assert "never sent: ['r0-9']" in problems(taken=one_more_taken)[0]
    batch = counts()["learner_batches"][0]
    not_taken = batch | {"data": IDS[:2] + ["r1-0"], "received": IDS[:2] + ["r1-0"]}
    assert "the buffer did not hand out: ['r1-0']" in problems(learner_batches=[not_taken])[0]
    assert "the learner received 1 ids, the driver sent data with 2" in problems(
        learner_batches=[batch | {"received": IDS[:1]}])[0]
    assert "trained ids it did not receive: ['r0-3']" in problems(
        learner_batches=[batch | {"trained": ["r0-3"]}])[0]
    uses = counts()["ledger"] | {"events": {**counts()["ledger"]["events"], "uses": 5}}
    assert problems(ledger=uses)[0] == "uses: ids 4, events 5"


def test_a_sample_trained_in_two_batches_is_a_fault_only_when_samples_are_used_once():
    taken = dict.fromkeys(IDS, 2)
    ledger = counts()["ledger"] | {"events": {**counts()["ledger"]["events"], "uses": 8}}
    twice = [{"sent": IDS, "data": IDS, "received": IDS, "trained": IDS}] * 2
    assert any("more than one batch" in p for p in problems(taken=taken, ledger=ledger, learner_batches=twice))
    assert problems(taken=taken, ledger=ledger, learner_batches=twice, reuse=2) == []


def test_accounts_saved_before_the_learner_kept_its_own_count_resume_as_all_trained():
    old = [IDS[:2], IDS[2:]]  # one id list per batch, the driver's, which the learner echoed
    batches = batches_from_state(old)
    assert settle(**counts(learner_batches=batches))["learner_ids"] == 4
    assert batches_from_state(batches) == batches  # the new form reads back as it is


def test_preference_pairs_name_the_samples_they_train():
    """What the learner's count reads: a pair of two samples names both, a pair on a reference only the sample."""
    from codealign.pipeline.preferences import build_pairs
    from codealign.records import ExecutionResult, Exercise, Experience, sample_ids_behind
    from codealign.sandbox import Verdict

    def judged(ex, i, verdict):
        return Experience(ex, "p", f"answer {ex}{i}", "", ExecutionResult(verdict, 0.0, 0.0), 0, sample_id=f"{ex}-{i}")

    exercises = {e: Exercise(e, "p", "assert True", reference="x = 1") for e in ("a", "b")}
    experiences = [judged("a", 0, Verdict.PASSED), judged("a", 1, Verdict.FAILED), judged("b", 0, Verdict.FAILED)]
    pairs = build_pairs(exercises, experiences, max_pairs=8)
    assert sorted((p.reason, p.sample_ids) for p in pairs) == [("passed>failed", ("a-0", "a-1")),
                                                              ("reference>failed", ("b-0",))]
    assert sorted(sample_ids_behind(pairs)) == ["a-0", "a-1", "b-0"]


def test_the_report_says_whether_the_accounts_balance_and_what_does_not_add_up():
    from codealign.pipeline.report import accounts_line

    balanced = settle(**counts())
    assert accounts_line(balanced).startswith("Sample accounts balance: 4 samples judged, 4 sent to the learner")
    broken = settle(**counts(taken=dict.fromkeys(IDS + ["r0-9"], 1)))
    assert accounts_line(broken).startswith("**Sample accounts do not add up:** sent to the learner (4 ids)")
    assert "not settled" in accounts_line({})


def test_accounts_saved_while_batches_held_only_sent_and_trained_still_settle():
    batches = batches_from_state([{"sent": IDS, "trained": IDS[:1]}])
    out = settle(**counts(learner_batches=batches))
    assert out["balanced"] and (out["learner_ids"], out["learner_excluded"]) == (1, 3)
