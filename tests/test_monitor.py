"""Unit tests of ``streamproc.monitor.ModelMonitor``: warmup, windows, drift and quality alerts."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import orjson
import pytest

from streamproc.config import MonitorConfig
from streamproc.decode import PredictionBatch, decode_predictions
from streamproc.monitor import LABEL_KEY, SCORE_KEY, ModelMonitor
from streamproc.profile import build_reference
from streamproc.synth import Drift, ModelStream


def to_batch(events: list[dict]) -> PredictionBatch:
    """Events through the real decoder (JSON bytes -> columnar batch), one model version."""
    batches, rejected = decode_predictions([orjson.dumps(e) for e in events])
    assert rejected == []
    assert len(batches) == 1
    return next(iter(batches.values()))


def feed(mon: ModelMonitor, batch: PredictionBatch, sizes, **options):
    """Feed ``batch`` in chunks whose sizes cycle through ``sizes``; collect everything."""
    alerts, retrains, closed = [], [], 0
    pos, i = 0, 0
    while pos < len(batch):
        step = sizes[i % len(sizes)]
        r = mon.update(batch.slice(pos, pos + step), **options)
        alerts += r.alerts
        retrains += r.retrains
        closed += r.windows_closed
        pos += step
        i += 1
    return alerts, retrains, closed


def small_cfg(**kw) -> MonitorConfig:
    return MonitorConfig(window_size=kw.pop("window_size", 100), warmup_size=kw.pop("warmup_size", 50), **kw)


# -- warmup --------------------------------------------------------------------------------


def test_reference_is_built_after_exactly_warmup_size_events():
    events = list(ModelStream("m", seed=1).events(700))
    batch = to_batch(events)
    mon = ModelMonitor("m", "default", small_cfg(warmup_size=500))
    assert mon.warming_up
    _, _, closed = feed(mon, batch.slice(0, 499), [77])
    assert closed == 0
    assert mon.warming_up and mon.reference is None and mon.pane is None
    assert mon.events == 499
    mon.update(batch.slice(499, 500))
    assert not mon.warming_up
    assert mon.reference.count == 500
    assert mon.pane.index == 0 and mon.pane.count == 0
    expected = build_reference("m", "default", batch.features[:500], batch.scores[:500], batch.labels[:500])
    assert json.dumps(mon.reference.to_dict(), sort_keys=True) == json.dumps(expected.to_dict(), sort_keys=True)
    # A score profile exists, so the stream detectors are armed with its mean and std.
    assert mon.detectors is not None
    assert mon.detectors.mean == pytest.approx(expected.score.mean)


def test_warmup_boundary_inside_one_batch():
    batch = to_batch(list(ModelStream("m", seed=2).events(650)))
    mon = ModelMonitor("m", "default", small_cfg(warmup_size=500, window_size=100))
    r = mon.update(batch)
    assert mon.reference.count == 500
    assert r.windows_closed == 1
    assert mon.pane.index == 1 and mon.pane.count == 50
    assert mon.events == 650


def test_a_given_reference_skips_warmup():
    batch = to_batch(list(ModelStream("m", seed=3).events(300)))
    ref = build_reference("m", "default", batch.features[:200], batch.scores[:200], batch.labels[:200], source="file")
    mon = ModelMonitor("m", "default", small_cfg(warmup_size=5000), reference=ref)
    assert not mon.warming_up
    r = mon.update(batch.slice(200, 300))
    assert r.windows_closed == 1
    assert mon.reference.source == "file"


# -- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize("k, r, sizes", [(7, 33, [37, 101, 13, 250, 1]), (3, 0, [100]), (5, 99, [99]), (2, 1, [1000])])
def test_window_rollover_counts(k, r, sizes):
    W, warm = 100, 50
    events = list(ModelStream("m", seed=4).events(warm + k * W + r))
    batch = to_batch(events)
    mon = ModelMonitor("m", "default", small_cfg(window_size=W, warmup_size=warm))
    total_closed = 0
    pos, i = 0, 0
    while pos < len(batch):
        step = sizes[i % len(sizes)]
        res = mon.update(batch.slice(pos, pos + step))
        total_closed += res.windows_closed
        pos += step
        i += 1
        if mon.pane is not None:
            for name, counts in mon.pane.counts.items():
                assert counts.sum() == mon.pane.count, name
    assert total_closed == k
    assert mon.pane.index == k
    assert mon.pane.count == r
    assert mon.events == len(events)
    names = set(mon.pane.counts)
    assert {"x0", "x4", "c0", SCORE_KEY, LABEL_KEY} <= names
    if r:
        tail = batch.ts[-r:]
        assert mon.pane.start == min(tail) and mon.pane.end == max(tail)
        assert mon.pane.info().count == r
    else:
        assert mon.pane.info().start == 0.0 and mon.pane.info().count == 0


def test_closed_window_statistics_are_recorded():
    batch = to_batch(list(ModelStream("m", seed=5).events(250)))
    mon = ModelMonitor("m", "default", small_cfg())
    mon.update(batch)
    # 2 windows closed: latest PSI per signal, with the warning threshold used.
    assert ("feature", "x0") in mon.latest
    assert ("prediction_score", SCORE_KEY) in mon.latest
    assert ("prediction_label", LABEL_KEY) in mon.latest
    for value, warn in mon.latest.values():
        assert value >= 0 and warn >= mon.cfg.psi.warning


# -- drift ---------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def stationary_batch() -> PredictionBatch:
    return to_batch(list(ModelStream("wide", n_numeric=20, n_categorical=1, seed=11).events(60_000)))


def test_no_alerts_on_a_stationary_stream():
    batch = stationary_batch()
    mon = ModelMonitor("wide", "default", MonitorConfig())
    alerts, retrains, closed = feed(mon, batch, [5000])
    assert closed == (60_000 - 2000) // 1000
    assert alerts == []
    assert retrains == []
    assert len(mon.reference.features) == 21
    assert mon.policy.state.active == {}
    # Every statistic was computed and stayed under its threshold.
    assert len(mon.latest) == 21 + 2
    assert all(v < t for v, t in mon.latest.values())


@pytest.mark.parametrize("seed, start", [(0, 5000), (1, 5500), (2, 6999)])
def test_one_sigma_shift_raises_psi_alert_naming_the_feature(seed, start):
    cfg = MonitorConfig(window_size=1000, warmup_size=2000)
    stream = ModelStream("m", n_numeric=5, seed=seed, drift=Drift(start=start, features=("x3",), shift=1.0))
    batch = to_batch(list(stream.events(10_000)))
    mon = ModelMonitor("m", "default", cfg)
    alerts, retrains, _ = feed(mon, batch, [700])
    drift_window = (start - cfg.warmup_size) // cfg.window_size
    data = [a for a in alerts if a["type"] == "data_drift"]
    assert data, alerts
    assert {a["feature"] for a in data} == {"x3"}
    first = data[0]
    assert first["detector"] == "psi" and first["signal"] == "feature"
    assert drift_window <= first["window"]["index"] <= drift_window + 1
    assert first["statistic"] >= first["threshold"] > 0
    # x3 does not feed the score: no prediction drift.
    assert [a for a in alerts if a["type"] != "data_drift"] == []
    # The drift persists: alerted once per severity, not every window.
    assert len(data) <= 2


def test_unknown_feature_raises_exactly_one_data_quality_alert():
    events = list(ModelStream("m", seed=6).events(3000))
    for i, e in enumerate(events):
        if i >= 500:
            e["features"]["new_field"] = i % 5
        if i >= 600:
            e["features"]["request_id"] = str(i)
    batch = to_batch(events)
    mon = ModelMonitor("m", "default", small_cfg(window_size=200, warmup_size=300, ignore_features=["request_id"]))
    alerts, _, _ = feed(mon, batch, [37, 211])
    quality = [a for a in alerts if a["type"] == "data_quality"]
    assert len(quality) == 1
    a = quality[0]
    assert a["feature"] == "new_field"
    assert a["detector"] == "schema" and a["signal"] == "feature" and a["severity"] == "warning"
    assert mon.unknown_features == {"new_field"}
    assert "new_field" not in mon.reference.features
    # The alert belongs to the window of the first event carrying the feature.
    assert a["window"]["index"] == (500 - 300) // 200


def test_features_seen_during_warmup_are_not_unknown():
    events = list(ModelStream("m", seed=7).events(1000))
    events[10]["features"]["rare"] = 1.0
    events[900]["features"]["rare"] = 2.0
    mon = ModelMonitor("m", "default", small_cfg(window_size=100, warmup_size=100))
    alerts, _, _ = feed(mon, to_batch(events), [1000])
    assert "rare" in mon.reference.features
    assert [a for a in alerts if a["type"] == "data_quality"] == []


@lru_cache(maxsize=None)
def drifting_events() -> tuple:
    stream = ModelStream("m", n_numeric=4, seed=21, drift=Drift(start=4300, features=("x0",), shift=1.0))
    events = list(stream.events(8000))
    for i, e in enumerate(events):
        if i >= 3100:
            e["features"]["late"] = "y"
    return tuple(events)


def _split_runs(sizes_list, **settings):
    batch = to_batch(list(drifting_events()))
    cfg = MonitorConfig(window_size=500, warmup_size=1000, **settings)
    runs = []
    for sizes in sizes_list:
        mon = ModelMonitor("m", "default", cfg)
        runs.append(feed(mon, batch, sizes))
    return runs


_SIZES = ([8000], [500], [7], [333, 1, 1299], np.random.default_rng(0).integers(1, 900, size=200).tolist())


def test_batch_splitting_does_not_change_alert_ids():
    runs = _split_runs(_SIZES)
    first_alerts, first_retrains, first_closed = runs[0]
    ids = sorted(a["alert_id"] for a in first_alerts)
    # The run is interesting: stream, window and quality alerts, and a retrain request.
    assert {a["detector"] for a in first_alerts} >= {"psi", "schema", "page_hinkley"}
    assert len(ids) == len(set(ids)) >= 5
    assert first_retrains
    assert first_closed == (8000 - 1000) // 500
    for alerts, retrains, closed in runs[1:]:
        assert sorted(a["alert_id"] for a in alerts) == ids
        assert closed == first_closed
        assert [r["data_window"]["index"] for r in retrains] == [r["data_window"]["index"] for r in first_retrains]
        # Whole alerts: a stream detector's window was the pane as the batch left it (its count
        # 34, 37 or 100 for one alert).
        assert _comparable(alerts) == _comparable(first_alerts)


def _comparable(alerts: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in a.items() if k != "detected_at"} for a in alerts), key=lambda a: a["alert_id"])


def test_batch_splitting_does_not_change_alerts_of_time_windows():
    # A schema alert took the window of the newest open pane after its batch, not the pane of
    # the event that carried the feature: its id changed with batching.
    runs = _split_runs(_SIZES, window={"kind": "time", "seconds": 5, "allowed_lateness": 0, "min_events": 10})
    first = _comparable(runs[0][0])
    assert {a["detector"] for a in first} >= {"psi", "schema", "page_hinkley"}
    for alerts, retrains, closed in runs[1:]:
        assert _comparable(alerts) == first and closed == runs[0][2]


def test_small_chunks_of_decoded_tables_give_the_alerts_large_ones_give():
    """Monitors of a known reference get their events as tables, and panes defer chunks of
    fewer than ``window.DEFER_EVENTS`` (64 in a worker of few models; as each of thousands of models gets per batch): one
    event at a time, odd chunk sizes and whole windows give the very same alerts and retrain
    requests, values included."""
    from streamproc.feature_table import FeatureTable, layout_for

    events = list(drifting_events())
    cfg = MonitorConfig(window_size=500, warmup_size=1000)
    warm = ModelMonitor("m", "default", cfg)
    feed(warm, to_batch(events[:1000]), [1000])
    reference = warm.reference
    batches, rejected = decode_predictions([orjson.dumps(e) for e in events[1000:]],
                                           layouts=lambda _key: layout_for(reference))
    assert rejected == [] and len(batches) == 1
    batch = next(iter(batches.values()))
    assert isinstance(batch.features, FeatureTable)

    def timeless(run):
        """Without the decision times; an immediate alert (schema, stream detectors) says the
        open pane's extent so far, which depends on where its chunk ended: only its index."""
        alerts, retrains, closed = run
        for a in alerts:
            if a["detector"] in ("schema", "feature_cap", "category_cap", "adwin", "page_hinkley"):
                a["window"] = {"index": a["window"]["index"]}
        return ([{k: v for k, v in a.items() if k != "detected_at"} for a in alerts],
                [{k: v for k, v in r.items() if k != "created_at"} for r in retrains], closed)

    runs = [timeless(feed(ModelMonitor("m", "default", cfg, reference=reference), batch, sizes, defer=defer))
            for sizes in ([7000], [1], [5, 31, 2, 40, 33, 1, 17], [63, 9, 50]) for defer in (32, 64)]
    alerts, retrains, closed = runs[0]
    assert {a["detector"] for a in alerts} >= {"psi", "schema", "page_hinkley"} and retrains and closed == 14
    assert all(run == runs[0] for run in runs[1:])


