"""Does training make SmolLM2-135M-Instruct better? Greedy pass@1 before and after a fixed CPU recipe.

    .venv/bin/python bench/quality.py [--config configs/quality.yaml] [--eval-limit N] [--train-exercises N] ...

1. the base model, greedy (chat prompt): MBPP test (500), HumanEval (164), HumanEval+ (164);
2. training (timed as train_wall_s): rejection-sampling SFT (configs/quality.yaml); optionally (`--dpo-iterations
   N`) N rounds of iterative DPO from the SFT model (its one measured run, 2026-12-03, trained 48 pairs to a loss
   of 0.678, near ln 2); each stage is a run of the loop (pipeline/loop.py), whose own evaluation is on MBPP
   validation only;
3. the trained model, greedy, on the same three, and CodeT-reranked pass@1 on MBPP test (`--codet-n` samples at
   T=0.8, `--codet-tests` generated asserts per task);
4. the paired comparison of MBPP test before/after (exact McNemar p-value), and the same comparison with the MBPP
   test tasks that MBPP train overlaps left out (`mbpp_p_value_without_overlap`).

Training data is decontaminated by the loop (exercises/training_data.py): the MBPP train tasks that overlap an
evaluation set are not trained on; `decontaminated` counts them (47 of 374 with the default filter).

The small flags (`--eval-limit`, `--train-exercises`, `--samples`, `--dpo-exercises`) shrink every stage for a quick
end-to-end check; their numbers are then not the benchmark's. Last line: one JSON object with mbpp_before,
mbpp_after, humaneval_before, humaneval_after, humaneval_plus_before, humaneval_plus_after, mbpp_codet,
mbpp_p_value, train_wall_s, model_after (a run directory's model, loadable by `launch.py eval --model`) and
decontaminated (training tasks removed as overlapping an evaluation set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCHMARKS = (("mbpp", "mbpp"), ("humaneval", "humaneval"), ("humaneval+", "humaneval_plus"))


def evaluate_all(model: str, tasks: dict, out: Path, label: str, max_tokens: int, dtype: str,
                 codet: tuple | None = None, max_model_len: int = 4096):
    from codealign.evaluation.cli import EvalSession, rerank_extra
    from codealign.evaluation.harness import write_outputs
    from codealign.evaluation.prompts import PromptFormat

    fmt = PromptFormat("chat")
    results, extra, greedy = {}, {}, {}
    if dtype == "bfloat16" and Path(model, "config.json").is_file() and \
            "float32" in {(c := json.loads(Path(model, "config.json").read_text())).get("dtype"), c.get("torch_dtype")}:
        from codealign.weights import bf16_model_copy

        # the trained model is stored in fp32; vLLM's own cast to bf16 rounds to nearest and drops the small
        # updates, so a bf16 engine serves a stochastically rounded copy (docs/architecture.md, weight path)
        model = str(bf16_model_copy(model, Path(model).parent / "model-bf16"))
    with EvalSession(model, max_tokens=max_tokens, max_model_len=max_model_len, dtype=dtype) as session:
        for spec, key in BENCHMARKS:
            start = time.monotonic()
            # HumanEval+ shows the model HumanEval's prompts: its greedy answers are HumanEval's, judged by more tests
            prompts = tuple(ex.prompt for ex in tasks[spec])
            if prompts not in greedy:
                greedy[prompts] = session.generate(tasks[spec], fmt)
            result = session.score(tasks[spec], greedy[prompts], fmt)
            summary = result.summary(spec, model, time.monotonic() - start)
            write_outputs(out / label / key, result, summary, tasks[spec])
            print(f"{label:<7}{spec:<12}pass@1 {result.pass_at[1]:.4f}  95% CI [{result.ci95[0]:.4f}, "
                  f"{result.ci95[1]:.4f}]  {len(tasks[spec])} tasks  {summary['seconds']} s", flush=True)
            results[key] = result
        if codet:
            n, n_tests, limit = codet
            mbpp = tasks["mbpp"][:limit] if limit else tasks["mbpp"]
            start = time.monotonic()
            sampled = session.evaluate(mbpp, fmt, n=n, temperature=0.8, ks=(1,))
            greedy_mbpp = session.score(mbpp, greedy[tuple(ex.prompt for ex in tasks["mbpp"])][:len(mbpp)], fmt)
            extra = rerank_extra(session, "codet", n_tests, mbpp, fmt, sampled, greedy=greedy_mbpp)
            write_outputs(out / label / "mbpp_codet", sampled, sampled.summary("mbpp", model, 0.0, **extra), mbpp)
            print(f"{label:<7}{'mbpp codet':<12}pass@1 {extra['codet_pass@1']:.4f}  (sampled "
                  f"{extra['sampled_pass@1']:.4f}, greedy {extra['greedy_pass@1']:.4f}, "
                  f"{extra['tests_per_task']:.1f} generated tests/task, {len(mbpp)} tasks)  "
                  f"{time.monotonic() - start:.0f} s", flush=True)
    return results, extra


def load_before(previous: Path, tasks: dict) -> dict:
    """The base model's results from an earlier run of this bench (its `before/` directory), for the same tasks:
    greedy decoding makes them the same numbers, and they cost minutes to recompute."""
    from codealign.evaluation.harness import BenchmarkResult

    results = {}
    for spec, key in BENCHMARKS:
        rows = [json.loads(line) for line in (previous / "before" / key / "tasks.jsonl").read_text().splitlines()]
        if [r["task_id"] for r in rows] != [ex.id for ex in tasks[spec]]:
            raise SystemExit(f"--before {previous}: its {spec} tasks are not this run's (another --eval-limit?)")
        summary = json.loads((previous / "before" / key / "summary.json").read_text())
        results[key] = BenchmarkResult(rows, [1], {1: summary["pass@1"]}, tuple(summary["ci95"]))
        print(f"{'before':<7}{spec:<12}pass@1 {summary['pass@1']:.4f}  95% CI [{summary['ci95'][0]:.4f}, "
              f"{summary['ci95'][1]:.4f}]  {len(rows)} tasks  (from {previous})", flush=True)
    return results


def removed_by_decontamination(run_dir: Path) -> tuple[int, set[str]]:
    """How many training items the run's guard removed, and the evaluation tasks they matched (summary.json)."""
    found = json.loads((run_dir / "summary.json").read_text()).get("decontamination", {}).get("items", {})
    return len(found), {v["eval_task"] for v in found.values()}


