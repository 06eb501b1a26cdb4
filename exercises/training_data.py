"""What a run may train on. Every training source is read here and passes one gate, `EvalGuard`, before the
learner can see it: MBPP train (the loop's exercises, and so `bench/quality.py`'s), the oracle's exercises and
the MBPP seeds of the oracle's game, `train.sft.data_file` (back-translated instructions among them) and the files
of a continued pre-training corpus (`train.sft.corpus_dir`, checked file by file).

The gate drops whatever overlaps an evaluation set the project ships (HumanEval, HumanEval+, MBPP test and
validation: `exercises/decontamination.py`) or an exercise file the run itself evaluates on, and keeps the id of
each item it removed and the evaluation task it matched for the run's report and `summary.json`.
`data.allow_eval_overlap: true` keeps overlapping items in training: they are still listed, as trained on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from codealign.config import RunConfig
from codealign.exercises.decontamination import BenchmarkPiece, Contamination, Decontaminator, load_benchmarks, squash
from codealign.exercises.loaders import load_mbpp, mbpp_stub_form, reformat_code
from codealign.records import Exercise, SftExample


def exercise_file_pieces(paths: Sequence[str]) -> list[BenchmarkPiece]:
    """The tasks of evaluation sets given as exercise files (`eval.benchmarks: [my_tasks.jsonl]`)."""
    from codealign.exercises.schema import load_exercises_jsonl

    pieces = []
    for path in paths:
        for ex in load_exercises_jsonl(path):
            task = f"{Path(path).stem}/{ex.id}"
            pieces += [BenchmarkPiece(task, "prompt", squash(ex.prompt)),
                       BenchmarkPiece(task, "solution", squash(ex.reference))]
            pieces += [BenchmarkPiece(task, "test", line, ngrams=False) for line in ex.tests.splitlines()
                       if line.strip()]
    return pieces


@dataclass
class EvalGuard:
    """The one gate between training sources and the learner."""

    decontaminator: Decontaminator
    allow_overlap: bool = False
    found: dict[str, dict] = field(default_factory=dict)  # item id -> {source, eval_task, field, kind, match}
    checked: Counter = field(default_factory=Counter)  # source -> items checked (the summary's "removed N of M")

    @classmethod
    def from_config(cls, cfg: RunConfig) -> EvalGuard:
        own = [spec for spec in [*cfg.eval.benchmarks, cfg.eval.validation] if spec.endswith(".jsonl")]
        pieces = load_benchmarks(cfg.resolved_data_dir()) + exercise_file_pieces(own)
        return cls(Decontaminator(pieces, ngram=cfg.oracle.contamination_ngram), cfg.data.allow_eval_overlap)

    def _record(self, item_id: str, source: str, hit: Contamination) -> None:
        self.found[item_id] = {"source": source, "eval_task": hit.task, "field": hit.field, "kind": hit.kind,
                               "match": hit.match}

    def admit(self, items: Sequence, source: str) -> list:
        """The items of one source that may be trained on: exercises, or chat turns / documents (SftExample)."""
        kept = []
        self.checked[source] += len(items)
        for i, item in enumerate(items):
            if isinstance(item, Exercise):
                item_id, hit = item.id, self.decontaminator.check(item)
            else:
                item_id = item.source or f"{source}:{i}"
                hit = self.decontaminator.check_text(f"{item.prompt}\n{item.completion}")
            if hit is not None:
                self._record(item_id, source, hit)
            if hit is None or self.allow_overlap:
                kept.append(item)
        return kept

    def filter(self, exercises: Sequence[Exercise], source: str = "oracle"
               ) -> tuple[list[Exercise], dict[str, Contamination]]:
        """`Decontaminator.filter`'s contract, so the exercise filter chain (`exercises/build.py`) goes through
        the gate: generated exercises are recorded here like every other source."""
        kept = self.admit(exercises, source)
        ids = {ex.id for ex in kept}
        return kept, {ex.id: Contamination(self.found[ex.id]["eval_task"], self.found[ex.id]["field"],
                                           self.found[ex.id]["kind"], self.found[ex.id]["match"])
                      for ex in exercises if ex.id not in ids}

    def summary(self) -> dict:
        by_source = Counter(v["source"] for v in self.found.values())
        key = "overlapping_trained" if self.allow_overlap else "removed"
        return {"decontamination": {"allow_eval_overlap": self.allow_overlap, key: len(self.found),
                                    "by_source": dict(by_source), "checked": dict(self.checked),
                                    "items": dict(self.found)}}

    def line(self) -> str:
        """One sentence for the console and the report."""
        if not self.found:
            return "decontamination: no training item overlaps an evaluation set"
        tasks = sorted({v["eval_task"] for v in self.found.values()})
        sources = ", ".join(f"{k} {v}" for k, v in sorted(Counter(v["source"] for v in self.found.values()).items()))
        if self.allow_overlap:
            return (f"WARNING data.allow_eval_overlap: trained on {len(self.found)} items that overlap "
                    f"{len(tasks)} evaluation tasks ({sources}); evaluation figures on those tasks are not clean")
        return (f"decontamination: removed {len(self.found)} training items ({sources}) overlapping "
                f"{len(tasks)} evaluation tasks")

    def report_section(self) -> str:
        lines = ["", "## Training data decontamination", "", self.line(), ""]
        if self.found:
            lines += ["| item | source | evaluation task | field | kind |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {v['source']} | {v['eval_task']} | {v['field']} | {v['kind']} |"
                      for k, v in sorted(self.found.items())]
        return "\n".join(lines) + "\n"


@dataclass
class TrainingData:
    exercises: list[Exercise]  # what the loop samples (MBPP train by default)
    corpus: list[SftExample]  # sft.data_file's turns or corpus_dir's files; empty otherwise
    guard: EvalGuard


def load_training_data(cfg: RunConfig) -> TrainingData:
    """The run's training sources, read before anything starts (a bad file is refused in seconds, not after the
    engines), each through the guard."""
    guard = EvalGuard.from_config(cfg)
    exercises = guard.admit(load_mbpp(cfg.resolved_data_dir(), cfg.data.train_ids), "mbpp_train")
    if cfg.data.reformat_references:
        exercises = [replace(ex, reference=reformat_code(ex.reference)) for ex in exercises]
    if cfg.data.stub_prompts:  # the clean tasks again, in HumanEval's form: the gate has seen their text and tests
        exercises += [stub for ex in exercises if (stub := mbpp_stub_form(ex))]
    corpus: list[SftExample] = []
    if cfg.train.algorithm == "sft" and cfg.train.sft.corpus_dir:
        from codealign.trainers.sft import load_corpus

        corpus = guard.admit(load_corpus(cfg.train.sft), "corpus")  # continued pre-training, file by file
        if not corpus:  # else the loop would quietly train on its verified solutions instead
            raise ValueError(f"train.sft.corpus_dir: every file overlaps an evaluation set ({guard.line()})")
    elif cfg.train.algorithm == "sft" and cfg.train.sft.data_file:
        from codealign.trainers.sft import load_sft_file

        corpus = guard.admit(load_sft_file(cfg.train.sft), "sft_data_file")
        if not corpus:
            raise ValueError(f"train.sft.data_file: every example overlaps an evaluation set ({guard.line()})")
    print(guard.line(), flush=True)
    return TrainingData(exercises, corpus, guard)


if __name__ == "__main__":  # python -m codealign.exercises.training_data CONFIG [KEY=VALUE ...]: what the gate removes
    import json
    import sys

    from codealign.config import load_config

    data = load_training_data(load_config(sys.argv[1], sys.argv[2:]))
    print(json.dumps(data.guard.summary(), indent=1))
    print(data.guard.line())
