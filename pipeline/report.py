"""The run directory: resolved config, metrics.jsonl, adapter, report.md and the closing summary."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from codealign.config import RunConfig, config_to_dict
from codealign.pipeline.summary import NAMES, closing_summary


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, cfg: RunConfig) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(cfg.output_dir).resolve() / f"{cfg.name}-{stamp}"
        suffix = 1
        while path.exists():
            path = path.with_name(f"{cfg.name}-{stamp}-{suffix}")
            suffix += 1
        path.mkdir(parents=True)
        (path / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, to resume."""
        path = Path(path).resolve()
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"resume: {path} is not a run directory (no config.yaml)")
        return cls(path)

    def log_metrics(self, record: dict) -> None:
        with (self.path / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def write_samples(self, name: str, samples: list[dict]) -> None:
        with (self.path / name).open("w") as fh:
            for sample in samples:
                fh.write(json.dumps(sample) + "\n")

    def metrics(self) -> list[dict]:
        f = self.path / "metrics.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []

    def finish(self, before: float, after: float, n_eval: int, stage_seconds: dict[str, float],
               buffer_stats: dict, adapter_dir: str | None, policy_version: int,
               extra_summary: dict | None = None, extra_report: str = "") -> str:
        if adapter_dir:
            shutil.copytree(adapter_dir, self.path / "adapter", dirs_exist_ok=True)
        summary = {"pass@1_before": before, "pass@1_after": after, "eval_exercises": n_eval,
                   "policy_version": policy_version, "stage_seconds": stage_seconds, "replay_buffer": buffer_stats,
                   **(extra_summary or {})}
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2))
        closing = closing_summary(self.path)  # the newcomer's summary: the console's last words, report.md's first
        text = ("# codealign run report\n\n```\n" + closing + "\n```\n\n" + render_report(summary, self.metrics())
                + extra_report)  # extra: the evaluation section and plots
        (self.path / "report.md").write_text(text)
        print(render_table(summary) + f"\nrun directory: {self.path}\n\n{closing}", flush=True)
        return text


def render_table(summary: dict) -> str:
    total = sum(summary["stage_seconds"].values()) or 1.0
    lines = [
        f"{'metric':<22}{'value':>12}",
        f"{'pass@1 before':<22}{summary['pass@1_before']:>12.3f}",
        f"{'pass@1 after':<22}{summary['pass@1_after']:>12.3f}",
        f"{'eval exercises':<22}{summary['eval_exercises']:>12d}",
        f"{'policy version':<22}{summary['policy_version']:>12d}",
    ]
    for name, secs in summary["stage_seconds"].items():
        lines.append(f"{'seconds ' + name:<22}{secs:>8.1f} {100 * secs / total:>2.0f}%")
    return "\n".join(lines)


def no_data_reason(m: dict) -> str:
    """What a round that trained nothing says instead of a loss (a NaN loss would read as a failure)."""
    if "groups_without_signal" in m:
        return (f"no trainable data: {m['groups_without_signal']} of {m['groups']} exercise groups carried no "
                "reward signal and were dropped")
    return "no trainable data"


def round_line(m: dict, algorithm: str) -> str:
    """The line printed after each round (both schedules)."""
    head = (f"round {m['iteration']}: reward {m.get('reward_mean', 0.0):+.2f}, "
            f"pass rate {m.get('sample_pass_rate', 0.0):.2f}")
    if not m["train_items"]:
        return f"{head}, {no_data_reason(m)}, policy v{m['new_policy_version']}"
    loss = m.get(f"{algorithm}/loss", float("nan"))
    items = "pairs" if algorithm == "dpo" else "training items"
    return f"{head}, {m['train_items']} {items}, {algorithm} loss {loss:.4f}, policy v{m['new_policy_version']}"


def render_report(summary: dict, iterations: list[dict]) -> str:
    total = sum(summary["stage_seconds"].values()) or 1.0
    bench = summary.get("headline_benchmark", "mbpp")
    out = ["## Headline", "",
           f"{NAMES.get(bench, bench)} ({summary['eval_exercises']} tasks, the first of eval.benchmarks), "
           "greedy decoding.", "",
           "| | pass@1 |", "|---|---|",
           f"| before | {summary['pass@1_before']:.3f} |", f"| after | {summary['pass@1_after']:.3f} |", "",
           "## Stages", "", "| stage | seconds | share |", "|---|---|---|"]
    out += [f"| {k} | {v:.1f} | {100 * v / total:.0f}% |" for k, v in summary["stage_seconds"].items()]
    out += ["", "## Iterations", "",
            "| iteration | policy | reward mean | reward std | pass rate | train items | loss | first → last step |",
            "|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for m in iterations:
        algo = next((k.split("/")[0] for k in m if k.endswith("/loss")), "")
        if not m["train_items"]:
            out.append(f"| {m['iteration']} | v{m['policy_version']}→v{m['new_policy_version']} | "
                       f"{m['reward_mean']:+.3f} | {m['reward_std']:.3f} | {m['sample_pass_rate']:.3f} | 0 | "
                       f"{no_data_reason(m)} | |")
            continue
        out.append(
            f"| {m['iteration']} | v{m['policy_version']}→v{m['new_policy_version']} | {m['reward_mean']:+.3f} | "
            f"{m['reward_std']:.3f} | {m['sample_pass_rate']:.3f} | {m['train_items']} | "
            f"{algo} {m.get(f'{algo}/loss', nan):.4f} | "
            f"{m.get(f'{algo}/loss_first', nan):.4f} → {m.get(f'{algo}/loss_last', nan):.4f} |"
        )
    if summary.get("failures"):
        out += ["", "## Failures", "", "The last good policy kept serving after each of these.", "",
                "| iteration | stage | kept version | error |", "|---|---|---|---|"]
        out += [f"| {f['iteration']} | {f['stage']} | v{f['kept_version']} | {f['error']}: "
                f"{f['message'].replace('|', '/')} |" for f in summary["failures"]]
    out += ["", accounts_line(summary["replay_buffer"].get("accounts") or {}),
            "", f"Replay buffer: {summary['replay_buffer']}", ""]
    return "\n".join(out)


def accounts_line(accounts: dict) -> str:
    """The sample accounts (pipeline/accounts.py) in one sentence: balanced, or what does not add up."""
    if not accounts:
        return "**Sample accounts: not settled** (the run stopped before the stream's end; see Failures)."
    if not accounts.get("balanced"):
        return "**Sample accounts do not add up:** " + "; ".join(accounts.get("problems", []))
    return (f"Sample accounts balance: {accounts['rollout'].get('judged', 0)} samples judged, "
            f"{accounts['sent_ids']} sent to the learner in {accounts['learner_batches']} batches, "
            f"{accounts['learner_ids']} trained ({accounts['left_out']} in no training item, "
            f"{accounts['learner_excluded']} left out by the learner), {accounts['untrained']} in rounds without "
            "training data.")