def test_batch_splitting_does_not_change_retrain_request_ids():
    runs = _split_runs(_SIZES)
    first = runs[0][1]
    assert first
    for _alerts, retrains, _closed in runs[1:]:
        assert [r["request_id"] for r in retrains] == [r["request_id"] for r in first]
        assert [r["alert_ids"] for r in retrains] == [r["alert_ids"] for r in first]
        assert [r["drifted_features"] for r in retrains] == [r["drifted_features"] for r in first]


def test_drift_run_alert_kinds():
    batch = to_batch(list(drifting_events()))
    mon = ModelMonitor("m", "default", MonitorConfig(window_size=500, warmup_size=1000))
    alerts, retrains, _ = feed(mon, batch, [1000])
    kinds = {(a["type"], a["detector"], a["feature"] or a["signal"]) for a in alerts}
    assert ("data_drift", "psi", "x0") in kinds
    assert ("data_quality", "schema", "late") in kinds
    assert ("prediction_drift", "psi", "prediction_score") in kinds
    assert any(a["detector"] in ("page_hinkley", "adwin") for a in alerts)
    assert not any(a["type"] == "data_drift" and a["feature"] != "x0" for a in alerts)
    assert len(retrains) == 1  # then the retrain cooldown holds further requests back
    crit = {a["alert_id"] for a in alerts if a["severity"] == "critical"}
    assert set(retrains[0]["alert_ids"]) <= crit
    stream_alert = next(a for a in alerts if a["detector"] == "page_hinkley")
    # The stream detector fires soon after the drift starts (window of event 4300 or the next).
    assert stream_alert["window"]["index"] in ((4300 - 1000) // 500, (4300 - 1000) // 500 + 1)


# -- statistics for metrics ------------------------------------------------------------------


def test_window_statistics_are_the_closed_windows_psi_and_quality_rates():
    """After a window closes: psi per signal, and the window's missing and unseen-category
    shares (what was injected), each with the warning threshold its alert is compared with."""
    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=31).events(1500))
    window = range(1000, 1500)  # warmup 1000, then one window of 500
    for i in window:
        e = events[i]["features"]
        if i % 5 == 0:
            e["x1"] = None  # 100 of 500 missing: 20 %
        if i % 10 == 1:
            e["c0"] = "never-seen"  # 50 of 500 unseen: 10 %
        if i % 50 == 2:
            del e["c0"]  # 10 of 500 missing: 2 %, under the 5-point minimum increase
    mon = ModelMonitor("m", "default", MonitorConfig(window_size=500, warmup_size=1000))
    assert mon.window_statistics() == []
    alerts, _, closed = feed(mon, to_batch(events), [300])
    assert closed == 1
    stats = {(f, d): (v, t) for f, d, v, t in mon.window_statistics()}
    assert set(stats) == ({(f, "psi") for f in ("x0", "x1", "x2", "c0", SCORE_KEY, LABEL_KEY)}
                          | {(f, "missing_rate") for f in ("x0", "x1", "x2", "c0")} | {("c0", "unseen_categories")})
    assert stats[("x1", "missing_rate")][0] == 100 / 500
    assert stats[("c0", "unseen_categories")][0] == 50 / 500
    assert stats[("c0", "missing_rate")][0] == 10 / 500
    assert stats[("x0", "missing_rate")][0] == 0.0
    # The reference had nothing missing: the rate needed is at least the 5-point minimum increase.
    for f in ("x0", "x1", "x2", "c0"):
        assert 0.05 <= stats[(f, "missing_rate")][1] < 0.1
    # psi: the same values and thresholds as ``latest`` (and streamproc_psi).
    for (_signal, name), (value, threshold) in mon.latest.items():
        assert stats[(name, "psi")] == (value, threshold)
    # The alerts raised report the same statistic and threshold.
    quality = {(a["feature"], a["detector"]): a for a in alerts if a["type"] == "data_quality"}
    assert set(quality) == {("x1", "missing_rate"), ("c0", "unseen_categories")}
    for key, a in quality.items():
        assert (a["statistic"], a["threshold"]) == pytest.approx(stats[key], abs=1e-6)  # alerts round to 6 places
        assert a["statistic"] >= a["threshold"]
    assert stats[("c0", "missing_rate")][0] < stats[("c0", "missing_rate")][1]  # no alert: below its threshold


