"""Inference-time reranking of sampled solutions, without the hidden tests.

- CodeT (Chen et al., 2022; dual execution agreement): the model also writes test cases; every solution runs
  against every generated test in the executor pool; solutions that pass exactly the same generated tests form a
  consensus set, scored sqrt(#solutions) x #tests passed (the scoring of CodeT's released code); the pick is a
  solution of the best set.
- AlphaCode-style clustering (Li et al., 2022): the calls in the generated tests are the inputs; every solution runs
  on all of them; solutions with identical outputs form a cluster; the pick comes from the largest cluster.

The test-writing prompt shows the task's text with every line of its hidden tests removed, and the function's
signature as the model's own solutions spell it; the hidden tests only judge the pick afterwards.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from codealign.evaluation.harness import Execute, Generate
from codealign.evaluation.prompts import entry_point_of
from codealign.exercises.extract import extract_code
from codealign.records import Exercise

METHODS = ("none", "codet", "cluster")
FINGERPRINT = "OUTPUTS:"
_MBPP_TASK = re.compile(r"here is your task:\s*(.*?)\s*Your code should pass these tests", re.DOTALL)


def task_text(ex: Exercise) -> str:
    """The task as the test writer may see it: no line of the hidden tests, and MBPP's prompt without its asserts."""
    m = _MBPP_TASK.search(ex.prompt)
    text = m.group(1) if m else ex.prompt
    hidden = {line.strip() for line in ex.tests.splitlines() if line.strip()}
    return "\n".join(line for line in text.splitlines() if line.strip() not in hidden).strip()


def signature(name: str, solutions: Sequence[str]) -> str:
    """The most common `def name(...)` line among the model's own solutions ('' if none defines it)."""
    found = re.findall(rf"^\s*def\s+{re.escape(name)}\s*\(.*?\)\s*(?:->[^:]*)?:", "\n".join(solutions), re.MULTILINE)
    return Counter(s.strip() for s in found).most_common(1)[0][0] if found else ""


def prompt_for_tests(ex: Exercise, name: str, sig: str, m: int) -> str:
    """CodeT's test-writing prompt: a completion (no chat template) of the task as code, a stub body, and the
    start of the first assert, so that every sample is asserts calling `name` (the chat form, asking for asserts in
    a reply, gave 0.15 parseable asserts per MBPP task from SmolLM2-135M). `m` is how many the caller keeps."""
    if ex.stub and re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", ex.stub, re.MULTILINE):
        head = ex.stub.rstrip() + "\n    pass\n"  # HumanEval: the stub (signature and docstring) is the task
    else:
        text = task_text(ex)
        comment = "\n".join(f"# {line}".rstrip() for line in text.splitlines())
        head = f"{comment}\n{sig or f'def {name}(*args):'}\n    pass\n"
    return f"{head}\n\n# check the correctness of {name}\nassert {name}("


def parse_asserts(text: str, name: str) -> list[str]:
    """The assert statements of an answer that call `name`, normalised (one per line, deduplicated, in order)."""
    out: list[str] = []
    for line in extract_code(text).splitlines():
        line = line.strip()
        if not line.startswith("assert"):
            continue
        try:
            node = ast.parse(line).body[0]
        except (SyntaxError, IndexError):
            continue
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id == name]
        if isinstance(node, ast.Assert) and calls:
            src = ast.unparse(node)
            if src not in out:
                out.append(src)
    return out


def call_inputs(tests: Sequence[str], name: str) -> list[str]:
    """The calls of `name` in generated asserts: the inputs clustering runs every solution on."""
    out: list[str] = []
    for src in tests:
        for n in ast.walk(ast.parse(src)):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name:
                call = ast.unparse(n)
                if call not in out:
                    out.append(call)
    return out


def generate_tests(generate: Generate, tasks: Sequence[Exercise], solutions: Sequence[Sequence[str]], m: int,
                   samples: int, temperature: float, max_tokens: int, seed: int = 0) -> list[list[str]]:
    """Up to m distinct generated asserts per task, from `samples` answers to the test-writing prompt."""
    from codealign.records import GenerationRequest

    names = [entry_point_of(ex) for ex in tasks]
    requests = [GenerationRequest(prompt_for_tests(ex, name, signature(name, sols), m), n=samples,
                                  temperature=temperature, top_p=0.95, max_tokens=max_tokens, seed=seed,
                                  chat=False, stop=["\ndef ", "\nclass ", "\nif __name__"], request_id=ex.id)
                for ex, name, sols in zip(tasks, names, solutions)]
    out = []
    for name, comps in zip(names, generate(requests)):
        tests: list[str] = []
        for c in comps:
            # the prompt ends with the first assert's opening; the sample continues it and writes more
            for t in parse_asserts(f"assert {name}(" + c.text, name) if name else []:
                if t not in tests and len(tests) < m:
                    tests.append(t)
        out.append(tests)
    return out


