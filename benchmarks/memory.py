"""Memory of the monitoring state: bytes per (model, feature), process RSS, state restore time.

    python benchmarks/memory.py [--models 10000] [--features 20] [--window-size N] [--warmup-size N]
                                [--trace-models 200] [--distinct 8]

Builds the state of ``--models`` model versions of ``--features`` numeric features each in
the pure engine (``MonitorEngine``, default configuration from ``load_config(None,
environ={})``; ``--window-size`` / ``--warmup-size`` override it, and the settings used are
printed). Each model gets ``warmup_size + window_size + window_size // 2`` events: the warm-up
builds its reference, one full window closes (PSI, quality checks, detectors and policy all
run), and the next window is half full, so every structure a long-running model holds exists.

How it is fed: the events come from ``ModelStream`` (20 numeric features; its categorical
``c0`` is dropped so every feature is numeric), are decoded once per ``--distinct`` seed with
the worker's decoder, and the decoded batches are handed to the models in turn under each
model's own id. No per-event object outlives the warm-up (the reference and windows are
sketches), so sharing the decoded input between models does not hide any retained memory;
decoding 35 M events instead would only add minutes.

Printed, per (model, feature) = per model / features (so the score and label sketches, the
stream detectors, the alert policy and the error monitor of a model are spread over its
features):

* RSS delta: process RSS (``/proc/self/status`` VmRSS) with every model loaded minus before,
  after ``gc.collect()``;
* tracemalloc: Python and numpy allocations still live after building ``--trace-models``
  models with tracing on (tracing slows allocation, so it runs on a sample, after the full
  build, in a fresh engine);
* pickled: the state records of ``engine.export_dirty`` (zlib level 1, what a checkpoint
  writes to the state topic), compressed and uncompressed;

and what models hold while they warm up (``--warming-models`` versions one event short of
their reference, all warming up at once, traced; extrapolated to ``--models``);

and the RSS with all models loaded, the peak RSS, the time ``export_dirty`` takes for every
model (what a checkpoint costs when every model changed within ``checkpoint_seconds``), the
time ``import_state`` takes to restore every model's record into a fresh engine (a proxy for
the start-up target; a real start also reads those records from the state topic) and to
restore them packed (as the direct route does, see ``MonitorEngine.import_record``), and the
allocation sites holding the traced bytes.

Targets (issue 6): at most 4 KB per (model, feature); 10,000 models x 20 features in under
1 GB RSS; ready in under 30 s with 10,000 models' state.
"""

from __future__ import annotations

import argparse
import gc
import linecache
import os
import resource
import time
import tracemalloc
import zlib

import orjson

from streamproc.config import load_config
from streamproc.decode import PredictionBatch, decode_predictions
from streamproc.engine import MonitorEngine
from streamproc.feature_table import FeatureTable
from streamproc.synth import ModelStream


