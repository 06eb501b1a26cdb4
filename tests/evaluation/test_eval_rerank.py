"""CodeT and clustering on crafted solutions and generated tests where the right pick is known, judged in the real
sandbox (the same `execute` callable the executor pool provides)."""

import math

import pytest

from codealign.evaluation.rerank import (
    call_inputs,
    cluster_pick,
    codet_pick,
    generate_tests,
    parse_asserts,
    prompt_for_tests,
    rerank,
    signature,
    task_text,
)
from codealign.exercises.loaders import MBPP_TEST_IDS, load_humaneval, load_mbpp
from codealign.records import Completion, Exercise
from codealign.sandbox import Sandbox

RIGHT = "def add_one(x):\n    return x + 1\n"
WRONG_A = "def add_one(x):\n    return x + 2\n"
WRONG_B = "def add_one(x):\n    return x * 2\n"  # agrees with RIGHT on x = 1 only
BROKEN = "def add_one(x):\n    return x +\n"
TASK = Exercise(id="t/1", prompt="Write add_one(x) that returns x plus one.", tests="assert add_one(41) == 42\n")
# generated tests: three right ones, one wrong one that WRONG_A happens to satisfy
GENERATED = ["assert add_one(1) == 2", "assert add_one(5) == 6", "assert add_one(-1) == 0", "assert add_one(0) == 2"]


@pytest.fixture(scope="module")
def execute():
    with Sandbox(timeout_s=5.0, parallelism=2) as sb:
        yield sb.run_many


def test_codet_scores_consensus_sets_as_codet_does():
    # solutions 0 and 3 pass tests {0, 1}; solution 1 passes {0, 1, 2}; solution 2 passes nothing
    passed = [[True, True, False], [True, True, True], [False, False, False], [True, True, False]]
    pick = codet_pick(passed)
    # set {0,3}: sqrt(2) * 2 = 2.83 beats set {1}: sqrt(1) * 3 = 3? no: 3 > 2.83, so solution 1 wins
    assert pick.index == 1 and pick.score == pytest.approx(3.0) and pick.groups == 3
    passed[2] = [True, True, False]  # now three solutions agree on two tests: sqrt(3) * 2 = 3.46 > 3
    pick = codet_pick(passed)
    assert pick.index == 0 and pick.score == pytest.approx(math.sqrt(3) * 2) and pick.group == 3


def test_codet_without_any_passed_test_keeps_the_first_sample():
    assert codet_pick([[False, False], [False, False]]).index == 0
    assert codet_pick([[], []]).index == 0  # no generated tests


def test_cluster_pick_takes_the_largest_cluster():
    assert cluster_pick(["x", "y", "y", None, "z", "y"]).index == 1
    assert cluster_pick(["x", "y", "x", "y"]).index == 0  # a tie goes to the cluster seen first
    assert cluster_pick([None, None]).index == 0


def test_codet_end_to_end_picks_the_right_solution(execute):
    # sample order puts wrong ones first: the first sample (what sampling alone would give) is wrong
    programs = [WRONG_A, BROKEN, WRONG_B, RIGHT, WRONG_A, RIGHT, RIGHT]
    [pick] = rerank("codet", [TASK], [programs], [GENERATED], execute)
    assert programs[pick.index] == RIGHT and pick.group == 3
    assert pick.score == pytest.approx(math.sqrt(3) * 3)  # three solutions agreeing on three tests


def test_clustering_end_to_end_picks_the_majority_behaviour(execute):
    programs = [WRONG_B, BROKEN, RIGHT, WRONG_A, RIGHT, "def add_one(x):\n    return 1 + x\n"]
    [pick] = rerank("cluster", [TASK], [programs], [GENERATED], execute)
    assert pick.index == 2 and pick.group == 3  # RIGHT, RIGHT and the rewritten RIGHT behave alike
    assert pick.groups == 3  # BROKEN does not load, so it is in no cluster


def test_clustering_handles_exceptions_and_hostile_outputs(execute):
    raises = "def add_one(x):\n    raise ValueError(x)\n"
    loops = "def add_one(x):\n    while True:\n        pass\n"
    programs = [loops, raises, raises, RIGHT]
    [pick] = rerank("cluster", [TASK], [programs], [GENERATED], execute)
    assert pick.index == 1 and pick.group == 2  # the two that raise alike form the largest cluster


def test_parse_asserts_keeps_calls_of_the_function_only():
    text = ("Here are tests:\n```python\nassert add_one(1) == 2\nassert add_one(1) == 2\nassert len([1]) == 1\n"
            "assert add_one(2) ==\nprint(add_one(3))\n  assert   add_one( 4 )==5\n```")
    assert parse_asserts(text, "add_one") == ["assert add_one(1) == 2", "assert add_one(4) == 5"]
    assert call_inputs(["assert add_one(1) == 2", "assert add_one(1) > 0", "assert add_one(x=3) == 4"],
                       "add_one") == ["add_one(1)", "add_one(x=3)"]


def test_the_tests_prompt_never_shows_hidden_tests(data_dir):
    tasks = load_mbpp(data_dir, MBPP_TEST_IDS)
    for ex in tasks:
        shown = prompt_for_tests(ex, "f", "def f(a, b):", 5)
        for line in ex.tests.splitlines():
            if line.strip():
                assert line.strip() not in shown, ex.id
    assert task_text(tasks[0]) == ("Write a python function to remove first and last occurrence of a given character "
                                  "from the string.")
    sols = ["def f(a, b):\n  return a", "x = 1\ndef f(a, b):\n    pass", "def f(a):\n    pass"]
    assert signature("f", sols) == "def f(a, b):"


def test_generated_tests_continue_the_prompts_first_assert(data_dir):
    """The test writer is a completion of CodeT's prompt ending in `assert name(`: each sample's text continues that
    assert and may add more, so the parsed tests start with the prefix the prompt supplied."""
    seen = []

    def generate(requests):
        seen.extend(requests)
        return [[Completion(r.request_id, "1) == 2\nassert add_one(5) == 6\nassert add_one(", [], [], "length", 0),
                 Completion(r.request_id, "1) == 2\nprint(add_one(3))\n", [], [], "stop", 0)] for r in requests]

    [tests] = generate_tests(generate, [TASK], [[RIGHT, WRONG_A]], m=5, samples=2, temperature=0.8, max_tokens=64)
    assert tests == ["assert add_one(1) == 2", "assert add_one(5) == 6"]
    [req] = seen
    assert not req.chat and req.prompt.endswith("# check the correctness of add_one\nassert add_one(")
    assert "def add_one(x):\n    pass" in req.prompt  # the signature the solutions use
    [he] = [ex for ex in load_humaneval(data_dir) if ex.id == "HumanEval/0"]
    shown = prompt_for_tests(he, "has_close_elements", "", 5)
    assert shown.startswith(he.stub.rstrip()) and "check(" not in shown
