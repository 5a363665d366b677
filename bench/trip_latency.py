"""Trip latency: from the simulator writing the frame that breaches a rule to the simulator
reading the first cancel for it, over real loopback websockets, with the real daemon.

Shape (default): the sim and its probe run in this process; the daemon runs as
``killswitch run`` in a child process pinned to the other core (bench/_daemon_proc.py) and
is driven through its control socket. Both stamps of a trip are taken here, on one clock.
``--inproc`` runs the Daemon inside this trio run instead (one core for both: pessimistic).

Each trip: the sim books two orders for the account (rule ``max_open_orders: max 1``), so the
second OrderOpened / order_update push is the breaching frame. See ``Probe`` for exactly
where each venue's two stamps are taken (OX.FUN: the sim's socket boundary; Nado: the
sim's stream writer and gateway parser, which is conservative). Then flat (daemon and sim
book), an audited reset over the control socket, a pause (``--pace``, rate budgets), next.

Second part: SIGUSR1 -> first cancel read by the sim: ``os.kill(daemon_pid, SIGUSR1)``,
stamped just before the kill; the daemon's real signal handler does the rest.

    .venv/bin/python bench/trip_latency.py [--venue oxfun|nado|both] [--trips 1000] [--runs 3]
                                           [--signal-trips 200] [--pace S] [--inproc]
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics

import trio

import _harness
from _harness import NADO_PRODUCT, OX_MARKET, ProcRig, Rig, proc_rig, rig
from _stats import Summary, reproduce_line, summarize, verdict

RULES = """
  - name: bench-open-orders
    kind: max_open_orders
    max: 1
  - name: operator
    kind: manual
