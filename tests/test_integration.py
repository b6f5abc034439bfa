"""End to end through the real broker: a producer that is not streamproc's code (librdkafka via
confluent-kafka) sends JSON that follows the schemas; a worker process turns it into alerts,
retrain requests and dead letters, and shows the counts on /metrics.
"""

from __future__ import annotations

import base64
import json
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from jsonschema import Draft202012Validator

from streamproc.synth import Drift, ModelStream

from .conftest import ROOT, unique_topics, wait_until

pytestmark = pytest.mark.integration

SCHEMAS = ROOT / "schemas"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.v1.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def produce(bootstrap: str, topic: str, payloads: list, keys=None) -> None:
    """Send with librdkafka; ``keys`` None means random keys (streamproc must not care)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10, "acks": "all"})
    rng = random.Random(7)
    errors = []
    for i, value in enumerate(payloads):
        key = keys[i] if keys is not None else rng.randbytes(6)
        while True:
            try:
                p.produce(topic, value=value, key=key, on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors


class TopicReader:
    """Everything on a topic from the beginning, read with librdkafka."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
        })
        # Assigned partitions, not a group subscription: no group join to wait for.
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.messages = []

    def poll(self) -> list:
        for msg in self.consumer.consume(500, timeout=0.2):
            if msg.error() is None:
                self.messages.append(msg)
        return self.messages

    def values(self) -> list[dict]:
        return [json.loads(m.value()) for m in self.messages]

    def close(self) -> None:
        self.consumer.close()


