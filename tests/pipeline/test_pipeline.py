"""The pipelined loop end to end on real actors (the tiny model in real vLLM engines, real sandboxes, a real
Ray Train learner): with max_staleness 0 it is one round after another, sample for sample; with max_staleness 1 the
bound holds and every sample is accounted for while an executor and a generator are killed mid-run."""

import json
from pathlib import Path

import pytest
import yaml

import codealign.pipeline.loop as loop
import codealign.pipeline.stream as stream
from codealign.config import config_from_dict
from tests.conftest import LOCAL


def tiny_config(tmp_path, model_path: str, name: str, max_staleness: int, iterations: int = 2,
                enable_lora: bool = False):
    raw = yaml.safe_load(LOCAL.read_text())
    raw.update(name=name, output_dir=str(tmp_path), ray_num_cpus=0)
    raw["model"].update(path=model_path, max_model_len=512)
    raw["data"]["eval_size"] = 2
    raw["loop"].update(iterations=iterations, exercises_per_iteration=3, samples_per_exercise=2)
    raw["train"].update(max_pairs=4, max_length=192, num_cpus_per_worker=1, learning_rate=1e-3)
    raw["generator"].update(max_tokens=24, num_cpus=1)
    raw["pipeline"].update(max_staleness=max_staleness)
    if enable_lora:  # the adapter served unmerged over the base (pipeline/serving.policy_for_generators)
        raw["generator"].update(enable_lora=True, max_lora_rank=raw["train"]["lora"]["r"])
        # and no measurement between rounds (serving probe, validation split): the synchronous reference below
        # then needs only the run's evaluation before training to make the same engine calls
        raw["generator"]["fidelity_probes"] = 0
        raw["eval"]["every"] = 0
    return config_from_dict(raw)


ROUND_DATA = loop.round_data


def record_rounds(monkeypatch) -> list:
    """What every round trained on: the judged samples and the preference pairs made from them."""
    seen = []
    real = ROUND_DATA

    def recording(system, cfg, batch, experiences, by_id, corpus, it):
        data = real(system, cfg, batch, experiences, by_id, corpus, it)
        seen.append(trained_on(experiences, data))
        return data

    monkeypatch.setattr(loop, "round_data", recording)
    return seen


