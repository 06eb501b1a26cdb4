"""What the solution's *source* declares, read in the judge by static analysis (never by running it): the modules
it imports, the shapes of its dataclasses and namedtuples, and the functions whose run-time value is provably
the one their `def` made. The judge acts on these; what the solution's process reports is plain data, checked
against them (sandbox.proxies, sandbox.codec)."""

from __future__ import annotations

import ast
import builtins

from codealign.sandbox import codec

# -- modules ----------------------------------------------------------------------------------------------------


def imported_modules(tree: ast.Module) -> frozenset[str]:
    """Every dotted module name the source imports anywhere (with its parents), and for `from m import x` also
    `m.x` (x may be a submodule). The judge imports nothing else."""
    out: set[str] = set()

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if a.name != "*")
    return frozenset(out)


# -- classes ----------------------------------------------------------------------------------------------------
KEY_MODULE = codec.SOLUTION_MODULE
FACTORIES = {name: getattr(builtins, name) for name in ("list", "dict", "set", "tuple", "frozenset", "str", "int",
                                                        "float", "bytes", "bytearray", "object")}
NOT_GIVEN = object()


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NOT_GIVEN


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + "." + node.attr
    return ""


def _keywords(call: ast.Call, allowed: set[str]) -> dict | None:
    out = {}
    for kw in call.keywords:
        if kw.arg not in allowed:
            return None
        value = _literal(kw.value)
        if value is NOT_GIVEN:
            return None
        out[kw.arg] = value
    return out


def _dataclass_field(name: str, value) -> dict | None:
    """{"name", "default"?, "factory"?, "compare", "repr", "hash", "init"} for one annotated line."""
    spec = {"name": name, "compare": True, "repr": True, "hash": None, "init": True}
    if value is None:
        return spec
    if isinstance(value, ast.Call) and _dotted(value.func) in ("field", "dataclasses.field") and not value.args:
        for kw in value.keywords:
            if kw.arg == "default_factory":
                factory = _dotted(kw.value)
                if factory not in FACTORIES:
                    return None
                spec["factory"] = factory
            elif kw.arg in ("default", "compare", "repr", "hash", "init"):
                literal = _literal(kw.value)
                if literal is NOT_GIVEN:
                    return None
                spec[kw.arg] = literal
            else:
                return None
        return spec
    literal = _literal(value)
    if literal is NOT_GIVEN:
        return None
    spec["default"] = literal
    return spec


