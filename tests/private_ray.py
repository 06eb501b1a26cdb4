"""A Ray head of a test's own, started with `ray start --head` the way a user starts one, on loopback, on free ports
and in a private temp dir, so it never meets the other Ray clusters on this machine; stopped by killing exactly the
processes it started (`ray stop` would stop every Ray instance on the machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class Head:
    address: str  # host:port of the GCS
    dashboard: str  # http://127.0.0.1:<port>, the Jobs API
    temp_dir: Path
    env: dict  # the environment to talk to it (PATH with this venv, no RAY_ADDRESS)


def head_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{env.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"})
    env.update(extra or {})
    return env


@contextmanager
def private_head(num_cpus: float = 4, resources: dict | None = None, autoscaling_config: dict | None = None,
                 env_extra: dict | None = None):
    # Unix socket paths live under the temp dir and must stay short
    temp_dir = Path(tempfile.mkdtemp(prefix="ca-ray-", dir="/tmp"))
    gcs, dash, client, agent, agent_grpc, metrics, rt_env, node_mgr, obj_mgr = free_ports(9)
    # workers' ports: a range below the kernel's ephemeral ports (32768+), where free_ports' picks never fall
    worker_lo = 10000 + (gcs % 100) * 200
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={rt_env}", f"--node-manager-port={node_mgr}",
           f"--object-manager-port={obj_mgr}", f"--min-worker-port={worker_lo}",
           f"--max-worker-port={worker_lo + 199}", f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}",
           "--disable-usage-stats"]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    extra = dict(env_extra or {})
    if autoscaling_config is not None:
        config = dict(autoscaling_config)
        config["provider"] = {**config["provider"], "gcs_address": f"127.0.0.1:{gcs}"}
        path = temp_dir / "autoscaling.yaml"
        path.write_text(json.dumps(config))
        cmd.append(f"--autoscaling-config={path}")
        extra.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    env = head_env(extra)
    try:
        for attempt in range(3):  # Ray gives its raylet 30 s to come up, which a loaded machine can miss
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                break
            stop(temp_dir, keep=True)
            errors = [line for line in (proc.stdout + proc.stderr).splitlines()
                      if "Error" in line or "Exception" in line or "timed out" in line]
            if attempt == 2:
                raise RuntimeError(f"ray start failed ({proc.returncode}):\n" + "\n".join(errors[-20:]))
        yield Head(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", temp_dir, head_env())
    finally:
        stop(temp_dir)


def stop(temp_dir: Path, keep: bool = False) -> None:
    """Kill the processes of this head (their command lines name its temp dir) and everything they started."""
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(temp_dir) in " ".join(p.info["cmdline"] or [])]
    victims = {p.pid: p for p in mine}
    for p in mine:
        try:
            victims.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    for p in victims.values():
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(victims.values()), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    time.sleep(0.5)
    if not keep:
        shutil.rmtree(temp_dir, ignore_errors=True)


def fake_cluster_config(node_types: dict, max_workers: int, head_type: str = "ray.head.default") -> dict:
    """An autoscaling config for Ray's fake multi-node provider (local raylets launched on demand as nodes of
    `node_types`), for `private_head(autoscaling_config=...)`. The PyPI wheel lacks the example YAML that
    `ray.cluster_utils.AutoscalingCluster` reads, so the keys are spelled out here."""
    return {
        "cluster_name": "codealign-fake", "max_workers": max_workers, "upscaling_speed": 10.0,
        "idle_timeout_minutes": 5,
        # the provider keys of Ray's own fake_multi_node/example.yaml (not in the wheel). disable_node_updaters is
        # the one that matters: without it the autoscaler starts an updater thread per fake node (a local raylet,
        # nothing to SSH into), the update fails and the node is terminated about a second after launch ("launch
        # failed"), with the actors placed on it (seen in test_autoscaling: the probe's executor died with
        # "Terminated by autoscaler"). The other two are the example's; the probe also passed without
        # use_node_id_as_ip.
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "use_internal_ips": True, "auth": {"ssh_user": "ubuntu"}, "docker": {},
        "available_node_types": node_types, "head_node_type": head_type,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }
