"""Data-quality alerts: missing-rate and unseen-category jumps, through the monitor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import MonitorConfig, QualityConfig
from streamproc.monitor import LABEL_KEY, SCORE_KEY, ModelMonitor
from streamproc.profile import ReferenceProfile, build_reference
from streamproc.quality import rate_jump, rate_jumps
from streamproc.synth import ModelStream

from .test_monitor import to_batch


def events_with(n: int, seed: int, missing_after: int | None = None, missing_rate: float = 0.3,
                unseen_after: int | None = None, unseen_rate: float = 0.2):
    rng = np.random.default_rng(seed)
    out = []
    for i, e in enumerate(ModelStream("q", n_numeric=3, n_categorical=1, seed=seed).events(n)):
        if missing_after is not None and i >= missing_after and rng.random() < missing_rate:
            e["features"]["x2"] = None
        if unseen_after is not None and i >= unseen_after and rng.random() < unseen_rate:
            e["features"]["c0"] = f"new-{rng.integers(1000)}"
        out.append(e)
    return out


def quality_alerts(events, **cfg):
    mon = ModelMonitor("q", "default", MonitorConfig(window_size=500, warmup_size=2000, **cfg))
    return [a for a in mon.update(to_batch(events)).alerts if a["type"] == "data_quality"]


def test_missing_rate_jump_alerts_on_that_feature():
    alerts = quality_alerts(events_with(6000, 1, missing_after=4000))
    assert [(a["detector"], a["feature"], a["severity"]) for a in alerts] == [("missing_rate", "x2", "critical")]
    a = alerts[0]
    assert a["window"]["index"] == 4  # (4000 - 2000 warmup) / 500: the first window with the change
    assert 0.2 < a["statistic"] < 0.4 and a["threshold"] >= 0.05


def test_unseen_categories_alert():
    alerts = quality_alerts(events_with(6000, 2, unseen_after=4000, unseen_rate=0.2))
    assert {(a["detector"], a["feature"]) for a in alerts} == {("unseen_categories", "c0")}
    assert alerts[0]["severity"] == "critical"


def test_stationary_stream_raises_no_quality_alert():
    assert quality_alerts(events_with(30000, 3)) == []


def test_small_missing_increase_is_ignored_and_quality_can_be_disabled():
    assert quality_alerts(events_with(6000, 4, missing_after=4000, missing_rate=0.02)) == []
    assert quality_alerts(events_with(6000, 5, missing_after=4000), quality={"enabled": False}) == []


@pytest.mark.parametrize("ref_rate,hits,count,severity", [
    (0.0, 0, 1000, None),
    (0.0, 60, 1000, "warning"),
    (0.0, 250, 1000, "critical"),
    (0.10, 140, 1000, None),  # +4 points: below min_increase
    (0.10, 200, 1000, "warning"),
    (0.10, 20, 100, None),  # +10 points on 100 events: not significant at alpha 1e-6
])
def test_rate_jump(ref_rate, hits, count, severity):
    rate, needed, sev = rate_jump(ref_rate, 2000, hits, count, QualityConfig())
    assert sev == severity
    assert rate == hits / count
    assert (rate >= needed) == (severity is not None)


def test_feature_and_category_caps_bound_the_state_and_alert_once():
    rng = np.random.default_rng(9)
    events = []
    for i, e in enumerate(ModelStream("q", n_numeric=3, n_categorical=1, seed=9).events(4000)):
        # 40 extra features, rarer than x0..x2 and c0, and a high-cardinality category.
        for j in range(40):
            if rng.random() < 0.5:
                e["features"][f"extra{j:02d}"] = 1.0
        e["features"]["user"] = f"u{rng.integers(5000)}"
        events.append(e)
    mon = ModelMonitor("q", "default", MonitorConfig(window_size=500, warmup_size=2000, max_features=10, max_categories=20))
    alerts = [a for a in mon.update(to_batch(events)).alerts if a["type"] == "data_quality"]
    caps = [(a["detector"], a["feature"]) for a in alerts if a["detector"].endswith("_cap")]
    assert caps == [("feature_cap", None), ("category_cap", "user")]
    assert len(mon.reference.features) == 10
    assert {"x0", "x1", "x2", "c0", "user"} <= set(mon.reference.features)
    assert len(mon.reference.features["user"].categories) == 20
    # Dropped features are not then reported one by one, and the window state stays bounded.
    assert not [a for a in alerts if a["detector"] == "schema"]
    assert all(len(c) <= 45 for c in mon.pane.counts.values())  # 40 quantile bins + 2 outer + missing, or 20 categories + 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 10**7), st.integers(0, 10**6)), max_size=30),
       st.integers(0, 10**6), st.sampled_from([1e-9, 1e-6, 0.01]), st.sampled_from([0.0, 0.05]),
       st.sampled_from([0.05, 0.2]))  # (a critical bar below the warning one is refused by the config)
def test_rate_jumps_equal_rate_jump_of_each_rate_to_the_bit(checks, count, alpha, min_increase, critical_increase):
    cfg = QualityConfig(alpha=alpha, min_increase=min_increase, critical_increase=critical_increase)
    checks = [(ref_rate, ref_count, min(hits, count)) for ref_rate, ref_count, hits in checks]
    rates, needed, severities = rate_jumps(*map(list, zip(*checks)) if checks else ([], [], []), count, cfg)
    assert list(zip(rates, needed, severities)) == [rate_jump(r, c, h, count, cfg) for r, c, h in checks]


def _closed_window(reference, rows: list[dict]) -> tuple[ModelMonitor, list[dict]]:
    """A monitor of ``reference`` after one window of ``rows`` (score 0.3, no label)."""
    mon = ModelMonitor("q", "default", MonitorConfig(window_size=len(rows), warmup_size=100), reference)
    batch = to_batch([{"event_id": f"e{i}", "model_id": "q", "ts": float(i), "features": row, "prediction": 0.3}
                           for i, row in enumerate(rows)])
    return mon, mon.update(batch).alerts


def test_quality_alerts_name_the_profile_and_statistics_the_reference_key():
    # A reference file may give a feature's profile a name other than its key: quality alerts
    # carry the profile's name (so their ids stay those of earlier versions), PSI alerts and
    # statistics the key.
    ref = build_reference("q", "default", [{"age": float(i % 9), "col": "ab"[i % 2]} for i in range(300)], [0.3] * 300)
    d = ref.to_dict()
    d["features"]["age"]["name"], d["features"]["col"]["name"] = "Age", "Colour"
    mon, alerts = _closed_window(ReferenceProfile.from_dict(d), [{"age": None, "col": "zz"}] * 100)
    got = {(a["detector"], a["feature"]) for a in alerts}
    assert {("missing_rate", "Age"), ("unseen_categories", "Colour"), ("psi", "age"), ("psi", "col")} <= got
    rows = {(f, d): v for f, d, v, _t in mon.window_statistics()}
    assert rows[("age", "missing_rate")] == 1.0 and rows[("col", "unseen_categories")] == 1.0


@pytest.mark.parametrize("signal", [SCORE_KEY, LABEL_KEY])
def test_a_feature_named_like_a_prediction_signal_gets_no_quality_check_or_bogus_statistic(signal):
    rows = [{"x": float(i % 7), signal: "ab"[i % 2]} for i in range(300)]
    ref = build_reference("q", "default", rows, [0.3] * 300, ["yes"] * 300)
    mon, alerts = _closed_window(ref, [{"x": None, signal: "zz"}] * 100)
    assert ("missing_rate", "x") in {(a["detector"], a["feature"]) for a in alerts}
    assert not [a for a in alerts if a["type"] == "data_quality" and a["feature"] == signal]
    assert mon.latest_quality_hits.tolist() == [[100, -1]]  # x only
    assert all(value >= 0 for _f, _d, value, _t in mon.window_statistics())
