"""Throughput and alert latency of a real worker on a real broker, against a consumer ceiling.

    python benchmarks/throughput.py [--models 3,200] [--events 200000] [--partitions 4]
                                    [--live-rate 20000] [--live-seconds 30] [--routes auto] [--repeat 1]
                                    [--bootstrap HOST:PORT] [--references]

Starts the embedded broker (or uses ``--bootstrap`` / ``STREAMPROC_BOOTSTRAP``). For each
``--models`` scenario a topic of ``--partitions`` partitions is preloaded with ``--events``
prediction events (``ModelStream``: 20 numeric and 2 categorical features; its events are
about 410 bytes, so each is padded to ``--event-bytes`` (750) with an ignored ``context``
field, as real events carry request context; the models interleaved, no keys, so every
partition carries every model; from the middle of each model's stream x0 shifts by 1 sd and
20 % of c0 becomes a new category, so alerts happen). Then, in one run:

(a) **Ceiling**: an aiokafka consumer (the worker's default fetch settings: ``getmany`` of up to
    ``max_batch`` records, ``max_partition_fetch_bytes`` per partition, ``fetch_max_wait_ms``) that ``orjson.loads`` every message, from the beginning of
    the topic to its end, in a subprocess on the worker's core. Rate = messages after the
    first non-empty batch / time from that batch to the last message. aiokafka builds its
    own ``ConsumerRecord``s and checks batch CRCs its own way, as the issue defines the
    ceiling; the worker reads with cheaper records (``streamproc.consumer_records``) and a
    hardware CRC check (``streamproc.batch_crc``), and the same consumer with those is printed
    too (a ceiling that rose with the worker's own improvement would hide it).

(b) **Worker**: ``python -m streamproc worker`` (a subprocess, like ``tests/conftest.py``'s
    ``WorkerProcess``: fresh group id and topics, ``STREAMPROC_TOPIC_*`` variables) reads the
    preloaded topic from the beginning: decode, validate, order, sketches, PSI, detectors,
    alerts published and acknowledged, state checkpoints and offset commits. Its CPU time over
    the measured span (``/proc``) is printed too, per event and as a share of the span (a
    worker near 100 % is CPU-bound: its rate follows its CPU per event); so is the share of
    the span its batches took (decode to commit, from its metrics), which leaves out the
    fetch's own work (reading and unpacking records) as well as the waiting.

    *Start mark.* Readiness is not tied to consumption: ``/healthz`` turns 200 once a
    ``poll`` of an assigned consumer has returned, with or without records. On a preloaded
    topic that poll may already hold a batch, which the worker processes before the HTTP
    handler can answer; or (as in our runs) it comes back before the first fetch has, and
    nothing is consumed yet. So the start mark is not "ready" itself but the first
    ``/metrics`` response after ``/healthz`` says 200: its time ``t0`` and the
    ``streamproc_events_consumed_total`` sum ``c0`` it shows (the event loop is single-threaded,
    so the count is exact at that moment). Process start, imports, topic creation, group join
    and anything consumed before ``t0`` are excluded; rate = ``(N - c0) / (t_end - t0)``.
    (Starting the worker on an empty topic and producing the preload afterwards would measure
    the producer, and stopping the worker with SIGSTOP while producing would expire its group
    session.)

    *End mark.* Polling ``/metrics`` is not free: with 200 models one render takes about
    75 ms of the worker's only core (about 11,000 labelled series), so polling it densely
    would slow what it measures. Instead the preload ends with markers: one event for each
    of ``--partitions`` sentinel models (ids chosen to cover every partition of a routed
    topic), whose reference (published to the references topic before the worker starts)
    lacks a feature the event carries, so the worker publishes a ``data_quality`` / ``schema``
    alert as soon as it processes it; after them, one malformed record per partition with a
    later timestamp pushes the partition-merge horizon past the sentinels (without it the
    last records wait ``max_idle_ms`` = 1 s for their partitions to go idle, which is the
    worker's designed end-of-burst behaviour, not throughput). ``t_end`` is the arrival on
    the alerts topic (seen by this script's consumer, fetch wait 10 ms) of the last sentinel
    alert; records are released in timestamp order, so by then every real event is applied.
    ``/metrics`` is read once more afterwards to check that the count sum is exactly N.

(c) **Alert latency**, after (b), with the same worker: events are produced live at
    ``--live-rate`` events/s for ``--live-seconds`` (librdkafka producer, linger 5 ms, acks
    all), continuing each model's sequence, with x0 and c0 drifted in alternate stretches of
    4 windows (4 windows back to normal clear the drift, so each new stretch alerts again).
    The time every event becomes *available to the worker* is the time its delivery report
    (broker acknowledgement) reaches this script. A window statistic (PSI, missing rate,
    unseen categories) is decided by the event that fills its window, and the alert's
    ``window.end`` is that event's event time, which gives its sequence number (synthetic
    events are ``t0 + i / 100`` s). Latency = arrival of the alert on the alerts topic (this
    script's consumer) minus availability of that event. Stream-detector alerts (ADWIN,
    Page-Hinkley on the score) report the open window, whose ``end`` is the last event of the
    chunk the detector ran on; they are shown on a separate line measured the same way.
    p50/p99 over the alerts measured, with their count, and the window alerts' latency split at
    the worker's ``detected_at`` stamp (same machine clock): event available -> decided (fetch,
    partition merge, batch processing), decided -> on the topic (publish with acks=all, this
    script's fetch). A worker that cannot sustain the live rate would only show its growing
    backlog, so when (b) measured less than ``--live-rate`` the phase runs at half the (b)
    rate instead, and says so. The drain time after the last live event is printed too.

    On the embedded broker, latency is dominated by fetch waits: Tansu does not answer a
    waiting fetch when data arrives (a consumer with aiokafka's default ``fetch_max_wait_ms``
    of 500 saw a message 116 ms after producing it at the median, 228 ms at worst, against
    8 ms with 10), and the partition merge releases the newest records only after a later
    fetch has shown every partition past them.

(d) **Two-worker scaling**, after the routes of a scenario, when the repartition route ran: a
    fresh copy of the preload is read by two repartitioning workers in one group, pinned to
    the first two allowed cores; the rate from both being ready to the last sentinel alert,
    against the one repartitioning worker of (b), with the events each applied (a model lives
    in one worker, so with few models the split, and the speed-up, depend on which routed
    partitions their ids hash to). Runs by default with 4 cores or more (two workers plus the
    broker and the producer); ``--two-workers force`` runs it on fewer cores, where it shows
    CPU sharing, not scaling, and says so; ``--two-workers off`` skips it. With each run, the
    same span in CPU time (``/proc``): each worker's CPU seconds and events applied, and the
    speed-up two CPU-bound workers on cores of their own would reach (the busier one's CPU
    time against one repartitioning worker's CPU cost for all the events, from (b)). On too
    few cores this is the figure that can be had; it cannot show waits on the broker.

With ``--routes auto`` and a streamproc that has ``worker.route``, (b) and (c) run once per
route (``direct``: one worker reads the input topic; ``repartition``: input forwarded to a
topic keyed by model, then monitored), each on a fresh copy of the preload.

Placement: on a machine with 2+ cores and ``taskset``, the worker and the ceiling consumer
run on the first allowed core, and this script, the embedded broker and the producer on the
others. Figures are from a shared machine: other work on it makes them noisy.

``--repeat N`` runs (a) and (b) N times per scenario, alternating, each time on a freshly
preloaded topic, and (c) only in the last; the summary gives the median ceiling, the median
worker rate and the median of the N paired ratios, with every run (this machine's noise moves
single runs by +-20 %, more than most single optimisations).

Window settings: the configured defaults (window 1000, warm-up 2000) when every model gets
at least warm-up + 4 windows (6000 events); with fewer (200 models x 1000 events) the defaults would leave every
model warming up and the benchmark would measure buffering, so window = events per model /
5 and warm-up = 2 windows, printed in the scenario's header.

``--references``: every model's reference is published to the references topic before the
worker starts (built as ``streamproc reference build`` would, from 2,000 events of its
undrifted stream), and every scenario runs with the default settings: no model warms up, so
the run measures a worker that monitors its models (with 200 models x 1,000 events, one
window each), as it does once their references exist, not one building them. The latency
phase drifts in stretches of 4 windows of 1,000 events per model, which 200 models reach only
after 800,000 live events: with many models, measure latency without ``--references``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import orjson

T0 = 1_767_225_600.0  # ModelStream's default t0
RATE = 100.0  # ModelStream's default events per second of event time
SENTINEL = "zz-end"
ALLOWED_CORES: list[int] = []  # before this process pins itself


# -- helpers ---------------------------------------------------------------------------------
def pad(event: bytes, size: int) -> bytes:
    """``event`` grown to ``size`` bytes with an ignored request-context field (no-op if already that big)."""
    fill = size - len(event) - len(b',"context":{"trace":""}')
    if fill <= 0:
        return event
    return event[:-1] + b',"context":{"trace":"' + b"0" * fill + b'"}}'


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def ms(x: float) -> str:
    return "-" if x != x else f"{x * 1000:,.0f} ms"


def metric_lines(text: str, name: str) -> list[tuple[str, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out.append((labels, float(value)))
    return out


def events_consumed(text: str) -> int:
    return int(sum(v for labels, v in metric_lines(text, "streamproc_events_consumed_total")
                   if f'model_id="{SENTINEL}' not in labels))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from ``/proc`` (NaN where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def http_text(url: str, timeout: float = 30.0) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def placement() -> tuple[list[str], str]:
    """Pin this process (and so the broker it starts and librdkafka's threads) off the worker's core."""
    cores = sorted(os.sched_getaffinity(0))
    ALLOWED_CORES.extend(cores)
    if len(cores) >= 2 and shutil.which("taskset"):
        worker_core, others = cores[0], set(cores[1:])
        os.sched_setaffinity(0, others)
        return (["taskset", "-c", str(worker_core)],
                f"worker and ceiling consumer on core {worker_core} (taskset -c {worker_core}); "
                f"broker, producer and this script on core(s) {','.join(map(str, sorted(others)))}")
    return [], "not pinned (taskset missing or a single core): worker, broker and producer share the CPU"


def route_supported() -> bool:
    from streamproc.config import WorkerSettings

    return "route" in WorkerSettings.model_fields


def sentinel_ids(partitions: int) -> list[str]:
    """Sentinel model ids covering every partition of a routed topic (Kafka's murmur2 of the key)."""
    from aiokafka.partitioner import murmur2

    ids: dict[int, str] = {}
    i = 0
    while len(ids) < partitions:
        mid = f"{SENTINEL}-{i}"
        ids.setdefault((murmur2(mid.encode()) & 0x7FFFFFFF) % partitions, mid)
        i += 1
    return [ids[p] for p in range(partitions)]


# -- Kafka plumbing ----------------------------------------------------------------------------
def create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    from streamproc import kafka

    asyncio.run(kafka.ensure_topics(bootstrap, topics, partitions))


def publish_sentinel_references(bootstrap: str, topic: str, ids: list[str]) -> None:
    from streamproc.profile import build_reference

    publish_references(bootstrap, topic, [build_reference(mid, "default", [{"s": float(i % 10)} for i in range(200)], [0.5] * 200)
                                          for mid in ids])


def publish_references(bootstrap: str, topic: str, refs: list) -> None:
    """Publish reference profiles to the (compacted) references topic, with one producer."""
    from streamproc import kafka

    asyncio.run(kafka.publish_references(bootstrap, topic, [ref.to_dict() for ref in refs]))


def scenario_references(sc: "Scenario") -> list:
    """Each model's reference as ``streamproc reference build`` would make it from
    ``REFERENCE_EVENTS`` events of its undrifted stream (another seed, the same distribution),
    with the default settings."""
    from streamproc.config import load_config
    from streamproc.profile import build_reference
    from streamproc.synth import ModelStream

    cfg = load_config(None, environ={}).for_model("any")
    refs = []
    for i in range(sc.models):
        events = list(ModelStream(f"m{i:03d}", n_numeric=20, n_categorical=2, seed=REFERENCE_SEED + i).events(REFERENCE_EVENTS))
        refs.append(build_reference(f"m{i:03d}", "default", [e["features"] for e in events],
                                    [e["prediction"]["score"] for e in events], [e["prediction"]["label"] for e in events],
                                    n_bins=cfg.psi.bins, max_categories=cfg.max_categories))
    return refs


def producer(bootstrap: str, linger_ms: int):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger_ms, "batch.num.messages": 10000,
                     "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_097_151,
                     "enable.idempotence": False, "log.connection.close": False})


