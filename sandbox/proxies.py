"""The tests' side of a split run: a namespace holding the solution's names as the tests can use them, in the
judge, where no model code runs.

How a name reaches the tests is decided first from the solution's *source* (sandbox.plan), before any of its code
has run, and what the program reports about itself at run time cannot change that:
- a name it binds only with `def` is an `rpc.RemoteFunction`; one bound only by `import m` is the module `m`;
- a name it binds otherwise (a class, an assignment...) is taken as the program reports it once loaded: its
  exception classes, namedtuples and method-less dataclasses are mirrors (`sandbox.codec`, classes the judge makes
  from their declared shape, never the program's code), a plain constant is fetched as data, a function is a proxy;
  anything else the tests use (a class with methods...) makes the tests run beside the solution (`Unsupported`),
  which the result marks "in_process" and `in_process="refuse"` refuses;
- every other function it reports is a proxy too, for tests that reach it through `eval` or `globals()`.
"""

from __future__ import annotations

import builtins
import errno
import importlib
import sys
import types

from sandbox import rpc
from sandbox.introspect import SourceInfo


class Unsupported(Exception):
    """The tests need something that cannot cross the process boundary: run them in-process."""


def hello(session: rpc.Session) -> dict:
    """The solution's first message: whether its program loaded, its names, and its shared state. The judge
    records that state (to know what the solution has) but never adopts it: a program must not choose, say, the
    random numbers or the decimal precision its tests compute their expected values with."""
    first = session.recv()
    if first.get("ok") and isinstance(first.get("st"), dict):
        session.synced = dict(first["st"])
    return first


def fill_namespace(ns: dict, session: rpc.Session, static: dict, names: dict, free: frozenset[str],
                   star: bool = False) -> None:
    """`static`: name -> "function" | "module:<name>" | "other" (sandbox.plan.solution_bindings); `names`: what
    the loaded program reports (solution_side.kind_of), consulted only for names its source does not bind with
    `def` or `import` alone."""
    decoder = session.decoder
    for name, kind in names.items():
        if static.get(name, "other") != "other" or not isinstance(kind, list) or not kind:
            continue
        tag = kind[0]
        if tag == "f":
            ns[name] = rpc.RemoteFunction(session, None, name)
        elif tag == "E":
            ns[name] = decoder.exception_class(kind[1])
        elif tag == "NT":
            ns[name] = decoder.namedtuple_class(kind[1], decoder.shape(kind[1], kind[2]))
        elif tag == "DC":
            ns[name] = decoder.dataclass_class(kind[1], decoder.shape(kind[1], kind[2]), kind[3])
        elif name not in free:
            continue
        elif tag == "m":  # only host files can be imported in here (the judge sees no file the program wrote)
            ns[name] = importlib.import_module(str(kind[1]))
        elif tag == "v":
            ns[name] = session.outcome(session.request({"op": "get", "n": name}))
            session.globals_seen.append(name)
        elif name in static or star:
            raise Unsupported(f"the tests use {name!r}, which cannot cross from the solution's process")
        # else: a name the program bound only at run time (globals(), exec): the tests do not see it
    for name, kind in static.items():
        if kind == "function":
            ns[name] = rpc.RemoteFunction(session, None, name)
        elif kind.startswith("module:") and name in free:
            ns[name] = importlib.import_module(kind[len("module:"):])


def main_namespace() -> dict:
    """The tests run as the main module, as `python tests.py` would: `if __name__ == "__main__":` blocks run, and
    unittest.main() finds their test cases in sys.modules["__main__"]."""
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    ns = main.__dict__
    ns["__builtins__"] = builtins
    return ns


def new_session(requests: int, replies: int, source: str) -> tuple[rpc.Session, dict]:
    ns = main_namespace()
    session = rpc.Session(replies, requests, ns, "j")
    session.source = SourceInfo(source)
    return session, ns


FILE_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM)


def writes_files(exc: OSError) -> bool:
    """The judge's file system is read-only: tests that write a fixture for the solution to read must run beside
    it (in its private working directory)."""
    return exc.errno in FILE_ERRORS
