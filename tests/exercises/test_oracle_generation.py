"""The oracle path: parsing its answers (JSON and code blocks, malformed ones counted by reason), and
`launch.py generate-data --config` end to end against a real OpenAI-compatible HTTP server on loopback that
answers scripted exercises, through the real RemoteOracle client, Ray executor actors and the real sandbox."""

import http.server
import json
import threading

import pytest
import yaml

from codealign.exercises.generation import Malformed, parse_blocks_answer, parse_json_answer, parse_list
from tests.loopback_openai import chat_reply, serve

GOOD = ('Task: Return the number of vowels in a word.\n```python\ndef count_vowels(word):\n'
        '    """Count the vowels."""\n    return sum(c in "aeiou" for c in word.lower())\n```\n'
        '```python\nassert count_vowels("apple") == 2\nassert count_vowels("sky") == 0\n'
        'assert count_vowels("AEIOU") == 5\n```\n')
WRONG_SOLUTION = ('Task: Return the largest even number in a list, or None.\n```python\ndef largest_even(xs):\n'
                  '    return max(xs)\n```\n```python\nassert largest_even([1, 2, 3]) == 2\n'
                  'assert largest_even([4, 8, 5]) == 8\nassert largest_even([1, 3]) is None\n```\n')
LARGEST_EVEN_OK = ("```python\ndef largest_even(xs):\n    evens = [x for x in xs if x % 2 == 0]\n"
                   "    return max(evens) if evens else None\n```")
NO_CODE = "Task: something.\nI am not sure how to write this."
NONE_RETURN = ('Task: Double a number.\n```python\ndef double(x):\n    x * 2\n```\n```python\n'
               'assert double(2) == 4\nassert double(0) == 0\nassert double(-1) == -2\n```\n')
LEAK = ('Task: Remove first and last occurrence of a character.\n```python\ndef remove_Occ(s, ch):\n'
        '    return s.replace(ch, "", 1)[::-1].replace(ch, "", 1)[::-1]\n```\n'
        '```python\nassert remove_Occ("hello","l") == "heo"\n'
        'assert remove_Occ("abcda","a") == "bcd"\nassert remove_Occ("PHP","P") == "H"\n```\n')
DOUBLE_FIXED = "```python\ndef double(x):\n    return x * 2\n```"
SCRIPT = [GOOD, WRONG_SOLUTION, NO_CODE, NONE_RETURN, GOOD, LEAK]


def test_blocks_answer_parses_into_stub_tests_and_entry_point():
    d = parse_blocks_answer(GOOD)
    assert d.entry_point == "count_vowels" and len(d.tests) == 3
    assert d.stub.startswith("def count_vowels(word):") and "Count the vowels" in d.stub
    assert "sum(" not in d.stub and "sum(" in d.solution


def test_json_answer_and_malformed_reasons():
    obj = {"entry_point": "inc", "description": "Add one.", "solution": "def inc(x):\n    return x + 1\n",
           "tests": ["assert inc(1) == 2", "assert inc(0) == 1", "assert inc(-1) == 0"]}
    assert parse_json_answer(json.dumps(obj)).entry_point == "inc"
    cases = {"not_json": "here you go: def inc", "schema_mismatch": json.dumps({"entry_point": "inc"}),
             "solution_syntax_error": json.dumps({**obj, "solution": "def inc(x) return x"}),
             "entry_point_not_defined": json.dumps({**obj, "entry_point": "dec"}),
             "too_few_asserts": json.dumps({**obj, "tests": ["assert inc(1) == 2", "print(1)"]})}
    for reason, text in cases.items():
        with pytest.raises(Malformed, match=reason):
            parse_json_answer(text)
    with pytest.raises(Malformed, match="no_code_block"):
        parse_blocks_answer(NO_CODE)


