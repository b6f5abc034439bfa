"""Memory of a worker whose models all warm up at once, within ``worker.warmup_memory_mb``.

    python benchmarks/warmup_memory.py [--models 10000] [--features 20] [--budget-mb N] [--chunk 100]

A first deployment, or a worker given thousands of new model versions, starts every model
without a reference: each keeps its first ``warmup_size`` events (2,000) to build one. Kept
whole that is about 184 bytes an event of 20 numeric features (``memory.py``'s warm-up
figure), 3.7 GB for 10,000 models. This feeds ``--models`` model versions of ``--features``
numeric features, in turn, ``--chunk`` events at a time each (decoded afresh per chunk, as a
worker's batches interleave models), until every one is one event short of its reference,
through the pure engine with the worker's warm-up budget (``--budget-mb``, default the
configuration's ``worker.warmup_memory_mb``; 0: none). Printed: RSS before and at the end,
peak RSS, the warm-ups' estimated bytes (what the budget bounds) and their largest value,
how many events each model keeps (the stride it was thinned to), the time spent applying
events and thinning, and what a checkpoint in which every model changed costs (the time
``export_dirty`` takes and the bytes it writes to the state topic).

Target (issue 6): a worker holding 10,000 models x 20 features under 1 GB RSS.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import Counter

from streamproc.config import load_config
from streamproc.decode import decode_predictions
from streamproc.engine import MonitorEngine

from memory import mb, raw_inputs, rss, vm  # noqa: E402  (benchmarks/ is the script's directory)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--budget-mb", type=int, default=None, help="worker.warmup_memory_mb (default: the configuration's)")
    ap.add_argument("--warmup-size", type=int, default=None, help="default: the configuration's (2000)")
    ap.add_argument("--chunk", type=int, default=100, help="events per model and turn")
    ap.add_argument("--distinct", type=int, default=8, help="distinct synthetic streams, cycled over the models")
    args = ap.parse_args()
    if args.budget_mb is not None and args.budget_mb < 0:
        ap.error("--budget-mb: 0 (no budget) or more")
    overrides = {"warmup_size": args.warmup_size} if args.warmup_size else {}
    config = load_config(None, overrides=overrides, environ={})
    budget_mb = config.worker.warmup_memory_mb if args.budget_mb is None else args.budget_mb
    held = config.for_model("any").warmup_size - 1
    raw = raw_inputs(args.features, held, args.distinct)
    engine = MonitorEngine(config)
    engine.warmup_budget = budget_mb * 2**20 or None
    before = rss()
    print(f"{args.models:,} models x {args.features} numeric features warming up at once, {held:,} events each "
          f"(one short of warmup_size), {args.chunk} at a time; warmup_memory_mb {budget_mb or 'none'}", flush=True)
    peak_estimate = 0
    sweeps = 0
    process_s = decode_s = 0.0
    t_all = time.perf_counter()
    for start in range(0, held, args.chunk):
        for i in range(args.models):
            t0 = time.perf_counter()
            data = raw[i % args.distinct][start:start + args.chunk]
            model_id = f"model-{i:05d}"
            batches, _ = decode_predictions([d.replace(b'"model_id":"m"', f'"model_id":"{model_id}"'.encode(), 1)
                                             for d in data])
            t1 = time.perf_counter()
            out = engine.process(batches)
            t2 = time.perf_counter()
            decode_s += t1 - t0
            process_s += t2 - t1
            sweeps += bool(out.thinned)
            peak_estimate = max(peak_estimate, engine.warmup_bytes)
    elapsed = time.perf_counter() - t_all
    assert len(engine.monitors) == args.models and all(m.warming_up for m in engine.monitors.values())
    gc.collect()
    end = rss()
    strides = Counter(m.warmup.stride for m in engine.monitors.values())
    kept = Counter(m.warmup.kept for m in engine.monitors.values())
    estimate = sum(m.warmup.nbytes() for m in engine.monitors.values())
    t0 = time.perf_counter()
    records = engine.export_dirty({})  # a checkpoint in which every warming model changed
    export_s = time.perf_counter() - t0
    state_bytes = sum(map(len, records.values()))
    del records
    rows = [
        ("RSS before the models (interpreter, libraries, input)", mb(before), ""),
        ("RSS with every model one event short of its reference", mb(end), "target < 1 GB for 10,000 x 20"),
        ("peak RSS of the run (VmHWM)", mb(vm("VmHWM")), ""),
        ("warm-ups, estimated (what the budget bounds): at the end / largest", f"{mb(estimate)} / {mb(peak_estimate)}",
         f"budget {budget_mb} MB" if budget_mb else "no budget"),
        ("RSS delta per model", f"{(end - before) / args.models:,.0f} B", ""),
        ("strides (every n-th event kept): models", ", ".join(f"{s}: {c:,}" for s, c in sorted(strides.items())), ""),
        ("events kept per model: models", ", ".join(f"{k}: {c:,}" for k, c in sorted(kept.items())), ""),
        ("batches (model turns) that thinned warm-ups", f"{sweeps:,}", ""),
        ("a checkpoint of every model (export_dirty): time / state written", f"{export_s:,.2f} s / {mb(state_bytes)}",
         "zlib level 1, as on the state topic"),
        ("time: decoding / engine (incl. thinning) / all", f"{decode_s:,.1f} s / {process_s:,.1f} s / {elapsed:,.1f} s",
         f"{process_s / (args.models * held) * 1e6:,.2f} us per event in the engine"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>22}  {note}")


if __name__ == "__main__":
    main()
