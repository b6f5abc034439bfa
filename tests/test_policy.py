"""Unit tests of ``streamproc.policy.AlertPolicy``: ids, de-duplication, hysteresis, retrains."""

from __future__ import annotations

import uuid
from typing import Optional

from streamproc.config import MonitorConfig, PSIConfig, RetrainConfig
from streamproc.policy import ALERT_NAMESPACE, LEVEL, AlertPolicy, Finding, WindowInfo, alert_id

WARN, CRIT = 0.1, 0.25


def win(index: int) -> WindowInfo:
    return WindowInfo(index, 1000.0 + index, 1009.0 + index, 1000)


def psi_finding(index: int, value: float, feature: str = "x0", kind: str = "data_drift") -> Finding:
    severity = "critical" if value >= CRIT else "warning" if value >= WARN else None
    signal = "feature" if kind == "data_drift" else "prediction_score"
    return Finding(kind, "psi", signal, feature if kind == "data_drift" else None, value,
                   CRIT if severity == "critical" else WARN, severity, win(index))


def stream_finding(position: int, index: int = 0, detector: str = "page_hinkley", severity: Optional[str] = "warning") -> Finding:
    return Finding("prediction_drift", detector, "prediction_score", None, 40.5, 40.0, severity, win(index), position=position)


def policy(**kw) -> AlertPolicy:
    cfg = MonitorConfig(
        window_size=kw.pop("window_size", 1000),
        psi=PSIConfig(warning=WARN, critical=CRIT, clear_windows=kw.pop("clear_windows", 3), hysteresis=kw.pop("hysteresis", 0.8)),
        retrain=RetrainConfig(**kw.pop("retrain", {})),
        **kw,
    )
    return AlertPolicy("fraud", "v2", cfg)


def alerts_of(p: AlertPolicy, *findings: Finding) -> list[dict]:
    return p.decide(list(findings))


def step(p: AlertPolicy, index: int, *findings: Finding) -> tuple[list[dict], list[dict]]:
    """The alerts of window ``index``'s findings, then the retrain request (if any) as it closes."""
    alerts = p.decide(list(findings))
    request = p.window_closed(win(index))
    return alerts, [request] if request else []


# -- ids -----------------------------------------------------------------------------------


def test_alert_ids_are_deterministic():
    f = psi_finding(4, 0.3)
    a1 = alerts_of(policy(), f)
    a2 = alerts_of(policy(), f)
    assert len(a1) == len(a2) == 1
    assert a1[0]["alert_id"] == a2[0]["alert_id"]
    assert uuid.UUID(a1[0]["alert_id"]).version == 5
    # The id is the documented UUIDv5 of model, version, key, window, severity, position.
    name = "\x1f".join(["fraud", "v2", "data_drift", "psi", "feature", "x0", "4", "critical", "None"])
    assert a1[0]["alert_id"] == str(uuid.uuid5(ALERT_NAMESPACE, name))
    # Not part of the id: the statistic, the window's times and count.
    f_other = Finding(f.type, f.detector, f.signal, f.feature, 0.9, CRIT, "critical", WindowInfo(4, 0.0, 1.0, 7))
    assert alert_id("fraud", "v2", f_other) == a1[0]["alert_id"]


def test_alert_ids_differ_by_window_severity_feature_model_and_position():
    base = alert_id("fraud", "v2", psi_finding(4, 0.3))
    assert alert_id("fraud", "v2", psi_finding(5, 0.3)) != base
    assert alert_id("fraud", "v2", psi_finding(4, 0.15)) != base
    assert alert_id("fraud", "v2", psi_finding(4, 0.3, feature="x1")) != base
    assert alert_id("fraud", "v3", psi_finding(4, 0.3)) != base
    assert alert_id("other", "v2", psi_finding(4, 0.3)) != base
    assert alert_id("fraud", "v2", stream_finding(100)) != alert_id("fraud", "v2", stream_finding(101))


def test_alert_contents():
    (a,) = alerts_of(policy(), psi_finding(2, 0.1234567891))
    assert a["model_id"] == "fraud" and a["model_version"] == "v2"
    assert a["type"] == "data_drift" and a["detector"] == "psi" and a["signal"] == "feature"
    assert a["feature"] == "x0"
    assert a["severity"] == "warning"
    assert a["statistic"] == 0.123457
    assert a["threshold"] == WARN
    assert a["window"] == {"index": 2, "start": 1002.0, "end": 1011.0, "count": 1000}
    assert a["schema_version"] == "1.0"