def test_a_function_without_asserts_gets_its_tests_from_a_request_of_their_own():
    """oracle.tests_step (self-instruct's order): the weak oracle's usual answer, a function and prints but no
    asserts, is sent back for tests alone; too few asserts there too is still counted as too_few_asserts."""
    from codealign.config import OracleConfig
    from codealign.exercises.generation import ExerciseWriter
    from codealign.records import Completion

    no_tests = {"square": "Task: Square a number.\n```python\ndef square(x):\n    return x * x\n\n"
                          "print(square(3))\n```",
                "cube": "Task: Cube a number.\n```python\ndef cube(x):\n    return x ** 3\n```"}
    answers = iter(no_tests.values())
    asked = []

    def scripted(reqs):
        out = []
        for r in reqs:
            asked.append(r.prompt)
            if "sub-topics" in r.prompt:
                texts = ['["powers"]']
            elif "assert lines that check" in r.prompt:
                texts = (["```python\nassert square(2) == 4\nassert square(-3) == 9\nprint(square(1))\n```"] * r.n
                         if "def square" in r.prompt else ["assert cube(2) == 8"] * r.n)
            elif "new exercise" in r.prompt:
                texts = [next(answers)]
            else:
                texts = ["no"] * r.n
            out.append([Completion(r.request_id, t, [], [], "stop", 0) for t in texts])
        return out

    cfg = OracleConfig(backend="vllm", categories=["math"], subcategories_per_category=1,
                       exercises_per_subcategory=2, solutions_per_exercise=1, few_shot=0, tests_step=True)
    gen = ExerciseWriter(scripted, cfg).write()
    assert [ex.entry_point for ex in gen.exercises] == ["square"]
    assert gen.exercises[0].tests == "assert square(2) == 4\nassert square(-3) == 9\n"
    assert gen.provenance[gen.exercises[0].id]["template"] == "exercise_blocks+tests"
    assert gen.malformed == {"too_few_asserts": 1} and gen.tests_step == {"asked": 2, "got_tests": 1}
    assert sum("assert lines that check" in p for p in asked) == 2
    off = ExerciseWriter(scripted, OracleConfig(**{**cfg.__dict__, "tests_step": False}))
    answers = iter(no_tests.values())
    assert off.write().malformed == {"too_few_asserts": 2}


def test_the_game_asks_exercises_per_round_new_exercises_taking_sub_categories_in_turn():
    from codealign.config import OracleConfig
    from codealign.exercises.generation import ExerciseWriter
    from codealign.records import Completion

    asked = []

    def scripted(reqs):
        asked.extend(r.prompt for r in reqs)
        return [[Completion(r.request_id, '["a topic", "b topic"]' if "sub-topics" in r.prompt else "no", [], [],
                            "stop", 0)] for r in reqs]

    cfg = OracleConfig(backend="vllm", categories=["math"], subcategories_per_category=2,
                       exercises_per_subcategory=3, solutions_per_exercise=1, few_shot=0)
    gen = ExerciseWriter(scripted, cfg).write(count=5)
    exercise_prompts = [p for p in asked if "sub-topics" not in p]
    assert gen.requested == 5 and len(exercise_prompts) == 5
    assert [("a topic" in p, "b topic" in p) for p in exercise_prompts] == [(True, False), (False, True)] * 2 + [
        (True, False)]
    asked.clear()
    assert ExerciseWriter(scripted, cfg).write(count=0).requested == 0 and asked == []  # no sub-topic request either
    assert ExerciseWriter(scripted, cfg).write().requested == 6  # generate-data: exercises_per_subcategory each


def test_subcategory_lists_parse_from_json_or_lines():
    assert parse_list('["a b", "c d"]') == ["a b", "c d"]
    assert parse_list("Here:\n1. counting vowels\n- reversing words\n") == ["counting vowels", "reversing words"]


class ScriptedOracle(http.server.BaseHTTPRequestHandler):
    """Answers like an OpenAI chat endpoint: sub-topic lists, the SCRIPT's exercises in turn, solutions."""

    bodies: list = []
    turn = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        with self.lock:
            self.bodies.append(body)
            if "but it does not" in prompt:  # a repair request: only `double` gets a correct one
                texts = [DOUBLE_FIXED if "def double" in prompt else "no idea"] * body["n"]
            elif "sub-topics" in prompt:
                texts = ['["counting", "searching"]']
            elif "write a new exercise" in prompt.lower():
                texts = [SCRIPT[ScriptedOracle.turn % len(SCRIPT)]]
                ScriptedOracle.turn += 1
            elif "largest_even" in prompt:
                texts = ["```python\ndef largest_even(xs):\n    return 0\n```", LARGEST_EVEN_OK][: body["n"]]
            else:
                texts = ["no idea"] * body["n"]
        chat_reply(self, texts)

    def log_message(self, *args):
        pass


@pytest.fixture()
def scripted_server():
    ScriptedOracle.bodies, ScriptedOracle.turn = [], 0
    with serve(ScriptedOracle) as url:
        yield url


