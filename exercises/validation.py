"""Is an exercise sound? The failure modes of generated exercises, each with its own reason.

Cheap static checks first (the code parses, the reference returns something, the tests do not read stdin or
open sockets), then the sandbox: the reference against its own tests, more than once (nondeterministic tests),
and a stub whose every function body is `pass` (tests that cannot tell a solution from nothing). `run_jobs` is
any `(solution, tests)` batch runner: `ExecutorPool.run` across the cluster or `Sandbox.run_many` in-process.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from codealign.records import ExecutionResult, Exercise
from codealign.sandbox import Verdict

RunJobs = Callable[[list[tuple[str, str]]], list[ExecutionResult]]

# Every reason a validation can give, in the order they are checked.
REASONS = (
    "no_reference", "reference_broken_indentation", "reference_syntax_error", "tests_broken_indentation",
    "tests_syntax_error", "tests_read_stdin", "tests_need_network", "returns_nothing", "tests_hang",
    "missing_import", "missing_library", "reference_fails_tests", "nondeterministic_tests", "stub_passes",
    "no_candidate_passes",
)
NETWORK_MODULES = {"socket", "urllib", "urllib2", "urllib3", "requests", "http", "httpx", "aiohttp", "ftplib",
                   "smtplib", "telnetlib", "websocket", "websockets"}
COMMON_ALIASES = {"np", "pd", "plt", "defaultdict", "Counter", "deque", "reduce", "heapq"}
_MISSING_NAME = re.compile(r"NameError: name '(\w+)' is not defined")


@dataclass
class Validation:
    reason: str = ""  # empty: sound
    detail: str = ""
    reference: str = ""  # the solution that passed (the reference, or the first passing candidate)

    @property
    def ok(self) -> bool:
        return not self.reason


@dataclass
class ValidationReport:
    results: dict[str, Validation] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return dict(Counter(v.reason for v in self.results.values() if v.reason))


def _parse_error(code: str) -> SyntaxError | None:
    try:
        ast.parse(code)
    except SyntaxError as exc:  # IndentationError and TabError are SyntaxErrors
        return exc
    return None


def _reads_stdin(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "input":
            return True
        if isinstance(node, ast.Attribute) and node.attr in ("stdin", "__stdin__"):
            return True
    return False


def _needs_network(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in NETWORK_MODULES for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in NETWORK_MODULES:
            return True
    return False


def _compared_calls(tree: ast.AST) -> set[str]:
    """Functions whose result the tests compare with something other than None."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        if any(isinstance(s, ast.Constant) and s.value is None for s in sides):
            continue
        for side in sides:
            for sub in ast.walk(side):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                    out.add(sub.func.id)
    return out