def vm(field: str) -> int:
    """A /proc/self/status size field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss() -> int:
    gc.collect()
    return vm("VmRSS")


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def raw_inputs(features: int, events: int, distinct: int) -> list[list[bytes]]:
    """``distinct`` streams (model id "m") of ``events`` messages with ``features`` numeric
    features (``ModelStream``'s, its categorical ``c0`` dropped)."""
    out = []
    for seed in range(distinct):
        evs = list(ModelStream("m", n_numeric=features, n_categorical=1, seed=seed).events(events))
        for e in evs:
            del e["features"]["c0"]
        out.append([orjson.dumps(e) for e in evs])
    return out


def inputs(features: int, events: int, distinct: int) -> list[PredictionBatch]:
    """``raw_inputs``, each stream decoded into one batch."""
    out = []
    for raw in raw_inputs(features, events, distinct):
        batches, rejected = decode_predictions(raw)
        assert not rejected and len(batches) == 1
        out.append(next(iter(batches.values())))
    return out


def build(engine: MonitorEngine, models: int, data: list[PredictionBatch], start: int = 0) -> None:
    for i in range(start, start + models):
        b = data[i % len(data)]
        model_id = f"model-{i:05d}"
        engine.process({(model_id, "default"): PredictionBatch(model_id, "default", b.event_ids, b.ts, b.features,
                                                              b.scores, b.labels)}, now=1.8e9 + i)  # as a worker stamps it
        layout = engine.feature_layout((model_id, "default"))  # what decoding its next batch caches (the last 4,096)
        # ... and what the typed decoder learns from it (a member for each of the 1,000 busiest)
        engine.decoder.learn({(model_id, "default"): PredictionBatch(model_id, "default", ["next"],
                                                                     features=FeatureTable(layout))})


def warming(config, models: int, features: int, distinct: int, chunk: int = 100) -> tuple[float, int]:
    """(traced bytes per model version, events each holds) for ``models`` versions one event
    short of a reference: what a worker holds while every model warms up at once. Each chunk
    of each model is decoded afresh (a worker's batches interleave models like this), so the
    warm-up holds only what it kept itself."""
    held = config.for_model("any").warmup_size - 1
    raw = raw_inputs(features, held, distinct)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    engine = MonitorEngine(config)
    for start in range(0, held, chunk):
        for i in range(models):
            batches, _ = decode_predictions(raw[i % distinct][start:start + chunk])
            (b,) = batches.values()
            model_id = f"model-{i:05d}"
            engine.process({(model_id, "default"): PredictionBatch(model_id, "default", b.event_ids, b.ts, b.features,
                                                                  b.scores, b.labels)})
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(engine.monitors) == models and all(m.warming_up for m in engine.monitors.values())
    return traced / models, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--window-size", type=int, default=None, help="default: the configuration's (1000)")
    ap.add_argument("--warmup-size", type=int, default=None, help="default: the configuration's (2000)")
    ap.add_argument("--trace-models", type=int, default=200, help="models built again under tracemalloc")
    ap.add_argument("--distinct", type=int, default=8, help="distinct synthetic streams, cycled over the models")
    ap.add_argument("--top", type=int, default=10, help="allocation sites to list")
    ap.add_argument("--warming-models", type=int, default=50, help="models traced while all warm up at once")
    args = ap.parse_args()

    env = {}
    if args.window_size:
        env["STREAMPROC_WINDOW_SIZE"] = str(args.window_size)
    if args.warmup_size:
        env["STREAMPROC_WARMUP_SIZE"] = str(args.warmup_size)
    config = load_config(None, environ=env)
    cfg = config.for_model("any")
    per_model = cfg.warmup_size + cfg.window_size + cfg.window_size // 2
    n, f = args.models, args.features
    cells = n * f
    defaults = "defaults" if not env else "overridden: " + ", ".join(f"{k}={v}" for k, v in env.items())
    print(f"memory: {n:,} models x {f} numeric features (+ prediction score and label); window_size {cfg.window_size}, "
          f"warmup_size {cfg.warmup_size} ({defaults}), psi bins {cfg.psi.bins}, adwin {cfg.adwin.enabled}, "
          f"page_hinkley {cfg.page_hinkley.enabled}, concept {cfg.concept.enabled}")
    print(f"  {per_model:,} events per model: reference built from the warm-up, 1 window closed, the next half full; "
          f"input: {args.distinct} distinct synthetic streams cycled over the models")

    data = inputs(f, per_model, args.distinct)
    before = rss()

    engine = MonitorEngine(config)
    t = time.perf_counter()
    build(engine, n, data)
    build_s = time.perf_counter() - t
    mon = next(iter(engine.monitors.values()))
    assert not mon.warming_up and mon.pane.index >= 1 and mon.events == per_model, (mon.warming_up, mon.pane.index, mon.events)
    loaded = rss()
    print(f"  build: {build_s:,.1f} s ({build_s / n * 1000:.1f} ms per model)")

    t = time.perf_counter()
    records = engine.export_dirty({"predictions:0": per_model})
    export_s = time.perf_counter() - t
    compressed = sum(len(v) for v in records.values())
    raw = sum(len(zlib.decompress(v)) for v in records.values())

    del engine
    t = time.perf_counter()
    fresh = MonitorEngine(config)
    restored = fresh.import_state(records)
    import_s = time.perf_counter() - t
    assert restored == n and len(fresh.monitors) == n
    del fresh
    gc.collect()
    # The direct route loads every model's record packed (most are other workers' models):
    # what such a worker holds for the models it is not fed is their records' bytes.
    t = time.perf_counter()
    packed = MonitorEngine(config)
    for model_id, record in records.items():
        packed.import_record(model_id, record, lazy=True)
    lazy_s = time.perf_counter() - t
    assert len(packed.dormant) == n and not packed.monitors
    del packed, records
    gc.collect()

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    first = tracemalloc.take_snapshot()
    sample = MonitorEngine(config)
    build(sample, args.trace_models, data)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    sites = tracemalloc.take_snapshot().compare_to(first, "lineno")
    tracemalloc.stop()
    del sample

    warm_bytes, warm_events = warming(config, args.warming_models, f, args.distinct)

    per_cell_rss = (loaded - before) / cells
    per_cell_traced = traced / (args.trace_models * f)
    target_rss = "target < 1 GB for 10,000 x 20"
    if (n, f) != (10_000, 20):
        target_rss += f"; extrapolated to 10,000 x 20: {mb(before + per_cell_rss * 200_000)}"
    rows = [
        ("RSS before the models (interpreter, libraries, input)", mb(before), ""),
        ("RSS with all models loaded", mb(loaded), target_rss),
        ("peak RSS of the run (VmHWM, includes the restore copy)", mb(vm("VmHWM")), ""),
        ("bytes per (model, feature), RSS delta", f"{per_cell_rss:,.0f} B", "target <= 4 KB"),
        (f"bytes per (model, feature), tracemalloc ({args.trace_models} models)", f"{per_cell_traced:,.0f} B",
         "target <= 4 KB"),
        ("bytes per (model, feature), pickled (export_dirty), uncompressed", f"{raw / cells:,.0f} B", ""),
        ("bytes per (model, feature), pickled, zlib level 1 (as checkpointed)", f"{compressed / cells:,.0f} B", ""),
        (f"state records of {n:,} models (compressed / uncompressed)", f"{mb(compressed)} / {mb(raw)}", ""),
        (f"export_dirty of {n:,} models", f"{export_s:,.2f} s", ""),
        (f"import_state of {n:,} records into a fresh engine", f"{import_s:,.2f} s",
         "target: ready < 30 s with 10,000 models' state (reading the state topic not included)"),
        ("the same, packed (the direct route: every model's record, unpacked at its first input)", f"{lazy_s:,.2f} s",
         f"holds {compressed / cells:,.0f} B per (model, feature) until then"),
    ]
    rows += [
        (f"warming up: bytes per model holding {warm_events:,} events, tracemalloc ({args.warming_models} models)",
         f"{warm_bytes:,.0f} B", f"{warm_bytes / warm_events:,.0f} B per event, {warm_bytes / f:,.0f} B per (model, feature)"),
        (f"warming up: {n:,} models at once (extrapolated)", mb(before + warm_bytes * n), "before any has a reference"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value, target in rows:
        print(f"{label:<{width}}  {value:>16}  {target}")
    print(f"(ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.1f} MB)")
    print(f"where the traced bytes are (allocation sites still live after building {args.trace_models} models; "
          f"bytes per (model, feature)):")
    for st in sites[:args.top]:
        frame = st.traceback[0]
        where = frame.filename.split("site-packages/")[-1].replace(os.getcwd() + "/", "")
        code = linecache.getline(frame.filename, frame.lineno).strip()
        print(f"  {st.size_diff / (args.trace_models * f):8,.0f} B  {st.size_diff / traced:5.1%}  {where}:{frame.lineno}  {code[:90]}")


if __name__ == "__main__":
    main()
