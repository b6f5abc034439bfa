"""Concept drift: the model's error on labelled predictions, and changes in it.

Errors come from outcomes joined to predictions (``streamproc.outcomes``): for a label, 1 if
the predicted label differs from the true one else 0 (a prediction with only a score predicts
the positive class when the score reaches ``positive_threshold``, and the truth must then be
0/1/true/false); for a value, the absolute difference between score and value. The first
``warmup`` errors set the baseline; after it ADWIN and Page-Hinkley watch the error for an
*increase*. The rolling error rate over the last ``ROLLING`` labelled events is kept for
dashboards.

A version's errors are of one kind, that of its first: an outcome of the other kind (a value
where labels came, or the reverse) cannot be scored, as the two errors are not comparable.
A rate of wrong labels is estimated from at least ``MIN_BASELINE_ERRORS`` wrong ones (the
warm-up goes on for them, up to ``MAX_WARMUP_FACTOR`` times ``warmup``): from 500 outcomes of
a model wrong 3 % of the time, 15 or so, the rate came out as low as 1.2 %, and the detectors
scaled to it raised critical alerts on a stationary stream. Absolute errors of values far
from the warm-up's bulk (a glitch of 1e9 among errors of 1) are left out of the baseline:
one of them made its spread so wide that nothing was ever detected.
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
MIN_BASELINE_ERRORS = 50  # wrong labels a rate's baseline is estimated from (about 14 % relative error)
MAX_WARMUP_FACTOR = 10  # ... unless the warm-up reaches this many times concept.warmup outcomes
OUTLIER_MADS = 20  # a value's error this many robust deviations from the warm-up's median is a glitch
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
        error = abs(m.score - m.value)
        return error if math.isfinite(error) else None  # (two huge values of opposite signs)
    return None


def _regression_baseline(errors: list[float]) -> tuple[float, float]:
    """Mean and spread of a warm-up's absolute errors, without gross outliers (beyond
    ``OUTLIER_MADS`` robust deviations from the median; none when most errors are equal)."""
    values = np.asarray(errors, dtype=np.float64)
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    if mad > 0:
        values = values[np.abs(values - median) <= OUTLIER_MADS * mad]
    mean = float(np.mean(values))
    return mean, max(float(np.std(values)), 0.05 * abs(mean), 1e-9)


class ErrorMonitor:
    _warm_labels = _warm_wrong = 0  # (monitors saved before labels were counted restore without them)

    def __init__(self, cfg: MonitorConfig):
        self.cfg: ConceptConfig = cfg.concept
        self.adwin_cfg = cfg.adwin
        self.ph_cfg = cfg.page_hinkley
        self.count = 0  # errors seen
        self.unscorable = 0
        self.kind: Optional[str] = None  # "classification" or "regression", from the first error
        self._warm: list[float] = []  # the warm-up's errors of values
        self._warm_labels = 0  # the warm-up's labelled outcomes, and how many were wrong
        self._warm_wrong = 0
        self.baseline: Optional[tuple[float, float]] = None
        self.detectors: Optional[StreamDetectors] = None
        self.rolling: deque = deque(maxlen=ROLLING)

    @property
    def rolling_error(self) -> float:
        return sum(self.rolling) / len(self.rolling) if self.rolling else math.nan

    def update(self, matches: list[Match], ts_out: Optional[list] = None, levels: Optional[list] = None,
               block: int = 0) -> tuple[list[Change], int]:
        """Changes found in the error of these matches, and the error count before them (a
        change's position counts the errors of these matches; ``ts_out`` gets their times;
        ``levels`` and ``block``: see ``StreamDetectors.update``, positions counted the same way)."""
        errors = []
        for m in matches:
            e = error_of(m, self.cfg.positive_threshold)
            kind = "classification" if m.truth is not None else "regression"
            if e is None or (self.kind is not None and kind != self.kind):
                self.unscorable += 1
            else:
                errors.append(e)
                self.kind = kind
                if ts_out is not None:
                    ts_out.append(m.ts)
        start = self.count
        self.count += len(errors)
        self.rolling.extend(errors)
        changes: list[Change] = []
        if self.detectors is None:
            errors = self._warm_up(errors)
        if self.detectors is not None and errors:
            offset = self.count - len(errors) - start
            found: list = []
            changes = [Change(c.detector, c.position + offset, c.effect, c.recent_mean, c.critical)
                       for c in self.detectors.update(np.asarray(errors, dtype=np.float64), found, block)]
            if levels is not None:
                levels.extend((position + offset, effect) for position, effect in found)
        return changes, start

    def _warm_up(self, errors: list[float]) -> list[float]:
        """Take the warm-up's share of these errors; once it is complete, set the baseline and
        start the detectors. Returns the errors left for them."""
        if self.kind == "classification":
            if self._warm:  # (kept as a list by earlier versions)
                self._warm_labels, self._warm_wrong = len(self._warm), int(sum(self._warm))
                self._warm = []
            limit = self.cfg.warmup * MAX_WARMUP_FACTOR
            for i, e in enumerate(errors):
                self._warm_labels += 1
                self._warm_wrong += e > 0
                if self._warm_labels >= self.cfg.warmup and (self._warm_wrong >= MIN_BASELINE_ERRORS
                                                             or self._warm_labels >= limit):
                    # A near-perfect model has almost no spread: scale as if 1 % were wrong.
                    mean = self._warm_wrong / self._warm_labels
                    p = max(mean, 0.01)
                    self._start(mean, math.sqrt(p * (1 - p)))
                    return errors[i + 1:]
            return []
        need = self.cfg.warmup - len(self._warm)
        self._warm.extend(errors[:need])
        if len(self._warm) < self.cfg.warmup:
            return []
        self._start(*_regression_baseline(self._warm))
        self._warm = []
        return errors[need:] if need > 0 else errors

    def _start(self, mean: float, std: float) -> None:
        self.baseline = (mean, std)
        self.detectors = StreamDetectors(mean, std, self.adwin_cfg, self.ph_cfg, self.cfg.signal, direction="up")
