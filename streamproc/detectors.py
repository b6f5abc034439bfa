"""Streaming change detectors on scalar signals: river's ADWIN and Page-Hinkley, scaled.

river does the detection; this module adds what a service needs around it: parameters scaled
to the signal's baseline standard deviation, an effect size for each change, and batch
updates. When a detector fires, the change is *confirmed* on the next ``confirm`` values: its
effect is their mean minus the baseline mean, in baseline standard deviations. (At the moment
ADWIN cuts its window, the part it keeps still mixes old and new values: a 0.38 sigma shift
measured 0.07 that way.) Changes smaller than ``min_effect`` are dropped; with
``direction="up"`` only increases count (a falling error rate is not drift to alert on).

The mean of each block of values (a window's worth) is measured the same way, so that a drift
can be said to last while the signal stays away from its baseline, whether or not the
detectors fire again (see ``streamproc.policy``). Values enter a block's mean clipped to
``LEVEL_CLIP_SIGMA`` baseline standard deviations: one glitch (an absolute error of 1e6 among
errors of about 1) would otherwise keep its block's mean away, and a drift going, on its own.

>>> import numpy as np
>>> from streamproc.config import ADWINConfig, PageHinkleyConfig
>>> det = StreamDetectors(0.0, 1.0, ADWINConfig(), PageHinkleyConfig())
>>> rng = np.random.default_rng(0)
>>> det.update(rng.normal(0, 1, 5000))
[]
>>> changes = det.update(rng.normal(1.0, 1, 2000))
>>> sorted({c.detector for c in changes})
['adwin', 'page_hinkley']
>>> round(changes[0].effect, 1), changes[0].critical
(1.1, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from river.drift import ADWIN, PageHinkley

from .config import ADWINConfig, PageHinkleyConfig, SignalConfig

LEVEL_CLIP_SIGMA = 10.0  # a value enters a block's mean at most this many baseline std from the baseline mean
FEW_VALUES = 64  # up to this many values a call, finiteness is checked by their sum (see update)


@dataclass(frozen=True)
class Change:
    """A change found by a stream detector at ``position`` (index into the updated values)."""

    detector: str
    position: int
    effect: float  # (recent mean - baseline mean) / baseline std
    recent_mean: float
    critical: bool


class StreamDetectors:
    """ADWIN and Page-Hinkley on one scalar signal (prediction score, error)."""

    def __init__(self, mean: float, std: float, adwin: ADWINConfig, page_hinkley: PageHinkleyConfig,
                 signal: SignalConfig | None = None, direction: str = "both"):
        self.mean = mean
        self.std = std if std and math.isfinite(std) and std > 0 else 1.0
        self.signal = signal or SignalConfig()
        self.direction = direction
        self.adwin = ADWIN(delta=adwin.delta) if adwin.enabled else None
        self.ph = (
            PageHinkley(
                min_instances=page_hinkley.min_instances,
                delta=page_hinkley.delta_sigma * self.std,
                threshold=page_hinkley.threshold_sigma * self.std,
                alpha=page_hinkley.alpha,
                mode="up" if direction == "up" else "both",
            )
            if page_hinkley.enabled
            else None
        )
        self.pending: dict[str, list] = {}  # detector -> [values seen since it fired, their sum]
        self.ignored = 0  # changes below min_effect or in the wrong direction

    def update(self, values: np.ndarray, levels: Optional[list] = None, block: int = 0) -> list[Change]:
        """Feed values in order (non-finite ones are skipped); return the changes confirmed.

        ``levels`` gets, for each block of ``block`` finite values completed, ``(position of its
        last value, effect of its mean)``: whether the signal is still away from its baseline.
        """
        changes: list[Change] = []
        adwin, ph, pending = self.adwin, self.ph, self.pending
        confirm = self.signal.confirm
        plain = values.tolist()
        # A model's few values a batch: every one is finite if their sum is (a NaN or an
        # infinity makes it neither; an overflow only takes numpy's check), a tenth of numpy's cost.
        if len(plain) <= FEW_VALUES and math.isfinite(sum(plain)):
            positions = None
        else:
            finite = np.isfinite(values)
            positions = None if finite.all() else np.flatnonzero(finite)  # (None: every value is finite)
        if levels is not None and block > 0:
            self._levels(values, positions, levels, block)
        if positions is None:
            items = enumerate(plain)
        else:
            items = zip(positions.tolist(), values[positions].tolist())
        adwin_update = adwin.update if adwin is not None else None
        ph_update = ph.update if ph is not None else None
        for i, v in items:
            if pending:
                for name in list(pending):
                    acc = pending[name]
                    acc[0] += 1
                    acc[1] += v
                    if acc[0] >= confirm:
                        del pending[name]
                        self._confirm(name, i, acc[1] / acc[0], changes)
            if adwin is not None:
                adwin_update(v)
                if adwin.drift_detected and "adwin" not in pending:
                    pending["adwin"] = [0, 0.0]
            if ph is not None:
                ph_update(v)
                if ph.drift_detected and "page_hinkley" not in pending:
                    pending["page_hinkley"] = [0, 0.0]
        return changes

    def _levels(self, values: np.ndarray, positions: Optional[np.ndarray], levels: list, block: int) -> None:
        """Add ``values`` (at ``positions``, None: all finite) to the block in progress; append
        ``(position, effect)`` per block completed (see ``update``)."""
        finite = values if positions is None else values[positions]
        reach = LEVEL_CLIP_SIGMA * self.std
        finite = np.minimum(np.maximum(finite, self.mean - reach), self.mean + reach)
        total, n = getattr(self, "_block_sum", 0.0), getattr(self, "_block_n", 0)  # (0 in states saved before blocks)
        if n + len(finite) < block:  # (most calls: no block completed)
            self._block_sum, self._block_n = total + float(finite.sum()), n + len(finite)
            return
        i = 0
        while i < len(finite):
            take = min(block - n, len(finite) - i)
            total += float(finite[i:i + take].sum())
            n += take
            i += take
            if n >= block:
                levels.append((i - 1 if positions is None else int(positions[i - 1]), (total / n - self.mean) / self.std))
                total, n = 0.0, 0
        self._block_sum, self._block_n = total, n

    def away(self, effect: float, block: int) -> bool:
        """Whether a mean of ``block`` values with this effect is away from the baseline: at
        least ``min_effect``, and two standard errors of such a mean (1/sqrt(block) baseline
        standard deviations each: with small windows, or a min_effect of 0, noise alone would
        keep a drift going for ever)."""
        size = effect if self.direction == "up" else abs(effect)
        return size >= max(self.signal.min_effect, 2.0 / math.sqrt(block))

    def _confirm(self, detector: str, position: int, recent_mean: float, changes: list) -> None:
        effect = (recent_mean - self.mean) / self.std
        size = effect if self.direction == "up" else abs(effect)
        if size >= self.signal.min_effect:
            changes.append(Change(detector, position, effect, recent_mean, size >= self.signal.critical_effect))
        else:
            self.ignored += 1
