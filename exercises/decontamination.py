"""Drop exercises that overlap an evaluation set the project ships: HumanEval, HumanEval+, MBPP test (11-510)
and validation (511-600).

Two checks, each naming the benchmark task matched:
- exact substring (ignoring whitespace and the kind of quotes, so reformatting does not hide a copy): a
  benchmark prompt, solution or test assert (at least `min_chars` long) inside
  the exercise's prompt, reference or tests; and an exercise's own assert line inside a benchmark's tests (the
  only check HumanEval+'s 10 MB of inlined inputs get: their n-grams are mostly number lists);
- a renamed copy: the same two checks after every function name is replaced by one placeholder (the names a
  text defines by `def`, HumanEval's entry points and `candidate`, and in an assert every call that is not a
  builtin), so `def woodall_check` copied from `def is_woodall`, or `assert order_rows(...) == ...` from
  `assert sort_matrix(...) == ...`, is still the benchmark's (an assert shared by two benchmark tasks is
  boilerplate and not counted);
- n-gram overlap: any word 10-gram shared with a benchmark prompt, solution or test. Not counted: n-grams common
  to two benchmark tasks (boilerplate) and n-grams with fewer than 4 informative words (number lists, loops,
  "write a python function to check whether the given").

The same checks take any training text (`check_text`): an exercise, a chat turn to imitate, a whole corpus file.
"""

from __future__ import annotations

import builtins
import gzip
import json
import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codealign.exercises.loaders import HUMANEVAL_FILE, MBPP_FILE, require_data_file
from codealign.records import Exercise

HUMANEVAL_PLUS_FILE = "HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz"
MBPP_EVAL_RANGE = (11, 600)  # test 11-510 and validation 511-600
_WORD = re.compile(r"\w+")


def squash(text: str) -> str:
    return " ".join(text.split())


def _canon(text: str) -> str:
    """What a copy keeps when it is reformatted (ast.unparse, another formatter): no whitespace, one quote."""
    return "".join(text.split()).replace("'", '"')


_DEF = re.compile(r"\bdef\s+([A-Za-z_]\w*)")
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_PYTHON_NAMES = set(dir(builtins)) | set(keyword.kwlist)
RENAMED = "F"  # the placeholder every function name becomes


def anonymise(code: str, names: Sequence[str] = ()) -> str:
    """`code` with every function it defines (and `names`) called RENAMED: a renamed copy reads the same."""
    found = set(_DEF.findall(code)) | set(names)
    if not found:
        return code
    return re.sub(r"\b(?:" + "|".join(map(re.escape, sorted(found))) + r")\b", RENAMED, code)


def assert_key(line: str) -> str:
    """An assert statement whatever the function it tests is called: every call of a non-builtin is RENAMED."""
    line = anonymise(line, ("candidate",))
    return _canon(_CALL.sub(lambda m: m.group(0) if m.group(1) in _PYTHON_NAMES else RENAMED + "(", line))


def assert_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("assert")]


@dataclass
class BenchmarkPiece:
    task: str  # e.g. "HumanEval/0", "mbpp/11"
    field: str  # "prompt", "solution", "test"
    text: str  # whitespace-normalised
    ngrams: bool = True  # indexed for n-gram overlap
    substring: bool = True  # looked for as a substring
    names: tuple[str, ...] = ()  # function names it uses without defining them (HumanEval's entry point)


@dataclass
class Contamination:
    task: str
    field: str
    kind: str  # "substring" or "ngram"
    match: str  # the matched text (shortened)


def load_benchmarks(data_dir: str | Path) -> list[BenchmarkPiece]:
    data_dir = Path(data_dir)
    pieces: list[BenchmarkPiece] = []
    with gzip.open(require_data_file(data_dir, HUMANEVAL_FILE), "rt") as fh:
        for row in map(json.loads, fh):
            names = (row["entry_point"],)
            pieces += [BenchmarkPiece(row["task_id"], "prompt", squash(row["prompt"]), names=names),
                       BenchmarkPiece(row["task_id"], "solution", squash(row["canonical_solution"]), names=names),
                       BenchmarkPiece(row["task_id"], "test", row["test"])]
    with gzip.open(require_data_file(data_dir, HUMANEVAL_PLUS_FILE), "rt") as fh:
        for row in map(json.loads, fh):
            task = row["task_id"].replace("HumanEval", "HumanEval+")
            names = (row["entry_point"],)
            pieces += [BenchmarkPiece(task, "prompt", squash(row["prompt"]), names=names),
                       BenchmarkPiece(task, "solution", squash(row["canonical_solution"]), names=names),
                       BenchmarkPiece(task, "test", squash(row["test"]), ngrams=False)]
    with require_data_file(data_dir, MBPP_FILE).open() as fh:
        for row in map(json.loads, fh):
            tid = int(row["task_id"])
            if not MBPP_EVAL_RANGE[0] <= tid <= MBPP_EVAL_RANGE[1]:
                continue
            task = f"mbpp/{tid}"
            pieces += [BenchmarkPiece(task, "prompt", squash(row["text"])),
                       BenchmarkPiece(task, "solution", squash(row["code"]))]
            pieces += [BenchmarkPiece(task, "test", squash(t), ngrams=False) for t in row["test_list"]]
            pieces.append(BenchmarkPiece(task, "tests", squash("\n".join(row["test_list"])), substring=False))
    return pieces


