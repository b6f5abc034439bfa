"""Start-up time of a worker whose state topic holds the state of many models.

    python benchmarks/startup.py [--models 10000] [--distinct 8] [--features 20] [--bootstrap HOST:PORT]

Starts the embedded broker (or uses ``--bootstrap`` / ``STREAMPROC_BOOTSTRAP``). Builds
``--distinct`` real model states in the engine as ``benchmarks/memory.py`` does (default
settings, ``--features`` numeric features, the reference built from the warm-up, one window
closed and the next half full), exports their state records, and clones them to ``--models``
model ids: the clone ids have the template ids' length, so a clone is its template's pickled
record with the id's bytes replaced (the same bytes a worker would have written for that
model). The records go to a fresh state topic under a fresh group id, keyed as the worker
keys them.

Then ``python -m streamproc worker`` starts on that group (default route, one worker, so it
owns every model) and the script prints: seconds from process start to ``/healthz`` answering
200 (the worker loads the state of its partitions before it polls, so ready means restored),
the number of models the worker's log says it restored (must equal ``--models``), the state
bytes read, and the worker's RSS once ready (``/proc/PID/status``).

Target (issue 6): ready in under 30 s with the state of 10,000 models.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from memory import build, inputs  # noqa: E402

from streamproc.config import load_config  # noqa: E402
from streamproc.engine import MonitorEngine  # noqa: E402
from streamproc.state import SEP  # noqa: E402


def template_records(distinct: int, features: int) -> dict[str, bytes]:
    cfg = load_config(None, environ={}).for_model("any")
    engine = MonitorEngine(load_config(None, environ={}))
    data = inputs(features, cfg.warmup_size + cfg.window_size + cfg.window_size // 2, distinct)
    build(engine, distinct, data)
    return engine.export_dirty({})


def clones(templates: dict[str, bytes], models: int):
    """(model id, record) for ``models`` ids, each a template's record under a new id."""
    names = sorted(templates)
    raw = {name: zlib.decompress(templates[name]) for name in names}
    for i in range(models):
        name = names[i % len(names)]
        new = f"model-{i:05d}"
        assert len(new) == len(name), "clone ids must have the template ids' length"
        yield new, zlib.compress(raw[name].replace(name.encode(), new.encode()), 1)


def write_state(bootstrap: str, topic: str, group: str, records) -> tuple[int, int]:
    from confluent_kafka import Producer

    from streamproc import kafka

    asyncio.run(kafka.ensure_topics(bootstrap, [topic], 1, compacted=[topic]))
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, "message.max.bytes": 16 * 2**20,
                  "queue.buffering.max.kbytes": 2_097_151, "log.connection.close": False})
    count = size = 0
    for name, value in records:
        while True:
            try:
                p.produce(topic, value, key=f"{group}{SEP}{name}".encode())
                break
            except BufferError:
                p.poll(0.1)
        count += 1
        size += len(value)
        p.poll(0)
    if p.flush(120):
        raise RuntimeError("state records not all acknowledged")
    return count, size


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--distinct", type=int, default=8)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--bootstrap", default=os.environ.get("STREAMPROC_BOOTSTRAP"))
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from streamproc.broker import EmbeddedBroker

        broker = EmbeddedBroker()
        broker.start()
        bootstrap = broker.bootstrap
    try:
        t = time.perf_counter()
        templates = template_records(args.distinct, args.features)
        print(f"built {args.distinct} template models in {time.perf_counter() - t:.1f} s")
        suffix = uuid.uuid4().hex[:8]
        topics = {name: f"startup-{name}-{suffix}" for name in
                  ("predictions", "outcomes", "alerts", "retrain", "dead_letter", "references", "state", "routed")}
        group = f"startup-{suffix}"
        t = time.perf_counter()
        count, size = write_state(bootstrap, topics["state"], group, clones(templates, args.models))
        print(f"wrote {count:,} state records ({size / 2**20:,.1f} MB) in {time.perf_counter() - t:.1f} s")

        from streamproc.broker import free_port
        from streamproc.demo import http_json

        port = free_port()
        env = dict(os.environ)
        env.pop("STREAMPROC_BOOTSTRAP", None)
        env.update({f"STREAMPROC_TOPIC_{k.upper()}": v for k, v in topics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            log_path = os.path.join(tmp, "worker.log")
            with open(log_path, "wb") as log:
                start = time.monotonic()
                proc = subprocess.Popen([sys.executable, "-m", "streamproc", "worker", "--bootstrap", bootstrap,
                                         "--metrics-port", str(port), "--group-id", group],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
                try:
                    while http_json(f"http://127.0.0.1:{port}/healthz", timeout=5)[0] != 200:
                        if proc.poll() is not None:
                            raise RuntimeError(f"worker exited with {proc.returncode}; log: {open(log_path).read()[-2000:]}")
                        if time.monotonic() - start > args.timeout:
                            raise RuntimeError(f"worker not ready after {args.timeout:.0f} s")
                        time.sleep(0.05)
                    ready = time.monotonic() - start
                    rss = rss_mb(proc.pid)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            text = open(log_path, errors="replace").read()
        restored = [int(n) for n in re.findall(r"restored the state of (\d+) model", text)]
        print(f"worker with the state of {args.models:,} models x {args.features} features: ready {ready:.1f} s after "
              f"process start (target < 30 s); restored {max(restored, default=0):,} models "
              f"({'as written' if max(restored, default=0) == args.models else 'NOT all'}); RSS when ready {rss:,.0f} MB")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
