"""Synchronous against pipelined training, on this machine and on a simulated cluster.

1. Real actors (SmolLM2-135M in vLLM, sandbox executors, the Ray Train learner) through `pipeline.loop.run`, at
   `max_staleness` 0 (synchronous), 1 and 2, same rounds, same number of trained samples and weight versions:
   wall time of the training part, per-stage busy fractions, trained samples/s (no validation split or serving
   probe between rounds, so the wall time is the pipeline's own).
2. A simulated cluster: the SAME orchestration code (`pipeline.stream.run_stream`, the real `ReplayBuffer` and
   ledger) driving stand-in generator, executor and learner actors that sleep for the time the cost model below
   gives each call: 8 generator replicas, 16 executors, a 4-worker learner.

Cost model (a 7B policy in bf16 on H100s; stated assumptions, order-of-magnitude from published figures):
- generation, one replica per H100: a call of B sequences decodes until its longest completion ends (vLLM
  returns a call when all its sequences finish): `prefill + max_tokens * step(B)`, step(B) = 12 ms + 0.05 ms * B
  (about 13-15 ms per decode step at batch 16-64 for a 7B model on one H100, i.e. ~4k output tokens/s at batch
  64, in line with vLLM's published H100 throughput), max_tokens 1024, prefill 300 prompt tokens per sequence at
  20k tokens/s;
- execution: 4.4 ms per program (the sandbox's measured 459 exec/s on this machine's 2 cores, ~230/s per core),
  and 3% of model-written programs run into the 5 s wall timeout;
- learner, 4 data-parallel H100s: 6 N T training FLOPs plus 2 N T for each of the two extra forward passes
  (reference and old/proximal log-probs), T = 300 prompt + 400 completion tokens, N = 7e9, at 35% of 989 dense
  bf16 TFLOP/s per GPU: ~0.035 s per sample for the job;
- weight publication: 3 s (14 GB of bf16 weights broadcast and reloaded; OpenRLHF/veRL report a few seconds).
Times are scaled by `--time-scale` so the simulation runs in seconds; throughput is reported in simulated time.

Last line: one JSON object with sync_samples_per_s, async_samples_per_s, speedup (real, max_staleness 1 against 0),
sim_speedup, max_staleness_seen, samples_lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from codealign.config import RunConfig, TrainConfig  # noqa: E402
from codealign.records import Completion, ExecutionResult, Exercise  # noqa: E402
from codealign.sandbox import Verdict  # noqa: E402

# -- the cost model (seconds, unscaled) ----------------------------------------------------------------------------
MAX_TOKENS = 1024
PROMPT_TOKENS = 300


def generation_s(batch: int) -> float:
    return batch * PROMPT_TOKENS / 20_000 + MAX_TOKENS * (0.012 + 0.00005 * batch)


EXEC_S, TIMEOUT_S, TIMEOUT_RATE = 0.0044, 5.0, 0.03
LEARN_S_PER_SAMPLE = (6 + 2 + 2) * 7e9 * (300 + 400) / (4 * 989e12 * 0.35)
PUBLISH_S = 3.0


@ray.remote(num_cpus=0)
class SimGenerator:
    def __init__(self, scale: float):
        self.scale, self.version = scale, 0

    def ready(self) -> dict:
        return {"policy_version": self.version}

    def generate(self, requests) -> list[list[Completion]]:
        time.sleep(self.scale * generation_s(sum(r.n for r in requests)))
        return [[Completion(r.request_id, "def f():\n    return 1\n", [1] * 8, [-0.5] * 8, "stop", self.version)
                 for _ in range(r.n)] for r in requests]

    def update_weights(self, weights, version: int) -> dict:
        time.sleep(self.scale * PUBLISH_S)
        self.version = version
        return {"policy_version": version}


@ray.remote(num_cpus=0)
class SimExecutor:
    def __init__(self, scale: float, seed: int):
        self.scale, self.rng = scale, random.Random(seed)

    def run_batch(self, jobs) -> list[ExecutionResult]:
        out = []
        for _ in jobs:
            timeout = self.rng.random() < TIMEOUT_RATE
            time.sleep(self.scale * (TIMEOUT_S if timeout else EXEC_S))
            passed = self.rng.random() < 0.3
            out.append(ExecutionResult(Verdict.TIMEOUT if timeout else Verdict.PASSED if passed else Verdict.FAILED,
                                       -2.0 if timeout else 4.0 if passed else -0.3, 0.0))
        return out


@ray.remote(num_cpus=0)
class SimTrainer:
    def __init__(self, scale: float):
        self.scale = scale

    def train(self, data) -> dict:
        time.sleep(self.scale * LEARN_S_PER_SAMPLE * len(data))
        ids = sorted(e.sample_id for e in data)  # its own count, read from the data, as the real learner's
        return {"ppo/loss": 0.0, "received_ids": ids, "trained_ids": ids}


class SimGroup:
    """A GeneratorGroup's surface over stand-in replicas."""

    def __init__(self, replicas: int, scale: float):
        self.replicas = [SimGenerator.remote(scale) for _ in range(replicas)]
        ray.get([r.ready.remote() for r in self.replicas])

    def recover(self, i: int) -> None:
        pass

    def start_update(self, weights, version: int):
        return [r.update_weights.remote(None, version) for r in self.replicas]


