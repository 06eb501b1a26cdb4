"""A strict, safe encoding of plain built-in values between processes.

Only exact built-in types cross (a subclass of int, str or list, or any object with its own `__eq__`, is refused),
so a value the trusted side compares is a real `int`, `str`, `list`... and equality tricks have nothing to hook
into. Decoding builds values from JSON with no code execution: never pickle.
"""

from __future__ import annotations

import collections
import math

MAX_DEPTH = 100
# Standard-library dict subclasses that solutions commonly return where tests expect a dict. They cross as plain
# dicts (their data, not their class), so their own methods play no part in the comparison.
DICT_LIKE = (collections.Counter, collections.defaultdict, collections.OrderedDict)


class NotPlain(TypeError):
    """A value that is not built from exact built-in types."""


def encode(value, depth: int = 0):
    if depth > MAX_DEPTH:
        raise NotPlain("value nested too deeply")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if abs(value) < 2**53 else {"int": str(value)}
    if t is float:
        return {"float": repr(value)} if not math.isfinite(value) else value
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"tuple": [encode(v, depth + 1) for v in value]}
    if t is dict or t in DICT_LIKE:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {t.__name__: [encode(v, depth + 1) for v in value]}
    if t is complex:
        return {"complex": [repr(value.real), repr(value.imag)]}
    if t is bytes:
        return {"bytes": value.hex()}
    raise NotPlain(f"{t.__module__}.{t.__qualname__} is not a plain built-in type")


def decode(data):
    t = type(data)
    if data is None or t in (bool, str, int, float):
        return data
    if t is list:
        return [decode(v) for v in data]
    if t is dict and len(data) == 1:
        (tag, body), = data.items()
        if tag == "int":
            return int(body)
        if tag == "float":
            return float(body)
        if tag == "tuple":
            return tuple(decode(v) for v in body)
        if tag == "dict":
            return {decode(k): decode(v) for k, v in body}
        if tag == "set":
            return {decode(v) for v in body}
        if tag == "frozenset":
            return frozenset(decode(v) for v in body)
        if tag == "complex":
            return complex(float(body[0]), float(body[1]))
        if tag == "bytes":
            return bytes.fromhex(body)
    raise ValueError(f"not an encoded plain value: {str(data)[:80]}")
