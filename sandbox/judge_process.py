"""The judge's process: forked fresh from the server for one run, and gone with it. Model-written tests are
untrusted too, so the judge is confined like the solution (own PID, mount and IPC namespaces, its own uid,
rlimits, seccomp, output to /dev/null), and whatever the tests do to it (rebinding builtins, rewriting module
globals, trace functions, signal handlers, exiting) ends with the run: the next run gets a new judge.

It decides, from the two sources alone (sandbox.plan), how the tests reach the solution, tells the server that
mode before any test runs, runs them, and writes one verdict frame to the caller's verdict pipe.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

from codealign.sandbox import frames, jail, judge_signals, plan, proxies, rpc
from codealign.sandbox.judge import compile_tests, run_split
from codealign.sandbox.solution_side import DETAIL_MAX, describe

COMPILE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)


def judge_process(fds: list[int], opts: dict, seccomp) -> None:
    started = time.monotonic()
    control_fd, source_fd, tests_fd, verdict_fd, requests, replies = fds
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # what the tests print goes nowhere: no pipe to fill, nothing to read back
        os.dup2(devnull, fd)
    keep = sorted({0, 1, 2, *fds})
    for lo, hi in zip(keep, keep[1:] + [4096]):
        os.closerange(lo + 1, hi)
    solution, tests = _read(source_fd), _read(tests_fd)
    os.close(source_fd)
    os.close(tests_fd)
    uid = opts["uids"][1]
    # A read-only working directory: tests that write files for the solution run beside it (proxies.writes_files).
    jail.confine_run(opts["memory_mb"] + 1024, opts["cpu_s"], opts["file_mb"], opts["nproc"], uid, seccomp,
                     writable=False, shared_mounts=opts.get("shared_mounts", True))
    sys.argv = ["tests"]  # as `python tests.py`: unittest.main() parses these
    import random
    import socket

    random.seed()  # not the state the solution's process was forked with: it cannot foresee the tests' draws
    control = socket.socket(fileno=control_fd)
    try:
        # the run's wall time is at least cpu_s - 1 (sandbox._server): a verdict of the judge's own comes first
        deadline = started + max(0.5, opts["cpu_s"] - 1) - 0.5
        reply = decide(solution, tests, (requests, replies), control, opts["refuse"], deadline)
    except BaseException as exc:  # whatever the tests broke in here, the answer is not a pass
        reply = {"verdict": "runtime_error", "detail": "judge: " + describe(exc)}
    if reply.pop("died", False):
        _tell(control, {"op": "died"})
    reply["detail"] = str(reply.get("detail", ""))[:DETAIL_MAX]
    while len(frames.encode_frame(reply)) > 4000 and reply["detail"]:
        reply["detail"] = reply["detail"][: len(reply["detail"]) // 2]
    frames.write_frame(verdict_fd, reply)  # one write, under PIPE_BUF: it lands whole or not at all
    _tell(control, {"op": "done"})  # the server need not wait for this exit to end the run
    os._exit(0)


def _read(fd: int) -> str:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    return data.decode("utf-8", errors="surrogateescape")


def _tell(control, msg: dict) -> None:
    try:
        control.send(json.dumps(msg).encode())
    except OSError:
        pass


def decide(solution: str, tests: str, pipes: tuple[int, int], control, refuse: bool,
           deadline: float | None = None) -> dict:
    import ast

    try:
        tree = ast.parse(solution, "<solution>")
        compile(tree, "<solution>", "exec")
    except COMPILE_ERRORS as exc:
        _tell(control, {"op": "mode", "mode": ""})
        return {"verdict": "syntax_error", "detail": describe(exc), "mode": ""}
    try:
        _, free = compile_tests(tests)
    except COMPILE_ERRORS as exc:
        _tell(control, {"op": "mode", "mode": "split"})
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc), "mode": "split"}
    how = plan.decide(free, tree)
    _tell(control, {"op": "mode", "mode": how.mode})
    requests, replies = pipes
    session, ns = proxies.new_session(requests, replies, solution)
    session.deadline = deadline
    if how.mode == "in_process":
        if refuse:
            return {"verdict": "refused", "detail": how.reason, "mode": "in_process"}
        return in_process(tests, session)
    first, loaded = _loaded(session)
    if loaded is not None:
        return {**loaded, "mode": "split"}
    result = run_split(tests, how, first, session, ns)
    if result.get("verdict") != "retry":
        return {**result, "mode": "split"}
    # The tests need something that cannot cross (an object of their own, a file they write, a class of the
    # program with methods): they run beside the solution, in a fresh process the server forks (it marks the
    # run in_process itself), on the same clock.
    _tell(control, {"op": "respawn", "fork": not refuse})
    if refuse:
        return {"verdict": "refused", "detail": result.get("detail", ""), "mode": "in_process"}
    import socket

    _, fds, _, _ = socket.recv_fds(control, 64, 2)
    if len(fds) != 2:
        return {"verdict": "runtime_error", "detail": "no fresh solution process", "mode": "in_process"}
    return in_process(tests, rpc.Session(fds[1], fds[0], {}, "j"))


def _loaded(session: rpc.Session) -> tuple[dict, dict | None]:
    """(the solution's first message, None once its program has run; otherwise the verdict)."""
    try:
        first = proxies.hello(session)
    except judge_signals.ChannelClosed:
        first = None
    if not isinstance(first, dict):
        return {}, {"verdict": "runtime_error", "detail": "solution process ended while loading", "died": True}
    if not first.get("ok"):
        return first, {"verdict": "runtime_error", "detail": str(first.get("exc", ""))}
    return first, None


def in_process(tests: str, session: rpc.Session) -> dict:
    """The verdict comes from the solution's own process, which could forge it: that is why the mode is reported
    (and can be refused). Two checks make a forgery harder: nothing may be waiting on the channel before the
    tests are sent, and the answer must carry a nonce the solution could not know while it was loading."""
    _, loaded = _loaded(session)
    if loaded is not None:
        return {**loaded, "mode": "in_process"}
    if select.select([session.rfd], [], [], 0)[0]:
        return {"verdict": "runtime_error", "detail": "solution wrote to the verdict channel", "mode": "in_process"}
    nonce = os.urandom(16).hex()
    try:
        session.send({"op": "exec_tests", "tests": tests, "nonce": nonce})
        result = session.recv()
    except (judge_signals.ChannelClosed, OSError) as exc:
        return {"verdict": "runtime_error", "detail": str(exc), "died": True, "mode": "in_process"}
    verdict = result.get("verdict") if result.get("nonce") == nonce else "runtime_error"
    if verdict not in ("passed", "failed", "runtime_error"):
        verdict = "runtime_error"
    return {"verdict": verdict, "detail": str(result.get("detail", "")), "mode": "in_process"}
