"""The executor pool under failure and load (real Ray actors, real sandboxes): an executor killed mid-batch loses
no job and answers none twice; the pool grows while work queues up and shrinks back when idle."""

import threading

from codealign.actors.executor import ExecutorPool
from codealign.config import ExecutorConfig
from codealign.sandbox import RewardTable, Verdict


def slow_jobs(n: int, seconds: float) -> list[tuple[str, str]]:
    """Job i returns i after a pause; its test expects i for even i and i + 1 for odd i, so the verdicts
    alternate and a result given to the wrong job shows."""
    return [(f"import time\ndef f():\n    time.sleep({seconds})\n    return {i}\n",
             f"assert f() == {i if i % 2 == 0 else i + 1}\n") for i in range(n)]


def expected(n: int) -> list[Verdict]:
    return [Verdict.PASSED if i % 2 == 0 else Verdict.FAILED for i in range(n)]


def test_an_executor_killed_mid_batch_loses_no_job_and_answers_none_twice(ray_cluster):
    pool = ExecutorPool(ExecutorConfig(num_actors=2, chunk_size=2, timeout_s=5.0), RewardTable())
    try:
        pool.run(slow_jobs(2, 0.0))  # both actors started
        victim = pool.actors[0]
        killer = threading.Timer(1.5, lambda: ray_cluster.kill(victim, no_restart=True))
        killer.start()
        results = pool.run(slow_jobs(24, 0.25))
        killer.join()
        assert len(results) == 24 and all(r is not None for r in results)
        assert [r.verdict for r in results] == expected(24)
        assert pool.replaced == 1 and victim not in pool.actors and pool.size == 2
    finally:
        pool.shutdown()


def test_the_pool_grows_while_work_queues_and_shrinks_when_idle(ray_cluster):
    cfg = ExecutorConfig(num_actors=1, min_actors=1, max_actors=3, chunk_size=1, idle_timeout_s=0.0)
    pool = ExecutorPool(cfg, RewardTable())
    try:
        assert pool.size == 1
        results = pool.run(slow_jobs(12, 0.3))
        assert [r.verdict for r in results] == expected(12)
        assert pool.peak == 3  # grew to max_actors while chunks queued
        assert pool.size == 1  # and went back to min_actors once idle
    finally:
        pool.shutdown()
