import json
import math

import numpy as np
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
        read_training_data(tmp_path / "x.xlsx")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a reference profile"):
        load_reference(tmp_path / "bad.json")


def test_parquet_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"amount": [1.5, None, 3.0, 4.0], "country": ["DE", "FR", None, "DE"],
                      "flag": [True, False, True, True], "score": [0.1, 0.9, 0.4, float("nan")]})
    pq.write_table(table, tmp_path / "train.parquet")
    rows, scores, labels = read_training_data(tmp_path / "train.parquet", score_column="score")
    assert rows[0] == {"amount": 1.5, "country": "DE", "flag": True}
    assert rows[1]["amount"] is None and rows[2]["country"] is None
    assert scores[:3] == [0.1, 0.9, 0.4] and math.isnan(scores[3])
    profile = build_reference_file("m", "v", tmp_path / "train.parquet", None, score_column="score")
    assert profile.features["amount"].kind == "numeric"
    assert profile.features["flag"].kind == "categorical" and profile.features["flag"].categories == ["true", "false"]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        read_training_data(tmp_path / "bad.parquet")


def test_inconsistent_profiles_are_refused(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("x\n" + "".join(f"{i}\n" for i in range(100)))
    out = tmp_path / "ref.json"
    build_reference_file("m", "v1", f, out)
    doc = json.loads(out.read_text())
    doc["features"]["x"]["proportions"] = doc["features"]["x"]["proportions"][:-1]
    out.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="proportions for"):
        load_reference(out)
    doc["features"]["x"]["kind"] = "fancy"
    out.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="kind must be"):
        load_reference(out)


def test_csv_of_more_than_ten_thousand_rows_reports_progress(tmp_path, capsys):
    # Progress is measured in bytes read; a text file cannot tell() while csv iterates it
    # (this used to fail with "telling position disabled by next() call" at row 10,000).
    f = tmp_path / "big.csv"
    f.write_text("\ufeffx,score\n" + "".join(f"{i % 97},0.{i % 10}\n" for i in range(25_000)))
    rows, scores, _ = read_training_data(f, score_column="score", progress=True)
    assert len(rows) == 25_000 and rows[0] == {"x": 0.0} and scores[1] == 0.1


def test_a_reference_over_the_topics_record_limit_is_refused_before_sending():
    """Nothing listens on port 9 of this address: the refusal comes before any connection."""
    import asyncio

    from streamproc.kafka import MAX_COMPACTED_VALUE_BYTES, publish_reference

    profile = {"model_id": "huge", "model_version": "v1", "padding": "x" * MAX_COMPACTED_VALUE_BYTES}
    with pytest.raises(ValueError, match=r"huge/v1 is [\d,]+ bytes, over the references topic's limit.*--max-categories"):
        asyncio.run(publish_reference("127.0.0.1:9", "refs", profile))


def _train_csv(tmp_path, header="amount,country,score,label"):
    f = tmp_path / "train.csv"
    f.write_text(header + "\n" + "".join(f"{i % 50},{'DE' if i % 3 else 'FR'},0.{i % 10},{'ab'[i % 2]}\n"
                                         for i in range(300)))
    return f


def test_score_and_label_columns_are_the_prediction_by_default_as_for_produce(tmp_path):
    # `streamproc produce` sends a CSV's `score` / `label` columns as the prediction, so a
    # reference built from the same CSV without flags must not profile them as features:
    # live events never carry such features (false drift and data-quality alerts).
    f = _train_csv(tmp_path)
    rows, scores, labels = read_training_data(f)
    assert rows[0] == {"amount": 0.0, "country": "FR"}
    assert scores[:3] == [0.0, 0.1, 0.2] and labels[:3] == ["a", "b", "a"]
    profile = build_reference_file("m", "v1", f, None)
    assert sorted(profile.features) == ["amount", "country"]
    assert profile.score is not None and profile.label is not None
    only_score = _train_csv(tmp_path, "amount,country,score,y")  # a default column the file lacks: no such profile
    profile = build_reference_file("m", "v1", only_score, None)
    assert sorted(profile.features) == ["amount", "country", "y"] and profile.score is not None and profile.label is None


