"""Where the trip latency goes (OX.FUN or Nado): per-stage breakdown, daemon in its own process.

Same rounds as trip_latency.py (two orders, rule ``max_open_orders: max 1``), but the daemon
child is bench/_trace_child.py (``killswitch run`` with trace points). For every trip the
stages are placed on the sim's clock (both processes read CLOCK_MONOTONIC) relative to the
sim writing the breaching frame, and the median of each stage is printed.

    .venv/bin/python bench/trace_trip.py [--venue oxfun|nado] [--trips 300] [--pace 0.025]

Nado (``--venue nado``, use ``--pace 0.2``: a round costs 2 wallet weight of 100 / 10 s):
daemon-side stages before the trip (socket read, websocket message, parse, engine) are the
*last* stamp before the engine's ``_trip`` of the round, later ones the *first* after it, so
the first (non-breaching) frame of a round is never mistaken for the breaching one. Sim-side
stages are stamped in this process: ``s_sim_write_done`` (the breaching frame's write
returned), ``y_sim_socket_read`` (the read that delivered the cancel), ``z_sim_read_cancel``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import orjson
import trio

from _harness import proc_rig
from _stats import reproduce_line
from trip_latency import RULES, Probe


async def run(trips: int, pace_s: float, out_path: str, rows: list) -> None:
    os.environ["KS_TRACE_OUT"] = out_path
    windows = []
    async with proc_rig("oxfun", RULES, module="_trace_child") as r:
        off = trio.current_time() - time.perf_counter()
        probe = Probe(r)
        for i in range(trips + 20):
            probe.start_round()
            await r.place(2, start_level=i)
            await r.wait(lambda: len(probe.open_writes) >= 2)
            tb = probe.open_writes[1]
            await r.wait(lambda: probe.first_cancel_after(tb) is not None)
            tc = probe.first_cancel_after(tb)
            if i >= 20:
                windows.append((probe.open_writes[0] - off, tb - off, tc - off))
            await r.rearm()
            await trio.sleep(pace_s)
    stamps = orjson.loads(open(out_path, "rb").read())
    j = 0
    if os.environ.get("KS_TRACE_TASKS"):
        # print the full step sequence of a few trips
        for t_first, tb, tc in windows[-3:]:
            print("---- trip")
            for label, t in stamps:
                if tb - 0.0003 <= t <= tc + 0.0002:
                    print(f"  {(t - tb) * 1e6:8.1f} us  {label}")
    for t_first, tb, tc in windows:
        row = {"z_sim_read_cancel": tc - tb}
        while j < len(stamps) and stamps[j][1] < t_first:
            j += 1
        k = j
        while k < len(stamps) and stamps[k][1] <= tc + 0.0005:
            label, t = stamps[k]
            row.setdefault(label, t - tb)  # first occurrence after the first push of the round
            k += 1
        rows.append(row)


async def run_nado(trips: int, pace_s: float, out_path: str, rows: list) -> None:
    os.environ["KS_TRACE_OUT"] = out_path
    os.environ["KS_TRACE_VENUE"] = "nado"
    windows = []
    async with proc_rig("nado", RULES, module="_trace_child") as r:
        off = trio.current_time() - time.perf_counter()
        probe = Probe(r)
        sim = r.nado
        for i in range(trips + 20):
            probe.start_round()
            mark = len(sim.stream_write_log)
            await r.place(2, start_level=i)
            await probe.wait_for(lambda: len(probe.open_writes) >= 2)
            tb = probe.open_writes[1]
            await probe.wait_for(lambda: probe.first_cancel_after(tb) is not None)
            tc = probe.first_cancel_after(tb)
            k = probe.cancel_reads.index(tc)
            # The probe's socket-boundary stamps: breach bytes to the kernel, cancel bytes back.
            t_sock = probe.cancel_reads_sock[k] if k < len(probe.cancel_reads_sock) else float("nan")
            t_sent = probe.open_writes_sock[1] if len(probe.open_writes_sock) > 1 else float("nan")
            done = [t for t, kind in list(sim.stream_write_log)[mark:] if kind == "order_update" and t >= tb]
            if i >= 20:
                windows.append((probe.open_writes[0] - off, tb - off, tc - off,
                                {"s0_sim_send_all": t_sent - tb,
                                 "s_sim_write_done": (done[0] - tb) if done else float("nan"),
                                 "y_sim_socket_read": t_sock - tb}))
            await r.rearm()
            await trio.sleep(pace_s)
    stamps = orjson.loads(open(out_path, "rb").read())
    if os.environ.get("KS_TRACE_DUMP"):
        with open(os.environ["KS_TRACE_DUMP"], "wb") as f:
            f.write(orjson.dumps({"stamps": stamps, "windows": windows}))
    j = 0
    for t_first, tb, tc, sim_side in windows:
        row = {"z_sim_read_cancel": tc - tb, **sim_side}
        while j < len(stamps) and stamps[j][1] < t_first:
            j += 1
        k = j
        t_trip = None
        while k < len(stamps) and stamps[k][1] <= tc + 0.0005:
            if stamps[k][0] == "e_engine_trip_in":
                t_trip = stamps[k][1]
                break
            k += 1
        if t_trip is None:
            continue
        for label, t in stamps[j:k]:
            if label[0] in "abcd" and not label.startswith("a0"):
                row[label] = t - tb  # last one before the trip
        while k < len(stamps) and stamps[k][1] <= tc + 0.0005:
            label, t = stamps[k]
            row.setdefault(label, t - tb)
            k += 1
        rows.append(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venue", choices=["oxfun", "nado"], default="oxfun")
    ap.add_argument("--trips", type=int, default=300)
    ap.add_argument("--pace", type=float, default=None, help="default: 0.025 (oxfun), 0.2 (nado)")
    args = ap.parse_args()
    pace = args.pace if args.pace is not None else (0.2 if args.venue == "nado" else 0.025)
    out = tempfile.mktemp(prefix="ks-trace-", suffix=".json")
    rows: list = []
    trio.run(run_nado if args.venue == "nado" else run, args.trips, pace, out, rows)
    labels = sorted({k for r in rows for k in r}, key=lambda k: statistics.median(r[k] for r in rows if k in r))
    print(f"{len(rows)} trips; stage times relative to the sim writing the breaching frame (median, p90):")
    for k in labels:
        v = sorted(r[k] for r in rows if k in r)
        print(f"  {k:26s} {statistics.median(v) * 1e6:8.1f} us  p90 {v[int(len(v) * 0.9)] * 1e6:8.1f} us  n={len(v)}")
    print(reproduce_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
