"""Scale: many accounts across both venues, one daemon process.

``--ox`` OX.FUN API keys + ``--nado`` Nado subaccounts, each account with ``--orders``
resting orders (Nado caps 500 per product, so its orders are spread over perps 2 and 4).
The two simulated exchanges run in this (the benchmark) process; the daemon runs as
``killswitch run -c FILE`` in a child process holding one venue entry per account
(bench/_daemon_proc.py; daemon pinned to CPU 1, benchmark + sims to CPU 0). Measures:

* memory of the daemon process: VmRSS once every venue is connected and reconciled (the
  engine's book holds every order), VmRSS after the trip, and the peak VmHWM;
* a global trip through the control socket (``{"op": "trip"}``, stamped just before the
  request is written). Every stamp below is taken *in this process by the sims* when they
  read a cancel request: OX.FUN WS ``cancelorders`` frames (per account), REST
  ``DELETE /v3/orders/cancel-all`` and ``/v3/orders/cancel`` (per API key, stamped when the
  request reaches the route, before the sim's rate-limit/auth guard); Nado gateway and
  trigger-service ``execute cancel_*`` (per sender). Figures: trip -> last account's first
  cancel read (all accounts have a cancel on the wire), trip -> the last cancel request read
  before the sims were flat, trip -> both sims' books hold zero open orders, trip -> the
  daemon reports every venue ``cancel_state == "flat"`` (control-socket status, polled every
  50 ms once the sims are flat, so the poll does not compete with the cancels);
* rate-limit rejections counted by the sims from the trip to the end of the run: OX.FUN WS
  20007 replies, REST HTTP 429 (any route, per-IP 100/s), Nado error 1000 (wallet weight).

    KS_BENCH_STATE_PARENT=/dev/shm .venv/bin/python bench/scale.py [--ox 50] [--nado 50] [--orders 1000] [--runs 1]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import signal
import statistics
import time
from collections import Counter

import orjson
import trio

from _daemon_proc import daemon_process, rss_mb
from _harness import DAEMON_YAML, OX_MARKET, nado_venue_yaml, ox_venue_yaml
from _stats import reproduce_line, verdict
from killswitch.venues.oxfun.sim import OxfunSim
from killswitch.venues.vertex.sim import VertexSim

RULES = """
  - name: operator
    kind: manual
