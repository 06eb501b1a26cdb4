"""Calls between the judge and the solution's process, over two pipes, in `sandbox.codec` values.

Both processes hold a `Session`. The judge calls the solution's functions; the solution calls back what the tests
handed it (a key function, an iterator, the tests' `input` and `sys.stdin`); requests nest (a callback may call
the solution again). Along with each call travel what plain Python shares between the program and its tests in
one process: the state of `random`, the `decimal` context, the recursion and int-digit limits; the program's
output (to wherever the tests redirected `sys.stdout`/`sys.stderr`); and the arguments it changed in place.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import decimal
import io
import os
import random
import struct
import sys
import time
import types
from _thread import RLock  # not threading: the fork server, every solution's parent, stays small

from codealign.sandbox import codec, frames

HEADER = struct.Struct(">I")
MESSAGE_LIMIT = 64 << 20
OUTPUT_LIMIT = 1 << 20  # the program's output kept per call; the rest is dropped (plain Python would print it)
RECURSION_MAX = 100_000
BATCH_MAX = 1024  # items fetched per round trip from a remote iterator (1, 2, 4, ...: an infinite generator works)
TRAPS = [decimal.Clamped, decimal.DivisionByZero, decimal.Inexact, decimal.Overflow, decimal.Rounded,
         decimal.Underflow, decimal.InvalidOperation, decimal.FloatOperation, decimal.Subnormal]


class JudgeSignal(BaseException):
    """The judge's own signals. Not `Exception`s (as SystemExit is not): tests that catch `Exception` (or use
    `assertRaises(Exception)`) must not take a failure of the judge's for an error of the program's. The judge
    also records each one it raises (`Session.signals`), so that tests catching even `BaseException` cannot hide
    it: the run's verdict is the signal's (sandbox.judge), never PASSED."""

    verdict = "runtime_error"


class ChannelClosed(JudgeSignal):
    """The other process ended, or sent what is not a message."""


class NotPlainResult(JudgeSignal):
    """The solution returned something that cannot cross as a value."""

    verdict = "failed"


class RemoteError(JudgeSignal):
    """The solution ended a call with something that is not an ordinary exception, nor SystemExit or
    KeyboardInterrupt (which reach the tests as themselves)."""


class TooManyCalls(JudgeSignal):
    """The run's time is nearly up and the tests have made thousands of calls into the solution's process, each a
    round trip that plain Python (one process) does not make: the verdict says so."""

    verdict = "timeout"


class CannotJudge(JudgeSignal):
    """Something the judge needs for the tests failed in the judge itself (importing a module of the program's)."""


class CannotCross(JudgeSignal):
    """The tests handed the solution something that cannot cross, or need something of it that cannot: they must
    run beside it."""

    verdict = "retry"


# What the judge serves the solution: calls of the callables and iterators the tests handed it (by handle) and the
# tests' input/stdin. Never a name of the tests' namespace, never a value the solution was not given.
JUDGE_SERVES = ("call", "next", "io")


def read_msg(fd: int, limit: int = MESSAGE_LIMIT) -> bytes | None:
    head = frames.read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > limit:
        raise ChannelClosed(f"message of {size} bytes exceeds the {limit}-byte limit")
    return frames.read_exact(fd, size)


def write_msg(fd: int, data: bytes) -> None:
    # one write for a small message; a large one is not copied just to prepend its length
    for part in ((HEADER.pack(len(data)) + data,) if len(data) < 1 << 16 else (HEADER.pack(len(data)), data)):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _flat(values) -> bool:
    """Only plain scalars and flat lists of them, no string too long to cross: values that can always cross."""
    for v in values:
        t = type(v)
        if t is list:
            kinds = set(map(type, v))
            if not kinds <= codec.SCALARS or (str in kinds and max(len(x) for x in v if type(x) is str) >
                                               codec.STR_LIMIT):
                return False
        elif t not in codec.SCALARS or (t is str and len(v) > codec.STR_LIMIT):
            return False
    return True


RECORDS = frozenset(("out", "err", "wn", "lg"))  # what the program made during a call, besides its result
TRAP_NAMES = [(t, t.__name__) for t in TRAPS]


def shared_state(with_random: bool = True) -> dict:
    """`with_random`: the random state too (625 numbers, most of the cost)."""
    ctx = decimal.getcontext()
    traps = ctx.traps
    state = {"random": random.getstate()} if with_random else {}
    return {
        **state,
        "decimal": (ctx.prec, ctx.rounding, ctx.Emin, ctx.Emax, ctx.capitals, ctx.clamp,
                    tuple([name for t, name in TRAP_NAMES if traps[t]])),
        "recursion": sys.getrecursionlimit(),
        "digits": sys.get_int_max_str_digits(),
    }


def apply_state(state: dict) -> None:
    if "random" in state:
        r = state["random"]
        random.setstate((r[0], tuple(r[1]), r[2]))
    if "decimal" in state:
        prec, rounding, emin, emax, capitals, clamp, traps = state["decimal"]
        ctx = decimal.getcontext()
        ctx.prec, ctx.rounding, ctx.Emin, ctx.Emax, ctx.capitals, ctx.clamp = prec, rounding, emin, emax, \
            capitals, clamp
        for t in TRAPS:
            ctx.traps[t] = t.__name__ in traps
    if "recursion" in state:  # bounded: deep C recursion in the judge would crash it
        sys.setrecursionlimit(max(100, min(int(state["recursion"]), RECURSION_MAX)))
    if "digits" in state:
        sys.set_int_max_str_digits(int(state["digits"]))


class CappedText(io.StringIO):
    def write(self, s):
        if self.tell() < OUTPUT_LIMIT:
            super().write(s[:OUTPUT_LIMIT])
        return len(s)

    @property
    def buffer(self):
        """`sys.stdout.buffer`: bytes written to it are kept as the text they decode to."""
        return BytesInto(self)


class BytesInto(io.RawIOBase):
    def __init__(self, text: CappedText):
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._text.write(bytes(b).decode("utf-8", "replace"))
        return len(b)


class Session:
    def __init__(self, rfd: int, wfd: int, namespace: dict, side: str):
        self.rfd, self.wfd, self.namespace, self.side = rfd, wfd, namespace, side
        self.other = "j" if side == "s" else "s"
        self.objects: dict[int, object] = {}  # our objects the other side holds handles to
        self.object_ids: dict[int, int] = {}  # id(object) -> handle
        self.proxies: dict[int, object] = {}  # the other side's handle -> our proxy of it
        self.proxy_ids: dict[int, int] = {}  # id(proxy) -> their handle
        self.encoder = codec.Encoder(handle=self.export)
        self.decoder = codec.Decoder(namespace.get("__name__", ""), self.find_class, self.import_handle)
        self.lock = RLock()
        self.synced: dict = {}  # the shared state the other side has, as far as we know
        self.source = None  # judge side: sandbox.introspect.SourceInfo of the solution
        # Judge side: its own state when the run began; a key the tests change is pushed from then on.
        self.baseline: dict = shared_state() if side == "j" else {}
        self.touched: set[str] = set()
        self.remote: list[BaseException] = []  # judge side: the exceptions that came from the solution
        self.signals: list[JudgeSignal] = []  # judge side: every signal of its own the judge raised in this run
        self.plan = None  # judge side: sandbox.plan.Plan (which functions the tests may introspect here)
        # Judge side: what could make reading an iterator ahead visible (callbacks, output, warnings, log records):
        # a remote iterator reads ahead only while this stays put (remote_iterator).
        self.noise = 0
        self.requests = 0
        self.deadline: float | None = None  # judge side: when TooManyCalls ends a run that makes many calls
        self.warn_registry: dict = {}  # judge side: as a module's __warningregistry__ ("default" filters)
        self.warned: list = []  # solution side: the warnings and log records of the current call
        self.logged: list = []
        # Judge side: the program's module-level values the tests hold (fetched by name). After each call the
        # solution's process reports those it changed, so the tests see them as one shared module would.
        self.globals_seen: list[str] = []
        self.check = codec.Encoder(handle=lambda obj, kind: [self.side, 0, kind, ""])

    # -- messages ----------------------------------------------------------------------------------------
    def send(self, msg: dict) -> None:
        value = msg.get("v")
        if isinstance(value, (str, bytes)) and len(value) > codec.STR_LIMIT:  # not worth encoding to refuse it
            msg = {"ok": False, "np": f"a value of {len(value)} characters is too large to cross"}
        try:
            data = self.encoder.dumps(msg)
        except codec.NotPlain as exc:
            if "v" not in msg and "e" not in msg:
                raise
            data = self.encoder.dumps({"ok": False, "np": str(exc)[:400]})
        if len(data) > MESSAGE_LIMIT and ("v" in msg or "e" in msg):
            data = self.encoder.dumps({"ok": False, "np": f"a value of {len(data)} bytes is too large to cross"})
        write_msg(self.wfd, data)

    def recv(self) -> dict:
        try:
            data = read_msg(self.rfd)
        except ChannelClosed as exc:
            raise self.signal(exc) from None
        except OSError as exc:
            raise self.signal(ChannelClosed(str(exc))) from None
        if data is None:
            raise self.signal(ChannelClosed("the other process ended"))
        try:
            msg = self.decoder.loads(data)
        except codec.Undeclared as exc:  # a value, not a broken channel: the tests cannot be judged on it
            return {"ok": False, "np": str(exc)}
        except codec.BadMessage as exc:
            raise self.signal(ChannelClosed(str(exc))) from None
        if not isinstance(msg, dict):
            raise self.signal(ChannelClosed("not a message"))
        if self.side == "j" and not self.crosses_back(msg):
            # A value the judge could not send back (crafted by hostile code: the solution's own encoder never
            # makes one) would, passed on by the tests, push them off the split path: refused here instead.
            if "op" in msg:
                return {"op": "invalid"}
            return {"ok": False, "np": "the solution sent a value that cannot cross back"}
        return msg

    def crosses_back(self, msg: dict) -> bool:
        if all(type(k) is str for k in msg) and _flat(msg.values()):  # the common reply: nothing to walk
            return True
        self.check.sent.clear()
        try:
            self.check.dumps(msg)
        except (codec.NotPlain, ValueError, TypeError, RecursionError):
            return False
        return True

    def signal(self, exc: JudgeSignal) -> JudgeSignal:
        if self.side == "j":
            self.signals.append(exc)
        return exc

    def is_remote(self, exc: BaseException) -> bool:
        return any(exc is e for e in self.remote)

    def request(self, msg: dict) -> dict:
        """Send a request; serve the other side's nested requests until our answer comes."""
        with self.lock:
            if self.side == "j" and msg.get("op") in ("call", "next"):
                self.push_state(msg)
            elif self.side == "s":
                msg.update(self.flush_output())
            self.requests += 1
            if not self.requests & 63 and self.deadline is not None and time.monotonic() > self.deadline:
                raise self.signal(TooManyCalls(
                    f"split mode: the tests made {self.requests} calls into the solution's process, a round trip "
                    "each (plain Python makes them within one process), and ran out of time"))
            try:
                self.send(msg)
            except OSError as exc:
                raise self.signal(ChannelClosed(str(exc))) from None
            while True:
                reply = self.recv()
                if "op" in reply:
                    self.noise += 1
                    self.send(self.serve(reply))
                    continue
                if "st" in reply:
                    self.take_state(reply["st"])
                if not RECORDS.isdisjoint(reply):
                    self.forward_output(reply)
                return reply

    # -- handles -----------------------------------------------------------------------------------------
    def export(self, obj, kind: str) -> list:
        theirs = self.proxy_ids.get(id(obj))
        if theirs is not None and self.proxies.get(theirs) is obj:
            return [self.other, theirs, kind, ""]
        hid = self.object_ids.get(id(obj))
        if hid is None or self.objects.get(hid) is not obj:
            hid = len(self.objects) + 1
            self.objects[hid] = obj
            self.object_ids[id(obj)] = hid
        return [self.side, hid, kind, str(getattr(obj, "__name__", ""))[:200]]

    def import_handle(self, body):
        side, hid, kind, name = body
        if side == self.side:
            return self.objects[hid]
        proxy = self.proxies.get(hid)
        if proxy is None:
            proxy = (RemoteFunction(self, hid, name) if kind == "f" else RemoteIterator(self, hid) if kind == "i"
                     else remote_coroutine(self, hid) if kind == "c" else remote_iterator(self, hid))
            self.proxies[hid] = proxy
            self.proxy_ids[id(proxy)] = hid
        return proxy

    def find_class(self, qualname: str):
        obj = self.namespace.get(qualname.split(".")[0])
        for part in qualname.split(".")[1:]:
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, type) else None

    # -- calls from this side ----------------------------------------------------------------------------
    def call(self, target, args: tuple, kwargs: dict):
        msg = {"op": "call", "a": list(args), "k": dict(kwargs)}
        if target._hid is None:
            msg["n"] = target.__name__
        else:
            msg["h"] = target._hid
        seen, aliases = {}, []  # one mutable object passed twice stays one object over there
        everything = [*enumerate(msg["a"]), *msg["k"].items()]
        for pos, value in everything:
            if isinstance(value, codec.MUTABLE):
                first = seen.setdefault(id(value), pos)
                if first != pos:
                    aliases.append([pos, first])
        for pos, _ in aliases:
            (msg["a"] if isinstance(pos, int) else msg["k"])[pos] = None
        if aliases:
            msg["al"] = aliases
        if self.globals_seen:
            msg["g"] = list(self.globals_seen)
        try:
            reply = self.request(msg)
        except codec.NotPlain as exc:
            raise self.signal(CannotCross(f"argument to {target.__name__}: {exc}")) from None
        for pos, value in reply.get("ch", {}).items():
            original = args[pos] if isinstance(pos, int) else kwargs[pos]
            sync(original, value)
        changed = reply.get("g")
        for name in self.globals_seen if isinstance(changed, dict) else ():  # only names the tests hold
            if name in changed:
                original = self.namespace.get(name)
                if changeable(original) and type(original) is type(changed[name]):
                    sync(original, changed[name])  # in place: an alias the tests took sees it too
                else:
                    self.namespace[name] = changed[name]
        return self.outcome(reply)

    def outcome(self, reply: dict):
        if reply.get("ok"):
            return reply.get("v")
        if "np" in reply:
            raise self.signal(NotPlainResult(str(reply["np"])))
        exc = reply.get("e")
        if isinstance(exc, (Exception, SystemExit, KeyboardInterrupt)):  # as plain Python raises them
            if self.side == "j":
                self.remote.append(exc)
            raise exc
        if isinstance(exc, BaseException):
            raise self.signal(RemoteError(f"{type(exc).__name__}: {exc}"[:400]))
        raise self.signal(ChannelClosed("malformed reply"))

    def push_state(self, msg: dict) -> None:
        """Judge side: what the tests set (a seed, a decimal context...) reaches the solution before its call."""
        now = shared_state()
        self.touched.update(k for k, v in now.items() if self.baseline.get(k) != v)
        changed = {k: now[k] for k in self.touched if self.synced.get(k) != now[k]}
        if changed:
            msg["st"] = changed
            self.synced.update(changed)

    def take_state(self, state) -> None:
        """The solution adopts what the tests set; the judge only records what the solution now has."""
        if not isinstance(state, dict):
            return
        if self.side == "s":
            apply_state(state)
        self.synced.update(state)

    def forward_output(self, reply: dict) -> None:
        for key, stream, original in (("out", sys.stdout, sys.__stdout__), ("err", sys.stderr, sys.__stderr__)):
            text = reply.get(key)
            if text:
                self.noise += 1
                if stream is not None and stream is not original:  # the tests redirected it: they read it
                    stream.write(text)
        if "wn" in reply or "lg" in reply:
            self.noise += 1
            reemit(reply.get("wn"), reply.get("lg"), self.warn_registry)

    # -- serving the other side --------------------------------------------------------------------------
    def serve(self, msg: dict) -> dict:
        op = msg.get("op")
        if self.side == "j" and not RECORDS.isdisjoint(msg):
            self.forward_output(msg)
        if "st" in msg:
            self.take_state(msg["st"])
        if self.side == "j" and (op not in JUDGE_SERVES or (op == "call" and "h" not in msg)):
            reply = {"ok": False, "e": ValueError(f"the judge does not serve {str(op)[:40]!r} requests")}
        elif op == "call":
            reply = self.serve_call(msg)
        elif op == "next":
            reply = self.serve_next(msg)
        elif op == "get":
            reply = self.serve_get(msg)
        elif op == "await":
            reply = self.serve_await(msg)
        elif op == "attr":
            reply = self.serve_attr(msg)
        elif op == "io" and self.side == "j":
            reply = self.serve_io(msg)
        else:
            reply = {"ok": False, "e": ValueError(f"unknown request {op!r}")}
        if self.side == "s":
            # the random state only once the tests have set one: until then the judge never pushes it, and so
            # need not know how the solution's moves
            now = shared_state("random" in self.synced)
            changed = {k: v for k, v in now.items() if self.synced.get(k) != v}
            if changed:
                reply["st"] = changed
                self.synced.update(changed)
        return reply

    def serve_call(self, msg: dict) -> dict:
        try:
            fn = self.namespace[msg["n"]] if "n" in msg else self.objects[msg["h"]]
            args, kwargs = list(msg["a"]), dict(msg["k"])
            for pos, first in msg.get("al", ()):
                value = args[first] if isinstance(first, int) else kwargs[first]
                if isinstance(pos, int):
                    args[pos] = value
                else:
                    kwargs[pos] = value
            watched = [(p, v) for p, v in [*enumerate(args), *kwargs.items()] if changeable(v)]
            before = [snapshot(v) for _, v in watched]
            names = [n for n in msg.get("g", ()) if isinstance(n, str) and n in self.namespace]
            globals_before = [snapshot(self.namespace[n]) for n in names]
        except Exception as exc:
            return {"ok": False, "e": exc}
        with self.captured() as out:
            try:
                result = fn(*args, **kwargs)
                reply = {"ok": True, "v": result}
            except BaseException as exc:  # SystemExit too: the judge decides what it means
                reply = {"ok": False, "e": exc}
        changed = {p: v for (p, v), b in zip(watched, before) if b is not None and snapshot(v) != b}
        if changed:
            reply["ch"] = changed
        moved = {n: self.namespace[n] for n, b in zip(names, globals_before)
                 if b is not None and n in self.namespace and snapshot(self.namespace[n]) != b}
        if moved:
            reply["g"] = moved
        self.attach_output(reply, out)
        return reply

    def serve_next(self, msg: dict) -> dict:
        items, done, error = [], False, None
        with self.captured() as out:
            try:
                it = self.objects[msg["h"]]
                for _ in range(max(1, min(int(msg["n"]), BATCH_MAX))):
                    items.append(next(it))
            except StopIteration:
                done = True
            except BaseException as exc:
                done, error = True, exc
        reply = {"ok": True, "v": items, "done": done}
        if error is not None:
            reply["e"] = error
        self.attach_output(reply, out)
        return reply

    def serve_await(self, msg: dict) -> dict:
        """A coroutine of the program's, awaited by the tests: run to its end here, in an event loop of this
        process's own (its awaits interleave with nothing of the tests')."""
        with self.captured() as out:
            try:
                coro = self.objects[msg["h"]]
                asyncio = sys.modules.get("asyncio")
                if asyncio is not None:
                    loop = asyncio.new_event_loop()
                    try:
                        reply = {"ok": True, "v": loop.run_until_complete(coro)}
                    finally:
                        loop.close()
                else:
                    try:
                        coro.send(None)
                        raise RuntimeError("the coroutine awaited something with no event loop to run it")
                    except StopIteration as stop:
                        reply = {"ok": True, "v": stop.value}
            except BaseException as exc:
                reply = {"ok": False, "e": exc}
        self.attach_output(reply, out)
        return reply

    def serve_attr(self, msg: dict) -> dict:
        """An attribute of one of the program's functions (`fib.cache_info`, `f.tag`): data, or a handle."""
        try:
            fn = self.namespace[msg["n"]] if "n" in msg else self.objects[msg["h"]]
            return {"ok": True, "v": getattr(fn, str(msg["a"]))}
        except Exception as exc:
            return {"ok": False, "e": exc}

    def serve_get(self, msg: dict) -> dict:
        try:
            return {"ok": True, "v": self.namespace[msg["n"]]}
        except BaseException as exc:
            return {"ok": False, "e": exc}

    def serve_io(self, msg: dict) -> dict:
        how, arg = msg.get("how"), msg.get("arg")
        try:
            if how == "input":
                value = builtins.input(arg) if arg is not None else builtins.input()
            elif how in ("readline", "read", "readlines"):
                value = getattr(sys.stdin, how)(*([] if arg is None else [arg]))
            else:
                raise ValueError(f"unknown stream operation {how!r}")
            return {"ok": True, "v": value}
        except Exception as exc:
            return {"ok": False, "e": exc}

    # -- the program's standard streams (solution side) ---------------------------------------------------
    @contextlib.contextmanager
    def captured(self):
        """The program's output during one call, kept to travel back with the reply. If the program closed or
        replaced its own stdout, it keeps what it made (printing to a closed stdout still fails)."""
        streams = {}
        for key, name in (("out", "stdout"), ("err", "stderr")):
            current = getattr(sys, name)
            if current is getattr(self, "base_" + name, None) and not getattr(current, "closed", True):
                streams[key] = (name, current, CappedText())
                setattr(sys, name, streams[key][2])
        try:
            yield streams
        finally:
            for name, current, _ in streams.values():
                setattr(sys, name, current)

    def attach_output(self, reply: dict, streams: dict) -> None:
        for key, (_, _, buf) in streams.items():
            text = buf.getvalue()
            if text:
                reply[key] = text
        if self.warned:
            reply["wn"], self.warned = self.warned, []
        if self.logged:
            reply["lg"], self.logged = self.logged, []

    def collect_warning(self, message, category, filename, lineno, file=None, line=None):
        if not isinstance(message, Warning):
            message = category(message)
        self.warned.append([message, str(filename), int(lineno)])

    def install_records(self) -> None:
        """Solution side: the program's warnings and log records travel with each reply; the judge gives them to
        the tests' own filters and handlers (assertWarns, assertLogs), as one process would."""
        import warnings

        warnings.showwarning = self.collect_warning
        logging = sys.modules.get("logging")  # only a program that logs has loaded it
        if logging is not None:
            root = logging.getLogger()
            root.addHandler(RecordSender(self, logging.Handler))
            if root.level == logging.WARNING:  # the default: the tests' levels decide, in the judge
                root.setLevel(1)

    def flush_output(self) -> dict:
        """Before a callback: what the program printed so far goes first, in order."""
        extra = {}
        for name in ("stdout", "stderr"):
            buf = getattr(sys, name)
            if isinstance(buf, CappedText) and buf.tell():
                extra["out" if name == "stdout" else "err"] = buf.getvalue()
                buf.seek(0)
                buf.truncate()
        return extra

    def install_streams(self) -> None:
        """Solution side, after the program has loaded: `input()` and `sys.stdin` read what the tests give
        (their own `input`, possibly patched, and their `sys.stdin`)."""
        self.install_records()
        self.base_stdout, self.base_stderr = sys.stdout, sys.stderr
        self.base_input, self.base_stdin = builtins.input, sys.stdin
        builtins.input = self.remote_input
        sys.stdin = RemoteStdin(self)

    def restore_streams(self) -> None:
        """Before the tests run in this process (in-process mode): nobody serves callbacks any more."""
        builtins.input, sys.stdin = self.base_input, self.base_stdin

    def remote_input(self, prompt=None):
        return self.io("input", None if prompt is None else str(prompt))

    def io(self, how: str, arg):
        reply = self.request({"op": "io", "how": how, "arg": arg, **self.flush_output()})
        return self.outcome(reply)