def _returns_value(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            return True
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
    return False


def returns_nothing(reference: str, tests: str) -> str:
    """The name of a function of the reference that never returns a value although the tests compare its
    result, or ''."""
    ref_tree, test_tree = ast.parse(reference), ast.parse(tests)
    compared = _compared_calls(test_tree)
    for node in ref_tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in compared:
            if not _returns_value(node):
                return node.name
    return ""


def stub_of(reference: str) -> str:
    """The reference with every function body replaced by `pass`: the signatures stay, the work goes."""
    tree = ast.parse(reference)

    class Hollow(ast.NodeTransformer):
        def visit_FunctionDef(self, node):  # noqa: N802 - ast's naming
            node.body = [ast.Pass()]
            return node

        visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    return ast.unparse(Hollow().visit(tree)) + "\n"


def static_reason(ex: Exercise) -> Validation | None:
    if not ex.reference.strip():
        return None  # the caller decides: candidates may supply one
    err = _parse_error(ex.reference)
    if err is not None:
        kind = "reference_broken_indentation" if isinstance(err, IndentationError) else "reference_syntax_error"
        return Validation(kind, f"{type(err).__name__}: {err.msg} (line {err.lineno})")
    return None


def static_test_reason(ex: Exercise) -> Validation | None:
    err = _parse_error(ex.tests)
    if err is not None:
        kind = "tests_broken_indentation" if isinstance(err, IndentationError) else "tests_syntax_error"
        return Validation(kind, f"{type(err).__name__}: {err.msg} (line {err.lineno})")
    tree = ast.parse(ex.tests)
    if _reads_stdin(tree):
        return Validation("tests_read_stdin", "the tests call input() or read sys.stdin")
    if _needs_network(tree):
        return Validation("tests_need_network", "the tests import a network module")
    return None


def classify_failure(result: ExecutionResult) -> Validation:
    """Why the reference did not pass its tests, from the sandbox's verdict and detail."""
    detail = result.detail or ""
    if result.verdict is Verdict.TIMEOUT:
        return Validation("tests_hang", detail)
    if "EOFError" in detail or "stdin" in detail:
        return Validation("tests_read_stdin", detail)
    if "Network is unreachable" in detail or "ConnectionError" in detail or "gaierror" in detail:
        return Validation("tests_need_network", detail)
    if "ModuleNotFoundError" in detail or "ImportError" in detail:
        return Validation("missing_library", detail)
    missing = _MISSING_NAME.search(detail)
    if missing and (missing.group(1) in sys.stdlib_module_names or missing.group(1) in COMMON_ALIASES):
        return Validation("missing_import", detail)
    if "IndentationError" in detail or "TabError" in detail:
        return Validation("tests_broken_indentation", detail)
    if result.verdict is Verdict.SYNTAX_ERROR:
        return Validation("reference_syntax_error", detail)
    return Validation("reference_fails_tests", f"{result.verdict.value}: {detail}")


def validate(exercises: Sequence[Exercise], run_jobs: RunJobs, repeats: int = 2,
             candidates: dict[str, list[str]] | None = None) -> ValidationReport:
    """One `Validation` per exercise id. An exercise without a reference is sound only if one of its
    `candidates` (e.g. the oracle's many solutions) passes; that candidate becomes its reference."""
    report = ValidationReport()
    candidates = candidates or {}
    pending: list[Exercise] = []
    for ex in exercises:
        found = static_test_reason(ex) or static_reason(ex)
        if found is None and not ex.reference.strip() and not candidates.get(ex.id):
            found = Validation("no_reference", "no reference solution and no candidate")
        if found is None and ex.reference.strip():
            name = returns_nothing(ex.reference, ex.tests)
            if name:
                found = Validation("returns_nothing", f"{name}() never returns a value; the tests compare it")
        if found is not None:
            report.results[ex.id] = found
        else:
            pending.append(ex)

    # Candidates (no reference): the first that passes becomes the reference.
    need_pick = [ex for ex in pending if not ex.reference.strip()]
    jobs = [(code, ex.tests) for ex in need_pick for code in candidates[ex.id]]
    results = iter(run_jobs(jobs))
    chosen: dict[str, str] = {ex.id: ex.reference for ex in pending if ex.reference.strip()}
    for ex in need_pick:
        outcomes = [(code, next(results)) for code in candidates[ex.id]]
        passing = [code for code, r in outcomes if r.verdict is Verdict.PASSED]
        if passing:
            chosen[ex.id] = passing[0]
        else:  # say why the oracle's own solution (the first) failed, where that is more than "it failed"
            report.results[ex.id] = _none_passed(ex, candidates[ex.id][0], outcomes[0][1], len(outcomes))
    pending = [ex for ex in pending if ex.id in chosen]

    # The reference against its own tests, `repeats` times, and the hollow stub once.
    jobs = []
    for ex in pending:
        jobs += [(chosen[ex.id], ex.tests)] * repeats
        jobs.append((_safe_stub(chosen[ex.id]), ex.tests))
    results = iter(run_jobs(jobs))
    for ex in pending:
        runs = [next(results) for _ in range(repeats)]
        stub = next(results)
        passed = [r.verdict is Verdict.PASSED for r in runs]
        if all(passed):
            if stub.verdict is Verdict.PASSED:
                report.results[ex.id] = Validation("stub_passes", "a stub whose functions only `pass` passes")
            else:
                report.results[ex.id] = Validation("", "", chosen[ex.id])
        elif any(passed):
            report.results[ex.id] = Validation("nondeterministic_tests",
                                               f"passed {sum(passed)} of {repeats} identical runs")
        else:
            report.results[ex.id] = classify_failure(runs[0])
    return report


def _none_passed(ex: Exercise, first: str, result: ExecutionResult, tried: int) -> Validation:
    try:
        name = returns_nothing(first, ex.tests)
    except SyntaxError:
        name = ""
    if name:
        return Validation("returns_nothing", f"{name}() never returns a value; the tests compare it")
    why = classify_failure(result)
    if why.reason in ("reference_fails_tests", "reference_syntax_error"):
        return Validation("no_candidate_passes", f"none of {tried} candidates passed; the first: {why.detail}")
    return why


def _safe_stub(reference: str) -> str:
    try:
        return stub_of(reference)
    except (SyntaxError, ValueError):
        return "pass\n"
