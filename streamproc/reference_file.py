"""Reference profiles on disk: build one from training data, write it, read it back.

Input formats:

* CSV with a header: one column per feature. Cells that parse as numbers are numbers,
  ``true`` / ``false`` (any case) are booleans, empty cells are missing, anything else is a
  category. ``score_column`` / ``label_column`` name the
  prediction columns (excluded from the features); by default they are ``score`` and
  ``label`` where the file has such a column, as for ``streamproc produce``, and ``""`` means
  none (that column, if any, is a feature). ``event_id`` and ``ts`` columns are not features
  either (``produce`` sends them as the event's id and time).
* JSON lines of prediction events (the ``predictions`` topic format): features and prediction
  are taken from each event.
* Parquet (needs pyarrow: ``pip install 'streamproc[parquet]'``): one column per feature, as
  for CSV, with the column types of the file.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Callable, Optional

import orjson

from .config import MonitorConfig
from .decode import decode_predictions, label_text, split_prediction
from .profile import ReferenceProfile, build_reference
from .progress import CountingLines, Progress
from .psi import effective_threshold


_BOOLEANS = {"true": True, "false": False}


_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*\Z")


def _cell(text: Optional[str]):
    """A CSV cell's value, as a live event would carry it in JSON: a number (an integer where
    written as one, so that a categorical code ``7`` reads ``'7'``, as a live JSON ``7`` does,
    not ``'7.0'``), a boolean (``true`` / ``false`` in any case: pandas writes ``True``, a live
    event carries JSON ``true``, which the worker reads as the category ``'true'``), a category,
    or None (empty, absent, or not finite: JSON has no infinity, so ``produce`` sends those as
    null, and a reference must read them so). A number with leading zeros is a number (the hour
    ``05`` is 5): CSV cannot say whether ``02139`` is a quantity or a code."""
    if not text:  # empty, or (a row shorter than the header) absent
        return None
    try:
        value = float(text)
    except ValueError:
        return csv_label(text)
    if not math.isfinite(value):
        return None
    if _INTEGER.match(text):
        number = int(text)
        if -2 ** 63 <= number < 2 ** 64:  # (what JSON writers such as produce's orjson write as integers)
            return number
    return value


def csv_label(text: Optional[str]):
    """A CSV cell's predicted label: None when empty, a boolean as ``_cell`` reads one, else
    the text (a label is never a number: ``"1"`` stays text, as a live ``"1"`` or ``1`` reads)."""
    if not text:
        return None
    return _BOOLEANS.get(text.lower(), text)


class _Progress(Progress):
    """Progress of reading a file, by bytes (only when asked, e.g. on a terminal)."""

    def __init__(self, path: Path, enabled: bool):
        super().__init__(f"reading {path.name}", path.stat().st_size if enabled else 1, enabled, unit="rows")


DEFAULT_SCORE_COLUMN = "score"
DEFAULT_LABEL_COLUMN = "label"
EVENT_COLUMNS = ("event_id", "ts")  # a CSV row's event id and time (``streamproc produce``): never features
# Fewer rows make a reference that hardly ever alerts (PSI thresholds grow with 1 / its count):
# ``reference build`` warns. A thinned warm-up keeps about as many.
MIN_REFERENCE_ROWS = 100


def unnamed_columns(columns: list[str]) -> str:
    """What is wrong with a CSV header with a blank name ("" if it has none): pandas' ``to_csv``
    writes its index so, which no live event carries."""
    blank = [str(i) for i, c in enumerate(columns, 1) if not c]
    if not blank:
        return ""
    return (f"column(s) {', '.join(blank)} of the header have no name (pandas' to_csv writes its index so, which live "
            "events do not carry: write the file with index=False, or drop or name the column)")


def header_problem(columns: list[str]) -> str:
    """What makes a CSV header unusable ("" if nothing), for ``reference build`` and ``produce``
    alike: a blank name (``unnamed_columns``) or a name twice (``repeated_columns``)."""
    return unnamed_columns(columns) or repeated_columns(columns)


def repeated_columns(columns: list[str]) -> str:
    """What is wrong with a CSV header naming a column twice ("" if none does): csv.DictReader
    keeps the last cell of each name, and the others would be lost."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    return f"repeated column name(s): {', '.join(repeated)}" if repeated else ""


