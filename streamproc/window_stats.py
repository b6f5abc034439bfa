"""The statistics of a closed window for all its signals at once: PSI, bin counts, quantiles.

A window of a model version holds one sketch per signal (each feature, the prediction score
and label). Evaluating them one by one costs some thirty small numpy calls per signal, which
with small windows or many models outweighs the sketching itself. ``SignalLayout`` lays every
signal's sketch end to end once per reference; a window is then evaluated in a fixed number of
numpy calls, whatever the number of features. The results equal the per-signal functions'
(``streamproc.psi.psi``, ``FeatureProfile.to_bins``, ``FeatureProfile.quantiles``).

>>> from streamproc.profile import build_feature_profile
>>> profiles = {"x": build_feature_profile("x", [float(i) for i in range(100)]),
...             "c": build_feature_profile("c", ["a", "b"] * 50)}
>>> layout = SignalLayout(profiles)
>>> sketches = [profiles["x"].sketch(np.arange(50.0, 150.0)), profiles["c"].sketch(["a"] * 100)]
>>> values, bins = layout.evaluate(sketches, smoothing=0.5)
>>> [round(v, 4) for v in values]
[2.2729, 2.5997]
>>> from streamproc.psi import psi
>>> [round(psi(p.proportions, p.count, p.to_bins(s)), 4) for p, s in zip(profiles.values(), sketches)]
[2.2729, 2.5997]
>>> bins[1].tolist()  # c: a, b, unseen, missing
[100, 0, 0, 0]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from .profile import NUMERIC, FeatureProfile


class SignalLayout:
    """Every signal's sketch and PSI bins laid end to end, for one set of profiles (in order)."""

    def __init__(self, profiles: dict[str, FeatureProfile]):
        self.names = list(profiles)
        plist = list(profiles.values())
        n_bins = np.array([p.n_bins for p in plist], dtype=np.int64)
        self.bin_start = np.cumsum(n_bins) - n_bins
        self.n_bins = n_bins
        # Sketch position -> PSI bin: a numeric fine bin lies inside the PSI bin of its lower
        # edge (the open lower bin in the first); categorical sketches are their bins.
        to_bin = []
        for p, start in zip(plist, self.bin_start.tolist()):
            if p.kind == NUMERIC:
                inner = np.searchsorted(p._edges, p.fine_edges, side="right")
                to_bin.append(np.concatenate(([0], inner, [p.n_bins - 1])) + start)
            else:
                to_bin.append(np.arange(start, start + p.n_bins))
        self.to_bin = np.concatenate(to_bin) if to_bin else np.empty(0, dtype=np.int64)
        self.ref_counts = np.concatenate([np.asarray(p.proportions, dtype=np.float64) * p.count for p in plist]) \
            if plist else np.empty(0)
        self.segment = np.repeat(np.arange(len(plist)), n_bins)
        self.numeric = [j for j, p in enumerate(plist) if p.kind == NUMERIC]

    def evaluate(self, sketches: Sequence[np.ndarray], smoothing: float) -> tuple[list[float], list[np.ndarray]]:
        """(PSI per signal, PSI bin counts per signal, missing last) of one window's sketches,
        as ``streamproc.psi.psi`` and ``FeatureProfile.to_bins`` give them."""
        if not len(self.segment):
            return [], []
        counts = np.bincount(self.to_bin, weights=np.concatenate(sketches), minlength=len(self.segment)).astype(np.int64)
        starts, q_counts = self.bin_start, counts.astype(np.float64)
        p = (self.ref_counts + smoothing) / (np.add.reduceat(self.ref_counts, starts) + smoothing * self.n_bins)[self.segment]
        q = (q_counts + smoothing) / (np.add.reduceat(q_counts, starts) + smoothing * self.n_bins)[self.segment]
        # As in ``psi``: bins empty on both sides (without smoothing) left out, the rest floored.
        used = (p > 0) | (q > 0)
        p, q = np.maximum(p, 1e-9), np.maximum(q, 1e-9)
        values = np.add.reduceat(np.where(used, (q - p) * np.log(q / p), 0.0), starts).tolist()
        return values, np.split(counts, starts[1:].tolist())


def quantiles_many(fine_edges: Sequence[np.ndarray], sketches: Sequence[np.ndarray], qs: Sequence[float],
                   lo: Sequence[float], hi: Sequence[float]) -> list[list[float]]:
    """Approximate quantiles of several numeric sketches at once (see ``FeatureProfile.quantiles``).

    Every sketch's cumulative counts go in one array as complex numbers j + cum·i (numpy orders
    complex numbers by real part, then imaginary part), so one ``searchsorted`` finds every
    quantile within its own sketch, with the same comparisons as the one-sketch version.

    >>> edges = [np.array([1.0, 2.0, 3.0])]
    >>> quantiles_many(edges, [np.array([0, 10, 10, 0, 0])], [0.5], [1.0], [3.0])
    [[2.0]]
    """
    k, nq = len(sketches), len(qs)
    if not k:
        return []
    counts = [s[:-1].astype(np.float64) for s in sketches]
    sizes = np.array([len(c) for c in counts], dtype=np.int64)
    start = np.cumsum(sizes) - sizes
    flat = np.concatenate(counts)
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
    bounds = np.concatenate([np.concatenate(([a], e, [b])) for a, e, b in zip(lo_a.tolist(), fine_edges, hi_a.tolist())])
    bstart = start + np.arange(k)  # each sketch has one more bound than value bins
    bounds = np.clip(bounds, np.repeat(lo_a, sizes + 1), np.repeat(hi_a, sizes + 1))
    b = i + bstart[:, None]
    out = bounds[b] + frac * (bounds[b + 1] - bounds[b])
    out[totals == 0] = np.nan
    return out.tolist()


_LAYOUTS: "OrderedDict[int, tuple[object, SignalLayout]]" = OrderedDict()
MAX_LAYOUTS = 512  # the layouts of the model versions whose windows closed most recently


def layout_for(owner: object, profiles: dict[str, FeatureProfile]) -> SignalLayout:
    """The layout of ``profiles``, cached for ``owner`` (a reference: profiles never change
    within one). A bounded cache, not an attribute, so that idle models cost no memory."""
    key = id(owner)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is owner:
        _LAYOUTS.move_to_end(key)
        return hit[1]
    layout = SignalLayout(profiles)
    _LAYOUTS[key] = (owner, layout)  # holding the owner keeps its id from being reused meanwhile
    if len(_LAYOUTS) > MAX_LAYOUTS:
        _LAYOUTS.popitem(last=False)
    return layout