def test_an_empty_column_name_means_no_prediction_column_as_for_produce(tmp_path):
    f = _train_csv(tmp_path)
    rows, scores, labels = read_training_data(f, score_column="", label_column="")
    assert rows[1] == {"amount": 1.0, "country": "DE", "score": 0.1, "label": "b"}
    assert all(math.isnan(s) for s in scores) and labels == [None] * 300
    rows, scores, labels = read_training_data(f, score_column="")
    assert "score" in rows[0] and "label" not in rows[0] and labels[1] == "b"


def test_event_id_and_ts_columns_are_not_features_as_for_produce(tmp_path):
    # `streamproc produce` sends them as the event's id and time: profiled as features, live
    # events would lack them (a missing rate of 1, and the ids' categories unseen).
    f = tmp_path / "train.csv"
    f.write_text("event_id,ts,amount,score\n" + "".join(f"e{i},{1000 + i},{i % 7},0.5\n" for i in range(200)))
    rows, _, _ = read_training_data(f)
    assert rows[0] == {"amount": 0.0}
    assert sorted(build_reference_file("m", "v1", f, None).features) == ["amount"]


def test_a_named_prediction_column_the_file_lacks_is_an_error(tmp_path):
    f = _train_csv(tmp_path)
    with pytest.raises(ValueError, match=r"train.csv: no column 'p' \(columns: amount, country, score, label\)"):
        read_training_data(f, score_column="p")


def test_parquet_score_and_label_columns_are_the_prediction_by_default(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0], "score": [0.1, 0.9], "label": ["a", "b"]}), tmp_path / "t.parquet")
    rows, scores, labels = read_training_data(tmp_path / "t.parquet")
    assert rows == [{"x": 1.0}, {"x": 2.0}] and scores == [0.1, 0.9] and labels == ["a", "b"]


def test_reference_build_cli_takes_score_and_label_by_default(tmp_path, capsys):
    from streamproc.cli import main

    f = _train_csv(tmp_path)
    out = tmp_path / "ref.json"
    assert main(["reference", "build", "--model", "m", "--input", str(f), "--output", str(out)]) == 0
    assert capsys.readouterr().out.endswith("features, prediction score, prediction label\n")
    profile = load_reference(out)
    assert sorted(profile.features) == ["amount", "country"] and profile.score and profile.label
    assert main(["reference", "build", "--model", "m", "--input", str(f), "--output", str(out),
                 "--score-column", "", "--label-column", ""]) == 0
    profile = load_reference(out)
    assert sorted(profile.features) == ["amount", "country", "label", "score"]
    assert profile.score is None and profile.label is None


