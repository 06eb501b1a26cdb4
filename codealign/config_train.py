"""The `train` section: one model per algorithm (`train.algorithm` picks it), on a base of the options they share.

`TrainConfig(algorithm=..., ...)` builds the algorithm's own model (DpoTrain, PpoTrain, DistillTrain, SftTrain), so
code and tests keep one constructor. An option of another algorithm is refused in a recipe; read in code shared by
every algorithm (`cfg.train.critic` on a DPO run), it is that option's default: what the algorithm does without it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from codealign.config_base import OPTION_OWNERS, UNION_TAGS, ConfigError, Section, refuse, within

ALGORITHMS = ("dpo", "ppo", "distill", "sft")


class LoraConfig(Section):
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LossGuardConfig(Section):
    """Skip a micro-batch whose loss is above `malformed` (broken data), scale one above `spike` down by
    `spike_scale`; both counted in the metrics. 0 turns a threshold off."""

    malformed: float = 0.0
    spike: float = 0.0
    spike_scale: float = 0.1
    relative: bool = False
    """The thresholds are multiples of the mean of the last `window` accepted losses (the seed's guard), not
    absolute losses; a micro-batch is judged once `window` losses are in."""
    window: int = Field(8, ge=1)

    def check(self) -> None:
        if self.spike and self.malformed and self.spike >= self.malformed:
            refuse("spike", "must be below train.loss_guard.malformed")


class DistillConfig(Section):
    teacher: str = ""
    """The teacher (a model path or embedded:<name>); logit distillation needs one, with the student's tokenizer."""
    mode: Literal["logit", "sequence"] = "logit"
    """logit: the teacher's token distributions; sequence: SFT on verified solutions."""
    divergence: Literal["forward", "reverse", "jsd"] = "forward"
    """forward KL(teacher||student), reverse KL(student||teacher), or GKD's jsd."""
    jsd_beta: within(0, 1) = 0.5
    temperature: float = Field(1.0, gt=0)
    sequences: Literal["student", "oracle"] = "student"
    """Distil on the student's own samples (on-policy, GKD) or on the oracle's solutions."""


class SftConfig(Section):
    corpus_dir: str = ""
    """Continued pre-training: every file matching `glob` under it; empty trains on the loop's verified solutions
    instead (prompt -> solution, loss on the solution only)."""
    data_file: str = ""
    """Or a JSONL file of chat turns to imitate, one {"prompt": ..., "completion": ...} per line (what
    `generate-data --backtranslate` writes as sft.jsonl): the same examples every round, loss on the completion."""
    glob: str = "**/*.py"
    max_documents: int = 0
    """0: all."""
    fim_rate: within(0, 1) = 0.5
    """Share of documents turned into fill-in-the-middle examples."""
    fim_spm_rate: within(0, 1) = 0.5
    """Of those, the share in suffix-prefix-middle order (the rest prefix-suffix-middle)."""
    fim_tokens: list[str] = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
    """Prefix, suffix, middle sentinels; each must be a single token of the model's tokenizer."""

    def check(self) -> None:
        if self.corpus_dir and self.data_file:
            refuse("data_file", "set either it or train.sft.corpus_dir, not both")
        if len(self.fim_tokens) != 3:
            refuse("fim_tokens", "needs exactly three tokens (prefix, suffix, middle)")


class TrainConfig(Section):
    """Options every algorithm shares: the optimizer loop, the model's precision and adapters, Ray Train's workers.
    Calling it builds the model of `algorithm` (default dpo)."""

    algorithm: str = "dpo"
    learning_rate: float = 5e-5
    epochs: int = 1
    batch_size: int = 4
    """Micro-batches accumulated per optimizer step."""
    max_length: int = 768
    """Tokens per training sequence (prompt + completion); longer ones are cut."""
    bf16: bool = True
    quantization: Literal["none", "nf4", "int8"] = "none"
    """nf4 (QLoRA) or int8: the frozen base through bitsandbytes, LoRA on top."""
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0
    """Optimizer steps between resumable checkpoints inside a round; 0: round end only."""
    max_failures: int = 0
    """Worker failures Ray Train recovers from, resuming at the last checkpoint."""
    num_workers: int = 1
    num_cpus_per_worker: float = 2.0
    use_gpu: bool = False
    seed: int = 0
    lora: LoraConfig = LoraConfig()
    loss_guard: LossGuardConfig = LossGuardConfig()
    weight_decay: float = Field(0.01, ge=0)
    """AdamW, on weight matrices only (never biases or norms)."""
    max_grad_norm: float = Field(1.0, ge=0)
    """0: no clipping."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up over the run's first optimizer steps (counted across rounds)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """After warm-up: constant, or linear or cosine decay to 0 over the job (loop.iterations batches)."""
    carry_optimizer: bool = True
    """AdamW's moments continue from the previous round."""
    num_to_keep: int = Field(0, ge=0)
    """Round checkpoints kept on storage (the newest); 0 keeps every round's."""
    resources_per_worker: dict[str, float] = {}
    """Custom Ray resources per train worker (the learner node type)."""

    def __new__(cls, **data: Any):
        if cls is TrainConfig:  # TrainConfig(algorithm=...) is the algorithm's own model
            name = data.get("algorithm", "dpo")
            if name not in MODELS:
                raise ConfigError(f"train.algorithm: unknown algorithm {name!r}; choose from {ALGORITHMS}")
            cls = MODELS[name]
        return super().__new__(cls)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in OTHER_OPTIONS:  # another algorithm's option: what this one does without it
                return OTHER_OPTIONS[name].get_default(call_default_factory=True)
            raise

    def check(self) -> None:
        if self.quantization != "none" and not self.lora.enabled:
            refuse("quantization", "a quantized base trains only through LoRA; set train.lora.enabled")


class WithReference(TrainConfig):
    reference: Literal["frozen", "refreshed"] = "frozen"
    """The KL/preference reference: the frozen base model, or the policy as each round starts (refreshed)."""


class DpoTrain(WithReference):
    """Iterative DPO on preference pairs (a passing sample, or the verified reference, over a failing one)."""

    algorithm: Literal["dpo"] = "dpo"
    max_pairs: int = 16
    """Preference pairs per round."""
    beta: float = 0.1
    """Strength of the KL constraint to the reference."""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    label_smoothing: float = 0.0
    """Conservative DPO (sigmoid) and robust DPO: the assumed label-flip rate, in [0, 0.5)."""
    rpo_alpha: float = Field(0.0, ge=0)
    """RPO: + rpo_alpha * token-mean NLL of the chosen answer (TRL's loss_type sft)."""
    rejected: Literal["hardest", "worst", "random"] = "hardest"
    """Which failing sample is rejected: hardest (failed assertions first), worst reward, or random."""

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.label_smoothing < 0.5:
            refuse("label_smoothing", "must be in [0, 0.5)")
        if self.label_smoothing and self.loss_type not in ("sigmoid", "robust"):
            refuse("label_smoothing", f"only the sigmoid and robust losses use it, not {self.loss_type}")


class PpoTrain(WithReference):
    """PPO on the sandbox's rewards: critic-free with a group baseline (GRPO/RLOO), or with a critic and GAE."""

    algorithm: Literal["ppo"] = "ppo"
    advantage: Literal["group", "rloo"] = "group"
    """Critic-free: the advantage against the exercise's other samples (group: GRPO) or leave-one-out (rloo)."""
    clip_eps: float = 0.2
    """PPO's ratio clip."""
    clip_eps_high: float = Field(0.0, ge=0)
    """Upper clip (DAPO's clip-higher); 0: the same as clip_eps."""
    kl_coef: float = 0.05
    """Weight of the KL to the reference."""
    kl_in_reward: bool = False
    """KL as a per-token reward penalty instead of a loss term (needs the critic)."""
    critic: bool = False
    """A value head and GAE instead of the group baseline."""
    critic_model: Literal["head", "separate"] = "head"
    """The value head on the policy's trunk, or on a separate copy of the model."""
    value_coef: float = 0.5
    """Weight of the critic's loss."""
    value_clip: float = Field(0.0, ge=0)
    """Clip the value update to +-value_clip around the old value; 0: no clipping."""
    gamma: float = 1.0
    gae_lambda: float = 0.95
    loss_agg: Literal["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"] = "seq_mean_token_mean"
    """seq_mean_token_sum_norm is Dr. GRPO's (sum / max_length)."""
    scale_rewards: Literal["group", "none"] = "group"
    """group: advantages divided by the group's std; none: mean-centred only."""
    rl_reward: Literal["table", "binary"] = "table"
    """table: the reward table; binary: 1 if passed else 0 (the table still reported)."""
    entropy_coef: float = Field(0.0, ge=0)
    """- entropy_coef * mean token entropy in the loss."""
    recompute_old_logprobs: bool = False
    """The behaviour log-probs from the trainer's forward, not the engine's."""
    tis_cap: float = Field(0.0, ge=0)
    """Truncated importance sampling: weight min(pi_old / pi_engine, cap) per token; 0: off."""

    def check(self) -> None:
        super().check()
        if self.clip_eps_high and self.clip_eps_high < self.clip_eps:
            refuse("clip_eps_high", "must be >= train.clip_eps (or 0 for symmetric clipping)")
        if self.tis_cap and self.tis_cap < 1:
            refuse("tis_cap", "must be >= 1 (or 0 for off)")
        if self.tis_cap and not self.recompute_old_logprobs:
            refuse("tis_cap", "corrects the trainer's recomputed behaviour log-probs towards the engine's; set "
                              "train.recompute_old_logprobs (without it the PPO ratio is already taken against the "
                              "engine)")
        if self.kl_in_reward and not self.critic:
            refuse("kl_in_reward", "needs train.critic; the group baseline has no per-token reward to put the KL "
                                   "into (use train.kl_coef as a loss term)")
        if self.critic_model == "separate" and not self.critic:
            refuse("critic_model", "'separate' needs train.critic")
        if self.loss_guard.relative:
            refuse("loss_guard.relative", "PPO's loss changes sign, so multiples of its recent mean are no "
                                          "threshold; use absolute ones")


class DistillTrain(TrainConfig):
    """Distillation from a teacher: logit-level (same tokenizer) or sequence-level (SFT on its verified solutions)."""

    algorithm: Literal["distill"] = "distill"
    distill: DistillConfig = DistillConfig()


class SftTrain(TrainConfig):
    """Supervised fine-tuning on verified solutions, a JSONL of chat turns, or continued pre-training on a corpus."""

    algorithm: Literal["sft"] = "sft"
    sft: SftConfig = SftConfig()


MODELS: dict[str, type[TrainConfig]] = {"dpo": DpoTrain, "ppo": PpoTrain, "distill": DistillTrain, "sft": SftTrain}
OTHER_OPTIONS = {name: f for m in MODELS.values() for name, f in m.model_fields.items()
                 if name not in TrainConfig.model_fields}
UNION_TAGS.update(MODELS)
OPTION_OWNERS.update({name: [n for n, m in MODELS.items() if name in m.model_fields] for name in OTHER_OPTIONS})


def _algorithm(value: Any) -> str | None:
    return value.get("algorithm", "dpo") if isinstance(value, dict) else getattr(value, "algorithm", None)


Train = Annotated[Annotated[DpoTrain, Tag("dpo")] | Annotated[PpoTrain, Tag("ppo")] | Annotated[DistillTrain, Tag(
    "distill")] | Annotated[SftTrain, Tag("sft")], Discriminator(_algorithm)]
