"""Effectively-once state, without a broker: crash anywhere, restore the saved records, replay
from the committed offsets, and end with the same counts and alert ids as a run without
crashes. Models this way: a Kafka-like log of two partitions, state records saved (latest
per key, like a compacted topic) then offsets committed, and crashes that may land between
the two (some records of a snapshot saved, its offsets not committed)."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import load_config
from streamproc.decode import decode_outcomes, decode_predictions
from streamproc.engine import MonitorEngine
from streamproc.synth import Drift, ModelStream

CONFIG = load_config(None, overrides={"window_size": 200, "warmup_size": 400}, environ={})
BATCH = 150


def make_log(seed: int = 3):
    """Messages as (topic, partition, offset, payload), in the order a merged consumer sees them."""
    rng = random.Random(seed)
    streams = [ModelStream("a", n_numeric=3, seed=1, drift=Drift(1500, ("x0",), 1.5)),
               ModelStream("b", n_numeric=3, seed=2, drift=Drift(2000, ("c0",), new_category_rate=0.5))]
    events = [e for pair in zip(*(s.events(3000) for s in streams)) for e in pair]
    log, offsets = [], {0: 0, 1: 0, 2: 0}
    for i, e in enumerate(events):
        p = rng.randrange(2)  # random keys: any partition
        log.append(("predictions", p, offsets[p], orjson.dumps(e)))
        offsets[p] += 1
        if e["model_id"] == "a" and i % 2 == 0 and i > 200:  # outcomes for model a, on their own topic
            o = {"event_id": e["event_id"], "model_id": "a", "ts": e["ts"] + 1, "label": "1" if i % 7 else "0"}
            log.append(("outcomes", 2, offsets[2], orjson.dumps(o)))
            offsets[2] += 1
    return log


LOG = make_log()


def tp(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def process(engine: MonitorEngine, msgs) -> list[str]:
    preds = [m for m in msgs if m[0] == "predictions"]
    outs = [m for m in msgs if m[0] == "outcomes"]
    ids = []
    batches, rejected = decode_predictions([m[3] for m in preds], [(tp(m[0], m[1]), m[2]) for m in preds])
    assert not rejected
    r = engine.process(batches)
    ids += [a["alert_id"] for a in r.alerts] + [x["request_id"] for x in r.retrains]
    outcomes, rejected = decode_outcomes([m[3] for m in outs], [(tp(m[0], m[1]), m[2]) for m in outs])
    assert not rejected
    r = engine.process_outcomes(outcomes)
    ids += [a["alert_id"] for a in r.alerts] + [x["request_id"] for x in r.retrains]
    return ids


def uninterrupted():
    engine = MonitorEngine(CONFIG)
    ids = []
    for i in range(0, len(LOG), BATCH):
        ids += process(engine, LOG[i:i + BATCH])
    return engine, ids


BASELINE_ENGINE, BASELINE_IDS = uninterrupted()


def summary(engine: MonitorEngine):
    return {key: (m.events, m.pane.index if m.pane else None, m.pane.count if m.pane else None,
                  m.errors.count if m.errors else None, dict(m.policy.state.active))
            for key, m in sorted(engine.monitors.items())}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, len(LOG) // BATCH), min_size=1, max_size=4, unique=True),
       st.integers(1, 5), st.booleans(), st.booleans())
def test_crashes_anywhere_give_the_state_and_alerts_of_an_uninterrupted_run(crashes, snapshot_every, torn, lazy):
    """``lazy``: records restored packed, as on the direct route, each model restored in full at
    its first input."""
    store: dict[str, bytes] = {}  # the compacted state topic
    committed: dict[str, int] = {}  # the group's committed offsets
    engine = MonitorEngine(CONFIG)
    published: list[str] = []
    position = 0  # index into LOG of the next message to consume
    batches_done = 0
    crash_points = sorted(crashes)
    while position < len(LOG):
        batch = LOG[position:position + BATCH]
        published += process(engine, batch)
        position += len(batch)
        batches_done += 1
        watermark = {}
        for m in LOG[:position]:
            watermark[tp(m[0], m[1])] = m[2] + 1
        engine.end_replay(watermark)
        if crash_points and batches_done >= crash_points[0]:
            crash_points.pop(0)
            if torn:  # died in the middle of a snapshot: half its records saved, offsets not committed
                records = engine.export_dirty(watermark)
                for k in sorted(records)[: len(records) // 2]:
                    store[k] = records[k]
            engine = MonitorEngine(CONFIG)
            for model_id, record in store.items():
                engine.import_record(model_id, record, lazy=lazy)
            # Each partition resumes at its committed offset. Commits happen at batch ends, so
            # what is past them is a suffix of the merged order (which a replay reproduces).
            position = next((i for i, m in enumerate(LOG) if m[2] >= committed.get(tp(m[0], m[1]), 0)), len(LOG))
            assert all(m[2] >= committed.get(tp(m[0], m[1]), 0) for m in LOG[position:])
            continue
        if batches_done % snapshot_every == 0:
            store.update(engine.export_dirty(watermark))
            committed = dict(watermark)
    assert set(published) == set(BASELINE_IDS)
    for model_id in list(engine.dormant):  # restored after the last input
        engine.thaw(model_id)
    assert summary(engine) == summary(BASELINE_ENGINE)
    for key, mon in engine.monitors.items():
        base = BASELINE_ENGINE.monitors[key]
        assert all((mon.pane.counts[k] == base.pane.counts[k]).all() for k in base.pane.counts)


@settings(max_examples=25, deadline=None)
@given(repeats=st.lists(st.tuples(st.integers(0, len(LOG) // BATCH), st.integers(0, len(LOG) - 1), st.integers(1, 400)),
                        max_size=6))
def test_routed_input_applies_a_record_forwarded_twice_once(repeats):
    """A router that crashes forwards some source records again, after the originals (see
    streamproc.router): with ``dedupe`` the engine skips every record at or behind its model's
    source watermark, so the counts and alert ids equal those of the log without duplicates.
    (Duplicates are appended to the batches, which keep their original records, since outcome
    joins depend on where batches end.)"""
    batches = [list(LOG[i:i + BATCH]) for i in range(0, len(LOG), BATCH)]
    for j, start, length in repeats:
        j = min(j, len(batches) - 1)
        end = min((j + 1) * BATCH, len(LOG))
        start = min(start, end - 1)
        batches[j] += LOG[start:min(start + length, end)]
    engine = MonitorEngine(CONFIG)
    engine.dedupe = True
    ids = []
    for batch in batches:
        ids += process(engine, batch)
    assert summary(engine) == summary(BASELINE_ENGINE)
    assert ids == BASELINE_IDS


def test_without_dedupe_a_record_forwarded_twice_is_counted_twice():
    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:BATCH] + LOG[:BATCH])
    assert sum(m.events for m in engine.monitors.values()) > sum(1 for m in LOG[:BATCH] if m[0] == "predictions")


def test_a_later_record_of_a_model_replaces_the_earlier_one_whole():
    """The state topic may hold several records of a model (before compaction): restoring
    them in order leaves exactly what the last one holds."""
    engine = MonitorEngine(load_config(None, environ={}))
    msgs = [orjson.dumps(e) for e in ModelStream("m", seed=1, model_version="v1").events(50)]
    msgs += [orjson.dumps(e) for e in ModelStream("m", seed=2, model_version="v2").events(30)]
    engine.process(decode_predictions(msgs)[0])
    first = engine.export_dirty({"t:0": 80})["m"]
    engine.monitors.pop(("m", "v2"))  # a later state of the model: v2 gone, v1 moved on
    engine.process(decode_predictions([orjson.dumps(e) for e in ModelStream("m", seed=3, model_version="v1")
                                       .events(20, start=50)])[0])
    second = engine.export_dirty({"t:0": 100})["m"]

    restored = MonitorEngine(load_config(None, environ={}))
    versions = restored.import_record("m", first)
    assert sorted(versions) == [("m", "v1"), ("m", "v2")]
    versions = restored.import_record("m", second, versions)
    assert versions == [("m", "v1")] and set(restored.monitors) == {("m", "v1")}
    assert restored.monitors[("m", "v1")].events == 70
    assert restored.replay_until == {"t:0": 100}
    restored.forget("m", versions)
    assert restored.monitors == {} and restored.joiners == {}


def test_an_abandoned_export_leaves_every_model_marked_changed():
    engine = MonitorEngine(load_config(None, environ={}))
    msgs = [orjson.dumps(e) for i in range(3) for e in ModelStream(f"m{i}", seed=i).events(20)]
    engine.process(decode_predictions(msgs)[0])
    records = engine.dirty_records({"t:0": 60})
    first, _ = next(records)
    records.close()  # e.g. the checkpoint was cancelled between two models
    assert engine.export_dirty({"t:0": 60}).keys() == {"m0", "m1", "m2"}
    assert first in {"m0", "m1", "m2"} and engine.export_dirty({"t:0": 60}) == {}


def test_a_partition_restarted_from_its_beginning_is_applied_again_only_where_forgotten():
    """A broker that lost data restarts a partition's offsets (see streamproc.consume): with
    ``dedupe`` the records there would be skipped as already applied, unless the engine forgets
    the positions applied from that partition; other partitions keep their watermarks."""
    engine = MonitorEngine(CONFIG)
    engine.dedupe = True
    first = LOG[:BATCH]
    process(engine, first)
    applied = sum(m.events for m in engine.monitors.values())
    process(engine, first)  # the same offsets again: all skipped
    assert sum(m.events for m in engine.monitors.values()) == applied
    engine.forget_positions({tp("predictions", 0)})
    assert engine.dirty_monitors
    process(engine, first)  # partition 0 forgotten: its records count again, partition 1's do not
    again = sum(1 for m in first if m[0] == "predictions" and m[1] == 0)
    assert 0 < again < sum(1 for m in first if m[0] == "predictions")
    assert sum(m.events for m in engine.monitors.values()) == applied + again
    engine.forget_positions()
    process(engine, first)
    assert sum(m.events for m in engine.monitors.values()) == 2 * applied + again


def restored_full_and_packed(records: dict):
    """Two engines restoring the same records: in full, and packed (as the direct route does)."""
    full, packed = MonitorEngine(CONFIG), MonitorEngine(CONFIG)
    full.import_state(records)
    for model_id, record in records.items():
        packed.import_record(model_id, record, lazy=True)
    return full, packed


def publish_reference_of_a(*engines) -> None:
    """A reference of model a published to the references topic (its source: file:new)."""
    from streamproc.profile import build_reference

    ref = build_reference("a", "default", [{"x0": float(i), "x1": 1.0, "x2": 2.0} for i in range(300)], source="file:new")
    for engine in engines:
        engine.set_reference(ref)


def test_a_record_restored_packed_is_unpacked_by_its_models_first_input():
    """The direct route restores every model's record packed (most are other workers'): none
    is unpacked, changed or saved until input of its model arrives, predictions or outcomes;
    a later record or a deletion of the model replaces it while packed."""
    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:1500])
    records = engine.export_dirty({"predictions:0": 700, "predictions:1": 700, "outcomes:2": 300})

    packed = MonitorEngine(CONFIG)
    for model_id, record in records.items():
        assert packed.import_record(model_id, record, lazy=True) == [(model_id, "default")]
    assert set(packed.dormant) == {"a", "b"} and packed.monitors == {} and packed.joiners == {}
    assert packed.replay_until == {"predictions:0": 700, "predictions:1": 700, "outcomes:2": 300}
    assert packed.export_dirty({"predictions:0": 800}) == {}

    b_only = [m for m in LOG[1500:1700] if m[3].find(b'"model_id":"b"') >= 0]
    assert b_only and all(m[0] == "predictions" for m in b_only)
    process(packed, b_only)
    assert set(packed.dormant) == {"a"} and set(packed.monitors) == {("b", "default")}
    outcome = next(m for m in LOG[1500:] if m[0] == "outcomes")
    process(packed, [outcome])  # an outcome of a: its joiner (and monitor) come back
    assert packed.dormant == {} and "a" in packed.joiners and ("a", "default") in packed.monitors

    for model_id, record in records.items():
        packed.import_record(model_id, record, lazy=True)
    packed.import_record("a", records["a"], lazy=True)  # a later record of a packed model replaces it
    packed.forget("b", [])  # the model deleted from the state topic
    assert set(packed.dormant) == {"a"}


def test_positions_forgotten_while_a_model_is_packed_are_forgotten_when_it_is_unpacked():
    """A partition read again from its beginning (the broker lost its data): the packed models
    stay packed and unsaved (most are other workers'), even one a reference arrived for; each
    forgets that partition's positions when it is unpacked, and is saved from then on."""
    from streamproc.profile import build_reference

    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:1500])
    records = engine.export_dirty({"predictions:0": 700, "predictions:1": 700, "outcomes:2": 300})
    packed = MonitorEngine(CONFIG)
    for model_id, record in records.items():
        packed.import_record(model_id, record, lazy=True)
    packed.set_reference(build_reference("b", "default", [{"x0": float(i)} for i in range(300)], source="file:new"))
    packed.forget_positions({"predictions:0"})
    assert set(packed.dormant) == {"a", "b"} and packed.export_dirty({"predictions:1": 800}) == {}
    assert packed.replay_until == {"predictions:1": 700, "outcomes:2": 300}
    packed.forget_positions({"outcomes:2"})
    packed.thaw("a")
    for obj in [*(m for k, m in packed.monitors.items() if k[0] == "a"), packed.joiners["a"]]:
        assert obj.applied == {"predictions:1": 700}
    assert set(packed.export_dirty({})) == {"a"}
    packed.forget_positions(None)  # every partition
    packed.thaw("b")
    assert packed.monitors[("b", "default")].applied == {}
    assert packed.monitors[("b", "default")].reference.source == "file:new"


