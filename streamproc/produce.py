"""``streamproc produce``: send prediction events to Kafka from a file or the synthetic generator.

Sources:

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one prediction event per line, sent byte for
  byte as written. Blank lines, and a UTF-8 byte order mark before the first, are ignored.
* CSV with a header: one prediction event per row, built from the columns:

  - ``event_id``: the event id; without the column, ``<file stem>-<row number>`` (rows
    counted from 1, after the header), so sending the same file again gives the same ids;
  - ``ts``: event time, RFC 3339 or epoch seconds; without the column, the time the row is
    sent;
  - ``score`` and/or ``label`` (``--score-column``, ``--label-column`` rename them, ``''``
    means none): the prediction; a file with neither (features only, as ``reference build``
    takes) gives events with an empty prediction, ``{}``, which the contract allows;
  - every other column is a feature: a cell that parses as a finite number is a number, an
    empty cell (or ``nan``, ``inf``) is missing, anything else is a category. A score cell
    is read alike, but text that is not a number is an error (empty, ``nan``, ``inf``: no score).

  The model id comes from ``--model`` (required for CSV) and the version from ``--version``.
* The synthetic generator (``streamproc.synth``): ``--models a,b`` each get ``--events N``
  events, interleaved, with optional drift of chosen features from event ``--drift-at`` (of
  every model, or of those in ``--drift-models``).

Every event read from a file is checked against the event contract by the worker's own
decoder before anything is sent: an invalid line stops the command with one line naming it
(``file:line: reason``) and nothing is sent. With ``skip_invalid`` the invalid lines are
reported on stderr, counted and skipped, and the rest is sent in one pass.

Messages are keyed by model id. ``rate`` paces the sends with a token bucket (no rate: as
fast as the producer takes them).
"""

from __future__ import annotations

import asyncio
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import orjson

from . import kafka
from .config import WorkerSettings
from .decode import decode_predictions
from .progress import CountingLines, Progress
from .reference_file import DEFAULT_LABEL_COLUMN, DEFAULT_SCORE_COLUMN, EVENT_COLUMNS, _cell, csv_label, header_problem
from .synth import Drift, ModelStream

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
MAX_REPORTED = 20  # invalid lines reported one by one with skip_invalid; the rest are only counted


class InvalidInput(Exception):
    """An input line that is not a valid prediction event (``file:line: reason``), or an unusable file.

    ``line_error``: the problem is one line's (``skip_invalid`` would skip it), not the whole
    file's. ``sent``: events sent before it was met (``send`` sets it)."""

    def __init__(self, message: str, line_error: bool = False):
        super().__init__(message)
        self.line_error = line_error
        self.sent = 0


@dataclass(slots=True)
class Record:
    line: int  # line of the input file (0 for generated events)
    key: bytes
    value: bytes


MAX_FUTURE_SECONDS = WorkerSettings.model_fields["max_future_seconds"].default


def check_event(raw: bytes, max_future: Optional[float] = MAX_FUTURE_SECONDS) -> str:
    """The model id of a prediction event, checked as the worker checks it (``max_future``: its
    ``worker.max_future_seconds``); InvalidInput if it is not one."""
    batches, rejected = decode_predictions([raw], not_after=math.inf if max_future is None else time.time() + max_future)
    if rejected:
        raise InvalidInput(rejected[0].reason)
    return next(iter(batches))[0]


# ---------------------------------------------------------------------------------- CSV rows

@dataclass(frozen=True)
class CsvLayout:
    """How the columns of a CSV map to a prediction event."""

    model_id: str
    model_version: Optional[str] = None
    score_column: str = DEFAULT_SCORE_COLUMN
    label_column: str = DEFAULT_LABEL_COLUMN
    id_prefix: str = "row"
    named: tuple[str, ...] = ()  # columns the user named, which the file must have

    def check_header(self, columns: list[str]) -> None:
        wrong = header_problem(columns)  # (as reference build refuses them)
        if wrong:
            raise InvalidInput(wrong)
        for name in self.named:
            if name not in columns:
                raise InvalidInput(f"no column {name!r} (columns: {', '.join(columns)})")


