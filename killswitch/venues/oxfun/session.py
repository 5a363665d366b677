"""OX.FUN venue session: the thin trio shell around ``wire`` (WS v2 + REST v3).

One websocket per session: login, subscribe (order/balance/position + tickers), reconcile
over REST, then a reader that only reads, stamps, parses and forwards. Cancels by id go
over the open websocket (``cancelorders``, <= 20 per frame, paced under 50 msg/s);
bulk cancels are REST ``DELETE /v3/orders/cancel-all`` (there is no WS cancel-all). When
the websocket is down, by-id cancels fall back to REST ``DELETE /v3/orders/cancel``
(<= 8 orders per request). See README "Venue: OX.FUN".
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Callable, Sequence

import httpx
import orjson
import structlog
import trio

from killswitch.clock import Clock
from killswitch.model import (
    BadFrame,
    CancelAttempted,
    CancelCompleted,
    CloseReason,
    EquityObserved,
    EquityUnavailable,
    MarkPriceObserved,
    OpenOrdersSnapshot,
    OrderClosed,
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
from killswitch.net.tls import shared_ssl_context
from killswitch.venues.base import (
    AuthError,
    OnSent,
    OutcomeUnknown,
    OxfunConfig,
    RateBudget,
    RateLimited,
    VenueCapabilities,
    VenueRejected,
)
from killswitch.venues.clock_offset import SkewAlarm, VenueClock
from killswitch.venues.oxfun import wire
from killswitch.venues.oxfun.equity import EquityBook
from killswitch.net.ws import WsClosed, WsHandshakeRejected
from killswitch.net.ws import connect as ws_connect

CAPABILITIES = VenueCapabilities(
    cancel_all_cost=1,  # one REST request
    cancel_products_cost_per_product=1,  # REST cancel-all per market
    cancel_orders_cost_per_request=1,  # one WS message
    cancel_orders_cost_per_order=0,
    max_orders_per_request=wire.MAX_ORDERS_PER_BATCH,
    has_trigger_plane=False,  # untriggered stops are orders on the same plane
    prefer_by_id_below=100,
)

WS_MSGS_PER_S = 50
# The venue counts messages as it receives them: send-time jitter (a busy host, the network)
# can put 51 receipts into a 1 s window we saw as 50 sends. Counting over a window this much
# longer keeps any receipt window within the limit while the jitter stays below it.
WS_WINDOW_MARGIN_S = 0.1
REST_REQ_PER_S = 100
REST_REQ_PER_5MIN = 2500
REST_WINDOW_MARGIN_S = 0.5  # see RestLimiter
REST_ORDINARY_SHARE = 0.8  # of each REST window; the rest is kept for cancels
REST_CANCEL_MAX_ORDERS = 8
ALIVE_MIN_INTERVAL_S = 0.5
FORWARD_BATCH = 32  # events forwarded between reader checkpoints (bounds the engine's lag in a burst)
EQUITY_COALESCE_S = 0.1
REST_REFUSAL_BLOCK_S = 1.0  # REST limits are per second (and 5 min); 429 without Retry-After
WS_REFUSAL_BLOCK_S = 1.0  # 20007: the WS limit is 50 messages per second
UNAUTHED_MSG_INTERVAL_S = 1.05  # unauthenticated WS: 1 message/s (a re-login waits for it)


class RestLimiter:
    """OX.FUN's REST limits (100 req/s, 2500 per 5 min) count per IP, not per API key: every
    session of one daemon that talks to the same REST host shares one of these (see
    ``venues.registry.make_session``), so 50 keys cannot together exceed the IP's budget.

    A request is charged when it is cleared to go, but reaches the venue a little later
    (building, signing, the event loop busy with a burst of pushes), and those delays vary:
    requests charged a full second apart can arrive closer together. The 1 s window is
    therefore accounted as ``1 + REST_WINDOW_MARGIN_S`` seconds, which keeps the venue's
    count within its limit for send jitter up to that margin (0.2 s was not enough: a
    50-account trip's second round, sent while the daemon was busy with 100k order pushes,
    drew two 429s). Sustained, that is 100 requests per 1.5 s per IP.

    Cancels have a share of their own: every other request (reconcile, drift polls, equity,
    verification) must also fit ``ordinary``, the same windows at REST_ORDINARY_SHARE of the
    caps, so however many accounts poll, the rest of each window is left for cancels.
    """

    def __init__(self) -> None:
        window_s = 1.0 + REST_WINDOW_MARGIN_S
        self.budget = RateBudget([(window_s, REST_REQ_PER_S), (300.0, REST_REQ_PER_5MIN)])
        self.ordinary = RateBudget([(window_s, int(REST_REQ_PER_S * REST_ORDINARY_SHARE)),
                                    (300.0, int(REST_REQ_PER_5MIN * REST_ORDINARY_SHARE))])
        self.lock = trio.Lock()

    def wait_s(self, now_s: float, *, cancel: bool) -> float:
        wait_s = self.budget.wait_s(1, now_s)
        return wait_s if cancel else max(wait_s, self.ordinary.wait_s(1, now_s))

    def charge(self, now_s: float, *, cancel: bool) -> None:
        self.budget.charge(1, now_s)
        if not cancel:
            self.ordinary.charge(1, now_s)


class _SessionEnd(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _LoginRefused(_SessionEnd):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"login refused: code {code} {message}".strip())
        self.code = code
        self.message = message


class _ClockRefused(_SessionEnd):
    """Login refused for its timestamp even when signed with the venue's own time."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"login refused for its timestamp: code {code} {message}".strip())
        self.code = code


class _SendFailed(Exception):
    pass


class _RestRateLimited(OutcomeUnknown, RateLimited):
    """Raised by fetch_open_orders: unknown (retry later) and rate limited."""


class _RestAuthRejected(VenueRejected, AuthError):
    pass


# --------------------------------------------------------------------------------------
# Per-connection state
# --------------------------------------------------------------------------------------


