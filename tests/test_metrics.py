"""The worker's metrics code without a broker: batches of messages through ``MonitorWorker``'s
processing (the engine, the real decoders), then what ``/metrics`` would show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import load_config
from streamproc.metrics import Metrics
from streamproc.decode import decode_outcomes, decode_predictions
from streamproc.synth import Drift, ModelStream
from streamproc.worker import MonitorWorker

CONFIG = """
worker: {route: direct, window_size: 500, warmup_size: 1000}
defaults:
  concept: {join: always, warmup: 200}
"""


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: Optional[bytes] = None
    timestamp: Optional[int] = None


class Producer:
    """Records what would be sent; the worker's futures are not awaited here."""

    def __init__(self):
        self.sent: list[tuple[str, dict]] = []

    def send(self, topic, value, key=None):
        self.sent.append((topic, orjson.loads(value)))


def samples(metrics: Metrics, name: str) -> dict[tuple, float]:
    """{(model_id, model_version, feature, detector): value} of one gauge, from the rendered text."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(s.labels[k] for k in ("model_id", "model_version", "feature", "detector"))] = s.value
    return out


def psi_samples(metrics: Metrics, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name:
                out[(s.labels["model_id"], s.labels["model_version"], s.labels["feature"])] = s.value
    return out


@pytest.fixture
def worker(tmp_path):
    path = tmp_path / "streamproc.yaml"
    path.write_text(CONFIG)
    w = MonitorWorker(load_config(path, environ={}))
    w.producer = Producer()
    return w


def messages(topic: str, payloads: list[dict], start: int = 0) -> list[Msg]:
    return [Msg(topic, 0, start + i, orjson.dumps(p)) for i, p in enumerate(payloads)]


def test_statistics_and_thresholds_of_a_closed_window(worker):
    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=41).events(1500))
    for i in range(1000, 1500):  # the first window after warmup
        if i % 4 == 0:
            events[i]["features"]["x2"] = None  # 125 of 500: 25 % missing
        if i % 50 == 3:
            events[i]["features"]["c0"] = "unheard-of"  # 10 of 500: 2 % unseen
    msgs = messages("predictions", events)
    worker._process_predictions(msgs[:1000])
    assert samples(worker.metrics, "streamproc_statistic") == {}  # warming up: nothing computed yet
    worker._process_predictions(msgs[1000:1400])
    stats = samples(worker.metrics, "streamproc_statistic")
    # Only the score's stream detectors so far: no window has closed.
    assert set(stats) == {("m", "default", "prediction.score", "adwin"), ("m", "default", "prediction.score", "page_hinkley")}
    worker._process_predictions(msgs[1400:])

    stats = samples(worker.metrics, "streamproc_statistic")
    limits = samples(worker.metrics, "streamproc_statistic_threshold")
    assert set(stats) == set(limits)
    key = lambda feature, detector: ("m", "default", feature, detector)  # noqa: E731
    assert stats[key("x2", "missing_rate")] == 125 / 500
    assert stats[key("x0", "missing_rate")] == 0.0
    assert stats[key("c0", "missing_rate")] == 0.0
    assert stats[key("c0", "unseen_categories")] == 10 / 500
    assert key("x0", "unseen_categories") not in stats  # numeric features have no categories
    for feature in ("x0", "x1", "x2", "c0"):
        # A reference with nothing missing: at least the 5-point minimum increase is needed.
        assert 0.05 <= limits[key(feature, "missing_rate")] < 0.1
    # The alerts sent carry the same statistic and threshold (rounded to 6 places).
    alerts = {(a["feature"], a["detector"]): a for topic, a in worker.producer.sent if topic == "drift-alerts"}
    a = alerts[("x2", "missing_rate")]
    assert (a["statistic"], a["threshold"]) == pytest.approx((stats[key("x2", "missing_rate")],
                                                              limits[key("x2", "missing_rate")]), abs=1e-6)
    assert ("c0", "unseen_categories") not in alerts  # 2 %: under the 5-point minimum increase
    assert stats[key("c0", "unseen_categories")] < limits[key("c0", "unseen_categories")]
    # psi: per feature and for the prediction, equal to streamproc_psi and its threshold.
    psi, psi_limits = psi_samples(worker.metrics, "streamproc_psi"), psi_samples(worker.metrics, "streamproc_psi_threshold")
    assert set(psi) == {("m", "default", f) for f in ("x0", "x1", "x2", "c0", "prediction.score", "prediction.label")}
    for labels, value in psi.items():
        assert stats[(*labels, "psi")] == value and limits[(*labels, "psi")] == psi_limits[labels]
    # The score's stream detectors: a stationary score stays under its thresholds.
    assert 0 <= stats[key("prediction.score", "adwin")] < limits[key("prediction.score", "adwin")] == 0.1
    assert 0 <= stats[key("prediction.score", "page_hinkley")] < limits[key("prediction.score", "page_hinkley")]
    assert limits[key("prediction.score", "page_hinkley")] == 40.0  # page_hinkley.threshold_sigma


def test_error_signal_statistics_and_forgetting_the_model(worker):
    events = list(ModelStream("m", n_numeric=2, n_categorical=1, seed=42).events(1200))
    worker._process_predictions(messages("predictions", events))
    # Outcomes: every 10th prediction wrong for the first 600, then every other one.
    outcomes = []
    for i, e in enumerate(events):
        wrong = i % 10 == 0 if i < 600 else i % 2 == 0
        truth = e["prediction"]["label"] if not wrong else ("0" if e["prediction"]["label"] == "1" else "1")
        outcomes.append({"event_id": e["event_id"], "model_id": "m", "ts": e["ts"] + 60, "label": truth})
    worker._process_outcomes(messages("outcomes", outcomes[:150]))
    assert ("m", "default", "error", "adwin") not in samples(worker.metrics, "streamproc_statistic")  # error warmup
    worker._process_outcomes(messages("outcomes", outcomes[150:], start=150))
    stats = samples(worker.metrics, "streamproc_statistic")
    limits = samples(worker.metrics, "streamproc_statistic_threshold")
    base_mean, base_std = worker.engine.monitors[("m", "default")].errors.baseline
    assert base_mean == pytest.approx(50 / 491)  # a rate's baseline waits for 50 wrong (the 50th: outcome 491)
    # ADWIN's window is the errors after the baseline (34 % wrong) or, after a cut, a more recent
    # part of them (about as many or more wrong): in baseline sigmas, signed, the error rose.
    assert stats[("m", "default", "error", "adwin")] >= (0.33 - base_mean) / base_std
    assert limits[("m", "default", "error", "adwin")] == 0.1
    assert limits[("m", "default", "error", "page_hinkley")] == 40.0

    other = list(ModelStream("other", n_numeric=2, n_categorical=1, seed=43).events(1500))
    worker._process_predictions(messages("predictions", other, start=1200))
    assert {k[0] for k in samples(worker.metrics, "streamproc_statistic")} == {"m", "other"}
    worker.metrics.forget_model("m")
    for name in ("streamproc_statistic", "streamproc_statistic_threshold"):
        assert {k[0] for k in samples(worker.metrics, name)} == {"other"}, name
    assert not [k for k in worker.metrics.statistic.series if k[0] == "m"]


def test_statistic_series_are_capped():
    metrics = Metrics(max_series=3)
    for feature in ("a", "b", "c", "d", "e"):
        metrics.statistic.labels("m", "v", feature, "psi").set(1.0)
    assert len(samples(metrics, "streamproc_statistic")) == 3
    dropped = {s.labels["metric"]: s.value for f in text_string_to_metric_families(metrics.render().decode())
               for s in f.samples if s.name == "streamproc_metric_series_dropped_total"}
    assert dropped == {"streamproc_statistic": 2.0}


def test_statistics_rows_keep_their_series_until_the_model_is_forgotten():
    metrics = Metrics(max_series=8)
    window = [("x", "psi", 0.1, 0.2), ("x", "missing_rate", 0.0, 0.05)]
    metrics.set_statistics("m", "v", window)
    metrics.set_statistics("m", "v", [("x", "psi", 0.3, 0.2), ("x", "missing_rate", 0.01, 0.05)])
    metrics.set_statistics("m", "v", [("prediction.score", "adwin", 1.5, 0.5)])
    values = samples(metrics, "streamproc_statistic")
    assert values == {("m", "v", "x", "psi"): 0.3, ("m", "v", "x", "missing_rate"): 0.01,
                      ("m", "v", "prediction.score", "adwin"): 1.5}
    assert samples(metrics, "streamproc_statistic_threshold")[("m", "v", "x", "psi")] == 0.2
    # Other rows (a new reference's features) get their own series.
    metrics.set_statistics("m", "v", [("y", "psi", 0.7, 0.2)])
    assert samples(metrics, "streamproc_statistic")[("m", "v", "y", "psi")] == 0.7
    # Forgotten, then seen again: the series are exported again, not set on removed children.
    metrics.forget_model("m")
    assert samples(metrics, "streamproc_statistic") == {}
    metrics.set_statistics("m", "v", [("y", "psi", 0.9, 0.2)])
    assert samples(metrics, "streamproc_statistic") == {("m", "v", "y", "psi"): 0.9}


def test_statistics_rows_over_the_cap_get_their_series_once_there_is_room():
    metrics = Metrics(max_series=2)
    metrics.set_statistics("a", "v", [("x", "psi", 1.0, 0.2), ("y", "psi", 1.0, 0.2)])
    metrics.set_statistics("b", "v", [("x", "psi", 2.0, 0.2)])
    assert ("b", "v", "x", "psi") not in samples(metrics, "streamproc_statistic")
    metrics.forget_model("a")
    metrics.set_statistics("b", "v", [("x", "psi", 3.0, 0.2)])
    assert samples(metrics, "streamproc_statistic") == {("b", "v", "x", "psi"): 3.0}


def test_latest_values_are_exported_as_prometheus_client_exports_a_gauge():
    """The latest-value gauges are dicts exported at scrape time (streamproc.bounded_series): the
    same exposition as prometheus_client's Gauge with the same sets."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    from streamproc.bounded_series import LatestGauge

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    latest = LatestGauge("streamproc_x", "A help text.", ["model_id", "feature"], 10,
                         Counter("d", "", ["metric"], registry=CollectorRegistry()), ours)
    gauge = Gauge("streamproc_x", "A help text.", ["model_id", "feature"], registry=theirs)
    for model, feature, value in [("m", "f", 1.5), ("m", "g\"q", 2), ("n", "f", -0.25), ("m", "f", 3), ("n", "h", 1e-12)]:
        latest.set((model, feature), value)
        gauge.labels(model, feature).set(value)
    latest.remove_matching(model_id="n", feature="h")
    gauge.remove("n", "h")
    assert generate_latest(ours) == generate_latest(theirs)
    assert b'streamproc_x{feature="g\\"q",model_id="m"} 2.0' in generate_latest(ours)
    # A key that prometheus_client would refuse is refused, not exported half-labelled.
    for bad in [("m",), ("m", "f", "x"), (7, "f")]:
        with pytest.raises(ValueError, match="are not 2 strings"):
            latest.set(bad, 1.0)
    assert generate_latest(ours) == generate_latest(theirs)


