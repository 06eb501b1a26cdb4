"""PPO on unit-test rewards. Two baselines:

- critic-free (default): the group of samples for one exercise is the baseline (GRPO's normalised advantage, or
  RLOO's leave-one-out mean); the KL to the frozen base is a loss penalty (k3 estimator).
- critic (`train.critic`): a value head on the policy's last hidden state or on a trunk of its own
  (`critic_model`), GAE over the completion's tokens with the test reward on the last token, a value loss
  (clipped with `value_clip` if set); the KL can also go into the per-token reward.

Both score tokens under the distribution the engine sampled from (temperature and top-p, see trainers/scoring)
and clip the surrogate against the behaviour log-probs: the engine's, or the trainer's own recomputed ones with
truncated importance sampling against the engine's (veRL's rollout correction).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

import torch

from codealign.chat import prompt_token_ids
from codealign.records import Experience, sample_ids_behind
from codealign.sandbox import Verdict
from codealign.trainers.critic import PolicyWithValue, gae
from codealign.trainers.losses import clipped_policy_loss
from codealign.trainers.modeling import bf16_compute, load_policy, replica_spread
from codealign.trainers.scoring import Sampling, token_log_probs
from codealign.trainers.steps import OPTIMIZER_FILE, MicroStep, load_params, optimizer_carry, run_steps
from codealign.trainers.trainee import Trainee

VALUE_HEAD_FILE = "value_head.pt"
CRITIC_TRUNK_FILE = "critic_trunk.pt"  # critic_model: separate - the critic's own trainable parameters


def rl_rewards(experiences: list[Experience], kind: str) -> list[float]:
    """The reward RL optimises: the reward table's (`table`) or 1 for a pass, 0 otherwise (`binary`); the
    table's values are still what the metrics report."""
    if kind == "binary":
        return [1.0 if e.result.verdict is Verdict.PASSED else 0.0 for e in experiences]
    return [e.result.reward for e in experiences]


def groups_of(experiences: list[Experience]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(experiences):
        groups[e.exercise_id].append(i)
    return groups


def advantages(experiences: list[Experience], kind: str, scale: str = "group",
               rewards: list[float] | None = None) -> list[float]:
    """Per sample, relative to the other samples of the same exercise. `scale`: "group" divides the group
    advantage by the group's standard deviation (GRPO), "none" leaves it mean-centred (Dr. GRPO); with the
    shaped reward table an all-failing group is otherwise scaled up as much as a pass-versus-fail group."""
    rewards = [e.result.reward for e in experiences] if rewards is None else rewards
    out = [0.0] * len(experiences)
    for members in groups_of(experiences).values():
        rs = [rewards[i] for i in members]
        if len(rs) < 2:
            continue
        mean = statistics.fmean(rs)
        for i, r in zip(members, rs):
            if kind == "rloo":
                out[i] = r - (sum(rs) - r) / (len(rs) - 1)
            elif kind == "group":
                out[i] = (r - mean) / (statistics.pstdev(rs) + 1e-4) if scale == "group" else r - mean
            else:
                raise ValueError(f"train.advantage: unknown kind {kind!r}; choose group or rloo")
    return out


def zero_signal_groups(experiences: list[Experience], rewards: list[float]) -> set[str]:
    """Exercises whose samples all got the same reward: no baseline-relative signal, dropped from the round."""
    return {ex for ex, members in groups_of(experiences).items() if len({rewards[i] for i in members}) == 1}


def rollout_batch(tokenizer, exp: Experience, max_length: int) -> dict:
    prompt = prompt_token_ids(tokenizer, exp.prompt)
    completion = list(exp.token_ids)[: max(1, max_length - len(prompt))]
    engine = torch.tensor(exp.logprobs[: len(completion)], dtype=torch.float32)
    ids = torch.tensor([prompt + completion])
    return {"input_ids": ids, "prompt_len": len(prompt), "labels": ids[:, len(prompt):], "engine_logps": engine,
            "reward": exp.result.reward}


def forward_tokens(model, batch: dict, autocast: bool, critic: bool, sampling: Sampling):
    """Per-token log-probs of the completion under the sampling distribution (temperature, top-p), that
    distribution's entropy there, and the values (critic only)."""
    keep = batch["input_ids"].shape[1] - batch["prompt_len"] + 1
    values = None
    with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=autocast):
        if critic:
            logits, values = model(batch["input_ids"], keep)
            values = values[0, :-1].float()
        else:
            logits = model(input_ids=batch["input_ids"], logits_to_keep=keep).logits
    taken, entropy = token_log_probs(logits[:, :-1], batch["labels"], sampling)
    return taken[0], entropy[0], values