def test_reference_build_publishes_where_the_other_commands_look(tmp_path, monkeypatch, capsys):
    """``--publish`` takes the references topic, the bootstrap and the Kafka security settings as
    ``produce`` and ``alerts`` do: ``--topic``, then STREAMPROC_TOPIC_REFERENCES, then --config."""
    import streamproc.kafka
    from streamproc.cli import main

    sent: list = []

    async def fake_publish(bootstrap, topic, profile_dict, options=None):
        sent.append((bootstrap, topic, sorted((options or {}).items())))
        return 1

    monkeypatch.setattr(streamproc.kafka, "publish_reference", fake_publish)
    for name in ("STREAMPROC_BOOTSTRAP", "STREAMPROC_CONFIG", "STREAMPROC_TOPIC_REFERENCES", "STREAMPROC_KAFKA_SECURITY_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    cfg = tmp_path / "streamproc.yaml"
    cfg.write_text("worker:\n  bootstrap: fromfile:9092\n  topics: {references: file-refs}\n"
                   "  kafka: {security_protocol: SASL_PLAINTEXT, sasl_mechanism: PLAIN, sasl_username: u, sasl_password: p}\n")
    build = ["reference", "build", "--model", "m", "--input", str(_train_csv(tmp_path)), "--publish"]
    assert main(build + ["--config", str(cfg)]) == 0
    assert sent[-1][:2] == ("fromfile:9092", "file-refs") and ("security_protocol", "SASL_PLAINTEXT") in sent[-1][2]
    monkeypatch.setenv("STREAMPROC_TOPIC_REFERENCES", "env-refs")
    assert main(build + ["--config", str(cfg)]) == 0 and sent[-1][1] == "env-refs"
    assert main(build + ["--config", str(cfg), "--topic", "flag-refs", "--bootstrap", "k:9092"]) == 0
    assert sent[-1][:2] == ("k:9092", "flag-refs")
    monkeypatch.delenv("STREAMPROC_TOPIC_REFERENCES")
    assert main(build + ["--bootstrap", "k:9092"]) == 0 and sent[-1] == ("k:9092", "model-references", [])
    assert main(build) == 2 and "--bootstrap" in capsys.readouterr().err


def test_a_score_column_that_is_not_numbers_is_an_error_as_for_produce(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("x,score\n1,A\n2,\n")
    # the line, as produce names it (the header is line 1; it said the data row, 1)
    with pytest.raises(ValueError, match=r"s.csv:2: score 'A' is not a number .*--score-column ''"):
        read_training_data(f)
    rows, scores, _ = read_training_data(f, score_column="")
    assert rows[0] == {"x": 1.0, "score": "A"}


def test_a_file_reference_is_monitored_by_the_models_ignore_features_and_max_features(tmp_path):
    # reference build profiles every column of its file; the worker monitors what the model's
    # settings say, as for a reference built from the warm-up: a per-request id and a snapshot
    # date, ignored, must not alert on a stationary stream, and max_features caps the rest.
    import numpy as np

    from streamproc.config import load_config
    from streamproc.decode import PredictionBatch
    from streamproc.engine import MonitorEngine

    rng = np.random.default_rng(3)
    f = tmp_path / "train.csv"
    f.write_text("request_id,snapshot_date,amount,rare,score\n" + "".join(
        f"r{i},2026-11-0{1 + i % 3},{rng.normal():.6f},{'' if i % 4 else 1.0},{rng.random():.6f}\n" for i in range(2000)))
    ref = build_reference_file("fraud", "v1", f, tmp_path / "ref.json")
    assert set(ref.features) == {"request_id", "snapshot_date", "amount", "rare"}
    cfg = tmp_path / "streamproc.yaml"
    cfg.write_text("models:\n  fraud:\n    ignore_features: [request_id, snapshot_date]\n    max_features: 1\n")
    config = load_config(str(cfg), environ={})
    engine = MonitorEngine(config, {("fraud", "v1"): load_reference(tmp_path / "ref.json")})

    def batch(start: int, n: int = 1000) -> PredictionBatch:
        rows = [{"request_id": f"live-{start + i}", "snapshot_date": "2026-12-04", "amount": float(rng.normal()),
                 "rare": None if i % 4 else 1.0} for i in range(n)]
        return PredictionBatch("fraud", "v1", [f"e{start + i}" for i in range(n)], [float(start + i) for i in range(n)],
                               rows, rng.random(n).tolist(), [None] * n)

    alerts = []
    for start in range(0, 6000, 1000):
        alerts += engine.process({("fraud", "v1"): batch(start)}).alerts
    mon = engine.monitors[("fraud", "v1")]
    assert list(mon.reference.features) == ["amount"]  # the most often present of the rest
    assert mon.reference.dropped_features == ["rare"]
    assert not [a for a in alerts if a["feature"] in ("request_id", "snapshot_date")]
    assert [(a["detector"], a["statistic"]) for a in alerts if a["type"] == "data_quality"] == [("feature_cap", 2.0)]
    # A reference published for it is narrowed the same way; the engine's and the monitor's are one object.
    engine.set_reference(ref)
    assert list(mon.reference.features) == ["amount"] and mon.reference is engine.references[("fraud", "v1")]


def test_a_short_csv_row_has_its_missing_cells_missing_and_a_long_one_is_refused(tmp_path):
    # csv gives None for the cells a row lacks (read as missing, as produce reads them), and
    # puts extra cells under None (refused, naming the row, rather than silently dropped).
    f = tmp_path / "short.csv"
    f.write_text("x,c,score\n1.5,a,0.2\n2.5\n3.5,b\n")
    rows, scores, labels = read_training_data(f)
    assert rows == [{"x": 1.5, "c": "a"}, {"x": 2.5, "c": None}, {"x": 3.5, "c": "b"}]
    assert scores[0] == 0.2 and math.isnan(scores[1]) and math.isnan(scores[2])
    f = tmp_path / "long.csv"
    f.write_text("x,c\n1.5,a\n2.5,b,extra,more\n")
    with pytest.raises(ValueError, match=r"long.csv:3: 2 more cell\(s\) than the header has columns"):
        read_training_data(f)


@pytest.mark.parametrize("line, why", [
    (b'{"event_id": "e", "model_id": "m", "ts": 1, "features": null, "prediction": 0.5}', "features is NoneType"),
    (b'{"event_id": "e", "model_id": "m", "ts": 1, "features": [1], "prediction": 0.5}', "features is list"),
    (b'{"event_id": "e", "model_id": "m", "ts": 1, "features": {}, "prediction": true}', "prediction is true"),
    (b'{"event_id": "e", "model_id": "m", "ts": 1, "features": {}, "prediction": [0.5]}', "prediction is [0.5]"),
    (b'{"event_id": "e", "model_id": "m", "ts": 1, "features": {}, "prediction": null}', "prediction is null"),
    (b'{"event_id": "e", "model_id": "m", "ts": 1, "features": {}, "prediction": {"score": "high"}}', "ValueError"),
    (b'[1, 2]', "TypeError"),
])
def test_a_jsonl_line_that_is_no_prediction_event_is_refused_naming_it(tmp_path, line, why):
    # The worker's own reason (its decoder's): what it would dead-letter, no reference takes.
    from streamproc.decode import decode_predictions

    f = tmp_path / "train.jsonl"
    f.write_bytes(b'{"event_id": "ok", "model_id": "m", "ts": 1, "features": {"x": 1}, "prediction": 0.5}\n' + line + b"\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: not a prediction event") as info:
        read_training_data(f)
    reason = decode_predictions([line])[1][0].reason
    assert f"({reason})" in str(info.value), why


def test_a_jsonl_reference_is_built_from_its_models_events_only(tmp_path):
    # It took every event of the file: another model's, another version's, and events the worker
    # dead-letters (a score "0.5", no event_id), so it differed from the model's own warm-up.
    import json

    from streamproc.config import load_config
    from streamproc.decode import decode_predictions
    from streamproc.engine import MonitorEngine
    from streamproc.synth import ModelStream

    mine = list(ModelStream("m", n_numeric=3, n_categorical=1, seed=3).events(200))
    other = list(ModelStream("other", n_numeric=3, n_categorical=1, seed=4).events(100))
    v2 = [{**e, "model_version": "v2", "event_id": e["event_id"] + "-2"} for e in mine[:50]]
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in [x for pair in zip(mine, other + v2) for x in pair] + mine[150:]))
    built = build_reference_file("m", "default", f, None)
    engine = MonitorEngine(load_config(None, environ={"STREAMPROC_WARMUP_SIZE": "200"}))
    engine.process(decode_predictions([json.dumps(e).encode() for e in mine])[0])
    warm = engine.monitors[("m", "default")].reference
    assert built.count == warm.count == 200
    assert {n: p.to_dict() for n, p in built.features.items()} == {n: p.to_dict() for n, p in warm.features.items()}
    with pytest.raises(ValueError, match=r"train.jsonl: no rows of model nobody"):
        build_reference_file("nobody", "default", f, None)
    # A version the file has no event of: a new version's reference, from all the model's events.
    assert build_reference_file("m", "v3", f, None).count == 250
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(mine[0]) + "\n" + json.dumps({**mine[1], "prediction": {"score": "0.5"}}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a prediction event"):
        build_reference_file("m", "default", bad, None)


def test_parquet_labels_read_as_live_labels_are(tmp_path):
    # A live label true is 'true' (decode.label_text), so a boolean label column must be too, or
    # every live label would be unseen.
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0, 4.0], "label": [True, False, None, True]}), tmp_path / "b.parquet")
    assert read_training_data(tmp_path / "b.parquet")[2] == ["true", "false", None, "true"]
    pq.write_table(pa.table({"x": [1.0, 2.0], "label": [1, 0]}), tmp_path / "i.parquet")
    assert read_training_data(tmp_path / "i.parquet")[2] == ["1", "0"]
    # Integers with a null, as pandas writes them, are floats: read '1.0', no live label matched
    # (a critical label drift on the training data itself).
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "label": [1.0, 0.0, None]}), tmp_path / "f.parquet")
    assert read_training_data(tmp_path / "f.parquet")[2] == ["1", "0", None]
    pq.write_table(pa.table({"x": [1.0], "label": [0.5]}), tmp_path / "h.parquet")
    with pytest.raises(ValueError, match=r"h.parquet:1: label 0.5 is not a label"):
        read_training_data(tmp_path / "h.parquet")