def test_a_published_reference_drops_the_window_statistics_of_the_one_before(worker):
    # A new reference (here without x2) starts fresh windows, perhaps of other features: the
    # latest window's series of the reference before go until its own windows set theirs, and
    # a feature it lacks is never exported again. The stream detectors' series stay.
    import asyncio

    from streamproc.profile import build_reference

    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=44).events(2500))
    worker._process_predictions(messages("predictions", events[:1500]))
    assert ("m", "default", "x2") in psi_samples(worker.metrics, "streamproc_psi")
    assert ("m", "default", "x2", "missing_rate") in samples(worker.metrics, "streamproc_statistic")
    head = events[:1000]
    ref = build_reference("m", "default", [{k: v for k, v in e["features"].items() if k != "x2"} for e in head],
                          [e["prediction"]["score"] for e in head], [e["prediction"]["label"] for e in head])

    class References:  # the references topic, as the worker's consumer of it reads it
        def __init__(self, values):
            self.batches = [{"references": [Msg("model-references", 0, 0, orjson.dumps(v)) for v in values]}]

        async def getmany(self, timeout_ms=0):
            return self.batches.pop(0) if self.batches else {}

    worker.ref_consumer = References([ref.to_dict()])
    assert asyncio.run(worker._read_references()) == 1
    assert not [k for k in psi_samples(worker.metrics, "streamproc_psi") if k[0] == "m"]
    assert [k for k in worker.metrics.score_quantile.series if k[0] == "m"] == []
    assert {k[3] for k in samples(worker.metrics, "streamproc_statistic")} == {"adwin", "page_hinkley"}
    mon = worker.engine.monitors[("m", "default")]
    assert mon.latest == {} and mon.quantiles == {}
    worker._process_predictions(messages("predictions", events[1500:], start=1500))
    psi = psi_samples(worker.metrics, "streamproc_psi")
    assert {k[2] for k in psi} == {"x0", "x1", "c0", "prediction.score", "prediction.label"}
    assert set(mon.quantiles) == {"x0", "x1", "prediction.score"}
    assert len([k for k in worker.metrics.score_quantile.series if k[0] == "m"]) == 5


