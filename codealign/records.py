"""The records that flow between actors. Plain dataclasses: cheap to pickle into Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass, field

from codealign.sandbox import Result as ExecutionResult  # noqa: F401 - the sandbox's own record is the one that flows


@dataclass
class Exercise:
    id: str
    prompt: str  # what the model sees (task text + example asserts, or signature + docstring)
    tests: str  # Python run after the solution: asserts, or `check(candidate)` and its call
    entry_point: str = ""
    source: str = ""  # "mbpp", "humaneval", "generated"
    reference: str = ""  # a known-good solution where the source has one
    stub: str = ""  # completion-style tasks (HumanEval): the code a raw completion continues
    solve_rate: float | None = None


@dataclass
class GenerationRequest:
    prompt: str
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    chat: bool = True  # apply the tokenizer's chat template
    request_id: str = ""
    json_schema: dict | None = None  # answer under this JSON schema where the backend can constrain decoding


@dataclass
class Completion:
    request_id: str
    text: str
    token_ids: list[int]
    logprobs: list[float]  # one per generated token
    finish_reason: str  # "stop", "length", or "error"
    policy_version: int
    role: str = "student"
    error: str = ""  # set when the request was rejected (finish_reason == "error")


@dataclass
class Experience:
    """One sampled solution, judged: what the replay buffer keeps."""

    exercise_id: str
    prompt: str
    completion: str
    code: str
    result: ExecutionResult
    policy_version: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sample_id: str = ""  # the replay buffer's ledger id (pipelined runs)


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    reason: str  # e.g. "passed>failed" or "reference>timeout"
    exercise_id: str = ""
    sample_ids: tuple[str, ...] = ()  # the replay buffer's ids of the samples behind the answers (pipelined runs)


@dataclass
class SftExample:
    """A sequence to imitate. With a prompt: a chat turn, loss on the completion only. Without: raw text
    (a code file for continued pre-training), loss on every token, fill-in-the-middle applicable."""

    prompt: str
    completion: str
    source: str = ""  # e.g. "reference", "passed_sample", "oracle", "corpus:<path>"
    sample_id: str = ""  # the replay buffer's id of the judged sample it repeats, if it is one


def sample_ids_behind(items: list) -> list[str]:
    """The replay buffer's ids of the samples behind `items` (a judged sample's or an SFT example's `sample_id`; a
    pair's `sample_ids`, chosen and rejected): what the sample accounts count of a batch's data, on the driver and on
    the learner (pipeline/accounts.py)."""
    ids: list[str] = []
    for item in items:
        ids.extend([item.sample_id] if getattr(item, "sample_id", "") else getattr(item, "sample_ids", ()))
    return ids