"""
TARGETS_MS = {"oxfun": (0.5, 2.0), "nado": (0.7, 3.0), "hyperliquid": (1.0, 4.0)}  # (p50, p99)


class StampedStream(trio.abc.HalfCloseableStream):
    """The OX.FUN sim's side of the daemon's TCP stream, stamping at the socket boundary.

    ``send_all`` stamps immediately before the bytes of a breaching frame are handed to the
    kernel; ``receive_some`` stamps as soon as bytes come back from the kernel. The figure
    is then the daemon's part (plus loopback and wake-ups) with the sim's own websocket
    encode/decode and dispatch left out on both ends.
    """

    def __init__(self, inner, probe: "Probe") -> None:
        self.inner = inner
        self.probe = probe

    async def send_all(self, data) -> None:
        n = bytes(data).count(self.probe.breach_marker)
        if n:
            t = trio.current_time()
            self.probe.open_writes.extend([t] * n)
        await self.inner.send_all(data)

    async def receive_some(self, max_bytes=None):
        data = await self.inner.receive_some(max_bytes)
        self.probe.last_read_s = trio.current_time()
        return data

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class NadoSocketStamps(trio.abc.HalfCloseableStream):
    """The Nado sim's side of one daemon connection, for the secondary, socket-boundary
    figure: ``send_all`` stamps right before the bytes of a "placed" push (already framed and
    deflated) go to the kernel; ``receive_some`` notes when bytes came back from the kernel.
    The current probe is looked up on every call (``probe_ref``), so a new Probe (warm-up ->
    measured phase) or a reconnect's new endpoint never leaves a stale reference behind."""

    probe_ref: list = [None]

    def __init__(self, inner) -> None:
        self.inner = inner
        self.last_read_s = 0.0

    async def send_all(self, data) -> None:
        probe = self.probe_ref[0]
        if probe is not None and probe._placed_pending:
            probe._placed_pending = False
            probe.open_writes_sock.append(trio.current_time())
        await self.inner.send_all(data)

    async def receive_some(self, max_bytes=None):
        data = await self.inner.receive_some(max_bytes)
        self.last_read_s = trio.current_time()
        return data

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Probe:
    """Collects (breach frame written, first cancel read) times from the sim.

    The sims' own "written" hooks (OxfunSim.on_push_written, VertexSim.stream_write_log) fire
    after the awaited write returns, i.e. after a trio checkpoint: by then the daemon may
    already have read the frame, tripped and sent the cancel, so those stamps can come out
    *later* than the cancel. The probe therefore stamps immediately before the write call.
    That includes the sim's own frame encoding (and, for Nado, permessage-deflate) in the
    figure: conservative. Cancel reads use the sims' hooks (stamped when the request is parsed).

    OX.FUN: wraps the sim instance's ``_send``. Nado: ``VertexSim.on_stream_send`` (called by
    the sim's per-connection writer right before every stream frame is written, on every
    connection including ones opened by a reconnect) and ``VertexSim.on_execute``. Earlier
    versions wrapped ``send_text`` on the endpoints that existed at round start and marked them
    as wrapped; a second Probe (the measured phase after the warm-up one) then skipped every
    endpoint, so its list never filled and the harness stalled.
    Only one Probe is active per sim: a new one replaces the hooks of the previous one.

    Nado, secondary figure (comparable with OX.FUN's socket-boundary stamps on main): the same
    trips stamped at the sim's socket boundary (``NadoSocketStamps``: right before the
    breaching push's bytes go to the kernel; the socket read that delivered the cancel), i.e.
    without the sim's own deflate/framing of the push and websocket decode + JSON parse of the
    cancel.
    """

    def __init__(self, r: Rig) -> None:
        self.r = r
        self.open_writes: list[float] = []
        self.cancel_reads: list[float] = []
        self.open_writes_sock: list[float] = []  # Nado, socket boundary (secondary figure)
        self.cancel_reads_sock: list[float] = []
        self._placed_pending = False
        self._changed = trio.Event()
        self.last_read_s = 0.0
        if r.hl is not None:
            r.hl.on_push_send = self._hl_push_send
            r.hl.on_exchange = self._hl_exchange
        elif r.ox is not None:
            r.ox.on_cancel_received = self._ox_cancel
            self._wrap_ox_stream()
        else:
            r.nado.on_stream_send = self._nado_stream_send
            r.nado.on_execute = self._nado_execute
            # Count the sim's answers to cancels (1000 = over the wallet's rate budget).
            core = r.nado.core
            orig_execute = getattr(core, "_bench_orig_execute", core.execute)
            core._bench_orig_execute = orig_execute

            def execute(body, _orig=orig_execute, **kw):
                resp, pushes = _orig(body, **kw)
                if str(resp.get("request_type", "")).startswith("execute_cancel"):
                    code = resp.get("error_code", 0) if resp.get("status") != "success" else 0
                    CANCEL_CODES[code] = CANCEL_CODES.get(code, 0) + 1
                return resp, pushes

            core.execute = execute

    def _hl_push_send(self, t: float, frame: bytes) -> None:
        # orderUpdates "open" of this round's orders (the engine counts is_new opens only).
        if frame.startswith(b'{"channel":"orderUpdates"') and b'"status":"open"' in frame:
            self.open_writes.append(t)
            self._changed.set()

    def _hl_exchange(self, t: float, action_type: str) -> None:
        # Stamped when the sim's HTTP server has read and parsed the POST /exchange body.
        if action_type.startswith("cancel"):
            self.cancel_reads.append(t)
            self._changed.set()

    def _nado_stream_send(self, t: float, kind: str, frame: bytes) -> None:
        # Only the "placed" pushes of this round's orders; the "cancelled" ones of a
        # previous round's cancel cannot be mistaken for a breach.
        if kind == "order_update" and b'"reason":"placed"' in frame:
            self.open_writes.append(t)
            self._placed_pending = True  # the writer's next send_all carries this frame
            self._changed.set()

    def _nado_execute(self, t: float, request_type: str) -> None:
        if request_type.startswith("execute_cancel"):
            reads = [ep._stream.last_read_s for ep in self.r.nado._gateway_conns
                     if isinstance(ep._stream, NadoSocketStamps)]
            self.cancel_reads_sock.append(max(reads) if reads else t)
            self.cancel_reads.append(t)
            self._changed.set()

    def _wrap_nado_streams(self) -> None:
        NadoSocketStamps.probe_ref[0] = self
        sim = self.r.nado
        for ep in list(sim._gateway_conns) + [c.ep for c in sim._sub_conns]:
            if not isinstance(ep._stream, NadoSocketStamps):
                ep._stream = NadoSocketStamps(ep._stream)

    breach_marker = b'"OrderOpened"'

    def _wrap_ox_stream(self) -> None:
        acct = self.r.ox.accounts[self.r.ox_key]
        for conn in self.r.ox._conns.values():
            if conn.account is not acct:
                continue
            if isinstance(conn.ws._stream, StampedStream):
                conn.ws._stream.probe = self
            else:
                conn.ws._stream = StampedStream(conn.ws._stream, self)

    def _ox_cancel(self, t: float, tag: str | None, n: int) -> None:
        # A stamp older than this round's breach write is the read that was already pending
        # when the stream got wrapped (unstamped): use the hook's own time (later: conservative).
        fresh = self.open_writes and self.last_read_s >= self.open_writes[-1]
        self.cancel_reads.append(self.last_read_s if fresh else t)

    def start_round(self) -> None:
        self.open_writes.clear()
        self.cancel_reads.clear()
        if self.r.ox is not None and self.r.hl is None:
            self._wrap_ox_stream()  # a reconnect would bring a new connection
        if self.r.nado is not None:
            self.open_writes_sock.clear()
            self.cancel_reads_sock.clear()
            self._placed_pending = False
            self._wrap_nado_streams()  # a reconnect brings new endpoints

    def socket_boundary(self) -> float | None:
        """Nado: breach bytes to the kernel -> socket read that delivered the first cancel."""
        if len(self.open_writes_sock) < 2:
            return None
        t0 = self.open_writes_sock[1]
        for tc, ts in zip(self.cancel_reads, self.cancel_reads_sock):
            if tc >= self.open_writes[1]:
                return ts - t0
        return None

    def first_cancel_after(self, t0: float) -> float | None:
        for t in self.cancel_reads:
            if t >= t0:
                return t
        return None

    async def wait_for(self, pred, timeout_s: float = 10.0) -> None:
        """Until ``pred()``. Nado: woken by the sim hooks (no polling task competing with the
        sim for the bench process's core); OX.FUN: the rig's 1 ms poll, as before."""
        if self.r.nado is None and self.r.hl is None:
            await self.r.wait(pred, timeout_s)
            return
        with trio.fail_after(timeout_s):
            while not pred():
                self._changed = trio.Event()
                await self._changed.wait()


