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
from array import array
from typing import Optional, Sequence

import numpy as np

from .policy import WindowInfo
from .columns import numeric_columns, raw_columns, to_float_array
from .binning import EdgeIndex
from .feature_table import FeatureTable
from .identity_cache import IdentityCache
from .profile import NUMERIC, FeatureProfile

SCORE_KEY = "prediction.score"
LABEL_KEY = "prediction.label"


_SAVED_AS = {"_counts": "counts", "_lo": "lo", "_hi": "hi"}  # Pane attributes pickled under other names


# Chunks of fewer events wait in their pane until this many are pending (Pane's docstring).
# Bounds what a pane holds unsketched: at most 31 events, 7.5 KB of copies for 20 numeric and
# 2 categorical features (tracemalloc), only in panes that got small chunks since they were
# last read (a checkpoint reads every changed one). 16 was 5-20 % slower with 200 models.
DEFER_EVENTS = 32
# ... and this many in a worker holding at most FEW_MODELS model versions (the engine says
# which): twice the copies (15 KB a pane), 15 MB at most, for 11-20 % more events a second with
# 200 models fed 8 events a batch each, as under live load (benchmarks/HISTORY.md). Beyond,
# 10,000 models' 75 MB at 32 would double.
DEFER_EVENTS_FEW = 64
FEW_MODELS = 1000
# A chunk's first and last event times: up to this many events, by Python's min and max of a
# list (0.5 µs for 10 times, against 4 µs for numpy's two calls; the two break even at about 100).
_FEW_TIMES = 64


