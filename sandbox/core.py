"""Run untrusted Python with tests in a locked-down child process and turn the outcome into a reward."""

from __future__ import annotations

import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

RUNNER = str(Path(__file__).with_name("_runner.py"))
NOBODY_UID = 65534
REPORT_MAX = 4096


class Verdict(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    RUNTIME_ERROR = "runtime_error"
    SYNTAX_ERROR = "syntax_error"
    TIMEOUT = "timeout"


@dataclass
class RewardTable:
    """Reward per verdict; the defaults are the seed paper's."""

    timeout: float = -2.0
    syntax_error: float = -1.0
    runtime_error: float = -0.6
    failed: float = -0.3
    passed: float = 4.0

    def __call__(self, verdict: Verdict) -> float:
        return float(getattr(self, verdict.value))


@dataclass
class Result:
    verdict: Verdict
    reward: float
    duration_s: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASSED


class Sandbox:
    """`Sandbox().run(solution, tests)` -> Result. Each run gets its own process, directory and limits."""

    def __init__(
        self,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        file_size_mb: int = 16,
        parallelism: int | None = None,
        rewards: RewardTable | None = None,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.file_size_mb = file_size_mb
        self.parallelism = parallelism or os.cpu_count() or 1
        self.rewards = rewards or RewardTable()
        self._uid = NOBODY_UID if os.geteuid() == 0 and _readable_by_others(sys.executable) else -1
        self._pool: ThreadPoolExecutor | None = None

    # -- public API -------------------------------------------------------------------------------------
    @property
    def protections(self) -> dict[str, bool]:
        return {
            "own_process_group": True,
            "wall_timeout": True,
            "rlimits": True,
            "minimal_environment": True,
            "private_workdir": True,
            "unprivileged_user": self._uid >= 0,
            "network_namespace": _can_unshare_net(),
        }

    def run(self, solution: str, tests: str, timeout_s: float | None = None) -> Result:
        if not isinstance(solution, str) or not isinstance(tests, str):
            raise TypeError("solution and tests must be str")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        start = time.monotonic()
        verdict, detail = self._execute(solution, tests, timeout)
        return Result(verdict, self.rewards(verdict), time.monotonic() - start, detail)

    def run_many(self, jobs: list[tuple[str, str]], timeout_s: float | None = None) -> list[Result]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.parallelism)
        return list(self._pool.map(lambda job: self.run(job[0], job[1], timeout_s), jobs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one execution ----------------------------------------------------------------------------------
    def _execute(self, solution: str, tests: str, timeout: float) -> tuple[Verdict, str]:
        workdir = tempfile.mkdtemp(prefix="codealign-sb-")
        read_fd, write_fd = os.pipe()
        try:
            if self._uid >= 0:
                os.chown(workdir, self._uid, self._uid)
            env = {
                "PATH": "/usr/bin:/bin",
                "HOME": workdir,
                "TMPDIR": workdir,
                "LANG": "C.UTF-8",
                "PYTHONHASHSEED": "0",
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
            }
            cpu_s = int(timeout) + 1
            argv = [sys.executable, "-I", "-B", RUNNER, str(write_fd), str(self._uid),
                    str(self.memory_mb), str(cpu_s), str(self.file_size_mb)]
            proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=(write_fd,), start_new_session=True,
            )
            os.close(write_fd)
            write_fd = -1
            timed_out = False
            try:
                proc.stdin.write(json.dumps({"solution": solution, "tests": tests}).encode())
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)
            proc.wait()
            report = _read_report(read_fd)
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            os.close(read_fd)
            shutil.rmtree(workdir, ignore_errors=True)
        if timed_out:
            return Verdict.TIMEOUT, f"wall time limit of {timeout:g}s"
        if report is not None:
            return Verdict(report["verdict"]), report.get("detail", "")
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            if name == "SIGXCPU":
                return Verdict.TIMEOUT, "CPU time limit"
            return Verdict.RUNTIME_ERROR, f"killed by {name}"
        return Verdict.RUNTIME_ERROR, f"exited with status {proc.returncode} before the tests finished"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_report(fd: int) -> dict | None:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, REPORT_MAX)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(map(len, chunks)) > REPORT_MAX:
                return None
    except BlockingIOError:
        pass  # a surviving grandchild still holds the write end; what was written is all there is
    try:
        report = json.loads(b"".join(chunks))
        Verdict(report["verdict"])
        return report
    except (ValueError, KeyError, TypeError):
        return None


def _readable_by_others(executable: str) -> bool:
    """Can an unprivileged user reach the interpreter's standard library (every parent directory o+x)?"""
    import sysconfig

    path = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for part in [path, *path.parents]:
        if not part.stat().st_mode & 0o001:
            return False
    return os.access(os.path.realpath(executable), os.R_OK)


_UNSHARE_OK: bool | None = None


def _can_unshare_net() -> bool:
    global _UNSHARE_OK
    if _UNSHARE_OK is None:
        probe = "import ctypes,sys; sys.exit(0 if ctypes.CDLL(None).unshare(0x40000000)==0 else 1)"
        _UNSHARE_OK = subprocess.run([sys.executable, "-I", "-c", probe], check=False).returncode == 0
    return _UNSHARE_OK
