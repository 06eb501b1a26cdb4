"""Run inside a fake autoscaling cluster (see test_autoscaling.py): place a generator's actor and grow and shrink
the executor pool; print what happened as one JSON line."""

import json
import sys

import ray

from codealign.actors.executor import ExecutorPool
from codealign.actors.generator import actor_options
from codealign.config import ExecutorConfig, GeneratorConfig
from codealign.sandbox import RewardTable


class GeneratorStandIn:
    """Scheduled with exactly the generator's actor options; no vLLM engine (placement is what is checked)."""

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def main(address: str) -> None:
    ray.init(address=address, log_to_driver=False)
    node_types = {n["NodeID"]: n["Resources"] for n in ray.nodes()}
    gen = ray.remote(GeneratorStandIn).options(**actor_options(GeneratorConfig(num_cpus=1,
                                                                               resources={"generator": 1})))
    generator_node = ray.get(gen.remote().node.remote(), timeout=300)

    cfg = ExecutorConfig(num_actors=1, min_actors=1, max_actors=4, chunk_size=1, idle_timeout_s=3600,
                         resources={"sandbox": 1})
    pool = ExecutorPool(cfg, RewardTable())
    jobs = [(f"import time\ndef f():\n    time.sleep(0.5)\n    return {i}\n", f"assert f() == {i}\n")
            for i in range(24)]
    results = pool.run(jobs)
    grown = pool.size
    executor_nodes = pool.node_ids(timeout_s=300)  # every actor started: the autoscaler added the nodes they need
    node_types = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    pool.cfg.idle_timeout_s = 0.0
    pool.shrink()
    print(json.dumps({
        "passed": sum(r.verdict.value == "passed" for r in results), "jobs": len(jobs),
        "peak": pool.peak, "grown": grown, "after_idle": pool.size,
        "generator_node_resources": sorted(node_types[generator_node]),
        "executor_node_resources": [sorted(node_types[n]) for n in executor_nodes],
        "executor_nodes": len(set(executor_nodes)),
    }))
    pool.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
