"""The kept exercises on disk: a Hugging Face `datasets` Arrow dataset with provenance columns, and the same rows
as JSONL in the exercise schema (what `launch.py eval --benchmark FILE.jsonl` reads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codealign.exercises.schema import exercise_row, write_exercises_jsonl
from codealign.records import Exercise

DATASET_DIR = "dataset"
JSONL_FILE = "exercises.jsonl"
# Provenance columns, all strings or ints so that every row has the same Arrow type.
PROVENANCE = {"source": "", "oracle_model": "", "template": "", "persona": "", "category": "", "round": 0,
              "visible_tests": "", "validation": "", "dedup_cluster": "", "contamination": "",
              "repaired_from": ""}  # the oracle's solution before its one repair, when it was sent back


def rows_for(exercises: Sequence[Exercise], provenance: dict[str, dict]) -> list[dict]:
    rows = []
    for ex in exercises:
        extra = {**PROVENANCE, "source": ex.source, **provenance.get(ex.id, {})}
        row = {"id": ex.id, "prompt": ex.prompt, "tests": ex.tests, "entry_point": ex.entry_point,
               "reference": ex.reference}
        rows.append({**row, **{k: type(PROVENANCE[k])(extra[k]) for k in PROVENANCE}})
    return rows


def save(out_dir: Path, exercises: Sequence[Exercise], provenance: dict[str, dict]) -> None:
    """Write `out_dir/dataset` (Arrow) and `out_dir/exercises.jsonl`."""
    from datasets import Dataset, Features, Value

    rows = rows_for(exercises, provenance)
    columns = ["id", "prompt", "tests", "entry_point", "reference", *PROVENANCE]
    features = Features({c: Value("int64") if isinstance(PROVENANCE.get(c), int) else Value("string")
                         for c in columns})
    dataset = Dataset.from_dict({c: [r[c] for r in rows] for c in columns}, features=features)
    dataset.save_to_disk(str(out_dir / DATASET_DIR))
    jsonl_rows = []
    for ex, row in zip(exercises, rows):
        jsonl_rows.append(exercise_row(ex, **{k: row[k] for k in PROVENANCE}))
    write_exercises_jsonl(out_dir / JSONL_FILE, jsonl_rows)


def load(path: str | Path) -> list[Exercise]:
    """The exercises of a dataset written by `save` (the directory given to `generate-data --out`, or its
    `dataset` subdirectory), for the learner or the loop."""
    from datasets import load_from_disk

    path = Path(path)
    if (path / DATASET_DIR).is_dir():
        path = path / DATASET_DIR
    return [Exercise(id=r["id"], prompt=r["prompt"], tests=r["tests"], entry_point=r["entry_point"],
                     source=r["source"] or "generated", reference=r["reference"])
            for r in load_from_disk(str(path))]
