"""The ``streamproc`` command line.

Every worker flag can also be set by an environment variable, ``STREAMPROC_<FLAG>`` with
dashes as underscores (``--window-size`` -> ``STREAMPROC_WINDOW_SIZE``); the flag wins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from .config import ConfigError, load_config

EPILOG_WORKER = """examples:
  streamproc worker --bootstrap 127.0.0.1:9092
  STREAMPROC_BOOTSTRAP=kafka:9092 streamproc worker --config streamproc.yaml --metrics-port 9464
"""


def _add_bootstrap(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--bootstrap", default=os.environ.get("STREAMPROC_BOOTSTRAP"), required=required and not os.environ.get("STREAMPROC_BOOTSTRAP"),
                   help="Kafka bootstrap servers host:port[,host:port] (env STREAMPROC_BOOTSTRAP)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamproc",
        description="Streaming drift monitoring for ML models: prediction events in, drift alerts and retrain requests out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) in the foreground",
                       epilog="example:\n  streamproc broker --port 9092", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")

    p = sub.add_parser("worker", help="run a monitoring worker", epilog=EPILOG_WORKER,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_bootstrap(p)
    p.add_argument("--config", default=os.environ.get("STREAMPROC_CONFIG"), help="YAML config file (env STREAMPROC_CONFIG)")
    p.add_argument("--metrics-port", type=int, default=None, help="port of /metrics, /healthz, /status (env STREAMPROC_METRICS_PORT, default 9464)")
    p.add_argument("--metrics-host", default=None, help="address to bind the HTTP views (env STREAMPROC_METRICS_HOST, default 127.0.0.1)")
    p.add_argument("--window-size", type=int, default=None, help="events per tumbling window (env STREAMPROC_WINDOW_SIZE, default 1000)")
    p.add_argument("--warmup-size", type=int, default=None, help="events forming the reference when there is no reference file (env STREAMPROC_WARMUP_SIZE, default 2000)")
    p.add_argument("--group-id", default=None, help="consumer group (env STREAMPROC_GROUP_ID, default streamproc)")
    p.add_argument("--log-level", default=None, help="debug, info, warning, error (env STREAMPROC_LOG_LEVEL, default info)")

    p = sub.add_parser("demo", help="broker + worker + drifting synthetic producer; prints alerts as they arrive",
                       epilog="example:\n  streamproc demo --events 30000", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=24000, help="events per model (default 24000)")
    p.add_argument("--timeout", type=float, default=100.0, help="seconds before giving up (default 100)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")

    p = sub.add_parser("alerts", help="read the alert topics")
    asub = p.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    asub.required = True
    t = asub.add_parser("tail", help="print alerts and retrain requests as they arrive",
                        epilog="example:\n  streamproc alerts tail --bootstrap 127.0.0.1:9092 --from-beginning",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_bootstrap(t)
    t.add_argument("--from-beginning", action="store_true", help="start at the oldest retained message")
    t.add_argument("--json", action="store_true", help="JSON lines instead of readable text")
    t.add_argument("--alerts-topic", default="drift-alerts")
    t.add_argument("--retrain-topic", default="retrain-requests")

    p = sub.add_parser("reference", help="reference profiles")
    rsub = p.add_subparsers(dest="reference_command", metavar="SUBCOMMAND")
    rsub.required = True
    b = rsub.add_parser("build", help="build a reference profile from training data (CSV or JSON lines)",
                        epilog="example:\n  streamproc reference build --model fraud --version 2026-11-01 "
                               "--input train.csv --score-column score --output refs/fraud.json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--model", required=True, help="model id")
    b.add_argument("--version", default="default", help="model version (default: default)")
    b.add_argument("--input", required=True, help="training data: .csv (a column per feature) or .jsonl (prediction events)")
    b.add_argument("--output", default=None, help="profile JSON to write (name it as reference_file in the config)")
    b.add_argument("--publish", action="store_true", help="publish the profile to the references topic; running workers pick it up")
    _add_bootstrap(b)
    b.add_argument("--topic", default="model-references", help="references topic (default model-references)")
    b.add_argument("--score-column", default=None, help="CSV column holding the prediction score")
    b.add_argument("--label-column", default=None, help="CSV column holding the predicted label")
    b.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature (default 10)")
    b.add_argument("--max-categories", type=int, default=50, help="categories kept per feature (default 50)")

    p = sub.add_parser("schemas", help="write or check the JSON Schema files of the event contract")
    p.add_argument("--dir", default="schemas", help="directory of the schema files (default ./schemas)")
    p.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    return parser


def _worker(args) -> int:
    overrides = {
        "bootstrap": args.bootstrap, "metrics_port": args.metrics_port, "metrics_host": args.metrics_host,
        "window_size": args.window_size, "warmup_size": args.warmup_size, "group_id": args.group_id,
        "log_level": args.log_level,
    }
    config = load_config(args.config, overrides)
    from .app import run

    return run(config)


def _schemas(args) -> int:
    from .events import SCHEMA_MODELS, json_schema

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for name in SCHEMA_MODELS:
        path = out / f"{name}.v1.json"
        text = json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date: " + ", ".join(stale) + " (run: streamproc schemas)", file=sys.stderr)
        return 1
    return 0


def _alerts(args) -> int:
    from .tail import tail

    if not args.bootstrap:
        raise ConfigError("--bootstrap (or STREAMPROC_BOOTSTRAP) is required")
    asyncio.run(tail(args.bootstrap, [args.alerts_topic, args.retrain_topic], args.from_beginning, args.json))
    return 0


def _reference(args) -> int:
    from .reference_file import build_reference_file

    if not args.output and not args.publish:
        raise ConfigError("give --output FILE, --publish, or both")
    if args.publish and not args.bootstrap:
        raise ConfigError("--publish needs --bootstrap (or STREAMPROC_BOOTSTRAP)")
    try:
        profile = build_reference_file(args.model, args.version, args.input, args.output,
                                       args.score_column, args.label_column, bins=args.bins,
                                       max_categories=args.max_categories, progress=sys.stderr.isatty())
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    kinds: dict[str, int] = {}
    for f in profile.features.values():
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    summary = (f"{args.model}/{args.version} from {profile.count} rows, "
               + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + " features"
               + (", prediction score" if profile.score else "") + (", prediction label" if profile.label else ""))
    if args.output:
        print(f"wrote {args.output}: {summary}")
    if args.publish:
        from .kafka import publish_reference

        asyncio.run(publish_reference(args.bootstrap, args.topic, profile.to_dict()))
        print(f"published to {args.topic} at {args.bootstrap}: {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "broker":
            from .broker import run_foreground

            return run_foreground(args.port)
        if args.command == "worker":
            return _worker(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.events, args.timeout, args.json)
        if args.command == "alerts":
            return _alerts(args)
        if args.command == "reference":
            return _reference(args)
        if args.command == "schemas":
            return _schemas(args)
    except ConfigError as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, not a traceback (set STREAMPROC_DEBUG=1 for one)
        if os.environ.get("STREAMPROC_DEBUG"):
            raise
        print(f"streamproc: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
