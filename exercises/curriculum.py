"""The adversarial curriculum: which exercises the student fails, how hard each is, and what to train on next.

After each round every exercise tried gets its pass rate from the student's n samples. Failed exercises are kept
(0 < rate < 1 first; rate 0 only when the reference is known to pass: otherwise the exercise may be broken, not
hard); the hardest go back to the oracle as templates for harder variants; training exercises are drawn with
weights that grow with difficulty. The state is one JSON file, rewritten each round, from which a run resumes.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codealign.records import Exercise, Experience
from codealign.sandbox import Verdict

STATE_FILE = "curriculum.json"
BINS = ("0", "(0,0.5)", "[0.5,1)", "1")


@dataclass
class Entry:
    exercise: dict  # the Exercise's fields
    reference_verified: bool  # the reference passed its tests in the sandbox
    added_round: int
    pass_rates: list[float] = field(default_factory=list)  # one per round the exercise was tried

    @property
    def rate(self) -> float | None:
        return self.pass_rates[-1] if self.pass_rates else None

    @property
    def difficulty(self) -> float:
        """1 - last pass rate; an exercise not tried yet counts as hard as the hardest (1.0)."""
        return 1.0 if self.rate is None else 1.0 - self.rate


@dataclass
class Curriculum:
    round: int = 0  # the next round to run
    entries: dict[str, Entry] = field(default_factory=dict)
    histograms: list[dict] = field(default_factory=list)  # pass-rate histogram of each finished round

    # -- the pool -----------------------------------------------------------------------------------------
    def add(self, exercises: Iterable[Exercise], round_: int, reference_verified: bool = True) -> None:
        for ex in exercises:
            self.entries.setdefault(ex.id, Entry(asdict(ex), reference_verified, round_))

    def exercise(self, ex_id: str) -> Exercise:
        return Exercise(**self.entries[ex_id].exercise)

    def record(self, round_: int, experiences: Sequence[Experience]) -> dict[str, float]:
        """Each tried exercise's pass rate this round; the histogram of them is kept."""
        runs: dict[str, list[bool]] = defaultdict(list)
        for e in experiences:
            runs[e.exercise_id].append(e.result.verdict is Verdict.PASSED)
        rates = {k: sum(v) / len(v) for k, v in runs.items()}
        for ex_id, rate in rates.items():
            if ex_id in self.entries:
                self.entries[ex_id].pass_rates.append(rate)
        self.histograms.append({"round": round_, **histogram(rates.values())})
        self.round = round_ + 1
        return rates

    # -- choosing -----------------------------------------------------------------------------------------
    def failed(self) -> list[str]:
        """Exercises the student fails, the partly-solved first (the most informative), then the never-solved
        whose reference passes; hardest first within each group."""
        partly = [k for k, e in self.entries.items() if e.rate is not None and 0.0 < e.rate < 1.0]
        never = [k for k, e in self.entries.items() if e.rate == 0.0 and e.reference_verified]
        return (sorted(partly, key=lambda k: self.entries[k].rate) + sorted(never))

    def open(self) -> list[str]:
        """Exercises still worth giving the student: not yet solved every time, and not a rate-0 exercise whose
        reference was never verified (it may be broken rather than hard)."""
        return [k for k, e in self.entries.items()
                if (e.rate is None or e.rate < 1.0) and (e.reference_verified or e.rate != 0.0)]

    def hardest(self, k: int) -> list[Exercise]:
        """Templates for the oracle: failed exercises, the lowest pass rate first."""
        failed = self.failed()
        failed.sort(key=lambda key: self.entries[key].rate)
        return [self.exercise(key) for key in failed[:k]]

    def sample(self, k: int, rng: random.Random) -> list[Exercise]:
        """`k` distinct exercises, drawn with probability proportional to difficulty (plus a floor, so a solved
        exercise still comes back now and then); rate-0 exercises with an unverified reference are left out."""
        keys = [key for key, e in self.entries.items() if e.reference_verified or e.rate != 0.0]
        weights = [self.entries[key].difficulty + 0.05 for key in keys]
        chosen: list[str] = []
        while keys and len(chosen) < k:
            i = rng.choices(range(len(keys)), weights=weights)[0]
            chosen.append(keys.pop(i))
            weights.pop(i)
        return [self.exercise(key) for key in chosen]

    # -- persistence --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"round": self.round, "histograms": self.histograms,
                "entries": {k: asdict(e) for k, e in self.entries.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Curriculum:
        return cls(int(data["round"]), {k: Entry(**e) for k, e in data["entries"].items()}, list(data["histograms"]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        data = self.to_dict()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Curriculum:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"curriculum state {path} cannot be read: {exc}") from exc


def histogram(rates: Iterable[float]) -> dict[str, int]:
    out = dict.fromkeys(BINS, 0)
    for r in rates:
        out["0" if r == 0 else "1" if r == 1 else "(0,0.5)" if r < 0.5 else "[0.5,1)"] += 1
    return out
