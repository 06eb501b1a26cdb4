"""Autoscaling, simulated with Ray's fake multi-node provider (the PyPI wheel lacks the example YAML that
`ray.cluster_utils.AutoscalingCluster` reads, so the node types are given here, shaped like cluster.yaml's): a head
with no CPU for tasks, a generator node type and a sandbox node type that the autoscaler launches on demand as
local raylets. The generator's actor lands on a generator node; the executor pool grows while work queues, which
makes the autoscaler add a second sandbox node, its actors all land on sandbox nodes, and it shrinks when idle."""

import json
import subprocess
import sys
from pathlib import Path

from tests.private_ray import private_head

ROOT = Path(__file__).resolve().parents[2]

NODE = {"node_config": {}, "min_workers": 0}
FAKE_CLUSTER = {
    "cluster_name": "codealign-fake", "max_workers": 3, "upscaling_speed": 10.0, "idle_timeout_minutes": 5,
    # the provider keys of Ray's own fake_multi_node/example.yaml (not in the wheel). disable_node_updaters is the one
    # that matters: without it the autoscaler starts an updater thread per fake node (a local raylet, nothing to
    # SSH into), the update fails and the node is terminated about a second after launch ("launch failed"), with
    # the actors placed on it (seen here: the probe's executor died with "Terminated by autoscaler"). The other two
    # are the example's; the probe also passed without use_node_id_as_ip.
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "use_internal_ips": True, "auth": {"ssh_user": "ubuntu"}, "docker": {},
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        "generator_gpu": {**NODE, "resources": {"CPU": 1, "generator": 1}, "max_workers": 1},
        "sandbox_cpu": {**NODE, "resources": {"CPU": 1, "sandbox": 2}, "max_workers": 2},
    },
    "head_node_type": "ray.head.default",
    "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
    "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
}


def test_actors_land_on_their_node_types_and_the_executor_pool_scales(tmp_path):
    with private_head(num_cpus=0, autoscaling_config=FAKE_CLUSTER) as head:
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "autoscale_probe.py"), head.address],
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
