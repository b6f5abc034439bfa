"""Helpers for the dashboard and alert-rule tests: the Prometheus binaries, template variables,
and the metric names the worker exports."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import pytest

from streamproc.metrics import Metrics

from .conftest import ROOT

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
DASHBOARDS = ROOT / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning"

# Grafana's built-in variables, and the concrete values the tests put in their place.
BUILTINS = {"__rate_interval": "5m", "__range": "1h", "__interval": "1m"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def variables_in(expr: str) -> set[str]:
    return {a or b for a, b in VARIABLE.findall(expr)}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name`` / ``${name}`` by ``values[name]`` (Grafana's built-ins by ``BUILTINS``)."""
    values = {**BUILTINS, **values}

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(repl, expr)


def exported_metric_names() -> set[str]:
    """Every sample name a worker's /metrics can show (counters with _total, histograms' series)."""
    names = set()
    for metric in Metrics().registry.collect():
        if metric.type == "counter":
            names.add(metric.name + "_total")
        elif metric.type == "histogram":
            names.update(metric.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(metric.name)
    return names


METRIC_NAME = re.compile(r"\bstreamproc_[a-zA-Z0-9_]+")


def metric_names_in(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


@functools.cache
def _install_prometheus() -> str:
    """Try ``apt-get install -y prometheus`` once per session; say what happened."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root, so apt-get install -y prometheus was not tried"
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    try:
        proc = subprocess.run(["apt-get", "install", "-y", "prometheus"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except subprocess.TimeoutExpired:
        return "apt-get install -y prometheus timed out"
    if proc.returncode != 0:
        return f"apt-get install -y prometheus failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
    return "apt-get install -y prometheus ran"


def _which(name: str):
    return shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)


def binary(name: str) -> str:
    """Path of ``promtool`` or ``prometheus``; installs Debian's package once if missing, else skips."""
    path = _which(name)
    if path:
        return path
    outcome = _install_prometheus()
    path = _which(name)
    if path:
        return path
    reason = f"{name} is not installed and could not be installed: {outcome}"
    print(reason)
    pytest.skip(reason)


def promtool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
