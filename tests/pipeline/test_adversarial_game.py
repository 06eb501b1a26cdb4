"""The oracle's game end to end (`launch.py run --config configs/adversarial.yaml`): a scripted oracle behind a real
OpenAI-compatible server on loopback writes sound exercises (and harder variants when asked), the real filters
keep them, the student (the tiny model in a real vLLM engine) samples and fails them in the real sandbox, the Ray
Train learner takes DPO pairs (oracle's solution chosen), and round 1 asks harder variants of round 0's failures.
The game is the one driver's source of exercises, so it resumes like any recipe."""

import http.server
import json
import threading

import pytest

from codealign.config import config_from_dict, read_recipe
from codealign.pipeline.loop import run
from tests.conftest import ROOT
from tests.loopback_openai import chat_reply, serve


def exercise(task: str, name: str, body: str, asserts: list[str]) -> str:
    return (f"Task: {task}\n```python\ndef {name}(x):\n    \"\"\"{task}\"\"\"\n{body}\n```\n```python\n"
            + "\n".join(asserts) + "\n```\n")


ROUND_0 = [
    exercise("Return how many times the letter z appears in a text.", "count_zeds",
             "    return x.count('z')", ["assert count_zeds('pizza') == 2", "assert count_zeds('abc') == 0",
                                         "assert count_zeds('zzz') == 3"]),
    exercise("Return the product of the digits of a positive integer.", "digit_product",
             "    out = 1\n    for d in str(x):\n        out *= int(d)\n    return out",
             ["assert digit_product(234) == 24", "assert digit_product(7) == 7", "assert digit_product(101) == 0"]),
]
HARDER = exercise("Return the letters of a word sorted by how often they occur, most frequent first, ties in "
                  "alphabetical order.", "by_frequency",
                  "    return ''.join(sorted(set(x), key=lambda c: (-x.count(c), c)))",
                  ["assert by_frequency('banana') == 'anb'", "assert by_frequency('') == ''",
                   "assert by_frequency('cab') == 'abc'"])


class GameOracle(http.server.BaseHTTPRequestHandler):
    prompts: list = []
    turn = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        with self.lock:
            self.prompts.append(prompt)
            if "sub-topics" in prompt:
                texts = ['["counting"]']
            elif "harder in this way" in prompt:
                texts = [HARDER]
            elif "write a new exercise" in prompt.lower():
                texts = [ROUND_0[GameOracle.turn % len(ROUND_0)]]
                GameOracle.turn += 1
            else:
                texts = ["no idea"] * body.get("n", 1)
        chat_reply(self, texts)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_two_rounds_of_the_game_train_on_oracle_exercises_and_carry_the_failed_ones_forward(
        ray_cluster, tmp_path, tiny_model_path):
    """The game runs through the one driver (the stream, with the oracle as its source of exercises), and a third
    round added with `--resume` goes on from the saved curriculum: the oracle is asked harder variants of the
    exercises failed before the restart."""
    raw = read_recipe(ROOT / "configs" / "adversarial.yaml")  # its base (local.yaml) underneath
    raw.update(name="game", output_dir=str(tmp_path), ray_dashboard=False)
    raw["model"] = {"path": tiny_model_path, "max_model_len": 512}
    raw["data"]["eval_size"] = 2
    raw["eval"] = {"benchmarks": ["mbpp"]}
    raw["generator"]["max_tokens"] = 48
    raw["train"].update(max_pairs=4, batch_size=2)
    raw["loop"].update(iterations=2, exercises_per_iteration=2, samples_per_exercise=2)
    raw["oracle"].update(backend="remote", model="scripted", categories=["strings"], exercises_per_round=2,
                         solutions_per_exercise=1, few_shot=0, tests_step=False, seed_from_mbpp=False,
                         hardest_as_templates=1)
    GameOracle.prompts, GameOracle.turn = [], 0
    with serve(GameOracle) as url:
        raw["oracle"]["base_url"] = url
        result = run(config_from_dict(raw))
        result.system.shutdown()
        run_dir = result.run_dir.path
        rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rounds] == [0, 1]
        first, second = rounds
        # round 0: the two scripted exercises pass every filter, the tiny student fails them, DPO trains on pairs
        # whose chosen side is the oracle's verified solution
        assert first["oracle"]["requested"] == 2 and first["oracle"]["kept"] == 2
        assert first["exercise_source"] == {"oracle": 2} and first["sample_pass_rate"] == 0.0
        assert first["pass_rate_histogram"]["0"] == 2 and first["chosen_from"] == {"oracle": first["train_items"]}
        assert first["train_items"] > 0 and first["new_policy_version"] == 1
        # round 1: a harder variant of a round-0 exercise the student failed was asked and kept
        [failed] = second["oracle"]["harder_variants_of"]
        assert failed.startswith("oracle/r0/")
        harder_asks = [p for p in GameOracle.prompts if "harder in this way" in p]
        assert len(harder_asks) == 1 and ("count_zeds" in harder_asks[0] or "digit_product" in harder_asks[0])
        # the round's two new asks repeat round 0's exercises: dropped as duplicates of the curriculum
        assert second["oracle"]["kept"] == 1 and second["oracle"]["dropped"] == {"exact_duplicate": 2}
        assert second["curriculum_size"] == 3
        curriculum = json.loads((run_dir / "curriculum.json").read_text())
        assert len(curriculum["histograms"]) == 2 and result.policy_version == 2
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["eval_exercises"] == 2 and summary["replay_buffer"]["accounts"]["balanced"]
        assert summary["headline_benchmark"] == "mbpp" and "MBPP test (2 tasks" in (run_dir / "report.md").read_text()

        # one more round on the same run directory (`launch.py run --resume DIR --set loop.iterations=3`): the
        # game's state comes back with the driver's, so the oracle is asked a harder variant of an exercise failed
        # before the restart, and the curriculum goes on from its three exercises
        raw["loop"]["iterations"] = 3
        resumed = run(config_from_dict(raw), resume_dir=str(run_dir))
        resumed.system.shutdown()
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rounds] == [0, 1, 2]
    third = rounds[2]
    [failed] = third["oracle"]["harder_variants_of"]
    assert failed.startswith("oracle/r")
    assert third["curriculum_size"] >= 3 and third["policy_version"] == 2
    assert len([p for p in GameOracle.prompts if "harder in this way" in p]) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed"] is True and summary["iterations_done"] == 3
    assert summary["replay_buffer"]["accounts"]["balanced"]
    assert len(json.loads((run_dir / "curriculum.json").read_text())["histograms"]) == 3
