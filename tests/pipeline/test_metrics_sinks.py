"""Metric sinks: TensorBoard event files in the run directory (read back with TensorBoard's own reader), and W&B in
offline mode (its run files on disk, no network), both continuing cleanly after a resume."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from codealign.config import RunConfig
from codealign.pipeline.metrics import MetricSinks, flatten

RECORD = {"iteration": 0, "reward_mean": -1.5, "verdicts": {"passed": 2, "failed": 6}, "seconds": {"train": 3.0},
          "dpo/loss": 0.69, "dpo/loss@rank1": 0.71, "failure": {"stage": "train", "message": "nan"}}


def wandb_records(path):
    """(kind, {key: value}) for each record of a W&B offline log (a LevelDB-style log of protobuf records; wandb
    ships no reader for it)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first | middle, last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            which = record.WhichOneof("record_type")
            items = {"history": lambda r: r.history.item, "summary": lambda r: r.summary.update}.get(which)
            values = {i.key or "|".join(i.nested_key): json.loads(i.value_json) for i in items(record)} if items else {}
            if which == "history":
                values["_step"] = record.history.step.num
            yield which, values


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, round(e.value, 4)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_flatten_keeps_numbers_and_names_nested_ones():
    flat = flatten(RECORD)
    assert flat["verdicts.passed"] == 2.0 and flat["seconds.train"] == 3.0 and flat["dpo/loss@rank1"] == 0.71
    assert "failure.stage" not in flat  # text is not a scalar


def test_tensorboard_events_and_a_resume_drops_points_after_the_saved_state(tmp_path):
    sinks = MetricSinks(RunConfig(), tmp_path)
    for step in range(3):
        sinks.log({**RECORD, "reward_mean": float(step)}, step=step)
    sinks.close()
    assert scalars(tmp_path)["reward_mean"] == [(0, 0.0), (1, 1.0), (2, 2.0)]

    # the driver died after step 2 was logged but before its state was saved: the resume starts again at 2
    sinks = MetricSinks(RunConfig(), tmp_path, start_step=2)
    sinks.log({**RECORD, "reward_mean": 20.0}, step=2)
    sinks.summary({"pass@1_after": 0.25})
    sinks.close()
    got = scalars(tmp_path)
    assert got["reward_mean"] == [(0, 0.0), (1, 1.0), (2, 20.0)]
    assert got["summary/pass@1_after"] == [(0, 0.25)] and got["dpo/loss@rank1"][0][1] == 0.71


def test_wandb_offline_run_in_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = RunConfig()
    cfg.metrics.wandb.project = "codealign-test"
    sinks = MetricSinks(cfg, tmp_path)
    sinks.log(RECORD, step=0)
    sinks.log({**RECORD, "reward_mean": 1.0}, step=1)
    sinks.summary({"pass@1_after": 0.5})
    sinks.close()
    run_id = (tmp_path / "wandb_run_id").read_text()
    [log] = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))  # what `wandb sync` uploads
    history = [r for kind, r in wandb_records(log) if kind == "history"]
    assert [(h["_step"], h["reward_mean"], h["verdicts.passed"]) for h in history] == [(0, -1.5, 2), (1, 1.0, 2)]
    summary: dict = {}
    for kind, r in wandb_records(log):
        if kind == "summary":
            summary.update(r)
    assert summary["pass@1_after"] == 0.5
    assert any(kind == "run" for kind, _ in wandb_records(log))

    # a resumed driver continues the same W&B run
    sinks = MetricSinks(cfg, tmp_path, start_step=2)
    assert sinks.wandb.id == run_id
    sinks.close()


def test_a_local_run_serves_the_ray_dashboard(tmp_path):
    """The options the driver starts a local Ray with: the dashboard answers on 127.0.0.1 (a subprocess, so the
    session's Ray cluster is not touched)."""
    import subprocess
    import sys

    script = """
import json, urllib.request, ray
from codealign.config import RunConfig
from codealign.pipeline.operations import local_ray_options
cfg = RunConfig(ray_num_cpus=1, ray_dashboard_port=0)
ctx = ray.init(**local_ray_options(cfg))
url = "http://" + ctx.dashboard_url
print(json.dumps({"url": url, "version": json.load(urllib.request.urlopen(url + "/api/version", timeout=60))}))
ray.shutdown()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**__import__("os").environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["url"].startswith("http://127.0.0.1:") and out["version"]["ray_version"]


def test_a_taken_dashboard_port_falls_back_to_a_free_one(capsys):
    """A second local run on the same machine: the configured dashboard port is held, and Ray would refuse to
    start on it ("Failed to bind"); the run serves its dashboard on a free port instead and says where."""
    import socket

    from codealign.config import RunConfig
    from codealign.pipeline.operations import local_ray_options

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        opts = local_ray_options(RunConfig(ray_dashboard_port=taken))
        assert opts["dashboard_port"] != taken
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", opts["dashboard_port"]))  # free
    assert f"port {taken} is taken" in capsys.readouterr().out
    free = opts["dashboard_port"]
    assert local_ray_options(RunConfig(ray_dashboard_port=free))["dashboard_port"] == free


def _gather_on_rank(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from codealign.trainers.steps import with_rank_metrics

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metrics = {"dpo/loss": 0.5 + rank, "dpo/steps": 4, "dpo/tokens": 100 * (rank + 1), "note": "x"}
        out.put((rank, with_rank_metrics(metrics)))
    finally:
        dist.destroy_process_group()


def test_every_ranks_numbers_where_they_differ():
    """Two real gloo ranks (the collective Ray Train's workers run at report time): rank 0's report gains each
    rank's value of the numbers that differ, and only of those."""
    import torch.multiprocessing as mp

    from codealign.pipeline.operations import free_port

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_gather_on_rank, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    report = got[0]
    assert report["dpo/loss@rank0"] == 0.5 and report["dpo/loss@rank1"] == 1.5
    assert report["dpo/tokens@rank1"] == 200 and "dpo/steps@rank1" not in report  # equal on every rank
    assert report["dpo/loss"] == 0.5 and report["note"] == "x"