MISS_AFTER_S = 2.0
# Pause between trips. Each trip costs the session a cancel + sweep + verification; back to
# back (~60 trips/s) that exceeds OX.FUN's 50 msg/s per socket and Nado's 100 weight/10 s,
# and the session then (correctly) waits for budget, which shows up as 100s-of-ms tails.
PACE_S = [0.0]
# Nado: a round's cancel is one cancel_orders with 2 digests = 2 wallet weight (the verifying
# snapshot is a query: IP budget, not wallet weight). The wallet allows 100 / 10 s and
# 600 / 60 s, i.e. at most 50 rounds per 10 s: a round every >= 0.2 s. Default pace 0.2 s.
DEFAULT_PACE_S = {"oxfun": 0.0, "nado": 0.2, "hyperliquid": 0.0}
CANCEL_CODES: dict[int, int] = {}  # Nado: sim's cancel answers in the measured trips (0 = success)
SOCKET_BOUNDARY: list[float] = []  # Nado: the same trips stamped at the sim's socket boundary


async def rule_trips(r: Rig, n: int, misses: list[int] | None = None,
                     sock_out: list[float] | None = None) -> list[float]:
    probe = Probe(r)
    out = []
    for i in range(n):
        probe.start_round()
        await r.place(2, start_level=i)
        # The sim's writer task writes the pushes; wait until both frames went out.
        await probe.wait_for(lambda: len(probe.open_writes) >= 2)
        t_breach = probe.open_writes[1]
        with trio.move_on_after(MISS_AFTER_S):
            await probe.wait_for(lambda: probe.first_cancel_after(t_breach) is not None)
        t_cancel = probe.first_cancel_after(t_breach)
        if t_cancel is None:
            # No cancel read after the breaching frame's write stamp: reported, never hidden.
            if misses is not None:
                misses.append(i)
            await r.rearm()
            continue
        out.append(t_cancel - t_breach)
        if sock_out is not None and r.nado is not None:
            sb = probe.socket_boundary()
            if sb is not None:
                sock_out.append(sb)
        await r.rearm()
        await trio.sleep(PACE_S[0])  # stay inside the venue's message/weight budget (see docstring)
    return out


