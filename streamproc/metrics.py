"""Prometheus metrics of a worker, in a registry of its own (so tests can run several).

Names are a contract (documented in the README): prefix ``streamproc_``, counters end in
``_total``, durations in ``_seconds``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "dead_letter_reason", "Bounded"]

DEFAULT_MAX_SERIES = 10_000


class _NoSeries:
    """Stands in for a series that was not created because its metric is at its cap."""

    class _Value:
        @staticmethod
        def get() -> float:
            return 0.0

    _value = _Value()

    def inc(self, *_a, **_k) -> None:
        pass

    def set(self, *_a, **_k) -> None:
        pass

    def observe(self, *_a, **_k) -> None:
        pass


class Bounded:
    """A labelled metric with at most ``cap`` series: label values come from the data (model
    ids, feature names), so a flood of new ones must not make /metrics unbounded. Series past
    the cap are not created; ``streamproc_metric_series_dropped_total{metric}`` counts them.

    >>> from prometheus_client import CollectorRegistry, Gauge, Counter
    >>> r = CollectorRegistry()
    >>> dropped = Counter("dropped", "", ["metric"], registry=r)
    >>> g = Bounded(Gauge("g", "", ["model_id"], registry=r), 2, dropped)
    >>> for m in "abc": g.labels(m).set(1)
    >>> len(g.series), dropped.labels("g")._value.get()
    (2, 1.0)
    """

    def __init__(self, metric, cap: int, dropped):
        self.metric = metric
        self.cap = cap
        self.dropped = dropped
        self.series: dict[tuple, object] = {}  # label values -> the metric's child (labels() is not free)
        # Series by the value of the first label (the model id): removing one model's series
        # must not scan every model's.
        self.by_first: dict[str, set[tuple]] = {}

    def labels(self, *values):
        key = tuple(map(str, values))
        child = self.series.get(key)
        if child is None:
            if len(self.series) >= self.cap:
                self.dropped.labels(self.metric._name).inc()
                return _NoSeries()
            child = self.series[key] = self.metric.labels(*key)
            self.by_first.setdefault(key[0], set()).add(key)
        return child

    def remove_matching(self, **labels) -> None:
        """Remove the series whose labels include these values (e.g. a model that moved away).

        >>> from prometheus_client import CollectorRegistry, Gauge, Counter
        >>> r = CollectorRegistry()
        >>> g = Bounded(Gauge("g", "", ["model_id", "feature"], registry=r), 10, Counter("d", "", ["metric"], registry=r))
        >>> for m, f in [("a", "x"), ("a", "y"), ("b", "x")]: g.labels(m, f).set(1)
        >>> g.remove_matching(model_id="a", feature="y"); g.remove_matching(feature="x", model_id="b")
        >>> sorted(g.series), g.by_first
        ([('a', 'x')], {'a': {('a', 'x')}})
        """
        names = self.metric._labelnames
        first = labels.get(names[0]) if names else None
        candidates = self.by_first.get(str(first), ()) if first is not None else list(self.series)
        for key in [k for k in candidates if all(k[names.index(n)] == str(v) for n, v in labels.items())]:
            self.metric.remove(*key)
            del self.series[key]
            keys = self.by_first[key[0]]
            keys.discard(key)
            if not keys:
                del self.by_first[key[0]]

    def clear(self) -> None:
        self.metric.clear()
        self.series.clear()
        self.by_first.clear()


def dead_letter_reason(reason: str) -> str:
    """The bounded label value for a dead-letter reason text."""
    if reason.startswith("not valid JSON"):
        return "invalid_json"
    if reason.startswith("empty message"):
        return "empty"
    if reason.startswith("too large"):
        return "too_large"
    if reason.startswith("invalid reference"):
        return "invalid_reference"
    if reason.startswith("too many models"):
        return "too_many_models"
    return "invalid_event"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_series: int = DEFAULT_MAX_SERIES):
        r = self.registry = registry or CollectorRegistry()
        self.series_dropped = Counter(
            "streamproc_metric_series_dropped_total", "Label combinations not exported because their metric was at its "
            "cap of series (worker.max_series).", ["metric"], registry=r)

        def bounded(metric):
            return Bounded(metric, max_series, self.series_dropped)
        self.events = bounded(Counter(
            "streamproc_events_consumed_total", "Valid prediction events applied, per model version.",
            ["model_id", "model_version"], registry=r))
        self.outcomes = bounded(Counter(
            "streamproc_outcomes_consumed_total", "Valid outcome events consumed, per model.", ["model_id"], registry=r))
        self.dead_letters = Counter(
            "streamproc_events_dead_lettered_total", "Messages sent to the dead-letter topic, per source topic and reason.",
            ["topic", "reason"], registry=r)
        self.alerts = bounded(Counter(
            "streamproc_alerts_total", "Alerts published, per model, type and severity.",
            ["model_id", "type", "severity"], registry=r))
        self.retrains = bounded(Counter(
            "streamproc_retrain_requests_total", "Retrain requests published, per model.", ["model_id"], registry=r))
        self.psi = bounded(Gauge(
            "streamproc_psi", "PSI of the latest closed window, per model version and feature "
            "(prediction.score and prediction.label for the prediction).",
            ["model_id", "model_version", "feature"], registry=r))
        self.psi_threshold = bounded(Gauge(
            "streamproc_psi_threshold", "Warning threshold the latest PSI was compared with (sample-size corrected).",
            ["model_id", "model_version", "feature"], registry=r))
        self.statistic = bounded(Gauge(
            "streamproc_statistic", "Latest value of each statistic the monitor computes, per model version, feature "
            "and detector: psi (per feature, prediction.score, prediction.label), missing_rate and unseen_categories "
            "(per feature) of the latest closed window; adwin and page_hinkley on prediction.score and error, after "
            "the latest batch (in baseline standard deviations).",
            ["model_id", "model_version", "feature", "detector"], registry=r))
        self.statistic_threshold = bounded(Gauge(
            "streamproc_statistic_threshold", "Warning threshold streamproc_statistic is compared with, per model "
            "version, feature and detector.", ["model_id", "model_version", "feature", "detector"], registry=r))
        self.windows = bounded(Counter(
            "streamproc_windows_closed_total", "Tumbling windows closed and evaluated, per model version.",
            ["model_id", "model_version"], registry=r))
        self.joins = bounded(Counter(
            "streamproc_outcome_joins_total", "Outcomes joined to their prediction (matched), outcomes with no waiting "
            "prediction (unmatched), and predictions dropped unanswered after the TTL or the pending cap (expired).",
            ["model_id", "result"], registry=r))
        self.error_rate = bounded(Gauge(
            "streamproc_error_rate", "Error over the last 1000 labelled predictions: misclassification rate for labels "
            "(1 - accuracy), mean absolute error for values.", ["model_id", "model_version"], registry=r))
        self.late_events = bounded(Counter(
            "streamproc_late_events_total", "Events later than the allowed lateness of event-time windows "
            "(added to the oldest open window, not dropped).", ["model_id", "model_version"], registry=r))
        self.score_quantile = bounded(Gauge(
            "streamproc_prediction_score_quantile", "Quantiles of the prediction score in the latest closed window.",
            ["model_id", "model_version", "quantile"], registry=r))
        self.checkpoints = Counter(
            "streamproc_checkpoints_total", "Checkpoints: changed state saved to the state topic, then input offsets committed.",
            registry=r)
        self.state_bytes = Gauge(
            "streamproc_checkpoint_bytes", "Bytes of state written by the latest checkpoint (changed models only).", registry=r)
        self.state_too_large = Counter(
            "streamproc_state_too_large_total", "Model states not saved at a checkpoint because their record was over "
            "the state topic's limit (16 MiB); the worker logs which model.", registry=r)
        self.state_unsaved = Gauge(
            "streamproc_state_unsaved_models", "Models whose latest state was over the state topic's limit (16 MiB) "
            "and is not saved (until one of theirs fits again).", registry=r)
        self.stalled = Gauge(
            "streamproc_input_stalled_seconds", "Seconds since a consumer of this worker last made progress or had "
            "nothing waiting: monitor (applying predictions and outcomes), router (forwarding them; route: repartition).",
            ["consumer"], registry=r)
        self.versions_retired = Counter(
            "streamproc_versions_retired_total", "Model versions retired: no events for retire_version_seconds while "
            "another version of their model had some.", registry=r)
        self.models = Gauge("streamproc_models", "Model versions monitored by this worker.", registry=r)
        self.warmup_bytes = Gauge(
            "streamproc_warmup_memory_bytes", "Memory held by the warm-ups of model versions without a reference "
            "(estimated; bounded by worker.warmup_memory_mb).", registry=r)
        self.warmups_thinned = Counter(
            "streamproc_warmups_thinned_total", "Warm-ups thinned to stay within worker.warmup_memory_mb (or a model's "
            "within 8 MiB, so its state fits a record), once per model version each time (it then keeps every 2nd, "
            "4th, ... of its events).", registry=r)
        self.features = Gauge("streamproc_features", "Features monitored by this worker, summed over its model versions.",
                              registry=r)
        self.state_bytes_total = Gauge(
            "streamproc_state_bytes", "Bytes of this worker's monitoring state: the latest saved record of each model "
            "it holds (compressed, as on the state topic).", registry=r)
        self.lag = bounded(Gauge(
            "streamproc_consumer_lag_messages", "Messages between a partition's consumed position and its high "
            "watermark, per input topic and partition this worker owns.", ["topic", "partition"], registry=r))
        self.drift_active = bounded(Gauge(
            "streamproc_drift_active", "1 while a drift is active (alerted and not yet cleared), per model version, type, "
            "detector, feature (the signal for prediction drift) and severity.",
            ["model_id", "model_version", "type", "detector", "feature", "severity"], registry=r))
        self.event_time_to_alert = Histogram(
            "streamproc_event_time_to_alert_seconds", "From the event time of the last event of an alert's window to "
            "the alert being published (includes how late the events reached Kafka).",
            buckets=(0.5, 1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400), registry=r)
        self.alert_latency = Histogram(
            "streamproc_alert_latency_seconds", "From the oldest record of the batch that raised an alert reaching the "
            "input topic (its Kafka timestamp) to the alert acknowledged on the alerts topic; an upper bound on the "
            "latency from the event that closed the window.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.ready = Gauge("streamproc_ready", "1 when the worker is connected and consuming, else 0.", registry=r)
        self.batch_seconds = Histogram(
            "streamproc_batch_duration_seconds", "Time to decode, process, publish and commit one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.checkpoint_seconds = Histogram(
            "streamproc_checkpoint_export_seconds", "Time the monitoring loop spent exporting the changed models' state "
            "for one checkpoint (checkpoints are paced so that this stays within 10% of its time).",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.batch_size = Histogram(
            "streamproc_batch_size_messages", "Messages per consumed batch.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000), registry=r)
        # model id -> (version, kind) -> (the (feature, detector) rows, their series): see set_statistics
        self._statistic_series: dict[str, dict[tuple[str, str], tuple[list, list]]] = {}

    def set_statistics(self, model_id: str, version: str, kind: str, rows) -> None:
        """``streamproc_statistic`` and its threshold from (feature, detector, value, threshold)
        rows of one kind (a closed window's, a stream detector's). A window sets dozens of
        series; their children are looked up once per model version, kind and set of rows
        (``labels()`` costs more than ``set()``), and again after ``forget_model``."""
        names = [(feature, detector) for feature, detector, _value, _limit in rows]
        per_model = self._statistic_series.setdefault(model_id, {})
        hit = per_model.get((version, kind))
        if hit is None or hit[0] != names:
            children = [(self.statistic.labels(model_id, version, f, d), self.statistic_threshold.labels(model_id, version, f, d))
                        for f, d in names]
            hit = (names, children)
            if not any(isinstance(c, _NoSeries) for pair in children for c in pair):  # over the cap: try again next time
                per_model[(version, kind)] = hit
        for (statistic, threshold), (_f, _d, value, limit) in zip(hit[1], rows):
            statistic.set(value)
            threshold.set(limit)

    def _latest_values(self) -> tuple:
        """The gauges of a model version's latest values (what goes with the model)."""
        return (self.psi, self.psi_threshold, self.statistic, self.statistic_threshold, self.error_rate,
                self.score_quantile, self.drift_active)

    def forget_model(self, model_id: str) -> None:
        """Drop the latest-value series of a model this worker no longer holds (counters stay)."""
        self._statistic_series.pop(model_id, None)
        for gauge in self._latest_values():
            gauge.remove_matching(model_id=model_id)

    def forget_version(self, model_id: str, version: str) -> None:
        """Drop every series of one retired model version, its counters too: versions come and
        go for as long as the worker runs, and each series held counts against ``max_series``
        (a version that comes back starts its counters from 0, which ``rate()`` takes as a reset)."""
        per_model = self._statistic_series.get(model_id, {})
        for kind_key in [k for k in per_model if k[0] == version]:
            del per_model[kind_key]
        for metric in (*self._latest_values(), self.events, self.windows, self.late_events):
            metric.remove_matching(model_id=model_id, model_version=version)

    @staticmethod
    def set_counter(counter, labels: tuple, total: float) -> None:
        """Advance a labelled counter to ``total`` (a cumulative count kept by the core)."""
        child = counter.labels(*labels)
        delta = total - child._value.get()
        if delta > 0:
            child.inc(delta)

    def render(self) -> bytes:
        return generate_latest(self.registry)
