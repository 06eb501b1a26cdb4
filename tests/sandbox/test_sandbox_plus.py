"""HumanEval+ (EvalPlus, hundreds of generated inputs per task, numpy tolerance checks): every canonical solution
passes in the sandbox, as under plain python. One slow test (a few minutes on a loaded 2-core machine)."""

from bench.humaneval_plus import load_plus
from codealign.sandbox import Sandbox, Verdict


def test_every_humaneval_plus_canonical_solution_passes(data_dir):
    tasks = load_plus(data_dir)
    # Some plus checks take tens of seconds of CPU under plain python too (HumanEval/15, /139 ...): generous.
    with Sandbox(timeout_s=300, parallelism=2) as sb:
        results = sb.run_many([(t.program, t.tests) for t in tasks])
    failed = [(t.id, r.verdict.value, r.detail[:200]) for t, r in zip(tasks, results)
              if r.verdict is not Verdict.PASSED]
    assert len(tasks) == 164 and not failed, failed
    assert all(r.mode == "split" for r in results)
