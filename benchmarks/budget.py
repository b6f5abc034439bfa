"""The time a worker may spend per event to reach half the ceiling's rate, against the least
each step of the hot path costs with this stack: how much is left for the engine.

    python benchmarks/budget.py [--events 200000] [--bytes 750] [--repeat 3]

Target 1 of the speed issue asks a worker for at least 0.5 of the rate of a consumer that only
reads and parses the topic (aiokafka ``getmany`` + ``orjson.loads``), so at most twice that
consumer's time per event. In one run, on the same events (20 numeric and 2 categorical
features, padded to ``--bytes`` as ``throughput.py`` pads them), this measures:

- reading (embedded broker, 4 partitions, the worker's fetch settings; per record of a
  drain): the ceiling consumer (wall time, as the target measures it), and streamproc's own
  reading (lean records, hardware CRC check; CPU time: a worker's waits for the broker could
  overlap its other work, so this is the least reading can cost it);
- the steps no implementation of the chosen stack can skip (CPU time per event): msgspec
  decoding an event into its model's struct (the typed decoder of ``model_decoder``, taught:
  validation at its cheapest), and river's ADWIN and Page-Hinkley on the score (the brief
  asks for river's); on the repartition route (the default) also the router's steps: a
  second read of the input, each event's model id, its envelope, the producer's record batch
  (aiokafka's builder: copy and CRC) and the monitor's unwrapping;
- the engine as it is (``MonitorEngine.process`` after ``decode_predictions``, CPU time,
  batches of ``max_batch``; every model starts with a reference, default settings, so this is
  a worker that has held its models for a while), for 3 and 200 models.

It prints the budget, each step's cost, and per route and number of models the best ratio a
worker could reach: the ceiling's time per event over the sum of those steps (the engine
measured without its river calls, which the floor holds). A worker also publishes alerts,
keeps metrics, checkpoints and commits, and reads the routed topic on the repartition route,
none of which the sum holds: its ratio is lower.
This process runs on one core and the broker on the others where there are two or more.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from throughput import _ceiling, pad, produce  # noqa: E402

REFERENCE_EVENTS = 400  # each model's reference is built from this many events of its own stream


def events(models: int, total: int, size: int) -> tuple[list[bytes], dict]:
    """``total`` padded events round-robin over ``models`` models, and each model's reference."""
    from streamproc.events import DEFAULT_MODEL_VERSION
    from streamproc.profile import build_reference
    from streamproc.synth import ModelStream

    per_model = total // models
    per, references = [], {}
    for i in range(models):
        s = ModelStream(f"m{i:03d}", n_numeric=20, n_categorical=2, seed=i)
        evs = list(s.events(REFERENCE_EVENTS + per_model))
        head = evs[:REFERENCE_EVENTS]
        references[(s.model_id, DEFAULT_MODEL_VERSION)] = build_reference(
            s.model_id, DEFAULT_MODEL_VERSION, [e["features"] for e in head], [e["prediction"]["score"] for e in head],
            [e["prediction"]["label"] for e in head])
        per.append([pad(orjson.dumps(e), size) for e in evs[REFERENCE_EVENTS:]])
    return [m for group in zip(*per) for m in group], references


