"""The data filters on crafted exercises: each failure mode of validation, exact and near duplicates, benchmark
contamination, and `launch.py generate-data --input` end to end (real sandbox, real files, real datasets)."""

import json

import pytest

from codealign.exercises.decontamination import Decontaminator, load_benchmarks
from codealign.exercises.dedup import deduplicate
from codealign.exercises.validation import stub_of, validate
from codealign.records import Exercise
from codealign.sandbox import Sandbox

GOOD_REF = "def add(a, b):\n    return a + b\n"
GOOD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(10, 5) == 15\n"


def ex(id_, reference=GOOD_REF, tests=GOOD_TESTS, prompt=None):
    return Exercise(id=id_, prompt=prompt or f"Write add ({id_}).", tests=tests, reference=reference)


CRAFTED = {
    "sound": ex("sound"),
    "ref_none": ex("ref_none", "def add(a, b):\n    a + b\n"),
    "ref_fails": ex("ref_fails", "def add(a, b):\n    return a - b\n"),
    "indent": ex("indent", "def add(a, b):\nreturn a + b\n"),
    "tests_indent": ex("tests_indent", tests="  assert add(1, 2) == 3\n assert add(2, 2) == 4\n"),
    "no_import": ex("no_import", "def add(a, b):\n    return math.floor(a + b)\n"),
    "no_library": ex("no_library", "import numpyzz\ndef add(a, b):\n    return a + b\n"),
    "stdin": ex("stdin", tests="x = int(input())\nassert add(x, 1) == 2\n"),
    "network": ex("network", tests="import socket\nsocket.create_connection(('10.0.0.1', 80), 1)\n"
                                   "assert add(1, 1) == 2\n"),
    "hang": ex("hang", tests="while True:\n    pass\n"),
    "stub": ex("stub", "def check_all(xs):\n    for x in xs:\n        print(x)\n",
               tests="assert check_all([1, 2]) is None\n"),
}
EXPECTED = {
    "sound": "", "ref_none": "returns_nothing", "ref_fails": "reference_fails_tests",
    "indent": "reference_broken_indentation", "tests_indent": "tests_broken_indentation",
    "no_import": "missing_import", "no_library": "missing_library", "stdin": "tests_read_stdin",
    "network": "tests_need_network", "hang": "tests_hang", "stub": "stub_passes",
}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(timeout_s=2.0, parallelism=2) as box:
        yield box


def test_validation_gives_each_failure_mode_its_reason(sandbox):
    report = validate(list(CRAFTED.values()), sandbox.run_many, repeats=2)
    got = {k: report.results[k].reason for k in EXPECTED}
    assert got == EXPECTED
    assert report.results["sound"].reference == GOOD_REF


def test_nondeterministic_tests_are_caught_by_running_twice(sandbox):
    # passes with probability 1/2 per run: over 8 runs, always-pass or always-fail has probability 2/256
    flaky = ex("flaky", "import random\ndef add(a, b):\n    return a + b + random.choice([0, 1])\n",
               tests="assert add(1, 2) == 3\n")
    report = validate([flaky], sandbox.run_many, repeats=8)
    assert report.results["flaky"].reason == "nondeterministic_tests"


def test_candidates_stand_in_for_a_missing_reference(sandbox):
    picked = Exercise("picked", "Write add.", GOOD_TESTS)
    hopeless = Exercise("hopeless", "Write add.", GOOD_TESTS)
    wrong = "def add(a, b):\n    return a * b\n"
    report = validate([picked, hopeless], sandbox.run_many, repeats=1,
                      candidates={"picked": [wrong, GOOD_REF, wrong], "hopeless": [wrong, wrong]})
    assert report.results["picked"].ok and report.results["picked"].reference == GOOD_REF
    assert report.results["hopeless"].reason == "no_candidate_passes"


def test_stub_keeps_signatures_and_drops_bodies():
    stub = stub_of("import math\ndef f(x, y=2):\n    '''doc'''\n    return math.sqrt(x) * y\n")
    assert "def f(x, y=2):" in stub and "pass" in stub and "sqrt" not in stub


def test_exact_and_near_duplicates_go_within_the_set_and_against_held_data():
    base = ex("a", prompt="Write a function that returns the sum of the squares of all even numbers in a list "
                          "of integers, ignoring negative numbers and zeros entirely. The list may be empty, in which "
                          "case the function returns zero; it never modifies the list it is given and works "
                          "for any length.",
              reference="def f(xs):\n    return sum(x * x for x in xs if x > 0 and x % 2 == 0)\n")
    same_code = ex("b", prompt="Totally different words here.",
                   reference="def f(xs):\n    # a comment\n    return sum(x*x for x in xs if x>0 and x%2==0)\n")
    near = ex("c", prompt=base.prompt.replace("The list may", "Your list may"),
              reference=base.reference.replace("x > 0", "x >= 1"))
    other = ex("d", prompt="Reverse the words of a sentence, keeping punctuation attached to each word.",
               reference="def g(s):\n    return ' '.join(reversed(s.split()))\n")
    held = [ex("held/1", prompt="Reverse the words of a sentence, keeping punctuation attached to each word!",
               reference="def g(s):\n    return ' '.join(reversed(s.split()))\n")]
    result = deduplicate([base, same_code, near, other], held)
    assert [e.id for e in result.kept] == ["a"]
    assert result.dropped == {"b": ("exact_duplicate", "a"), "c": ("near_duplicate", "a"),
                              "d": ("exact_duplicate", "held/1")}


