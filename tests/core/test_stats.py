"""Intervals, paired tests and verdicts, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from icl_lens.core.errors import ConfigError
from icl_lens.core.stats import (
    accuracy_interval,
    compare_paired,
    mcnemar_exact,
    mean_and_se,
    proportion_interval,
    ratio_interval,
    verdict,
)

Z95 = 1.959963984540054


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(7, 20), (0, 10), (10, 10), (22, 100), (1, 3)])
def test_wilson_interval_matches_the_formula(k, n):
    low, high = proportion_interval(k, n)
    exp_low, exp_high = wilson_by_hand(k, n)
    assert low == pytest.approx(max(0.0, exp_low), abs=1e-9)
    assert high == pytest.approx(min(1.0, exp_high), abs=1e-9)
    assert low <= k / n <= high


def test_wilson_known_values_and_edges():
    # 7 of 20: [0.1812, 0.5671] (Wilson 1927; Newcombe 1998, table I style check)
    low, high = proportion_interval(7, 20)
    assert (round(low, 4), round(high, 4)) == (0.1812, 0.5671)
    # 0 of 10 is not the empty interval a normal approximation gives
    low, high = proportion_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(x) for x in proportion_interval(0, 0))
    with pytest.raises(ConfigError):
        proportion_interval(5, 3)


def test_accuracy_interval_over_the_last_axis():
    correct = torch.zeros(2, 3, 20, dtype=torch.bool)
    correct[0, 1, :7] = True
    low, high = accuracy_interval(correct)
    assert low.shape == (2, 3)
    assert float(low[0, 1]) == pytest.approx(0.1812, abs=1e-4)
    assert float(high[1, 2]) == pytest.approx(wilson_by_hand(0, 20)[1], abs=1e-6)


def test_mcnemar_exact_p_value_by_hand():
    # 1 vs 9 discordant pairs: p = 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    # 3 vs 3: symmetric, p = 1
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_compare_paired_binary_uses_mcnemar_and_counts_discordant_pairs():
    a = torch.tensor([1] * 10 + [0] * 10, dtype=torch.bool)  # the vector
    b = torch.tensor([0] * 9 + [1] + [0] * 10, dtype=torch.bool)  # zero-shot
    c = compare_paired(a, b, names=("zero_shot+vector", "zero_shot"), seed=0)
    assert c.test == "mcnemar-exact" and c.n == 20
    assert (c.a_only, c.b_only) == (9, 0)
    assert c.p_value == pytest.approx(2 / 2**9)
    assert c.difference == pytest.approx(0.45)
    assert c.ci_low > 0 and c.significant
    text = verdict(c, what="accuracy")
    assert "raises" in text and "p = 0.0039" in text and "n = 20" in text


def test_compare_paired_is_seeded_and_says_inconclusive():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(30, generator=gen)
    b = a + 0.01 * torch.randn(30, generator=gen)
    one, two = compare_paired(a, b, seed=3), compare_paired(a, b, seed=3)
    assert one == two  # bootstrap and permutation are seeded
    other = compare_paired(a, b, seed=4)
    assert (other.ci_low, other.ci_high) != (one.ci_low, one.ci_high)
    assert one.test == "paired-permutation"
    same = compare_paired(a, a, seed=0)
    assert same.p_value == 1.0 and (same.ci_low, same.ci_high) == (0.0, 0.0)
    flat = compare_paired(torch.tensor([1, 0, 1, 0.0]), torch.tensor([0, 1, 0, 1.0]))
    assert "inconclusive with n = 4" in verdict(flat)


def test_ratio_interval_and_standard_error():
    num = torch.tensor([1.0] * 5 + [0.0] * 5)
    den = torch.tensor([1.0] * 10)
    r, low, high = ratio_interval(num, den, seed=0)
    assert r == pytest.approx(0.5) and low < 0.5 < high
    assert ratio_interval(num, den, seed=0) == (r, low, high)
    assert all(math.isnan(x) for x in ratio_interval(num, torch.zeros(10)))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mean, se = mean_and_se(x)
    assert float(mean) == pytest.approx(2.5)
    assert float(se) == pytest.approx(math.sqrt(5 / 3) / 2)


def test_mean_interval_is_the_normal_interval_for_a_symmetric_sample():
    from icl_lens.core.stats import mean_interval

    values = torch.arange(10.0)
    mean, low, high = mean_interval(values, seed=3)
    se = float(values.std(unbiased=False)) / math.sqrt(10)  # the bootstrap's plug-in standard error
    assert (
        mean == 4.5
        and low == pytest.approx(4.5 - 1.96 * se, abs=0.25)
        and high == pytest.approx(4.5 + 1.96 * se, abs=0.25)
    )
    assert mean_interval(values, seed=3) == (mean, low, high)  # seeded
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in mean_interval([]))