def test_window_statistics_follow_the_latest_window():
    events = list(ModelStream("m", n_numeric=2, n_categorical=1, seed=32).events(200))
    for i in range(100, 150):
        events[i]["features"]["x0"] = None  # half of the first window
    mon = ModelMonitor("m", "default", small_cfg(window_size=50, warmup_size=100))
    feed(mon, to_batch(events[:150]), [50])
    assert dict(((f, d), v) for f, d, v, _ in mon.window_statistics())[("x0", "missing_rate")] == 1.0
    feed(mon, to_batch(events[150:]), [50])
    assert dict(((f, d), v) for f, d, v, _ in mon.window_statistics())[("x0", "missing_rate")] == 0.0


def test_a_monitor_saved_before_window_statistics_existed_restores():
    import pickle

    events = list(ModelStream("m", seed=33).events(400))
    mon = ModelMonitor("m", "default", small_cfg(window_size=100, warmup_size=100))
    feed(mon, to_batch(events[:250]), [250])
    del mon.latest_quality_hits, mon.latest_window_count  # as pickled by an older streamproc
    old = pickle.loads(pickle.dumps(mon))
    assert "latest_quality_hits" not in old.__dict__
    assert {d for _, d, _, _ in old.window_statistics()} == {"psi"}
    feed(old, to_batch(events[250:]), [150])
    assert {d for _, d, _, _ in old.window_statistics()} == {"psi", "missing_rate", "unseen_categories"}
    again = pickle.loads(pickle.dumps(old))
    assert again.window_statistics() == old.window_statistics()
    assert ModelMonitor.latest_quality_hits is None and ModelMonitor.latest_window_count == 0