def metric_value(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_drift_alerts_and_retrain_requests_end_to_end(bootstrap, start_worker):
    topics = unique_topics()
    worker = start_worker(topics, "--window-size", "500", "--warmup-size", "1000")
    n = 8000
    streams = [
        ModelStream("alpha", n_numeric=6, n_categorical=1, seed=21, drift=Drift(5000, ("x3",), 1.0)),
        ModelStream("beta", n_numeric=6, n_categorical=2, seed=22, model_version="v2", drift=Drift(5000, ("c1",), new_category_rate=0.4)),
        ModelStream("gamma", n_numeric=6, n_categorical=1, seed=23),
    ]
    events = [list(s.events(n)) for s in streams]
    # beta's c1 is also missing from every 10th event of its last two windows. (The worker merges
    # the randomly keyed partitions by Kafka timestamp, so events produced within the same
    # millisecond may change places, and cross a window boundary.)
    for i in range(n - 1000, n, 10):
        events[1][i]["features"]["c1"] = None
    unseen_share = sum(e["features"]["c1"] == "zz" for e in events[1][n - 500:]) / 500
    assert 0.3 < unseen_share < 0.5
    interleaved = [json.dumps(e[i]).encode() for i in range(n) for e in events]
    produce(bootstrap, topics["predictions"], interleaved)

    status = wait_until(
        lambda: (s := worker.status()) and sum(m["events"] for m in s["models"]) == 3 * n and s,
        90, "the worker to apply every event")
    published = status["published"]
    assert published["dead_letters"] == 0

    alerts_reader = TopicReader(bootstrap, topics["alerts"])
    retrain_reader = TopicReader(bootstrap, topics["retrain"])
    wait_until(lambda: len(alerts_reader.poll()) >= published["alerts"], 30, "all alerts on the alerts topic")
    wait_until(lambda: len(retrain_reader.poll()) >= published["retrain_requests"], 30, "retrain requests on their topic")
    alerts, retrains = alerts_reader.values(), retrain_reader.values()
    alerts_reader.close()
    retrain_reader.close()

    alert_schema, retrain_schema = validator("alert"), validator("retrain_request")
    for a in alerts:
        alert_schema.validate(a)
    for r in retrains:
        retrain_schema.validate(r)

    data_drift = {(a["model_id"], a["model_version"], a["feature"]) for a in alerts if a["type"] == "data_drift"}
    assert ("alpha", "default", "x3") in data_drift
    assert ("beta", "v2", "c1") in data_drift
    # Only the drifted features alert; the stationary model raises nothing at all.
    assert data_drift <= {("alpha", "default", "x3"), ("beta", "v2", "c1")}
    assert [a for a in alerts if a["model_id"] == "gamma"] == []
    # Drift begins at event 5000 = warmup 1000 + 8 windows of 500: the first drifted window is #8.
    first = min(a["window"]["index"] for a in alerts if a["feature"] == "x3")
    assert first == 8
    assert len({a["alert_id"] for a in alerts}) == len(alerts)

    by_model = {r["model_id"]: r for r in retrains}
    assert "alpha" in by_model and "x3" in by_model["alpha"]["drifted_features"]
    alert_ids = {a["alert_id"] for a in alerts}
    assert set(by_model["alpha"]["alert_ids"]) <= alert_ids

    text = worker.metrics()
    assert metric_value(text, "streamproc_events_consumed_total", model_id="alpha", model_version="default") == n
    assert metric_value(text, "streamproc_events_consumed_total", model_id="beta", model_version="v2") == n
    assert metric_value(text, "streamproc_alerts_total", model_id="alpha", type="data_drift", severity="critical") >= 1
    assert metric_value(text, "streamproc_psi", model_id="alpha", model_version="default", feature="x3") > 0.25
    assert metric_value(text, "streamproc_psi", model_id="gamma", model_version="default", feature="x3") < 0.1
    p05, p50, p95 = (metric_value(text, "streamproc_prediction_score_quantile", model_id="gamma", model_version="default",
                                  quantile=q) for q in ("0.05", "0.5", "0.95"))
    assert 0 < p05 < p50 < p95 < 1
    # Every statistic of the latest window, and its threshold: psi (as streamproc_psi), the
    # missing and unseen-category shares of beta's c1 in its last window, nothing missing for
    # gamma, and the score's stream detectors under their thresholds for the stationary model.
    def statistic(model_id, version, feature, detector, name="streamproc_statistic"):
        return metric_value(text, name, model_id=model_id, model_version=version, feature=feature, detector=detector)

    def threshold(*labels):
        return statistic(*labels, name="streamproc_statistic_threshold")

    for model_id, version, feature in [("alpha", "default", "x3"), ("gamma", "default", "x3"), ("beta", "v2", "c1"),
                                       ("alpha", "default", "prediction.score"), ("beta", "v2", "prediction.label")]:
        labels = dict(model_id=model_id, model_version=version, feature=feature)
        assert statistic(model_id, version, feature, "psi") == metric_value(text, "streamproc_psi", **labels)
        assert threshold(model_id, version, feature, "psi") == metric_value(text, "streamproc_psi_threshold", **labels)
    assert statistic("alpha", "default", "x3", "psi") > threshold("alpha", "default", "x3", "psi")
    # 50 of the window's 500 events miss c1, give or take the 5 that same-millisecond events
    # crossing the window's edges can move; compared in events (0.09 is not within 0.01 of 0.1
    # in floating point).
    assert 45 <= round(statistic("beta", "v2", "c1", "missing_rate") * 500) <= 55
    assert statistic("beta", "v2", "c1", "unseen_categories") == pytest.approx(unseen_share, abs=0.03)
    assert 0.05 <= threshold("beta", "v2", "c1", "missing_rate") < 0.08  # z-test or the 5-point minimum
    assert 0.05 <= threshold("beta", "v2", "c1", "unseen_categories") < 0.15
    assert statistic("gamma", "default", "c0", "unseen_categories") == 0.0
    assert statistic("gamma", "default", "x3", "missing_rate") == 0.0
    assert threshold("gamma", "default", "x3", "missing_rate") >= 0.05
    assert statistic("gamma", "default", "x3", "unseen_categories") is None  # numeric: no categories
    assert 0 <= statistic("gamma", "default", "prediction.score", "adwin") < threshold(
        "gamma", "default", "prediction.score", "adwin") == 0.1
    assert 0 <= statistic("gamma", "default", "prediction.score", "page_hinkley") < threshold(
        "gamma", "default", "prediction.score", "page_hinkley") == 40
    # Drift still active at the end of the stream, for the drifted feature only.
    assert metric_value(text, "streamproc_drift_active", model_id="alpha", model_version="default", type="data_drift",
                        feature="x3") == 1
    assert metric_value(text, "streamproc_drift_active", model_id="gamma") is None
    assert metric_value(text, "streamproc_alert_latency_seconds_count") >= 1
    # The synthetic events are dated 2026-01-01: their alerts come long after their event time.
    assert metric_value(text, "streamproc_event_time_to_alert_seconds_bucket", le="86400.0") == 0
    assert metric_value(text, "streamproc_event_time_to_alert_seconds_count") >= 1
    assert metric_value(text, "streamproc_features") >= 6 + 6 + 2 + 6
    # Caught up: no lag left on any input partition (the metric is refreshed at most once a second).
    wait_until(lambda: (t := worker.metrics()) and "streamproc_consumer_lag_messages{" in t and all(
        float(line.rsplit(" ", 1)[1]) == 0 for line in t.splitlines()
        if line.startswith("streamproc_consumer_lag_messages{")), 30, "zero consumer lag")


def test_malformed_messages_are_dead_lettered_and_good_ones_counted(bootstrap, start_worker):
    topics = unique_topics()
    worker = start_worker(topics, "--window-size", "100", "--warmup-size", "100")
    good = [json.dumps(e).encode() for e in ModelStream("delta", n_numeric=3, seed=5).events(400)]
    bad = {
        b"this is not json": "not valid JSON",
        b'{"event_id": "x1", "model_id": "delta", "ts": 1.0, "features": {}}': "prediction",  # missing field
        b'{"event_id": 5, "model_id": "delta", "ts": 1.0, "features": {}, "prediction": 0.5}': "event_id",  # wrong type
        b'{"event_id": "x3", "model_id": "delta", "ts": "2026-01-01T00:00:00", "features": {}, "prediction": 0.5}': "UTC offset",
        b'{"event_id": "x4", "model_id": "delta", "ts": 1.0, "features": {"a": [1, 2]}, "prediction": 0.5}': "features",
        b'[1, 2, 3]': "object",
        # epoch milliseconds read as seconds: 55,000 years ahead of the worker's clock
        b'{"event_id": "x5", "model_id": "delta", "ts": 1767225600000, "features": {}, "prediction": 0.5}': "milliseconds",
    }
    payloads = list(good)
    for i, raw in enumerate(bad):  # spread the bad messages among the good ones
        payloads.insert(50 * (i + 1), raw)
    produce(bootstrap, topics["predictions"], payloads, keys=[b"k"] * len(payloads))  # one partition: offsets known
    # A tombstone is not an event either, nor is a zero-length value: both are empty messages.
    produce(bootstrap, topics["predictions"], [None, b""], keys=[b"k"] * 2)

    reader = TopicReader(bootstrap, topics["dead_letter"])
    letters = wait_until(lambda: len(reader.poll()) >= len(bad) + 2 and reader.values(), 60, "dead letters")
    reader.close()
    assert len(letters) == len(bad) + 2
    schema = validator("dead_letter")
    for letter in letters:
        schema.validate(letter)
        assert letter["source_topic"] == topics["predictions"]
    by_payload = {base64.b64decode(x["payload"]): x for x in letters}
    for raw, expected in bad.items():
        assert raw in by_payload, raw
        assert expected in by_payload[raw]["error"], (raw, by_payload[raw]["error"])
        # the offset points at the original message
        assert by_payload[raw]["source_offset"] == payloads.index(raw)
    empty = sorted(x["error"] for x in letters if base64.b64decode(x["payload"]) == b"")
    assert empty == ["empty message (null value)", "empty message (zero-length value)"], empty

    status = wait_until(lambda: (s := worker.status()) and s["models"] and s["models"][0]["events"] == len(good) and s,
                        30, "the good events to be applied")
    assert status["models"][0]["model_id"] == "delta"
    assert worker.proc.poll() is None, "the worker must keep running"
    text = worker.metrics()
    assert metric_value(text, "streamproc_events_dead_lettered_total", topic=topics["predictions"], reason="invalid_json") == 1
    assert metric_value(text, "streamproc_events_dead_lettered_total", topic=topics["predictions"], reason="invalid_event") == len(bad) - 1
    assert metric_value(text, "streamproc_events_dead_lettered_total", topic=topics["predictions"], reason="empty") == 2
    assert metric_value(text, "streamproc_events_consumed_total", model_id="delta", model_version="default") == len(good)


@pytest.mark.parametrize("route", ["direct", "repartition"])
def test_events_beyond_max_models_are_dead_lettered_with_their_offsets(bootstrap, start_worker, route):
    topics = unique_topics()
    worker = start_worker(topics, "--window-size", "50", "--warmup-size", "50", "--route", route,
                          env={"STREAMPROC_MAX_MODELS": "1"})
    first = [json.dumps(e).encode() for e in ModelStream("one", n_numeric=2, seed=1).events(120)]
    second = [json.dumps(e).encode() for e in ModelStream("two", n_numeric=2, seed=2).events(5)]
    payloads = first[:100] + second + first[100:]  # one partition: offsets known
    produce(bootstrap, topics["predictions"], payloads[:100], keys=[b"k"] * 100)
    # "one" is the model this worker monitors (which model of a batch comes first is not
    # defined: the worker may route them through different partitions).
    wait_until(lambda: (s := worker.status()) and s["models"], 30, "the first model")
    produce(bootstrap, topics["predictions"], payloads[100:], keys=[b"k"] * (len(payloads) - 100))
    reader = TopicReader(bootstrap, topics["dead_letter"])
    letters = wait_until(lambda: len(reader.poll()) >= len(second) and reader.values(), 60, "dead letters")
    reader.close()
    assert sorted(x["source_offset"] for x in letters) == list(range(100, 105))
    for letter in letters:
        assert "too many models: two/default would exceed max_models (1)" in letter["error"]
        assert base64.b64decode(letter["payload"]) == payloads[letter["source_offset"]]
    status = wait_until(lambda: (s := worker.status()) and s["models"] and s["models"][0]["events"] == len(first) and s,
                        30, "the first model's events to be applied")
    assert [m["model_id"] for m in status["models"]] == ["one"]


def test_outcomes_are_validated_and_counted(bootstrap, start_worker):
    topics = unique_topics()
    worker = start_worker(topics)
    outcomes = [json.dumps({"event_id": f"e{i}", "model_id": "omega", "ts": 1767225600 + i, "label": "1"}).encode() for i in range(30)]
    outcomes.append(b'{"event_id": "e-x", "model_id": "omega", "ts": 1767225600}')  # neither label nor value
    produce(bootstrap, topics["outcomes"], outcomes)
    reader = TopicReader(bootstrap, topics["dead_letter"])
    letters = wait_until(lambda: reader.poll() and reader.values(), 60, "the bad outcome's dead letter")
    reader.close()
    assert [x["error"] for x in letters] == ["invalid event: an outcome needs a label or a value"]
    wait_until(lambda: metric_value(worker.metrics(), "streamproc_outcomes_consumed_total", model_id="omega") == 30,
               30, "outcomes to be counted")


def test_broker_command_prints_bootstrap_and_stops_on_sigint(tmp_path):
    from streamproc.broker import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamproc", "broker", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert f"bootstrap: 127.0.0.1:{port}" in line
        p = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        p.produce("smoke", b"hello")
        assert p.flush(20) == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def start_worker_with_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    """Run ``streamproc worker`` with this config file (the broker address is never reached)."""
    cfg = tmp_path / "streamproc.yaml"
    cfg.write_text(text)
    return subprocess.run([sys.executable, "-m", "streamproc", "worker", "--bootstrap", "127.0.0.1:1", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_bad_config_fails_at_start_naming_the_field(tmp_path):
    proc = start_worker_with_config(tmp_path, "defaults:\n  psi:\n    warning: -1\n")
    assert proc.returncode == 2
    assert "defaults.psi.warning" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reference_file_named_in_config_is_used_without_warmup(bootstrap, start_worker, tmp_path):
    from streamproc.reference_file import build_reference_file

    train = tmp_path / "train.jsonl"
    train.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in ModelStream("kappa", n_numeric=4, seed=31).events(5000)))
    subprocess.run([sys.executable, "-m", "streamproc", "reference", "build", "--model", "kappa", "--version", "v7",
                    "--input", str(train), "--output", str(tmp_path / "kappa.json")], check=True, cwd=ROOT)
    cfg = tmp_path / "streamproc.yaml"
    cfg.write_text("models:\n  kappa:\n    reference_file: kappa.json\n    window_size: 500\n")
    topics = unique_topics()
    worker = start_worker(topics, "--config", str(cfg), "--warmup-size", "3000")
    # Version v7 drifts from its very first event: with the file as reference there is no
    # warmup, so window #0 alerts. Version v8 has no reference file and warms up first.
    drifted = [dict(e, model_version="v7") for e in ModelStream("kappa", n_numeric=4, seed=32, drift=Drift(0, ("x1",), 1.5)).events(1000)]
    other = [dict(e, model_version="v8") for e in ModelStream("kappa", n_numeric=4, seed=33).events(1000)]
    produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in drifted + other])
    status = wait_until(lambda: (s := worker.status()) and sum(m["events"] for m in s["models"]) == 2000 and s,
                        60, "all events applied")
    models = {m["model_version"]: m for m in status["models"]}
    assert models["v7"]["reference"] == "file:train.jsonl" and not models["v7"]["warming_up"]
    assert models["v8"]["warming_up"] and models["v8"]["reference"] is None
    reader = TopicReader(bootstrap, topics["alerts"])
    alerts = wait_until(lambda: len(reader.poll()) >= status["published"]["alerts"] and reader.values(), 30, "alerts")
    reader.close()
    x1 = [a for a in alerts if a["feature"] == "x1"]
    assert x1 and x1[0]["model_version"] == "v7" and x1[0]["window"]["index"] == 0
    assert all(a["model_version"] == "v7" for a in alerts)


