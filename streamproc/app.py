"""The faust application: worker lifecycle (signals, startup, shutdown) and the HTTP views.

faust runs ``MonitorWorker``'s batched loop as a service and serves ``/metrics`` (Prometheus
text format), ``/healthz`` (200 when consuming, 503 otherwise) and ``/status`` (per-model
state as JSON) on the metrics port. The prediction stream itself does not pass through faust
agents (see ``streamproc.worker`` for the measured reason).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import tempfile
import time
from typing import Callable

import faust
import mode
import mode.utils.logging
import orjson

from . import kafka
from .config import StreamprocConfig
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .worker import MonitorWorker

log = logging.getLogger(__name__)


def build_app(config: StreamprocConfig, datadir: str, metrics: Metrics | None = None) -> tuple[faust.App, MonitorWorker]:
    s = config.worker
    worker = MonitorWorker(config, metrics)
    brokers = ";".join(f"kafka://{h.strip()}" for h in s.bootstrap.split(",") if h.strip())
    opts = kafka.client_options(s.kafka)
    credentials = None
    if "sasl_mechanism" in opts:
        credentials = faust.SASLCredentials(username=opts["sasl_plain_username"], password=opts["sasl_plain_password"],
                                            mechanism=opts["sasl_mechanism"], ssl_context=opts.get("ssl_context"))
    elif "ssl_context" in opts:
        credentials = faust.SSLCredentials(opts["ssl_context"])
    app = faust.App(
        f"{s.group_id}-control",
        broker=brokers,
        broker_credentials=credentials,
        store="memory://",
        datadir=datadir,  # faust wants one; streamproc keeps nothing there
        web_port=s.metrics_port,
        web_bind=s.metrics_host,
        web_host=s.metrics_host,
        topic_partitions=1,
        # faust's defaults made it wait about 30 s for its control group to form on a fresh
        # broker; these bring worker start-up to about 4 s.
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.0,
    )

    class MonitorService(mode.Service):
        async def on_start(self) -> None:
            await worker.start()
            worker.start_loop()

        async def on_stop(self) -> None:
            await worker.stop()

    app._extra_services.append(MonitorService())  # an instance: faust starts it after the app

    @app.page("/metrics")
    async def metrics_view(web, request):
        # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 by definition.
        return web.bytes(worker.metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4")

    @app.page("/healthz")
    async def health_view(web, request):
        body = {"status": "ready" if worker.ready else "not_ready"}
        return web.json(body, status=200 if worker.ready else 503)

    @app.page("/status")
    async def status_view(web, request):
        return web.bytes(orjson.dumps(worker.status()), content_type="application/json")

    return app, worker


class ThrottleRepeats(logging.Filter):
    """Let each distinct warning of a chatty library through once per ``seconds``.

    While the broker is away aiokafka logs the same few errors every 100 ms per connection
    (thousands of lines a minute); one a ``seconds`` says as much.
    """

    def __init__(self, seconds: float = 30.0):
        super().__init__()
        self.seconds = seconds
        self.last: dict = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg)[:80])  # the template (or its start), not the values
        now = time.monotonic()
        if now - self.last.get(key, float("-inf")) < self.seconds:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


class LogFormatter(mode.utils.logging.ExtensionFormatter):
    """mode's log formatter (the worker's log lines, colored on a terminal), cheaper where it
    writes no colors: colorlog copies all of its 635 escape codes into each record it formats,
    blank ones included, 37 µs a line; with only those its format names, 7 µs (alert storms and
    dead-letter floods log a line each). The text is the same."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # colorlog decides from the stream and the environment (NO_COLOR, FORCE_COLOR) when it
        # formats; here once, when the worker starts. A code the format names, in whichever
        # style, appears in it: those (and any other name that happens to) are blanked.
        fmt = self._fmt or ""
        self._blanks = None if self._colorize() else {name: "" for name in self._escape_code_map("INFO") if name in fmt}

    def formatMessage(self, record: logging.LogRecord) -> str:
        if self._blanks is None:
            return super().formatMessage(record)
        return logging.Formatter.formatMessage(self, _BlankCodes(record, self._blanks))


class _BlankCodes:
    """A record with its format's color codes blank (colorlog's ColoredRecord, minus the rest)."""

    def __init__(self, record: logging.LogRecord, blanks: dict) -> None:
        self.__dict__.update(record.__dict__)
        self.__dict__.update(blanks)


def logging_config() -> dict:
    """For ``faust.Worker``: mode's logging setup, with ``LogFormatter`` for its colored formatter."""
    colored = dict(mode.utils.logging.DEFAULT_FORMATTERS["colored"])
    colored["()"] = f"{__name__}.LogFormatter"
    return {"merge": True, "formatters": {"colored": colored}}


def throttle_library_logs(prefix: str = "aiokafka", seconds: float = 30.0) -> None:
    throttle = ThrottleRepeats(seconds)
    for name in list(logging.root.manager.loggerDict):
        if name == prefix or name.startswith(prefix + "."):
            logging.getLogger(name).addFilter(throttle)


def faust_worker(app: faust.App, config: StreamprocConfig) -> faust.Worker:
    """faust's worker for ``app``: lifecycle, signals, logging (with ``LogFormatter``)."""
    return faust.Worker(app, loglevel=config.worker.log_level.upper(), quiet=True, logging_config=logging_config())


class StartupError(Exception):
    """Something that stops the worker before it starts, said in one line."""


def preflight(config: StreamprocConfig) -> None:
    """Fail at once, in one line, for what would stop the worker as it starts: its metrics port
    taken, Kafka not reachable (faust reports either with a traceback of dozens of lines).
    Raises ``StartupError``, or aiokafka's error for Kafka (``KafkaConnectionError`` when
    nothing answers, another ``KafkaError`` for a refused login)."""
    w = config.worker
    try:
        family = socket.AF_INET6 if ":" in w.metrics_host else socket.AF_INET
        socket.create_server((w.metrics_host, w.metrics_port), family=family).close()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise StartupError(f"the metrics port {w.metrics_host}:{w.metrics_port} (worker.metrics_port) cannot be "
                           f"used: {reason}") from None

    async def reach() -> None:
        producer = kafka.producer(w.bootstrap, **kafka.client_options(w.kafka))
        try:
            await producer.start()
        finally:
            await producer.stop()

    asyncio.run(reach())


def run(config: StreamprocConfig, check: Callable[[], None] = lambda: None) -> int:
    """Run the worker in the foreground until SIGINT/SIGTERM; ``check`` (e.g. ``preflight``)
    runs once the worker is built (a bad reference file is a configuration error, said first)."""
    with tempfile.TemporaryDirectory(prefix="streamproc-faust-") as datadir:
        app, worker = build_app(config, datadir)
        check()
        throttle_library_logs()  # (after the check, whose client errors must all be seen)
        fw = faust_worker(app, config)
        worker.on_failure = lambda: os.kill(os.getpid(), signal.SIGTERM)  # faust's own clean shutdown
        try:
            fw.execute_from_commandline()
        except SystemExit as exc:
            if worker.failed:
                return 1
            return exc.code if isinstance(exc.code, int) else 0
    return 1 if worker.failed else 0