def test_a_window_without_a_score_exports_nan_score_quantiles(worker):
    # Not the quantiles of the window before: a window whose predictions carried labels only.
    import math

    events = list(ModelStream("m", n_numeric=2, n_categorical=1, seed=45).events(2000))
    worker._process_predictions(messages("predictions", events[:1500]))
    before = {k: v for k, v in worker.metrics.score_quantile.series.items() if k[0] == "m"}
    assert len(before) == 5
    for e in events[1500:]:
        e["prediction"] = {"label": e["prediction"]["label"]}
    worker._process_predictions(messages("predictions", events[1500:], start=1500))
    text = worker.metrics.render().decode()
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "streamproc_prediction_score_quantile" and s.labels["model_id"] == "m"]
    assert len(values) == 5 and all(math.isnan(v) for v in values)


def _series(metrics: Metrics, name: str) -> dict:
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(metrics.render().decode())
            for s in f.samples if s.name == name}


def test_a_restored_model_exports_its_latest_statistics_and_drifts_again(worker):
    # A rebalance or a rewind forgets every model's series and reloads the models: those series
    # (active drifts among them) came back only at each model's next window or alert.
    import asyncio

    from aiokafka import TopicPartition

    from .test_checkpoint import load_from

    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=46, drift=Drift(1000, ("x0",), 2.0)).events(2000))
    worker._process_predictions(messages("predictions", events))
    names = ("streamproc_drift_active", "streamproc_psi", "streamproc_statistic", "streamproc_prediction_score_quantile")
    before = {name: _series(worker.metrics, name) for name in names}
    assert before["streamproc_drift_active"] and before["streamproc_psi"]
    records = worker.engine.export_dirty({"predictions:0": 2000})
    worker._forget_models()
    worker._last_gauges = 0.0
    asyncio.run(worker._update_gauges())
    assert all(not _series(worker.metrics, name) for name in names)
    assert _series(worker.metrics, "streamproc_models") == {(): 0.0}

    load_from(worker, records)
    asyncio.run(worker._assigned({TopicPartition("predictions", 0)}))
    worker.engine.thaw("m")  # (the direct route loads models packed: its next input unpacks it)
    worker._last_gauges = 0.0
    asyncio.run(worker._update_gauges())
    assert {name: _series(worker.metrics, name) for name in names} == before
    assert _series(worker.metrics, "streamproc_models") == {(): 1.0}