def _ph_statistic(x: np.ndarray, delta: float, two_sided: bool) -> float:
    """Page-Hinkley's test statistic after ``x`` (no reset, alpha = 1), computed from its definition."""
    dev = x - np.cumsum(x) / np.arange(1, len(x) + 1)
    up = np.cumsum(dev - delta)
    down = np.cumsum(dev + delta)
    stat = up[-1] - up.min()
    if two_sided:
        stat = max(stat, max(-1.0, down.max()) - down[-1])
    return float(stat)


def test_stream_statistics_of_the_score_detectors_in_reference_sigmas():
    from streamproc.config import ADWINConfig, PageHinkleyConfig
    from streamproc.detectors import StreamDetectors
    from streamproc.monitor import detector_statistics

    rng = np.random.default_rng(34)
    mean, std = 5.0, 2.0
    det = StreamDetectors(mean, std, ADWINConfig(), PageHinkleyConfig())
    x = np.concatenate([rng.normal(mean, std, 3000), rng.normal(mean + 0.15 * std, std, 300)])
    assert det.update(x) == [] and not det.pending and det.ignored == 0  # no detection: nothing was reset
    stats = {d: (v, t) for d, v, t in detector_statistics(det)}
    assert det.adwin.width == len(x)
    assert stats["adwin"] == (pytest.approx(abs(x.mean() - mean) / std), 0.1)
    assert stats["page_hinkley"] == (pytest.approx(_ph_statistic(x, 0.25 * std, True) / std), pytest.approx(40.0))
    assert 0 < stats["page_hinkley"][0] < 40

    # A 1 sigma shift: Page-Hinkley's statistic crosses its threshold when it fires, and
    # ADWIN's window (cut at the change) moves by about 1 sigma.
    shifted = rng.normal(mean + std, std, 2000)
    fired = None
    for i in range(len(shifted)):
        det.update(shifted[i:i + 1])
        if det.ph.drift_detected:
            fired = dict((d, (v, t)) for d, v, t in detector_statistics(det))["page_hinkley"]
            break
    assert fired is not None and fired[0] > fired[1] == pytest.approx(40.0)
    det.update(shifted[i + 1:])
    stats = {d: (v, t) for d, v, t in detector_statistics(det)}
    assert 0.6 < stats["adwin"][0] < 1.4
    assert stats["page_hinkley"][0] < 40  # it restarted after firing


