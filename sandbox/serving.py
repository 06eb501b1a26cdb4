"""The requests a Session serves for the other side: the judge's calls, iterator reads, awaits, attribute and
value fetches into the solution's process, and the solution's callbacks and reads of the tests' input into the
judge's. Each reply carries what the call made besides its result: in-place changes of its arguments and of the
module values the tests hold (sandbox.mutations), its output, warnings and log records (sandbox.streams), and the
shared state it moved (sandbox.shared_state)."""

from __future__ import annotations

import builtins
import sys

from codealign.sandbox.mutations import changeable, snapshot
from codealign.sandbox.remote import BATCH_MAX
from codealign.sandbox.shared_state import shared_state
from codealign.sandbox.streams import RECORDS

# What the judge serves the solution: calls of the callables and iterators the tests handed it (by handle) and the
# tests' input/stdin. Never a name of the tests' namespace, never a value the solution was not given.
JUDGE_SERVES = ("call", "next", "io")


class Serving:
    """rpc.Session's side that answers requests (a mixin: it uses the session's state and messages)."""

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