def trained_on(experiences, pairs) -> tuple:
    return ([(e.exercise_id, e.completion, e.token_ids, e.logprobs, e.policy_version, e.result.verdict)
             for e in experiences], [(p.prompt, p.chosen, p.rejected, p.sample_ids) for p in pairs])


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def one_round_after_another(cfg, run_path):
    """The reference for `max_staleness: 0`, composed here from the parts the stream uses (fresh engine, executors
    and long-lived learner, the same exercise plan and the same round_data) with no scheduler at all: sample a
    round, judge it, train it, put the new version on the generator and wait, then the next round. Returns what
    each round trained on, the learner's reports and the greedy outputs after training.

    Why this and not a second stream run: two stream runs agree with each other even when the stream drifts from
    synchronous training (a round admitted before the previous round's weights are served, samples taken in
    another order, a stale version trained, the adapter not served); this reference has no admission, buffer or
    overlap to drift, so any such change in the stream shows as different samples, pairs, losses or outputs. The
    engine's calls are the run's, in the same order: the greedy evaluation before training draws nothing from the
    engine's one sampling RNG on CPU, but it fills the prefix cache that the rounds' prompts share their chat
    template with, so the reference makes it too (the test's config measures nothing between rounds)."""
    import random
    import time
    from types import SimpleNamespace

    import ray

    from codealign.exercises.extract import extract_code
    from codealign.exercises.training_data import load_training_data
    from codealign.model_source import resolve_model
    from codealign.pipeline.report import RunDir
    from codealign.pipeline.schedule import plan_rounds
    from codealign.pipeline.serving import policy_for_generators
    from codealign.records import Experience

    sources = load_training_data(cfg)
    model_path = resolve_model(cfg.model.path)
    system = loop.build_system(cfg, model_path, RunDir.create(cfg))
    learner = stream.make_learner(cfg, model_path, run_path / "reference_train")
    by_id = {ex.id: ex for ex in sources.exercises}
    seen, reports = [], []
    (run_path / "reference_eval").mkdir()
    evaluator = loop.LoopEvaluator.create(cfg, run_path / "reference_eval", system.generate, system.executors.run)
    try:
        evaluator.test_benchmarks("before")
        for version, plan in enumerate(plan_rounds(cfg, sources.exercises, random.Random(cfg.seed))):
            completions = system.generator.generate(plan.requests)
            flat = [(ex, c, extract_code(c.text)) for ex, comps in zip(plan.exercises, completions) for c in comps]
            results = system.executors.run([(code, ex.tests) for ex, _, code in flat])
            ids = plan.sample_ids(cfg.loop.samples_per_exercise)  # the buffer's ids, in the plan's order
            experiences = [Experience(ex.id, ex.prompt, c.text, code, res, c.policy_version, c.token_ids, c.logprobs,
                                      sample_id=sid) for sid, ((ex, c, code), res) in zip(ids, zip(flat, results),
                                                                                         strict=True)]
            pairs = ROUND_DATA(SimpleNamespace(executors=system.executors), cfg, plan.exercises, experiences, by_id,
                               [], plan.round)  # the real one: the stream run's is recording
            seen.append(trained_on(experiences, pairs))
            learner.submit(version, ray.put(pairs), version, True)
            report = learner.poll()
            while not report:
                time.sleep(0.05)
                report = learner.poll()
            reports += report
            ray.get(system.generator.start_update(policy_for_generators(cfg, Path(report[0]["weights"]).parent),
                                                  version + 1))
        evaluator.test_benchmarks("after")
        after = [x["text"] for x in lines(run_path / "reference_eval" / "eval_after.jsonl")]
    finally:
        learner.close()
        system.shutdown()
    return seen, reports, after


@pytest.mark.parametrize("enable_lora", [False, True], ids=["merged", "adapter"])
def test_max_staleness_0_is_one_round_after_another(ray_cluster, tmp_path, tiny_model_path, monkeypatch, enable_lora):
    """`max_staleness: 0` is synchronous training, with merged weights served or the adapter unmerged
    (generator.enable_lora): the stream samples, pairs, trains and serves what one round after another does,
    sample for sample."""
    cfg = tiny_config(tmp_path / "stream", tiny_model_path, "stream", max_staleness=0, enable_lora=enable_lora)
    seen = record_rounds(monkeypatch)
    result = loop.run(cfg)
    result.system.shutdown()
    metrics = lines(result.run_dir.path / "metrics.jsonl")
    ref_seen, ref_reports, ref_after = one_round_after_another(
        tiny_config(tmp_path / "reference", tiny_model_path, "reference", max_staleness=0, enable_lora=enable_lora),
        tmp_path)

    assert len(ref_seen) == 2 and all(pairs for _, pairs in ref_seen)  # two rounds, each trained
    assert [{e[4] for e in samples} for samples, _ in ref_seen] == [{0}, {1}]
    assert seen == ref_seen  # the same samples (text, tokens, logprobs, version, verdict) and pairs
    for m, r in zip(metrics, ref_reports, strict=True):
        for key in ("dpo/loss", "dpo/loss_first", "dpo/loss_last", "dpo/margin", "dpo/steps", "dpo/global_step",
                    "dpo/optimizer_carried"):
            assert m[key] == r["metrics"][key], key
        assert m["train_items"] == len(ref_seen[m["iteration"]][1])
        assert m["staleness_histogram"] == {"0": m["samples"]}
        assert m["served_as"] == ("adapter" if enable_lora else "merged")
    assert [(m["policy_version"], m["new_policy_version"]) for m in metrics] == [(0, 1), (1, 2)]
    assert result.policy_version == 2
    # the same weights in the end: the greedy evaluation after training is the same text
    assert [x["text"] for x in lines(result.run_dir.path / "eval_after.jsonl")] == ref_after
    assert metrics[-1]["ledger"]["trained"] == 12 and metrics[-1]["accounts"]["balanced"]
    accounts = json.loads((result.run_dir.path / "summary.json").read_text())["replay_buffer"]["accounts"]
    assert accounts["balanced"] and accounts["sent_ids"] == accounts["rollout"]["judged"] == 12
    # the learner's own count, the samples in the pairs it trained, is what the reference's learner counted
    assert 0 < accounts["learner_ids"] == sum(len(r["trained_ids"]) for r in ref_reports)
    assert accounts["learner_batches"] == 2 and accounts["untrained"] == 0