async def signal_trips(r, n: int, misses: list[int]) -> list[float]:
    probe = Probe(r)
    out = []
    for i in range(n):
        await r.place(1, start_level=i)
        if isinstance(r, ProcRig):
            await r.daemon.wait_status(lambda st: st["venues"][r.venue]["open_orders"] == 1)
            pid = r.daemon.pid
        else:
            engine = r.daemon.engine
            venue = next(iter(engine.state.venues()))
            await r.wait(lambda: len(engine.state.book(venue).orders) == 1)
            pid = os.getpid()
        probe.start_round()
        t0 = trio.current_time()
        os.kill(pid, signal.SIGUSR1)
        with trio.move_on_after(MISS_AFTER_S):
            await probe.wait_for(lambda: probe.first_cancel_after(t0) is not None)
        t_cancel = probe.first_cancel_after(t0)
        if t_cancel is None:
            misses.append(i)
        else:
            out.append(t_cancel - t0)
        await r.rearm()
        await trio.sleep(PACE_S[0])  # as rule_trips: unpaced, trips outrun the venue's message budget
    return out


async def market_feed(r, hz: float) -> None:
    """A live venue's background traffic: the sim moves the mark of the account's market and
    pushes the ticker ``hz`` times a second (OX.FUN only). Without it, the daemon's core idles
    for the whole pause between trips, and on this VM an idle vCPU comes back with cold
    caches (see README: an idle gap of 25 ms makes trio's ``start_soon`` 24 us instead of 3-7)."""
    if r.ox is None or hz <= 0:
        return
    period_s = 1.0 / hz
    k = 0
    while True:
        k += 1
        # above every resting BUY the rounds place (30000-34999), so nothing becomes marketable
        await r.ox.set_mark(OX_MARKET, 40000 + (k % 7))
        await trio.sleep(period_s)


async def nado_feed(r, hz: float) -> None:
    """Nado background traffic for ``--feed-hz``: the daemon subscribes to no public market
    data on Nado, only to the account's own order_update / fill / position_change streams, so
    an idle account means an idle daemon. With a feed, the sim pushes ``position_change`` on
    the watched perp (reason ``match_orders``, the position alternating between two sizes) as
    an actively trading account's fills would, ``hz`` times a second. No orders, so the
    ``max_open_orders`` rule never sees them; each push makes the session refresh equity
    (coalesced to <= 4/s, IP weight 2: inside the 400 / 10 s query budget)."""
    if r.nado is None or hz <= 0:
        return
    period_s = 1.0 / hz
    k = 0
    while True:
        k += 1
        r.nado.set_balances(r.nado_sender, perp={NADO_PRODUCT: ("0.5" if k % 2 else "0.4", "-500")},
                            reason="match_orders")
        await trio.sleep(period_s)


