"""Runs cannot touch each other, and no call outlives its timeout (issue 9, section 3), and the defence in depth
(seccomp, a uid per parallel run). Hostile *tests* are contained as hostile solutions are. Real sandboxes, real
programs. Time bounds are generous (the machine is shared): they tell "returns" from "hangs for minutes"."""

import os
import threading
import time

import pytest

from codealign.sandbox import Sandbox, Verdict

SQUARE = "def square(x):\n    return x * x\n"
WRONG = "def square(x):\n    return x + x\n"
TESTS = "assert square(3) == 9\nassert square(-2) == 4\n"
HANG = "def square(x):\n    while True:\n        pass\n"
SLEEP = "import time\ndef square(x):\n    time.sleep(60)\n"
TIMEOUT = 2.0
BOUND = TIMEOUT + 6.0  # the timeout plus a constant far below the 10 s a lost server costs


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=TIMEOUT, parallelism=1) as box:
        yield box


def timed(box, solution, tests, **kw):
    start = time.monotonic()
    res = box.run(solution, tests, **kw)
    return res, time.monotonic() - start


def server_pids(box) -> list[int]:
    return [s.proc.pid for s in box._all]


# Tests that break the judge they run in. Each must end within the bound, not pass a wrong solution, and leave the
# next run (on the same server) judged exactly as if it had never happened.
BREAKERS = {
    "rebind-len": "import builtins\nbuiltins.len = lambda x: 0\nbuiltins.min = lambda *a, **k: 0\n",
    "rebind-isinstance": "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.str = bytes\n",
    "module-globals": "import sys\nfor name, mod in list(sys.modules.items()):\n"
                      "    if name.startswith('codealign') or name in ('json', 'os', 'socket'):\n"
                      "        for attr in list(vars(mod)):\n"
                      "            if not attr.startswith('__'):\n"
                      "                try:\n                    setattr(mod, attr, None)\n"
                      "                except Exception:\n                    pass\n",
    "trace-function": "import sys, threading\ndef t(*a):\n    raise SystemExit(3)\nsys.settrace(t)\n"
                      "threading.settrace(t)\nsys.setprofile(t)\n",
    "alarm-handler": "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                     "signal.setitimer(signal.ITIMER_REAL, 0)\n",
    "os-exit": "import os\nos._exit(0)\n",
    "kill-group": "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n",
}


@pytest.mark.parametrize("breaker", list(BREAKERS.values()), ids=list(BREAKERS))
def test_tests_that_break_their_judge_do_not_reach_the_next_run(sb, breaker):
    before = server_pids(sb)
    res, took = timed(sb, WRONG, breaker + TESTS)
    assert res.verdict is not Verdict.PASSED, res
    assert took < BOUND, (took, res)
    # the next runs, with hanging solutions too (a judge whose alarm was taken would never time out)
    assert sb.run(SQUARE, TESTS).verdict is Verdict.PASSED
    assert sb.run(WRONG, TESTS).verdict is Verdict.FAILED
    res, took = timed(sb, HANG, TESTS)
    assert res.verdict is Verdict.TIMEOUT and took < BOUND, (took, res)
    assert not before or server_pids(sb) == before  # the server itself never went down


def test_test_output_goes_nowhere_and_never_blocks(sb):
    noisy = "import sys\nprint('x' * 100_000)\nsys.stderr.write('y' * 100_000)\n" + TESTS
    for _ in range(3):  # well past a 64 KiB pipe nobody reads
        res, took = timed(sb, SQUARE, noisy)
        assert res.verdict is Verdict.PASSED and took < BOUND, (took, res)


@pytest.mark.parametrize("tests", [
    "while True:\n    pass\n",
    "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.setitimer(signal.ITIMER_REAL, 0)\n"
    "while True:\n    pass\n",
    "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except BaseException:\n        pass\n",
], ids=["busy", "alarm-off", "sleep-swallow"])
def test_a_hanging_judge_is_killed_at_the_deadline(sb, tests):
    res, took = timed(sb, SQUARE, tests)
    assert res.verdict is Verdict.TIMEOUT and took < BOUND, (took, res)
    assert sb.run(SQUARE, TESTS).verdict is Verdict.PASSED


def test_in_process_fallback_keeps_the_runs_single_deadline(sb):
    # The split run spends most of the budget, then a non-plain argument sends the tests beside the solution:
    # there the same calls start again. Before, the fallback got a fresh clock and passed after ~2x the timeout.
    solution = (f"import time\ndef slow(x):\n    time.sleep({0.7 * TIMEOUT})\n    return x\n"
                "def apply(box, x):\n    return box.get(x)\n")
    tests = ("class Box:\n    def get(self, v):\n        return v\n"  # not data, not a callable: cannot cross
             "assert slow(1) == 1\nassert apply(Box(), 2) == 2\n")
    res, took = timed(sb, solution, tests)
    assert res.verdict is Verdict.TIMEOUT and res.mode == "in_process", res
    assert took < BOUND


def test_a_per_run_timeout_above_the_constructors_is_not_cut_by_the_cpu_limit():
    # 1.3 s of CPU: past the CPU limit a 0.5 s constructor timeout once set for every run (1 s)
    busy = "import time\nend = time.process_time() + 1.3\nwhile time.process_time() < end:\n    pass\n" + SQUARE
    with Sandbox(timeout_s=0.5, parallelism=1) as box:
        res = box.run(busy, TESTS, timeout_s=120)  # generous: a loaded machine stretches CPU time into wall time
        assert res.verdict is Verdict.PASSED, res
        assert box.run(busy, TESTS).verdict is Verdict.TIMEOUT