def critic_targets(batches: list[dict], ref: list[torch.Tensor], model, autocast: bool, cfg,
                   sampling: Sampling) -> None:
    """Old values, per-token rewards, whitened GAE advantages and returns, computed once before training."""
    with torch.no_grad():
        for b, r in zip(batches, ref):
            _, _, values = forward_tokens(model, b, autocast, True, sampling)
            rewards = torch.zeros_like(values)
            rewards[-1] = b["reward"]
            if cfg.kl_in_reward:
                rewards -= cfg.kl_coef * (b["old_logps"] - r)  # k1 estimate of the KL, token by token
            b["old_values"] = values
            b["adv"], b["returns"] = gae(rewards, values, cfg.gamma, cfg.gae_lambda)
    flat = torch.cat([b["adv"] for b in batches])
    mean, std = flat.mean(), flat.std() if len(flat) > 1 else torch.tensor(1.0)
    for b in batches:
        b["adv"] = (b["adv"] - mean) / (std + 1e-8)


def behaviour_logps(batches: list[dict], trainer_logps: list[torch.Tensor], cfg) -> float:
    """Set each rollout's behaviour log-probs (the engine's, or the trainer's with `recompute_old_logprobs`) and
    truncated-IS weights (`tis_cap`). Returns the mean |log pi_trainer - log pi_engine| over tokens: how far
    the engine's numbers are from the policy the trainer holds (bf16, quantization, merge precision)."""
    gaps = []
    for b, mine in zip(batches, trainer_logps):
        gaps.append((mine - b["engine_logps"]).abs())
        b["old_logps"] = mine if cfg.recompute_old_logprobs else b["engine_logps"]
        b["weights"] = torch.exp(mine - b["engine_logps"]).clamp(max=cfg.tis_cap) if cfg.tis_cap else None
    return float(torch.cat(gaps).mean()) if gaps else 0.0


def loss_normaliser(cfg, sampling: Sampling, batches: list[dict]) -> float | None:
    """None: each sequence's token mean (then the mean over sequences); token_mean: the round's mean completion
    length, so every token of the round weighs the same; seq_mean_token_sum_norm: a constant (Dr. GRPO)."""
    if cfg.loss_agg == "token_mean":
        lengths = [b["labels"].shape[1] for b in batches]
        return sum(lengths) / len(lengths) if lengths else 1.0
    if cfg.loss_agg == "seq_mean_token_sum_norm":
        return float(sampling.max_tokens or cfg.max_length)
    return None


def with_critic(policy, cfg, model_path: str, saved: Path | None, device):
    """The policy with its critic (`train.critic`), the critic as `saved` (a published version) left it; the
    policy alone without one."""
    if not cfg.critic:
        return policy
    trunk = load_policy(model_path, cfg).to(device) if cfg.critic_model == "separate" else None
    model = PolicyWithValue(policy, trunk).to(device)
    if saved is not None and (saved / VALUE_HEAD_FILE).is_file():
        model.value_head.load_state_dict(torch.load(saved / VALUE_HEAD_FILE, map_location=device))
    if trunk is not None and saved is not None and (saved / CRITIC_TRUNK_FILE).is_file():
        load_params(trunk, torch.load(saved / CRITIC_TRUNK_FILE, map_location=device), str(saved))
    return model


def critic_files(model) -> dict:
    """What a published version holds of the critic, so a restarted or resumed learner continues it."""
    unwrapped = getattr(model, "module", model)
    if not isinstance(unwrapped, PolicyWithValue):
        return {}
    files = {VALUE_HEAD_FILE: unwrapped.value_head.state_dict()}
    if unwrapped.trunk is not None:
        files[CRITIC_TRUNK_FILE] = unwrapped.trunk_state()
    return files


