"""The driver's state file (pipeline/state.py): what a resume reads back, including files older versions wrote."""

import json
import random

import pytest

from codealign.pipeline.state import STATE_FILE, DriverState


def test_a_saved_state_reads_back_field_for_field_with_the_sampler_where_it_stopped(tmp_path):
    rng = random.Random(7)
    rng.random()
    state = DriverState(next_iteration=3, policy_version=2, learner_checkpoint="train/stream/v00002",
                        stream={"trained": 2, "released": 3, "buffer": "buffer_00002.pkl"})
    state.capture_rng(rng)
    state.save(tmp_path)
    back = DriverState.load(tmp_path)
    assert back == state
    resumed = random.Random(0)
    back.restore_rng(resumed)
    assert resumed.random() == rng.random()


def test_a_state_file_written_before_learner_rounds_went_still_resumes(tmp_path):
    # older files carry learner_rounds, which repeated stream["trained"]; the field is gone, the file still loads
    old = {"next_iteration": 2, "policy_version": 1, "learner_rounds": 1, "learner_checkpoint": "train/stream/v00001",
           "stream": {"trained": 1, "released": 2}}
    (tmp_path / STATE_FILE).write_text(json.dumps(old))
    state = DriverState.load(tmp_path)
    assert (state.next_iteration, state.stream["trained"]) == (2, 1)
    assert state.published_dir(tmp_path) == tmp_path / "train/stream/v00001"


def test_a_resume_whose_published_version_is_gone_says_which_directory(tmp_path):
    DriverState(learner_checkpoint="train/stream/v00004").save(tmp_path)
    with pytest.raises(FileNotFoundError, match="v00004"):
        DriverState.load(tmp_path).published_checkpoint(tmp_path)
    assert DriverState.load(tmp_path / "nowhere") is None