def new_log_of_partition_0(start: int, n: int):
    """Partition 0's records after its offsets started again (the broker lost the old log):
    later events, numbered from 0."""
    part0 = [m for m in LOG[start:] if m[0] == "predictions" and m[1] == 0][:n]
    return [(topic, partition, offset, payload) for offset, (topic, partition, _, payload) in enumerate(part0)]


def events_of(engine: MonitorEngine, model_id: str) -> int:
    return sum(m.events for key, m in engine.monitors.items() if key[0] == model_id)


def restored_from(state: dict, lazy: bool = True) -> MonitorEngine:
    """A worker's engine as it loads these state-topic records (name -> value), restart counts included."""
    from streamproc.state import restart_count

    worker = MonitorEngine(CONFIG)
    for name, record in state.items():
        count = restart_count(name)
        if count is not None:
            worker.restarts.note(*count)
        else:
            worker.import_record(name, record, lazy=lazy)
    worker.settle_restarts()
    return worker


def test_a_restart_counted_on_the_state_topic_outlives_a_crash_of_the_worker_holding_the_model_packed():
    """A worker notices that partition 0 started again while it holds its models packed (it
    must not save them: they may be other workers'), then crashes. The next worker restores
    their records as saved before the restart; the restart count, saved on the state topic
    before any offset of the new log was committed, has them forget their old positions there
    and apply the new log's records below them. A record saved after the restart keeps its."""
    from streamproc.state import restart_count, restart_records

    restarted = restored_from
    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:1500])
    before = {"predictions:0": 700, "predictions:1": 700, "outcomes:2": 300}
    topic = dict(engine.export_dirty(before))  # the state topic, latest record per key

    crashed = MonitorEngine(CONFIG)
    for model_id, record in topic.items():
        crashed.import_record(model_id, record, lazy=True)
    crashed.settle_restarts()
    crashed.forget_positions({"predictions:0"}, count=True)
    assert crashed.restarts.unsaved == {"predictions:0": 1}
    assert crashed.export_dirty({"predictions:0": 0, "predictions:1": 700}) == {}  # packed: not saved
    topic.update(restart_records(crashed.restarts.unsaved))  # the checkpoint's count (then the crash)

    new_log = new_log_of_partition_0(1500, 120)
    a_new = sum(1 for m in new_log if b'"model_id":"a"' in m[3])
    assert 0 < a_new < len(new_log)
    for lazy in (True, False):
        after = restarted(topic, lazy)
        assert after.replay_until == {"predictions:1": 700, "outcomes:2": 300}
        a_before = events_of(engine, "a")
        process(after, new_log)
        assert events_of(after, "a") == a_before + a_new, lazy
        assert after.monitors[("a", "default")].applied.get("predictions:0") is None

    # The crash without the count on the state topic: the old positions come back and the new
    # log's records below them are skipped (what this test guards against).
    blind = restarted({k: v for k, v in topic.items() if restart_count(k) is None})
    assert blind.replay_until["predictions:0"] == 700
    process(blind, new_log)
    assert events_of(blind, "a") == events_of(engine, "a")

    # A model saved after the restart keeps its positions of the new log (stamped with the count).
    saver = restarted(topic)
    process(saver, new_log)
    topic.update(saver.export_dirty({"predictions:0": len(new_log), "predictions:1": 700}))
    assert saver.monitors[("a", "default")].applied_restarts == {"predictions:0": 1}
    again = restarted(topic)
    assert again.replay_until["predictions:0"] == len(new_log)
    process(again, new_log)  # read again after a crash before the commit: applied once
    assert events_of(again, "a") == events_of(saver, "a")


