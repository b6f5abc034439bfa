"""``EdgeIndex`` bins every value as ``np.searchsorted(edges, x, side="right")`` does."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.binning import EdgeIndex


def searchsorted(edges, matrix):
    return np.array([np.searchsorted(e, row, side="right") for e, row in zip(edges, matrix)]).reshape(matrix.shape)


def assert_bins_as_searchsorted(edges, matrix):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings, whatever the values
        got = EdgeIndex(edges).positions(matrix)
    present = ~np.isnan(matrix)
    assert got.shape == matrix.shape
    assert got[present].tolist() == searchsorted(edges, matrix)[present].tolist()


finite = st.floats(allow_nan=False, allow_infinity=False)  # any double: subnormal to 1.8e308


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_bins_as_searchsorted(data):
    k = data.draw(st.integers(1, 4))
    edges = [np.unique(np.array(data.draw(st.lists(finite, max_size=30)), dtype=np.float64)) for _ in range(k)]
    n = data.draw(st.integers(0, 25))
    # Values on the edges and their neighbours, too: a bin is [lower edge, upper edge).
    with np.errstate(over="ignore"):  # the neighbour of the largest double is infinity
        near = [v for e in edges for v in np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf)]).tolist()]
    pool = st.one_of(st.floats(), st.sampled_from(near or [0.0]))
    matrix = np.array([data.draw(st.lists(pool, min_size=n, max_size=n)) for _ in range(k)], dtype=np.float64).reshape(k, n)
    assert_bins_as_searchsorted(edges, matrix)


@pytest.mark.parametrize("sample", [
    lambda rng: rng.normal(size=2000),
    lambda rng: rng.lognormal(0, 2, 2000),  # a long tail: most edges in a few cells
    lambda rng: rng.pareto(0.5, 2000),
    lambda rng: np.concatenate([rng.normal(0, 1, 1000), rng.normal(1e6, 1, 1000)]),  # two clusters far apart
    lambda rng: rng.poisson(3, 2000).astype(float),
    lambda rng: rng.normal(size=2000) * 1e-310,  # a subnormal range
    lambda rng: rng.normal(size=2000) * 1e300,  # a range wider than the largest double
])
def test_bins_as_searchsorted_for_references_quantile_edges(sample):
    """Edges as references make them (quantiles of a sample), values from the same
    distribution and outside it."""
    from streamproc.profile import build_feature_profile

    rng = np.random.default_rng(7)
    with np.errstate(over="ignore"):  # the standard deviation of values near 1e300 overflows
        edges = [build_feature_profile(f"f{j}", sample(rng).tolist()).fine_edges for j in range(3)]
    values = np.concatenate([sample(rng), [np.nan, np.inf, -np.inf, 0.0, 1e308, -1e308, 5e-324]])
    matrix = np.array([rng.permutation(values) for _ in edges])
    assert_bins_as_searchsorted(edges, matrix)


def test_a_long_tail_is_searched_in_more_steps_and_still_exact():
    """Where many edges share a cell, the search within it takes more steps (the case the
    cells do not cover by themselves)."""
    edges = [np.concatenate([np.linspace(0.0, 1.0, 30), [1e9]])]  # 30 edges in the first of 62 cells
    index = EdgeIndex(edges)
    assert index.steps == [16, 8, 4, 2, 1]
    matrix = np.array([np.concatenate([np.linspace(-0.5, 1.5, 401), [1e9, 5e8, np.inf]])])
    assert_bins_as_searchsorted(edges, matrix)


def test_features_without_edges_or_with_one():
    edges = [np.array([]), np.array([3.0]), np.array([-1.0, 2.0])]
    matrix = np.array([[0.0, np.inf, -5.0], [3.0, 2.9, np.inf], [2.0, -1.0, -np.inf]])
    assert EdgeIndex(edges).positions(matrix).tolist() == [[0, 0, 0], [1, 0, 1], [2, 1, 0]]


def test_an_offset_per_row():
    index = EdgeIndex([np.array([0.0]), np.array([0.0])])
    assert index.positions(np.array([[1.0, 1.0], [-1.0, -1.0]]), np.array([10, 20])).tolist() == [[11, 11], [20, 20]]
    assert index.positions(np.array([[1.0, 1.0], [-1.0, -1.0]]), 5).tolist() == [[6, 6], [5, 5]]