"""
RSS_TARGET_MB = 300.0
WIRE_TARGET_S = 0.5
FLAT_TARGET_S = 2.0
OX_CANCEL_ROUTES = ("/v3/orders/cancel-all", "/v3/orders/cancel")


class BenchNadoSim(VertexSim):
    """The Nado sim, with its push fan-out made cheap for a 100-subaccount run.

    ``VertexSim`` publishes a cancel's pushes synchronously inside the execute: for every
    push it scans every subscription socket (50 subaccounts x 1000 orders = 50,000 set
    lookups, ~10 ms) and queues the frame, before it reads anything else. On one core the
    sim then read the 50 cancels ~10 ms apart: the sim, not the daemon, set the figure.
    Here (1) the subscribers of a (stream, subaccount, product) are matched once per
    execute, and (2) the queuing runs in one publisher task right after the execute, in
    execute order. Same frames, same sockets, same order per socket, same drop-when-full
    rule; the response may now be written before the pushes are queued (they were never
    ordered on the wire: different sockets).
    """

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED):
        self._pub_send, pub_recv = trio.open_memory_channel(math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publisher, pub_recv)
            await nursery.start(super().serve, host, port)
            task_status.started(self)

    def _publish(self, pushes) -> None:
        if pushes:
            self._pub_send.send_nowait(pushes)

    async def _publisher(self, recv) -> None:
        async for pushes in recv:
            self._publish_now(pushes)
            await trio.lowlevel.checkpoint()

    def _publish_now(self, pushes) -> None:
        conns = list(self._sub_conns)
        targets: dict = {}
        for p in pushes:
            key = (p.stream, p.subaccount, p.product_id)
            to = targets.get(key)
            if to is None:
                wide = (p.stream, p.subaccount, None)
                to = targets[key] = [c for c in conns if key in c.streams or wide in c.streams]
            if not to:
                continue
            frame = orjson.dumps(p.event)
            for conn in to:
                try:
                    conn.send.send_nowait((frame, p.stream))
                except trio.WouldBlock:
                    conn.ep.closed = True
                except trio.BrokenResourceError:
                    pass


class SimProbe:
    """Cancel requests as the sims read them, and rate-limit rejections, per account."""

    def __init__(self, ox: OxfunSim, nado: VertexSim, ox_names: dict[str, str], nado_names: dict[str, str]) -> None:
        self.ox, self.nado = ox, nado
        self.ox_names, self.nado_names = ox_names, nado_names  # api key / sender -> venue name
        self.reads: list[tuple[float, str, str]] = []  # (trio time, venue name, kind)
        self.rejections: Counter = Counter()
        self.armed = False
        for (method, path), handler in list(ox.http.routes.items()):
            ox.http.routes[(method, path)] = self._wrap_ox_route(method, path, handler)
        orig_reply = ox._reply

        async def reply(conn, obj, *, is_ack=False, _orig=orig_reply):
            if self.armed and obj.get("code") == "20007":
                self.rejections["ox_ws_20007"] += 1
            return await _orig(conn, obj, is_ack=is_ack)

        ox._reply = reply
        orig_execute = nado._execute

        async def execute(body, *, trigger, _orig=orig_execute):
            name = next(iter(body), "") if isinstance(body, dict) and body else ""
            if self.armed and name.startswith("cancel"):
                sender = ""
                try:
                    sender = "0x" + bytes.fromhex(body[name]["tx"]["sender"][2:]).hex()
                except (KeyError, TypeError, ValueError):
                    pass
                self.reads.append((trio.current_time(), self.nado_names.get(sender, sender),
                                   f"nado {'trigger ' if trigger else ''}{name}"))
            resp = await _orig(body, trigger=trigger)
            if self.armed and isinstance(resp, dict) and resp.get("error_code") == 1000:
                self.rejections["nado_1000"] += 1
            return resp

        nado._execute = execute

    def _wrap_ox_route(self, method: str, path: str, handler):
        async def wrapped(req):
            if self.armed and method == "DELETE" and path in OX_CANCEL_ROUTES:
                key = req.headers.get("accesskey", "")
                self.reads.append((trio.current_time(), self.ox_names.get(key, key), f"ox rest {path}"))
            resp = await handler(req)
            if self.armed and resp.status == 429:
                self.rejections["ox_rest_429"] += 1
            return resp

        return wrapped

    def arm(self) -> None:
        self.reads.clear()
        self.rejections.clear()
        self._ws_marks = {k: len(self.ox.accounts[k].counters.cancel_frames) for k in self.ox_names}
        self.armed = True

    def all_reads(self) -> list[tuple[float, str, str]]:
        """REST/execute reads plus the WS cancel frames the OX.FUN sim logged per account."""
        out = list(self.reads)
        for key, name in self.ox_names.items():
            for t, _tag, _n in self.ox.accounts[key].counters.cancel_frames[self._ws_marks[key]:]:
                out.append((t, name, "ox ws cancelorders"))
        return sorted(out)


def cpu_s(pid: int | str = "self") -> float:
    """utime + stime of a process, seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GcPauses:
    """Garbage-collector pauses in this process (gc.callbacks), for the trip window."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []  # (start, generation, seconds)
        self._t = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses.append((self._t, info["generation"], time.perf_counter() - self._t))

    def summary(self, since: float) -> dict:
        ps = [(g, d) for t, g, d in self.pauses if t >= since]
        return {"n": len(ps), "gen2": sum(1 for g, _ in ps if g == 2),
                "total_ms": round(1000 * sum(d for _, d in ps), 1),
                "max_ms": round(1000 * max((d for _, d in ps), default=0.0), 1)}


def _start_pyspy(daemon_pid: int) -> list:
    """KS_BENCH_PYSPY=DIR: sample the daemon (and this process) during the trip (diagnosis only)."""
    out_dir = os.environ.get("KS_BENCH_PYSPY")
    if not out_dir:
        return []
    import subprocess
    import sys

    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    procs = []
    which = os.environ.get("KS_BENCH_PYSPY_WHICH", "daemon,bench").split(",")
    for label, pid in (("daemon", daemon_pid), ("bench", os.getpid())):
        if label not in which:
            continue
        procs.append(subprocess.Popen([spy, "record", "--rate", "1000", "--pid", str(pid), "--duration", os.environ.get("KS_BENCH_PYSPY_S", "4"),
                                       "--format", "raw", "--nonblocking", "-o", os.path.join(out_dir, f"{label}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.3)  # let py-spy attach before the trip
    return procs


async def one_run(n_ox: int, n_nado: int, n_orders: int, tracemalloc_out: str = "") -> dict:
    out: dict = {}
    async with trio.open_nursery() as nursery:
        ox = OxfunSim()
        await nursery.start(ox.serve, "127.0.0.1")
        nado = BenchNadoSim(flavour="nado")
        await nursery.start(nado.serve, "127.0.0.1")
        env: dict[str, str] = {}
        venues = []
        ox_names: dict[str, str] = {}
        nado_names: dict[str, str] = {}
        t = time.perf_counter()
        for i in range(n_ox):
            key, secret = ox.add_account()
            env[f"OX{i}_KEY"], env[f"OX{i}_SECRET"] = key, secret
            venues.append(ox_venue_yaml(f"ox-{i}", ox, f"OX{i}"))
            ox_names[key] = f"ox-{i}"
            for j in range(n_orders):  # no daemon connected yet: no pushes
                await ox.place_orders(key, market=OX_MARKET, side="BUY", price=str(20000 + j % 5000), qty="0.01")
        per_product = (n_orders + 1) // 2
        for i in range(n_nado):
            sub = nado.create_subaccount()
            nado.set_balances(sub["sender"], spot={0: "100000000"})
            env[f"NADO{i}_KEY"] = sub["private_key"]
            venues.append(nado_venue_yaml(f"nado-{i}", nado, f"NADO{i}", products="[2, 4]"))
            nado_names[sub["sender"].lower()] = f"nado-{i}"
            for k, pid in enumerate((2, 4)):
                cnt = min(per_product, n_orders - k * per_product)
                if cnt > 0:
                    nado.place_orders(sub["sender"], product_id=pid, price="10", qty="0.1", count=cnt, price_step="0.01")
        out["setup_s"] = round(time.perf_counter() - t, 2)
        senders = list(nado_names)

        def sim_open() -> int:
            n = sum(len(ox.accounts[k].orders) for k in ox_names)
            for s in senders:
                sub = nado.core.subaccount(s)
                n += len(sub.orders) + len(sub.trigger_orders)
            return n

        total = sim_open()
        out["orders_total"] = total
        probe = SimProbe(ox, nado, ox_names, nado_names)
        # The sims' books (100k orders) are long-lived: out of the collector's way, so the
        # sims do not stall for 100-280 ms gen-2 collections while they read the cancels.
        gc.collect()
        gc.freeze()
        out["bench_rss_mb"] = round(rss_mb(), 1)

        text = DAEMON_YAML.replace("{tick}", "100ms").replace("{venues}", "".join(venues)).replace("{rules}", RULES)

        def ready(st: dict) -> bool:
            vs = st["venues"].values()
            return bool(st.get("ready")) and all(v["connected"] for v in vs) \
                and sum(v["open_orders"] for v in vs) >= total

        gc_out = os.path.join(os.environ.get("KS_BENCH_STATE_PARENT") or "/tmp", f"ks-scale-gc-{os.getpid()}.json")
        os.environ["KS_GC_OUT"] = gc_out
        t = time.perf_counter()
        module = "_mem_child" if tracemalloc_out else "_gc_child"
        if tracemalloc_out:
            os.environ["KS_TRACEMALLOC_OUT"] = tracemalloc_out
        async with daemon_process(text, env, pin=True, ready=ready, module=module) as dp:
            out["startup_s"] = round(time.perf_counter() - t, 2)
            out["daemon_pid"] = dp.pid
            await trio.sleep(1.0)
            if tracemalloc_out:
                st = await dp.status()
                out["engine_open"] = sum(v["open_orders"] for v in st["venues"].values())
                out["rss_traced_mb"] = round(dp.rss_mb(), 1)
                os.kill(dp.pid, signal.SIGUSR2)
                with trio.fail_after(120):
                    while not os.path.exists(tracemalloc_out) or os.path.getsize(tracemalloc_out) == 0:
                        await trio.sleep(0.5)
                    await trio.sleep(2)
            else:
                st = await dp.status()
                out["engine_open"] = sum(v["open_orders"] for v in st["venues"].values())
                out["rss_ready_mb"] = round(dp.rss_mb(), 1)
                out["hwm_ready_mb"] = round(dp.rss_mb("VmHWM"), 1)

                out["loadavg_1m_before_trip"] = round(os.getloadavg()[0], 2)  # others' processes share the 2 cores
                spies = _start_pyspy(dp.pid)
                probe.arm()
                gcp = GcPauses()
                gc.disable()  # the sims' own collector pauses are not the daemon's latency (re-enabled below)
                cpu0 = (cpu_s(dp.pid), cpu_s())
                t0_perf = time.perf_counter()
                t0 = trio.current_time()
                reply = await dp.trip("scale bench")
                out["trip_reply_s"] = round(trio.current_time() - t0, 4)
                assert reply.get("ok"), reply
                t_sim_flat = t_daemon_flat = None
                progress: list[tuple[float, int, int]] = []  # (t, OX pushes written, Nado stream frames written)

                async def sample_pushes() -> None:
                    while True:
                        progress.append((round(trio.current_time() - t0, 3), ox.counters["pushes_sent"],
                                         len(nado.stream_write_log)))
                        await trio.sleep(0.25)

                nursery.start_soon(sample_pushes)
                with trio.move_on_after(30):
                    while sim_open():
                        await trio.sleep(0.002)
                    t_sim_flat = trio.current_time() - t0
                    cpu_sim_flat = (cpu_s(dp.pid), cpu_s())
                    while True:
                        st = await dp.status()
                        if all(v["cancel_state"] == "flat" for v in st["venues"].values()):
                            t_daemon_flat = trio.current_time() - t0
                            cpu_flat = (cpu_s(dp.pid), cpu_s())
                            out["cpu_s_daemon_bench_until_sim_flat"] = [round(a - b, 2) for a, b in zip(cpu_sim_flat, cpu0)]
                            out["cpu_s_daemon_bench_until_daemon_flat"] = [round(a - b, 2) for a, b in zip(cpu_flat, cpu0)]
                            break
                        await trio.sleep(0.05)
                gc.enable()
                out["bench_gc_until_daemon_flat"] = gcp.summary(t0_perf)
                out["t_sim_flat_s"] = None if t_sim_flat is None else round(t_sim_flat, 3)
                out["t_daemon_flat_s"] = None if t_daemon_flat is None else round(t_daemon_flat, 3)
                if t_daemon_flat is None:
                    out["not_flat"] = {n: v["cancel_state"] for n, v in st["venues"].items() if v["cancel_state"] != "flat"}
                out["sim_pushes_written_t_ox_nado"] = progress[::4]
                await trio.sleep(1.0)  # late verifications / re-polls also count against the rate limits
                for spy in spies:
                    await trio.to_thread.run_sync(spy.wait)
                out["rss_after_mb"] = round(dp.rss_mb(), 1)
                out["hwm_mb"] = round(dp.rss_mb("VmHWM"), 1)
                st = await dp.status()
                out["daemon_counters"] = {k: st["counters"][k] for k in ("cancel_requests", "cancel_failures", "sweeps")}
                audit = dp.state_dir / "audit.jsonl"
                verbs: Counter = Counter()
                for line in open(audit, "rb"):
                    if b'"cancel_sent"' in line:
                        rec = orjson.loads(line)
                        verbs[f"{rec.get('verb')}/{rec.get('transport', '?')}"] += 1
                out["audit_cancel_sent"] = dict(verbs)
                out["state_dir"] = str(dp.state_dir)
        if tracemalloc_out:  # the daemon was stopped on leaving the block above
            nursery.cancel_scope.cancel()
            return out

        with open(gc_out, "rb") as f:
            pauses = orjson.loads(f.read())
        os.unlink(gc_out)
        window = [(g, d) for t, g, d, _c in pauses if t0_perf <= t <= t0_perf + (t_daemon_flat or 30)]
        out["daemon_gc_until_daemon_flat"] = {
            "n": len(window), "gen2": sum(1 for g, _ in window if g == 2),
            "total_ms": round(1000 * sum(d for _, d in window), 1),
            "max_ms": round(1000 * max((d for _, d in window), default=0.0), 1)}
        reads = probe.all_reads()
        with open(os.path.join(out["state_dir"], "sim_reads.json"), "wb") as f:
            f.write(orjson.dumps([(ts - t0, name, kind) for ts, name, kind in reads]))
        first: dict[str, float] = {}
        for ts, name, _kind in reads:
            first.setdefault(name, ts - t0)
        out["accounts_with_cancel"] = len(first)
        out["t_last_first_cancel_s"] = round(max(first.values()), 4) if first else None
        out["t_median_first_cancel_s"] = round(statistics.median(first.values()), 4) if first else None
        before_flat = [ts - t0 for ts, _n, _k in reads if t_sim_flat is None or ts - t0 <= t_sim_flat]
        out["t_last_cancel_before_flat_s"] = round(max(before_flat), 4) if before_flat else None
        out["cancel_reads_before_flat"] = len(before_flat)
        out["cancel_reads_total"] = dict(Counter(k for _t, _n, k in reads))
        out["rate_limit_rejections"] = dict(probe.rejections)
        nursery.cancel_scope.cancel()
    return out


def judge(out: dict, n_accounts: int) -> dict:
    return {
        "rss": out["hwm_mb"] <= RSS_TARGET_MB,
        "wire": (out["accounts_with_cancel"] == n_accounts and out["t_last_cancel_before_flat_s"] is not None
                 and out["t_last_first_cancel_s"] <= WIRE_TARGET_S
                 and out["t_last_cancel_before_flat_s"] <= WIRE_TARGET_S),
        "limits": sum(out["rate_limit_rejections"].values()) == 0,
        "sim_flat": out["t_sim_flat_s"] is not None and out["t_sim_flat_s"] <= FLAT_TARGET_S,
    }


def tracemalloc_report(out: dict, path: str) -> int:
    import tracemalloc

    snap = tracemalloc.Snapshot.load(path).filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(st.size for st in snap.statistics("filename"))
    print(f"daemon VmRSS under tracemalloc {out['rss_traced_mb']} MB; traced {total / 2**20:.1f} MiB "
          f"({out['engine_open']} orders in the book)")
    with open(path + ".rss") as f:
        print(f.read())
    for key in ("filename", "lineno"):
        print(f"-- top by {key}")
        for st in snap.statistics(key)[:25]:
            print(f"  {st.size / 2**20:8.2f} MiB {st.count:9d} blocks  {st.traceback}")
    print("-- top 8 allocation sites with their stacks")
    for st in snap.statistics("traceback")[:8]:
        print(f"  {st.size / 2**20:8.2f} MiB {st.count:9d} blocks")
        for line in st.traceback.format(limit=8):
            print("     " + line)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ox", type=int, default=50)
    ap.add_argument("--nado", type=int, default=50)
    ap.add_argument("--orders", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tracemalloc", metavar="FILE", default="",
                    help="diagnosis: snapshot the daemon's allocations once ready into FILE, print the top, no trip")
    args = ap.parse_args()
    n_accounts = args.ox + args.nado
    if args.tracemalloc:
        return tracemalloc_report(trio.run(one_run, args.ox, args.nado, args.orders, args.tracemalloc), args.tracemalloc)
    runs = []
    for i in range(args.runs):
        out = trio.run(one_run, args.ox, args.nado, args.orders)
        ok = judge(out, n_accounts)
        runs.append((out, ok))
        print(f"-- run {i + 1}/{args.runs}")
        for k, v in out.items():
            print(f"  {k}: {v}")
        print(f"  verdicts: {ok}")

    def med(key):
        vals = [o[key] for o, _ in runs if o.get(key) is not None]
        return round(statistics.median(vals), 3) if len(vals) == len(runs) else None

    oks = {k: all(ok[k] for _, ok in runs) for k in runs[0][1]}
    rej = [sum(o["rate_limit_rejections"].values()) for o, _ in runs]
    print(f"== {args.ox} OX.FUN + {args.nado} Nado accounts x {args.orders} orders = {runs[0][0]['orders_total']} open, "
          f"daemon in its own process, {args.runs} run(s), medians:")
    print(f"   daemon RSS ready {med('rss_ready_mb')} MB, after trip {med('rss_after_mb')} MB, peak VmHWM "
          f"{med('hwm_mb')} MB (max {max(o['hwm_mb'] for o, _ in runs)}) <= {RSS_TARGET_MB:.0f} MB -> {verdict(oks['rss'])}")
    print(f"   trip -> every account's first cancel read by the sims {med('t_last_first_cancel_s')} s, "
          f"-> last cancel read before flat {med('t_last_cancel_before_flat_s')} s <= {WIRE_TARGET_S} s -> "
          f"{verdict(oks['wire'])}")
    print(f"   rate-limit rejections per run {rej} (must be 0) -> {verdict(oks['limits'])}")
    print(f"   trip -> sims flat {med('t_sim_flat_s')} s <= {FLAT_TARGET_S} s -> {verdict(oks['sim_flat'])}; "
          f"trip -> daemon reports all venues flat {med('t_daemon_flat_s')} s")
    print(reproduce_line())
    return 0 if all(oks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
