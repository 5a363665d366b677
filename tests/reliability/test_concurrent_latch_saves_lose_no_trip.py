"""#11.3: latch saves racing in worker threads never lose a trip nor leave a corrupt file.

The engine serialises a snapshot on the event loop for every trip and hands the write to a
worker thread, so saves of consecutive trips run concurrently. Thousands of them, with a
reader loading ``latch.json`` all the while: every load parses, and the file at the end
holds every trip.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import orjson

from killswitch.engine.latch import Latch, LatchStore
from killswitch.model import CancelScope

SAVES = 2000
WRITERS = 8


def test_thousands_of_concurrent_saves_keep_every_trip_and_never_corrupt_the_file(tmp_path):
    store = LatchStore(tmp_path)
    store.open_intent(Latch())
    latch = Latch()
    stop = threading.Event()
    bad_reads: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                raw = store.path.read_bytes()
            except FileNotFoundError:
                continue
            reads[0] += 1
            try:
                d = orjson.loads(raw)
                assert isinstance(d, dict) and isinstance(d["trips"], list)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                bad_reads.append(f"{type(exc).__name__}: {raw[:80]!r}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            futures = []
            for i in range(SAVES):
                latch.trip(rule=f"r{i}", kind="manual", reason="stress", observed="-", threshold="-",
                           scope=CancelScope(products=frozenset({f"P{i}"})), source="test", ts_wall_ms=i)
                snap = store.snapshot(latch)  # on the "event loop", in trip order
                futures.append(pool.submit(store.write_snapshot, snap))
            for f in futures:
                f.result()
    finally:
        stop.set()
        t.join()
    assert not bad_reads, bad_reads[:5]
    assert reads[0] > 0
    final = LatchStore(tmp_path).load()
    assert [tr.trip_id for tr in final.trips] == list(range(1, SAVES + 1))
    assert final.problems == []
    assert not list(tmp_path.glob("*.tmp")), "temp files left behind"


def test_a_late_save_of_an_armed_latch_never_overwrites_a_newer_trips_intent(tmp_path):
    """A reset's save retried in a worker thread after the next trip's intent went out."""
    store = LatchStore(tmp_path)
    latch = Latch()
    store.open_intent(latch)
    armed = store.snapshot(latch)  # the reset's save, still pending
    rec = latch.trip(rule="m", kind="manual", reason="r", observed="-", threshold="-", scope=CancelScope(),
                     source="test", ts_wall_ms=1)
    store.mark_tripped(rec.trip_id, 1)  # the next trip, on the event loop
    t = threading.Thread(target=store.write_snapshot, args=(armed,))
    t.start()
    t.join()
    loaded = LatchStore(tmp_path).load()  # a SIGKILL now
    assert loaded.tripped and [tr.trip_id for tr in loaded.trips] == [1]