def test_a_restart_counted_by_a_worker_that_crashed_before_committing_the_new_log_is_not_counted_again():
    """A worker counts partition 0's restart (its group had committed offset 700 of the lost
    log), applies the new log, saves its models and the count, and crashes before committing:
    the group's committed offset is still 700, past the new end. The next worker notices the
    restart from that committed offset alone; the count's record says it replaced the log
    committed at 700, so it is the restart counted already: the models' positions of the new
    log stand, and its records are applied once. Without that record they were applied twice.
    Noticed otherwise (from the restored state, or from another committed offset), a restart
    is counted."""
    from streamproc.state import restart_count, restart_records

    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:1500])
    topic = dict(engine.export_dirty({"predictions:0": 700, "predictions:1": 700}))
    new_log = new_log_of_partition_0(1500, 120)
    a_new = sum(1 for m in new_log if b'"model_id":"a"' in m[3])
    first = restored_from(topic, lazy=False)
    assert first.forget_positions({"predictions:0"}, count=True, lost={"predictions:0": 700}) == {"predictions:0"}
    process(first, new_log)
    topic.update(first.export_dirty({"predictions:0": len(new_log), "predictions:1": 700}))
    topic.update(restart_records(first.restarts.unsaved, first.restarts.lost))  # then the crash: nothing committed
    assert events_of(first, "a") == events_of(engine, "a") + a_new

    unmarked = {name: value for name, value in topic.items() if (restart_count(name) or (None, 0, None))[2] is None}
    for state, lazy in ((topic, True), (topic, False), (unmarked, True)):
        after = restored_from(state, lazy)
        forgotten = after.forget_positions({"predictions:0"}, count=True, lost={"predictions:0": 700}, again={"predictions:0"})
        process(after, new_log)  # read again from the new log's beginning
        if state is topic:
            assert forgotten == set() and after.restarts.counts == {"predictions:0": 1}
            assert events_of(after, "a") == events_of(first, "a"), lazy
        else:
            assert forgotten == {"predictions:0"} and events_of(after, "a") == events_of(first, "a") + a_new

    for lost, again in (({"predictions:0": 700}, set()), ({"predictions:0": 120}, {"predictions:0"}), ({}, {"predictions:0"})):
        after = restored_from(topic)
        assert after.forget_positions({"predictions:0"}, count=True, lost=lost, again=again) == {"predictions:0"}
        assert after.restarts.counts == {"predictions:0": 2} and after.restarts.unsaved == {"predictions:0": 2}


