"""The solution's functions, iterators and coroutines as the judge's tests hold them: proxies whose every use
crosses to the solution's process (rpc.Session.call, "next", "await", "attr" requests), and introspection that
answers from the solution's source, never from its run-time objects."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from codealign.sandbox.judge_signals import CannotCross

if TYPE_CHECKING:
    from codealign.sandbox.rpc import Session

BATCH_MAX = 1024  # items fetched per round trip from a remote iterator (1, 2, 4, ...: an infinite generator works)


class RemoteFunction:
    """A function of the solution, in the judge. Calling it calls the real one over there. Introspection
    (`__doc__`, `__code__`, `inspect.signature`, `inspect.getsource`) answers from the solution's source."""

    def __init__(self, session: Session, hid: int | None, name: str):
        self._session, self._hid = session, hid
        self.__name__ = self.__qualname__ = name
        self.__module__ = "__main__"

    def __call__(self, *args, **kwargs):
        return self._session.call(self, args, kwargs)

    @property
    def __class__(self):
        """A function, to `isinstance` and `inspect.isfunction` (`type()` still tells the proxy)."""
        return types.FunctionType

    def __getattr__(self, name: str):
        """Only for what the proxy itself lacks: a public attribute of the real function (an lru_cache's
        `cache_info`, one the program set), fetched from the solution's process. Private and special names stay
        here, so that protocol probes (`_is_coroutine`, `__wrapped__`...) never cross."""
        if name.startswith("_"):
            raise AttributeError(name)
        msg = {"op": "attr", "a": name, **({"n": self.__name__} if self._hid is None else {"h": self._hid})}
        return self._session.outcome(self._session.request(msg))

    def __get__(self, obj, objtype=None):  # stored on a class, it binds as a plain function does
        return self if obj is None else types.MethodType(self, obj)

    def __repr__(self) -> str:
        return f"<function {self.__name__}>"

    def _source(self, what: str):
        """What the solution's source says of this function, if that is provably what a call runs: a name the
        program can rebind at run time (sandbox.declared.pinned_functions) is only known in its process, so
        tests that introspect it run there (mode "in_process", refused under in_process="refuse")."""
        session, source = self._session, self._session.source
        if self._hid is not None or source is None:
            return None
        pinned = session.plan.pinned if session.plan is not None else frozenset()
        if self.__name__ not in pinned and what != "doc":  # a docstring is no behaviour (wraps() reads it)
            raise session.signal(CannotCross(
                f"the tests introspect {self.__name__!r} ({what}), which the program can rebind at run time: "
                "only its own process can tell what it is"))
        return getattr(source, what)(self.__name__)

    @property
    def __doc__(self):
        return self._source("doc")

    @property
    def __code__(self):
        code = self._source("code")
        if code is None:
            raise AttributeError("__code__")
        return CodeView(code)

    @property
    def __signature__(self):
        return self._source("signature")

    @property
    def __wrapped__(self):
        shadow = self._source("shadow")
        if shadow is None:
            raise AttributeError("__wrapped__")
        return shadow

    @property
    def __defaults__(self):
        return self._source("defaults")


class CodeView:
    """The `co_*` attributes of a solution function's code, compiled from its source in the judge, and not a code
    object: tests may read it (argument names, constants, names used) but cannot run it in here (`exec`,
    `types.FunctionType` refuse it), so no code of the program runs in the judge even at the tests' request."""

    __slots__ = ("_code",)

    def __init__(self, code: types.CodeType):
        object.__setattr__(self, "_code", code)

    def __getattr__(self, name: str):
        if not name.startswith("co_"):
            raise AttributeError(name)
        value = getattr(self._code, name)
        if name == "co_consts":
            return tuple(CodeView(c) if isinstance(c, types.CodeType) else c for c in value)
        return value

    def __setattr__(self, name, value):
        raise AttributeError("read-only")

    def __eq__(self, other):
        return isinstance(other, CodeView) and self._code == other._code

    def __hash__(self):
        return hash(self._code)

    def __repr__(self) -> str:
        return f"<code object {self._code.co_name} (source view)>"


def remote_iterator(session: Session, hid: int):
    """A generator in the judge that draws from an iterator of the solution. It reads ahead (1, 2, 4... items per
    round trip) only while nothing could tell: no callback into the tests, output, warning or log record during a
    read, no function or iterator among the items (a groupby's groups), and no other request to the solution
    between two reads. Once any of these happens it reads one item at a time, as far as the tests consume, as
    plain Python runs a generator."""
    batch, lazy, last = 1, False, None
    while True:
        if last is not None and session.requests != last:
            lazy = True
        before = (session.noise, len(session.proxies))
        reply = session.request({"op": "next", "h": hid, "n": 1 if lazy else batch})
        last = session.requests
        if (session.noise, len(session.proxies)) != before:
            lazy = True
        if not reply.get("ok"):
            session.outcome(reply)
        yield from reply.get("v") or ()
        if "e" in reply:
            session.outcome({"ok": False, "e": reply["e"]})
        if reply.get("done"):
            return
        batch = min(2 * batch, BATCH_MAX)


async def remote_coroutine(session: Session, hid: int):
    """A coroutine of the solution's, in the judge: awaiting it runs it there, to its end."""
    return session.outcome(session.request({"op": "await", "h": hid}))


class RemoteIterator:
    """An iterator object of the program's own class: iterating it crosses (one item at a time); anything else of
    it (its own methods and attributes) exists only in the solution's process, so tests that use it run there."""

    def __init__(self, session: Session, hid: int):
        self._session, self._items = session, remote_iterator(session, hid)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._items)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._session.signal(CannotCross(f"the tests use .{name[:60]} of an iterator object of the program's "
                                               "own class, which only its process holds"))
