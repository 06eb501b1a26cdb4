"""Run untrusted Python with tests in a locked-down child process and turn the outcome into a reward."""

from __future__ import annotations

import enum
import fcntl
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import codealign
from codealign.sandbox import cgroup, frames

SERVER = str(Path(__file__).with_name("_server.py"))
# the folder holding the `codealign` package (a checkout, or site-packages): the server imports it from there
PROJECT_ROOT = str(Path(codealign.__file__).resolve().parent.parent)


class Verdict(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    RUNTIME_ERROR = "runtime_error"
    SYNTAX_ERROR = "syntax_error"
    TIMEOUT = "timeout"
    # Tests that can only be judged beside the solution (mode "in_process"), under in_process="refuse": not run,
    # since a process that ran the solution could forge its verdict.
    REFUSED = "refused"


@dataclass
class RewardTable:
    """Reward per verdict; the defaults are the seed paper's. `refused` defaults to the reward of a wrong answer:
    a program gains nothing over failing by pushing its tests off the split path."""

    timeout: float = -2.0
    syntax_error: float = -1.0
    runtime_error: float = -0.6
    failed: float = -0.3
    passed: float = 4.0
    refused: float = -0.3

    def __call__(self, verdict: Verdict) -> float:
        return float(getattr(self, verdict.value))


@dataclass
class Result:
    verdict: Verdict
    reward: float
    duration_s: float
    detail: str = ""
    # "split": the tests ran in a fresh judge, calling the solution through plain values: nothing the solution did
    # could touch the verdict. "in_process": they ran beside the solution (a strict comparator, a nonce), in a
    # process that ran model code and so could have forged the verdict; under in_process="refuse" such runs are
    # not run and get Verdict.REFUSED. "": nothing ran (syntax error).
    mode: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASSED


class ServerLost(RuntimeError):
    pass


IN_PROCESS_POLICIES = ("allow", "refuse")
SLACK_S = 10.0  # the server answers within the run's timeout plus its own bookkeeping; past this it is lost
VERDICTS = {v.value for v in Verdict}


def _sealed_memfd(name: str, text: str) -> int:
    """The text in an anonymous file nobody can change once sealed: the solution's process and the judge read the
    very same bytes, and the server passes it on without reading it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    data = memoryview(text.encode("utf-8", errors="surrogateescape"))
    while data:
        data = data[os.write(fd, data):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    return fd


class _Server:
    """One fork server process; runs one job at a time."""

    def __init__(self, opts: dict):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "HOME": "/tmp/work", "TMPDIR": "/tmp/work"}
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", SERVER, PROJECT_ROOT, json.dumps(opts), str(theirs.fileno())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd="/",
            start_new_session=True, pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        hello = self._recv(30.0)
        self.active: list[str] = hello.get("active", [])
        self.cgroup_state: str = hello.get("cgroup", "")
        self.cgroup_version: str = hello.get("cgroup_version", "none")
        self.mounts_state: str = hello.get("mounts", "")
        self.uids: list[int | None] = hello.get("uids", [None, None])  # its runs' (solution, judge)
        self._cgroup_dirs: list[str] = hello.get("cgroup_dirs", [])
        self._slot_lock: str | None = hello.get("slot_lock")

    def _recv(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            self.kill()
            raise ServerLost("sandbox server did not answer in time")
        try:
            msg = json.loads(self.sock.recv(1 << 16) or b"null")
        except (OSError, ValueError) as exc:
            self.kill()
            raise ServerLost(f"sandbox server sent garbage: {exc}") from exc
        if not isinstance(msg, dict):
            self.kill()
            raise ServerLost("sandbox server exited")
        return msg

    def run(self, solution: str, tests: str, timeout: float, refuse: bool) -> tuple[dict, dict | None]:
        """(the server's account of the run, the judge's verdict frame or None)."""
        verdict_r, verdict_w = os.pipe()
        fds = [_sealed_memfd("solution", solution), _sealed_memfd("tests", tests), verdict_w]
        try:
            socket.send_fds(self.sock, [json.dumps({"timeout": timeout, "refuse": refuse}).encode()], fds)
        except OSError as exc:
            os.close(verdict_r)
            self.kill()
            raise ServerLost(f"sandbox server is gone: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        try:
            status = self._recv(timeout + SLACK_S)
            # Every writer of the pipe is dead by now (the server reaped the judge's whole PID namespace), so this
            # reads what the judge wrote, then the end of the pipe.
            frame = None
            if select.select([verdict_r], [], [], 1.0)[0]:
                try:
                    frame = frames.read_frame(verdict_r, 1 << 16)
                except (OSError, ValueError):
                    frame = None
        finally:
            os.close(verdict_r)
        return status, frame if isinstance(frame, dict) else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:  # the server leads its own process group; its run processes die with it (parent-death signal)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        try:
            self.sock.close()
        except OSError:
            pass
        self._remove_cgroup()

    def _remove_cgroup(self) -> None:
        if self._cgroup_dirs and self._slot_lock is not None:
            cgroup.remove_for_dead_server(self._cgroup_dirs, self._slot_lock)
        self._cgroup_dirs = []


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
        in_process: str = "allow",
    ):
        if not 0 < timeout_s < float("inf"):
            raise ValueError(f"timeout_s must be positive and finite, got {timeout_s}")
        if in_process not in IN_PROCESS_POLICIES:
            raise ValueError(f"in_process must be one of {IN_PROCESS_POLICIES}, got {in_process!r}")
        self.in_process = in_process
        self.timeout_s = timeout_s
        self.parallelism = parallelism or os.cpu_count() or 1
        self.rewards = rewards or RewardTable()
        self._opts = {"memory_mb": memory_mb, "file_mb": file_size_mb, "nproc": max_processes}
        self._idle: queue.SimpleQueue[_Server] = queue.SimpleQueue()
        self._all: list[_Server] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # -- public API -------------------------------------------------------------------------------------
    @property
    def protections(self) -> dict[str, bool | str]:
        """Each protection -> whether it is in effect on this machine; and in words, "cgroup": what bounds a run as
        a whole (and what that cgroup version lacks), or the fallback and what it loses, "cgroup_version": "v1",
        "v2" or "none", and "mounts": what a run sees of the host's files."""
        server = self._acquire()
        try:
            active, cgroup_state, mounts_state = set(server.active), server.cgroup_state, server.mounts_state
            cgroup_version = server.cgroup_version
        finally:
            self._release(server)
        names = ["network_namespace", "mount_namespace", "pid_namespace", "ipc_namespace", "user_namespace",
                 "unprivileged_user", "minimal_root", "read_only_host", "private_tmp", "rlimits", "no_new_privs",
                 "per_run_ipc_namespace", "per_run_uid", "seccomp", "run_cgroup", "packages_hidden"]
        report: dict[str, bool | str] = {name: name in active for name in names}
        report.update(own_process_per_run=True, fresh_judge_per_run=True, wall_timeout=True,
                      minimal_environment=True, out_of_band_verdict=True, split_tests=True,
                      in_process_refused=self.in_process == "refuse", cgroup=cgroup_state,
                      cgroup_version=cgroup_version, mounts=mounts_state)
        return report

    def run(self, solution: str, tests: str, timeout_s: float | None = None) -> Result:
        if not isinstance(solution, str) or not isinstance(tests, str):
            raise TypeError("solution and tests must be str")
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if not 0 < timeout < float("inf"):
            raise ValueError(f"timeout_s must be positive and finite, got {timeout}")
        start = time.monotonic()
        verdict, detail, mode = self._submit(solution, tests, timeout)
        return Result(verdict, self.rewards(verdict), time.monotonic() - start, detail, mode)

    def _submit(self, solution: str, tests: str, timeout: float) -> tuple[Verdict, str, str]:
        refuse = self.in_process == "refuse"
        server = self._acquire()
        try:
            status, frame = server.run(solution, tests, timeout, refuse)
        except ServerLost as exc:
            self._forget(server)
            return Verdict.RUNTIME_ERROR, str(exc), ""
        self._release(server)
        return _verdict(status, frame, timeout, refuse)

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


def _verdict(status: dict, frame: dict | None, timeout: float, refuse: bool) -> tuple[Verdict, str, str]:
    """The run's verdict from the server's account (trusted: it never runs model code) and the judge's frame.
    The mode is the server's: the judge announces it before any test runs, and a fallback to in-process goes
    through the server, so no test and no solution can pass an in-process run off as a split one."""
    if "error" in status:
        return Verdict.RUNTIME_ERROR, str(status["error"]), ""
    mode = str(status.get("mode", ""))
    if mode == "in_process" and refuse:
        why = str(frame.get("detail", "")) if frame is not None and frame.get("verdict") == "refused" else ""
        return Verdict.REFUSED, "the tests need the solution's own process, refused by in_process=refuse" + (
            f": {why}" if why else ""), mode
    if status.get("memory_kills"):  # whatever the processes still standing said: the run went past its limit
        return Verdict.RUNTIME_ERROR, "the run's processes together went past memory_mb (killed)", mode
    if frame is not None and frame.get("verdict") in VERDICTS - {"refused"}:
        verdict, detail = Verdict(frame["verdict"]), str(frame.get("detail", ""))
        if verdict is Verdict.SYNTAX_ERROR:
            return verdict, detail, ""
        sig = status.get("solution_signal") or 0
        if verdict is Verdict.RUNTIME_ERROR and sig == signal.SIGXCPU:
            return Verdict.TIMEOUT, "CPU time limit", mode
        if verdict is Verdict.RUNTIME_ERROR and sig and sig != signal.SIGKILL:
            detail = f"{detail} (solution process killed by {signal.Signals(sig).name})".strip()
        return verdict, detail, mode
    if status.get("timed_out"):
        return Verdict.TIMEOUT, f"wall time limit of {timeout:g}s", mode
    sig = status.get("judge_signal") or 0
    how = f"killed by {signal.Signals(sig).name}" if sig else "without a verdict"
    return Verdict.RUNTIME_ERROR, f"the judge ended {how}", mode
