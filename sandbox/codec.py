"""Values between the judge and the solution's process: a compact tagged JSON, never pickle.

A value is rebuilt on the receiving side from data only, as an object of a type that side trusts: a real `int`,
`list`, `tuple`, `Fraction`, `OrderedDict`... so what the judge compares behaves as Python's own type does, and
equality tricks of model code have nothing to hook into. JSON arrays are lists; every other kind is a one-key
object `{tag: body}`, rebuilt bottom-up by json's C parser calling `Decoder.hook`, so large values cross at C speed
(a container of plain scalars is handed to `json.dumps` as it is).

- Classes the program defines (namedtuples, dataclasses, exceptions) cross by key (module:qualname) and shape;
  the other side uses its own class of that key if it has one, and otherwise a *mirror*: a class it makes itself
  (`collections.namedtuple`, `dataclasses.make_dataclass`, a plain subclass of the mirrored bases), so equality,
  ordering, `except` clauses and `isinstance` follow the program's declarations, not its code.
- Callables and iterators do not cross: they become handles (`Encoder.handle`), called back through `sandbox.rpc`.
- Anything else (an instance of the program's own class with its own methods) is refused: `NotPlain`.
"""

from __future__ import annotations

import array
import binascii
import builtins
import collections
import datetime
import decimal
import enum  # loaded at start-up anyway (re uses it)
import fractions
import io
import itertools
import json
import math
import re
import sys
from _thread import RLock

SOLUTION_MODULE = "__solution__"  # the module the solution's program runs as (sandbox.solution_side)
SCALARS = frozenset((str, int, float, bool, type(None)))
INT_BITS = 12000  # ints of more bits cross as hex: str(int) is capped at 4300 digits, hex is not
BUILTIN_TYPES = frozenset(v for v in vars(builtins).values() if isinstance(v, type) and not issubclass(
    v, BaseException))
# Builtin functions that cross as themselves (`sorted(x, key=len)`); any other callable crosses as a handle.
BUILTIN_FUNCS = frozenset("abs all any ascii bin chr divmod hash hex id len max min oct ord pow repr round sorted "
                          "sum".split())
STR_LIMIT = 32 << 20
ARRAY_MIN = 64
EXC_TEXT_MAX = 1 << 16  # what str() of an exception of the program's said (its __str__ stays behind)
MUTABLE = (list, dict, set, bytearray, collections.deque)
_DEEP = RLock()


DEPTH = 8000  # the recursion limit while a value is encoded or decoded: values nest some thousands deep


def deep(fn, arg):
    """`fn(arg)` under a recursion limit of at least DEPTH (a value plain Python holds may nest deeper than the
    default limit lets a walk go), restored after; under a lock, since threads of the tests may call at once."""
    with _DEEP:
        old = sys.getrecursionlimit()
        if old < DEPTH:
            sys.setrecursionlimit(DEPTH)
        try:
            return fn(arg)
        finally:
            if old < DEPTH:
                sys.setrecursionlimit(old)


class NotPlain(TypeError):
    """A value that cannot cross as data (and is not a callable or iterator, which cross as handles)."""


class BadMessage(ValueError):
    """Bytes that do not decode to a value: the other side is broken or hostile."""


class Undeclared(BadMessage):
    """A value of a class of the program's that the judge cannot rebuild from its source's declarations."""


