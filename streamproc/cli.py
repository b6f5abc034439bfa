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
import re
import sys
from pathlib import Path
from typing import Optional

from aiokafka.errors import KafkaConnectionError

from .broker import BrokerError
from .config import ConfigError, load_config
from .events import is_id
from .demo import MIN_EVENTS as MIN_DEMO_EVENTS
from .demo import WARMUP_SIZE as DEMO_WARMUP_SIZE
from .demo import WINDOW_SIZE as DEMO_WINDOW_SIZE
from .status_view import DEFAULT_URL as DEFAULT_STATUS_URL

EPILOG_WORKER = """examples:
  streamproc worker --bootstrap 127.0.0.1:9092
  STREAMPROC_BOOTSTRAP=kafka:9092 streamproc worker --config streamproc.yaml --metrics-port 9464
"""

EPILOG_PRODUCE = """examples:
  streamproc produce --bootstrap 127.0.0.1:9092 --input events.jsonl --rate 500
  streamproc produce --bootstrap 127.0.0.1:9092 --input live.csv --model fraud --version 2026-11-01
  streamproc produce --bootstrap 127.0.0.1:9092 --synthetic --models fraud,churn --events 20000 \\
      --drift-at 10000 --drift-models fraud --drift-features x0,c0 --drift-shift 1.0
"""

EPILOG_STATUS = """examples:
  streamproc status                                  # the worker on 127.0.0.1:9464
  streamproc status --url http://10.0.0.7:9464 --json
"""

EPILOG_FORWARD = """examples:
  streamproc alerts forward --bootstrap 127.0.0.1:9092 --webhook https://hooks.example.com/drift
  streamproc alerts forward --bootstrap kafka:9092 --webhook http://pager:8080/events --from-beginning \\
      --group-id pager-forwarder --max-retries 12
"""


def _demo_events(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of events per model, not {text!r}") from None
    if n < MIN_DEMO_EVENTS:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_DEMO_EVENTS}, not {n} (the drift starts halfway: before it the worker's warm-up "
            f"of {DEMO_WARMUP_SIZE} events, after it at least a whole window of {DEMO_WINDOW_SIZE})")
    return n


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {text!r}")
    return port


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return seconds


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {low}, not {text!r}")
        return value
    return parse


def _event_id_text(text: str) -> str:
    """A model id or version as the event contract allows them (a reference for any other would
    never meet an event)."""
    if not is_id(text):
        raise argparse.ArgumentTypeError(f"must be 1 to 256 characters without control characters, not {text!r}")
    return text