def test_missing_reference_file_fails_at_start(tmp_path):
    proc = start_worker_with_config(tmp_path, "models:\n  kappa:\n    reference_file: nowhere.json\n")
    assert proc.returncode == 2
    assert "models.kappa.reference_file" in proc.stderr and "nowhere.json" in proc.stderr


def test_reference_published_to_the_topic_is_picked_up_by_a_running_worker(bootstrap, start_worker, tmp_path):
    topics = unique_topics()
    topics["references"] = f"model-references-{topics['alerts'][-8:]}"
    worker = start_worker(topics, "--window-size", "500", "--warmup-size", "5000")
    produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in ModelStream("rho", n_numeric=4, seed=41).events(300)])
    wait_until(lambda: (s := worker.status()) and s["models"] and s["models"][0]["warming_up"] and s["models"][0]["events"] == 300,
               60, "rho to be warming up")
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in ModelStream("rho", n_numeric=4, seed=42).events(4000)))
    subprocess.run([sys.executable, "-m", "streamproc", "reference", "build", "--model", "rho", "--input", str(train),
                    "--publish", "--bootstrap", bootstrap, "--topic", topics["references"]], check=True, cwd=ROOT)
    wait_until(lambda: (s := worker.status()) and s["models"][0]["reference"] == "file:train.jsonl", 60,
               "the worker to adopt the published reference")
    drifted = ModelStream("rho", n_numeric=4, seed=43, drift=Drift(0, ("x2",), 1.5)).events(1000, start=300)
    produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in drifted])
    status = wait_until(lambda: (s := worker.status()) and s["models"][0]["events"] == 1300 and s, 60, "the drifted events")
    reader = TopicReader(bootstrap, topics["alerts"])
    alerts = wait_until(lambda: len(reader.poll()) >= status["published"]["alerts"] and reader.values(), 30, "alerts")
    reader.close()
    x2 = [a for a in alerts if a["feature"] == "x2" and a["type"] == "data_drift"]
    assert x2 and x2[0]["window"]["index"] == 0


