"""#11.2 / #11.4 / #11.5 end to end: the latch on disk always restarts the guard TRIPPED when it must.

- the intent file is full-size before READY (a trip's pwrite never allocates);
- a ``latch.json`` save that fails is retried until it succeeds, alarmed meanwhile;
- a trip recovered from the intent cancels everything (the sim's BTC *and* ETH orders),
  not the scope of the older ETH-only trip in ``latch.json``;
- a malformed intent file starts the daemon TRIPPED, cancelling everything, with an alarm
  that names the file.
"""

from __future__ import annotations

import errno
import os

import trio

from killswitch.engine.latch import INTENT_RECORD_BYTES, Latch, LatchStore
from killswitch.model import CancelScope

from .harness import OX_MARKETS, OX_VENUE, daemon_yaml, running_daemon, start_ox, trip, venue_flat, wait_for

N = 10


async def _world(nursery, tmp_path):
    w = await start_ox(nursery)
    await w.place(N, OX_MARKETS[0])  # BTC
    await w.place(N, OX_MARKETS[1], side="SELL", price="999999")  # ETH
    return w, daemon_yaml(tmp_path, w.venue_yaml())


async def test_intent_is_preallocated_before_ready_and_failed_latch_saves_are_retried_until_they_succeed(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w, text = await _world(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                intent = tmp_path / "state" / "latch.intent"
                assert intent.stat().st_size == INTENT_RECORD_BYTES and intent.stat().st_blocks > 0
                real = d.store._atomic_write
                failures = []

                def failing(data):
                    if len(failures) < 3:
                        failures.append(1)
                        raise OSError(errno.EIO, os.strerror(errno.EIO))
                    real(data)

                d.store._atomic_write = failing
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == 2 * N)
                await trip(d)
                await wait_for(lambda: "latch_persist" in d.engine.alarms)
                assert "Input/output error" in d.engine.alarms["latch_persist"]
                await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE))
                await wait_for(lambda: "latch_persist" not in d.engine.alarms)
                assert len(failures) == 3
                saved = LatchStore(tmp_path / "state").load()
                assert [t.rule for t in saved.trips] == ["manual"] and saved.problems == []
            nursery.cancel_scope.cancel()


async def test_a_trip_recovered_from_the_intent_cancels_everything_not_the_older_trips_scope(tmp_path):
    """Before: restored as ETH-only, the BTC orders stayed open."""
    state = tmp_path / "state"
    store = LatchStore(state)
    latch = Latch()
    latch.trip(rule="eth-only", kind="manual", reason="r", observed="-", threshold="-",
               scope=CancelScope(products=frozenset({OX_MARKETS[1]})), source="cli", ts_wall_ms=1)
    store.save(latch, durable=True)
    store.mark_tripped(2, 2)  # trip 2 (everything) went out; SIGKILL before its full save
    store.close()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w, text = await _world(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                assert d.engine.latch.tripped
                await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE))
            nursery.cancel_scope.cancel()


async def test_a_malformed_intent_file_starts_tripped_cancels_everything_and_alarms_naming_the_file(tmp_path):
    """Before: ``[]`` in latch.intent crashed start-up with AttributeError."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "latch.intent").write_bytes(b"[]")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w, text = await _world(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                assert d.engine.latch.tripped
                assert str(state / "latch.intent") in d.engine.alarms["latch_file"]
                assert "latch_file" in d.status_line()
                await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE))
            nursery.cancel_scope.cancel()
