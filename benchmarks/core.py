"""Throughput of the pure core (decode + engine), no broker: events/s for N models x 22 features.

    python benchmarks/core.py [--events 200000] [--models 3]

Prints the median of --repeat runs, in CPU time of this process (less disturbed by other
work on a shared machine than wall time). When every model gets fewer events than warm-up plus
four windows, the window is events per model / 5 and the warm-up two windows (as in
throughput.py), so the run measures monitoring, not warm-up buffering. The broker-inclusive
benchmark is throughput.py.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from streamproc.config import WorkerSettings, load_config
from streamproc.decode import decode_predictions
from streamproc.engine import MonitorEngine
from streamproc.synth import Drift, ModelStream


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--batch", type=int, default=WorkerSettings().max_batch, help="events per batch (default: max_batch)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--untyped", action="store_true", help="decode without the typed decoder of known models")
    args = ap.parse_args()
    per_model = args.events // args.models
    streams = [ModelStream(f"m{i}", n_numeric=20, n_categorical=2, seed=i, drift=Drift(per_model // 2, ("x0",), 0.5))
               for i in range(args.models)]
    per = [[orjson.dumps(e) for e in s.events(per_model)] for s in streams]
    msgs = [m for group in zip(*per) for m in group]
    size = sum(map(len, msgs)) / len(msgs)
    config = load_config(None, environ={})
    if per_model < config.for_model("any").warmup_size + 4 * config.for_model("any").window_size:
        window = max(per_model // 5, 10)
        config = load_config(None, environ={"STREAMPROC_WINDOW_SIZE": str(window),
                                            "STREAMPROC_WARMUP_SIZE": str(2 * window)})
    rates, alerts = [], 0
    for _ in range(args.repeat):
        engine = MonitorEngine(config)
        t = time.process_time()
        alerts = 0
        for i in range(0, len(msgs), args.batch):
            batches, _ = decode_predictions(msgs[i:i + args.batch], layouts=engine.feature_layout,
                                            known=None if args.untyped else engine.decoder)
            alerts += len(engine.process(batches).alerts)
        rates.append(len(msgs) / (time.process_time() - t))
    print(f"core (decode + engine): {len(msgs)} events of {size:.0f} bytes, {args.models} models x 22 features, "
          f"window {config.for_model('any').window_size}, warm-up {config.for_model('any').warmup_size}, "
          f"batch {args.batch}: median {statistics.median(rates):,.0f} events/s over {args.repeat} runs "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f}); {alerts} alerts per run")


if __name__ == "__main__":
    main()