def test_a_malformed_reference_on_the_topic_is_dead_lettered_and_workers_still_start(bootstrap, start_worker):
    """The references topic is read from its beginning at every start: a profile whose ids
    could not be a model version's stopped the worker there (TypeError: unhashable type),
    at every restart, until someone wrote a tombstone for it."""
    import orjson

    from streamproc.profile import build_reference

    topics = unique_topics()
    topics["references"] = f"model-references-{topics['alerts'][-8:]}"
    events = list(ModelStream("rho", n_numeric=4, seed=44).events(500))
    good = build_reference("rho", "default", [e["features"] for e in events], [e["prediction"]["score"] for e in events],
                           source="file:good.json").to_dict()
    bad = [dict(good, model_id=["rho"]), dict(good, model_version={"v": 1}), dict(good, model_id=None),
           dict(good, model_id="rho\tx"), dict(good, count="500")]
    produce(bootstrap, topics["references"], [orjson.dumps(d) for d in bad + [good]], keys=[b"rho"] * (len(bad) + 1))
    for _ in range(2):  # and again after a restart
        worker = start_worker(topics, "--window-size", "500")
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in ModelStream("rho", n_numeric=4, seed=45).events(10)])
        wait_until(lambda: (s := worker.status()) and s["models"] and s["models"][0]["reference"] == "file:good.json", 60,
                   "the good reference to be applied", detail=lambda: json.dumps(worker.status())[:2000])
        worker.stop()
    reader = TopicReader(bootstrap, topics["dead_letter"])
    letters = wait_until(lambda: len(reader.poll()) >= 2 * len(bad) and reader.values(), 60, "dead letters")
    reader.close()
    errors = [letter["error"] for letter in letters]
    assert len(errors) == 2 * len(bad) and all(e.startswith("invalid reference profile: ValueError: ") for e in errors), errors
    assert sum("model_id must be" in e for e in errors) == 2 * 3 and sum("count must be" in e for e in errors) == 2


