"""Broker trouble: stop the broker under a running worker, then start it again on the same
port. The worker must report not-ready on /healthz while the broker is away, stay up (no
crash), and, once the broker is back, report ready and process new events."""

from __future__ import annotations

import json

import pytest

from streamproc.broker import EmbeddedBroker, free_port
from streamproc.demo import http_json
from streamproc.synth import ModelStream

from .conftest import WorkerProcess, unique_topics, wait_until
from .test_integration import produce

pytestmark = pytest.mark.integration


def events_of(worker: WorkerProcess, model_id: str) -> int:
    return sum(m["events"] for m in worker.status().get("models", []) if m["model_id"] == model_id)


def test_worker_is_not_ready_while_the_broker_is_away_and_resumes_when_it_returns(tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port=port, log_path=str(tmp_path / "broker.log")).start()
    topics = unique_topics()
    worker = WorkerProcess(broker.bootstrap, topics, tmp_path / "worker.log", ("--window-size", "500", "--warmup-size", "1000"))
    try:
        worker.wait_ready()
        produce(broker.bootstrap, topics["predictions"],
                [json.dumps(e).encode() for e in ModelStream("before", n_numeric=3, seed=81).events(600)])
        wait_until(lambda: events_of(worker, "before") == 600, 60, "events before the outage", detail=worker.warnings)

        broker.stop()
        wait_until(lambda: http_json(worker.base + "/healthz")[0] == 503, 60, "/healthz to report not ready")
        assert worker.proc.poll() is None, "the worker exited while the broker was away"

        # The embedded broker keeps nothing on disk: it comes back empty, on the same address.
        broker = EmbeddedBroker(port=port, log_path=str(tmp_path / "broker2.log")).start()
        worker.wait_ready(timeout=120)
        produce(broker.bootstrap, topics["predictions"],
                [json.dumps(e).encode() for e in ModelStream("after", n_numeric=3, seed=82).events(1500)])
        wait_until(lambda: events_of(worker, "after") == 1500, 120, "events after the broker returned",
                   detail=worker.warnings)
        assert worker.proc.poll() is None
        assert "Traceback" not in worker.log_text()
    finally:
        worker.stop()
        broker.stop()


async def _commit_past_the_end(bootstrap: str, commits: dict[str, list[str]], offset: int) -> None:
    """Commit ``offset`` for every partition of the given topics, per group."""
    from aiokafka import TopicPartition

    from streamproc import kafka

    for group, group_topics in commits.items():
        c = kafka.consumer(bootstrap, group_id=group)
        await c.start()
        try:
            tps = [TopicPartition(t, p) for t in group_topics for p in range(4)]
            c.assign(tps)
            await c.commit({tp: offset for tp in tps})
        finally:
            await c.stop()


@pytest.mark.parametrize("route", ["direct", "repartition"])
def test_offsets_past_the_end_of_a_partition_restart_from_its_beginning(bootstrap, tmp_path, route):
    """A broker that lost its data (Tansu on memory storage restarted, a topic deleted and
    recreated) leaves committed offsets, and consumer positions, past the partitions' new
    end. Kafka answers a fetch there with OFFSET_OUT_OF_RANGE and the consumer starts again
    from the beginning (``auto_offset_reset`` earliest); Tansu answers with nothing, for ever.
    The worker must read the partitions from the beginning either way."""
    import asyncio
    import uuid

    from streamproc import kafka

    topics = unique_topics()
    group = f"test-{uuid.uuid4().hex[:8]}"
    routed = f"{group}-routed"
    asyncio.run(kafka.ensure_topics(bootstrap, [topics["predictions"], topics["outcomes"], routed], 4))
    commits = {group: [topics["predictions"], topics["outcomes"]]} if route == "direct" else \
        {group: [routed], f"{group}-router": [topics["predictions"], topics["outcomes"]]}
    asyncio.run(_commit_past_the_end(bootstrap, commits, 100))
    worker = WorkerProcess(bootstrap, topics, tmp_path / "worker.log", ("--route", route, "--warmup-size", "1000"),
                           group_id=group)
    try:
        worker.wait_ready()
        # Produced at once, as producers do when a broker comes back: about 375 records per
        # partition, past the committed 100 before any slow check could notice them.
        produce(bootstrap, topics["predictions"],
                [json.dumps(e).encode() for e in ModelStream("early", n_numeric=3, seed=83).events(1500)])
        wait_until(lambda: events_of(worker, "early") == 1500, 60, "every event, those below the committed offsets too",
                   detail=worker.warnings)
        assert "past the end" in worker.log_text()
    finally:
        worker.stop()


