"""The process's signal handling, from its first instruction to its exit.

Python's default action for SIGUSR1 and SIGHUP is to end the process, and SIGTERM during a
blocking start-up phase would wait for that phase. So ``killswitch run`` installs one set of
handlers before anything else (before argparse, trio, the config), and keeps them for life:

- before the daemon's event loop takes over, a signal is only *recorded* here (a SIGUSR1
  count, a pending SIGHUP, the stop signal); the daemon latches the recorded trips as soon
  as it knows its state directory and reloads after READY. SIGTERM/SIGINT while nothing is
  connected yet (the synchronous phase: imports, config) end the process at once.
- once the daemon's trio loop runs, :meth:`StartupSignals.forward_to` hands each signal
  straight to the loop with ``run_sync_soon`` (one wake-up of the loop, no receiver task in
  between, no coalescing of repeated signals).

Only ``signal`` is imported here: this module is loaded before everything else.
"""

from __future__ import annotations

import signal

# Annotations only (``from __future__ import annotations``): importing typing costs ~4 ms here.
# Callable = collections.abc.Callable

HANDLED = (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopBeforeStart(BaseException):
    """SIGTERM/SIGINT in the synchronous start-up phase: nothing is connected, exit now.

    A BaseException so no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def describe(self) -> str:
        return (f"killswitch: {signal.Signals(self.signum).name} during start-up, before any venue was "
                "connected: exiting")


class StartupSignals:
    """Records signals until the daemon's loop takes them (see module docstring)."""

    def __init__(self) -> None:
        self.trips = 0  # SIGUSR1s not yet handed to the daemon
        self.hup = False
        self.stop_signal: int | None = None
        self.exit_on_stop = True  # only while no event loop runs (the synchronous phase)
        self.installed = False
        self._forward: Callable[[int], None] | None = None  # noqa: F821 (annotation only)
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self.installed = True

    def uninstall(self) -> None:
        """Put back what was there (an in-process daemon in a longer-lived program)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        self.installed = False

    def _on_signal(self, signum: int, frame: object) -> None:
        forward = self._forward
        if forward is not None:
            forward(signum)
            return
        if signum == signal.SIGUSR1:
            self.trips += 1
        elif signum == signal.SIGHUP:
            self.hup = True
        else:
            self.stop_signal = signum
            # A recorded trip must reach the latch first, so then the stop waits for that.
            if self.exit_on_stop and not self.trips:
                raise StopBeforeStart(signum)

    def take_trips(self) -> int:
        n, self.trips = self.trips, 0
        return n

    def forward_to(self, deliver: Callable[[int], None]) -> None:  # noqa: F821 (annotation only)
        """From now on each signal calls ``deliver(signum)`` (which must be signal-safe, e.g.
        a trio token's ``run_sync_soon``); what was recorded before is delivered now, in order
        of importance: trips, then the stop, then the reload."""
        self.exit_on_stop = False
        self._forward = deliver
        for _ in range(self.take_trips()):
            deliver(signal.SIGUSR1)
        if self.stop_signal is not None:
            deliver(self.stop_signal)
        if self.hup:
            self.hup = False
            deliver(signal.SIGHUP)

    def stop_forwarding(self) -> None:
        self._forward = None