def test_reference_over_a_megabyte_is_published_and_picked_up(bootstrap, start_worker, tmp_path):
    """Kafka's default message limit (1 MB) is not the references topic's (16 MiB): long
    category names over hundreds of categories pass the first."""
    topics = unique_topics()
    topics["references"] = f"model-references-{topics['alerts'][-8:]}"
    worker = start_worker(topics, "--window-size", "500", "--warmup-size", "5000")
    produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in ModelStream("tau", n_numeric=3, seed=61).events(10)])
    wait_until(lambda: (s := worker.status()) and s["models"] and s["models"][0]["warming_up"], 60, "tau to be warming up")
    rng = random.Random(62)
    rows = []
    for e in ModelStream("tau", n_numeric=3, seed=63).events(1500):
        e["features"].update({f"tag{j}": f"{j}-{rng.randrange(1000):04d}-" + "k" * 120 for j in range(10)})
        rows.append(json.dumps(e).encode() + b"\n")
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"".join(rows))
    done = subprocess.run([sys.executable, "-m", "streamproc", "reference", "build", "--model", "tau", "--input", str(train),
                           "--max-categories", "1000", "--publish", "--bootstrap", bootstrap, "--topic", topics["references"]],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    size = int(re.search(r"\(([\d,]+) bytes\)", done.stdout).group(1).replace(",", ""))
    assert size > 1_100_000
    wait_until(lambda: (s := worker.status()) and s["models"][0]["reference"] == "file:train.jsonl", 60,
               "the worker to adopt the published reference")


def test_concept_drift_from_outcomes_arriving_after_their_predictions(bootstrap, start_worker):
    topics = unique_topics()
    worker = start_worker(topics, "--window-size", "500", "--warmup-size", "1000")
    # Outcomes already flow for this model (an earlier one, for a prediction we never saw).
    produce(bootstrap, topics["outcomes"], [json.dumps({"event_id": "old", "model_id": "sigma", "ts": 1.0, "label": "1"}).encode()])
    wait_until(lambda: metric_value(worker.metrics(), "streamproc_outcome_joins_total", model_id="sigma", result="unmatched") == 1,
               60, "the first outcome")
    n, change = 8000, 4000
    events = list(ModelStream("sigma", n_numeric=3, seed=51).events(n))
    produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in events])
    wait_until(lambda: (s := worker.status()) and s["models"] and s["models"][0]["events"] == n, 60, "predictions applied")
    # Much later (event time + 1 day) the labels arrive: 90 % right, then 65 % right.
    rng = random.Random(5)
    outcomes = []
    for i, e in enumerate(events):
        right = rng.random() < (0.9 if i < change else 0.65)
        predicted = e["prediction"]["label"]
        truth = predicted if right else ("0" if predicted == "1" else "1")
        outcomes.append(json.dumps({"event_id": e["event_id"], "model_id": "sigma", "ts": e["ts"] + 86400, "label": truth}).encode())
    produce(bootstrap, topics["outcomes"], outcomes)
    wait_until(lambda: metric_value(worker.metrics(), "streamproc_outcome_joins_total", model_id="sigma", result="matched") == n,
               60, "every outcome joined")
    status = worker.status()
    reader = TopicReader(bootstrap, topics["alerts"])
    alerts = wait_until(lambda: len(reader.poll()) >= status["published"]["alerts"] and reader.values(), 30, "alerts")
    reader.close()
    concept = [a for a in alerts if a["type"] == "concept_drift"]
    assert concept, alerts
    assert all(a["signal"] == "error" and a["model_id"] == "sigma" for a in concept)
    validator("alert").validate(concept[0])
    text = worker.metrics()
    error = metric_value(text, "streamproc_error_rate", model_id="sigma", model_version="default")
    assert 0.28 < error < 0.42  # the last 1000 labelled predictions: 35 % wrong
    # The error's stream detectors, in baseline sigmas (about 0.3 for 10 % wrong): ADWIN's window
    # mean rose by 0.25, to about 0.8 sigma (0.44 even over all errors after the baseline).
    labels = dict(model_id="sigma", model_version="default", feature="error")
    assert metric_value(text, "streamproc_statistic", detector="adwin", **labels) > 0.3
    assert metric_value(text, "streamproc_statistic_threshold", detector="adwin", **labels) == 0.1
    assert metric_value(text, "streamproc_statistic", detector="page_hinkley", **labels) >= 0
    assert metric_value(text, "streamproc_statistic_threshold", detector="page_hinkley", **labels) == 40


