"""The Grafana dashboards and the Prometheus alert rules, without a broker: the committed JSON is
what streamproc/dashboards.py generates, every query is valid PromQL on metrics the worker
exports, the provisioning files point at what is there, and the rules pass their unit tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from streamproc import dashboards as gen

from .prometheus_support import (BUILTINS, DASHBOARDS, PROMETHEUS_CONFIG, PROVISIONING, RULES, RULES_TEST,
                                 exported_metric_names, metric_names_in, promtool, substitute, variables_in)

# Any value will do for checking syntax; these look like what Grafana would put in.
EXAMPLE_VALUES = {"model_id": "fraud", "model_version": "default", "feature": "x0", "instance": ".+"}


def committed() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def all_queries() -> list[tuple[str, str, str]]:
    """(dashboard title, panel title, expression) of every target."""
    return [(board["title"], title, expr) for board in committed().values() for title, expr in gen.queries(board)]


def check_promql(exprs: list[str], tmp_path: Path) -> list[str]:
    """Errors of the expressions that promtool rejects, each naming its expression."""
    def run(batch: list[str], name: str):
        rules = {"groups": [{"name": "dashboards", "rules": [
            {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(batch)]}]}
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        return promtool("check", "rules", str(path))

    proc = run(exprs, "all")
    if proc.returncode == 0:
        return []
    errors = []
    for i, expr in enumerate(exprs):  # find the culprits one by one
        one = run([expr], f"query_{i}")
        if one.returncode != 0:
            errors.append(f"{expr!r}: {(one.stdout + one.stderr).strip()}")
    return errors or [f"promtool check rules failed on the whole set: {(proc.stdout + proc.stderr).strip()}"]


# -- the JSON ----------------------------------------------------------------------------------
def test_committed_dashboards_are_what_the_generator_produces():
    assert gen.check(DASHBOARDS) == [], "run: python -m streamproc.dashboards --write dashboards/"
    assert set(committed()) == set(gen.dashboards()), "dashboards/ holds JSON the generator does not produce"
    for name, board in gen.dashboards().items():
        assert committed()[name] == board


def test_check_reports_a_stale_dashboard(tmp_path):
    gen.write(tmp_path)
    assert gen.check(tmp_path) == []
    path = tmp_path / "streamproc-fleet.json"
    path.write_text(path.read_text().replace("streamproc_models", "streamproc_modelz"))
    assert gen.check(tmp_path) == ["streamproc-fleet.json"]
    assert gen.main(["--check", str(tmp_path)]) == 1


def test_the_three_dashboards_load_with_unique_uids_and_panel_ids():
    boards = committed()
    assert len(boards) == 3
    assert len({b["uid"] for b in boards.values()}) == 3
    for name, board in boards.items():
        assert board["title"] and board["schemaVersion"] >= 36, name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in board["panels"]:
            pos = p["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, (name, p["title"])


def test_every_panel_has_the_provisioned_datasource_and_a_query():
    uid = provisioned_datasource()["uid"]
    for name, board in committed().items():
        assert board["panels"], name
        for p in board["panels"]:
            where = f"{name}: panel {p['title']!r}"
            assert p.get("datasource") == {"type": "prometheus", "uid": uid}, where
            assert p.get("targets"), f"{where} has no target"
            for t in p["targets"]:
                assert t.get("expr", "").strip(), f"{where}: target {t.get('refId')} has no expression"
                assert t.get("datasource", p["datasource"])["uid"] == uid, where
        for v in board["templating"]["list"]:
            assert v["datasource"]["uid"] == uid, (name, v["name"])


def test_the_dashboards_cover_what_they_promise():
    exprs = {name: " ".join(e for _, e in gen.queries(b)) for name, b in committed().items()}
    for name, metrics in {
        "streamproc-fleet.json": ["streamproc_models", "streamproc_alerts_total", "streamproc_psi_threshold",
                                  "streamproc_retrain_requests_total"],
        "streamproc-model.json": ["streamproc_psi", "streamproc_statistic", "streamproc_statistic_threshold",
                                  "streamproc_prediction_score_quantile", "streamproc_error_rate",
                                  "streamproc_windows_closed_total", "streamproc_alerts_total"],
        "streamproc-service.json": ["streamproc_events_consumed_total", "streamproc_events_dead_lettered_total",
                                    "streamproc_batch_duration_seconds_bucket", "streamproc_batch_size_messages_bucket",
                                    "streamproc_ready", "streamproc_checkpoints_total", "streamproc_checkpoint_bytes",
                                    "streamproc_late_events_total", "streamproc_outcome_joins_total"],
    }.items():
        missing = [m for m in metrics if m not in metric_names_in(exprs[name])]
        assert not missing, (name, missing)
    assert "topk(" in exprs["streamproc-fleet.json"]
    model_vars = {name for name, _ in gen.variable_queries(committed()["streamproc-model.json"])}
    assert {"model_id", "model_version"} <= model_vars


def test_queries_use_only_metrics_the_worker_exports():
    exported = exported_metric_names()
    unknown = [(board, panel, expr) for board, panel, expr in all_queries()
               if not metric_names_in(expr) <= exported or not metric_names_in(expr)]
    assert not unknown, unknown
    for board in committed().values():
        for name, query in gen.variable_queries(board):
            assert query.startswith("label_values(") and metric_names_in(query) <= exported, (name, query)


def test_queries_use_only_defined_template_variables():
    for board in committed().values():
        defined = {v["name"] for v in board["templating"]["list"]} | set(BUILTINS)
        for title, expr in gen.queries(board):
            assert variables_in(expr) <= defined, (board["title"], title, expr)
        for name, query in gen.variable_queries(board):
            assert variables_in(query) <= defined - {name}, (name, query)


def test_every_query_is_valid_promql(tmp_path):
    exprs = sorted({substitute(expr, EXAMPLE_VALUES) for _, _, expr in all_queries()})
    assert len(exprs) > 30
    errors = check_promql(exprs, tmp_path)
    assert not errors, "invalid PromQL in the dashboards:\n" + "\n".join(errors)


def test_the_promql_check_names_an_invalid_expression(tmp_path):
    errors = check_promql(["sum(rate(streamproc_events_consumed_total[5m]))", "sum by (le (streamproc_ready)"], tmp_path)
    assert len(errors) == 1 and "sum by (le (streamproc_ready)" in errors[0]


# -- provisioning ------------------------------------------------------------------------------
def provisioned_datasource() -> dict:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    return ds


def grafana_mounts() -> dict[str, Path]:
    """Container path to host path, from the grafana service of docker-compose.yml."""
    compose = yaml.safe_load((DASHBOARDS.parent / "docker-compose.yml").read_text())
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        host, container = volume.split(":")[:2]
        mounts[container.rstrip("/")] = (DASHBOARDS.parent / host).resolve()
    return mounts


def host_path(container_path: str) -> Path:
    mounts = grafana_mounts()
    best = max((c for c in mounts if container_path == c or container_path.startswith(c + "/")), key=len, default=None)
    assert best is not None, f"{container_path} is not under a mount of the grafana service: {mounts}"
    return mounts[best] / container_path[len(best):].lstrip("/")


def test_datasource_provisioning():
    ds = provisioned_datasource()
    assert ds["type"] == "prometheus"
    assert ds["uid"] == gen.DATASOURCE_UID
    assert ds["url"] == "http://prometheus:9090"
    compose = yaml.safe_load((DASHBOARDS.parent / "docker-compose.yml").read_text())
    assert "prometheus" in compose["services"], "the datasource URL names the compose service"
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert ds["jsonData"]["timeInterval"] == scrape


def test_dashboard_provider_points_at_the_dashboards():
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "streamproc.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    folder = host_path(provider["options"]["path"])
    assert folder.is_dir(), folder
    assert folder.resolve() == DASHBOARDS.resolve()
    assert set(gen.dashboards()) <= {p.name for p in folder.glob("*.json")}
    # And Grafana reads these provisioning files where it looks for them.
    provisioning = host_path("/etc/grafana/provisioning")
    assert (provisioning / "datasources" / "prometheus.yml").is_file()
    assert (provisioning / "dashboards" / "streamproc.yml").is_file()


# -- alert rules -------------------------------------------------------------------------------
def test_alert_rules_are_valid():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rules_pass_their_unit_tests():
    proc = promtool("test", "rules", str(RULES_TEST))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_alert_rule_unit_tests_can_fail(tmp_path):
    """The unit tests really test the rules: raise the dead-letter threshold and they fail."""
    rules = RULES.read_text()
    assert "> 0.01" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("> 0.01", "> 0.5"))
    (tmp_path / "rules_test.yml").write_text(RULES_TEST.read_text())
    proc = promtool("test", "rules", str(tmp_path / "rules_test.yml"))
    assert proc.returncode != 0 and "StreamprocDeadLettersHigh" in proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test_that_fires_and_one_that_does_not():
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert {"StreamprocDriftCritical", "StreamprocWorkerNotReady", "StreamprocDeadLettersHigh",
            "StreamprocThroughputStalled"} <= set(alerts)
    cases = [c for t in yaml.safe_load(RULES_TEST.read_text())["tests"] for c in t.get("alert_rule_test", ())]
    for alert in alerts:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no case where it stays quiet"


def test_alert_rules_use_only_exported_metrics():
    exported = exported_metric_names()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert metric_names_in(rule["expr"]) <= exported, (rule.get("alert"), rule["expr"])


def test_the_deployed_prometheus_config_loads_the_rules():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert [(PROMETHEUS_CONFIG.parent / f).resolve() for f in config["rule_files"]] == [RULES.resolve()]
    assert {c["job_name"] for c in config["scrape_configs"]} == {"streamproc"}  # the rules select job="streamproc"
    proc = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
