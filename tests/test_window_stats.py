"""All signals of a window evaluated at once equal the one-signal functions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.profile import build_feature_profile
from streamproc.psi import psi
from streamproc.window_stats import SignalLayout, layout_for, quantiles_many

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


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # an empty reference without smoothing: 0/0
@settings(max_examples=200, deadline=None)
@given(signals(), st.sampled_from([0.0, 0.5, 1.0]))
def test_psi_and_bins_of_all_signals_equal_the_one_signal_functions(data, smoothing):
    profiles, windows = data
    sketches = [p.sketch(windows[name]) for name, p in profiles.items()]
    values, bins = SignalLayout(profiles).evaluate(sketches, smoothing)
    for (name, p), sketch, value, counts in zip(profiles.items(), sketches, values, bins):
        expected = p.to_bins(sketch)
        assert counts.tolist() == expected.tolist(), name
        assert np.isclose(value, psi(p.proportions, p.count, expected, smoothing=smoothing), rtol=1e-12, atol=1e-12, equal_nan=True), name


@settings(max_examples=200, deadline=None)
@given(signals())
def test_quantiles_of_all_numeric_signals_equal_the_one_signal_function(data):
    profiles, windows = data
    names = [n for n, p in profiles.items() if p.kind == "numeric"]
    finite = {n: windows[n][np.isfinite(windows[n])] for n in names}
    names = [n for n in names if finite[n].size]  # a window's quantiles need a value
    sketches = [profiles[n].sketch(windows[n]) for n in names]
    lo, hi = [float(finite[n].min()) for n in names], [float(finite[n].max()) for n in names]
    got = quantiles_many([profiles[n].fine_edges for n in names], sketches, QS, lo, hi)
    for n, s, a, b, row in zip(names, sketches, lo, hi, got):
        assert row == profiles[n].quantiles(s, QS, a, b), n


def test_a_layout_is_cached_per_reference_and_rebuilt_for_a_new_one():
    profiles = {"x": build_feature_profile("x", [1.0, 2.0, 3.0])}
    first, second = object(), object()
    a = layout_for(first, profiles)
    assert layout_for(first, profiles) is a
    assert layout_for(second, profiles) is not a