async def _recreate(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete a topic and create it again, empty: its offsets start again from 0."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict:
    """The group's committed offsets of a topic (without joining the group)."""
    from aiokafka import TopicPartition

    from streamproc import kafka

    c = kafka.consumer(bootstrap, group_id=group)
    await c.start()
    try:
        return {p: await c.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await c.stop()


def test_a_model_held_packed_forgets_a_lost_log_after_a_crash_of_the_worker_that_noticed_it(bootstrap, tmp_path):
    """The predictions topic loses its data (deleted and recreated: its committed offsets go
    too) while the state topic keeps the saved models. A worker on the direct route sees from
    model p's saved state (offset 300 of partition P) that P started again, while it holds p
    packed (unpacked only by p's input, and not saved before); it commits P's new beginning,
    and is killed (-9). Then the new log grows past 300 (p's events first, at offsets 0-99),
    so the next worker cannot see the restart: only the restart count saved on the state
    topic tells it that p's position there is of the lost log."""
    import asyncio
    import uuid

    topics = unique_topics()
    group = f"lost-{uuid.uuid4().hex[:8]}"
    args = ("--route", "direct", "--window-size", "100", "--warmup-size", "200")
    streams = {m: ModelStream(m, n_numeric=3, seed=84 + i) for i, m in enumerate("pq")}

    def send(model: str, n: int, start: int) -> None:
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in streams[model].events(n, start=start)],
                keys=[b"p"] * n)  # all on p's partition

    def committed() -> dict:
        return asyncio.run(_committed(bootstrap, group, topics["predictions"], 4))

    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, group_id=group)
    try:
        first.wait_ready()
        send("p", 300, 0)
        wait_until(lambda: events_of(first, "p") == 300, 60, "p's events applied")
    finally:
        assert first.stop() == 0  # a clean stop saves p at offset 300 and commits it
    part = next(p for p, offset in committed().items() if offset == 300)
    asyncio.run(_recreate(bootstrap, topics["predictions"], 4))
    assert committed()[part] is None

    second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, group_id=group)
    try:
        second.wait_ready()
        wait_until(lambda: committed()[part] == 0, 60, "the new log's beginning committed", detail=second.warnings)
        assert second.status()["packed_models"] == 1  # p was never unpacked, nor saved
    finally:
        second.proc.kill()  # a crash: nothing more saved
        second.proc.wait()
        second.log.close()
    assert f"{topics['predictions']}[{part}]: the state restored had read it up to offset 300, past its end (0)" in second.log_path.read_text()

    send("p", 100, 300)  # offsets 0-99 of the new log
    send("q", 250, 0)  # 100-349: past p's old position
    third = WorkerProcess(bootstrap, topics, tmp_path / "third.log", args, group_id=group)
    try:
        third.wait_ready()
        wait_until(lambda: events_of(third, "p") == 400 and events_of(third, "q") == 250, 60,
                   "p's and q's events of the new log applied", detail=lambda: (third.status(), third.warnings()))
        assert "started again" not in third.log_text()
    finally:
        third.stop()


@pytest.mark.parametrize("committed_offsets", ["kept", "lost"])
def test_repartitioned_models_forget_a_restarted_source_partition_in_routed_order_and_after_a_crash(
        bootstrap, tmp_path, committed_offsets):
    """Repartitioned (the default route): the predictions topic loses its data (deleted and
    recreated) while the routed and state topics keep theirs. Models p and q, in different
    routed partitions, had applied 300 events each; 100 more of each are produced on the new
    log, at offsets below the old ones. With the router group's committed offsets of the lost
    log kept (as Kafka keeps them when a partition loses its data), the router notices the
    restart; with them lost (they go with a deleted topic), it sees the new log end below what
    the models applied. Either way a marker through every routed partition makes the models
    forget, in order with the records, and so also after the worker that read it is killed
    (-9) before saving anything: the next one replays the marker from the routed topic."""
    import asyncio
    import uuid

    from aiokafka import TopicPartition

    from streamproc.router import model_partition

    topics = unique_topics()
    group = f"src-{uuid.uuid4().hex[:8]}"
    args = ("--route", "repartition", "--window-size", "100", "--warmup-size", "200")
    models = ["p", next(m for m in (f"q{i}" for i in range(100)) if model_partition(m, 4) != model_partition("p", 4))]
    streams = {m: ModelStream(m, n_numeric=3, seed=7 + i) for i, m in enumerate(models)}

    def send(n: int, start: int) -> None:
        for m in models:  # no keys: spread over the partitions
            produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in streams[m].events(n, start=start)])

    def counts(worker) -> list:
        return [events_of(worker, m) for m in models]

    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, group_id=group)
    try:
        first.wait_ready()
        send(300, 0)
        wait_until(lambda: counts(first) == [300, 300], 60, "the lost log's events applied")
    finally:
        assert first.stop() == 0  # saves both models and commits
    old = asyncio.run(_committed(bootstrap, f"{group}-router", topics["predictions"], 4))
    asyncio.run(_recreate(bootstrap, topics["predictions"], 4))
    if committed_offsets == "kept":
        asyncio.run(_commit_as_member(bootstrap, f"{group}-router", topics["predictions"],
                                      {TopicPartition(topics["predictions"], p): off for p, off in old.items() if off}))
    send(100, 300)  # about 50 per partition: below the 150 the models applied from each

    second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, group_id=group,
                           env={"STREAMPROC_CHECKPOINT_SECONDS": "3600"})  # saves nothing before it is killed
    try:
        second.wait_ready()
        wait_until(lambda: counts(second) == [400, 400], 60, "the new log's events applied",
                   detail=lambda: (counts(second), second.warnings()))
    finally:
        second.proc.kill()
        second.proc.wait()
        second.log.close()

    third = WorkerProcess(bootstrap, topics, tmp_path / "third.log", args, group_id=group)
    try:
        third.wait_ready()
        send(50, 400)
        wait_until(lambda: counts(third) == [450, 450], 60, "the new log replayed once, and new events applied",
                   detail=lambda: (counts(third), third.warnings()))
    finally:
        third.stop()
    how = "noticed by its router" if committed_offsets == "kept" else "when its router first read it"
    assert how in second.log_path.read_text()


