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
    """An engine retiring versions after 7 days (a model silent for a day pauses its clock)."""
    return MonitorEngine(StreamprocConfig.model_validate(
        {"defaults": {"window_size": 50, "warmup_size": 100, "retire_version_seconds": 7 * DAY, **defaults},
         "models": models or {}}))


def _feed(engine: MonitorEngine, raws: list[bytes], now: float):
    batches, rejected = decode_predictions(raws, layouts=engine.feature_layout)
    assert rejected == []
    return engine.process(batches, now=now)


HOUR = 3600.0


def _hourly(engine: MonitorEngine, model: str, version: str, start: float, hours: int, seed: int = 3, first: int = 0):
    """One event of the version an hour, for ``hours`` hours from ``start``."""
    raws = _events(model, version, hours, seed=seed, start=first)
    for h, raw in enumerate(raws):
        _feed(engine, [raw], now=start + h * HOUR)
    return start + (hours - 1) * HOUR


def test_a_version_idle_while_its_model_has_traffic_is_retired_and_saved_without():
    engine = _engine()
    _feed(engine, _events("m", "v1", 300) + _events("other", "v1", 300, seed=2), now=0.0)
    _feed(engine, _events("m", "v2", 300, seed=3), now=HOUR)
    end = _hourly(engine, "m", "v2", 2 * HOUR, 6 * 24, first=300)  # 6 days of v2 alone
    assert engine.retire_idle_versions() == []  # within the week
    dict(engine.dirty_records({}))  # (saved)
    end = _hourly(engine, "m", "v2", end + HOUR, 2 * 24, first=500)
    dict(engine.dirty_records({}))  # saved: nothing changed since but the retirement
    assert engine.retire_idle_versions() == [("m", "v1")]
    assert set(engine.monitors) == {("m", "v2"), ("other", "v1")}  # "other" had no other version: kept
    records = dict(engine.dirty_records({}))
    assert set(pickle.loads(zlib.decompress(records["m"]))["monitors"]) == {"v2"}
    # Events of it later start it afresh.
    _feed(engine, _events("m", "v1", 10, start=300), now=end + HOUR)
    assert engine.monitors[("m", "v1")].events == 10


def test_the_models_clock_is_saved_with_it():
    engine = _engine()
    _feed(engine, _events("m", "v1", 120), now=0.0)
    end = _hourly(engine, "m", "v2", HOUR, 4 * 24)  # 4 days
    restored = _engine()
    restored.import_state(dict(engine.dirty_records({})))
    _hourly(restored, "m", "v2", end + HOUR, 4 * 24, first=200)  # 4 more on another worker
    assert restored.retire_idle_versions() == [("m", "v1")]


def test_silences_of_the_whole_model_do_not_count():
    """A worker that was down, or a model scored once a week or a month, retires nothing:
    the model's clock stands still while it has no traffic."""
    # Scored monthly, v2 first: v1 comes an hour later.
    engine = _engine()
    _feed(engine, _events("m", "v1", 120), now=0.0)
    _feed(engine, _events("m", "v2", 120, seed=3), now=HOUR)
    _feed(engine, _events("m", "v2", 10, seed=3, start=120), now=30 * DAY)
    assert engine.retire_idle_versions() == []
    # Weekly, with the jobs' order changing: v1 10 minutes before v2, then 20 minutes after.
    engine = _engine()
    _feed(engine, _events("m", "v1", 120), now=0.0)
    _feed(engine, _events("m", "v2", 120, seed=3), now=600.0)
    _feed(engine, _events("m", "v2", 10, seed=3, start=120), now=7 * DAY + 600)
    assert engine.retire_idle_versions() == []
    _feed(engine, _events("m", "v1", 10, start=120), now=7 * DAY + 1800)
    assert engine.retire_idle_versions() == []
    # The worker down for 6 days, v1 last seen a day and a half before.
    engine = _engine()
    _feed(engine, _events("m", "v1", 120), now=0.0)
    end = _hourly(engine, "m", "v2", HOUR, 36)
    _feed(engine, _events("m", "v2", 10, seed=3, start=200), now=end + 6 * DAY)
    assert engine.retire_idle_versions() == []


