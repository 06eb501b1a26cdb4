"""The judge's test runner: every function of the solution the tests use is a proxy that sends plain arguments to
the solution's process and gets a plain value back, so the expected values never exist where model code runs, and
what is compared is a real built-in. The judge's process (a fresh one per run) is sandbox.judge_process."""

import ast
import builtins
import functools
import importlib
import sys
import types

from sandbox import codec, frames
from sandbox.solution_side import DETAIL_MAX, MESSAGE_LIMIT, describe


class Unsupported(Exception):
    """The tests need something that cannot cross the process boundary: run them in-process."""


class RemoteError(Exception):
    pass


class SolutionDied(Exception):
    pass


class NotPlainResult(Exception):
    pass


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


def free_names(tree) -> frozenset[str]:
    bound = set()
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(used - bound)


def test_namespace(free: frozenset[str], names: dict, channel: Channel) -> dict:
    # The tests run as the main module, as `python tests.py` would: `if __name__ == "__main__":` blocks run, and
    # unittest.main() finds their test cases in sys.modules["__main__"].
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    ns = main.__dict__
    ns["__builtins__"] = builtins
    for name in sorted(free & set(names)):
        kind = names[name]
        if kind == "function":
            ns[name] = make_proxy(name, channel)
        elif kind.startswith("module:"):
            ns[name] = importlib.import_module(kind[len("module:"):])
        else:
            raise Unsupported(f"the tests use {name!r}, which is not a function of the solution")
    return ns


@functools.lru_cache(maxsize=512)
def compile_tests(tests: str):
    """(code, names the tests use but do not bind): the same tests come back for every sample of an exercise."""
    tree = ast.parse(tests)
    return compile(tree, "<tests>", "exec"), free_names(tree)


def run_split(tests: str, names: dict, channel: Channel) -> dict:
    try:
        code, free = compile_tests(tests)
    except (SyntaxError, ValueError) as exc:
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc)}
    try:
        ns = test_namespace(free, names, channel)
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