def test_a_model_restored_past_a_restart_marker_applies_the_lost_logs_records_before_it_once(bootstrap, tmp_path):
    """Repartitioned: a worker applies 300 events of m, is killed before saving anything; the
    predictions topic is recreated with 100 new events. The next worker replays the routed
    topic (the lost log's 300, the restart markers, the new log's 100), saves m with 400 and
    stops, and its commits are put back to where they were (as a kill -9 between a checkpoint's
    state and its commit leaves them). The third replays all of it again: its watermarks of
    the restarted partitions are the new log's, so only the routed position m was saved at
    tells that the lost log's records before the markers are applied (before: 600 events)."""
    import asyncio
    import uuid

    from aiokafka import TopicPartition

    topics = unique_topics()
    group = f"past-{uuid.uuid4().hex[:8]}"
    routed = f"{group}-routed"
    args = ("--route", "repartition", "--window-size", "100", "--warmup-size", "200")
    stream = ModelStream("m", n_numeric=3, seed=9)

    def send(n: int, start: int) -> None:
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in stream.events(n, start=start)])

    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, group_id=group,
                          env={"STREAMPROC_CHECKPOINT_SECONDS": "3600"})
    try:
        first.wait_ready()
        send(300, 0)
        wait_until(lambda: events_of(first, "m") == 300, 60, "the lost log's events applied")
    finally:
        first.proc.kill()
        first.proc.wait()
        first.log.close()
    asyncio.run(_recreate(bootstrap, topics["predictions"], 4))
    send(100, 300)
    second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, group_id=group)
    try:
        second.wait_ready()
        wait_until(lambda: events_of(second, "m") == 400, 60, "both logs applied", detail=second.warnings)
    finally:
        assert second.stop() == 0  # saves m past the markers, and commits
    asyncio.run(_commit_as_member(bootstrap, group, routed, {TopicPartition(routed, p): 0 for p in range(4)}))
    third = WorkerProcess(bootstrap, topics, tmp_path / "third.log", args, group_id=group)
    try:
        third.wait_ready()
        send(50, 400)
        wait_until(lambda: events_of(third, "m") == 450, 60, "the replay applied nothing twice, and new events applied",
                   detail=lambda: (events_of(third, "m"), third.warnings()))
    finally:
        third.stop()


def test_a_routed_topic_recreated_with_its_committed_offsets_is_noticed_from_the_restored_positions(bootstrap, tmp_path):
    """Repartitioned: the routed and predictions topics are both deleted and recreated (their
    committed offsets go with them) while the state topic keeps m's 300 events. m's saved
    routed positions are past the new routed log's end: the worker sees that the routed
    partition started again, and m forgets the positions of its lost log, which hid the new
    routed log's restart markers (applied "already" below them) and so the new predictions'
    100 events (before: 300)."""
    import asyncio
    import uuid

    topics = unique_topics()
    group = f"both-{uuid.uuid4().hex[:8]}"
    args = ("--route", "repartition", "--window-size", "100", "--warmup-size", "200")
    stream = ModelStream("m", n_numeric=3, seed=9)

    def send(n: int, start: int) -> None:
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in stream.events(n, start=start)])

    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, group_id=group)
    try:
        first.wait_ready()
        # In six rounds, each applied before the next: the lost routed log holds at least six
        # envelopes past its markers, more than the new log's 100 events can take (forwarded at
        # once, in one to four), so m's saved routed position stays past the new log's end
        # (sent at once, the 300 events could take as few envelopes, and the check found none).
        for start in range(0, 300, 50):
            send(50, start)
            wait_until(lambda: events_of(first, "m") == start + 50, 60, "the lost log's events applied")
    finally:
        assert first.stop() == 0
    asyncio.run(_recreate(bootstrap, topics["predictions"], 4))
    asyncio.run(_recreate(bootstrap, f"{group}-routed", 4))
    send(100, 300)
    second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, group_id=group)
    try:
        second.wait_ready()
        wait_until(lambda: events_of(second, "m") == 400, 60, "the new log's events applied",
                   detail=lambda: (events_of(second, "m"), second.warnings()))
    finally:
        second.stop()
    assert "past its end" in second.log_path.read_text()