def select_rollouts(data: list[Experience], cfg, rank: int, world: int):
    """This rank's rollouts as (experience, RL reward, advantage or None with a critic), the RL rewards of all
    samples, and the exercises dropped for carrying no signal (critic-free: all samples got the same reward)."""
    rollouts, rewards, dropped = trained_rollouts(data, cfg, world)
    return rollouts[rank::world], rewards, dropped


def trained_rollouts(data: list[Experience], cfg, world: int):
    """Every rank's rollouts together (as many per rank: a multiple of `world`), the rewards, the dropped."""
    usable = [bool(e.token_ids) and len(e.logprobs) == len(e.token_ids) for e in data]
    rewards = rl_rewards(data, cfg.rl_reward)
    dropped: set[str] = set()
    if cfg.critic:
        rollouts = [(e, r, None) for e, r, ok in zip(data, rewards, usable) if ok]
    else:
        dropped = zero_signal_groups(data, rewards)
        adv = advantages(data, cfg.advantage, cfg.scale_rewards, rewards)
        rollouts = [(e, r, a) for e, r, a, ok in zip(data, rewards, adv, usable)
                    if ok and e.exercise_id not in dropped and a != 0.0]
    return rollouts[: len(rollouts) // world * world], rewards, dropped


def rollout_batches(tokenizer, rollouts, cfg, device) -> list[dict]:
    batches = []
    for exp, reward, a in rollouts:
        b = rollout_batch(tokenizer, exp, cfg.max_length)
        batches.append({**{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}, "adv": a,
                        "reward": reward})
    return batches


def policy_micro_step(model, ref: list[torch.Tensor], cfg, autocast: bool, sampling: Sampling,
                      normaliser: float | None, off_policy=None):
    """The body of one PPO micro-step (every option of the objective): micro-batch i -> MicroStep.

    `off_policy` (a `PipelineConfig`; None: nothing is stale): a micro-batch holding `prox_logps` is a sample
    older than the learner's policy, trained with `trainers.offpolicy`'s correction (against the engine's
    behaviour log-probs; its truncated weight plays the part `tis_cap` plays on fresh samples)."""
    # kl_in_reward (critic only, refused at load otherwise): the KL is in the reward, not the loss
    kl_coef = 0.0 if cfg.kl_in_reward else cfg.kl_coef

    def micro_step(b, i: int) -> MicroStep:
        new, entropy, values = forward_tokens(model, b, autocast, cfg.critic, sampling)
        if "prox_logps" in b:
            from codealign.trainers.offpolicy import off_policy_loss

            out = off_policy_loss(new, b["prox_logps"], b["engine_logps"], ref[i], b["adv"], cfg.clip_eps, kl_coef,
                                  off_policy.importance_cap, off_policy.off_policy, cfg.clip_eps_high, normaliser)
        else:
            out = clipped_policy_loss(new, b["old_logps"], ref[i], b["adv"], cfg.clip_eps, kl_coef,
                                      cfg.clip_eps_high, b["weights"], normaliser)
        loss = out.loss
        metrics = {"kl": out.kl.item(), "entropy": entropy.mean().item(), "clip_fraction": out.clip_fraction.item(),
                   "ratio": out.ratio.item()}
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * entropy.mean()
        if cfg.critic:
            err = (values - b["returns"]) ** 2
            if cfg.value_clip:
                v_clipped = b["old_values"] + torch.clamp(values - b["old_values"], -cfg.value_clip, cfg.value_clip)
                err = torch.max(err, (v_clipped - b["returns"]) ** 2)
            value_loss = 0.5 * err.mean()
            loss = loss + cfg.value_coef * value_loss
            metrics["value_loss"] = value_loss.item()
        return MicroStep(loss, metrics, b["input_ids"].shape[1])

    return micro_step


def mark_stale(batches: list[dict], rollouts: list, mine: list[torch.Tensor], train_version: int | None,
               pipe) -> None:
    """Each micro-batch's staleness (the policy that trains it is `train_version`, the sample's is its
    `policy_version`); a stale one gets `prox_logps`, the policy as the batch starts (`mine`), and so trains with
    `pipe.off_policy`'s correction. `train_version` None: nothing is stale (the rounds loop's rounds)."""
    for b, (exp, _, _), m in zip(batches, rollouts, mine):
        b["staleness"] = 0 if train_version is None else train_version - exp.policy_version
        if pipe is not None and pipe.off_policy != "none" and b["staleness"] > 0:
            b["prox_logps"] = m


def stale_metrics(batches: list[dict], pipe) -> dict:
    """The stale fraction, and the behaviour importance weights pi_prox / pi_behav over the stale samples' tokens
    (fixed before the batch trains)."""
    out = {"ppo/stale_fraction": sum(1 for b in batches if b["staleness"] > 0) / max(1, len(batches))}
    weights = [torch.exp(b["prox_logps"] - b["engine_logps"]) for b in batches if "prox_logps" in b]
    if weights:
        iw = torch.cat(weights)
        out.update({"ppo/iw_mean": iw.mean().item(), "ppo/iw_max": iw.max().item(),
                    "ppo/iw_truncated_fraction": (iw > pipe.importance_cap).float().mean().item()})
    return out


def batch_metrics(data: list[Experience], rewards: list[float], dropped: set[str], batches: list[dict], pos,
                  world: int, engine_gap: float, sampling: Sampling) -> dict:
    table = [e.result.reward for e in data]
    verdicts = Counter(e.result.verdict.value for e in data)
    ratios = pos.history.get("ratio", [])
    return {
        "ppo/rollouts": len(batches), "ppo/workers": world,
        "ppo/reward_mean": statistics.fmean(table) if table else 0.0,
        "ppo/reward_std": statistics.pstdev(table) if len(table) > 1 else 0.0,
        "ppo/rl_reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "ppo/zero_signal_groups": len(dropped),
        "ppo/engine_logp_gap": engine_gap,
        "ppo/ratio_first": ratios[0] if ratios else 1.0,
        "ppo/temperature": sampling.temperature,
        **{f"ppo/verdict_{k}": v / max(1, len(data)) for k, v in verdicts.items()},
    }


def ppo_batch(t: Trainee, data: list[Experience], train_version: int | None = None, carry: dict | None = None,
              job: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """One learner batch of judged samples (their token ids and the engine's log-probs). A sample made by an older
    policy than `train_version` trains with `t.pipe.off_policy`'s correction, its proximal policy being these
    weights as the batch starts (None: nothing is stale). With a critic: GAE advantages and returns from the
    value head as the batch starts, and the value loss. `carry`, `job`, the result: as `dpo.dpo_batch`'s."""
    cfg, pipe = t.cfg, t.pipe
    sampling = t.sampling or Sampling()
    rollouts, rewards, dropped = select_rollouts(data, cfg, t.rank, t.world)
    batches = rollout_batches(t.tokenizer, rollouts, cfg, t.device)
    autocast = bf16_compute(cfg)
    ref, mine = t.references(lambda m: [forward_tokens(m, b, autocast, False, sampling)[0] for b in batches])
    engine_gap = behaviour_logps(batches, mine, cfg)
    mark_stale(batches, rollouts, mine, train_version, pipe)
    if cfg.critic:  # the old values, as the batch starts (eval mode, set by references)
        critic_targets(batches, ref, getattr(t.model, "module", t.model), autocast, cfg, sampling)
    micro_step = policy_micro_step(t.model, ref, cfg, autocast, sampling, loss_normaliser(cfg, sampling, batches),
                                   off_policy=pipe)
    metrics, pos, optimizer = run_steps(t.model, t.params(), batches, micro_step, cfg, name="ppo", rank=t.rank,
                                        carry=carry, job=job)
    metrics.update(batch_metrics(data, rewards, dropped, batches, pos, t.world, engine_gap, sampling))
    metrics.update(stale_metrics(batches, pipe))
    metrics["ppo/replica_spread"] = replica_spread(t.model, t.world)
    metrics["trained_ids"] = sample_ids_behind([e for e, _, _ in trained_rollouts(data, cfg, t.world)[0]])
    return metrics, optimizer_carry(optimizer, pos)[OPTIMIZER_FILE]
