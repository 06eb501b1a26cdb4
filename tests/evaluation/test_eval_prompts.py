"""The chat and completion prompt formats and how an answer becomes the judged program, also on recorded real
SmolLM2 answers."""

import json
from pathlib import Path

import pytest

from codealign.evaluation.benchmarks import load_benchmark
from codealign.evaluation.prompts import STUB_STOPS, PromptFormat, defines, entry_point_of
from codealign.sandbox import Sandbox


@pytest.fixture(scope="module")
def humaneval(data_dir):
    return {ex.id: ex for ex in load_benchmark("humaneval", data_dir)}


@pytest.fixture(scope="module")
def mbpp(data_dir):
    return {ex.id: ex for ex in load_benchmark("mbpp", data_dir)}


def test_chat_format_sends_the_instruction_through_the_chat_template(humaneval, mbpp):
    fmt = PromptFormat("chat")
    req = fmt.request(humaneval["HumanEval/0"], n=2, temperature=0.5, max_tokens=64)
    assert req.chat is True and req.stop == [] and req.n == 2
    assert req.prompt.startswith("Complete the following Python function.") and "def has_close_elements" in req.prompt
    req = fmt.request(mbpp["mbpp/11"], n=1, temperature=0.0, max_tokens=64)
    assert "Your code should pass these tests" in req.prompt and "assert remove_Occ" in req.prompt


def test_completion_format_continues_the_stub_with_codex_stops(humaneval, mbpp):
    fmt = PromptFormat("completion")
    ex = humaneval["HumanEval/0"]
    req = fmt.request(ex, n=1, temperature=0.0, max_tokens=64)
    assert req.chat is False and req.prompt == ex.stub and req.stop == STUB_STOPS
    assert fmt.program(ex, "    return True\n") == ex.stub + "    return True\n"
    req = fmt.request(mbpp["mbpp/11"], n=1, temperature=0.0, max_tokens=64)
    assert req.chat is False and req.prompt.startswith('"""\n') and req.prompt.endswith('"""\n\n')
    assert fmt.program(mbpp["mbpp/11"], "def f():\n    pass\n") == "def f():\n    pass\n"


def test_chat_answers_become_programs_that_keep_the_stub(humaneval):
    fmt = PromptFormat("chat")
    ex = humaneval["HumanEval/2"]  # truncate_number
    whole = "Sure:\n```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n```\nDone."
    body = "```python\n    return number % 1.0\n```"
    with Sandbox() as sb:
        assert sb.run(fmt.program(ex, whole), ex.tests).passed  # redefines the stub's function
        assert sb.run(fmt.program(ex, body), ex.tests).passed  # continues the stub
    assert fmt.program(ex, whole).startswith(ex.stub + "\n")


def test_entry_point_and_definitions(mbpp):
    assert entry_point_of(mbpp["mbpp/11"]) == "remove_Occ"
    assert defines("def f(x):\n    return x\n", "f") and not defines("def g():\n    def f(): pass\n", "f")
    assert defines("def f(x):\n    return (\n", "f")  # does not parse: the regex still sees the definition


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'plain'"):
        PromptFormat("plain")


def test_recorded_smollm2_answers_become_the_programs_plain_python_judges(data_dir):
    """Ten greedy chat answers of the embedded SmolLM2-135M-Instruct, recorded from `launch.py run` on HumanEval,
    MBPP test and MBPP validation (tests/data/smollm2_answers.jsonl): one closed python block followed by prose, a
    block with the model's own example prints, a block cut off at max_tokens. The program is the block's code alone
    (prose dropped, an unclosed block taken to the end), and the sandbox's verdict on it is the recorded one."""
    from codealign.exercises.extract import extract_code

    rows = [json.loads(line) for line in (Path(__file__).parents[1] / "data" / "smollm2_answers.jsonl").open()]
    tasks = {spec: {ex.id: ex for ex in load_benchmark(spec, data_dir)} for spec in {r["benchmark"] for r in rows}}
    assert {r["verdict"] for r in rows} >= {"passed", "failed", "runtime_error", "syntax_error"}
    fmt = PromptFormat("chat")
    programs = []
    for row in rows:
        code = extract_code(row["text"])
        assert code == row["code"], row["task_id"]
        assert "```" not in code and "This function" not in code  # the fences and the prose are not code
        ex = tasks[row["benchmark"]][row["task_id"]]
        programs.append((fmt.program(ex, row["text"]), ex.tests))
    cut = [r for r in rows if r["text"].count("```") == 1]
    assert cut and all(extract_code(r["text"]).startswith("def ") for r in cut)  # cut-off blocks still extracted
    with Sandbox(timeout_s=10) as sb:
        verdicts = [r.verdict.value for r in sb.run_many(programs)]
    assert verdicts == [r["verdict"] for r in rows]
