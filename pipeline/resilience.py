"""A failure the run contains instead of ending: a learner batch that fails (NaN/inf loss, training workers lost
beyond `train.max_failures`) or a published version the generators refuse (NaN, wrong names or shapes, a lost
replica). The stream (pipeline/stream.py) keeps the last good version serving, logs the failure with the round and
goes on or stops (`loop.on_train_failure`); the run still evaluates and reports."""

from __future__ import annotations

import traceback


def failure(stage: str, exc: BaseException, iteration: int, version: int) -> dict:
    cause = exc.__cause__ or exc
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return {"stage": stage, "iteration": iteration, "kept_version": version, "error": type(exc).__name__,
            "message": first_line[:500], "cause": "".join(traceback.format_exception_only(cause)).strip()[-2000:]}
