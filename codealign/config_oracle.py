"""The `oracle` section: the model that writes exercises, tests and solutions (`launch.py generate-data`, the
adversarial game)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from codealign.config_base import Section, refuse

Positive = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]


class OracleConfig(Section):
    """The oracle that writes exercises, tests and solutions; checked when built, so a bad value is refused at
    config load with the field's dotted path."""

    backend: Literal["none", "vllm", "remote"] = "none"
    """none: no oracle (the MBPP reference stands in); vllm: a generator actor with role oracle serving `model`;
    remote: any OpenAI-compatible endpoint at `base_url` serving `model`."""
    model: str = "embedded:smollm2-135m-instruct"
    base_url: str = ""
    api_key_env: str = ""
    """The name of an environment variable holding the key; never the key itself."""
    answer_format: Literal["json", "blocks"] = "blocks"
    """blocks: code in fenced blocks; json: one JSON object (code in strings)."""
    structured: bool = True
    """json: decode under the JSON schema (vLLM structured outputs / response_format)."""
    categories: list[str] = Field(["strings", "lists", "math", "dictionaries"], min_length=1)
    personas: list[str] = Field(["a bank teller", "a biology student", "a game developer", "a librarian",
                                 "a logistics planner", "a music teacher", "a nurse", "a shop owner"], min_length=1)
    subcategories_per_category: Positive = 2
    exercises_per_subcategory: Positive = 2
    solutions_per_exercise: Positive = 4
    """Self-instruct: sample this many solutions, keep the first that passes."""
    few_shot: Count = 2
    """MBPP train exercises shown as examples in the exercise prompt."""
    tests_step: bool = False
    """A function written without asserts gets its tests from a request of their own."""
    visible_tests: Literal[1, 2] = 1
    """Asserts shown to the student; the reward comes from all of them."""
    temperature: float = Field(0.7, ge=0)
    max_tokens: Positive = 384
    validation_repeats: Positive = 2
    """Filter: runs of the reference, to catch nondeterministic tests."""
    repair_rounds: Count = 0
    """Send exercises none of whose solutions pass back to the oracle (tests unchanged)."""
    near_dup_threshold: float = Field(0.7, gt=0, le=1)
    num_perm: Positive = 256
    shingle_size: Positive = 5
    contamination_ngram: Positive = 10
    dedup_against_mbpp_train: bool = True
    exercise_source: Literal["mbpp", "oracle"] = "mbpp"
    """mbpp: MBPP train, its reference the oracle's stand-in; oracle: the adversarial game."""
    exercises_per_round: Count = 4
    """New exercises the oracle is asked for each round, its sub-categories in turn (beside the harder variants)."""
    hardest_as_templates: Count = 2
    """Failed exercises handed back to the oracle as templates for harder ones."""
    resume_curriculum: str = ""
    """A curriculum.json from an earlier run's directory: continue its game."""
    seed_from_mbpp: bool = True
    """Top the curriculum up from MBPP train (reference verified in the sandbox) while it holds fewer open exercises
    than loop.exercises_per_iteration: a weak oracle's rounds still train, on labelled stand-ins."""
    rater_model: str = ""
    """Instruction back-translation (generate-data --backtranslate DIR): the rater, another model on the same
    backend; instructions it rates >= min_rating are kept."""
    rater_base_url: str = ""
    """Empty: the oracle's endpoint."""
    min_rating: int = Field(4, ge=1, le=5)

    def check(self) -> None:
        if self.backend == "remote" and not self.base_url:
            refuse("base_url", "the remote backend needs the endpoint's URL (e.g. http://127.0.0.1:8000/v1)")
        if self.exercise_source == "oracle" and self.backend == "none":
            refuse("backend", "exercise_source: oracle needs an oracle backend (vllm or remote)")
        if self.rater_model and self.rater_model == self.model:
            refuse("rater_model", "must be another model than oracle.model (a model rating its own instructions gives "
                                  "about 5 every time)")