class SimPool:
    def __init__(self, n: int, scale: float):
        self.actors = [SimExecutor.remote(scale, i) for i in range(n)]


class SimLearner:
    """StreamingLearner's surface: one batch at a time on the stand-in trainer, weights published every batch."""

    adapter_dir = None

    def __init__(self, scale: float):
        self.trainer = SimTrainer.remote(scale)
        self.jobs: list[tuple[int, bool, float, ray.ObjectRef]] = []

    def submit(self, step, data_ref, train_version, publish) -> None:
        self.jobs.append((step + 1, publish, time.monotonic(), self.trainer.train.remote(data_ref)))

    def poll(self) -> list[dict]:
        out = []
        while self.jobs and ray.wait([self.jobs[0][3]], timeout=0)[0]:
            step, publish, t0, ref = self.jobs.pop(0)
            self.last = (step, publish)
            metrics = ray.get(ref)
            out.append({"step": step, "received_ids": metrics.pop("received_ids"),
                        "trained_ids": metrics.pop("trained_ids"), "metrics": metrics,
                        "weights": "sim" if publish else None, "seconds": time.monotonic() - t0})
        return out

    def finish(self) -> dict | None:
        while self.jobs:
            time.sleep(0.01)
            self.poll()
        last = getattr(self, "last", None)
        return None if last is None or last[1] else {"step": last[0], "weights": "sim", "final": True}

    def close(self) -> None:
        ray.kill(self.trainer)


def simulate(max_staleness: int, rounds: int, exercises: int, samples: int, scale: float) -> dict:
    from codealign.actors.replay_buffer import LedgerConfig, ReplayBuffer
    from codealign.pipeline.schedule import plan_rounds
    from codealign.pipeline.stream import run_stream

    cfg = RunConfig()
    cfg.loop.iterations, cfg.loop.exercises_per_iteration, cfg.loop.samples_per_exercise = rounds, exercises, samples
    cfg.train = TrainConfig(algorithm="ppo")
    cfg.pipeline.max_staleness = max_staleness
    train_set = [Exercise(f"ex{i}", f"exercise {i}", "assert True") for i in range(4 * exercises)]
    plans = plan_rounds(cfg, train_set, random.Random(0))
    gen, pool, learner = SimGroup(8, scale), SimPool(16, scale), SimLearner(scale)
    buffer = ReplayBuffer.remote(ledger=LedgerConfig(max_staleness=max_staleness))
    try:
        res = run_stream(cfg, plans, gen, pool, buffer, learner, make_data=lambda plan, exps: exps,
                         load_weights=lambda path: None, chunk=exercises)  # vLLM batches the whole round
    finally:
        for a in gen.replicas + pool.actors + [buffer]:
            ray.kill(a)
        learner.close()
    sim_wall = res.wall_s / scale
    return {"max_staleness": max_staleness, "sim_wall_s": round(sim_wall, 1),
            "samples_per_s": round(res.samples_trained / sim_wall, 2), "busy_fraction": res.fractions,
            "idle_fraction": {k: round(1 - v, 3) for k, v in res.fractions.items()},
            "max_staleness_seen": res.ledger["max_staleness_seen"], "ledger": res.ledger,
            "samples_lost": lost(res.ledger)}


def lost(ledger: dict) -> int:
    """Admitted samples in no state of the ledger: neither trained, evicted, dropped (counted), buffered nor in
    flight."""
    return ledger["admitted"] - sum(ledger[k] for k in ("trained", "evicted", "dropped", "buffered", "in_flight"))