def produce(p, topic: str, value: bytes, **kw) -> None:
    while True:
        try:
            p.produce(topic, value, **kw)
            return
        except BufferError:
            p.poll(0.01)


def end_markers(p, topic: str, partitions: int, ids: list[str], phase: str) -> None:
    """Sentinel events (one alert each when applied), then a later malformed record per partition."""
    now = int(time.time() * 1000)
    for mid in ids:
        ev = {"event_id": f"{mid}-{phase}", "model_id": mid, "ts": now / 1000,
              "features": {"s": 1.0, f"end_of_{phase}": 1.0}, "prediction": 0.5}
        produce(p, topic, orjson.dumps(ev), timestamp=now + 1000)
    for part in range(partitions):
        produce(p, topic, b"end-of-input horizon marker (not JSON)", partition=part, timestamp=now + 2000)
    p.flush(60)


class AlertWatch:
    """This script's consumer of the alerts topic: arrival time (monotonic) of every alert."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 10, "auto.offset.reset": "earliest",
                           "log.connection.close": False})
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.alerts: list[tuple[float, dict]] = []

    def poll(self, timeout: float = 0.0) -> int:
        msgs = self.c.consume(500, timeout)
        now = time.monotonic()
        n = 0
        for m in msgs:
            if m.error() is None and m.value():
                self.alerts.append((now, orjson.loads(m.value())))
                n += 1
        return n

    def sentinels(self, phase: str) -> list[float]:
        return [t for t, a in self.alerts if a["model_id"].startswith(SENTINEL) and a["feature"] == f"end_of_{phase}"]

    def close(self) -> None:
        self.c.close()


# -- the scenario's data ---------------------------------------------------------------------
@dataclass
class Scenario:
    models: int
    events: int  # produced, total (per_model * models)
    per_model: int
    window: int
    warmup: int
    defaults: bool
    references: bool = False  # every model's reference published before the worker starts (no warm-up)
    streams: list = field(default_factory=list)
    preload: list[bytes] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.models} model{'s' if self.models != 1 else ''}"


def make_scenario(models: int, events: int, size: int, references: bool = False) -> Scenario:
    from streamproc.synth import Drift, ModelStream

    from streamproc.config import load_config

    per_model = events // models
    cfg = load_config(None, environ={}).for_model("any")
    if references:  # no warm-up: the defaults whatever the events per model
        window, warmup, defaults = cfg.window_size, 0, True
    elif per_model >= cfg.warmup_size + 4 * cfg.window_size:
        window, warmup, defaults = cfg.window_size, cfg.warmup_size, True
    else:
        window = max(per_model // 5, 10)
        warmup, defaults = 2 * window, False
    drift = Drift(per_model // 2, ("x0", "c0"), 1.0, new_category_rate=0.2)
    streams = [ModelStream(f"m{i:03d}", n_numeric=20, n_categorical=2, seed=i, drift=drift) for i in range(models)]
    per = [[pad(orjson.dumps(e), size) for e in s.events(per_model)] for s in streams]
    msgs = [m for group in zip(*per) for m in group]
    return Scenario(models, len(msgs), per_model, window, warmup, defaults, references, streams, msgs)


class LiveEvents:
    """Live events continuing every model's sequence; x0/c0 drifted in alternate 4-window stretches.

    Round-robin over the models, but model m first gets ``m * window / models`` events ahead,
    so the models' windows close at different moments (in lockstep, every model would close
    its window in the same batch and the latency samples would be a handful of batches).
    """

    def __init__(self, sc: Scenario, size: int, total: int):
        from streamproc.synth import Drift, ModelStream

        self.sc = sc
        self.size = size
        self.frags = []  # per model: (clean fragments, drifted fragments), cycled
        pool = self.pool = 1000 if sc.models <= 10 else 500
        for i in range(sc.models):
            pair = []
            for drift in (None, Drift(0, ("x0", "c0"), 1.0, new_category_rate=0.2)):
                s = ModelStream(f"m{i:03d}", n_numeric=20, n_categorical=2, seed=10_000 + i, drift=drift)
                pair.append([orjson.dumps({"features": e["features"], "prediction": e["prediction"]})[1:-1]
                             for e in s.events(pool)])
            self.frags.append(pair)
        n = sc.models
        ahead = np.array([m * sc.window // n for m in range(n)])
        models = np.repeat(np.arange(n), ahead)
        seqs = np.concatenate([np.arange(a) for a in ahead])
        r = np.arange(max(total - len(models), 0))
        models = np.concatenate([models, r % n])[:total]
        seqs = np.concatenate([seqs, ahead[r % n] + r // n])[:total]
        self.inverse = np.full((n, int(seqs.max()) + 1), -1)  # (model, sequence) -> j
        self.inverse[models, seqs] = np.arange(total)
        self.models, self.seqs = models.tolist(), seqs.tolist()

    def event(self, j: int) -> bytes:
        sc = self.sc
        m, k = self.models[j], self.seqs[j]
        idx = sc.per_model + k
        drifted = ((idx - sc.warmup) // sc.window // 4) % 2 == 1
        frag = self.frags[m][drifted][k % self.pool]
        ts = round(T0 + idx / RATE, 3)
        return pad(b'{"event_id":"m%03d-%d","model_id":"m%03d","ts":%s,%s}' % (m, idx, m, repr(ts).encode(), frag), self.size)

    def index_of(self, model_id: str, end_ts: float) -> Optional[int]:
        """The live event index j of a model's event with event time ``end_ts`` (None if not live)."""
        m = int(model_id[1:])
        k = int(round((end_ts - T0) * RATE)) - self.sc.per_model
        if k < 0 or k >= self.inverse.shape[1] or self.inverse[m, k] < 0:
            return None
        return int(self.inverse[m, k])