def test_parquet_decimals_are_numbers_and_times_are_refused(tmp_path):
    # A decimal column was profiled as categories (one per value: a category cap alert live), a
    # timestamp column as categories like '2026-01-01 00:00:00'.
    import datetime
    import decimal

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    amounts = pa.array([decimal.Decimal("12.50"), decimal.Decimal("3.25"), None], pa.decimal128(10, 2))
    pq.write_table(pa.table({"amount": amounts, "score": [0.1, 0.2, 0.3]}), tmp_path / "d.parquet")
    assert [r["amount"] for r in read_training_data(tmp_path / "d.parquet")[0]] == [12.5, 3.25, None]
    when = [datetime.datetime(2026, 1, 1), datetime.datetime(2026, 1, 2)]
    pq.write_table(pa.table({"opened": when, "ts": when, "score": [0.1, 0.2]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t.parquet: column\(s\) opened hold dates or times"):
        read_training_data(tmp_path / "t.parquet")


def test_a_csv_reference_reads_cells_as_produce_sends_them(tmp_path):
    # An "inf" cell: produce sends it as null (JSON has no infinity), so live it is missing; the
    # reference took it as a value, and the same file raised a critical drift and a missing-rate alert.
    from streamproc.produce import CsvLayout, CsvSource

    f = tmp_path / "train.csv"
    f.write_text("x,score\n" + "".join(f"{'inf' if i % 10 == 0 else i},0.5\n" for i in range(100)))
    rows, _, _ = read_training_data(f)
    sent = [json.loads(r.value)["features"] for r in CsvSource(f, CsvLayout("m")).records()]
    assert rows == sent and sum(r["x"] is None for r in rows) == 10


def test_a_byte_order_mark_before_the_first_json_line_is_dropped_as_produce_drops_it(tmp_path):
    f = tmp_path / "events.jsonl"
    event = {"event_id": "e1", "model_id": "m", "ts": 1.0, "features": {"x": 1.0}, "prediction": {"score": 0.5}}
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps(event).encode() + b"\n")
    rows, scores, _ = read_training_data(f)
    assert rows == [{"x": 1.0}] and scores == [0.5]


def test_csv_booleans_read_as_live_json_booleans_do(tmp_path):
    """pandas writes a boolean column and a boolean label as True / False; a live event carries
    JSON true / false, which the worker reads as 'true' / 'false'. Read as text, the reference
    had categories 'True' / 'False', and unchanged live data raised critical drift and
    unseen-category alerts. produce sends such cells as JSON booleans, as live events carry them."""
    from streamproc.decode import decode_predictions
    from streamproc.produce import CsvLayout, CsvSource
    from streamproc.profile import build_reference

    f = tmp_path / "train.csv"
    f.write_text("flag,score,label\n" + "".join(f"{['True', 'False', 'TRUE'][i % 3]},0.5,{['True', 'False'][i % 2]}\n"
                                                  for i in range(300)))
    rows, _, labels = read_training_data(f)
    assert {r["flag"] for r in rows} == {True, False} and set(labels) == {"true", "false"}
    reference = build_reference("m", "default", rows, [0.5] * 300, labels)
    assert sorted(reference.features["flag"].categories) == ["false", "true"]
    sent = [r.value for r in CsvSource(f, CsvLayout("m")).records()]
    assert json.loads(sent[0])["features"] == {"flag": True} and json.loads(sent[0])["prediction"]["label"] is True
    batches, rejected = decode_predictions(sent)
    assert not rejected
    live = batches[("m", "default")]
    assert [r["flag"] for r in live.features] == [r["flag"] for r in rows] and live.labels == labels
    assert reference.features["flag"].bin_counts([r["flag"] for r in live.features])[2:].tolist() == [0, 0]  # none unseen

    # One stray TRUE in a number column is a stray, as an "N/A" is: the column stays numeric
    # (it became 50 number-strings as categories, and a 3-sigma shift read PSI 0.02).
    f.write_text("amount,score\n" + "".join(f"{'TRUE' if i == 17 else 100 + i % 7},0.5\n" for i in range(500)))
    rows, _, _ = read_training_data(f)
    assert build_reference("m", "default", rows, [0.5] * 500).features["amount"].kind == "numeric"


@pytest.mark.parametrize("text, why", [("amount,country,amount,score\n1,DE,2,0.5\n", "repeated column name\\(s\\): amount"),
                                       ("x,score\r1,0.5\r2,0.5\r", "not readable CSV")])
def test_a_csv_that_cannot_be_read_as_it_is_meant_is_refused_naming_the_file(tmp_path, text, why):
    f = tmp_path / "train.csv"
    f.write_bytes(text.encode())
    with pytest.raises(ValueError, match=rf"train\.csv: {why}"):
        read_training_data(f)


@pytest.mark.parametrize("flags, message", [
    (["--bins", "0"], "--bins: must be a whole number of at least 2, not '0'"),
    (["--bins", "-3"], "--bins: must be a whole number of at least 2"),
    (["--max-categories", "-1"], "--max-categories: must be a whole number of at least 1"),
    (["--version", ""], "--version: must be 1 to 256 characters without control characters"),
    (["--version", "a\tb"], "--version: must be 1 to 256"),
])
def test_reference_build_flags_that_could_build_no_useful_reference_are_refused(flags, message, capsys):
    # All accepted before: --max-categories -1 dropped the last category, --version '' was even
    # published, for a version no event can have.
    from .conftest import parse_error

    argv = ["reference", "build", "--model", "m", "--input", "train.csv", "--output", "r.json", *flags]
    assert message in parse_error(argv, capsys)



def _unfit_column(pa, kind):
    return {"list": pa.array([[1, 2], [3], []]),
            "struct": pa.array([{"lat": 1.0}, {"lat": 2.0}, None]),
            "map": pa.array([[("a", 1)], [], None], pa.map_(pa.string(), pa.int64())),
            "binary": pa.array([b"\x00\x01", b"ab", b"ab"], pa.binary()),
            "fixed_binary": pa.array([b"ab", b"cd", None], pa.binary(2)),
            "dict_binary": pa.array([b"ab", b"cd", b"ab"], pa.binary()).dictionary_encode()}[kind]


@pytest.mark.parametrize("kind, why", [
    ("list", "lists, maps or structs, which no event can carry"), ("struct", "lists, maps or structs"),
    ("map", "lists, maps or structs"), ("binary", "bytes, which events carry as text"), ("fixed_binary", "bytes"),
    ("dict_binary", "bytes"),
])
def test_parquet_columns_no_event_can_carry_are_refused_naming_them(tmp_path, kind, why, capsys):
    # A list or struct column crashed the build (TypeError: unhashable type: 'list', which the CLI
    # does not catch); a binary one became categories like "b'ab'" that no event can carry.
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from streamproc.cli import main

    f = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "odd": _unfit_column(pa, kind), "score": [0.1, 0.2, 0.3]}), f)
    with pytest.raises(ValueError, match=rf"t.parquet: column\(s\) odd hold {why}"):
        read_training_data(f)
    assert main(["reference", "build", "--model", "m", "--input", str(f), "--output", str(tmp_path / "r.json")]) == 2
    assert f"streamproc: error: {f}: column(s) odd hold" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_parquet_infinities_are_missing_as_in_a_csv_and_in_events(tmp_path):
    # JSON has no infinity (a live event carries null) and a CSV cell inf reads missing, but a
    # Parquet inf was kept as a value: the same training data made a reference with another
    # missing rate and top bin, which live data drifts from.
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    xs = [float(i) for i in range(90)] + [math.inf] * 5 + [-math.inf] * 5
    (tmp_path / "t.csv").write_text("ratio,score\n" + "".join(f"{x},0.5\n" for x in xs))
    pq.write_table(pa.table({"ratio": xs, "score": [0.5] * 99 + [math.inf]}), tmp_path / "t.parquet")
    rows, scores, _ = read_training_data(tmp_path / "t.parquet")
    assert rows == read_training_data(tmp_path / "t.csv")[0] and sum(r["ratio"] is None for r in rows) == 10
    assert math.isnan(scores[-1])
    csv_built, parquet_built = (build_reference_file("m", "v", tmp_path / name, None) for name in ("t.csv", "t.parquet"))
    assert parquet_built.features["ratio"].to_dict() == csv_built.features["ratio"].to_dict()
    assert parquet_built.features["ratio"].missing_rate == 0.1


