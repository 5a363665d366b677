"""VertexSession: the trio shell around the pure Vertex/Nado wire layer.

Two sockets: the v1 gateway (executes + queries, in-order replies) and the subscription
socket (permessage-deflate, StreamAuthentication, order_update/fill/position_change).
REST ``/execute`` and the trigger service are used over HTTP. Every cancel attempt gets a
fresh nonce and signature; 2011/2012 re-measure the venue's clock and are retried at once
with a new nonce.

Time: nonces' recv_time, the stream authentication's expiration and the trigger queries'
recvTime are all on the *venue's* clock (``GET /time``, see killswitch.venues.clock_offset),
so a wrong or stepped host clock does not stop cancels.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Callable, Sequence

import httpx
import structlog
import trio

from killswitch.clock import Clock
from killswitch.model import (
    BadFrame,
    CancelAttempted,
    CancelCompleted,
    EquityObserved,
    OpenOrdersSnapshot,
    OrderFilled,
    OrderInfo,
    OrderRef,
    PositionObserved,
    VenueAlive,
    VenueAuthFailed,
    VenueConnected,
    VenueDegraded,
    VenueDisconnected,
)
from killswitch.secrets import Secret
from killswitch.venues.base import (
    AuthError,
    OnSent,
    OutcomeUnknown,
    RateBudget,
    ReconnectBackoff,
    VenueCapabilities,
    VenueError,
    VenueRejected,
    VertexConfig,
)
from killswitch.net.tls import shared_ssl_context
from killswitch.venues.clock_offset import SkewAlarm, VenueClock
from killswitch.venues.spend_log import SpendLog

from . import eip712
from . import wire
from killswitch.net import ws as wsmod
from .gateway import GatewayConn
from .lock_state import LockStore
from .nonce import Nonce, NonceSource
from .signer_lock import SignerLock
from .signing import FastSigner

VENUE_WALLET_LIMITS = ((60, 600), (10, 100))  # weight per window, as the venue counts it
VENUE_IP_LIMITS = ((60, 2400), (10, 400))
# The venue counts on arrival: a request a little late can land in a window we counted as full
# (and a Nado 1000 costs a 10 s hold). Each window is accounted this much longer.
WINDOW_MARGIN_S = 0.1
WALLET_LIMITS = tuple((w + WINDOW_MARGIN_S, cap) for w, cap in VENUE_WALLET_LIMITS)
IP_LIMITS = tuple((w + WINDOW_MARGIN_S, cap) for w, cap in VENUE_IP_LIMITS)
MAX_TIME_RETRIES = 3  # attempts per request on 2011/2012
STREAM_AUTH_AHEAD_MS = 50_000  # middle of (now, now+100 s]: tolerates +/-50 s of clock skew
ALIVE_MIN_INTERVAL_S = 0.5
EQUITY_MIN_SPACING_S = 0.25
STREAMS = ("order_update", "fill", "position_change")
LINK_SIGNER_WEIGHT = 30  # wallet weight of one link_signer (the order-entry lock)
QUERY_WEIGHTS = {"linked_signer": 5, "all_products": 5}  # IP weight; others 2 (subaccount_info: by kind)
RATE_REFUSAL_BLOCK_S = 10.0  # a 1000 blocks the wallet budget for its shortest window (10 s)
# The venue refuses executes for its own state (doc "2026 changes" item 6): not a failure of
# the cancel; the engine retries on its own schedule.
MAINTENANCE_CODES = frozenset({1004, 1006, 2068})
QUERY_ONLY_MARKERS = ("ip_query_only", "query_only", "query-only", "query only")
STREAM_AUTH_REFUSED = "stream_auth_refused"  # VenueDegraded condition
_HEX_DIGEST = re.compile(r"0x[0-9a-fA-F]{64}")

CAPABILITIES = VenueCapabilities(
    cancel_all_cost=50,
    cancel_products_cost_per_product=5,
    cancel_orders_cost_per_request=0,
    cancel_orders_cost_per_order=1,
    # Weight is per digest whatever the batching, so bigger batches only save round trips;
    # 100 = the wallet's whole 10 s window, so one request can never be over budget alone.
    max_orders_per_request=100,
    has_trigger_plane=True,
    prefer_by_id_below=0,
)


class ContractMismatch(VenueRejected):
    """The gateway's ``contracts`` query disagrees with the configured chain/endpoint."""


class _Lost(Exception):
    """The connection ended; reconnect."""


