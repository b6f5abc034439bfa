"""Population Stability Index, and thresholds that account for sample size.

PSI = sum_i (q_i - p_i) * ln(q_i / p_i) over bins, p the reference proportions and q the
window's. Empty bins would make it infinite, so both sides are smoothed with half a count per
bin (Laplace/Jeffreys smoothing) before the proportions are taken; a bin empty on both sides
is left out, as it says nothing about a change (smoothed, it added to every window's PSI).

Two samples of the *same* distribution still give a positive PSI, and it grows as samples
shrink: n*m/(n+m) * PSI is approximately chi-square with (bins - 1) degrees of freedom. A fixed
0.1 threshold therefore fires constantly on small windows. ``effective_threshold`` raises the
configured threshold to the chi-square quantile that a stationary stream exceeds with
probability ``alpha`` per test, so false alarms stay rare whatever the window size.

PSI is symmetric: swapping reference and window gives the same value when both hold the same
number of events; with different sizes the smoothing weighs them slightly differently.

>>> round(psi([0.5, 0.5], 1000, [500, 500]), 6)
0.0
>>> round(psi([0.5, 0.5], 10**9, [900, 100], smoothing=0.0), 4)
0.8789
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.stats import chi2


def psi(reference_proportions: Sequence[float], reference_count: int, window_counts: Sequence[int], smoothing: float = 0.5) -> float:
    """PSI of a window's bin counts against reference proportions (same bins, same order)."""
    p_counts = np.asarray(reference_proportions, dtype=np.float64) * reference_count
    return psi_segments(p_counts, np.asarray(window_counts, dtype=np.float64), np.zeros(1, dtype=np.int64), smoothing)[0]


def psi_segments(reference_counts: np.ndarray, window_counts: np.ndarray, starts: np.ndarray,
                 smoothing: float = 0.5) -> list[float]:
    """PSI of several signals at once: their bins laid end to end, signal j's from ``starts[j]``
    (reference counts and window counts as float arrays of the same length).

    >>> [round(v, 4) for v in psi_segments(np.array([500.0, 500.0, 90.0, 10.0]), np.array([500.0, 500.0, 10.0, 90.0]),
    ...                                      np.array([0, 2]))]
    [0.0, 3.4122]
    >>> round(psi([0.9, 0.1], 100, [10, 90]), 4)
    3.4122
    """
    sizes = np.diff(np.append(starts, len(reference_counts)))
    # A bin empty on both sides is left out, smoothing and all: smoothed, it added about
    # (s/m - s/n) * ln(n/m) to every window's PSI (m events in the window, n in the reference),
    # which the chi-square threshold does not allow for. Every numeric feature has such a bin
    # (above its largest reference value), an integer one two; with windows of 100 against a
    # reference of 100,000, a stationary integer feature went over its threshold at alpha 1e-2
    # in 7.5 % of windows.
    used = (reference_counts > 0) | (window_counts > 0)
    k = np.repeat(np.add.reduceat(used.astype(np.float64), starts), sizes)  # bins used, per signal
    with np.errstate(divide="ignore", invalid="ignore"):  # (a signal with no bin used: none on either side)
        p = (reference_counts + smoothing) / (np.repeat(np.add.reduceat(reference_counts, starts), sizes) + smoothing * k)
        q = (window_counts + smoothing) / (np.repeat(np.add.reduceat(window_counts, starts), sizes) + smoothing * k)
    # Without smoothing an empty bin on one side only would be infinite: floor it at a
    # billionth, so the result is large and finite (alerts must serialise as JSON numbers).
    p, q = np.maximum(np.where(used, p, 1.0), 1e-9), np.maximum(np.where(used, q, 1.0), 1e-9)
    return np.add.reduceat(np.where(used, (q - p) * np.log(q / p), 0.0), starts).tolist()


@lru_cache(maxsize=4096)
def chi2_quantile(dof: int, alpha: float) -> float:
    return float(chi2.isf(alpha, dof))


def effective_threshold(base: float, n_bins: int, reference_count: int, window_count: int, alpha: float) -> float:
    """``base``, raised to the level a same-distribution sample of these sizes exceeds with probability ``alpha``."""
    dof = max(n_bins - 1, 1)
    noise = chi2_quantile(dof, alpha) * (1.0 / max(window_count, 1) + 1.0 / max(reference_count, 1))
    return max(base, noise)