def test_a_restart_count_record_is_read_back_and_a_damaged_one_counts_as_none(caplog):
    """The counts' records have empty values: a worker from before them reads one as a deleted
    model it never had, and restores nothing from it."""
    from streamproc.state import restart_count, restart_records

    records = restart_records({"predictions:3": 2, "my.topic-x:12": 11}, lost={("predictions:3", 2): {700}, ("predictions:3", 1): {5}})
    assert set(records.values()) == {b""}
    assert [restart_count(k) for k in records] == [("predictions:3", 2, None), ("my.topic-x:12", 11, None),
                                                   ("predictions:3", 2, 700)]
    assert restart_count("a") is None
    assert restart_count("\x00restarts\x1fpredictions:3\x1ftwo") == ("predictions:3", 0, None)
    assert restart_count("\x00restarts\x1fpredictions:3\x1f2\x1f7\x1f1") == ("predictions:3", 0, None)
    assert "unreadable restart count" in caplog.text
    # Two workers that raised the same count (one's record late) may have seen different
    # committed offsets: either is the restart counted.
    from streamproc.restarts import PartitionRestarts

    known = PartitionRestarts()
    for name in restart_records({"p:0": 1}, {("p:0", 1): {700, 650}}):
        known.note(*restart_count(name))
    assert [known.bump({"p:0"}, {"p:0": offset}, {"p:0"}) for offset in (650, 700, 600)] == [set(), set(), {"p:0"}]
    # The counts' first reader (a partition, then the count after the last separator) reads
    # a lost log's offset as the count of a partition named with the count, which none has.
    first_version = [(name.rpartition("\x1f")[0][len("\x00restarts\x1f"):]) for name in records]
    assert first_version == ["predictions:3", "my.topic-x:12", "predictions:3\x1f2"]


