"""Why the fleet's nats-py client runs on its own thread: the two bridges into trio, measured.

Modes:

* ``thread``: the daemon's :class:`killswitch.fleet.bus.NatsBus` (nats-py on a dedicated
  thread and asyncio loop; hand-off to trio with ``TrioToken.run_sync_soon``);
* ``trio-asyncio``: nats-py on an asyncio loop emulated *inside* the trio thread
  (``trio_asyncio.open_loop``), callbacks hand messages to trio directly.

Figures per mode (one real nats-server, the publisher on its own thread and connection):

1. bus -> trio delivery: a stamped message's publish -> the trio task that reads it;
2. trio scheduling lateness while the bus carries a flood of status-size messages (what the
   trip path would feel): a trio task sleeping 1 ms, lateness p50 / p99 / max;
3. trio -> bus publish: what the caller on the trio thread pays per message.

    .venv/bin/python bench/fleet_bridge.py   (needs: pip install trio-asyncio)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stats import reproduce_line, summarize  # noqa: E402

from killswitch.fleet.bus import NatsBus, Received  # noqa: E402
from killswitch.fleet.natsserver import NatsServer  # noqa: E402
from killswitch.fleet.settings import BusSettings  # noqa: E402
from killswitch.fleet.subjects import Subjects  # noqa: E402

PING = "bench.ping"
FLOOD = "bench.flood"
STATUS_BYTES = 300


class Publisher:
    """A separate client on its own thread: stamped pings and a flood at a given rate."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.flood_sent = 0

    def run(self, n_pings: int, gap_s: float, flood_hz: float, duration_s: float) -> None:
        asyncio.run(self._run(n_pings, gap_s, flood_hz, duration_s))

    async def _run(self, n_pings, gap_s, flood_hz, duration_s) -> None:
        import nats

        nc = await nats.connect(self.url)
        body = b"x" * STATUS_BYTES
        t_end = time.perf_counter() + duration_s
        next_ping = time.perf_counter()
        sent = 0
        step = 1.0 / flood_hz if flood_hz else None
        next_flood = time.perf_counter()
        while time.perf_counter() < t_end and (sent < n_pings or step):
            now = time.perf_counter()
            if sent < n_pings and now >= next_ping:
                await nc.publish(PING, struct.pack("d", time.perf_counter()))
                sent += 1
                next_ping = now + gap_s
            while step and now >= next_flood:  # catch up in bursts when the sleep overshoots
                await nc.publish(FLOOD, body)
                self.flood_sent += 1
                next_flood += step
            await asyncio.sleep(0.0002)
        await nc.flush()
        await nc.close()