class Pane:
    """The sketches of one stretch of a model version's events (see the module's docstring).

    A chunk of fewer than ``DEFER_EVENTS`` events (``DEFER_EVENTS_FEW`` in a worker of few
    models) of a known layout (a ``FeatureTable``) is not sketched at once: its values are
    copied into the pane's pending rows and sketched with the next ones once that many are
    pending, or whenever ``counts``, ``lo`` or ``hi`` are read (a window's evaluation, a merge,
    a checkpoint). Sketches add up and ``lo`` / ``hi`` are extremes, so the result is the same;
    but a model seeing a few events per batch, as each of thousands does, pays a sketch's fixed
    cost (some 60 µs of numpy calls for 22 features) once per that many events rather than once
    per batch. ``count``, ``start`` and ``end`` are kept up to date at once (alerts and the
    window's close read them).
    """

    # A pane pickled before deferral was introduced restores without one: class defaults.
    _pending: "Optional[_Pending]" = None
    # A new pane's sketches are views of one array, the features' numeric sketches first (in
    # profile order), so a chunk's numeric sketches are added in one call (pickled as that
    # array, see __getstate__). A merged pane, or one saved by an earlier streamproc, has
    # separate arrays and adds feature by feature.
    _flat = None
    _numeric = ()  # the numeric features laid out first in _flat, in order
    _numeric_size = 0  # and the length of their sketches
    _split = None  # the last chunk's profiles, their numeric and categorical names, a layout matching them

    def __init__(self, index: int, counts: dict[str, np.ndarray], lo: Optional[dict[str, float]] = None,
                 hi: Optional[dict[str, float]] = None, count: int = 0, start: float = math.inf, end: float = -math.inf):
        self.index = index
        self._counts = counts
        self._lo = {} if lo is None else lo
        self._hi = {} if hi is None else hi
        self.count = count
        self.start = start
        self.end = end

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """Per feature (and score and label), the sketch of the pane's values."""
        if self._pending is not None:
            self._settle()
        return self._counts

    @property
    def lo(self) -> dict[str, float]:
        """Per numeric feature, its smallest finite value in the pane."""
        if self._pending is not None:
            self._settle()
        return self._lo

    @property
    def hi(self) -> dict[str, float]:
        """Per numeric feature, its largest finite value in the pane."""
        if self._pending is not None:
            self._settle()
        return self._hi

    @classmethod
    def empty(cls, index: int, profiles: dict[str, FeatureProfile]) -> "Pane":
        numeric = tuple(name for name, p in profiles.items() if p.kind == NUMERIC and name not in (SCORE_KEY, LABEL_KEY))
        sizes = {name: p.sketch_size for name, p in profiles.items()}
        pane = cls(index, {})
        pane._lay_out(np.zeros(sum(sizes.values()), dtype=np.int64), sizes, numeric)
        return pane

    def _lay_out(self, flat: np.ndarray, sizes: dict[str, int], numeric: tuple) -> None:
        """Make ``counts`` (in the order of ``sizes``) views of ``flat``, the ``numeric``
        features' sketches first, in that order, then the others'."""
        views, start, first = {}, 0, set(numeric)
        for name in numeric + tuple(name for name in sizes if name not in first):
            views[name] = flat[start:start + sizes[name]]
            start += sizes[name]
        self._counts = {name: views[name] for name in sizes}
        self._flat, self._numeric = flat, numeric
        self._numeric_size = sum(sizes[name] for name in numeric)

    def __getstate__(self) -> dict:
        if self._pending is not None:
            self._settle()
        # Saved under the names a pane had before deferral, so either streamproc reads it.
        state = {_SAVED_AS.get(k, k): v for k, v in self.__dict__.items() if k not in ("_pending", "_split")}
        flat = state.pop("_flat", None)
        numeric = state.pop("_numeric", ())
        state.pop("_numeric_size", None)
        if flat is not None:
            # Checkpoints pickle every pane: one array's bytes and the sketches' sizes cost far
            # less than a numpy array per feature, and the restored pane keeps its one array
            # (laid out as ``empty`` lays it out: the numeric features first).
            state["counts"] = [(name, len(view)) for name, view in self.counts.items()]
            state["_packed"] = (flat.tobytes(), numeric)
        return state

    def __setstate__(self, state: dict) -> None:
        packed = state.pop("_packed", None)
        for attribute, saved in _SAVED_AS.items():
            if saved in state:
                state[attribute] = state.pop(saved)
        self.__dict__.update(state)
        if packed is not None:
            data, numeric = packed[:2]
            self._lay_out(np.frombuffer(data, dtype=np.int64).copy(), dict(state["_counts"]), tuple(numeric))

    def add(self, profiles: dict[str, FeatureProfile], rows: "list[dict] | FeatureTable", ts: Sequence[float],
            scores: Optional[np.ndarray] = None, labels: Optional[list] = None, defer: int = DEFER_EVENTS) -> None:
        """Add one chunk of events (feature rows, event times, scores, labels) to the pane:
        sketched at once, or, when smaller than ``defer`` (``DEFER_EVENTS`` or
        ``DEFER_EVENTS_FEW``), with the next ones (see the class docstring)."""
        n = len(ts)
        if n:
            if n == 1:
                low = high = float(ts[0])
            elif n <= _FEW_TIMES:
                few = ts.tolist() if isinstance(ts, np.ndarray) else ts
                low, high = float(min(few)), float(max(few))
            else:
                low, high = float(np.min(ts)), float(np.max(ts))
            if low < self.start:
                self.start = low
            if high > self.end:
                self.end = high
        self.count += n
        if n >= defer or not isinstance(rows, FeatureTable) or not self._defers(profiles, rows.layout):
            self._sketch(profiles, rows, scores, labels)
            return
        p = self._pending
        if p is not None and not p.takes(profiles, scores, labels):
            self._settle()
            p = None
        if p is None:
            p = self._pending = _Pending(profiles, rows.layout, scores is not None, labels is not None)
        p.extend(rows, scores, labels)
        if p.n >= defer:
            self._settle()

    def _defers(self, profiles: dict[str, FeatureProfile], layout) -> bool:
        """Whether chunks of these profiles in this layout can wait: the layout's numeric and
        other features are the profiles' numeric and categorical ones, in order (the table's
        fast paths, which a pending row keeps; anything else is sketched at once)."""
        split = self._split
        if split is None or split[0] is not profiles:
            numeric, categorical = self._names(profiles)
            split = self._split = (profiles, numeric, categorical, None)
        if split[3] is not layout:
            if split[1] != layout.numeric or split[2] != layout.other:
                return False
            self._split = split[:3] + (layout,)
        return True

    @staticmethod
    def _names(profiles: dict[str, FeatureProfile]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The profiles' numeric and categorical features, in order (not the score or label)."""
        numeric, categorical = [], []
        for name, profile in profiles.items():
            if name != SCORE_KEY and name != LABEL_KEY:
                (numeric if profile.kind == NUMERIC else categorical).append(name)
        return tuple(numeric), tuple(categorical)

    def _settle(self) -> None:
        """Sketch the pending rows."""
        p, self._pending = self._pending, None
        k = len(p.layout.numeric)
        numbers = np.frombuffer(p.numbers, dtype=np.float64).reshape(p.n, k) if k and p.n else np.empty((p.n, k))
        scores = np.frombuffer(p.scores, dtype=np.float64) if p.scores is not None else None
        self._sketch(p.profiles, FeatureTable(p.layout, numbers, p.others), scores, p.labels)

    def _sketch(self, profiles: dict[str, FeatureProfile], rows: "list[dict] | FeatureTable",
                scores: Optional[np.ndarray] = None, labels: Optional[list] = None) -> None:
        """Sketch one chunk of events into ``counts``, ``lo`` and ``hi``.

        The rows (dicts, or a ``FeatureTable`` already in columns) are turned into columns once
        per chunk (one C-level pass per row for all numeric features, one for all categorical
        ones), then binned with numpy, all numeric features together: no Python work per (event,
        feature), and a handful of numpy calls per chunk however many features.
        """
        table = isinstance(rows, FeatureTable)
        counts = self._counts
        split = self._split
        if split is not None and split[0] is profiles:
            numeric, categorical = split[1], split[2]
        else:
            numeric, categorical = self._names(profiles)
        if SCORE_KEY in profiles:
            self._add_numeric(SCORE_KEY, profiles[SCORE_KEY], scores)
        if LABEL_KEY in profiles:
            counts[LABEL_KEY] += profiles[LABEL_KEY].sketch(labels)
        if numeric:
            matrix = rows.numeric_matrix(numeric) if table else numeric_columns(rows, numeric)
            # Extremes ignoring NaN; a row whose extremes are not finite (an infinity among its
            # values, or none but NaN) is settled alone below.
            lows = np.fmin.reduce(matrix, axis=1) if matrix.shape[1] else None
            highs = np.fmax.reduce(matrix, axis=1) if matrix.shape[1] else None
            total = sketch_many([profiles[name].fine_edges for name in numeric], matrix, split=False)
            if self._flat is not None and len(total) == self._numeric_size and tuple(numeric) == self._numeric:
                self._flat[:len(total)] += total  # every numeric feature's sketch at once
            else:
                sketches = np.split(total, np.cumsum([profiles[name].sketch_size for name in numeric])[:-1])
                for name, sketch in zip(numeric, sketches):
                    counts[name] += sketch
            if lows is not None:
                lo, hi = self._lo, self._hi
                for j, (name, low, high) in enumerate(zip(numeric, lows.tolist(), highs.tolist())):
                    if not -math.inf < low <= high < math.inf:
                        finite = matrix[j][np.isfinite(matrix[j])]
                        if not finite.size:
                            continue  # no finite value
                        low, high = float(finite.min()), float(finite.max())
                    if low < lo.get(name, math.inf):
                        lo[name] = low
                    if high > hi.get(name, -math.inf):
                        hi[name] = high
        if categorical:
            columns = rows.columns(categorical) if table else raw_columns(rows, categorical)
            for name, column in zip(categorical, columns):
                counts[name] += profiles[name].sketch(column)

    def _add_numeric(self, name: str, profile: FeatureProfile, values) -> None:
        x = values if isinstance(values, np.ndarray) else to_float_array(values)
        self._counts[name] += profile.sketch(x)
        finite = x[np.isfinite(x)]
        if finite.size:
            self._lo[name] = min(self._lo.get(name, math.inf), float(finite.min()))
            self._hi[name] = max(self._hi.get(name, -math.inf), float(finite.max()))

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


def sketch_many(fine_edges: list[np.ndarray], matrix: np.ndarray, split: bool = True):
    """Window sketches of several numeric features at once; equal to
    ``[profile.sketch(row) for profile, row in ...]`` for profiles with these ``fine_edges``
    (with ``split=False``, those sketches end to end in one array).

    Every feature's values are binned together (``binning.EdgeIndex``, branch-free), so a
    chunk costs a handful of numpy calls, not a few per feature, and one ``bincount`` counts
    them all. The index of a reference's edges is cached for small chunks (a model with a few
    events a batch, where building it would cost as much as the sketch); for large ones only
    the last is kept (a busy model's batch comes in a chunk per window pane, one after the
    other).

    >>> edges = [np.array([0.0, 1.0]), np.array([10.0])]
    >>> [s.tolist() for s in sketch_many(edges, np.array([[-1.0, 0.5, 2.0], [5.0, 50.0, np.nan]]))]
    [[1, 1, 1, 0], [1, 1, 1]]
    """
    cache = _EDGE_LAYOUTS if matrix.shape[1] < SMALL_CHUNK else _LAST_LAYOUT
    index, sketch_start, sketch_sizes, missing_at = cache.get(fine_edges, lambda: _edge_layout(fine_edges))
    where = index.positions(matrix, sketch_start)
    missing = np.isnan(matrix)
    if missing.any():
        np.copyto(where, missing_at, where=missing)
    total = np.bincount(where.ravel(), minlength=int(sketch_sizes.sum()))
    if not split:
        return total
    return [total[s:s + n] for s, n in zip(sketch_start.ravel().tolist(), sketch_sizes.tolist())]


SMALL_CHUNK = 128  # below this many events a chunk's edge index is cached: building it costs about as much as binning

# The model versions sketched in small chunks most recently: a worker whose batches hold a few
# events each of thousands of models sketches each in every batch, and a layout rebuilt for
# each chunk took as long as the sketch (2,000 models, 10 events a batch each: the engine 11.0
# µs an event with 512 layouts cached, 9.2 µs with all). An entry is about 20 KB (20 features
# of 39 fine edges; 29 KB with one feature's edges crowded in a long tail): at most 41 MB (60).
_EDGE_LAYOUTS = IdentityCache(2048)
_LAST_LAYOUT = IdentityCache(1)  # that of the last large chunk


def _edge_layout(fine_edges: list[np.ndarray]) -> tuple:
    """(the features' ``EdgeIndex``, each sketch's start and size, each sketch's missing bin)
    for ``sketch_many``."""
    k = len(fine_edges)
    sketch_sizes = np.fromiter(map(len, fine_edges), dtype=np.int64, count=k) + 2  # value bins, then missing
    sketch_start = np.cumsum(sketch_sizes) - sketch_sizes
    return EdgeIndex(fine_edges), sketch_start[:, None], sketch_sizes, (sketch_start + sketch_sizes - 1)[:, None]


class _Pending:
    """A pane's rows not yet sketched: copies of their values (not views of the batch they
    came in, which would keep the whole batch alive), all of one layout and profiles."""

    __slots__ = ("profiles", "layout", "numbers", "others", "scores", "labels", "n")

    def __init__(self, profiles: dict[str, FeatureProfile], layout, scores: bool, labels: bool):
        self.profiles, self.layout = profiles, layout
        self.numbers = array("d")  # row-major, as FeatureTable holds them
        self.others: list[tuple] = []
        self.scores = array("d") if scores else None
        self.labels: Optional[list] = [] if labels else None
        self.n = 0

    def takes(self, profiles, scores, labels) -> bool:
        """Whether a chunk of these can join the pending rows (its layout, which ``Pane._defers``
        checked against the same profiles, has the same features as theirs)."""
        return (profiles is self.profiles and (scores is None) == (self.scores is None)
                and (labels is None) == (self.labels is None))

    def extend(self, rows: FeatureTable, scores: Optional[np.ndarray], labels: Optional[list]) -> None:
        self.numbers.frombytes(np.ascontiguousarray(rows.numbers, dtype=np.float64).tobytes())
        self.others += rows.others
        if scores is not None:
            self.scores.frombytes(np.ascontiguousarray(scores, dtype=np.float64).tobytes())
        if labels is not None:
            self.labels += labels
        self.n += len(rows)


def merge_all(panes: Sequence[Pane]) -> Pane:
    out = panes[0]
    for p in panes[1:]:
        out = out.merge(p)
    return out