def overlapping_test_tasks(cfg) -> set[str]:
    """MBPP test tasks that some task of the configured train split overlaps (what a contaminated run would have
    trained on): the comparison is also reported without them."""
    from codealign.exercises.loaders import load_mbpp
    from codealign.exercises.training_data import EvalGuard

    guard = EvalGuard.from_config(cfg)
    guard.admit(load_mbpp(cfg.resolved_data_dir(), cfg.data.train_ids), "mbpp_train")
    return {v["eval_task"] for v in guard.found.values()}


def stage(config: str, overrides: list[str]) -> Path:
    """One run of the loop; returns its run directory."""
    from codealign.config import load_config
    from codealign.pipeline.loop import run

    result = run(load_config(config, overrides))
    result.system.shutdown()
    return result.run_dir.path


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/quality.yaml")
    parser.add_argument("--eval-limit", type=int, default=0, help="first N tasks of each benchmark (0: all)")
    parser.add_argument("--train-exercises", type=int, default=0, help="stage 1 exercises (0: the config's)")
    parser.add_argument("--samples", type=int, default=0, help="samples per exercise in training (0: the config's)")
    parser.add_argument("--sft-epochs", type=int, default=0, help="stage 1 epochs (0: the config's)")
    parser.add_argument("--dpo-iterations", type=int, default=0, help="DPO rounds after SFT (0: none)")
    parser.add_argument("--dpo-exercises", type=int, default=64)
    parser.add_argument("--dpo-samples", type=int, default=4, help="samples per exercise in the DPO stage")
    parser.add_argument("--loop-eval-limit", type=int, default=0, help="MBPP validation tasks the loop evaluates")
    parser.add_argument("--codet-n", type=int, default=8)
    parser.add_argument("--codet-tests", type=int, default=10)
    parser.add_argument("--codet-limit", type=int, default=100,
                        help="CodeT on the first N MBPP test tasks only (0: all); its greedy figure is then on the "
                             "same N tasks")
    parser.add_argument("--max-tokens", type=int, default=384)
    # MBPP test's longest prompt (task 493, its asserts hold long lists) is 3765 tokens; SmolLM2 holds 8192
    parser.add_argument("--max-model-len", type=int, default=4096, help="the evaluation engines' context")
    parser.add_argument("--dtype", default="bfloat16",
                        help="what vLLM serves both models in (the trained model is stored in fp32; on a CPU, vLLM "
                             "serves fp32 more than 10x slower than bf16, measured here, so both are served in bf16 "
                             "by default, and the recipe's updates must survive bf16 rounding)")
    parser.add_argument("--before", default="", metavar="OUT_DIR",
                        help="take the base model's results from an earlier run's output directory (same tasks)")
    parser.add_argument("--trained", default="", metavar="RUN_DIR",
                        help="skip training: evaluate this run directory's latest weights as the trained model "
                             "(train_wall_s is then 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    import ray

    from codealign.config import load_config
    from codealign.evaluation.benchmarks import load_benchmark
    from codealign.evaluation.compare import paired_comparison
    from codealign.evaluation.model_source import model_from_run

    if args.trained and not Path(args.trained).is_dir():
        parser.error(f"--trained: {args.trained} is not a run directory")
    cfg = load_config(args.config, args.overrides)
    data_dir = cfg.resolved_data_dir()
    tasks = {spec: load_benchmark(spec, data_dir, args.eval_limit) for spec, _ in BENCHMARKS}
    out = Path(cfg.output_dir) / f"quality-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    base = cfg.model.path

    if args.before:
        before = load_before(Path(args.before), tasks)
    else:
        before, _ = evaluate_all(base, tasks, out, "before", args.max_tokens, args.dtype,
                                 max_model_len=args.max_model_len)

    common = list(args.overrides) + [f"eval.limit={args.loop_eval_limit}"]
    sft = list(common)
    if args.train_exercises:
        sft.append(f"loop.exercises_per_iteration={args.train_exercises}")
    if args.samples:
        sft.append(f"loop.samples_per_exercise={args.samples}")
    if args.sft_epochs:
        sft.append(f"train.epochs={args.sft_epochs}")
    start = time.monotonic()
    run_dir = Path(args.trained) if args.trained else stage(args.config, sft)
    model = str(model_from_run(run_dir))
    decontaminated = removed_by_decontamination(run_dir)[0] if (run_dir / "summary.json").is_file() else None
    if args.dpo_iterations and not args.trained:
        dpo = common + ["name=quality-dpo", "train.algorithm=dpo", "train.max_pairs=48", "train.learning_rate=5.0e-5",
                        "train.epochs=1", "train.warmup_steps=0", "train.lr_schedule=constant",
                        f"loop.iterations={args.dpo_iterations}", f"loop.exercises_per_iteration={args.dpo_exercises}",
                        f"model.path={model}"]
        dpo.append(f"loop.samples_per_exercise={args.dpo_samples}")
        model = str(model_from_run(stage(args.config, dpo)))
    train_wall_s = time.monotonic() - start
    if ray.is_initialized():
        ray.shutdown()
    print(f"training: {train_wall_s:.0f} s; trained model {model}", flush=True)

    after, codet = evaluate_all(model, tasks, out, "after", args.max_tokens, args.dtype,
                                (args.codet_n, args.codet_tests, args.codet_limit), args.max_model_len)
    cmp = paired_comparison(before["mbpp"].per_task_pass1, after["mbpp"].per_task_pass1)
    print("MBPP test: " + cmp.sentence("before", "after"), flush=True)
    overlap = overlapping_test_tasks(cfg)
    clean_ids = [t for t in before["mbpp"].per_task_pass1 if t not in overlap]
    cmp_clean = paired_comparison({t: before["mbpp"].per_task_pass1[t] for t in clean_ids},
                                  {t: after["mbpp"].per_task_pass1[t] for t in clean_ids})
    print(f"MBPP test without the {len(before['mbpp'].per_task_pass1) - len(clean_ids)} tasks MBPP train overlaps: "
          + cmp_clean.sentence("before", "after"), flush=True)
    line = {f"{key}_{label}": res[key].pass_at[1] for key in ("mbpp", "humaneval", "humaneval_plus")
            for label, res in (("before", before), ("after", after))}
    line.update(mbpp_codet=codet["codet_pass@1"], mbpp_codet_greedy=codet["greedy_pass@1"],
                mbpp_p_value=cmp.p_value, train_wall_s=round(train_wall_s, 1),
                model_after=model, decontaminated=decontaminated,
                mbpp_tasks_without_overlap=cmp_clean.tasks, mbpp_before_without_overlap=cmp_clean.pass_a,
                mbpp_after_without_overlap=cmp_clean.pass_b, mbpp_p_value_without_overlap=cmp_clean.p_value)
    (out / "summary.json").write_text(json.dumps({**line, "mbpp_paired": cmp.to_dict(), "codet": codet,
                                                  "mbpp_paired_without_overlap": cmp_clean.to_dict(),
                                                  "overlapping_test_tasks": sorted(overlap),
                                                  "eval_limit": args.eval_limit}, indent=2))
    print(json.dumps(line))


if __name__ == "__main__":
    main()
