"""Exact and near-duplicate removal: within a set of exercises and against the training data already held.

Exact: the same normalised task text, or the same normalised reference code. Near: MinHash LSH from
`datasketch` with bigcode's settings (5-gram word shingles, 256 permutations, estimated Jaccard >= 0.7) over the
task text and the reference together.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from codealign.records import Exercise

_WORD = re.compile(r"\w+")


def normalise_text(text: str) -> str:
    return " ".join(text.lower().split())


def normalise_code(code: str) -> str:
    """Comments and layout do not make code different: compare the unparsed AST where the code parses."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError):
        return " ".join(code.split())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def shingles(text: str, size: int) -> set[str]:
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def exercise_text(ex: Exercise) -> str:
    return f"{ex.prompt}\n{ex.reference}"


@dataclass
class DedupResult:
    kept: list[Exercise] = field(default_factory=list)
    dropped: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (reason, the id it duplicates)
    cluster: dict[str, str] = field(default_factory=dict)  # kept id -> its cluster (its own id)


class Deduplicator:
    """Holds what has been seen (the training data, then each kept exercise); `add` answers whether a new
    exercise duplicates any of it."""

    def __init__(self, threshold: float = 0.7, num_perm: int = 256, shingle_size: int = 5):
        self.threshold, self.num_perm, self.shingle_size = threshold, num_perm, shingle_size
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.hashes: dict[str, MinHash] = {}
        self.text_keys: dict[str, str] = {}
        self.code_keys: dict[str, str] = {}

    def _minhash(self, ex: Exercise) -> MinHash:
        mh = MinHash(num_perm=self.num_perm, seed=1)
        mh.update_batch([s.encode() for s in shingles(exercise_text(ex), self.shingle_size)])
        return mh

    def check(self, ex: Exercise) -> tuple[str, str] | None:
        """(reason, duplicated id) or None."""
        text_key = _digest(normalise_text(ex.prompt))
        if text_key in self.text_keys:
            return "exact_duplicate", self.text_keys[text_key]
        if ex.reference.strip():
            code_key = _digest(normalise_code(ex.reference))
            if code_key in self.code_keys:
                return "exact_duplicate", self.code_keys[code_key]
        mh = self._minhash(ex)
        best = max(((self.hashes[k].jaccard(mh), k) for k in self.lsh.query(mh)), default=None)
        if best is not None and best[0] >= self.threshold:
            return "near_duplicate", best[1]
        return None

    def add(self, ex: Exercise) -> None:
        self.text_keys.setdefault(_digest(normalise_text(ex.prompt)), ex.id)
        if ex.reference.strip():
            self.code_keys.setdefault(_digest(normalise_code(ex.reference)), ex.id)
        if ex.id not in self.hashes:
            mh = self._minhash(ex)
            self.hashes[ex.id] = mh
            self.lsh.insert(ex.id, mh)


def deduplicate(exercises: Sequence[Exercise], held: Sequence[Exercise] = (), threshold: float = 0.7,
                num_perm: int = 256, shingle_size: int = 5) -> DedupResult:
    """Keep the first of each group of duplicates, in order; anything duplicating `held` goes."""
    dd = Deduplicator(threshold, num_perm, shingle_size)
    for ex in held:
        dd.add(ex)
    out = DedupResult()
    for ex in exercises:
        hit = dd.check(ex)
        if hit is None:
            dd.add(ex)
            out.kept.append(ex)
            out.cluster[ex.id] = ex.id
        else:
            out.dropped[ex.id] = hit
    return out