def test_bound_and_ledger_hold_when_an_executor_and_a_generator_die(ray_cluster, tmp_path, tiny_model_path,
                                                                    monkeypatch):
    killed = []
    real_start = stream.Rollout.try_start

    def start_then_kill(self, plan):
        admitted = real_start(self, plan)
        if admitted and plan.round == 1 and not killed:  # round 0 in flight, round 1 just sent: kill both
            ray_cluster.kill(self.executors.actors[0], no_restart=False)
            ray_cluster.kill(self.generator.replicas[0], no_restart=False)
            killed.append(plan.round)
        return admitted

    monkeypatch.setattr(stream.Rollout, "try_start", start_then_kill)
    result = loop.run(tiny_config(tmp_path, tiny_model_path, "crash", max_staleness=1, iterations=3))
    try:
        assert killed == [1]
        metrics = lines(result.run_dir.path / "metrics.jsonl")
        assert [m["iteration"] for m in metrics] == [0, 1, 2]
        for m in metrics:  # at every point the learner took a batch: within the bound, and the ledger balances
            assert all(int(s) <= 1 for s in m["staleness_histogram"]), m["staleness_histogram"]
            assert m["accounts"]["balanced"], m["accounts"]
            assert m["ledger"]["max_staleness_seen"] <= 1
        buffer = json.loads((result.run_dir.path / "summary.json").read_text())["replay_buffer"]
        ledger, accounts = buffer["ledger"], buffer["accounts"]
        # the rollout, the buffer and the driver each counted 18, and the learner accounted for each sent to it
        assert accounts["balanced"] and accounts["rollout"]["judged"] == accounts["sent_ids"] == 18
        assert 0 < accounts["learner_ids"] <= 18
        # 3 rounds x 3 exercises x 2 samples: all produced and trained, none lost
        assert ledger["admitted"] == ledger["produced"] == 18 and ledger["trained"] == 18
        assert ledger["in_flight"] == ledger["dropped"] == ledger["evicted"] == ledger["buffered"] == 0
        # the restarted generator serves the last published weights
        assert [r["policy_version"] for r in result.system.generator.ready()] == [result.policy_version]
        assert result.policy_version == 3
    finally:
        result.system.shutdown()


