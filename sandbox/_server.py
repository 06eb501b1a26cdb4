"""The sandbox fork server. Trusted code only; model code runs in its grandchildren.

    python -I -B _server.py PROJECT_ROOT OPTIONS_JSON       (frames on stdin/stdout, see sandbox.frames)

Per job three roles:
- server: pre-imported, in its own network/mount/IPC namespaces; reads the job header (solution, not tests), forks
  the supervisor and waits for it;
- supervisor: checks the syntax, enters a fresh PID namespace, forks the solution process, and only then reads the
  tests. It runs the tests itself: every function of the solution they use is a proxy that sends plain arguments to
  the solution process and gets a plain value back, so the expected values never exist where model code runs, and
  what is compared is a real built-in. It decides the verdict and answers the caller;
- solution process: PID 1 of its namespace (when it dies, everything it started dies), own /proc, unprivileged,
  rlimited; runs the solution, then serves calls.
Tests that cannot run that way (they use a class or a constant of the solution, or pass non-plain arguments) are
answered with verdict "retry" and run again in-process, with a strict comparator; the result says which mode ran.
"""

import ast
import builtins
import importlib
import os
import select
import signal
import sys
import types

PRELOAD = (
    "array ast bisect calendar cmath collections collections.abc copy dataclasses datetime decimal enum fractions "
    "functools hashlib heapq itertools json math numbers operator queue random re statistics string struct "
    "textwrap time typing unicodedata _strptime"
).split()
DETAIL_MAX = 400
MESSAGE_LIMIT = 16 << 20


class Deadline(BaseException):
    pass


class Unsupported(Exception):
    """The tests need something that cannot cross the process boundary: run them in-process."""


class RemoteError(Exception):
    pass


class SolutionDied(Exception):
    pass


class NotPlainResult(Exception):
    pass


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def kind_of(value) -> str:
    if isinstance(value, types.ModuleType):
        return "module:" + value.__name__
    if callable(value) and not isinstance(value, type):
        return "function"
    return "other"


# -- the solution process --------------------------------------------------------------------------------------
def solution_process(code, requests, replies, opts):
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, min(requests, replies))
    os.closerange(max(requests, replies) + 1, 4096)
    os.closerange(min(requests, replies) + 1, max(requests, replies))
    jail.confine_solution(opts["memory_mb"], opts["cpu_s"], opts["file_mb"], opts["nproc"], opts["drop_user"])
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(code, namespace)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: not a pass either
        frames.write_frame(replies, {"ok": False, "exc": describe(exc)})
        os._exit(0)
    names = {k: kind_of(v) for k, v in list(namespace.items()) if not k.startswith("__")}
    frames.write_frame(replies, {"ok": True, "names": names})
    while True:
        req = frames.read_frame(requests, MESSAGE_LIMIT)
        if req is None:
            os._exit(0)
        if req["op"] == "exec_tests":
            frames.write_frame(replies, {**run_in_process(req["tests"], namespace), "nonce": req["nonce"]})
            os._exit(0)
        frames.write_frame(replies, serve_call(namespace, req))


def serve_call(namespace, req) -> dict:
    try:
        fn = namespace[req["fn"]]
        args = [codec.decode(a) for a in req["args"]]
        kwargs = {k: codec.decode(v) for k, v in req["kwargs"].items()}
        result = fn(*args, **kwargs)
    except BaseException as exc:
        return {"ok": False, "exc_type": type(exc).__name__, "exc": describe(exc), "msg": str(exc)[:DETAIL_MAX]}
    try:
        value = codec.encode(result)
    except codec.NotPlain as exc:
        return {"ok": False, "not_plain": True, "exc": f"{req['fn']} returned {exc}"}
    try:  # arguments the function changed in place travel back, so tests of in-place behaviour still work
        after = [codec.encode(a) for a in args]
    except codec.NotPlain:
        after = None
    return {"ok": True, "v": value, "args": after}


class StrictEq(ast.NodeTransformer):
    """`assert a == b` -> `assert __strict_eq__(a, b)`: both sides must be plain built-ins, compared as such."""

    def visit_Assert(self, node):
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            call = ast.Call(ast.Name("__strict_eq__", ast.Load()), [test.left, test.comparators[0]], [])
            node.test = ast.copy_location(call, test)
        return node


def strict_eq(a, b) -> bool:
    try:
        return codec.decode(codec.encode(a)) == codec.decode(codec.encode(b))
    except codec.NotPlain:
        return False


def run_in_process(tests: str, namespace: dict) -> dict:
    try:
        tree = ast.fix_missing_locations(StrictEq().visit(ast.parse(tests)))
        code = compile(tree, "<tests>", "exec")
    except (SyntaxError, ValueError) as exc:
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc)}
    namespace["__strict_eq__"] = strict_eq
    try:
        exec(code, namespace)
    except AssertionError as exc:
        return {"verdict": "failed", "detail": describe(exc)}
    except BaseException as exc:
        return {"verdict": "runtime_error", "detail": describe(exc)}
    return {"verdict": "passed", "detail": ""}


