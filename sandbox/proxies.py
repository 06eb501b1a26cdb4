"""The tests' side of a split run: a namespace holding the solution's names as the tests can use them, in the
judge, where no model code runs.

- every function of the program (whether the tests name it, reach it through `eval`/`globals()`, or shadow its
  name locally) is an `rpc.RemoteFunction`;
- its exception classes, namedtuples and method-less dataclasses are mirrors (`sandbox.codec`), the same class
  objects its raised exceptions and returned values arrive as;
- a module it imported or a plain constant, when the tests use that name;
- anything else the tests use (a class with methods...) makes the tests run in-process instead (`Unsupported`).
"""

from __future__ import annotations

import builtins
import errno
import importlib
import sys

from sandbox import rpc
from sandbox.introspect import SourceInfo


class Unsupported(Exception):
    """The tests need something that cannot cross the process boundary: run them in-process."""


def hello(session: rpc.Session) -> dict:
    """The solution's first message: whether its program loaded, its names, and its shared state (the judge
    adopts it, as tests in one process with the program would see it)."""
    first = session.recv()
    if first.get("ok") and isinstance(first.get("st"), dict):
        rpc.apply_state(first["st"])
        session.synced = rpc.shared_state()
    return first


def fill_namespace(ns: dict, session: rpc.Session, names: dict, free: frozenset[str]) -> None:
    decoder = session.decoder
    for name, kind in names.items():
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
        elif tag == "m":
            ns[name] = importlib.import_module(kind[1])
        elif tag == "v":
            ns[name] = session.outcome(session.request({"op": "get", "n": name}))
        else:
            raise Unsupported(f"the tests use {name!r}, which cannot cross from the solution's process")


ORIGINAL_INPUT = builtins.input


def new_session(requests: int, replies: int, source: str) -> tuple[rpc.Session, dict]:
    # What the solution's calls reach in here (its input() and standard streams) starts as it was: earlier tests
    # in this long-lived judge may have patched them.
    builtins.input = ORIGINAL_INPUT
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
    ns = {"__name__": "__tests__", "__builtins__": builtins}
    session = rpc.Session(replies, requests, ns, "j")
    session.source = SourceInfo(source)
    return session, ns


FILE_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM)


def writes_files(exc: OSError) -> bool:
    """The judge's file system is read-only: tests that write a fixture for the solution to read must run beside
    it (in its private working directory)."""
    return exc.errno in FILE_ERRORS
