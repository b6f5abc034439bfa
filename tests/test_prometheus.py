"""A real Prometheus scrapes a real worker with the alert rules loaded: every dashboard query
returns data, the template variables find their values, and the drift rule fires for the
model that drifts (and only for it)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from streamproc import dashboards as gen
from streamproc.broker import free_port
from streamproc.synth import Drift, ModelStream

from .conftest import unique_topics, wait_until
from .prometheus_support import RULES, binary, substitute
from .test_integration import produce

pytestmark = pytest.mark.integration

TIMEOUT = 120  # generous: two cores, other work running


class Prometheus:
    """``prometheus`` in a subprocess, scraping the given targets every second, with the rules."""

    def __init__(self, tmp_path: Path, targets: list[str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "streamproc", "static_configs": [{"targets": targets}]}],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "prometheus.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **params):
        url = self.base + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]

    def wait_ready(self) -> None:
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_until(ready, TIMEOUT, "Prometheus to be ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(tmp_path):
    started: list[Prometheus] = []

    def _start(targets: list[str]) -> Prometheus:
        p = Prometheus(tmp_path, targets)
        started.append(p)
        p.wait_ready()
        return p

    yield _start
    for p in started:
        p.stop()


def encode(*streams: list[dict]) -> list[bytes]:
    """The streams interleaved event by event, as JSON."""
    out = []
    for i in range(max(len(s) for s in streams)):
        out.extend(json.dumps(s[i]).encode() for s in streams if i < len(s))
    return out


def outcomes_for(events: list[dict], seed: int) -> list[bytes]:
    """Labels a minute after each prediction, right 90 % of the time."""
    rng = random.Random(seed)
    out = []
    for e in events:
        predicted = e["prediction"]["label"]
        truth = predicted if rng.random() < 0.9 else ("0" if predicted == "1" else "1")
        out.append(json.dumps({"event_id": e["event_id"], "model_id": e["model_id"], "ts": e["ts"] + 60,
                               "label": truth}).encode())
    return out


def value(result: list[dict]) -> float | None:
    return float(result[0]["value"][1]) if result else None


def alerts(prom: Prometheus, name: str, state: str | None = None) -> list[dict]:
    return [a for a in prom.get("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == name and (state is None or a["state"] == state)]


def test_dashboard_queries_and_alert_rules_on_a_real_prometheus(bootstrap, start_worker, prometheus):
    topics = unique_topics()
    worker = start_worker(topics, "--window-size", "500", "--warmup-size", "1000")
    prom = prometheus([f"127.0.0.1:{worker.port}"])
    instance = f"127.0.0.1:{worker.port}"
    wait_until(lambda: value(prom.query(f'up{{job="streamproc", instance="{instance}"}}')) == 1, TIMEOUT,
               "Prometheus to scrape the worker")

    # Outcomes already flow for both models (joining starts at a model's first outcome; these
    # two answer predictions the worker never saw).
    produce(bootstrap, topics["outcomes"], [json.dumps({"event_id": "old", "model_id": m, "ts": 1.0, "label": "1"}).encode()
                                            for m in ("alpha", "beta")])
    wait_until(lambda: value(prom.query('sum(streamproc_outcome_joins_total{result="unmatched"})')) == 2, TIMEOUT,
               "the first outcomes of both models")

    # alpha drifts on x3 from event 3000 (window #4 after 1000 events of warmup); beta does not.
    alpha = list(ModelStream("alpha", n_numeric=6, n_categorical=1, seed=71, drift=Drift(3000, ("x3",), 1.0)).events(4000))
    beta = list(ModelStream("beta", n_numeric=6, n_categorical=1, seed=72, model_version="v2").events(6000))
    produce(bootstrap, topics["predictions"], encode(alpha, beta[:4000]))
    wait_until(lambda: prom.query('streamproc_alerts_total{model_id="alpha", severity="critical"}'), TIMEOUT,
               "Prometheus to scrape alpha's first critical alert")

    # Then x4 drifts as well: a second critical alert, which Prometheus sees as an increase.
    # A few malformed messages go to the dead-letter topic.
    more = list(ModelStream("alpha", n_numeric=6, n_categorical=1, seed=73, drift=Drift(0, ("x3", "x4"), 1.0))
                .events(2000, start=4000))
    alpha += more
    bad = [b"this is not json", b'{"event_id": 5, "model_id": "alpha"}', b""]
    produce(bootstrap, topics["predictions"], encode(more, beta[4000:]) + bad)
    status = wait_until(lambda: (s := worker.status()) and sum(m["events"] for m in s["models"]) == 12000 and s,
                        TIMEOUT, "the worker to apply every prediction")

    # The labels arrive after their predictions: outcome joins and error rates.
    produce(bootstrap, topics["outcomes"], outcomes_for(alpha, 1) + outcomes_for(beta, 2))
    wait_until(lambda: value(prom.query('sum(streamproc_outcome_joins_total{result="matched"})')) == 12000,
               TIMEOUT, "Prometheus to scrape every outcome joined")
    published = worker.status()["published"]
    assert published["alerts"] >= 2 and published["dead_letters"] == len(bad), published
    wait_until(lambda: (value(prom.query("sum(streamproc_alerts_total)")) == published["alerts"]
                        and value(prom.query("sum(streamproc_events_consumed_total)")) == 12000
                        and value(prom.query("sum(streamproc_events_dead_lettered_total)")) == len(bad)
                        and prom.query('streamproc_error_rate{model_id="alpha", model_version="default"}')),
               TIMEOUT, "Prometheus to scrape the final counts")

    # -- the rules: both groups loaded and evaluating without errors ---------------------------
    expected_groups = {g["name"]: [r["alert"] for r in g["rules"]] for g in yaml.safe_load(RULES.read_text())["groups"]}

    def rule_groups():
        groups = {g["name"]: g for g in prom.get("/api/v1/rules")["groups"]}
        healthy = all(r["health"] == "ok" for g in groups.values() for r in g["rules"])
        return healthy and groups

    groups = wait_until(rule_groups, TIMEOUT, "every rule to be evaluated without error")
    assert {name: [r["name"] for r in g["rules"]] for name, g in groups.items()} == expected_groups
    assert all(g["file"] == str(RULES) for g in groups.values())

    # -- the drift rule fires for alpha, and only for alpha; the worker rules stay quiet --------
    firing = wait_until(lambda: alerts(prom, "StreamprocDriftCritical", "firing"), TIMEOUT,
                        "StreamprocDriftCritical to fire")
    assert {a["labels"]["model_id"] for a in firing} == {"alpha"}
    assert firing[0]["labels"]["severity"] == "critical"
    assert "alpha" in firing[0]["annotations"]["summary"]
    for name in ("StreamprocWorkerNotReady", "StreamprocWorkerAbsent", "StreamprocDeadLettersHigh",
                 "StreamprocThroughputStalled", "StreamprocStateNotSaved"):
        assert alerts(prom, name) == [], name

    # -- every dashboard query returns data ------------------------------------------------------
    # A rate() over a series that appeared moments ago needs a second scrape before it has a
    # value, so poll until every query has data (or report the ones that never got any).
    values = {"model_id": "alpha", "model_version": "default", "feature": "x3", "instance": ".+"}
    concrete = [(f"{board['title']} / {title}", substitute(expr, values))
                for board in gen.dashboards().values() for title, expr in gen.queries(board)]
    assert len(concrete) > 30
    assert not [q for _, q in concrete if "$" in q]
    pending = dict(concrete)

    def all_have_data():
        for name, query in list(pending.items()):
            result = prom.query(query)
            if any(math.isfinite(float(r["value"][1])) for r in result):
                del pending[name]
        return not pending

    try:
        wait_until(all_have_data, 30, "every dashboard query to return data", interval=1)
    except pytest.fail.Exception:
        pytest.fail("dashboard queries without data:\n" + "\n".join(f"{n}: {q}" for n, q in pending.items()))

    # A few whose values are known.
    fleet = {title: expr for title, expr in gen.queries(gen.fleet())}
    assert value(prom.query(fleet["Model versions monitored"])) == 2
    assert value(prom.query(substitute(fleet["Model versions in drift"], {}))) == 1
    top = prom.query(fleet["Most drifting features (PSI / warning threshold, latest window)"])
    assert (top and max(top, key=lambda r: float(r["value"][1]))["metric"]["model_id"] == "alpha")
    model = {title: expr for title, expr in gen.queries(gen.model())}
    assert 0.03 < value(prom.query(substitute(model["Error rate"], values))) < 0.2  # 10 % wrong
    assert value(prom.query(substitute(model["Features in drift"], values))) >= 2  # x3 and x4
    assert value(prom.query(substitute(model["Features in drift"], {**values, "model_id": "beta",
                                                                     "model_version": "v2"}))) == 0
    # Every statistic over its threshold: x3's PSI above it, nothing missing; and the table has a
    # row per (feature, detector), the score's and the error's stream detectors included.
    ratios = {(r["metric"]["feature"], r["metric"]["detector"]): float(r["value"][1])
              for r in prom.query(substitute(model["Statistic / threshold by detector"], values))}
    assert ratios[("x3", "psi")] >= 1 and ratios[("x3", "missing_rate")] == 0, ratios
    table = [substitute(e, values) for t, e in gen.queries(gen.model()) if t == "Statistic and threshold by detector"]
    rows = [{(r["metric"]["feature"], r["metric"]["detector"]): float(r["value"][1]) for r in prom.query(q)}
            for q in table]
    assert {("x3", "psi"), ("c0", "unseen_categories"), ("prediction.score", "adwin"), ("error", "page_hinkley")} \
        <= set(rows[0]) == set(rows[1]) == set(rows[2])
    assert rows[2][("error", "page_hinkley")] == 40 and rows[2][("prediction.score", "adwin")] == 0.1

    # -- the template variables find their values ----------------------------------------------
    expected = {"model_id": {"alpha", "beta"}, "model_version": {"default"}, "feature": {"x3", "x4", "prediction.score"},
                "instance": {instance}}
    for board in gen.dashboards().values():
        for name, query in gen.variable_queries(board):
            selector, label = query[len("label_values("):-1].rsplit(",", 1)
            found = set(prom.get(f"/api/v1/label/{label.strip()}/values", **{"match[]": substitute(selector, values)}))
            assert expected[name] <= found, (name, query, found)