# -- (a) the ceiling ---------------------------------------------------------------------------
async def _ceiling(bootstrap: str, topic: str, total: int, lean: bool, parse: bool = True,
                   crc: Optional[bool] = None) -> dict:
    """Read ``topic`` from its beginning until ``total`` messages (or 600 s), ``orjson.loads``
    of each unless not ``parse`` (``benchmarks/fetch.py`` measures the fetch alone). ``lean``:
    streamproc's records; ``crc`` (default: as ``lean``): streamproc's batch CRC check."""
    crc = lean if crc is None else crc
    from streamproc import batch_crc, consumer_records, kafka

    from streamproc.config import WorkerSettings

    ws = WorkerSettings()
    c = kafka.consumer(bootstrap, group_id=None, max_poll_records=ws.max_batch,
                       max_partition_fetch_bytes=ws.max_partition_fetch_bytes, fetch_max_wait_ms=ws.fetch_max_wait_ms,
                       **({} if crc else {"check_crcs": True}))
    # aiokafka's own ConsumerRecords and CRC check where asked (kafka.consumer installs streamproc's)
    if not lean:
        consumer_records.uninstall()
    if not crc:
        batch_crc.uninstall()
    await c.start()
    try:
        from aiokafka import TopicPartition

        await c.topics()
        c.assign([TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))])
        await c.seek_to_beginning()
        n = bad = 0
        t_first = None
        n_first = 0
        started = time.perf_counter()
        while n < total:
            records = await c.getmany(timeout_ms=200, max_records=ws.max_batch)
            for msgs in records.values():
                if parse:
                    for m in msgs:
                        try:
                            orjson.loads(m.value)
                        except orjson.JSONDecodeError:
                            bad += 1
                n += len(msgs)
            if t_first is None and n:
                t_first, n_first, cpu_first = time.perf_counter(), n, time.process_time()
            if time.perf_counter() - started > 600:
                break
        t_end, cpu_end = time.perf_counter(), time.process_time()
        return {"messages": n, "malformed": bad, "first_batch": n_first, "seconds": t_end - t_first,
                "rate": (n - n_first) / (t_end - t_first), "rate_from_first_fetch": n / (t_end - started),
                "cpu_per_message": (cpu_end - cpu_first) / max(n - n_first, 1)}
    finally:
        await c.stop()


