"""Evaluation inside the loop: the test benchmarks before and after training, the validation split every
`eval.every` iterations, and the report's section (before/after with intervals, the paired comparison, plots).

Recipes are meant to be chosen on the validation split (MBPP 511-600 by default), never on the test benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from codealign.config import RunConfig
from codealign.evaluation.benchmarks import benchmark_name, load_benchmark
from codealign.evaluation.compare import PairedComparison, paired_comparison
from codealign.evaluation.harness import BenchmarkResult, score, write_outputs
from codealign.evaluation.prompts import PromptFormat
from codealign.exercises.loaders import load_mbpp
from codealign.records import Exercise


@dataclass
class LoopEvaluator:
    cfg: RunConfig
    run_dir: Path
    generate: object  # (requests, desc) -> completions, the System's generate
    execute: object
    tests: dict[str, list[Exercise]] = field(default_factory=dict)
    validation: list[Exercise] = field(default_factory=list)
    results: dict[str, dict[str, BenchmarkResult]] = field(default_factory=dict)  # label -> benchmark -> result
    validation_points: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: RunConfig, run_dir: Path, generate, execute) -> LoopEvaluator:
        ev = cls(cfg, Path(run_dir), generate, execute)
        data_dir = cfg.resolved_data_dir()
        limit = cfg.eval.limit if cfg.eval.limit >= 0 else cfg.data.eval_size
        for spec in cfg.eval.benchmarks:
            if spec == "mbpp":  # the MBPP test range of data.eval_ids (11-510 by default)
                tasks = load_mbpp(data_dir, cfg.data.eval_ids)
                tasks = tasks[:limit] if limit else tasks
            else:
                tasks = load_benchmark(spec, data_dir, limit)
            ev.tests[benchmark_name(spec)] = tasks
        if cfg.eval.every > 0:
            ev.validation = load_benchmark(cfg.eval.validation, data_dir, cfg.eval.validation_size)
        return ev

    @property
    def primary(self) -> str:
        return next(iter(self.tests))

    def _run(self, label: str, name: str, tasks: list[Exercise]) -> BenchmarkResult:
        fmt = PromptFormat(self.cfg.eval.prompt)
        requests = [fmt.request(ex, 1, 0.0, self.cfg.generator.max_tokens) for ex in tasks]
        completions = self.generate(requests, f"eval {label} {name}")
        result = score(tasks, [[c.text for c in comps] for comps in completions], fmt, self.execute)
        for row, comps in zip(result.rows, completions):
            row["policy_version"] = comps[0].policy_version
        out = self.run_dir / "eval" / label / name
        write_outputs(out, result, result.summary(name, self.cfg.model.path, 0.0, label=label), tasks)
        self.results.setdefault(label, {})[name] = result
        return result

    def test_benchmarks(self, label: str) -> float:
        """Every test benchmark; returns the first one's pass@1. The first also goes to eval_<label>.jsonl."""
        for name, tasks in self.tests.items():
            result = self._run(label, name, tasks)
            print(f"pass@1 {label}: {result.pass_at[1]:.3f} on {len(tasks)} {name} tasks "
                  f"(95% CI {result.ci95[0]:.3f}-{result.ci95[1]:.3f})", flush=True)
        if label == "after":
            for name, cmp in self.comparisons().items():
                print(f"{name}: {cmp.sentence('before', 'after')}", flush=True)
        first = self.results[label][self.primary]
        with (self.run_dir / f"eval_{label}.jsonl").open("w") as fh:
            for row in first.rows:
                for c in row["completions"]:
                    fh.write(json.dumps({"exercise_id": row["task_id"], "text": c["text"], "verdict": c["verdict"],
                                         "policy_version": row["policy_version"]}) + "\n")
        return first.pass_at[1]

    def validate(self, iteration: int) -> dict:
        """The validation split at iteration -1 (before training) and after every `eval.every`-th iteration."""
        if not self.validation or (iteration >= 0 and (iteration + 1) % self.cfg.eval.every):
            return {}
        name = benchmark_name(self.cfg.eval.validation)
        result = self._run(f"val_{iteration}" if iteration >= 0 else "val_before", name, self.validation)
        point = {"iteration": iteration, "benchmark": name, "pass@1": result.pass_at[1], "ci95": list(result.ci95),
                 "tasks": len(self.validation)}
        self.validation_points.append(point)
        return {"validation": point}

    def comparisons(self) -> dict[str, PairedComparison]:
        before, after = self.results.get("before", {}), self.results.get("after", {})
        return {name: paired_comparison(before[name].per_task_pass1, after[name].per_task_pass1)
                for name in self.tests if name in before and name in after}

    def summary(self) -> dict:
        out = {}
        for name in self.tests:
            row = {}
            for label in ("before", "after"):
                if name in self.results.get(label, {}):
                    r = self.results[label][name]
                    row[label] = {"pass@1": r.pass_at[1], "ci95": list(r.ci95), "tasks": len(r.rows)}
            out[name] = row
        for name, cmp in self.comparisons().items():
            out[name]["paired"] = cmp.to_dict()
        return {"benchmarks": out, "validation": self.validation_points}

    def report_section(self, metrics: list[dict]) -> str:
        from codealign.pipeline.plots import draw_all

        lines = ["## Evaluation (greedy, prompt format: " + self.cfg.eval.prompt + ")", "",
                 "| benchmark | tasks | before | 95% CI | after | 95% CI |", "|---|---|---|---|---|---|"]
        for name in self.tests:
            b, a = self.results.get("before", {}).get(name), self.results.get("after", {}).get(name)
            if b and a:
                lines.append(f"| {name} | {len(b.rows)} | {b.pass_at[1]:.3f} | {b.ci95[0]:.3f}–{b.ci95[1]:.3f} | "
                             f"{a.pass_at[1]:.3f} | {a.ci95[0]:.3f}–{a.ci95[1]:.3f} |")
        lines.append("")
        for name, cmp in self.comparisons().items():
            lines.append(f"- {name}: {cmp.sentence('before', 'after')}")
        lines += ["", "Intervals are percentile bootstraps over tasks; the p-value is the exact McNemar test on the "
                  "tasks where before and after disagree.", ""]
        for caption, path in draw_all(self.run_dir, metrics, self.validation_points):
            lines += [f"### {caption}", "", f"![{caption}]({path.relative_to(self.run_dir)})", ""]
        return "\n".join(lines)
