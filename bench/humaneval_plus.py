"""HumanEval+ (EvalPlus v0.1.10, OriginFmt) for the sandbox's own tests and benchmark, plus a plain-`python`
reference runner and wrong programs made from correct ones. Private to bench/ and tests/: the project's loader
of record is exercises/loaders.py."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PLUS_FILE = "HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz"
BASE_FILE = "HumanEval.jsonl.gz"
BROKEN_PLUS = {"HumanEval/32"}  # its plus check raises TypeError even on the canonical solution (upstream)


@dataclass(frozen=True)
class PlusTask:
    id: str
    prompt: str
    canonical: str  # the body: prompt + canonical is the program
    tests: str  # check(...) and the call of it
    entry_point: str

    @property
    def program(self) -> str:
        return self.prompt + self.canonical


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_plus(data_dir) -> list[PlusTask]:
    data_dir = Path(data_dir)
    base = {r["task_id"]: r for r in _rows(data_dir / BASE_FILE)}
    tasks = []
    for r in _rows(data_dir / PLUS_FILE):
        test = base[r["task_id"]]["test"] if r["task_id"] in BROKEN_PLUS else r["test"]
        tasks.append(PlusTask(r["task_id"], r["prompt"], r["canonical_solution"],
                              f"{test}\ncheck({r['entry_point']})\n", r["entry_point"]))
    return tasks


def plain_verdict(program: str, tests: str, timeout: float = 20.0) -> str:
    """The verdict of one plain `python` process running program then tests, from a file in a scratch directory:
    passed, failed (AssertionError), runtime_error (any other exception or exit status), timeout."""
    with tempfile.TemporaryDirectory() as where:
        path = os.path.join(where, "program.py")
        with open(path, "w") as fh:
            fh.write(program + "\n" + tests)
        try:
            proc = subprocess.run([sys.executable, path], cwd=where, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
        except subprocess.TimeoutExpired:
            return "timeout"
    if proc.returncode == 0:
        return "passed"
    lines = proc.stderr.strip().splitlines()
    return "failed" if lines and lines[-1].startswith("AssertionError") else "runtime_error"


# -- wrong programs ----------------------------------------------------------------------------------------------
def _swap_first(pattern: str, repl, text: str) -> str | None:
    new, n = re.subn(pattern, repl, text, count=1)
    return new if n else None


MUTATIONS = {
    "flip_comparison": lambda body: _swap_first(r"(?<![<>=!])(<=|>=|<|>)(?!=)",
                                                lambda m: {"<": ">=", ">": "<=", "<=": ">", ">=": "<"}[m.group(1)],
                                                body),
    "off_by_one": lambda body: _swap_first(r"\brange\(([^()]*)\)", lambda m: f"range({m.group(1)} - 1)", body),
    "eq_flip": lambda body: _swap_first(r"==", "!=", body),
    "plus_one": lambda body: _swap_first(r"(\s)return (?!None\b)([^\n]+)", r"\1return (\2) + 1", body),
}


def body_indent(body: str) -> str:
    first = next((line for line in body.splitlines() if line.strip()), "    ")
    return first[: len(first) - len(first.lstrip())] or "    "


def mutants(body: str) -> dict[str, str]:
    """Wrong variants of a function body: mutated operators, and bodies that return the wrong kind of thing."""
    out = {}
    for name, fn in MUTATIONS.items():
        new = fn(body)
        if new is not None and new != body:
            out[name] = new
    ind = body_indent(body)
    out["return_none"] = f"{ind}return None\n"
    out["wrong_type"] = f"{ind}return 'not it'\n"
    # the right answer's items, one by one, as a generator: wrong wherever a list (or a scalar) is expected
    inner = "\n".join(("    " + line) if line.strip() else line for line in body.splitlines())
    out["generator_instead"] = (f"{ind}def _inner():\n{inner}\n{ind}_r = _inner()\n"
                                f"{ind}yield from (_r if isinstance(_r, (list, tuple)) else [_r])\n")
    return out


def wrapped_mutants(code: str, name: str) -> dict[str, str]:
    """Wrong variants of a whole program: its function `name` wrapped to return the wrong kind of thing, and
    operator mutations of the program text."""
    out = {}
    for kind, fn in MUTATIONS.items():
        new = fn(code)
        if new is not None and new != code:
            out[kind] = new
    head = f"\n_original_{name} = {name}\ndef {name}(*a, **k):\n    r = _original_{name}(*a, **k)\n"
    out["return_none"] = code + head + "    return None\n"
    out["wrong_type"] = code + head + "    return str(r)\n"
    out["generator_instead"] = code + head + "    yield from (r if isinstance(r, (list, tuple)) else [r])\n"
    return out


def tested_name(tests: str) -> str | None:
    m = re.search(r"assert\s+\(?\s*(?:set\(|sorted\(|math\.isclose\()?\s*([A-Za-z_]\w*)\(", tests)
    return m.group(1) if m else None
