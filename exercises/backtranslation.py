"""Instruction back-translation with ranking (seed 001): from code files, the oracle writes the instruction each
file answers; a different model rates each instruction 1-5 (never the writer: the seed found self-rating gives
about 5 every time); the pairs rated at least `min_rating` become SFT data (instruction -> the file's code).

`write` and `rate` are any `generate(list[GenerationRequest]) -> list[list[Completion]]` (a generator actor group,
`RemoteOracle`). A missing instruction or an unreadable rating is counted with its reason and never raises.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from codealign.exercises.extract import as_answer
from codealign.exercises.generation import Generate, template
from codealign.records import GenerationRequest, SftExample

_DIGIT = re.compile(r"\b([1-5])\b")


def parse_rating(text: str) -> int | None:
    """The first digit 1-5 standing on its own ("4", "Rating: 4/5"), or None."""
    found = _DIGIT.search(text)
    return int(found.group(1)) if found else None


@dataclass
class BackTranslation:
    examples: list[SftExample] = field(default_factory=list)  # the kept pairs
    rows: list[dict] = field(default_factory=list)  # every file: path, instruction, rating, kept or its reason
    counts: Counter = field(default_factory=Counter)

    def report(self) -> dict:
        ratings = Counter(r["rating"] for r in self.rows if r["rating"] is not None)
        return {"counts": dict(self.counts), "ratings": {str(k): ratings[k] for k in range(1, 6)},
                "kept": [r["path"] for r in self.rows if r["kept"]],
                "dropped": {r["path"]: r["reason"] for r in self.rows if not r["kept"]}}


def backtranslate(files: Sequence[tuple[str, str]], write: Generate, rate: Generate, min_rating: int = 4,
                  temperature: float = 0.7, max_tokens: int = 256) -> BackTranslation:
    """`files`: (path, code). One instruction per file from `write`, one rating per instruction from `rate`."""
    out = BackTranslation()
    reqs = [GenerationRequest(template("instruction").substitute(code=code.rstrip() + "\n"), temperature=temperature,
                              top_p=0.95, max_tokens=max_tokens, request_id=f"instruction:{path}")
            for path, code in files]
    written = write(reqs) if reqs else []
    instructions = []
    for comps in written:
        text = comps[0].text.strip() if comps and comps[0].finish_reason != "error" else ""
        instructions.append(" ".join(text.split()))
    rated = [(path, code, ins) for (path, code), ins in zip(files, instructions) if ins]
    # the rating is a judgement, not a sample: greedy decoding, a few tokens
    rate_reqs = [GenerationRequest(template("rating").substitute(instruction=ins, code=code.rstrip() + "\n"),
                                   temperature=0.0, max_tokens=8, request_id=f"rating:{path}")
                 for path, code, ins in rated]
    ratings = {path: parse_rating(comps[0].text) if comps else None
               for (path, _, _), comps in zip(rated, rate(rate_reqs) if rate_reqs else [])}
    for (path, code), ins in zip(files, instructions):
        rating = ratings.get(path)
        reason = ("no_instruction" if not ins else "unrated" if rating is None
                  else "low_rating" if rating < min_rating else "")
        out.counts[reason or "kept"] += 1
        out.rows.append({"path": path, "instruction": ins, "rating": rating, "kept": not reason, "reason": reason})
        if not reason:
            out.examples.append(SftExample(ins, as_answer(code), f"backtranslated:{path}"))
    return out