def test_execution_goes_to_the_free_executor_not_behind_a_slow_program(ray_cluster):
    """Stand-in generator and executors (plain Ray actors, no engine): one program of the round takes 3 s, the
    other seven none. The executor running it gets no more work meanwhile; the other judges the rest."""
    import time

    from codealign.actors.replay_buffer import LedgerConfig, ReplayBuffer
    from codealign.pipeline.rollout import Rollout
    from codealign.pipeline.schedule import BusyClock, RoundPlan
    from codealign.records import Completion, ExecutionResult, Exercise, GenerationRequest
    from codealign.sandbox import Verdict

    @ray_cluster.remote(num_cpus=0)
    class Generator:
        def generate(self, requests):
            time.sleep(0.5)  # one call after the other, each handled before the next returns
            return [[Completion(r.request_id, r.prompt, [1], [-1.0], "stop", 0)] for r in requests]

    @ray_cluster.remote(num_cpus=0)
    class Executor:
        def __init__(self, name):
            self.name = name

        def run_batch(self, jobs):
            time.sleep(sum(3.0 for code, _ in jobs if "slow" in code))
            return [ExecutionResult(Verdict.PASSED, 1.0, 0.0, self.name) for _ in jobs]

    class Group:
        replicas = [Generator.remote()]

    class Pool:
        actors = [Executor.remote("e0"), Executor.remote("e1")]

    exercises = [Exercise(f"ex{i}", "slow" if i == 0 else f"fast {i}", "") for i in range(8)]
    plan = RoundPlan(0, exercises, [GenerationRequest(ex.prompt, request_id=ex.id) for ex in exercises])
    buffer = ReplayBuffer.remote(ledger=LedgerConfig())
    rollout = Rollout(Group(), Pool(), buffer, 1, BusyClock(), chunk=2)  # 4 generation calls of 2 prompts
    try:
        assert rollout.try_start(plan)
        while not rollout.round_done(0):
            done, _ = ray_cluster.wait(rollout.pending(), num_returns=1)
            rollout.handle(done[0])
            rollout.flush()
        batch = ray_cluster.get(buffer.take_round.remote(0, 0))
        judged = {e.prompt: e.result.detail for e in ray_cluster.get(batch["refs"])}
        assert len(judged) == 8 and judged["slow"] == "e0"
        assert sorted(p for p, who in judged.items() if who == "e0") == ["slow"]  # nothing queued behind it
    finally:
        for actor in Group.replicas + Pool.actors + [buffer]:
            ray_cluster.kill(actor)


def test_a_ppo_round_without_reward_signal_says_so_instead_of_a_nan_loss(ray_cluster):
    """Every sample fails its tests (binary reward: every exercise's samples got the same reward): the round has
    no trainable data. The record, the printed line and the report say so and how many groups were dropped; the
    learner gets no batch, the policy stays, and the accounts hold those samples as taken without training data."""
    import random
    from functools import partial

    from bench.pipeline import SimGroup, SimLearner
    from codealign.actors.replay_buffer import LedgerConfig, ReplayBuffer
    from codealign.config import RunConfig, TrainConfig
    from codealign.pipeline.report import render_report, round_line
    from codealign.pipeline.schedule import plan_rounds
    from codealign.records import ExecutionResult, Exercise
    from codealign.sandbox import Verdict

    @ray_cluster.remote(num_cpus=0)
    class Failing:
        def run_batch(self, jobs):
            return [ExecutionResult(Verdict.FAILED, -0.3, 0.0) for _ in jobs]

    class Pool:
        actors = [Failing.remote()]

    cfg = RunConfig()
    cfg.loop.iterations, cfg.loop.exercises_per_iteration, cfg.loop.samples_per_exercise = 2, 2, 2
    cfg.train, cfg.pipeline.max_staleness = TrainConfig(algorithm="ppo", rl_reward="binary"), 0
    plans = plan_rounds(cfg, [Exercise(f"ex{i}", f"exercise {i}", "assert True") for i in range(4)],
                        random.Random(0))
    gen, buffer, learner = SimGroup(1, 1e-3), ReplayBuffer.remote(ledger=LedgerConfig()), SimLearner(1e-3)
    try:
        result = stream.run_stream(
            cfg, plans, gen, Pool(), buffer, learner, load_weights=lambda path: None,
            make_data=lambda plan, exps: loop.round_data(None, cfg, plan.exercises, exps, {}, [], plan.round),
            round_metrics=partial(loop.round_metrics, cfg))
    finally:
        for actor in gen.replicas + Pool.actors + [buffer]:
            ray_cluster.kill(actor)
        learner.close()
    assert len(result.rounds) == 2
    for r in result.rounds:
        assert r["train_items"] == 0 and r["no_trainable_data"] is True
        assert (r["groups_without_signal"], r["groups"]) == (2, 2)
        assert "ppo/loss" not in r and r["new_policy_version"] == 0
        line = round_line(r, "ppo")
        assert "no trainable data: 2 of 2 exercise groups carried no reward signal" in line and "nan" not in line
    assert result.version == 0 and result.accounts["balanced"] and result.accounts["untrained"] == 8
    assert result.accounts["learner_batches"] == 0
    summary = {"eval_exercises": 2, "pass@1_before": 0.0, "pass@1_after": 0.0, "stage_seconds": {"train": 1.0},
               "replay_buffer": {}}
    report = render_report(summary, result.rounds)
    assert report.count("no trainable data: 2 of 2 exercise groups") == 2 and "nan" not in report
    assert "MBPP test (2 tasks, the first of eval.benchmarks)" in report  # named as the closing summary names it
    assert "MBPP validation (2 tasks" in render_report({**summary, "headline_benchmark": "mbpp-val"}, result.rounds)
    assert "MBPP test" not in render_report({**summary, "headline_benchmark": "mbpp-val"}, result.rounds)