def test_a_new_model_version_gets_its_own_state_and_reference(bootstrap, start_worker):
    """v2 of a model, retrained on data that differs from v1's, warms up on its own events:
    it is not compared with v1's reference (no drift alerts), and v1's state is kept."""
    topics = unique_topics()
    worker = start_worker(topics, "--window-size", "500", "--warmup-size", "1000")
    v1 = [dict(e, model_version="v1") for e in ModelStream("omega", n_numeric=4, seed=61).events(2000)]
    shifted = ModelStream("omega", n_numeric=4, seed=62, drift=Drift(0, ("x0", "x1"), 1.5))
    v2 = [dict(e, model_version="v2") for e in shifted.events(3000, start=2000)]
    produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in v1 + v2])
    status = wait_until(lambda: (s := worker.status()) and sum(m["events"] for m in s["models"]) == 5000 and s,
                        60, "both versions applied")
    models = {m["model_version"]: m for m in status["models"]}
    assert set(models) == {"v1", "v2"}
    assert models["v1"]["events"] == 2000 and models["v2"]["events"] == 3000
    assert not models["v1"]["warming_up"] and not models["v2"]["warming_up"]
    assert models["v1"]["reference"] == models["v2"]["reference"] == "warmup"
    # v2's windows were compared with v2's own reference (x0 and x1 stationary there) ...
    assert models["v2"]["latest_psi"]["x0"] < 0.1 and models["v2"]["window"]["index"] >= 3
    text = worker.metrics()
    assert metric_value(text, "streamproc_windows_closed_total", model_id="omega", model_version="v2") >= 4
    assert metric_value(text, "streamproc_events_consumed_total", model_id="omega", model_version="v1") == 2000
    # ... so the version change raised no data drift alert for either version.
    reader = TopicReader(bootstrap, topics["alerts"])
    alerts = wait_until(lambda: len(reader.poll()) >= status["published"]["alerts"] and reader.values() or [None], 30, "alerts")
    reader.close()
    assert [a for a in alerts if a and a["type"] == "data_drift"] == []


