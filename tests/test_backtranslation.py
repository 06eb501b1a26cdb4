"""Instruction back-translation with ranking: `launch.py generate-data --backtranslate DIR` against a real
OpenAI-compatible HTTP server on loopback (scripted answers) through the real RemoteOracle client: the oracle
writes one instruction per code file, a different model rates each, the well-rated pairs become SFT data."""

import http.server
import json

import pytest
import yaml

from codealign.config import ConfigError, config_from_dict
from exercises.backtranslation import parse_rating
from tests.loopback_openai import chat_reply, serve

FILES = {"add.py": "def add(a, b):\n    return a + b\n", "sort.py": "def top(xs):\n    return max(xs)\n",
         "mute.py": "X = 1\n", "notes.txt": "not code"}


class Scripted(http.server.BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        Scripted.bodies.append(body)
        if "Rate how well" in prompt:
            text = "5" if "sum of two numbers" in prompt else "Rating: 2/5"
        elif "a + b" in prompt:
            text = "Write add(a, b) that returns the sum of two numbers."
        elif "max(xs)" in prompt:
            text = "Sort a list."  # wrong: the rater says so
        else:
            text = "   "  # no instruction
        chat_reply(self, [text])

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Scripted.bodies = []
    with serve(Scripted) as url:
        yield url


def test_instructions_written_by_the_oracle_rated_by_another_model(tmp_path, server):
    from launch import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in FILES.items():
        (corpus / name).write_text(text)
    cfg = tmp_path / "bt.yaml"
    cfg.write_text(yaml.safe_dump({"model": {}, "train": {}, "loop": {}, "oracle": {
        "backend": "remote", "base_url": server, "model": "writer", "rater_model": "judge", "min_rating": 4}}))
    out = tmp_path / "out"
    assert main(["generate-data", "--config", str(cfg), "--backtranslate", str(corpus), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert rows == [{"prompt": "Write add(a, b) that returns the sum of two numbers.",
                     "completion": "```python\ndef add(a, b):\n    return a + b\n```", "path": "add.py", "rating": 5}]
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"kept": 1, "low_rating": 1, "no_instruction": 1}
    assert report["dropped"] == {"sort.py": "low_rating", "mute.py": "no_instruction"}
    assert report["ratings"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    by_kind = {("rate" if "Rate how well" in b["messages"][0]["content"] else "write", b["model"])
               for b in Scripted.bodies}
    assert by_kind == {("write", "writer"), ("rate", "judge")}  # the writer never rates its own instructions


def test_the_rater_must_be_another_model_and_is_required(tmp_path, capsys):
    with pytest.raises(ConfigError, match="oracle.rater_model"):
        config_from_dict({"model": {}, "train": {}, "loop": {},
                          "oracle": {"backend": "remote", "base_url": "http://x", "model": "m", "rater_model": "m"}})
    from launch import main

    cfg = tmp_path / "bt.yaml"
    cfg.write_text(yaml.safe_dump({"model": {}, "train": {}, "loop": {},
                                   "oracle": {"backend": "remote", "base_url": "http://127.0.0.1:9/v1"}}))
    assert main(["generate-data", "--config", str(cfg), "--backtranslate", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "oracle.rater_model" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_ratings_parse_from_a_digit_standing_alone():
    texts = ("4", "Rating: 3/5", "I'd say 5.", "10 out of 10", "none")
    assert [parse_rating(t) for t in texts] == [4, 3, 5, None, None]
