import json
import math

import pytest

from streamproc.reference_file import build_reference_file, load_reference, read_training_data, write_reference


def test_csv_cells_become_numbers_categories_and_missing(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("amount,country,score,label\n1.5,DE,0.2,no\n,FR,0.9,yes\n3,,0.4,no\n")
    rows, scores, labels = read_training_data(f, "score", "label")
    assert rows == [{"amount": 1.5, "country": "DE"}, {"amount": None, "country": "FR"}, {"amount": 3.0, "country": None}]
    assert scores == [0.2, 0.9, 0.4]
    assert labels == ["no", "yes", "no"]


def test_jsonl_of_prediction_events(tmp_path):
    f = tmp_path / "train.jsonl"
    events = [{"event_id": str(i), "model_id": "m", "ts": i, "features": {"x": i, "c": "a"},
               "prediction": {"probabilities": {"a": 0.3, "b": 0.7}}} for i in range(3)]
    f.write_text("\n".join(json.dumps(e) for e in events) + "\n\n")
    rows, scores, labels = read_training_data(f)
    assert rows[2] == {"x": 2, "c": "a"}
    assert scores == [0.7] * 3 and labels == ["b"] * 3


def test_round_trip_and_errors(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("x,c\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(200)))
    out = tmp_path / "ref.json"
    built = build_reference_file("m", "v1", f, out)
    loaded = load_reference(out)
    write_reference(loaded, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == out.read_bytes()
    assert loaded.features["x"].edges == built.features["x"].edges
    assert loaded.features["c"].categories == ["a", "b"]
    assert loaded.score is None and math.isnan(loaded.features["c"].mean)
    with pytest.raises(ValueError, match="no column 'score'"):
        read_training_data(f, score_column="score")
    with pytest.raises(ValueError, match="unsupported input format"):
        read_training_data(tmp_path / "x.parquet")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a reference profile"):
        load_reference(tmp_path / "bad.json")