async def lateness(stop: trio.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await trio.sleep(0.001)
        out.append(time.perf_counter() - t - 0.001)


async def measure(mode: str, url: str, args) -> dict:
    send, recv = trio.open_memory_channel(100_000)
    pings: list[float] = []
    floods = [0]
    publish_cost: list[float] = []

    async def reader() -> None:
        async for subject, data in recv:
            if subject == PING:
                pings.append(time.perf_counter() - struct.unpack("d", data)[0])
            else:
                floods[0] += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        if mode == "thread":
            token = trio.lowlevel.current_trio_token()

            def on_event(ev) -> None:
                if isinstance(ev, Received):
                    token.run_sync_soon(send.send_nowait, (ev.subject, ev.data))

            bus = NatsBus(
                BusSettings((url,), "bench-bridge"),
                Subjects("bridge"),
                subscribe=(PING, FLOOD),
                on_event=on_event,
                reconcile_interval_s=3600,
            )
            await trio.to_thread.run_sync(bus.start)
            while not bus.connected:
                await trio.sleep(0.01)
            body = b"y" * STATUS_BYTES
            for _ in range(500):
                t = time.perf_counter()
                bus.publish("bench.out", body)
                publish_cost.append(time.perf_counter() - t)
            closer = lambda: trio.to_thread.run_sync(bus.stop)  # noqa: E731
            result = await run_phases(nursery, url, args, pings, floods)
            await closer()
        else:
            import nats
            import trio_asyncio

            async with trio_asyncio.open_loop():
                nc = await trio_asyncio.aio_as_trio(nats.connect)(url)

                async def cb(msg) -> None:
                    send.send_nowait((msg.subject, msg.data))

                await trio_asyncio.aio_as_trio(nc.subscribe)(PING, cb=cb)
                await trio_asyncio.aio_as_trio(nc.subscribe)(FLOOD, cb=cb)
                await trio_asyncio.aio_as_trio(nc.flush)()
                body = b"y" * STATUS_BYTES
                pub = trio_asyncio.aio_as_trio(nc.publish)
                for _ in range(500):
                    t = time.perf_counter()
                    await pub("bench.out", body)
                    publish_cost.append(time.perf_counter() - t)
                result = await run_phases(nursery, url, args, pings, floods)
                await trio_asyncio.aio_as_trio(nc.close)()
        nursery.cancel_scope.cancel()
    result["publish"] = summarize(publish_cost)
    return result


async def run_phases(nursery, url, args, pings, floods) -> dict:
    pub = Publisher(url)
    # 1. delivery latency, quiet bus
    pings.clear()
    await trio.to_thread.run_sync(pub.run, args.pings, 0.002, 0, 60)
    with trio.move_on_after(2):
        while len(pings) < args.pings:
            await trio.sleep(0.01)
    delivery = summarize(pings)
    # 2. lateness under a flood (and delivery under it)
    late_quiet: list[float] = []
    stop = trio.Event()
    nursery.start_soon(lateness, stop, late_quiet)
    await trio.sleep(1.0)
    stop.set()
    late_flood: list[float] = []
    stop2 = trio.Event()
    pings.clear()
    floods[0] = 0
    nursery.start_soon(lateness, stop2, late_flood)
    await trio.to_thread.run_sync(pub.run, args.pings, 0.005, args.flood_hz, args.flood_s)
    stop2.set()
    return {
        "flood_sent": pub.flood_sent,
        "delivery": delivery,
        "delivery_flood": summarize(pings),
        "late_quiet": summarize(late_quiet),
        "late_flood": summarize(late_flood),
        "flood_msgs": floods[0],
    }


async def main(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="ks-bridge-"))
    srv = NatsServer(root / "nats").start()
    try:
        await trio.to_thread.run_sync(srv.wait_ready)
        modes = ["thread", "trio-asyncio"]
        try:
            import trio_asyncio  # noqa: F401
        except ImportError:
            print("trio-asyncio not installed: measuring the thread bridge only")
            modes = ["thread"]
        for mode in modes:
            r = await measure(mode, srv.url, args)
            us = 1e6
            print(f"[{mode}]")
            print(
                f"  bus -> trio delivery, quiet:         {r['delivery'].fmt(unit='us', scale=us, digits=0)}"
            )
            print(
                f"  bus -> trio delivery, {args.flood_hz:.0f} msg/s flood: "
                f"{r['delivery_flood'].fmt(unit='us', scale=us, digits=0)}"
            )
            print(
                f"  trio 1 ms sleep lateness, quiet:     {r['late_quiet'].fmt(unit='us', scale=us, digits=0)}"
            )
            print(
                "  trio 1 ms sleep lateness, flood:     "
                f"{r['late_flood'].fmt(unit='us', scale=us, digits=0)} "
                f"({r['flood_sent']} flood msgs sent, {r['flood_msgs']} received)"
            )
            print(f"  publish from trio, per call:         {r['publish'].fmt(unit='us', scale=us, digits=1)}")
        print(reproduce_line())
    finally:
        srv.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pings", type=int, default=500)
    ap.add_argument("--flood-hz", type=float, default=5000)
    ap.add_argument("--flood-s", type=float, default=3.0)

    trio.run(main, ap.parse_args())
