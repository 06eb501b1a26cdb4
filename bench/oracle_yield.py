"""How many sound exercises a small oracle yields, per prompting recipe.

    python bench/oracle_yield.py [--model embedded:smollm2-135m-instruct] [--requests 24] [--recipes a,b]

One vLLM engine in this process, the sandbox in this process. For each recipe: `requests` exercise requests,
parsed, then put through the pipeline's filters (validation: the reference, or the first of the oracle's
solutions that passes, against the tests, twice, plus the stub check; dedup against MBPP train, so a copied
few-shot example does not count; decontamination). Yield = kept exercises / requests. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codealign.config import GeneratorConfig, ModelConfig, OracleConfig  # noqa: E402
from codealign.exercises.build import filter_exercises  # noqa: E402
from codealign.exercises.decontamination import Decontaminator, load_benchmarks  # noqa: E402
from codealign.exercises.generation import ExerciseWriter  # noqa: E402
from codealign.exercises.loaders import load_mbpp, resolve_data_dir  # noqa: E402
from codealign.model_source import resolve_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--recipes", default="", help="comma-separated subset of the recipes (default: all)")
    ap.add_argument("--data", default=str(resolve_data_dir()))
    ap.add_argument("--dump", default="", help="write every oracle answer here (JSONL: recipe, prompt, text)")
    args = ap.parse_args()

    from codealign.actors.generator import Generator
    from codealign.sandbox import Sandbox

    engine = Generator(resolve_model(args.model), ModelConfig(max_model_len=2048), GeneratorConfig())
    train = load_mbpp(args.data, (601, 974))
    per_sub = max(1, args.requests // 8)
    base = OracleConfig(backend="vllm", model=args.model, categories=["strings", "lists", "math", "dictionaries"],
                        subcategories_per_category=2, exercises_per_subcategory=per_sub, temperature=0.7,
                        max_tokens=384)

    def variant(**options) -> OracleConfig:
        return base.model_copy(update=options)

    recipes = {
        "json_schema": variant(answer_format="json", structured=True, few_shot=0, solutions_per_exercise=1),
        "blocks_few_shot": variant(answer_format="blocks", few_shot=2, solutions_per_exercise=1),
        "blocks_few_shot_keep_1_of_8": variant(answer_format="blocks", few_shot=2, solutions_per_exercise=8),
        "harder_variants_keep_1_of_8": variant(answer_format="blocks", few_shot=0, solutions_per_exercise=8),
        "blocks_few_shot_keep_1_of_8_repair": variant(answer_format="blocks", few_shot=2,
                                                      solutions_per_exercise=8, repair_rounds=1),
        "blocks_few_shot_tests_step_keep_1_of_8": variant(answer_format="blocks", few_shot=2,
                                                          solutions_per_exercise=8, tests_step=True),
        "blocks_few_shot_tests_step_keep_1_of_8_repair": variant(answer_format="blocks", few_shot=2,
                                                                 solutions_per_exercise=8, tests_step=True,
                                                                 repair_rounds=1),
    }
    if args.recipes:
        recipes = {k: v for k, v in recipes.items() if k in args.recipes.split(",")}
    decon = Decontaminator(load_benchmarks(args.data))
    results, dumped = {}, []
    with Sandbox(timeout_s=3.0) as box:
        for name, cfg in recipes.items():
            start = time.monotonic()
            def generate(reqs, name=name):
                answers = engine.generate(reqs)
                dumped.extend({"recipe": name, "prompt": r.prompt, "text": c.text}
                              for r, comps in zip(reqs, answers) for c in comps)
                return answers

            writer = ExerciseWriter(generate, cfg, train, seed=0, model_name=args.model)
            templates = train[: args.requests] if name.startswith("harder") else ()
            gen = writer.write(templates=templates)
            if cfg.repair_rounds:
                writer.repair(gen, box.run_many, cfg.repair_rounds)
            out = filter_exercises(gen.exercises, box.run_many, cfg, train, decon, candidates=gen.candidates)
            kept = len(out.kept)
            results[name] = {"requested": gen.requested, "parsed": len(gen.exercises), "kept": kept,
                             "yield": round(kept / max(1, gen.requested), 3), "malformed": dict(gen.malformed),
                             "repair": dict(gen.repair),
                             "dropped": out.counts(), "seconds": round(time.monotonic() - start, 1)}
            print(name, json.dumps(results[name]), flush=True)
    if args.dump:
        Path(args.dump).write_text("".join(json.dumps(d) + "\n" for d in dumped))
    print(json.dumps({"model": args.model, "oracle_yield": {k: v["yield"] for k, v in results.items()},
                      "recipes": results}))


if __name__ == "__main__":
    main()
