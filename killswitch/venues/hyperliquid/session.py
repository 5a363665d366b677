"""HyperliquidSession: the trio shell around the pure Hyperliquid wire layer.

One WebSocket per account (``orderUpdates`` and ``userEvents`` carry no ``user``, so they
cannot be shared), ``POST /info`` for reconcile and the drift poll, ``POST /exchange`` for
signed actions. There is no cancel-all: ``cancel_all_orders`` lists ``frontendOpenOrders``
(both planes) and TWAPs, then cancels by oid in batches (non-trigger orders with ``f:true``,
trigger orders without), and ``twapCancel`` per running TWAP. Every attempt gets a fresh
nonce from the per-signer persisted :class:`~.nonce.NonceSource`.

The dead-man's switch (``scheduleCancel``) is kept armed by :meth:`_dms_loop`; see
docs/venues/hyperliquid.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

import httpx
import orjson
import structlog
import trio

from killswitch.clock import Clock
from killswitch.model import (
    BackstopObserved,
    BadFrame,
    CancelAttempted,
    CancelCompleted,
    OpenOrdersSnapshot,
    OrderInfo,
    OrderRef,
    VenueAlive,
    VenueAuthFailed,
    VenueConnected,
    VenueDisconnected,
    Side,
)
from killswitch.net import ws as wsmod
from killswitch.net.tls import shared_ssl_context
from killswitch.secrets import Secret
from killswitch.venues.base import (
    AuthError,
    HyperliquidConfig,
    OnSent,
    OutcomeUnknown,
    RateBudget,
    RateLimited,
    ReconnectBackoff,
    VenueCapabilities,
    VenueError,
    VenueRejected,
)

from . import signing, wire
from .feed import FeedState, order_info
from .nonce import NonceSource, nonce_path

IP_RESERVE = 40  # weight kept back from info queries for signed actions (cancels weigh 1 per 39)
INFO_WEIGHTS = {"clearinghouseState": 2, "spotClearinghouseState": 2, "orderStatus": 2, "exchangeStatus": 2,
                "l2Book": 2, "allMids": 2, "userRole": 60}
TWAP_RELIST_S = 5.0  # twapHistory (weight 20) again after this long when none was running
ALIVE_MIN_INTERVAL_S = 0.5
DMS_MIN_AHEAD_S = 5.0
DMS_TRIGGERS_PER_DAY = 10
TWAP_PREFIX = "twap:"
RATE_LIMIT_POLL_S = 60.0
SUBSCRIPTIONS = ("orderUpdates", "userEvents", "userFills", "clearinghouseState")


def capabilities(batch: int) -> VenueCapabilities:
    # Costs are address-budget requests (each batch element counts 1). Round 1 on a trusted
    # book is always by oid (prefer_by_id_below): lowest latency; the verification listing
    # finds what the stream missed, and later rounds "cancel all" = list + batches.
    return VenueCapabilities(cancel_all_cost=batch, cancel_products_cost_per_product=batch,
                             cancel_orders_cost_per_request=0, cancel_orders_cost_per_order=1,
                             max_orders_per_request=batch, has_trigger_plane=False, prefer_by_id_below=100_000)


@dataclass(frozen=True, slots=True)
class DmsStatus:
    """What status/metrics show about the venue's dead-man's switch."""

    armed: bool
    fires_at_ms: int | None
    unavailable_reason: str = ""
    refreshes: int = 0


class _PostSlot:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: tuple[str, Any] | None = None


class _Lost(Exception):
    """The connection ended; reconnect."""


class HyperliquidSession:
    def __init__(self, cfg: HyperliquidConfig, *, private_key: Secret, clock: Clock,
                 state_dir: Path | None = None, master_key: Secret | None = None) -> None:
        signing.check_network(cfg.network)
        self.cfg = cfg
        self.name = cfg.name
        self.capabilities = capabilities(cfg.cancel_batch_size)
        self._clock = clock
        self._signer = signing.FastSigner(private_key)
        self.account = (cfg.account_address or self._signer.address).lower()
        self._nonces = NonceSource(nonce_path(state_dir, self._signer.address) if state_dir is not None else None)
        self._state_dir = state_dir
        # The master signs only approveAgent (user-signed), from its own nonce set.
        self._master = signing.FastSigner(master_key) if master_key is not None else None
        self._master_nonces = None if self._master is None else NonceSource(
            nonce_path(state_dir, self._master.address) if state_dir is not None else None)
        self._ip_budget = RateBudget(((60, cfg.ip_weight_per_min),))
        self._http: httpx.AsyncClient | None = None
        self._assets: dict[str, int] = {}
        self._feed = FeedState(cfg.name)
        self._budget_left: int | None = None
        self._limits_at_s = float("-inf")
        self._blocked_until_s = 0.0
        self._started = False
        self._last_alive_s = float("-inf")
        self._ws: wsmod.WsEndpoint | None = None
        self._pending_posts: dict[int, _PostSlot] = {}
        self._last_pong_s = float("-inf")
        self._spot_usd = Decimal(0)  # the last poll's spot valuation (the stream carries none)
        self._spot_unpriced: tuple[str, ...] = ()
        self._pong = trio.Event()  # set by the reader on each pong (the pinger waits on it)
        self._twap_rows: Any = []
        self._twap_listed_s = float("-inf")
        self._lock_mem: dict | None = None  # lock state when there is no state_dir
        self._post_seq = 0
        self.dms = DmsStatus(False, None)
        self._dms_day = -1
        self._dms_fired_today = 0
        self._dms_fire_counted = False
        self._log = structlog.get_logger("killswitch.venue.hyperliquid").bind(venue=cfg.name)

    def __repr__(self) -> str:
        return f"HyperliquidSession(name={self.name!r}, account={self.account}, signer={self._signer.address})"

    @property
    def signer_address(self) -> str:
        return self._signer.address

    # =====================================================================================
    # run
    # =====================================================================================

    async def run(self, send: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        startup_error: list[AuthError] = []
        async with httpx.AsyncClient(timeout=self.cfg.request_timeout_s, verify=shared_ssl_context()) as http:
            self._http = http
            try:
                async with trio.open_nursery() as outer:
                    if self.cfg.dms_after_s > 0:
                        outer.start_soon(self._dms_loop, send)
                    try:
                        await self._reconnect_loop(send, task_status)
                    except AuthError as exc:  # the first login: a clear start-up error, unwrapped
                        startup_error.append(exc)
                        outer.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(self.cfg.request_timeout_s):
                    if self.cfg.dms_after_s > 0 and self.cfg.dms_clear_on_shutdown and self.dms.armed:
                        await self._clear_dms()
                self._http = None
        if startup_error:
            raise startup_error[0]

    async def _reconnect_loop(self, send, task_status) -> None:
        backoff = ReconnectBackoff(self.cfg.backoff)
        while True:
            up_since = self._clock.monotonic_s()
            try:
                await self._connect_and_serve(send, task_status)
                reason = "connection ended"
            except AuthError as exc:
                if not self._started:
                    raise
                self._log.error("venue_auth_failed", error=str(exc))
                await send.send(VenueAuthFailed(self.name, exc.code or "auth", str(exc), self._clock.monotonic_s()))
                reason = f"auth failed: {exc}"
            except (_Lost, VenueError, wsmod.WsClosed, wsmod.WsHandshakeRejected, wire.WireError,
                    OSError, trio.TooSlowError, httpx.HTTPError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self._ws = None
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

        ep = await wsmod.connect(self.cfg.ws_url, deflate=False, timeout_s=self.cfg.request_timeout_s)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._setup(ep, nursery, guard, send, task_status)
                except Exception as exc:
                    if not failure:
                        failure.append(exc)
                    nursery.cancel_scope.cancel()
        finally:
            self._ws = None
            self._fail_posts()
            await ep.abort()
        if failure:
            raise failure[0]

    async def _setup(self, ep: wsmod.WsEndpoint, nursery, guard, send, task_status) -> None:
        nursery.start_soon(guard, self._pinger, ep)
        buffered: list = []
        for t in SUBSCRIPTIONS:
            sub = {"type": t, "user": self.account}
            await ep.send_text(wire.encode_subscribe(sub))
        await self._await_acks(ep, buffered)
        # Reconcile after subscribing, so nothing falls between the snapshot and the stream.
        if not self._assets:  # re-read on an unknown coin (cancel_orders), not on every reconnect
            await self._refresh_assets()
        if not self._started:  # userRole weighs 60: once; a later revocation shows as cancel "auth"
            await self._check_account()
        orders = await self.fetch_open_orders()
        now_s = self._clock.monotonic_s()
        await send.send(OpenOrdersSnapshot(self.name, orders, None, "reconcile", self._clock.wall_ms(), now_s))
        for ev in await self._fetch_state():
            await send.send(ev)
        for ts, raw in buffered:
            await self._forward(raw, ts, send)
        self._ws = ep
        await send.send(VenueConnected(self.name, self._clock.monotonic_s()))
        self._log.info("venue_connected", open_orders=len(orders), account=self.account)
        if not self._started:
            self._started = True
            task_status.started()
        nursery.start_soon(guard, self._reader, ep, send)
        nursery.start_soon(guard, self._poll_loop, send)

    async def _await_acks(self, ep: wsmod.WsEndpoint, buffered: list) -> None:
        want = set(SUBSCRIPTIONS)
        with trio.fail_after(self.cfg.request_timeout_s):
            while want:
                raw = await ep.receive()
                ts = self._clock.monotonic_s()
                try:
                    f = wire.parse_ws_frame(raw)
                except wire.WireError:
                    buffered.append((ts, raw))
                    continue
                if f is None:
                    continue
                if f.channel == "subscriptionResponse" and isinstance(f.data, dict):
                    sub = f.data.get("subscription") or {}
                    want.discard(sub.get("type"))
                elif f.channel == "error":
                    raise VenueRejected(f"subscription refused: {f.data}", venue=self.name)
                else:
                    buffered.append((ts, raw))

    async def _check_account(self) -> None:
        role = await self._info({"type": "userRole", "user": self._signer.address})
        if self.account != self._signer.address:
            ok = isinstance(role, dict) and role.get("role") == "agent" and \
                str((role.get("data") or {}).get("user", "")).lower() == self.account
            if not ok:
                raise AuthError(f"venue {self.name}: signer {self._signer.address} is not an approved agent of "
                                f"{self.account} (userRole: {role})", code="agent", venue=self.name)

    async def _pinger(self, ep: wsmod.WsEndpoint) -> None:
        # Application pings: the pong is server traffic, which keeps the 60 s idle close away.
        interval, timeout = self.cfg.ping_interval_s, self.cfg.pong_timeout_s
        while True:
            self._pong = trio.Event()  # before the send: a fast pong must not be missed
            sent_at = self._clock.monotonic_s()
            await ep.send_text(wire.PING)
            with trio.move_on_after(timeout):
                await self._pong.wait()
            if self._last_pong_s < sent_at:
                raise _Lost(f"no pong within {timeout} s")
            await trio.sleep(max(0.0, interval - (self._clock.monotonic_s() - sent_at)))

    async def _reader(self, ep: wsmod.WsEndpoint, send) -> None:
        while True:
            raw = await ep.receive()
            await self._forward(raw, self._clock.monotonic_s(), send)

    async def _forward(self, raw, ts: float, send) -> None:
        try:
            f = wire.parse_ws_frame(raw)
            if f is None:
                return
            if f.channel == "pong":
                self._last_pong_s = ts
                self._pong.set()
                events: list = []
            elif f.channel == "post":
                self._resolve_post(f.data)
                return
            elif f.channel == "error":
                raise wire.WireError(f"venue error frame: {f.data!s:.200}")
            else:
                # The stream's account state has no spot balances: the last poll's valuation
                # of them is added, so stream and poll report the same equity.
                events = self._feed.frame(f, spot_usd=self._spot_usd, now_ms=self._clock.wall_ms(), ts_s=ts,
                                          unpriced=self._spot_unpriced)
                if f.channel == "orderUpdates" and any(isinstance(u, dict) and u.get("status") == "scheduledCancel"
                                                       for u in f.data):
                    self._dms_fired()
        except (wire.WireError, ValueError, TypeError, KeyError) as exc:
            sample = raw[:120] if isinstance(raw, str) else raw[:120].decode("utf-8", "replace")
            await send.send(BadFrame(self.name, str(exc), sample, ts))
            return
        for ev in events:
            try:
                send.send_nowait(ev)
            except trio.WouldBlock:
                await send.send(ev)
        if not events and ts - self._last_alive_s >= ALIVE_MIN_INTERVAL_S:
            self._last_alive_s = ts
            await send.send(VenueAlive(self.name, ts))

    async def _poll_loop(self, send) -> None:
        # Drift poll: the venue's own lists, so a missed push cannot hide an order for long.
        while True:
            await trio.sleep(self.cfg.poll_interval_s)
            try:
                orders = await self.fetch_open_orders()
                state = await self._fetch_state()
            except RateLimited as exc:  # our own pacing (or a 429): skip this poll, keep the socket
                self._log.warning("venue_poll_skipped", error=str(exc))
                continue
            await send.send(OpenOrdersSnapshot(self.name, orders, None, "poll", self._clock.wall_ms(),
                                               self._clock.monotonic_s()))
            for ev in state:
                await send.send(ev)

    # =====================================================================================
    # info
    # =====================================================================================

    async def _info(self, body: dict) -> Any:
        # Pace ourselves inside the venue's per-IP weight (1200/min) instead of drawing 429s:
        # wait (bounded) for room, keeping IP_RESERVE for signed actions, else RateLimited.
        weight = INFO_WEIGHTS.get(body["type"], 20)
        now = self._clock.monotonic_s()
        wait = self._ip_budget.wait_s(weight + IP_RESERVE, now)
        if wait > self.cfg.request_timeout_s:
            raise RateLimited(f"info {body['type']}: own IP weight budget exhausted for {wait:.1f} s",
                              code="ip_budget", venue=self.name, retry_after_s=wait)
        if wait > 0:
            await trio.sleep(wait)
        self._ip_budget.charge(weight, self._clock.monotonic_s())
        r = await self._post("/info", orjson.dumps(body))
        if r.status_code == 429:
            raise RateLimited(f"info {body['type']}: HTTP 429", code="429", venue=self.name)
        if r.status_code != 200:
            raise VenueRejected(f"info {body['type']}: HTTP {r.status_code} {r.text[:200]}",
                                code=str(r.status_code), venue=self.name)
        try:
            return orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise OutcomeUnknown(f"info {body['type']}: unparsable reply", venue=self.name) from None

    async def _post(self, path: str, body: bytes) -> httpx.Response:
        http = self._http
        own = http is None
        if own:
            http = httpx.AsyncClient(timeout=self.cfg.request_timeout_s, verify=shared_ssl_context())
        try:
            with trio.fail_after(self.cfg.request_timeout_s):
                return await http.post(self.cfg.rest_url + path, content=body,
                                       headers={"Content-Type": "application/json"})
        except (trio.TooSlowError, httpx.HTTPError) as exc:
            raise OutcomeUnknown(f"POST {path}: {type(exc).__name__}", venue=self.name) from None
        finally:
            if own:
                await http.aclose()

    async def _refresh_assets(self) -> None:
        meta = await self._info({"type": "meta"})
        spot = await self._info({"type": "spotMeta"})
        self._assets = wire.parse_asset_map(meta, spot)

    async def fetch_open_orders(self) -> tuple[OrderInfo, ...]:
        data = await self._info({"type": "frontendOpenOrders", "user": self.account, "dex": ""})
        try:
            rows = wire.parse_frontend_open_orders(data)
        except wire.WireError as exc:
            raise OutcomeUnknown(f"frontendOpenOrders malformed: {exc}", venue=self.name) from None
        self._feed.note_listing(rows)  # which orders are triggers (orderUpdates rows do not say)
        coins = set(self.cfg.coins)
        out = [order_info(self.name, o) for o in rows if not coins or o.coin in coins]
        # Running TWAPs count as open orders ("twap:<id>"): cancelling resting orders does not
        # stop a TWAP, so the account is flat only when they are gone too.
        now_s = self._clock.monotonic_s()
        if self._twap_rows or now_s - self._twap_listed_s >= TWAP_RELIST_S:
            # Re-listed every time while one runs; otherwise at most every TWAP_RELIST_S (a TWAP
            # started since is found by the next listing, like any order placed after one).
            self._twap_listed_s = now_s
            self._twap_rows = await self._info({"type": "twapHistory", "user": self.account})
        running = []
        for row in self._twap_rows if isinstance(self._twap_rows, list) else ():
            if not isinstance(row, dict):
                continue
            state, st = row.get("state") or {}, (row.get("status") or {}).get("status")
            coin = state.get("coin")
            if st == "activated" and isinstance(row.get("twapId"), int) and isinstance(coin, str) \
                    and (not coins or coin in coins):
                running.append(OrderInfo(self.name, coin, f"{TWAP_PREFIX}{row['twapId']}", None,
                                         Side.BUY if state.get("side") == "B" else Side.SELL, None,
                                         wire.decimal_of(state.get("sz", "0"), "twap.sz"), False, False,
                                         wire.ms_of(state.get("timestamp"), "twap.timestamp")))
        if not running:
            self._twap_rows = []
        return tuple(out + running)

    async def _fetch_state(self) -> list:
        data = await self._info({"type": "clearinghouseState", "user": self.account, "dex": ""})
        spot = await self._info({"type": "spotClearinghouseState", "user": self.account})
        now_s = self._clock.monotonic_s()
        limits = None
        if now_s - self._limits_at_s >= RATE_LIMIT_POLL_S:  # weight 20: not on every poll
            self._limits_at_s = now_s
            limits = await self._info({"type": "userRateLimit", "user": self.account})
        if isinstance(limits, dict) and isinstance(limits.get("nRequestsCap"), int):
            cap, used = limits["nRequestsCap"], int(limits.get("nRequestsUsed") or 0)
            self._budget_left = max(0, min(cap + 100_000, 2 * cap) - used)
        state = wire.parse_clearinghouse_state(data)
        self._spot_usd, self._spot_unpriced = wire.parse_spot_usd(spot), wire.unpriced_spot(spot)
        return self._feed.clearinghouse(state, self._spot_usd, state.time_ms or self._clock.wall_ms(),
                                        self._clock.monotonic_s(), polled=True, unpriced=self._spot_unpriced)

    # =====================================================================================
    # signed actions
    # =====================================================================================

    def _sign(self, action: dict) -> tuple[int, bytes, bytes]:
        nonce = self._nonces.next(self._clock.wall_ms())  # fresh per attempt, at the attempt
        vault = None  # an agent signs for its master without vaultAddress (sub-accounts: not supported yet)
        sig, cid = signing.sign_l1(self._signer, action, nonce, self.cfg.network, vault_address=vault)
        return nonce, cid, wire.encode_exchange(action, nonce, sig.to_wire(), vault_address=vault)

    async def _exchange(self, body: bytes) -> wire.ExchangeReply:
        ws = self._ws
        if self.cfg.post_over_ws and ws is not None and not ws.closed:
            return await self._exchange_ws(ws, body)
        r = await self._post("/exchange", body)
        if r.status_code == 429:
            raise RateLimited("exchange: HTTP 429", code="429", venue=self.name, retry_after_s=60.0)
        if r.status_code >= 500:
            raise OutcomeUnknown(f"exchange: HTTP {r.status_code}", venue=self.name)
        if r.status_code != 200:
            raise VenueRejected(f"exchange: HTTP {r.status_code} {r.text[:200]}", code=str(r.status_code),
                                venue=self.name)
        try:
            return wire.parse_exchange_reply(orjson.loads(r.content))
        except (orjson.JSONDecodeError, wire.WireError) as exc:
            raise OutcomeUnknown(f"exchange: unparsable reply ({exc})", venue=self.name) from None

    async def _exchange_ws(self, ws: wsmod.WsEndpoint, body: bytes) -> wire.ExchangeReply:
        """The same body as a WS post on the open socket (no HTTP round trip set-up).
        Replies are matched by id; they may come before or after the pushes they cause."""
        self._post_seq += 1
        rid = self._post_seq
        slot = _PostSlot()
        self._pending_posts[rid] = slot
        try:
            with trio.move_on_after(self.cfg.request_timeout_s):
                try:
                    await ws.send_text(b'{"method":"post","id":%d,"request":{"type":"action","payload":%s}}'
                                       % (rid, body))
                except wsmod.WsClosed as exc:
                    raise OutcomeUnknown(f"exchange (ws post): {exc}", venue=self.name) from None
                await slot.done.wait()
        finally:
            self._pending_posts.pop(rid, None)
        if slot.response is None:
            raise OutcomeUnknown("exchange (ws post): no reply in time or socket lost", venue=self.name)
        kind, payload = slot.response
        if kind == "action":
            try:
                return wire.parse_exchange_reply(payload)
            except wire.WireError as exc:
                raise OutcomeUnknown(f"exchange (ws post): unparsable reply ({exc})", venue=self.name) from None
        text = str(payload)
        if "deserialize" in text:
            raise VenueRejected(f"exchange (ws post): {text[:200]}", code="422", venue=self.name)
        raise OutcomeUnknown(f"exchange (ws post): {text[:200]}", venue=self.name)

    def _resolve_post(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            raise wire.WireError("post reply without an id")
        slot = self._pending_posts.get(data["id"])
        resp = data.get("response")
        if slot is None or not isinstance(resp, dict):
            return  # late reply of an attempt already reported unknown
        slot.response = (str(resp.get("type")), resp.get("payload"))
        slot.done.set()

    def _fail_posts(self) -> None:
        for slot in self._pending_posts.values():
            slot.done.set()  # response stays None: unknown outcome

    def budget_available(self, now_s: float) -> int | None:
        if now_s < self._blocked_until_s:
            return 0
        return self._budget_left

    def _completed(self, trip_id, verb, request_id, outcome, *, code="", message="", cancelled=(), gone=(),
                   t0: float | None = None) -> CancelCompleted:
        now = self._clock.monotonic_s()
        return CancelCompleted(self.name, trip_id, verb, request_id, outcome, code, message, tuple(cancelled),
                               tuple(gone), 0.0 if t0 is None else now - t0, now)

    async def _attempt(self, verb: str, action: dict, ids: Sequence[str], products: tuple[str, ...], trip_id: int,
                       on_sent: OnSent) -> CancelCompleted:
        """One signed request; per-element statuses map onto ``ids`` (a batch can partly fail)."""
        nonce, cid, body = self._sign(action)
        request_id = str(nonce)
        t0 = self._clock.monotonic_s()
        ws = self._ws
        transport = "ws" if self.cfg.post_over_ws and ws is not None and not ws.closed else "rest"
        on_sent(CancelAttempted(self.name, trip_id, verb, request_id, len(ids) or None, products,
                                detail={"nonce": nonce, "action_hash": "0x" + cid.hex(), "type": action["type"],
                                        "transport": transport},
                                ts_sent_s=t0))
        self._ip_budget.charge(1 + len(ids) // 40, t0)  # the venue's /exchange batch weight
        if self._budget_left is not None:
            self._budget_left = max(0, self._budget_left - max(1, len(ids)))
        try:
            reply = await self._exchange(body)
        except RateLimited as exc:
            self._blocked_until_s = self._clock.monotonic_s() + 10.0
            return self._completed(trip_id, verb, request_id, "rate_limited", code="429", message=str(exc), t0=t0)
        except OutcomeUnknown as exc:
            return self._completed(trip_id, verb, request_id, "unknown", message=str(exc), t0=t0)
        except VenueRejected as exc:
            return self._completed(trip_id, verb, request_id, "rejected", code=exc.code, message=str(exc), t0=t0)
        if not reply.ok:
            text = reply.error
            if wire.is_auth_refusal(text):
                return self._completed(trip_id, verb, request_id, "auth", code="signer", message=text, t0=t0)
            if text.startswith(wire.RATE_LIMIT_TEXT):
                self._blocked_until_s = self._clock.monotonic_s() + 10.0  # then 1 request per 10 s
                return self._completed(trip_id, verb, request_id, "rate_limited", code="address", message=text,
                                       t0=t0)
            return self._completed(trip_id, verb, request_id, "rejected",
                                   code="nonce" if wire.is_nonce_refusal(text) else "err", message=text, t0=t0)
        statuses = reply.statuses if reply.statuses else ((reply.status,) if reply.status is not None else ())
        cancelled, gone, failed = [], [], []
        for oid, st in zip(ids, statuses):
            err = wire.status_error(st)
            if err is None:
                cancelled.append(oid)
            elif err.startswith(wire.NOT_FOUND_PREFIX) or err.startswith(wire.TWAP_NOT_FOUND_PREFIX):
                gone.append(oid)
            else:
                failed.append(f"{oid}: {err}")
        if len(statuses) != len(ids):
            failed.append(f"{len(statuses)} statuses for {len(ids)} elements")
        if failed and not cancelled and not gone:
            return self._completed(trip_id, verb, request_id, "rejected", code="element",
                                   message="; ".join(failed)[:500], t0=t0)
        return self._completed(trip_id, verb, request_id, "ok", code="partial" if failed else "",
                               message="; ".join(failed)[:500], cancelled=cancelled, gone=gone, t0=t0)

    def _asset(self, coin: str) -> int | None:
        return self._assets.get(coin)

    async def cancel_orders(self, orders: Sequence[OrderRef], *, trip_id: int, on_sent: OnSent) -> list[CancelCompleted]:
        # Requests by oid, or by cloid when only the client id is known ("0x" + 32 hex); each
        # with f:true only for orders a listing named as resting. Without f ("...:trigger"):
        # triggers (the fast flag is refused for them) and orders known only from
        # orderUpdates, whose rows do not say which kind they are (without f both kinds go).
        groups: dict[str, list[tuple[int, Any, str]]] = {"fast": [], "trigger": [], "cloid": [], "cloid_trigger": [],
                                                          "twap": []}
        unknown = []
        if any(self._asset(o.product) is None for o in orders):
            try:  # a coin listed since start-up: asset ids come from meta/spotMeta
                await self._refresh_assets()
            except VenueError as exc:
                self._log.warning("venue_meta_refresh_failed", error=str(exc))
        for o in orders:
            asset = self._asset(o.product)
            if asset is None:
                unknown.append(o)
                continue
            vid = o.venue_order_id
            fast = not o.is_trigger and self._feed.listed_kind(vid) is False  # unknown kind: no f
            if vid.startswith(TWAP_PREFIX) and vid[len(TWAP_PREFIX):].isdigit():
                groups["twap"].append((asset, int(vid[len(TWAP_PREFIX):]), vid))
            elif vid.startswith("0x"):
                groups["cloid" if fast else "cloid_trigger"].append((asset, vid.lower(), vid))
            elif vid.isdigit():
                groups["fast" if fast else "trigger"].append((asset, int(vid), vid))
            else:
                unknown.append(o)
        results: list[CancelCompleted] = []
        if unknown:
            results.append(self._completed(trip_id, "cancel_orders", "-", "rejected", code="unknown_coin",
                                           message=f"{len(unknown)} orders with an unknown coin or id"))
        size = self.cfg.cancel_batch_size
        batches = []
        for kind, items in groups.items():
            for i in range(0, len(items), size):
                chunk = items[i:i + size]
                if kind == "twap":  # one twapCancel per TWAP (no batch form)
                    for a, tid, v in chunk:
                        o_coin = next(o.product for o in orders if o.venue_order_id == v)
                        batches.append(("cancel_twap", wire.twap_cancel_action(a, tid), [v], (o_coin,)))
                    continue
                if kind.startswith("cloid"):
                    action = wire.cancel_by_cloid_action([(a, c) for a, c, _ in chunk], fast=kind == "cloid")
                else:
                    action = wire.cancel_action([(a, oid) for a, oid, _ in chunk], fast=kind == "fast")
                verb = "cancel_orders" + (":trigger" if kind.endswith("trigger") else "")
                coins = tuple(sorted({o.product for o in orders if o.venue_order_id in {v for *_, v in chunk}}))
                batches.append((verb, action, [v for *_, v in chunk], coins))
        if not batches:
            return results

        async def one(b):
            results.append(await self._attempt(*b, trip_id, on_sent))

        await one(batches[0])  # the first request from this task: on the wire before the others
        if len(batches) > 1:
            async with trio.open_nursery() as n:
                for b in batches[1:]:
                    n.start_soon(one, b)
        return results

    async def _cancel_listed(self, coins: set[str] | None, include_triggers: bool, verb: str, trip_id: int,
                             on_sent: OnSent) -> list[CancelCompleted]:
        # No cancel-all on this venue: list (both planes and TWAPs), then cancel by id.
        try:
            orders = await self.fetch_open_orders()
        except VenueError as exc:
            outcome = "rate_limited" if isinstance(exc, RateLimited) else "unknown"
            return [self._completed(trip_id, verb, "-", outcome, message=f"listing failed: {exc}")]
        refs = [OrderRef(self.name, o.product, o.venue_order_id, o.is_trigger) for o in orders
                if (coins is None or o.product in coins) and (include_triggers or not o.is_trigger)]
        if not refs:
            return [self._completed(trip_id, verb, "-", "ok", message="nothing open")]
        return await self.cancel_orders(refs, trip_id=trip_id, on_sent=on_sent)

    async def cancel_all_orders(self, *, include_triggers: bool, trip_id: int, on_sent: OnSent) -> list[CancelCompleted]:
        return await self._cancel_listed(None, include_triggers, "cancel_all_orders", trip_id, on_sent)

    async def cancel_products(self, products: Sequence[str], *, include_triggers: bool, trip_id: int,
                              on_sent: OnSent) -> list[CancelCompleted]:
        return await self._cancel_listed(set(products), include_triggers, "cancel_products", trip_id, on_sent)

    # =====================================================================================
    # dead-man's switch (scheduleCancel)
    # =====================================================================================

    async def _dms_loop(self, send) -> None:
        """Keep scheduleCancel at now + T, refreshed every T/3, so it fires only if this
        process (or its link to the venue) is gone for about T. Refreshing never uses the
        venue's 10 firings a day; only firings do, and they are counted from the stream."""
        after_s = max(self.cfg.dms_after_s, DMS_MIN_AHEAD_S + 1)
        refresh_s = after_s / 3
        while True:
            try:
                await self._arm_dms(after_s)
            except VenueError as exc:  # unknown outcome: the previous arm (if any) still stands ...
                self._log.warning("venue_dms_arm_failed", error=str(exc))
                d = self.dms
                if d.armed and (d.fires_at_ms or 0) <= self._clock.wall_ms():  # ... until its time has passed
                    self.dms = DmsStatus(False, None, f"not refreshed in time: {exc}", d.refreshes)
            await send.send(BackstopObserved(self.name, self.dms.armed, self.dms.fires_at_ms,
                                             self.dms.unavailable_reason, self._clock.monotonic_s()))
            # Refused (volume gate): the venue will not change its mind soon; probe rarely.
            await trio.sleep(max(refresh_s, 60.0) if self.dms.unavailable_reason else refresh_s)

    def _dms_fired(self) -> None:
        if self._dms_fire_counted:  # one firing cancels many orders: count it once per arm
            return
        self._dms_fire_counted = True
        day = self._clock.wall_ms() // 86_400_000
        if day != self._dms_day:
            self._dms_day, self._dms_fired_today = day, 0
        self._dms_fired_today += 1
        self._log.warning("venue_dms_fired", fired_today=self._dms_fired_today, budget=DMS_TRIGGERS_PER_DAY)

    def _dms_budget_left(self) -> int:
        if self._clock.wall_ms() // 86_400_000 != self._dms_day:
            return DMS_TRIGGERS_PER_DAY
        return DMS_TRIGGERS_PER_DAY - self._dms_fired_today

    async def _arm_dms(self, after_s: float) -> None:
        fires_at = self._clock.wall_ms() + int(after_s * 1000)
        _, _, body = self._sign(wire.schedule_cancel_action(fires_at))
        reply = await self._exchange(body)
        if reply.ok:
            self._dms_fire_counted = False
            if not self.dms.armed or self.dms.unavailable_reason:
                self._log.info("venue_dms_armed", fires_at_ms=fires_at)
            reason = ""
            if self._dms_budget_left() <= 0:
                # Armed, but the venue fires at most 10 times per UTC day: it would not fire.
                reason = f"the venue's {DMS_TRIGGERS_PER_DAY} scheduleCancel firings for today are used up"
            self.dms = DmsStatus(not reason, fires_at, reason, self.dms.refreshes + 1)
            return
        self.dms = DmsStatus(False, None, reply.error, self.dms.refreshes)
        self._log.error("venue_dms_unavailable", reason=reply.error)

    async def _clear_dms(self) -> None:
        try:
            _, _, body = self._sign(wire.schedule_cancel_action(None))
            reply = await self._exchange(body)
            if reply.ok:
                self.dms = DmsStatus(False, None, "", self.dms.refreshes)
        except VenueError as exc:
            self._log.warning("venue_dms_clear_failed", error=str(exc))

    # =====================================================================================
    # order-entry lock (venues.base.OrderEntryLock)
    # =====================================================================================

    def _lock_path(self) -> Path | None:
        return None if self._state_dir is None else self._state_dir / f"hyperliquid-lock-{self.account}.json"

    def _read_lock(self) -> dict | None:
        path = self._lock_path()
        if path is not None and path.exists():
            return orjson.loads(path.read_bytes())
        return self._lock_mem

    def _write_lock(self, state: dict | None) -> None:
        self._lock_mem = state
        path = self._lock_path()
        if path is None:
            return
        if state is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(state))
        tmp.replace(path)

    async def _agents(self) -> dict[str, str]:
        rows = await self._info({"type": "extraAgents", "user": self.account})
        return {str(r.get("name")): str(r.get("address", "")).lower() for r in rows if isinstance(r, dict)} \
            if isinstance(rows, list) else {}

    async def _approve(self, agent_address: str, agent_name: str) -> None:
        """approveAgent signed by the master; waits out "pending agent removal" (3 tries)."""
        assert self._master is not None and self._master_nonces is not None
        last = ""
        for _ in range(3):
            nonce = self._master_nonces.next(self._clock.wall_ms())
            chain = signing.chain_name(self.cfg.network)
            action = wire.approve_agent_action(agent_address, agent_name, nonce, hyperliquid_chain=chain,
                                               signature_chain_id=signing.SDK_SIGNATURE_CHAIN_ID)
            digest = signing.approve_agent_digest(hyperliquid_chain=chain, agent_address=agent_address,
                                                  agent_name=agent_name, nonce=nonce,
                                                  signature_chain_id=int(signing.SDK_SIGNATURE_CHAIN_ID, 16))
            body = wire.encode_exchange(action, nonce, self._master.sign_digest(digest).to_wire())
            reply = await self._exchange(body)
            if reply.ok:
                return
            last = reply.error
            if "pending agent removal" not in last:
                break
            await trio.sleep(self.cfg.agent_cooldown_s)
        raise VenueRejected(f"approveAgent {agent_name!r} refused: {last}", code="approve", venue=self.name)

    def _lock_preconditions(self) -> str:
        if self._master is None or not self.cfg.strategy_agent_name:
            raise VenueRejected("order-entry lock needs master_key and strategy_agent_name in the venue config",
                                code="lock_config", venue=self.name)
        if self._master.address != self.account:
            raise VenueRejected(f"master_key is {self._master.address}, not the account {self.account}",
                                code="lock_config", venue=self.name)
        return self.cfg.strategy_agent_name

    async def lock_order_entry(self, *, trip_id: int) -> str:
        """Approve a throwaway agent under the strategy agent's name: the strategy's key is
        deregistered (its actions get "does not exist"); its resting orders stay, the trip
        cancels them. Verified on the venue's own agent list."""
        name = self._lock_preconditions()
        state = self._read_lock()
        agents = await self._agents()
        if state is not None and agents.get(name) == state["throwaway"]:
            return f"already locked: agent {name!r} is the throwaway {state['throwaway']}"
        strategy = agents.get(name) if state is None else state["strategy"]
        if strategy is None:
            raise VenueRejected(f"no agent named {name!r} on {self.account}: nothing to lock", code="lock_agent",
                                venue=self.name)
        throwaway = signing.FastSigner(os.urandom(32)).address  # its key is dropped at once
        until = self._clock.wall_ms() + 86_400_000
        self._write_lock({"name": name, "strategy": strategy, "throwaway": throwaway, "trip_id": trip_id})
        await self._approve(throwaway, f"{name} valid_until {until}")
        agents = await self._agents()
        if agents.get(name) != throwaway:
            raise VenueRejected(f"lock not confirmed: agent {name!r} is {agents.get(name)}", code="lock_verify",
                                venue=self.name)
        return f"agent {name!r} ({strategy}) deregistered; replaced by throwaway {throwaway} valid 1 d"

    async def unlock_order_entry(self, *, operator: str) -> str:
        """Re-approve the strategy's own agent address under its name (see the docs for the
        replay caveat of re-using an agent address)."""
        name = self._lock_preconditions()
        state = self._read_lock()
        if state is None:
            return "not locked"
        await self._approve(state["strategy"], name)
        agents = await self._agents()
        if agents.get(name) != state["strategy"]:
            raise VenueRejected(f"unlock not confirmed: agent {name!r} is {agents.get(name)}", code="unlock_verify",
                                venue=self.name)
        self._write_lock(None)
        return f"agent {name!r} ({state['strategy']}) restored by {operator}"
