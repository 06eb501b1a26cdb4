"""The judge: a long-lived process that runs the tests. Every function of the solution the tests use is a proxy
that sends plain arguments to the solution's process and gets a plain value back, so the expected values never
exist where model code runs, and what is compared is a real built-in. It decides the verdict and answers the
caller. Nothing is ever forked from it, so the tests it has seen reach no other process."""

import ast
import functools
import json
import os
import select
import signal
import socket

from sandbox import frames, proxies, rpc
from sandbox.proxies import Unsupported
from sandbox.solution_side import DETAIL_MAX, MESSAGE_LIMIT, describe


class Deadline(BaseException):
    pass


def free_names(tree) -> frozenset[str]:
    """Names the tests read that their own top level does not define or import. A name bound only inside a
    function (a local with the solution function's name) still counts: elsewhere it means the solution's."""
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(used - bound)


@functools.lru_cache(maxsize=512)
def compile_tests(tests: str):
    """(code, names the tests use but do not bind): the same tests come back for every sample of an exercise."""
    tree = ast.parse(tests)
    return compile(tree, "<tests>", "exec"), free_names(tree)


def run_split(tests: str, first: dict, session: rpc.Session, ns: dict) -> dict:
    try:
        code, free = compile_tests(tests)
    except (SyntaxError, ValueError) as exc:
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc)}
    try:
        proxies.fill_namespace(ns, session, first.get("names", {}), free)
        exec(code, ns)
    except (Unsupported, rpc.CannotCross) as exc:
        return {"verdict": "retry", "detail": str(exc)}
    except AssertionError as exc:
        return {"verdict": "failed", "detail": describe(exc) if str(exc) else "AssertionError"}
    except rpc.NotPlainResult as exc:
        return {"verdict": "failed", "detail": str(exc)[:DETAIL_MAX]}
    except rpc.ChannelClosed as exc:
        return {"verdict": "runtime_error", "detail": str(exc)[:DETAIL_MAX], "died": True}
    except rpc.RemoteError as exc:
        return {"verdict": "runtime_error", "detail": str(exc)[:DETAIL_MAX]}
    except OSError as exc:
        if proxies.writes_files(exc):
            return {"verdict": "retry", "detail": "the tests write files: " + describe(exc)}
        return {"verdict": "runtime_error", "detail": describe(exc)}
    except Exception as exc:
        return {"verdict": "runtime_error", "detail": describe(exc)}
    return {"verdict": "passed", "detail": ""}


def judge(mode: str, tests: str, requests: int, replies: int, source: str = "") -> dict:
    session, ns = proxies.new_session(requests, replies, source)
    try:
        first = proxies.hello(session)
    except rpc.ChannelClosed:
        first = None
    if not isinstance(first, dict):
        return {"verdict": "runtime_error", "detail": "solution process ended while loading", "died": True}
    if not first.get("ok"):
        return {"verdict": "runtime_error", "detail": str(first.get("exc", ""))[:DETAIL_MAX]}
    if mode != "in_process":
        return {**run_split(tests, first, session, ns), "mode": "split"}
    # In-process, the verdict comes from the solution's own process. Two checks make forging it harder (not
    # impossible: that is why the mode is reported): nothing may be waiting on the channel before the tests are
    # sent, and the answer must carry a nonce the solution could not know while it was loading.
    if select.select([replies], [], [], 0)[0]:
        return {"verdict": "runtime_error", "detail": "solution wrote to the verdict channel", "mode": "in_process"}
    nonce = os.urandom(16).hex()
    try:
        session.send({"op": "exec_tests", "tests": tests, "nonce": nonce})
        result = session.recv()
    except (rpc.ChannelClosed, OSError) as exc:
        return {"verdict": "runtime_error", "detail": str(exc), "died": True, "mode": "in_process"}
    verdict = result.get("verdict") if result.get("nonce") == nonce else "runtime_error"
    if verdict not in ("passed", "failed", "runtime_error"):
        verdict = "runtime_error"
    return {"verdict": verdict, "detail": str(result.get("detail", ""))[:DETAIL_MAX], "mode": "in_process"}


def on_alarm(signum, frame):
    raise Deadline()


def judge_loop(control: socket.socket, tests_fd: int, verdict_fd: int) -> None:
    """One job per control message from the server: [header, (requests, replies) fds]."""
    signal.signal(signal.SIGALRM, on_alarm)
    while True:
        raw, fds, _, _ = socket.recv_fds(control, 1 << 16, 2)
        if not raw:
            return
        job = json.loads(raw)
        job_in = frames.read_frame(tests_fd, MESSAGE_LIMIT)
        tests, source = job_in["tests"], str(job_in.get("solution", ""))
        reply = {"verdict": "runtime_error", "detail": "", "mode": job["mode"]}
        if "syntax_error" in job:
            reply.update(verdict="syntax_error", detail=job["syntax_error"], mode="")
        else:
            requests, replies = fds
            try:
                signal.setitimer(signal.ITIMER_REAL, job["timeout"])
                reply.update(judge(job["mode"], tests, requests, replies, source))
            except Deadline:
                reply.update(verdict="timeout", detail=f"wall time limit of {job['timeout']:g}s")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            try:
                os.kill(job["pid"], signal.SIGKILL)  # PID 1 of its namespace: all it started goes with it
            except ProcessLookupError:
                pass
            if reply.pop("died", False):  # the server reaps it and tells how it ended
                control.sendall(b'{"op": "status"}')
                status = json.loads(control.recv(4096))
                sig = status.get("signal")
                if sig == signal.SIGXCPU:
                    reply.update(verdict="timeout", detail="CPU time limit")
                elif sig and sig != signal.SIGKILL:
                    reply["detail"] = f"solution process killed by {signal.Signals(sig).name}"
        for fd in fds:
            os.close(fd)
        frames.write_frame(verdict_fd, reply)
        control.sendall(b'{"op": "done"}')


