"""Run the run processes' own code paths once in the fork server, on constant inputs, before it forks anything.

CPython 3.11 writes to shared objects the first times code runs: it quickens and specializes bytecode in place,
tags types for its method cache, creates the parser's and the json codec's lazy state. In a forked child every
such write copies a page (a COW fault, the largest single cost of a run on a virtual machine). Done once here,
those writes are not repeated in every judge and every solution process.

Trusted inputs only: the program below is a constant of this module, never model code, and nothing here leaves
state a run could see (no linecache entry, no `__main__`, no patched stream, no cache keyed by a run's text).
"""

from __future__ import annotations

import ast
import os
import sys

from codealign.sandbox import codec, frames, judge, plan, remote, rpc, shared_state, solution_side

PROGRAM = '''"""A module docstring."""
import math
from typing import List, Tuple


class Point:
    x: int = 0


def f(a: List[int], b=2, *args, c=None, **kw) -> int:
    """A docstring."""
    total = 0
    for i, v in enumerate(a):
        if v % 2 == 0 and i > 0:
            total += v * b
        elif v < 0:
            continue
    try:
        s = {k: [x for x in range(k)] for k in range(3)}
    except (ValueError, KeyError) as exc:
        raise RuntimeError(f"bad {exc!r}") from None
    g = lambda y: y + 1
    return max(total, g(0), len(s), int(math.sqrt(4)), *[w for w in args if w])


def check(candidate):
    assert candidate([1, 2, 3]) == 4, "message"
    assert abs(candidate([2]) - 3) < 1e-6
    assert candidate([]) == 3


check(f)
'''

VALUES = [
    {"op": "call", "a": [1, "x", [1.5, None, True], (1, 2), {"k": [1]}], "k": {"b": 2}, "n": "f"},
    {"ok": True, "v": [1, 2, 3]},
    {"ok": True, "v": (1, "a")},
    {"ok": True, "v": "text"},
    {"ok": True, "v": {"a": 1, 2: [3]}},
    {"ok": True, "v": {1, 2}},
    {"ok": False, "e": ValueError("wrong")},
    {"ok": True, "names": {"f": ["f"], "math": ["m", "math"]}},
]


def _free_blocks() -> dict[int, int]:
    """Block size -> free blocks in the pools CPython's small-object allocator has partly used (its own statistics,
    which it prints to the C stderr); {} where it cannot tell."""
    read, write = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(write, 2)
        os.close(write)
        sys._debugmallocstats()
    except (AttributeError, OSError):
        return {}
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    out = b""
    os.set_blocking(read, False)
    try:
        while chunk := os.read(read, 1 << 16):
            out += chunk
    except BlockingIOError:
        pass
    finally:
        os.close(read)
    free = {}
    for line in out.decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) == 5 and all(f.isdigit() for f in fields):
            free[int(fields[1])] = int(fields[4])
    return free


# Objects that fill the free blocks of partly used pools, held for the server's life (none is tracked by the GC).
_FILLED: list = []


def fill_pool_holes() -> None:
    """Fill the free blocks the server's small-object pools have left, so that a run process allocates its objects
    in fresh pools, packed a few pages each, instead of in blocks scattered over the server's pages, each write
    there copying a page (measured: a fifth fewer page faults in a fork that compiles a HumanEval program)."""
    for _ in range(2):
        for size, free in _free_blocks().items():
            n = size - 33  # a bytes object of n bytes takes 33 + n
            if size <= 16:
                _FILLED.extend(object() for _ in range(free))
            elif size <= 32:
                _FILLED.extend(float(i) + 0.5 for i in range(free))
            elif n >= 0:
                _FILLED.extend(bytes([i & 255]) * n for i in range(free))


def warm(rounds: int = 12) -> None:
    for _ in range(rounds):
        tree = ast.parse(PROGRAM, "<solution>")
        compile(tree, "<solution>", "exec")
        exec(compile(PROGRAM, "<solution>", "exec"), {"__name__": "__warm__"})
        plan.decide(judge.free_names(tree), tree)
        encoder, decoder = codec.Encoder(), codec.Decoder()
        for value in VALUES:
            decoder.loads(encoder.dumps(value))
        shared_state.shared_state()
        rpc.snapshot([1, 2, [3]])
        frames.encode_frame({"verdict": "passed", "detail": ""})
        for value in (warm, os, Point, 1):
            solution_side.kind_of(value)
    _sessions()


class Point:
    x: int = 0


def _sessions(calls: int = 12) -> None:
    """Both ends of a call, over real pipes, as the judge and the solution's process run them: the answer is
    written ahead, so that one thread can play both sides."""
    requests, replies = os.pipe(), os.pipe()
    try:
        judge_side = rpc.Session(replies[0], requests[1], {"__name__": "__main__"}, "j")
        solution = rpc.Session(requests[0], replies[1], {"__name__": "__solution__", "f": lambda a, k=0: a}, "s")
        f = remote.RemoteFunction(judge_side, None, "f")
        for i in range(calls):
            solution.send({"ok": True, "v": [i, 2]})
            f([i, 2], k=1)
            solution.serve(solution.recv())
    finally:
        for fd in (*requests, *replies):
            os.close(fd)
