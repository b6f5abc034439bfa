"""Reference profiles: what "normal" looks like for each feature and for the prediction.

A profile is built from a sample (the first ``warmup_size`` events of a model version, or a
training-data file) and then fixed. Windows of live data are binned with the profile's bins
and compared to its proportions (see ``streamproc.psi``).

Numeric features: interior quantile edges, so the outer bins are open-ended and every value
(including +-inf) lands in a bin; NaN and null land in the trailing "missing" bin.
Categorical features (strings, booleans): the reference categories plus an "unseen" bin for
anything else, then the "missing" bin.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from itertools import chain
from typing import Any, Literal, Optional, Sequence

import numpy as np

from .columns import raw_columns, to_float_array
from .events import is_id

NUMERIC = "numeric"
CATEGORICAL = "categorical"
Kind = Literal["numeric", "categorical"]
UNSEEN = "__unseen__"
SKETCH_RESOLUTION = 40  # quantile bins of a numeric feature's window sketch
MISSING = "__missing__"


_NUMBER_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})


MAX_STRAY_SHARE = 0.01  # of a numeric feature's present values, at most this share may be strings


def infer_kind(values: Sequence[Any]) -> Kind:
    """Numeric when the present values are numbers, but for at most ``MAX_STRAY_SHARE`` strays:
    strings (a producer's occasional "N/A": read as missing, or as the number they spell, as
    windows read strings in a numeric feature) and booleans (a CSV's stray ``TRUE``: read as
    1 or 0); categorical with more of them.

    One stray string, or one boolean, made a continuous feature categorical, its categories the
    text of a few numbers and every other value unseen, so it was in effect no longer monitored.

    >>> infer_kind([0.5] * 99 + ["N/A"]), infer_kind([0.5] * 98 + ["N/A"] * 2), infer_kind([1, True])
    ('numeric', 'categorical', 'categorical')
    >>> infer_kind([0.5] * 99 + [True]), infer_kind([True, False, None])
    ('numeric', 'categorical')
    """
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:  # what JSON decodes to: settled without a Python step per value
        return NUMERIC
    present = strays = 0
    for v in values:
        if v is None:
            continue
        present += 1
        if type(v) is str or type(v) is bool:
            strays += 1
        elif not isinstance(v, (int, float)):
            return CATEGORICAL
    return NUMERIC if strays <= MAX_STRAY_SHARE * present else CATEGORICAL


def category_text(v: Any) -> Optional[str]:
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@dataclass(eq=False, slots=True)
class FeatureProfile:
    """The reference distribution of one feature (or of the prediction score or label).

    A worker holds one per (model version, feature), so it is kept small: slots rather than
    an instance dict (an unpickled instance dict is about 300 bytes larger), the fine edges of
    the window sketch once, as a float64 array (a list of Python floats costs four times as
    much), and nothing that can be derived cheaply when a window closes.
    """

    name: str
    kind: Kind
    count: int
    # Numeric: interior bin edges (len(edges) + 1 value bins). Categorical: category names.
    edges: list[float] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    # Proportions over all bins, missing bin last: numeric len(edges) + 2, categorical
    # len(categories) + 2 (the unseen bin, then missing).
    proportions: list[float] = field(default_factory=list)
    missing_rate: float = 0.0
    mean: float = float("nan")
    std: float = float("nan")
    distinct: int = 0  # categorical: distinct categories in the sample (more than kept means the cap was hit)
    # Numeric: finer quantile edges (a superset of ``edges``, kept as a sorted float64 array)
    # for the window's quantile sketch.
    fine_edges: Sequence[float] = field(default_factory=list)
    _edges: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._edges = np.asarray(self.edges, dtype=np.float64)
        if self.kind == NUMERIC:
            self.fine_edges = np.union1d(np.asarray(self.fine_edges, dtype=np.float64), self._edges)
        else:
            self.fine_edges = np.empty(0, dtype=np.float64)

    @classmethod
    def numeric(cls, name: str, count: int, edges: list[float], proportions: list[float], mean: float, std: float,
                fine_edges: np.ndarray) -> "FeatureProfile":
        """A numeric profile without missing values whose ``fine_edges`` (float64, strictly
        increasing, owning its data) already hold all its ``edges``: what the constructor
        makes of them, without its union of the two (a third of the time of building the
        profiles of a reference's continuous features)."""
        profile = cls.__new__(cls)
        profile.name, profile.kind, profile.count = name, NUMERIC, count
        profile.edges, profile.categories, profile.proportions = edges, [], proportions
        profile.missing_rate, profile.mean, profile.std, profile.distinct = 0.0, mean, std, 0
        profile.fine_edges = fine_edges
        profile._edges = np.asarray(edges, dtype=np.float64)
        return profile

    def __getstate__(self) -> dict:
        # Checkpoints pickle every reference again: the fine edges go as their bytes (a numpy
        # array's own pickling costs more than the rest of the profile), the fields by name.
        state = {name: getattr(self, name) for name in _PROFILE_FIELDS}
        state["fine_edges"] = self.fine_edges.tobytes()
        return state

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple):  # (None, slots): the default state of a slotted object
            state = state[1]
        for name in _PROFILE_FIELDS:
            object.__setattr__(self, name, state[name])
        if isinstance(self.fine_edges, bytes):
            self.fine_edges = np.frombuffer(self.fine_edges, dtype=np.float64).copy()  # owns its data
            self._edges = np.asarray(self.edges, dtype=np.float64)
        elif isinstance(self.fine_edges, np.ndarray):  # state of an earlier streamproc
            self._edges = np.asarray(self.edges, dtype=np.float64)
        else:  # state of an older streamproc (lists, and arrays since derived on demand)
            self.__post_init__()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureProfile):
            return NotImplemented
        return _comparable(self.to_dict()) == _comparable(other.to_dict())

    __hash__ = None  # mutable, compared by value

    @property
    def n_bins(self) -> int:
        return len(self.proportions)

    @property
    def sketch_size(self) -> int:
        """Length of a window sketch: fine bins plus missing (numeric), or the bins (categorical)."""
        return len(self.fine_edges) + 2 if self.kind == NUMERIC else self.n_bins

    def bin_counts(self, values: Sequence[Any]) -> np.ndarray:
        """Counts of ``values`` in this profile's bins (missing last)."""
        if self.kind == NUMERIC:
            return numeric_bin_counts(to_float_array(values), self._edges)
        return categorical_bin_counts(values, self.categories)

    def sketch(self, values) -> np.ndarray:
        """The window sketch of ``values``: fine-bin counts (numeric) or bin counts (categorical).

        Sketches of the same profile add: the sketch of two chunks is the sum of theirs.
        """
        if self.kind == NUMERIC:
            x = values if isinstance(values, np.ndarray) else to_float_array(values)
            return numeric_bin_counts(x, self.fine_edges)
        return categorical_bin_counts(values, self.categories)

    def sketch_to_bin(self) -> np.ndarray:
        """For each position of a window sketch, the PSI bin it counts in (missing last).

        Numeric: fine bin i (``[fine[i-1], fine[i])``) lies inside the PSI bin of its lower
        edge, the open lower bin in the first, missing in missing. Categorical: the same bins.
        """
        if self.kind != NUMERIC:
            return np.arange(self.n_bins)
        inner = np.searchsorted(self._edges, self.fine_edges, side="right")
        return np.concatenate(([0], inner, [self.n_bins - 1]))

    def to_bins(self, sketch: np.ndarray) -> np.ndarray:
        """PSI bin counts (missing last) from a window sketch."""
        return np.bincount(self.sketch_to_bin(), weights=sketch, minlength=self.n_bins).astype(np.int64)

    def quantiles(self, sketch: np.ndarray, qs: Sequence[float], lo: float, hi: float) -> list[float]:
        """Approximate quantiles of the values in a numeric sketch (linear within a fine bin;
        the open outer bins end at the window's ``lo`` and ``hi``)."""
        if self.kind != NUMERIC:
            return [float("nan")] * len(qs)
        return sketch_quantiles([self.fine_edges], [sketch], qs, [lo], [hi])[0]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "edges": list(self.edges),
            "categories": list(self.categories),
            "proportions": list(self.proportions),
            "missing_rate": self.missing_rate,
            "mean": self.mean,
            "std": self.std,
            "distinct": self.distinct,
            "fine_edges": [float(e) for e in self.fine_edges],
        }

    def check(self) -> None:
        """Raise ValueError if the profile is inconsistent (e.g. a hand-edited or foreign file)."""
        if self.kind not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"feature {self.name!r}: kind must be numeric or categorical, not {self.kind!r}")
        expected = len(self.edges) + 2 if self.kind == NUMERIC else len(self.categories) + 2
        if len(self.proportions) != expected:
            raise ValueError(f"feature {self.name!r}: {len(self.proportions)} proportions for {expected} bins")
        if any(b < a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"feature {self.name!r}: bin edges must be increasing")
        if any(b < a for a, b in zip(self.fine_edges, self.fine_edges[1:])):
            raise ValueError(f"feature {self.name!r}: fine edges must be increasing")
        if self.count < 1 or any(p < 0 for p in self.proportions):
            raise ValueError(f"feature {self.name!r}: needs a positive count and non-negative proportions")

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureProfile":
        d = dict(d)
        for key in ("mean", "std"):  # JSON has no NaN: written as null
            if d.get(key) is None:
                d[key] = float("nan")
        profile = cls(**d)
        profile.check()
        return profile


