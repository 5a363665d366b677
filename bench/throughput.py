"""Throughput: order events per second into the engine with 10 rules active, and the cost per
event with 1k vs 100k open orders in the engine's book.

Three measurements, so the bottleneck is named rather than guessed:

A. wire (end to end): the OX.FUN sim writes pre-encoded ``OrderOpened`` / ``OrderClosed``
   frames (one event per frame, as the venue sends them) on the daemon's real loopback
   websocket; the daemon's session reads, parses and forwards them through the bounded
   channel to the engine. Rate = N / (first frame written -> ``engine.counters.events``
   advanced by N). Sim and daemon share one process and one thread: the sim's websocket
   *send* cost is inside the figure (conservative).
B. parse + engine: ``wire.parse_frame`` + ``session._dispatch`` + ``Engine.handle`` on the
   same frames, no sockets (what the daemon's own CPU costs per event).
C. engine only: ``Engine.handle`` on pre-parsed events.

Each phase runs with the engine's book pre-loaded with ``--book`` open orders (1k and 100k):
a flat per-event cost across the two shows the book counters are O(1) per event.

    .venv/bin/python bench/throughput.py [--events 40000] [--books 1000,100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import orjson
import trio

from _harness import OX_MARKET, rig
from _stats import reproduce_line, verdict
from killswitch.venues.oxfun import wire
from killswitch.venues.oxfun.simbook import order_payload

RULES10 = """
  - name: t-open-orders
    kind: max_open_orders
    max: 10000000
  - name: t-order-rate
    kind: order_rate
    max: 10000000
    window: 1s
  - name: t-reject-burst
    kind: reject_burst
    max: 1000
    window: 1s
  - name: t-drawdown-1
    kind: drawdown
    max_drawdown: 50%
  - name: t-drawdown-2
    kind: drawdown
    max_drawdown: 60%
  - name: t-venue-feed
    kind: stale_heartbeat
    source: {venue: ox-bench}
    timeout: 60s
  - name: t-strategy
    kind: stale_heartbeat
    source: {strategy: bench}
    timeout: 1h
    grace: 1h
  - name: t-max-pos-1
    kind: max_position
    max_qty: 1000000
  - name: t-max-pos-2
    kind: max_position
    products: [BTC-USD-SWAP-LIN]
    max_qty: 2000000
  - name: operator
    kind: manual
"""
TARGET_EPS = 20_000


def make_frames(ox, acct, n_pairs: int, start: int) -> list[str]:
    """n_pairs x (OrderOpened, OrderClosed) frames; the book size is unchanged after each pair."""
    out = []
    ts = ox.clock.wall_ms()
    for i in range(n_pairs):
        o = ox._new_order(OX_MARKET, "BUY", "LIMIT", wire_dec(30000 + i % 5000), wire_dec("0.01"), "GTC",
                          None, None, 0)
        o.order_id = str(900_000_000 + start + i)
        out.append(orjson.dumps({"table": "order", "data": [order_payload(acct, o, "OrderOpened", "OPEN", ts)]}).decode())
        out.append(orjson.dumps({"table": "order", "data": [
            order_payload(acct, o, "OrderClosed", "CANCELED_BY_USER", ts)]}).decode())
    return out


def wire_dec(v):
    from decimal import Decimal
    return Decimal(str(v))


async def preload(r, book: int) -> None:
    """Rest ``book`` orders in the sim (no pushes) and push them as batched frames so the
    engine's book holds them; the sim's book agrees, so a reconcile keeps them."""
    ox, key = r.ox, r.ox_key
    acct = ox.accounts[key]
    conn = next(c for c in ox._conns.values() if c.account is acct)
    ts = ox.clock.wall_ms()
    batch = []
    engine = r.daemon.engine
    venue = "ox-bench"
    have = len(engine.state.book(venue).orders)
    for i in range(have, book):
        o = ox._new_order(OX_MARKET, "BUY", "LIMIT", wire_dec(20000 + i % 5000), wire_dec("0.01"), "GTC", None, None, 0)
        acct.orders[o.order_id] = o
        batch.append(order_payload(acct, o, "OrderOpened", "OPEN", ts))
        if len(batch) == 8:
            await conn.ws.send_message(orjson.dumps({"table": "order", "data": batch}).decode())
            batch = []
    if batch:
        await conn.ws.send_message(orjson.dumps({"table": "order", "data": batch}).decode())
    await r.wait(lambda: len(engine.state.book(venue).orders) >= book, timeout_s=120)


async def wire_run(r, frames: list[str]) -> float:
    ox = r.ox
    acct = ox.accounts[r.ox_key]
    conn = next(c for c in ox._conns.values() if c.account is acct)
    engine = r.daemon.engine
    target = engine.counters.events + len(frames)
    gc.collect()
    t0 = time.perf_counter()
    for f in frames:
        await conn.ws.send_message(f)
    t_sent = time.perf_counter()
    while engine.counters.events < target:
        await trio.sleep(0)
    t1 = time.perf_counter()
    return t1 - t0, t_sent - t0


def offline_run(r, sess, frames: list[str], parse: bool) -> float:
    """Same frames, no sockets: parse+dispatch+handle (parse=True) or handle only."""
    engine = r.daemon.engine
    session, live = sess
    events = []
    if not parse:
        for f in frames:
            for item in wire.parse_frame(f, "ox-bench", 0.0):
                ev = session._dispatch(live, item)
                if ev is not None:
                    events.append(ev)
    gc.collect()
    t0 = time.perf_counter()
    if parse:
        for f in frames:
            for item in wire.parse_frame(f, "ox-bench", time.monotonic()):
                ev = session._dispatch(live, item)
                if ev is not None:
                    engine.handle(ev)
    else:
        for ev in events:
            engine.handle(ev)
    return time.perf_counter() - t0


def find_session(daemon):
    """The daemon's OX.FUN session object and its live connection (read-only lookup)."""
    rt = daemon.venues["ox-bench"]
    return rt.session, rt.session._live


