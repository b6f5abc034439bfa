"""The statistics of a closed window for all its signals at once: PSI and bin counts.

A window of a model version holds one sketch per signal (each feature, the prediction score
and label). Evaluating them one by one costs some thirty small numpy calls per signal, which
with small windows or many models outweighs the sketching itself. ``SignalLayout`` lays every
signal's sketch end to end once per reference; a window is then evaluated in a fixed number of
numpy calls, whatever the number of features (``streamproc.psi.psi_segments``, with each
profile's ``sketch_to_bin``). Quantiles of several sketches: ``profile.sketch_quantiles``.

>>> from streamproc.profile import build_feature_profile
>>> profiles = {"x": build_feature_profile("x", [float(i) for i in range(100)]),
...             "c": build_feature_profile("c", ["a", "b"] * 50)}
>>> layout = SignalLayout(profiles)
>>> sketches = [profiles["x"].sketch(np.arange(50.0, 150.0)), profiles["c"].sketch(["a"] * 100)]
>>> values, bins = layout.evaluate(sketches, smoothing=0.5)
>>> [round(v, 4) for v in values]
[2.2837, 2.6254]
>>> from streamproc.psi import psi
>>> [round(psi(p.proportions, p.count, p.to_bins(s)), 4) for p, s in zip(profiles.values(), sketches)]
[2.2837, 2.6254]
>>> bins[1].tolist()  # c: a, b, unseen, missing
[100, 0, 0, 0]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .identity_cache import IdentityCache
from .profile import NUMERIC, FeatureProfile
from .psi import chi2_quantile, psi_segments


class SignalLayout:
    """Every signal's sketch and PSI bins laid end to end, for one set of profiles (in order).

    Held for each model version whose windows closed lately (``layout_for``), so kept small:
    slots, and sketch positions as 32-bit integers (there are hundreds per feature).
    """

    __slots__ = ("names", "bin_start", "bin_end", "to_bin", "ref_counts", "numeric", "inverse_count", "_chi2")

    def __init__(self, profiles: dict[str, FeatureProfile]):
        self.names = list(profiles)
        plist = list(profiles.values())
        n_bins = np.array([p.n_bins for p in plist], dtype=np.int64)
        self.bin_start = np.cumsum(n_bins) - n_bins
        self.to_bin = (np.concatenate([p.sketch_to_bin() + start for p, start in zip(plist, self.bin_start.tolist())])
                       if plist else np.empty(0, dtype=np.int64)).astype(np.int32)
        self.ref_counts = np.concatenate([np.asarray(p.proportions, dtype=np.float64) * p.count for p in plist]) \
            if plist else np.empty(0)
        self.numeric = [j for j, p in enumerate(plist) if p.kind == NUMERIC]
        self.inverse_count = 1.0 / np.maximum(np.array([p.count for p in plist]), 1)
        self._chi2: tuple = (None, None)  # (alpha, each signal's chi-square quantile at it)
        self.bin_end = (self.bin_start + n_bins).tolist()

    def evaluate(self, sketches: Sequence[np.ndarray], smoothing: float) -> tuple[list[float], list[np.ndarray]]:
        """(PSI per signal, PSI bin counts per signal, missing last) of one window's sketches."""
        if not len(self.to_bin):
            return [], []
        counts = np.bincount(self.to_bin, weights=np.concatenate(sketches), minlength=len(self.ref_counts)).astype(np.int64)
        values = psi_segments(self.ref_counts, counts.astype(np.float64), self.bin_start, smoothing)
        return values, [counts[a:b] for a, b in zip(self.bin_start.tolist(), self.bin_end)]

    def noise(self, window_count: int, alpha: float) -> np.ndarray:
        """Per signal, the PSI a same-distribution window of ``window_count`` events exceeds with
        probability ``alpha``: ``np.maximum(base, noise)`` is ``psi.effective_threshold`` of
        every signal at once (the same arithmetic, so the same floats).

        >>> from streamproc.profile import build_feature_profile
        >>> from streamproc.psi import effective_threshold
        >>> p = build_feature_profile("x", [float(i) for i in range(100)])
        >>> float(np.maximum(0.1, SignalLayout({"x": p}).noise(50, 1e-6))[0]) == effective_threshold(0.1, p.n_bins, p.count, 50, 1e-6)
        True
        """
        cached, quantiles = self._chi2
        if cached != alpha or quantiles is None:  # (a model version's alpha rarely changes)
            n_bins = (np.asarray(self.bin_end, dtype=np.int64) - self.bin_start).tolist()
            quantiles = np.array([chi2_quantile(max(n - 1, 1), alpha) for n in n_bins], dtype=np.float64)
            self._chi2 = (alpha, quantiles)
        return quantiles * (1.0 / max(window_count, 1) + self.inverse_count)


_LAYOUTS = IdentityCache(512)  # the layouts of the model versions whose windows closed most recently


def layout_for(owner: object, profiles: dict[str, FeatureProfile]) -> SignalLayout:
    """The layout of ``profiles``, cached for ``owner`` (a reference: profiles never change
    within one). A bounded cache, not an attribute, so that idle models cost no memory."""
    return _LAYOUTS.get((owner,), lambda: SignalLayout(profiles))
