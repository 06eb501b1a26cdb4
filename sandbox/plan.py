"""How a run's tests reach the solution, decided from the two sources alone, in the judge, before any of the
solution's code has run: a solution cannot steer it by what it does at run time.

- every name the tests use that the solution binds only with `def` (or `name = lambda ...`) becomes a proxy that
  calls into the solution's process with plain values; a name bound only by `import m` is the module `m`;
- if the tests use any other name of the solution (a class, a constant, an imported name, anything bound by an
  assignment whose value is not known before it runs), they cannot be judged apart from it: the run is
  "in_process", which the result says and which a sandbox configured with `in_process="refuse"` does not run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field


@dataclass
class Plan:
    mode: str  # "split" | "in_process"
    names: dict[str, str] = field(default_factory=dict)  # name -> "function" | "module:<dotted name>"
    reason: str = ""


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
    """`tests_free`: the names the tests use without binding them (sandbox.judge.free_names)."""
    bound = solution_bindings(solution_tree)
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(solution_tree)):
        star = "the solution imports with *, so the names it binds are not known before it runs"
        if any(name not in bound for name in tests_free):
            return Plan("in_process", reason=star)
    names = {}
    for name in sorted(tests_free & set(bound)):
        kind = bound[name]
        if kind == "other":
            return Plan("in_process", reason=f"the tests use {name!r}, which the solution does not bind with def")
        names[name] = kind
    return Plan("split", names)