def real(max_staleness: int, args) -> dict:
    import yaml

    from codealign.config import config_from_dict
    from codealign.pipeline.loop import run

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "local.yaml").read_text())
    raw.update(name=f"bench-s{max_staleness}", output_dir=args.output_dir)
    raw["data"]["eval_size"] = 1
    # the training part is what is compared: no validation split or serving probe between rounds (both would block
    # the driver the same way in every schedule), MBPP only before and after
    raw["eval"].update(every=0, benchmarks=["mbpp"])
    raw["generator"]["fidelity_probes"] = 0
    raw["loop"].update(iterations=args.rounds, exercises_per_iteration=args.exercises, samples_per_exercise=2)
    raw["train"].update(max_pairs=4, max_length=384, num_cpus_per_worker=1)
    raw["generator"].update(max_tokens=args.max_tokens, num_cpus=1)
    raw["pipeline"].update(max_staleness=max_staleness)
    result = run(config_from_dict(raw))
    try:
        summary = json.loads((result.run_dir.path / "summary.json").read_text())
        metrics = [json.loads(x) for x in (result.run_dir.path / "metrics.jsonl").read_text().splitlines()]
    finally:
        result.system.shutdown()
    seconds = summary["stage_seconds"]
    wall = seconds["pipeline_wall"]
    ledger = summary["replay_buffer"]["ledger"]
    return {"max_staleness": max_staleness, "wall_s": round(wall, 1),
            "samples_per_s": round(ledger["trained"] / wall, 3),
            "busy_fraction": {k: round(seconds[k] / wall, 3) for k in ("generate", "execute", "train", "sync")
                              if k in seconds},
            "policy_version": summary["policy_version"], "trained": ledger["trained"],
            "max_staleness_seen": ledger["max_staleness_seen"], "samples_lost": lost(ledger),
            "losses": [m.get("dpo/loss") for m in metrics]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-real", action="store_true", help="only the simulated cluster")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--exercises", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--sim-rounds", type=int, default=5)
    ap.add_argument("--sim-exercises", type=int, default=32)
    ap.add_argument("--sim-samples", type=int, default=8)
    ap.add_argument("--time-scale", type=float, default=0.5)
    ap.add_argument("--output-dir", default="/tmp/codealign-bench-pipeline")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # A Ray instance of its own temp directory, inherited by every worker: Ray Train's placement-group cleaner finds
    # "its" cluster through <temp>/ray/ray_current_cluster, which on a machine running several Ray instances names
    # the one started last; querying that one for this run's controller, it finds none, takes it for dead and
    # removes the long-lived learner's placement group (its worker is killed mid-run; seen here).
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ca-bench-", dir="/tmp"))
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)

    sim = {s: simulate(s, args.sim_rounds, args.sim_exercises, args.sim_samples, args.time_scale) for s in (0, 1, 2)}
    for r in sim.values():
        print(json.dumps({"part": "simulated", **{k: v for k, v in r.items() if k != "ledger"}}), flush=True)
    out = {"sim_sync_samples_per_s": sim[0]["samples_per_s"], "sim_async_samples_per_s": sim[1]["samples_per_s"],
           "sim_speedup": round(sim[1]["samples_per_s"] / sim[0]["samples_per_s"], 3),
           "sim_speedup_staleness_2": round(sim[2]["samples_per_s"] / sim[0]["samples_per_s"], 3)}
    seen = [r["max_staleness_seen"] for r in sim.values()]
    lost = [r["samples_lost"] for r in sim.values()]
    within = [r["max_staleness_seen"] <= s for s, r in sim.items()]
    if not args.skip_real:
        runs = {s: real(s, args) for s in (0, 1, 2)}
        for r in runs.values():
            print(json.dumps({"part": "real", **r}), flush=True)
        out.update(sync_samples_per_s=runs[0]["samples_per_s"], async_samples_per_s=runs[1]["samples_per_s"],
                   speedup=round(runs[1]["samples_per_s"] / runs[0]["samples_per_s"], 3),
                   speedup_staleness_2=round(runs[2]["samples_per_s"] / runs[0]["samples_per_s"], 3))
        seen += [r["max_staleness_seen"] for r in runs.values()]
        lost += [r["samples_lost"] for r in runs.values()]
        within += [r["max_staleness_seen"] <= s for s, r in runs.items()]
    out.update(max_staleness_seen=max(seen), samples_lost=sum(lost), staleness_within_bound=all(within))
    ray.shutdown()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