def cpu_per_event(step, n: int, repeat: int) -> float:
    """Median CPU µs per event of ``step()`` (which handles ``n`` events), the collector paused
    as the worker pauses it around a batch."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t = time.process_time()
            step()
            times.append(time.process_time() - t)
        finally:
            gc.enable()
    return statistics.median(times) / n * 1e6


def batches(msgs: list[bytes], size: int) -> list[list[bytes]]:
    return [msgs[i:i + size] for i in range(0, len(msgs), size)]


def engine_need(msgs: list[bytes], references: dict, batch: int, repeat: int) -> tuple[float, float]:
    """CPU µs per event of ``decode_predictions`` and of the engine after it (the second pass
    over the events, so the monitors exist and the typed decoder is taught); medians."""
    from streamproc.config import load_config
    from streamproc.decode import decode_predictions
    from streamproc.engine import MonitorEngine

    config = load_config(None, environ={})
    decode_t, engine_t = [], []
    for _ in range(repeat):
        engine = MonitorEngine(config, references)
        for _pass in range(2):
            d = e = 0.0
            gc.collect()
            gc.disable()
            try:
                for chunk in batches(msgs, batch):
                    t0 = time.process_time()
                    decoded, _ = decode_predictions(chunk, layouts=engine.feature_layout, known=engine.decoder)
                    t1 = time.process_time()
                    engine.process(decoded)
                    d, e = d + t1 - t0, e + time.process_time() - t1
            finally:
                gc.enable()
        decode_t.append(d)
        engine_t.append(e)
    return statistics.median(decode_t) / len(msgs) * 1e6, statistics.median(engine_t) / len(msgs) * 1e6


def typed_decode(msgs: list[bytes], references: dict, batch: int, repeat: int) -> float:
    """CPU µs per event of msgspec alone decoding each event into its model's struct."""
    from streamproc.config import load_config
    from streamproc.decode import decode_predictions
    from streamproc.engine import MonitorEngine

    engine = MonitorEngine(load_config(None, environ={}), references)
    for chunk in batches(msgs, batch):  # teaches the typed decoder every model's layout
        engine.process(decode_predictions(chunk, layouts=engine.feature_layout, known=engine.decoder)[0])
    decode = engine.decoder.decode
    if decode is None:
        raise SystemExit("the typed decoder learned no model")
    return cpu_per_event(lambda: [decode(m) for m in msgs], len(msgs), repeat)


def river_detectors(scores: list[float], repeat: int) -> float:
    """CPU µs per value of river's ADWIN and Page-Hinkley, as the default settings make them."""
    from river.drift import ADWIN, PageHinkley

    from streamproc.config import load_config

    cfg = load_config(None, environ={}).for_model("any")
    std = statistics.pstdev(scores) or 1.0

    def step() -> None:
        adwin = ADWIN(delta=cfg.adwin.delta)
        ph = PageHinkley(min_instances=cfg.page_hinkley.min_instances, delta=cfg.page_hinkley.delta_sigma * std,
                         threshold=cfg.page_hinkley.threshold_sigma * std, alpha=cfg.page_hinkley.alpha)
        a, p = adwin.update, ph.update
        for v in scores:
            a(v)
            p(v)

    return cpu_per_event(step, len(scores), repeat)


