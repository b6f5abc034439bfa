"""Data-quality checks on a closed window: jumps in a feature's missing rate or unseen-category rate.

A rate is compared with the reference's by a one-sided two-proportion z-test at the per-test
false-alarm rate ``alpha`` (as PSI is), and must also have risen by at least ``min_increase``
(absolute) to matter: a rate going from 1 % to 1.5 % on a huge window is real but harmless.

>>> from streamproc.config import QualityConfig
>>> rate_jump(0.01, 2000, 300, 1000, QualityConfig())[2]
'critical'
>>> rate_jump(0.01, 2000, 12, 1000, QualityConfig())[2] is None
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from scipy.stats import norm

from .config import QualityConfig


@lru_cache(maxsize=64)
def _z(alpha: float) -> float:
    return float(norm.isf(alpha))


def rate_jump(ref_rate: float, ref_count: int, hits: int, count: int, cfg: QualityConfig) -> tuple[float, float, Optional[str]]:
    """(window rate, rate needed to alert, severity or None) for one rate of one window
    (``rate_jumps`` of that one rate)."""
    rates, needed, severities = rate_jumps([ref_rate], [ref_count], [hits], count, cfg)
    return rates[0], needed[0], severities[0]


def rate_jumps(ref_rates: Sequence[float], ref_counts: Sequence[int], hits: Sequence[int], count: int,
               cfg: QualityConfig) -> tuple[list[float], list[float], list[Optional[str]]]:
    """(window rate, rate needed to alert, severity or None) of several rates of one window at
    once (a closed window checks two per feature), as three lists.

    >>> rate_jumps([0.01, 0.01], [2000, 2000], [300, 12], 1000, QualityConfig())[2]
    ['critical', None]
    """
    ref_rates = np.asarray(ref_rates, dtype=np.float64)
    ref_counts = np.asarray(ref_counts)  # ints as int64; a reference file's float count stays a float
    hits = np.asarray(hits, dtype=np.int64)
    rates = hits / count if count else np.zeros(len(hits))
    total = np.maximum(ref_counts + count, 1)
    # Half a count of slack keeps a reference rate of exactly 0 from making any hit significant.
    pooled = np.maximum((ref_rates * ref_counts + hits) / total, 0.5 / total)
    se = np.sqrt(pooled * (1 - pooled) * (1 / max(count, 1) + 1 / np.maximum(ref_counts, 1)))
    needed = ref_rates + np.maximum(cfg.min_increase, _z(cfg.alpha) * se)
    severities = [None if rate < need else "critical" if rate - ref >= cfg.critical_increase else "warning"
                  for rate, need, ref in zip(rates.tolist(), needed.tolist(), ref_rates.tolist())]
    return rates.tolist(), needed.tolist(), severities
