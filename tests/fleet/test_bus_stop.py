"""The bus thread stops promptly even when the NATS client swallows a cancellation.

nats-py catches ``asyncio.CancelledError`` in places of its connect/close path (``_close``,
``_flush_pending``): a stop that lands there is absorbed and the initial-connect loop goes on
retrying. Seen as a daemon that took 3.1 s (the thread-join bound) to exit on SIGTERM while no
NATS server was reachable. The client here reproduces exactly that: every connect attempt fails,
and the first cancellation it receives is swallowed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from killswitch.fleet import bus as bus_mod
from killswitch.fleet.bus import NatsBus
from killswitch.fleet.settings import BusSettings
from killswitch.fleet.subjects import Subjects

STOP_BOUND_S = 1.0


@pytest.mark.parametrize("swallow", [0, 1, 5])
def test_bus_stop_returns_promptly_even_if_the_client_swallows_the_cancel(monkeypatch, swallow):
    attempts = []
    swallowed = []

    async def connect(**_opts):
        attempts.append(time.monotonic())
        while True:  # an attempt in flight (as nats-py's _close would be when the stop lands)
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if len(swallowed) >= swallow:
                    raise
                swallowed.append(1)  # what nats-py's `except asyncio.CancelledError: pass` does,
                if len(swallowed) == swallow:  # then it fails the attempt, and the loop goes on
                    raise OSError("connection refused") from None

    monkeypatch.setattr(bus_mod.nats, "connect", connect)
    settings = BusSettings(servers=("nats://127.0.0.1:9",), client_name="t", reconnect_min_s=0.01, reconnect_max_s=0.02)
    bus = NatsBus(settings, Subjects("f"), subscribe=(), on_event=lambda ev: None)
    bus.start()
    deadline = time.monotonic() + 5
    while not attempts and time.monotonic() < deadline:
        time.sleep(0.005)
    assert attempts, "the fake client was never called"
    t0 = time.monotonic()
    bus.stop()
    took_s = time.monotonic() - t0
    assert not bus._thread.is_alive(), "the bus thread still runs after stop()"
    assert took_s <= STOP_BOUND_S, f"stop() took {took_s:.2f}s"
    assert len(swallowed) == swallow
    # The thread is gone, so this is final: the stop ended the first attempt, no retry followed
    # (before the fix, a swallowed cancel was followed by a second attempt).
    assert len(attempts) == 1, f"connect attempts went on after stop(): {len(attempts)}"
