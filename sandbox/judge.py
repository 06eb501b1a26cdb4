"""The judge's test runner: every function of the solution the tests use is a proxy (`rpc.RemoteFunction`) that
sends its arguments to the solution's process as data and gets data back, so the expected values never exist where
model code runs, and what is compared is rebuilt from data alone, as a type the judge trusts. The judge's process
(a fresh one per run) is sandbox.judge_process."""

import ast
import functools

from sandbox import proxies, rpc
from sandbox.proxies import Unsupported
from sandbox.solution_side import DETAIL_MAX, describe


def free_names(tree) -> frozenset[str]:
    """Names the tests read that their own top level does not define or import. A name bound only inside a
    function (a local with the solution function's name) still counts: elsewhere it means the solution's."""
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(used - bound)


@functools.lru_cache(maxsize=512)
def compile_tests(tests: str):
    """(code, names the tests use but do not bind): the same tests come back for every sample of an exercise."""
    tree = ast.parse(tests)
    return compile(tree, "<tests>", "exec"), free_names(tree)


def run_split(tests: str, static: dict, first: dict, session: rpc.Session, ns: dict, star: bool = False) -> dict:
    """`static`: how the solution binds each name, from its source (sandbox.plan); `first`: its hello message."""
    try:
        code, free = compile_tests(tests)
    except (SyntaxError, ValueError) as exc:
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc)}
    try:
        proxies.fill_namespace(ns, session, static, first.get("names", {}), free, star)
        exec(code, ns)
    except (Unsupported, rpc.CannotCross) as exc:
        return {"verdict": "retry", "detail": str(exc)}
    except AssertionError as exc:
        return {"verdict": "failed", "detail": describe(exc) if str(exc) else "AssertionError"}
    except rpc.NotPlainResult as exc:
        return {"verdict": "failed", "detail": str(exc)[:DETAIL_MAX]}
    except rpc.ChannelClosed as exc:
        return {"verdict": "runtime_error", "detail": str(exc)[:DETAIL_MAX], "died": True}
    except rpc.RemoteError as exc:
        return {"verdict": "runtime_error", "detail": str(exc)[:DETAIL_MAX]}
    except OSError as exc:
        # Only the tests' own writes: an OSError the solution raised (and the tests let through) is its error,
        # not a reason to leave the split path.
        if proxies.writes_files(exc) and not session.is_remote(exc):
            return {"verdict": "retry", "detail": "the tests write files: " + describe(exc)}
        return {"verdict": "runtime_error", "detail": describe(exc)}
    except Exception as exc:
        return {"verdict": "runtime_error", "detail": describe(exc)}
    return {"verdict": "passed", "detail": ""}
