"""The state guard alarms when latch.json vanishes while TRIPPED, and only then: not in the
moment between a first trip (fresh state dir) and its first save, which the engine defers until
the first cancel is on the wire. Seen as a ``latch_persist`` alarm raised and cleared within
milliseconds on every first fleet trip."""

import trio

from killswitch.engine.latch import CancelScope, LatchStore
from killswitch.state_guard import ALARM_LATCH_REPLACED, StateGuard


class Engine:
    def __init__(self, latch) -> None:
        self.latch = latch
        self.alarms: dict[str, str] = {}
        self.raised: list[tuple[str, str]] = []

    def raise_alarm(self, key: str, message: str) -> None:
        self.alarms[key] = message
        self.raised.append((key, message))

    def clear_alarm(self, key: str) -> None:
        self.alarms.pop(key, None)


class Clock:
    def monotonic_s(self) -> float:
        return trio.current_time()


async def inline(fn):
    return fn()


def trip(latch) -> None:
    latch.trip(rule="r", kind="manual", reason="x", observed="-", threshold="-", scope=CancelScope(),
               source="test", ts_wall_ms=1)


def guard_for(tmp_path):
    store = LatchStore(tmp_path)
    store.open_intent()
    latch = store.load()
    engine = Engine(latch)
    return store, engine, StateGuard(store=store, audit=None, engine=engine, clock=Clock(), offload=inline)


async def test_no_alarm_between_a_first_trip_and_its_first_save(tmp_path):
    with trio.fail_after(5):
        store, engine, guard = guard_for(tmp_path)
        trip(engine.latch)  # the engine latched; its snapshot is deferred until the first cancel is out
        await guard.check()
        # The guard neither alarms nor races the engine's own save with one of its own (two saves
        # in flight left save_error standing on the older one: the alarm flickered).
        assert engine.raised == [], engine.raised
        assert not store.pending and store.save_error is None and not store.path.exists()
        store.write_snapshot(store.snapshot(engine.latch))
        await guard.check()
        assert engine.raised == [] and store.path.exists()


async def test_latch_json_deleted_while_tripped_is_alarmed_and_saved_again(tmp_path):
    with trio.fail_after(5):
        store, engine, guard = guard_for(tmp_path)
        trip(engine.latch)
        store.write_snapshot(store.snapshot(engine.latch))
        store.path.unlink()
        await guard.check()
        assert ALARM_LATCH_REPLACED in engine.alarms and "disappeared" in engine.alarms[ALARM_LATCH_REPLACED]
        await guard.check()  # the retry path writes it again
        for _ in range(20):
            if store.path.exists():
                break
            await trio.sleep(0.1)
            await guard.check()
        assert store.path.exists()


async def test_latch_json_deleted_after_a_restart_tripped_is_alarmed(tmp_path):
    with trio.fail_after(5):
        store, engine, _ = guard_for(tmp_path)
        trip(engine.latch)
        store.write_snapshot(store.snapshot(engine.latch))
        store2, engine2, guard2 = guard_for(tmp_path)  # a new process: loads TRIPPED from disk
        assert engine2.latch.tripped
        store2.path.unlink()
        await guard2.check()
        assert ALARM_LATCH_REPLACED in engine2.alarms
