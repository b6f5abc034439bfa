"""Reference profiles on disk: build one from training data, write it, read it back.

Input formats:

* CSV with a header: one column per feature. Cells that parse as numbers are numbers, empty
  cells are missing, anything else is a category. ``score_column`` / ``label_column`` name the
  prediction columns (excluded from the features).
* JSON lines of prediction events (the ``predictions`` topic format): features and prediction
  are taken from each event.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import orjson

from .decode import split_prediction
from .profile import ReferenceProfile, build_reference


def _cell(text: str):
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) or text.lower() in ("inf", "-inf", "infinity", "-infinity") else None


def read_training_data(path: str | Path, score_column: Optional[str] = None, label_column: Optional[str] = None):
    """(feature rows, scores, labels) from a CSV or JSON-lines file."""
    path = Path(path)
    rows, scores, labels = [], [], []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open("rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    ev = orjson.loads(line)
                    rows.append(ev["features"])
                    score, label = split_prediction(ev["prediction"]) if "prediction" in ev else (math.nan, None)
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{n}: not a prediction event ({exc})") from None
                scores.append(score)
                labels.append(label)
        return rows, scores, labels
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: unsupported input format (use .csv or .jsonl)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: empty CSV file")
        for name in (score_column, label_column):
            if name and name not in reader.fieldnames:
                raise ValueError(f"{path}: no column {name!r} (columns: {', '.join(reader.fieldnames)})")
        for rec in reader:
            row = {k: _cell(v) for k, v in rec.items() if k not in (score_column, label_column)}
            rows.append(row)
            s = _cell(rec[score_column]) if score_column else None
            scores.append(float(s) if isinstance(s, float) else math.nan)
            labels.append(rec[label_column] or None if label_column else None)
    return rows, scores, labels


def build_reference_file(model_id: str, model_version: str, input_path: str | Path, output_path: str | Path,
                         score_column: Optional[str] = None, label_column: Optional[str] = None,
                         bins: int = 10, max_categories: int = 50) -> ReferenceProfile:
    rows, scores, labels = read_training_data(input_path, score_column, label_column)
    if not rows:
        raise ValueError(f"{input_path}: no rows")
    profile = build_reference(model_id, model_version, rows, scores, labels, n_bins=bins,
                              max_categories=max_categories, source=f"file:{Path(input_path).name}")
    write_reference(profile, output_path)
    return profile


def write_reference(profile: ReferenceProfile, path: str | Path) -> None:
    Path(path).write_bytes(orjson.dumps(profile.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def load_reference(path: str | Path) -> ReferenceProfile:
    """Read a profile written by ``write_reference`` (``streamproc reference build``)."""
    try:
        data = orjson.loads(Path(path).read_bytes())
        return ReferenceProfile.from_dict(data)
    except OSError as exc:
        raise ValueError(f"reference file {path}: {exc.strerror}") from None
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"reference file {path}: not a reference profile ({exc})") from None
