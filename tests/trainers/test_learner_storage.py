"""Published versions on storage: at most `train.num_to_keep` are kept (never fewer than two: the driver loads a
version once it is reported, and its commit point is the version before), the newest being what the generators
and a restarted learner read (the learner's real Ray Train run on the tiny model)."""

from pathlib import Path

import pytest

from codealign.config import ConfigError, LoraConfig, TrainConfig, config_from_dict
from codealign.records import PreferencePair
from tests.conftest import train_batches

PAIRS = [PreferencePair("Write add(a, b).", "def add(a, b):\n    return a + b\n",
                        "def add(a, b):\n    return a - b\n", "passed>failed", "t/1")] * 2
ROOT = Path(__file__).resolve().parents[2]


def test_only_the_newest_published_versions_are_kept(ray_cluster, tiny_model_path, tmp_path):
    cfg = TrainConfig(learning_rate=2e-3, batch_size=2, num_to_keep=3, lora=LoraConfig(r=4, alpha=8))
    reports = train_batches(cfg, tiny_model_path, tmp_path / "train", [PAIRS] * 4)
    merged = [Path(r["weights"]) for r in reports]
    versions = sorted(p.name for p in (tmp_path / "train" / "stream").glob("v*"))
    assert versions == ["v00002", "v00003", "v00004"]
    assert not merged[0].exists() and all(m.is_file() for m in merged[1:])
    assert (merged[-1].parent / "adapter").is_dir()


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