class _TagWaiter:
    """Collects replies carrying one tag until ``expected`` arrived or the socket died."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.replies: list = []
        self.done = trio.Event()

    def add(self, item: Any) -> None:
        self.replies.append(item)
        if len(self.replies) >= self.expected:
            self.done.set()

    def abort(self) -> None:
        self.done.set()


class _CancelBatch:
    """One ``cancelorders`` frame: acks per element, then OrderClosed / CANCEL 100004 per id."""

    def __init__(self, tag: str, refs: Sequence[OrderRef]) -> None:
        self.tag = tag
        self.ids = [r.venue_order_id for r in refs]
        self.acks: dict[str, wire.CancelAck] = {}
        self.request_error: wire.CancelAck | wire.OrderCommandAck | None = None
        self.cancelled: set[str] = set()
        self.gone: set[str] = set()
        self.acked = trio.Event()
        self.resolved = trio.Event()
        self.disconnected = False

    def on_ack(self, ack: wire.CancelAck | wire.OrderCommandAck) -> None:
        if isinstance(ack, wire.CancelAck) and ack.order_id is not None and ack.order_id in self.ids:
            self.acks[ack.order_id] = ack
        elif not ack.submitted:
            self.request_error = ack
        self._check()

    def on_closed(self, order_id: str, reason: CloseReason) -> None:
        (self.cancelled if reason is CloseReason.CANCELED else self.gone).add(order_id)
        self._check()

    def on_gone(self, order_id: str) -> None:
        self.gone.add(order_id)
        self.cancelled.discard(order_id)
        self._check()

    def abort(self) -> None:
        self.disconnected = True
        self.acked.set()
        self.resolved.set()

    def _check(self) -> None:
        if self.request_error is not None or len(self.acks) >= len(self.ids):
            self.acked.set()
        pending = [i for i in self.ids if i not in self.cancelled and i not in self.gone
                   and not (i in self.acks and not self.acks[i].submitted)]
        if self.acked.is_set() and not pending:
            self.resolved.set()


@dataclass
class _Live:
    ws: Any
    tags: wire.TagCounter = field(default_factory=lambda: wire.TagCounter("k"))
    waiters: dict = field(default_factory=dict)  # tag -> _TagWaiter | _CancelBatch
    by_id: dict = field(default_factory=dict)  # order id -> list[_CancelBatch]
    buffer: list | None = field(default_factory=list)  # events held back until the snapshot is out
    dead: trio.Event = field(default_factory=trio.Event)
    reason: str = ""
    rx_event: trio.Event = field(default_factory=trio.Event)
    equity_dirty: trio.Event = field(default_factory=trio.Event)
    tickers: set = field(default_factory=set)
    tickers_changed: trio.Event = field(default_factory=trio.Event)

    def fail(self, reason: str) -> None:
        if self.dead.is_set():
            return
        self.reason = reason
        self.dead.set()
        for w in list(self.waiters.values()):
            w.abort()
        self.waiters.clear()
        self.by_id.clear()

    def register(self, batch: _CancelBatch) -> None:
        self.waiters[batch.tag] = batch
        for i in batch.ids:
            self.by_id.setdefault(i, []).append(batch)

    def unregister(self, batch: _CancelBatch) -> None:
        self.waiters.pop(batch.tag, None)
        for i in batch.ids:
            lst = self.by_id.get(i)
            if lst and batch in lst:
                lst.remove(batch)
                if not lst:
                    del self.by_id[i]


@dataclass(frozen=True, slots=True)
class _RestReply:
    outcome: str  # ok | rejected | unknown | rate_limited | auth
    obj: Any = None
    code: str = ""
    message: str = ""
    retry_after_s: float | None = None
    venue_state: str = ""  # maintenance: refused for the venue's own state (see CancelCompleted)


# --------------------------------------------------------------------------------------
# Session
# --------------------------------------------------------------------------------------


class OxfunSession:
    def __init__(
        self,
        cfg: OxfunConfig,
        *,
        api_key: Secret,
        api_secret: Secret,
        clock: Clock,
        close_grace_s: float = 0.5,
        rng: random.Random | None = None,
        rest_limiter: RestLimiter | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.capabilities = CAPABILITIES
        self._api_key = api_key
        self._api_secret = api_secret
        self._clock = clock
        self._close_grace_s = close_grace_s
        self._rng = rng or random.Random()
        self._log = structlog.get_logger("killswitch.venue.oxfun").bind(venue=cfg.name)
        self._ws_budget = RateBudget([(1.0 + WS_WINDOW_MARGIN_S, WS_MSGS_PER_S)])
        limiter = rest_limiter or RestLimiter()
        self._rest_limiter = limiter
        self._rest_budget = limiter.budget
        self._ws_pace_lock = trio.Lock()
        self._rest_pace_lock = limiter.lock
        self._nonce_seq = itertools.count()
        self._live: _Live | None = None
        self._http: httpx.AsyncClient | None = None
        self._book = EquityBook()
        self._last_alive_s = float("-inf")
        self._equity_warned_s = float("-inf")
        self.connections_made = 0
        self._unyielded = 0  # events forwarded without a checkpoint since the last one
        self._vclock = VenueClock()
        self._clock_resync = trio.Event()  # set on a timestamp refusal: re-measure now
        self._skew_alarm = SkewAlarm(cfg.clock_skew_alarm_s)
        self._send: trio.MemorySendChannel | None = None

    # ----------------------------------------------------------------------------------
    # run / connection lifecycle
    # ----------------------------------------------------------------------------------

    async def run(self, send: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        started = False
        failures = 0
        self._send = send

        def on_up() -> None:
            nonlocal started, failures
            failures = 0
            if not started:
                started = True
                task_status.started()

        try:
            while True:
                was_up = False
                try:
                    was_up = await self._connect_once(send, on_up)
                    reason = "closed"
                except _ClockRefused as exc:
                    # Not a credentials problem: say so, keep retrying (never exit 3 for it).
                    self._log.error("login_clock_refused", code=exc.code, skew_ms=self.clock_skew_ms())
                    await send.send(VenueDegraded(self.name, "clock_skew",
                                                  f"login refused for its timestamp ({exc.code}) even with "
                                                  f"venue time; host clock skew {self.clock_skew_ms()} ms",
                                                  active=True, ts_recv_s=self._clock.monotonic_s()))
                    reason = exc.reason
                except _LoginRefused as exc:
                    if not started:
                        raise AuthError(
                            f"OX.FUN venue {self.name!r}: login refused by the venue with code {exc.code}"
                            f" ({exc.message or 'no message'}); check the API key and secret",
                            code=exc.code, venue=self.name,
                        ) from None
                    self._log.error("venue_auth_failed", code=exc.code, message=exc.message)
                    await send.send(VenueAuthFailed(self.name, exc.code, exc.message, self._clock.monotonic_s()))
                    reason = exc.reason
                except _SessionEnd as exc:
                    was_up = getattr(exc, "was_up", False)
                    reason = exc.reason
                except (OSError, WsHandshakeRejected, WsClosed, trio.TooSlowError, httpx.HTTPError) as exc:
                    reason = f"{type(exc).__name__}: {str(exc)[:120]}"
                if was_up:
                    await send.send(VenueDisconnected(self.name, reason, self._clock.monotonic_s()))
                failures += 1
                delay = self._backoff_s(failures)
                self._log.warning("venue_disconnected", reason=reason, reconnect_in_s=round(delay, 3), was_up=was_up)
                await trio.sleep(delay)
        finally:
            self._live = None
            if self._http is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await self._http.aclose()
                self._http = None

    def _backoff_s(self, failures: int) -> float:
        return self.cfg.backoff.delay_s(failures - 1, self._rng)

    async def _connect_once(self, send: trio.MemorySendChannel, on_up: Callable[[], None]) -> bool:
        """One connection's life. Returns/raises when it is over; the bool says it was up."""
        cfg = self.cfg
        self._log.info("venue_connecting", url=cfg.ws_url)
        # The in-repo wsproto endpoint, not trio-websocket: the reader task reads the socket
        # itself, so a frame reaches the parser without a hop through a library reader task
        # and its queue (measured on the trip path, README "Benchmarks").
        ws = await ws_connect(cfg.ws_url, deflate=False, timeout_s=cfg.request_timeout_s,
                              dead_after_s=cfg.ping_interval_s + cfg.pong_timeout_s)
        try:
            live = _Live(ws)
            up = False
            error: _SessionEnd | None = None
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, live, send)
                    try:
                        await self._login(live)
                        await self._subscribe(live, [*wire.private_channels(), *(wire.ticker_channel(m) for m in cfg.markets)])
                        live.tickers.update(cfg.markets)
                        self._live = live
                        await self._reconcile(live, send)
                        await send.send(VenueConnected(self.name, self._clock.monotonic_s()))
                        up = True
                        self.connections_made += 1
                        self._log.info("venue_connected")
                        on_up()
                        nursery.start_soon(self._pinger, live)
                        nursery.start_soon(self._clock_loop, live)
                        nursery.start_soon(self._poller, live, send)
                        nursery.start_soon(self._equity_loop, live, send)
                        nursery.start_soon(self._ticker_sync, live)
                        live.equity_dirty.set()
                        live.tickers_changed.set()
                        await live.dead.wait()
                        error = _SessionEnd(live.reason or "connection lost")
                    except _SessionEnd as exc:
                        error = exc
                    live.fail(error.reason if error else "closed")
                    nursery.cancel_scope.cancel()
            finally:
                if self._live is live:
                    self._live = None
                live.fail("session ended")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                await ws.aclose()
        if error is not None:
            error.was_up = up  # type: ignore[attr-defined]
            raise error
        return up

    async def _ws_send(self, live: _Live, text: str) -> None:
        """Paced under the venue's 50 msg/s; raises _SendFailed when the socket is gone."""
        if live.dead.is_set():
            raise _SendFailed(live.reason)
        now = self._clock.monotonic_s()
        if not self._ws_pace_lock.locked() and self._ws_budget.wait_s(1, now) == 0:
            # Fast path, no yield: check and charge are atomic between trio checkpoints, and
            # acquiring even a free trio.Lock costs a scheduler round on the trip path.
            self._ws_budget.charge(1, now)
        else:
            async with self._ws_pace_lock:
                now = self._clock.monotonic_s()
                wait_s = self._ws_budget.wait_s(1, now)
                if wait_s > 0:
                    await trio.sleep(wait_s)
                self._ws_budget.charge(1, self._clock.monotonic_s())
        try:
            await live.ws.send_text(text)
        except WsClosed as exc:
            live.fail(f"send failed: {type(exc).__name__}")
            raise _SendFailed(str(exc)) from None

    async def _request(self, live: _Live, text: str, tag: str, expected: int) -> list:
        waiter = _TagWaiter(expected)
        live.waiters[tag] = waiter
        try:
            await self._ws_send(live, text)
        except _SendFailed as exc:
            raise _SessionEnd(f"send failed: {exc}") from None
        with trio.move_on_after(self.cfg.request_timeout_s):
            await waiter.done.wait()
        live.waiters.pop(tag, None)
        if live.dead.is_set():
            raise _SessionEnd(live.reason)
        if len(waiter.replies) < expected:
            raise _SessionEnd(f"no reply to {tag} within {self.cfg.request_timeout_s}s")
        return waiter.replies

    # ---- venue clock --------------------------------------------------------------------

    def _mono_ms(self) -> float:
        return self._clock.monotonic_s() * 1000.0

    def venue_ms(self) -> int:
        """The venue's clock now: signing timestamps, recvWindow timestamps."""
        return self._vclock.venue_ms(mono_now_ms=self._mono_ms(), wall_now_ms=self._clock.wall_ms())

    def clock_skew_ms(self) -> int | None:
        return self._vclock.skew_ms(mono_now_ms=self._mono_ms(), wall_now_ms=self._clock.wall_ms())

    async def _clock_sample(self, t0_ms: float, server_ms: int | None) -> None:
        if server_ms is None:
            return
        self._vclock.add(mono_send_ms=t0_ms, mono_recv_ms=self._mono_ms(), server_ms=server_ms)
        await self._check_skew()

    async def _check_skew(self) -> None:
        if self._send is None:
            return
        report = self._skew_alarm.update(self.clock_skew_ms())
        if report is not None:
            await self._send.send(VenueDegraded(self.name, "clock_skew", report.message, active=report.active,
                                                ts_recv_s=self._clock.monotonic_s()))

    async def _clock_probe(self, live: _Live) -> None:
        """Re-measure: a subscribe to a channel already followed is idempotent, and its reply
        carries the venue's timestamp (the venue has no time endpoint)."""
        tag = live.tags.next()
        t0 = self._mono_ms()
        replies = await self._request(live, wire.encode_subscribe([wire.private_channels()[0]], tag), tag, 1)
        await self._clock_sample(t0, getattr(replies[0], "server_ms", None))

    async def _login(self, live: _Live) -> None:
        # Sent at once: the Welcome frame is not waited for (the venue accepts either order).
        # Signed with venue time; a timestamp refusal carries the venue's clock in its own
        # timestamp, so the login is re-signed once with that before anything is concluded.
        for attempt in (1, 2):
            tag = live.tags.next()
            t0 = self._mono_ms()
            text = wire.encode_login(self._api_key.reveal(), self._api_secret.reveal(), self.venue_ms(), tag)
            (ack,) = await self._request(live, text, tag, 1)
            await self._clock_sample(t0, getattr(ack, "server_ms", None))
            if isinstance(ack, wire.LoginAck) and ack.success:
                return
            code = getattr(ack, "code", "") or "unknown"
            if code in wire.TIMESTAMP_CODES:
                if attempt == 1 and getattr(ack, "server_ms", None) is not None:
                    self._log.warning("login_timestamp_refused", code=code, skew_ms=self.clock_skew_ms())
                    # Before login the venue takes 1 message/s on this socket.
                    await trio.sleep(max(0.0, UNAUTHED_MSG_INTERVAL_S - (self._mono_ms() - t0) / 1000.0))
                    continue
                raise _ClockRefused(code, getattr(ack, "message", ""))
            raise _LoginRefused(code, getattr(ack, "message", ""))

    async def _subscribe(self, live: _Live, channels: list[str]) -> None:
        tag = live.tags.next()
        t0 = self._mono_ms()
        replies = await self._request(live, wire.encode_subscribe(channels, tag), tag, len(channels))
        if replies:
            await self._clock_sample(t0, getattr(replies[0], "server_ms", None))
        for r in replies:
            if not getattr(r, "success", False):
                raise _SessionEnd(f"subscribe refused: code {getattr(r, 'code', '')} {getattr(r, 'message', '')}".strip())

    async def _reconcile(self, live: _Live, send: trio.MemorySendChannel) -> None:
        results: dict[str, _RestReply] = {}

        async def get(name: str, path: str) -> None:
            results[name] = await self._rest("GET", path)

        async with trio.open_nursery() as n:
            n.start_soon(get, "orders", "/v3/orders/working")
            n.start_soon(get, "balances", "/v3/balances")
            n.start_soon(get, "positions", "/v3/positions")
        for name, reply in results.items():
            if reply.outcome != "ok":
                if reply.outcome == "auth":
                    raise _LoginRefused(reply.code or "auth", f"REST {name}: {reply.message}")
                raise _SessionEnd(f"reconcile {name} failed: {reply.outcome} {reply.code} {reply.message}".strip())
        try:
            orders = wire.parse_working_orders(results["orders"].obj, self.name)
            balances = wire.parse_balances(results["balances"].obj)
            positions = wire.parse_positions(results["positions"].obj)
        except wire.WireError as exc:
            raise _SessionEnd(f"reconcile reply malformed: {exc}") from None
        self._book.apply_balances(balances, replace=True)
        before = set(self._book.positions)
        self._book.apply_positions(positions, replace=True)
        now = self._clock.monotonic_s()
        await send.send(OpenOrdersSnapshot(self.name, orders, None, "reconcile", self._clock.wall_ms(), now))
        # Positions held at start-up or changed while disconnected reach the rules now.
        await self._emit_positions(send, before)
        await self._emit_equity(send)
        # Pushes that arrived while the snapshot was in flight go after it, in order.
        while live.buffer:
            held, live.buffer = live.buffer, []
            for ev in held:
                await send.send(ev)
        live.buffer = None

    # ----------------------------------------------------------------------------------
    # Background tasks of a live connection
    # ----------------------------------------------------------------------------------

    async def _reader(self, live: _Live, send: trio.MemorySendChannel) -> None:
        try:
            while True:
                text = await live.ws.receive()
                ts_recv_s = self._clock.monotonic_s()
                live.rx_event.set()
                try:
                    items = wire.parse_frame(text, self.name, ts_recv_s)
                except Exception as exc:  # a parser bug must not kill the feed: report it loudly
                    self._log.error("parser_bug", error=type(exc).__name__)
                    items = [BadFrame(self.name, f"parser bug: {type(exc).__name__}", str(text)[:160], ts_recv_s)]
                forwarded = False
                for item in items:
                    ev = self._dispatch(live, item)
                    if ev is not None:
                        forwarded = True
                        await self._forward(live, send, ev)
                if not forwarded and ts_recv_s - self._last_alive_s >= ALIVE_MIN_INTERVAL_S:
                    self._last_alive_s = ts_recv_s
                    await self._forward(live, send, VenueAlive(self.name, ts_recv_s))
        except WsClosed as exc:
            live.fail(f"websocket closed code={exc.code if exc.code is not None else '?'} {exc}".strip())

    async def _forward(self, live: _Live, send: trio.MemorySendChannel, ev: Any) -> None:
        if live.buffer is not None:
            live.buffer.append(ev)
            return
        # No scheduler round per event (the engine drains what is queued in one step); a
        # checkpoint every FORWARD_BATCH events, or a full channel, still yields (backpressure).
        self._unyielded += 1
        if self._unyielded < FORWARD_BATCH:
            try:
                send.send_nowait(ev)
                return
            except trio.WouldBlock:
                pass
        self._unyielded = 0
        await send.send(ev)

    def _dispatch(self, live: _Live, item: Any) -> Any:
        """Feed internal state; return the model event to forward (or None)."""
        if isinstance(item, (wire.LoginAck, wire.SubscribeAck)):
            waiter = live.waiters.get(item.tag)
            if isinstance(waiter, _TagWaiter):
                waiter.add(item)
            return None
        if isinstance(item, (wire.CancelAck, wire.OrderCommandAck)):
            waiter = live.waiters.get(item.tag)
            if isinstance(waiter, _CancelBatch):
                waiter.on_ack(item)
            elif isinstance(waiter, _TagWaiter):
                waiter.add(item)
            return None
        if isinstance(item, wire.AsyncCancelReject):
            self._log.info("cancel_async_reject", order_id=item.order_id, code=item.code)
            for batch in list(live.by_id.get(item.order_id, ())):
                batch.on_gone(item.order_id)
            return None
        if isinstance(item, wire.CancelAllAck):
            self._log.info("cancel_all_ack")
            return None
        if isinstance(item, wire.BalanceUpdate):
            self._book.apply_balances(item.entries)
            self._equity_changed(live)
            return None
        if isinstance(item, wire.PositionUpdate):
            self._book.apply_positions(item.entries)
            self._equity_changed(live)
            return None
        if isinstance(item, OrderClosed):
            for batch in list(live.by_id.get(item.venue_order_id, ())):
                batch.on_closed(item.venue_order_id, item.reason)
            return item
        if isinstance(item, MarkPriceObserved):
            self._book.set_mark(item.product, item.mark_price)
            self._equity_changed(live)
            return item
        if isinstance(item, PositionObserved):
            return replace(item, notional=self._book.notional(item.product, item.qty))
        if isinstance(item, BadFrame):
            self._log.warning("bad_frame", error=item.error)
            return item
        if isinstance(item, (wire.Pong, wire.Welcome, wire.AsyncAmendReject)):
            return None
        return item  # model events: OrderOpened, OrderFilled, OrderRejected, ...

    def _equity_changed(self, live: _Live) -> None:
        live.equity_dirty.set()
        if not self._book.needed_markets(self.cfg.equity_currency) <= live.tickers:
            live.tickers_changed.set()

    async def _clock_loop(self, live: _Live) -> None:
        while True:
            with trio.move_on_after(self.cfg.clock_sync_interval_s):
                await self._clock_resync.wait()
            self._clock_resync = trio.Event()
            try:
                await self._clock_probe(live)
            except _SessionEnd:
                return

    async def _pinger(self, live: _Live) -> None:
        while True:
            await trio.sleep(self.cfg.ping_interval_s)
            live.rx_event = trio.Event()
            try:
                await self._ws_send(live, wire.PING)
            except _SendFailed:
                return
            with trio.move_on_after(self.cfg.pong_timeout_s):
                await live.rx_event.wait()
            if not live.rx_event.is_set():
                live.fail(f"no pong or frame within {self.cfg.pong_timeout_s}s")
                return

    async def _poller(self, live: _Live, send: trio.MemorySendChannel) -> None:
        """Drift check: REST balances/positions (equity) and working orders (sweep)."""
        while True:
            await trio.sleep(self.cfg.poll_interval_s)
            bal, pos, orders = await self._rest("GET", "/v3/balances"), await self._rest("GET", "/v3/positions"), \
                await self._rest("GET", "/v3/orders/working")
            try:
                if bal.outcome == "ok":
                    self._book.apply_balances(wire.parse_balances(bal.obj), replace=True)
                if pos.outcome == "ok":
                    before = set(self._book.positions)
                    self._book.apply_positions(wire.parse_positions(pos.obj), replace=True)
                    await self._emit_positions(send, before)
                if orders.outcome == "ok":
                    snapshot = wire.parse_working_orders(orders.obj, self.name)
                    await send.send(OpenOrdersSnapshot(self.name, snapshot, None, "poll", self._clock.wall_ms(),
                                                       self._clock.monotonic_s()))
            except wire.WireError as exc:
                self._log.warning("poll_malformed", error=str(exc))
            if "ok" not in (bal.outcome, pos.outcome, orders.outcome):
                self._log.warning("poll_failed", outcome=bal.outcome, code=bal.code)
            self._equity_changed(live)

    async def _emit_positions(self, send: trio.MemorySendChannel, before: set[str]) -> None:
        """Every position the REST book now holds, and a zero for each one that is gone."""
        ts_ms, now = self._clock.wall_ms(), self._clock.monotonic_s()
        for market, pos in sorted(self._book.positions.items()):
            await send.send(PositionObserved(self.name, market, pos.qty, self._book.notional(market, pos.qty),
                                             ts_ms, now, polled=True))
        for market in sorted(before - set(self._book.positions)):
            await send.send(PositionObserved(self.name, market, Decimal(0), Decimal(0), ts_ms, now, polled=True))

    def request_reconnect(self, why: str) -> None:
        """Drop the live connection (the run loop reconnects and reconciles)."""
        live = self._live
        if live is not None:
            self._log.warning("venue_reconnect_requested", why=why)
            live.fail(f"reconnect requested: {why}")

    async def _equity_loop(self, live: _Live, send: trio.MemorySendChannel) -> None:
        while True:
            await live.equity_dirty.wait()
            live.equity_dirty = trio.Event()
            await self._emit_equity(send)
            await trio.sleep(EQUITY_COALESCE_S)  # coalesce bursts; the next loop emits the latest

    async def _emit_equity(self, send: trio.MemorySendChannel) -> None:
        currency = self.cfg.equity_currency
        result = self._book.compute_in(currency)
        now = self._clock.monotonic_s()
        if not result.complete:
            if now - self._equity_warned_s > 30:
                self._equity_warned_s = now
                self._log.warning("equity_incomplete", missing_prices=list(result.missing_prices))
            # Missing, not a smaller number: the drawdown rules time it out as missing equity.
            await send.send(EquityUnavailable(self.name, tuple(result.missing_prices), self._clock.wall_ms(), now))
            return
        await send.send(EquityObserved(self.name, result.equity, currency, self._clock.wall_ms(), now))

    async def _ticker_sync(self, live: _Live) -> None:
        """Subscribe to the ticker of every market the equity depends on."""
        while True:
            await live.tickers_changed.wait()
            live.tickers_changed = trio.Event()
            missing = sorted(self._book.needed_markets(self.cfg.equity_currency) - live.tickers)
            if missing:
                live.tickers.update(missing)
                try:
                    await self._ws_send(live, wire.encode_subscribe([wire.ticker_channel(m) for m in missing], live.tags.next()))
                except _SendFailed:
                    return

    # ----------------------------------------------------------------------------------
    # REST
    # ----------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.cfg.rest_url, timeout=self.cfg.request_timeout_s,
                                           verify=shared_ssl_context())
        return self._http

    async def _rest(
        self, verb: str, path: str, *, query: dict | None = None, body: Any = None,
        on_written: Callable[[], None] | None = None,
    ) -> _RestReply:
        client = self._client()
        now = self._clock.monotonic_s()
        cancel = verb == "DELETE"  # the cancel verbs; they may use the cancels' share
        limiter = self._rest_limiter
        if not self._rest_pace_lock.locked() and limiter.wait_s(now, cancel=cancel) == 0:
            # Fast path, no yield (as in _ws_send). The lock is shared by every session on
            # this REST host: acquiring it, even free, costs a scheduler round *while held*,
            # so a 50-account trip went through it one request per round.
            limiter.charge(now, cancel=cancel)
        elif cancel:
            async with self._rest_pace_lock:
                wait_s = limiter.wait_s(self._clock.monotonic_s(), cancel=True)
                if wait_s > 0:
                    await trio.sleep(wait_s)
                limiter.charge(self._clock.monotonic_s(), cancel=True)
        else:
            # Ordinary requests wait outside the lock so a queue of polls never stands in
            # front of a cancel; re-checked after every sleep.
            while True:
                wait_s = limiter.wait_s(self._clock.monotonic_s(), cancel=False)
                if wait_s == 0 and not self._rest_pace_lock.locked():
                    limiter.charge(self._clock.monotonic_s(), cancel=False)
                    break
                await trio.sleep(max(wait_s, 0.001))
        query_string = wire.encode_query(query)
        body_text = wire.encode_json_body(body) if body is not None else ""
        url = path + (f"?{query_string}" if query_string else "")
        request = client.build_request(verb, url, content=body_text.encode() if body_text else None)
        # Fresh timestamp + nonce + signature for every request (never a replayed payload),
        # on the venue's clock.
        wall_ms = self.venue_ms()
        nonce = str(wall_ms * 1000 + next(self._nonce_seq) % 1000)
        signed_body = query_string if verb == "GET" else body_text
        request.headers.update(wire.rest_headers(
            api_key=self._api_key.reveal(), secret=self._api_secret.reveal(), timestamp=wire.rest_timestamp(wall_ms),
            nonce=nonce, verb=verb, host=request.headers["host"], path=path, body=signed_body,
        ))
        if on_written is not None:
            fired = False

            async def trace(name: str, info: dict) -> None:
                nonlocal fired
                if not fired and name.endswith("send_request_body.complete"):
                    fired = True
                    on_written()

            request.extensions["trace"] = trace
        try:
            response = await client.send(request)
        except httpx.TimeoutException as exc:
            return _RestReply("unknown", code="timeout", message=f"{verb} {path}: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return _RestReply("unknown", code="transport", message=f"{verb} {path}: {type(exc).__name__}")
        return self._classify(verb, path, response)

    def _classify(self, verb: str, path: str, response: httpx.Response) -> _RestReply:
        status = response.status_code
        retry_after = _retry_after_s(response.headers.get("retry-after"))
        if status == 429:
            return self._rate_refused(_RestReply("rate_limited", code="429", message=f"{verb} {path}: HTTP 429",
                                                 retry_after_s=retry_after))
        try:
            obj = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            kind = response.headers.get("content-type", "?").split(";")[0]
            hint = " (IP possibly blocked by the venue's firewall)" if status == 403 else ""
            return _RestReply("unknown", code=f"http{status}", message=f"{verb} {path}: HTTP {status} non-JSON reply ({kind}){hint}")
        err = wire.rest_error_of(obj)
        if err is None and 200 <= status < 300:
            return _RestReply("ok", obj=obj)
        err = err or wire.RestError("", "")
        if err.code in wire.TIMESTAMP_CODES:
            # Our clock, not our credentials: re-measure and retry (the engine re-plans).
            self._clock_resync.set()
            return _RestReply("unknown", obj, err.code, f"{verb} {path}: timestamp refused (clock skew "
                                                        f"{self.clock_skew_ms()} ms): {err.message}")
        if err.code in wire.AUTH_CODES or status == 401:
            return _RestReply("auth", obj, err.code or "401", f"{verb} {path}: {err.message}")
        if err.code in wire.MAINTENANCE_CODES:
            return _RestReply("unknown", obj, err.code, f"{verb} {path}: venue code {err.code} {err.message}",
                              venue_state="maintenance")
        if err.code in wire.RATE_CODES:
            return self._rate_refused(_RestReply("rate_limited", obj, err.code, f"{verb} {path}: {err.message}",
                                                 retry_after))
        if status >= 500 and not err.code:
            return _RestReply("unknown", obj, f"http{status}", f"{verb} {path}: HTTP {status}")
        return _RestReply("rejected", obj, err.code or f"http{status}", f"{verb} {path}: {err.message}")

    def _rate_refused(self, reply: _RestReply) -> _RestReply:
        """The IP's REST budget is spent (by someone we cannot see): nothing more on it for
        the venue's window (Retry-After, else the 1 s window); the pacer then holds every
        request, cancels included, until it has passed."""
        block_s = reply.retry_after_s if reply.retry_after_s is not None else REST_REFUSAL_BLOCK_S
        self._rest_limiter.budget.refused(self._clock.monotonic_s(), block_s)
        return replace(reply, retry_after_s=block_s)

    # ----------------------------------------------------------------------------------
    # Cancel verbs (VenueSession contract)
    # ----------------------------------------------------------------------------------

    def _completed(self, trip_id: int, verb: str, request_id: str, outcome: str, t0: float, **kw: Any) -> CancelCompleted:
        now = self._clock.monotonic_s()
        result = CancelCompleted(self.name, trip_id, verb, request_id, outcome, latency_s=now - t0, ts_recv_s=now, **kw)
        self._log.info("cancel_completed", verb=verb, request_id=request_id, outcome=outcome, code=result.code,
                       cancelled=len(result.cancelled_ids), gone=len(result.gone_ids), latency_s=round(result.latency_s, 4))
        return result

    async def cancel_orders(self, orders: Sequence[OrderRef], *, trip_id: int, on_sent: OnSent) -> list[CancelCompleted]:
        if not orders:
            return []
        live = self._live
        if live is None or live.dead.is_set():
            return await self._rest_cancel_orders(orders, trip_id, on_sent)
        batches = wire.split_cancel_batches(list(orders))
        results: list[list[CancelCompleted]] = [[] for _ in batches]
        async with trio.open_nursery() as nursery:
            for i, refs in enumerate(batches):
                tag = live.tags.next()
                batch = _CancelBatch(tag, refs)
                live.register(batch)
                t0 = self._clock.monotonic_s()
                try:
                    await self._ws_send(live, wire.encode_cancelorders(refs, tag))
                except _SendFailed:
                    live.unregister(batch)
                    # The frame never left: the REST fallback is a fresh attempt, not a replay.
                    nursery.start_soon(self._rest_fallback_into, results, i, refs, trip_id, on_sent)
                    continue
                on_sent(CancelAttempted(self.name, trip_id, "cancel_orders", tag, len(refs),
                                        tuple(sorted({r.product for r in refs})), {"transport": "ws"}, ts_sent_s=t0))
                nursery.start_soon(self._await_batch, live, batch, results, i, trip_id, t0)
        return [r for rs in results for r in rs]

    async def _rest_fallback_into(self, results, i, refs, trip_id, on_sent) -> None:
        results[i] = await self._rest_cancel_orders(refs, trip_id, on_sent)

    async def _await_batch(self, live: _Live, batch: _CancelBatch, results, i: int, trip_id: int, t0: float) -> None:
        try:
            with trio.move_on_after(self.cfg.request_timeout_s):
                await batch.acked.wait()
            if batch.acked.is_set() and not batch.disconnected and batch.request_error is None:
                with trio.move_on_after(self._close_grace_s):
                    await batch.resolved.wait()
        finally:
            live.unregister(batch)
        verb, tag = "cancel_orders", batch.tag
        gone = {i for i in batch.gone}
        rejected: list[wire.CancelAck] = []
        for oid, ack in batch.acks.items():
            if not ack.submitted:
                if ack.code in wire.GONE_CODES:
                    gone.add(oid)
                else:
                    rejected.append(ack)
        cancelled = tuple(sorted(batch.cancelled - gone))
        gone_ids = tuple(sorted(gone))
        if batch.request_error is not None:
            err = batch.request_error
            outcome = "rate_limited" if err.code in wire.RATE_CODES else "auth" if err.code in wire.AUTH_CODES else "rejected"
            retry_after = None
            venue_state = ""
            if err.code in wire.MAINTENANCE_CODES:
                outcome, venue_state = "unknown", "maintenance"
            elif outcome == "rate_limited":
                retry_after = WS_REFUSAL_BLOCK_S
                self._ws_budget.refused(self._clock.monotonic_s(), WS_REFUSAL_BLOCK_S)
            results[i] = [self._completed(trip_id, verb, tag, outcome, t0, code=err.code, message=err.message,
                                          cancelled_ids=cancelled, gone_ids=gone_ids, retry_after_s=retry_after,
                                          venue_state=venue_state)]
            return
        if batch.disconnected or len(batch.acks) < len(batch.ids):
            why = f"socket lost: {live.reason}" if batch.disconnected else f"no ack within {self.cfg.request_timeout_s}s"
            results[i] = [self._completed(trip_id, verb, tag, "unknown", t0, code="timeout" if not batch.disconnected else "1006",
                                          message=why, cancelled_ids=cancelled, gone_ids=gone_ids)]
            return
        if rejected and all(a.code in wire.MAINTENANCE_CODES for a in rejected):
            first = rejected[0]
            results[i] = [self._completed(trip_id, verb, tag, "unknown", t0, code=first.code,
                                          message=f"{len(rejected)} refused: {first.message}", cancelled_ids=cancelled,
                                          gone_ids=gone_ids, venue_state="maintenance")]
            return
        if rejected:
            first = rejected[0]
            results[i] = [self._completed(trip_id, verb, tag, "rejected", t0, code=first.code,
                                          message=f"{len(rejected)} rejected: {first.message}", cancelled_ids=cancelled,
                                          gone_ids=gone_ids)]
            return
        results[i] = [self._completed(trip_id, verb, tag, "ok", t0, cancelled_ids=cancelled, gone_ids=gone_ids)]

    async def _rest_cancel_orders(self, orders: Sequence[OrderRef], trip_id: int, on_sent: OnSent) -> list[CancelCompleted]:
        chunks = [list(orders[i:i + REST_CANCEL_MAX_ORDERS]) for i in range(0, len(orders), REST_CANCEL_MAX_ORDERS)]
        results: list[CancelCompleted | None] = [None] * len(chunks)

        async def one(k: int, refs: list[OrderRef]) -> None:
            wall_ms = self.venue_ms()
            request_id = f"rest-cancel-{wall_ms}-{next(self._nonce_seq)}"
            # timestamp and responseType are required; the venue refuses the cancel once
            # recvWindow has passed (100015), so a request stuck longer than our own
            # timeout is not acted on after we have given up on it.
            body = {"recvWindow": int(self.cfg.request_timeout_s * 1000), "responseType": "FULL", "timestamp": wall_ms,
                    "orders": [{"marketCode": r.product, "orderId": r.venue_order_id} for r in refs]}
            t0 = self._clock.monotonic_s()
            products = tuple(sorted({r.product for r in refs}))
            sent = lambda: on_sent(CancelAttempted(self.name, trip_id, "cancel_orders", request_id, len(refs), products,  # noqa: E731
                                                   {"transport": "rest"}, ts_sent_s=self._clock.monotonic_s()))
            reply = await self._rest("DELETE", "/v3/orders/cancel", body=body, on_written=sent)
            if reply.outcome != "ok":
                results[k] = self._completed(trip_id, "cancel_orders", request_id, reply.outcome, t0, code=reply.code,
                                             message=reply.message, retry_after_s=reply.retry_after_s,
                                             venue_state=reply.venue_state)
                return
            try:
                cancelled, gone, rejected = wire.parse_rest_cancel_results(reply.obj)
            except wire.WireError as exc:
                results[k] = self._completed(trip_id, "cancel_orders", request_id, "unknown", t0, message=f"malformed reply: {exc}")
                return
            outcome = "rejected" if rejected else "ok"
            code, message = (rejected[0][1], rejected[0][2]) if rejected else ("", "")
            results[k] = self._completed(trip_id, "cancel_orders", request_id, outcome, t0, code=code, message=message,
                                         cancelled_ids=tuple(cancelled), gone_ids=tuple(gone))

        async with trio.open_nursery() as nursery:
            for k, refs in enumerate(chunks):
                nursery.start_soon(one, k, refs)
        return [r for r in results if r is not None]

    async def _rest_cancel_all(self, product: str | None, trip_id: int, verb: str, on_sent: OnSent) -> CancelCompleted:
        request_id = f"rest-cancel-all-{product or 'ALL'}-{self._clock.wall_ms()}-{next(self._nonce_seq)}"
        t0 = self._clock.monotonic_s()
        products = (product,) if product else ()
        sent = lambda: on_sent(CancelAttempted(self.name, trip_id, verb, request_id, None, products, {"transport": "rest"},  # noqa: E731
                                               ts_sent_s=self._clock.monotonic_s()))
        body = {"marketCode": product} if product else None
        reply = await self._rest("DELETE", "/v3/orders/cancel-all", body=body, on_written=sent)
        notice = ""
        if reply.outcome == "ok" and isinstance(reply.obj, dict) and isinstance(reply.obj.get("data"), dict):
            notice = str(reply.obj["data"].get("notice", ""))[:80]
        # "Orders queued for cancelation" and "No working orders found" are both ok: the
        # confirmation is the venue's open-orders snapshot, not this reply.
        return self._completed(trip_id, verb, request_id, reply.outcome, t0, code=reply.code,
                               message=reply.message or notice, retry_after_s=reply.retry_after_s,
                               venue_state=reply.venue_state)

    async def cancel_products(
        self, products: Sequence[str], *, include_triggers: bool, trip_id: int, on_sent: OnSent
    ) -> list[CancelCompleted]:
        # include_triggers is moot: untriggered stops are cancelled by cancel-all as well.
        results: list[CancelCompleted | None] = [None] * len(products)

        async def one(k: int, product: str) -> None:
            results[k] = await self._rest_cancel_all(product, trip_id, "cancel_products", on_sent)

        async with trio.open_nursery() as nursery:
            for k, product in enumerate(products):
                nursery.start_soon(one, k, product)
        return [r for r in results if r is not None]

    async def cancel_all_orders(self, *, include_triggers: bool, trip_id: int, on_sent: OnSent) -> list[CancelCompleted]:
        return [await self._rest_cancel_all(None, trip_id, "cancel_all_orders", on_sent)]

    async def fetch_open_orders(self) -> tuple[OrderInfo, ...]:
        reply = await self._rest("GET", "/v3/orders/working")
        if reply.outcome == "ok":
            try:
                return wire.parse_working_orders(reply.obj, self.name)
            except wire.WireError as exc:
                raise OutcomeUnknown(f"OX.FUN {self.name}: malformed open-orders reply: {exc}", venue=self.name) from None
        msg = f"OX.FUN {self.name}: fetch open orders: {reply.message}"
        if reply.outcome == "rate_limited":
            raise _RestRateLimited(msg, code=reply.code, venue=self.name, retry_after_s=reply.retry_after_s)
        if reply.outcome == "auth":
            raise _RestAuthRejected(msg, code=reply.code, venue=self.name)
        if reply.outcome == "rejected":
            raise VenueRejected(msg, code=reply.code, venue=self.name)
        raise OutcomeUnknown(msg, code=reply.code, venue=self.name)

    def budget_available(self, now_s: float) -> int | None:
        rest = self._rest_budget.available(now_s)
        if self._live is None:
            return rest
        return min(rest, self._ws_budget.available(now_s))

    @property
    def equity_book(self) -> EquityBook:
        return self._book


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