def ceiling(pin: list[str], bootstrap: str, topic: str, total: int, lean: bool = False) -> dict:
    out = subprocess.run([*pin, sys.executable, os.path.abspath(__file__), "--_ceiling", bootstrap, topic, str(total),
                          "lean" if lean else "stock"],
                         capture_output=True, check=True, text=True)
    return orjson.loads(out.stdout.strip().splitlines()[-1])


# -- (b) and (c): a worker ---------------------------------------------------------------------
class Worker:
    def __init__(self, pin, bootstrap, topics: dict, partitions: int, sc: Scenario, route: Optional[str], logdir: str,
                 group: Optional[str] = None, suffix: str = ""):
        from streamproc.broker import free_port

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.pop("STREAMPROC_BOOTSTRAP", None)
        env.update({f"STREAMPROC_TOPIC_{k.upper()}": v for k, v in topics.items()})
        env["STREAMPROC_TOPIC_PARTITIONS"] = str(partitions)
        if route:
            env["STREAMPROC_ROUTE"] = route
        self.log_path = os.path.join(logdir, f"worker-{sc.models}-{route or 'default'}{suffix}.log")
        self.log = open(self.log_path, "wb")
        args = [*pin, sys.executable, "-m", "streamproc", "worker", "--bootstrap", bootstrap,
                "--metrics-port", str(self.port), "--group-id", group or f"bench-{uuid.uuid4().hex[:8]}"]
        if not sc.defaults:
            args += ["--window-size", str(sc.window), "--warmup-size", str(sc.warmup)]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"worker exited with code {self.proc.returncode}; {self.last_error()}; log: {self.log_path}")

    def wait_ready(self, timeout: float = 120.0) -> float:
        from streamproc.demo import http_json

        deadline = time.monotonic() + timeout
        while http_json(self.base + "/healthz", timeout=5)[0] != 200:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout:.0f} s; log: {self.log_path}")
            time.sleep(0.02)
        return time.monotonic()

    def metrics(self) -> str:
        return http_text(self.base + "/metrics")

    def last_error(self) -> str:
        """The worker log's last ERROR line (or WARNING, if none), for a failure report."""
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            lines = f.read().splitlines()
        for level in ("[ERROR]", "[WARNING]"):
            found = [line for line in lines if level in line and "] alert " not in line]
            if found:
                return "worker log: " + found[-1].strip() + (f" ({len(found)} such lines)" if len(found) > 1 else "")
        return "no error in the worker log"

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_sentinels(w: Worker, watch: AlertWatch, phase: str, count: int, timeout: float) -> float:
    """Arrival of the last of the phase's sentinel alerts.

    After 30 s, ``/metrics`` is read every 15 s (only in runs far slower than any target, so
    the render cost does not matter) to give up when the worker stops making progress.
    """
    started = time.monotonic()
    deadline = started + timeout
    next_check, progress = started + 30, (-1, started)
    while len(watch.sentinels(phase)) < count:
        watch.poll(0.01)
        w.check()
        now = time.monotonic()
        if now > next_check:
            consumed = events_consumed(w.metrics())
            if consumed > progress[0]:
                progress = (consumed, now)
            elif now - progress[1] > 60:
                raise RuntimeError(f"no progress for {now - progress[1]:.0f} s at {consumed:,} events applied ({phase}); "
                                   f"{w.last_error()}; log: {w.log_path}")
            next_check = now + 15
        if now > deadline:
            raise RuntimeError(f"the {phase} sentinels' alerts did not arrive within {timeout:.0f} s; {w.last_error()}; "
                               f"log: {w.log_path}")
    return max(watch.sentinels(phase))


