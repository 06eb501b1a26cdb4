"""The judge's test runner: every function of the solution the tests use is a proxy (`remote.RemoteFunction`) that
sends its arguments to the solution's process as data and gets data back, so the expected values never exist where
model code runs, and what is compared is rebuilt from data alone, as a type the judge trusts. The judge's process
(a fresh one per run) is sandbox.judge_process."""

import ast
import functools

from codealign.sandbox import judge_signals, proxies, rpc
from codealign.sandbox.solution_side import DETAIL_MAX, describe


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


def run_split(tests: str, how, first: dict, session: rpc.Session, ns: dict) -> dict:
    """`how`: what the solution's source binds, imports and declares (sandbox.plan.Plan); `first`: its hello
    message, plain data the judge checks against `how`."""
    try:
        code, free = compile_tests(tests)
    except (SyntaxError, ValueError) as exc:
        return {"verdict": "runtime_error", "detail": "tests do not compile: " + describe(exc)}
    try:
        proxies.fill_namespace(ns, session, how, first.get("names", {}), free)
        exec(code, ns)
        result = {"verdict": "passed", "detail": ""}
    except judge_signals.JudgeSignal as exc:
        if not any(exc is s for s in session.signals):
            session.signals.append(exc)
        result = {}
    except SystemExit as exc:
        result = exit_status(exc, session)
    except AssertionError as exc:
        result = {"verdict": "failed", "detail": describe(exc) if str(exc) else "AssertionError"}
    except OSError as exc:
        # Only the tests' own writes: an OSError the solution raised (and the tests let through) is its error,
        # not a reason to leave the split path.
        if proxies.writes_files(exc) and not session.is_remote(exc):
            result = {"verdict": "retry", "detail": "the tests write files: " + describe(exc)}
        else:
            result = {"verdict": "runtime_error", "detail": describe(exc)}
    except Exception as exc:
        result = {"verdict": "runtime_error", "detail": describe(exc)}
    if session.signals:  # raised by the judge in this run, whether or not the tests caught it
        return signal_verdict(session.signals[0])
    return result


def exit_status(exc: SystemExit, session: rpc.Session) -> dict:
    """sys.exit(), unittest.main(): the tests are judged by their exit status, as under plain Python. The
    solution exiting during a call is not a pass, whatever its status (its SystemExit reached the tests as
    itself, for those that expect it, and they let it through)."""
    if session.is_remote(exc):
        return {"verdict": "runtime_error", "detail": f"the solution exited during a call: {describe(exc)}"}
    code = exc.code
    if code is None or code is False or code == 0:
        return {"verdict": "passed", "detail": ""}
    return {"verdict": "failed", "detail": f"the tests exited with status {code!r}"}


def signal_verdict(sig: judge_signals.JudgeSignal) -> dict:
    detail = str(sig)[:DETAIL_MAX]
    if isinstance(sig, judge_signals.NotPlainResult):
        detail = ("cannot judge: " + detail)[:DETAIL_MAX]
    result = {"verdict": sig.verdict, "detail": detail}
    if isinstance(sig, judge_signals.ChannelClosed):
        result["died"] = True
    return result