async def measure(n_events: int, books: list[int], runs: int, results: dict) -> None:
    async with rig("oxfun", RULES10) as r:
        assert len(r.daemon.engine.rules) == 10, len(r.daemon.engine.rules)
        sess = find_session(r.daemon)
        acct = r.ox.accounts[r.ox_key]
        start = 0
        # warm-up
        await wire_run(r, make_frames(r.ox, acct, 2000, start))
        start += 2000
        for book in books:
            await preload(r, book)
            for k in range(runs):
                frames = make_frames(r.ox, acct, n_events // 2, start)
                start += n_events // 2
                el, sent = await wire_run(r, frames)
                results.setdefault(("wire", book), []).append(n_events / el)
                results.setdefault(("wire_send_only", book), []).append(n_events / sent)
                frames = make_frames(r.ox, acct, n_events // 2, start)
                start += n_events // 2
                results.setdefault(("parse+engine", book), []).append(n_events / offline_run(r, sess, frames, True))
                frames = make_frames(r.ox, acct, n_events // 2, start)
                start += n_events // 2
                results.setdefault(("engine", book), []).append(n_events / offline_run(r, sess, frames, False))
                assert not r.daemon.engine.latch.tripped, "a rule tripped during the throughput run"
            results[("book_seen", book)] = [len(r.daemon.engine.state.book("ox-bench").orders)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40000)
    ap.add_argument("--books", default="1000,100000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    books = [int(b) for b in args.books.split(",")]
    results: dict = {}
    trio.run(measure, args.events, books, args.runs, results)
    ok = True
    for book in books:
        print(f"-- engine book: {results[('book_seen', book)][0]} open orders; 10 rules; {args.events} events x {args.runs} runs")
        for part in ("wire", "wire_send_only", "parse+engine", "engine"):
            v = results[(part, book)]
            med = statistics.median(v)
            us = 1e6 / med
            extra = ""
            if part == "wire":
                good = med >= TARGET_EPS
                ok &= good
                extra = f"  (target >= {TARGET_EPS}/s) -> {verdict(good)}"
            print(f"   {part:15s} median {med:10,.0f} events/s = {us:6.2f} us/event  runs: "
                  + ", ".join(f"{x:,.0f}" for x in v) + extra)
    if len(books) >= 2:
        a, b = books[0], books[-1]
        for part in ("wire", "parse+engine", "engine"):
            ra = statistics.median(results[(part, a)])
            rb = statistics.median(results[(part, b)])
            print(f"   cost per event {part}: book {a}: {1e6 / ra:.2f} us, book {b}: {1e6 / rb:.2f} us "
                  f"(ratio {ra / rb:.2f})")
    print(reproduce_line())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