def sketch_quantiles(fine_edges: Sequence[np.ndarray], sketches: Sequence[np.ndarray], qs: Sequence[float],
                   lo: Sequence[float], hi: Sequence[float]) -> list[list[float]]:
    """Approximate quantiles of numeric window sketches, several at once (linear within a fine
    bin; the open outer bins of sketch j end at ``lo[j]`` and ``hi[j]``, the window's smallest
    and largest values; NaN for an empty sketch).

    Every sketch's cumulative counts go in one array as complex numbers j + cum·i (numpy orders
    complex numbers by real part, then imaginary part), so one ``searchsorted`` finds every
    quantile within its own sketch, as if each sketch were searched alone.

    >>> edges = [np.array([1.0, 2.0, 3.0])]
    >>> sketch_quantiles(edges, [np.array([0, 10, 10, 0, 0])], [0.5], [1.0], [3.0])
    [[2.0]]
    """
    k, nq = len(sketches), len(qs)
    if not k:
        return []
    sizes = np.array([len(s) - 1 for s in sketches], dtype=np.int64)  # without the missing count
    start = np.cumsum(sizes) - sizes
    flat = np.delete(np.concatenate(sketches), start + sizes + np.arange(k)).astype(np.float64)
    seg = np.repeat(np.arange(k), sizes)
    totals = np.add.reduceat(flat, start)
    cum = np.cumsum(flat)
    cum -= np.repeat(cum[start] - flat[start], sizes)  # per-sketch cumulative sums (exact: integer counts)
    keys = np.empty(len(flat), dtype=np.complex128)
    keys.real, keys.imag = seg, cum
    target = np.outer(totals, np.asarray(qs, dtype=np.float64))  # (k, nq)
    want = np.empty(target.shape, dtype=np.complex128)
    want.real, want.imag = np.arange(k)[:, None], target
    i = np.searchsorted(keys, want.ravel(), side="left").reshape(k, nq) - start[:, None]
    i = np.clip(i, 0, (sizes - 1)[:, None])
    g = i + start[:, None]
    before = np.where(i > 0, cum[g - 1], 0.0)
    width = flat[g]
    frac = np.divide(target - before, width, out=np.zeros_like(target), where=width > 0)
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    # Bounds of sketch j: lo, its fine edges, hi, clipped to [lo, hi] (fine edges are sorted,
    # so the clipped bounds are too); bin i spans bounds i..i+1.
    bstart = start + np.arange(k)  # each sketch has one more bound than value bins
    bounds = np.empty(len(flat) + k, dtype=np.float64)
    outer = np.concatenate((bstart, bstart + sizes))
    bounds[outer] = np.concatenate((lo_a, hi_a))
    inner = np.ones(len(bounds), dtype=bool)
    inner[outer] = False
    bounds[inner] = np.concatenate(fine_edges)
    bounds = np.clip(bounds, np.repeat(lo_a, sizes + 1), np.repeat(hi_a, sizes + 1))
    b = i + bstart[:, None]
    # (Rounded, the interpolation can pass its upper bound by an ulp: never past the window's largest value.)
    out = np.minimum(bounds[b] + frac * (bounds[b + 1] - bounds[b]), bounds[b + 1])
    out[totals == 0] = np.nan
    return out.tolist()