def _feature(text: Optional[str]):
    value = _cell(text or "")
    return None if isinstance(value, float) and not math.isfinite(value) else value


def row_to_event(row: dict, row_number: int, layout: CsvLayout, now: Callable[[], float] = time.time) -> dict:
    """The prediction event of one CSV row (a ``csv.DictReader`` record); InvalidInput if it cannot be one."""
    if None in row:
        raise InvalidInput(f"{len(row[None])} more cell(s) than the header has columns")
    reserved = (*EVENT_COLUMNS, layout.score_column, layout.label_column)
    event: dict = {}
    if "event_id" in row:
        event_id = row["event_id"]
        if not event_id:
            raise InvalidInput("empty event_id")
    else:
        event_id = f"{layout.id_prefix}-{row_number}"
    event["event_id"] = event_id
    event["model_id"] = layout.model_id
    if layout.model_version is not None:
        event["model_version"] = layout.model_version
    if "ts" in row:
        ts = row["ts"]
        if ts is None or ts == "":
            raise InvalidInput("empty ts")
        try:
            event["ts"] = float(ts)
        except ValueError:
            event["ts"] = ts  # RFC 3339 or not: the contract check says
    else:
        event["ts"] = round(now(), 3)
    event["features"] = {k: _feature(v) for k, v in row.items() if k not in reserved}
    prediction: dict = {}
    score = row.get(layout.score_column)
    value = _cell(score)  # as ``reference build`` reads it: empty, nan and inf are a missing score
    if isinstance(value, (str, bool)):
        raise InvalidInput(f"{layout.score_column} {score!r} is not a number (the {layout.score_column!r} column is "
                           f"the prediction score; --score-column '' makes it a feature)")
    if value is not None:
        prediction["score"] = value
    label = csv_label(row.get(layout.label_column))
    if label is not None:
        prediction["label"] = label
    event["prediction"] = prediction
    return event


# ---------------------------------------------------------------------------------- sources

class Source:
    """Where events come from: ``records()`` yields them, ``done`` / ``total`` measure progress."""

    label = "events"
    total: float = 1.0
    done: float = 0.0
    skipped: int = 0
    checkable = False  # file sources are checked completely before sending

    def records(self, skip_invalid: bool = False, report: Optional[Callable[[str], None]] = None) -> Iterator[Record]:
        raise NotImplementedError

    def check_start(self) -> None:
        """InvalidInput if the source cannot be sent at all (a CSV's header), before any line is read."""

    def _invalid(self, where: str, reason: str, skip_invalid: bool, report) -> None:
        message = f"{where}: {reason}"
        if not skip_invalid:
            raise InvalidInput(message, line_error=True)
        self.skipped += 1
        if report is not None and self.skipped <= MAX_REPORTED:
            report(f"skipped {message}" + (" (further invalid lines are counted, not shown)"
                                           if self.skipped == MAX_REPORTED else ""))


class JsonLinesSource(Source):
    checkable = True

    def __init__(self, path: Path, max_future: Optional[float] = MAX_FUTURE_SECONDS):
        self.path = path
        self.max_future = max_future
        self.label = path.name
        self.total = path.stat().st_size

    def records(self, skip_invalid=False, report=None):
        self.done, self.skipped = 0, 0
        with self.path.open("rb") as f:
            for n, line in enumerate(f, 1):
                self.done += len(line)
                raw = line.strip()
                if n == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte order mark, as some editors write (not JSON)
                if not raw:
                    continue
                try:
                    model_id = check_event(raw, self.max_future)
                except InvalidInput as exc:
                    self._invalid(f"{self.path}:{n}", str(exc), skip_invalid, report)
                    continue
                yield Record(n, model_id.encode(), raw)


