"""Run untrusted Python with tests in a locked-down child process and turn the outcome into a reward."""

from __future__ import annotations

import enum
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sandbox import frames

SERVER = str(Path(__file__).with_name("_server.py"))
PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


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
    # "split": the tests ran outside the solution's process, calling it through plain values;
    # "in_process": they ran beside the solution, with a strict comparator; "": nothing ran (syntax error)
    mode: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASSED


class ServerLost(RuntimeError):
    pass


class _Server:
    """One fork server process; runs one job at a time."""

    def __init__(self, opts: dict):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "HOME": "/tmp/work", "TMPDIR": "/tmp/work"}
        tests_r, self.tests_w = os.pipe()  # caller -> judge: the tests never pass through the server
        self.verdict_r, verdict_w = os.pipe()  # judge -> caller
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", SERVER, PROJECT_ROOT, json.dumps(opts), str(tests_r), str(verdict_w)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/",
            start_new_session=True, pass_fds=(tests_r, verdict_w),
        )
        os.close(tests_r)
        os.close(verdict_w)
        hello = self._read(self.proc.stdout.fileno(), 30.0)
        self.active: list[str] = hello["active"]

    def _read(self, fd: int, timeout: float) -> dict:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            self.kill()
            raise ServerLost("sandbox server did not answer in time")
        try:
            msg = frames.read_frame(fd)
        except (OSError, ValueError) as exc:
            self.kill()
            raise ServerLost(f"sandbox server sent garbage: {exc}") from exc
        if msg is None:
            self.kill()
            raise ServerLost("sandbox server exited")
        return msg

    def run(self, solution: str, tests: str, timeout: float, mode: str) -> dict:
        try:
            frames.write_frame(self.proc.stdin.fileno(), {"solution": solution, "timeout": timeout, "mode": mode})
            frames.write_frame(self.tests_w, {"tests": tests, "solution": solution})  # the judge reads its source
        except OSError as exc:
            self.kill()
            raise ServerLost(f"sandbox server is gone: {exc}") from exc
        return self._read(self.verdict_r, timeout + 10.0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:  # the server leads its own process group: its supervisors go with it
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        for fd in (self.tests_w, self.verdict_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.tests_w = self.verdict_r = -1


class Sandbox:
    """`Sandbox().run(solution, tests)` -> Result. A pool of warm fork servers; `close()` ends every process."""

    def __init__(
        self,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        file_size_mb: int = 16,
        parallelism: int | None = None,
        rewards: RewardTable | None = None,
        max_processes: int = 64,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.parallelism = parallelism or os.cpu_count() or 1
        self.rewards = rewards or RewardTable()
        self._opts = {"memory_mb": memory_mb, "file_mb": file_size_mb, "nproc": max_processes,
                      "cpu_s": int(timeout_s) + 1}
        self._idle: queue.SimpleQueue[_Server] = queue.SimpleQueue()
        self._all: list[_Server] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # -- public API -------------------------------------------------------------------------------------
    @property
    def protections(self) -> dict[str, bool]:
        server = self._acquire()
        try:
            active = set(server.active)
        finally:
            self._release(server)
        names = ["network_namespace", "mount_namespace", "pid_namespace", "ipc_namespace", "user_namespace",
                 "unprivileged_user", "minimal_root", "read_only_host", "private_tmp", "rlimits", "no_new_privs"]
        report = {name: name in active for name in names}
        report.update(own_process_per_run=True, wall_timeout=True, minimal_environment=True,
                      out_of_band_verdict=True, split_tests=True)
        return report

    def run(self, solution: str, tests: str, timeout_s: float | None = None) -> Result:
        if not isinstance(solution, str) or not isinstance(tests, str):
            raise TypeError("solution and tests must be str")
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if timeout <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout}")
        start = time.monotonic()
        reply = self._submit(solution, tests, timeout, "split")
        if reply.get("verdict") == "retry":
            reply = self._submit(solution, tests, timeout, "in_process")
        try:
            verdict = Verdict(reply.get("verdict"))
        except ValueError:
            verdict = Verdict.RUNTIME_ERROR
        mode = "" if verdict is Verdict.SYNTAX_ERROR else str(reply.get("mode", ""))
        return Result(verdict, self.rewards(verdict), time.monotonic() - start, str(reply.get("detail", "")), mode)

    def run_many(self, jobs: list[tuple[str, str]], timeout_s: float | None = None) -> list[Result]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.parallelism)
        return list(self._pool.map(lambda job: self.run(job[0], job[1], timeout_s), jobs))

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for server in self._all:
                server.kill()
            self._all.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- servers ----------------------------------------------------------------------------------------
    def _submit(self, solution: str, tests: str, timeout: float, mode: str) -> dict:
        server = self._acquire()
        try:
            reply = server.run(solution, tests, timeout, mode)
        except ServerLost as exc:
            self._forget(server)
            return {"verdict": "runtime_error", "detail": str(exc), "mode": mode}
        self._release(server)
        return reply

    def _acquire(self) -> _Server:
        if self._closed:
            raise RuntimeError("Sandbox is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = len(self._all) < self.parallelism
            if grow:
                server = _Server(self._opts)
                self._all.append(server)
                return server
        return self._idle.get()

    def _release(self, server: _Server) -> None:
        self._idle.put(server)

    def _forget(self, server: _Server) -> None:
        server.kill()
        with self._lock:
            if server in self._all:
                self._all.remove(server)
