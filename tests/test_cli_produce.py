"""``streamproc produce``: CSV rows to events, contract checks with line numbers, pacing, and
sending through the real broker; plus the CLI conventions every subcommand follows."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import subprocess
import sys
import uuid

import pytest

from streamproc.cli import build_parser, main
from streamproc.produce import (CsvLayout, CsvSource, InvalidInput, JsonLinesSource, Pacer, SyntheticSource, TokenBucket,
                                check_event, open_source, row_to_event, synthetic_drift)
from streamproc.progress import Progress

from .conftest import ROOT, parse_error

LAYOUT = CsvLayout("fraud", "v1", id_prefix="live")


def event(i: int, model: str = "fraud", **extra) -> dict:
    return {"event_id": f"e{i}", "model_id": model, "ts": 1795350000 + i, "features": {"x": i * 0.5, "c": "ab"[i % 2]},
            "prediction": {"score": 0.25}, **extra}


# ---------------------------------------------------------------------------------- CSV rows

def test_csv_row_conventions():
    row = {"event_id": "req-1", "ts": "2026-11-22T10:15:00Z", "amount": "129.5", "country": "DE", "age": "",
           "ratio": "nan", "score": "0.91", "label": "fraud"}
    assert row_to_event(row, 1, LAYOUT) == {
        "event_id": "req-1", "model_id": "fraud", "model_version": "v1", "ts": "2026-11-22T10:15:00Z",
        "features": {"amount": 129.5, "country": "DE", "age": None, "ratio": None},
        "prediction": {"score": 0.91, "label": "fraud"},
    }
    # epoch seconds as a number; without event_id and ts columns: <file stem>-<row> and the sending time
    assert row_to_event({"ts": "1795350000.5", "x": "1", "score": "0.5"}, 3, LAYOUT)["ts"] == 1795350000.5
    ev = row_to_event({"x": "inf", "label": "yes"}, 7, CsvLayout("m"), now=lambda: 1795350000.1234)
    assert ev == {"event_id": "row-7", "model_id": "m", "ts": 1795350000.123, "features": {"x": None},
                  "prediction": {"label": "yes"}}
    assert check_event(json.dumps(ev).encode()) == "m"
    # an empty score is a missing score: the event is still valid; so are nan and inf, as the
    # README says and as `reference build` reads them (they were refused: "not a finite number")
    for cell in ("", "nan", "inf", "-Infinity", "NaN"):
        ev = row_to_event({"x": "1", "score": cell, "label": "yes"}, 1, LAYOUT)
        assert ev["prediction"] == {"label": "yes"} and check_event(json.dumps(ev).encode()) == "fraud", cell
    # renamed prediction columns are not features
    layout = CsvLayout("m", score_column="p", label_column="y")
    assert row_to_event({"p": "0.3", "y": "1", "score": "7"}, 1, layout)["features"] == {"score": 7.0}


@pytest.mark.parametrize("row,message", [
    ({"ts": "", "score": "0.5"}, "empty ts"),
    ({"event_id": "", "score": "0.5"}, "empty event_id"),
    ({"score": "high"}, "score 'high' is not a number \\(the 'score' column is the prediction score; "
                        "--score-column '' makes it a feature\\)"),
    ({"score": "0.5", None: ["extra"]}, "1 more cell"),
    ({"score": "True"}, "score 'True' is not a number"),  # (a boolean cell, not a score)
])
def test_csv_rows_that_cannot_be_events(row, message):
    with pytest.raises(InvalidInput, match=message):
        row_to_event(row, 1, LAYOUT)


def test_what_the_worker_dead_letters_as_dated_in_the_future_is_refused_before_sending(tmp_path):
    # Epoch milliseconds, or a date years ahead, passed the check and were dead-lettered by the
    # worker (past its worker.max_future_seconds, a day by default).
    import time

    from streamproc.produce import JsonLinesSource

    now = time.time()
    ok = {"event_id": "a", "model_id": "m", "ts": now, "features": {"x": 1.0}, "prediction": 0.5}
    f = tmp_path / "live.jsonl"
    for ts in (now * 1000, "2099-01-01T00:00:00Z"):
        f.write_text(json.dumps(ok) + "\n" + json.dumps({**ok, "event_id": "b", "ts": ts}) + "\n")
        with pytest.raises(InvalidInput, match=r"live\.jsonl:2: .*after the worker's clock plus worker\.max_future_seconds"):
            list(JsonLinesSource(f).records())
        assert len(list(JsonLinesSource(f, max_future=None).records())) == 2  # (the setting null: none is)
    c = tmp_path / "live.csv"
    c.write_text(f"event_id,ts,x,score\na,{now},1,0.5\nb,{now * 1000},1,0.5\n")
    with pytest.raises(InvalidInput, match=r"live\.csv:3: .*max_future_seconds"):
        list(CsvSource(c, CsvLayout("m")).records())


def test_a_csv_header_with_a_name_twice_is_refused(tmp_path):
    # csv.DictReader keeps the last cell of each name: the first amount was silently lost.
    f = tmp_path / "live.csv"
    f.write_text("amount,country,amount,score\n1,DE,99999,0.5\n")
    with pytest.raises(InvalidInput, match=r"live\.csv: repeated column name\(s\): amount"):
        list(CsvSource(f, CsvLayout("m")).records())


def test_a_csv_header_with_a_blank_name_is_refused_as_reference_build_refuses_it(tmp_path):
    # pandas' to_csv writes its index so: it was sent as the feature '', which reference build refuses.
    f = tmp_path / "live.csv"
    f.write_text(",amount,score\n0,1,0.5\n")
    with pytest.raises(InvalidInput, match=r"live\.csv: column\(s\) 1 of the header have no name"):
        list(CsvSource(f, CsvLayout("m")).records())


def test_csv_source_checks_every_row_and_names_the_line(tmp_path):
    f = tmp_path / "live.csv"
    f.write_text('event_id,ts,note,score\na,1795350000,"two\nlines",0.1\nb,yesterday,x,0.2\nc,1795350002,y,0.3\n')
    source = CsvSource(f, CsvLayout("fraud"))
    with pytest.raises(InvalidInput, match=r"live\.csv:4: invalid event: ts must be RFC 3339"):
        list(source.records())
    reported = []
    records = list(source.records(skip_invalid=True, report=reported.append))
    assert [json.loads(r.value)["event_id"] for r in records] == ["a", "c"]
    assert [r.line for r in records] == [3, 5] and records[0].key == b"fraud"
    assert json.loads(records[0].value)["features"] == {"note": "two\nlines"}
    assert source.skipped == 1 and len(reported) == 1 and "live.csv:4" in reported[0]
    assert source.done == f.stat().st_size


def test_an_undecodable_csv_line_is_an_invalid_line_named_by_its_own_number(tmp_path):
    # It stopped the command even with --skip-invalid, named the line before it (the CSV
    # reader's last good line) and said "nothing was sent" after sending the lines before it.
    f = tmp_path / "live.csv"
    f.write_bytes(b'event_id,note,score\nr1,"two\nlines",0.1\nr2,\xff\xfe,0.2\nr3,3,0.3\n')
    source = CsvSource(f, CsvLayout("m"))
    with pytest.raises(InvalidInput, match=r"live\.csv:4: not UTF-8 text \(byte 0xff at column 4\)") as refused:
        list(source.records())
    assert refused.value.line_error
    reported = []
    records = list(source.records(skip_invalid=True, report=reported.append))
    assert [(r.line, json.loads(r.value)["event_id"]) for r in records] == [(3, "r1"), (5, "r3")]
    assert source.skipped == 1 and len(reported) == 1 and "live.csv:4: not UTF-8 text" in reported[0]
    assert source.done == f.stat().st_size
    # a header that is not UTF-8 is the whole file's problem, which skipping lines does not help
    f.write_bytes(b"event_id,\xffx,score\nr1,1,0.1\n")
    with pytest.raises(InvalidInput, match=r"live\.csv:1: header not UTF-8 text") as refused:
        list(CsvSource(f, CsvLayout("m")).records(skip_invalid=True))
    assert not refused.value.line_error


def test_a_line_the_csv_module_cannot_read_is_named_by_its_own_number_and_only_it_skipped(tmp_path):
    # DictReader's line count is updated only after a row it could read: the message named the
    # line before, and with --skip-invalid the next, good, line was skipped as well.
    f = tmp_path / "cr.csv"
    f.write_bytes(b"x,c,score\n1,a,0.5\n2,b\rc,0.3\n3,d,0.2\n")  # a bare CR inside line 3's cell
    with pytest.raises(InvalidInput, match=r"cr\.csv:3: not readable CSV"):
        list(CsvSource(f, CsvLayout("m")).records())
    reported = []
    records = list(CsvSource(f, CsvLayout("m")).records(skip_invalid=True, report=reported.append))
    assert [r.line for r in records] == [2, 4] and len(reported) == 1 and "cr.csv:3:" in reported[0]


def test_the_skip_invalid_hint_is_given_only_where_it_helps(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STREAMPROC_DEBUG", raising=False)
    f = tmp_path / "live.csv"
    f.write_bytes(b"x,score\n1,0.1\n\xff,0.2\n")
    argv = ["produce", "--bootstrap", "127.0.0.1:1", "--input", str(f), "--model", "m"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"streamproc: error: {f}:3: not UTF-8 text (byte 0xff at column 1) (nothing was sent; " \
                  "--skip-invalid sends the valid lines)\n"
    f.write_bytes(b"x,x,score\n1,2,0.1\n")  # a name twice: every line is refused alike, as reference build refuses it
    for extra in ([], ["--skip-invalid"]):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "repeated column name(s): x" in err and "--skip-invalid" not in err, err


def test_a_features_only_csv_gives_events_with_an_empty_prediction_as_reference_build_takes_it(tmp_path):
    # It was refused ("needs a 'score' or 'label' column"; with --score-column '' --label-column
    # '': "needs a '' or '' column"), while reference build profiles such a file.
    f = tmp_path / "nopred.csv"
    f.write_text("x,y\n1,2\n")
    for columns in ((None, None), ("", "")):
        (record,) = open_source(f, "m", score_column=columns[0], label_column=columns[1]).records()
        ev = json.loads(record.value)
        assert ev["features"] == {"x": 1.0, "y": 2.0} and ev["prediction"] == {}
        assert check_event(record.value) == "m"
    f.write_text("x,score,label\n1,0.5,yes\n")  # '' for both: those columns are features
    (record,) = open_source(f, "m", score_column="", label_column="").records()
    assert json.loads(record.value)["features"] == {"x": 1.0, "score": 0.5, "label": "yes"}


def test_csv_needs_a_model_a_header_and_a_known_format(tmp_path):
    f = tmp_path / "nopred.csv"
    f.write_text("x,y\n1,2\n")
    with pytest.raises(InvalidInput, match="CSV input needs --model"):
        open_source(f)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidInput, match="empty CSV file"):
        list(open_source(tmp_path / "empty.csv", "m").records())
    with pytest.raises(InvalidInput, match="unsupported input format"):
        open_source(tmp_path / "x.parquet")
    with pytest.raises(InvalidInput, match="no such file"):
        open_source(tmp_path / "missing.jsonl")


def test_a_named_prediction_column_the_csv_lacks_is_an_error_as_for_reference_build(tmp_path):
    f = tmp_path / "live.csv"
    f.write_text("x,label\n1,a\n")
    with pytest.raises(InvalidInput, match="no column 'p_fraud'"):
        list(open_source(f, "m", score_column="p_fraud").records())
    assert [r for r in open_source(f, "m").records()]  # the default score column may be absent


def test_jsonl_lines_are_sent_as_written_and_invalid_ones_named(tmp_path):
    f = tmp_path / "events.jsonl"
    lines = [json.dumps(event(1)), "", json.dumps(event(2, "churn")), '{"event_id": "e3"}', "not json"]
    f.write_text("\n".join(lines) + "\n")
    source = JsonLinesSource(f)
    with pytest.raises(InvalidInput, match=r"events\.jsonl:4: invalid event: Object missing required field"):
        list(source.records())
    reported = []
    records = list(source.records(skip_invalid=True, report=reported.append))
    assert [(r.line, r.key, r.value) for r in records] == [
        (1, b"fraud", lines[0].encode()), (3, b"churn", lines[2].encode())]
    assert source.skipped == 2 and "events.jsonl:5: not valid JSON" in reported[1]
    with pytest.raises(InvalidInput, match="--model: only for CSV input"):
        open_source(f, "m")
    with pytest.raises(InvalidInput, match="--score-column: only for CSV input"):  # (it was ignored)
        open_source(f, score_column="p")


def test_a_byte_order_mark_before_the_first_json_line_is_not_sent(tmp_path):
    # It was refused as "not valid JSON" (a CSV with one was accepted).
    f = tmp_path / "events.jsonl"
    lines = [json.dumps(event(1)), json.dumps(event(2))]
    f.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    assert [r.value for r in JsonLinesSource(f).records()] == [line.encode() for line in lines]


def test_skipped_lines_beyond_twenty_are_counted_not_reported(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text("{}\n" * 30)
    reported = []
    source = JsonLinesSource(f)
    assert list(source.records(skip_invalid=True, report=reported.append)) == []
    assert source.skipped == 30 and len(reported) == 20 and "counted, not shown" in reported[-1]


# ---------------------------------------------------------------------------------- synthetic

def test_synthetic_source_interleaves_models_keyed_by_model():
    source = SyntheticSource(["a", "b"], 5, synthetic_drift(2, "x0,c0", 1.0, 0.5), model_version="v3", chunk=2)
    records = list(source.records())
    assert [r.key for r in records] == [b"a", b"b"] * 5
    events = [json.loads(r.value) for r in records]
    assert [e["event_id"] for e in events[:4]] == ["a-0", "b-0", "a-1", "b-1"]
    assert all(e["model_version"] == "v3" and check_event(r.value) == e["model_id"] for e, r in zip(events, records))
    assert source.done == source.total == 10


@pytest.mark.parametrize("flags,message", [
    (["--synthetic", "--models", "fraud", "--version", ""], "argument --version: must be 1 to 256 characters without "
                                                           "control characters, not ''"),
    (["--synthetic", "--models", "fraud", "--version", "v\t1"], "argument --version: must be 1 to 256 characters"),
    (["--synthetic", "--models", "a," + "m" * 300], "argument --models: must be 1 to 256 characters"),
    (["--synthetic", "--models", "a,\x01b"], "argument --models: must be 1 to 256 characters"),
    (["--synthetic", "--models", " , "], "argument --models: must name at least one model id, not ' , '"),
    (["--synthetic", "--models", "a,b,a"], "argument --models: names a more than once"),
    (["--input", "live.csv", "--model", ""], "argument --model: must be 1 to 256 characters"),
])
def test_ids_events_could_not_carry_are_refused_at_start(flags, message, capsys):
    # They were sent, and every worker dead-lettered every event (exit 0).
    assert message in parse_error(["produce", *flags], capsys)


def test_drift_models_drift_and_the_others_stay_as_without_drift():
    # Every model got the same drift: the compose stack's "one drifts" drifted all three.
    drift = synthetic_drift(3, "x0")
    plain = [json.loads(r.value) for r in SyntheticSource(["a", "b"], 6).records()]
    some = [json.loads(r.value) for r in SyntheticSource(["a", "b"], 6, drift, drift_models=["a"]).records()]
    assert [e for e in some if e["model_id"] == "b"] == [e for e in plain if e["model_id"] == "b"]
    shifted = [(s["features"]["x0"] - p["features"]["x0"]) for s, p in zip(some, plain) if s["model_id"] == "a"]
    assert shifted[:3] == [0, 0, 0] and all(abs(d - 1.0) < 1e-4 for d in shifted[3:])
    every = [json.loads(r.value) for r in SyntheticSource(["a", "b"], 6, drift).records()]
    assert all(e["features"]["x0"] != p["features"]["x0"] for e, p in zip(every[6:], plain[6:]))
    with pytest.raises(ValueError, match=r"--drift-models: c not in --models \(a, b\)"):
        SyntheticSource(["a", "b"], 6, drift, drift_models=["c"])


def test_synthetic_drift_flags():
    assert synthetic_drift(None, None, None, None) is None
    d = synthetic_drift(100, "x0, c0", 2.0, 0.3)
    assert (d.start, d.features, d.shift, d.new_category_rate) == (100, ("x0", "c0"), 2.0, 0.3)
    d = synthetic_drift(5, None)
    assert (d.features, d.shift, d.new_category_rate) == (("x0",), 1.0, 0.0)  # no categorical feature drifts
    assert synthetic_drift(5, "c0").new_category_rate == 0.3
    for args, message in (((None, "x0"), "--drift-features need"), ((5, "x9"), "unknown feature"),
                          ((5, "c0", None, 1.5), "at most 1, not 1.5"), ((-1, None), "0 or more"),
                          # flags that did nothing, silently:
                          ((None, None, 2.0), "--drift-shift need"), ((None, None, None, 0.5), "--drift-category-rate need"),
                          ((5, "c0", 2.0), "--drift-shift applies to numeric features; --drift-features has none (c0)"),
                          ((5, "x0", None, 0.5), "--drift-category-rate applies to categorical features"),
                          ((5, "c0", None, 0.0), "--drift-category-rate must be above 0 (it would leave c0 unchanged)"),
                          ((5, "x0,c0", 0.0), "--drift-shift must be a finite number other than 0"),
                          ((5, "x0", math.nan), "--drift-shift must be a finite number")):
        with pytest.raises(ValueError, match=re.escape(message)):
            synthetic_drift(*args)


@pytest.mark.parametrize("flags,message", [
    (["--input", "live.csv", "--model", "m", "--events", "5", "--drift-shift", "3", "--seed", "7"],
     "--events, --drift-shift, --seed: only for --synthetic, not --input"),
    (["--input", "live.jsonl", "--models", "a"], "--models: only for --synthetic, not --input"),
    (["--input", "live.csv", "--model", "m", "--drift-at", "0", "--seed", "0"],  # (0 == False: taken as not given)
     "--drift-at, --seed: only for --synthetic, not --input"),
    (["--synthetic", "--models", "a", "--score-column", "s", "--skip-invalid"],
     "--score-column, --skip-invalid: only for --input files, not --synthetic"),
    (["--synthetic", "--models", "a", "--label-column", ""], "--label-column: only for --input files"),
    (["--synthetic", "--models", "a", "--events", "100", "--drift-at", "100"],
     "--drift-at 100 is not below --events 100: no event would drift"),
    (["--synthetic", "--models", "a", "--drift-at", "10000"], "not below --events 10000"),  # the default
    (["--synthetic", "--models", "a", "--drift-at", "5", "--drift-features", "c0", "--drift-category-rate", "0"],
     "--drift-category-rate must be above 0"),
    (["--synthetic", "--models", "a", "--drift-shift", "3"], "--drift-shift need(s) --drift-at"),
])
def test_flags_that_would_do_nothing_are_refused(flags, message, capsys, monkeypatch, tmp_path):
    # They were ignored: the command went on (to Kafka) as if they had not been given.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "live.csv").write_text("x,score\n1,0.5\n")
    (tmp_path / "live.jsonl").write_text(json.dumps(event(1)) + "\n")
    assert main(["produce", "--bootstrap", "127.0.0.1:1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamproc: error: ") and err.count("\n") == 1 and message in err, err


# ---------------------------------------------------------------------------------- pacing and progress

class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("rate,n,most_sleeps", [(200.0, 1000, 500), (20_000.0, 10_000, 100)])
def test_token_bucket_paces_to_the_rate_with_few_sleeps(rate, n, most_sleeps):
    clock = FakeClock()
    pacer = Pacer(rate, clock=clock, sleep=clock.sleep)

    async def send():
        for _ in range(n):
            await pacer.wait()
            clock.now += 0.00001  # each send takes 10 us

    asyncio.run(send())
    elapsed = clock.now - 1000.0
    # the first event goes at once; at the end at most min_sleep (5 ms) of debt is left unslept
    assert (n - 1) / rate - 0.005 <= elapsed <= (n - 1) / rate + 0.005
    # waits under 5 ms are not slept one by one but paid together by a later, longer one
    assert len(clock.sleeps) <= most_sleeps
    assert all(s >= 0.005 for s in clock.sleeps)


def test_token_bucket_allows_a_bounded_burst_after_idling():
    clock = FakeClock()
    bucket = TokenBucket(100.0, clock=clock)  # burst: a tenth of a second, 10 events
    clock.now += 60.0  # idle for a minute
    delays = [bucket.reserve() for _ in range(12)]
    assert delays[:10] == [0.0] * 10
    assert delays[10] == pytest.approx(0.01) and delays[11] == pytest.approx(0.02)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_no_rate_means_no_waiting():
    clock = FakeClock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep)
    asyncio.run(pacer.wait())
    assert clock.sleeps == []


def test_progress_only_for_long_runs():
    clock = FakeClock()
    out = io.StringIO()
    quick = Progress("sending a.jsonl", 100, True, unit="events", stream=out, clock=clock)
    clock.now += 0.1
    quick.update(50, 5)
    quick.update(100, 10, final=True)
    assert out.getvalue() == ""  # done in 0.1 s: no bar
    slow = Progress("sending a.jsonl", 1000, True, unit="events", stream=out, clock=clock)
    clock.now += 1.0
    slow.update(250, 2500)
    clock.now += 0.1
    slow.update(300, 3000)  # redrawn at most twice a second
    clock.now += 1.0
    slow.update(1000, 10000, final=True)
    assert out.getvalue() == ("\rsending a.jsonl:  25.0% (2,500 events, 2,500/s)"
                              "\rsending a.jsonl: 100.0% (10,000 events, 4,762/s)\n")
    disabled = Progress("x", 10, False, stream=out, clock=clock)
    clock.now += 5
    disabled.update(5, 5)
    assert out.getvalue().count("\r") == 2


# ---------------------------------------------------------------------------------- CLI conventions

def _subparsers(parser, prefix=("streamproc",)):
    for action in parser._actions:
        if action.dest in ("command", "alerts_command", "reference_command"):
            for name, sub in action.choices.items():
                yield " ".join(prefix + (name,)), sub
                yield from _subparsers(sub, prefix + (name,))


def test_every_subcommand_help_has_an_example():
    names = []
    for name, sub in _subparsers(build_parser()):
        names.append(name)
        assert sub.epilog and "example" in sub.epilog and "streamproc " in sub.epilog, name
    assert {"streamproc produce", "streamproc status", "streamproc alerts forward"} <= set(names)


@pytest.mark.parametrize("argv,code,message", [
    # a usage error, as for reference build (it exited 1)
    (["produce", "--bootstrap", "x:1", "--input", "missing.jsonl"], 2, "missing.jsonl: no such file"),
    (["produce", "--bootstrap", "x:1", "--input", "live.parquet"], 2, "live.parquet: unsupported input format"),
    (["produce", "--bootstrap", "x:1", "--input", "live.csv"], 2, "CSV input needs --model"),
    (["produce", "--bootstrap", "x:1", "--synthetic", "--models", "a", "--drift-at", "5", "--drift-features", "q"], 2,
     "unknown feature"),
    (["produce", "--bootstrap", "x:1", "--synthetic", "--models", "a", "--rate", "0"], 2, "--rate must be a positive"),
    (["produce", "--bootstrap", "x:1", "--synthetic", "--models", "a", "--drift-models", "a"], 2,
     "--drift-models needs --drift-at"),
    (["produce", "--bootstrap", "x:1", "--synthetic", "--models", "a", "--drift-at", "5", "--drift-models", "b"], 2,
     "--drift-models: b not in --models (a)"),
    (["produce", "--synthetic", "--models", "a"], 2, "--bootstrap (or STREAMPROC_BOOTSTRAP) is required"),
    (["alerts", "forward", "--bootstrap", "x:1", "--webhook", "ftp://x"], 2, "--webhook must be an http"),
    # (retried as "cannot reach the webhook" for 97 s, from the first alert on, before)
    (["alerts", "forward", "--bootstrap", "x:1", "--webhook", "http://hooks:99999/x"], 2, "is not a valid URL (Port"),
    (["alerts", "forward", "--bootstrap", "x:1", "--webhook", "http:///x"], 2, "is not a valid URL (no host)"),
    (["status", "--url", "http://127.0.0.1:1"], 1, "cannot reach a worker at http://127.0.0.1:1/status"),
])
def test_errors_are_one_line_on_stderr(argv, code, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMPROC_BOOTSTRAP", raising=False)
    monkeypatch.delenv("STREAMPROC_DEBUG", raising=False)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamproc: error: ") and message in err, err


def test_invalid_file_is_refused_before_anything_is_sent(tmp_path, capsys, monkeypatch):
    # The broker address is never used: the check fails first.
    monkeypatch.delenv("STREAMPROC_DEBUG", raising=False)
    f = tmp_path / "events.jsonl"
    f.write_text(json.dumps(event(1)) + "\n" + json.dumps(event(2, ts="noon")) + "\n")
    assert main(["produce", "--bootstrap", "127.0.0.1:1", "--input", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{f}:2: invalid event: ts must be RFC 3339" in err
    assert "nothing was sent" in err


# ---------------------------------------------------------------------------------- through the broker

def run_produce(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("STREAMPROC_BOOTSTRAP", None)
    return subprocess.run([sys.executable, "-m", "streamproc", "produce", "--bootstrap", bootstrap, *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def read_topic(bootstrap: str, topic: str, n: int):
    from .conftest import wait_until
    from .test_integration import TopicReader

    reader = TopicReader(bootstrap, topic)
    try:
        messages = wait_until(lambda: len(reader.poll()) >= n and reader.messages, 60, f"{n} messages on {topic}")
        return [(m.key(), m.value()) for m in messages]
    finally:
        reader.close()


@pytest.mark.integration
def test_produce_jsonl_and_csv_files_through_the_broker(bootstrap, tmp_path):
    from .test_integration import validator

    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    f = tmp_path / "events.jsonl"
    lines = [json.dumps(event(i, "fraud" if i % 3 else "churn")) for i in range(300)]
    f.write_text("\n".join(lines[:150]) + "\n\n" + "\n".join(lines[150:]) + "\n")
    done = run_produce(bootstrap, "--input", str(f), "--topic", topic)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sent 300 events to {topic} in "), done.stdout
    assert done.stderr == ""  # not a terminal: no progress bar
    got = read_topic(bootstrap, topic, 300)
    assert len(got) == 300
    assert sorted(v for _, v in got) == sorted(line.encode() for line in lines)  # sent as written
    assert all(k == json.loads(v)["model_id"].encode() for k, v in got)
    for model in ("fraud", "churn"):  # in file order per model (keyed by model: one partition each)
        ids = [json.loads(v)["event_id"] for _, v in got if json.loads(v)["model_id"] == model]
        assert ids == [json.loads(line)["event_id"] for line in lines if json.loads(line)["model_id"] == model]

    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    csv_file = tmp_path / "live.csv"
    csv_file.write_text("ts,amount,country,score,label\n"
                        + "".join(f"{1795350000 + i},{i * 1.5},{'DE' if i % 2 else ''},0.{i % 10},{'yes' if i % 2 else 'no'}\n"
                                  for i in range(50))
                        + "1795350050,1.0,FR,not-a-score,no\n")
    refused = run_produce(bootstrap, "--input", str(csv_file), "--topic", topic, "--model", "fraud")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "live.csv:52: score 'not-a-score' is not a number" in refused.stderr
    done = run_produce(bootstrap, "--input", str(csv_file), "--topic", topic, "--model", "fraud", "--version", "v7",
                       "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "sent 50 events" in done.stdout and "skipped 1 invalid line(s)" in done.stdout
    assert "skipped " in done.stderr and "live.csv:52" in done.stderr
    got = read_topic(bootstrap, topic, 50)
    events = [json.loads(v) for _, v in got]
    schema = validator("prediction")
    for e in events:
        schema.validate(e)
    assert [e["event_id"] for e in events] == [f"live-{i + 1}" for i in range(50)]
    assert events[1] == {"event_id": "live-2", "model_id": "fraud", "model_version": "v7", "ts": 1795350001.0,
                         "features": {"amount": 1.5, "country": "DE"}, "prediction": {"score": 0.1, "label": "yes"}}
    assert events[0]["features"] == {"amount": 0.0, "country": None}
    assert {k for k, _ in got} == {b"fraud"}


@pytest.mark.integration
def test_skip_invalid_sends_around_an_undecodable_csv_line_and_a_late_error_says_what_was_sent(bootstrap, tmp_path,
                                                                                              capsys, monkeypatch):
    import streamproc.produce
    from streamproc.produce import Record, Source

    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    f = tmp_path / "live.csv"
    f.write_bytes(b"event_id,x,score\nr1,1,0.1\nr2,\xff\xfe,0.2\nr3,3,0.3\n")
    done = run_produce(bootstrap, "--input", str(f), "--topic", topic, "--model", "m", "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "sent 2 events" in done.stdout and "skipped 1 invalid line(s)" in done.stdout
    assert done.stderr == f"streamproc: skipped {f}:3: not UTF-8 text (byte 0xff at column 4)\n"
    assert [json.loads(v)["event_id"] for _, v in read_topic(bootstrap, topic, 2)] == ["r1", "r3"]

    class Truncated(Source):  # a file that cannot be read on after two events
        def records(self, skip_invalid=False, report=None):
            for i in range(2):
                yield Record(i + 1, b"m", json.dumps(event(i, "m")).encode())
            raise InvalidInput("live.csv: gone")

    monkeypatch.delenv("STREAMPROC_DEBUG", raising=False)
    monkeypatch.setattr(streamproc.produce, "open_source", lambda *args: Truncated())
    assert main(["produce", "--bootstrap", bootstrap, "--input", "live.csv", "--topic", topic, "--skip-invalid"]) == 1
    assert capsys.readouterr().err == "streamproc: error: live.csv: gone (2 event(s) were sent before it)\n"


@pytest.mark.integration
def test_produce_synthetic_at_a_rate(bootstrap):
    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    done = run_produce(bootstrap, "--synthetic", "--models", "a,b", "--events", "100", "--rate", "400",
                       "--drift-at", "50", "--drift-features", "x1", "--topic", topic)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[:5] == ["sent", "200", "events", "to", topic]
    seconds = float(words[6])
    assert seconds >= 199 / 400 - 0.01  # paced: never faster than the rate (upper bound: the machine's load)
    events = [json.loads(v) for _, v in read_topic(bootstrap, topic, 200)]
    assert len(events) == 200 and {e["model_id"] for e in events} == {"a", "b"}
