"""``streamproc broker`` and EmbeddedBroker.start() on a port another process already holds:
a clear error, never a broker taken to be up because the other process answered."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from streamproc import broker as broker_module
from streamproc.broker import BrokerError, EmbeddedBroker

from .conftest import ROOT, parse_error


@pytest.fixture
def taken_port():
    """A loopback port held by a listening socket of this test (another process, to the broker)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.integration
def test_broker_command_says_the_port_is_in_use(taken_port):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "streamproc", "broker", "--port", str(taken_port)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "listening" not in proc.stdout
    assert proc.stderr.strip().splitlines() == [f"streamproc: error: port {taken_port} is already in use on 127.0.0.1"]


def assert_start_refused(port: int) -> None:
    """``EmbeddedBroker.start`` on ``port`` fails, saying it is in use, and leaves no process."""
    broker = EmbeddedBroker(port=port)
    try:
        with pytest.raises(BrokerError, match=f"port {port} is already in use"):
            broker.start(timeout=30)
        assert broker.proc is None
    finally:
        broker.stop()


def test_start_refuses_a_port_in_use(taken_port):
    assert_start_refused(taken_port)


@pytest.mark.integration
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="telling which process listens needs Linux's /proc")
def test_start_is_not_fooled_by_another_listener_taking_the_port_after_the_check(taken_port, monkeypatch):
    # The port is free when checked, then taken before the broker binds it: the broker fails to
    # bind and exits, while the readiness probe's connection is accepted by the other listener.
    monkeypatch.setattr(broker_module, "port_in_use", lambda host, port: False, raising=False)
    assert_start_refused(taken_port)


@pytest.mark.parametrize("value", ["-1", "65536", "x"])
def test_a_port_out_of_range_is_refused_when_parsing(value, capsys):
    assert parse_error(["broker", "--port", value], capsys) == f"streamproc broker: error: argument --port: must be a port number from 0 to 65535, not '{value}'"


def test_a_listener_the_tables_do_not_list_is_not_taken_for_another_process(monkeypatch):
    """Where /proc/net/tcp lists no listener on the port (WSL1, some sandboxes) though the probe
    connected, whose it is cannot be told: the broker's own listener must not be refused."""
    import io
    import os

    import streamproc.broker

    monkeypatch.setattr(streamproc.broker, "open", lambda path, *a, **k: io.StringIO("  sl  local_address rem_address\n"),
                        raising=False)
    assert streamproc.broker._owns_listener(os.getpid(), 9) is None


def test_a_free_port_is_outside_the_range_of_outgoing_connections_local_ports():
    # A worker's metrics port picked by the kernel (bind to 0) came from that range, and a
    # Kafka client's connection took it before the worker bound it (CI: "Address already in use").
    from streamproc.broker import _ephemeral_ports, free_port

    low, high = _ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert not [p for p in ports if low <= p <= high]
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