def test_a_parquet_files_pandas_index_is_no_feature(tmp_path, capsys):
    # pandas writes a filtered frame's index as __index_level_0__ (named in its metadata's
    # index_columns, as a named index is): profiled, it read missing in every live event (a
    # critical drift and data-quality alert on unchanged data). A range index is no column.
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from streamproc.cli import main

    meta = {"index_columns": ["__index_level_0__", "row", {"kind": "range", "name": None, "start": 0, "stop": 300,
                                                           "step": 1}], "columns": []}
    table = pa.table({"x": [float(i % 7) for i in range(300)], "score": [0.5] * 300, "row": list(range(300)),
                      "__index_level_0__": list(range(1000, 1300)), "__index_level_1__": ["a"] * 300})
    f = tmp_path / "t.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), f)
    told: list = []
    rows, scores, _ = read_training_data(f, report=told.append)
    assert rows[3] == {"x": 3.0} and scores[0] == 0.5
    assert told == [f"{f}: left out column(s) row, __index_level_0__, __index_level_1__: the file's pandas index, "
                    "which events do not carry"]
    assert main(["reference", "build", "--model", "m", "--input", str(f), "--output", str(tmp_path / "r.json")]) == 0
    assert capsys.readouterr().err == f"streamproc: warning: {told[0]}\n"
    assert list(load_reference(tmp_path / "r.json").features) == ["x"]
    # Without pandas metadata, a column "row" is a feature; pandas' name for an index is not.
    pq.write_table(table, f)
    assert read_training_data(f)[0][3] == {"x": 3.0, "row": 3}
    # A frame indexed by its score (or label) still has its prediction: it was left out with the index.
    meta["index_columns"] = ["score"]
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), f)
    rows, scores, _ = read_training_data(f)
    assert scores[0] == 0.5 and "score" not in rows[0]


