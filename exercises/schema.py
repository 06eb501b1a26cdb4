"""The exercise schema on disk: one JSON object per line.

    {"id": "...", "prompt": "...", "tests": "...", "entry_point": "...", "reference": "..."}

`id`, `prompt` (the task as the model sees it) and `tests` (Python run after the solution: asserts, or a
`check(candidate)` function and its call) are required strings; `entry_point` and `reference` are optional
strings. Any other key is kept as provenance and ignored by the loader. `launch.py eval --benchmark FILE.jsonl`
reads this and `launch.py generate-data` writes it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from codealign.records import Exercise

REQUIRED = ("id", "prompt", "tests")
OPTIONAL = ("entry_point", "reference")


class ExerciseFileError(ValueError):
    """A problem in an exercise file, naming the file, the line and the field."""


def parse_exercise(row: object, where: str) -> Exercise:
    if not isinstance(row, dict):
        raise ExerciseFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in REQUIRED:
        if key not in row:
            raise ExerciseFileError(f"{where}: missing required field '{key}'")
    for key in REQUIRED + OPTIONAL:
        if key in row and not isinstance(row[key], str):
            raise ExerciseFileError(f"{where}: field '{key}' must be a string, got {type(row[key]).__name__}")
    for key in REQUIRED:
        if not row[key].strip():
            raise ExerciseFileError(f"{where}: field '{key}' is empty")
    return Exercise(id=row["id"], prompt=row["prompt"], tests=row["tests"], entry_point=row.get("entry_point", ""),
                    source=str(row.get("source", "jsonl")), reference=row.get("reference", ""))


def load_exercises_jsonl(path: str | Path) -> list[Exercise]:
    """Every exercise of the file; the first malformed line is an error naming it. Ids must be unique."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ExerciseFileError(f"cannot read exercise file {path}: {exc.strerror or exc}") from exc
    out: list[Exercise] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExerciseFileError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        ex = parse_exercise(row, where)
        if ex.id in seen:
            raise ExerciseFileError(f"{where}: duplicate id '{ex.id}' (first on line {seen[ex.id]})")
        seen[ex.id] = number
        out.append(ex)
    if not out:
        raise ExerciseFileError(f"{path}: no exercises in the file")
    return out


def exercise_row(ex: Exercise, **provenance: object) -> dict:
    row = {"id": ex.id, "prompt": ex.prompt, "tests": ex.tests}
    if ex.entry_point:
        row["entry_point"] = ex.entry_point
    if ex.reference:
        row["reference"] = ex.reference
    return {**row, **provenance}


def write_exercises_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write atomically (a temporary file renamed into place), so a failure leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