def test_warmups_over_their_memory_budget_are_thinned_and_say_so(bootstrap, tmp_path):
    """Eight models warming up at once would hold about 1.5 MB; with a 1 MB budget the worker
    thins them, counts it, logs it and shows each warm-up's stride; a successor restores the
    thinned warm-ups, and the references are built from the events kept."""
    from .conftest import WorkerProcess

    topics = unique_topics()
    group = f"thin-{topics['alerts'][-8:]}"
    args = ("--window-size", "500", "--warmup-size", "2000")
    env = {"STREAMPROC_WARMUP_MEMORY_MB": "1"}
    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, env=env, group_id=group)
    second = None
    try:
        first.wait_ready()
        events = [e for k in range(8) for e in ModelStream(f"w{k}", n_numeric=20, seed=70 + k).events(1000)]
        random.Random(7).shuffle(events)
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in events])
        status = wait_until(lambda: (s := first.status()) and sum(m["events"] for m in s["models"]) == 8000 and s,
                            60, "the events applied")
        warmups = {m["model_id"]: m["warmup"] for m in status["models"]}
        assert all(m["warming_up"] for m in status["models"])
        assert all(w["events"] == 1000 and w["stride"] >= 2 and w["kept"] == -(-1000 // w["stride"])
                   for w in warmups.values()), warmups
        assert metric_value(first.metrics(), "streamproc_warmups_thinned_total") >= 8
        held = wait_until(lambda: metric_value(first.metrics(), "streamproc_warmup_memory_bytes"), 10,
                          "the warm-up memory gauge (updated once a second)")
        assert held <= 2**20
        assert "warm-ups over worker.warmup_memory_mb (1 MB)" in first.log_text()
        assert first.stop() == 0  # a clean stop saves the state

        second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, env=env, group_id=group)
        second.wait_ready()
        restored = {m["model_id"]: m["warmup"] for m in second.status()["models"]}
        assert restored == warmups  # the thinned warm-ups, not replayed
        more = [e for k in range(8) for e in ModelStream(f"w{k}", n_numeric=20, seed=70 + k).events(1000, start=1000)]
        produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in more])
        status = wait_until(lambda: (s := second.status()) and not any(m["warming_up"] for m in s["models"]) and s,
                            60, "the references built")
        assert all(m["warmup"] is None and m["reference"] == "warmup" and m["events"] == 2000 for m in status["models"])
        wait_until(lambda: metric_value(second.metrics(), "streamproc_warmup_memory_bytes") == 0, 10,
                   "the warm-up memory gauge back at 0")
    finally:
        first.stop()
        if second is not None:
            second.stop()