async def _commit_as_member(bootstrap: str, group: str, topic: str, offsets: dict) -> None:
    """Join the group on ``topic`` and commit these offsets (TopicPartition -> offset) as its
    member (Tansu refuses a commit from outside a group that has had members)."""
    from streamproc import kafka

    c = kafka.consumer(bootstrap, group_id=group, partition_assignment_strategy=kafka.COPARTITIONED)
    c.subscribe([topic])
    await c.start()
    try:
        while not c.assignment():  # joined once the group has given it the partitions
            await c.getmany(timeout_ms=100, max_records=1)
        await c.commit(offsets)
    finally:
        await c.stop()


def test_a_restart_counted_by_a_worker_that_crashed_before_committing_the_new_log_is_counted_once(bootstrap, tmp_path):
    """The predictions topic loses partition P's data but the group's committed offset there
    stays (Kafka after an unclean leader election: 300, past the new end). A worker notices
    the restart, counts it, applies the new log's 50 events of model p, saves them with the
    count, commits 50 and is killed (-9); the commit is then undone (300 again), which leaves
    the state a crash between saving and committing leaves. The next worker notices the same
    restart from the committed offset alone: it must read P from its beginning and apply
    p's 50 events once (before the counts kept the offset of the log they replaced, it counted
    the restart again, forgot p's positions of the new log and applied them twice), with
    other partitions' records in the same fetches (``tests/test_consume.py`` checks that
    these cannot end P's replay while its end is unconfirmed)."""
    import asyncio
    import uuid

    from aiokafka import TopicPartition

    topics = unique_topics()
    group = f"once-{uuid.uuid4().hex[:8]}"
    args = ("--route", "direct", "--window-size", "100", "--warmup-size", "200")
    streams = {m: ModelStream(m, n_numeric=3, seed=86 + i) for i, m in enumerate("pqr")}
    sent = {"p": 0, "q": 0, "r": 0}

    def send(model: str, n: int) -> None:  # r's spread over the partitions, the others' on p's
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in streams[model].events(n, start=sent[model])],
                keys=None if model == "r" else [b"p"] * n)
        sent[model] += n

    def committed() -> dict:
        return asyncio.run(_committed(bootstrap, group, topics["predictions"], 4))

    def commit_lost_log() -> None:
        asyncio.run(asyncio.wait_for(_commit_as_member(bootstrap, group, topics["predictions"],
                                                       {TopicPartition(topics["predictions"], part): 300}), 60))

    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, group_id=group)
    try:
        first.wait_ready()
        send("p", 300)
        wait_until(lambda: events_of(first, "p") == 300, 60, "p's events applied")
    finally:
        assert first.stop() == 0
    part = next(p for p, offset in committed().items() if offset == 300)
    asyncio.run(_recreate(bootstrap, topics["predictions"], 4))
    commit_lost_log()  # the group's offset kept (as Kafka keeps it when a partition loses its data)
    send("p", 50)  # offsets 0-49 of the new log

    second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, group_id=group)
    try:
        second.wait_ready()
        wait_until(lambda: events_of(second, "p") == 350 and committed()[part] == 50, 60,
                   "the new log applied, saved and committed", detail=second.warnings)
    finally:
        second.proc.kill()
        second.proc.wait()
        second.log.close()
    commit_lost_log()  # as if the crash had come before the commit (once the group has let the killed worker go)

    send("q", 20)  # 50-69
    send("p", 10)  # 70-79
    send("r", 200)  # mostly on other partitions
    third = WorkerProcess(bootstrap, topics, tmp_path / "third.log", args, group_id=group)
    try:
        third.wait_ready()
        wait_until(lambda: events_of(third, "p") >= 360 and events_of(third, "q") == 20 and events_of(third, "r") == 200, 60,
                   "the new log's later events applied", detail=lambda: (third.status(), third.warnings()))
        assert events_of(third, "p") == 360  # p's first 50 of the new log once
        assert f"{topics['predictions']}:{part}: this restart was counted before" in third.log_text()
    finally:
        third.stop()
