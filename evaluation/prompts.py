"""The two prompt formats an evaluation can use, and how a model's answer becomes the program that is judged.

- `chat`: the exercise's instruction prompt through the tokenizer's chat template; the program is the code
  extracted from the answer (`exercises.extract.extract_code`). For completion-style tasks (HumanEval) the stub
  comes first, so its imports and helper functions exist: an answer that defines the whole function redefines the
  stub's (whose body is only its docstring), an answer that is only a body continues it.
- `completion`: raw text, no chat template. A task with a stub (HumanEval) is continued from its stub, with the
  Codex stop sequences, and the program is stub + completion (as openai/human-eval builds it). A task without one
  (MBPP, exercise files) is shown as a module docstring holding the task, and the completion is the program.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from codealign.exercises.extract import extract_code
from codealign.records import Exercise, GenerationRequest

FORMATS = ("chat", "completion")
# openai/human-eval's Codex stop sequences: the function ends where the next top-level statement begins.
STUB_STOPS = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert "]
DOCSTRING_STOPS = ["\nassert ", "\nif __name__", "\nprint(", '\n"""', "\n```"]


@dataclass(frozen=True)
class PromptFormat:
    name: str

    def __post_init__(self):
        if self.name not in FORMATS:
            raise ValueError(f"--prompt: unknown format {self.name!r}; choose from {', '.join(FORMATS)}")

    def prompt_text(self, ex: Exercise) -> str:
        if self.name == "chat":
            return ex.prompt
        if ex.stub:
            return ex.stub
        return '"""\n' + ex.prompt.strip() + '\n"""\n\n'

    def request(self, ex: Exercise, n: int, temperature: float, max_tokens: int, seed: int = 0,
                top_p: float = 1.0) -> GenerationRequest:
        chat = self.name == "chat"
        stop = [] if chat else (STUB_STOPS if ex.stub else DOCSTRING_STOPS)
        return GenerationRequest(self.prompt_text(ex), n=n, temperature=temperature, top_p=top_p,
                                 max_tokens=max_tokens, stop=list(stop), seed=seed, chat=chat, request_id=ex.id)

    def code(self, ex: Exercise, text: str) -> str:
        """What the model wrote, as code (before the stub is put in front)."""
        if self.name == "completion":
            return text
        return extract_code(text)

    def program(self, ex: Exercise, text: str) -> str:
        """The whole program the tests run after."""
        code = self.code(ex, text)
        if not ex.stub:
            return code
        if self.name == "completion" or not defines(code, ex.entry_point):
            return ex.stub + code
        return ex.stub + "\n" + code


def defines(code: str, name: str) -> bool:
    """Whether `code` defines `name` at its top level (falls back to a regex when it does not parse)."""
    if not name:
        return False
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return re.search(rf"^(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def entry_point_of(ex: Exercise) -> str:
    """The function the tests call: the exercise's entry point, else the first function called in its asserts that
    is not a builtin (MBPP has no entry-point field)."""
    if ex.entry_point:
        return ex.entry_point
    try:
        tree = ast.parse(ex.tests)
    except SyntaxError:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            for sub in ast.walk(node.test):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and not hasattr(builtins,
                                                                                             sub.func.id):
                    return sub.func.id
    return ""