def _prediction_column(path: Path, columns: list[str], name: Optional[str], default: str) -> Optional[str]:
    """The column to use: a named one must exist; None means ``default`` if the file has it; "" none."""
    if name is None:
        return default if default in columns else None
    if name and name not in columns:
        raise ValueError(f"{path}: no column {name!r} (columns: {', '.join(columns)})")
    return name or None


def read_training_data(path: str | Path, score_column: Optional[str] = None, label_column: Optional[str] = None,
                       progress: bool = False, model: Optional[tuple[str, str]] = None,
                       report: Optional[Callable[[str], None]] = None):
    """(feature rows, scores, labels) from a CSV, JSON-lines or Parquet file.

    For CSV and Parquet, ``score_column`` / ``label_column`` name the prediction columns;
    None (the default) takes ``score`` / ``label`` when the file has that column, ``""`` none.
    JSON-lines events are checked as the worker checks them (one it would dead-letter is an
    error naming its line) and, given ``model`` (model id, version), only the model's events are
    read: the version's where the file has some, else all of them (a new version's reference
    from its predecessor's events). ``report`` is told what was left out of the file (a Parquet
    file's pandas index columns).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: unsupported input format (use .csv, .jsonl or .parquet)")
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    bar = _Progress(path, progress)
    rows, scores, labels = [], [], []
    if suffix in (".jsonl", ".ndjson", ".json"):
        done = 0
        versions: list[str] = []
        with path.open("rb") as f:
            for n, line in enumerate(f, 1):
                done += len(line)
                if n == 1:
                    line = line.removeprefix(b"\xef\xbb\xbf")  # a byte order mark, as produce drops it
                if not line.strip():
                    continue
                batches, rejected = decode_predictions([line], not_after=math.inf)
                if rejected:
                    raise ValueError(f"{path}:{n}: not a prediction event ({rejected[0].reason})")
                key = next(iter(batches))
                if model is not None and key[0] != model[0]:
                    continue  # another model's
                try:
                    ev = orjson.loads(line)
                    features = ev["features"]
                    if not isinstance(features, dict):
                        raise TypeError(f"features is {type(features).__name__}, not an object")
                    prediction = ev.get("prediction")
                    if isinstance(prediction, (bool, list)) or (prediction is None and "prediction" in ev):
                        raise TypeError(f"prediction is {orjson.dumps(prediction).decode()[:40]}")
                    score, label = split_prediction(prediction) if prediction is not None else (math.nan, None)
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
                    raise ValueError(f"{path}:{n}: not a prediction event ({type(exc).__name__}: {exc})") from None
                rows.append(features)
                scores.append(score)
                labels.append(label)
                versions.append(key[1])
                if n % 10_000 == 0:
                    bar.update(done, len(rows))
        bar.update(done, len(rows), final=True)
        if model is not None and model[1] in versions and len(set(versions)) > 1:
            # The version's own events; a file without any is a new version's reference from
            # its predecessor's events (all the model's).
            keep = [i for i, v in enumerate(versions) if v == model[1]]
            rows, scores, labels = [rows[i] for i in keep], [scores[i] for i in keep], [labels[i] for i in keep]
        return rows, scores, labels
    if suffix in (".parquet", ".pq"):
        prediction = {DEFAULT_SCORE_COLUMN if score_column is None else score_column,
                      DEFAULT_LABEL_COLUMN if label_column is None else label_column} - {""}
        records, columns = _parquet_records(path, report, keep=prediction)
    else:
        f = path.open("rb")
        lines = CountingLines(f)  # text files cannot tell() while csv iterates them
        reader = csv.DictReader(lines)
        try:
            try:
                fieldnames = reader.fieldnames
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: not readable CSV ({exc})") from None
            if fieldnames is None:
                raise ValueError(f"{path}: empty CSV file")
            wrong = header_problem(fieldnames)
            if wrong:
                raise ValueError(f"{path}: {wrong}")
        except ValueError:
            f.close()
            raise
        records, columns = reader, list(fieldnames)
    try:  # (a CSV file is closed however this ends)
        score_column = _prediction_column(path, columns, score_column, DEFAULT_SCORE_COLUMN)
        label_column = _prediction_column(path, columns, label_column, DEFAULT_LABEL_COLUMN)
        cell = _cell if suffix == ".csv" else _parquet_cell
        for n, rec in enumerate(_readable(records, path), 1):
            # where a row is: a CSV's line (as produce names it), a Parquet file's row number
            where = f"{path}:{records.line_num if suffix == '.csv' else n}"
            if suffix == ".csv" and None in rec:  # csv.DictReader's key for the cells past the header's
                raise ValueError(f"{where}: {len(rec[None])} more cell(s) than the header has columns")
            rows.append({k: cell(v) for k, v in rec.items() if k not in (score_column, label_column, *EVENT_COLUMNS)})
            s = cell(rec[score_column]) if score_column else None
            if s is not None and not (isinstance(s, (int, float)) and not isinstance(s, bool)):
                raise ValueError(f"{where}: {score_column} {s!r} is not a number (the {score_column!r} column is "
                                 f"the prediction score; --score-column '' makes it a feature)")
            scores.append(float(s) if s is not None else math.nan)
            lbl = rec[label_column] if label_column else None
            if suffix == ".csv":
                lbl = csv_label(lbl)
            if isinstance(lbl, float) and lbl == lbl:  # (Parquet: integers with a null become floats)
                if not lbl.is_integer():
                    raise ValueError(f"{where}: {label_column} {lbl!r} is not a label (events carry text, "
                                     "integers or booleans)")
                lbl = int(lbl)
            # As the worker reads a live label (decode.label_text): booleans 'true' / 'false'.
            labels.append(None if lbl == "" else label_text(_parquet_cell(lbl)))
            if n % 10_000 == 0:
                bar.update(lines.done if suffix == ".csv" else bar.total * n // max(len(records), 1), len(rows))
    finally:
        if suffix == ".csv":
            f.close()
    bar.update(bar.total, len(rows), final=True)
    return rows, scores, labels


def _readable(records, path: Path):
    """The records, a CSV's unreadable row an error naming the file (csv's own said only "Error")."""
    try:
        yield from records
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not readable CSV ({exc})") from None


def _parquet_cell(v):
    """A Parquet value as an event carries it: NaN and infinities are missing (JSON has no
    infinity, so a live event carries null; a CSV cell ``inf`` reads missing too)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


