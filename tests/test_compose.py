"""docker-compose.yml, checked without Docker (it does not run on our machines): the file
parses, every mounted path and built file exists, and ports, topics, flags and the worker's
configuration agree between the services."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from streamproc.cli import build_parser
from streamproc.config import load_config

from .conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def resolved_env(service: str) -> dict[str, str]:
    """The environment with ${VAR:-default} references replaced by their defaults (unset)."""
    return {k: re.sub(r"\$\{[A-Z_]+(?::?[-?][^}]*)?\}", lambda m: m.group(0).split(":-")[1][:-1] if ":-" in m.group(0) else "", v)
            for k, v in env(service).items()}


def test_services_of_the_stack():
    assert {"kafka", "worker", "producer", "prometheus", "grafana"} <= set(SERVICES)
    kafka = env("kafka")
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert SERVICES["worker"]["deploy"]["replicas"] >= 2  # scale-out is part of the stack


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mounted_path_exists(name):
    for volume in SERVICES[name].get("volumes", []):
        host = volume.split(":")[0]
        if host.startswith("."):
            assert (ROOT / host).exists(), f"{name} mounts {host}, which does not exist"


def test_built_image_has_what_it_copies():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    assert SERVICES["worker"]["build"] == "." and SERVICES["producer"]["build"] == "."


def test_worker_configuration_is_valid_and_agrees_with_kafka_and_prometheus():
    worker_env = resolved_env("worker")
    mounts = dict(v.split(":")[1::-1][:2] for v in SERVICES["worker"]["volumes"])  # container path -> host path
    config = load_config(ROOT / mounts[worker_env["STREAMPROC_CONFIG"]], environ=worker_env)
    s = config.worker
    assert s.bootstrap == env("kafka")["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    assert s.metrics_host == "0.0.0.0"  # reachable by Prometheus from its container
    (job,) = PROMETHEUS["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == s.metrics_port
    assert str(s.metrics_port) in " ".join(SERVICES["worker"]["healthcheck"]["test"])


def test_producer_command_parses_and_feeds_the_workers_topic():
    args = build_parser().parse_args(SERVICES["producer"]["command"])
    config = load_config(None, environ=resolved_env("worker"))
    assert args.bootstrap == config.worker.bootstrap
    assert args.topic == config.worker.topics.predictions


def test_the_producer_drifts_one_model_within_minutes():
    # Every model drifted alike, from event 300,000: after 50 minutes at 100 events/s per model.
    args = build_parser().parse_args(SERVICES["producer"]["command"])
    assert len(args.drift_models) == 1 and set(args.drift_models) < set(args.models)
    per_model_rate = args.rate / len(args.models)
    assert args.drift_at / per_model_rate <= 5 * 60
    assert args.drift_at < args.events


def test_dependencies_wait_for_health():
    for name, service in SERVICES.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}, which has no healthcheck"
            assert cond == {"condition": "service_healthy"}, (name, dep)
    for name in ("kafka", "worker", "prometheus", "grafana"):
        assert "healthcheck" in SERVICES[name], name


def test_no_secret_is_written_in_the_file():
    for name in SERVICES:
        for key, value in env(name).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
                assert value.startswith("${") and value.endswith("}"), f"{name}.{key} holds a literal secret"


def test_published_ports_bind_to_loopback():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
