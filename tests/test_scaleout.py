"""Several workers in one consumer group, against the real broker: the models are split
between them (each model in exactly one), and when one dies the others take its models over
from the state topic and finish the stream with exact counts and the expected alerts."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from streamproc.config import load_config
from streamproc.engine import MonitorEngine
from streamproc.state import StateStore
from streamproc.synth import Drift, ModelStream
from streamproc.worker import MonitorWorker

from .conftest import WorkerProcess, unique_topics, wait_until
from .test_integration import TopicReader, produce

pytestmark = pytest.mark.integration

MODELS = [f"m{i}" for i in range(8)]
DRIFTING = {"m0", "m3", "m6"}
HALF = 3000


def by_worker(workers) -> list[dict]:
    """model id -> events, per worker (from /status)."""
    out = []
    for w in workers:
        status = w.status()
        out.append({m["model_id"]: m["events"] for m in status.get("models", [])})
    return out


def test_two_workers_split_the_models_and_the_survivor_takes_over(bootstrap, tmp_path):
    topics = unique_topics()
    group = f"scale-{uuid.uuid4().hex[:8]}"
    args = ("--window-size", "500", "--warmup-size", "1000")
    a = WorkerProcess(bootstrap, topics, tmp_path / "a.log", args, group_id=group)
    b = WorkerProcess(bootstrap, topics, tmp_path / "b.log", args, group_id=group)
    try:
        a.wait_ready()
        b.wait_ready()
        # Both own some of the routed partitions, and no partition is owned twice.
        parts = wait_until(lambda: (pa := a.status()["partitions"]) and (pb := b.status()["partitions"]) and (pa, pb),
                           60, "both workers to own partitions")
        assert not set(parts[0]) & set(parts[1])
        every = set(parts[0]) | set(parts[1])

        streams = {m: ModelStream(m, n_numeric=4, seed=70 + i, drift=Drift(HALF, ("x1",), 1.5) if m in DRIFTING else None)
                   for i, m in enumerate(MODELS)}
        first = [e for group_ in zip(*(s.events(HALF) for s in streams.values())) for e in group_]
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in first])  # random keys

        def split():
            seen = by_worker([a, b])
            if sum(sum(s.values()) for s in seen) == HALF * len(MODELS):
                return seen
        seen = wait_until(split, 90, "the first half applied by the two workers")
        assert not set(seen[0]) & set(seen[1]), f"a model's state is split between workers: {seen}"
        assert seen[0] and seen[1], f"one worker got every model: {seen}"
        assert all(n == HALF for s in seen for n in s.values())

        a.proc.kill()  # SIGKILL: no final checkpoint, no leave-group
        a.proc.wait()
        second = [e for group_ in zip(*(s.events(HALF, start=HALF) for s in streams.values())) for e in group_]
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in second])

        def finished():
            s = b.status()
            counts = {m["model_id"]: m["events"] for m in s["models"]}
            if set(s["partitions"]) == every and counts == {m: 2 * HALF for m in MODELS}:
                return s
        status = wait_until(finished, 120, "the survivor to own every partition and finish every model")
        reader = TopicReader(bootstrap, topics["alerts"])
        wait_until(lambda: len(reader.poll()) >= status["published"]["alerts"], 30, "the survivor's alerts")
        alerts = reader.values()
        reader.close()
        drift = {a_["model_id"] for a_ in alerts if a_["type"] == "data_drift" and a_["feature"] == "x1"}
        assert drift == DRIFTING
        # No window before the drift alerted (windows are numbered after the 1000-event warm-up).
        assert all(a_["window"]["index"] >= (HALF - 1000) // 500 for a_ in alerts if a_["type"] == "data_drift")
    finally:
        for w in (a, b):
            w.stop()


def test_the_routed_topic_is_fetched_with_its_own_wait(bootstrap):
    # The routers keep writing the routed topic while there is input: its reader waits
    # routed_fetch_max_wait_ms for data, the routers' reader of the input fetch_max_wait_ms.
    topics = {**unique_topics(), "references": f"refs-{uuid.uuid4().hex[:8]}", "state": f"state-{uuid.uuid4().hex[:8]}"}
    env = {"STREAMPROC_BOOTSTRAP": bootstrap, "STREAMPROC_GROUP_ID": f"wait-{uuid.uuid4().hex[:8]}",
           "STREAMPROC_FETCH_MAX_WAIT_MS": "150", "STREAMPROC_ROUTED_FETCH_MAX_WAIT_MS": "7",
           **{f"STREAMPROC_TOPIC_{k.upper()}": v for k, v in topics.items()}}
    worker = MonitorWorker(load_config(None, environ=env))

    async def main():
        await worker.start()
        try:
            return (worker.consumer.subscription(), worker.consumer._fetcher._fetch_max_wait_ms,
                    worker.router_consumer._fetcher._fetch_max_wait_ms)
        finally:
            await worker.stop()

    subscribed, routed_wait, input_wait = asyncio.run(main())
    assert subscribed == {worker.settings.topics.routed_topic(worker.settings.group_id)}
    assert (routed_wait, input_wait) == (7, 150)


def test_on_the_direct_route_a_partitions_predictions_and_outcomes_go_to_the_same_worker(bootstrap, tmp_path):
    """Producers keying by model id put a model's predictions and outcomes in the same partition
    number of each topic; its state must live in one worker. Three workers, four partitions:
    each owns the same partition numbers of both topics (round robin, aiokafka's default, gave
    one worker predictions[1] and another outcomes[1])."""
    topics = unique_topics()
    group = f"direct-{uuid.uuid4().hex[:8]}"
    workers = [WorkerProcess(bootstrap, topics, tmp_path / f"w{i}.log", ("--route", "direct"), group_id=group)
               for i in range(3)]
    try:
        for w in workers:
            w.wait_ready()

        def settled():
            owned = [set(w.status().get("partitions") or ()) for w in workers]
            if sum(map(len, owned)) == 8 and all(owned):
                return owned
        owned = wait_until(settled, 90, "the three workers to share the eight partitions")
        for parts in owned:
            numbers = {kind: {p.rsplit("[", 1)[1] for p in parts if p.startswith(topics[kind] + "[")}
                       for kind in ("predictions", "outcomes")}
            assert numbers["predictions"] == numbers["outcomes"], owned
    finally:
        for w in workers:
            w.stop()


def test_on_the_direct_route_a_restarted_worker_holds_the_models_it_is_not_fed_packed(bootstrap, tmp_path):
    """The direct route loads every model's saved state (producers choose the partitions):
    a model is restored in full, with what it had applied, only when its input reaches the
    worker; until then it is held packed, not listed as monitored."""
    topics = unique_topics()
    group = f"packed-{uuid.uuid4().hex[:8]}"
    args = ("--route", "direct", "--window-size", "100", "--warmup-size", "200")
    streams = {m: ModelStream(m, n_numeric=3, seed=80 + i) for i, m in enumerate(("p", "q"))}

    def send(model: str, n: int, start: int) -> None:
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in streams[model].events(n, start=start)])

    def counts(w) -> dict:
        return {m["model_id"]: m["events"] for m in w.status().get("models", [])}

    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, group_id=group)
    try:
        first.wait_ready()
        send("p", 300, 0)
        send("q", 300, 0)
        wait_until(lambda: counts(first) == {"p": 300, "q": 300}, 60, "both models applied")
    finally:
        assert first.stop() == 0  # a clean stop saves both models
    second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, group_id=group)
    try:
        second.wait_ready()
        send("q", 20, 300)
        status = wait_until(lambda: (s := second.status()) and counts(second) == {"q": 320} and s, 60,
                            "q restored and fed", detail=lambda: second.status())
        assert status["packed_models"] == 1
        send("p", 20, 300)
        status = wait_until(lambda: (s := second.status()) and counts(second) == {"p": 320, "q": 320} and s, 60,
                            "p restored from its packed state and fed", detail=lambda: second.status())
        assert status["packed_models"] == 0
    finally:
        second.stop()


def test_a_worker_evicted_from_its_group_does_not_save_over_its_successors_state(bootstrap, tmp_path):
    """A stalls longer than the session timeout (SIGSTOP) with a model changed since its last
    checkpoint; B is given A's partitions, applies more of that model's events and saves them.
    When A wakes, its heartbeat fails and its revocation checkpoint would save the model as A
    had it, after B's record: on the compacted state topic the older state would win, and the
    next owner would resume without B's events (100 of 400 lost here, without any crash)."""
    import os
    import signal

    topics = unique_topics()
    group = f"fence-{uuid.uuid4().hex[:8]}"
    args = ("--window-size", "100", "--warmup-size", "200")
    stream = ModelStream("m", n_numeric=3, seed=5)

    def send(n: int, start: int) -> None:
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in stream.events(n, start=start)])

    def held(w) -> int:
        return sum(m["events"] for m in w.status().get("models", []) if m["model_id"] == "m")

    def saved() -> int:
        """Events of m in its latest record on the state topic."""
        latest = {}
        asyncio.run(StateStore(bootstrap, "streamproc-state", group).read(latest.__setitem__))
        if not latest.get("m"):
            return 0
        engine = MonitorEngine(load_config(None, environ={}))
        engine.import_record("m", latest["m"])
        return sum(mon.events for mon in engine.monitors.values())

    def assignments(w) -> int:
        return w.log_text().count("partitions assigned:")

    # A saves only on revocation: the stall comes before its periodic checkpoint.
    a = WorkerProcess(bootstrap, topics, tmp_path / "a.log", args, env={"STREAMPROC_CHECKPOINT_SECONDS": "3600"},
                      group_id=group)
    b = None
    try:
        a.wait_ready()
        send(300, 0)
        wait_until(lambda: held(a) == 300, 60, "A to apply 300 events")
        os.kill(a.proc.pid, signal.SIGSTOP)
        b = WorkerProcess(bootstrap, topics, tmp_path / "b.log", args, env={"STREAMPROC_CHECKPOINT_SECONDS": "0.5"},
                          group_id=group)
        b.wait_ready(timeout=90)  # once the group has evicted A
        wait_until(lambda: held(b) == 300, 90, "B to replay A's 300 events")
        send(100, 300)
        wait_until(lambda: held(b) == 400, 60, "B to apply 100 more")
        wait_until(lambda: saved() == 400, 30, "B to save the 400 events")
        a_before, b_before = assignments(a), assignments(b)
        os.kill(a.proc.pid, signal.SIGCONT)
        # A finds it was evicted and rejoins; the partitions are dealt out again and loaded.
        wait_until(lambda: assignments(a) > a_before and assignments(b) > b_before, 90, "the group to rebalance")
        holders = wait_until(lambda: [n for n in (held(a), held(b)) if n], 60, "a worker to load m")
        assert holders == [400] and saved() == 400, (holders, a.warnings(), b.warnings())
        send(50, 400)
        wait_until(lambda: held(a) + held(b) == 450, 60, "the next 50 events applied")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
        a.stop()
        if b is not None:
            b.stop()


