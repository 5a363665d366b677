"""Simulated Hyperliquid on loopback: ``POST /info``, ``POST /exchange``, WS ``/ws`` and an
admin API, with fault injection. The rules live in :mod:`.core`.

URLs once serving: ``rest_url`` (the SDK's ``base_url``; ``/info``, ``/exchange``),
``ws_url`` (``/ws`` on its own port), ``admin_url`` (``/admin``). The network (mainnet or
testnet signatures) is explicit: the official SDK signs testnet unless its base_url is the
real mainnet URL, so the default here is testnet.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import structlog
import trio

from killswitch.clock import Clock
from killswitch.net import ws as wsmod
from killswitch.net.http import HttpServer, Request, Response
from killswitch.venues.base import RateBudget

from .. import signing
from .core import BadBody, Push, SimCore

log = structlog.get_logger("killswitch.venue.hyperliquid.sim")
IP_WEIGHT_PER_MIN = 1200
WS_MAX_CONNECTIONS = 10
WS_MAX_SUBSCRIPTIONS = 1000
WS_MAX_USERS = 10
WS_MAX_MESSAGES_PER_MIN = 2000
WS_MAX_IN_FLIGHT_POSTS = 100
WS_NEW_CONNECTIONS_PER_MIN = 30
IDLE_CLOSE_S = 60.0
OUTBOX_FRAMES = 10_000
DESERIALIZE = "Failed to deserialize the JSON body into the target type"


@dataclass(slots=True)
class Faults:
    delay_s: float = 0.0
    delay_count: int = 0  # next N /exchange requests wait delay_s before being processed
    drop_response_count: int = 0  # next N /exchange are processed (committed) but never answered
    http_500_count: int = 0  # next N /exchange answer 500 without being processed
    ignore_pings: bool = False  # no pong (the socket stays open: a stalled feed)
    ignore_pings_count: int = 0  # ... for the next N pings only (self-clearing)
    stall_pushes: bool = False  # subscription pushes silently not sent (posts and pongs still are)
    stall_pushes_count: int = 0  # ... for the next N push frames only (self-clearing)
    reject_text: str = "Action disabled"  # whole-action refusal ({"status":"err"}) ...
    reject_count: int = 0  # ... for the next N actions, without processing them


@dataclass(slots=True, eq=False)
class _WsConn:
    ep: wsmod.WsEndpoint
    send: trio.MemorySendChannel
    subs: dict[str, dict] = field(default_factory=dict)  # canonical key -> subscription
    budget: RateBudget = field(default_factory=lambda: RateBudget([(60, WS_MAX_MESSAGES_PER_MIN)]))
    in_flight: int = 0


def _sub_key(sub: dict) -> str:
    return orjson.dumps({k: (v.lower() if k == "user" and isinstance(v, str) else v)
                         for k, v in sorted(sub.items())}).decode()


class HyperliquidSim:
    def __init__(self, *, network: str = signing.TESTNET, clock: Clock | None = None,
                 idle_close_s: float = IDLE_CLOSE_S, ip_weight_per_min: int = IP_WEIGHT_PER_MIN,
                 greeting: bool = False, **options: Any) -> None:
        self.core = SimCore(network=network, **options)
        self.clock = clock or Clock()
        self.idle_close_s = idle_close_s
        self.greeting = greeting
        self.faults = Faults()
        self.http = HttpServer()
        self.ip_budget = RateBudget([(60, ip_weight_per_min)])
        self.ws_new_budget = RateBudget([(60, WS_NEW_CONNECTIONS_PER_MIN)])
        self.ws_host = ""
        self.ws_port = 0
        self._conns: set[_WsConn] = set()
        self._dms_kick = trio.Event()
        self.exchange_log: deque = deque(maxlen=100_000)  # (t_recv_s, action type)
        self.idle_closes = 0
        self.refused_429 = 0  # requests answered 429 (over the per-IP weight)
        # Hooks for benchmarks (trio time): right before a WS frame is handed to the socket,
        # ``on_push_send(t_s, frame)``; when an /exchange body is parsed, ``on_exchange(t_s, type)``.
        self.on_push_send = None
        self.on_exchange = None
        self._setup_routes()

    @property
    def network(self) -> str:
        return self.core.network

    @property
    def rest_url(self) -> str:
        return self.http.url

    @property
    def ws_url(self) -> str:
        return f"ws://{self.ws_host}:{self.ws_port}/ws"

    @property
    def admin_url(self) -> str:
        return f"{self.http.url}/admin"

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            await nursery.start(self.http.serve, host, 0)
            listeners = await trio.open_tcp_listeners(port, host=host)
            self.ws_host, self.ws_port = listeners[0].socket.getsockname()[:2]
            nursery.start_soon(trio.serve_listeners, self._handle_ws, listeners)
            nursery.start_soon(self._dms_loop)
            task_status.started(self)

    # -- the dead-man's switch fires on the sim's own clock --------------------------------------

    async def _dms_loop(self) -> None:
        while True:
            due = self.core.next_dms_ms()
            kick = self._dms_kick
            if due is None:
                await kick.wait()
            else:
                wait_s = (due - self.clock.wall_ms()) / 1000
                if wait_s > 0:
                    with trio.move_on_after(wait_s):
                        await kick.wait()
            if kick is self._dms_kick and kick.is_set():
                self._dms_kick = trio.Event()
            self._publish(self.core.tick(self.clock.wall_ms()))

    # -- HTTP ------------------------------------------------------------------------------------

    def _setup_routes(self) -> None:
        r = self.http.route
        r("POST", "/info", self._info)
        r("POST", "/exchange", self._exchange)
        r("POST", "/admin/accounts", self._admin_accounts)
        r("POST", "/admin/agents", self._admin_agents)
        r("POST", "/admin/orders", self._admin_orders)
        r("POST", "/admin/marks", self._admin_marks)
        r("POST", "/admin/faults", self._admin_faults)
        r("GET", "/admin/state", self._admin_state)

    def _charge_ip(self, weight: int) -> bool:
        ok = self.ip_budget.try_charge(weight, self.clock.monotonic_s())
        self.refused_429 += not ok
        return ok

    async def _info(self, req: Request) -> Response:
        try:
            body = req.json()
        except orjson.JSONDecodeError:
            return Response.text(DESERIALIZE, 422)
        if not self._charge_ip(SimCore.info_weight(body)):
            return Response.text("", 429)
        try:
            return Response.json(self.core.info(body, self.clock.wall_ms()))
        except BadBody as exc:
            return Response.text(str(exc), 422)

    async def _exchange(self, req: Request) -> Response:
        try:
            body = req.json()
        except orjson.JSONDecodeError:
            return Response.text(DESERIALIZE, 422)
        n = 1
        if isinstance(body, dict) and isinstance(body.get("action"), dict):
            a = body["action"]
            n = len(a.get("cancels") or a.get("orders") or ()) or 1
        if not self._charge_ip(1 + n // 40):
            return Response.text("", 429)
        resp = await self.handle_exchange(body)
        if resp is None:
            return Response(status=-1)
        status, obj = resp
        return Response.text(obj, status) if isinstance(obj, str) else Response.json(obj, status)

    async def handle_exchange(self, body: Any) -> tuple[int, Any] | None:
        """(HTTP status, body); None = processed but the reply is dropped (fault)."""
        f = self.faults
        t = self.action_type = body.get("action", {}).get("type", "?") if isinstance(body, dict) and \
            isinstance(body.get("action"), dict) else "?"
        self.exchange_log.append((trio.current_time(), t))
        if self.on_exchange is not None:
            self.on_exchange(trio.current_time(), t)
        if f.delay_count > 0:
            f.delay_count -= 1
            await trio.sleep(f.delay_s)
        if f.http_500_count > 0:
            f.http_500_count -= 1
            return 500, "internal server error"
        if f.reject_count > 0:
            f.reject_count -= 1
            return 200, {"status": "err", "response": f.reject_text}
        try:
            reply, pushes = self.core.exchange(body, self.clock.wall_ms())
        except BadBody as exc:
            return 422, str(exc)
        self._publish(pushes)
        if t == "scheduleCancel":
            self._dms_kick.set()
        if f.drop_response_count > 0:
            f.drop_response_count -= 1
            return None
        return 200, reply

    # -- WebSocket -------------------------------------------------------------------------------

    def _decide(self, req) -> tuple[bool, list, int, bytes]:
        if req.target.split("?")[0] != "/ws":
            return False, [], 404, b"not found"
        if len(self._conns) >= WS_MAX_CONNECTIONS:
            return False, [], 429, b"too many connections"
        if not self.ws_new_budget.try_charge(1, trio.current_time()):
            return False, [], 429, b"too many new connections"
        return True, [], 0, b""

    async def _handle_ws(self, stream: trio.SocketStream) -> None:
        conn = None
        try:
            ep = await wsmod.accept(stream, timeout_s=5, decide=self._decide)
            if ep is None:
                return
            ep.answer_pings = True
            send, recv = trio.open_memory_channel(OUTBOX_FRAMES)
            conn = _WsConn(ep, send)
            self._conns.add(conn)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._idle_watch, conn, nursery.cancel_scope)
                nursery.start_soon(self._writer, conn, recv)
                if self.greeting:
                    await send.send(b"Websocket connection established.")
                try:
                    while True:
                        raw = await ep.receive()
                        if not conn.budget.try_charge(1, trio.current_time()):
                            await ep.abort()  # over 2000 messages a minute
                            return
                        for frame in self._handle_ws_message(conn, raw):
                            if isinstance(frame, tuple):  # a posted action: processed concurrently
                                rid, payload = frame
                                if conn.in_flight >= WS_MAX_IN_FLIGHT_POSTS:
                                    await send.send(self._frame("error", f"too many pending post requests id={rid}"))
                                    continue
                                conn.in_flight += 1
                                nursery.start_soon(self._post_action, conn, rid, payload)
                                continue
                            await send.send(frame)
                except (wsmod.WsClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                except Exception:  # a sim bug must not take the whole sim down
                    log.exception("sim_ws_error")
                finally:
                    nursery.cancel_scope.cancel()
        except (wsmod.WsClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            if conn is not None:
                self._conns.discard(conn)
            with trio.move_on_after(1) as cs:
                cs.shield = True
                await stream.aclose()

    async def _idle_watch(self, conn: _WsConn, scope: trio.CancelScope) -> None:
        # The venue closes a connection it has heard nothing from for 60 s (a ping counts).
        ep = conn.ep
        while not ep.closed:
            deadline = ep.last_recv_s + self.idle_close_s
            if trio.current_time() >= deadline:
                self.idle_closes += 1
                await ep.abort()
                scope.cancel()
                return
            await trio.sleep_until(deadline)

    async def _writer(self, conn: _WsConn, recv: trio.MemoryReceiveChannel) -> None:
        try:
            async for frame in recv:
                hook = self.on_push_send
                if hook is not None:
                    hook(trio.current_time(), frame)
                await conn.ep.send_text(frame)
        except wsmod.WsClosed:
            await conn.ep.abort()

    @staticmethod
    def _frame(channel: str, data: Any) -> bytes:
        return orjson.dumps({"channel": channel, "data": data})

    def _handle_ws_message(self, conn: _WsConn, raw: str | bytes) -> list:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [self._frame("error", f"Error parsing JSON into valid websocket request: {raw!s:.200}")]
        method = msg.get("method") if isinstance(msg, dict) else None
        if method == "ping":
            f = self.faults
            if f.ignore_pings_count > 0:
                f.ignore_pings_count -= 1
                return []
            return [] if f.ignore_pings else [self._frame("pong", None)]
        if method in ("subscribe", "unsubscribe"):
            sub = msg.get("subscription")
            if not isinstance(sub, dict) or not isinstance(sub.get("type"), str):
                return [self._frame("error", f"Error parsing JSON into valid websocket request: {msg}")]
            return self._subscribe(conn, method, sub)
        if method == "post":
            return [self._post(msg)]
        return [self._frame("error", f"Error parsing JSON into valid websocket request: {msg}")]

    def _subscribe(self, conn: _WsConn, method: str, sub: dict) -> list[bytes]:
        key = _sub_key(sub)
        text = orjson.dumps(sub).decode()
        if method == "unsubscribe":
            if conn.subs.pop(key, None) is None:
                return [self._frame("error", f"Already unsubscribed: {text}")]
            return [self._frame("subscriptionResponse", {"method": "unsubscribe", "subscription": sub})]
        if key in conn.subs:
            return [self._frame("error", f"Already subscribed: {text}")]
        t = sub["type"]
        if t not in ("orderUpdates", "userEvents", "userFills", "clearinghouseState", "openOrders", "allMids"):
            return [self._frame("error", f"Invalid subscription {text}")]
        user = sub.get("user")
        if t != "allMids" and not isinstance(user, str):
            return [self._frame("error", f"Invalid subscription {text}")]
        if sum(len(c.subs) for c in self._conns) >= WS_MAX_SUBSCRIPTIONS:
            return [self._frame("error", "Cannot track more than 1000 total subscriptions.")]
        users = {s.get("user", "").lower() for c in self._conns for s in c.subs.values() if s.get("user")}
        if user and user.lower() not in users and len(users) >= WS_MAX_USERS:
            return [self._frame("error", f"Cannot track more than {WS_MAX_USERS} total users.")]
        conn.subs[key] = sub
        ack = dict(sub)
        if t in ("clearinghouseState", "openOrders"):
            ack.setdefault("dex", "")
        out = [self._frame("subscriptionResponse", {"method": "subscribe", "subscription": ack})]
        now_ms = self.clock.wall_ms()
        acct = self.core.accounts.get(user.lower()) if user else None
        if t == "userFills":
            out.append(self._frame("userFills", {"isSnapshot": True, "user": user.lower(), "fills": []}))
        elif t == "clearinghouseState":
            out.append(self._frame("clearinghouseState", {"dex": "", "user": user.lower(),
                                                          "clearinghouseState": self.core.clearinghouse_state(
                                                              acct, now_ms)}))
        elif t == "openOrders":
            out.append(self._frame("openOrders", {"dex": "", "user": user.lower(),
                                                  "orders": self.core.info({"type": "frontendOpenOrders",
                                                                            "user": user}, now_ms)}))
        return out

    def _post(self, msg: dict):
        rid = msg.get("id")
        req = msg.get("request")
        if not isinstance(rid, int) or not isinstance(req, dict) or req.get("type") not in ("info", "action"):
            return self._frame("error", f"Error parsing JSON into valid websocket request: {msg}")
        payload = req.get("payload")
        now_ms = self.clock.wall_ms()
        try:
            if req["type"] == "info":
                data = self.core.info(payload, now_ms)
                return self._frame("post", {"id": rid, "response": {"type": "info", "payload": {
                    "type": payload.get("type"), "data": data}}})
            return (rid, payload)  # type: ignore[return-value]
        except BadBody as exc:
            return self._frame("post", {"id": rid, "response": {"type": "error", "payload": str(exc)}})

    async def _post_action(self, conn: _WsConn, rid: int, payload: Any) -> None:
        """A WS-posted action: the same processing (and faults) as POST /exchange."""
        try:
            resp = await self.handle_exchange(payload)
            if resp is None:
                return  # processed, reply dropped (fault)
            status, obj = resp
            if status == 200:
                frame = self._frame("post", {"id": rid, "response": {"type": "action", "payload": obj}})
            else:  # "mirrors the HTTP status"
                frame = self._frame("post", {"id": rid, "response": {"type": "error", "payload": str(obj)}})
            self._push(conn, frame)
        finally:
            conn.in_flight -= 1

    def _publish(self, pushes: list[Push]) -> None:
        touched: set[str] = set()
        for p in pushes:
            touched.add(p.user)
            kind = {"orderUpdates": "orderUpdates", "user": "userEvents", "userFills": "userFills"}[p.channel]
            frame = self._frame(p.channel, p.data)
            for conn in list(self._conns):
                if any(s["type"] == kind and str(s.get("user", "")).lower() == p.user for s in conn.subs.values()):
                    if not self._stalled():
                        self._push(conn, frame)
        now_ms = self.clock.wall_ms()
        for user in touched:  # the user-echoing state feeds re-push on change
            state = None
            for conn in list(self._conns):
                if any(s["type"] == "clearinghouseState" and str(s.get("user", "")).lower() == user
                       for s in conn.subs.values()):
                    if self._stalled():
                        continue
                    if state is None:
                        state = self._frame("clearinghouseState", {
                            "dex": "", "user": user,
                            "clearinghouseState": self.core.clearinghouse_state(self.core.accounts.get(user), now_ms)})
                    self._push(conn, state)

    def _stalled(self) -> bool:
        """Is this push frame lost (the stall fault)? Consumes one of ``stall_pushes_count``."""
        f = self.faults
        if f.stall_pushes_count > 0:
            f.stall_pushes_count -= 1
            return True
        return f.stall_pushes

    def _push(self, conn: _WsConn, frame: bytes) -> None:
        try:
            conn.send.send_nowait(frame)
        except trio.WouldBlock:  # a client too slow for 10 000 frames is cut off, as a venue would
            conn.send.close()

    # -- admin -----------------------------------------------------------------------------------

    async def _admin_call(self, fn) -> Response:
        try:
            return Response.json(fn())
        except (ValueError, TypeError, KeyError) as exc:
            return Response.json({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 400)

    async def _admin_accounts(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin_call(lambda: (self.core.add_account(
            b["address"], usdc=Decimal(str(b.get("usdc", "10000"))),
            cum_vlm=Decimal(str(b.get("cum_vlm", "0")))), {"ok": True})[1])

    async def _admin_agents(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin_call(lambda: (self.core.add_agent(b["master"], b["agent"], b.get("name", "")),
                                               {"ok": True})[1])

    def place(self, user: str, coin: str, *, is_buy: bool, price: str, size: str, count: int = 1,
              trigger: dict | None = None, reduce_only: bool = False) -> list[int]:
        """Rest orders directly (as if the strategy placed them), with an orderUpdates push."""
        acct = self.core.accounts[user.lower()]
        pushes: list[Push] = []
        oids = []
        asset = self.core.asset_by_coin[coin]
        for _ in range(count):
            t = {"trigger": trigger} if trigger else {"limit": {"tif": "Gtc"}}
            o = {"a": asset, "b": is_buy, "p": price, "s": size, "r": reduce_only, "t": t}
            st = self.core._place(acct, o, self.clock.wall_ms(), pushes)
            oids.append((st.get("resting") or st.get("filled"))["oid"])
        self._publish(pushes)
        return oids

    async def _admin_orders(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin_call(lambda: {"ok": True, "oids": self.place(
            b["user"], b["coin"], is_buy=b.get("side", "buy") == "buy", price=str(b["price"]), size=str(b["size"]),
            count=int(b.get("count", 1)), trigger=b.get("trigger"), reduce_only=bool(b.get("reduce_only", False)))})

    async def _admin_marks(self, req: Request) -> Response:
        b = req.json() or {}

        def apply():
            for coin, px in b.items():
                self.core.assets[self.core.asset_by_coin[coin]].mark = Decimal(str(px))
            return {"ok": True}
        return await self._admin_call(apply)

    def set_faults(self, **changes: Any) -> Faults:
        for k, v in changes.items():
            if k not in Faults.__slots__:
                raise KeyError(f"unknown fault {k!r}")
            setattr(self.faults, k, v)
        return self.faults

    async def drop_connections(self) -> int:
        n = 0
        for conn in list(self._conns):
            await conn.ep.abort()
            n += 1
        return n

    async def _admin_faults(self, req: Request) -> Response:
        b = dict(req.json() or {})
        n = await self.drop_connections() if b.pop("drop_connections", False) else 0
        return await self._admin_call(lambda: {"ok": True, "dropped": n, "faults": {
            k: getattr(self.set_faults(**b), k) for k in Faults.__slots__}})

    def state(self) -> dict:
        return {"network": self.network, "accounts": {
            a.address: {"open_orders": len(a.orders), "requests_used": a.requests_used,
                        "dms_time_ms": a.dms_time_ms, "dms_fired_today": a.dms_fired_today,
                        "named_agents": {n: v[0] for n, v in a.named_agents.items()}}
            for a in self.core.accounts.values()}, "ws_connections": len(self._conns), "idle_closes": self.idle_closes,
            "fast_cancels_refused": self.core.fast_cancels_refused}

    async def _admin_state(self, req: Request) -> Response:
        return await self._admin_call(self.state)
