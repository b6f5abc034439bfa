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
