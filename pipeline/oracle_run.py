"""The oracle on the cluster: built from the `oracle:` config section (a vLLM generator actor with role="oracle",
or `RemoteOracle`), writing exercises that the executor actors then validate."""

from __future__ import annotations

import os

from tqdm import tqdm

from codealign.actors.executor import ExecutorPool
from codealign.config import RunConfig
from codealign.exercises.build import FilterOutcome, filter_exercises
from codealign.exercises.decontamination import Decontaminator
from codealign.exercises.extract import as_answer, extract_code
from codealign.exercises.generation import ExerciseWriter, Generated
from codealign.exercises.loaders import load_mbpp
from codealign.pipeline.operations import start_ray
from codealign.records import Completion, Exercise, GenerationRequest, SftExample
from codealign.sandbox import Verdict

CHUNK = 16


class Oracle:
    """The configured oracle behind `generate(requests)`, with a progress bar; `shutdown()` ends its actor."""

    def __init__(self, cfg: RunConfig, model: str = "", base_url: str = "", role: str = "oracle"):
        o = cfg.oracle
        self.name = model or o.model
        self._group = None
        if o.backend == "remote":
            from codealign.actors.remote_oracle import RemoteOracle, RemoteOracleConfig

            key = os.environ.get(o.api_key_env, "") if o.api_key_env else ""
            self._backend = RemoteOracle(RemoteOracleConfig(base_url or o.base_url, self.name, api_key=key))
        elif o.backend == "vllm":
            from codealign.actors.generator_group import GeneratorGroup
            from codealign.model_source import resolve_model

            self._group = GeneratorGroup(resolve_model(self.name), cfg.model.model_copy(update={"path": self.name}),
                                         cfg.generator, role=role, replicas=1)
            self._backend = self._group
        else:
            raise ValueError("oracle.backend: none has no oracle to generate with")

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        with tqdm(total=len(requests), desc="oracle", unit="prompt", leave=False) as bar:
            for i in range(0, len(requests), CHUNK):
                out += self._backend.generate(requests[i : i + CHUNK])
                bar.update(min(CHUNK, len(requests) - i))
        return out

    def shutdown(self) -> None:
        if self._group is not None:
            self._group.shutdown()


def oracle_solutions(generate, run_jobs, batch: list[Exercise], cfg: RunConfig) -> list[SftExample]:
    """Sequence-level distillation from the oracle: it answers each exercise's own prompt
    `oracle.solutions_per_exercise` times; the first answer that passes all the tests in the sandbox becomes the
    exercise's training sequence. An exercise none of its answers passes gives nothing (never a failing one)."""
    o = cfg.oracle
    reqs = [GenerationRequest(ex.prompt, n=o.solutions_per_exercise, temperature=o.temperature, top_p=0.95,
                              max_tokens=o.max_tokens, request_id=f"distill:{ex.id}") for ex in batch]
    answers = generate(reqs)
    jobs = [(ex, c.text) for ex, comps in zip(batch, answers) for c in comps if c.text.strip()]
    results = run_jobs([(extract_code(text), ex.tests) for ex, text in jobs])
    out: dict[str, SftExample] = {}
    for (ex, text), r in zip(jobs, results):
        if r.verdict is Verdict.PASSED and ex.id not in out:
            out[ex.id] = SftExample(ex.prompt, as_answer(extract_code(text)), "oracle_solution")
    return list(out.values())


def writer_for(cfg: RunConfig, oracle: Oracle) -> ExerciseWriter:
    few_shot = load_mbpp(cfg.resolved_data_dir(), cfg.data.train_ids) if cfg.oracle.few_shot else []
    return ExerciseWriter(oracle.generate, cfg.oracle, few_shot, seed=cfg.seed, model_name=oracle.name)


def filter_generated(gen: Generated, cfg: RunConfig, run_jobs, held: list[Exercise],
                     decon: Decontaminator | None, writer: ExerciseWriter | None = None) -> FilterOutcome:
    """The filters on what the oracle wrote; with `oracle.repair_rounds` (and the writer) the exercises none of
    whose solutions pass are first sent back to the oracle for corrected solutions."""
    if writer is not None and cfg.oracle.repair_rounds:
        writer.repair(gen, run_jobs, cfg.oracle.repair_rounds)
    outcome = filter_exercises(gen.exercises, run_jobs, cfg.oracle, held, decon, candidates=gen.candidates,
                               provenance=gen.provenance)
    outcome.generation = gen.counts()
    if gen.repair:
        outcome.generation["repair"]["fixed"] = sum("repaired_from" in outcome.provenance.get(ex.id, {})
                                                    for ex in outcome.kept)
    return outcome


def generate_and_filter(cfg: RunConfig, held: list[Exercise], decon: Decontaminator) -> FilterOutcome:
    """`launch.py generate-data --config`: one round of generation, judged by the executor actors."""
    start_ray(cfg)
    oracle = Oracle(cfg)
    pool = ExecutorPool(cfg.executor, cfg.reward)
    try:
        writer = writer_for(cfg, oracle)
        gen = writer.write(round_=0)
        print(f"oracle: {gen.counts()}", flush=True)
        return filter_generated(gen, cfg, pool.run, held, decon, writer)
    finally:
        pool.shutdown()
        oracle.shutdown()


def backtranslate_corpus(cfg: RunConfig, files: list[tuple[str, str]]):
    """`generate-data --backtranslate DIR`: the oracle writes the instructions, the rater (another model) rates."""
    from codealign.exercises.backtranslation import backtranslate

    o = cfg.oracle
    if o.backend == "vllm":
        start_ray(cfg)
    writer = Oracle(cfg)
    try:
        rater = Oracle(cfg, model=o.rater_model, base_url=o.rater_base_url, role="rater")
        try:
            return backtranslate(files, writer.generate, rater.generate, o.min_rating, o.temperature, o.max_tokens)
        finally:
            rater.shutdown()
    finally:
        writer.shutdown()
