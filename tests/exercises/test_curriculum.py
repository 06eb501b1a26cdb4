"""The adversarial curriculum (pass rates, failed-first ordering, difficulty-weighted sampling, resumable state),
the oracle-chosen preference pairs, and the `oracle:` config section's refusals."""

import random

import pytest

from codealign.config import ConfigError, config_from_dict
from codealign.exercises.curriculum import Curriculum
from codealign.pipeline.adversarial import oracle_pairs
from codealign.records import Exercise, Experience
from codealign.sandbox import Result, Verdict


def exp(ex_id, passed, text="x"):
    verdict = Verdict.PASSED if passed else Verdict.FAILED
    return Experience(ex_id, "p", text, "code", Result(verdict, 4.0 if passed else -0.3, 0.0), 0)


def exercises(n, verified=True):
    return [Exercise(f"e{i}", f"prompt {i}", "assert True\n", reference=f"def f{i}(): return {i}\n")
            for i in range(n)]


def test_pass_rates_histogram_and_failed_first(tmp_path):
    cur = Curriculum()
    cur.add(exercises(4), 0)
    cur.add([Exercise("unverified", "p", "assert True\n")], 0, reference_verified=False)
    rates = cur.record(0, [exp("e0", True), exp("e0", True), exp("e1", True), exp("e1", False),
                           exp("e2", False), exp("e2", False), exp("e3", True), exp("e3", False),
                           exp("e3", False), exp("e3", False), exp("unverified", False)])
    assert rates == {"e0": 1.0, "e1": 0.5, "e2": 0.0, "e3": 0.25, "unverified": 0.0}
    assert cur.histograms == [{"round": 0, "0": 2, "(0,0.5)": 1, "[0.5,1)": 1, "1": 1}]
    assert cur.failed() == ["e3", "e1", "e2"]  # partly solved first; rate 0 only with a verified reference
    assert [e.id for e in cur.hardest(2)] == ["e2", "e3"]
    path = cur.save(tmp_path / "curriculum.json")
    again = Curriculum.load(path)
    assert again.round == 1 and again.failed() == cur.failed() and again.histograms == cur.histograms
    assert again.exercise("e2").reference == "def f2(): return 2\n"


def test_sampling_is_weighted_by_difficulty():
    cur = Curriculum()
    cur.add(exercises(2), 0)
    cur.record(0, [exp("e0", True)] * 4 + [exp("e1", False)] * 4)
    rng = random.Random(0)
    firsts = [cur.sample(1, rng)[0].id for _ in range(400)]
    assert firsts.count("e1") > 0.9 * len(firsts)  # weights 1.05 vs 0.05
    assert sorted(e.id for e in cur.sample(5, rng)) == ["e0", "e1"]


def test_unreadable_state_is_a_clear_error(tmp_path):
    bad = tmp_path / "curriculum.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="curriculum state .* cannot be read"):
        Curriculum.load(bad)


def test_oracle_pairs_choose_the_oracles_solution_over_failing_samples():
    ex = exercises(2)
    by_id = {e.id: e for e in ex}
    pairs = oracle_pairs(by_id, [exp("e0", True, "good"), exp("e0", False, "bad1"), exp("e0", False, "bad1"),
                                 exp("e0", False, "bad2"), exp("e0", False, "bad3"), exp("e1", True, "ok")], 10)
    assert sorted(p.rejected for p in pairs) == ["bad1", "bad2"]  # distinct, at most 2 per exercise
    assert all(p.chosen == "```python\ndef f0(): return 0\n```" and p.reason == "oracle>failed" for p in pairs)


@pytest.mark.parametrize("oracle, field", [
    ({"backend": "gpt"}, "oracle.backend"),
    ({"backend": "remote"}, "oracle.base_url"),
    ({"answer_format": "xml"}, "oracle.answer_format"),
    ({"exercise_source": "oracle"}, "oracle.backend"),
    ({"visible_tests": 3}, "oracle.visible_tests"),
    ({"near_dup_threshold": 0}, "oracle.near_dup_threshold"),
    ({"categories": []}, "oracle.categories"),
    ({"bogus": 1}, "oracle.bogus"),
])
def test_bad_oracle_settings_are_refused_naming_the_field(oracle, field):
    with pytest.raises(ConfigError, match=field):
        config_from_dict({"model": {}, "train": {}, "loop": {}, "oracle": oracle})


def test_the_game_needs_dpo():
    with pytest.raises(ConfigError, match="oracle.exercise_source"):
        config_from_dict({"model": {}, "train": {"algorithm": "sft"}, "loop": {},
                          "oracle": {"backend": "vllm", "exercise_source": "oracle"}})


def mbpp_like(i, reference):
    prompt = (f"You are an expert Python programmer, and here is your task: Return {i} plus x. Your code should "
              f"pass these tests:\n\nassert plus{i}(1) == {i + 1}\nassert plus{i}(2) == {i + 2}\n")
    return Exercise(f"mbpp/{i}", prompt, f"assert plus{i}(1) == {i + 1}\nassert plus{i}(2) == {i + 2}\n",
                    f"plus{i}", "mbpp", reference)


def test_a_weak_oracles_game_is_seeded_from_mbpp_and_asks_harder_variants_of_the_failed_seeds():
    """No sound oracle exercise: the curriculum is topped up from MBPP train with references that pass in the
    real sandbox (a broken one is never seeded), one assert shown; the seeds get pass rates like any exercise,
    the failed one goes to the oracle as a template, and its pairs say the MBPP reference stood in."""
    from codealign.config import OracleConfig
    from codealign.exercises.generation import ExerciseWriter
    from codealign.pipeline.adversarial import top_up
    from codealign.sandbox import Sandbox

    pool = [mbpp_like(i, f"def plus{i}(x):\n    return x + {i}\n") for i in range(3)]
    pool.append(mbpp_like(3, "def plus3(x):\n    return x\n"))  # its reference fails its own tests
    cur, rng = Curriculum(), random.Random(0)
    with Sandbox(timeout_s=2.0) as box:
        added = top_up(cur, pool, 2, 0, box.run_many, rng, visible_tests=1)
        assert len(added) == 2 and "mbpp/3" not in added
        assert top_up(cur, pool, 2, 0, box.run_many, rng) == []  # two open exercises already
        seed = cur.exercise(added[0])
        assert seed.tests.count("assert") == 2 and seed.prompt.count("assert") == 1  # one shown, both judged
        cur.record(0, [exp(added[0], False, "bad")] * 2 + [exp(added[1], True)] * 2)
        assert cur.open() == [added[0]]
        again = top_up(cur, pool, 2, 1, box.run_many, rng)
    assert len(again) == 1 and again[0] not in added and again[0] != "mbpp/3"
    assert [e.id for e in cur.hardest(2)] == [added[0]]
    pairs = oracle_pairs({seed.id: seed}, [exp(seed.id, False, "bad")], 4)
    assert [p.reason for p in pairs] == ["mbpp_reference>failed"]

    prompts = []

    def scripted(reqs):
        prompts.extend(r.prompt for r in reqs)
        return [[] for _ in reqs]

    gen = ExerciseWriter(scripted, OracleConfig(backend="vllm", solutions_per_exercise=1)).write(
        round_=1, templates=cur.hardest(2))
    assert gen.requested == 1 and "harder" in prompts[0] and f"Return {added[0].split('/')[1]} plus x" in prompts[0]
