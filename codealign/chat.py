"""One prompt format shared by the generators and the learner, so both see the same token ids."""

from __future__ import annotations


def format_prompt(tokenizer, prompt: str, chat: bool = True) -> str:
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt


def prompt_token_ids(tokenizer, prompt: str, chat: bool = True) -> list[int]:
    text = format_prompt(tokenizer, prompt, chat)
    # The chat template already carries the special tokens it wants.
    return tokenizer(text, add_special_tokens=not chat)["input_ids"]
