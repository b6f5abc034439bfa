"""Population Stability Index, and thresholds that account for sample size.

PSI = sum_i (q_i - p_i) * ln(q_i / p_i) over bins, p the reference proportions and q the
window's. Empty bins would make it infinite, so both sides are smoothed with half a count per
bin (Laplace/Jeffreys smoothing) before the proportions are taken.

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
    q_counts = np.asarray(window_counts, dtype=np.float64)
    p = (p_counts + smoothing) / (p_counts.sum() + smoothing * p_counts.size)
    q = (q_counts + smoothing) / (q_counts.sum() + smoothing * q_counts.size)
    # Without smoothing an empty bin on one side only would be infinite: floor it at a
    # billionth, so the result is large and finite (alerts must serialise as JSON numbers).
    mask = (p > 0) | (q > 0)
    p, q = np.maximum(p[mask], 1e-9), np.maximum(q[mask], 1e-9)
    return float(np.sum((q - p) * np.log(q / p)))


@lru_cache(maxsize=4096)
def _chi2_quantile(dof: int, alpha: float) -> float:
    return float(chi2.isf(alpha, dof))


def effective_threshold(base: float, n_bins: int, reference_count: int, window_count: int, alpha: float) -> float:
    """``base``, raised to the level a same-distribution sample of these sizes exceeds with probability ``alpha``."""
    dof = max(n_bins - 1, 1)
    noise = _chi2_quantile(dof, alpha) * (1.0 / max(window_count, 1) + 1.0 / max(reference_count, 1))
    return max(base, noise)
