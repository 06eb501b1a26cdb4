"""The solution process: PID 1 of a fresh PID namespace, unprivileged, rlimited. It runs the model's program, then
serves calls from the judge (sandbox.rpc). It never sees the tests in split mode (they do not exist in the memory it
was forked from). What it reports about its names (`kind_of`) only tells the judge how to show names its source
does not bind with `def` or `import` (sandbox.proxies): it cannot turn a `def` into anything else."""

import builtins
import os
import types

from codealign.sandbox import codec, jail, judge_signals, rpc, shared_state

DETAIL_MAX = 400
MESSAGE_LIMIT = rpc.MESSAGE_LIMIT


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def kind_of(value) -> list:
    """How the judge offers a name of the program to the tests: ["f"] a function (a proxy), ["m", name] a module,
    ["E"|"NT"|"DC", ...] a class that crosses as a mirror, ["v"] a value (fetched if the tests use it), ["o"]
    something that cannot cross (tests that use it run in-process)."""
    if isinstance(value, types.ModuleType):
        return ["m", value.__name__]
    if isinstance(value, type):
        if issubclass(value, BaseException):
            return ["E", [[codec.class_key(c), [codec.class_key(b) for b in c.__bases__ if b is not object]]
                          for c in value.__mro__ if c is not object]]
        if codec.is_namedtuple_class(value) and not own_methods(value):
            return ["NT", codec.class_key(value), list(value._fields)]
        if issubclass(value, codec.enum.Enum) and not own_methods(value):
            return ["EN", codec.class_key(value)]
        if hasattr(value, "__dataclass_fields__") and not own_methods(value):
            return ["DC", codec.class_key(value), codec.dataclass_spec(value)]  # the judge reads the rest
        return ["o"]
    if callable(value):
        return ["f"]
    return ["v"]


def own_methods(cls) -> bool:
    """Whether the class has behaviour a mirror would not have: methods written in the program's own source
    (generated ones, by dataclasses or namedtuple, come from elsewhere)."""
    for attr in vars(cls).values():
        for fn in (attr, getattr(attr, "__func__", None), getattr(attr, "fget", None)):
            code = getattr(fn, "__code__", None)
            if code is not None and code.co_filename == "<solution>":
                return True
    return False


def solution_process(source_fd, requests, replies, opts, seccomp=None):
    size = os.fstat(source_fd).st_size
    source = os.pread(source_fd, size, 0).decode("utf-8", errors="surrogateescape") if size else ""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, min(requests, replies))
    os.closerange(max(requests, replies) + 1, 4096)
    os.closerange(min(requests, replies) + 1, max(requests, replies))
    jail.confine_run(opts["memory_mb"], opts["cpu_s"], opts["file_mb"], opts["nproc"], opts["uids"][0], seccomp,
                     shared_mounts=opts.get("shared_mounts", True))
    import random

    random.seed()  # as a fresh interpreter: not the state every fork of the server shares
    import sys
    import warnings

    # The program is a module of its own, in sys.modules (dataclasses under `from __future__ import annotations`
    # and `sys.modules[__name__]` look it up there), run as `python tests.py` would run it.
    module = types.ModuleType(codec.SOLUTION_MODULE)
    sys.modules[codec.SOLUTION_MODULE] = module
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    sys.argv = ["tests"]
    # Every warning is shown (and sent to the judge, whose filters decide, as one process's would), unless the
    # program sets filters of its own, which come first.
    warnings.simplefilter("always")
    session = rpc.Session(requests, replies, namespace, "s")
    try:
        code = compile(source, "<solution>", "exec")  # here, not in the server: a hostile program is contained
        del source
        exec(code, namespace)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: not a pass either
        session.send({"ok": False, "exc": describe(exc)})
        os._exit(0)
    names = {k: kind_of(v) for k, v in list(namespace.items()) if not k.startswith("__")}
    session.install_streams()
    # Not the random state (625 numbers, most of the hello's cost): the judge only needs to know it to skip a
    # redundant push, and a state the tests set differs from this one anyway.
    session.synced = shared_state.shared_state(with_random=False)
    session.send({"ok": True, "names": names, "st": dict(session.synced)})
    while True:
        try:
            req = session.recv()
        except judge_signals.ChannelClosed:
            os._exit(0)
        if req.get("op") == "exec_tests":
            session.restore_streams()
            session.send({**run_in_process(str(req["tests"]), namespace), "nonce": req["nonce"]})
            os._exit(0)
        session.send(session.serve(req))


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
        return codec.strict_value(a) == codec.strict_value(b)
    except (codec.NotPlain, codec.BadMessage):
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