def test_state_bytes_follow_the_models_held_after_a_load_and_a_hand_over(worker):
    # Set only by checkpoints, the gauge kept the bytes of models handed over, and after a load
    # showed nothing of the restored models until the next checkpoint.
    import asyncio

    from aiokafka import TopicPartition

    from .test_checkpoint import load_from

    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=48).events(600))
    worker._process_predictions(messages("predictions", events))
    records = worker.engine.export_dirty({"predictions:0": 600})
    worker._forget_models()
    load_from(worker, records)
    asyncio.run(worker._assigned({TopicPartition("predictions", 0)}))
    worker._last_gauges = 0.0
    asyncio.run(worker._update_gauges())
    assert _series(worker.metrics, "streamproc_state_bytes") == {(): float(sum(len(r) for r in records.values()))} != {(): 0.0}

    worker._forget_models()  # its partitions went to another worker
    worker._last_gauges = 0.0
    asyncio.run(worker._update_gauges())
    assert _series(worker.metrics, "streamproc_state_bytes") == {(): 0.0}


def test_outcome_joins_count_what_this_worker_joined_not_the_models_history(worker):
    # A joiner's counts travel with its model: exported whole, a model moving between workers
    # was counted on each (and again on coming back).
    from streamproc.engine import MonitorEngine

    events = list(ModelStream("m", n_numeric=2, n_categorical=1, seed=47).events(400))
    outcomes = [{"event_id": e["event_id"], "model_id": "m", "ts": e["ts"] + 1, "label": "1"} for e in events]
    elsewhere = MonitorEngine(worker.config)  # the worker that held the model before
    elsewhere.process(decode_predictions([orjson.dumps(e) for e in events])[0])
    elsewhere.process_outcomes(decode_outcomes([orjson.dumps(o) for o in outcomes[:300]])[0])
    worker.engine.import_state(elsewhere.export_dirty({"predictions:0": 400}))
    worker._process_outcomes(messages("outcomes", outcomes[300:]))
    joins = {s.labels["result"]: s.value for f in text_string_to_metric_families(worker.metrics.render().decode())
             for s in f.samples if s.name == "streamproc_outcome_joins_total"}
    assert joins == {"matched": 100.0, "unmatched": 0.0, "expired": 0.0}


