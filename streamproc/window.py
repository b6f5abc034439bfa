"""Window panes: mergeable sketches of a stretch of one model version's events.

A pane holds, per feature (and for the prediction score and label), the sketch of its values
in the reference profile's bins (``FeatureProfile.sketch``), the smallest and largest numeric
values, the event count and the event-time range. Panes merge by adding (associative and
commutative), so a window is the merge of its panes:

* tumbling windows by event count: one pane of ``window_size`` events per window;
* tumbling windows by event time: one pane per ``seconds`` of event time;
* sliding windows: ``slide`` panes per window, evaluated each time a pane closes.

>>> from streamproc.profile import build_feature_profile
>>> prof = {"x": build_feature_profile("x", [float(i) for i in range(100)])}
>>> a, b = Pane.empty(0, prof), Pane.empty(1, prof)
>>> a.add(prof, [{"x": 1.0}, {"x": 50.0}], [1.0, 2.0])
>>> b.add(prof, [{"x": None}], [3.0])
>>> m = a.merge(b)
>>> (m.index, m.count, m.start, m.end, int(m.counts["x"][-1]), m.lo["x"], m.hi["x"])
(1, 3, 1.0, 3.0, 1, 1.0, 50.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .policy import WindowInfo
from .columns import numeric_columns, raw_columns, to_float_array
from .feature_table import FeatureTable
from .profile import NUMERIC, FeatureProfile

SCORE_KEY = "prediction.score"
LABEL_KEY = "prediction.label"


@dataclass
class Pane:
    index: int
    counts: dict[str, np.ndarray]
    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)
    count: int = 0
    start: float = math.inf
    end: float = -math.inf

    @classmethod
    def empty(cls, index: int, profiles: dict[str, FeatureProfile]) -> "Pane":
        return cls(index, {name: np.zeros(p.sketch_size, dtype=np.int64) for name, p in profiles.items()})

    def add(self, profiles: dict[str, FeatureProfile], rows: "list[dict] | FeatureTable", ts: Sequence[float],
            scores: Optional[np.ndarray] = None, labels: Optional[list] = None) -> None:
        """Sketch one chunk of events (feature rows, event times, scores, labels) into the pane.

        The rows (dicts, or a ``FeatureTable`` already in columns) are turned into columns once
        per chunk (one C-level pass per row for all numeric features, one for all categorical
        ones), then binned with numpy: no Python work per (event, feature). Small chunks (many models share a batch) bin all numeric features
        in one call, since per-call overhead would dominate.
        """
        table = isinstance(rows, FeatureTable)
        numeric, categorical = [], []
        for name, profile in profiles.items():
            if name == SCORE_KEY:
                self._add_numeric(name, profile, scores)
            elif name == LABEL_KEY:
                self.counts[name] += profile.sketch(labels)
            else:
                (numeric if profile.kind == NUMERIC else categorical).append(name)
        if numeric:
            matrix = rows.numeric_matrix(numeric) if table else numeric_columns(rows, numeric)
            finite = np.isfinite(matrix)
            lows = np.where(finite, matrix, math.inf).min(axis=1) if matrix.shape[1] else None
            highs = np.where(finite, matrix, -math.inf).max(axis=1) if matrix.shape[1] else None
            if matrix.shape[1] < SMALL_CHUNK:
                sketches = sketch_many([profiles[name].fine_edges for name in numeric], matrix)
            else:
                sketches = [profiles[name].sketch(matrix[j]) for j, name in enumerate(numeric)]
            for j, name in enumerate(numeric):
                self.counts[name] += sketches[j]
                if lows is not None and lows[j] <= highs[j]:
                    self.lo[name] = min(self.lo.get(name, math.inf), float(lows[j]))
                    self.hi[name] = max(self.hi.get(name, -math.inf), float(highs[j]))
        if categorical:
            columns = rows.columns(categorical) if table else raw_columns(rows, categorical)
            for name, column in zip(categorical, columns):
                self.counts[name] += profiles[name].sketch(column)
        self.count += len(ts)
        if len(ts):
            self.start = min(self.start, float(np.min(ts)))
            self.end = max(self.end, float(np.max(ts)))

    def _add_numeric(self, name: str, profile: FeatureProfile, values) -> None:
        x = values if isinstance(values, np.ndarray) else to_float_array(values)
        self.counts[name] += profile.sketch(x)
        finite = x[np.isfinite(x)]
        if finite.size:
            self.lo[name] = min(self.lo.get(name, math.inf), float(finite.min()))
            self.hi[name] = max(self.hi.get(name, -math.inf), float(finite.max()))

    def merge(self, other: "Pane") -> "Pane":
        """A new pane covering both (the later index); neither input changes."""
        names = set(self.lo) | set(other.lo)
        return Pane(
            max(self.index, other.index),
            {k: self.counts[k] + other.counts[k] for k in self.counts},
            {k: min(self.lo.get(k, math.inf), other.lo.get(k, math.inf)) for k in names},
            {k: max(self.hi.get(k, -math.inf), other.hi.get(k, -math.inf)) for k in names},
            self.count + other.count,
            min(self.start, other.start),
            max(self.end, other.end),
        )

    def info(self) -> WindowInfo:
        return WindowInfo(self.index, self.start if self.count else 0.0, self.end if self.count else 0.0, self.count)


SMALL_CHUNK = 128  # below this many events, ``sketch_many`` beats one numpy call per feature


def sketch_many(fine_edges: list[np.ndarray], matrix: np.ndarray) -> list[np.ndarray]:
    """Window sketches of several numeric features at once; equal to
    ``[profile.sketch(row) for profile, row in ...]`` for profiles with these ``fine_edges``.

    Feature j's edges and values become complex numbers j + x·i: numpy orders complex numbers
    by real part, then imaginary part, so one ``searchsorted`` over every feature's edges bins
    every value within its own feature, and one ``bincount`` counts them all.

    >>> edges = [np.array([0.0, 1.0]), np.array([10.0])]
    >>> [s.tolist() for s in sketch_many(edges, np.array([[-1.0, 0.5, 2.0], [5.0, 50.0, np.nan]]))]
    [[1, 1, 1, 0], [1, 1, 1]]
    """
    k = len(fine_edges)
    sizes = np.fromiter(map(len, fine_edges), dtype=np.int64, count=k)
    edge_start = np.cumsum(sizes) - sizes
    sketch_sizes = sizes + 2  # value bins, then missing
    sketch_start = np.cumsum(sketch_sizes) - sketch_sizes
    edges = np.empty(int(sizes.sum()), dtype=np.complex128)
    edges.real = np.repeat(np.arange(k, dtype=np.float64), sizes)
    edges.imag = np.concatenate(fine_edges) if k else ()
    missing = np.isnan(matrix)
    present = ~missing
    feature = np.broadcast_to(np.arange(k)[:, None], matrix.shape)[present]
    values = np.empty(feature.size, dtype=np.complex128)
    values.real = feature
    values.imag = matrix[present]
    where = np.searchsorted(edges, values, side="right") - edge_start[feature] + sketch_start[feature]
    total = np.bincount(where, minlength=int(sketch_sizes.sum()))
    total[sketch_start + sketch_sizes - 1] += missing.sum(axis=1)
    return [total[s:s + n] for s, n in zip(sketch_start.tolist(), sketch_sizes.tolist())]


def merge_all(panes: Sequence[Pane]) -> Pane:
    out = panes[0]
    for p in panes[1:]:
        out = out.merge(p)
    return out