def test_retiring_can_be_switched_off_per_model_and_waits_for_outcomes_at_least():
    engine = _engine(models={"n": {"retire_version_seconds": 2 * DAY, "concept": {"ttl_seconds": DAY}},
                             "o": {"retire_version_seconds": 2 * DAY, "concept": {"ttl_seconds": 4 * DAY}}},
                     retire_version_seconds=None)
    for model in ("m", "n", "o"):
        _feed(engine, _events(model, "v1", 120), now=0.0)
        _hourly(engine, model, "v2", HOUR, 3 * 24)
    # m: never; n: after 2 days; o: not before its predictions' 4 days' wait for outcomes.
    assert engine.retire_idle_versions() == [("n", "v1")]
    _hourly(engine, "o", "v2", 3 * DAY + HOUR, 2 * 24, first=100)
    assert engine.retire_idle_versions() == [("o", "v1")]
    try:
        _engine(retire_version_seconds=60)
    except ValueError as exc:
        assert "retire_version_seconds" in str(exc)
    else:
        raise AssertionError("60 s accepted")


def test_a_state_saved_before_versions_were_stamped_counts_as_seen_at_the_first_look():
    engine = _engine()
    _feed(engine, _events("m", "v1", 100), now=0.0)
    _feed(engine, _events("m", "v2", 100), now=0.0)
    for mon in engine.monitors.values():
        del mon.last_active  # as an earlier streamproc saved it: the class default, None
    engine._clocks.clear()  # (nor was a clock saved)
    restored = _engine()
    restored.import_state(dict(engine.dirty_records({})))
    assert {mon.last_active for mon in restored.monitors.values()} == {None}
    assert restored.retire_idle_versions() == []
    end = _hourly(restored, "m", "v2", 100 * DAY, 2)
    assert restored.retire_idle_versions() == []  # v1 stamped now
    _hourly(restored, "m", "v2", end + HOUR, 8 * 24, first=10)
    assert restored.retire_idle_versions() == [("m", "v1")]


def test_outcomes_of_a_retired_versions_predictions_do_not_bring_it_back():
    engine = _engine(concept={"join": "always"})
    raws = _events("m", "v1", 200)
    _feed(engine, raws, now=0.0)
    _hourly(engine, "m", "v2", HOUR, 8 * 24, first=200)  # (other event ids)
    assert engine.retire_idle_versions() == [("m", "v1")]
    ids = [orjson.loads(r)["event_id"] for r in raws[-5:]]
    out = engine.process_outcomes([Outcome(i, "m", 1.0, "a", None) for i in ids])
    assert engine.joiners["m"].matched == 5  # joined, and dropped
    assert ("m", "v1") not in engine.monitors and out.alerts == [] and not out.errors_updated


def _worker_with_an_idle_version():
    """A worker (default settings) whose model m had v1 for a day, then 30 days of v2's traffic
    (a batch a day): v1 is due to retire."""
    from streamproc.worker import MonitorWorker

    w = MonitorWorker(load_config(None, overrides={"window_size": 50, "warmup_size": 100}, environ={}))
    batches, _ = decode_predictions(_events("m", "v1", 200))
    w.engine.process(batches, now=0.0)
    for day in range(1, 32):
        batches, _ = decode_predictions(_events("m", "v2", 1, seed=3, start=day))
        w.engine.process(batches, now=day * DAY)
    return w


def test_the_worker_retires_versions_now_and_then_and_drops_their_series(caplog):
    w = _worker_with_an_idle_version()
    for key in w.engine.monitors:
        w.metrics.psi.labels(*key, "x0").set(0.1)
        w.metrics.events.labels(*key).inc(5)
    caplog.set_level(logging.INFO, logger="streamproc.worker")
    w._retire_idle_versions()  # too soon after the start: no sweep yet
    assert ("m", "v1") in w.engine.monitors
    w._last_retire_sweep = float("-inf")
    w._retire_idle_versions()
    assert set(w.engine.monitors) == {("m", "v2")}
    assert sorted(k[:2] for k in w.metrics.psi.series) == sorted(w.metrics.events.series) == [("m", "v2")]
    assert w.metrics.versions_retired._value.get() == 1
    assert any("retired model version m/v1" in r.getMessage() for r in caplog.records)