_UNFIT_TYPES = {  # Parquet column types that are no feature value, and what to do instead
    "temporal": "dates or times, which events carry as text or numbers: convert them (epoch seconds, say) or drop them",
    "nested": "lists, maps or structs, which no event can carry (a feature is a number, text, a boolean or null): "
              "flatten them into columns of their own or drop them",
    "binary": "bytes, which events carry as text: decode them to text or drop them",
}


def _type_kind(pa, t) -> str:
    """The ``_UNFIT_TYPES`` key of a Parquet column's type ("" for a fit one), a dictionary-encoded
    column's by its values' type."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_temporal(t) or pa.types.is_interval(t):
        return "temporal"
    if pa.types.is_nested(t):
        return "nested"
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t)):
        return "binary"
    return ""


_PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # pandas' name for an unnamed index it writes as a column


def _index_columns(table) -> list[str]:
    """The columns of a Parquet file that hold a pandas index: named in the file's pandas metadata
    (``index_columns``; a range index is stored there as a description, not as a column), or
    called as pandas calls an unnamed index."""
    try:
        named = orjson.loads((table.schema.metadata or {}).get(b"pandas", b"{}")).get("index_columns") or []
    except (orjson.JSONDecodeError, AttributeError):
        named = []
    named = {c for c in named if isinstance(c, str)} if isinstance(named, list) else set()
    return [c for c in table.column_names if c in named or _PANDAS_INDEX.fullmatch(c)]


def _parquet_records(path: Path, report: Optional[Callable[[str], None]] = None, keep: frozenset | set = frozenset()):
    """(rows, column names) of a Parquet file, its pandas index left out unless it is one of
    ``keep`` (the prediction's columns: a frame indexed by its score still has a score)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading Parquet needs pyarrow: pip install 'streamproc[parquet]'") from None
    import pyarrow as pa

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    # A pandas index (__index_level_0__ for a filtered frame's) is no feature: live events do not
    # carry it, so profiled it would read missing in every event (critical drift and data quality).
    index = [c for c in _index_columns(table) if c not in keep]
    if index:
        table = table.select([i for i, c in enumerate(table.column_names) if c not in index])
        if report:
            report(f"{path}: left out column(s) {', '.join(index)}: the file's pandas index, which events do not carry")
    # As events carry them: decimals are numbers (not categories, one per value), and a time
    # is no feature value (a producer would send it as text, or a number). An event's feature is
    # a number, text, a boolean or null: a list or struct is none (the worker dead-letters such an
    # event; here it crashed the build), and bytes would be categories like "b'ab'" no event carries.
    for kind, what in _UNFIT_TYPES.items():
        unfit = [f.name for f in table.schema if f.name not in EVENT_COLUMNS and _type_kind(pa, f.type) == kind]
        if unfit:
            raise ValueError(f"{path}: column(s) {', '.join(unfit)} hold {what}")
    for i, f in enumerate(table.schema):
        if pa.types.is_decimal(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.float64()))
    return table.to_pylist(), table.column_names


