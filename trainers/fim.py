"""Fill-in-the-middle (Bavarian et al. 2022): a document cut at two random characters into prefix, middle and
suffix, and reordered so a left-to-right model learns to write the middle from both sides.

PSM: <pre> prefix <suf> suffix <mid> middle
SPM: <pre> <suf> suffix <mid> prefix middle   (the variant StarCoder trains; prefix runs straight into middle)
"""

from __future__ import annotations

import random

from codealign.config import SftConfig


def sentinel_ids(tokenizer, tokens: list[str]) -> list[int]:
    """The ids of the prefix, suffix and middle sentinels; each must be one token the tokenizer knows."""
    ids = []
    for tok in tokens:
        encoded = tokenizer(tok, add_special_tokens=False)["input_ids"]
        known = tokenizer.convert_tokens_to_ids(tok)
        if len(encoded) != 1 or known in (None, tokenizer.unk_token_id) or encoded[0] != known:
            raise ValueError(
                f"train.sft.fim_tokens: {tok!r} is not a single token of this tokenizer; pick sentinels it has "
                "(adding tokens would change the vocabulary the generators serve)"
            )
        ids.append(known)
    return ids


def fim_token_ids(tokenizer, text: str, rng: random.Random, cfg: SftConfig,
                  sentinels: list[int]) -> tuple[list[int], str]:
    """Token ids of `text`, FIM-transformed with probability cfg.fim_rate; returns (ids, "psm"|"spm"|"plain")."""

    def enc(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    if len(text) < 3 or rng.random() >= cfg.fim_rate:
        return enc(text), "plain"
    a, b = sorted(rng.sample(range(len(text) + 1), 2))
    prefix, middle, suffix = text[:a], text[a:b], text[b:]
    pre, suf, mid = sentinels
    if rng.random() < cfg.fim_spm_rate:
        return [pre, suf] + enc(suffix) + [mid] + enc(prefix) + enc(middle), "spm"
    return [pre] + enc(prefix) + [suf] + enc(suffix) + [mid] + enc(middle), "psm"


def text_blocks(tokenizer, text: str, budget: int) -> list[str]:
    """`text` cut into consecutive pieces of at most about `budget` tokens, at line ends where it can be (a longer
    line is cut by characters), so FIM can be applied per training block: prefix, middle and suffix then land in
    the same block."""

    def count(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])

    blocks: list[str] = []
    current, used = "", 0
    for line in text.splitlines(keepends=True):
        n = count(line)
        if used + n > budget and current:
            blocks.append(current)
            current, used = "", 0
        while n > budget:  # one line longer than a block: cut it by characters
            cut = max(1, len(line) * budget // n)
            while cut > 1 and count(line[:cut]) > budget:
                cut //= 2
            blocks.append(line[:cut])
            line = line[cut:]
            n = count(line)
        current, used = current + line, used + n
    if current:
        blocks.append(current)
    return blocks
