"""Drop exercises that overlap an evaluation set the project ships: HumanEval, HumanEval+, MBPP test (11-510)
and validation (511-600).

Two checks, each naming the benchmark task matched:
- exact substring (ignoring whitespace and the kind of quotes, so reformatting does not hide a copy): a
  benchmark prompt, solution or test assert (at least `min_chars` long) inside
  the exercise's prompt, reference or tests; and an exercise's own assert line inside a benchmark's tests (the
  only check HumanEval+'s 10 MB of inlined inputs get: their n-grams are mostly number lists);
- n-gram overlap: any word 10-gram shared with a benchmark prompt, solution or test. Not counted: n-grams common
  to two benchmark tasks (boilerplate) and n-grams with fewer than 4 informative words (number lists, loops,
  "write a python function to check whether the given").
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

from codealign.records import Exercise
from exercises.loaders import HUMANEVAL_FILE, MBPP_FILE, require_data_file

HUMANEVAL_PLUS_FILE = "HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz"
MBPP_EVAL_RANGE = (11, 600)  # test 11-510 and validation 511-600
_WORD = re.compile(r"\w+")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _canon(text: str) -> str:
    """What a copy keeps when it is reformatted (ast.unparse, another formatter): no whitespace, one quote."""
    return "".join(text.split()).replace("'", '"')


@dataclass
class BenchmarkPiece:
    task: str  # e.g. "HumanEval/0", "mbpp/11"
    field: str  # "prompt", "solution", "test"
    text: str  # whitespace-normalised
    ngrams: bool = True  # indexed for n-gram overlap
    substring: bool = True  # looked for as a substring


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
            pieces += [BenchmarkPiece(row["task_id"], "prompt", _squash(row["prompt"])),
                       BenchmarkPiece(row["task_id"], "solution", _squash(row["canonical_solution"])),
                       BenchmarkPiece(row["task_id"], "test", _squash(row["test"]))]
    with gzip.open(require_data_file(data_dir, HUMANEVAL_PLUS_FILE), "rt") as fh:
        for row in map(json.loads, fh):
            task = row["task_id"].replace("HumanEval", "HumanEval+")
            pieces += [BenchmarkPiece(task, "prompt", _squash(row["prompt"])),
                       BenchmarkPiece(task, "solution", _squash(row["canonical_solution"])),
                       BenchmarkPiece(task, "test", _squash(row["test"]), ngrams=False)]
    with require_data_file(data_dir, MBPP_FILE).open() as fh:
        for row in map(json.loads, fh):
            tid = int(row["task_id"])
            if not MBPP_EVAL_RANGE[0] <= tid <= MBPP_EVAL_RANGE[1]:
                continue
            task = f"mbpp/{tid}"
            pieces += [BenchmarkPiece(task, "prompt", _squash(row["text"])),
                       BenchmarkPiece(task, "solution", _squash(row["code"]))]
            pieces += [BenchmarkPiece(task, "test", _squash(t), ngrams=False) for t in row["test_list"]]
            pieces.append(BenchmarkPiece(task, "tests", _squash("\n".join(row["test_list"])), substring=False))
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
    _index: dict[tuple[str, ...], int] = field(default_factory=dict, init=False)
    _canon: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # An n-gram found in two different benchmark tasks is boilerplate ("write a python function to check
        # whether the given number is"), not a leak of either: only task-specific n-grams are indexed.
        self._canon = [_canon(p.text) for p in self.pieces]
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

    def check(self, ex: Exercise) -> Contamination | None:
        body = _squash(f"{ex.prompt}\n{ex.reference}\n{ex.tests}")
        flat = _canon(body)
        for piece, canon in zip(self.pieces, self._canon):
            if piece.substring and len(canon) >= self.min_chars and canon in flat:
                return Contamination(piece.task, piece.field, "substring", piece.text[:120])
        own_lines = [_canon(line) for line in ex.tests.splitlines()]
        own_lines = [line for line in own_lines if len(line) >= self.min_chars]
        for piece, canon in zip(self.pieces, self._canon):
            if piece.field == "test":
                for line in own_lines:
                    if line in canon:
                        return Contamination(piece.task, "test", "substring", line[:120])
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