def numeric_bin_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram over open-ended bins defined by interior ``edges``; NaN counted last.

    NaN goes last in numpy's order, so it is searched like any value and then moved to the
    missing bin: one ``bincount``, and no copy of the values present (a third less time for
    the chunks a window sketches).

    >>> numeric_bin_counts(np.array([-1.0, 0.5, np.nan, np.inf]), np.array([0.0, 1.0])).tolist()
    [1, 1, 1, 1]
    """
    n_value_bins = len(edges) + 1
    idx = np.searchsorted(edges, x, side="right")
    missing = np.isnan(x)
    if missing.any():
        idx[missing] = n_value_bins
    return np.bincount(idx, minlength=n_value_bins + 1).astype(np.int64, copy=False)


def categorical_bin_counts(values: Sequence[Any], categories: Sequence[str]) -> np.ndarray:
    unseen = len(categories)
    index = {c: i for i, c in enumerate(categories)}
    tally = Counter(values)
    missing = tally.pop(None, 0)
    if all(type(v) is str for v in tally):  # the usual values: each its own text
        counts = [0] * (unseen + 2)
        get = index.get
        for value, n in tally.items():
            counts[get(value, unseen)] += n
        counts[-1] = missing
        return np.array(counts, dtype=np.int64)
    counts = np.zeros(unseen + 2, dtype=np.int64)
    if any(isinstance(v, (bool, int, float)) for v in tally):
        # True == 1 == 1.0 hash alike in a Counter: count by text instead (rare: categories
        # are normally strings); null among them again.
        tally = Counter(category_text(v) for v in values)
    else:
        counts[-1] = missing
    for value, n in tally.items():
        text = category_text(value)
        if text is None:
            counts[-1] += n
        else:
            counts[index.get(text, unseen)] += n
    return counts


_PROFILE_FIELDS = tuple(f.name for f in fields(FeatureProfile) if f.init)


def _comparable(d: dict) -> dict:
    """A profile dict in which NaN equals NaN (mean and std of a feature without values)."""
    return {k: ("nan" if isinstance(v, float) and v != v else v) for k, v in d.items()}


@lru_cache(maxsize=64)
def _quantile_points(n_bins: int) -> tuple[int, np.ndarray]:
    """(number of PSI edges, the quantile points of the PSI edges then of the sketch's finer
    edges); cached (read-only), since every numeric profile of a reference asks for them."""
    inner = np.linspace(0, 1, n_bins + 1)[1:-1]
    points = np.concatenate((inner, np.linspace(0, 1, SKETCH_RESOLUTION + 1)[1:-1]))
    points.flags.writeable = False
    return len(inner), points


@lru_cache(maxsize=256)
def _interpolation(count: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For ``count`` sorted values, where numpy's default ("linear") quantile at each of
    ``_quantile_points(n_bins)`` falls: the index below and the index above it, its weight
    between them, and whether that weight is at least a half (numpy then interpolates from
    above); cached (read-only), as every reference built from a warm-up has the same count."""
    virtual = (count - 1) * _quantile_points(n_bins)[1]
    below = np.floor(virtual)
    weight = virtual - below
    below = below.astype(np.intp)
    above = below + 1
    top = virtual >= count - 1
    below[top] = above[top] = count - 1
    plan = (below, above, weight, weight >= 0.5)
    for a in plan:
        a.flags.writeable = False
    return plan