def test_series_dropped_at_the_cap_are_counted_once_each_under_their_exported_name():
    # A label combination refused at every window close is one combination; and a counter is
    # exported as <name>_total, which is what the dropped counter's metric label must say.
    metrics = Metrics(max_series=1)
    for _ in range(100):
        metrics.psi.set(("m", "v", "x0"), 0.1)
        metrics.psi.set(("m", "v", "x1"), 0.2)
        metrics.events.labels("m", "v").inc()
        metrics.events.labels("m", "w").inc()
    dropped = {s.labels["metric"]: s.value for f in text_string_to_metric_families(metrics.render().decode())
               for s in f.samples if s.name == "streamproc_metric_series_dropped_total"}
    assert dropped == {"streamproc_psi": 1.0, "streamproc_events_consumed_total": 1.0}


def test_late_events_count_what_this_worker_saw_late():
    # As outcome joins: the monitor's count is its model's history, the counter this worker's.
    cfg = load_config(None, overrides={"route": "direct", "window_size": 100, "warmup_size": 200}, environ={})
    cfg.defaults.window = cfg.defaults.window.model_copy(update={"kind": "time", "seconds": 10, "allowed_lateness": 0,
                                                                 "min_events": 1})
    events = list(ModelStream("m", n_numeric=2, seed=48, rate=10).events(400))  # 10 events a second
    late = lambda i: dict(events[i], event_id=f"late{i}")  # noqa: E731  (a copy of an early event, sent after)

    def late_total(w: MonitorWorker) -> float:
        return sum(s.value for f in text_string_to_metric_families(w.metrics.render().decode())
                   for s in f.samples if s.name == "streamproc_late_events_total")

    first = MonitorWorker(cfg)
    first.producer = Producer()
    first._process_predictions(messages("predictions", events[:350] + [late(210), late(220)]))
    assert first.engine.monitors[("m", "default")].late_events == 2 and late_total(first) == 2
    second = MonitorWorker(cfg)
    second.producer = Producer()
    second.engine.import_state(first.engine.export_dirty({"predictions:0": 352}))
    second._process_predictions(messages("predictions", events[350:] + [late(230)], start=352))
    assert second.engine.monitors[("m", "default")].late_events == 3 and late_total(second) == 1