# -- window statistics: persistence, escalation, hysteresis --------------------------------


def test_no_repeated_alert_while_drift_persists():
    p = policy()
    assert len(alerts_of(p, psi_finding(0, 0.15))) == 1
    for i in range(1, 10):
        assert alerts_of(p, psi_finding(i, 0.15 + i / 1000)) == []
    assert p.state.suppressed == 9
    assert p.state.active == {("data_drift", "psi", "feature", "x0"): "warning"}


def test_escalation_warning_to_critical_alerts_again():
    p = policy()
    (w,) = alerts_of(p, psi_finding(0, 0.15))
    (c,) = alerts_of(p, psi_finding(1, 0.4))
    assert (w["severity"], c["severity"]) == ("warning", "critical")
    assert w["alert_id"] != c["alert_id"]
    # Back to warning, then critical again: still the same drift, no new alerts.
    assert alerts_of(p, psi_finding(2, 0.15)) == []
    assert alerts_of(p, psi_finding(3, 0.4)) == []


def test_drift_ends_only_after_clear_windows_calm_windows():
    p = policy(clear_windows=3, hysteresis=0.8)
    assert len(alerts_of(p, psi_finding(0, 0.2))) == 1
    # Two calm windows (below 0.08), then drift again: still active, no alert, calm reset.
    assert alerts_of(p, psi_finding(1, 0.01), psi_finding(2, 0.02)) == []
    assert p.state.calm[("data_drift", "psi", "feature", "x0")] == 2
    assert alerts_of(p, psi_finding(3, 0.2)) == []
    assert ("data_drift", "psi", "feature", "x0") not in p.state.calm
    # Three calm windows end the drift ...
    for i in (4, 5, 6):
        assert alerts_of(p, psi_finding(i, 0.01)) == []
    assert p.state.active == {}
    # ... and a new drift alerts again.
    (again,) = alerts_of(p, psi_finding(7, 0.2))
    assert again["window"]["index"] == 7


def test_hovering_below_threshold_but_above_hysteresis_is_not_calm():
    p = policy(clear_windows=2, hysteresis=0.8)
    alerts_of(p, psi_finding(0, 0.2))
    # 0.09 < warning 0.1 (no severity) but >= 0.08: not calm, the drift stays active.
    for i in range(1, 6):
        assert alerts_of(p, psi_finding(i, 0.09)) == []
    assert ("data_drift", "psi", "feature", "x0") in p.state.active
    assert alerts_of(p, psi_finding(6, 0.2)) == []
    # Calm windows interrupted by a hovering one start counting again.
    alerts_of(p, psi_finding(7, 0.01))
    alerts_of(p, psi_finding(8, 0.09))
    alerts_of(p, psi_finding(9, 0.01))
    assert ("data_drift", "psi", "feature", "x0") in p.state.active
    alerts_of(p, psi_finding(10, 0.01))
    assert p.state.active == {}


def test_calm_findings_without_drift_raise_nothing():
    p = policy()
    assert step(p, 0, psi_finding(0, 0.01), psi_finding(0, 0.05, feature="x1")) == ([], [])
    assert p.state.active == {} and p.state.calm == {}


def test_keys_are_independent():
    p = policy()
    a = alerts_of(p, psi_finding(0, 0.2, "x0"), psi_finding(0, 0.2, "x1"))
    assert [x["feature"] for x in a] == ["x0", "x1"]
    assert alerts_of(p, psi_finding(1, 0.2, "x0"), psi_finding(1, 0.2, "x2"))[0]["feature"] == "x2"


# -- stream detectors ----------------------------------------------------------------------


def test_stream_detector_cooldown():
    p = policy(window_size=1000, stream_clear_windows=0)  # cooldown_events defaults to one window
    assert p.cooldown_events == 1000
    assert len(alerts_of(p, stream_finding(100))) == 1
    assert alerts_of(p, stream_finding(600)) == []
    assert alerts_of(p, stream_finding(1099)) == []
    (a,) = alerts_of(p, stream_finding(1100))
    assert a["detector"] == "page_hinkley"
    # Cooldown is per key: ADWIN is not held back by Page-Hinkley.
    assert len(alerts_of(p, stream_finding(1150, detector="adwin"))) == 1
    assert p.state.suppressed == 2


