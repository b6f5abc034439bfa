"""Idle model versions are retired: a model that deploys a new version every week must not keep
every old one for ever (memory, max_models places, metric series, and one state record that
would outgrow its size limit)."""

from __future__ import annotations

import logging
import pickle
import zlib

import orjson

from streamproc.config import StreamprocConfig, load_config
from streamproc.decode import Outcome, decode_predictions
from streamproc.engine import MonitorEngine
from streamproc.synth import ModelStream

DAY = 86400.0


def _events(model: str, version: str, n: int, seed: int = 1, start: int = 0) -> list[bytes]:
    out = []
    for e in list(ModelStream(model, n_numeric=3, seed=seed).events(start + n))[start:]:
        e["model_version"] = version
        out.append(orjson.dumps(e))
    return out


def _engine(models: dict | None = None, **defaults) -> MonitorEngine:
    return MonitorEngine(StreamprocConfig.model_validate(
        {"defaults": {"window_size": 50, "warmup_size": 100, **defaults}, "models": models or {}}))


def _feed(engine: MonitorEngine, raws: list[bytes], now: float):
    batches, rejected = decode_predictions(raws, layouts=engine.feature_layout)
    assert rejected == []
    return engine.process(batches, now=now)


def test_a_version_idle_while_its_model_has_traffic_is_retired_and_saved_without():
    engine = _engine()
    _feed(engine, _events("m", "v1", 300) + _events("other", "v1", 300, seed=2), now=0.0)
    _feed(engine, _events("m", "v2", 300, seed=3), now=1 * DAY)
    assert engine.retire_idle_versions(now=1 * DAY) == []  # a day: within the week
    engine.dirty_records({})  # (saved)
    _feed(engine, _events("m", "v2", 50, seed=3, start=300), now=8 * DAY)
    assert engine.retire_idle_versions(now=8 * DAY) == [("m", "v1")]
    assert set(engine.monitors) == {("m", "v2"), ("other", "v1")}  # "other" had no newer version: kept
    records = dict(engine.dirty_records({}))
    assert set(pickle.loads(zlib.decompress(records["m"]))["monitors"]) == {"v2"}
    # Events of it later start it afresh.
    _feed(engine, _events("m", "v1", 10, start=300), now=9 * DAY)
    assert engine.monitors[("m", "v1")].events == 10


def test_nothing_is_retired_when_the_whole_model_was_idle_or_retiring_is_off():
    engine = _engine(retire_version_seconds=None)
    _feed(engine, _events("m", "v1", 100) + _events("n", "v1", 100), now=0.0)
    _feed(engine, _events("m", "v2", 100) + _events("n", "v2", 100), now=0.5 * DAY)
    # The worker was down for a month: the versions are as far apart as they were.
    assert engine.retire_idle_versions(now=30 * DAY) == []
    _feed(engine, _events("m", "v2", 10, start=100) + _events("n", "v2", 10, start=100), now=30 * DAY)
    assert engine.retire_idle_versions(now=30 * DAY) == []  # retiring off (null)
    per_model = _engine(models={"n": {"retire_version_seconds": 3600}}, retire_version_seconds=None)
    per_model.monitors = engine.monitors
    assert per_model.retire_idle_versions(now=30 * DAY) == [("n", "v1")]


def test_a_state_saved_before_versions_were_stamped_counts_as_seen_at_the_first_look():
    engine = _engine()
    _feed(engine, _events("m", "v1", 100), now=0.0)
    _feed(engine, _events("m", "v2", 100), now=0.0)
    for mon in engine.monitors.values():
        del mon.last_seen  # as an earlier streamproc saved it: the class default, None
    restored = _engine()
    restored.import_state(dict(engine.dirty_records({})))
    assert {mon.last_seen for mon in restored.monitors.values()} == {None}
    assert restored.retire_idle_versions(now=100 * DAY) == []
    _feed(restored, _events("m", "v2", 10, start=100), now=108 * DAY)
    assert restored.retire_idle_versions(now=108 * DAY) == [("m", "v1")]


def test_outcomes_of_a_retired_versions_predictions_do_not_bring_it_back():
    engine = _engine(**{"concept": {"join": "always"}})
    raws = _events("m", "v1", 200)
    _feed(engine, raws, now=0.0)
    _feed(engine, _events("m", "v2", 200, seed=3, start=200), now=8 * DAY)  # (other event ids)
    assert engine.retire_idle_versions(now=8 * DAY) == [("m", "v1")]
    ids = [orjson.loads(r)["event_id"] for r in raws[-5:]]
    out = engine.process_outcomes([Outcome(i, "m", 1.0, "a", None) for i in ids])
    assert engine.joiners["m"].matched == 5  # joined, and dropped
    assert ("m", "v1") not in engine.monitors and out.alerts == [] and not out.errors_updated


def test_the_worker_retires_versions_now_and_then_and_drops_their_series(monkeypatch, caplog):
    import streamproc.worker as worker_module
    from streamproc.worker import MonitorWorker

    w = MonitorWorker(load_config(None, overrides={"window_size": 50, "warmup_size": 100}, environ={}))
    for version, seed, now in (("v1", 1, 0.0), ("v2", 3, 8 * DAY)):
        batches, _ = decode_predictions(_events("m", version, 200, seed=seed))
        w.engine.process(batches, now=now)
        for key in w.engine.monitors:
            w.metrics.psi.labels(*key, "x0").set(0.1)
    monkeypatch.setattr(worker_module.time, "time", lambda: 8 * DAY)
    caplog.set_level(logging.INFO, logger="streamproc.worker")
    w._retire_idle_versions()  # too soon after the start: no sweep yet
    assert ("m", "v1") in w.engine.monitors
    w._last_retire_sweep = float("-inf")
    w._retire_idle_versions()
    assert set(w.engine.monitors) == {("m", "v2")}
    assert sorted(k[:2] for k in w.metrics.psi.series) == [("m", "v2")]
    assert w.metrics.versions_retired._value.get() == 1
    assert any("retired model version m/v1" in r.getMessage() for r in caplog.records)