@pytest.mark.parametrize("header", [",x,score", "x,,score,", ",x,,score"])
def test_a_csv_column_without_a_name_is_refused(tmp_path, header, capsys):
    # pandas' to_csv writes its index as a column with a blank name: profiled as the feature '',
    # it read missing in every live event. It is refused rather than left out, as produce sends
    # it (the feature ''): a reference without it would not be the one of the events produce sends.
    from streamproc.cli import main

    f = tmp_path / "train.csv"
    f.write_text(header + "\n" + "".join(",".join(str(i) for _ in header.split(",")) + "\n" for i in range(200)))
    blank = ", ".join(str(i) for i, c in enumerate(header.split(","), 1) if not c)
    with pytest.raises(ValueError, match=rf"train\.csv: column\(s\) {blank} of the header have no name \(pandas' "
                                         r"to_csv writes its index so, .*index=False"):
        read_training_data(f)
    assert main(["reference", "build", "--model", "m", "--input", str(f), "--output", str(tmp_path / "r.json")]) == 2
    assert "streamproc: error:" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_a_reference_of_few_rows_is_built_with_a_warning_saying_why_it_hardly_alerts(tmp_path, capsys):
    # PSI thresholds grow with 1 / the reference's count: a reference of a handful of rows was
    # accepted silently and never alerted, not even on a 3-sigma shift.
    from streamproc.cli import main
    from streamproc.psi import effective_threshold

    f = tmp_path / "train.csv"
    build = ["reference", "build", "--model", "m", "--input", str(f), "--output", str(tmp_path / "r.json")]
    f.write_text("x,c,score\n" + "".join(f"{i},{'ab'[i % 2]},0.{i % 10}\n" for i in range(5)))
    assert main(build) == 0
    captured = capsys.readouterr()
    ref = load_reference(tmp_path / "r.json")
    needed = sorted(effective_threshold(0.1, p.n_bins, 5, 1000, 1e-6) for p in (*ref.features.values(), ref.score))
    assert captured.err == (f"streamproc: warning: {f}: a reference of only 5 row(s) (fewer than 100) can hardly ever "
                            "alert: PSI thresholds are raised for a small reference, lest its chance differences alert "
                            f"(README: How drift is detected); a window of 1,000 events needs a PSI of {needed[0]:.2g} "
                            f"to {needed[-1]:.2g} to alert (psi.warning is 0.1); build it from more rows\n")
    assert needed[0] > 3 and captured.out.startswith(f"wrote {tmp_path / 'r.json'}: m/default from 5 rows")
    f.write_text("x,score\n" + "".join(f"{i},0.{i % 10}\n" for i in range(100)))
    assert main(build) == 0 and capsys.readouterr().err == ""


