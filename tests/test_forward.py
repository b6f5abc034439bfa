"""``streamproc alerts forward``: retries and backoff, de-duplication, commit only after delivery.

The unit tests drive the forwarder with a fake webhook and a fake consumer; the integration
tests run it as a process against the real broker and a local HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streamproc import kafka
from streamproc.forward import (Answer, Forwarder, GiveUp, RecentIds, backoff_delay, deliver, identify,
                                parse_retry_after, retryable)

from .conftest import ROOT, wait_until


# ---------------------------------------------------------------------------------- events

def alert(model: str = "fraud", feature: str = "x0", index: int = 10) -> dict:
    """An alert as the worker publishes it (schemas/alert.v1.json)."""
    return {"schema_version": "1.0", "alert_id": str(uuid.uuid4()), "model_id": model, "model_version": "default",
            "type": "data_drift", "detector": "psi", "signal": "feature", "feature": feature,
            "statistic": 0.8803, "threshold": 0.25, "severity": "critical",
            "window": {"index": index, "start": 1767225720.0, "end": 1767225739.99, "count": 1000},
            "detected_at": "2026-11-22T21:58:57.311Z"}


def retrain_request(alert_ids: list[str], model: str = "fraud") -> dict:
    return {"schema_version": "1.0", "request_id": str(uuid.uuid4()), "model_id": model, "model_version": "default",
            "alert_ids": alert_ids, "drifted_features": ["x0"],
            "data_window": {"index": 10, "start": 1767225720.0, "end": 1767225739.99, "count": 1000},
            "reason": "1 critical drift alert(s)", "created_at": "2026-11-22T21:58:57.400Z"}


def test_the_test_events_follow_the_schemas():
    from .test_integration import validator

    a = alert()
    validator("alert").validate(a)
    validator("retrain_request").validate(retrain_request([a["alert_id"]]))


# ---------------------------------------------------------------------------------- pure parts

def test_recent_ids_is_a_bounded_lru():
    recent = RecentIds(3)
    for i in "abc":
        recent.add(i)
    assert recent.seen("a")  # a is now the most recent: b is the oldest
    recent.add("d")
    assert len(recent) == 3
    assert not recent.seen("b")
    assert recent.seen("a") and recent.seen("c") and recent.seen("d")
    with pytest.raises(ValueError):
        RecentIds(0)


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_delay(a) for a in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [backoff_delay(a, base=0.1, cap=0.5) for a in range(4)] == [0.1, 0.2, 0.4, 0.5]


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after(None) is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("99999") == 600.0  # capped
    # 2026-11-22T10:00:10Z, seen at 10:00:00Z
    assert parse_retry_after("Sun, 22 Nov 2026 10:00:10 GMT", now=1795341600.0) == 10.0
    assert parse_retry_after("soon") is None


def test_which_answers_are_retried():
    assert retryable(503) and retryable(500) and retryable(429)
    assert not retryable(400) and not retryable(404) and not retryable(301)


def test_identify_alerts_and_retrain_requests():
    a = alert()
    assert identify(json.dumps(a).encode()) == ("alert", a["alert_id"])
    r = retrain_request([a["alert_id"]])
    assert identify(json.dumps(r).encode()) == ("retrain_request", r["request_id"])
    for raw, why in ((None, "empty"), (b"not json", "not JSON"), (b"[1]", "not a JSON object"), (b'{"x": 1}', "neither")):
        with pytest.raises(ValueError, match=why):
            identify(raw)
    # An id goes in the Idempotency-Key header: one that cannot (a control character, 70,000
    # characters) stopped the forwarder on that message at every restart. It is unreadable.
    for bad in ("a\r\nX-Evil: 1", "a\x00b", "x" * 70_000, "with space"):
        with pytest.raises(ValueError, match="alert_id is not an id"):
            identify(json.dumps({**a, "alert_id": bad}).encode())
    assert identify(json.dumps({**a, "alert_id": "x" * 256}).encode()) == ("alert", "x" * 256)


def test_many_retries_do_not_overflow_the_backoff():
    # --max-retries 2000 to ride out a long outage: 2 ** 1024 is past a float, and the forwarder
    # crashed at its 1,024th retry.
    assert backoff_delay(1024) == backoff_delay(10_000) == 30.0
    result, waits = run_deliver(FakeWebhook([OSError("refused")] * 1100), max_retries=2000)
    assert result.delivered and len(waits) == 1100


def test_a_url_the_client_cannot_use_is_not_retried():
    import aiohttp

    with pytest.raises(GiveUp, match="URL is not valid"):
        run_deliver(FakeWebhook([aiohttp.InvalidURL("http://hooks:99999/x")]))


class FakeWebhook:
    """Answers from a script (an int status, a (status, Retry-After) pair, or an exception), then 200."""

    def __init__(self, script=()):
        self.script = list(script)
        self.requests: list[tuple[bytes, dict]] = []

    async def __call__(self, body: bytes, headers: dict) -> Answer:
        self.requests.append((body, headers))
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        status, retry_after = step if isinstance(step, tuple) else (step, None)
        return Answer(status, "", retry_after)


def run_deliver(webhook, max_retries=5, stop_after_waits=None):
    waits = []

    async def wait(seconds):
        waits.append(seconds)
        return stop_after_waits is None or len(waits) < stop_after_waits

    result = asyncio.run(deliver(webhook, b"{}", {}, "alert x", max_retries, wait))
    return result, waits


def test_retries_connection_errors_5xx_and_429_with_backoff_or_retry_after():
    webhook = FakeWebhook([503, ConnectionRefusedError("refused"), (429, "2"), (503, "0"), 502])
    result, waits = run_deliver(webhook)
    assert result.delivered and result.attempts == 6
    # backoff by attempt (0.5 s doubling) unless the answer says Retry-After
    assert waits == [0.5, 1.0, 2.0, 0.0, 8.0]


def test_gives_up_after_max_retries_and_on_a_refusal():
    with pytest.raises(GiveUp, match=r"alert x: webhook answered 503; gave up after 3 attempt"):
        run_deliver(FakeWebhook([503] * 10), max_retries=2)
    webhook = FakeWebhook([400])
    with pytest.raises(GiveUp, match="answered 400.*not retried"):
        run_deliver(webhook)
    assert len(webhook.requests) == 1
    with pytest.raises(GiveUp, match="cannot reach the webhook"):
        run_deliver(FakeWebhook([OSError("down")]), max_retries=0)


def test_a_stop_during_a_retry_wait_leaves_the_message_undelivered():
    result, waits = run_deliver(FakeWebhook([503] * 10), stop_after_waits=2)
    assert not result.delivered and len(waits) == 2


# ---------------------------------------------------------------------------------- the loop, on a fake consumer

@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes


class FakeConsumer:
    """Hands out the given messages in one batch, then nothing; records commits."""

    def __init__(self, messages: list[Msg]):
        self.batches = [{}]
        for m in messages:
            self.batches[0].setdefault(TP(m.topic, m.partition), []).append(m)
        self.commits: list[dict] = []
        self.committed_offsets = {TP("alerts", 0): 0, TP("retrain", 0): 0}
        self.ends = {TP("alerts", 0): 100, TP("retrain", 0): 100}
        self.seeks: list = []  # (partition, "beginning" or "end")
        self.seek_fails = 0  # seeks to the end that time out (broker trouble) before they succeed
        self.forwarder = None

    def assignment(self):
        return {TP("alerts", 0), TP("retrain", 0)}

    async def getmany(self, timeout_ms=0):
        if self.batches:
            batch = self.batches.pop(0)
            if isinstance(batch, Exception):
                raise batch
            return batch
        self.forwarder.stop.set()  # everything was handed out
        return {}

    async def commit(self, offsets):
        self.commits.append(dict(offsets))

    async def committed(self, tp):
        return self.committed_offsets.get(tp)

    async def position(self, tp):
        return 7

    async def end_offsets(self, tps):
        return {tp: self.ends[tp] for tp in tps}

    async def seek_to_beginning(self, tp):
        self.seeks.append((tp, "beginning"))

    async def seek_to_end(self, tp):
        if self.seek_fails:
            self.seek_fails -= 1
            raise asyncio.TimeoutError()
        self.seeks.append((tp, "end"))


def forwarder_for(messages, webhook, max_retries=2, from_beginning=False):
    consumer = FakeConsumer(messages)
    fwd = Forwarder(consumer, webhook, max_retries=max_retries, base=0.001, from_beginning=from_beginning)
    consumer.forwarder = fwd
    return fwd, consumer


def test_duplicates_are_posted_once_and_offsets_committed_after_delivery():
    a1, a2 = alert(), alert(feature="x1")
    r1 = retrain_request([a1["alert_id"]])
    msgs = [Msg("alerts", 0, 0, json.dumps(a1).encode()), Msg("alerts", 0, 1, json.dumps(a2).encode()),
            Msg("alerts", 0, 2, json.dumps(a1).encode()), Msg("alerts", 0, 3, b"garbage"),
            Msg("retrain", 0, 0, json.dumps(r1).encode())]
    webhook = FakeWebhook([503])
    fwd, consumer = forwarder_for(msgs, webhook)
    asyncio.run(fwd.run())
    posted = [h["Idempotency-Key"] for _, h in webhook.requests]
    assert posted == [a1["alert_id"], a1["alert_id"], a2["alert_id"], r1["request_id"]]  # the first one retried
    assert webhook.requests[0][1]["Content-Type"] == "application/json"
    assert webhook.requests[-1][1]["X-Streamproc-Event"] == "retrain_request"
    assert json.loads(webhook.requests[0][0]) == a1
    assert (fwd.counts.forwarded, fwd.counts.duplicates, fwd.counts.retries, fwd.counts.skipped) == (3, 1, 1, 1)
    # committed after each delivery; the duplicate and the unreadable message with the next commit
    assert consumer.commits == [{TP("alerts", 0): 1, TP("retrain", 0): 0}, {TP("alerts", 0): 2},
                                {TP("alerts", 0): 4, TP("retrain", 0): 1}]


def test_a_message_that_cannot_be_delivered_is_not_committed():
    a1, a2, a3 = alert(), alert(feature="x1"), alert(feature="x2")
    msgs = [Msg("alerts", 0, i, json.dumps(a).encode()) for i, a in enumerate((a1, a2, a3))]
    webhook = FakeWebhook([200, 500, 500, 500])  # a2 fails three times: max_retries 2 gives up
    fwd, consumer = forwarder_for(msgs, webhook)
    with pytest.raises(GiveUp, match=a2["alert_id"]):
        asyncio.run(fwd.run())
    assert consumer.commits == [{TP("alerts", 0): 1}]  # a1 delivered; a2 (offset 1) is where a restart resumes
    assert [h["Idempotency-Key"] for _, h in webhook.requests] == [a1["alert_id"]] + [a2["alert_id"]] * 3


def test_a_partition_without_a_committed_offset_gets_its_position_committed():
    # Otherwise a group started without --from-beginning would skip, on its next start,
    # whatever arrived while it was down.
    a1 = alert()
    fwd, consumer = forwarder_for([Msg("alerts", 0, 3, json.dumps(a1).encode())], FakeWebhook())
    consumer.committed_offsets = {}
    asyncio.run(fwd.run())
    assert consumer.commits == [{TP("alerts", 0): 4, TP("retrain", 0): 7}]  # the retrain partition had no messages
    assert consumer.seeks == [(TP("retrain", 0), "end")]  # (the alerts partition's position came with its messages)


@pytest.mark.parametrize("from_beginning", [False, True])
def test_where_partitions_start_that_the_consumer_found_no_position_for(from_beginning, capsys):
    """No committed offset: the end (the beginning with --from-beginning). A committed offset
    out of the log's range, reported by the broker or past the log's end: the beginning,
    said on stderr (retention removed those messages or the topic was made again; the
    messages after it were never forwarded)."""
    from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError

    fwd, consumer = forwarder_for([], FakeWebhook(), from_beginning=from_beginning)
    consumer.batches = [NoOffsetForPartitionError(TP("retrain", 0)), OffsetOutOfRangeError({TP("alerts", 0): 42}), {}]
    consumer.committed_offsets = {TP("alerts", 0): 42, TP("retrain", 0): 150}  # retrain: past its end (100)
    asyncio.run(fwd.run())
    assert consumer.seeks == [(TP("retrain", 0), "beginning" if from_beginning else "end"),
                              (TP("retrain", 0), "beginning"),  # (checked after the first poll)
                              (TP("alerts", 0), "beginning")]
    err = capsys.readouterr().err
    assert "committed offset 42 of alerts[0] is out of range" in err and "committed offset 150 of retrain[0]" in err


def test_a_partition_that_cannot_be_placed_yet_is_placed_on_a_later_poll(capsys):
    """A seek that times out (the broker slow to answer the offset lookup) is retried, as the
    next poll raises the partition's missing position again: it stopped the forwarder."""
    from aiokafka.errors import NoOffsetForPartitionError

    fwd, consumer = forwarder_for([], FakeWebhook())
    consumer.seek_fails = 1
    consumer.batches = [NoOffsetForPartitionError(TP("retrain", 0)), NoOffsetForPartitionError(TP("retrain", 0)), {}]
    asyncio.run(fwd.run())
    assert consumer.seeks[0] == (TP("retrain", 0), "end")
    assert "could not place a partition (TimeoutError" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- through the broker

