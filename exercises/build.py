"""The filter chain every exercise set goes through (generated or given): validation -> dedup ->
decontamination, then the dataset and `report.json` written into a fresh directory atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from codealign.config import OracleConfig
from codealign.exercises import dataset
from codealign.exercises.decontamination import Decontaminator
from codealign.exercises.dedup import deduplicate
from codealign.exercises.validation import RunJobs, validate
from codealign.records import Exercise

REPORT_FILE = "report.json"


@dataclass
class FilterOutcome:
    kept: list[Exercise] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # id -> reason
    details: dict[str, dict] = field(default_factory=dict)  # id -> what the reason is about
    provenance: dict[str, dict] = field(default_factory=dict)  # id -> provenance columns
    generation: dict = field(default_factory=dict)  # counts from the oracle stage, when there was one

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.dropped.values()).items()))

    def report(self) -> dict:
        counts = {**self.counts(), **{f"malformed_{k}": v for k, v in self.generation.get("malformed", {}).items()}}
        return {"kept": [ex.id for ex in self.kept], "dropped": dict(self.dropped), "counts": counts,
                "num_kept": len(self.kept), "num_dropped": len(self.dropped), "details": self.details,
                "generation": self.generation}


def filter_exercises(exercises: Sequence[Exercise], run_jobs: RunJobs, cfg: OracleConfig,
                     held: Sequence[Exercise] = (), decontaminator: Decontaminator | None = None,
                     candidates: dict[str, list[str]] | None = None,
                     provenance: dict[str, dict] | None = None, progress=None) -> FilterOutcome:
    """Validation, dedup (within the set and against `held`), decontamination; each drop keeps its reason."""
    out = FilterOutcome(provenance={k: dict(v) for k, v in (provenance or {}).items()})
    tick = progress or (lambda stage, n: None)

    checked = validate(exercises, run_jobs, repeats=cfg.validation_repeats, candidates=candidates)
    sound = []
    for ex in exercises:
        v = checked.results[ex.id]
        out.provenance.setdefault(ex.id, {})["validation"] = v.reason or "passed"
        if v.ok:
            sound.append(replace(ex, reference=v.reference or ex.reference))
        else:
            out.dropped[ex.id] = v.reason
            out.details[ex.id] = {"detail": v.detail[:300]}
    tick("validation", len(exercises))

    dd = deduplicate(sound, held, cfg.near_dup_threshold, cfg.num_perm, cfg.shingle_size)
    for ex_id, (reason, other) in dd.dropped.items():
        out.dropped[ex_id] = reason
        out.details[ex_id] = {"duplicates": other}
    for ex_id, cluster in dd.cluster.items():
        out.provenance[ex_id]["dedup_cluster"] = cluster
    tick("dedup", len(sound))

    clean = dd.kept
    if decontaminator is not None:
        clean, found = decontaminator.filter(dd.kept)
        for ex_id, hit in found.items():
            out.dropped[ex_id] = "contaminated"
            out.details[ex_id] = {"benchmark_task": hit.task, "field": hit.field, "kind": hit.kind,
                                  "match": hit.match}
        for ex in clean:
            out.provenance[ex.id]["contamination"] = "clean"
    tick("decontamination", len(dd.kept))
    out.kept = clean
    return out


def write_output(out_dir: str | Path, outcome: FilterOutcome) -> Path:
    """Write the dataset, the JSONL export and report.json into a temporary sibling directory and rename it
    into place: a failure leaves nothing half-written at `out_dir`. An existing non-empty `out_dir` is refused."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"output directory {out_dir} exists and is not empty; choose a new one")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        dataset.save(tmp, outcome.kept, outcome.provenance)
        (tmp / REPORT_FILE).write_text(json.dumps(outcome.report(), indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
