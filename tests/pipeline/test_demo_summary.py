"""The run's closing summary, the part of `make demo` a newcomer reads: what was trained, what moved on held-out
tasks and what did not (and why), and the command of the longer recipe; on the console last and at the top of
report.md. tests/data/demo_run holds the config.yaml, metrics.jsonl and summary.json of a real run of
configs/local.yaml (2026-12-05, branch `trust`: the recipe before the demo's current sizes, its evaluations cut to 10
test and 5 validation tasks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from codealign.pipeline.report import RunDir
from tests.conftest import ROOT

RUN = Path(__file__).parents[1] / "data" / "demo_run"


def finish_copy(tmp_path: Path) -> RunDir:
    """RunDir.finish on a copy of the real run's files, with the figures its summary.json recorded."""
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(RUN / name, tmp_path / name)
    s = json.loads((RUN / "summary.json").read_text())
    run_dir = RunDir(tmp_path)
    run_dir.finish(s["pass@1_before"], s["pass@1_after"], s["eval_exercises"], s["stage_seconds"],
                   s["replay_buffer"], None, s["policy_version"],
                   extra_summary={k: s[k] for k in ("benchmarks", "validation", "decontamination")})
    return run_dir


def test_the_summary_says_what_was_trained_what_moved_and_what_next(tmp_path, capsys):
    run_dir = finish_copy(tmp_path)
    console = capsys.readouterr().out
    report = (run_dir.path / "report.md").read_text()
    tail = console[console.index("== What this run trained =="):]
    assert report.index("== What this run trained ==") < report.index("| before |")  # the top of report.md
    assert tail.strip() in report  # the same text in both places, and the console's last words

    trained = tail[:tail.index("== Held-out")]
    assert "DPO with LoRA (rank 16)" in trained and "2 rounds of 16 training exercises x 4 samples" in trained
    assert "48 preference pairs" in trained  # 24 + 24 in metrics.jsonl
    assert "removed 47 training tasks that overlap an evaluation set" in trained
    assert "serve/probe_gain_kept), per round: 1.03, 0.99" in trained

    held_out = tail[tail.index("== Held-out"):tail.index("== What moved")]
    assert ("MBPP test (10 tasks): 0.200 [0.000, 0.500] -> 0.200 [0.000, 0.500]; change +0.000" in held_out)
    assert ("HumanEval (10 tasks): 0.100 [0.000, 0.300] -> 0.000 [0.000, 0.000]; change -0.100 "
            "(95% CI -0.300 to +0.000); 0 tasks solved only after, 1 only before; McNemar p = 1") in held_out
    assert "MBPP validation (5 tasks" in held_out and "0.200 -> 0.200 -> 0.200" in held_out

    moved = tail[tail.index("== What moved"):tail.index("== What did not move")]
    assert "nothing" in moved
    why = tail[tail.index("== What did not move"):tail.index("== The longer recipe")]
    assert "MBPP test: not one of its 10 tasks changed its verdict" in why
    assert "HumanEval: change -0.100 with a 95% interval from -0.300 to +0.000, which holds 0" in why
    assert tail.rstrip().splitlines()[-1].strip().startswith(".venv/bin/python bench/quality.py")
    assert (ROOT / "bench" / "quality.py").is_file()


def test_a_significant_change_is_reported_as_moved(tmp_path):
    """The same run with MBPP's paired comparison as a clear gain: it moves, HumanEval still does not."""
    run_dir = finish_copy(tmp_path)
    s = json.loads((run_dir.path / "summary.json").read_text())
    s["benchmarks"]["mbpp"]["paired"].update(difference=0.08, ci95=[0.03, 0.13], only_a=1, only_b=9,
                                              p_value=0.0215)
    s["decontamination"]["checked"] = {"mbpp_train": 374}  # what the gate saw (runs since it counts them)
    (run_dir.path / "summary.json").write_text(json.dumps(s))
    from codealign.pipeline.summary import closing_summary

    text = closing_summary(run_dir.path)
    moved = text[text.index("== What moved"):text.index("== What did not move")]
    assert "MBPP test: +0.080 pass@1, p = 0.0215" in moved and "HumanEval" not in moved
    assert "MBPP test" not in text[text.index("== What did not move"):text.index("== The longer recipe")]
    assert "removed 47 of 374 training tasks" in text