def write_config(tmp_path, base_url, **oracle):
    cfg = {"name": "gen-test", "output_dir": str(tmp_path / "runs"), "model": {}, "train": {}, "loop": {},
           "executor": {"num_actors": 1, "timeout_s": 3.0},
           "oracle": {"backend": "remote", "base_url": base_url, "model": "scripted", "categories": ["lists"],
                      "subcategories_per_category": 2, "exercises_per_subcategory": 3,
                      "solutions_per_exercise": 3, "few_shot": 1, **oracle}}
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_generate_data_against_a_scripted_openai_server(tmp_path, scripted_server, ray_cluster):
    from codealign.pipeline.cli import main

    out = tmp_path / "out"
    assert main(["generate-data", "--config", str(write_config(tmp_path, scripted_server)), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    # 6 exercises asked for: 2 sound (the GOOD one twice: the second is an exact duplicate), one whose own
    # solution fails but a sampled one passes, one without code, one returning None, one copied from MBPP test
    assert report["generation"]["requested"] == 6
    assert report["counts"] == {"exact_duplicate": 1, "contaminated": 1, "returns_nothing": 1,
                                "malformed_no_code_block": 1}
    assert len(report["kept"]) == 2
    rows = [json.loads(line) for line in (out / "exercises.jsonl").read_text().splitlines()]
    by_entry = {r["entry_point"]: r for r in rows}
    assert by_entry["largest_even"]["reference"].strip() == LARGEST_EVEN_OK.split("\n", 1)[1].rsplit("\n", 1)[0]
    for r in rows:  # the student sees one assert; all three are in the tests
        assert r["prompt"].count("assert ") == 1 and r["tests"].count("assert ") == 3
        assert r["oracle_model"] == "scripted" and r["persona"] and r["template"] == "exercise_blocks"
    detail = [d for d in report["details"].values() if "benchmark_task" in d]
    assert detail[0]["benchmark_task"] == "mbpp/11"
    # blocks format: no response_format; few-shot examples from MBPP train are in the exercise prompt
    ex_bodies = [b for b in ScriptedOracle.bodies if "write a new exercise" in b["messages"][0]["content"].lower()]
    assert all("response_format" not in b for b in ex_bodies)
    assert all("Example:" in b["messages"][0]["content"] for b in ex_bodies)


def test_one_repair_round_sends_back_what_no_solution_passes(tmp_path, scripted_server, ray_cluster):
    """oracle.repair_rounds: 1: the exercise whose function returns nothing is sent back with its error and
    comes back correct (kept, its old solution in `repaired_from`); the tests are the same; the filters still
    drop the duplicate and the contaminated one."""
    from codealign.pipeline.cli import main

    out = tmp_path / "out"
    cfg = write_config(tmp_path, scripted_server, repair_rounds=1)
    assert main(["generate-data", "--config", str(cfg), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"exact_duplicate": 1, "contaminated": 1, "malformed_no_code_block": 1}
    assert report["generation"]["repair"] == {"asked": 1, "answers": 3, "fixed": 1}
    repair_prompts = [b["messages"][0]["content"] for b in ScriptedOracle.bodies
                      if "but it does not" in b["messages"][0]["content"]]
    assert len(repair_prompts) == 1 and "returns_nothing" in repair_prompts[0]
    rows = {r["entry_point"]: r for r in map(json.loads, (out / "exercises.jsonl").read_text().splitlines())}
    assert rows["double"]["reference"] == "def double(x):\n    return x * 2\n"
    assert "x * 2" in rows["double"]["repaired_from"] and "return" not in rows["double"]["repaired_from"]
    assert rows["double"]["tests"].count("assert ") == 3 and rows["count_vowels"]["repaired_from"] == ""


def test_json_format_sends_the_schema_as_response_format(tmp_path, scripted_server, ray_cluster):
    from codealign.pipeline.cli import main

    cfg = write_config(tmp_path, scripted_server, answer_format="json", exercises_per_subcategory=1)
    out = tmp_path / "out"
    assert main(["generate-data", "--config", str(cfg), "--out", str(out)]) == 0
    ex_bodies = [b for b in ScriptedOracle.bodies if "write a new exercise" in b["messages"][0]["content"].lower()]
    assert ex_bodies and all(b["response_format"]["type"] == "json_schema" for b in ex_bodies)
    assert ex_bodies[0]["response_format"]["json_schema"]["schema"]["required"] == [
        "entry_point", "description", "solution", "tests"]
    report = json.loads((out / "report.json").read_text())  # scripted answers are blocks, not JSON: malformed
    assert report["kept"] == [] and report["counts"]["malformed_not_json"] >= 1


def test_mbpp_training_prompts_show_one_assert_and_keep_all_tests(data_dir):
    from codealign.exercises.generation import with_visible_tests
    from codealign.exercises.loaders import load_mbpp

    ex = load_mbpp(data_dir, (601, 601))[0]
    shown = with_visible_tests(ex, 1)
    assert ex.prompt.count("assert ") == 3 and shown.prompt.count("assert ") == 1
    assert shown.tests == ex.tests and shown.reference == ex.reference


def test_generate_data_refuses_a_used_out_dir_and_a_missing_oracle(tmp_path, capsys):
    from codealign.pipeline.cli import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "p", "tests": "assert 1", "reference": "x = 1"}) + "\n")
    assert main(["generate-data", "--input", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "out" / "keep.txt").read_text() == "mine"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {}, "train": {}, "loop": {}}))
    assert main(["generate-data", "--config", str(cfg), "--out", str(tmp_path / "new")]) == 2
    assert "oracle.backend" in capsys.readouterr().err and not (tmp_path / "new").exists()