def test_stream_detector_explicit_cooldown_and_none_severity():
    p = policy(cooldown_events=10, stream_clear_windows=0)
    assert p.cooldown_events == 10
    assert len(alerts_of(p, stream_finding(0))) == 1
    assert alerts_of(p, stream_finding(9)) == []
    assert len(alerts_of(p, stream_finding(10))) == 1
    # A stream finding without severity is ignored (and does not restart the cooldown).
    assert alerts_of(p, stream_finding(25, severity=None)) == []
    assert len(alerts_of(p, stream_finding(20))) == 1


def level(position: int, away: bool) -> Finding:
    """A level reading of the score: its window's mean away from the baseline, or back."""
    return Finding("prediction_drift", LEVEL, "prediction_score", None, 0.4 if away else 0.02, 0.1,
                   "warning" if away else None, win(0), position=position)


def test_a_stream_drift_lasts_until_the_signal_is_back_for_clear_windows_readings():
    p = policy(window_size=1000, stream_clear_windows=3)
    assert len(alerts_of(p, stream_finding(100))) == 1
    # The detector fires again while the signal stays away: the same drift, no alert, however
    # far apart (one window, or twenty).
    assert alerts_of(p, level(1000, True), stream_finding(1500), level(2000, True)) == []
    assert alerts_of(p, *[level(1000 * w, True) for w in range(3, 23)], stream_finding(22_500)) == []
    assert p.state.suppressed == 2
    # An escalation alerts (past the cooldown), and the drift goes on at its severity.
    (a,) = alerts_of(p, stream_finding(22_600, severity="critical"))
    assert a["severity"] == "critical"
    assert alerts_of(p, stream_finding(24_000, severity="warning"), stream_finding(25_000, severity="critical")) == []
    # Two readings back, then one away: still the same drift.
    assert alerts_of(p, level(26_000, False), level(27_000, False), level(28_000, True), stream_finding(28_500)) == []
    # Three readings in a row back at the baseline: the drift is over, and the next one alerts.
    assert alerts_of(p, level(29_000, False), level(30_000, False), level(31_000, False)) == []
    assert p.state.stream_active == {}
    assert len(alerts_of(p, stream_finding(31_100))) == 1
    # Per key: ADWIN is not held back by Page-Hinkley's drift, and a level reading never alerts.
    assert len(alerts_of(p, stream_finding(31_200, detector="adwin"))) == 1
    assert alerts_of(p, level(32_000, True)) == []


def test_with_stream_clear_windows_0_every_detection_past_the_cooldown_alerts():
    p = policy(window_size=1000, stream_clear_windows=0)
    assert [len(alerts_of(p, level(w * 1000, True), stream_finding(w * 1000 + 500))) for w in range(4)] == [1, 1, 1, 1]


def test_a_policy_saved_before_stream_drifts_lasted_restores_and_keeps_them():
    import pickle

    p = policy(window_size=1000)
    del p.state.stream_active  # as a state pickled before the field existed
    restored = AlertPolicy("fraud", "v2", p.cfg, pickle.loads(pickle.dumps(p.state)))
    assert len(alerts_of(restored, stream_finding(100))) == 1
    assert alerts_of(restored, level(1000, True), stream_finding(1500)) == []


def test_fewer_retrain_requests_while_a_stream_drift_lasts():
    p = policy(window_size=1000, retrain={"cooldown_windows": 1})
    requests = []
    for w in range(10):  # a critical detection every other window, the signal away: one drift
        found = [stream_finding(w * 1000 + 500, index=w, severity="critical")] if w % 2 == 0 else []
        step_alerts, retrains = step(p, w, *found, level(w * 1000 + 999, True))
        requests += retrains
    assert len(requests) == 1


# -- retrain requests ----------------------------------------------------------------------