async def measure(kind: str, trips: int, signal_n: int, misses: list[int], sig_misses: list[int],
                  inproc: bool, feed_hz: float = 0.0) -> tuple[list[float], list[float]]:
    ctx = rig(kind, RULES, handle_signals=signal_n > 0) if inproc else proc_rig(kind, RULES)
    async with ctx as r, trio.open_nursery() as feed:
        feed.start_soon(market_feed, r, feed_hz)
        feed.start_soon(nado_feed, r, feed_hz)
        await rule_trips(r, 20, [])  # warm-up: imports, first signatures, caches
        gc.collect()
        CANCEL_CODES.clear()
        SOCKET_BOUNDARY.clear()
        rule = await rule_trips(r, trips, misses, SOCKET_BOUNDARY)
        sig = await signal_trips(r, signal_n, sig_misses) if signal_n else []
        feed.cancel_scope.cancel()
    return rule, sig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venue", choices=["oxfun", "nado", "hyperliquid", "both"], default="both")
    ap.add_argument("--trips", type=int, default=1000, help="rule trips per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--signal-trips", type=int, default=200, help="SIGUSR1 trips per run (0: skip)")
    ap.add_argument("--pace", type=float, default=None,
                    help="seconds between trips (rate budgets); default 0 for oxfun, 0.2 for nado")
    ap.add_argument("--feed-hz", type=float, default=0.0,
                    help="background traffic per second during the run: OX.FUN ticker pushes (mark moves), "
                         "Nado position_change pushes (an actively trading account)")
    ap.add_argument("--hl-rest", action="store_true",
                    help="hyperliquid: cancels over POST /exchange instead of WS posts on the open socket")
    ap.add_argument("--inproc", action="store_true",
                    help="daemon in this process and trio run (default: `killswitch run` child process)")
    args = ap.parse_args()
    venues = ["oxfun", "nado"] if args.venue == "both" else [args.venue]
    _harness.HL_POST_OVER_WS[0] = not args.hl_rest
    ok = True
    for kind in venues:
        PACE_S[0] = args.pace if args.pace is not None else DEFAULT_PACE_S[kind]
        codes_total: dict[int, int] = {}
        sock_runs: list[Summary] = []
        runs: list[Summary] = []
        sig_runs: list[Summary] = []
        all_rule: list[float] = []
        total_misses = 0
        total_sig_misses = 0
        for k in range(args.runs):
            misses: list[int] = []
            sig_misses: list[int] = []
            load0 = os.getloadavg()[0]
            rule, sig = trio.run(measure, kind, args.trips, args.signal_trips, misses, sig_misses, args.inproc,
                                 args.feed_hz)
            load1 = os.getloadavg()[0]
            for code, n in CANCEL_CODES.items():
                codes_total[code] = codes_total.get(code, 0) + n
            if kind == "nado" and SOCKET_BOUNDARY:
                sock_runs.append(summarize(SOCKET_BOUNDARY))
            total_sig_misses += len(sig_misses)
            total_misses += len(misses)
            runs.append(summarize(rule))
            all_rule += rule
            if sig:
                sig_runs.append(summarize(sig))
            print(f"{kind} run {k + 1}/{args.runs}: rule breach frame -> first cancel read: "
                  f"{runs[-1].fmt('ms', 1e3)} (pace {PACE_S[0]} s; feed {args.feed_hz} Hz; 1-min load avg {load0:.2f} -> {load1:.2f} "
                  f"on {os.cpu_count()} CPUs)")
            if kind == "nado" and SOCKET_BOUNDARY:
                print(f"{kind} run {k + 1}/{args.runs}: same trips, sim socket boundary (breach bytes to the "
                      f"kernel -> cancel bytes from the kernel): {sock_runs[-1].fmt('ms', 1e3)}")
            if sig:
                print(f"{kind} run {k + 1}/{args.runs}: SIGUSR1 -> first cancel read: {sig_runs[-1].fmt('ms', 1e3)}")
        p50 = statistics.median(s.p50 for s in runs) * 1e3
        p99 = statistics.median(s.p99 for s in runs) * 1e3
        t50, t99 = TARGETS_MS[kind]
        good = p50 <= t50 and p99 <= t99 and total_misses == 0
        ok &= good
        pooled = summarize(all_rule)
        print(f"== {kind}: {len(all_rule)} trips over {args.runs} runs; median over runs p50={p50:.3f} ms "
              f"p99={p99:.3f} ms (targets p50<={t50} ms, p99<={t99} ms) -> {verdict(good)}")
        print(f"   pooled: {pooled.fmt('ms', 1e3)}; trips with no cancel read within {MISS_AFTER_S}s: "
              f"{total_misses}")
        if sock_runs:
            print(f"   socket boundary (secondary; as OX.FUN on main): median over runs "
                  f"p50={statistics.median(x.p50 for x in sock_runs) * 1e3:.3f} ms "
                  f"p99={statistics.median(x.p99 for x in sock_runs) * 1e3:.3f} ms")
        if kind == "nado":
            print(f"   sim's answers to the cancels of the measured trips: "
                  f"{', '.join(f'{n} x ' + ('success' if c == 0 else f'error {c}') for c, n in sorted(codes_total.items()))}")
        if sig_runs:
            s50 = statistics.median(s.p50 for s in sig_runs) * 1e3
            s99 = statistics.median(s.p99 for s in sig_runs) * 1e3
            print(f"   SIGUSR1 (in-process daemon, real signal handler) -> first cancel read: "
                  f"median p50={s50:.3f} ms p99={s99:.3f} ms over {len(sig_runs)}x{args.signal_trips} trips; "
                  f"no cancel read within {MISS_AFTER_S}s: {total_sig_misses}")
    print("for scale: Hummingbot's kill switch checks every 10 s; Freqtrade's protections once per bot loop (~5 s)")
    print(reproduce_line())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
