"""sd_notify without libsystemd: READY / STATUS / WATCHDOG / RELOADING / STOPPING.

The protocol is one AF_UNIX datagram of ``KEY=VALUE`` lines sent to ``$NOTIFY_SOCKET``
(a path, or ``@name`` for an abstract socket). Nothing here can fail the daemon: a notify
that cannot be sent is logged and dropped, because the kill switch must keep cancelling
even when systemd's socket is gone.

The watchdog is the point of this module. ``WATCHDOG=1`` is sent only when the engine's
``loop_iterations`` advanced since the previous ping: the engine handles a Tick every
``tick_interval``, so a healthy engine always advances, and a wedged one (stuck rule, dead
consumer) stops the pings and systemd restarts us (coming back TRIPPED if it was).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Mapping

import structlog
import trio

log = structlog.get_logger("killswitch.systemd")

STATUS_REFRESH_S = 5.0  # re-send STATUS= at least this often, even unchanged
STATUS_POLL_S = 0.5  # how often the status line is recomputed to catch changes
STATUS_MAX_CHARS = 1000  # systemd truncates long status text anyway


# ---------------------------------------------------------------------------------- pure core


def notify_address(value: str | None) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` -> an address for ``sendto`` (abstract ``@x`` -> ``b"\\0x"``)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock / relative paths: not supported, treat as absent


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog period in seconds, or None when the watchdog is off or not for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wd_pid = environ.get("WATCHDOG_PID", "")
    if wd_pid and (not wd_pid.isdigit() or int(wd_pid) != pid):
        return None
    return int(usec) / 1_000_000


def ping_period_s(interval_s: float) -> float:
    """Ping at half the interval (sd_watchdog_enabled(3) advice)."""
    return interval_s / 2


@dataclass(slots=True)
class WatchdogGate:
    """Decides whether a ping is deserved: only if the engine made progress since the last one."""

    last_iterations: int = -1

    def should_ping(self, iterations: int) -> bool:
        if iterations > self.last_iterations:
            self.last_iterations = iterations
            return True
        return False


def format_message(**fields: object) -> bytes:
    """``READY=1`` etc. Newlines in values would start a new key: flatten them."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        if key == "STATUS":
            text = text[:STATUS_MAX_CHARS]
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs, as systemd wants with RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# ---------------------------------------------------------------------------------- I/O shell


class Notifier:
    """Sends notify datagrams. ``enabled`` is False when there is no ``$NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = notify_address(env.get("NOTIFY_SOCKET"))
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        if self.address is None:
            return False
        data = format_message(**fields)
        try:
            # One short-lived socket per message: no state to go stale across a journald or
            # systemd restart, and datagram sends on AF_UNIX do not block meaningfully.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.sendto(data, self.address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), keys=sorted(fields))
            return False
        self.sent += 1
        return True


async def notify_service(daemon, *, task_status=trio.TASK_STATUS_IGNORED,
                         environ: Mapping[str, str] | None = None) -> None:
    """Daemon service: READY after ``daemon.ready``, STATUS on change, progress-gated WATCHDOG."""
    env = daemon.environ if environ is None else environ
    notifier = Notifier(env)
    if not notifier.enabled:
        task_status.started()
        return
    interval_s = watchdog_interval_s(env, os.getpid())

    def on_lifecycle(event: str, **fields: object) -> None:
        if event == "reloading":
            notifier.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading configuration")
        elif event == "reloaded":
            # READY=1 ends the reload state in systemd whether or not the new config was valid:
            # on error we keep running the old one, and STATUS= says so.
            notifier.notify(READY=1, STATUS=daemon.status_line())
        elif event == "stopping":
            notifier.notify(STOPPING=1, STATUS="stopping: " + daemon.status_line())

    daemon.listeners.append(on_lifecycle)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ready_then_status, daemon, notifier)
            if interval_s is not None:
                nursery.start_soon(_watchdog, daemon, notifier, interval_s)
                log.info("watchdog_enabled", interval_s=interval_s, ping_every_s=ping_period_s(interval_s))
            task_status.started()
    finally:
        daemon.listeners.remove(on_lifecycle)


async def _ready_then_status(daemon, notifier: Notifier) -> None:
    notifier.notify(STATUS="starting: connecting venues")
    await daemon.ready.wait()
    last = daemon.status_line()
    notifier.notify(READY=1, STATUS=last, MAINPID=os.getpid())
    last_sent_s = trio.current_time()
    while True:
        await trio.sleep(STATUS_POLL_S)
        line = daemon.status_line()
        now = trio.current_time()
        if line != last or now - last_sent_s >= STATUS_REFRESH_S:
            notifier.notify(STATUS=line)
            last, last_sent_s = line, now


async def _watchdog(daemon, notifier: Notifier, interval_s: float) -> None:
    gate = WatchdogGate()
    period = ping_period_s(interval_s)
    stalled_logged = False
    while True:
        engine = daemon.engine
        if engine is not None and gate.should_ping(engine.loop_iterations):
            notifier.notify(WATCHDOG=1)
            stalled_logged = False
        elif not stalled_logged:
            # Logged once per stall: systemd will restart us if it lasts a full interval.
            log.error("watchdog_withheld", reason="engine made no progress since last ping",
                      loop_iterations=None if engine is None else engine.loop_iterations)
            stalled_logged = True
        await trio.sleep(period)