def histogram(text: str, name: str) -> tuple[float, float]:
    s = sum(v for _l, v in metric_lines(text, name + "_sum"))
    c = sum(v for _l, v in metric_lines(text, name + "_count"))
    return s, c


def worker_topics(bootstrap: str, topic: str, refs_topic: str, partitions: int) -> tuple[str, dict, "AlertWatch"]:
    """A fresh tag, the topics of one worker run (input ``topic``, fresh outputs) and a watch on
    its alerts topic."""
    tag = uuid.uuid4().hex[:8]
    topics = {"predictions": topic, "outcomes": f"tp-outcomes-{tag}", "alerts": f"tp-alerts-{tag}",
              "retrain": f"tp-retrain-{tag}", "dead_letter": f"tp-dlq-{tag}", "references": refs_topic,
              "state": f"tp-state-{tag}"}
    create_topics(bootstrap, [topics["alerts"]], partitions)
    return tag, topics, AlertWatch(bootstrap, topics["alerts"], partitions)


def preload_topic(bootstrap: str, sc: Scenario, partitions: int, sentinels: list[str]) -> str:
    """A fresh topic holding the scenario's preload and the end markers."""
    topic = f"tp-predictions-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [topic], partitions)
    p = producer(bootstrap, linger_ms=20)
    for v in sc.preload:
        produce(p, topic, v)
        p.poll(0)
    end_markers(p, topic, partitions, sentinels, "preload")
    del p  # librdkafka would keep reconnecting after the broker stops
    return topic