def build_reference_file(model_id: str, model_version: str, input_path: str | Path, output_path: str | Path | None,
                         score_column: Optional[str] = None, label_column: Optional[str] = None,
                         bins: int = 10, max_categories: int = 50, progress: bool = False,
                         report: Optional[Callable[[str], None]] = None) -> ReferenceProfile:
    """Build a profile from training data; write it to ``output_path`` if given. ``report`` is
    told what the reference leaves out of the file (see ``read_training_data``)."""
    rows, scores, labels = read_training_data(input_path, score_column, label_column, progress,
                                              (model_id, model_version), report)
    if not rows:
        raise ValueError(f"{input_path}: no rows" + (f" of model {model_id}" if Path(input_path).suffix.lower()
                                                      in (".jsonl", ".ndjson", ".json") else ""))
    profile = build_reference(model_id, model_version, rows, scores, labels, n_bins=bins,
                              max_categories=max_categories, source=f"file:{Path(input_path).name}")
    if report and profile.count < MIN_REFERENCE_ROWS:
        report(f"{input_path}: {small_reference(profile)}")
    if output_path:
        write_reference(profile, output_path)
    return profile


def small_reference(profile: ReferenceProfile) -> str:
    """Why a reference of few rows can hardly alert: the PSI a window needs, at the default
    settings, for its signals (``psi.effective_threshold``)."""
    defaults = MonitorConfig()
    window, psi = defaults.window_size, defaults.psi
    signals = [*profile.features.values(), *(p for p in (profile.score, profile.label) if p is not None)]
    needed = sorted(effective_threshold(psi.warning, p.n_bins, p.count, window, psi.alpha) for p in signals)
    span = "" if not needed else (f"{needed[0]:.2g}" if f"{needed[0]:.2g}" == f"{needed[-1]:.2g}"
                                  else f"{needed[0]:.2g} to {needed[-1]:.2g}")
    return (f"a reference of only {profile.count} row(s) (fewer than {MIN_REFERENCE_ROWS}) can hardly ever alert: "
            "PSI thresholds are raised for a small reference, lest its chance differences alert (README: How drift "
            "is detected)" + (f"; a window of {window:,} events needs a PSI of {span} to alert (psi.warning is "
                              f"{psi.warning})" if span else "") + "; build it from more rows")


def write_reference(profile: ReferenceProfile, path: str | Path) -> None:
    Path(path).write_bytes(orjson.dumps(profile.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def load_reference(path: str | Path) -> ReferenceProfile:
    """Read a profile written by ``write_reference`` (``streamproc reference build``)."""
    try:
        data = orjson.loads(Path(path).read_bytes())
        return ReferenceProfile.from_dict(data)
    except OSError as exc:
        raise ValueError(f"reference file {path}: {exc.strerror}") from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"reference file {path}: not a reference profile ({exc})") from None