def test_stream_statistics_of_the_monitor():
    from streamproc.monitor import ERROR_SIGNAL
    from streamproc.outcomes import Match

    events = list(ModelStream("m", seed=35).events(750))
    mon = ModelMonitor("m", "default", small_cfg(window_size=100, warmup_size=100, concept={"warmup": 500}))
    assert mon.stream_statistics() == [] and mon.stream_statistics(ERROR_SIGNAL) == []
    feed(mon, to_batch(events), [750])
    assert {(f, d) for f, d, _, _ in mon.stream_statistics()} == {(SCORE_KEY, "adwin"), (SCORE_KEY, "page_hinkley")}
    # The error signal: every 10th prediction wrong (a baseline of 500, 50 of them wrong), then
    # every other one.
    wrong = [i % 10 == 0 if i < 650 else i % 2 == 0 for i in range(len(events))]
    matches = [Match(event_id=e["event_id"], version="default", ts=e["ts"], score=e["prediction"]["score"],
                     label=e["prediction"]["label"], truth="x" if w else e["prediction"]["label"], value=None)
               for e, w in zip(events, wrong)]
    mon.update_errors(matches)
    stats = {(f, d): (v, t) for f, d, v, t in mon.stream_statistics(ERROR_SIGNAL)}
    assert set(stats) == {(ERROR_SIGNAL, "adwin"), (ERROR_SIGNAL, "page_hinkley")}
    base_mean, base_std = mon.errors.baseline
    assert base_mean == pytest.approx(0.1)
    # The error rose from 10 % to 50 %: ADWIN's mean since the baseline is at least the whole
    # post-warmup mean (150 at 10 %, 100 at 50 %), in baseline sigmas, and signed.
    assert stats[(ERROR_SIGNAL, "adwin")][0] >= (0.26 - 0.1) / base_std - 1e-9
    assert stats[(ERROR_SIGNAL, "adwin")][1] == mon.cfg.concept.signal.min_effect
    assert stats[(ERROR_SIGNAL, "page_hinkley")][1] == pytest.approx(mon.cfg.page_hinkley.threshold_sigma)


