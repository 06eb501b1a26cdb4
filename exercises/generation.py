"""The oracle writes exercises (seeds 000/002 and Code Llama's self-instruct).

categories -> sub-categories (written by the oracle) -> exercises, each for a persona drawn at random -> a
function with docstring, several asserts, the entry point -> about `solutions_per_exercise` more solutions
(the validation keeps the first that passes). Also: harder variants of exercises the student failed.

The oracle is any `generate(list[GenerationRequest]) -> list[list[Completion]]` (a generator actor group with
role="oracle", `RemoteOracle`). Malformed answers are counted with their reason and never raise.
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from string import Template

from codealign.config import OracleConfig
from codealign.exercises.extract import called_function, extract_code
from codealign.exercises.validation import RunJobs, validate
from codealign.records import Completion, Exercise, GenerationRequest

Generate = Callable[[list[GenerationRequest]], list[list[Completion]]]
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)

EXERCISE_SCHEMA = {
    "type": "object",
    "properties": {
        "entry_point": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "description": {"type": "string"},
        "solution": {"type": "string"},
        "tests": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 8},
    },
    "required": ["entry_point", "description", "solution", "tests"],
    "additionalProperties": False,
}
SUBCATEGORY_SCHEMA = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 8}
# Failures a corrected solution can cure; the tests stay as written (they are the exercise's specification).
REPAIRABLE = ("reference_fails_tests", "no_candidate_passes", "returns_nothing", "missing_import")
HARDER_WAYS = ("handle more edge cases", "take an extra parameter that changes the result",
               "work on nested data", "return more information", "be efficient for large inputs")


def template(name: str) -> Template:
    return Template(resources.files("exercises").joinpath("prompts", f"{name}.txt").read_text())


@dataclass
class Draft:
    """A parsed oracle answer: enough to build an exercise once a solution is known to pass."""

    entry_point: str
    description: str
    solution: str
    tests: list[str]
    stub: str  # signature and docstring


@dataclass
class Generated:
    exercises: list[Exercise] = field(default_factory=list)
    candidates: dict[str, list[str]] = field(default_factory=dict)  # id -> solutions, the oracle's own first
    provenance: dict[str, dict] = field(default_factory=dict)
    malformed: Counter = field(default_factory=Counter)  # reason -> count
    requested: int = 0
    repair: Counter = field(default_factory=Counter)  # "asked": exercises sent back, "answers": usable answers
    tests_step: Counter = field(default_factory=Counter)  # "asked": functions without tests, "got_tests"

    def counts(self) -> dict:
        out = {"requested": self.requested, "parsed": len(self.exercises), "malformed": dict(self.malformed)}
        if self.tests_step:
            out["tests_step"] = dict(self.tests_step)
        return {**out, "repair": dict(self.repair)} if self.repair else out


# -- parsing --------------------------------------------------------------------------------------------------
class Malformed(ValueError):
    """An oracle answer that cannot be used; the message is the reason counted."""


def _assert_lines(text: str) -> list[str]:
    out = []
    for stmt in _statements(text):
        if isinstance(stmt, ast.Assert):
            out.append(ast.unparse(stmt))
    return out


def _statements(code: str) -> list[ast.stmt]:
    try:
        return ast.parse(code).body
    except SyntaxError:  # keep the assert lines that parse on their own
        out = []
        for line in code.splitlines():
            try:
                out += ast.parse(line.strip()).body
            except SyntaxError:
                continue
        return out


def _stub(solution: str, entry_point: str) -> str:
    """`def name(args):` and its docstring, no body: what the student completes."""
    for node in ast.parse(solution).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            doc = ast.get_docstring(node)
            head = ast.unparse(node).splitlines()[0]
            return head + (f'\n    """{doc}"""\n' if doc else "\n")
    raise Malformed("entry_point_not_defined")


def make_draft(entry_point: str, description: str, solution: str, tests: list[str], min_asserts: int = 2) -> Draft:
    """`min_asserts=0`: a function without tests yet (its entry point the first function defined), for the
    separate tests step."""
    try:
        ast.parse(solution)
    except SyntaxError as exc:
        raise Malformed("solution_syntax_error") from exc
    defined = [n.name for n in ast.parse(solution).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not defined:
        raise Malformed("no_function")
    asserts = [a for t in tests for a in _assert_lines(t)]
    if not entry_point:
        entry_point = called_function(solution, asserts)
        if not entry_point:  # no assert calls a function the answer defines: the tests are what is missing
            if min_asserts:
                raise Malformed("too_few_asserts")
            entry_point = defined[0]
    if entry_point not in defined:
        raise Malformed("entry_point_not_defined")
    asserts = [a for a in asserts if re.search(rf"\b{re.escape(entry_point)}\s*\(", a)]
    if len(asserts) < min_asserts:
        raise Malformed("too_few_asserts")
    return Draft(entry_point, " ".join(description.split()), solution.strip() + "\n", asserts,
                 _stub(solution, entry_point))


def parse_json_answer(text: str, min_asserts: int = 2) -> Draft:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise Malformed("not_json")
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise Malformed("not_json") from exc
    if not isinstance(obj, dict) or any(k not in obj for k in EXERCISE_SCHEMA["required"]):
        raise Malformed("schema_mismatch")
    tests = obj["tests"]
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise Malformed("schema_mismatch")
    if not all(isinstance(obj[k], str) for k in ("entry_point", "description", "solution")):
        raise Malformed("schema_mismatch")
    return make_draft(obj["entry_point"].strip(), obj["description"], extract_code(obj["solution"]), tests,
                      min_asserts)


def parse_blocks_answer(text: str, min_asserts: int = 2) -> Draft:
    blocks = [b for b in _FENCE.findall(text + ("```" if text.count("```") % 2 else "")) if b.strip()]
    if not blocks:
        raise Malformed("no_code_block")
    solution_blocks = [b for b in blocks if re.search(r"^\s*def\s+\w+", b, re.M)]
    if not solution_blocks:
        raise Malformed("no_function")
    solution = solution_blocks[0]
    # the tests: assert lines from every other block, or from the solution block's tail
    tests = [a for b in blocks if b is not solution for a in _assert_lines(b)]
    if not tests:
        tests = _assert_lines(solution)
        solution = "\n".join(line for line in solution.splitlines() if not line.lstrip().startswith("assert"))
    head = text.split("```", 1)[0]
    description = re.sub(r"^\s*(Task|Exercise|Description)\s*:\s*", "", head.strip(), flags=re.I)
    return make_draft("", description or "Implement the function.", solution, tests, min_asserts)


def parse_answer(text: str, answer_format: str, min_asserts: int = 2) -> Draft:
    if answer_format == "json":
        return parse_json_answer(text, min_asserts)
    return parse_blocks_answer(text, min_asserts)


def parse_list(text: str) -> list[str]:
    """Sub-categories: a JSON array, or one per line (bullets and numbers stripped)."""
    try:
        items = json.loads(text[text.find("[") : text.rfind("]") + 1])
        if isinstance(items, list):
            return [str(i).strip() for i in items if str(i).strip()]
    except (json.JSONDecodeError, ValueError):
        pass
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip(" \"'`") for line in text.splitlines()]
    return [line for line in lines if 2 < len(line) < 80 and not line.endswith(":")]


# -- prompts --------------------------------------------------------------------------------------------------
def student_prompt(draft: Draft, visible: int) -> str:
    return template("student").substitute(task=draft.description, stub=draft.stub,
                                          tests="\n".join(draft.tests[:visible]) + "\n")


def example_text(ex: Exercise, answer_format: str) -> str:
    """An exercise (MBPP train, or a failed one as a template) written the way the oracle is asked to answer."""
    task = ex.prompt.split("here is your task:", 1)[-1].split("Your code should pass", 1)[0]
    task = re.sub(r"```.*?```", "", task, flags=re.DOTALL).strip()  # a generated prompt's stub: not the task
    asserts = _assert_lines(ex.tests)[:3]
    if answer_format == "json":
        entry = next((n.name for n in _statements(ex.reference) if isinstance(n, ast.FunctionDef)), "")
        obj = {"entry_point": entry, "description": task, "solution": ex.reference.strip(), "tests": asserts}
        return template("example_json").substitute(json=json.dumps(obj))
    return template("example_blocks").substitute(task=task, solution=ex.reference.strip() + "\n",
                                                 tests="\n".join(asserts) + "\n")


def with_visible_tests(ex: Exercise, visible: int = 1) -> Exercise:
    """An MBPP exercise whose prompt shows only `visible` of its asserts; the tests keep all of them."""
    if "Your code should pass these tests:" not in ex.prompt:
        return ex
    head = ex.prompt.split("Your code should pass these tests:", 1)[0]
    shown = "\n".join(_assert_lines(ex.tests)[:visible])
    prompt = (f"{head}Your code should pass these tests (and hidden ones like them):\n\n{shown}\n"
              "Write the function in a single ```python code block.")
    return Exercise(ex.id, prompt, ex.tests, ex.entry_point, ex.source, ex.reference, ex.stub, ex.solve_rate)


# -- the oracle's rounds --------------------------------------------------------------------------------------
class ExerciseWriter:
    def __init__(self, generate: Generate, cfg: OracleConfig, few_shot_pool: Sequence[Exercise] = (),
                 seed: int = 0, model_name: str = ""):
        self.generate, self.cfg = generate, cfg
        self.pool = list(few_shot_pool)
        self.rng = random.Random(seed)
        self.model_name = model_name or cfg.model
        self.counter = 0

    def _request(self, prompt: str, n: int = 1, schema: dict | None = None, rid: str = "") -> GenerationRequest:
        use_schema = schema if (self.cfg.structured and self.cfg.answer_format == "json") else None
        return GenerationRequest(prompt, n=n, temperature=self.cfg.temperature, top_p=0.95,
                                 max_tokens=self.cfg.max_tokens, request_id=rid, json_schema=use_schema)

    def subcategories(self) -> list[tuple[str, str]]:
        hint = ("Answer with a JSON array of strings." if self.cfg.answer_format == "json"
                else "Answer with one sub-topic per line, nothing else.")
        reqs = [self._request(template("subcategories").substitute(
                    count=self.cfg.subcategories_per_category, category=c, format_hint=hint),
                    schema=SUBCATEGORY_SCHEMA, rid=c) for c in self.cfg.categories]
        out = []
        for cat, comps in zip(self.cfg.categories, self.generate(reqs)):
            subs = parse_list(comps[0].text)[: self.cfg.subcategories_per_category] if comps else []
            out += [(cat, s) for s in subs] or [(cat, cat)]  # a failed list still yields the category itself
        return out

    def _examples(self) -> str:
        shots = self.rng.sample(self.pool, min(self.cfg.few_shot, len(self.pool)))
        return "\n".join(f"Example:\n{example_text(e, self.cfg.answer_format)}" for e in shots)

    def _tests_step(self, untested: list[tuple[Draft, dict]], out: Generated) -> list[tuple[Draft, dict]]:
        """Self-instruct's order: a function the oracle wrote without (enough) asserts gets its tests from a
        request of their own, with an MBPP train assert as the example of the form; the first of 2 answers
        with at least 2 asserts calling the function counts. The asserts are checked later like any others."""
        if not untested:
            return []
        example_pool = [a for ex in self.pool[:50] for a in _assert_lines(ex.tests)[:1]] or [
            "assert add(2, 3) == 5"]
        reqs = [GenerationRequest(template("tests").substitute(task=d.description, solution=d.solution,
                                                               entry_point=d.entry_point,
                                                               example=self.rng.choice(example_pool)),
                                  n=2, temperature=self.cfg.temperature, top_p=0.95, max_tokens=self.cfg.max_tokens)
                for d, _ in untested]
        out.tests_step["asked"] += len(reqs)
        got = []
        for (d, meta), comps in zip(untested, self.generate(reqs)):
            for c in comps:
                asserts = [a for a in _assert_lines("\n".join(_FENCE.findall(c.text)) or c.text)
                           if re.search(rf"\b{re.escape(d.entry_point)}\s*\(", a)]
                if len(asserts) >= 2:
                    got.append((Draft(d.entry_point, d.description, d.solution, asserts, d.stub),
                                {**meta, "template": meta["template"] + "+tests"}))
                    break
            else:
                out.malformed["too_few_asserts"] += 1
        out.tests_step["got_tests"] += len(got)
        return got

    def write(self, round_: int = 0, templates: Sequence[Exercise] = (), count: int | None = None) -> Generated:
        """New exercises: from sub-categories, or (with `templates`) harder variants of those exercises.

        `count`: how many new exercises to ask for, the sub-categories taken in turn (the game's
        `oracle.exercises_per_round`); None: `exercises_per_subcategory` of each sub-category (generate-data)."""
        jobs: list[tuple[GenerationRequest, dict]] = []
        fmt = self.cfg.answer_format
        if templates:
            for ex in templates:
                how = self.rng.choice(HARDER_WAYS)
                prompt = template("harder_variant").substitute(example=example_text(ex, "blocks"), how=how)
                jobs.append((self._request(prompt), {"template": "harder_variant", "category": ex.id,
                                                     "persona": how}))
        elif count is None or count > 0:
            subs = self.subcategories()
            per_sub = [(cat, sub) for cat, sub in subs for _ in range(self.cfg.exercises_per_subcategory)]
            for cat, sub in per_sub if count is None else [subs[i % len(subs)] for i in range(count)]:
                persona = self.rng.choice(self.cfg.personas)
                prompt = template(f"exercise_{fmt}").substitute(
                    examples=self._examples(), subcategory=sub, category=cat, persona=persona)
                jobs.append((self._request(prompt, schema=EXERCISE_SCHEMA),
                             {"template": f"exercise_{fmt}", "category": f"{cat}/{sub}", "persona": persona}))
        out = Generated(requested=len(jobs))
        answers = self.generate([req for req, _ in jobs])
        drafts: list[tuple[Draft, dict]] = []
        untested: list[tuple[Draft, dict]] = []
        answer_fmt = "blocks" if templates else fmt
        for comps, (_, meta) in zip(answers, jobs):
            text = comps[0].text if comps else ""
            if comps and comps[0].finish_reason == "error":
                out.malformed["oracle_error"] += 1
                continue
            try:
                drafts.append((parse_answer(text, answer_fmt), meta))
            except Malformed as exc:
                if str(exc) == "too_few_asserts" and self.cfg.tests_step:
                    try:
                        untested.append((parse_answer(text, answer_fmt, min_asserts=0), meta))
                        continue
                    except Malformed as again:
                        exc = again
                out.malformed[str(exc)] += 1
        drafts += self._tests_step(untested, out)
        # self-instruct: more solutions per exercise; validation keeps the first that passes
        extra: list[list[Completion]] = [[] for _ in drafts]
        if self.cfg.solutions_per_exercise > 1 and drafts:
            reqs = [GenerationRequest(template("solution").substitute(task=d.description + "\n\n" + d.stub,
                                                                      tests="\n".join(d.tests[:2]) + "\n"),
                                      n=self.cfg.solutions_per_exercise - 1, temperature=max(0.6, self.cfg.temperature),
                                      top_p=0.95, max_tokens=self.cfg.max_tokens)
                    for d, _ in drafts]
            extra = self.generate(reqs)
        for (draft, meta), comps in zip(drafts, extra):
            ex_id = f"oracle/r{round_}/{self.counter}"
            self.counter += 1
            out.exercises.append(Exercise(ex_id, student_prompt(draft, self.cfg.visible_tests),
                                          "\n".join(draft.tests) + "\n", draft.entry_point, "oracle"))
            out.candidates[ex_id] = [draft.solution] + [extract_code(c.text) for c in comps if c.text.strip()]
            out.provenance[ex_id] = {"oracle_model": self.model_name, "round": round_,
                                     "visible_tests": "\n".join(draft.tests[: self.cfg.visible_tests]), **meta}
        return out

    def repair(self, gen: Generated, run_jobs: RunJobs, rounds: int = 1) -> Generated:
        """Send back, `rounds` times, each exercise none of whose solutions passes its tests (a REPAIRABLE
        reason): the oracle sees its solution, the tests and the error, and writes `solutions_per_exercise`
        corrected solutions, tried first by the validation that follows. The tests never change, so a repair can
        only make the solution meet the exercise as written; every filter still runs afterwards."""
        by_id = {ex.id: ex for ex in gen.exercises}
        for _ in range(rounds):
            report = validate(gen.exercises, run_jobs, repeats=1, candidates=gen.candidates)
            broken = [(ex_id, v) for ex_id, v in report.results.items()
                      if v.reason in REPAIRABLE and gen.candidates.get(ex_id)]
            if not broken:
                break
            reqs = [GenerationRequest(template("repair").substitute(
                        task=by_id[ex_id].prompt.split("here is your task:", 1)[-1].split("```", 1)[0].strip(),
                        solution=gen.candidates[ex_id][0].strip() + "\n", tests=by_id[ex_id].tests,
                        error=f"{v.reason}: {v.detail[:300]}"),
                        n=self.cfg.solutions_per_exercise, temperature=max(0.6, self.cfg.temperature), top_p=0.95,
                        max_tokens=self.cfg.max_tokens, request_id=f"repair:{ex_id}") for ex_id, v in broken]
            gen.repair["asked"] += len(reqs)
            for (ex_id, _), comps in zip(broken, self.generate(reqs)):
                fixes = [extract_code(c.text) for c in comps if c.text.strip() and c.finish_reason != "error"]
                gen.repair["answers"] += len(fixes)
                gen.candidates[ex_id] = fixes + gen.candidates[ex_id]
                gen.provenance.setdefault(ex_id, {})["repaired_from"] = gen.candidates[ex_id][len(fixes)][:2000]
        return gen
