"""Clean training data by default: crafted overlaps with the evaluation sets (a verbatim MBPP test prompt, a renamed
copy of a test task's solution, a shared assert) are removed from each training source the loop reads (an MBPP-train
-like exercise list, an sft.jsonl, a continued pre-training corpus), each named with the evaluation task it
matched; `data.allow_eval_overlap` keeps them and says so. Real benchmark files, real config, no Ray."""

import ast
import json

import pytest

from codealign.config import RunConfig, TrainConfig
from codealign.exercises.loaders import resolve_data_dir
from codealign.exercises.training_data import load_training_data

ROWS = {}


def mbpp(task_id):
    if not ROWS:
        with (resolve_data_dir() / "mbpp.jsonl").open() as fh:  # where the run itself reads it
            ROWS.update({r["task_id"]: r for r in map(json.loads, fh)})
    return ROWS[task_id]


def crafted():
    """name -> (prompt, solution, tests), and the evaluation task each copies (None: clean)."""
    woodall = mbpp(20)["code"].replace("is_woodall", "woodall_check")  # test task 20, function renamed
    return {
        "verbatim_prompt": (mbpp(216)["text"], "def contains_all(a, b):\n    return all(x in a for x in b)\n",
                            "assert contains_all([[1], [2]], [[2]]) == True\n", "mbpp/216"),
        "renamed_copy": ("Write a function telling whether x is a woodall number.", woodall,
                         "assert woodall_check(383) == True\nassert woodall_check(254) == False\n", "mbpp/20"),
        "shared_assert": ("Write a function that orders a matrix's rows by their sums.",
                          "def order_rows(m):\n    return sorted(m, key=sum)\n",
                          mbpp(12)["test_list"][0].replace("sort_matrix", "order_rows") + "\n", "mbpp/12"),
        "clean": ("Write a function that returns the larger of a pair of quantities.",
                  "def bigger(a, b):\n    return a if a >= b else b\n",
                  "assert bigger(1, 2) == 2\nassert bigger(5, 3) == 5\n", None),
    }