def test_csv_whole_numbers_read_as_live_json_integers(tmp_path):
    """A categorical column of codes: a CSV cell 7 was the number 7.0, profiled as the category
    '7.0', while a live event's JSON 7 reads '7': unchanged live data raised unseen-category
    alerts and critical drift. A whole number is now an integer, in reference build and in what
    produce sends. A zero-padded number (the hour 05) stays a number: as text, a numeric column
    of them became categorical, and live JSON hours were all unseen (a review of a first fix)."""
    from streamproc.decode import decode_predictions
    from streamproc.produce import CsvLayout, CsvSource
    from streamproc.profile import build_reference

    codes = ["7", "12", "X9", "-3", " 5", "+8"]
    f = tmp_path / "train.csv"
    f.write_text("code,hour,amount,big,score\n" + "".join(
        f"{codes[i % 6]},{i % 24:02d},{i % 5}.5,{'123456789012345678901234' if i == 0 else i},{'00.5' if i == 1 else 0.5}\n"
        for i in range(480)))
    rows, scores, _ = read_training_data(f)
    assert rows[:2] == [{"code": 7, "hour": 0, "amount": 0.5, "big": 1.2345678901234568e23},
                        {"code": 12, "hour": 1, "amount": 1.5, "big": 1}]
    assert [r["code"] for r in rows[4:6]] == [5, 8] and scores[1] == 0.5
    assert type(rows[0]["code"]) is int and type(rows[0]["big"]) is float  # (past 64 bits: as before)
    reference = build_reference("m", "default", rows, scores)
    assert sorted(reference.features["code"].categories) == ["-3", "12", "5", "7", "8", "X9"]
    assert reference.features["hour"].kind == reference.features["amount"].kind == "numeric"
    live = [json.dumps({"event_id": f"e{i}", "model_id": "m", "ts": 1.0, "prediction": 0.5,
                        "features": {"code": "X9" if i % 6 == 2 else int(codes[i % 6]), "hour": i % 24,
                                     "amount": i % 5 + 0.5}}).encode() for i in range(480)]
    sent = [r.value for r in CsvSource(f, CsvLayout("m")).records()]
    for events in (live, sent):
        batches, rejected = decode_predictions(events)
        assert not rejected
        got = batches[("m", "default")].features
        assert reference.features["code"].bin_counts([r["code"] for r in got])[-2:].tolist() == [0, 0]  # none unseen
        hours = reference.features["hour"].bin_counts(np.array([r["hour"] for r in got], dtype=float))
        assert hours.sum() == 480 and hours[-1] == 0  # every hour a value, none missing
    assert json.loads(sent[0])["features"] == {"code": 7, "hour": 0, "amount": 0.5, "big": 1.2345678901234568e23}