def test_compile_time_recursion_and_huge_constants_spare_the_server(sb):
    before = server_pids(sb)
    deep = "x = " + "+".join(["1"] * 200_000) + "\n"
    res, took = timed(sb, deep, "")
    assert res.verdict is Verdict.SYNTAX_ERROR and took < BOUND, res
    huge = "x = " + "9" * 100_000 + "\n"
    assert sb.run(huge, "").verdict is Verdict.SYNTAX_ERROR  # past the interpreter's own digit limit
    folded = "x = (1,) * 10**8\ny = 2 ** 10**9\n"  # constant folding must not blow up anything but the run
    res, took = timed(sb, folded, "")
    assert res.verdict in (Verdict.TIMEOUT, Verdict.RUNTIME_ERROR) and took < BOUND, res
    assert sb.run(SQUARE, TESTS).verdict is Verdict.PASSED
    assert not before or server_pids(sb) == before


# -- nothing is left behind ---------------------------------------------------------------------------------------
def _run_processes(box) -> set[int]:
    """Live processes, seen from the host, that run as one of this sandbox's per-run uids."""
    uids = {str(u) for s in box._all for u in s.uids}
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] and fields["Uid"].split()[0] in uids and "Z" not in fields["State"]:
            out.add(int(pid))
    return out


def test_tests_leave_no_process_file_or_ipc_object_behind(sb):
    leave = (
        "import os, time\n"
        "open('fixture.txt', 'w').write('from the tests')\n"  # tests may write their own scratch files
        "assert open('fixture.txt').read() == 'from the tests'\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n    os._exit(0)\n"
        + TESTS
    )
    res = sb.run(SQUARE, leave)
    assert res.verdict is Verdict.PASSED, res
    time.sleep(0.3)
    assert sb.protections["per_run_uid"]
    assert _run_processes(sb) == set()
    res = sb.run(SQUARE, "import os\nassert not os.path.exists('fixture.txt')\n" + TESTS)
    assert res.verdict is Verdict.PASSED, res


# -- defence in depth ---------------------------------------------------------------------------------------------
SYSCALLS = {  # x86_64 numbers, with arguments that would otherwise succeed or fail for another reason
    "ptrace": "101, 0, 0, 0, 0",  # PTRACE_TRACEME
    "unshare": "272, 0x10000000",  # CLONE_NEWUSER
    "setns": "308, -1, 0",
    "mount": "165, None, None, None, 0, None",
    "bpf": "321, 0, None, 0",
    "keyctl": "250, 0, 0, 0, 0",
    "perf_event_open": "298, None, 0, -1, -1, 0",
    "shmget": "29, 0, 4096, 0o1600",
    "msgget": "68, 0, 0o1600",
    "raw socket": "41, 2, 3, 1",  # socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
    "packet socket": "41, 17, 3, 0",
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64's")
def test_seccomp_denies_what_no_ordinary_program_needs(sb):
    assert sb.protections["seccomp"]
    checks = "".join(
        f"assert libc.syscall({args}) == -1 and ctypes.get_errno() == errno.EPERM, ({name!r}, ctypes.get_errno())\n"
        for name, args in SYSCALLS.items()
    )
    program = "import ctypes, errno, os\nlibc = ctypes.CDLL(None, use_errno=True)\n" + checks
    res = sb.run(program, "")
    assert res.verdict is Verdict.PASSED, res.detail
    # the same for the tests, in the judge
    res = sb.run(SQUARE, program + TESTS)
    assert res.verdict is Verdict.PASSED, res.detail


def test_a_fork_bomb_does_not_starve_a_parallel_run():
    if os.geteuid() != 0:
        pytest.skip("per-run uids need root")
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    forks = ("import os\nkids = []\nfor _ in range(16):\n    pid = os.fork()\n    if pid == 0:\n"
             "        os._exit(0)\n    kids.append(pid)\nfor pid in kids:\n    os.waitpid(pid, 0)\n" + SQUARE)
    with Sandbox(timeout_s=6, parallelism=2, max_processes=32) as box:
        box.run(SQUARE, TESTS)
        box.run_many([(SQUARE, TESTS)] * 2)  # both servers up
        assert box.protections["per_run_uid"]
        bombed = []
        worker = threading.Thread(target=lambda: bombed.append(box.run(bomb, "")))
        worker.start()
        time.sleep(1.5)  # the bomb has taken every process its uid may have
        res = box.run(forks, TESTS, timeout_s=4)
        worker.join(30)
        assert res.verdict is Verdict.PASSED, res
        assert bombed and bombed[0].verdict is Verdict.TIMEOUT


def test_hostile_tests_are_contained_like_hostile_solutions(sb, tmp_path):
    target = tmp_path / "from-the-tests.txt"
    os.chmod(tmp_path, 0o777)
    tests = (
        "import os, socket\n"
        f"for p in ({str(target)!r}, '/tmp/escape', '/var/tmp/escape', '/dev/shm/escape'):\n"
        "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n"
        "s = socket.socket()\ns.settimeout(1)\n"
        "try:\n    s.connect(('127.0.0.1', 22))\n    raise SystemExit(7)\nexcept OSError:\n    pass\n"
        "assert [p for p in os.listdir('/proc') if p.isdigit()] == ['1']\n"  # alone in its PID namespace
        "assert os.getuid() != 0 or not os.path.exists('/work')\n"
        + TESTS
    )
    res = sb.run(SQUARE, tests)
    assert res.verdict is Verdict.PASSED, res
    assert not target.exists()
    res = sb.run(SQUARE, "x = bytearray(64 * 2**30)\n" + TESTS)  # the judge has a memory limit too
    assert res.verdict is Verdict.RUNTIME_ERROR, res