def test_a_retirement_redone_after_a_rewind_is_counted_once(caplog):
    """A rewind reloads the last checkpoint, which may still hold a version retired since: its
    retiring again is the same retirement, said and counted once. After a checkpoint that saved
    it, a version of that name retired again is a new retirement."""
    import asyncio

    w = _worker_with_an_idle_version()
    checkpoint = dict(w.engine.dirty_records({}))  # the last checkpoint: v1 still there

    def retire_after_reload(now: float) -> None:
        w._forget_models()
        for model_id, record in checkpoint.items():
            w.engine.import_record(model_id, record)
        batches, _ = decode_predictions(_events("m", "v2", 1, seed=3, start=40))  # the replay feeds the model
        w.engine.process(batches, now=now)
        w._last_retire_sweep = float("-inf")
        w._retire_idle_versions()
        assert set(w.engine.monitors) == {("m", "v2")}

    caplog.set_level(logging.INFO, logger="streamproc.worker")
    w._last_retire_sweep = float("-inf")
    w._retire_idle_versions()
    retire_after_reload(32 * DAY)  # the rewind, then the same version retired again
    assert w.metrics.versions_retired._value.get() == 1
    assert sum("retired model version m/v1" in r.getMessage() for r in caplog.records) == 1

    # A checkpoint started after the retirement and saved: the state topic has m without v1.
    w._checkpoints_started += 1
    w._saving = ([], {}, {"m": b"saved"}, {})
    asyncio.run(w._settle_checkpoint(wait=True))
    retire_after_reload(33 * DAY)  # a record with v1 again (say, another worker's) is a new retirement
    assert w.metrics.versions_retired._value.get() == 2


def test_a_retirement_whose_model_a_checkpoint_could_not_save_is_still_counted_once():
    """A checkpoint that left the model out (its record over the limit) did not save the
    retirement: a rewind reloads the version, and retiring it again is the same retirement."""
    import asyncio
    from types import SimpleNamespace

    w = _worker_with_an_idle_version()
    last = dict(w.engine.dirty_records({}))  # the last checkpoint saved: v1 still there
    w._last_retire_sweep = float("-inf")
    w._retire_idle_versions()

    async def send(producer, records):
        return []

    w.state = SimpleNamespace(max_record_bytes=10, send=send)  # m's record is over the limit: not saved
    w.input = SimpleNamespace(positions=lambda: {})
    asyncio.run(w.checkpoint())
    w._forget_models()  # a rewind: the state topic still has v1
    for model_id, record in last.items():
        w.engine.import_record(model_id, record)
    batches, _ = decode_predictions(_events("m", "v2", 1, seed=3, start=40))
    w.engine.process(batches, now=32 * DAY)
    w._last_retire_sweep = float("-inf")
    w._retire_idle_versions()
    assert w.metrics.versions_retired._value.get() == 1


def test_the_workers_batches_advance_the_models_clocks(monkeypatch):
    """What the worker's sweep relies on: each batch it processes stamps its model versions."""
    from types import SimpleNamespace

    import streamproc.worker as worker_module
    from streamproc.worker import MonitorWorker

    w = MonitorWorker(load_config(None, overrides={"window_size": 50, "warmup_size": 100}, environ={}))
    msgs = [SimpleNamespace(value=raw, topic="predictions", partition=0, offset=i, timestamp=0, key=None, headers=())
            for i, raw in enumerate(_events("m", "v1", 20))]
    now = [1_767_225_600.0 + DAY]  # (a clock after the events' times: later ones would be dead-lettered)
    monkeypatch.setattr(worker_module.time, "time", lambda: now[0])
    assert w._process_predictions(msgs[:10]) == []
    now[0] += HOUR
    assert w._process_predictions(msgs[10:]) == []
    assert w.engine._clocks["m"][0] == HOUR and w.engine.monitors[("m", "v1")].last_active == HOUR


def test_models_loaded_but_never_fed_are_left_as_their_owner_saved_them():
    """On the direct route every worker loads every model's record, and another worker may own
    it: retiring (or cutting) one this worker never fed would save its stale copy over the
    owner's record."""
    owner = _engine()
    _feed(owner, _events("m", "v1", 120), now=0.0)
    _hourly(owner, "m", "v2", HOUR, 8 * 24)
    records = dict(owner.dirty_records({}))
    other = _engine()
    other.import_state(records)
    assert other.retire_idle_versions() == [] and not other.dirty_models and not other.dirty_monitors
    owner.import_state(records)  # (the owner restarts: fed again by its next batch)
    _feed(owner, _events("m", "v2", 1, seed=3, start=300), now=9 * DAY)
    assert owner.retire_idle_versions() == [("m", "v1")]


