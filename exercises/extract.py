"""Pull the program out of a model's answer, and find the function its tests call."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(text: str) -> str:
    """The longest fenced block if there is one (models often add a usage example in a second block),
    else the text itself."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if blocks:
        return max(blocks, key=len).strip("\n") + "\n"
    return text.strip("\n") + "\n"


def as_answer(code: str) -> str:
    """A reference solution written the way the model is asked to answer (for preference pairs)."""
    return f"```python\n{code.strip()}\n```"


def called_function(solution: str, asserts: Sequence[str]) -> str:
    """The first function `solution` defines at top level that one of `asserts` calls by name; "" if none.
    Raises SyntaxError where either does not parse."""
    defined = [n.name for n in ast.parse(solution).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    called = {n.func.id for a in asserts for n in ast.walk(ast.parse(a))
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return next((name for name in defined if name in called), "")
