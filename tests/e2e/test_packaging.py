"""Installed, codealign is one import name: the wheel's only top-level entry is `codealign`, so another package
called `sandbox`, `pipeline` or `actors` can neither break it nor be broken by it, and the installed copy works
outside the checkout (its sandbox starts its server from site-packages)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("codealign-*.whl")
    return wheel


def test_the_wheel_installs_one_top_level_name_and_runs_from_site_packages(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"codealign"}, top
    for module in ("codealign/sandbox/_server.py", "codealign/pipeline/cli.py", "codealign/actors/replay_buffer.py",
                   "codealign/exercises/prompts/solution.txt"):
        assert module in names, module

    # Unpacked beside a decoy package named `sandbox`, away from the checkout: the installed sandbox judges a run.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    (site / "sandbox").mkdir()
    (site / "sandbox" / "__init__.py").write_text("raise ImportError('the decoy was imported')\n")
    probe = ("from codealign.sandbox import Sandbox\n"
             "import codealign.sandbox as s\n"
             f"assert s.__file__.startswith({str(site)!r}), s.__file__\n"
             "r = Sandbox().run('def f(x):\\n    return x + 1\\n', 'assert f(1) == 2\\n', timeout_s=10)\n"
             "print(r.verdict.name)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "PASSED", proc.stdout