# Words that say nothing about which task a text is: English glue, Python keywords and builtins, and the
# phrasing every MBPP task shares ("write a python function to check whether the given ...").
_GENERIC = set(keyword.kwlist) | {name.lower() for name in dir(builtins)} | {
    "the", "and", "that", "this", "with", "from", "into", "are", "its", "can", "all", "each", "has", "have", "not",
    "any", "one", "two", "write", "python", "function", "given", "find", "check", "whether", "program", "return",
    "returns", "number", "numbers", "value", "values", "assert", "self", "true", "false", "none", "elif", "else"}
MIN_INFORMATIVE = 4  # of an n-gram's words; number lists and `for i in range(n)` loops match everywhere


def _informative(gram: tuple[str, ...]) -> bool:
    return sum(len(w) >= 3 and not w.isdigit() and w not in _GENERIC for w in gram) >= MIN_INFORMATIVE


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The word n-grams of `text` that could identify a task (enough informative words)."""
    words = _WORD.findall(text.lower())
    return {g for g in (tuple(words[i : i + n]) for i in range(len(words) - n + 1)) if _informative(g)}


@dataclass
class Decontaminator:
    pieces: list[BenchmarkPiece]
    ngram: int = 10
    min_chars: int = 20  # (without whitespace) shorter benchmark strings would match innocent code
    min_renamed_chars: int = 40  # a renamed one-liner (`def F(a,b): return a+b`) is anyone's code
    _index: dict[tuple[str, ...], int] = field(default_factory=dict, init=False)
    _canon: list[str] = field(default_factory=list, init=False)
    _renamed: list[str] = field(default_factory=list, init=False)
    _asserts: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # An n-gram found in two different benchmark tasks is boilerplate ("write a python function to check
        # whether the given number is"), not a leak of either: only task-specific n-grams are indexed.
        self._canon = [_canon(p.text) for p in self.pieces]
        self._renamed = [_canon(anonymise(p.text, p.names)) if p.field in ("prompt", "solution") else ""
                         for p in self.pieces]
        shared: set[tuple[str, ...]] = set()
        owner: dict[tuple[str, ...], str] = {}
        for i, piece in enumerate(self.pieces):
            if not piece.ngrams:
                continue
            task = piece.task.replace("HumanEval+", "HumanEval")
            for gram in word_ngrams(piece.text, self.ngram):
                if owner.setdefault(gram, task) != task:
                    shared.add(gram)
                self._index.setdefault(gram, i)
        for gram in shared:
            del self._index[gram]
        # the same for asserts: `assert True, "This prints if this assert fails"` is in many HumanEval tasks
        shared_keys: set[str] = set()
        key_owner: dict[str, str] = {}
        for i, piece in enumerate(self.pieces):
            if piece.field != "test" or piece.task.startswith("HumanEval+"):
                continue  # HumanEval+'s asserts are HumanEval's, its extra inputs sit in lists
            for line in assert_lines(piece.text):
                key = assert_key(line)
                if len(key) < self.min_chars:
                    continue
                if key_owner.setdefault(key, piece.task) != piece.task:
                    shared_keys.add(key)
                self._asserts.setdefault(key, i)
        for key in shared_keys:
            del self._asserts[key]

    def check(self, ex: Exercise) -> Contamination | None:
        return self.check_text(f"{ex.prompt}\n{ex.reference}\n{ex.tests}", ex.tests.splitlines())

    def check_text(self, text: str, test_lines: Sequence[str] | None = None) -> Contamination | None:
        """The first benchmark piece found in `text`, or None. `test_lines` (default: the assert lines of `text`)
        are also looked for inside the benchmarks' tests."""
        body = squash(text)
        flat = _canon(body)
        for piece, canon in zip(self.pieces, self._canon):
            if piece.substring and len(canon) >= self.min_chars and canon in flat:
                return Contamination(piece.task, piece.field, "substring", piece.text[:120])
        renamed = _canon(anonymise(text))
        for piece, canon in zip(self.pieces, self._renamed):
            if len(canon) >= self.min_renamed_chars and canon in renamed:
                return Contamination(piece.task, piece.field, "renamed", piece.text[:120])
        lines = assert_lines(text) if test_lines is None else test_lines
        own_lines = [_canon(line) for line in lines]
        own_lines = [line for line in own_lines if len(line) >= self.min_chars]
        for piece, canon in zip(self.pieces, self._canon):
            if piece.field == "test":
                for line in own_lines:
                    if line in canon:
                        return Contamination(piece.task, "test", "substring", line[:120])
        for line in assert_lines("\n".join(lines)):
            i = self._asserts.get(assert_key(line))
            if i is not None:
                return Contamination(self.pieces[i].task, "test", "renamed", line[:120])
        for gram in word_ngrams(body, self.ngram):
            if gram in self._index:
                piece = self.pieces[self._index[gram]]
                return Contamination(piece.task, piece.field, "ngram", " ".join(gram))
        return None

    def filter(self, exercises: Sequence[Exercise]) -> tuple[list[Exercise], dict[str, Contamination]]:
        kept, found = [], {}
        for ex in exercises:
            hit = self.check(ex)
            if hit is None:
                kept.append(ex)
            else:
                found[ex.id] = hit
        return kept, found
