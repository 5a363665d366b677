"""``killswitch run`` child processes for the start-up tests: when the process's signal
handlers are in place (read from ``/proc/PID/status``), its audit records, and its latch."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from killswitch.engine.latch import LatchStore
from tests.e2e.helpers import DaemonProcess, child_env

from .harness import audit_lines_lenient

STARTUP_SIGNALS = (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def caught_signals(pid: int) -> set[int]:
    """The signals ``pid`` has a handler for (``SigCgt``), empty if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    mask = int(line.split()[1], 16)
                    return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    except OSError:
        pass
    return set()


async def wait_handlers_installed(proc: DaemonProcess) -> float:
    """Wait (1 ms steps) until the child catches every start-up signal; returns trio time then."""
    want = {int(s) for s in STARTUP_SIGNALS}
    while not want <= caught_signals(proc.pid):
        assert proc.proc.poll() is None, f"exited {proc.proc.returncode} before installing handlers"
        await trio.sleep(0.001)
    return trio.current_time()


class Run:
    """One ``killswitch run`` with its own state dir under ``root``."""

    def __init__(self, root: Path, name: str, yaml_text_for_state, env: dict[str, str]) -> None:
        self.dir = root / name
        self.dir.mkdir()
        self.config = self.dir / "killswitch.yaml"
        self.config.write_text(yaml_text_for_state(self.dir))
        self.env = child_env(self.dir, **env)
        self.proc = DaemonProcess(self.config, self.env, self.dir / "daemon.log")

    @property
    def audit_path(self) -> Path:
        return self.dir / "state" / "audit.jsonl"

    def audit(self) -> list[dict]:
        return audit_lines_lenient(self.audit_path)

    def events(self) -> list[str]:
        return [r["event"] for r in self.audit()]

    def latch_tripped(self) -> bool:
        return LatchStore(self.dir / "state").load().tripped

    def log(self) -> str:
        return self.proc.log_text()[-5000:]
