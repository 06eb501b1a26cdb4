"""The solution process: PID 1 of a fresh PID namespace, unprivileged, rlimited. It runs the model's program, then
serves calls from the judge with plain values. It never sees the tests in split mode (they do not exist in the
memory it was forked from)."""

import builtins
import os
import types

from sandbox import codec, frames, jail

DETAIL_MAX = 400
MESSAGE_LIMIT = 16 << 20


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def kind_of(value) -> str:
    if isinstance(value, types.ModuleType):
        return "module:" + value.__name__
    if callable(value) and not isinstance(value, type):
        return "function"
    return "other"


def solution_process(source_fd, requests, replies, opts, seccomp=None):
    size = os.fstat(source_fd).st_size
    source = os.pread(source_fd, size, 0).decode("utf-8", errors="surrogateescape") if size else ""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, min(requests, replies))
    os.closerange(max(requests, replies) + 1, 4096)
    os.closerange(min(requests, replies) + 1, max(requests, replies))
    jail.confine_run(opts["memory_mb"], opts["cpu_s"], opts["file_mb"], opts["nproc"], opts["uids"][0], seccomp)
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        code = compile(source, "<solution>", "exec")  # here, not in the server: a hostile program is contained
        del source
        exec(code, namespace)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: not a pass either
        frames.write_frame(replies, {"ok": False, "exc": describe(exc)})
        os._exit(0)
    frames.write_frame(replies, {"ok": True})
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


def strict_asserts(tree):
    """`assert a == b` -> `assert __strict_eq__(a, b)`: both sides must be plain built-ins, compared as such."""
    import ast  # not at module level: the server, which every solution forks from, stays small

    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            test = node.test
            if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
                call = ast.Call(ast.Name("__strict_eq__", ast.Load()), [test.left, test.comparators[0]], [])
                node.test = ast.copy_location(call, test)
    return ast.fix_missing_locations(tree)


def strict_eq(a, b) -> bool:
    try:
        return codec.decode(codec.encode(a)) == codec.decode(codec.encode(b))
    except codec.NotPlain:
        return False


def run_in_process(tests: str, namespace: dict) -> dict:
    try:
        import ast

        tree = strict_asserts(ast.parse(tests))
        code = compile(tree, "<tests>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc)}
    namespace["__strict_eq__"] = strict_eq
    # the tests run as the main module, as `python tests.py` would (unittest.main() looks for them there)
    import sys

    main = types.ModuleType("__main__")
    main.__dict__.update(namespace)
    main.__dict__["__name__"] = "__main__"
    sys.modules["__main__"] = main
    sys.argv = ["tests"]
    try:
        exec(code, main.__dict__)
    except AssertionError as exc:
        return {"verdict": "failed", "detail": describe(exc)}
    except SystemExit as exc:
        if exc.code is None or exc.code is False or exc.code == 0:
            return {"verdict": "passed", "detail": ""}
        return {"verdict": "failed", "detail": f"the tests exited with status {exc.code!r}"}
    except BaseException as exc:
        return {"verdict": "runtime_error", "detail": describe(exc)}
    return {"verdict": "passed", "detail": ""}
