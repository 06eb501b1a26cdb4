"""Perplexity of a model on a held-out corpus of code files: how well it has adapted to a codebase (seed 001).

Every file is tokenized on its own (BOS first where the tokenizer has one) and cut into windows of `window`
tokens; each window is scored on its own, so every token but a window's first is predicted from what precedes it
in its window. Perplexity = exp(total negative log-likelihood / tokens predicted).
"""

from __future__ import annotations

import math
from pathlib import Path


def corpus_files(directory: str | Path, pattern: str = "**/*.py") -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"--perplexity: {root} is not a directory")
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"--perplexity: no files matching {pattern!r} under {root}")
    return files


def corpus_perplexity(model_path: str, directory: str | Path, pattern: str = "**/*.py", window: int = 1024) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if window < 2:
        raise ValueError(f"--window: needs at least 2 tokens, got {window}")
    files = corpus_files(directory, pattern)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    total_nll, predicted = 0.0, 0
    for f in files:
        ids = tokenizer(f.read_text(errors="replace"), add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        for at in range(0, len(ids), window):
            chunk = ids[at: at + window]
            if len(chunk) < 2:
                continue
            x = torch.tensor([chunk])
            with torch.no_grad():
                out = model(input_ids=x, labels=x)
            total_nll += float(out.loss) * (len(chunk) - 1)
            predicted += len(chunk) - 1
    if not predicted:
        raise ValueError(f"--perplexity: the files under {directory} hold no tokens to predict")
    nll = total_nll / predicted
    return {"perplexity": math.exp(nll), "nll_per_token": nll, "tokens": predicted, "files": len(files)}