def router_steps(msgs: list[bytes], batch: int, repeat: int) -> dict[str, float]:
    """CPU µs per event of the router's steps besides its read, and the monitor's unwrapping."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from streamproc.decode import route_keys
    from streamproc.router import ENVELOPE_BYTES, ENVELOPE_HEADER, PREDICTION, envelopes, unwrap_envelope

    chunks = batches(msgs, batch)
    entries = [[("predictions", 0, i, PREDICTION, None, m, 1_767_225_600_000) for i, m in enumerate(chunk)]
               for chunk in chunks]
    packed = [envelopes(e) for e in entries]

    def produce_batches() -> None:
        for values in packed:
            for value in values:
                b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                              producer_epoch=-1, base_sequence=-1, batch_size=ENVELOPE_BYTES + 4096)
                b.append(0, timestamp=None, key=None, value=value, headers=[(ENVELOPE_HEADER, b"1")])
                b.build()

    n = len(msgs)
    return {
        "model ids (route_keys)": cpu_per_event(lambda: [route_keys(c) for c in chunks], n, repeat),
        "envelopes": cpu_per_event(lambda: [envelopes(e) for e in entries], n, repeat),
        "the producer's record batch": cpu_per_event(produce_batches, n, repeat),
        "the monitor's unwrapping": cpu_per_event(lambda: [unwrap_envelope(v) for vs in packed for v in vs], n, repeat),
    }


def reading(msgs: list[bytes], repeat: int) -> tuple[float, float]:
    """µs per record of the ceiling consumer (wall: the target's measure) and of streamproc's
    reading (CPU: the least it can cost a worker, whose waits for the broker could overlap its
    other work), medians of alternating drains of one preloaded topic."""
    from confluent_kafka import Producer

    from streamproc import kafka
    from streamproc.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= 2:  # the broker (and librdkafka's threads, started below) off this core
            os.sched_setaffinity(broker.proc.pid, cores[1:])
        topic = "budget-bench"
        asyncio.run(kafka.ensure_topics(broker.bootstrap, [topic], 4))
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
        for m in msgs:
            produce(p, topic, m)
        left = p.flush(60)
        del p  # (its threads stop before the broker does)
        if left:
            raise SystemExit("the embedded broker did not take every event")
        if len(cores) >= 2:
            os.sched_setaffinity(0, cores[:1])
        ceiling, own = [], []
        for _ in range(repeat):
            for lean, parse, out in ((False, True, ceiling), (True, False, own)):
                r = asyncio.run(_ceiling(broker.bootstrap, topic, len(msgs), lean, parse=parse))
                if r["messages"] < len(msgs) or r["messages"] == r["first_batch"]:
                    raise SystemExit(f"read {r['messages']:,} of {len(msgs):,} records (first batch {r['first_batch']:,})")
                out.append(1e6 / r["rate"] if out is ceiling else 1e6 * r["cpu_per_message"])
        if len(cores) >= 2:
            os.sched_setaffinity(0, cores)
    return statistics.median(ceiling), statistics.median(own)


def main() -> None:
    from streamproc.config import WorkerSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--bytes", type=int, default=750)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    batch = WorkerSettings().max_batch
    few, few_refs = events(3, args.events, args.bytes)
    many, many_refs = events(200, args.events, args.bytes)
    ceiling, read = reading(many, args.repeat)
    budget = 2 * ceiling
    typed = typed_decode(many, many_refs, batch, args.repeat)
    scores = [orjson.loads(m)["prediction"]["score"] for m in many]
    river = river_detectors(scores, args.repeat)
    router = router_steps(many, batch, args.repeat)
    needs = {name: engine_need(msgs, refs, batch, args.repeat)
             for name, (msgs, refs) in (("3 models", (few, few_refs)), ("200 models", (many, many_refs)))}

    print(f"budget: {args.events:,} events of {args.bytes} bytes, batches of {batch:,}; µs per event, medians of "
          f"{args.repeat} runs")
    print(f"  the ceiling consumer (aiokafka getmany + orjson.loads; wall): {ceiling:.2f} ({1e6 / ceiling:,.0f} events/s); "
          f"0.5 of its rate allows a worker {budget:.2f}")
    direct = {"reading (streamproc's lean records and CRC check; CPU)": read,
              "msgspec decoding each event into its model's struct": typed,
              "river's ADWIN and Page-Hinkley on the score": river}
    routed = {"the router's read of the input (as above)": read, **router}
    print("the least each step costs (CPU):")
    for name, value in {**direct, **routed}.items():
        print(f"  {name:<58} {value:5.2f}")
    print("the engine as it is (models with references, default settings; CPU):")
    for name, (decode, engine) in needs.items():
        print(f"  {name:<11} decode_predictions {decode:5.2f} ({decode - typed:.2f} beyond msgspec), "
              f"engine {engine:5.2f} ({engine - river:.2f} beyond river)")
    print("the best a worker could do: those steps and nothing else (no alerts, metrics, checkpoints, commits):")
    print(f"  {'route':<26} {'models':>6} {'floor':>6} {'+ the rest of decoding and the engine':>38} {'= total':>8} "
          f"{'ratio at best':>13}")
    for route, floor in (("direct", sum(direct.values())),
                         ("repartition (the default)", sum(direct.values()) + sum(routed.values()))):
        for name, (decode, engine) in needs.items():
            rest = (decode - typed) + (engine - river)
            total = floor + rest
            print(f"  {route:<26} {name.split()[0]:>6} {floor:6.2f} {rest:38.2f} {total:8.2f} {ceiling / total:13.2f}")


if __name__ == "__main__":
    main()
