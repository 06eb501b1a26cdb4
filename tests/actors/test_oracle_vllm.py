"""The oracle through a real vLLM engine (the tiny random model, session fixture): a JSON schema constrains its
decoding, and the exercise writer survives whatever a model this weak writes, counting each malformed answer."""

import json

import pytest

from codealign.config import OracleConfig
from codealign.exercises.generation import ExerciseWriter
from codealign.records import GenerationRequest

FLAG_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
               "additionalProperties": False}


@pytest.fixture(scope="module")
def generate(tiny_generator, ray_cluster):
    return lambda reqs: ray_cluster.get(tiny_generator.generate.remote(reqs))


def test_json_schema_constrains_the_engine(generate):
    reqs = [GenerationRequest(f"Answer yes or no ({i}).", n=2, temperature=1.0, max_tokens=48, json_schema=FLAG_SCHEMA)
            for i in range(3)]
    free = [GenerationRequest(r.prompt, n=2, temperature=1.0, max_tokens=48) for r in reqs]
    constrained = [c.text for comps in generate(reqs) for c in comps]
    assert all(json.loads(t)["ok"] in (True, False) for t in constrained), constrained
    unconstrained = [c.text for comps in generate(free) for c in comps]

    def parses(t):
        try:
            return isinstance(json.loads(t), dict)
        except ValueError:
            return False

    assert not all(parses(t) for t in unconstrained)  # the random model writes no JSON on its own


def test_exercise_writer_counts_what_a_weak_oracle_gets_wrong(generate, data_dir):
    from codealign.exercises.loaders import load_mbpp

    cfg = OracleConfig(backend="vllm", answer_format="json", structured=True, categories=["strings"],
                       subcategories_per_category=1, exercises_per_subcategory=3, solutions_per_exercise=2,
                       few_shot=1, max_tokens=64)
    gen = ExerciseWriter(generate, cfg, load_mbpp(data_dir, (601, 620)), seed=1).write()
    assert gen.requested == 3
    assert len(gen.exercises) + sum(gen.malformed.values()) == 3
    assert sum(gen.malformed.values()) >= 1  # 64 tokens of a random model: not a usable exercise
