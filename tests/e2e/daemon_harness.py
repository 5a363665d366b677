"""Run the real Daemon in-process against simulated venues on 127.0.0.1."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import trio

from killswitch.audit import read_audit
from killswitch.clock import Clock
from killswitch.config import load_config_text
from killswitch.daemon import Daemon


def daemon_yaml(tmp_path: Path, venues_yaml: str, rules_yaml: str, *, extra_daemon: str = "") -> str:
    return f"""
daemon:
  state_dir: {tmp_path / 'state'}
  control_socket: {tmp_path / 'control.sock'}
  tick_interval: 50ms
  repoll_interval: 500ms
  cancel_deadline: 5s
  startup_timeout: 10s
  log_format: json
{extra_daemon}
venues:
{venues_yaml}
rules:
{rules_yaml}
"""


@asynccontextmanager
async def running_daemon(tmp_path: Path, text: str, environ: dict[str, str], *, clock: Clock | None = None):
    cfg_path = tmp_path / "killswitch.yaml"
    cfg_path.write_text(text)
    config = load_config_text(text, str(cfg_path))
    daemon = Daemon(config, environ=environ, handle_signals=False, **({"clock": clock} if clock else {}))
    async with trio.open_nursery() as nursery:
        exit_code: list[int] = []

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            exit_code.append(await daemon.run(task_status=task_status))

        await nursery.start(run)
        daemon.exit_code = exit_code
        try:
            yield daemon
        finally:
            daemon.request_stop()


async def wait_for(predicate, *, step_s: float = 0.01):
    while not predicate():
        await trio.sleep(step_s)


async def audit_of(daemon: Daemon) -> list[dict]:
    await daemon.audit.flush()
    return read_audit(daemon.config.daemon.audit_log)
