"""Labelled metrics with a bounded number of series, for label values that come from the data
(model ids, versions, feature names): a flood of new ones must not make /metrics unbounded.
Series past the cap are not created; ``streamproc_metric_series_dropped_total{metric}`` counts
them. Both kinds index their series by the first label (the model id), so removing one
model's series does not scan every model's.

* ``Bounded`` wraps a prometheus_client metric (counters, the few gauges);
* ``LatestGauge`` is a gauge kept as a dict (label values -> value) and exported when scraped.
  prometheus_client makes an object per series (about 780 bytes and 5 µs to create; each
  ``set()`` takes a lock): right for a few series, costly for the latest statistics of
  thousands of (model version, feature) pairs, which the worker sets each time a window
  closes. Here a series is one float and a set is a dict store; the exposition is the same
  (name, help, labels, samples).
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.core import GaugeMetricFamily


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


class _Series:
    """What a cap and an index of the series by their first label value cost a metric."""

    def __init__(self, name: str, labelnames: Iterable[str], cap: int, dropped):
        self.name = name
        self.labelnames = tuple(labelnames)
        self.cap = cap
        self.dropped = dropped  # a Counter labelled by metric name
        self.series: dict[tuple[str, ...], object] = {}
        self.by_first: dict[str, set[tuple[str, ...]]] = {}
        # Combinations dropped so far (each counted once; at most ``cap`` remembered, past which
        # a flood of new ones counts each attempt).
        self._dropped_keys: set[tuple[str, ...]] = set()

    def _admit(self, key: tuple[str, ...]) -> bool:
        """Whether a series not held yet may be created (it is then indexed; the caller stores it).
        Its label values must be strings, one per label (a wrong key would be exported without
        a label, or break every scrape, and could not be removed)."""
        if len(key) != len(self.labelnames) or not all(type(v) is str for v in key):
            raise ValueError(f"{self.name}: label values {key!r} are not {len(self.labelnames)} strings")
        if len(self.series) >= self.cap:
            if key not in self._dropped_keys:
                self.dropped.labels(self.name).inc()
                if len(self._dropped_keys) < self.cap:
                    self._dropped_keys.add(key)
            return False
        self.by_first.setdefault(key[0], set()).add(key)
        self._dropped_keys.discard(key)  # (dropped before, there is room now)
        return True

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
        names = self.labelnames
        first = labels.get(names[0]) if names else None
        candidates = self.by_first.get(str(first), ()) if first is not None else list(self.series)
        for key in [k for k in candidates if all(k[names.index(n)] == str(v) for n, v in labels.items())]:
            self._removed(key)
            del self.series[key]
            keys = self.by_first[key[0]]
            keys.discard(key)
            if not keys:
                del self.by_first[key[0]]

    def _removed(self, key: tuple[str, ...]) -> None:
        pass

    def clear(self) -> None:
        self.series.clear()
        self.by_first.clear()
        self._dropped_keys.clear()


class Bounded(_Series):
    """A prometheus_client labelled metric with at most ``cap`` series.

    >>> from prometheus_client import CollectorRegistry, Gauge, Counter
    >>> r = CollectorRegistry()
    >>> dropped = Counter("dropped", "", ["metric"], registry=r)
    >>> g = Bounded(Gauge("g", "", ["model_id"], registry=r), 2, dropped)
    >>> for m in "abc": g.labels(m).set(1)
    >>> len(g.series), dropped.labels("g")._value.get()
    (2, 1.0)
    """

    def __init__(self, metric, cap: int, dropped):
        # The name it is exported under (prometheus_client keeps a counter's without _total).
        super().__init__(metric._name + ("_total" if metric._type == "counter" else ""), metric._labelnames, cap, dropped)
        self.metric = metric  # series: label values -> the metric's child (labels() is not free)

    def labels(self, *values):
        key = tuple(map(str, values))
        child = self.series.get(key)
        if child is None:
            if not self._admit(key):
                return _NoSeries()
            child = self.series[key] = self.metric.labels(*key)
        return child

    def _removed(self, key: tuple[str, ...]) -> None:
        self.metric.remove(*key)

    def clear(self) -> None:
        self.metric.clear()
        super().clear()


class LatestGauge(_Series):
    """A gauge of at most ``cap`` series, each a float in ``series``, registered in
    ``registry`` as a collector.

    >>> from prometheus_client import CollectorRegistry, Counter, generate_latest
    >>> r = CollectorRegistry()
    >>> dropped = Counter("dropped", "", ["metric"], registry=r)
    >>> g = LatestGauge("g", "A gauge.", ["model_id", "feature"], 2, dropped, registry=r)
    >>> g.set(("a", "x"), 1.5); g.labels("a", "y").set(2); g.set(("b", "x"), 3)
    >>> [line for line in generate_latest(r).decode().splitlines() if line.startswith("g")]
    ['g{feature="x",model_id="a"} 1.5', 'g{feature="y",model_id="a"} 2.0']
    >>> dropped.labels("g")._value.get()
    1.0
    """

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str], cap: int, dropped, registry):
        super().__init__(name, labelnames, cap, dropped)
        self.documentation = documentation
        registry.register(self)

    def set(self, key: tuple[str, ...], value: float) -> None:
        """Set the series of these label values (strings, in ``labelnames`` order)."""
        if key in self.series or self._admit(key):
            self.series[key] = float(value)

    def labels(self, *values) -> "_Setter":
        """prometheus_client's spelling: ``labels(...).set(value)``."""
        return _Setter(self, tuple(map(str, values)))

    def describe(self) -> list:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in self.series.items():  # (scraped on the worker's event loop, between batches)
            family.add_metric(key, value)
        yield family


class _Setter:
    __slots__ = ("gauge", "key")

    def __init__(self, gauge: LatestGauge, key: tuple[str, ...]):
        self.gauge, self.key = gauge, key

    def set(self, value: float) -> None:
        self.gauge.set(self.key, value)
