"""PNG plots of a run for report.md, drawn with matplotlib from metrics.jsonl: readable without any service.

Each plot is drawn only when the run has its data (DPO plots for DPO runs, PPO plots for PPO runs, pass@1 over
iterations when the loop evaluated on its validation split)."""

from __future__ import annotations

from pathlib import Path

VERDICTS = ("passed", "failed", "runtime_error", "syntax_error", "timeout")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for m in metrics:
        if isinstance(m.get(key), (int, float)):
            xs.append(m["iteration"])
            ys.append(float(m[key]))
    return xs, ys


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def reward_and_verdicts(metrics: list[dict], path: Path) -> Path | None:
    if not metrics:
        return None
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    xs, mean = _series(metrics, "reward_mean")
    _, std = _series(metrics, "reward_std")
    ax1.errorbar(xs, mean, yerr=std, marker="o", capsize=3)
    ax1.set(title="reward per iteration (mean ± std)", xlabel="iteration", ylabel="reward")
    bottom = [0.0] * len(metrics)
    its = [m["iteration"] for m in metrics]
    for verdict in VERDICTS:
        share = [m.get("verdicts", {}).get(verdict, 0) / max(1, m.get("samples", 0)) for m in metrics]
        ax2.bar(its, share, bottom=bottom, label=verdict)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax2.set(title="verdict mix of the samples", xlabel="iteration", ylabel="share", ylim=(0, 1))
    ax2.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def pass_over_iterations(points: list[dict], path: Path) -> Path | None:
    """points: {"iteration", "pass@1", "ci95"}; iteration -1 is before training."""
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [p["iteration"] for p in points]
    ys = [p["pass@1"] for p in points]
    lo = [p["pass@1"] - p["ci95"][0] for p in points]
    hi = [p["ci95"][1] - p["pass@1"] for p in points]
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3)
    ax.set(title=f"validation pass@1 ({points[0].get('benchmark', '')}, 95% CI)",
           xlabel="after iteration (-1: before training)", ylabel="pass@1")
    return _save(fig, path)


def dpo_panels(metrics: list[dict], path: Path) -> Path | None:
    if not any("dpo/margin" in m for m in metrics):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for key, label in (("dpo/chosen_rewards", "chosen"), ("dpo/rejected_rewards", "rejected")):
        axes[0].plot(*_series(metrics, key), marker="o", label=label)
    axes[0].set(title="DPO rewards", xlabel="iteration")
    axes[0].legend(fontsize=7)
    for ax, key, title in ((axes[1], "dpo/margin", "DPO margin"), (axes[2], "dpo/accuracy", "DPO accuracy"),
                           (axes[3], "dpo/loss", "DPO loss")):
        ax.plot(*_series(metrics, key), marker="o")
        ax.set(title=title, xlabel="iteration")
    return _save(fig, path)


def ppo_panels(metrics: list[dict], path: Path) -> Path | None:
    if not any("ppo/kl" in m for m in metrics):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in ((axes[0], "ppo/kl", "KL to the reference"), (axes[1], "ppo/clip_fraction",
                                                                         "clip fraction"),
                           (axes[2], "ppo/entropy", "entropy")):
        ax.plot(*_series(metrics, key), marker="o")
        ax.set(title=title, xlabel="iteration")
    return _save(fig, path)


def stage_timings(metrics: list[dict], path: Path) -> Path | None:
    stages = sorted({k for m in metrics for k in m.get("seconds", {})})
    if not stages:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    its = [m["iteration"] for m in metrics]
    bottom = [0.0] * len(metrics)
    for stage in stages:
        secs = [m.get("seconds", {}).get(stage, 0.0) for m in metrics]
        ax.bar(its, secs, bottom=bottom, label=stage)
        bottom = [b + s for b, s in zip(bottom, secs)]
    ax.set(title="seconds per stage", xlabel="iteration", ylabel="seconds")
    ax.legend(fontsize=7)
    return _save(fig, path)


def draw_all(run_dir: Path, metrics: list[dict], validation: list[dict]) -> list[tuple[str, Path]]:
    """(caption, path) of every plot drawn into <run_dir>/plots/."""
    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(exist_ok=True)
    made = [
        ("Reward and verdict mix per iteration", reward_and_verdicts(metrics, out_dir / "reward_verdicts.png")),
        ("Validation pass@1 over iterations", pass_over_iterations(validation, out_dir / "validation_pass1.png")),
        ("DPO: chosen/rejected rewards, margin, accuracy, loss", dpo_panels(metrics, out_dir / "dpo.png")),
        ("PPO: KL, clip fraction, entropy", ppo_panels(metrics, out_dir / "ppo.png")),
        ("Stage timings", stage_timings(metrics, out_dir / "stages.png")),
    ]
    return [(caption, path) for caption, path in made if path is not None]