@pytest.fixture(scope="module")
def decontaminator(data_dir):
    return Decontaminator(load_benchmarks(data_dir))


def test_decontamination_names_the_benchmark_task(decontaminator, data_dir):
    rows = {json.loads(line)["task_id"]: json.loads(line) for line in open(data_dir / "mbpp.jsonl")}
    copied_test = ex("copied", tests=rows[11]["test_list"][0] + "\n")
    reworded = ex("ngram", prompt="Please " + rows[600]["text"].lower())  # validation split, same 10 words
    he_solution = ex("he", reference="def has_close_elements(numbers, threshold):\n"
                                     "    for idx, elem in enumerate(numbers):\n"
                                     "        for idx2, elem2 in enumerate(numbers):\n"
                                     "            if idx != idx2:\n"
                                     "                distance = abs(elem - elem2)\n")
    train_task = ex("train", prompt=rows[700]["text"], tests=rows[700]["test_list"][0] + "\n")  # MBPP train: fine
    kept, found = decontaminator.filter([copied_test, reworded, he_solution, train_task, ex("clean")])
    assert [e.id for e in kept] == ["train", "clean"]
    assert (found["copied"].task, found["copied"].kind) == ("mbpp/11", "substring")
    assert (found["ngram"].task, found["ngram"].kind) == ("mbpp/600", "ngram")
    assert found["he"].task in ("HumanEval/0", "HumanEval+/0")


def test_humaneval_plus_tests_catch_a_copied_assert(decontaminator, data_dir):
    # an input list that only HumanEval+'s extra tests contain
    import gzip

    from codealign.exercises.decontamination import HUMANEVAL_PLUS_FILE

    row = json.loads(gzip.open(data_dir / HUMANEVAL_PLUS_FILE, "rt").readline())
    start = row["test"].index("inputs = ")
    snippet = row["test"][start : start + 200].splitlines()[0][:120]
    hit = decontaminator.check(ex("plus", tests=f"{snippet}\nassert add(1, 2) == 3\n"))
    assert hit is not None and hit.task == "HumanEval+/0" and hit.field == "test"


def _run_cli(*argv):
    from codealign.pipeline.cli import main

    return main(["generate-data", *argv])


def test_generate_data_input_end_to_end(tmp_path, data_dir):
    src = tmp_path / "in.jsonl"
    rows = [{"id": k, "prompt": e.prompt, "tests": e.tests, "reference": e.reference} for k, e in CRAFTED.items()]
    rows.append({"id": "dup_of_sound", "prompt": CRAFTED["sound"].prompt, "tests": GOOD_TESTS,
                 "reference": GOOD_REF})
    mbpp11 = json.loads(open(data_dir / "mbpp.jsonl").readlines()[10])
    rows.append({"id": "leak", "prompt": mbpp11["text"], "tests": "\n".join(mbpp11["test_list"]) + "\n",
                 "reference": mbpp11["code"]})
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert _run_cli("--input", str(src), "--out", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == ["sound"]
    assert report["dropped"]["dup_of_sound"] == "exact_duplicate"
    assert report["dropped"]["leak"] == "contaminated"
    assert report["details"]["leak"]["benchmark_task"] == "mbpp/11"
    assert report["dropped"]["stdin"] == "tests_read_stdin"
    assert sum(report["counts"].values()) == len(rows) - 1
    from codealign.exercises.dataset import load
    from codealign.exercises.schema import load_exercises_jsonl

    loaded = load(out)
    assert [e.id for e in loaded] == ["sound"] and loaded[0].reference == GOOD_REF
    exported = load_exercises_jsonl(out / "exercises.jsonl")
    assert exported[0].tests == GOOD_TESTS
    line = json.loads((out / "exercises.jsonl").read_text())
    assert line["validation"] == "passed" and line["contamination"] == "clean" and line["dedup_cluster"] == "sound"


def test_generate_data_bad_input_names_line_and_field_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "p", "tests": "assert 1"}) + "\n"
                   + json.dumps({"id": "b", "prompt": "p"}) + "\n")
    out = tmp_path / "out"
    assert _run_cli("--input", str(src), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "'tests'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
    assert _run_cli("--input", str(tmp_path / "missing.jsonl"), "--out", str(out)) == 2
    assert "cannot read" in capsys.readouterr().err and not out.exists()
