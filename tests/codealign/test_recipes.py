"""Every recipe in configs/ passes check-config, and loads to the effective config it had before the recipes were
rewritten to extend configs/local.yaml (fixtures/recipes_before.json: the defaults and each recipe's differences
from them, as the hand-written config module of 5293fdb resolved them). With inheritance an edit of local.yaml
changes every recipe: the snapshot catches that; a deliberate change of a recipe's effect updates the snapshot."""

import json

import pytest
import yaml

from codealign.config import ConfigError, config_from_dict, load_config
from codealign.pipeline.cli import main
from tests.conftest import ROOT

RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
BEFORE = json.loads((ROOT / "tests" / "codealign" / "fixtures" / "recipes_before.json").read_text())
# options a recipe set that its algorithm never read (now refused in it), and where they went
MOVED = {("quality.yaml", "train.max_pairs"): "DPO's; bench/quality.py's DPO stage sets it"}


def value_at(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return json.loads(json.dumps(node))  # tuples as lists, as in the snapshot


def test_the_snapshot_covers_every_recipe():
    assert sorted(BEFORE["recipes"]) == [p.name for p in RECIPES]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_to_the_effective_config_it_had(path):
    cfg = load_config(path)
    own = type(cfg.train).model_fields
    before = {**BEFORE["defaults"], **BEFORE["recipes"][path.name]}
    changed = {}
    for key, old in before.items():
        parts = key.split(".")
        if parts[0] == "train" and parts[1] not in own:  # another algorithm's option: it did nothing here
            assert old == BEFORE["defaults"][key] or (path.name, key) in MOVED, f"{key}={old} was set and is lost"
            continue
        if value_at(cfg, key) != old:
            changed[key] = (old, value_at(cfg, key))
    assert changed == {}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_passes_check_config(path, capsys):
    assert main(["check-config", "--config", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert config_from_dict(printed) == load_config(path)  # what a run saves as config.yaml loads back the same


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_recipe_extends_its_base_and_states_only_what_differs(tmp_path):
    base = write(tmp_path / "base.yaml", {"name": "b", "model": {"max_model_len": 1024}, "loop": {"iterations": 3},
                                          "train": {"max_pairs": 5, "learning_rate": 1e-3, "lora": {"r": 4}}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml", "name": "c", "train": {"lora": {"alpha": 8}}})
    cfg = load_config(child)
    assert (cfg.name, cfg.model.max_model_len, cfg.loop.iterations) == ("c", 1024, 3)
    assert (cfg.train.max_pairs, cfg.train.lora.r, cfg.train.lora.alpha) == (5, 4, 8)
    # another algorithm keeps the base's shared options and leaves DPO's own behind, in a file or by --set
    write(child, {"base": "base.yaml", "train": {"algorithm": "sft", "sft": {"glob": "*.txt"}}})
    for cfg in (load_config(child), load_config(base, ["train.algorithm=sft"])):
        assert cfg.train.algorithm == "sft" and cfg.train.learning_rate == 1e-3 and cfg.train.lora.r == 4
    assert load_config(child).train.sft.glob == "*.txt"


def test_a_broken_base_is_named(tmp_path):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="base: .*a.yaml extends itself"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", {"base": "missing.yaml"})
    with pytest.raises(ConfigError, match="missing.yaml: not found"):
        load_config(tmp_path / "c.yaml")


def test_a_cluster_recipe_switches_algorithm_by_override():
    cfg = load_config(ROOT / "configs" / "cluster.yaml", ["train.algorithm=ppo", "train.critic=true"])
    assert cfg.train.critic and cfg.train.num_workers == 4 and cfg.train.resources_per_worker == {"learner": 1.0}
