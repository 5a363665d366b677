"""Throughput: OX.FUN order events per second from the sim, through a real websocket, into the
engine with 10 rules active; and the cost per event with 1k vs 100k open orders in the book.

A. wire (the target): the sim runs in this process (CPU 0), the daemon is a real child
   process (``python -m killswitch.cli run -c FILE``, CPU 1, bench/_daemon_proc.py). For each
   book size the sim rests ``book`` orders *before* the daemon starts, so the daemon's
   startup REST reconcile (``GET /v3/orders/working``) loads them; the daemon's status must
   show ``open_orders == book`` before anything is timed.
   The REST drift poll (O(book) per poll) is set to 1 h so it stays out of the timed window.
   The feed is ``OxfunSim.order_feed``: orders opened and then cancelled (500 price levels),
   as the order-channel pushes the venue sends: one order per push, and ``--batch`` orders
   per push (a push's ``data`` is a list, §5.3 of docs/venues/oxfun.md). It is pre-encoded into websocket
   frames by the connection's own wsproto encoder and written in ~64 KiB chunks of whole
   frames (``OxfunSim.encode_pushes`` / ``send_encoded``), so the sender costs little.
   The stream ends with one deliberately malformed frame: the daemon counts it in
   ``counters.bad_frames`` after every event before it has gone through the engine (one
   reader, one channel, in order), which is an exact end marker.
   Rate = events / (first chunk handed to the socket -> a status reply shows the marker).
   Status is polled every ``--poll-ms`` (20 ms) during a run: the end stamp is late by up
   to one poll interval (conservative), and each poll costs the daemon one control-socket
   request. Also printed: the daemon's CPU time per event (utime+stime from /proc, 10 ms
   ticks) and the bench process's CPU per event (sender + status polling + sim).
B. parse + engine: ``wire.parse_frame`` + ``session._dispatch`` + ``Engine.handle`` on the
   same frames, no sockets (in-process Daemon, bench/_harness.rig).
C. engine only: ``Engine.handle`` on pre-parsed events.

Each book size gets its own daemon process (A) / book preload (B, C): a flat cost per event
across the two sizes shows the book work is O(1) per event.

    KS_BENCH_STATE_PARENT=/dev/shm .venv/bin/python bench/throughput.py \
        [--events 40000] [--books 1000,100000] [--runs 3] [--batch 10] [--poll-ms 20] [--pyspy PREFIX]
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import subprocess
import sys
import time

import trio

from _daemon_proc import daemon_process
from _harness import DAEMON_YAML, OX_MARKET, rig
from _stats import reproduce_line, verdict
from killswitch.config import load_config_text
from killswitch.model import OpenOrdersSnapshot
from killswitch.venues.oxfun import wire
from killswitch.venues.oxfun.sim import OxfunSim

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
PRICE_LEVELS = 500  # the feed's orders cycle over 500 price levels (no single cached price)
VENUE = "ox-bench"
END_MARKER = '{"bench":"end of stream"}'  # not an OX.FUN frame: counted as a bad frame


def venue_yaml(sim: OxfunSim, poll_interval: str) -> str:
    # The REST drift poll re-reads every open order (O(book) per poll); at 100k orders one
    # poll is a ~35 MB reply. It is a periodic cost, not a per-event one, so it is kept out
    # of the timed window (interval > bench length) and its cost is reported separately
    # (the startup reconcile does the same work).
    return (f"  - name: {VENUE}\n    kind: oxfun\n"
            f"    api_key: {{env: BENCH_OX_KEY}}\n    api_secret: {{env: BENCH_OX_SECRET}}\n"
            f"    ws_url: {sim.ws_url}\n    rest_url: {sim.rest_url}\n    markets: [{OX_MARKET}]\n"
            f"    poll_interval: {poll_interval}\n    request_timeout: 30s\n")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------
# A. wire, daemon in a child process
# --------------------------------------------------------------------------------------


async def wire_one(dp, ox: OxfunSim, key: str, n_events: int, per_frame: int, poll_s: float, book: int) -> dict:
    texts = ox.order_feed(key, market=OX_MARKET, n_orders=n_events // 2, per_frame=per_frame, price_levels=PRICE_LEVELS)
    n_frames = len(texts)
    texts.append(END_MARKER)
    encoded = ox.encode_pushes(key, texts)
    assert len(encoded) == 1, f"expected one authenticated socket, got {len(encoded)}"
    st0 = await dp.status()
    ev0, bad0 = st0["counters"]["events"], st0["counters"]["bad_frames"]
    gc.collect()
    gc.disable()
    d_cpu0, b_cpu0 = cpu_s(dp.pid), time.process_time()
    t_sent = 0.0
    polls = 0
    t0 = time.perf_counter()
    try:
        async with trio.open_nursery() as nursery:
            async def sender() -> None:
                nonlocal t_sent
                await ox.send_encoded(encoded, len(texts))
                t_sent = time.perf_counter()

            nursery.start_soon(sender)
            with trio.fail_after(120):
                while True:
                    await trio.sleep(poll_s)
                    st = await dp.status()
                    polls += 1
                    if st["counters"]["bad_frames"] > bad0:
                        t1 = time.perf_counter()
                        break
    finally:
        gc.enable()
    d_cpu, b_cpu = cpu_s(dp.pid) - d_cpu0, time.process_time() - b_cpu0
    c = st["counters"]
    assert c["bad_frames"] == bad0 + 1, c
    assert c["events"] - ev0 >= n_events + 1, (c["events"], ev0, n_events)
    assert st["state"] == "armed", st["state"]
    assert st["venues"][VENUE]["open_orders"] == book, st["venues"][VENUE]["open_orders"]
    el = t1 - t0
    return {"eps": n_events / el, "fps": n_frames / el, "send_eps": n_events / (t_sent - t0),
            "daemon_cpu_us": d_cpu * 1e6 / n_events, "bench_cpu_us": b_cpu * 1e6 / n_events,
            "polls": polls, "extra_events": c["events"] - ev0 - n_events - 1}


async def wire_book(book: int, n_events: int, runs: int, batch: int, poll_s: float, warmup: int,
                    results: dict, pyspy: str = "") -> None:
    async with trio.open_nursery() as nursery:
        ox = OxfunSim()
        await nursery.start(ox.serve, "127.0.0.1")
        key, secret = ox.add_account()
        # Resting before the daemon starts: no socket is connected, so no pushes; the
        # daemon learns them from its startup reconcile (REST working orders).
        await ox.place_orders(key, market=OX_MARKET, side="BUY", price="30000", qty="0.01", count=book)
        text = (DAEMON_YAML.replace("{tick}", "100ms").replace("{venues}", venue_yaml(ox, "1h"))
                .replace("{rules}", RULES10))
        cfg = load_config_text(text.replace("{state}", "/nonexistent"), "bench.yaml")
        assert len(cfg.rules) == 10, len(cfg.rules)
        results[("load", book)] = os.getloadavg()[0]
        t_start = time.perf_counter()
        async with daemon_process(text, {"BENCH_OX_KEY": key, "BENCH_OX_SECRET": secret}, pin=True) as dp:
            results[("startup_s", book)] = time.perf_counter() - t_start
            st = await dp.status()
            n_rules = len(st.get("rules", ())) if isinstance(st.get("rules"), (list, dict)) else None
            results[("rules", book)] = n_rules
            results[("book_seen", book)] = st["venues"][VENUE]["open_orders"]
            results[("rss_mb", book)] = dp.rss_mb()
            assert st["venues"][VENUE]["open_orders"] == book, st["venues"][VENUE]
            for pf in (1, batch):
                await wire_one(dp, ox, key, warmup, pf, poll_s, book)  # warm-up
            spy = None
            if pyspy:
                # Figures taken under the profiler are not comparable; use it to see where.
                spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--rate", "1000",
                                        "--nonblocking", "--format", "raw", "--pid", str(dp.pid), "-o", f"{pyspy}-{book}.txt"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await trio.sleep(1.0)
            for _ in range(runs):
                for pf in (1, batch):  # interleaved, so drift hits both shapes alike
                    r = await wire_one(dp, ox, key, n_events, pf, poll_s, book)
                    for k, v in r.items():
                        results.setdefault((f"wire{pf}", k, book), []).append(v)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await trio.to_thread.run_sync(spy.wait)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------
# B, C. offline, in-process Daemon
# --------------------------------------------------------------------------------------


def offline_run(engine, session, live, frames: list[str], parse: bool) -> float:
    """Same frames, no sockets: parse+dispatch+handle (parse=True) or handle only."""
    events = []
    if not parse:
        for f in frames:
            for item in wire.parse_frame(f, VENUE, 0.0):
                ev = session._dispatch(live, item)
                if ev is not None:
                    events.append(ev)
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        if parse:
            mono = time.monotonic
            for f in frames:
                for item in wire.parse_frame(f, VENUE, mono()):
                    ev = session._dispatch(live, item)
                    if ev is not None:
                        engine.handle(ev)
        else:
            for ev in events:
                engine.handle(ev)
        return time.perf_counter() - t0
    finally:
        gc.enable()


async def offline(books: list[int], n_events: int, runs: int, batch: int, results: dict) -> None:
    async with rig("oxfun", RULES10) as r:
        engine = r.daemon.engine
        assert len(engine.rules) == 10, len(engine.rules)
        rt = r.daemon.venues[VENUE]
        session, live = rt.session, rt.session._live
        acct = r.ox.accounts[r.ox_key]
        for book in books:
            # Rest the orders in the sim without pushes and hand the engine the same
            # snapshot its poller would (sim and engine agree, so a poll keeps them).
            while len(acct.orders) < book:
                o = r.ox._new_order(OX_MARKET, "BUY", "LIMIT", wire.parse_decimal("30000"), wire.parse_decimal("0.01"),
                                    "GTC", None, None, 13)
                acct.orders[o.order_id] = o
            snap = wire.parse_working_orders({"data": r.ox.open_orders(r.ox_key)}, VENUE)
            engine.handle(OpenOrdersSnapshot(VENUE, snap, None, "poll", r.ox.clock.wall_ms(), time.monotonic()))
            assert engine.state.open_count(VENUE) == book, engine.state.open_count(VENUE)
            for k in range(runs + 1):
                for pf in (1, batch):
                    for part, parse in (("parse+engine", True), ("engine", False)):
                        frames = r.ox.order_feed(r.ox_key, market=OX_MARKET, n_orders=n_events // 2, per_frame=pf,
                                                 price_levels=PRICE_LEVELS)
                        el = offline_run(engine, session, live, frames, parse)
                        if k:  # k == 0 is the warm-up
                            results.setdefault((part, pf, book), []).append(n_events / el)
                        assert engine.state.open_count(VENUE) == book
                        await trio.sleep(0)
            assert not engine.latch.tripped, "a rule tripped during the throughput run"


# --------------------------------------------------------------------------------------


def med(v):
    return statistics.median(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40000, help="events per timed run (even)")
    ap.add_argument("--books", default="1000,100000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10, help="orders per push in the batched shape")
    ap.add_argument("--poll-ms", type=float, default=20.0, help="status poll interval during a wire run")
    ap.add_argument("--warmup", type=int, default=10000)
    ap.add_argument("--skip-offline", action="store_true")
    ap.add_argument("--skip-wire", action="store_true")
    ap.add_argument("--pyspy", default="", help="record the daemon child with py-spy into PREFIX-BOOK.txt (collapsed)")
    args = ap.parse_args()
    books = [int(b) for b in args.books.split(",")]
    results: dict = {}
    if not args.skip_wire:
        for book in books:
            trio.run(wire_book, book, args.events, args.runs, args.batch, args.poll_ms / 1000, args.warmup, results,
                     args.pyspy)
    if not args.skip_offline:
        trio.run(offline, books, args.events, args.runs, args.batch, results)

    ok = True
    print(f"10 rules; {args.events} events per run x {args.runs} runs (medians; per-run values after ':'); "
          f"daemon pinned to CPU 1, sim+sender+status poller to CPU 0; status polled every {args.poll_ms:g} ms")
    shapes = (1, args.batch)
    for book in books:
        if not args.skip_wire:
            print(f"-- book {results[('book_seen', book)]} open orders (daemon startup incl. reconcile "
                  f"{results[('startup_s', book)]:.2f} s, RSS {results[('rss_mb', book)]:.0f} MB; "
                  f"1-min load average before: {results[('load', book)]:.2f})")
            for pf in shapes:
                g = lambda k: results[(f"wire{pf}", k, book)]  # noqa: E731
                eps = med(g("eps"))
                good = eps >= TARGET_EPS
                ok &= good if pf == 1 else True
                print(f"   wire, {pf:2d} event(s)/push: {eps:9,.0f} events/s ({med(g('fps')):9,.0f} frames/s) "
                      f"= {1e6 / eps:5.2f} us/event wall; daemon CPU {med(g('daemon_cpu_us')):5.2f} us/event; "
                      f"sender handed all bytes to the kernel at {med(g('send_eps')):9,.0f} events/s; "
                      f"bench CPU {med(g('bench_cpu_us')):4.2f} us/event  runs: "
                      + ", ".join(f"{x:,.0f}" for x in g("eps"))
                      + f"  (target >= {TARGET_EPS:,}/s) -> {verdict(good)}")
        if not args.skip_offline:
            print(f"-- offline, book {book}")
            for pf in shapes:
                for part in ("parse+engine", "engine"):
                    v = results[(part, pf, book)]
                    print(f"   {part:12s} {pf:2d}/push: {med(v):10,.0f} events/s = {1e6 / med(v):5.2f} us/event  runs: "
                          + ", ".join(f"{x:,.0f}" for x in v))
    if len(books) >= 2:
        a, b = books[0], books[-1]
        print(f"-- cost per event, book {a} vs {b} (ratio = {b} / {a}; 1.00 = flat)")
        for pf in shapes:
            rows = []
            if not args.skip_wire:
                rows.append(("wire wall", 1e6 / med(results[(f"wire{pf}", "eps", a)]),
                             1e6 / med(results[(f"wire{pf}", "eps", b)])))
                rows.append(("daemon CPU", med(results[(f"wire{pf}", "daemon_cpu_us", a)]),
                             med(results[(f"wire{pf}", "daemon_cpu_us", b)])))
            if not args.skip_offline:
                for part in ("parse+engine", "engine"):
                    rows.append((part, 1e6 / med(results[(part, pf, a)]), 1e6 / med(results[(part, pf, b)])))
            for name, ua, ub in rows:
                print(f"   {pf:2d}/push {name:12s}: {ua:6.2f} us vs {ub:6.2f} us  ratio {ub / ua:.2f}")
    print(reproduce_line())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
