"""The closing summary a newcomer reads: what was trained, what moved on held-out tasks, what did not and why, and
the command of the longer recipe. Built only from the run directory's own files (config.yaml, metrics.jsonl,
summary.json), so it can be rebuilt for any finished run and every figure in it is one the run measured."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

# The recipe that trains long enough to move the benchmarks; its measured effect is in docs/results.md.
LONGER_RECIPE = (".venv/bin/python bench/quality.py   # configs/quality.yaml: SFT on MBPP train in both prompt forms, "
                 "~75 min on 2 cores")
SIGNIFICANCE = 0.05
NAMES = {"mbpp": "MBPP test", "humaneval": "HumanEval", "humaneval+": "HumanEval+", "mbpp-val": "MBPP validation"}


def _trained(cfg: dict, metrics: list[dict], decon: dict) -> list[str]:
    train, loop = cfg.get("train", {}), cfg.get("loop", {})
    algo = train.get("algorithm", "?")
    lora = train.get("lora", {})
    how = f"{algo.upper()} with LoRA (rank {lora.get('r')})" if lora.get("enabled") else f"{algo.upper()}, full"
    samples = sum(m.get("samples", 0) for m in metrics)
    items = sum(m.get("train_items", 0) for m in metrics)
    unit = "preference pairs (a better- and a worse-rewarded sample of one exercise)" if algo == "dpo" else "items"
    lines = [f"trained: {how} on {cfg.get('model', {}).get('path', '?')}, {len(metrics)} rounds of "
             f"{loop.get('exercises_per_iteration')} training exercises x {loop.get('samples_per_exercise')} samples "
             f"judged in the sandbox ({samples} samples); {items} {unit} trained on"]
    rates = [f"{m.get('sample_pass_rate', 0.0):.2f}" for m in metrics]
    if rates:
        lines.append(f"  share of training samples passing their tests, per round: {', '.join(rates)}")
    kept = [m["serve/probe_gain_kept"] for m in metrics if "serve/probe_gain_kept" in m]
    if kept:
        lines.append("  served model keeps of the trained log-prob gain (serve/probe_gain_kept), per round: "
                     + ", ".join(f"{k:.2f}" for k in kept))
    checked = sum(decon.get("checked", {}).values())
    of = f" of {checked}" if checked else ""
    if decon.get("allow_eval_overlap"):
        lines.append(f"clean data: NO, data.allow_eval_overlap is set: trained on {decon.get('overlapping_trained', 0)}"
                     f"{of} training tasks that overlap an evaluation set; the held-out figures below are not clean")
    elif decon:
        lines.append(f"clean data: the decontamination gate removed {decon.get('removed', 0)}{of} training tasks "
                     "that overlap an evaluation set (HumanEval, HumanEval+, MBPP test and validation); list in "
                     "summary.json")
    return lines


def _benchmark_line(name: str, row: dict) -> str:
    b, a, p = row["before"], row["after"], row["paired"]
    before = f"{b['pass@1']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]"
    after = f"{a['pass@1']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"
    return (f"  {NAMES.get(name, name)} ({p['tasks']} tasks): {before} -> {after}; change {p['difference']:+.3f} "
            f"(95% CI {p['ci95'][0]:+.3f} to {p['ci95'][1]:+.3f}); {p['only_b']} tasks solved only after, "
            f"{p['only_a']} only before; McNemar p = {p['p_value']:.3g}")


def _why_not(name: str, p: dict) -> str:
    lo, hi = p["ci95"]
    name = NAMES.get(name, name)
    if p["only_a"] + p["only_b"] == 0:
        return (f"  {name}: not one of its {p['tasks']} tasks changed its verdict (p = 1): the training changed no "
                "greedy answer there from wrong to right or back")
    return (f"  {name}: change {p['difference']:+.3f} with a 95% interval from {lo:+.3f} to {hi:+.3f}, which holds 0 "
            f"(p = {p['p_value']:.3g}): over {p['tasks']} tasks only {p['only_a'] + p['only_b']} changed verdict, "
            "so a change this small cannot be told from noise at this size")


def closing_summary(run_dir: str | Path) -> str:
    """The newcomer's summary of a finished run directory."""
    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    summary = json.loads((run_dir / "summary.json").read_text())
    f = run_dir / "metrics.jsonl"
    metrics = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
    lines = ["== What this run trained ==", *_trained(cfg, metrics, summary.get("decontamination", {}))]
    rows = {k: v for k, v in summary.get("benchmarks", {}).items() if "paired" in v}
    moved = {k: v for k, v in rows.items() if v["paired"]["p_value"] < SIGNIFICANCE}
    lines += ["", "== Held-out results (greedy pass@1 [95% CI], before -> after; tasks never trained on) =="]
    lines += [_benchmark_line(k, v) for k, v in rows.items()]
    val = summary.get("validation", [])
    if len(val) > 1:
        lines.append(f"  {NAMES.get(val[0]['benchmark'], val[0]['benchmark'])} ({val[0]['tasks']} tasks, "
                     "where recipes are chosen; per evaluation): "
                     + " -> ".join(f"{v['pass@1']:.3f}" for v in val))
    lines += ["", "== What moved (p < 0.05) =="]
    lines += [f"  {NAMES.get(k, k)}: {v['paired']['difference']:+.3f} pass@1, p = {v['paired']['p_value']:.3g}"
              for k, v in moved.items()] or ["  nothing"]
    if len(moved) < len(rows):
        lines += ["", "== What did not move, and why =="]
        lines += [_why_not(k, v["paired"]) for k, v in rows.items() if k not in moved]
    lines += ["", "== The longer recipe, whose measured effect on the benchmarks is in docs/results.md ==",
              f"  {LONGER_RECIPE}"]
    return "\n".join(lines)
