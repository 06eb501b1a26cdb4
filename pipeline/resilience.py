"""A learner round and the weight sync that follows it, with failures contained.

A round that fails (NaN/inf loss, training workers crashed beyond `train.max_failures`, no checkpoint) or whose
weights the generators refuse (NaN, wrong names or shapes, a timeout) leaves the last good version serving with the
version counter unchanged, and the learner pointed at that version's checkpoint so the next round continues from
what is actually served. The caller logs the failure and goes on or stops (`loop.on_train_failure`)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

import ray

from codealign.trainers.streaming import TrainingFailed
from codealign.weights import load_for_generators


@dataclass
class RoundOutcome:
    version: int  # the policy version serving after the round
    metrics: dict = field(default_factory=dict)
    failure: dict | None = None  # {"stage": "train" | "sync", "error": ...} when the round did not take effect


def learn_and_sync(system, data: list, version: int, stages, iteration: int, send=None) -> RoundOutcome:
    """`send(checkpoint_dir, version)` puts the round's policy on the generators (pipeline/serving.py's
    send_policy: the adapter or the merged weights); by default the merged weights."""
    learner = system.learner
    previous = learner.last_checkpoint
    try:
        with stages.time("train"):
            metrics, weights_path = learner.train_round(data)
    except TrainingFailed as exc:
        return RoundOutcome(version, {}, failure("train", exc, iteration, version))
    try:
        with stages.time("sync"):
            if send is not None:
                metrics["served_as"] = send(weights_path.parent, version + 1)
            else:
                system.generator.update_weights(load_for_generators(weights_path), version + 1)
    except (ray.exceptions.RayError, ValueError, TimeoutError, OSError) as exc:  # refused, or a replica lost
        learner.last_checkpoint = previous  # train on from what the generators serve, not from the refused round
        return RoundOutcome(version, metrics, failure("sync", exc, iteration, version))
    return RoundOutcome(version + 1, metrics)


def failure(stage: str, exc: BaseException, iteration: int, version: int) -> dict:
    cause = exc.__cause__ or exc
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return {"stage": stage, "iteration": iteration, "kept_version": version, "error": type(exc).__name__,
            "message": first_line[:500], "cause": "".join(traceback.format_exception_only(cause)).strip()[-2000:]}