def test_a_packed_record_unpacked_gives_what_restoring_it_in_full_gives():
    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:2000])
    records = engine.export_dirty({"predictions:0": 0})
    full, packed = restored_full_and_packed(records)
    assert process(full, LOG[2000:]) == process(packed, LOG[2000:])
    assert summary(full) == summary(packed) and full.export_dirty({}) == packed.export_dirty({})


def test_a_reference_published_while_a_model_is_packed_is_applied_when_it_is_unpacked():
    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:1500])  # both models have their warm-up's reference
    records = engine.export_dirty({"predictions:0": 700, "predictions:1": 700, "outcomes:2": 300})
    full, packed = restored_full_and_packed(records)
    publish_reference_of_a(full, packed)
    assert packed.dormant.keys() == {"a", "b"}
    later = LOG[1500:1700]
    assert process(full, later) == process(packed, later)
    assert packed.monitors[("a", "default")].reference.source == full.monitors[("a", "default")].reference.source == "file:new"


def test_a_reference_published_while_a_warming_model_is_packed_is_adopted_once():
    """Unpacked, a warming model adopts the reference it missed as a model held in full does:
    once (a second adoption would move its windows' numbering on by one)."""
    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:300])  # both models still warming up
    assert all(m.reference is None for m in engine.monitors.values())
    records = engine.export_dirty({"predictions:0": 0})
    full, packed = restored_full_and_packed(records)
    publish_reference_of_a(full, packed)
    assert process(full, LOG[300:1500]) == process(packed, LOG[300:1500])
    assert summary(full) == summary(packed)


