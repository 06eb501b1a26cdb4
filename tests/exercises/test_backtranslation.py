"""Instruction back-translation with ranking: `launch.py generate-data --backtranslate DIR` against a real
OpenAI-compatible HTTP server on loopback (scripted answers) through the real RemoteOracle client: the oracle
writes one instruction per code file, a different model rates each, the well-rated pairs become SFT data."""

import http.server
import json

import pytest
import yaml

from codealign.config import ConfigError, config_from_dict
from codealign.exercises.backtranslation import parse_rating
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
    from codealign.pipeline.cli import main

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


def test_the_learner_trains_on_the_back_translated_file(tmp_path, server, ray_cluster, tiny_model_path):
    # generate-data's sft.jsonl is what train.sft.data_file reads: a real SFT batch on it through the learner
    from codealign.config import LoraConfig, SftConfig, TrainConfig
    from codealign.pipeline.cli import main
    from codealign.trainers.sft import load_sft_file
    from tests.conftest import train_batches

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "add.py").write_text(FILES["add.py"])
    cfg = tmp_path / "bt.yaml"
    cfg.write_text(yaml.safe_dump({"model": {}, "train": {}, "loop": {}, "oracle": {
        "backend": "remote", "base_url": server, "model": "writer", "rater_model": "judge"}}))
    out = tmp_path / "out"
    assert main(["generate-data", "--config", str(cfg), "--backtranslate", str(corpus), "--out", str(out)]) == 0
    sft = SftConfig(data_file=str(out / "sft.jsonl"))
    [example] = load_sft_file(sft)
    assert example.prompt == "Write add(a, b) that returns the sum of two numbers." and "a + b" in example.completion
    train = TrainConfig(algorithm="sft", learning_rate=3e-3, epochs=8, batch_size=1, max_length=96,
                        lora=LoraConfig(r=8, alpha=16), sft=sft)
    (report,) = train_batches(train, tiny_model_path, tmp_path / "train", [[example]])
    metrics = report["metrics"]
    assert metrics["sft/examples"] == 1 and metrics["sft/loss_last"] < metrics["sft/loss_first"] - 0.5


@pytest.mark.parametrize("text, problem", [
    ('{"prompt": "p", "completion": "c"}\nnot json\n', "line 2 is not JSON"),
    ('{"prompt": "p"}\n', "line 1 needs non-empty string 'prompt' and 'completion'"),
    ("\n", "holds no examples"),
])
def test_a_bad_sft_file_is_refused_naming_the_line(tmp_path, text, problem):
    from codealign.config import SftConfig
    from codealign.trainers.sft import load_sft_file

    path = tmp_path / "sft.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"train.sft.data_file: .*{problem}"):
        load_sft_file(SftConfig(data_file=str(path)))
    with pytest.raises(FileNotFoundError, match="train.sft.data_file: .* is not a file"):
        load_sft_file(SftConfig(data_file=str(tmp_path / "missing.jsonl")))


def test_an_sft_file_and_a_corpus_together_are_refused():
    with pytest.raises(ConfigError, match="train.sft.data_file: set either it or train.sft.corpus_dir"):
        config_from_dict({"model": {}, "loop": {},
                          "train": {"algorithm": "sft", "sft": {"data_file": "a.jsonl", "corpus_dir": "repo"}}})


def test_the_rater_must_be_another_model_and_is_required(tmp_path, capsys):
    with pytest.raises(ConfigError, match="oracle.rater_model"):
        config_from_dict({"model": {}, "train": {}, "loop": {},
                          "oracle": {"backend": "remote", "base_url": "http://x", "model": "m", "rater_model": "m"}})
    from codealign.pipeline.cli import main

    cfg = tmp_path / "bt.yaml"
    cfg.write_text(yaml.safe_dump({"model": {}, "train": {}, "loop": {},
                                   "oracle": {"backend": "remote", "base_url": "http://127.0.0.1:9/v1"}}))
    assert main(["generate-data", "--config", str(cfg), "--backtranslate", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "oracle.rater_model" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_ratings_parse_from_a_digit_standing_alone():
    texts = ("4", "Rating: 3/5", "I'd say 5.", "10 out of 10", "none")
    assert [parse_rating(t) for t in texts] == [4, 3, 5, None, None]