def test_retrain_request_on_critical_data_drift():
    p = policy(retrain={"cooldown_windows": 10})
    alerts, retrains = step(p, 3, psi_finding(3, 0.4, "x0"), psi_finding(3, 0.15, "x1"), psi_finding(3, 0.02, "x2"))
    assert len(alerts) == 2 and len(retrains) == 1
    r = retrains[0]
    crit = [a for a in alerts if a["severity"] == "critical"]
    assert r["alert_ids"] == [a["alert_id"] for a in crit]
    # Every feature currently in drift, not only the critical ones.
    assert r["drifted_features"] == ["x0", "x1"]
    assert r["data_window"] == win(3).to_dict()
    assert r["model_id"] == "fraud" and r["model_version"] == "v2"
    assert "data_drift/psi/x0" in r["reason"]
    assert r["request_id"] == str(uuid.uuid5(ALERT_NAMESPACE, "retrain\x1ffraud\x1fv2\x1f3"))
    assert p.state.last_retrain_window == 3


def test_retrain_is_decided_when_the_window_closes_not_per_batch():
    p = policy()
    # A critical stream-detector alert mid-window: no request yet ...
    assert len(p.decide([stream_finding(5, index=2, severity="critical")])) == 1
    assert p.state.pending_critical and p.state.last_retrain_window is None
    # ... more critical alerts in the same window join it, and the request comes at the close.
    p.decide([stream_finding(7, index=2, detector="adwin", severity="critical")])
    r = p.window_closed(win(2))
    assert len(r["alert_ids"]) == 2 and r["data_window"]["index"] == 2
    assert p.state.pending_critical == []
    assert p.window_closed(win(3)) is None


def test_no_retrain_on_warnings_only():
    p = policy()
    alerts, retrains = step(p, 0, psi_finding(0, 0.2, "x0"), psi_finding(0, 0.2, "x1"),
                            stream_finding(5, detector="adwin"))
    assert len(alerts) == 3 and retrains == []


def test_retrain_cooldown():
    p = policy(retrain={"cooldown_windows": 5})
    assert len(step(p, 2, psi_finding(2, 0.4, "x0"))[1]) == 1
    # A new critical feature within the cooldown: alert yes, retrain no (and it is not kept for later).
    alerts, retrains = step(p, 6, psi_finding(6, 0.4, "x1"))
    assert len(alerts) == 1 and retrains == []
    assert p.state.pending_critical == []
    # At the cooldown boundary (7 - 2 >= 5) a new critical drift requests again.
    alerts, retrains = step(p, 7, psi_finding(7, 0.4, "x2"))
    assert len(alerts) == 1 and len(retrains) == 1
    assert retrains[0]["drifted_features"] == ["x0", "x1", "x2"]
    assert p.state.last_retrain_window == 7


def test_retrain_cooldown_counts_whole_windows_when_windows_slide():
    # slide 4: a window is 4 panes, evaluated (and indexed) every pane, so 2 windows are 8 panes.
    p = policy(window_size=1000, window={"slide": 4}, retrain={"cooldown_windows": 2})
    assert len(step(p, 3, psi_finding(3, 0.4, "x0"))[1]) == 1
    assert step(p, 10, psi_finding(10, 0.4, "x1"))[1] == []
    assert len(step(p, 11, psi_finding(11, 0.4, "x2"))[1]) == 1


def test_retrain_on_critical_prediction_drift():
    p = policy(retrain={"min_critical_features": 3})
    _, retrains = step(p, 1, psi_finding(1, 0.5, kind="prediction_drift"))
    assert len(retrains) == 1
    assert retrains[0]["drifted_features"] == []
    assert "prediction_drift/psi/prediction_score" in retrains[0]["reason"]


def test_min_critical_features():
    p = policy(retrain={"min_critical_features": 2, "on_critical": False})
    assert step(p, 1, psi_finding(1, 0.5, "x0"))[1] == []
    assert step(p, 2, psi_finding(2, 0.5, kind="prediction_drift"))[1] == []  # on_critical off
    _, retrains = step(p, 3, psi_finding(3, 0.5, "x1"), psi_finding(3, 0.5, "x2"))
    assert len(retrains) == 1
    assert len(retrains[0]["alert_ids"]) == 2


def test_retrain_disabled():
    p = policy(retrain={"enabled": False})
    alerts, retrains = step(p, 1, psi_finding(1, 0.5, "x0"))
    assert len(alerts) == 1 and retrains == []