class Webhook:
    """A local HTTP server that records POSTs and fails requests as told."""

    def __init__(self, failures=()):
        self.failures = list(failures)  # (status, Retry-After or None) for the first requests
        self.requests: list[dict] = []  # every request, failed or not
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    status, retry_after = hook.failures.pop(0) if hook.failures else (200, None)
                    hook.requests.append({"status": status, "path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(body)})
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/drift"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]

    def ids(self) -> list[str]:
        return [r["headers"]["Idempotency-Key"] for r in self.delivered()]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class ForwarderProcess:
    def __init__(self, bootstrap, webhook_url, topics, group_id, log_dir, *extra):
        self.out = open(log_dir / f"forward-{uuid.uuid4().hex[:6]}.out", "w+")
        self.err = open(log_dir / f"forward-{uuid.uuid4().hex[:6]}.err", "w+")
        env = dict(os.environ)
        env.pop("STREAMPROC_BOOTSTRAP", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "alerts", "forward", "--bootstrap", bootstrap, "--webhook", webhook_url,
             "--alerts-topic", topics[0], "--retrain-topic", topics[1], "--group-id", group_id, *extra],
            stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)

    def text(self):
        self.out.flush()
        self.err.flush()
        self.out.seek(0)
        self.err.seek(0)
        return self.out.read(), self.err.read()

    def stop(self, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail("the forwarder did not stop on SIGTERM")
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


@pytest.fixture
def forwarders(bootstrap, tmp_path):
    started = []

    def start(webhook_url, topics, group_id, *extra):
        f = ForwarderProcess(bootstrap, webhook_url, topics, group_id, tmp_path, *extra)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def new_topics(bootstrap) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    topics = [f"drift-alerts-{tag}", f"retrain-requests-{tag}"]
    asyncio.run(kafka.ensure_topics(bootstrap, topics, 1))  # one partition each: a defined order
    return topics


@pytest.mark.integration
def test_forwards_each_alert_once_in_order_retrying_and_resuming_after_restart(bootstrap, forwarders):
    from .test_integration import produce

    topics = new_topics(bootstrap)
    a1, a2, a3 = alert(), alert(feature="x1"), alert(model="churn", feature="x2")
    r1 = retrain_request([a1["alert_id"]])
    # a1 is published twice, as a worker replaying after a crash would
    produce(bootstrap, topics[0], [json.dumps(a).encode() for a in (a1, a2, a1, a3)],
            keys=[a["model_id"].encode() for a in (a1, a2, a1, a3)])
    produce(bootstrap, topics[1], [json.dumps(r1).encode()], keys=[b"fraud"])

    hook = Webhook(failures=[(503, None), (503, "0"), (429, "0")])
    group = f"fwd-{uuid.uuid4().hex[:8]}"
    try:
        fwd = forwarders(hook.url, topics, group, "--from-beginning", "--max-retries", "5")
        wanted = {a1["alert_id"], a2["alert_id"], a3["alert_id"], r1["request_id"]}

        def all_delivered():
            assert fwd.proc.poll() is None, fwd.text()
            return set(hook.ids()) >= wanted

        wait_until(all_delivered, 90, "every alert and retrain request at the webhook")
        assert fwd.stop() == 0, fwd.text()
        out, err = fwd.text()

        ids = hook.ids()
        assert sorted(ids) == sorted(wanted), "each distinct id exactly once"
        assert [i for i in ids if i != r1["request_id"]] == [a1["alert_id"], a2["alert_id"], a3["alert_id"]]
        # three failed attempts, all for the first message forwarded, then it went through
        failed = [r for r in hook.requests if r["status"] != 200]
        assert [r["status"] for r in failed] == [503, 503, 429]
        assert {r["headers"]["Idempotency-Key"] for r in failed} == {ids[0]}
        assert hook.requests[3]["headers"]["Idempotency-Key"] == ids[0]
        by_id = {r["headers"]["Idempotency-Key"]: r for r in hook.delivered()}
        assert by_id[a1["alert_id"]]["body"] == a1 and by_id[r1["request_id"]]["body"] == r1
        assert by_id[a1["alert_id"]]["headers"]["Content-Type"] == "application/json"
        assert by_id[a1["alert_id"]]["path"] == "/hooks/drift"
        assert err.count("retry ") == 3, err
        assert "forwarded 4, duplicates not forwarded 1, retries 3" in out, out

        # Restarted in the same group, it resumes after what was delivered: only the new alert.
        a4 = alert(feature="x3")
        produce(bootstrap, topics[0], [json.dumps(a4).encode()], keys=[b"fraud"])
        fwd2 = forwarders(hook.url, topics, group, "--from-beginning")
        wait_until(lambda: a4["alert_id"] in hook.ids() or fwd2.proc.poll() is not None, 90, "the new alert")
        assert fwd2.stop() == 0, fwd2.text()
        assert hook.ids() == ids + [a4["alert_id"]]
    finally:
        hook.close()


@pytest.mark.integration
def test_an_undeliverable_alert_stops_the_forwarder_and_a_restart_delivers_it(bootstrap, forwarders):
    from .test_integration import produce

    topics = new_topics(bootstrap)
    a1, a2 = alert(), alert(feature="x1")
    produce(bootstrap, topics[0], [json.dumps(a).encode() for a in (a1, a2)], keys=[b"fraud", b"fraud"])
    group = f"fwd-{uuid.uuid4().hex[:8]}"
    down = Webhook(failures=[(500, None)] * 1000)
    try:
        fwd = forwarders(down.url, topics, group, "--from-beginning", "--max-retries", "1")
        wait_until(lambda: fwd.proc.poll() is not None, 90, "the forwarder to give up")
        out, err = fwd.text()
        assert fwd.proc.returncode == 1, (out, err)
        lines = [line for line in err.splitlines() if "error" in line]
        assert len(lines) == 1 and a1["alert_id"] in lines[0] and "gave up after 2 attempt(s)" in lines[0], err
        assert "Traceback" not in err
        assert [r["headers"]["Idempotency-Key"] for r in down.requests] == [a1["alert_id"]] * 2
    finally:
        down.close()

    up = Webhook()
    try:
        fwd = forwarders(up.url, topics, group)  # no --from-beginning: the committed position decides
        wait_until(lambda: len(up.ids()) >= 2 or fwd.proc.poll() is not None, 90, "both alerts after the restart")
        assert fwd.stop() == 0, fwd.text()
        assert up.ids() == [a1["alert_id"], a2["alert_id"]]
    finally:
        up.close()


@pytest.mark.integration
def test_a_committed_offset_past_the_log_reads_the_log_from_its_beginning(bootstrap, forwarders):
    """A committed position the log no longer holds (retention removed it, or the topic was
    recreated) is read from the log's beginning: forwarded again rather than lost. Only a
    partition without any committed offset starts at the end (without --from-beginning)."""
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    from .test_integration import produce

    topics = new_topics(bootstrap)
    group = f"fwd-{uuid.uuid4().hex[:8]}"
    a1, a2, a3 = alert(), alert(feature="x1"), alert(feature="x2")
    produce(bootstrap, topics[0], [json.dumps(a).encode() for a in (a1, a2)], keys=[b"fraud", b"fraud"])

    async def commit_past_the_end():
        consumer = kafka.consumer(bootstrap, group_id=group)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topics[0], 0)])
            await consumer.commit({TopicPartition(topics[0], 0): OffsetAndMetadata(1000, "")})
        finally:
            await consumer.stop()

    asyncio.run(commit_past_the_end())
    hook = Webhook()
    try:
        fwd = forwarders(hook.url, topics, group)
        wait_until(lambda: len(hook.ids()) >= 2 or fwd.proc.poll() is not None, 90, "the log's alerts", detail=fwd.text)
        # The retrain topic had no committed offset: it starts at its end, and a new request is forwarded.
        r1 = retrain_request([a1["alert_id"]])
        produce(bootstrap, topics[1], [json.dumps(r1).encode()], keys=[b"fraud"])
        produce(bootstrap, topics[0], [json.dumps(a3).encode()], keys=[b"fraud"])
        wait_until(lambda: len(hook.ids()) >= 4 or fwd.proc.poll() is not None, 90, "the new ones", detail=fwd.text)
        assert fwd.stop() == 0, fwd.text()
        ids = hook.ids()
        assert sorted(ids) == sorted([a1["alert_id"], a2["alert_id"], a3["alert_id"], r1["request_id"]]), fwd.text()
        assert [i for i in ids if i != r1["request_id"]] == [a1["alert_id"], a2["alert_id"], a3["alert_id"]]
        assert "out of range" in fwd.text()[1], fwd.text()
    finally:
        hook.close()


def test_a_stop_while_the_topics_are_made_is_a_clean_one():
    # SIGTERM or SIGINT while the forwarder still waited for Kafka (up to 15 s, to make its
    # topics) killed it (-15) or exited 130, where the README promises a clean stop, exit 0.
    import os
    import signal
    import socket

    from streamproc.forward import forward

    with socket.socket() as s:  # a port nothing listens on: Kafka is not there (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        task = asyncio.create_task(forward(f"127.0.0.1:{port}", "http://127.0.0.1:1/x", ["alerts-x"], "g"))
        while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # until the forwarder handles it
            assert not task.done()
            await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(task, 10)

    counts = asyncio.run(main())
    assert counts.forwarded == 0 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
