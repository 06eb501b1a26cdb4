"""What a test may read off the solution's functions (`__doc__`, `__code__`, `inspect.signature`,
`inspect.getsource`), taken in the judge from the solution's *source*, which the caller sent the judge directly:
parsed and compiled, never executed. The program cannot lie about it (a test that bans a construct by reading the
source reads the real source) and no model code runs beside the tests."""

from __future__ import annotations

import ast
import builtins
import inspect
import linecache
import types

FILENAME = "<solution>"
SOURCE_LIMIT = 1 << 20  # longer programs are not compiled again here: their functions show no source


class Unparsed:
    """A default value that is not a literal: shown as its source text."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _shadow(*args, **kwargs):
    raise TypeError("the source view of a solution function cannot be called")


class SourceInfo:
    def __init__(self, source: str):
        self.source = source
        self._defs: dict[str, ast.AST] | None = None
        self._codes: dict[str, types.CodeType] | None = None

    def defs(self) -> dict:
        if self._defs is None:
            self._defs = {}
            if 0 < len(self.source) <= SOURCE_LIMIT:
                try:
                    tree = ast.parse(self.source)
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    tree = ast.Module(body=[], type_ignores=[])
                for node in tree.body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self._defs[node.name] = node  # a later definition replaces an earlier one, as at run time
                lines = self.source.splitlines(keepends=True)
                linecache.cache[FILENAME] = (len(self.source), None, lines, FILENAME)
        return self._defs

    def code(self, name: str):
        if self._codes is None:
            self._codes = {}
            if self.defs():
                try:
                    module = compile(self.source, FILENAME, "exec", dont_inherit=True)
                except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
                    module = None
                for const in module.co_consts if module is not None else ():
                    if isinstance(const, types.CodeType):
                        self._codes[const.co_name] = const
        return self._codes.get(name)

    def doc(self, name: str):
        node = self.defs().get(name)
        return ast.get_docstring(node, clean=False) if node is not None else None

    def shadow(self, name: str):
        """A function that inspect.getsource can read (real file name and first line), and that runs nothing."""
        code = self.code(name)
        if code is None:
            return None
        fake = _shadow.__code__.replace(co_filename=FILENAME, co_firstlineno=code.co_firstlineno, co_name=name,
                                        co_qualname=name)
        fn = types.FunctionType(fake, {"__builtins__": {}}, name)
        fn.__doc__ = self.doc(name)
        return fn

    def signature(self, name: str):
        node = self.defs().get(name)
        if node is None:
            return None
        a = node.args
        P = inspect.Parameter
        params = []
        positional = [*a.posonlyargs, *a.args]
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        for i, (arg, default) in enumerate(zip(positional, defaults)):
            kind = P.POSITIONAL_ONLY if i < len(a.posonlyargs) else P.POSITIONAL_OR_KEYWORD
            params.append(P(arg.arg, kind, default=_value(default), annotation=_annotation(arg.annotation)))
        if a.vararg:
            params.append(P(a.vararg.arg, P.VAR_POSITIONAL, annotation=_annotation(a.vararg.annotation)))
        for arg, default in zip(a.kwonlyargs, a.kw_defaults):
            params.append(P(arg.arg, P.KEYWORD_ONLY, default=_value(default), annotation=_annotation(arg.annotation)))
        if a.kwarg:
            params.append(P(a.kwarg.arg, P.VAR_KEYWORD, annotation=_annotation(a.kwarg.annotation)))
        try:
            return inspect.Signature(params, return_annotation=_annotation(node.returns))
        except ValueError:
            return None

    def defaults(self, name: str):
        sig = self.signature(name)
        if sig is None:
            return None
        values = tuple(p.default for p in sig.parameters.values()
                       if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty)
        return values or None


def _value(node):
    if node is None:
        return inspect.Parameter.empty
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return Unparsed(ast.unparse(node))


def _annotation(node):
    if node is None:
        return inspect.Signature.empty
    if isinstance(node, ast.Name) and isinstance(getattr(builtins, node.id, None), type):
        return getattr(builtins, node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ast.unparse(node)