def test_retrain_request_id_is_deterministic():
    f = [psi_finding(3, 0.4, "x0"), psi_finding(3, 0.4, "x1")]
    r1 = step(policy(), 3, *f)[1][0]
    r2 = step(policy(), 3, *reversed(f))[1][0]
    assert r1["request_id"] == r2["request_id"]
    assert sorted(r1["alert_ids"]) == sorted(r2["alert_ids"])


def test_a_time_windows_retrain_request_does_not_depend_on_batching():
    # A stream detector's critical alert found at an event of a later (still open) time window,
    # in the same batch as events that close an earlier one, waits for its own window: credited
    # to the earlier one, the request's window (its id, its data) depended on the batching.
    import numpy as np

    from streamproc.config import MonitorConfig
    from streamproc.decode import PredictionBatch
    from streamproc.monitor import ModelMonitor

    cfg = MonitorConfig.model_validate({"warmup_size": 500, "window": {"kind": "time", "seconds": 100,
                                                                         "allowed_lateness": 0, "min_events": 10}})
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.normal(0, 1, 1200), rng.normal(2, 1, 800)])  # the score shifts at event 1200
    x = rng.normal(0, 1, 2000)
    events = [(f"e{i}", 1_000_000.0 + i, {"x": float(x[i])}, float(scores[i])) for i in range(2000)]

    def requests(size: int) -> list[tuple]:
        mon = ModelMonitor("m", "v", cfg)
        out = []
        for start in [0] + list(range(500, 2000, size)):
            rows = events[start:500] if start == 0 else events[start:start + size]
            out += mon.update(PredictionBatch("m", "v", [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                              [r[3] for r in rows], [None] * len(rows))).retrains
        return [(q["data_window"]["index"], q["request_id"], q["alert_ids"]) for q in out]

    one = requests(1)
    assert len(one) == 1 and one[0][0] == 10012  # the window the shift starts in
    assert requests(1500) == requests(37) == one


def test_a_retrain_request_names_only_the_alerts_that_caused_it():
    # A critical data-quality alert of the same window never causes a retrain: not in alert_ids
    # nor in the reason. With on_critical off, neither is a critical prediction drift.
    quality = Finding("data_quality", "missing_rate", "feature", "x1", 0.5, 0.2, "critical", win(3))
    score = psi_finding(3, 0.4, "x9", kind="prediction_drift")
    p = policy()
    alerts, (request,) = step(p, 3, psi_finding(3, 0.4, "x0"), quality, score)
    by_type = {a["type"]: a["alert_id"] for a in alerts}
    assert request["alert_ids"] == [by_type["data_drift"], by_type["prediction_drift"]]
    assert "data_quality" not in request["reason"] and request["reason"].startswith("2 critical")
    p = policy(retrain={"on_critical": False})
    alerts, (request,) = step(p, 3, psi_finding(3, 0.4, "x0"), quality, score)
    assert request["alert_ids"] == [a["alert_id"] for a in alerts if a["type"] == "data_drift"]


def test_a_critical_swing_to_the_other_side_of_the_baseline_is_a_new_drift_a_small_one_is_not():
    p = policy(window_size=1000)
    up = Finding("prediction_drift", "adwin", "prediction_score", None, 1.0, 0.5, "critical", win(0), position=100)
    assert len(alerts_of(p, up)) == 1
    settling = Finding("prediction_drift", "adwin", "prediction_score", None, -0.11, 0.1, "warning", win(2), position=2100)
    assert alerts_of(p, settling) == []
    down = Finding("prediction_drift", "adwin", "prediction_score", None, -1.0, 0.5, "critical", win(4), position=4100)
    (a,) = alerts_of(p, down)
    assert a["statistic"] == -1.0
    # Readings away on the first drift's side no longer keep a drift going: it is the other side's now.
    assert alerts_of(p, *[level(5000 + 1000 * w, False) for w in range(3)]) == []
    assert p.state.stream_active == {}


def test_a_new_reference_ends_the_score_drifts_of_the_old_one():
    p = policy(window_size=1000)
    assert len(alerts_of(p, stream_finding(100))) == 1
    p.end_stream_drifts("prediction_drift")
    assert len(alerts_of(p, stream_finding(1200))) == 1
