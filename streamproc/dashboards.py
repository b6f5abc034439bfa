"""Grafana dashboards for streamproc, generated here and committed as JSON in ``dashboards/``.

Three dashboards, all on the Prometheus datasource that ``dashboards/provisioning`` provisions
(uid ``streamproc-prometheus``):

* ``streamproc-fleet.json``: every model at a glance (models monitored, alerts by type and
  severity, the features furthest above their PSI threshold, retrain requests);
* ``streamproc-model.json``: one model version, chosen by the ``model_id`` and
  ``model_version`` variables (PSI per feature, every detector's statistic against its
  threshold, score quantiles, error rate, windows, alerts);
* ``streamproc-service.json``: the workers themselves (throughput, dead letters, batch
  duration and size, readiness, checkpoints, late events, outcome joins).

Rate windows are ``$__rate_interval``, so Grafana picks one that fits the scrape interval
(the datasource's ``timeInterval``). Regenerate after editing this module::

    python -m streamproc.dashboards --write dashboards/

and ``python -m streamproc.dashboards --check dashboards/`` (or the test suite) tells whether
the committed JSON is up to date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["DATASOURCE", "DATASOURCE_UID", "dashboards", "render", "write", "check", "queries", "variable_queries"]

DATASOURCE_UID = "streamproc-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
GRID_WIDTH = 24

MODEL = 'model_id="$model_id"'
VERSION = 'model_id="$model_id", model_version="$model_version"'
INSTANCE = 'instance=~"$instance"'


# -- building blocks ---------------------------------------------------------------------------
def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto", "range": not instant,
         "instant": instant}
    if fmt != "time_series":
        t["format"] = fmt
    return t


def panel(kind: str, title: str, targets: list[dict], width: int = 12, height: int = 8, unit: Optional[str] = None,
          description: str = "", min_value: Optional[float] = None, thresholds: Optional[list] = None,
          options: Optional[dict] = None, custom: Optional[dict] = None, **extra) -> dict:
    refs = "ABCDEFGH"
    targets = [dict(t, refId=refs[i]) for i, t in enumerate(targets)]
    defaults: dict = {}
    if unit is not None:
        defaults["unit"] = unit
    if min_value is not None:
        defaults["min"] = min_value
    if thresholds is not None:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
    if custom is not None:
        defaults["custom"] = custom
    p = {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "targets": targets,
    }
    p.update(extra)
    return p


def stat(title: str, expr: str, unit: Optional[str] = None, description: str = "", thresholds=None, width: int = 4) -> dict:
    return panel("stat", title, [target(expr, instant=True)], width=width, height=4, unit=unit, description=description,
                 thresholds=thresholds or [{"color": "green", "value": None}],
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "none", "textMode": "auto"})


def timeseries(title: str, targets: list[dict], unit: Optional[str] = None, description: str = "", width: int = 12,
               height: int = 8, bars: bool = False, stack: bool = False, min_value: Optional[float] = 0,
               thresholds=None, **extra) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    if thresholds is not None:
        custom["thresholdsStyle"] = {"mode": "dashed"}
    return panel("timeseries", title, targets, width=width, height=height, unit=unit, description=description,
                 min_value=min_value, custom=custom, thresholds=thresholds,
                 options={"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}, **extra)


def layout(panels: list[dict]) -> list[dict]:
    """Number the panels and place them left to right, top to bottom, on Grafana's 24-column grid."""
    x = y = row_height = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        out.append(dict(p, id=i, gridPos={"h": h, "w": w, "x": x, "y": y}))
        x += w
        row_height = max(row_height, h)
    return out


def query_variable(name: str, label: str, query: str, multi: bool = False, include_all: bool = False,
                   all_value: Optional[str] = None) -> dict:
    v = {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "definition": query, "query": {"query": query, "refId": "StandardVariableQuery"},
        "refresh": 2,  # on time range change: new models and versions show up
        "sort": 1, "multi": multi, "includeAll": include_all, "current": {}, "options": [],
        "hide": 0, "regex": "", "skipUrlSync": False,
    }
    if all_value is not None:
        v["allValue"] = all_value
    return v


def dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list[dict] = (),
              time_from: str = "now-6h") -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["streamproc"],
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "graphTooltip": 1,  # shared crosshair
        "links": [{"type": "dashboards", "tags": ["streamproc"], "asDropdown": True, "title": "streamproc",
                   "includeVars": False, "keepTime": True}],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": list(variables)},
        "panels": layout(panels),
    }


GREEN = {"color": "green", "value": None}


# -- the dashboards ----------------------------------------------------------------------------
def fleet() -> dict:
    ratio = "streamproc_psi / streamproc_psi_threshold"
    panels = [
        stat("Model versions monitored", "sum(streamproc_models)",
             description="Model versions the workers hold state for (streamproc_models)."),
        stat("Models", "count(count by (model_id) (streamproc_events_consumed_total))",
             description="Distinct model ids that sent prediction events since the workers started."),
        stat("Model versions in drift", f"count(count by (model_id, model_version) ({ratio} >= 1)) or vector(0)",
             description="Model versions with at least one feature (or the prediction) whose latest PSI is at or "
                         "above its warning threshold.",
             thresholds=[GREEN, {"color": "orange", "value": 1}]),
        stat("Critical alerts in range", 'sum(increase(streamproc_alerts_total{severity="critical"}[$__range])) or vector(0)',
             thresholds=[GREEN, {"color": "red", "value": 1}], unit="short"),
        stat("Retrain requests in range", "sum(increase(streamproc_retrain_requests_total[$__range])) or vector(0)",
             thresholds=[GREEN, {"color": "orange", "value": 1}], unit="short"),
        stat("Workers ready", "sum(streamproc_ready)",
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        timeseries("Alerts by type and severity",
                   [target("sum by (type, severity) (increase(streamproc_alerts_total[$__rate_interval]))",
                           "{{type}} {{severity}}")],
                   unit="short", bars=True, stack=True,
                   description="Alerts published (streamproc_alerts_total), per type and severity."),
        timeseries("Alerts by model",
                   [target("sum by (model_id) (increase(streamproc_alerts_total[$__rate_interval]))", "{{model_id}}")],
                   unit="short", bars=True, stack=True),
        panel("bargauge", "Most drifting features (PSI / warning threshold, latest window)",
              [target(f"topk(15, {ratio})", "{{model_id}}/{{model_version}} {{feature}}", instant=True)],
              width=12, height=10, unit="none", min_value=0,
              thresholds=[GREEN, {"color": "orange", "value": 1}, {"color": "red", "value": 2.5}],
              description="The features (and prediction.score / prediction.label) furthest above their sample-size "
                          "corrected warning threshold across all models: 1 is the warning threshold; the critical "
                          "threshold is 2.5 times it with the default settings.",
              options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        timeseries("PSI / threshold of the most drifting features",
                   [target(f"topk(10, {ratio})", "{{model_id}}/{{model_version}} {{feature}}")],
                   height=10, thresholds=[GREEN, {"color": "orange", "value": 1}],
                   description="Over time; above 1 a feature is at or beyond its warning threshold."),
        timeseries("Retrain requests",
                   [target("sum by (model_id) (increase(streamproc_retrain_requests_total[$__rate_interval]))",
                           "{{model_id}}")],
                   unit="short", bars=True, stack=True),
        timeseries("Events consumed per second",
                   [target("sum by (model_id, model_version) (rate(streamproc_events_consumed_total[$__rate_interval]))",
                           "{{model_id}}/{{model_version}}")],
                   unit="ops"),
        timeseries("Error rate (labelled predictions)",
                   [target("streamproc_error_rate", "{{model_id}}/{{model_version}}")],
                   unit="none",  # (a share of wrong labels, or a mean absolute error in the values' units)
                   description="Error over the last 1000 predictions joined to an outcome: 1 - accuracy for labels, "
                               "mean absolute error for values. Only models that receive outcomes appear."),
        panel("table", "Alerts by model, type and severity in range",
              [target('sort_desc(sum by (model_id, type, severity) (increase(streamproc_alerts_total[$__range])))',
                      instant=True, fmt="table")],
              width=12, height=8,
              transformations=[{"id": "organize", "options": {
                  "excludeByName": {"Time": True},
                  "renameByName": {"Value": "alerts", "model_id": "model", "type": "type", "severity": "severity"}}}]),
    ]
    return dashboard("streamproc-fleet", "streamproc / fleet overview",
                     "Every monitored model: drift, alerts and retrain requests.", panels)


def model() -> dict:
    variables = [
        query_variable("model_id", "model", "label_values(streamproc_events_consumed_total, model_id)"),
        query_variable("model_version", "version",
                       f"label_values(streamproc_events_consumed_total{{{MODEL}}}, model_version)"),
        query_variable("feature", "feature", f"label_values(streamproc_psi{{{VERSION}}}, feature)",
                       multi=True, include_all=True, all_value=".+"),
    ]
    psi = f'streamproc_psi{{{VERSION}, feature=~"$feature"}}'
    statistic = f'streamproc_statistic{{{VERSION}, feature=~"$feature|error"}}'  # ($feature comes from the PSI's)
    statistic_all = f"streamproc_statistic{{{VERSION}}}"
    panels = [
        stat("Events consumed per second",
             f"sum(rate(streamproc_events_consumed_total{{{VERSION}}}[$__rate_interval]))", unit="ops"),
        stat("Windows closed in range", f"sum(increase(streamproc_windows_closed_total{{{VERSION}}}[$__range]))",
             unit="short"),
        stat("Features in drift",
             f"count(streamproc_psi{{{VERSION}}} >= streamproc_psi_threshold{{{VERSION}}}) or vector(0)",
             thresholds=[GREEN, {"color": "orange", "value": 1}],
             description="Features (and prediction signals) whose latest PSI is at or above the warning threshold."),
        stat("Highest PSI / threshold", f"max(streamproc_psi{{{VERSION}}} / streamproc_psi_threshold{{{VERSION}}})",
             thresholds=[GREEN, {"color": "orange", "value": 1}, {"color": "red", "value": 2.5}], unit="none"),
        stat("Error rate", f"max(streamproc_error_rate{{{VERSION}}})", unit="none",
             description="Over the last 1000 labelled predictions (1 - accuracy for labels, mean absolute error for "
                         "values); empty until outcomes are joined."),
        stat("Alerts in range (all versions)", f"sum(increase(streamproc_alerts_total{{{MODEL}}}[$__range])) or vector(0)",
             thresholds=[GREEN, {"color": "orange", "value": 1}], unit="short"),
        timeseries("PSI per feature (latest window)", [target(psi, "{{feature}}")], height=10, unit="none",
                   description="PSI of each closed window, per feature and for prediction.score / prediction.label."),
        timeseries("PSI / warning threshold per feature",
                   [target(f"{psi} / streamproc_psi_threshold{{{VERSION}}}", "{{feature}}")], height=10, unit="none",
                   thresholds=[GREEN, {"color": "orange", "value": 1}],
                   description="Above 1 a feature is at or beyond its (sample-size corrected) warning threshold."),
        timeseries("PSI $feature",
                   [target(f'streamproc_psi{{{VERSION}, feature=~"$feature"}}', "psi"),
                    target(f'streamproc_psi_threshold{{{VERSION}, feature=~"$feature"}}', "warning threshold")],
                   width=6, height=6, unit="none",
                   description="One panel per selected feature: its PSI and the warning threshold it was compared with.",
                   repeat="feature", repeatDirection="h", maxPerRow=4),
        timeseries("Prediction score quantiles (latest window)",
                   [target(f"streamproc_prediction_score_quantile{{{VERSION}}}", "q{{quantile}}")], unit="none"),
        timeseries("Error rate", [target(f"streamproc_error_rate{{{VERSION}}}", "error rate")], unit="none",
                   description="Error over the last 1000 labelled predictions (1 - accuracy for labels, MAE for values)."),
        timeseries("Windows closed",
                   [target(f"sum(increase(streamproc_windows_closed_total{{{VERSION}}}[$__rate_interval]))", "windows")],
                   unit="short", bars=True),
        timeseries("Alerts by type and severity (all versions)",
                   [target(f"sum by (type, severity) (increase(streamproc_alerts_total{{{MODEL}}}[$__rate_interval]))",
                           "{{type}} {{severity}}")],
                   unit="short", bars=True, stack=True,
                   description="streamproc_alerts_total has no model_version label: alerts of every version of the model."),
        timeseries("Retrain requests (all versions)",
                   [target(f"sum(increase(streamproc_retrain_requests_total{{{MODEL}}}[$__rate_interval]))", "retrain requests")],
                   unit="short", bars=True),
        timeseries("Events and outcomes per second",
                   [target(f"sum(rate(streamproc_events_consumed_total{{{VERSION}}}[$__rate_interval]))", "predictions"),
                    target(f"sum(rate(streamproc_outcomes_consumed_total{{{MODEL}}}[$__rate_interval]))",
                           "outcomes (all versions)")],
                   unit="ops"),
        timeseries("Outcome joins per second (all versions)",
                   [target(f"sum by (result) (rate(streamproc_outcome_joins_total{{{MODEL}}}[$__rate_interval]))",
                           "{{result}}")],
                   unit="ops"),
        panel("table", "Latest PSI by feature",
              [target(f"sort_desc(streamproc_psi{{{VERSION}}})", instant=True, fmt="table"),
               target(f"streamproc_psi_threshold{{{VERSION}}}", instant=True, fmt="table")],
              width=24, height=10,
              transformations=[
                  {"id": "merge", "options": {}},
                  {"id": "organize", "options": {
                      "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True,
                                        "model_id": True, "model_version": True},
                      "renameByName": {"Value #A": "PSI", "Value #B": "warning threshold"}}}]),
        timeseries("Statistic / threshold by detector",
                   [target(f"{statistic} / streamproc_statistic_threshold{{{VERSION}}}", "{{feature}} {{detector}}")],
                   width=24, height=10, unit="none", min_value=None, thresholds=[GREEN, {"color": "orange", "value": 1}],
                   description="Every statistic the monitor computes for the selected features, over its warning "
                               "threshold (1: at the threshold): psi, missing_rate and unseen_categories of each "
                               "closed window; adwin and page_hinkley on prediction.score and on the error "
                               "(feature \"error\", once outcomes are joined), after each batch. adwin is the shift "
                               "of ADWIN's window mean from the baseline in baseline sigmas (signed for the error), "
                               "page_hinkley the Page-Hinkley cumulative statistic in baseline sigmas."),
        panel("table", "Statistic and threshold by detector",
              # One row per (feature, detector): the three queries keep only those labels, so merge joins on them.
              [target(f"max by (feature, detector) ({statistic_all} / streamproc_statistic_threshold{{{VERSION}}})",
                      instant=True, fmt="table"),
               target(f"max by (feature, detector) ({statistic_all})", instant=True, fmt="table"),
               target(f"max by (feature, detector) (streamproc_statistic_threshold{{{VERSION}}})", instant=True,
                      fmt="table")],
              width=24, height=12,
              description="The latest value of every statistic (streamproc_statistic) and the warning threshold it "
                          "is compared with (streamproc_statistic_threshold), per feature and detector, furthest "
                          "above its threshold first.",
              options={"sortBy": [{"displayName": "statistic / threshold", "desc": True}]},
              transformations=[
                  {"id": "merge", "options": {}},
                  {"id": "organize", "options": {
                      "excludeByName": {"Time": True},
                      "indexByName": {"feature": 0, "detector": 1, "Value #B": 2, "Value #C": 3, "Value #A": 4},
                      "renameByName": {"Value #A": "statistic / threshold", "Value #B": "statistic",
                                       "Value #C": "warning threshold"}}}]),
    ]
    return dashboard("streamproc-model", "streamproc / model",
                     "One model version: PSI per feature, every detector's statistic against its threshold, "
                     "prediction score, error rate, windows and alerts.",
                     panels, variables)


def service() -> dict:
    variables = [query_variable("instance", "worker", "label_values(streamproc_ready, instance)",
                                multi=True, include_all=True, all_value=".+")]
    bucket = "streamproc_batch_duration_seconds_bucket{%s}" % INSTANCE
    size_bucket = "streamproc_batch_size_messages_bucket{%s}" % INSTANCE
    panels = [
        stat("Workers ready", f"sum(streamproc_ready{{{INSTANCE}}})",
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
        stat("Events consumed per second", f"sum(rate(streamproc_events_consumed_total{{{INSTANCE}}}[$__rate_interval]))",
             unit="ops"),
        stat("Dead letters per second", f"sum(rate(streamproc_events_dead_lettered_total{{{INSTANCE}}}[$__rate_interval])) or vector(0)",
             unit="ops", thresholds=[GREEN, {"color": "orange", "value": 0.05}]),
        stat("Batch duration p95",
             f"histogram_quantile(0.95, sum by (le) (rate({bucket}[$__rate_interval])))", unit="s"),
        stat("Model versions", f"sum(streamproc_models{{{INSTANCE}}})"),
        stat("Last checkpoint size", f"sum(streamproc_checkpoint_bytes{{{INSTANCE}}})", unit="bytes"),
        timeseries("Throughput",
                   [target(f"sum by (instance) (rate(streamproc_events_consumed_total{{{INSTANCE}}}[$__rate_interval]))",
                           "predictions {{instance}}"),
                    target(f"sum by (instance) (rate(streamproc_outcomes_consumed_total{{{INSTANCE}}}[$__rate_interval]))",
                           "outcomes {{instance}}")],
                   unit="ops", description="Valid prediction and outcome events consumed per second."),
        timeseries("Dead letters per second by reason",
                   [target(f"sum by (topic, reason) (rate(streamproc_events_dead_lettered_total{{{INSTANCE}}}[$__rate_interval]))",
                           "{{reason}} ({{topic}})")],
                   unit="ops", stack=True),
        timeseries("Batch duration",
                   [target(f"histogram_quantile({q}, sum by (le, instance) (rate({bucket}[$__rate_interval])))",
                           f"p{int(q * 100)} {{{{instance}}}}") for q in (0.5, 0.95, 0.99)],
                   unit="s", description="Decode, process, publish and commit of one batch (histogram quantiles)."),
        timeseries("Time busy with batches",
                   [target(f"sum by (instance) (rate(streamproc_batch_duration_seconds_sum{{{INSTANCE}}}[$__rate_interval]))",
                           "{{instance}}")],
                   unit="percentunit",
                   description="Seconds per second spent in batches: near 1 the worker cannot keep up with its input."),
        timeseries("Batch size",
                   [target(f"histogram_quantile(0.5, sum by (le, instance) (rate({size_bucket}[$__rate_interval])))",
                           "p50 {{instance}}"),
                    target(f"histogram_quantile(0.95, sum by (le, instance) (rate({size_bucket}[$__rate_interval])))",
                           "p95 {{instance}}"),
                    target(f"sum by (instance) (rate(streamproc_batch_size_messages_sum{{{INSTANCE}}}[$__rate_interval]))"
                           f" / sum by (instance) (rate(streamproc_batch_size_messages_count{{{INSTANCE}}}[$__rate_interval]))",
                           "mean {{instance}}")],
                   unit="short", description="Messages per consumed batch (max_batch caps it)."),
        timeseries("Batches per second",
                   [target(f"sum by (instance) (rate(streamproc_batch_duration_seconds_count{{{INSTANCE}}}[$__rate_interval]))",
                           "{{instance}}")],
                   unit="ops"),
        timeseries("Ready", [target(f"streamproc_ready{{{INSTANCE}}}", "{{instance}}")], unit="bool",
                   description="1 while the worker is connected and consuming.", min_value=0),
        timeseries("Input stalled (seconds)",
                   [target(f"streamproc_input_stalled_seconds{{{INSTANCE}}}", "{{instance}} {{consumer}}")],
                   unit="s",
                   description="Seconds since a consumer (monitor, or router on the repartition route) last made "
                               "progress or had nothing waiting; over 600 for 5 minutes fires StreamprocThroughputStalled."),
        timeseries("Checkpoints per minute",
                   [target(f"sum by (instance) (rate(streamproc_checkpoints_total{{{INSTANCE}}}[$__rate_interval])) * 60",
                           "{{instance}}")],
                   unit="short",
                   description="Changed state saved to the state topic, then input offsets committed "
                               "(every checkpoint_seconds while models change)."),
        timeseries("Checkpoint bytes", [target(f"streamproc_checkpoint_bytes{{{INSTANCE}}}", "{{instance}}")],
                   unit="bytes", description="Bytes of state the latest checkpoint wrote (changed models only)."),
        timeseries("Warm-up memory",
                   [target(f"streamproc_warmup_memory_bytes{{{INSTANCE}}}", "{{instance}}")],
                   unit="bytes",
                   description="Memory held by the warm-ups of model versions without a reference (estimated), "
                               "bounded by worker.warmup_memory_mb; over it warm-ups are thinned (next panel)."),
        timeseries("Warm-ups thinned per minute",
                   [target(f"sum by (instance) (rate(streamproc_warmups_thinned_total{{{INSTANCE}}}[$__rate_interval])) * 60",
                           "{{instance}}")],
                   unit="short",
                   description="Model versions whose warm-up was thinned to stay within worker.warmup_memory_mb "
                               "(or a model's within 8 MiB, so its state fits a record): their references are built "
                               "from fewer events, so they are less sensitive. Give them references, or a larger "
                               "budget, if this is not a one-off."),
        timeseries("Versions retired, states not saved (per hour)",
                   [target(f"sum by (instance) (increase(streamproc_versions_retired_total{{{INSTANCE}}}[1h]))",
                           "retired {{instance}}"),
                    target(f"sum by (instance) (increase(streamproc_state_too_large_total{{{INSTANCE}}}[1h]))",
                           "not saved {{instance}}")],
                   unit="short",
                   description="Model versions retired (no events for retire_version_seconds while their model had "
                               "traffic), and model states not saved because their record was over the state "
                               "topic's 16 MiB (the worker's log names the model; alert StreamprocStateNotSaved)."),
        timeseries("Late events per second",
                   [target(f"sum by (model_id, model_version) (rate(streamproc_late_events_total{{{INSTANCE}}}[$__rate_interval]))",
                           "{{model_id}}/{{model_version}}")],
                   unit="ops",
                   description="Events later than the allowed lateness of event-time windows (added to the oldest "
                               "open window, not dropped). Always 0 for count windows."),
        timeseries("Outcome joins per second",
                   [target(f"sum by (result) (rate(streamproc_outcome_joins_total{{{INSTANCE}}}[$__rate_interval]))",
                           "{{result}}")],
                   unit="ops", stack=True,
                   description="matched: joined to a waiting prediction; unmatched: no such prediction; expired: "
                               "predictions dropped unanswered after the TTL or the pending cap."),
    ]
    return dashboard("streamproc-service", "streamproc / service health",
                     "The workers: throughput, dead letters, batches, readiness, checkpoints, warm-ups, late events and joins.",
                     panels, variables, time_from="now-3h")


def dashboards() -> dict[str, dict]:
    """File name (in ``dashboards/``) to dashboard model."""
    return {"streamproc-fleet.json": fleet(), "streamproc-model.json": model(), "streamproc-service.json": service()}


# -- files -------------------------------------------------------------------------------------
def render(board: dict) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path | str) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in dashboards().items():
        path = directory / name
        path.write_text(render(board))
        written.append(path)
    return written


def check(directory: Path | str) -> list[str]:
    """Names of the generated dashboards whose committed JSON in ``directory`` is missing or differs."""
    directory = Path(directory)
    stale = []
    for name, board in dashboards().items():
        path = directory / name
        if not path.exists() or path.read_text() != render(board):
            stale.append(name)
    return stale


# -- queries, for tests and tooling ------------------------------------------------------------
def queries(board: dict) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL expression) of every target of every panel.

    >>> sorted({title for title, _ in queries(fleet())})[:2]
    ['Alerts by model', 'Alerts by model, type and severity in range']
    """
    for p in board["panels"]:
        for t in p.get("targets", ()):
            yield p["title"], t.get("expr", "")


def variable_queries(board: dict) -> Iterator[tuple[str, str]]:
    """(variable name, ``label_values(...)`` query) of the dashboard's query variables."""
    for v in board.get("templating", {}).get("list", ()):
        if v.get("type") == "query":
            yield v["name"], v["query"]["query"]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamproc.dashboards", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR", help="write the dashboard JSON files into DIR")
    group.add_argument("--check", metavar="DIR", help="exit 1 if the JSON files in DIR differ from the generated ones")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.write):
            print(path)
        return 0
    stale = check(args.check)
    for name in stale:
        print(f"{Path(args.check) / name} is out of date: run python -m streamproc.dashboards --write {args.check}",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
