"""Pull the program out of a model's answer."""

from __future__ import annotations

import re

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