class VertexSession:
    def __init__(self, cfg: VertexConfig, *, private_key: Secret, clock: Clock, owner_key: Secret | None = None,
                 state_dir: Path | str | None = None) -> None:
        if cfg.kind not in ("nado", "vertex"):
            raise ValueError(f"venue {cfg.name}: kind must be 'nado' or 'vertex', not {cfg.kind!r}")
        self.cfg = cfg
        self.name = cfg.name
        self.capabilities = CAPABILITIES
        self._clock = clock
        self._signer = FastSigner(private_key)
        wallet = (cfg.wallet_address or self._signer.address).lower()
        self._sender = eip712.sender_bytes(wallet, cfg.subaccount_name)
        self._sender_hex = wire.hex0x(self._sender)
        # Stream authentication must be signed by the wallet in `sender` (the docs): with a
        # linked-signer key, the owner's key if we have it, else try the signer's own.
        self._stream_signer = self._signer
        self._owner: FastSigner | None = None
        if owner_key is not None:
            owner = FastSigner(owner_key)
            if owner.address.lower() != wallet:
                raise ValueError(f"venue {cfg.name}: owner_private_key is the key of {owner.address}, "
                                 f"not of the wallet {wallet}")
            self._stream_signer = self._owner = owner
        # A refused (2028) cancel signature from a linked-signer key: someone replaced it;
        # with the owner's key the daemon signs with that from then on.
        self._signer_refused = False
        self._degraded = False
        self._domain = eip712.Domain("Nado" if cfg.kind == "nado" else "Vertex", cfg.chain_id, cfg.endpoint_address)
        self._nonces = NonceSource(recv_offset_ms=round(cfg.recv_window_s * 1000))
        self._budget = RateBudget(WALLET_LIMITS, reserve=cfg.budget_reserve)
        self._ip_budget = RateBudget(IP_LIMITS)
        self._vclock = VenueClock()
        self._skew_alarm = SkewAlarm(cfg.clock_skew_alarm_s)
        self._send: trio.MemorySendChannel | None = None
        self._clock_lock = trio.Lock()
        self._query_only = False
        self._spend: SpendLog | None = None
        self._spend_loaded = False
        if state_dir is not None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.name)
            self._spend = SpendLog(Path(state_dir) / f"spend-{safe}.json", horizon_s=WALLET_LIMITS[0][0])
        self._gw: GatewayConn | None = None
        self._http: httpx.AsyncClient | None = None
        self._products: tuple[int, ...] = tuple(cfg.products)  # subscribed to (the config's list, else all)
        self._all_products: tuple[int, ...] = ()  # every product id of the venue, refreshed periodically
        self._products_fetched_s = float("-inf")
        self._polled_positions: dict[str, Decimal] = {}
        self._reconnect_now = trio.Event()
        self._tracker = wire.PositionTracker()
        self._equity_kick = trio.Event()
        self._started = False
        self._next_id = 1
        self._last_alive_s = float("-inf")
        self._sub_weight = 2 if cfg.kind == "nado" else 10
        self._log = structlog.get_logger("killswitch.venue.vertex").bind(venue=cfg.name)
        lock_path = None if state_dir is None else Path(state_dir) / f"{cfg.kind}-lock-{self._sender_hex}.json"
        self._lock = SignerLock(venue=cfg.name, kind=cfg.kind, sender=self._sender, owner=self._owner,
                                domain=self._domain, store=LockStore(lock_path), clock=clock,
                                verify_interval_s=cfg.lock_verify_interval_s,
                                query=lambda qtype, **params: self._query(self._gw, qtype, **params),
                                execute=self._execute_link, archive=self._archive, before_link=self._wait_link_budget)

    def __repr__(self) -> str:
        return f"VertexSession(name={self.name!r}, kind={self.cfg.kind!r}, sender={self._sender_hex})"

    @property
    def sender_hex(self) -> str:
        return self._sender_hex

    def _exec_signer(self) -> FastSigner:
        """Who signs cancels and trigger listings: the configured key, or the owner's once the
        order-entry lock is held (the linked signer, if that was our key, is revoked)."""
        if self._owner is not None and (self._signer_refused or self._lock.held):
            return self._owner
        return self._signer

    # =====================================================================================
    # run: connect, authenticate, subscribe, reconcile, forward; reconnect with backoff
    # =====================================================================================

    async def run(self, send: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self._send = send
        if self._spend is not None and not self._spend_loaded:
            self._spend_loaded = True
            self._load_spend()
        startup_error: list[BaseException] = []
        async with httpx.AsyncClient(timeout=self.cfg.request_timeout_s, verify=shared_ssl_context(),
                                     headers={"Accept-Encoding": "gzip, deflate"}) as http:
            self._http = http
            try:
                async with trio.open_nursery() as outer:
                    outer.start_soon(self._lock.watch, send, self._relocked_snapshot)
                    try:
                        await self._reconnect_loop(send, task_status)
                    except (AuthError, ContractMismatch) as exc:  # the first login: a clear start-up error
                        startup_error.append(exc)
                        outer.cancel_scope.cancel()
            finally:
                self._http = None
                self._gw = None
        if startup_error:
            raise startup_error[0]

    async def _reconnect_loop(self, send, task_status) -> None:
        backoff = ReconnectBackoff(self.cfg.backoff)
        while True:
            up_since = self._clock.monotonic_s()
            try:
                await self._connect_and_serve(send, task_status)
                reason = "connection ended"
            except (AuthError, ContractMismatch) as exc:
                if not self._started:
                    raise
                self._log.error("venue_auth_failed", code=exc.code, error=str(exc))
                await send.send(VenueAuthFailed(self.name, exc.code or "auth", str(exc),
                                                self._clock.monotonic_s()))
                reason = f"auth failed: {exc}"
            except (_Lost, VenueError, wsmod.WsClosed, wsmod.WsHandshakeRejected, wire.WireError,
                    OSError, trio.TooSlowError, httpx.HTTPError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self._gw = None
            delay = backoff.next_delay_s(self._clock.monotonic_s() - up_since)
            self._log.warning("venue_disconnected", reason=reason, reconnect_in_s=round(delay, 3))
            await send.send(VenueDisconnected(self.name, reason, self._clock.monotonic_s()))
            await trio.sleep(delay)

    async def _connect_and_serve(self, send, task_status) -> None:
        failure: list[BaseException] = []

        async def guard(fn, *args):
            try:
                await fn(*args)
                raise _Lost(f"{fn.__name__} returned")
            except Exception as exc:  # the first failure tears the connection down
                if not failure:
                    failure.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            try:
                await self._setup(nursery, guard, send, task_status)
            except Exception as exc:
                if not failure:
                    failure.append(exc)
                nursery.cancel_scope.cancel()
        gw, self._gw = self._gw, None
        if gw is not None:
            await gw.kill("session connection ended")
        if failure:
            raise failure[0]

    async def _setup(self, nursery, guard, send, task_status) -> None:
        cfg = self.cfg
        t = cfg.request_timeout_s
        dead_after_s = cfg.ping_interval_s + cfg.pong_timeout_s
        # The venue's clock before anything is signed (nonces, stream authentication).
        await self._sync_clock(why="connect")
        await self._check_ip()
        gep = await wsmod.connect(cfg.gateway_ws_url, deflate=False, timeout_s=t, dead_after_s=dead_after_s)
        gw = GatewayConn(gep, venue=self.name)
        nursery.start_soon(guard, gw.reader)
        nursery.start_soon(guard, self._pinger, gep)
        self._gw = gw

        if cfg.verify_contracts:
            chain_id, endpoint, _ = wire.parse_contracts(await self._query(gw, "contracts"))
            if chain_id != cfg.chain_id or endpoint != cfg.endpoint_address.lower():
                raise ContractMismatch(
                    f"venue {self.name}: gateway reports chain {chain_id} endpoint {endpoint}, config says "
                    f"chain {cfg.chain_id} endpoint {cfg.endpoint_address.lower()} (check kind/chain_id/"
                    f"endpoint_address, or set verify_contracts: false)",
                    code="contracts", venue=self.name,
                )
        await self._refresh_products(gw)
        # Without `products:`, every product the venue lists now (a reconnect picks up new ones).
        self._products = tuple(cfg.products) or self._all_products

        sep = await wsmod.connect(cfg.subscribe_ws_url, deflate=True, timeout_s=t, dead_after_s=dead_after_s)
        nursery.start_soon(guard, self._pinger, sep, send)
        buffered: list = []
        await self._socket_time(sep, buffered)
        authed = await self._authenticate(sep, buffered, gw)
        await self._subscribe_all(sep, buffered, authed)

        # Reconcile after subscribing, so nothing falls between the snapshot and the stream.
        orders = await self._fetch_open_orders(gw)
        now_s = self._clock.monotonic_s()
        # Every product of the subaccount, whatever ``products:`` lists: "flat" for an
        # everything-scope trip means no open order anywhere (engine and trigger planes).
        await send.send(OpenOrdersSnapshot(self.name, orders, None, "reconcile", self._clock.wall_ms(), now_s))
        info = wire.parse_subaccount_info(await self._query(gw, "subaccount_info", subaccount=self._sender_hex))
        self._tracker = wire.PositionTracker()
        self._tracker.seed(info)
        self._polled_positions = {}
        await self._emit_positions(send, info)
        await send.send(EquityObserved(self.name, info.equity, "USD", self._clock.wall_ms(),
                                       self._clock.monotonic_s()))
        for ts, raw in buffered:
            await self._forward(raw, ts, send)
        if authed and self._degraded:
            self._degraded = False
            await send.send(VenueDegraded(self.name, STREAM_AUTH_REFUSED, active=False, ts_recv_s=self._clock.monotonic_s()))
        elif not authed:
            self._degraded = True
            await send.send(VenueDegraded(
                self.name, STREAM_AUTH_REFUSED,
                f"stream authentication by linked signer {self._signer.address} refused (it must be signed by the "
                f"wallet {self._stream_wallet()}; set owner_private_key); order_update not streamed, open orders "
                f"polled every {self.cfg.open_orders_poll_s:g} s", ts_recv_s=self._clock.monotonic_s()))
            nursery.start_soon(guard, self._open_orders_poll, gw, send)
        await send.send(VenueConnected(self.name, self._clock.monotonic_s()))
        self._log.info("venue_connected", products=len(self._products), open_orders=len(orders))
        if not self._started:
            self._started = True
            task_status.started()
        self._reconnect_now = trio.Event()
        nursery.start_soon(guard, self._stream_reader, sep, send)
        nursery.start_soon(guard, self._equity_loop, gw, send)
        nursery.start_soon(guard, self._clock_loop)
        nursery.start_soon(guard, self._orders_poll, gw, send)
        nursery.start_soon(guard, self._await_reconnect_request)

    def request_reconnect(self, why: str) -> None:
        """Tear the connection down (the run loop reconnects, re-subscribes and reconciles)."""
        self._log.warning("venue_reconnect_requested", why=why)
        self._reconnect_now.set()

    async def _await_reconnect_request(self) -> None:
        await self._reconnect_now.wait()
        raise _Lost("reconnect requested (stream drift)")

    async def _refresh_products(self, gw: GatewayConn | None) -> None:
        ids = tuple(p for p in wire.parse_all_products(await self._query(gw, "all_products")) if p)
        self._all_products = ids
        self._products_fetched_s = self._clock.monotonic_s()

    async def _orders_poll(self, gw: GatewayConn, send) -> None:
        """Drift poll while connected: the venue's own open orders (every product) reach the book,
        and the engine compares them with what the stream reported (stream drift)."""
        while True:
            await trio.sleep(self.cfg.orders_poll_interval_s)
            if self._clock.monotonic_s() - self._products_fetched_s >= self.cfg.products_refresh_interval_s:
                try:
                    await self._refresh_products(gw)
                except VenueRejected as exc:
                    self._log.warning("venue_products_refresh_rejected", error=str(exc))
            try:
                orders = await self._fetch_open_orders(gw)
            except (VenueRejected, OutcomeUnknown) as exc:
                self._log.warning("venue_orders_poll_failed", error=str(exc))
                continue
            await send.send(OpenOrdersSnapshot(self.name, orders, None, "poll", self._clock.wall_ms(),
                                               self._clock.monotonic_s(),
                                               stream_products=frozenset(str(p) for p in self._products)))

    async def _emit_positions(self, send, info: wire.SubaccountInfo) -> None:
        """Positions as the gateway reports them, when they differ from the last poll's."""
        now = {str(pid): wire.x18_to_decimal(amount) for pid, amount in info.balances_x18.items()
               if pid != wire.QUOTE_PRODUCT_ID}
        for pid in self._polled_positions.keys() - now.keys():
            now[pid] = Decimal(0)
        ts_ms, ts_s = self._clock.wall_ms(), self._clock.monotonic_s()
        for pid, qty in sorted(now.items()):
            if self._polled_positions.get(pid) != qty:
                await send.send(PositionObserved(self.name, pid, qty, ts_event_ms=ts_ms, ts_recv_s=ts_s, polled=True))
        self._polled_positions = {p: q for p, q in now.items() if q != 0}

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _await_reply(self, ep: wsmod.WsEndpoint, rid: int, buffered: list) -> wire.StreamReply:
        with trio.fail_after(self.cfg.request_timeout_s):
            while True:
                raw = await ep.receive()
                ts = self._clock.monotonic_s()
                try:
                    msg = wire.parse_stream_bytes(raw)
                except wire.WireError:
                    buffered.append((ts, raw))
                    continue
                if isinstance(msg, wire.StreamReply) and msg.id == rid:
                    return msg
                buffered.append((ts, raw))

    async def _socket_time(self, ep: wsmod.WsEndpoint, buffered: list) -> None:
        """The subscription socket's ``time`` message: a second sample, over the socket."""
        rid = self._take_id()
        t0 = self._mono_ms()
        await ep.send_text(wire.dumps({"method": "time", "id": rid}))
        reply = await self._await_reply(ep, rid, buffered)
        result = reply.result if isinstance(getattr(reply, "result", None), dict) else {}
        try:
            server_ms = int(result.get("server_time"))
        except (TypeError, ValueError):
            return  # not answered with a time: GET /time stands alone
        self._vclock.add(mono_send_ms=t0, mono_recv_ms=self._mono_ms(), server_ms=server_ms)
        await self._check_skew()

    def _stream_wallet(self) -> str:
        return wire.hex0x(self._sender[:20])

    async def _authenticate(self, ep: wsmod.WsEndpoint, buffered: list, gw: GatewayConn | None = None) -> bool:
        """True when authenticated; False when a linked signer's authentication was refused
        and no owner key is configured (run degraded); raises AuthError otherwise."""
        expiration = self.venue_ms() + STREAM_AUTH_AHEAD_MS
        digest = self._domain.digest(eip712.hash_stream_authentication(self._sender, expiration))
        rid = self._take_id()
        signer = self._stream_signer
        await ep.send_text(wire.encode_authenticate(self._sender, expiration, signer.sign_digest(digest), rid))
        reply = await self._await_reply(ep, rid, buffered)
        if reply.error is None:
            return True
        if signer.address.lower() != self._stream_wallet() and await self._is_linked_signer(gw, signer.address):
            # A linked signer may trade and cancel, but the venue may refuse it here: the
            # cancel path still works, only the order_update stream is lost.
            self._log.error("venue_stream_auth_refused", signer=signer.address, error=reply.error)
            return False
        raise AuthError(f"venue {self.name}: stream authentication refused: {reply.error}",
                        code="stream_auth", venue=self.name)

    async def _is_linked_signer(self, gw: GatewayConn | None, address: str) -> bool:
        data = await self._query(gw, "linked_signer", subaccount=self._sender_hex)
        linked = data.get("linked_signer") if isinstance(data, dict) else None
        return isinstance(linked, str) and linked.lower() == address.lower()

    async def _open_orders_poll(self, gw: GatewayConn, send) -> None:
        """Without order_update: the venue's open orders every open_orders_poll_s."""
        while True:
            await trio.sleep(self.cfg.open_orders_poll_s)
            try:
                orders = await self._fetch_open_orders(gw)
            except VenueRejected as exc:
                self._log.warning("venue_open_orders_poll_failed", code=exc.code, error=str(exc))
                continue
            products = None if not self.cfg.products else frozenset(str(p) for p in self.cfg.products)
            await send.send(OpenOrdersSnapshot(self.name, orders, products, "poll", self._clock.wall_ms(),
                                               self._clock.monotonic_s()))

    async def _subscribe_all(self, ep: wsmod.WsEndpoint, buffered: list, authed: bool = True) -> None:
        ids = []
        # Deposits and withdrawals show up as position_change on the quote product (0).
        streams = STREAMS if authed else tuple(s for s in STREAMS if s != "order_update")
        wanted = [(s, p) for p in self._products for s in streams] + [("position_change", 0)]
        for stream, pid in dict.fromkeys(wanted):
            if True:
                rid = self._take_id()
                ids.append((rid, stream, pid))
                await ep.send_text(wire.encode_subscribe(stream, self._sender, pid, rid))
        for rid, stream, pid in ids:
            reply = await self._await_reply(ep, rid, buffered)
            if reply.error is not None:
                if "auth" in reply.error.lower():
                    raise AuthError(f"venue {self.name}: {stream} subscription refused: {reply.error}",
                                    code="stream_auth", venue=self.name)
                raise VenueRejected(f"subscribe {stream}/{pid} refused: {reply.error}", venue=self.name)

    async def _pinger(self, ep: wsmod.WsEndpoint, send=None) -> None:
        # Protocol pings every ping_interval_s; a pong missing pong_timeout_s after its ping
        # declares the socket dead (a blackholed TCP connection never errors by itself). On
        # the subscription socket (``send`` given) a pong is the account stream's sign of life.
        interval = self.cfg.ping_interval_s
        timeout = self.cfg.pong_timeout_s
        while True:
            await trio.sleep(interval)
            sent_at = trio.current_time()
            await ep.ping()
            with trio.move_on_after(timeout):
                while ep.last_pong_s < sent_at and not ep.closed:
                    await trio.sleep(min(0.05, timeout / 10))
            if ep.last_pong_s < sent_at:
                await ep.abort()
                raise _Lost(f"no pong within {timeout:g} s on {ep.target}")
            if send is not None:
                await self._emit(send, VenueAlive(self.name, self._clock.monotonic_s()))

    async def _stream_reader(self, ep: wsmod.WsEndpoint, send) -> None:
        while True:
            raw = await ep.receive()
            await self._forward(raw, self._clock.monotonic_s(), send)

    @staticmethod
    async def _emit(send, ev) -> None:
        # Into the bounded channel without a scheduler round when it has room (the engine
        # becomes runnable at once and the reader goes straight back to its socket); with
        # the channel full, wait for room: backpressure, never a drop.
        try:
            send.send_nowait(ev)
        except trio.WouldBlock:
            await send.send(ev)

    async def _forward(self, raw, ts: float, send) -> None:
        try:
            msg = wire.parse_stream_bytes(raw)
        except wire.WireError as exc:
            sample = raw[:120] if isinstance(raw, str) else raw[:120].decode("utf-8", "replace")
            await self._emit(send, BadFrame(self.name, str(exc), sample, ts))
            return
        events = wire.to_events(msg, venue=self.name, ts_recv_s=ts, tracker=self._tracker)
        for ev in events:
            await self._emit(send, ev)
        if events:
            if any(isinstance(e, (OrderFilled, PositionObserved)) for e in events):
                self._equity_kick.set()
        elif ts - self._last_alive_s >= ALIVE_MIN_INTERVAL_S:
            self._last_alive_s = ts
            await self._emit(send, VenueAlive(self.name, ts))

    async def _equity_loop(self, gw: GatewayConn, send) -> None:
        interval = self.cfg.equity_poll_interval_s
        last = self._clock.monotonic_s()
        while True:
            with trio.move_on_after(interval):
                await self._equity_kick.wait()
            self._equity_kick = trio.Event()
            now = self._clock.monotonic_s()
            if now - last < EQUITY_MIN_SPACING_S:
                await trio.sleep(EQUITY_MIN_SPACING_S - (now - last))
            wait = self._ip_budget.wait_s(self._sub_weight, self._clock.monotonic_s())
            if wait > 0:
                await trio.sleep(wait)
            last = self._clock.monotonic_s()
            try:
                data = await self._query(gw, "subaccount_info", subaccount=self._sender_hex)
                info = wire.parse_subaccount_info(data)
            except VenueRejected as exc:
                self._log.warning("venue_equity_query_rejected", code=exc.code, error=str(exc))
                continue
            self._tracker.oracle_x18.update(info.oracle_x18)
            await self._emit_positions(send, info)
            await send.send(EquityObserved(self.name, info.equity, "USD", self._clock.wall_ms(),
                                           self._clock.monotonic_s()))

    # =====================================================================================
    # queries
    # =====================================================================================

    async def _query(self, gw: GatewayConn | None, qtype: str, **params):
        weight = self._sub_weight if qtype == "subaccount_info" else QUERY_WEIGHTS.get(qtype, 2)
        self._ip_budget.charge(weight, self._clock.monotonic_s())
        body = wire.encode_query(qtype, **params)
        if gw is not None and gw.alive:
            resp = await gw.request(body, expect_request_type=f"query_{qtype}", timeout_s=self.cfg.request_timeout_s)
        else:
            resp = await self._post(f"{self.cfg.gateway_rest_url}/query", body)
        if not resp.ok:
            raise VenueRejected(f"query {qtype} failed: {resp.error}", code=str(resp.error_code or ""),
                                venue=self.name)
        return resp.data

    async def _post(self, url: str, body: bytes, on_written: Callable[[], None] | None = None) -> wire.GatewayResponse:
        http = self._http
        own = http is None
        if own:
            http = httpx.AsyncClient(timeout=self.cfg.request_timeout_s, verify=shared_ssl_context(),
                                     headers={"Accept-Encoding": "gzip, deflate"})
        try:
            with trio.fail_after(self.cfg.request_timeout_s):
                if on_written is not None:
                    on_written()  # httpx gives no hook after the write; report just before it
                r = await http.post(url, content=body, headers={"Content-Type": "application/json"})
        except (trio.TooSlowError, httpx.HTTPError) as exc:
            raise OutcomeUnknown(f"POST {url}: {type(exc).__name__}", venue=self.name) from None
        finally:
            if own:
                await http.aclose()
        if r.status_code == 403:
            # GET/POST from a blocked IP: {"blocked":true,"reason":"ip_query_only"} (or another
            # reason: fully blocked). Not an envelope; reported as a failure naming the reason.
            try:
                obj = wire.loads(r.content)
            except wire.WireError:
                obj = None
            if isinstance(obj, dict) and obj.get("blocked"):
                return wire.GatewayResponse(False, "", error=f"blocked: {obj.get('reason', '')}")
        try:
            return wire.parse_response_bytes(r.content)
        except wire.WireError as exc:
            raise OutcomeUnknown(f"POST {url}: HTTP {r.status_code}, unparsable body ({exc})", venue=self.name) from None

    # =====================================================================================
    # order-entry lock (venues.base.OrderEntryLock; the logic is in .signer_lock)
    # =====================================================================================

    async def lock_order_entry(self, *, trip_id: int) -> str:
        return await self._lock.lock(trip_id=trip_id)

    async def unlock_order_entry(self, *, operator: str) -> str:
        message = await self._lock.unlock(operator=operator)
        await self._lock.clear_alarm(self._send)
        return message

    async def _execute_link(self, body: bytes) -> wire.GatewayResponse:
        gw = self._gw
        self._persist_spend(LINK_SIGNER_WEIGHT)
        self._budget.charge(LINK_SIGNER_WEIGHT, self._clock.monotonic_s())
        if gw is not None and gw.alive:
            return await gw.request(body, expect_request_type="execute_link_signer",
                                    timeout_s=self.cfg.request_timeout_s)
        return await self._post(f"{self.cfg.gateway_rest_url}/execute", body)

    async def _wait_link_budget(self) -> None:
        # Weight 30 of the wallet's 100 per 10 s, shared with cancels: wait for room rather
        # than draw a 1000 (the executor's deadline bounds the wait).
        wait_s = self._budget.wait_s(LINK_SIGNER_WEIGHT, self._clock.monotonic_s())
        if wait_s > 0:
            await trio.sleep(min(wait_s, RATE_REFUSAL_BLOCK_S))

    async def _archive(self, body: dict):
        """One archive query; None when it does not answer usefully (logged, not raised)."""
        url = self.cfg.archive_url
        http = self._http
        own = http is None
        if own:
            http = httpx.AsyncClient(timeout=self.cfg.request_timeout_s, verify=shared_ssl_context(),
                                     headers={"Accept-Encoding": "gzip, deflate"})
        try:
            with trio.fail_after(self.cfg.request_timeout_s):
                r = await http.post(url, content=wire.dumps(body), headers={"Content-Type": "application/json"})
            if r.status_code != 200:
                self._log.warning("venue_archive_refused", status=r.status_code)
                return None
            return wire.loads(r.content)
        except (trio.TooSlowError, httpx.HTTPError, wire.WireError) as exc:
            self._log.warning("venue_archive_failed", error=type(exc).__name__)
            return None
        finally:
            if own:
                await http.aclose()

    async def _relocked_snapshot(self) -> None:
        """After a re-lock: the venue's open orders, so a tripped engine cancels those placed
        while the strategy's signer was linked."""
        if self._send is None:
            return
        orders = await self._fetch_open_orders(self._gw)
        await self._send.send(OpenOrdersSnapshot(self.name, orders, None, "reconcile", self._clock.wall_ms(),
                                                 self._clock.monotonic_s()))

    async def fetch_open_orders(self) -> tuple[OrderInfo, ...]:
        return await self._fetch_open_orders(self._gw)

    async def _fetch_open_orders(self, gw: GatewayConn | None) -> tuple[OrderInfo, ...]:
        if not self._all_products:
            await self._refresh_products(gw)
        # Every product, not only the configured ones: an order on an unlisted product is open too.
        pids = sorted(set(self._all_products) | set(self.cfg.products))
        try:
            data = await self._query(gw, "orders", sender=self._sender_hex, product_ids=pids)
            engine = [o.to_info(self.name) for o in wire.parse_orders_query(data)]
        except wire.WireError as exc:
            raise OutcomeUnknown(f"orders reply malformed: {exc}", venue=self.name) from None
        return tuple(engine) + await self._fetch_trigger_orders()

    async def _fetch_trigger_orders(self) -> tuple[OrderInfo, ...]:
        recv_time = self.venue_ms() + min(self._nonces.recv_offset_ms, STREAM_AUTH_AHEAD_MS)
        digest = self._domain.digest(eip712.hash_list_trigger_orders(self._sender, recv_time))
        body = wire.encode_list_trigger_orders(self._sender, recv_time, self._exec_signer().sign_digest(digest))
        resp = await self._post(f"{self.cfg.trigger_url}/query", body)
        if not resp.ok:
            raise VenueRejected(f"list_trigger_orders failed: {resp.error}", code=str(resp.error_code or ""),
                                venue=self.name)
        try:
            return tuple(o.to_info(self.name, is_trigger=True) for o in wire.parse_trigger_orders(resp.data))
        except wire.WireError as exc:
            raise OutcomeUnknown(f"trigger orders reply malformed: {exc}", venue=self.name) from None

    # =====================================================================================
    # cancels
    # =====================================================================================

    def budget_available(self, now_s: float) -> int | None:
        return max(0, self._budget.available(now_s))

    def _load_spend(self) -> None:
        """Weight spent before a crash still counts in the venue's window (see spend_log)."""
        assert self._spend is not None
        now_s = self._clock.monotonic_s()
        loaded = self._spend.load(self._clock.wall_ms())
        if loaded.unreadable:
            # Spent, amount unknown: assume the worst for one (short) window.
            self._log.warning("venue_spend_log_unreadable", path=str(self._spend.path))
            self._budget.refused(now_s, RATE_REFUSAL_BLOCK_S)
            return
        for age_s, weight in loaded.spent:
            self._budget.charge(weight, now_s - age_s)
        if loaded.blocked_for_s > 0:
            self._budget.refused(now_s, loaded.blocked_for_s)
        if loaded.spent or loaded.blocked_for_s:
            self._log.info("venue_spend_restored", weight=sum(w for _, w in loaded.spent),
                           blocked_for_s=round(loaded.blocked_for_s, 3))

    def _persist_spend(self, weight: int) -> None:
        if self._spend is not None and weight:
            self._spend.record(self._clock.wall_ms(), weight)

    # =====================================================================================
    # venue clock
    # =====================================================================================

    def _mono_ms(self) -> float:
        return self._clock.monotonic_s() * 1000.0

    def venue_ms(self) -> int:
        return self._vclock.venue_ms(mono_now_ms=self._mono_ms(), wall_now_ms=self._clock.wall_ms())

    def clock_skew_ms(self) -> int | None:
        return self._vclock.skew_ms(mono_now_ms=self._mono_ms(), wall_now_ms=self._clock.wall_ms())

    async def _sync_clock(self, *, why: str) -> bool:
        """One ``GET {gw}/time`` sample (bare JSON number, server ms). Never raises."""
        async with self._clock_lock:
            http = self._http
            if http is None:
                return False
            t0 = self._mono_ms()
            try:
                with trio.fail_after(self.cfg.request_timeout_s):
                    r = await http.get(f"{self.cfg.gateway_rest_url}/time")
                server_ms = int(wire.loads(r.content)) if r.status_code == 200 else None
            except (trio.TooSlowError, httpx.HTTPError, wire.WireError, ValueError, TypeError) as exc:
                self._log.warning("venue_clock_sync_failed", why=why, error=type(exc).__name__)
                return False
            if server_ms is None or server_ms <= 0:
                self._log.warning("venue_clock_sync_failed", why=why, status=r.status_code)
                return False
            self._vclock.add(mono_send_ms=t0, mono_recv_ms=self._mono_ms(), server_ms=server_ms)
        await self._check_skew()
        return True

    async def _check_skew(self) -> None:
        if self._send is None:
            return
        report = self._skew_alarm.update(self.clock_skew_ms())
        if report is not None:
            await self._send.send(VenueDegraded(self.name, "clock_skew", report.message, active=report.active,
                                                ts_recv_s=self._clock.monotonic_s()))

    async def _clock_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.clock_sync_interval_s)
            await self._sync_clock(why="periodic")

    async def _check_ip(self) -> None:
        """``GET {gw}/ip``: 403 with reason ip_query_only = this IP may query but not cancel."""
        http = self._http
        if http is None:
            return
        try:
            with trio.fail_after(self.cfg.request_timeout_s):
                r = await http.get(f"{self.cfg.gateway_rest_url}/ip")
        except (trio.TooSlowError, httpx.HTTPError):
            return
        if r.status_code == 404:
            return  # not served here: nothing learned
        reason = ""
        if r.status_code == 403:
            try:
                obj = wire.loads(r.content)
                reason = str(obj.get("reason", "")) if isinstance(obj, dict) else ""
            except wire.WireError:
                reason = "blocked"
        await self._set_query_only(r.status_code == 403, f"GET /ip: HTTP {r.status_code} {reason}".strip())

    async def _set_query_only(self, on: bool, why: str) -> None:
        if on == self._query_only or self._send is None:
            self._query_only = on
            return
        self._query_only = on
        msg = (f"the venue refuses executes from this IP ({why}); cancels cannot go "
               f"through until it is lifted (use another egress IP)") if on else ""
        await self._send.send(VenueDegraded(self.name, "venue_query_only", msg, active=on,
                                            ts_recv_s=self._clock.monotonic_s()))

    async def cancel_all_orders(self, *, include_triggers: bool, trip_id: int, on_sent: OnSent) -> list[CancelCompleted]:
        return await self._cancel_products_both((), "cancel_all_orders", include_triggers, trip_id, on_sent)

    async def cancel_products(
        self, products: Sequence[str], *, include_triggers: bool, trip_id: int, on_sent: OnSent
    ) -> list[CancelCompleted]:
        try:
            pids = tuple(sorted({int(p) for p in products}))
        except ValueError:
            return [self._completed(trip_id, "cancel_products", "-", "rejected", code="invalid_product",
                                    message=f"not a product id: {list(products)}")]
        if not pids:
            return []
        return await self._cancel_products_both(pids, "cancel_products", include_triggers, trip_id, on_sent)

    async def _cancel_products_both(self, pids, verb, include_triggers, trip_id, on_sent) -> list[CancelCompleted]:
        results: list[CancelCompleted] = []

        async def engine():
            results.extend(await self._cancel_products_once(pids, verb, False, trip_id, on_sent))

        async def trigger():
            results.extend(await self._cancel_products_once(pids, verb + ":trigger", True, trip_id, on_sent))

        if not include_triggers:
            await engine()  # inline: no task hop before the request is on the wire
            return results
        async with trio.open_nursery() as n:
            n.start_soon(trigger)  # runs once this task yields, i.e. after the engine-plane send
            await engine()
        return results

    async def _cancel_products_once(self, pids, verb, trigger, trip_id, on_sent) -> list[CancelCompleted]:
        weight = 0 if trigger else (50 if not pids else 5 * len(pids))

        def build(nonce: Nonce):
            digest = self._domain.digest(eip712.hash_cancellation_products(self._sender, pids, nonce.value))
            body = wire.encode_cancel_product_orders(self._sender, pids, nonce.value,
                                                     self._exec_signer().sign_digest(digest))
            return body, digest

        return await self._attempts(verb, build, "execute_cancel_product_orders", trigger, weight, trip_id, on_sent,
                                    products=tuple(str(p) for p in pids), n_orders=None, digests=())

    async def cancel_orders(self, orders: Sequence[OrderRef], *, trip_id: int, on_sent: OnSent) -> list[CancelCompleted]:
        groups: dict[bool, list[tuple[int, str]]] = {False: [], True: []}
        bad = []
        for o in orders:
            try:
                groups[o.is_trigger].append((int(o.product), o.venue_order_id.lower()))
            except ValueError:
                bad.append(o.venue_order_id)
        results: list[CancelCompleted] = []
        if bad:
            results.append(self._completed(trip_id, "cancel_orders", "-", "rejected", code="invalid_product",
                                           message=f"{len(bad)} orders with a non-numeric product"))
        size = self.capabilities.max_orders_per_request

        batches = [(items[i:i + size], trigger) for trigger, items in groups.items()
                   for i in range(0, len(items), size)]
        if not batches:
            return results
        if len(batches) == 1:
            # The common trip: one request, sent from this task (no task hop before the wire).
            await self._cancel_digests(batches[0][0], batches[0][1], trip_id, on_sent, results)
            return results
        async with trio.open_nursery() as n:
            for batch, trigger in batches[1:]:
                n.start_soon(self._cancel_digests, batch, trigger, trip_id, on_sent, results)
            # The first batch from this task: on the wire before the others start.
            await self._cancel_digests(batches[0][0], batches[0][1], trip_id, on_sent, results)
        return results

    async def _cancel_digests(self, items, trigger, trip_id, on_sent, results) -> None:
        verb = "cancel_orders:trigger" if trigger else "cancel_orders"
        remaining = list(items)
        # A 2020 names the digests that are gone; the rest are re-cancelled with a fresh nonce.
        for _ in range(MAX_TIME_RETRIES):
            pids = [p for p, _ in remaining]
            digests = [bytes.fromhex(d[2:]) for _, d in remaining]

            def build(nonce: Nonce, pids=pids, digests=digests):
                digest = self._domain.digest(eip712.hash_cancellation(self._sender, pids, digests, nonce.value))
                body = wire.encode_cancel_orders(self._sender, pids, digests, nonce.value,
                                                 self._exec_signer().sign_digest(digest))
                return body, digest

            out = await self._attempts(verb, build, "execute_cancel_orders", trigger,
                                       0 if trigger else len(remaining), trip_id, on_sent,
                                       products=tuple(sorted({str(p) for p in pids})), n_orders=len(remaining),
                                       digests=tuple(d for _, d in remaining))
            results.extend(out)
            last = out[-1]
            if last.code != str(wire.ORDER_NOT_FOUND) or len(remaining) <= 1:
                return
            gone = set(last.gone_ids)
            left = [(p, d) for p, d in remaining if d not in gone]
            if not left or len(left) == len(remaining):
                return
            remaining = left

    def _completed(self, trip_id, verb, request_id, outcome, *, code="", message="", cancelled=(), gone=(),
                   t0: float | None = None, retry_after_s: float | None = None,
                   venue_state: str = "") -> CancelCompleted:
        now = self._clock.monotonic_s()
        return CancelCompleted(self.name, trip_id, verb, request_id, outcome, code, message, tuple(cancelled),
                               tuple(gone), 0.0 if t0 is None else now - t0, now, retry_after_s, venue_state)

    async def _attempts(self, verb, build, expect_rt, trigger, weight, trip_id, on_sent, *, products, n_orders,
                        digests) -> list[CancelCompleted]:
        out: list[CancelCompleted] = []
        for attempt in range(1, MAX_TIME_RETRIES + 1):
            if weight:
                wait_s = self._budget.wait_s(weight, self._clock.monotonic_s())
                if wait_s > 0:
                    # The budget says the venue would refuse it: not sent (the engine retries
                    # when it fits; after a refusal that is the window's one probe).
                    out.append(self._completed(trip_id, verb, "-", "rate_limited", code="held",
                                               message=f"not sent: weight {weight} does not fit the wallet "
                                                       f"budget for {wait_s:.1f} s", retry_after_s=wait_s))
                    return out
            nonce = self._nonces.next(self.venue_ms())  # fresh per attempt, at the attempt, venue time
            body, digest = build(nonce)
            request_id = str(nonce.value)
            gw = self._gw
            transport = "trigger" if trigger else ("ws" if gw is not None and gw.alive else "rest")

            def written(nonce=nonce, digest=digest, attempt=attempt, transport=transport, request_id=request_id):
                # Built once the request is on the wire: nothing but the send before it.
                on_sent(CancelAttempted(
                    self.name, trip_id, verb, request_id, n_orders, products,
                    detail={"nonce": request_id, "recv_time_ms": nonce.recv_time_ms,
                            "digest": wire.hex0x(digest), "attempt": attempt, "transport": transport},
                    ts_sent_s=self._clock.monotonic_s(),
                ))
                self._persist_spend(weight)

            t0 = self._clock.monotonic_s()
            if weight:
                self._budget.charge(weight, t0)
            try:
                if transport == "ws":
                    resp = await gw.request(body, expect_request_type=expect_rt,
                                            timeout_s=self.cfg.request_timeout_s, on_written=written)
                elif transport == "rest":
                    resp = await self._post(f"{self.cfg.gateway_rest_url}/execute", body, written)
                else:
                    resp = await self._post(f"{self.cfg.trigger_url}/execute", body, written)
            except OutcomeUnknown as exc:
                out.append(self._completed(trip_id, verb, request_id, "unknown", message=str(exc), t0=t0))
                return out
            if resp.ok:
                if self._query_only and not trigger:
                    await self._set_query_only(False, "an execute was accepted")
                try:
                    cancelled = wire.parse_cancelled_orders(resp.data)
                except wire.WireError as exc:
                    out.append(self._completed(trip_id, verb, request_id, "unknown",
                                               message=f"success with malformed data: {exc}", t0=t0))
                    return out
                out.append(self._completed(trip_id, verb, request_id, "ok", cancelled=cancelled, t0=t0))
                return out
            code = resp.error_code
            scode = str(code) if code is not None else ""
            if code in wire.LATE_EARLY_CODES:
                # Our recv_time is outside the venue's window: its clock moved against ours.
                # Re-measure, then a fresh nonce on the venue's time.
                self._log.warning("venue_cancel_recv_time", code=code, verb=verb, attempt=attempt,
                                  skew_ms=self.clock_skew_ms())
                await self._sync_clock(why=f"error {code}")
                if attempt < MAX_TIME_RETRIES:
                    out.append(self._completed(trip_id, verb, request_id, "rejected", code=scode,
                                               message=f"{resp.error} (clock re-measured; retried with a fresh "
                                                       f"nonce)", t0=t0))
                    continue
            if code in wire.RATE_LIMIT_CODES:
                now = self._clock.monotonic_s()
                # The strategy spends the same wallet budget unseen: assume it is exhausted
                # until at least the 10 s window has rolled over.
                retry_after = max(self._budget.wait_s(max(weight, 1), now), RATE_REFUSAL_BLOCK_S)
                self._budget.refused(now, retry_after)
                if self._spend is not None:
                    self._spend.record_block(self._clock.wall_ms(), retry_after)
                out.append(self._completed(trip_id, verb, request_id, "rate_limited", code=scode,
                                           message=f"{resp.error}; retry after ~{retry_after:.1f} s", t0=t0,
                                           retry_after_s=retry_after))
                return out
            if code in MAINTENANCE_CODES:
                out.append(self._completed(trip_id, verb, request_id, "unknown", code=scode,
                                           message=f"maintenance: {resp.error}", t0=t0, venue_state="maintenance"))
                return out
            if code is None and any(m in resp.error.lower() for m in QUERY_ONLY_MARKERS):
                await self._set_query_only(True, resp.error)
                out.append(self._completed(trip_id, verb, request_id, "unknown", code="ip_query_only",
                                           message=resp.error, t0=t0, venue_state="query_only"))
                return out
            if code == wire.ORDER_NOT_FOUND:
                named = {d.lower() for d in _HEX_DIGEST.findall(resp.error)} & set(digests)
                gone = tuple(d for d in digests if d in named) if named else digests
                out.append(self._completed(trip_id, verb, request_id, "ok", code=scode, message=resp.error,
                                           gone=gone, t0=t0))
                return out
            if code in wire.AUTH_CODES:
                self._log.error("venue_cancel_auth", code=code, verb=verb)
                if code == 2028 and self._owner is not None and not self._signer_refused \
                        and self._exec_signer() is self._signer:
                    # Our linked signer was replaced: the owner's key always verifies.
                    self._signer_refused = True
                    if attempt < MAX_TIME_RETRIES:
                        out.append(self._completed(trip_id, verb, request_id, "auth", code=scode,
                                                   message=f"{resp.error} (signer {self._signer.address} refused; "
                                                           f"retried signed by the owner)", t0=t0))
                        continue
                out.append(self._completed(trip_id, verb, request_id, "auth", code=scode, message=resp.error, t0=t0))
                return out
            out.append(self._completed(trip_id, verb, request_id, "rejected", code=scode, message=resp.error, t0=t0))
            return out
        return out