def run_worker(pin, bootstrap: str, sc: Scenario, partitions: int, route: Optional[str], logdir: str, args,
               topic: str, sentinels: list[str], refs_topic: str) -> dict:
    _tag, topics, watch = worker_topics(bootstrap, topic, refs_topic, partitions)
    w = Worker(pin, bootstrap, topics, partitions, sc, route, logdir)
    res: dict = {"route": route or "direct (the only mode)", "log": w.log_path}
    try:
        # (b) throughput on the preloaded topic
        t_launch = time.monotonic()
        w.wait_ready()
        text = w.metrics()
        t0 = time.monotonic()
        c0 = events_consumed(text)
        cpu0 = cpu_seconds(w.proc.pid)
        t_end = wait_sentinels(w, watch, "preload", len(sentinels), timeout=max(300.0, sc.events / 500))
        cpu = cpu_seconds(w.proc.pid) - cpu0
        text = w.metrics()
        consumed = events_consumed(text)
        batch_s, batches = histogram(text, "streamproc_batch_duration_seconds")
        res.update(startup=t0 - t_launch, c0=c0, seconds=t_end - t0, consumed=consumed,
                   rate=(sc.events - c0) / (t_end - t0), batches=batches, batch_seconds=batch_s, cpu=cpu,
                   cpu_per_event=cpu / max(sc.events - c0, 1),
                   checkpoints=sum(v for _l, v in metric_lines(text, "streamproc_checkpoints_total")),
                   alerts_b=sum(1 for _t, a in watch.alerts if not a["model_id"].startswith(SENTINEL)),
                   alert_ids_b=len({a["alert_id"] for _t, a in watch.alerts if not a["model_id"].startswith(SENTINEL)}))
        if consumed != sc.events:
            res["warning"] = f"events consumed {consumed} != produced {sc.events}"
        if args.live_seconds:
            time.sleep(2.0)  # the horizon markers go idle and are dead-lettered; a checkpoint may follow
            # (c) latency with live traffic
            # At a rate the worker cannot sustain latency is only the growing backlog: stay below it.
            live_rate = min(args.live_rate, max(100.0, round(0.5 * res["rate"], -2))) if res["rate"] < args.live_rate else args.live_rate
            try:
                res.update(live(w, watch, bootstrap, sc, topic, partitions, sentinels, args, live_rate))
            except Exception as exc:
                res["live_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        w.stop()
        watch.close()
    return res


def live(w: Worker, watch: AlertWatch, bootstrap: str, sc: Scenario, topic: str, partitions: int, sentinels: list[str],
         args, live_rate: float) -> dict:
    rate = live_rate
    total = int(rate * args.live_seconds)
    gen = LiveEvents(sc, args.event_bytes, total)
    wall = time.time() - time.monotonic()  # monotonic -> wall clock, to compare with the worker's detected_at
    acked = np.full(total, np.nan)
    n_before = len(watch.alerts)

    def on_delivery(j, err, _msg):
        if err is None:
            acked[j] = time.monotonic()

    before = w.metrics()  # the live phase's batches: what its latency is made of
    cpu0 = cpu_seconds(w.proc.pid)
    p = producer(bootstrap, linger_ms=5)
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        for j in range(sent, due):
            produce(p, topic, gen.event(j), on_delivery=functools.partial(on_delivery, j))
        sent = due
        p.poll(0)
        watch.poll(0)
        if sent < total and int((time.monotonic() - start) * rate) + 1 <= sent:
            time.sleep(0.0005)
    produced_s = time.monotonic() - start
    while len(p) > 0:
        p.poll(0.001)
        watch.poll(0)
    last_ack = float(np.nanmax(acked))
    end_markers(p, topic, partitions, sentinels, "live")
    done = wait_sentinels(w, watch, "live", len(sentinels), timeout=max(300.0, total / 200))
    cpu = cpu_seconds(w.proc.pid) - cpu0
    after = w.metrics()
    batches = [b - a for a, b in zip(histogram(before, "streamproc_batch_duration_seconds"),
                                      histogram(after, "streamproc_batch_duration_seconds"))]
    sizes = [b - a for a, b in zip(histogram(before, "streamproc_batch_size_messages"),
                                    histogram(after, "streamproc_batch_size_messages"))]
    t = time.monotonic()
    while time.monotonic() - t < 1.0:  # stragglers
        watch.poll(0.01)

    window_lat, stream_lat, unmatched = [], [], 0
    to_decision, to_topic = [], []  # window alerts: event available -> worker decided; decided -> on the topic
    for arrived, a in watch.alerts[n_before:]:
        if a["model_id"].startswith(SENTINEL) or not a["window"]["count"]:
            continue
        j = gen.index_of(a["model_id"], a["window"]["end"])
        if j is None:
            continue  # a window closed by a preloaded event
        if acked[j] != acked[j]:
            unmatched += 1
            continue
        lat = arrived - acked[j]
        if a["detector"] in ("adwin", "page_hinkley"):
            stream_lat.append(lat)
            continue
        window_lat.append(lat)
        decided = datetime.fromisoformat(a["detected_at"].replace("Z", "+00:00")).timestamp() - wall
        to_decision.append(decided - acked[j])
        to_topic.append(arrived - decided)
    return {"live_events": total, "live_rate_achieved": total / produced_s, "lost_acks": int(np.isnan(acked).sum()),
            "drain": done - last_ack, "window_lat": window_lat, "stream_lat": stream_lat, "unmatched": unmatched,
            "to_decision": to_decision, "to_topic": to_topic, "live_batches": batches[1],
            "live_batch_seconds": batches[0], "live_batch_events": sizes[0], "live_cpu": cpu, "live_span": done - start}


# -- (d) -------------------------------------------------------------------------------------
def run_two_workers(bootstrap: str, sc: Scenario, partitions: int, logdir: str, topic: str, sentinels: list[str],
                    refs_topic: str) -> dict:
    """Two repartitioning workers in one group, each pinned to a core of its own, on a preloaded
    topic: the rate from the moment both are ready to the last sentinel alert (their joining,
    and the rebalance when the second arrives, are inside the measured span if they overlap)."""
    tag, topics, watch = worker_topics(bootstrap, topic, refs_topic, partitions)
    cores = ALLOWED_CORES[:2]
    group = f"bench2-{tag}"
    workers = [Worker(["taskset", "-c", str(core)] if shutil.which("taskset") else [], bootstrap, topics, partitions,
                      sc, "repartition", logdir, group=group, suffix=f"-two-{i}") for i, core in enumerate(cores)]
    try:
        for w in workers:
            w.wait_ready()
        t0 = time.monotonic()
        before = [events_consumed(w.metrics()) for w in workers]
        cpu0 = [cpu_seconds(w.proc.pid) for w in workers]
        t_end = wait_sentinels(workers[0], watch, "preload", len(sentinels), timeout=max(300.0, sc.events / 500))
        cpu = [cpu_seconds(w.proc.pid) - c for w, c in zip(workers, cpu0)]
        consumed = [events_consumed(w.metrics()) for w in workers]
        c0 = sum(before)
        return {"rate": (sc.events - c0) / (t_end - t0), "c0": c0, "seconds": t_end - t0, "consumed": consumed,
                "applied": [c - b for c, b in zip(consumed, before)], "cpu": cpu, "cores": cores}
    finally:
        for w in workers:
            w.stop()
        watch.close()


def cpu_projection(d: dict, one_cpu_per_event: float) -> str:
    """(d) in CPU time: what two workers on cores of their own would reach if CPU-bound.

    Each worker's CPU time over the measured span is what it would take on a core of its own
    (nothing else running there); the pair is done when the busier one is. Against one
    worker doing all the events alone at its CPU cost per event, that gives the speed-up the
    split and the duplicated work allow (2.0: an even split, no extra work per event). On a
    machine with too few cores it is the figure that can be had: it cannot show waiting on
    the broker or the network, which a CPU-bound worker does not do. A worker that applied no
    events (every model hashed to the other's routed partitions) still routes its share.
    """
    applied, cpu = d["applied"], d["cpu"]
    if not all(c > 0 for c in cpu) or not one_cpu_per_event > 0:  # NaN: no /proc (not Linux)
        return "in CPU time: not measured (no CPU time for a worker)"
    per_event = [f"{1e6 * c / a:.1f}" if a else "-" for c, a in zip(cpu, applied)]
    alone = sum(applied) * one_cpu_per_event
    return (f"in CPU time: the workers used {' / '.join(f'{c:.2f}' for c in cpu)} s for "
            f"{' / '.join(f'{a:,}' for a in applied)} events ({' / '.join(per_event)} us "
            f"per event; one repartitioning worker: {1e6 * one_cpu_per_event:.1f}); on cores of their own, the "
            f"busier one's {max(cpu):.2f} s against one worker's {alone:.2f} s for all of them: x{alone / max(cpu):.2f} "
            f"if CPU-bound (target 2.0)")


def scale_out_reason(args) -> Optional[str]:
    if not route_supported():
        return ("one worker per consumer group in this streamproc: a model's events may sit in any partition, so "
                "two workers would split its state (README, Delivery and crashes / Scale-out: needs a repartition "
                "by model, issue 4)")
    cores = len(ALLOWED_CORES)
    if cores < 4 and args.two_workers != "force":
        return (f"this machine has {cores} cores: two workers pinned to their own cores plus the broker and the "
                f"producer need at least 4, and on fewer the figure would show CPU sharing, not scaling "
                f"(--two-workers force runs it anyway)")
    if args.two_workers == "off":
        return "--two-workers off"
    return None


def measure_ceilings(pin, bootstrap: str, topic: str, total: int) -> dict:
    """(a): the ceiling with aiokafka's records, then (printed beside it) with the lean ones."""
    ceil = ceiling(pin, bootstrap, topic, total)
    print(f"(a) ceiling, aiokafka getmany + orjson.loads: {ceil['rate']:,.0f} msg/s "
          f"({ceil['messages']:,} messages, {ceil['seconds']:.2f} s after a first batch of "
          f"{ceil['first_batch']:,}; {ceil['rate_from_first_fetch']:,.0f} msg/s counting the first fetch)",
          flush=True)
    lean = ceiling(pin, bootstrap, topic, total, lean=True)
    print(f"    the same with streamproc's lean records and hardware CRC check (streamproc.consumer_records and "
          f"batch_crc, as the worker reads): {lean['rate']:,.0f} msg/s (x{lean['rate'] / ceil['rate']:.2f}); the "
          f"ratio below is against aiokafka's own", flush=True)
    return ceil


def run_and_report(pin, bootstrap, sc, partitions, route, logdir, args, topic, sentinels, refs_topic, ceil) -> Optional[dict]:
    """(b), and (c) when ``args.live_seconds``: one worker on the preloaded topic; None if it failed."""
    try:
        r = run_worker(pin, bootstrap, sc, partitions, route, logdir, args, topic, sentinels, refs_topic)
    except Exception as exc:  # report and go on with the next configuration
        print(f"(b)/(c) route {route or 'direct'}: FAILED: {type(exc).__name__}: {exc}", flush=True)
        return None
    ratio = r["rate"] / ceil["rate"]
    busy = r["batch_seconds"] / r["seconds"] if r["seconds"] else float("nan")
    print(f"(b) worker, route {r['route']}: {r['rate']:,.0f} events/s = {ratio:.2f} x ceiling (target >= 0.5); "
          f"{sc.events - r['c0']:,} events in {r['seconds']:.2f} s after the start mark (ready + first "
          f"/metrics: {r['c0']:,} events already applied, {r['startup']:.1f} s after launch); "
          f"{r['consumed']:,} applied in all{'; ' + r['warning'] if 'warning' in r else ''}", flush=True)
    share = r["cpu"] / r["seconds"] if r["seconds"] else float("nan")
    print(f"    worker CPU time {r['cpu']:.2f} s in those {r['seconds']:.2f} s ({share:.0%} of the span): "
          f"{1e6 * r['cpu_per_event']:.1f} us per event", flush=True)
    dup = r["alerts_b"] - r["alert_ids_b"]  # at-least-once: a producer's retry may publish an alert twice
    print(f"    {r['alerts_b']} alerts{f' ({dup} of them published again)' if dup else ''}; {int(r['batches'])} batches (mean {r['batch_seconds'] / max(r['batches'], 1) * 1000:.0f} ms; "
          f"batch time / wall time {busy:.2f}, the rest is fetching, unpacking records and waiting); "
          f"{int(r['checkpoints'])} checkpoints", flush=True)
    if "live_error" in r:
        print(f"(c) alert latency: FAILED: {r['live_error']}", flush=True)
        return r
    if not args.live_seconds:
        return r
    wl, sl = r["window_lat"], r["stream_lat"]
    slower = (f"; not {args.live_rate:,.0f}/s: the worker sustained only {r['rate']:,.0f}/s in (b)"
              if r["live_rate_achieved"] < 0.9 * args.live_rate else "")
    print(f"(c) alert latency, {r['live_events']:,} live events at {r['live_rate_achieved']:,.0f}/s "
          f"({r['live_rate_achieved'] / r['rate']:.0%} of the worker's rate in (b){slower}): "
          f"window alerts p50 {ms(pct(wl, 50))}, p99 {ms(pct(wl, 99))}, max {ms(max(wl) if wl else float('nan'))} "
          f"({len(wl)} alerts)", flush=True)
    print(f"    window alerts split at the worker's detected_at: event available -> decided p50 "
          f"{ms(pct(r['to_decision'], 50))}, p99 {ms(pct(r['to_decision'], 99))}; decided -> on the alerts topic "
          f"(publish, acks=all, this script's fetch) p50 {ms(pct(r['to_topic'], 50))}, p99 {ms(pct(r['to_topic'], 99))}",
          flush=True)
    print(f"    stream-detector alerts p50 {ms(pct(sl, 50))}, p99 {ms(pct(sl, 99))} ({len(sl)}); "
          f"drain after the last live event {r['drain']:.2f} s"
          f"{'; ' + str(r['unmatched']) + ' alerts not matched to a live event' if r['unmatched'] else ''}"
          f"{'; ' + str(r['lost_acks']) + ' events without delivery report' if r['lost_acks'] else ''}",
          flush=True)
    n = max(r["live_batches"], 1)
    print(f"    live phase: {int(r['live_batches'])} batches, mean {r['live_batch_events'] / n:,.0f} messages and "
          f"{1000 * r['live_batch_seconds'] / n:.0f} ms; worker CPU {r['live_cpu'] / r['live_span']:.0%} of the "
          f"{r['live_span']:.1f} s", flush=True)
    return r


REFERENCE_EVENTS = 2000  # with --references: each model's reference is built from this many events (the default warm-up)
REFERENCE_SEED = 50_000  # with --references: model i's reference stream's seed is this + i


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--_ceiling":
        print(orjson.dumps(asyncio.run(_ceiling(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "lean"))).decode())
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="3,200", help="comma-separated model counts, one scenario each")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--event-bytes", type=int, default=750,
                    help="pad events to this size with an ignored context field (ModelStream's are about 410 bytes)")
    ap.add_argument("--live-rate", type=float, default=20_000, help="events/s produced in the latency phase")
    ap.add_argument("--live-seconds", type=float, default=30)
    ap.add_argument("--repeat", type=int, default=1,
                    help="paired (ceiling, worker) runs per scenario and route; the summary gives medians, the "
                         "latency phase runs in the last")
    ap.add_argument("--routes", default="auto",
                    help="auto, or comma-separated worker.route values (needs a streamproc with worker.route)")
    ap.add_argument("--bootstrap", default=os.environ.get("STREAMPROC_BOOTSTRAP"), help="external Kafka (default: embedded)")
    ap.add_argument("--references", action="store_true",
                    help="publish every model's reference before the worker starts (no warm-up; default window)")
    ap.add_argument("--two-workers", choices=("auto", "force", "off"), default="auto",
                    help="(d): two repartitioning workers on their own cores (auto: with 4 cores or more)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    pin, where = placement()
    if args.routes == "auto":
        routes: list[Optional[str]] = ["direct", "repartition"] if route_supported() else [None]
    else:
        routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    logdir = tempfile.mkdtemp(prefix="streamproc-throughput-")
    from streamproc.broker import EmbeddedBroker

    broker = None
    if not args.bootstrap:
        broker = EmbeddedBroker(log_path=os.path.join(logdir, "broker.log")).start()
    bootstrap = args.bootstrap or broker.bootstrap
    print(f"throughput: {'embedded Tansu broker' if broker else 'Kafka at ' + bootstrap}; {os.cpu_count()} cores; {where}; "
          f"load average at start {os.getloadavg()[0]:.2f} (a shared machine: figures are noisy); logs in {logdir}",
          flush=True)
    summary = []
    failed_last = False
    one_worker: dict[str, float] = {}  # scenario -> one repartitioning worker's rate
    one_worker_cpu: dict[str, list[float]] = {}  # scenario -> its CPU seconds per event, per run
    try:
        sentinels = sentinel_ids(args.partitions)
        refs_topic = f"tp-references-{uuid.uuid4().hex[:8]}"
        publish_sentinel_references(bootstrap, refs_topic, sentinels)
        for models in [int(m) for m in args.models.split(",") if m.strip()]:
            t = time.monotonic()
            sc = make_scenario(models, args.events, args.event_bytes, args.references)
            size = sum(map(len, sc.preload)) / len(sc.preload)
            if sc.references:  # a references topic of the scenario's own: the sentinels' and its models'
                refs_topic = f"tp-references-{uuid.uuid4().hex[:8]}"
                publish_references(bootstrap, refs_topic, scenario_references(sc))
                publish_sentinel_references(bootstrap, refs_topic, sentinels)
            settings = (f"default window {sc.window}, references published ({REFERENCE_EVENTS:,} events each)" if sc.references else
                        f"default window {sc.window} / warm-up {sc.warmup}" if sc.defaults else
                        f"window {sc.window} / warm-up {sc.warmup} (defaults would not finish warming up "
                        f"with {sc.per_model} events per model)")
            print(f"\n== {sc.name} x 22 features: {sc.events:,} events of {size:.0f} bytes ({sc.per_model:,} per model, "
                  f"drift from event {sc.per_model // 2:,}); {args.partitions} partitions; {settings} "
                  f"[generated in {time.monotonic() - t:.1f} s]", flush=True)
            # route -> [(ceiling, worker rate)]; within a repetition both routes share the ceiling
            # measured on the first route's (identical) preloaded topic
            runs: dict[str, list] = {route or "direct": [] for route in routes}
            for rep in range(args.repeat):
                last = rep == args.repeat - 1
                if args.repeat > 1:
                    print(f"-- run {rep + 1} of {args.repeat}{' (with the latency phase)' if last and args.live_seconds else ''}",
                          flush=True)
                run_args = args if last else argparse.Namespace(**{**vars(args), "live_seconds": 0})
                ceil = None
                for route in routes:
                    t = time.monotonic()
                    topic = preload_topic(bootstrap, sc, args.partitions, sentinels)
                    print(f"preloaded {sc.events:,} events (+{len(sentinels)} sentinel events, +{args.partitions} horizon "
                          f"markers) in {time.monotonic() - t:.1f} s", flush=True)
                    if ceil is None:
                        ceil = measure_ceilings(pin, bootstrap, topic, sc.events + len(sentinels) + args.partitions)
                    r = run_and_report(pin, bootstrap, sc, args.partitions, route, logdir, run_args, topic, sentinels,
                                       refs_topic, ceil)
                    if r is not None:
                        runs[route or "direct"].append((ceil["rate"], r["rate"]))
                        if route == "repartition":
                            one_worker_cpu.setdefault(sc.name, []).append(r["cpu_per_event"])
                    if not last:
                        continue
                    if r is None or "live_error" in r:
                        rates = runs[route or "direct"]
                        summary.append((sc.name, (route or "direct") + " *", rates, float("nan"), float("nan"), 0))
                        failed_last = True
                        continue
                    wl = r.get("window_lat", [])
                    summary.append((sc.name, r["route"].split()[0], runs[route or "direct"], pct(wl, 50), pct(wl, 99), len(wl)))
                    if route == "repartition":
                        one_worker[sc.name] = statistics.median(w for _c, w in runs["repartition"])
            reason = scale_out_reason(args)
            if reason is None and sc.name in one_worker:
                topic = preload_topic(bootstrap, sc, args.partitions, sentinels)
                try:
                    d = run_two_workers(bootstrap, sc, args.partitions, logdir, topic, sentinels, refs_topic)
                except Exception as exc:
                    print(f"(d) two workers: FAILED: {type(exc).__name__}: {exc}", flush=True)
                else:
                    shared = len(ALLOWED_CORES) < 4
                    print(f"(d) two repartitioning workers (cores {','.join(map(str, d['cores']))}): {d['rate']:,.0f} "
                          f"events/s = {d['rate'] / one_worker[sc.name]:.2f} x one worker (target 2.0); events applied "
                          f"per worker {' / '.join(f'{c:,}' for c in d['consumed'])}"
                          f"{' -- CPU shared with the broker and producer on a ' + str(len(ALLOWED_CORES)) + '-core machine: not a scaling figure' if shared else ''}",
                          flush=True)
                    summary.append((sc.name, "2 workers", [(ceil["rate"], d["rate"])], float("nan"), float("nan"), 0))
                    print(f"    {cpu_projection(d, statistics.median(one_worker_cpu[sc.name]))}", flush=True)
        reason = scale_out_reason(args)
        if reason:
            print(f"\n(d) two-worker scaling: not measured ({reason})")
    finally:
        if broker:
            broker.stop()

    med = "medians of " + str(args.repeat) + " paired runs; " if args.repeat > 1 else ""
    print(f"\nscenario      route        ceiling ev/s  worker ev/s  ratio   alert latency p50 / p99 (window alerts)"
          f"{'   (' + med + 'ratio: median of the runs' + chr(39) + ' ratios)' if med else ''}")
    for name, route, rates, p50, p99, n in summary:
        if not rates:
            print(f"{name:<13} {route:<12} {'':>12}  {'failed':>11}")
            continue
        c = statistics.median(x for x, _ in rates)
        wr = statistics.median(w for _, w in rates)
        ratio = statistics.median(w / x for x, w in rates)
        each = f"   runs {' / '.join(f'{w:,.0f} ({w / x:.2f})' for x, w in rates)}" if len(rates) > 1 else ""
        print(f"{name:<13} {route:<12} {c:>12,.0f}  {wr:>11,.0f}  {ratio:>5.2f}   {ms(p50)} / {ms(p99)} ({n}){each}")
    if failed_last:
        print("* the last run (or its latency phase) failed: the row gives the other runs, see above")

if __name__ == "__main__":
    main()
