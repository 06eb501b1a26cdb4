"""The statistics of `launch.py eval`: the exact McNemar test and the bootstrap intervals, against scipy and
hand-computed cases."""

import numpy as np
import pytest
from scipy import stats

from codealign.evaluation.compare import bootstrap_ci, mcnemar_exact, paired_comparison


@pytest.mark.parametrize("b, c", [(0, 0), (1, 5), (0, 6), (5, 20), (12, 12), (3, 30), (40, 61), (0, 1)])
def test_mcnemar_exact_equals_scipy_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)  # 2 * (C(6,0) + C(6,1)) / 2^6
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(3, 3) == 1.0


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    x = (rng.random(300) < 0.2).astype(float)
    ours = bootstrap_ci(x)
    theirs = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=10_000, random_state=1).confidence_interval
    assert ours[0] == pytest.approx(theirs.low, abs=0.01) and ours[1] == pytest.approx(theirs.high, abs=0.01)
    assert ours[0] < x.mean() < ours[1]
    assert bootstrap_ci(np.zeros(50)) == (0.0, 0.0)  # nothing solved: no uncertainty left in the resampling


def test_paired_comparison_counts_discordant_tasks():
    a = {f"t{i}": float(i < 10) for i in range(100)}  # A solves t0..t9
    b = {f"t{i}": float(i < 5 or 10 <= i < 30) for i in range(100)}  # B solves t0..t4 and t10..t29
    cmp = paired_comparison(a, b)
    assert (cmp.tasks, cmp.only_a, cmp.only_b) == (100, 5, 20)
    assert cmp.pass_a == pytest.approx(0.10) and cmp.pass_b == pytest.approx(0.25)
    assert cmp.difference == pytest.approx(0.15)
    assert cmp.p_value == pytest.approx(stats.binomtest(5, 25, 0.5).pvalue)
    lo, hi = cmp.ci95
    assert 0 < lo < 0.15 < hi
    assert "significant at 0.05" in cmp.sentence() and "not significant" not in cmp.sentence()


def test_paired_comparison_of_identical_models_is_not_significant():
    a = {f"t{i}": float(i % 7 == 0) for i in range(164)}
    cmp = paired_comparison(a, dict(a))
    assert cmp.difference == 0 and cmp.p_value == 1.0 and cmp.ci95 == (0.0, 0.0)


def test_paired_comparison_needs_shared_tasks():
    with pytest.raises(ValueError, match="share no task ids"):
        paired_comparison({"a": 1.0}, {"b": 0.0})
