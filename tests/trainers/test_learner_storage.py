"""Round checkpoints on storage: at most `train.num_to_keep` are kept, and the newest is the one the next round and
the generators use (real Ray Train rounds on the tiny model)."""

from pathlib import Path

import pytest

from codealign.config import ConfigError, LoraConfig, TrainConfig, config_from_dict
from codealign.records import PreferencePair

PAIRS = [PreferencePair("Write add(a, b).", "def add(a, b):\n    return a + b\n",
                        "def add(a, b):\n    return a - b\n", "passed>failed", "t/1")] * 2
ROOT = Path(__file__).resolve().parents[2]


def test_only_the_newest_round_checkpoints_are_kept(ray_cluster, tiny_model_path, tmp_path):
    from codealign.trainers.learner import Learner

    cfg = TrainConfig(learning_rate=2e-3, batch_size=2, num_to_keep=2, lora=LoraConfig(r=4, alpha=8))
    learner = Learner(cfg, tiny_model_path, tmp_path / "train")
    merged = [learner.train_round(PAIRS)[1] for _ in range(3)]
    rounds = sorted(p.name for p in (tmp_path / "train").iterdir() if p.name.startswith("round_"))
    assert rounds == ["round_002", "round_003"]
    assert not merged[0].exists() and merged[1].is_file() and merged[2].is_file()
    assert learner.adapter_dir.startswith(str(tmp_path / "train" / "round_003"))


def test_num_to_keep_is_checked_at_load():
    with pytest.raises(ConfigError, match="train.num_to_keep"):
        config_from_dict({"model": {}, "train": {"num_to_keep": -1}, "loop": {}})


def test_the_cluster_recipe_does_not_claim_object_storage():
    # round checkpoints are read back by path (learner workers, generators): only a shared file system works
    assert "s3://" not in (ROOT / "configs" / "cluster.yaml").read_text()


def test_an_adapter_above_the_engines_lora_rank_is_refused_at_load():
    raw = {"model": {}, "generator": {"enable_lora": True, "max_lora_rank": 8}, "train": {"lora": {"r": 16}},
           "loop": {}}
    with pytest.raises(ConfigError, match=r"generator.max_lora_rank: 8 is below train.lora.r \(16\)"):
        config_from_dict(raw)
    raw["generator"]["max_lora_rank"] = 16
    assert config_from_dict(raw).generator.enable_lora
