"""All signals of a window evaluated at once equal each signal binned and evaluated alone,
by the definitions written out here."""

import bisect
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.profile import build_feature_profile, sketch_quantiles
from streamproc.psi import effective_threshold
from streamproc.window_stats import SignalLayout, layout_for

QS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)

numbers = st.floats(-1e6, 1e6, allow_nan=False) | st.none() | st.just(float("nan"))
numeric_sample = st.lists(numbers, min_size=0, max_size=60)
categorical_sample = st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=0, max_size=60)


@st.composite
def signals(draw):
    """Profiles of a few numeric and categorical signals, and one window's values of each."""
    profiles, windows = {}, {}
    for j in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            ref = draw(numeric_sample)
            profiles[f"n{j}"] = build_feature_profile(f"n{j}", ref, kind="numeric", n_bins=draw(st.integers(2, 10)))
            windows[f"n{j}"] = np.array([np.nan if v is None else v for v in draw(numeric_sample)], dtype=np.float64)
        else:
            ref = draw(categorical_sample)
            profiles[f"c{j}"] = build_feature_profile(f"c{j}", ref, kind="categorical", max_categories=draw(st.integers(1, 4)))
            windows[f"c{j}"] = draw(categorical_sample)
    return profiles, windows


def reference_psi(proportions, count, window, smoothing):
    """PSI written out bin by bin, as the definition in streamproc.psi states it: bins empty on
    both sides left out, the others smoothed."""
    used = [(share * count, hits) for share, hits in zip(proportions, window) if share * count > 0 or hits > 0]
    total_p, total_q, k = count, sum(window), len(used)
    value = 0.0
    for expected, hits in used:
        p = (expected + smoothing) / (total_p + smoothing * k) if total_p + smoothing * k else float("nan")
        q = (hits + smoothing) / (total_q + smoothing * k) if total_q + smoothing * k else float("nan")
        p, q = max(p, 1e-9), max(q, 1e-9)
        value += (q - p) * math.log(q / p)
    return value


def reference_quantiles(fine_edges, sketch, qs, lo, hi):
    """Sketch quantiles one at a time: linear within a fine bin, outer bins ending at lo and hi."""
    counts = [float(c) for c in sketch[:-1]]
    total = sum(counts)
    if not total:
        return [float("nan")] * len(qs)
    bounds = [min(max(b, lo), hi) for b in [lo, *fine_edges, hi]]
    cum = list(itertools.accumulate(counts))
    out = []
    for q in qs:
        target = q * total
        i = min(bisect.bisect_left(cum, target), len(counts) - 1)
        before = cum[i - 1] if i else 0.0
        frac = (target - before) / counts[i] if counts[i] else 0.0
        out.append(min(bounds[i] + frac * (bounds[i + 1] - bounds[i]), bounds[i + 1]))  # never past the bin's top
    return out


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # an empty reference without smoothing: 0/0
@settings(max_examples=200, deadline=None)
@given(signals(), st.sampled_from([0.0, 0.5, 1.0]))
def test_psi_and_bins_of_all_signals_equal_binning_each_signal_alone(data, smoothing):
    profiles, windows = data
    sketches = [p.sketch(windows[name]) for name, p in profiles.items()]
    values, bins = SignalLayout(profiles).evaluate(sketches, smoothing)
    for (name, p), value, counts in zip(profiles.items(), values, bins):
        expected = p.bin_counts(windows[name])  # the window's values binned with the PSI edges directly
        assert counts.tolist() == expected.tolist(), name
        assert np.isclose(value, reference_psi(p.proportions, p.count, expected.tolist(), smoothing),
                          rtol=1e-12, atol=1e-12, equal_nan=True), name


@settings(max_examples=200, deadline=None)
@given(signals())
def test_quantiles_of_all_numeric_signals_equal_computing_each_alone(data):
    profiles, windows = data
    names = [n for n, p in profiles.items() if p.kind == "numeric"]
    finite = {n: windows[n][np.isfinite(windows[n])] for n in names}
    names = [n for n in names if finite[n].size]  # a window's quantiles need a value
    sketches = [profiles[n].sketch(windows[n]) for n in names]
    lo, hi = [float(finite[n].min()) for n in names], [float(finite[n].max()) for n in names]
    got = sketch_quantiles([profiles[n].fine_edges for n in names], sketches, QS, lo, hi)
    for n, s, a, b, row in zip(names, sketches, lo, hi, got):
        assert np.allclose(row, reference_quantiles(profiles[n].fine_edges.tolist(), s, QS, a, b), rtol=1e-12, atol=0), n
        assert profiles[n].quantiles(s, QS, a, b) == row, n


def test_a_layout_is_cached_per_reference_and_rebuilt_for_a_new_one():
    profiles = {"x": build_feature_profile("x", [1.0, 2.0, 3.0])}
    class Owner:  # a reference in the worker: held weakly by the cache
        pass

    first, second = Owner(), Owner()
    a = layout_for(first, profiles)
    assert layout_for(first, profiles) is a
    assert layout_for(second, profiles) is not a


def test_the_identity_cache_is_bounded_and_knows_a_new_object_from_a_dead_one():
    from streamproc.identity_cache import IdentityCache

    class Owner:
        pass

    cache = IdentityCache(2)
    owners = [Owner() for _ in range(3)]
    built = [cache.get((o,), lambda o=o: id(o)) for o in owners]
    assert len(cache) == 2 and cache.get((owners[0],), lambda: "again") == "again"  # the oldest went out
    # An entry left by an object now dead, under the id a new object has (CPython reuses ids).
    import weakref

    dead, new = Owner(), Owner()
    cache._entries[((id(new),), None)] = ((weakref.ref(dead),), "old")
    del dead
    assert cache.get((new,), lambda: "new") == "new"
    assert built[2] == id(owners[2])


@settings(max_examples=200, deadline=None)
@given(signals(), st.integers(0, 10**7), st.sampled_from([1e-9, 1e-6, 1e-3, 0.05]),
       st.sampled_from([0.0, 0.1, 0.25, 2.0]))
def test_noise_gives_every_signals_effective_threshold_to_the_bit(data, window_count, alpha, base):
    profiles, _windows = data
    got = np.maximum(base, SignalLayout(profiles).noise(window_count, alpha)).tolist()
    assert got == [effective_threshold(base, p.n_bins, p.count, window_count, alpha) for p in profiles.values()]


@settings(max_examples=50, deadline=None)
@given(signals(), st.lists(st.sampled_from([1e-9, 1e-6, 1e-3, 0.05]), min_size=2, max_size=6))
def test_one_layout_gives_each_alpha_its_own_noise_in_turn(data, alphas):
    """A layout keeps the quantiles of the alpha it saw last: another alpha is not served them."""
    profiles, _windows = data
    layout = SignalLayout(profiles)
    for alpha in alphas:
        got = np.maximum(0.1, layout.noise(1000, alpha)).tolist()
        assert got == [effective_threshold(0.1, p.n_bins, p.count, 1000, alpha) for p in profiles.values()]
