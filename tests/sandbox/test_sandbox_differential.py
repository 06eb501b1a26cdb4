"""Differential test of what crosses (issue 20, section 3): Hypothesis writes values a program may return (nested
containers, numbers with nan, infinities and big ints, strings with lone surrogates, bytes, dataclasses,
exceptions); a solution returns each through the real sandbox, and its tests check that they see it as plain
Python does: `==` and `!=` against the same value built by the tests, the type, a canonical rendering (repr, with
sets in sorted order since string hashes differ between processes), and whether the hashes agree."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codealign.sandbox import Sandbox, Verdict

# the strategy below is recursive: Hypothesis warns that its own description is long
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

PROGRAM = """\
import math
from dataclasses import dataclass
@dataclass
class P:
    x: object
    y: object = None
@dataclass(frozen=True)
class F:
    a: object
class Oops(Exception):
    pass
"""

PROBE = """\
def canon(v):
    t = type(v)
    if t is int:
        return 'int:' + hex(v)  # str() of an int is capped at 4300 digits
    if t in (set, frozenset):
        return t.__name__ + '{' + ','.join(sorted(canon(x) for x in v)) + '}'
    if t in (list, tuple):
        return t.__name__ + '[' + ','.join(canon(x) for x in v) + ']'
    if t is dict:
        return 'dict{' + ','.join(canon(k) + ':' + canon(x) for k, x in v.items()) + '}'
    if isinstance(v, BaseException):
        try:
            text = None if has_set(v.args) else str(v)  # a set's order follows hashes (of None too) per process
        except ValueError as exc:  # a big int among its arguments
            text = str(exc)
        return t.__name__ + '(' + canon(v.args) + ')' + repr(text)
    if hasattr(t, '__dataclass_fields__'):
        return t.__name__ + '(' + ','.join(canon(getattr(v, f)) for f in t.__dataclass_fields__) + ')'
    return t.__name__ + ':' + repr(v)
def has_set(v):
    t = type(v)
    if t in (set, frozenset):
        return True
    if t in (list, tuple):
        return any(has_set(x) for x in v)
    if t is dict:
        return any(has_set(k) or has_set(x) for k, x in v.items())
    if hasattr(t, '__dataclass_fields__'):
        return any(has_set(getattr(v, f)) for f in t.__dataclass_fields__)
    if isinstance(v, BaseException):
        return has_set(v.args)
    return False
def facts(v, e):
    try:
        same_hash = hash(v) == hash(e)
    except TypeError:
        same_hash = None
    try:
        text = None if has_set(v) else repr(v)
    except ValueError as exc:  # a big int inside
        text = str(exc)
    return [v == e, v != e, type(v).__name__, type(v) is type(e), isinstance(v, type(e)), canon(v), same_hash, text]
"""

SURROGATES = st.sampled_from(["\ud800", "\udfff", "\ud83d\ude00", "\U0001F600", "é", "\x00"])
TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs",)), SURROGATES), max_size=5).map("".join)
KEYS = st.one_of(st.integers(-50, 50).map(repr), TEXT.map(repr), st.booleans().map(repr), st.just("None"))
SCALARS = st.one_of(
    st.none().map(repr), st.booleans().map(repr), st.integers().map(repr),
    st.integers(2, 9).flatmap(lambda b: st.integers(1000, 20000).map(lambda e: f"{b} ** {e}")),  # big ints
    st.integers(2, 9).map(lambda b: f"-{b} ** 3001"),
    st.floats().map(lambda f: f"float({repr(f)!r})"), st.just("math.nan"), st.just("-0.0"),
    TEXT.map(repr), st.binary(max_size=6).map(repr),
)


def _containers(children):
    items = st.lists(children, max_size=4)
    return st.one_of(
        items.map(lambda xs: "[" + ", ".join(xs) + "]"),
        items.map(lambda xs: "(" + "".join(x + ", " for x in xs) + ")"),
        st.lists(st.tuples(KEYS, children), max_size=3).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
        st.lists(KEYS, max_size=4).map(lambda xs: "{" + ", ".join(xs) + "}" if xs else "set()"),
        st.lists(KEYS, max_size=3).map(lambda xs: "frozenset([" + ", ".join(xs) + "])"),
        st.tuples(children, children).map(lambda p: f"P({p[0]}, y={p[1]})"),
        children.map(lambda x: f"P({x})"),
        KEYS.map(lambda x: f"F({x})"),
        items.map(lambda xs: "Oops(" + ", ".join(xs) + ")"),
        children.map(lambda x: f"ValueError({x})"),
    )


VALUES = st.recursive(SCALARS, _containers, max_leaves=10)


def plain_facts(expr: str) -> list:
    ns = {"__name__": "plain_probe"}
    exec(PROGRAM + f"def value():\n    return {expr}\n" + PROBE, ns)
    return ns["facts"](ns["value"](), eval(expr, ns))


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=10, parallelism=1, in_process="refuse") as box:
        yield box


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(expr=VALUES)
def test_a_returned_value_is_seen_as_plain_python_sees_it(sb, expr):
    expected = plain_facts(expr)
    solution = PROGRAM + f"def value():\n    return {expr}\n"
    tests = PROBE + f"got = facts(value(), {expr})\nassert got == {expected!r}, got\n"
    res = sb.run(solution, tests)
    assert res.verdict is Verdict.PASSED and res.mode == "split", (expr, res.detail)
