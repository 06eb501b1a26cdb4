"""cluster.yaml cannot be launched here (no cloud, no GPU); check that it is a coherent autoscaler config."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_has_head_and_gpu_and_cpu_workers_with_bounds():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert {"gpu_worker", "cpu_worker"} <= set(types)
    for spec in types.values():
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= cfg["max_workers"]
    assert any("[gpu]" in cmd for cmd in cfg["setup_commands"])


def test_cluster_config_loads():
    from codealign.config import load_config

    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    assert cfg.train.use_gpu and cfg.generator.num_gpus == 1 and cfg.ray_address == "auto"