def test_the_stream_serves_the_adapter_with_enable_lora(ray_cluster, tmp_path):
    """What the stream driver sends for a published version (pipeline/stream.stream_job's load_weights, through
    GeneratorGroup.start_update): with generator.enable_lora on a LoRA run the adapter, hot-loaded unmerged
    (update_lora), also when a lost replica is caught up; without it the merged weights."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from codealign.actors.generator_group import GeneratorGroup
    from codealign.config import RunConfig
    from codealign.pipeline.serving import policy_for_generators
    from codealign.trainers.modeling import ADAPTER_DIR, MERGED_FILE

    @ray_cluster.remote(num_cpus=0)
    class Replica:
        def __init__(self):
            self.calls, self.policy_version = [], 0

        def ready(self):
            return {"policy_version": self.policy_version}

        def update_weights(self, weights, version):
            self.calls.append(("merged", sorted(weights), version))
            self.policy_version = version

        def update_lora(self, adapter, config, version):
            self.calls.append(("adapter", sorted(adapter), config["r"], version))
            self.policy_version = version

        def seen(self):
            return self.calls

    published = tmp_path / "v00001"
    (published / ADAPTER_DIR).mkdir(parents=True)
    save_file({"base_model.model.layer.lora_A.weight": torch.ones(2, 4)},
              str(published / ADAPTER_DIR / "adapter_model.safetensors"))
    (published / ADAPTER_DIR / "adapter_config.json").write_text('{"r": 2, "lora_alpha": 4}')
    save_file({"layer.weight": torch.ones(4, 4, dtype=torch.bfloat16)}, str(published / MERGED_FILE))
    group = GeneratorGroup.__new__(GeneratorGroup)
    group.replicas, group.max_attempts, group._latest, group.policy_version = [Replica.remote()], 1, None, 0
    try:
        cfg = RunConfig()
        cfg.generator.enable_lora, cfg.train.lora.enabled = True, True
        ray_cluster.get(group.start_update(policy_for_generators(cfg, published), 1))
        group.replicas.append(Replica.remote())  # a replica restarted at version 0: caught up with the adapter
        group._bring_back(1)
        cfg.generator.enable_lora = False
        merged = policy_for_generators(cfg, published)
        assert isinstance(merged["layer.weight"], np.ndarray)
        ray_cluster.get(group.start_update(merged, 2))
        adapter_call = ("adapter", ["base_model.model.layer.lora_A.weight"], 2, 1)
        assert ray_cluster.get(group.replicas[0].seen.remote()) == [adapter_call, ("merged", ["layer.weight"], 2)]
        assert ray_cluster.get(group.replicas[1].seen.remote()) == [adapter_call, ("merged", ["layer.weight"], 2)]
    finally:
        for r in group.replicas:
            ray_cluster.kill(r)
