"""How a run's tests reach the solution, decided from the two sources alone, in the judge, before any of the
solution's code has run: a solution cannot steer it by what it does at run time.

- every name the tests use that the solution binds only with `def` (or `name = lambda ...`) becomes a proxy that
  calls into the solution's process; a name bound only by `import m` is the module `m`; what the program later
  reports about these names (sandbox.solution_side.kind_of) is not consulted;
- a name it binds any other way (a class, a constant, an imported name...) is shown as the loaded program reports
  it, but only as data or as a class the judge builds itself (sandbox.proxies); one that cannot be shown so sends
  the tests beside the solution, through the server, which marks the run "in_process" (refused under
  `in_process="refuse"`). So the program chooses that path only by what its source binds, and never unmarked.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field

from codealign.sandbox import declared


@dataclass
class Plan:
    mode: str  # "split" | "in_process"
    names: dict[str, str] = field(default_factory=dict)  # name -> "function" | "module:<dotted name>" | "other"
    reason: str = ""
    star: bool = False  # the solution imports with *: names it binds are known only once it has run
    classes: dict = field(default_factory=dict)  # class key -> its shape as the source declares it
    tree: ast.Module | None = None  # the solution's, for what is only needed when the tests need it (below)

    @functools.cached_property
    def modules(self) -> frozenset[str]:
        """Every module its source imports: the judge imports no other."""
        return declared.imported_modules(self.tree) if self.tree is not None else frozenset()

    @functools.cached_property
    def pinned(self) -> frozenset[str]:
        """The functions the tests may introspect in the judge (sandbox.declared.pinned_functions)."""
        return declared.pinned_functions(self.tree, self.names) if self.tree is not None else frozenset()


def solution_bindings(tree: ast.Module) -> dict[str, str]:
    """Module-level names of the solution -> "function", "module:<name>" or "other" (anything else, or bound
    in more than one way)."""
    kinds: dict[str, set[str]] = {}

    def bind(name: str, kind: str) -> None:
        kinds.setdefault(name, set()).add(kind)

    def visit(stmts) -> None:
        for node in stmts:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bind(node.name, "function")
                for inner in ast.walk(node):  # `global x` in a function binds x at module level, at run time
                    if isinstance(inner, ast.Global):
                        for name in inner.names:
                            bind(name, "other")
            elif isinstance(node, ast.ClassDef):
                bind(node.name, "other")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        bind(alias.asname, "module:" + alias.name)
                    else:
                        bind(alias.name.split(".")[0], "module:" + alias.name.split(".")[0])
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda) and all(
                    isinstance(t, ast.Name) for t in node.targets):
                for target in node.targets:
                    bind(target.id, "function")
            else:
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Name) and not isinstance(inner.ctx, ast.Load):
                        bind(inner.id, "other")
                    elif isinstance(inner, (ast.Import, ast.ImportFrom)):
                        for alias in inner.names:
                            bind((alias.asname or alias.name).split(".")[0], "other")
                    elif isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        bind(inner.name, "other")
                    elif isinstance(inner, ast.Global):
                        for name in inner.names:
                            bind(name, "other")
                    elif isinstance(inner, ast.MatchAs) and inner.name:
                        bind(inner.name, "other")
                    elif isinstance(inner, ast.MatchStar) and inner.name:
                        bind(inner.name, "other")
                    elif isinstance(inner, ast.MatchMapping) and inner.rest:
                        bind(inner.rest, "other")
                    elif isinstance(inner, ast.ExceptHandler) and inner.name:
                        bind(inner.name, "other")
    visit(tree.body)
    return {name: next(iter(k)) if len(k) == 1 else "other" for name, k in kinds.items()}


def decide(tests_free: frozenset[str], solution_tree: ast.Module) -> Plan:
    """`tests_free`: the names the tests use without binding them (sandbox.judge.free_names). Every name the
    solution binds is in `names`: its functions are offered to tests that reach them by `eval` or `globals()`."""
    star = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)
               for n in ast.walk(solution_tree))
    names = solution_bindings(solution_tree)
    return Plan("split", names, star=star, classes=declared.declared_classes(solution_tree), tree=solution_tree)
