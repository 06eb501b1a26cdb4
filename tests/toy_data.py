"""Small data shared by the learner tests: a character tokenizer and two DPO pairs."""

from __future__ import annotations

from codealign.records import PreferencePair

PAIRS = [
    PreferencePair("Write add(a, b).", "```python\ndef add(a, b):\n    return a + b\n```",
                   "```python\ndef add(a, b):\n    return a - b\n```", "passed>failed", "t/1"),
    PreferencePair("Write neg(x).", "```python\ndef neg(x):\n    return -x\n```",
                   "```python\ndef neg(x):\n    return x\n```", "reference>failed", "t/2"),
] * 4


class ToyTokenizer:
    """Characters as tokens, sentinels as single ids: enough to read a FIM layout back."""

    unk_token_id = 0
    eos_token_id = None
    vocab = {"<pre>": 1, "<suf>": 2, "<mid>": 3}

    def __call__(self, text, add_special_tokens=False):
        if text in self.vocab:
            return {"input_ids": [self.vocab[text]]}
        return {"input_ids": [ord(c) for c in text]}

    def convert_tokens_to_ids(self, tok):
        return self.vocab.get(tok, 0)