# -- the supervisor --------------------------------------------------------------------------------------------
class Channel:
    def __init__(self, requests: int, replies: int):
        self.requests, self.replies = requests, replies

    def call(self, msg: dict) -> dict:
        try:
            frames.write_frame(self.requests, msg)
            reply = frames.read_frame(self.replies, MESSAGE_LIMIT)
        except (BrokenPipeError, frames.FrameTooLarge, ValueError) as exc:
            raise SolutionDied(describe(exc)) from None
        if not isinstance(reply, dict):
            raise SolutionDied("the solution process ended")
        return reply


def copy_back(original, updated) -> None:
    if type(original) is list and type(updated) is list:
        original[:] = updated
    elif type(original) is dict and type(updated) is dict:
        original.clear()
        original.update(updated)
    elif type(original) is set and type(updated) is set:
        original.clear()
        original.update(updated)


def make_proxy(name: str, channel: Channel):
    def proxy(*args, **kwargs):
        try:
            enc_args = [codec.encode(a) for a in args]
            enc_kwargs = {k: codec.encode(v) for k, v in kwargs.items()}
        except codec.NotPlain as exc:
            raise Unsupported(f"argument to {name}: {exc}") from None
        reply = channel.call({"op": "call", "fn": name, "args": enc_args, "kwargs": enc_kwargs})
        if reply.get("ok"):
            for original, updated in zip(args, reply.get("args") or []):
                copy_back(original, codec.decode(updated))
            return codec.decode(reply["v"])
        if reply.get("not_plain"):
            raise NotPlainResult(reply["exc"])
        exc_type = getattr(builtins, str(reply.get("exc_type")), None)
        if isinstance(exc_type, type) and issubclass(exc_type, Exception) and exc_type is not AssertionError:
            try:
                error = exc_type(str(reply.get("msg", "")))
            except Exception:
                error = None
            if error is not None:
                raise error  # tests that expect, say, a ValueError still see one
        raise RemoteError(str(reply.get("exc", "")))

    proxy.__name__ = name
    return proxy


def test_namespace(tests_tree, names: dict, channel: Channel) -> dict:
    bound = set()
    used = set()
    for node in ast.walk(tests_tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    ns = {"__name__": "__tests__", "__builtins__": builtins}
    for name in sorted((used - bound) & set(names)):
        kind = names[name]
        if kind == "function":
            ns[name] = make_proxy(name, channel)
        elif kind.startswith("module:"):
            ns[name] = importlib.import_module(kind[len("module:"):])
        else:
            raise Unsupported(f"the tests use {name!r}, which is not a function of the solution")
    return ns


def run_split(tests: str, names: dict, channel: Channel) -> dict:
    try:
        tree = ast.parse(tests)
        code = compile(tree, "<tests>", "exec")
    except (SyntaxError, ValueError) as exc:
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc)}
    try:
        ns = test_namespace(tree, names, channel)
        exec(code, ns)
    except Unsupported as exc:
        return {"verdict": "retry", "detail": str(exc)}
    except AssertionError as exc:
        return {"verdict": "failed", "detail": describe(exc) if str(exc) else "AssertionError"}
    except NotPlainResult as exc:
        return {"verdict": "failed", "detail": str(exc)[:DETAIL_MAX]}
    except SolutionDied as exc:
        return {"verdict": "runtime_error", "detail": str(exc)[:DETAIL_MAX], "died": True}
    except RemoteError as exc:
        return {"verdict": "runtime_error", "detail": str(exc)[:DETAIL_MAX]}
    except Exception as exc:
        return {"verdict": "runtime_error", "detail": describe(exc)}
    return {"verdict": "passed", "detail": ""}


def on_alarm(signum, frame):
    raise Deadline()


