"""Helpers for the operations tests: short temp dirs, a notify-socket reader, an in-process
daemon on fake sessions, and a real ``killswitch run`` subprocess.

AF_UNIX paths are limited to 107 bytes, so sockets live under a short ``/tmp/ks-*`` directory
rather than pytest's long ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

from killswitch.config import load_config
from killswitch.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def short_tmpdir():
    path = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class NotifyReader:
    """The test's end of ``$NOTIFY_SOCKET``: a bound datagram socket, read with deadlines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock._sock.bind(os.fspath(path))
        self.messages: list[tuple[float, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()

    async def next(self) -> dict[str, str]:
        data = await self.sock.recv(65536)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((trio.current_time(), fields))
        return fields

    async def wait_for(self, key: str, value: str | None = None, *, contains: str | None = None) -> dict[str, str]:
        """Read until a datagram has ``key`` (and the value / substring); returns it."""
        while True:
            msg = await self.next()
            if key in msg and (value is None or msg[key] == value) and (contains is None or contains in msg[key]):
                return msg

    def seen(self, key: str) -> list[dict[str, str]]:
        return [m for _, m in self.messages if key in m]


def base_yaml(root: Path, venues_yaml: str, rules_yaml: str = "", *, daemon_extra: str = "") -> str:
    daemon = textwrap.dedent(f"""\
        daemon:
          state_dir: {root}/state
          control_socket: {root}/run/control.sock
          tick_interval: 50ms
          repoll_interval: 300ms
          cancel_deadline: 3s
          startup_timeout: 5s
          log_format: json
        """) + textwrap.indent(textwrap.dedent(daemon_extra), "  ")
    rules = rules_yaml or "rules:\n  - {name: max-open, kind: max_open_orders, max: 1000}\n"
    return daemon + textwrap.dedent(venues_yaml) + textwrap.dedent(rules)


FAKE_VENUE_YAML = """\
venues:
  - name: ox-a
    kind: oxfun
    api_key: {env: KS_TEST_OX_KEY}
    api_secret: {env: KS_TEST_OX_SECRET}
    markets: [BTC-USD-SWAP-LIN]
"""


@asynccontextmanager
async def inprocess_daemon(root: Path, sessions, services, *, yaml_text: str | None = None, environ=None):
    """A real Daemon (engine, executor, audit, services) on fake sessions; stops on exit."""
    cfg_path = root / "killswitch.yaml"
    cfg_path.write_text(yaml_text or base_yaml(root, FAKE_VENUE_YAML))
    config = load_config(cfg_path)
    daemon = Daemon(config, sessions={s.name: s for s in sessions}, handle_signals=False,
                    services=list(services), environ=environ if environ is not None else {})
    async with trio.open_nursery() as nursery:
        result: list[int] = []

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            result.append(await daemon.run(task_status=task_status))

        await nursery.start(run)
        try:
            yield daemon
        finally:
            daemon.request_stop()


# ---------------------------------------------------------------------------------- subprocess


class DaemonProcess:
    """``python -m killswitch run -c CONFIG`` with a test NOTIFY_SOCKET; always killed on exit."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self.config = config
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, *, preexec_fn=None) -> "DaemonProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "killswitch", "run", "-c", str(self.config)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=preexec_fn,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        with trio.fail_after(timeout_s):
            while self.proc.poll() is None:
                await trio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def child_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "KILLSWITCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env