@dataclass
class Pick:
    index: int  # the chosen sample
    score: float  # CodeT: the best consensus set's score; cluster: the largest cluster's size
    group: int  # size of the consensus set or cluster it came from
    groups: int  # how many sets or clusters there were


def codet_pick(passed: Sequence[Sequence[bool]]) -> Pick:
    """passed[i][j]: solution i passes generated test j. Consensus sets are the solutions passing the same tests;
    score sqrt(|solutions|) * |tests|; ties go to the set whose first solution comes first. With no test passed by
    anyone (or no tests), every score is 0 and the first sample is the pick."""
    sets: dict[frozenset[int], list[int]] = {}
    for i, row in enumerate(passed):
        sets.setdefault(frozenset(j for j, ok in enumerate(row) if ok), []).append(i)
    best_key = max(sets, key=lambda key: (math.sqrt(len(sets[key])) * len(key), -sets[key][0]))
    best_score = math.sqrt(len(sets[best_key])) * len(best_key)
    if best_score == 0:
        return Pick(0, 0.0, len(sets.get(frozenset(), [])), len(sets))
    return Pick(sets[best_key][0], best_score, len(sets[best_key]), len(sets))


def cluster_pick(fingerprints: Sequence[str | None]) -> Pick:
    """Solutions with the same outputs on every input form a cluster; the pick is the first member of the largest
    one (ties: the cluster seen first). Solutions without outputs (did not load, timed out) are in no cluster."""
    clusters: dict[str, list[int]] = {}
    for i, fp in enumerate(fingerprints):
        if fp is not None:
            clusters.setdefault(fp, []).append(i)
    if not clusters:
        return Pick(0, 0.0, 0, 0)
    best = max(clusters.values(), key=lambda members: (len(members), -members[0]))
    return Pick(best[0], float(len(best)), len(best), len(clusters))


def fingerprint_tests(name: str, inputs: Sequence[str]) -> str:
    """Tests that record the solution's output (or exception type) on every input and report a digest of them as
    the failure message; the judge calls the solution through plain values as usual."""
    lines = ["import hashlib as _hashlib", "_outs = []"]
    for call in inputs:
        lines += ["try:", f"    _outs.append(repr({call}))", "except Exception as _exc:",
                  "    _outs.append('!' + type(_exc).__name__)"]
    lines.append(f"assert False, {FINGERPRINT!r} + _hashlib.sha256('\\x00'.join(_outs).encode()).hexdigest()")
    return "\n".join(lines) + "\n"


def fingerprint_of(verdict: str, detail: str) -> str | None:
    at = detail.find(FINGERPRINT)
    return detail[at + len(FINGERPRINT):].strip() if verdict == "failed" and at >= 0 else None


def rerank(method: str, tasks: Sequence[Exercise], programs: Sequence[Sequence[str]],
           tests: Sequence[Sequence[str]], execute: Execute) -> list[Pick]:
    """One pick per task. All executions of all tasks go to the executor pool in one call, so they spread over it."""
    if method not in METHODS or method == "none":
        raise ValueError(f"--rerank: unknown method {method!r}; choose codet or cluster")
    jobs: list[tuple[str, str]] = []
    shape = []
    for ex, progs, ts in zip(tasks, programs, tests):
        name = entry_point_of(ex)
        if method == "codet":
            jobs += [(p, t + "\n") for p in progs for t in ts]
            shape.append((len(progs), len(ts)))
        else:
            inputs = call_inputs(ts, name)
            check = fingerprint_tests(name, inputs) if inputs else ""
            jobs += [(p, check) for p in progs] if inputs else []
            shape.append((len(progs), 1 if inputs else 0))
    unique = list(dict.fromkeys(jobs))  # equal samples (common at low temperature) run once
    by_job = dict(zip(unique, execute(unique)))
    results = [by_job[job] for job in jobs]
    picks, at = [], 0
    for n_progs, n_tests in shape:
        block = results[at: at + n_progs * n_tests]
        at += n_progs * n_tests
        if method == "codet":
            matrix = [[block[i * n_tests + j].verdict.value == "passed" for j in range(n_tests)]
                      for i in range(n_progs)]
            picks.append(codet_pick(matrix))
        else:
            prints = [fingerprint_of(r.verdict.value, r.detail) for r in block] if n_tests else [None] * n_progs
            picks.append(cluster_pick(prints))
    return picks