class RemoteStdin(io.TextIOBase):
    def __init__(self, session: Session):
        self._session = session

    def readable(self) -> bool:
        return True

    def readline(self, size=-1):
        return self._session.io("readline", None if size == -1 else size)

    def read(self, size=-1):
        return self._session.io("read", None if size in (-1, None) else size)

    def readlines(self, hint=-1):
        return self._session.io("readlines", None if hint == -1 else hint)


def RecordSender(session: Session, handler_class):
    class Sender(handler_class):
        def emit(self, record):
            try:
                text = record.getMessage()
            except Exception:
                text = str(record.msg)
            fields = {k: v for k, v in vars(record).items() if type(v) in codec.SCALARS}
            exc_text = self.formatter.formatException(record.exc_info) if record.exc_info and self.formatter \
                else None
            session.logged.append({**fields, "msg": text, "args": None, "exc_text": exc_text or fields.get(
                "exc_text")})

    sender = Sender(1)
    import logging

    sender.setFormatter(logging.Formatter())
    return sender


def reemit(warned, logged, registry: dict) -> None:
    """Judge side: the solution's warnings and log records, given to the tests' filters and handlers."""
    if warned:
        import warnings

        for item in warned if isinstance(warned, list) else ():
            message, filename, lineno = item
            if isinstance(message, Warning):
                warnings.warn_explicit(message, type(message), str(filename), int(lineno), module="__main__",
                                       registry=registry)
    if logged:
        import logging

        for fields in logged if isinstance(logged, list) else ():
            if not isinstance(fields, dict) or not isinstance(fields.get("name"), str):
                continue
            record = logging.makeLogRecord({k: v for k, v in fields.items() if isinstance(k, str)
                                            and not k.startswith("_") and type(v) in codec.SCALARS})
            name = fields["name"]
            logger = logging.getLogger(None if name == "root" else name)
            if isinstance(record.levelno, int) and logger.isEnabledFor(record.levelno):
                logger.handle(record)


