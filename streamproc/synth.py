"""Synthetic prediction streams with drift at a known moment, for the demo, tests and benchmarks.

Deterministic for a given seed. A model has numeric features ``x0..x{n-1}`` (standard normal)
and categorical ``c0..c{k-1}`` (four categories with fixed frequencies); its score is a
logistic function of the event's own x0, x1 and c0 (drifted ones included):
``1 / (1 + exp(-(1.2 x0 - 0.8 x1 + 0.5 [c0 == "a"] - 0.3)))``, its label ``"1"`` from 0.5 up. A ``Drift`` shifts chosen numeric features by ``shift``
standard deviations and/or moves categorical mass to a new category from ``start`` onwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

CATEGORIES = ["a", "b", "c", "d"]
CATEGORY_P = [0.4, 0.3, 0.2, 0.1]


@dataclass(frozen=True)
class Drift:
    start: int
    features: tuple[str, ...] = ("x0",)
    shift: float = 1.0  # in standard deviations, numeric features
    new_category_rate: float = 0.0  # share of categorical values replaced by "zz", categorical features


@dataclass
class ModelStream:
    model_id: str
    n_numeric: int = 5
    n_categorical: int = 1
    model_version: Optional[str] = None
    drift: Optional[Drift] = None
    seed: int = 0
    t0: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    rate: float = 100.0  # events per second of event time
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def events(self, n: int, start: int = 0) -> Iterator[dict]:
        """Events number ``start .. start+n-1`` (drift applies from ``drift.start``)."""
        rng = self._rng
        x = rng.standard_normal((n, self.n_numeric))
        cats = rng.choice(len(CATEGORIES), size=(n, self.n_categorical), p=CATEGORY_P)
        idx = np.arange(start, start + n)
        cat_vals = np.array(CATEGORIES, dtype=object)[cats]  # python str values
        d = self.drift
        if d is not None:
            drifted = idx >= d.start
            for name in d.features:
                if name.startswith("x") and int(name[1:]) < self.n_numeric:
                    x[drifted, int(name[1:])] += d.shift
                elif name.startswith("c") and int(name[1:]) < self.n_categorical and d.new_category_rate:
                    j = int(name[1:])
                    replace = drifted & (rng.random(n) < d.new_category_rate)
                    cat_vals[replace, j] = "zz"
        # The score of the features as the event carries them (after the drift: a c0 replaced by
        # the new category is no longer the first one).
        logit = 1.2 * x[:, 0] - 0.8 * x[:, min(1, self.n_numeric - 1)] + 0.5 * (cat_vals[:, 0] == CATEGORIES[0]) - 0.3
        score = 1.0 / (1.0 + np.exp(-logit))
        xs = np.round(x, 5).tolist()
        for i in range(n):
            feats = {f"x{j}": xs[i][j] for j in range(self.n_numeric)}
            feats.update({f"c{j}": cat_vals[i, j] for j in range(self.n_categorical)})
            ev = {
                "event_id": f"{self.model_id}-{int(idx[i])}",
                "model_id": self.model_id,
                "ts": round(self.t0 + int(idx[i]) / self.rate, 3),
                "features": feats,
                "prediction": {"score": round(float(score[i]), 6), "label": "1" if score[i] >= 0.5 else "0"},
            }
            if self.model_version is not None:
                ev["model_version"] = self.model_version
            yield ev