def sorted_quantiles(ordered: np.ndarray, n_bins: int) -> np.ndarray:
    """``np.quantile(x, _quantile_points(n_bins))`` along the last axis of ``ordered`` (each
    row sorted ascending, at least one value, no NaN), bit for bit, from the sorted values.

    ``np.quantile`` partitions around each of its 46 points in turn: for 20 features of 400
    values that took 20 times as long as sorting them (a fifth of building a reference).

    >>> x = np.array([[3.0, 1.0, 2.0, 10.0]])
    >>> bool((sorted_quantiles(np.sort(x), 10) == np.quantile(x, _quantile_points(10)[1], axis=1).T).all())
    True
    """
    below, above, weight, upper = _interpolation(ordered.shape[-1], n_bins)
    a, b = ordered[..., below], ordered[..., above]
    diff = b - a
    out = a + diff * weight
    np.subtract(b, diff * (1 - weight), out=out, where=upper)  # numpy's _lerp, exactly
    return out


@lru_cache(maxsize=64)
def _inner_among_fine(n_bins: int) -> Optional[np.ndarray]:
    """Where the PSI edges' quantile points sit among the sketch's finer ones (every one of
    them is one, exactly, for the usual bin counts), or None if some is not."""
    n_inner, points = _quantile_points(n_bins)
    inner, fine = points[:n_inner], points[n_inner:]
    at = np.searchsorted(fine, inner)
    if not n_inner or (at >= len(fine)).any() or (fine[np.minimum(at, len(fine) - 1)] != inner).any():
        return None
    return at


