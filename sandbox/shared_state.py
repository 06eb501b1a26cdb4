"""What plain Python shares between a program and its tests in one process, kept in step between the judge and
the solution's process: the state of `random`, the `decimal` context, the recursion and int-digit limits. Each
call carries the keys that changed since the other side last heard (rpc.Session.push_state, serving.Serving)."""

from __future__ import annotations

import decimal
import random
import sys

RECURSION_MAX = 100_000
TRAPS = [decimal.Clamped, decimal.DivisionByZero, decimal.Inexact, decimal.Overflow, decimal.Rounded,
         decimal.Underflow, decimal.InvalidOperation, decimal.FloatOperation, decimal.Subnormal]

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
