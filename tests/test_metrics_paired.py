"""``rlad.core.metrics.wtl_wilcoxon``: the benchmarks' W/T/L and paired Wilcoxon p."""
import math

import numpy as np
import pytest

from rlad.core.metrics import wtl_wilcoxon


def test_wins_ties_losses_and_p():
    a = [0.5, 0.6, 0.7, 0.8, 0.9]
    b = [0.4, 0.6005, 0.72, 0.8, 0.95]  # a - b: win, tie (|d| <= 0.001), loss, tie, loss
    wtl, p = wtl_wilcoxon(a, b)
    assert wtl == "1/2/2"
    assert isinstance(p, float) and 0 < p <= 1
    assert wtl_wilcoxon(a, b, tie=0.0001)[0] == "1/1/3"  # the tie band is the argument's


def test_known_p_value():
    # six positive differences: the exact two-sided p is 2 / 2**6
    wtl, p = wtl_wilcoxon(np.arange(1.0, 7.0), np.zeros(6))
    assert wtl == "6/0/0"
    assert p == pytest.approx(2 / 64)
    assert wtl_wilcoxon(np.zeros(6), np.arange(1.0, 7.0)) == ("0/0/6", pytest.approx(2 / 64))


def test_p_is_nan_below_the_minimum():
    a, b = np.arange(1.0, 7.0), np.zeros(6)
    assert math.isnan(wtl_wilcoxon(a, a)[1])  # no pair differs
    assert not math.isnan(wtl_wilcoxon(a[:5], b[:5])[1])
    assert math.isnan(wtl_wilcoxon(a[:5], b[:5], min_differ=6)[1])  # 5 pairs differ
    assert not math.isnan(wtl_wilcoxon(a, b, min_differ=6)[1])
    same = np.r_[a[:5], 0.0]
    assert math.isnan(wtl_wilcoxon(same, b, min_differ=6)[1])  # 6 pairs, 5 differ
    assert not math.isnan(wtl_wilcoxon(same, b, min_pairs=6)[1])
    assert math.isnan(wtl_wilcoxon(a[:5], b[:5], min_pairs=6)[1])  # 5 pairs


def test_rounded_differences():
    a, b = np.array([0.12341, 0.5, 0.3, 0.3]), np.array([0.12339, 0.4, 0.30004, 0.30015])
    # differences 0.00002 and -0.00004 round to 0 (ties), -0.00015 to -0.0002 (a loss)
    assert wtl_wilcoxon(a, b, tie=0, decimals=4)[0] == "1/2/1"
    only_rounding = wtl_wilcoxon([0.12341, 0.2], [0.12339, 0.2], tie=0, decimals=4)
    assert only_rounding[0] == "0/2/0" and math.isnan(only_rounding[1])  # nothing differs at 4 decimals
    assert not math.isnan(wtl_wilcoxon([0.12341, 0.2], [0.12339, 0.2], tie=0)[1])  # unrounded: one differs


def test_rounding_counts_but_p_is_from_the_differences():
    d = np.array([0.00041, 0.00042, 0.00043, -0.000449, 0.0006, 0.0007])  # the first four round to +-0.0004
    wtl, p = wtl_wilcoxon(d, np.zeros(6), tie=0, decimals=4)
    assert wtl == "5/0/1"
    assert p == pytest.approx(14 / 64)  # the exact p of the unrounded ranks (rounded ones would tie: 0.156)