def test_quantiles_are_the_latest_windows_only():
    # A numeric feature with no value in the latest window has no quantiles, not an older window's.
    events = list(ModelStream("m", n_numeric=2, n_categorical=1, seed=33).events(200))
    for i in range(150, 200):
        events[i]["features"]["x0"] = None
    mon = ModelMonitor("m", "default", small_cfg(window_size=50, warmup_size=100))
    feed(mon, to_batch(events[:150]), [50])
    assert set(mon.quantiles) == {"x0", "x1", "prediction.score"}
    feed(mon, to_batch(events[150:]), [50])
    assert set(mon.quantiles) == {"x1", "prediction.score"}


def test_a_stray_string_in_a_numeric_feature_does_not_stop_its_monitoring():
    # One "N/A" among 300 warm-up values: still numeric (the string counts as missing), so a
    # shift of it is found, as without the string.
    events = list(ModelStream("m", n_numeric=2, n_categorical=1, seed=34, drift=Drift(700, ("x0",), 1.0)).events(1000))
    events[150]["features"]["x0"] = "N/A"
    mon = ModelMonitor("m", "default", small_cfg(window_size=100, warmup_size=300))
    alerts, _retrains, _closed = feed(mon, to_batch(events), [100])
    assert mon.reference.features["x0"].kind == "numeric"
    assert mon.reference.features["x0"].missing_rate == 1 / 300
    assert any(a["feature"] == "x0" and a["detector"] == "psi" for a in alerts)