def test_a_reference_published_while_no_worker_held_the_model_is_adopted_when_it_is_restored():
    """The worker reads the references topic before it loads the models: a reference published
    after the model's last checkpoint (the worker down, or the model between workers) must reach
    it, in full or packed, as it would have reached a worker holding it; a reference it already
    has (read back from the topic) changes nothing."""
    from streamproc.profile import build_reference

    engine = MonitorEngine(CONFIG)
    process(engine, LOG[:1500])  # both models on their warm-up's reference
    records = engine.export_dirty({"predictions:0": 700, "predictions:1": 700, "outcomes:2": 300})
    ref = build_reference("a", "default", [{"x0": float(i), "x1": 1.0, "x2": 2.0} for i in range(300)], source="file:new")
    for lazy in (False, True):
        restored = MonitorEngine(CONFIG)
        restored.set_reference(ref)  # read from the references topic at start
        for model_id, record in records.items():
            restored.import_record(model_id, record, lazy=lazy)
        restored.thaw("a") if lazy else None
        assert restored.monitors[("a", "default")].reference is restored.references[("a", "default")]
        assert ("a", "default") in restored.dirty_monitors
    # A model whose saved reference is the one the topic holds keeps its windows going.
    engine.set_reference(ref)
    process(engine, LOG[1500:1700])
    records = engine.export_dirty({"predictions:0": 800, "predictions:1": 800, "outcomes:2": 300})
    restored = MonitorEngine(CONFIG)
    restored.set_reference(build_reference("a", "default", [{"x0": float(i), "x1": 1.0, "x2": 2.0} for i in range(300)],
                                           source="file:new"))  # the same profile, read back
    restored.import_state(records)
    mon = restored.monitors[("a", "default")]
    assert mon.reference is not restored.references[("a", "default")] and mon.pane.count > 0
    assert ("a", "default") not in restored.dirty_monitors
