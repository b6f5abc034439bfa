"""Concept drift: the model's error on labelled predictions, and changes in it.

Errors come from outcomes joined to predictions (``streamproc.outcomes``): for a label, 1 if
the predicted label differs from the true one else 0 (a prediction with only a score predicts
the positive class when the score reaches ``positive_threshold``, and the truth must then be
0/1/true/false); for a value, the absolute difference between score and value. The first
``warmup`` errors set the baseline; after it ADWIN and Page-Hinkley watch the error for an
*increase*. The rolling error rate over the last ``ROLLING`` labelled events is kept for
dashboards.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Optional

import numpy as np

from .config import ConceptConfig, MonitorConfig
from .detectors import Change, StreamDetectors
from .outcomes import Match

ROLLING = 1000
_POSITIVE = {"1", "true"}
_NEGATIVE = {"0", "false"}


def error_of(m: Match, positive_threshold: float) -> Optional[float]:
    """The error of one matched prediction, or None when it cannot be scored."""
    if m.truth is not None:
        if m.label is not None:
            return 0.0 if m.label == m.truth else 1.0
        if m.score == m.score and m.truth in _POSITIVE | _NEGATIVE:
            return 0.0 if (m.score >= positive_threshold) == (m.truth in _POSITIVE) else 1.0
        return None
    if m.value is not None and m.score == m.score:
        return abs(m.score - m.value)
    return None


class ErrorMonitor:
    def __init__(self, cfg: MonitorConfig):
        self.cfg: ConceptConfig = cfg.concept
        self.adwin_cfg = cfg.adwin
        self.ph_cfg = cfg.page_hinkley
        self.count = 0  # errors seen
        self.unscorable = 0
        self.kind: Optional[str] = None  # "classification" or "regression", from the first error
        self._warm: list[float] = []
        self.baseline: Optional[tuple[float, float]] = None
        self.detectors: Optional[StreamDetectors] = None
        self.rolling: deque = deque(maxlen=ROLLING)

    @property
    def rolling_error(self) -> float:
        return sum(self.rolling) / len(self.rolling) if self.rolling else math.nan

    def update(self, matches: list[Match]) -> tuple[list[Change], int]:
        """Changes found in the error of these matches, and the error count before them."""
        errors = []
        for m in matches:
            e = error_of(m, self.cfg.positive_threshold)
            if e is None:
                self.unscorable += 1
            else:
                errors.append(e)
                if self.kind is None:
                    self.kind = "classification" if m.truth is not None else "regression"
        start = self.count
        self.count += len(errors)
        self.rolling.extend(errors)
        changes: list[Change] = []
        if self.detectors is None:
            need = self.cfg.warmup - len(self._warm)
            self._warm.extend(errors[:need])
            errors = errors[need:] if need > 0 else errors
            if len(self._warm) >= self.cfg.warmup:
                mean = float(np.mean(self._warm))
                if self.kind == "classification":
                    # A near-perfect model has almost no spread: scale as if 1 % were wrong.
                    p = max(mean, 0.01)
                    std = math.sqrt(p * (1 - p))
                else:
                    std = max(float(np.std(self._warm)), 0.05 * abs(mean), 1e-9)
                self.baseline = (mean, std)
                self.detectors = StreamDetectors(mean, std, self.adwin_cfg, self.ph_cfg, self.cfg.signal, direction="up")
                self._warm = []
        if self.detectors is not None and errors:
            offset = self.count - len(errors) - start
            changes = [Change(c.detector, c.position + offset, c.effect, c.recent_mean, c.critical)
                       for c in self.detectors.update(np.asarray(errors, dtype=np.float64))]
        return changes, start