def test_a_clock_that_stepped_back_counts_on_from_there():
    """A model handled once by a worker whose clock ran ahead (or a clock set right) does not
    freeze its model's clock until the wall clock catches up."""
    engine = _engine()
    _feed(engine, _events("m", "v1", 120), now=30 * DAY)  # 30 days ahead
    _hourly(engine, "m", "v2", HOUR, 8 * 24)  # then the right time, 8 days of v2 alone
    assert engine.retire_idle_versions() == [("m", "v1")]


def test_a_version_back_after_its_retirement_gives_its_alerts_new_ids_also_after_a_restart():
    """A rolled-back version starts afresh and numbers its windows from 0 again: its alerts and
    retrain requests must not repeat its first life's ids, which receivers de-duplicate by
    (they would drop them). How many times it was retired is saved with its model."""
    import numpy as np

    from streamproc.config import StreamprocConfig
    from streamproc.decode import PredictionBatch
    from streamproc.profile import build_reference

    rng = np.random.default_rng(0)
    ref = build_reference("m", "v1", [{"x": float(v)} for v in rng.normal(0, 1, 2000)], [0.5] * 2000, [None] * 2000)
    engine = MonitorEngine(StreamprocConfig(), {("m", "v1"): ref})
    n = [0]

    def batch(version: str, k: int, shift: float) -> dict:
        b = PredictionBatch("m", version, [f"e{n[0] + i}" for i in range(k)], [float(n[0] + i) for i in range(k)],
                            [{"x": float(v)} for v in rng.normal(shift, 1, k)], [0.5] * k, [None] * k)
        n[0] += k
        return {("m", version): b}

    def ids(out) -> set:
        return {a["alert_id"] for a in out.alerts} | {r["request_id"] for r in out.retrains}

    first = ids(engine.process(batch("v1", 1000, 2.0), now=0.0))
    for d in range(1, 33):  # v2 takes the traffic for a month
        engine.process(batch("v2", 10, 0.0), now=d * DAY)
    assert engine.retire_idle_versions() == [("m", "v1")]
    restarted = MonitorEngine(StreamprocConfig(), {("m", "v1"): ref})
    restarted.import_state(engine.export_dirty({"predictions:0": n[0]}))
    for e in (engine, restarted):
        again = ids(e.process(batch("v1", 1000, 2.0), now=33 * DAY))
        assert len(again) == len(first) >= 2 and not again & first
        assert e.monitors[("m", "v1")].policy.incarnation == 1 and not e._retired


def test_a_version_the_model_no_longer_remembers_retiring_does_not_come_back_with_old_ids(monkeypatch):
    """A model remembers the retirements of its last MAX_RETIRED_VERSIONS retired versions: one
    forgotten came back as in its first life (incarnation 0), with its first life's ids."""
    import streamproc.engine as engine_module
    from streamproc.config import StreamprocConfig
    from streamproc.decode import PredictionBatch

    monkeypatch.setattr(engine_module, "MAX_RETIRED_VERSIONS", 2)
    engine = MonitorEngine(StreamprocConfig())
    n = [0]

    def feed(version: str, day: int) -> None:
        b = PredictionBatch("m", version, [f"e{n[0]}"], [float(n[0])], [{"x": 1.0}], [0.5], [None])
        n[0] += 1
        engine.process({("m", version): b}, now=day * DAY)

    retired = []
    for k, version in enumerate(["v0", "v1", "v2", "v3", "v4"]):  # each replaced by the next a month on
        for day in range(32):
            feed(version, 32 * k + day)
        retired += engine.retire_idle_versions()
    assert retired == [("m", "v0"), ("m", "v1"), ("m", "v2"), ("m", "v3")]
    assert set(engine._retired["m"]) == {"v2", "v3", "\x00"}  # v0 and v1 forgotten
    restarted = MonitorEngine(StreamprocConfig())
    restarted.import_state(engine.export_dirty({}))
    for e in (engine, restarted):
        assert e.monitor(("m", "v0")).policy.incarnation == 1  # v0 rolled back: not its first life's ids
