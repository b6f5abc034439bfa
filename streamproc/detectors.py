"""Streaming change detectors on scalar signals: river's ADWIN and Page-Hinkley, scaled.

river does the detection; this module adds what a service needs around it: parameters scaled
to the signal's reference standard deviation, an effect size for each change (so a tiny but
"significant" shift after millions of events can be ignored), and batch updates.

>>> import numpy as np
>>> from streamproc.config import ADWINConfig, PageHinkleyConfig
>>> det = ScoreDetectors(mean=0.0, std=1.0, adwin=ADWINConfig(), page_hinkley=PageHinkleyConfig())
>>> rng = np.random.default_rng(0)
>>> det.update(rng.normal(0, 1, 5000))
[]
>>> changes = det.update(rng.normal(1.0, 1, 2000))
>>> sorted({c.detector for c in changes})
['adwin', 'page_hinkley']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from river.drift import ADWIN, PageHinkley

from .config import ADWINConfig, PageHinkleyConfig


@dataclass(frozen=True)
class Change:
    """A change found by a stream detector at ``position`` (index into the updated values)."""

    detector: str
    position: int
    effect: float  # ADWIN: |mean after - mean before|; Page-Hinkley: the test statistic; both in reference std units
    statistic: float
    threshold: float
    critical: bool


class ScoreDetectors:
    """ADWIN and Page-Hinkley on one scalar signal (prediction score, error rate)."""

    def __init__(self, mean: float, std: float, adwin: ADWINConfig, page_hinkley: PageHinkleyConfig):
        self.mean = mean
        self.std = std if std and math.isfinite(std) and std > 0 else 1.0
        self.adwin_cfg = adwin
        self.ph_cfg = page_hinkley
        self.adwin = ADWIN(delta=adwin.delta) if adwin.enabled else None
        self.ph = (
            PageHinkley(
                min_instances=page_hinkley.min_instances,
                delta=page_hinkley.delta_sigma * self.std,
                threshold=page_hinkley.threshold_sigma * self.std,
                alpha=page_hinkley.alpha,
            )
            if page_hinkley.enabled
            else None
        )
        self.ignored = 0  # ADWIN changes below min_effect

    def update(self, values: np.ndarray) -> list[Change]:
        """Feed finite values in order; return the changes found."""
        changes: list[Change] = []
        adwin, ph = self.adwin, self.ph
        for i, v in enumerate(values.tolist()):
            if v != v or v in (math.inf, -math.inf):
                continue
            if adwin is not None:
                w0, m0 = adwin.width, adwin.estimation
                adwin.update(v)
                if adwin.drift_detected:
                    # Effect: the mean of the part ADWIN dropped versus the part it kept.
                    w1, m1 = adwin.width, adwin.estimation
                    dropped = w0 + 1 - w1
                    old_mean = (m0 * w0 + v - m1 * w1) / dropped if dropped > 0 else m0
                    effect = abs(m1 - old_mean) / self.std
                    if effect >= self.adwin_cfg.min_effect:
                        changes.append(
                            Change("adwin", i, effect, effect, self.adwin_cfg.min_effect, effect >= self.adwin_cfg.critical_effect)
                        )
                    else:
                        self.ignored += 1
            if ph is not None:
                ph.update(v)
                if ph.drift_detected:
                    stat = max(ph._sum_increase - ph._min_increase, ph._max_decrease - ph._sum_decrease) / self.std
                    changes.append(Change("page_hinkley", i, stat, stat, self.ph_cfg.threshold_sigma, False))
        return changes