def changeable(value) -> bool:
    return isinstance(value, codec.MUTABLE) or (hasattr(type(value), "__dataclass_fields__")
                                                and not isinstance(value, type))


_plain = codec.Encoder()


def snapshot(value):
    try:
        return _plain.dumps(value)
    except (codec.NotPlain, ValueError):
        return None


def sync(original, new) -> None:
    """Bring an argument the tests hold up to date with the solution's changes, in place (inner lists too)."""
    if original is new:
        return
    if isinstance(original, list) and isinstance(new, list):
        if len(original) == len(new):
            for i, (o, n) in enumerate(zip(original, new)):
                if changeable(o) and type(o) is type(n):
                    sync(o, n)
                elif o is not n:
                    original[i] = n
        else:
            original[:] = new
    elif isinstance(original, dict) and isinstance(new, dict):
        if list(original) == list(new):
            for k, n in new.items():
                o = original[k]
                if changeable(o) and type(o) is type(n):
                    sync(o, n)
                else:
                    original[k] = n
        else:
            original.clear()
            original.update(new)
        if isinstance(original, type(new)) and hasattr(new, "default_factory"):
            original.default_factory = new.default_factory
    elif isinstance(original, (set, collections.deque)) and type(new) is type(original):
        original.clear()
        original.update(new) if isinstance(original, set) else original.extend(new)
    elif isinstance(original, bytearray) and isinstance(new, bytearray):
        original[:] = new
    elif hasattr(type(original), "__dataclass_fields__") and hasattr(type(new), "__dataclass_fields__"):
        for name in type(new).__dataclass_fields__:  # only the tests' object's own fields, no dunder
            if name in type(original).__dataclass_fields__ and not name.startswith("__"):
                object.__setattr__(original, name, getattr(new, name))


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