def supervisor(job: dict, info: int, opts: dict) -> None:
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, job["timeout"])
    reply = {"verdict": "runtime_error", "detail": "", "mode": job["mode"]}
    cpid = 0
    try:
        try:
            code = compile(job["solution"], "<solution>", "exec")
        except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes
            code = None
            reply.update(verdict="syntax_error", detail=describe(exc))
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        if code is not None:
            jail.enter_pid_namespace()
            cpid = os.fork()
            if cpid == 0:
                try:
                    os.close(req_w)
                    os.close(rep_r)
                    solution_process(code, req_r, rep_w, opts)
                finally:
                    os._exit(0)
            os.write(info, b"%d\n" % cpid)
        os.close(req_r)
        os.close(rep_w)
        tests = frames.read_frame(0, MESSAGE_LIMIT)["tests"]  # only now: the solution process never had them
        os.write(info, b"T\n")
        if code is not None:
            jail.confine("/", 4096, opts["cpu_s"] + 1, opts["file_mb"], opts["nproc"], opts["drop_user"])
            reply.update(judge(job["mode"], tests, Channel(req_w, rep_r)))
    except Deadline:
        reply.update(verdict="timeout", detail=f"wall time limit of {job['timeout']:g}s")
    signal.setitimer(signal.ITIMER_REAL, 0)
    if cpid:
        os.kill(cpid, signal.SIGKILL)  # PID 1 of its namespace: everything it started goes with it
        _, status, usage = os.wait4(cpid, 0)
        reply["cpu_s"] = usage.ru_utime + usage.ru_stime
        if reply.pop("died", False) and os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status))
            if sig == signal.SIGXCPU:
                reply.update(verdict="timeout", detail="CPU time limit")
            elif sig != signal.SIGKILL:
                reply["detail"] = f"solution process killed by {sig.name}"
    reply.pop("died", None)
    frames.write_frame(1, reply)


def judge(mode: str, tests: str, channel: Channel) -> dict:
    try:
        first = frames.read_frame(channel.replies, MESSAGE_LIMIT)
    except (frames.FrameTooLarge, ValueError):
        first = None
    if not isinstance(first, dict):
        return {"verdict": "runtime_error", "detail": "solution process ended while loading", "died": True}
    if not first.get("ok"):
        return {"verdict": "runtime_error", "detail": str(first.get("exc", ""))[:DETAIL_MAX]}
    if mode != "in_process":
        return {**run_split(tests, first.get("names", {}), channel), "mode": "split"}
    # In-process, the verdict comes from the solution's own process. Two checks make forging it harder (not
    # impossible: that is why the mode is reported): nothing may be waiting on the channel before the tests are
    # sent, and the answer must carry a nonce the solution could not know while it was loading.
    if select.select([channel.replies], [], [], 0)[0]:
        return {"verdict": "runtime_error", "detail": "solution wrote to the verdict channel", "mode": "in_process"}
    nonce = os.urandom(16).hex()
    try:
        result = channel.call({"op": "exec_tests", "tests": tests, "nonce": nonce})
    except SolutionDied as exc:
        return {"verdict": "runtime_error", "detail": str(exc), "died": True, "mode": "in_process"}
    verdict = result.get("verdict") if result.get("nonce") == nonce else "runtime_error"
    if verdict not in ("passed", "failed", "runtime_error"):
        verdict = "runtime_error"
    return {"verdict": verdict, "detail": str(result.get("detail", ""))[:DETAIL_MAX], "mode": "in_process"}


# -- the server ------------------------------------------------------------------------------------------------
def serve(opts: dict) -> None:
    while True:
        job = frames.read_frame(0)
        if job is None:
            return
        info_r, info_w = os.pipe()
        sup = os.fork()
        if sup == 0:
            os.close(info_r)
            try:
                jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
                supervisor(job, info_w, opts)
            finally:
                os._exit(0)
        os.close(info_w)
        pidfd = os.pidfd_open(sup)
        ready, _, _ = select.select([pidfd], [], [], job["timeout"] + 2.0)
        if not ready:
            os.kill(sup, signal.SIGKILL)
        _, status = os.waitpid(sup, 0)
        os.close(pidfd)
        said = os.read(info_r, 4096).decode().split()
        os.close(info_r)
        if "T" not in said:  # the supervisor died before taking the tests off the pipe
            frames.read_frame(0)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or not ready:
            for pid in said:
                if pid.isdigit():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                        os.waitpid(int(pid), 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
            frames.write_frame(1, {"verdict": "timeout" if not ready else "runtime_error",
                                   "detail": "supervisor did not answer", "mode": job["mode"]})


def main() -> None:
    root, raw_opts = sys.argv[1], sys.argv[2]
    sys.path.insert(0, root)
    global codec, frames, jail
    import json

    from sandbox import codec, frames, jail

    for name in PRELOAD:
        importlib.import_module(name)
    opts = json.loads(raw_opts)
    os.chdir("/")
    try:
        active = jail.isolate_server([sys.base_prefix, sys.prefix, root])
    except OSError as exc:
        active = ["isolation_failed: " + str(exc)]
    opts["drop_user"] = os.geteuid() == 0 and "mount_namespace" in active and "user_namespace" not in active
    if opts["drop_user"]:
        active.append("unprivileged_user")
    active += ["pid_namespace", "rlimits", "no_new_privs"] if "mount_namespace" in active else ["rlimits"]
    frames.write_frame(1, {"ready": True, "active": active})
    serve(opts)


if __name__ == "__main__":
    main()
