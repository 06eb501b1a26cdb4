"""What the generators serve after a round, and how faithfully it is the model the learner trained.

`send_policy`: with `generator.enable_lora` and a LoRA run, the round's adapter is hot-loaded unmerged (the engine
adds B·A·x to the bf16 base's output, so an update far below bf16's resolution still reaches the logits); otherwise
the merged full weights, written by the learner in the generators' `model.dtype` (bf16 merged weights round away an
update smaller than half a bf16 step, about 2e-3 relative; `model.dtype: float32` keeps it).

`ServingProbe`: a fixed probe set (the reference solutions of the first few training exercises, as chat answers)
scored once per round by the engine (teacher-forced log-probs) and by the trained policy itself in fp32
(`trainers.probe`). Reported per round:
- `serve/probe_abs_dlogprob` (mean) and `serve/probe_max_abs_dlogprob`: |engine − trained| per token, in nats;
- `serve/probe_gain_trained` and `serve/probe_gain_served`: the log-prob the probe answers gained over the base
  model (nats per answer) in the trained policy and in what is served; `serve/probe_gain_kept` is their ratio.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from codealign.chat import prompt_token_ids
from codealign.config import RunConfig
from codealign.exercises.extract import as_answer
from codealign.records import Exercise
from codealign.trainers.modeling import ADAPTER_DIR, MERGED_FILE
from codealign.trainers.probe import trained_logprobs
from codealign.weights import load_for_generators, to_numpy


def load_adapter(adapter_dir: Path) -> tuple[dict, dict]:
    """(adapter tensors as numpy, adapter config) from a PEFT adapter directory, for Generator.update_lora."""
    from safetensors.torch import load_file

    tensors = to_numpy(load_file(str(adapter_dir / "adapter_model.safetensors")))
    return tensors, json.loads((adapter_dir / "adapter_config.json").read_text())


def serves_adapter(cfg: RunConfig) -> bool:
    return cfg.generator.enable_lora and cfg.train.lora.enabled


def policy_for_generators(cfg: RunConfig, checkpoint_dir: Path):
    """What the generators are sent for a checkpoint: its LoRA adapter (`Adapter`, served unmerged) with
    `generator.enable_lora` on a LoRA run, else its merged weights. The one choice both schedules make."""
    from codealign.actors.generator_group import Adapter

    if serves_adapter(cfg):
        return Adapter(*load_adapter(Path(checkpoint_dir) / ADAPTER_DIR))
    return load_for_generators(Path(checkpoint_dir) / MERGED_FILE)


def served_as(cfg: RunConfig) -> str:
    return "adapter" if serves_adapter(cfg) else "merged"


def send_policy(generator, cfg: RunConfig, checkpoint_dir: Path, version: int) -> str:
    """Put a round's policy on the generators and wait; returns what was sent ("adapter" or "merged")."""
    policy = policy_for_generators(cfg, checkpoint_dir)
    if serves_adapter(cfg):
        generator.update_lora(policy, None, version)
    else:
        generator.update_weights(policy, version)
    return served_as(cfg)


def _per_answer(scores: list[list[float]]) -> list[float]:
    return [sum(s) for s in scores]


@dataclass
class ServingProbe:
    model_path: str
    sequences: list[list[int]]
    prompt_lens: list[int]
    base_engine: list[float] = field(default_factory=list)  # per-answer log-prob under the base model
    base_trained: list[float] = field(default_factory=list)

    @classmethod
    def build(cls, exercises: list[Exercise], model_path: str, size: int) -> ServingProbe | None:
        """The first `size` training exercises (by id) that have a reference solution; None when `size` is 0."""
        if size <= 0:
            return None
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path)
        chosen = sorted((ex for ex in exercises if ex.reference), key=lambda ex: ex.id)[:size]
        seqs, lens = [], []
        for ex in chosen:
            prompt = prompt_token_ids(tok, ex.prompt, chat=True)
            seqs.append(prompt + tok(as_answer(ex.reference), add_special_tokens=False)["input_ids"])
            lens.append(len(prompt))
        return cls(model_path, seqs, lens)

    def record_base(self, generator) -> None:
        self.base_engine = _per_answer(generator.score(self.sequences, self.prompt_lens))
        self.base_trained = _per_answer(trained_logprobs(self.model_path, None, self.sequences, self.prompt_lens))

    def measure(self, generator, checkpoint_dir: Path) -> dict[str, float]:
        served = generator.score(self.sequences, self.prompt_lens)
        trained = trained_logprobs(self.model_path, checkpoint_dir, self.sequences, self.prompt_lens)
        diffs = [abs(a - b) for sa, sb in zip(served, trained) for a, b in zip(sa, sb)]
        gain_served = statistics.fmean(s - b for s, b in zip(_per_answer(served), self.base_engine))
        gain_trained = statistics.fmean(t - b for t, b in zip(_per_answer(trained), self.base_trained))
        return {
            "serve/probe_tokens": len(diffs),
            "serve/probe_abs_dlogprob": statistics.fmean(diffs),
            "serve/probe_max_abs_dlogprob": max(diffs),
            "serve/probe_gain_trained": gain_trained,
            "serve/probe_gain_served": gain_served,
            "serve/probe_gain_kept": gain_served / gain_trained if abs(gain_trained) > 1e-9 else float("nan"),
        }
