"""Throughput of the pure core (decode + engine), no broker: events/s for N models x 22 features.

    python benchmarks/core.py [--events 200000] [--models 3] [--references]

Prints the median of --repeat runs, in CPU time of this process (less disturbed by other
work on a shared machine than wall time), with the worker's garbage-collection policy
(``streamproc.gc_policy``). When every model gets fewer events than warm-up plus four windows,
the window is events per model / 5 and the warm-up two windows (as in throughput.py), so the
run measures monitoring, not warm-up buffering.

``--references``: every model starts with a reference (built beforehand from 400 events of
its own stream) and the default settings, and the events are applied twice, the second pass
timed, so the run measures a worker that has held its models for a while (monitors created,
the typed decoder taught): with many models, each gets few events per batch (``--models 10000
--events 200000``: 2 a batch), which is where the work per model and batch shows. The
broker-inclusive benchmark is throughput.py.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from streamproc.config import WorkerSettings, load_config
from streamproc.decode import decode_predictions
from streamproc.engine import MonitorEngine
from streamproc.events import DEFAULT_MODEL_VERSION
from streamproc.gc_policy import gc_paused, tune_gc
from streamproc.profile import build_reference
from streamproc.synth import Drift, ModelStream

REFERENCE_EVENTS = 400  # with --references: each model's reference is built from this many of its events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--batch", type=int, default=WorkerSettings().max_batch, help="events per batch (default: max_batch)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--untyped", action="store_true", help="decode without the typed decoder of known models")
    ap.add_argument("--references", action="store_true",
                    help="every model starts with a reference (from 400 events of its stream), default settings")
    args = ap.parse_args()
    per_model = args.events // args.models
    head = REFERENCE_EVENTS if args.references else 0
    streams = [ModelStream(f"m{i}", n_numeric=20, n_categorical=2, seed=i, drift=Drift(head + per_model // 2, ("x0",), 0.5))
               for i in range(args.models)]
    references = {}
    per = []
    for s in streams:
        events = list(s.events(head + per_model))
        if head:
            first = events[:head]
            references[(s.model_id, DEFAULT_MODEL_VERSION)] = build_reference(
                s.model_id, DEFAULT_MODEL_VERSION, [e["features"] for e in first], [e["prediction"]["score"] for e in first],
                [e["prediction"].get("label") for e in first])
        per.append([orjson.dumps(e) for e in events[head:]])
    msgs = [m for group in zip(*per) for m in group]
    size = sum(map(len, msgs)) / len(msgs)
    config = load_config(None, environ={})
    if not args.references and per_model < config.for_model("any").warmup_size + 4 * config.for_model("any").window_size:
        window = max(per_model // 5, 10)
        config = load_config(None, environ={"STREAMPROC_WINDOW_SIZE": str(window),
                                            "STREAMPROC_WARMUP_SIZE": str(2 * window)})
    tune_gc()
    rates, alerts = [], 0
    for _ in range(args.repeat):
        engine = MonitorEngine(config, references)
        for _pass in range(2 if args.references else 1):  # with references, the second pass is timed
            t = time.process_time()
            alerts = 0
            for i in range(0, len(msgs), args.batch):
                with gc_paused():
                    batches, _ = decode_predictions(msgs[i:i + args.batch], layouts=engine.feature_layout,
                                                    known=None if args.untyped else engine.decoder)
                    alerts += len(engine.process(batches).alerts)
        rates.append(len(msgs) / (time.process_time() - t))
    start = "references given" if args.references else f"warm-up {config.for_model('any').warmup_size}"
    print(f"core (decode + engine): {len(msgs)} events of {size:.0f} bytes, {args.models} models x 22 features "
          f"({per_model} events each, about {max(min(args.batch, len(msgs)) // args.models, 1)} "
          f"a batch), window {config.for_model('any').window_size}, {start}, batch {args.batch}: median "
          f"{statistics.median(rates):,.0f} events/s over {args.repeat} runs (min {min(rates):,.0f}, max {max(rates):,.0f}); "
          f"{alerts} alerts per run")


if __name__ == "__main__":
    main()
