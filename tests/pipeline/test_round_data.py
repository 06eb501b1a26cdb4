"""What the loop hands the learner per algorithm: verified solutions are checked in the real sandbox."""

from types import SimpleNamespace

from codealign.actors.executor import ExecutorPool
from codealign.config import ExecutorConfig, RunConfig, TrainConfig
from codealign.pipeline.loop import round_data, verified_solutions
from codealign.records import Completion, ExecutionResult, Exercise, Experience, sample_ids_behind
from codealign.sandbox import RewardTable, Verdict

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
EXERCISES = [
    Exercise("ok", "Write add(a, b).", TESTS, reference="def add(a, b):\n    return a + b\n"),
    Exercise("solved", "Write add(a, b).", TESTS, reference="def add(a, b):\n    return a + b\n"),
    Exercise("broken", "Write add(a, b).", TESTS, reference="def add(a, b):\n    return a - b\n"),
]


def judged(ex: str, verdict: Verdict, completion: str) -> Experience:
    return Experience(ex, "Write add(a, b).", completion, completion, ExecutionResult(verdict, 0.0, 0.0), 0,
                      sample_id=f"r0-{ex}")


def test_verified_solutions_and_round_data_by_algorithm(ray_cluster):
    system = SimpleNamespace(executors=ExecutorPool(ExecutorConfig(num_actors=1), RewardTable()))
    experiences = [judged("solved", Verdict.PASSED, "```python\ndef add(a, b): return b + a\n```"),
                   judged("ok", Verdict.FAILED, "```python\ndef add(a, b): return 0\n```"),
                   judged("broken", Verdict.SYNTAX_ERROR, "def add(")]
    solutions = verified_solutions(system, EXERCISES, experiences)
    # the passing sample; the reference where no sample passed; a reference that fails its tests is left out
    assert [(s.source, s.completion.count("b + a")) for s in solutions] == [("passed_sample", 1), ("reference", 0)]
    assert "return a + b" in solutions[1].completion
    # what the learner reports trained (the sample accounts): the passing sample, not the reference (no sample)
    assert sample_ids_behind(solutions) == ["r0-solved"]

    cfg = RunConfig()
    by_id = {ex.id: ex for ex in EXERCISES}
    for train, expected in [(TrainConfig(algorithm="sft"), 2), (TrainConfig(algorithm="ppo", critic=True), 3)]:
        cfg.train = train
        assert len(round_data(system, cfg, EXERCISES, experiences, by_id, [], 0)) == expected
    # critic-free PPO: one sample per exercise carries no reward signal against its group, so nothing to train
    cfg.train = TrainConfig(algorithm="ppo")
    assert round_data(system, cfg, EXERCISES, experiences, by_id, [], 0) == []
    cfg.train = TrainConfig(algorithm="dpo")  # the broken reference failed its tests in the sandbox: no pair on it
    assert [(p.exercise_id, p.reason) for p in round_data(system, cfg, EXERCISES, experiences, by_id, [], 0)] == [
        ("ok", "reference>failed")]
    cfg.train = TrainConfig(algorithm="distill")
    cfg.train.distill.sequences = "student"  # on-policy: every non-empty sample, whatever its verdict
    on_policy = round_data(system, cfg, EXERCISES, experiences, by_id, [], 0)
    assert [d.source for d in on_policy] == ["student_sample"] * 3
    assert sample_ids_behind(on_policy) == ["r0-solved", "r0-ok", "r0-broken"]
    cfg.train.distill.sequences = "oracle"  # no oracle configured: the MBPP reference stands in
    assert len(round_data(system, cfg, EXERCISES, experiences, by_id, [], 0)) == 2

    # with an oracle: its own answers to each prompt, the first that passes in the sandbox (a scripted oracle
    # stands in for the generator actor, which the oracle-generation tests exercise through real HTTP and vLLM)
    answers = {"distill:ok": ["def add(a, b):\n    return 0\n", "```python\ndef add(a, b):\n    return b + a\n```"],
               "distill:solved": ["I cannot."], "distill:broken": ["def add(a, b):\n    return a + b\n"]}
    asked = []

    def oracle_generate(reqs):
        asked.extend((r.request_id, r.n) for r in reqs)
        return [[Completion(r.request_id, t, [], [], "stop", 0) for t in answers[r.request_id]] for r in reqs]

    system.oracle = SimpleNamespace(generate=oracle_generate)
    cfg.oracle.solutions_per_exercise = 2
    got = round_data(system, cfg, EXERCISES, experiences, by_id, [], 0)
    assert asked == [("distill:ok", 2), ("distill:solved", 2), ("distill:broken", 2)]
    assert [(d.source, d.completion) for d in got] == [
        ("oracle_solution", "```python\ndef add(a, b):\n    return b + a\n```"),
        ("oracle_solution", "```python\ndef add(a, b):\n    return a + b\n```")]
    system.executors.shutdown()
