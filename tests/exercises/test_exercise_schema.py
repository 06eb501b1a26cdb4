"""The exercise JSONL schema: round trip, and errors that name the line and the field."""

import json

import pytest

from codealign.exercises.schema import ExerciseFileError, exercise_row, load_exercises_jsonl, write_exercises_jsonl
from codealign.records import Exercise


def test_round_trip_keeps_fields_and_provenance(tmp_path):
    ex = Exercise(id="gen/1", prompt="Write add.", tests="assert add(1, 2) == 3\n", entry_point="add",
                  reference="def add(a, b):\n    return a + b\n")
    path = write_exercises_jsonl(tmp_path / "out" / "ex.jsonl", [exercise_row(ex, persona="chef")])
    (back,) = load_exercises_jsonl(path)
    assert (back.id, back.prompt, back.tests, back.entry_point, back.reference) == (
        ex.id, ex.prompt, ex.tests, ex.entry_point, ex.reference)
    assert json.loads(path.read_text())["persona"] == "chef"
    assert [p.name for p in path.parent.iterdir()] == ["ex.jsonl"]  # no temporary file left behind


@pytest.mark.parametrize("line, message", [
    ("{not json", ":2: not valid JSON"),
    ('{"id": "b", "prompt": "p"}', ":2: missing required field 'tests'"),
    ('{"id": "b", "prompt": "p", "tests": 3}', ":2: field 'tests' must be a string"),
    ('{"id": "b", "prompt": " ", "tests": "assert 1"}', ":2: field 'prompt' is empty"),
    ('["a"]', ":2: expected a JSON object"),
    ('{"id": "a", "prompt": "p", "tests": "assert 1"}', ":2: duplicate id 'a' (first on line 1)"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    path = tmp_path / "ex.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "tests": "assert 1"}\n' + line + "\n")
    with pytest.raises(ExerciseFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_exercises_jsonl(path)


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(ExerciseFileError, match="cannot read exercise file"):
        load_exercises_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ExerciseFileError, match="no exercises"):
        load_exercises_jsonl(tmp_path / "empty.jsonl")
