"""The trained policy's own log-probs on fixed sequences: the reference the served model is measured against.

"The trained model" is what the learner optimises: its fp32 parameters (the fp32 master weights in full
fine-tuning; the fp32 LoRA adapter over the checkpoint's base weights), computed here in fp32, without the
training-time bf16 autocast. pipeline/serving.py compares the generators' log-probs on the same tokens with it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from codealign.trainers.modeling import ADAPTER_DIR


def load_trained(model_path: str, checkpoint_dir: str | Path | None):
    """The policy a round checkpoint describes, in fp32 (the base model when `checkpoint_dir` is None)."""
    from transformers import AutoModelForCausalLM

    from codealign.trainers.steps import load_params
    from codealign.trainers.trainee import FULL_WEIGHTS_FILE

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir)
        if (ckpt / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(ckpt / ADAPTER_DIR))
        elif (ckpt / FULL_WEIGHTS_FILE).is_file():
            load_params(model, torch.load(ckpt / FULL_WEIGHTS_FILE, map_location="cpu"), str(ckpt))
        else:
            raise FileNotFoundError(f"{ckpt}: neither an adapter nor full weights to load the trained policy from")
    return model.eval()


@torch.no_grad()
def sequence_logprobs(model, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
    """log p(token i | tokens < i) for i from each sequence's prompt length on."""
    out = []
    for seq, start in zip(sequences, prompt_lens):
        ids = torch.tensor([seq])
        logits = model(input_ids=ids).logits[0, start - 1 : -1].float()
        out.append(logits.log_softmax(-1).gather(-1, ids[0, start:, None])[:, 0].tolist())
    return out


def trained_logprobs(model_path: str, checkpoint_dir: str | Path | None, sequences: list[list[int]],
                     prompt_lens: list[int]) -> list[list[float]]:
    return sequence_logprobs(load_trained(model_path, checkpoint_dir), sequences, prompt_lens)