@pytest.mark.parametrize("seed", [3, 4])
def test_a_stream_drift_alerts_once_per_detector_while_it_lasts_and_again_when_it_comes_back(seed):
    """After 5 stationary windows, the score shifts by 1 sigma, its spread tripled, for 20
    windows, comes back for 20, shifts again: each detector alerts in each drifted span, at
    most once per span, and never while the score is back. (In so noisy a regime Page-Hinkley
    fires again almost every window: 33 critical alerts, each a retrain request, before
    stream drifts lasted.)"""
    rng = np.random.default_rng(seed)
    n, window = 20_000, 1000
    scores = np.concatenate([rng.normal(0.0, 1.0, 10_000), rng.normal(1.0, 3.0, n), rng.normal(0.0, 1.0, n),
                             rng.normal(1.0, 3.0, n)])
    ref = build_reference("m", "default", [{} for _ in range(5000)], scores[:5000].tolist(), [None] * 5000, source="file")
    mon = ModelMonitor("m", "default", MonitorConfig(window_size=window), reference=ref)
    spans = {"before": (0, 10_000), "first drift": (10_000, 30_000), "back": (30_000, 50_000),
             "second drift": (50_000, 70_000)}
    found: dict = {}
    for start in range(5000, len(scores), 500):
        chunk = scores[start:start + 500]
        batch = PredictionBatch("m", "default", [f"e{i}" for i in range(start, start + len(chunk))],
                                [float(i) for i in range(start, start + len(chunk))], [{} for _ in chunk],
                                chunk.tolist(), [None] * len(chunk))
        for a in mon.update(batch).alerts:
            if a["detector"] in ("adwin", "page_hinkley"):
                at = a["window"]["end"]
                span = next(name for name, (lo, hi) in spans.items() if lo <= at < hi)
                found.setdefault(span, []).append(a["detector"])
    assert sorted(found) == ["first drift", "second drift"]
    for span, detectors in found.items():
        assert len(detectors) == len(set(detectors)), (span, detectors)


def test_panes_hold_up_to_64_events_unsketched_in_a_worker_of_few_models_32_beyond(monkeypatch):
    """What waits in a pane is bounded by the worker's model versions: fewer than
    DEFER_EVENTS_FEW (64) in each with at most FEW_MODELS, fewer than DEFER_EVENTS (32) beyond,
    so 10,000 models hold no more than they did."""
    from streamproc import engine as engine_module
    from streamproc.config import load_config
    from streamproc.engine import MonitorEngine

    events = list(drifting_events())
    warm = ModelMonitor("m", "default", MonitorConfig(window_size=500, warmup_size=1000))
    feed(warm, to_batch(events[:1000]), [1000])
    refs = {(m, "default"): warm.reference for m in ("a", "b")}

    def pending_after(models: tuple, few: int) -> int:
        monkeypatch.setattr(engine_module, "FEW_MODELS", few)
        eng = MonitorEngine(load_config(None, environ={}), refs)
        for start in range(1000, 1060, 10):  # six chunks of 10 events a model (the first as dicts: no layout yet)
            raw = [orjson.dumps({**e, "model_id": m}) for m in models for e in events[start:start + 10]]
            batches, rejected = decode_predictions(raw, layouts=eng.feature_layout)
            assert not rejected
            eng.process(batches)
        return eng.monitors[("a", "default")].pane._pending.n

    assert pending_after(("a", "b"), few=1000) == 50  # five tables of 10: under 64, all of them wait
    assert pending_after(("a", "b"), few=1) == 50 - 40  # more models than FEW_MODELS: sketched once 32 (here 40) wait
