"""Prompt and answer token ids as the chat template renders a whole exchange (what TRL trains on).

The answer's ids are the template's rendering of the assistant turn after the prompt, so training teaches the
end-of-turn token (and whatever the template puts after it) that generation stops at, rather than a bare
`eos_token_id` appended to the answer. Without a chat template: the raw text and the eos token.
"""

from __future__ import annotations

from codealign.chat import format_prompt, prompt_token_ids


def answer_token_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids); the loss goes on the answer ids only (the prompt is masked)."""
    prompt_ids = prompt_token_ids(tokenizer, prompt)
    if not getattr(tokenizer, "chat_template", None):
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return prompt_ids, tokenizer(answer, add_special_tokens=False)["input_ids"] + eos
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_text = format_prompt(tokenizer, prompt)
    if not full.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently inside a whole exchange; "
                         "cannot tell the answer's tokens from the prompt's")
    return prompt_ids, tokenizer(full[len(prompt_text):], add_special_tokens=False)["input_ids"]