def _fields(body) -> list[dict] | None:
    """The annotated fields of a class body that holds nothing else (a docstring, `pass`)."""
    fields = []
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.Pass) or (i == 0 and isinstance(stmt, ast.Expr) and isinstance(
                stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
            continue
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.simple):
            return None
        name = stmt.target.id
        if name.startswith("__"):
            return None
        if "ClassVar" in ast.unparse(stmt.annotation) or "InitVar" in ast.unparse(stmt.annotation):
            return None
        field = _dataclass_field(name, stmt.value)
        if field is None:
            return None
        fields.append(field)
    return fields


def _dataclass(node: ast.ClassDef) -> dict | None:
    if node.bases or node.keywords or len(node.decorator_list) != 1:
        return None
    deco = node.decorator_list[0]
    call = deco if isinstance(deco, ast.Call) else None
    if _dotted(call.func if call else deco) not in ("dataclass", "dataclasses.dataclass"):
        return None
    options = _keywords(call, {"eq", "order", "frozen", "unsafe_hash", "repr", "init"}) if call else {}
    if options is None or (call is not None and call.args):
        return None
    fields = _fields(node.body)
    if fields is None:
        return None
    return {"fields": fields, "eq": options.get("eq", True), "order": options.get("order", False),
            "frozen": options.get("frozen", False), "unsafe_hash": options.get("unsafe_hash", False),
            "repr": options.get("repr", True), "init": options.get("init", True)}


def _namedtuple_class(node: ast.ClassDef) -> dict | None:
    if node.decorator_list or node.keywords or len(node.bases) != 1 or _dotted(node.bases[0]) not in (
            "NamedTuple", "typing.NamedTuple"):
        return None
    fields = _fields(node.body)
    if fields is None or any(set(f) - {"name", "default", "compare", "repr", "hash", "init"} for f in fields):
        return None
    return {"fields": [f["name"] for f in fields], "defaults": [f["default"] for f in fields if "default" in f]}


def _namedtuple_call(value) -> dict | None:
    """`P = namedtuple('P', 'x y', defaults=(0,))` with literal arguments."""
    if not (isinstance(value, ast.Call) and _dotted(value.func) in ("namedtuple", "collections.namedtuple")):
        return None
    if len(value.args) != 2:
        return None
    names = _literal(value.args[1])
    options = _keywords(value, {"defaults"})
    if options is None or names is NOT_GIVEN:
        return None
    fields = names.replace(",", " ").split() if isinstance(names, str) else list(names)
    if not all(isinstance(f, str) and f.isidentifier() and not f.startswith("_") for f in fields):
        return None
    defaults = list(options.get("defaults") or ())
    return {"fields": fields, "defaults": defaults} if len(defaults) <= len(fields) else None


ENUM_BASES = ("Enum", "IntEnum", "StrEnum", "Flag", "IntFlag")


def _enum(node: ast.ClassDef) -> dict | None:
    """An enum whose members are literals (or `auto()`), with nothing else in its body."""
    if node.decorator_list or node.keywords or len(node.bases) != 1:
        return None
    base = _dotted(node.bases[0]).removeprefix("enum.")
    if base not in ENUM_BASES:
        return None
    members: list[tuple[str, object]] = []
    for i, stmt in enumerate(node.body):
        if isinstance(stmt, ast.Pass) or (i == 0 and isinstance(stmt, ast.Expr) and isinstance(
                stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
            continue
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            return None
        name = stmt.targets[0].id
        if name.startswith("_"):
            return None
        value = stmt.value
        if isinstance(value, ast.Call) and _dotted(value.func) in ("auto", "enum.auto") and not value.args:
            value = _auto(base, name, [v for _, v in members])
        else:
            value = _literal(value)
        if value is NOT_GIVEN:
            return None
        members.append((name, value))
    return {"base": base, "members": members}


def _auto(base: str, name: str, last: list):
    """What enum.auto() gives (Python 3.11's _generate_next_value_ of each base)."""
    if base == "StrEnum":
        return name.lower()
    ints = [v for v in last if isinstance(v, int)]
    if base in ("Flag", "IntFlag"):
        return 1 << max(ints).bit_length() if ints else 1
    if last and not isinstance(last[-1], int):
        return NOT_GIVEN
    return last[-1] + 1 if last else 1


def declared_classes(tree: ast.Module) -> dict[str, tuple[str, dict]]:
    """Class key -> ("DC" | "NT" | "EN", spec: a dataclass, namedtuple or enum), for the top-level classes whose whole
    shape the source states in literals. Mirrors of these are built from this alone."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            spec = _dataclass(node)
            if spec is not None:
                out[f"{KEY_MODULE}:{node.name}"] = ("DC", spec)
                continue
            spec = _namedtuple_class(node)
            if spec is not None:
                out[f"{KEY_MODULE}:{node.name}"] = ("NT", spec)
                continue
            spec = _enum(node)
            if spec is not None:
                out[f"{KEY_MODULE}:{node.name}"] = ("EN", spec)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            spec = _namedtuple_call(node.value)
            if spec is not None and isinstance(node.value.args[0], ast.Constant) and \
                    node.value.args[0].value == node.targets[0].id:
                out[f"{KEY_MODULE}:{node.targets[0].id}"] = ("NT", spec)
    return out


# -- functions whose introspection is the truth -----------------------------------------------------------------
# Modules that offer a program no way to reach a module's namespace (no frames, no function internals, no
# string-to-attribute lookups, no evaluation of strings): a program importing only these (and `sys` for the
# attributes below) cannot rebind a name at run time except by statements the analysis sees.
CLOSED_MODULES = frozenset("math cmath itertools functools collections heapq bisect re fractions decimal "
                           "statistics random array enum copy datetime numbers abc textwrap unicodedata "
                           "hashlib json dataclasses typing __future__".split())
SYS_ATTRS = frozenset("setrecursionlimit getrecursionlimit maxsize stdin stdout stderr set_int_max_str_digits "
                      "float_info version_info exit".split())
# ...and the names by which those modules evaluate strings as code (annotations) or look attributes up by string
OPEN_NAMES = frozenset("globals vars locals exec eval compile setattr delattr getattr __import__ breakpoint "
                       "__builtins__ __loader__ __spec__ __dict__ get_type_hints ForwardRef singledispatch "
                       "singledispatchmethod attrgetter methodcaller".split())
OPEN_ATTRS = frozenset("__globals__ __dict__ __builtins__ __code__ __closure__ __subclasses__ __getattribute__ "
                       "__setattr__ __delattr__ __traceback__ __self__ __func__ __wrapped__ __reduce__ "
                       "__reduce_ex__ __base__ __bases__ __mro__ __class__ __init_subclass__ __set_name__ "
                       "modules _getframe exc_info get_type_hints ForwardRef singledispatch "
                       "singledispatchmethod _evaluate _eval_type".split())
FRAME_PREFIXES = ("f_", "tb_", "gi_", "cr_", "ag_")


def closed_program(tree: ast.Module) -> bool:
    sys_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sys":
                    sys_names.add(alias.asname or "sys")
                elif alias.name.split(".")[0] not in CLOSED_MODULES:
                    return False
        elif isinstance(node, ast.ImportFrom):
            if node.level or not node.module:
                return False
            names = {a.name for a in node.names}
            if node.module == "sys" and names <= SYS_ATTRS:
                continue
            if node.module.split(".")[0] not in CLOSED_MODULES or "*" in names:
                return False
    fine_sys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in OPEN_ATTRS or node.attr.startswith(FRAME_PREFIXES):
                return False
            if isinstance(node.value, ast.Name) and node.value.id in sys_names and node.attr in SYS_ATTRS:
                fine_sys.add(id(node.value))
        elif isinstance(node, ast.Name) and node.id in OPEN_NAMES:
            return False
    return all(id(node) in fine_sys for node in ast.walk(tree)
               if isinstance(node, ast.Name) and node.id in sys_names and isinstance(node.ctx, ast.Load))


def pinned_functions(tree: ast.Module, bindings: dict[str, str]) -> frozenset[str]:
    """Names whose value, once the program has loaded, is provably the function their `def` made: bound only by
    undecorated top-level `def`s, in a program with no way to rebind a name at run time (`closed_program`).
    The tests may introspect these in the judge (sandbox.introspect); any other name they introspect is only
    known at run time, in the solution's process: such tests run beside it (mode "in_process")."""
    if not closed_program(tree):
        return frozenset()
    plain = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and not n.decorator_list}
    decorated = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.decorator_list}
    return frozenset(n for n in plain - decorated if bindings.get(n) == "function")