def class_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def is_namedtuple_class(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def is_dataclass_instance(v) -> bool:
    return hasattr(type(v), "__dataclass_fields__") and not isinstance(v, type)


def dataclass_spec(cls) -> dict:
    import dataclasses  # not at module level: the fork server (every solution's parent) stays small

    params = cls.__dataclass_params__
    return {"fields": [f.name for f in dataclasses.fields(cls)], "eq": params.eq, "order": params.order,
            "frozen": params.frozen}


class Encoder:
    """`dumps(value) -> bytes`. `handle(obj)`, when given, turns a callable or an iterator into a handle body
    (a list); without it those are refused (values only: the in-process strict comparison)."""

    def __init__(self, handle=None):
        self.handle = handle
        self.careful = False
        self.sent: set[str] = set()  # class keys whose shape the other side has already received
        self._new: list[str] = []

    def dumps(self, value) -> bytes:
        return deep(self._dumps, value)

    def _dumps(self, value) -> bytes:
        self._new = []
        try:
            try:
                tree = self.enc(value)
                text = json.dumps(tree, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            except ValueError:  # a nan, an infinity or a huge int inside a container taken whole: walk it all
                self.sent.difference_update(self._new)  # the shapes that walk marked sent were never sent
                self._new = []
                self.careful = True
                try:
                    tree = self.enc(value)
                    text = json.dumps(tree, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
                finally:
                    self.careful = False
        except RecursionError:
            self.sent.difference_update(self._new)
            raise NotPlain("value nested too deeply") from None
        except BaseException:
            self.sent.difference_update(self._new)
            raise
        return text.encode("utf-8", "surrogatepass")  # lone surrogates stay themselves (never a pair's char)

    def enc(self, v):
        t = type(v)
        if t in SCALARS:
            if t is str and len(v) > STR_LIMIT:
                raise NotPlain(f"a string of {len(v)} characters is too large to cross")
            return self.scalar(v) if self.careful else v
        if t is list:
            if not self.careful:
                kinds = set(map(type, v))
                if kinds <= SCALARS:
                    return self.numbers(v, kinds) if len(v) >= ARRAY_MIN and len(kinds) == 1 else v
                if kinds == {tuple} and set(map(type, itertools.chain.from_iterable(v))) <= SCALARS:
                    return {"LT": v}  # a list of plain tuples, taken whole by json (the common big result)
                if kinds == {list} and set(map(type, itertools.chain.from_iterable(v))) <= SCALARS:
                    return v
            return [self.enc(x) for x in v]
        if t is tuple:
            if not self.careful and all(type(x) in SCALARS for x in v):
                return {"T": v}
            return {"T": [self.enc(x) for x in v]}
        if t is dict:
            if not self.careful and all(type(k) in SCALARS and type(x) in SCALARS for k, x in v.items()):
                return {"D": list(v.items())}
            return {"D": [[self.enc(k), self.enc(x)] for k, x in v.items()]}
        fn = ENCODERS.get(t)
        if fn is not None:
            return fn(self, v)
        return self.other(v)

    def numbers(self, v: list, kinds: set):
        """A long list of only floats or only (64-bit) ints crosses as packed machine numbers."""
        kind = next(iter(kinds))
        try:
            if kind is float:
                packed = array.array("d", v)
                if any(map(math.isnan, packed)):  # nan identity (math.nan) needs the careful path
                    return v
                return {"AF": binascii.b2a_base64(packed.tobytes(), newline=False).decode()}
            if kind is int:
                return {"AI": binascii.b2a_base64(array.array("q", v).tobytes(), newline=False).decode()}
        except OverflowError:
            pass
        return v

    def scalar(self, v):
        t = type(v)
        if t is float:
            if math.isfinite(v):
                return v
            return {"F": "nanid" if v is math.nan else repr(v)}  # `[math.nan] == [math.nan]` holds by identity
        if t is int and v.bit_length() > INT_BITS:
            return {"I": hex(v)}
        return v

    def items(self, v):
        return [self.enc(x) for x in v]

    def pairs(self, v):
        return [[self.enc(k), self.enc(x)] for k, x in v.items()]

    def class_ref(self, cls, make_spec):
        key = class_key(cls)
        if key in self.sent:
            return [key, None]
        spec = self.enc(make_spec(cls))
        self.sent.add(key)
        self._new.append(key)
        return [key, spec]

    def other(self, v):
        t = type(v)
        if isinstance(v, BaseException):
            return {"E": self.exception(v)}
        if isinstance(v, enum.Enum):
            return {"EN": [class_key(t), v.name, self.enc(v.value)]}
        if is_namedtuple_class(t):
            items = self.items(v)
            return {"NT": self.class_ref(t, lambda c: list(c._fields)) + [items]}
        if is_dataclass_instance(v):
            import dataclasses

            values = [self.enc(getattr(v, f.name)) for f in dataclasses.fields(t)]
            return {"DC": self.class_ref(t, dataclass_spec) + [values]}
        if isinstance(v, type) and getattr(builtins, v.__name__, None) is v:
            return {"B": v.__name__}
        if getattr(v, "__self__", None) is builtins and v.__name__ in BUILTIN_FUNCS:
            return {"B": v.__name__}
        if t.__module__ == "numpy" or t.__module__.startswith("numpy."):
            return self.numpy(v)
        if self.handle is not None:
            if callable(v) and not isinstance(v, type):
                return {"H": self.handle(v, "f")}
            if hasattr(t, "__await__") and hasattr(t, "send"):  # a coroutine: awaited in the solution's process
                return {"H": self.handle(v, "c")}
            if hasattr(t, "__next__") and hasattr(t, "__iter__"):
                # an object of the program's own iterator class may have methods of its own: "i"
                return {"H": self.handle(v, "i" if t.__module__ == SOLUTION_MODULE else "g")}
        raise NotPlain(f"{t.__module__}.{t.__qualname__} is not a plain value")

    def exception(self, exc: BaseException) -> list:
        mro = [c for c in type(exc).__mro__ if c is not object]
        spec = [[class_key(c), [class_key(b) for b in c.__bases__ if b is not object]] for c in mro]
        given = exc.args
        if isinstance(exc, OSError) and exc.args == (exc.errno, exc.strerror) and (
                exc.filename is not None or exc.filename2 is not None):  # OSError keeps these out of its args
            given = (exc.errno, exc.strerror, exc.filename, None, exc.filename2)
        try:
            args = self.enc(given)
        except NotPlain:
            args = {"T": [str(a) for a in exc.args]}
        attrs = {}
        for k, x in vars(exc).items() if hasattr(exc, "__dict__") else ():
            try:
                attrs[k] = self.enc(x)
            except NotPlain:
                pass
        try:
            text = str(exc)[:EXC_TEXT_MAX]
        except Exception:
            text = None  # its own str() fails: the mirror's, from the same args, fails the same way
        return [spec, args, text, {"D": list(attrs.items())}]

    def numpy(self, v):
        import numpy as np

        if isinstance(v, np.ndarray) and v.dtype.kind in "biufcUS":
            return {"NA": [v.dtype.str, list(v.shape), self.enc(v.tolist())]}
        if isinstance(v, np.generic) and v.dtype.kind in "biufc":
            return {"NS": [v.dtype.str, self.enc(v.item())]}
        raise NotPlain(f"numpy {type(v).__name__} of dtype {getattr(v, 'dtype', '?')} is not a plain value")


def _enc_dt(e, v):
    tz = v.tzinfo
    if tz is not None and type(tz) is not datetime.timezone:
        raise NotPlain("datetime with a tzinfo other than datetime.timezone")
    return {"DT": [v.isoformat(), v.fold]}


def _enc_time(e, v):
    if v.tzinfo is not None and type(v.tzinfo) is not datetime.timezone:
        raise NotPlain("time with a tzinfo other than datetime.timezone")
    return {"TM": [v.isoformat(), v.fold]}


ENCODERS = {
    set: lambda e, v: {"S": e.items(v)},
    frozenset: lambda e, v: {"FS": e.items(v)},
    complex: lambda e, v: {"C": [e.scalar(v.real), e.scalar(v.imag)]},
    bytes: lambda e, v: {"Y": v.hex()},
    bytearray: lambda e, v: {"YA": v.hex()},
    range: lambda e, v: {"R": [v.start, v.stop, v.step]},
    fractions.Fraction: lambda e, v: {"Q": [e.scalar(v.numerator), e.scalar(v.denominator)]},
    decimal.Decimal: lambda e, v: {"DE": str(v)},
    datetime.date: lambda e, v: {"DA": v.isoformat()},
    datetime.datetime: _enc_dt,
    datetime.time: _enc_time,
    datetime.timedelta: lambda e, v: {"TD": [v.days, v.seconds, v.microseconds]},
    datetime.timezone: lambda e, v: {"TZ": [v.utcoffset(None).total_seconds(), v.tzname(None)]},
    collections.OrderedDict: lambda e, v: {"OD": e.pairs(v)},
    collections.Counter: lambda e, v: {"CT": e.pairs(v)},
    collections.defaultdict: lambda e, v: {"DD": [e.enc(v.default_factory), e.pairs(v)]},
    collections.deque: lambda e, v: {"DQ": [e.items(v), v.maxlen]},
    type({}.keys()): lambda e, v: {"DK": e.items(v)},
    type({}.values()): lambda e, v: {"DV": e.items(v)},
    type({}.items()): lambda e, v: {"DI": [[e.enc(k), e.enc(x)] for k, x in v]},
    io.StringIO: lambda e, v: {"SIO": [v.getvalue(), v.tell()]},
    re.Pattern: lambda e, v: {"RP": [v.pattern if isinstance(v.pattern, str) else {"Y": v.pattern.hex()}, v.flags]},
    re.Match: lambda e, v: {"RM": [e.enc(v.re), e.enc(v.string), v.pos, v.endpos, list(v.regs)]},
}


class Decoder:
    """`loads(bytes) -> value`. `local` is the module name of this side's program (its classes are its own);
    `resolve_local(qualname)` finds one; `resolve_handle(body)` turns a handle into an object (a proxy for the
    other side's, the object itself for ours). `mirror_only` (the in-process strict comparison): every program
    class becomes a mirror, so no method of the program decides an equality."""

    def __init__(self, local: str = "", resolve_local=None, resolve_handle=None, mirror_only: bool = False):
        self.local, self.resolve_local, self.resolve_handle = local, resolve_local, resolve_handle
        self.mirror_only = mirror_only
        self.shapes: dict[str, object] = {}  # class key -> shape (fields...) as first received
        # class key -> ("DC" | "NT", shape) as the program's source declares it (sandbox.declared): its mirror is
        # built from that alone; what crosses must match it
        self.declared: dict[str, tuple] = {}
        self.classes: dict[tuple, type] = {}

    def loads(self, data: bytes):
        return deep(self._loads, data)

    def _loads(self, data: bytes):
        try:
            return json.loads(data.decode("utf-8", "surrogatepass"), object_pairs_hook=self.hook)
        except BadMessage:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError,
                decimal.InvalidOperation, ZeroDivisionError, re.error, binascii.Error) as exc:
            raise BadMessage(f"undecodable value: {type(exc).__name__}: {str(exc)[:200]}") from None

    def hook(self, pairs):
        if len(pairs) != 1:
            raise BadMessage("a JSON object that is not a tagged value")
        tag, body = pairs[0]
        fn = DECODERS.get(tag)
        if fn is None:
            raise BadMessage(f"unknown tag {tag[:20]!r}")
        return fn(self, body)

    # -- classes -----------------------------------------------------------------------------------------
    def shape(self, key: str, spec):
        if spec is not None:
            self.shapes[key] = spec
        return self.shapes[key]

    def own_class(self, key: str):
        """This side's own class for a key, or None (a mirror is then made)."""
        module, _, qualname = key.partition(":")
        if self.mirror_only:
            return None
        if module == self.local and self.resolve_local is not None:
            return self.resolve_local(qualname)
        return None

    def namedtuple_class(self, key: str, fields) -> type:
        cls = self.own_class(key)
        if is_namedtuple_class(cls) and list(cls._fields) == list(fields):
            return cls
        declared = self.declared.get(key)
        if declared is not None:
            cls = self.declared_class(key)
            if not is_namedtuple_class(cls) or list(cls._fields) != list(fields):
                raise BadMessage(f"{key[:80]} does not have the shape its source declares")
            return cls
        if ("NT", key) not in self.classes:
            self.classes["NT", key] = self._namedtuple(key, fields, ())
        return self.classes["NT", key]

    def _namedtuple(self, key: str, fields, defaults) -> type:
        module, _, qualname = key.partition(":")
        name = qualname.rsplit(".", 1)[-1]
        cls = collections.namedtuple(name if name.isidentifier() else "Mirror", fields, rename=True,
                                     defaults=defaults)
        cls.__module__, cls.__qualname__ = module, qualname
        return cls

    def dataclass_class(self, key: str, spec: dict) -> type:
        """Built from the source's declaration when there is one; otherwise from the shape that crossed (plain
        field names and flags, no defaults): no member of the class comes from the program's data."""
        cls = self.own_class(key)
        if isinstance(cls, type) and hasattr(cls, "__dataclass_fields__") and dataclass_spec(cls) == spec:
            return cls
        if key in self.declared:
            cls = self.declared_class(key)
            if not hasattr(cls, "__dataclass_fields__") or list(cls.__dataclass_fields__) != list(spec["fields"]):
                raise BadMessage(f"{key[:80]} does not have the shape its source declares")
            return cls
        if ("DC", key) not in self.classes:
            names = spec["fields"]
            if not all(type(f) is str and f.isidentifier() and not f.startswith("__") for f in names):
                raise BadMessage("dataclass field names that are not plain identifiers")
            fields = [{"name": f} for f in names]
            self.classes["DC", key] = self._dataclass(key, {**spec, "fields": fields})
        return self.classes["DC", key]

    def enum_class(self, key: str) -> type:
        """The program's enum as its source declares it (sandbox.declared), or a standard library enum."""
        if key in self.declared and self.declared[key][0] == "EN":
            return self.declared_class(key)
        cls = stdlib_class(key)
        if isinstance(cls, type) and issubclass(cls, enum.Enum):
            return cls
        raise Undeclared(f"{key[:80]}: an enum whose members its source does not state in literals")

    def declared_class(self, key: str) -> type:
        kind, spec = self.declared[key]
        if (kind, key) not in self.classes:
            if kind == "EN":
                module, _, qualname = key.partition(":")
                base = getattr(enum, spec["base"])
                self.classes[kind, key] = base(qualname.rsplit(".", 1)[-1], spec["members"], module=module,
                                              qualname=qualname)
            elif kind == "NT":
                self.classes[kind, key] = self._namedtuple(key, spec["fields"], spec["defaults"])
            else:
                self.classes[kind, key] = self._dataclass(key, spec)
        return self.classes[kind, key]

    def _dataclass(self, key: str, spec: dict) -> type:
        import dataclasses

        module, _, qualname = key.partition(":")
        name = qualname.rsplit(".", 1)[-1]
        fields = []
        for f in spec["fields"]:
            options = {k: f[k] for k in ("compare", "repr", "hash", "init") if k in f}
            if "default" in f:
                options["default"] = f["default"]
            elif "factory" in f:
                options["default_factory"] = getattr(builtins, f["factory"])
            fields.append((f["name"], "typing.Any", dataclasses.field(**options)))
        cls = dataclasses.make_dataclass(
            name if name.isidentifier() else "Mirror", fields, eq=bool(spec["eq"]), order=bool(spec["order"]),
            frozen=bool(spec["frozen"]), unsafe_hash=bool(spec.get("unsafe_hash", False)),
            repr=bool(spec.get("repr", True)), init=bool(spec.get("init", True)))
        cls.__module__, cls.__qualname__ = module, qualname
        return cls

    def exception_class(self, spec: list) -> type:
        bases_of = {key: bases for key, bases in spec}
        return self._exc_class(spec[0][0], bases_of)

    def _exc_class(self, key: str, bases_of: dict) -> type:
        known = self.classes.get(("E", key))
        if known is not None:
            return known
        cls = self.own_class(key)
        if cls is None and not self.mirror_only:
            cls = stdlib_class(key)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            bases = tuple(self._exc_class(b, bases_of) for b in bases_of.get(key, ()) if b in bases_of) or (
                Exception,)
            module, _, qualname = key.partition(":")
            ns = {"__module__": module, "__qualname__": qualname, "__str__": _mirror_str, "__mirror_of__": key}
            try:
                cls = type(qualname.rsplit(".", 1)[-1], bases, ns)
            except TypeError:  # bases that cannot be combined here: the first one carries `except` clauses
                cls = type(qualname.rsplit(".", 1)[-1], bases[:1], ns)
        self.classes["E", key] = cls
        return cls


def _mirror_str(self):
    text = self.__dict__.get("_remote_str")
    if text is not None:
        return text
    real = next(c for c in type(self).__mro__ if "__mirror_of__" not in c.__dict__)
    return real.__str__(self)


def stdlib_class(key: str):
    """A class of the standard library named by a key, if that module is already loaded here. Nothing is
    imported on the say-so of the other side, and nothing outside the standard library is looked up."""
    module, _, qualname = key.partition(":")
    if module.split(".")[0] not in sys.stdlib_module_names and module != "builtins":
        return None
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _dec_exception(d: Decoder, body):
    spec, args, text, attrs = body
    cls = d.exception_class(spec)
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    try:
        exc = cls(*args)
    except Exception:
        exc = cls.__new__(cls, *args)
        exc.args = args
    for k, v in attrs.items():
        if not isinstance(k, str) or k.startswith("__"):
            continue
        try:
            setattr(exc, k, v)
        except Exception:
            pass
    if getattr(cls, "__mirror_of__", None) is not None and text is not None:  # its __str__ stayed behind
        exc.__dict__["_remote_str"] = str(text)
    return exc


def _dec_float(d, body):
    if body == "nanid":
        return math.nan
    value = float(body)
    if math.isfinite(value):
        raise BadMessage("finite float in a special-float tag")
    return value


def _dec_builtin(d, name):
    obj = getattr(builtins, name, None)
    if obj in BUILTIN_TYPES or (name in BUILTIN_FUNCS and obj is not None):
        return obj
    raise BadMessage(f"not a crossing builtin: {name[:40]!r}")


def _dec_handle(d, body):
    if d.resolve_handle is None:
        raise BadMessage("a handle where only values may cross")
    return d.resolve_handle(body)


def _dec_namedtuple(d, body):
    key, spec, items = body
    return d.namedtuple_class(key, d.shape(key, spec))._make(items)


def _dec_dataclass(d, body):
    key, spec, values = body
    spec = d.shape(key, spec)
    cls = d.dataclass_class(key, spec)
    obj = cls.__new__(cls)
    for name, value in zip(spec["fields"], values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


def _dec_defaultdict(d, body):
    factory, pairs = body
    if factory is not None and not callable(factory):
        raise BadMessage("defaultdict factory is not callable")
    return collections.defaultdict(factory, pairs)


def _dec_datetime(d, body):
    value = datetime.datetime.fromisoformat(body[0])
    return value.replace(fold=int(body[1]))


def _dec_time(d, body):
    return datetime.time.fromisoformat(body[0]).replace(fold=int(body[1]))


def _dec_timezone(d, body):
    offset = datetime.timedelta(seconds=float(body[0]))
    return datetime.timezone(offset) if body[1] is None else datetime.timezone(offset, str(body[1]))


def _dec_pattern(d, body):
    pattern, flags = body
    return re.compile(pattern, int(flags))


MATCH_LIMIT = 1 << 20


def _dec_match(d, body):
    """A real `re.Match`, found again by running the same pattern over the same string from the same position:
    accepted only when every group's span is the one reported."""
    rx, string, pos, endpos, regs = body
    if not isinstance(rx, re.Pattern) or len(string) > MATCH_LIMIT:
        raise BadMessage("match object out of bounds")
    regs = tuple(tuple(r) for r in regs)
    for how in (rx.search, rx.match, rx.fullmatch):
        m = how(string, pos, endpos)
        if m is not None and m.regs == regs:
            return m
    start, end = regs[0]
    for how in (rx.match, rx.fullmatch):  # found by finditer/search from a later position
        m = how(string, start, end if how is rx.fullmatch else endpos)
        if m is not None and m.regs == regs:
            return m
    raise BadMessage("the reported match cannot be reproduced")


def _dec_numpy_array(d, body):
    import numpy as np

    dtype, shape, data = body
    return np.array(data, dtype=np.dtype(dtype)).reshape(shape)


def _dec_numpy_scalar(d, body):
    import numpy as np

    dtype, value = body
    return np.dtype(dtype).type(value)


def _check_int(v):
    if type(v) is not int:
        raise BadMessage("expected an int")
    return v


def _dec_stringio(d, body):
    text, pos = body
    buf = io.StringIO(str(text))
    buf.seek(int(pos))
    return buf


def _dec_enum(d, body):
    key, name, value = body
    cls = d.enum_class(str(key))
    member = getattr(cls, "__members__", {}).get(name) if isinstance(name, str) else None
    if member is None or member.value != value:
        raise BadMessage(f"{str(key)[:80]} has no member {str(name)[:40]!r} of that value")
    return member


DECODERS = {
    "SIO": _dec_stringio,
    "EN": _dec_enum,
    "T": lambda d, b: tuple(b),
    "LT": lambda d, b: list(map(tuple, b)),
    "AF": lambda d, b: array.array("d", binascii.a2b_base64(b, strict_mode=True)).tolist(),
    "AI": lambda d, b: array.array("q", binascii.a2b_base64(b, strict_mode=True)).tolist(),
    "D": lambda d, b: dict(b),
    "S": lambda d, b: set(b),
    "FS": lambda d, b: frozenset(b),
    "I": lambda d, b: int(b, 16),
    "F": _dec_float,
    "C": lambda d, b: complex(float(b[0]), float(b[1])),
    "Y": lambda d, b: bytes.fromhex(b),
    "YA": lambda d, b: bytearray.fromhex(b),
    "R": lambda d, b: range(_check_int(b[0]), _check_int(b[1]), _check_int(b[2])),
    "Q": lambda d, b: fractions.Fraction(_check_int(b[0]), _check_int(b[1])),
    "DE": lambda d, b: decimal.Decimal(str(b)),
    "DA": lambda d, b: datetime.date.fromisoformat(b),
    "DT": _dec_datetime,
    "TM": _dec_time,
    "TD": lambda d, b: datetime.timedelta(days=b[0], seconds=b[1], microseconds=b[2]),
    "TZ": _dec_timezone,
    "OD": lambda d, b: collections.OrderedDict(b),
    "CT": lambda d, b: collections.Counter(dict(b)),
    "DD": _dec_defaultdict,
    "DQ": lambda d, b: collections.deque(b[0], b[1]),
    "DK": lambda d, b: dict.fromkeys(b).keys(),
    "DV": lambda d, b: dict(enumerate(b)).values(),
    "DI": lambda d, b: dict(b).items(),
    "RP": _dec_pattern,
    "RM": _dec_match,
    "B": _dec_builtin,
    "H": _dec_handle,
    "NT": _dec_namedtuple,
    "DC": _dec_dataclass,
    "E": _dec_exception,
    "NA": _dec_numpy_array,
    "NS": _dec_numpy_scalar,
}


_STRICT = Decoder(mirror_only=True)  # one, so that both sides of a comparison get the same mirror classes


def strict_value(value):
    """The value rebuilt from data alone (program classes as mirrors): what the in-process strict comparison
    compares. Raises NotPlain for what cannot be rebuilt."""
    return _STRICT.loads(Encoder().dumps(value))
