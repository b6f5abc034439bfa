"""Unit tests of ``streamproc.profile``: feature profiles, binning, and reference round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.profile import (
    CATEGORICAL,
    NUMERIC,
    FeatureProfile,
    ReferenceProfile,
    build_feature_profile,
    build_reference,
    categorical_bin_counts,
    category_text,
    infer_kind,
    to_float_array,
)

# -- numeric -------------------------------------------------------------------------------


def test_numeric_edges_are_interior_quantiles():
    values = list(range(100))
    p = build_feature_profile("x", values, n_bins=4)
    assert p.kind == NUMERIC
    # np.quantile with linear interpolation at 0.25, 0.5, 0.75 of 0..99.
    assert p.edges == pytest.approx([24.75, 49.5, 74.25])
    assert p.edges == pytest.approx(np.quantile(values, [0.25, 0.5, 0.75]).tolist())
    # 4 value bins + missing, each value bin a quarter.
    assert p.proportions == pytest.approx([0.25, 0.25, 0.25, 0.25, 0.0])
    assert p.n_bins == 5
    assert p.count == 100
    assert p.missing_rate == 0.0
    assert p.mean == pytest.approx(49.5)
    assert p.std == pytest.approx(np.std(values))


def test_numeric_default_ten_bins_proportions_sum_to_one():
    rng = np.random.default_rng(3)
    values = rng.normal(5, 2, 5000).tolist()
    p = build_feature_profile("x", values)
    assert len(p.edges) == 9
    assert p.edges == sorted(p.edges)
    assert len(p.proportions) == 11
    assert sum(p.proportions) == pytest.approx(1.0, abs=1e-12)
    for share in p.proportions[:-1]:
        assert share == pytest.approx(0.1, abs=0.001)


def test_value_on_an_edge_goes_to_the_upper_bin():
    p = build_feature_profile("x", [0.0, 1.0, 2.0, 3.0, 4.0], n_bins=2)
    assert p.edges == [2.0]
    assert p.bin_counts([2.0]).tolist() == [0, 1, 0]
    assert p.bin_counts([1.999]).tolist() == [1, 0, 0]


def test_open_ended_outer_bins_take_infinities():
    p = build_feature_profile("x", list(range(100)), n_bins=4)
    counts = p.bin_counts([-math.inf, math.inf, -1e300, 1e300, 50.0])
    assert counts.tolist() == [2, 0, 1, 2, 0]


def test_nan_and_none_counted_in_missing_bin():
    values = [1.0, None, 2.0, float("nan"), 3.0, 4.0, None, 5.0]
    p = build_feature_profile("x", values, n_bins=2)
    assert p.kind == NUMERIC
    assert p.count == 8
    assert p.missing_rate == pytest.approx(3 / 8)
    assert p.proportions[-1] == pytest.approx(3 / 8)
    assert sum(p.proportions) == pytest.approx(1.0)
    # Edges from the present values only.
    assert p.edges == [3.0]
    assert p.mean == pytest.approx(3.0)
    assert p.bin_counts([None, float("nan"), 0.0, 10.0]).tolist() == [1, 1, 2]


def test_all_missing_numeric_feature():
    p = build_feature_profile("x", [None, None, float("nan")], kind=NUMERIC)
    assert p.edges == []
    assert p.proportions == [0.0, 1.0]
    assert p.missing_rate == 1.0
    assert math.isnan(p.mean) and math.isnan(p.std)
    assert p.bin_counts([1.0, None]).tolist() == [1, 1]


def test_constant_feature_works():
    p = build_feature_profile("k", [3.0] * 50)
    assert p.kind == NUMERIC
    # The constant gets a bin of its own: [3, 3 + ulp); values above it land in the next one.
    assert p.edges == [3.0, float(np.nextafter(3.0, np.inf))]
    assert p.proportions == [0.0, 1.0, 0.0, 0.0]
    assert p.mean == 3.0 and p.std == 0.0
    assert p.bin_counts([2.0, 3.0, None, 4.0]).tolist() == [1, 1, 1, 1]


def test_constant_feature_shift_up_changes_the_bins():
    p = build_feature_profile("k", [0.0] * 2000)
    assert p.bin_counts([5.0] * 10).tolist() != p.bin_counts([0.0] * 10).tolist()


def test_ties_collapse_duplicate_edges():
    values = [0] * 70 + [1] * 30
    p = build_feature_profile("b", values, n_bins=10)
    # Nine quantiles of a 0/1 sample: mostly 0 or 1, deduplicated (interpolation may add one between).
    assert len(p.edges) == len(set(p.edges)) and p.edges == sorted(p.edges)
    # ... plus one just above 1, the largest value, so that values above it have their own bin.
    assert 3 <= len(p.edges) <= 4 and p.edges[0] == 0.0 and p.edges[-2] == 1.0 and p.edges[-1] == np.nextafter(1.0, 2.0)
    zero_bin = int(np.argmax(p.bin_counts([0])))
    one_bin = int(np.argmax(p.bin_counts([1])))
    assert zero_bin != one_bin
    assert p.proportions[zero_bin] == pytest.approx(0.7)
    assert p.proportions[one_bin] == pytest.approx(0.3)
    assert sum(p.proportions) == pytest.approx(1.0)


# -- categorical ---------------------------------------------------------------------------


def test_categorical_categories_ordered_by_frequency_then_name():
    values = ["b"] * 3 + ["a"] * 3 + ["c"] * 5 + [None] + ["d"]
    p = build_feature_profile("c", values)
    assert p.kind == CATEGORICAL
    assert p.categories == ["c", "a", "b", "d"]
    # categories..., unseen, missing
    assert p.proportions == pytest.approx([5 / 13, 3 / 13, 3 / 13, 1 / 13, 0.0, 1 / 13])
    assert p.missing_rate == pytest.approx(1 / 13)
    assert sum(p.proportions) == pytest.approx(1.0)
    assert p.edges == []


def test_categorical_max_categories_rest_is_unseen():
    values = ["b"] * 3 + ["a"] * 4 + ["c"] * 5 + ["d"]
    p = build_feature_profile("c", values, max_categories=2)
    assert p.categories == ["c", "a"]
    assert p.proportions == pytest.approx([5 / 13, 4 / 13, 4 / 13, 0.0])


def test_categorical_window_counts_unseen_and_missing():
    p = build_feature_profile("c", ["x", "y", "y"])
    counts = p.bin_counts(["y", "zz", None, "x", "new", float("nan"), "y"])
    assert p.categories == ["y", "x"]
    assert counts.tolist() == [2, 1, 2, 2]
    assert counts.sum() == 7


def test_bool_categories_are_true_false():
    values = [True, False, True, None, True]
    assert infer_kind(values) == CATEGORICAL
    p = build_feature_profile("flag", values)
    assert p.categories == ["true", "false"]
    assert p.proportions == pytest.approx([3 / 5, 1 / 5, 0.0, 1 / 5])
    assert p.bin_counts([False, False, True, "true", None]).tolist() == [2, 2, 0, 1]


def test_numbers_in_a_categorical_feature_become_text():
    p = build_feature_profile("c", ["a", 1, 2, 2], kind=CATEGORICAL)
    assert p.categories == ["2", "1", "a"]
    assert p.bin_counts([2, "2", 1, 3]).tolist() == [2, 1, 0, 1, 0]


def test_categorical_counts_do_not_conflate_true_and_one():
    p = build_feature_profile("c", [1, True, 1, True], kind=CATEGORICAL)
    assert p.categories == ["1", "true"]
    assert p.proportions == pytest.approx([0.5, 0.5, 0.0, 0.0])


_category_values = st.one_of(st.sampled_from(["a", "b", "1", "true", "1.0", "", "zz"]), st.none(), st.booleans(),
                             st.integers(-2, 2), st.sampled_from([1.0, 2.5, math.nan, math.inf]), st.just(np.str_("a")))


@settings(max_examples=300, deadline=None)
@given(st.lists(_category_values, max_size=30),
       st.lists(st.sampled_from(["a", "b", "1", "true", "false", "1.0", "0", "inf", ""]), max_size=6, unique=True))
def test_categorical_counts_count_each_value_by_its_text(values, categories):
    # Each value counts in the bin of its text (category_text): its category's, else unseen;
    # null and NaN are missing. Strings take a fast path, anything else mixed in the general one.
    expected = [0] * (len(categories) + 2)
    for v in values:
        text = category_text(v)
        expected[-1 if text is None else categories.index(text) if text in categories else len(categories)] += 1
    counts = categorical_bin_counts(values, categories)
    assert counts.dtype == np.int64 and counts.tolist() == expected


# -- kinds and float conversion ------------------------------------------------------------


@pytest.mark.parametrize(
    "values, kind",
    [
        ([1, 2.5, None], NUMERIC),
        ([None, None], NUMERIC),
        ([], NUMERIC),
        ([1.0, float("nan"), -3], NUMERIC),
        ([1, "a"], CATEGORICAL),
        (["1", "2"], CATEGORICAL),
        ([True, False], CATEGORICAL),
        ([1, True], CATEGORICAL),
        ([None, "x", None], CATEGORICAL),
        ([0.5] * 99 + ["N/A"], NUMERIC),  # a stray string in 100 values: missing, not a category
        ([0.5] * 99 + ["N/A", None, None], NUMERIC),
        ([0.5] * 98 + ["N/A", "3"], CATEGORICAL),
        ([0.5] * 99 + [True], NUMERIC),  # a stray boolean (a CSV's TRUE typed into a number column) too
        ([0.5] * 98 + [True, "N/A"], CATEGORICAL),  # strays together past 1 %
    ],
)
def test_infer_kind(values, kind):
    assert infer_kind(values) == kind


def test_to_float_array_numbers_and_none():
    out = to_float_array([1, 2.5, None, -3])
    assert out.dtype == np.float64
    assert out[0] == 1.0 and out[1] == 2.5 and math.isnan(out[2]) and out[3] == -3.0


def test_to_float_array_with_strings_mixed_in():
    out = to_float_array([1, "a", None, 2.5, True, "x"])
    assert out.dtype == np.float64
    assert out[0] == 1.0
    assert math.isnan(out[1])
    assert math.isnan(out[2])
    assert out[3] == 2.5
    assert out[4] == 1.0  # a boolean is 1.0 / 0.0
    assert math.isnan(out[5])


def test_to_float_array_reads_numeric_strings_and_bools_the_same_on_both_paths():
    alone = to_float_array([1.0, "2.5", True])  # numpy's fast path
    with_other = to_float_array([1.0, "2.5", True, "abc"])  # the per-value fallback
    np.testing.assert_array_equal(alone, [1.0, 2.5, 1.0])
    np.testing.assert_array_equal(alone, with_other[:3])
    assert np.isnan(with_other[3])


# -- reference round trip ------------------------------------------------------------------


def _reference_from_rows(seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(300):
        row = {"x": float(rng.normal()), "c": str(rng.choice(["a", "b", "c"])), "flag": bool(i % 3 == 0)}
        if i % 10 == 0:
            row["x"] = None
        if i % 7 == 0:
            row["sparse"] = i
        rows.append(row)
    scores = rng.random(300).tolist()
    labels = [("1" if s >= 0.5 else "0") for s in scores]
    return build_reference("fraud", "v3", rows, scores, labels, n_bins=5, ignore=["flag"])


def test_build_reference_profiles_every_feature_and_the_prediction():
    ref = _reference_from_rows()
    assert ref.count == 300
    assert sorted(ref.features) == ["c", "sparse", "x"]  # "flag" ignored
    assert ref.features["x"].kind == NUMERIC
    assert ref.features["x"].missing_rate == pytest.approx(30 / 300)
    assert ref.features["c"].kind == CATEGORICAL
    # A feature in only some rows: missing elsewhere.
    assert ref.features["sparse"].missing_rate == pytest.approx(1 - 43 / 300)
    assert ref.score is not None and ref.score.name == "prediction.score"
    assert ref.label is not None and ref.label.categories and set(ref.label.categories) == {"0", "1"}
    assert ref.source == "warmup"


def test_reference_without_scores_or_labels():
    ref = build_reference("m", "v", [{"a": 1}, {"a": 2}], [float("nan")] * 2, [None, None])
    assert ref.score is None and ref.label is None
    assert ReferenceProfile.from_dict(ref.to_dict()).to_dict() == ref.to_dict()


def test_reference_round_trip_through_json():
    ref = _reference_from_rows()
    d = ref.to_dict()
    text = json.dumps(d)
    back = ReferenceProfile.from_dict(json.loads(text))
    # Categorical profiles carry NaN mean/std (NaN != NaN), so compare serialised forms.
    assert json.dumps(back.to_dict()) == text
    assert back.features["x"] == ref.features["x"]
    assert back.score == ref.score
    assert back.label.categories == ref.label.categories
    assert back.label.proportions == ref.label.proportions
    assert back.source == "warmup"


def test_from_dict_defaults_source_to_file():
    d = _reference_from_rows().to_dict()
    del d["source"]
    assert ReferenceProfile.from_dict(d).source == "file"


@pytest.mark.parametrize("change, error", [
    ({"model_id": ["rho"]}, "model_id must be"), ({"model_id": None}, "model_id must be"), ({"model_id": ""}, "model_id must be"),
    ({"model_id": "a\tb"}, "model_id must be"), ({"model_id": "fraud\n"}, "model_id must be"), ({"model_id": "x" * 257}, "model_id must be"),
    ({"model_version": {"v": 1}}, "model_version must be"), ({"count": "500"}, "count must be"), ({"count": -1}, "count must be"),
    ({"count": True}, "count must be"),
])
def test_from_dict_refuses_ids_and_counts_no_model_version_could_have(change, error):
    """A profile on the references topic may come from anywhere; one with such ids reached the
    engine and stopped every worker (unhashable ids), or was applied to a model id of None."""
    d = dict(_reference_from_rows().to_dict(), **change)
    with pytest.raises(ValueError, match=error):
        ReferenceProfile.from_dict(d)
    assert ReferenceProfile.from_dict(dict(d, **_reference_from_rows().to_dict())).model_id  # the same profile, as built


_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_feature_values = st.one_of(
    st.lists(st.one_of(_finite, st.integers(-10**6, 10**6), st.none()), min_size=1, max_size=60),
    st.lists(st.one_of(st.sampled_from(["a", "b", "c", "dd"]), st.booleans(), st.none()), min_size=1, max_size=60),
)


@given(
    features=st.dictionaries(st.text(min_size=1, max_size=8), _feature_values, max_size=5),
    n_bins=st.integers(2, 12),
    # Ids have no control characters, and are UTF-8 (no lone surrogates: one failed a local run).
    model_id=st.text(st.characters(exclude_categories=("Cs",), min_codepoint=0x20), min_size=1, max_size=10),
)
@settings(max_examples=60, deadline=None)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # means of values near 1e308
def test_reference_profile_dict_round_trip(features, n_bins, model_id):
    profiles = {name: build_feature_profile(name, values, n_bins=n_bins) for name, values in features.items()}
    for p in profiles.values():
        assert sum(p.proportions) == pytest.approx(1.0)
        assert p.n_bins == (len(p.edges) + 2 if p.kind == NUMERIC else len(p.categories) + 2)
    ref = ReferenceProfile(model_id, "v1", 60, profiles, source="file")
    d = ref.to_dict()
    back = ReferenceProfile.from_dict(d)
    # NaN means/stds defeat ==, so compare the JSON text (NaN serialises as NaN).
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)
    assert json.dumps(ReferenceProfile.from_dict(json.loads(json.dumps(d))).to_dict(), sort_keys=True) == json.dumps(
        d, sort_keys=True
    )
    for name, p in back.features.items():
        assert isinstance(p, FeatureProfile)
        assert p.bin_counts([None]).tolist()[-1] == 1


def test_profile_state_of_an_older_release_restores_to_the_compact_form():
    import pickle

    values = [float(i % 97) for i in range(1000)] + [None] * 10
    p = build_feature_profile("x", values)
    # What an older streamproc pickled: Python lists, plus derived arrays.
    old = dict(p.__getstate__(), _edges=np.asarray(p.edges), fine_edges=[float(e) for e in p.fine_edges],
               _fine=np.asarray(p.fine_edges), _fine_to_bin=np.zeros(3, dtype=np.int64))
    q = FeatureProfile.__new__(FeatureProfile)
    q.__setstate__(old)
    assert q == p and not hasattr(q, "_fine") and not hasattr(q, "_fine_to_bin")
    assert isinstance(q.fine_edges, np.ndarray)
    sample = [3.5, 50.0, None, 1e9, -1e9]
    assert q.sketch(sample).tolist() == p.sketch(sample).tolist()
    assert q.to_bins(q.sketch(values)).tolist() == p.bin_counts(values).tolist()
    assert pickle.loads(pickle.dumps(p)) == p


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 60), st.integers(1, 6), st.integers(2, 12), st.booleans(), st.data())
def test_a_reference_equals_its_features_profiled_one_by_one(n_rows, n_features, n_bins, with_gaps, data):
    """build_reference profiles all numeric features at once when every value is present and
    finite; the result must be what profiling each feature alone gives."""
    value = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-5, 5)
    if with_gaps:
        value = value | st.none() | st.just(float("inf"))
    rows = [{f"f{j}": data.draw(value) for j in range(n_features)} for _ in range(n_rows)]
    ref = build_reference("m", "v", rows, n_bins=n_bins)
    for name, profile in ref.features.items():
        assert profile == build_feature_profile(name, [r[name] for r in rows], n_bins=n_bins), name


def test_profile_state_with_its_fine_edges_as_an_array_still_restores():
    """The previous release pickled the fine edges as a numpy array; this one as their bytes."""
    import pickle

    p = build_feature_profile("x", [float(i % 31) for i in range(500)] + [None])
    assert isinstance(p.__getstate__()["fine_edges"], bytes)
    previous = dict(p.__getstate__(), fine_edges=p.fine_edges.copy())
    q = FeatureProfile.__new__(FeatureProfile)
    q.__setstate__(previous)
    assert q == p and q.fine_edges.dtype == np.float64
    r = pickle.loads(pickle.dumps(p))
    assert r == p and r.fine_edges.flags.owndata and r.fine_edges.flags.writeable
    assert r.sketch([3.5, None, 1e9]).tolist() == p.sketch([3.5, None, 1e9]).tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(20, 400), st.integers(2, 6), st.sampled_from([2, 4, 5, 8, 10, 20]), st.integers(0, 2**32 - 1),
       st.booleans())
def test_continuous_features_profiled_together_equal_each_profiled_alone(n_rows, n_features, n_bins, seed, ties):
    """The usual continuous sample (every quantile distinct) takes build_reference's path that
    profiles all such features in a few numpy calls; it must give what profiling each alone
    gives, and features outside that case (ties: rounded values) must still come out right."""
    import streamproc.profile as profile_module

    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n_features, n_rows)) * rng.uniform(0.1, 100, size=(n_features, 1))
    if ties:
        matrix[0] = np.round(matrix[0] / 50)  # few distinct values: quantiles repeat
    rows = [{f"f{j}": float(matrix[j, i]) for j in range(n_features)} for i in range(n_rows)]
    used = []
    original = profile_module._usual_numeric_profiles

    def spy(*args):
        out = original(*args)
        used.append(len(out))
        return out

    profile_module._usual_numeric_profiles = spy
    try:
        ref = build_reference("m", "v", rows, n_bins=n_bins)
    finally:
        profile_module._usual_numeric_profiles = original
    assert used and used[0] >= n_features - 1  # the continuous ones went together
    for name, profile in ref.features.items():
        alone = build_feature_profile(name, [r[name] for r in rows], n_bins=n_bins)
        assert profile == alone, name
        assert profile.fine_edges.tolist() == alone.fine_edges.tolist()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 600), st.sampled_from([2, 3, 4, 5, 8, 10, 20]), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_sorted_quantiles_equal_numpys_bit_for_bit(n, n_bins, seed, shape):
    """Quantiles from sorted values must be numpy's own, to the last bit (references built
    before and after the change, and from one feature or many, must not differ). Only the sign
    of a zero may differ: -0.0 and 0.0 are equal values whose order a sort leaves open."""
    from streamproc.profile import _quantile_points, sorted_quantiles

    rng = np.random.default_rng(seed)
    x = [rng.normal(size=(3, n)) * 1e6,  # continuous
         np.round(rng.normal(size=(3, n)) * 3),  # ties
         np.full((3, n), 7.25),  # constant
         rng.exponential(size=(3, n)) * rng.choice([1e-300, 1.0, 1e300])][shape]  # extreme magnitudes
    points = _quantile_points(n_bins)[1]
    expected = np.quantile(x, points, axis=1).T
    got = sorted_quantiles(np.sort(x, axis=1), n_bins)
    assert got.shape == expected.shape and (got == expected).all()
    assert (sorted_quantiles(np.sort(x[0]), n_bins) == np.quantile(x[0], points)).all()


def test_window_quantiles_stay_within_the_windows_values():
    # The top quantile interpolates to the window's largest value: rounding must not pass it.
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = build_feature_profile("x", rng.normal(size=300).tolist(), kind="numeric")
        w = rng.normal(size=100)
        qs = p.quantiles(p.sketch(w), [0.0, 0.5, 1.0], float(w.min()), float(w.max()))
        assert w.min() <= qs[0] <= qs[1] <= qs[2] <= w.max()


def test_values_above_a_point_mass_get_a_bin_of_their_own():
    """An amount that is mostly 0 (or a 0/1 flag with few ones): the quantiles fall on the
    zeros, and every value above them shared one bin with the zeros, so a change in how
    often, or how much, the feature is non-zero went unseen."""
    from streamproc.psi import psi

    rng = np.random.default_rng(0)
    amounts = np.where(rng.random(2000) < 0.95, 0.0, rng.exponential(100.0, 2000))
    p = build_feature_profile("amount", amounts.tolist())
    assert p.edges[:2] == [0.0, float(np.nextafter(0.0, 1.0))]
    assert p.proportions[1] == pytest.approx(float((amounts == 0).mean()))  # the zeros alone
    zeros, above = p.bin_counts([0.0, 0.0, 3.0]), p.bin_counts([5.0])
    assert int(np.argmax(zeros)) != int(np.argmax(above))
    drifted = np.where(rng.random(1000) < 0.5, 0.0, rng.exponential(10_000.0, 1000))
    assert psi(p.proportions, p.count, p.bin_counts(drifted.tolist())) > 1.0

    flag = build_feature_profile("flag", [0] * 920 + [1] * 80)
    assert int(np.argmax(flag.bin_counts([0]))) != int(np.argmax(flag.bin_counts([1])))


def test_a_point_mass_adds_no_bin_the_sample_leaves_empty():
    """An integer feature has no values between two integer edges: a bin there would be empty
    in the reference, and its smoothing adds to every window's PSI (with small windows and a
    large reference, stationary false alarms rose from 0.2 % to 0.85 % at alpha 1e-3)."""
    rng = np.random.default_rng(1)
    for values in (rng.poisson(3.0, 100_000), rng.integers(0, 4, 100_000)):
        p = build_feature_profile("n", values.astype(float).tolist())
        assert all(share > 0 for share in p.proportions[1:-2]), (p.edges, p.proportions)  # (outer and missing bins aside)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # (the mean of such values)
def test_a_point_mass_at_the_largest_double_gives_finite_edges_that_round_trip():
    big = float(np.finfo(np.float64).max)
    p = build_feature_profile("limit", [float(i) for i in range(100)] + [big] * 20)
    assert all(math.isfinite(e) for e in p.edges) and p.edges[-1] == big
    again = FeatureProfile.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again.edges == p.edges
