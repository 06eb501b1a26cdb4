"""Calls between the judge and the solution's process, over two pipes, in `sandbox.codec` values.

Both processes hold a `Session`. The judge calls the solution's functions; the solution calls back what the tests
handed it (a key function, an iterator, the tests' `input` and `sys.stdin`); requests nest (a callback may call
the solution again). Along with each call travel what plain Python shares between the program and its tests in
one process: the state of `random`, the `decimal` context, the recursion and int-digit limits; the program's
output (to wherever the tests redirected `sys.stdout`/`sys.stderr`); and the arguments it changed in place.

This module holds the session itself: framing, messages, handles and calls from this side. The rest, one concern a
module: judge_signals (the judge's own signals), serving (answering the other side's requests), streams (the
program's output, input, warnings and log records), shared_state, mutations (in-place changes crossing back),
remote (the proxies of the solution's functions, iterators and coroutines in the judge).
"""

from __future__ import annotations

import os
import struct
import time
from _thread import RLock  # not threading: the fork server, every solution's parent, stays small

from codealign.sandbox import codec, frames
from codealign.sandbox.judge_signals import (  # noqa: F401 (re-exported: the signals were first defined here)
    CannotCross,
    CannotJudge,
    ChannelClosed,
    JudgeSignal,
    NotPlainResult,
    RemoteError,
    TooManyCalls,
)
from codealign.sandbox.mutations import changeable, snapshot, sync  # noqa: F401
from codealign.sandbox.remote import (  # noqa: F401
    BATCH_MAX,
    CodeView,
    RemoteFunction,
    RemoteIterator,
    remote_coroutine,
    remote_iterator,
)
from codealign.sandbox.serving import JUDGE_SERVES, Serving  # noqa: F401
from codealign.sandbox.shared_state import RECURSION_MAX, TRAPS, apply_state, shared_state  # noqa: F401
from codealign.sandbox.streams import (  # noqa: F401
    OUTPUT_LIMIT,
    RECORDS,
    BytesInto,
    CappedText,
    ProgramStreams,
    RecordSender,
    RemoteStdin,
    reemit,
)

HEADER = struct.Struct(">I")
MESSAGE_LIMIT = 64 << 20


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


class Session(Serving, ProgramStreams):
    """One end of the calls between the judge ("j") and the solution's process ("s"): messages, handles of objects
    that cannot cross as values, calls from this side; what it serves the other side is `Serving`'s, the program's
    streams `ProgramStreams`'."""

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