def _usual_numeric_profiles(names: Sequence[str], ordered: np.ndarray, both: np.ndarray,
                            stats: Sequence[tuple[float, float, float]], n_bins: int) -> dict[int, "FeatureProfile"]:
    """The profiles of the features (rows of ``ordered``, each sorted, every value finite,
    ``both`` their quantiles at ``_quantile_points``) whose quantiles are all distinct, below
    their largest value, and whose PSI edges are among their fine edges: the usual sample of a
    continuous feature. Built together, they equal ``_numeric_profile``'s; the rest are left to
    it. Bin i holds the values with exactly i edges at or below them, so with distinct edges
    its count is (values >= edge i-1) - (values >= edge i), found by searching the sorted rows."""
    at = _inner_among_fine(n_bins)
    if at is None:
        return {}
    n_inner = len(at)
    qs, fine = both[:, :n_inner], both[:, n_inner:]
    tops = np.array([top for top, _mean, _std in stats])
    usual = ((np.diff(qs, axis=1) > 0).all(axis=1) & (qs[:, -1] < tops) & (np.diff(fine, axis=1) > 0).all(axis=1)
             & (fine[:, at] == qs).all(axis=1))
    rows = np.flatnonzero(usual).tolist()
    if not rows:
        return {}
    count = ordered.shape[1]
    at_least = count - np.array([np.searchsorted(ordered[j], qs[j], side="left") for j in rows])  # (rows, edges)
    counts = np.empty((len(rows), n_inner + 2), dtype=np.int64)  # the missing bin last, empty
    counts[:, 0] = count - at_least[:, 0]
    counts[:, 1:-2] = at_least[:, :-1] - at_least[:, 1:]
    counts[:, -2] = at_least[:, -1]
    counts[:, -1] = 0
    proportions = (counts / max(count, 1)).tolist()
    edges, fine_edges = qs[rows].tolist(), np.array(fine[rows])
    out = {}
    for i, j in enumerate(rows):
        _top, mean, std = stats[j]
        out[j] = FeatureProfile.numeric(names[j], count, edges[i], proportions[i], mean, std, fine_edges[i].copy())
    return out


