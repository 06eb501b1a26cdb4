"""The program's standard streams, warnings and log records across the split: the solution's process captures
what the program prints, warns and logs during each call and sends it with the reply; the judge writes it to
wherever the tests redirected `sys.stdout`/`sys.stderr` and re-emits warnings and records to the tests' filters and
handlers; `input()` and `sys.stdin` in the program read what the tests give."""

from __future__ import annotations

import builtins
import contextlib
import io
import sys
from typing import TYPE_CHECKING

from codealign.sandbox import codec

if TYPE_CHECKING:
    from codealign.sandbox.rpc import Session

OUTPUT_LIMIT = 1 << 20  # the program's output kept per call; the rest is dropped (plain Python would print it)
RECORDS = frozenset(("out", "err", "wn", "lg"))  # what the program made during a call, besides its result


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


class ProgramStreams:
    """rpc.Session's handling of the program's streams (a mixin: it uses the session's messages)."""

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
