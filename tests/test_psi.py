"""Unit tests of ``streamproc.psi``: the PSI statistic and the sample-size-aware threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from streamproc.profile import build_feature_profile
from streamproc.psi import effective_threshold, psi


def test_psi_matches_hand_computation_three_bins():
    # Reference: proportions [0.5, 0.3, 0.2] of 10 events -> counts [5, 3, 2].
    # Window counts [2, 3, 5]. Smoothing 0.5 per bin, 3 bins -> +1.5 on each total.
    p = [(5 + 0.5) / (10 + 1.5), (3 + 0.5) / (10 + 1.5), (2 + 0.5) / (10 + 1.5)]
    q = [(2 + 0.5) / (10 + 1.5), (3 + 0.5) / (10 + 1.5), (5 + 0.5) / (10 + 1.5)]
    expected = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q))
    # The middle bin contributes nothing; the outer two contribute equally.
    assert expected == pytest.approx(2 * (3 / 11.5) * math.log(5.5 / 2.5))
    assert psi([0.5, 0.3, 0.2], 10, [2, 3, 5]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.411369, abs=1e-6)


def test_psi_matches_hand_computation_two_bins_unsmoothed():
    # (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5)
    expected = 0.4 * math.log(1.8) + (-0.4) * math.log(0.2)
    assert psi([0.5, 0.5], 10**9, [900, 100], smoothing=0.0) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.8789, abs=1e-4)


def test_psi_zero_on_identical_distributions():
    assert psi([0.25, 0.25, 0.5], 400, [100, 100, 200]) == pytest.approx(0.0, abs=1e-15)
    assert psi([0.1] * 10, 1000, [100] * 10) == pytest.approx(0.0, abs=1e-15)
    # Same proportions, different sample sizes: smoothing differs slightly, PSI stays tiny.
    assert 0 <= psi([0.5, 0.5], 1000, [5000, 5000]) < 1e-12


@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=20), st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_psi_is_non_negative(counts, extra):
    window = list(counts)
    window[0] += extra
    total = sum(counts)
    ref = [c / total for c in counts]
    assert psi(ref, total, window) >= -1e-12


def test_psi_grows_with_shift():
    reference = [0.25, 0.25, 0.25, 0.25]
    values = []
    for shift in range(0, 60, 10):
        # Move ``shift`` events of 100 per bin from the first bin to the last.
        window = [100 - shift, 100, 100, 100 + shift]
        values.append(psi(reference, 4000, window))
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_smoothing_makes_empty_bins_finite():
    # Window all in the first bin; second bin empty in the window.
    value = psi([0.5, 0.5], 100, [100, 0])
    p = [(50 + 0.5) / 101, (50 + 0.5) / 101]
    q = [(100 + 0.5) / 101, (0 + 0.5) / 101]
    expected = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q))
    assert math.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-12)
    assert value > 1.0
    # An empty reference bin too (e.g. the unseen category).
    value2 = psi([1.0, 0.0], 100, [50, 50])
    p2 = [100.5 / 101, 0.5 / 101]
    q2 = [50.5 / 101, 50.5 / 101]
    assert value2 == pytest.approx(sum((b - a) * math.log(b / a) for a, b in zip(p2, q2)), rel=1e-12)


def test_effective_threshold_grows_as_window_shrinks():
    thresholds = [effective_threshold(0.1, 12, 2000, w, 1e-6) for w in (10_000, 1000, 300, 100, 30, 10)]
    assert all(b >= a for a, b in zip(thresholds, thresholds[1:])), thresholds
    assert thresholds[-1] > thresholds[2] > 0.1
    # The noise term is the chi-square quantile over the effective sample size.
    assert thresholds[-1] == pytest.approx(chi2.isf(1e-6, 11) * (1 / 10 + 1 / 2000))


def test_effective_threshold_equals_base_for_large_samples():
    assert effective_threshold(0.1, 12, 2000, 1000, 1e-6) == 0.1
    assert effective_threshold(0.25, 12, 10**6, 10**6, 1e-6) == 0.25
    assert effective_threshold(0.1, 2, 10**7, 10**7, 1e-9) == 0.1


def test_effective_threshold_depends_on_alpha_and_bins():
    lax = effective_threshold(0.01, 10, 200, 50, 1e-2)
    strict = effective_threshold(0.01, 10, 200, 50, 1e-6)
    assert strict > lax > 0.01
    assert effective_threshold(0.01, 20, 200, 50, 1e-6) > strict


def test_stationary_windows_stay_below_effective_warning_threshold():
    rng = np.random.default_rng(12345)
    reference = build_feature_profile("x", rng.normal(0, 1, 2000).tolist(), n_bins=10)
    assert reference.count == 2000 and reference.n_bins == 11
    warn = effective_threshold(0.1, reference.n_bins, reference.count, 1000, 1e-6)
    values = []
    for _ in range(200):
        counts = reference.bin_counts(rng.normal(0, 1, 1000))
        assert counts.sum() == 1000
        values.append(psi(reference.proportions, reference.count, counts))
    assert max(values) < warn, (max(values), warn)
    # ... yet far from zero: the threshold is needed because of sampling noise.
    assert np.mean(values) > 0.002


def test_shifted_windows_exceed_the_threshold():
    rng = np.random.default_rng(7)
    reference = build_feature_profile("x", rng.normal(0, 1, 2000).tolist(), n_bins=10)
    warn = effective_threshold(0.1, reference.n_bins, reference.count, 1000, 1e-6)
    counts = reference.bin_counts(rng.normal(1.0, 1, 1000))
    assert psi(reference.proportions, reference.count, counts) > 2 * warn


def test_unsmoothed_psi_of_disjoint_distributions_is_not_zero():
    # Reference all in the first two bins, window all in the (reference-empty) third bin.
    assert psi([0.5, 0.5, 0.0], 1000, [0, 0, 1000], smoothing=0.0) > 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=2, max_size=12), st.randoms(use_true_random=False))
def test_psi_is_symmetric_for_equal_sample_sizes(counts_a, rnd):
    # Shuffle a's counts into b: same total, different distribution.
    counts_b = list(counts_a)
    rnd.shuffle(counts_b)
    n = sum(counts_a)
    if n == 0:
        return
    p_a = [c / n for c in counts_a]
    p_b = [c / n for c in counts_b]
    assert psi(p_a, n, counts_b) == pytest.approx(psi(p_b, n, counts_a), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("values", ["integers", "normal"])
def test_bins_empty_on_both_sides_add_nothing_so_alpha_is_the_false_alarm_rate(values):
    """Windows of 100 against a reference of 100,000: smoothed, every bin empty on both sides
    (above the largest reference value; below the smallest for integers) added about
    (0.5/100 - 0.5/100000) * ln(1000) = 0.035 to each window's PSI, and a stationary feature of
    integers 0..3 went over its threshold at alpha 1e-2 in 7.5 % of windows (normal: 1.55 %)."""
    rng = np.random.default_rng(11)
    draw = (lambda n: rng.integers(0, 4, n).astype(float)) if values == "integers" else (lambda n: rng.normal(0, 1, n))
    p = build_feature_profile("x", draw(100_000).tolist())
    threshold = effective_threshold(0.0, p.n_bins, p.count, 100, 1e-2)
    alarms = sum(psi(p.proportions, p.count, p.bin_counts(draw(100).tolist())) >= threshold for _ in range(2000))
    assert alarms <= 2 * 0.01 * 2000, alarms
    assert psi([0.5, 0.5, 0.0], 1000, [50, 50, 0]) == psi([0.5, 0.5], 1000, [50, 50]) == 0.0
