"""Kill the driver (SIGKILL, a real one) mid-run, resume it with `launch.py run --resume`, and end where an
uninterrupted run with the same seed ends: same policy version, same experience (by sample id, none lost, none
twice), the learner continuing from its saved round, the same final weights (greedy outputs) and losses.

Real components throughout: the driver is a `launch.py run` subprocess joined to the session's Ray cluster, with
its own vLLM engine on the tiny model, sandbox executors and Ray Train rounds. Sampling uses top_p ~ 0 (a greedy
pick through the sampler) because vLLM-CPU seeds sampling per engine, not per request: a restarted engine could not
draw the same random samples (per-request seeds work on GPU)."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from codealign.config import config_from_dict
from codealign.pipeline.loop import run
from codealign.pipeline.state import STATE_FILE
from tests.tiny_runs import tiny_run_config

ROOT = Path(__file__).resolve().parents[2]


def experience_ids(run_dir: Path) -> dict[int, list[tuple[str, str]]]:
    out = {}
    for path in sorted((run_dir / "experience").glob("iter_*.pkl")):
        payload = pickle.loads(path.read_bytes())
        out[payload["iteration"]] = [(sid, e.completion) for sid, e in zip(payload["sample_ids"],
                                                                          payload["experiences"])]
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def kill_after_first_iteration(proc: subprocess.Popen, runs: Path, timeout_s: float = 600) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the driver ended before it could be killed"
        for state in runs.glob(f"*/{STATE_FILE}"):
            if json.loads(state.read_text())["next_iteration"] >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return state.parent
        time.sleep(0.2)
    raise AssertionError("iteration 0 never completed")


def kill_and_resume(ray_cluster, tmp_path: Path, raw: dict) -> tuple[Path, subprocess.CompletedProcess]:
    """`launch.py run` as a subprocess joined to the session's cluster, SIGKILLed once its first iteration is
    committed, then `launch.py run --resume` of its run directory to the end."""
    runs = Path(raw["output_dir"])
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    with (tmp_path / "driver.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "run", "--config", str(config),
                                 "--address", address], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        run_dir = kill_after_first_iteration(proc, runs)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()

    resume = subprocess.run([sys.executable, str(ROOT / "launch.py"), "run", "--resume", str(run_dir),
                             "--address", address], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    assert f"resuming {run_dir} at iteration 1" in resume.stdout
    return run_dir, resume


def test_a_killed_driver_resumes_and_ends_like_an_uninterrupted_run(ray_cluster, tiny_model_path, tmp_path):
    # SFT on the exercises' reference solutions (verified in the sandbox): training data that does not hang on
    # what the tiny random model happens to write
    # max_staleness 0: round 1 is sampled under round 0's weights in both runs (the resumed driver's engine serves
    # them), not under whichever version a round in flight at the kill happened to see
    sections = {"loop": {"temperature": 1.0, "top_p": 1e-6}, "pipeline": {"max_staleness": 0},
                "train": {"algorithm": "sft", "learning_rate": 5e-3, "batch_size": 1}}
    reference = run(config_from_dict(tiny_run_config(tmp_path / "plain", tiny_model_path, **sections)))
    reference.system.shutdown()
    ref_dir = reference.run_dir.path

    run_dir, resume = kill_and_resume(ray_cluster, tmp_path, tiny_run_config(tmp_path / "killed", tiny_model_path,
                                                                           **sections))
    # the experience: every sample of both iterations exactly once, the same as the uninterrupted run's
    ids = experience_ids(run_dir)
    assert sorted(ids) == [0, 1]
    flat = [sid for it in ids.values() for sid, _ in it]
    assert len(flat) == len(set(flat)) == 8
    assert ids == experience_ids(ref_dir)

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    ref_metrics = read_jsonl(ref_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1]  # each iteration trained once
    for m, r in zip(metrics, ref_metrics):
        assert (m["policy_version"], m["new_policy_version"]) == (r["policy_version"], r["new_policy_version"])
        assert m["train_items"] == r["train_items"] > 0
        # round 2 starts from round 1's adapter: a resume that lost it would start round 2 elsewhere
        assert m["sft/loss_first"] == pytest.approx(r["sft/loss_first"], rel=1e-3, abs=1e-4)
        assert m["sft/loss"] == pytest.approx(r["sft/loss"], rel=1e-3, abs=1e-4)

    summary = json.loads((run_dir / "summary.json").read_text())
    ref_summary = json.loads((ref_dir / "summary.json").read_text())
    assert summary["policy_version"] == ref_summary["policy_version"] == 2
    assert summary["replay_buffer"] == ref_summary["replay_buffer"]  # refilled from the saved experience
    assert summary["pass@1_after"] == pytest.approx(ref_summary["pass@1_after"], abs=1e-9)
    assert summary["resumed"] is True
    # the final policy is the same: greedy evaluation outputs agree text for text
    after = [s["text"] for s in read_jsonl(run_dir / "eval_after.jsonl")]
    assert after == [s["text"] for s in read_jsonl(ref_dir / "eval_after.jsonl")]
    assert {s["policy_version"] for s in read_jsonl(run_dir / "eval_after.jsonl")} == {2}
    # the killed driver's learner run, and the resumed one (a new Ray Train run, named by the step it starts at)
    assert sorted(p.name for p in (run_dir / "train").iterdir()) == ["stream", "stream_00001"]


def test_a_killed_stream_driver_resumes_with_its_buffer_and_long_lived_learner(ray_cluster, tiny_model_path,
                                                                               tmp_path):
    """The default schedule (stream, max_staleness 1, the long-lived DPO learner): killed after round 0's
    commit, the resumed driver restores the replay buffer's ledger and samples, the learner's adapter and the
    counters, and trains every sample id once, ending where the uninterrupted run ends."""
    # sampled as configs/local.yaml samples (a near-greedy pick gives the tiny model's empty completions: no pairs);
    # both drivers' fresh engines draw the same samples, and round 1 is judged long before round 0 has trained
    # (the learner starts meanwhile), so the killed driver's buffer holds it complete and the resume does not
    # sample it again. A learning rate at which a lost adapter would show in round 1's loss.
    sections = {"train": {"learning_rate": 1e-3},
                "pipeline": {"max_staleness": 1}}
    reference = run(config_from_dict(tiny_run_config(tmp_path / "plain", tiny_model_path, **sections)))
    reference.system.shutdown()
    ref_dir = reference.run_dir.path
    run_dir, resume = kill_and_resume(ray_cluster, tmp_path, tiny_run_config(tmp_path / "killed", tiny_model_path,
                                                                             **sections))
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert state["stream"]["trained"] == 2 and state["learner_checkpoint"].startswith("train/stream_00001/")

    ids = experience_ids(run_dir)  # what each round trained, by the buffer's sample ids
    assert sorted(ids) == [0, 1]
    flat = [sid for it in ids.values() for sid, _ in it]
    assert len(flat) == len(set(flat)) == 8
    assert {it: [sid for sid, _ in v] for it, v in ids.items()} == \
        {it: [sid for sid, _ in v] for it, v in experience_ids(ref_dir).items()}

    metrics, ref_metrics = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(ref_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1]
    for m, r in zip(metrics, ref_metrics):
        assert (m["policy_version"], m["new_policy_version"]) == (r["policy_version"], r["new_policy_version"])
        assert m["train_items"] == r["train_items"] > 0
        assert m["dpo/loss"] == pytest.approx(r["dpo/loss"], rel=1e-3, abs=1e-4)
        # the learner's optimizer (AdamW's moments, its step count) came back with the adapter
        assert (m["dpo/optimizer_carried"], m["dpo/global_step"]) == (r["dpo/optimizer_carried"], r["dpo/global_step"])
    assert metrics[1]["dpo/optimizer_carried"] == 1

    summary = json.loads((run_dir / "summary.json").read_text())
    ref_summary = json.loads((ref_dir / "summary.json").read_text())
    assert summary["resumed"] is True and summary["policy_version"] == ref_summary["policy_version"] == 2
    ledger, ref_ledger = summary["replay_buffer"]["ledger"], ref_summary["replay_buffer"]["ledger"]
    assert ledger["trained"] == ref_ledger["trained"] == 8 and ledger["in_flight"] == 0
    # the counts kept by the rollout, the buffer and the learner over both lives of the driver add up
    accounts = summary["replay_buffer"]["accounts"]
    assert accounts["balanced"], accounts["problems"]
    assert accounts["sent_ids"] == accounts["rollout"]["judged"] == accounts["buffer"]["taken"] == 8
    assert 0 < accounts["learner_ids"] <= 8
    assert summary["pass@1_after"] == pytest.approx(ref_summary["pass@1_after"], abs=1e-9)
    after = [s["text"] for s in read_jsonl(run_dir / "eval_after.jsonl")]
    assert after == [s["text"] for s in read_jsonl(ref_dir / "eval_after.jsonl")]


def test_a_round_in_flight_at_the_commit_is_produced_again_under_the_same_ids(ray_cluster):
    """The stream driver's own save/restore, on stand-in actors (seconds, not minutes): the driver dies right after
    round 0's commit while round 1 is still being generated; the resumed driver restores the buffer from the
    snapshot, admits round 1 again and trains every sample id exactly once over both lives."""
    import random

    import ray

    from bench.pipeline import SimLearner, SimPool
    from codealign.actors.replay_buffer import LedgerConfig, ReplayBuffer
    from codealign.config import RunConfig
    from codealign.pipeline.schedule import plan_rounds
    from codealign.pipeline.stream import StreamResume, run_stream
    from codealign.records import Completion, Exercise

    # two calls at a time: the weight update is answered while round 1's generation stalls (a vLLM replica would
    # answer it after that call, and the driver commits a round only once its weights are taken)
    @ray.remote(num_cpus=0, max_concurrency=2)
    class Generator:
        def __init__(self, stall_round: int, version: int):
            self.stall_round, self.version = stall_round, version

        def generate(self, requests):
            if any(r.seed // 1000 == self.stall_round for r in requests):  # a round's seeds: seed + 1000 * round
                time.sleep(60)  # still generating when the driver dies (killed below)
            return [[Completion(r.request_id, "def f():\n    return 1\n", [1] * 4, [-0.5] * 4, "stop", self.version)
                     for _ in range(r.n)] for r in requests]

        def update_weights(self, weights, version: int) -> None:
            self.version = version

    class Group:
        def __init__(self, stall_round: int, version: int = 0):  # a resumed driver serves the committed version
            self.replicas = [Generator.remote(stall_round, version)]

        def recover(self, i: int) -> None:
            pass

        def start_update(self, weights, version: int):
            return [r.update_weights.remote(None, version) for r in self.replicas]

    class Died(Exception):
        pass

    cfg = RunConfig()
    cfg.loop.iterations, cfg.loop.exercises_per_iteration, cfg.loop.samples_per_exercise = 3, 2, 2
    cfg.train.algorithm, cfg.pipeline.max_staleness = "ppo", 1
    plans = plan_rounds(cfg, [Exercise(f"ex{i}", f"exercise {i}", "assert True") for i in range(6)],
                        random.Random(0))
    ledger = LedgerConfig(max_staleness=1)
    saved = []

    def commit_then_die(cp):
        saved.append((cp, ray.get(buffer.snapshot.remote(cp.next_round))))
        raise Died

    gen, pool, learner, buffer = Group(stall_round=1), SimPool(1, 1e-3), SimLearner(1e-3), ReplayBuffer.remote(
        ledger=ledger)
    with pytest.raises(Died):
        run_stream(cfg, plans, gen, pool, buffer, learner, make_data=lambda plan, exps: exps,
                   load_weights=lambda path: None, on_commit=commit_then_die)
    for actor in gen.replicas + pool.actors + [buffer]:
        ray.kill(actor)
    learner.close()
    cp, snap = saved[0]
    assert (cp.round, cp.trained, cp.released) == (0, 1, 1) and snap["complete_rounds"] == []  # round 1 in flight

    experiences = dict(zip(snap["refs"], ray.get([r[0] for r in snap["refs"].values()])))
    buffer = ReplayBuffer.remote(ledger=ledger)
    ray.get(buffer.restore.remote({k: v for k, v in snap.items() if k != "refs"},
                                  {sid: [ray.put(e)] for sid, e in experiences.items()}))
    later = []
    gen, pool, learner = Group(stall_round=-1, version=cp.version), SimPool(1, 1e-3), SimLearner(1e-3)
    try:
        result = run_stream(cfg, plans, gen, pool, buffer, learner, make_data=lambda plan, exps: exps,
                            load_weights=lambda path: None, on_commit=later.append,
                            resume=StreamResume(cp.next_round, cp.trained, cp.released, cp.version, cp.weights,
                                                snap["complete_rounds"], cp.accounts))
    finally:
        for actor in gen.replicas + pool.actors + [buffer]:
            ray.kill(actor)
        learner.close()
    assert [c.round for c in later] == [1, 2] and result.version == 3
    trained = [e.sample_id for e in cp.experiences] + [e.sample_id for c in later for e in c.experiences]
    every = [sid for plan in plans for sid in plan.sample_ids(2)]
    assert sorted(trained) == sorted(every) and len(set(trained)) == len(every) == 12
    assert (result.ledger["trained"], result.ledger["in_flight"]) == (12, 0)
    # the resumed driver's accounts: round 0 from the checkpoint (rollout counts, learner ids), rounds 1-2 live
    assert result.accounts["balanced"], result.accounts["problems"]
    assert result.accounts["learner_ids"] == result.accounts["rollout"]["admitted"] == 12
    assert result.accounts["learner_batches"] == 3