@pytest.fixture
def sources(tmp_path, data_dir):
    """A data directory whose MBPP file also holds the crafted tasks as ids 2001-2004 (a train split), an
    sft.jsonl of the same turns, and a corpus of one file per crafted task."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("HumanEval.jsonl.gz", "HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz"):
        (data / name).symlink_to(data_dir / name)
    rows = (data_dir / "mbpp.jsonl").read_text()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sft = []
    for n, (name, (text, code, tests, _)) in enumerate(crafted().items()):
        rows += json.dumps({"task_id": 2001 + n, "text": text, "code": code, "test_list": tests.splitlines(),
                            "test_setup_code": ""}) + "\n"
        sft.append(json.dumps({"prompt": text, "completion": f"```python\n{code}\n{tests}```"}))
        (corpus / f"{name}.py").write_text(f'"""{text}"""\n\n{code}\n\ndef test_it():\n' +
                                           "".join(f"    {line}\n" for line in tests.splitlines()))
    (data / "mbpp.jsonl").write_text(rows)
    (tmp_path / "sft.jsonl").write_text("\n".join(sft) + "\n")
    return data, tmp_path / "sft.jsonl", corpus


def config(data, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data_dir = str(data)
    cfg.data.train_ids = (2001, 2004)
    if train:
        cfg.train = TrainConfig(algorithm="sft", sft={k: str(v) for k, v in train.items()})
    return cfg


def expect_removed(found: dict, ids_of: dict[str, str], source: str) -> None:
    want = {ids_of[name]: task for name, (*_, task) in crafted().items() if task}
    assert {k: v["eval_task"] for k, v in found.items()} == want
    assert {v["source"] for v in found.values()} == {source}


def test_each_overlap_is_removed_from_each_source(sources):
    data, sft_file, corpus = sources
    names = list(crafted())

    mbpp_like = load_training_data(config(data))
    assert [ex.id for ex in mbpp_like.exercises] == ["mbpp/2004"]  # only the clean task is trained on
    expect_removed(mbpp_like.guard.found, {n: f"mbpp/{2001 + i}" for i, n in enumerate(names)}, "mbpp_train")

    turns = load_training_data(config(data, data_file=sft_file))
    assert [ex.source for ex in turns.corpus] == ["file:sft.jsonl:4"]
    found = {k: v for k, v in turns.guard.found.items() if v["source"] == "sft_data_file"}
    expect_removed(found, {n: f"file:sft.jsonl:{i + 1}" for i, n in enumerate(names)}, "sft_data_file")

    cpt = load_training_data(config(data, corpus_dir=corpus))
    assert [ex.source for ex in cpt.corpus] == ["corpus:clean.py"]
    found = {k: v for k, v in cpt.guard.found.items() if v["source"] == "corpus"}
    expect_removed(found, {n: f"corpus:{n}.py" for n in names}, "corpus")

    summary = cpt.guard.summary()["decontamination"]
    assert summary["removed"] == 6 and summary["allow_eval_overlap"] is False
    assert summary["items"]["corpus:renamed_copy.py"]["eval_task"] == "mbpp/20"
    assert "mbpp/2001" in cpt.guard.report_section()


def test_allow_eval_overlap_trains_on_them_and_says_so(sources):
    data, _, _ = sources
    cfg = config(data)
    cfg.data.allow_eval_overlap = True
    out = load_training_data(cfg)
    assert len(out.exercises) == 4
    assert out.guard.summary()["decontamination"]["overlapping_trained"] == 3
    assert out.guard.line().startswith("WARNING data.allow_eval_overlap: trained on 3 items")


def test_a_source_emptied_by_the_gate_is_refused(sources, tmp_path):
    data, _, _ = sources
    only = tmp_path / "only"
    only.mkdir()
    (only / "copy.py").write_text(mbpp(20)["code"].replace("is_woodall", "w"))
    with pytest.raises(ValueError, match="corpus_dir: every file overlaps"):
        load_training_data(config(data, corpus_dir=only))


def test_mbpp_train_by_default(data_dir):
    """The real MBPP train split: the word-for-word copies of test 216, 217 and 248 are not trained on."""
    cfg = RunConfig()
    cfg.data.data_dir = str(data_dir)
    out = load_training_data(cfg)
    found = out.guard.found
    assert {k: found[k]["eval_task"] for k in ("mbpp/872", "mbpp/602", "mbpp/704")} == {
        "mbpp/872": "mbpp/216", "mbpp/602": "mbpp/217", "mbpp/704": "mbpp/248"}
    assert len(out.exercises) + len(found) == 374
    assert not {ex.id for ex in out.exercises} & set(found)
    # the closing summary's "removed N of M": how many each source offered
    assert out.guard.summary()["decontamination"]["checked"] == {"mbpp_train": 374}


def test_stub_prompts_add_humaneval_form_of_the_clean_tasks_only(data_dir):
    """`data.stub_prompts`: each admitted MBPP train task also comes as a HumanEval-style stub to complete (the form
    HumanEval is evaluated in); a task the gate removed comes in neither form, and the removed count is unchanged."""
    from codealign.evaluation.prompts import PromptFormat
    from codealign.exercises.extract import as_answer
    from codealign.exercises.loaders import humaneval_prompt
    from codealign.sandbox import Sandbox, Verdict

    cfg = RunConfig()
    cfg.data.data_dir = str(data_dir)
    plain = load_training_data(cfg)
    cfg.data.stub_prompts = True
    both = load_training_data(cfg)
    assert len(both.guard.found) == len(plain.guard.found) == 47
    stubs = {ex.id: ex for ex in both.exercises if ex.id.endswith("/stub")}
    tasks = {ex.id: ex for ex in both.exercises if not ex.id.endswith("/stub")}
    assert tasks.keys() == {ex.id for ex in plain.exercises}
    assert {i.removesuffix("/stub") for i in stubs} <= tasks.keys()
    assert len(stubs) >= 0.95 * len(tasks)  # a reference that defines no called function has no stub form
    assert "mbpp/872/stub" not in stubs  # test 216's copy
    ex, task = stubs["mbpp/601/stub"], tasks["mbpp/601"]
    row = mbpp(601)
    assert ex.prompt == humaneval_prompt(ex.stub) and ex.tests == task.tests and ex.reference == task.reference
    assert ex.stub.startswith(f"def {ex.entry_point}(") and row["text"] in ex.stub
    first = ast.parse(row["test_list"][0]).body[0].test  # an example: the first assert's call and its value
    assert f">>> {ast.unparse(first.left)}\n    {ast.unparse(first.comparators[0])}" in ex.stub
    # the reference, answered in full the way HumanEval's chat answers are, passes its tests in the sandbox
    program = PromptFormat("chat").program(ex, as_answer(ex.reference))
    with Sandbox(timeout_s=5.0) as box:
        assert box.run(program, ex.tests).verdict is Verdict.PASSED


def test_reformat_references_trains_on_the_same_programs_in_one_layout(data_dir):
    """`data.reformat_references`: MBPP's reference solutions come with the collection's CRLF line ends and 2-space
    or tab indents (972 of 974); re-printed from their syntax tree they are the same programs (equal ASTs) with LF
    line ends and 4-space indents, and they still pass their tests in the sandbox. Stub forms get them too."""
    from codealign.evaluation.prompts import PromptFormat
    from codealign.exercises.extract import as_answer
    from codealign.sandbox import Sandbox, Verdict

    cfg = RunConfig()
    cfg.data.data_dir = str(data_dir)
    cfg.data.stub_prompts = True
    plain = {ex.id: ex for ex in load_training_data(cfg).exercises}
    cfg.data.reformat_references = True
    reformatted = {ex.id: ex for ex in load_training_data(cfg).exercises}
    assert reformatted.keys() == plain.keys()
    assert sum("\r" in ex.reference for ex in plain.values()) > 0.9 * len(plain)
    assert not any("\r" in ex.reference for ex in reformatted.values())
    for key, ex in reformatted.items():
        assert ast.dump(ast.parse(ex.reference)) == ast.dump(ast.parse(plain[key].reference)), key
        assert (ex.prompt, ex.tests, ex.stub) == (plain[key].prompt, plain[key].tests, plain[key].stub)
    tabbed = next(k for k, ex in plain.items() if "\t" in ex.reference)
    assert "\t" not in reformatted[tabbed].reference and "\n    " in reformatted[tabbed].reference
    with Sandbox(timeout_s=5.0) as box:
        for key in ("mbpp/601", tabbed, "mbpp/601/stub"):
            ex = reformatted[key]
            program = PromptFormat("chat").program(ex, as_answer(ex.reference))
            assert box.run(program, ex.tests).verdict is Verdict.PASSED, key


def test_odd_references_get_no_stub_or_the_bound_one_and_reformat_never_raises():
    """What MBPP does not contain but a user's exercise file may: an `async def` the asserts call has no stub form
    (not a crash while loading the training data); of two definitions of a name the stub shows the one Python binds
    (the last); a helper the asserts do not call is not the entry point; code that does not parse, or holds a NUL
    byte, comes back from reformat_code with LF line ends instead of raising."""
    from codealign.exercises.extract import called_function
    from codealign.exercises.loaders import mbpp_prompt, mbpp_stub_form, reformat_code
    from codealign.records import Exercise

    tests = ["assert f(1) == 2", "assert f(2) == 3"]

    def exercise(reference):
        return Exercise("mbpp/9999", mbpp_prompt("Write f.", tests), "\n".join(tests) + "\n", "", "mbpp", reference)

    assert mbpp_stub_form(exercise("async def f(x):\n    return x + 1\n")) is None
    twice = mbpp_stub_form(exercise("def f(a):\n    return a\n\ndef f(x, y=1):\n    return x + y\n"))
    assert twice.stub.startswith("def f(x, y=1):") and twice.entry_point == "f"
    assert called_function("def helper(x):\n    return x\n\ndef f(x):\n    return helper(x) + 1\n", tests) == "f"
    assert called_function("def g(x):\n    return x\n", tests) == ""
    assert reformat_code("def f(:\r\n  pass\r\n") == "def f(:\n  pass\n"
    assert reformat_code("x = 1\r\n\x00\r\n") == "x = 1\n\x00\n"