class _CsvLines(CountingLines):
    """``CountingLines`` of a CSV, where a line that is not UTF-8 is decoded with its bad bytes
    kept as surrogates, so the CSV reader keeps its place, and remembered in ``bad`` (line
    number -> reason): the row holding it is refused by its line."""

    def __init__(self, binary_file):
        super().__init__(binary_file)
        self.bad: dict[int, str] = {}

    def _decode(self, n: int, line: bytes) -> str:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.bad[n] = f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
            return line.decode("utf-8", "surrogateescape")

    def first_bad(self, after: int, upto: int) -> Optional[tuple[int, str]]:
        """(line, reason) of the first undecodable line in ``after+1 .. upto``, if any."""
        return next(((n, self.bad[n]) for n in range(after + 1, upto + 1) if n in self.bad), None)


class CsvSource(Source):
    checkable = True

    def __init__(self, path: Path, layout: CsvLayout, now: Callable[[], float] = time.time,
                 max_future: Optional[float] = MAX_FUTURE_SECONDS):
        self.path = path
        self.max_future = max_future
        self.layout = layout
        self.now = now
        self.label = path.name
        self.total = path.stat().st_size

    def check_start(self) -> None:
        with self.path.open("rb") as f:
            self._header(_CsvLines(f))

    def _header(self, lines: _CsvLines) -> csv.DictReader:
        """A reader of ``lines`` past the header, checked (InvalidInput: the file cannot be sent)."""
        reader = csv.DictReader(lines)
        try:
            columns = reader.fieldnames
        except csv.Error as exc:
            raise InvalidInput(f"{self.path}: not readable CSV ({exc})") from None
        bad = lines.first_bad(0, reader.line_num)
        if bad:
            raise InvalidInput(f"{self.path}:{bad[0]}: header {bad[1]}")
        if not columns:
            raise InvalidInput(f"{self.path}: empty CSV file (a header row is needed)")
        try:
            self.layout.check_header(list(columns))
        except InvalidInput as exc:
            raise InvalidInput(f"{self.path}: {exc}") from None
        return reader

    def records(self, skip_invalid=False, report=None):
        self.done, self.skipped = 0, 0
        key = self.layout.model_id.encode()
        with self.path.open("rb") as f:
            lines = _CsvLines(f)
            reader = self._header(lines)
            row_number = 0
            while True:
                # (the csv reader's own count: DictReader's is updated only after a row it could read)
                last = reader.reader.line_num
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    self.done = lines.done
                    row_number += 1
                    self._invalid(f"{self.path}:{reader.reader.line_num}", f"not readable CSV ({exc})", skip_invalid,
                                  report)
                    continue
                self.done = lines.done
                row_number += 1
                bad = lines.first_bad(last, reader.line_num)
                if bad:
                    self._invalid(f"{self.path}:{bad[0]}", bad[1], skip_invalid, report)
                    continue
                try:
                    raw = orjson.dumps(row_to_event(row, row_number, self.layout, self.now))
                    check_event(raw, self.max_future)
                except InvalidInput as exc:
                    self._invalid(f"{self.path}:{reader.line_num}", str(exc), skip_invalid, report)
                    continue
                yield Record(reader.line_num, key, raw)


class SyntheticSource(Source):
    """``events`` events for each model, interleaved (``streamproc.synth``); ``drift`` applies to
    the models in ``drift_models`` (None: every model; ValueError for one not in ``models``)."""

    def __init__(self, models: list[str], events: int, drift: Optional[Drift] = None, model_version: Optional[str] = None,
                 seed: int = 0, n_numeric: int = 5, n_categorical: int = 1, chunk: int = 2000,
                 drift_models: Optional[list[str]] = None):
        unknown = [m for m in drift_models or () if m not in models]
        if unknown:
            raise ValueError(f"--drift-models: {', '.join(unknown)} not in --models ({', '.join(models)})")
        drifting = set(models if drift_models is None else drift_models)
        self.streams = [ModelStream(m, n_numeric=n_numeric, n_categorical=n_categorical, model_version=model_version,
                                    drift=drift if m in drifting else None, seed=seed + i) for i, m in enumerate(models)]
        self.events = events
        self.chunk = chunk
        self.label = "synthetic " + ",".join(models)
        self.total = events * len(models)

    def records(self, skip_invalid=False, report=None):
        self.done = 0
        for start in range(0, self.events, self.chunk):
            size = min(self.chunk, self.events - start)
            per_model = [(s.model_id.encode(), list(s.events(size, start))) for s in self.streams]
            for i in range(size):
                for key, events in per_model:
                    self.done += 1
                    yield Record(0, key, orjson.dumps(events[i]))