def build_feature_profile(
    name: str, values: Sequence[Any], kind: Optional[Kind] = None, n_bins: int = 10, max_categories: int = 50
) -> FeatureProfile:
    """Profile one feature from a reference sample."""
    kind = kind or infer_kind(values)
    if kind == NUMERIC:
        return _numeric_profile(name, to_float_array(values), n_bins)
    return _categorical_profile(name, values, max_categories)


def _numeric_profile(name: str, x: np.ndarray, n_bins: int, quantiles: Optional[np.ndarray] = None,
                     stats: Optional[tuple[float, float, float]] = None) -> FeatureProfile:
    """``quantiles`` and ``stats`` (largest value, mean, standard deviation): the sample's
    quantiles at ``_quantile_points(n_bins)`` and those, when already computed, which
    ``build_reference`` does for all features at once when every value is finite."""
    count = len(x)
    finite = x if quantiles is not None else x[np.isfinite(x)]
    if finite.size:
        n_inner, points = _quantile_points(n_bins)
        both = sorted_quantiles(np.sort(finite), n_bins) if quantiles is None else quantiles
        qs, fine_qs = both[:n_inner], both[n_inner:]
        edges = np.unique(qs)
        top, mean, std = stats if stats is not None else (finite.max(), float(finite.mean()), float(finite.std()))
        # Bins are [e_i, e_i+1): a value that several quantiles fall on (a point mass: the
        # zeros of an amount that is mostly 0, a 0/1 flag) would share its bin with the values
        # above it, up to the next edge, so a change among those would go unseen: they get a
        # bin of their own where the sample has some (an integer feature has none between
        # two integer edges, and an empty bin adds to every window's PSI: false alarms).
        # Values above the largest get one in any case (a constant, or a point mass at the
        # top: the bin a constant feature moves up to).
        above = [mass for mass in np.unique(qs[1:][np.diff(qs) == 0]).tolist()
                 if _holds_values_above(finite, mass, edges)]
        if edges.size == 0 or edges[-1] >= top:
            above.append(top)
        if above:
            with np.errstate(over="ignore"):
                above = np.nextafter(np.array(above), np.inf)
            edges = np.union1d(edges, above[np.isfinite(above)])  # (nothing is above the largest double)
        fine = np.union1d(edges, fine_qs)
    else:
        edges = fine = np.array([], dtype=np.float64)
        mean = std = float("nan")
    counts = numeric_bin_counts(x, edges)
    return FeatureProfile(
        name, NUMERIC, count, edges=edges.tolist(),
        proportions=(counts / max(count, 1)).tolist(),
        missing_rate=float(counts[-1] / max(count, 1)), mean=mean, std=std,
        fine_edges=fine.tolist(),
    )


def _holds_values_above(finite: np.ndarray, mass: float, edges: np.ndarray) -> bool:
    """Whether ``finite`` has values above ``mass`` and below the next of ``edges`` (if any)."""
    nxt = edges[edges > mass]
    above = finite > mass
    if nxt.size:
        above &= finite < nxt[0]
    return bool(above.any())


def _categorical_profile(name: str, values: Sequence[Any], max_categories: int) -> FeatureProfile:
    count = len(values)
    if set(map(type, values)) <= _TEXT_TYPES:  # strings are their own text: count in C
        freq = Counter(values)
        freq.pop(None, None)
    else:
        freq = Counter(t for t in (category_text(v) for v in values) if t is not None)
    categories = [c for c, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]]
    counts = categorical_bin_counts(values, categories)
    return FeatureProfile(
        name, CATEGORICAL, count, categories=categories,
        proportions=(counts / max(count, 1)).tolist(), missing_rate=float(counts[-1] / max(count, 1)),
        distinct=len(freq),
    )


def _checked_id(value: Any, what: str) -> str:
    """``value`` if it could be a model id or version (``events.is_id``), else ValueError naming ``what``."""
    if not is_id(value):
        raise ValueError(f"{what} must be 1 to 256 characters, none of them control characters, not {value!r:.80}")
    return value