@pytest.mark.parametrize("delivered", [True, False])
def test_status_counts_output_the_broker_acknowledged(worker, delivered):
    # A batch whose output failed is replayed after a rewind; counted at sending, its alerts and
    # dead letters were counted twice (and the demo, which waits until it has read as many
    # alerts as /status says were published, would wait for alerts that never come).
    import asyncio

    from aiokafka.errors import KafkaTimeoutError

    class Acks:
        async def send(self, topic, value, key=None):
            fut = asyncio.get_running_loop().create_future()
            if delivered:
                fut.set_result(None)
            else:
                fut.set_exception(KafkaTimeoutError())
            return fut

    worker.producer = Acks()
    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=49, drift=Drift(1000, ("x0",), 2.0)).events(2000))
    batch = messages("predictions", events) + [Msg("predictions", 0, 2000, b"not json")]

    async def apply():
        try:
            await worker._apply(batch, [])
        except KafkaTimeoutError:
            assert not delivered

    asyncio.run(apply())
    counts = worker.status()["published"]
    if delivered:
        assert counts["alerts"] >= 1 and counts["dead_letters"] == 1
    else:
        assert counts == {"alerts": 0, "retrain_requests": 0, "dead_letters": 0}


def test_expired_predictions_are_counted(tmp_path):
    # Predictions expire as later predictions arrive (too old, or over max_pending), not when
    # outcomes come: counted only around the outcomes, the expired series never moved.
    path = tmp_path / "streamproc.yaml"
    path.write_text("worker: {route: direct, window_size: 500, warmup_size: 1000, max_future_seconds: 5}\n"
                    "defaults:\n  concept: {join: always, warmup: 200, max_pending: 1000, ttl_seconds: 5}\n")
    w = MonitorWorker(load_config(path, environ={}))
    w.producer = Producer()
    events = list(ModelStream("m", n_numeric=2, seed=1).events(3000))  # 100 events a second of event time
    outcomes = [{"event_id": e["event_id"], "model_id": "m", "ts": e["ts"] + 1, "label": "1"} for e in events]
    for s in range(0, 3000, 500):
        w._process_predictions(messages("predictions", events[s:s + 500], s))
        w._process_outcomes(messages("outcomes", outcomes[s:s + 100], s))  # the first 100 of each 500 answered
    joiner = w.engine.joiners["m"]
    assert joiner.expired > 1000
    assert _series(w.metrics, "streamproc_outcome_joins_total") == {
        (("model_id", "m"), ("result", result)): getattr(joiner, result) for result in ("matched", "unmatched", "expired")}


