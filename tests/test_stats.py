"""The statistics every report uses (streams.stats): sign-flip tests over groups, Holm."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.select import carrying_streams
from streams.stats import group_sign_flip_p, holm, mcnemar_exact


def test_group_sign_flip_p_is_exact_and_agrees_with_few_groups():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 0, 0], bool)
    # 8 clips all favouring a: McNemar calls it significant; as 2 groups of 4 clips it cannot be
    assert mcnemar_exact(a, b) < 0.01
    assert group_sign_flip_p(a, b, np.repeat(["g1", "g2"], 4)) == pytest.approx(0.5)  # 2 of 4 sign patterns
    assert group_sign_flip_p(a, b, np.arange(8).astype(str)) == pytest.approx(2 / 256)
    assert group_sign_flip_p(a, a, np.arange(8).astype(str)) == 1.0


def test_holm_and_carrying_streams():
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    assert carrying_streams({"streams": ["pose", "rgb", "flow"], "params": {}}) == ["rgb", "flow", "pose"]
    weights = {"rgb": 0.02, "flow": 0.5, "pose": 0.48}
    assert carrying_streams({"streams": list(weights), "params": {"weights": weights}}) == ["flow", "pose"]


# issue 33, case 20
# 20. The sampled sign-flip p-value is never 0
def test_a_sampled_sign_flip_p_is_never_zero():
    from streams.stats import group_sign_flip_p

    groups = np.repeat(np.arange(40).astype(str), 3)
    p = group_sign_flip_p(np.ones(120), np.zeros(120), groups, resamples=2000)
    assert p == pytest.approx(1 / 2001)
