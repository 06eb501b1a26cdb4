"""Autoscaling, simulated with Ray's fake multi-node provider (the PyPI wheel lacks the example YAML that
`ray.cluster_utils.AutoscalingCluster` reads, so the node types are given here, shaped like cluster.yaml's): a head
with no CPU for tasks, a generator node type and a sandbox node type that the autoscaler launches on demand as
local raylets. The generator's actor lands on a generator node; the executor pool grows while work queues, which
makes the autoscaler add a second sandbox node, its actors all land on sandbox nodes, and it shrinks when idle."""

import json
import subprocess
import sys
from pathlib import Path

from tests.private_ray import fake_cluster_config, private_head

ROOT = Path(__file__).resolve().parents[2]

NODE = {"node_config": {}, "min_workers": 0}
FAKE_CLUSTER = fake_cluster_config({
    "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
    "generator_gpu": {**NODE, "resources": {"CPU": 1, "generator": 1}, "max_workers": 1},
    "sandbox_cpu": {**NODE, "resources": {"CPU": 1, "sandbox": 2}, "max_workers": 2},
}, max_workers=3)


def test_actors_land_on_their_node_types_and_the_executor_pool_scales(tmp_path):
    with private_head(num_cpus=0, autoscaling_config=FAKE_CLUSTER) as head:
        # -m from the checkout: run as a script from tests/, `codealign` would resolve to tests/codealign
        proc = subprocess.run([sys.executable, "-m", "tests.autoscale_probe", head.address],
                              cwd=ROOT, env={**head.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["passed"] == out["jobs"] == 24
    assert "generator" in out["generator_node_resources"] and "sandbox" not in out["generator_node_resources"]
    assert out["peak"] == out["grown"] == 4  # grew to max_actors while chunks queued
    assert all("sandbox" in r and "generator" not in r for r in out["executor_node_resources"])
    assert out["executor_nodes"] == 2  # 4 actors at 2 per sandbox node: the autoscaler added a second node
    assert out["after_idle"] == 1  # back to min_actors once idle