def alert_counts(metrics: Metrics) -> dict[tuple, float]:
    """{(metric, model_id, type or None, severity or None): value} of the alert and retrain counters."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name in ("streamproc_alerts_total", "streamproc_retrain_requests_total"):
                out[(s.name, s.labels["model_id"], s.labels.get("type"), s.labels.get("severity"))] = s.value
    return out


def test_a_models_alert_series_are_at_0_before_its_first_alert(worker):
    """increase() counts only increments between two scrapes: a series created by its first
    alert, already at 1, counted nothing on the dashboards."""
    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=5, drift=Drift(1500, ("x0",), 2.0)).events(2500))
    msgs = messages("predictions", events)
    worker._process_predictions(msgs[:1000])  # warming up: no alert can have been published
    counts = alert_counts(worker.metrics)
    assert len(counts) == 8 + 1 and set(counts.values()) == {0.0}
    assert ("streamproc_alerts_total", "m", "data_drift", "critical") in counts
    assert ("streamproc_retrain_requests_total", "m", None, None) in counts
    worker._process_predictions(msgs[1000:])
    counts = alert_counts(worker.metrics)
    assert counts[("streamproc_alerts_total", "m", "data_drift", "critical")] >= 1
    assert counts[("streamproc_retrain_requests_total", "m", None, None)] >= 1
    assert len(counts) == 8 + 1


def test_alert_series_made_ahead_leave_half_of_max_series_to_real_alerts():
    metrics = Metrics(max_series=20)
    for model_id in ("a", "b", "c"):
        metrics.start_model(model_id)
    assert {key[0] for key in metrics.alerts.series} == {"a"}  # 8 of 20; 16 would be over half
    metrics.alerts.labels("c", "data_drift", "critical").inc()  # a real alert still finds room
    assert metrics.alerts.series[("c", "data_drift", "critical")]._value.get() == 1.0


def test_a_lasting_stream_drift_is_an_active_drift_until_it_ends(worker):
    """Stream-detector drifts last (stream_clear_windows); streamproc_drift_active and /status
    showed only the window statistics' drifts, and so no concept drift ever."""
    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=5).events(7000))
    for e in events[2000:4000]:  # the score shifts up, then comes back
        e["prediction"]["score"] = min(1.0, e["prediction"]["score"] + 0.35)
    msgs = messages("predictions", events)

    def active() -> set:
        out = set()
        for family in text_string_to_metric_families(worker.metrics.render().decode()):
            out |= {(s.labels["detector"], s.labels["feature"]) for s in family.samples if s.name == "streamproc_drift_active"}
        return out

    for i in range(0, 4000, 100):
        worker._process_predictions(msgs[i:i + 100])
    streams = {("adwin", "prediction_score"), ("page_hinkley", "prediction_score")}  # (feature or signal)
    assert streams <= active()
    shown = {(d["detector"], d["signal"]) for d in worker.status()["models"][0]["active_drift"]}
    assert {("adwin", "prediction_score"), ("page_hinkley", "prediction_score")} <= shown
    for i in range(4000, 7000, 100):
        worker._process_predictions(msgs[i:i + 100])
    assert not streams & active()
    assert not worker.engine.monitors[("m", "default")].policy.state.stream_active


def test_a_new_reference_from_the_topic_ends_the_exported_stream_drifts(worker):
    """A new reference ends the score's stream drifts; their series stayed at 1 until the
    model's next batch (never, without one), while /status showed none."""
    import asyncio

    from streamproc.profile import build_reference

    events = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=5).events(4000))
    for e in events[2000:]:
        e["prediction"]["score"] = min(1.0, e["prediction"]["score"] + 0.35)
    msgs = messages("predictions", events)
    for i in range(0, 4000, 100):
        worker._process_predictions(msgs[i:i + 100])

    def stream_drifts() -> set:
        return {s.labels["detector"] for family in text_string_to_metric_families(worker.metrics.render().decode())
                for s in family.samples if s.name == "streamproc_drift_active"} & {"adwin", "page_hinkley"}

    assert stream_drifts() == {"adwin", "page_hinkley"}
    reference = build_reference("m", "default", [e["features"] for e in events[2000:3000]],
                                [e["prediction"]["score"] for e in events[2000:3000]], source="file")

    class References:
        async def getmany(self, timeout_ms=0):
            return {("model-references", 0): [Msg("model-references", 0, 0, orjson.dumps(reference.to_dict()))]}

    worker.ref_consumer = References()
    assert asyncio.run(worker._read_references()) == 1
    assert stream_drifts() == set()