def test_a_source_restart_one_router_notices_reaches_the_models_the_other_worker_holds(bootstrap, tmp_path):
    """Two workers, repartitioned, one model in each routed partition (so each worker holds
    two). The predictions topic is recreated (the routers' committed offsets of the lost log
    put back, as Kafka keeps them when a partition loses its data) and each model gets 100
    events on the new log, below the offsets it applied: each router notices the restarts of
    its own source partitions, and its markers reach every routed partition, whichever worker
    holds it (before, the other worker's models skipped those partitions' new records: 348 to
    352 events of 400)."""
    from aiokafka import TopicPartition

    from streamproc.router import model_partition

    from .test_broker_restart import _commit_as_member, _committed, _recreate, events_of

    topics = unique_topics()
    group = f"marks-{uuid.uuid4().hex[:8]}"
    args = ("--route", "repartition", "--window-size", "100", "--warmup-size", "200")
    first_of: dict = {}
    for i in range(200):
        first_of.setdefault(model_partition(f"m{i}", 4), f"m{i}")
    models = [first_of[p] for p in range(4)]
    streams = {m: ModelStream(m, n_numeric=3, seed=i) for i, m in enumerate(models)}

    def send(n: int, start: int) -> None:
        for m in models:  # no keys: spread over the source partitions, so over both routers
            produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in streams[m].events(n, start=start)])

    def totals(workers) -> list:
        return [sum(events_of(w, m) for w in workers) for m in models]

    def start_two(name: str) -> list:
        workers = [WorkerProcess(bootstrap, topics, tmp_path / f"{name}{i}.log", args, group_id=group) for i in range(2)]
        for w in workers:
            w.wait_ready()
        return workers

    workers = start_two("before")
    try:
        send(300, 0)
        wait_until(lambda: totals(workers) == [300] * 4, 90, "the lost log's events applied",
                   detail=lambda: (totals(workers), by_worker(workers), [w.warnings() for w in workers],
                                   [[line for line in w.metrics().splitlines() if line.startswith(
                                       ("streamproc_consumer_lag", "streamproc_events_consumed", "streamproc_input_stalled"))]
                                    for w in workers]))
        assert all(by_worker(workers))  # both hold models
    finally:
        for w in workers:
            w.stop()
    old = asyncio.run(_committed(bootstrap, f"{group}-router", topics["predictions"], 4))
    asyncio.run(_recreate(bootstrap, topics["predictions"], 4))
    asyncio.run(_commit_as_member(bootstrap, f"{group}-router", topics["predictions"],
                                  {TopicPartition(topics["predictions"], p): off for p, off in old.items() if off}))
    send(100, 300)
    workers = start_two("after")
    try:
        wait_until(lambda: totals(workers) == [400] * 4, 90, "the new log's events applied by every model",
                   detail=lambda: (totals(workers), by_worker(workers)))
        assert all(by_worker(workers))
    finally:
        for w in workers:
            w.stop()