def _model_ids(text: str) -> list[str]:
    """``produce --models``: comma-separated model ids an event can carry, none twice."""
    ids = [m.strip() for m in text.split(",") if m.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"must name at least one model id, not {text!r}")
    repeated = sorted({m for m in ids if ids.count(m) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"names {', '.join(repeated)} more than once")
    return [_event_id_text(m) for m in ids]


def _add_bootstrap(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--bootstrap", default=os.environ.get("STREAMPROC_BOOTSTRAP"), required=required and not os.environ.get("STREAMPROC_BOOTSTRAP"),
                   help="Kafka bootstrap servers host:port[,host:port] (env STREAMPROC_BOOTSTRAP)")


def _add_output_topics(p: argparse.ArgumentParser) -> None:
    """--config, --alerts-topic, --retrain-topic of the commands reading the output topics (``_output_topics``)."""
    p.add_argument("--config", default=os.environ.get("STREAMPROC_CONFIG"),
                   help="config file for Kafka TLS/SASL settings and topic names (env STREAMPROC_CONFIG; STREAMPROC_KAFKA_* also apply)")
    p.add_argument("--alerts-topic", default=None,
                   help="default: the alerts topic (env STREAMPROC_TOPIC_ALERTS, else the config's, else drift-alerts)")
    p.add_argument("--retrain-topic", default=None,
                   help="default: the retrain topic (env STREAMPROC_TOPIC_RETRAIN, else the config's, else retrain-requests)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamproc",
        description="Streaming drift monitoring for ML models: prediction events in, drift alerts and retrain requests out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) in the foreground",
                       epilog="example:\n  streamproc broker --port 9092", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=_port, default=None, help="port on 127.0.0.1 (default, or 0: a free one)")

    p = sub.add_parser("worker", help="run a monitoring worker", epilog=EPILOG_WORKER,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_bootstrap(p)
    p.add_argument("--config", default=os.environ.get("STREAMPROC_CONFIG"), help="YAML config file (env STREAMPROC_CONFIG)")
    p.add_argument("--metrics-port", type=int, default=None, help="port of /metrics, /healthz, /status (env STREAMPROC_METRICS_PORT, default 9464)")
    p.add_argument("--metrics-host", default=None, help="address to bind the HTTP views (env STREAMPROC_METRICS_HOST, default 127.0.0.1)")
    p.add_argument("--window-size", type=int, default=None, help="events per tumbling window (env STREAMPROC_WINDOW_SIZE, default 1000)")
    p.add_argument("--warmup-size", type=int, default=None, help="events forming the reference when there is no reference file (env STREAMPROC_WARMUP_SIZE, default 2000)")
    p.add_argument("--group-id", default=None, help="consumer group (env STREAMPROC_GROUP_ID, default streamproc)")
    p.add_argument("--route", choices=("repartition", "direct"), default=None,
                   help="repartition events by model id through an internal topic so several workers can share them "
                        "(default), or consume them directly (one worker, or producers keying by model id) "
                        "(env STREAMPROC_ROUTE)")
    p.add_argument("--log-level", default=None, help="debug, info, warning, error or critical (env STREAMPROC_LOG_LEVEL, default info)")

    p = sub.add_parser("demo", help="broker + worker + drifting synthetic producer; prints alerts as they arrive",
                       epilog="example:\n  streamproc demo --events 30000", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=_demo_events, default=24000,
                   help=f"events per model, at least {MIN_DEMO_EVENTS} (the drift starts halfway, after the worker's "
                        f"warm-up of {DEMO_WARMUP_SIZE}; default 24000)")
    p.add_argument("--timeout", type=_positive_seconds, default=100.0,
                   help="seconds the whole demo may take, from starting the broker to the last alert read, before it "
                        "gives up with an error naming what it was waiting for (exit 1; default 100)")
    p.add_argument("--json", action="store_true", help="print alerts and retrain requests as JSON lines, alone on stdout (status lines go to stderr)")

    p = sub.add_parser("produce", help="send prediction events from a JSON-lines or CSV file, or synthetic ones",
                       description="Send prediction events to the predictions topic, keyed by model id. A file is checked "
                                   "against the event contract before anything is sent: an invalid line stops the command "
                                   "(file:line: reason) unless --skip-invalid. CSV: one event per row; columns event_id "
                                   "(default <file stem>-<row>), ts (default: the time it is sent), score and/or label "
                                   "(the prediction; neither: an empty one), every other column a feature.",
                       epilog=EPILOG_PRODUCE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_bootstrap(p)
    p.add_argument("--config", default=os.environ.get("STREAMPROC_CONFIG"),
                   help="config file for Kafka TLS/SASL settings and topic names (env STREAMPROC_CONFIG; STREAMPROC_KAFKA_* also apply)")
    p.add_argument("--topic", default=None, help="topic to send to (default: the predictions topic, predictions)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="events to send: .jsonl (one event per line, sent as is) or .csv (one row per event)")
    src.add_argument("--synthetic", action="store_true", help="generate events (streamproc.synth) instead of reading a file")
    p.add_argument("--rate", type=float, default=None, metavar="EVENTS_PER_S", help="send at this rate (default: as fast as possible)")
    p.add_argument("--skip-invalid", action="store_true", help="report invalid lines on stderr and send the rest, instead of stopping")
    g = p.add_argument_group("CSV input")
    g.add_argument("--model", default=None, type=_event_id_text, help="model id of every row (required for CSV)")
    g.add_argument("--version", default=None, type=_event_id_text,
                   help="model version of every row (CSV and --synthetic; default: none, i.e. default)")
    g.add_argument("--score-column", default=None,
                   help="column holding the prediction score (default score, if the file has that column; '' for none)")
    g.add_argument("--label-column", default=None,
                   help="column holding the predicted label (default label, if the file has that column; '' for none)")
    g = p.add_argument_group("synthetic events")
    g.add_argument("--models", default=None, type=_model_ids,
                   help="comma-separated model ids (features x0..x4 numeric, c0 categorical)")
    g.add_argument("--events", type=int, default=None, help="events per model (default 10000)")
    g.add_argument("--drift-at", type=int, default=None, metavar="K", help="drift from event K of each model on (default: no drift)")
    g.add_argument("--drift-models", default=None, type=_model_ids,
                   help="comma-separated models (of --models) that drift (default: every model)")
    g.add_argument("--drift-features", default=None, help="comma-separated features that drift (default x0)")
    # (None: not given; flags of the other source are refused, so which were given matters)
    g.add_argument("--drift-shift", type=float, default=None,
                   help="shift of drifting numeric features, in standard deviations (default 1.0)")
    g.add_argument("--drift-category-rate", type=float, default=None,
                   help="share of a drifting categorical feature's values replaced by a new category (default 0.3)")
    g.add_argument("--seed", type=int, default=None, help="random seed (model i uses seed+i; default 0)")

    p = sub.add_parser("status", help="show a running worker's state (its /status) as a table",
                       epilog=EPILOG_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("STREAMPROC_STATUS_URL", DEFAULT_STATUS_URL),
                   help=f"the worker's HTTP address, its --metrics-host and --metrics-port (env STREAMPROC_STATUS_URL, default {DEFAULT_STATUS_URL})")
    p.add_argument("--json", action="store_true", help="print the JSON the worker answered, unchanged")
    p.add_argument("--timeout", type=_positive_seconds, default=5.0, help="seconds to wait for the answer (default 5)")

    p = sub.add_parser("alerts", help="read the alert topics",
                       epilog="examples:\n  streamproc alerts tail --bootstrap 127.0.0.1:9092\n"
                              "  streamproc alerts forward --bootstrap 127.0.0.1:9092 --webhook https://hooks.example.com/drift",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = p.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    asub.required = True
    t = asub.add_parser("tail", help="print alerts and retrain requests as they arrive",
                        epilog="example:\n  streamproc alerts tail --bootstrap 127.0.0.1:9092 --from-beginning",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_bootstrap(t)
    _add_output_topics(t)
    t.add_argument("--from-beginning", action="store_true", help="start at the oldest retained message")
    t.add_argument("--json", action="store_true", help="JSON lines instead of readable text")
    f = asub.add_parser("forward", help="POST alerts and retrain requests to a webhook (at-least-once, de-duplicated)",
                        description="Consume alerts and retrain requests as a consumer group and POST each, as JSON, to "
                                    "a webhook; offsets are committed only after the webhook accepted a message. "
                                    "Connection errors, 5xx and 429 are retried with exponential backoff (Retry-After "
                                    "is honoured); a message still failing after --max-retries retries, or refused "
                                    "with another status, stops the forwarder with exit 1 without committing it, so a "
                                    "restart retries it. Ids forwarded recently are not POSTed again. SIGTERM stops it "
                                    "cleanly (exit 0).",
                        epilog=EPILOG_FORWARD, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_bootstrap(f)
    f.add_argument("--webhook", required=True, metavar="URL", help="http(s) URL to POST each event to")
    _add_output_topics(f)
    f.add_argument("--from-beginning", action="store_true",
                   help="a group without committed offsets starts at the oldest retained message (default: new ones only)")
    f.add_argument("--group-id", default="streamproc-forwarder", help="consumer group (default streamproc-forwarder)")
    f.add_argument("--max-retries", type=int, default=8, help="retries of one message before giving up (default 8)")
    f.add_argument("--timeout", type=_positive_seconds, default=10.0, help="seconds to wait for the webhook's answer (default 10)")

    p = sub.add_parser("reference", help="reference profiles",
                       epilog="example:\n  streamproc reference build --model fraud --input train.csv --output refs/fraud.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    rsub = p.add_subparsers(dest="reference_command", metavar="SUBCOMMAND")
    rsub.required = True
    b = rsub.add_parser("build", help="build a reference profile from training data (CSV, JSON lines or Parquet)",
                        epilog="example:\n  streamproc reference build --model fraud --version 2026-11-01 "
                               "--input train.csv --score-column p_fraud --output refs/fraud.json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--model", required=True, type=_event_id_text, help="model id")
    b.add_argument("--version", default="default", type=_event_id_text, help="model version (default: default)")
    b.add_argument("--input", required=True, help="training data: .csv or .parquet (a column per feature) or .jsonl (prediction events)")
    b.add_argument("--output", default=None, help="profile JSON to write (name it as reference_file in the config)")
    b.add_argument("--publish", action="store_true", help="publish the profile to the references topic; running workers pick it up")
    _add_bootstrap(b)
    b.add_argument("--config", default=os.environ.get("STREAMPROC_CONFIG"),
                   help="config file for Kafka TLS/SASL settings and topic names, for --publish (env STREAMPROC_CONFIG; "
                        "STREAMPROC_KAFKA_* also apply)")
    b.add_argument("--topic", default=None,
                   help="references topic (default: STREAMPROC_TOPIC_REFERENCES, the config's, or model-references)")
    b.add_argument("--score-column", default=None,
                   help="CSV or Parquet column holding the prediction score (default score, if the file has that "
                        "column; '' for none); it is not a feature")
    b.add_argument("--label-column", default=None,
                   help="CSV or Parquet column holding the predicted label (default label, if the file has that "
                        "column; '' for none); it is not a feature")
    b.add_argument("--bins", type=_at_least(2), default=10, help="quantile bins per numeric feature (default 10)")
    b.add_argument("--max-categories", type=_at_least(1), default=50, help="categories kept per feature (default 50)")

    p = sub.add_parser("schemas", help="write or check the JSON Schema files of the event contract",
                       epilog="examples:\n  streamproc schemas --dir schemas\n  streamproc schemas --check",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="schemas", help="directory of the schema files (default ./schemas)")
    p.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    return parser


def _worker(args) -> int:
    overrides = {
        "bootstrap": args.bootstrap, "metrics_port": args.metrics_port, "metrics_host": args.metrics_host,
        "window_size": args.window_size, "warmup_size": args.warmup_size, "group_id": args.group_id,
        "route": args.route, "log_level": args.log_level,
    }
    config = load_config(args.config, overrides)
    from .app import preflight, run

    args.bootstrap = config.worker.bootstrap  # (named if it cannot be reached)

    def check() -> None:
        with args.client_errors:
            preflight(config)

    return run(config, check)


def _schemas(args) -> int:
    from .events import SCHEMA_MODELS, json_schema

    out = Path(args.dir)
    if not args.check:
        out.mkdir(parents=True, exist_ok=True)
    stale, missing = [], []
    for name in SCHEMA_MODELS:
        path = out / f"{name}.v1.json"
        text = json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n"
        if args.check:
            if not path.exists():
                missing.append(str(path))
            elif path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) + ([f"out of date: {', '.join(stale)}"] if stale else [])
    if problems:
        print("; ".join(problems) + " (run: streamproc schemas)", file=sys.stderr)
        return 1
    return 0


def _alerts(args) -> int:
    if args.alerts_command == "forward":
        return _forward(args)
    from .tail import tail

    bootstrap, names, options, _ = _output_topics(args)
    asyncio.run(tail(bootstrap, names, args.from_beginning, args.json, options=options))
    return 0


def _kafka_settings(args):
    """(bootstrap, topic names, aiokafka security options) from the flags, the environment and --config."""
    from .kafka import client_options

    config = load_config(args.config)
    bootstrap = args.bootstrap or (config.worker.bootstrap if args.config else None)
    if not bootstrap:
        raise ConfigError("--bootstrap (or STREAMPROC_BOOTSTRAP) is required")
    args.bootstrap = bootstrap  # for error messages
    return bootstrap, config.worker.topics, client_options(config.worker.kafka)


def _output_topics(args):
    """(bootstrap, [alerts topic, retrain topic], aiokafka options, partitions) for ``alerts tail`` and
    ``alerts forward``: a flag beats STREAMPROC_TOPIC_*, which beats --config, which beats the default."""
    bootstrap, topics, options = _kafka_settings(args)
    return bootstrap, [args.alerts_topic or topics.alerts, args.retrain_topic or topics.retrain], options, topics.partitions


PRODUCE_FILE_FLAGS = ("model", "score_column", "label_column", "skip_invalid")
PRODUCE_SYNTHETIC_FLAGS = ("models", "events", "drift_at", "drift_models", "drift_features", "drift_shift",
                           "drift_category_rate", "seed")


def _given(args, dests) -> str:
    """The flags among ``dests`` that the command line gave, as the user wrote them."""
    return ", ".join(f"--{d.replace('_', '-')}" for d in dests
                     if getattr(args, d) is not None and getattr(args, d) is not False)  # (0 is given: 0 == False)


def _produce(args) -> int:
    from .produce import InvalidInput, SyntheticSource, open_source, produce, synthetic_drift

    if args.rate is not None and not args.rate > 0:
        raise ConfigError("--rate must be a positive number of events per second")
    try:
        if args.synthetic:
            if not args.models:
                raise ConfigError("--synthetic needs --models a,b")
            if args.model:
                raise ConfigError("--model is for CSV input; --synthetic takes --models")
            wrong = _given(args, PRODUCE_FILE_FLAGS)
            if wrong:
                raise ConfigError(f"{wrong}: only for --input files, not --synthetic")
            events = 10000 if args.events is None else args.events
            if events < 1:
                raise ConfigError("--synthetic needs --events of 1 or more")
            if args.drift_models and args.drift_at is None:
                raise ConfigError("--drift-models needs --drift-at")
            drift = synthetic_drift(args.drift_at, args.drift_features, args.drift_shift, args.drift_category_rate)
            if drift is not None and drift.start >= events:
                raise ConfigError(f"--drift-at {drift.start} is not below --events {events}: no event would drift")
            source = SyntheticSource(args.models, events, drift, args.version, args.seed or 0,
                                     drift_models=args.drift_models)
        else:
            wrong = _given(args, PRODUCE_SYNTHETIC_FLAGS)
            if wrong:
                raise ConfigError(f"{wrong}: only for --synthetic, not --input")
            source = open_source(args.input, args.model, args.version, args.score_column, args.label_column,
                                 load_config(args.config).worker.max_future_seconds)
            source.check_start()  # a header that cannot be used, as reference build refuses it (exit 2)
    except (ValueError, InvalidInput) as exc:  # a usage error: the flags or the file named (exit 2, as reference build)
        raise ConfigError(str(exc)) from None
    bootstrap, topics, options = _kafka_settings(args)
    topic = args.topic or topics.predictions
    try:
        summary = produce(bootstrap, topic, source, args.rate, args.skip_invalid, sys.stderr.isatty(), options,
                          topics.partitions)
    except InvalidInput as exc:
        said = f"{exc.sent} event(s) were sent before it" if exc.sent else "nothing was sent"
        if exc.line_error and not args.skip_invalid:
            said += "; --skip-invalid sends the valid lines"
        print(f"streamproc: error: {exc} ({said})", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


def _status(args) -> int:
    from .status_view import StatusError, fetch, render

    try:
        body = fetch(args.url, args.timeout)
    except StatusError as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 1
    print(body.decode() if args.json else render(json.loads(body)))
    return 0


def _forward(args) -> int:
    from .forward import GiveUp, forward

    if not args.webhook.startswith(("http://", "https://")):
        raise ConfigError(f"--webhook must be an http:// or https:// URL, not {args.webhook!r}")
    import yarl

    try:
        url = yarl.URL(args.webhook)
    except ValueError as exc:
        raise ConfigError(f"--webhook {args.webhook!r} is not a valid URL ({exc})") from None
    if not url.host or any(c.isspace() for c in url.host):
        raise ConfigError(f"--webhook {args.webhook!r} is not a valid URL (no host)")
    if args.max_retries < 0:
        raise ConfigError("--max-retries must be 0 or more")
    bootstrap, names, options, partitions = _output_topics(args)
    try:
        counts = asyncio.run(forward(bootstrap, args.webhook, names, args.group_id, args.from_beginning,
                                     args.max_retries, args.timeout, options, partitions))
    except GiveUp as exc:
        print(f"streamproc: error: {exc}; not committed: a restart retries it", file=sys.stderr)
        return 1
    print(counts.line())
    return 0


def _reference(args) -> int:
    from .reference_file import build_reference_file

    if not args.output and not args.publish:
        raise ConfigError("give --output FILE, --publish, or both")
    if args.publish:  # settled before the (perhaps long) build
        bootstrap, topics, options = _kafka_settings(args)
        topic = args.topic or topics.references
    try:
        profile = build_reference_file(args.model, args.version, args.input, args.output,
                                       args.score_column, args.label_column, bins=args.bins,
                                       max_categories=args.max_categories, progress=sys.stderr.isatty(),
                                       report=lambda message: print(f"streamproc: warning: {message}", file=sys.stderr))
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

        try:
            size = asyncio.run(publish_reference(bootstrap, topic, profile.to_dict(), options))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        print(f"published to {topic} at {bootstrap} ({size:,} bytes): {summary}")
    return 0


class _ClientErrors(logging.Handler):
    """The Kafka client's error lines, kept instead of printed: it logs every failed connection
    attempt, and the error it raises at the end ("Unable to bootstrap") leaves out why (a
    refused connection, a login the broker does not support); the command's one line says the
    last of them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: Optional[str] = None
        self.client = logging.getLogger("aiokafka")

    def emit(self, record: logging.LogRecord) -> None:
        self.last = re.sub(r":? <AIOKafkaConnection[^>]*>", "", record.getMessage())

    def __enter__(self) -> "_ClientErrors":
        self.propagate = self.client.propagate
        self.client.addHandler(self)
        self.client.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        self.client.removeHandler(self)
        self.client.propagate = self.propagate


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown one is reported by the subcommand's parser, with its usage
    (argparse leaves it to the top-level parser, whose usage lists only the commands)."""
    parser = build_parser()
    todo = [parser]
    while todo:
        for action in todo.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    sub.set_defaults(_parser=sub)
                    todo.append(sub)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.client_errors = _ClientErrors()
    if args.command not in ("alerts", "reference", "produce"):
        return _dispatch(args)
    # Short-lived clients: the command reports the outcome in one line (ensure_topics logs
    # every retry too).
    logging.getLogger("streamproc.kafka").setLevel(logging.ERROR)
    with args.client_errors:
        return _dispatch(args)


def _dispatch(args) -> int:
    client_errors = args.client_errors
    try:
        if args.command == "broker":
            from .broker import run_foreground

            return run_foreground(args.port)
        if args.command == "worker":
            return _worker(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.events, args.timeout, args.json)
        if args.command == "produce":
            return _produce(args)
        if args.command == "status":
            return _status(args)
        if args.command == "alerts":
            return _alerts(args)
        if args.command == "reference":
            return _reference(args)
        if args.command == "schemas":
            return _schemas(args)
    except ConfigError as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 1
    except KafkaConnectionError as exc:
        if os.environ.get("STREAMPROC_DEBUG"):
            raise
        detail = client_errors.last or str(exc).removeprefix(f"{type(exc).__name__}: ")
        print(f"streamproc: error: cannot reach Kafka at {getattr(args, 'bootstrap', None)} ({detail})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, not a traceback (set STREAMPROC_DEBUG=1 for one)
        if os.environ.get("STREAMPROC_DEBUG"):
            raise
        said = str(exc) if type(exc).__name__ == "StartupError" else f"{type(exc).__name__}: {exc}"
        print(f"streamproc: error: {said}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