def synthetic_drift(drift_at: Optional[int], features: Optional[str], shift: Optional[float] = None,
                    category_rate: Optional[float] = None, n_numeric: int = 5, n_categorical: int = 1) -> Optional[Drift]:
    """The ``Drift`` the flags describe (None without ``drift_at``); ValueError naming a flag that
    does not apply or would leave a drifting feature as it was. ``shift`` (default 1.0) and
    ``category_rate`` (default 0.3): None when not given."""
    if drift_at is None:
        given = [flag for flag, value in (("--drift-features", features), ("--drift-shift", shift),
                                          ("--drift-category-rate", category_rate)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need(s) --drift-at")
        return None
    if drift_at < 0:
        raise ValueError("--drift-at must be 0 or more")
    names = tuple(n.strip() for n in (features or "x0").split(",") if n.strip())
    known = [f"x{j}" for j in range(n_numeric)] + [f"c{j}" for j in range(n_categorical)]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"--drift-features: unknown feature(s) {', '.join(unknown) or '(none)'}; "
                         f"the synthetic models have {', '.join(known)}")
    numeric = [n for n in names if n.startswith("x")]
    categorical = [n for n in names if n.startswith("c")]
    if shift is not None:
        if not numeric:
            raise ValueError(f"--drift-shift applies to numeric features; --drift-features has none ({', '.join(names)})")
        if not math.isfinite(shift) or shift == 0:
            raise ValueError(f"--drift-shift must be a finite number other than 0 (it would leave "
                             f"{', '.join(numeric)} unchanged), not {shift:g}")
    if category_rate is not None:
        if not categorical:
            raise ValueError(f"--drift-category-rate applies to categorical features; --drift-features has none "
                             f"({', '.join(names)})")
        if not 0.0 < category_rate <= 1.0:
            raise ValueError(f"--drift-category-rate must be above 0 (it would leave {', '.join(categorical)} "
                             f"unchanged) and at most 1, not {category_rate:g}")
    return Drift(drift_at, names, 1.0 if shift is None else shift,
                 (0.3 if category_rate is None else category_rate) if categorical else 0.0)


def open_source(path: str | Path, model_id: Optional[str] = None, model_version: Optional[str] = None,
                score_column: Optional[str] = None, label_column: Optional[str] = None,
                max_future: Optional[float] = MAX_FUTURE_SECONDS) -> Source:
    """The source for an input file, by its suffix. A CSV's prediction is in ``score_column`` /
    ``label_column``: None takes ``score`` / ``label`` if the file has them, ``""`` none, and a
    column named must be in the file (as for ``reference build``). ``max_future``: the workers'
    ``worker.max_future_seconds`` (an event dated further ahead is one they dead-letter)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in JSONL_SUFFIXES + (".csv",):
        raise InvalidInput(f"{path}: unsupported input format (use .jsonl or .csv)")
    if suffix == ".csv" and not model_id:
        raise InvalidInput("CSV input needs --model (the model id of every row)")
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    if suffix == ".csv":
        named = tuple(c for c in (score_column, label_column) if c)
        return CsvSource(path, CsvLayout(model_id, model_version, DEFAULT_SCORE_COLUMN if score_column is None else score_column,
                                         DEFAULT_LABEL_COLUMN if label_column is None else label_column, path.stem, named),
                         max_future=max_future)
    given = [flag for flag, value in (("--model", model_id), ("--version", model_version),
                                      ("--score-column", score_column), ("--label-column", label_column)) if value is not None]
    if given:
        raise InvalidInput(f"{', '.join(given)}: only for CSV input; JSON-lines events carry their own model_id, "
                           "model_version and prediction")
    return JsonLinesSource(path, max_future)


# ---------------------------------------------------------------------------------- pacing

class TokenBucket:
    """Allows ``rate`` events per second on average, in bursts of at most ``burst``.

    ``reserve()`` takes a token and returns how long to wait before using it (0 if there was
    one). Tokens may go negative: the caller can skip tiny waits and the debt is paid by a
    later, longer one, so the average rate stays exact with few sleeps.
    """

    def __init__(self, rate: float, burst: Optional[float] = None, clock: Callable[[], float] = time.monotonic):
        if not rate > 0:
            raise ValueError("the rate must be positive")
        self.rate = float(rate)
        self.capacity = float(burst) if burst is not None else max(1.0, self.rate / 10)  # a tenth of a second
        self.clock = clock
        self.tokens = 1.0
        self.stamp = clock()

    def reserve(self, n: float = 1.0) -> float:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Pacer:
    """Waits as a ``TokenBucket`` says, sleeping only once the debt reaches ``min_sleep`` seconds."""

    def __init__(self, rate: Optional[float], clock: Callable[[], float] = time.monotonic, sleep=asyncio.sleep,
                 min_sleep: float = 0.005):
        self.bucket = TokenBucket(rate, clock=clock) if rate else None
        self.sleep = sleep
        self.min_sleep = min_sleep

    async def wait(self) -> None:
        if self.bucket is None:
            return
        delay = self.bucket.reserve()
        if delay >= self.min_sleep:
            await self.sleep(delay)


# ---------------------------------------------------------------------------------- sending

@dataclass
class Summary:
    sent: int = 0
    seconds: float = 0.0
    skipped: int = 0
    topic: str = ""

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        text = f"sent {self.sent} events to {self.topic} in {self.seconds:.2f} s ({rate:.0f} events/s)"
        if self.skipped:
            text += f"; skipped {self.skipped} invalid line(s)"
        return text


def check_source(source: Source, progress: bool = False) -> None:
    """Read the whole source once, raising InvalidInput at its first invalid line."""
    bar = Progress(f"checking {source.label}", source.total, progress, unit="events")
    n = 0
    for n, _ in enumerate(source.records(), 1):
        bar.update(source.done, n)
    bar.update(source.total, n, final=True)


async def send(bootstrap: str, topic: str, source: Source, rate: Optional[float] = None, skip_invalid: bool = False,
               progress: bool = False, options: Optional[dict] = None, partitions: int = 4,
               report: Optional[Callable[[str], None]] = None, max_pending: int = 5000) -> Summary:
    """Send every record of ``source`` to ``topic``, keyed by model id, paced at ``rate`` events/s."""
    options = options or {}
    await kafka.ensure_topics(bootstrap, [topic], partitions, timeout=15.0, options=options)
    producer = kafka.producer(bootstrap, linger_ms=20, max_batch_size=256 * 1024, **options)
    await producer.start()
    summary = Summary(topic=topic)
    pacer = Pacer(rate)
    bar = Progress(f"sending {source.label}", source.total, progress, unit="events")
    started = time.monotonic()
    pending = []
    try:
        for record in source.records(skip_invalid, report):
            await pacer.wait()
            pending.append(await producer.send(topic, record.value, key=record.key))
            summary.sent += 1
            if len(pending) >= max_pending:
                await asyncio.gather(*pending)
                pending.clear()
            bar.update(source.done, summary.sent)
        await asyncio.gather(*pending)
    except InvalidInput as exc:  # a file that cannot be read on (what came before it is sent)
        await asyncio.gather(*pending)
        exc.sent = summary.sent
        raise
    finally:
        await producer.stop()
    summary.seconds = time.monotonic() - started
    summary.skipped = source.skipped
    bar.update(source.total, summary.sent, final=True)
    return summary


def produce(bootstrap: str, topic: str, source: Source, rate: Optional[float] = None, skip_invalid: bool = False,
            progress: bool = False, options: Optional[dict] = None, partitions: int = 4) -> Summary:
    """Check a file source completely (unless skipping invalid lines: then its start), then send it."""
    if source.checkable and not skip_invalid:
        check_source(source, progress)
    else:
        source.check_start()  # what skipping lines cannot help is said before connecting
    report = lambda message: print(f"streamproc: {message}", file=sys.stderr, flush=True)  # noqa: E731
    return asyncio.run(send(bootstrap, topic, source, rate, skip_invalid, progress, options, partitions, report))

