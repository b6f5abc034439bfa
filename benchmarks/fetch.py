"""What reading a topic costs per record, as aiokafka reads it and as streamproc does.

    python benchmarks/fetch.py [--records 200000] [--bytes 750] [--repeat 3]

Preloads a topic of the embedded broker (4 partitions) and drains it with an aiokafka consumer
(``getmany`` of up to 20,000 records, the worker's fetch settings), nothing else done per
record, alternating aiokafka's own (its ``ConsumerRecord`` and CRC check), with
``streamproc.consumer_records.LeanRecord`` instead, and with ``streamproc.batch_crc``'s
hardware CRC check too (streamproc's);
prints each run and the medians, in µs per record. Pin it to a core (``taskset -c 1``) for
steadier figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

from streamproc import kafka
from streamproc.broker import EmbeddedBroker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from throughput import _ceiling, produce  # noqa: E402


def drain(bootstrap: str, topic: str, total: int, lean: bool, crc: bool) -> float:
    """Seconds per record from the first non-empty batch to the last record (the ceiling
    consumer of ``throughput.py``, without its JSON parsing)."""
    r = asyncio.run(_ceiling(bootstrap, topic, total, lean, parse=False, crc=crc))
    if r["messages"] < total:
        raise SystemExit(f"read only {r['messages']:,} of {total:,} records in 600 s")
    if r["messages"] == r["first_batch"]:
        raise SystemExit("every record came in the first batch: use more --records")
    return 1 / r["rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--bytes", type=int, default=750)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from confluent_kafka import Producer

    with EmbeddedBroker() as broker:
        topic = "fetch-bench"
        asyncio.run(kafka.ensure_topics(broker.bootstrap, [topic], 4))
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
        value = b"x" * args.bytes
        for i in range(args.records):
            produce(p, topic, value, key=str(i).encode())
        assert p.flush(60) == 0
        variants = {"aiokafka's own": (False, False), "lean records": (True, False),
                    "lean records + hardware CRC (streamproc's)": (True, True)}
        runs: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, (lean, crc) in variants.items():
                runs[name].append(drain(broker.bootstrap, topic, args.records, lean, crc) * 1e6)
        print(f"fetch: {args.records:,} records of {args.bytes} bytes, 4 partitions, embedded broker; µs per record")
        medians = {name: statistics.median(values) for name, values in runs.items()}
        own = medians["aiokafka's own"]
        for name, values in runs.items():
            print(f"  {name:<43} runs {' / '.join(f'{v:.2f}' for v in values)}; median {medians[name]:.2f} "
                  f"({medians[name] / own:.2f} of aiokafka's own)")


if __name__ == "__main__":
    main()
