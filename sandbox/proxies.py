"""The tests' side of a split run: a namespace holding the solution's names as the tests can use them, in the
judge, where no model code runs.

How a name reaches the tests is decided first from the solution's *source* (sandbox.plan), before any of its code
has run, and what the program reports about itself at run time cannot change that:
- a name it binds only with `def` is an `remote.RemoteFunction`; one bound only by `import m` is the module `m`;
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

from codealign.sandbox import judge_signals, remote, rpc
from codealign.sandbox.introspect import SourceInfo


class Unsupported(judge_signals.CannotCross):
    """The tests need something that cannot cross the process boundary: run them in-process."""


def hello(session: rpc.Session) -> dict:
    """The solution's first message: whether its program loaded, its names, and its shared state. The judge
    records that state (to know what the solution has) but never adopts it: a program must not choose, say, the
    random numbers or the decimal precision its tests compute their expected values with."""
    first = session.recv()
    if first.get("ok") and isinstance(first.get("st"), dict):
        session.synced = dict(first["st"])
    return first


def fill_namespace(ns: dict, session: rpc.Session, how, names: dict, free: frozenset[str]) -> None:
    """`how`: what the source binds, imports and declares (sandbox.plan.Plan); `names`: what the loaded program
    reports (solution_side.kind_of), plain data consulted only for names its source does not bind with `def` or
    `import` alone, and never for a dunder: the program's word binds no name the judge relies on."""
    static = how.names
    decoder = session.decoder
    decoder.declared = how.classes
    session.plan = how
    for name, kind in names.items():
        if not (isinstance(name, str) and name.isidentifier()) or name.startswith("__"):
            continue
        if static.get(name, "other") != "other" or not isinstance(kind, list) or not kind:
            continue
        tag = kind[0]
        if tag == "f":
            ns[name] = remote.RemoteFunction(session, None, name)
        elif tag == "E":
            ns[name] = decoder.exception_class(kind[1])
        elif tag in ("NT", "DC", "EN") and str(kind[1]) in how.classes:  # its shape as the source declares it
            ns[name] = decoder.declared_class(str(kind[1]))
        elif tag == "NT":  # a namedtuple the source does not spell out: its fields, no defaults
            ns[name] = decoder.namedtuple_class(kind[1], decoder.shape(kind[1], kind[2]))
        elif name not in free:
            continue
        elif tag in ("DC", "EN"):
            raise session.signal(Unsupported(f"the tests use the class {name!r}, whose shape its source does not "
                                             "state in literals"))
        elif tag == "m":
            ns[name] = module(session, how, str(kind[1]))
        elif tag == "v":
            ns[name] = session.outcome(session.request({"op": "get", "n": name}))
            session.globals_seen.append(name)
        elif name in static or how.star:
            raise session.signal(Unsupported(f"the tests use {name!r}, which cannot cross from the solution's "
                                             "process"))
        # else: a name the program bound only at run time (globals(), exec): the tests do not see it
    for name, kind in static.items():
        if kind == "function":
            ns[name] = remote.RemoteFunction(session, None, name)
        elif kind.startswith("module:") and name in free:
            ns[name] = module(session, how, kind[len("module:"):])


def module(session: rpc.Session, how, name: str):
    """A module the program holds, in the judge: imported only if its source imports it; otherwise only a standard
    library module the judge has loaded already (nothing is imported on the program's word)."""
    if name in how.modules:
        try:
            return importlib.import_module(name)
        except BaseException as exc:  # SystemExit too: an import that ends the tests is no verdict of theirs
            raise session.signal(judge_signals.CannotJudge(f"importing {name[:80]} in the judge: {type(exc).__name__}: "
                                                 f"{str(exc)[:200]}")) from None
    if name.split(".")[0] in sys.stdlib_module_names and name in sys.modules:
        return sys.modules[name]
    raise session.signal(Unsupported(f"the tests use a module the program holds but its source does not import: "
                                     f"{name[:80]}"))


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