@dataclass
class ReferenceProfile:
    """The reference of one model version: a profile per feature, and of the prediction."""

    model_id: str
    model_version: str
    count: int
    features: dict[str, FeatureProfile]
    score: Optional[FeatureProfile] = None
    label: Optional[FeatureProfile] = None
    source: str = "warmup"
    dropped_features: list[str] = field(default_factory=list)  # over the max_features cap (first 100 named)

    def to_dict(self) -> dict:
        return {
            "dropped_features": list(self.dropped_features),
            "model_id": self.model_id,
            "model_version": self.model_version,
            "count": self.count,
            "source": self.source,
            "features": {k: v.to_dict() for k, v in self.features.items()},
            "score": self.score.to_dict() if self.score else None,
            "label": self.label.to_dict() if self.label else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ReferenceProfile":
        """Read a profile (``to_dict``'s form); ValueError when its ids or count could not be
        a model version's (a profile on the references topic may come from anywhere)."""
        count = d["count"]
        if type(count) is not int or count < 0:
            raise ValueError(f"count must be a whole number of events, not {count!r}")
        return cls(
            model_id=_checked_id(d["model_id"], "model_id"),
            model_version=_checked_id(d["model_version"], "model_version"),
            count=count,
            source=d.get("source", "file"),
            features={k: FeatureProfile.from_dict(v) for k, v in d["features"].items()},
            score=FeatureProfile.from_dict(d["score"]) if d.get("score") else None,
            label=FeatureProfile.from_dict(d["label"]) if d.get("label") else None,
            dropped_features=list(d.get("dropped_features", [])),
        )


def build_reference(
    model_id: str,
    model_version: str,
    rows: Sequence[dict],
    scores: Sequence[float] = (),
    labels: Sequence[Optional[str]] = (),
    n_bins: int = 10,
    max_categories: int = 50,
    ignore: Sequence[str] = (),
    source: str = "warmup",
    max_features: int = 500,
) -> ReferenceProfile:
    """A reference from feature rows (dicts, or a ``warmup.WarmupSample`` of them) and the
    matching prediction scores and labels."""
    from .warmup import WarmupSample

    sample = rows if isinstance(rows, WarmupSample) else None
    seen = sample.present() if sample is not None else None
    present = (set(seen) if sample is not None else set().union(*rows)).difference(ignore)
    if len(present) <= max_features:
        names, dropped = sorted(present), []
    else:
        # Keep the max_features most frequent features (ties by name): memory stays bounded
        # whatever producers send.
        seen = seen if seen is not None else Counter(chain.from_iterable(rows))
        ranked = sorted(present, key=lambda k: (-seen[k], k))
        names, dropped = sorted(ranked[:max_features]), sorted(ranked[max_features:])
    if sample is not None:
        kinds = [sample.kind(name) for name in names]
        floats = lambda j: sample.floats(names[j])  # noqa: E731
        column = lambda j: sample.values(names[j])  # noqa: E731
    else:
        columns = raw_columns(list(rows), names)
        kinds = [infer_kind(column) for column in columns]
        floats = lambda j: to_float_array(columns[j])  # noqa: E731
        column = columns.__getitem__
    numeric = [j for j, kind in enumerate(kinds) if kind == NUMERIC]
    samples = {j: floats(j) for j in numeric}
    # The usual sample (every value present and finite): all numeric features' quantiles in one call.
    quantiles: dict[int, np.ndarray] = {}
    stats: dict[int, tuple[float, float, float]] = {}
    done: dict[int, FeatureProfile] = {}  # profiled all at once (see _usual_numeric_profiles)
    if len(numeric) > 1 and len(rows):
        matrix = np.stack([samples[j] for j in numeric])
        if np.isfinite(matrix).all():
            ordered = np.sort(matrix, axis=1)
            both = sorted_quantiles(ordered, n_bins)
            quantiles = {j: both[i] for i, j in enumerate(numeric)}
            # Row by row, as for one feature: the same pairwise sums (in the sample's order), so the same floats.
            columns_stats = list(zip(ordered[:, -1].tolist(), matrix.mean(axis=1).tolist(), matrix.std(axis=1).tolist()))
            stats = dict(zip(numeric, columns_stats))
            usual = _usual_numeric_profiles([names[j] for j in numeric], ordered, both, columns_stats, n_bins)
            done = {numeric[i]: profile for i, profile in usual.items()}
    features = {
        name: (done[j] if j in done else
               _numeric_profile(name, samples[j], n_bins, quantiles.get(j), stats.get(j)) if kinds[j] == NUMERIC
               else _categorical_profile(name, column(j), max_categories))
        for j, name in enumerate(names)
    }
    score = label = None
    score_arr = np.asarray(scores, dtype=np.float64)
    if score_arr.size and np.isfinite(score_arr).any():
        score = build_feature_profile("prediction.score", score_arr.tolist(), kind=NUMERIC, n_bins=n_bins)
    if any(lbl is not None for lbl in labels):
        label = build_feature_profile("prediction.label", list(labels), kind=CATEGORICAL, max_categories=max_categories)
    return ReferenceProfile(model_id, model_version, len(rows), features, score, label, source, dropped[:100])


def _same_profile(a: Optional[FeatureProfile], b: Optional[FeatureProfile]) -> bool:
    if a is None or b is None:
        return a is b
    return (a.kind == b.kind and a.count == b.count and a.edges == b.edges and a.categories == b.categories
            and a.proportions == b.proportions)


def same_reference(a: ReferenceProfile, b: ReferenceProfile) -> bool:
    """Whether two references profile the same features alike (one restored from a model's
    state, say, and one read from the references topic: never the same object).

    >>> ref = build_reference("m", "v", [{"x": float(i)} for i in range(20)])
    >>> same_reference(ref, ReferenceProfile.from_dict(ref.to_dict())), same_reference(ref, narrow_reference(ref, ["x"]))
    (True, False)
    """
    return (a.model_id == b.model_id and a.model_version == b.model_version and a.count == b.count
            and a.source == b.source and a.dropped_features == b.dropped_features
            and list(a.features) == list(b.features)
            and all(_same_profile(p, b.features[name]) for name, p in a.features.items())
            and _same_profile(a.score, b.score) and _same_profile(a.label, b.label))


def narrow_reference(reference: ReferenceProfile, ignore: Sequence[str] = (), max_features: int = 500) -> ReferenceProfile:
    """The reference a model's settings monitor: without the ``ignore``d features, and with at
    most ``max_features`` of the others (the most often present, ties by name, as
    ``build_reference`` keeps them; the rest named in ``dropped_features``). A reference built
    from a warm-up is already so; one from a file or the references topic was built without
    the model's settings. The same object when nothing is left out.

    >>> ref = build_reference("m", "v", [{"x": 1.0, "request_id": "r1", "y": None}, {"x": 2.0, "request_id": "r2", "y": 3.0}])
    >>> narrowed = narrow_reference(ref, ignore=["request_id"], max_features=1)
    >>> list(narrowed.features), narrowed.dropped_features, narrow_reference(narrowed, ["request_id"], 1) is narrowed
    (['x'], ['y'], True)
    """
    ignored = set(ignore)
    kept = [name for name in reference.features if name not in ignored]
    dropped: list[str] = []
    if len(kept) > max_features:
        profiles = reference.features
        present = {name: round(profiles[name].count * (1.0 - profiles[name].missing_rate)) for name in kept}
        ranked = sorted(kept, key=lambda name: (-present[name], name))
        chosen = set(ranked[:max_features])
        dropped = sorted(ranked[max_features:])
        kept = [name for name in kept if name in chosen]
    if len(kept) == len(reference.features):
        return reference
    return replace(reference, features={name: reference.features[name] for name in kept},
                   dropped_features=sorted(set(reference.dropped_features) | set(dropped))[:100])
