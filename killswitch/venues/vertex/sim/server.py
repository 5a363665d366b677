"""Simulated Vertex/Nado gateway on loopback: gateway WS, subscription WS, REST, trigger
service and an admin API, with fault injection. The rules live in :mod:`.simcore`.

URLs once serving: ``gateway_ws_url`` (``/v1/ws``), ``subscribe_ws_url`` (``/v1/subscribe``,
both on the websocket port), ``gateway_rest_url`` (``/v1`` on the HTTP port: ``/execute``,
``/query``), ``trigger_url`` (``/trigger``: ``/execute``, ``/query``), ``admin_url``
(``/admin``).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import structlog
import trio
from wsproto.extensions import PerMessageDeflate

from killswitch.clock import Clock
from killswitch.net.http import HttpServer, Request, Response

from killswitch.net import ws as wsmod
from killswitch.venues.vertex.sim.core import SUBSCRIPTION_CAP_PER_WALLET, X18, ExecError, Push, SimCore, Subaccount

log = structlog.get_logger("killswitch.venue.vertex.sim")
OUTBOX_FRAMES = 10_000


# position_change reason when a test or the admin API sets balances without one: a PnL change
# (never a cash flow), so a lower balance is a loss the drawdown rule sees.
DEFAULT_BALANCE_REASON = "settle_pnl"


@dataclass(slots=True)
class Faults:
    delay_s: float = 0.0
    delay_count: int = 0  # next N executes are delayed by delay_s before being processed
    drop_response_count: int = 0  # next N executes are processed but never answered
    reject_code: int = 0
    reject_count: int = 0  # next N executes fail with reject_code
    maintenance_code: int = 1004
    maintenance_count: int = 0
    ignore_pings: bool = False
    # Doc "2026 changes" item 6: GET /ip answers 403 {"blocked":true,"reason":"ip_query_only"};
    # queries still work, every execute is refused (REST: that 403; WS: a failure naming it).
    query_only: bool = False
    # The sim's clock runs this far ahead of its injected Clock (ms): a venue whose clock
    # disagrees with the host's (GET /time, recv_time and expiration windows all follow it).
    clock_offset_ms: int = 0
    # Next N trigger-service queries (list_trigger_orders) fail with this code: a flaky read.
    trigger_query_fail_code: int = 5000
    trigger_query_fail_count: int = 0
    mute_pushes: bool = False  # a stalled stream: sockets open, pings answered, no account pushes


@dataclass(slots=True, eq=False)
class _SubConn:
    ep: wsmod.WsEndpoint
    send: trio.MemorySendChannel
    wallet: str | None = None
    streams: set = field(default_factory=set)  # (type, subaccount, product_id | None)


class VertexSim:
    def __init__(
        self,
        *,
        flavour: str = "nado",
        clock: Clock | None = None,
        chain_id: int | None = None,
        endpoint_address: str | None = None,
        idle_timeout_s: float = 30.0,
        require_deflate: bool = True,
        require_accept_encoding: bool = True,
        **options: Any,
    ) -> None:
        self.core = SimCore(flavour=flavour, chain_id=chain_id, endpoint_address=endpoint_address, **options)
        self.clock = clock or Clock()
        self.idle_timeout_s = idle_timeout_s
        self.require_deflate = require_deflate
        self.require_accept_encoding = require_accept_encoding
        self.faults = Faults()
        self.http = HttpServer()
        self.ws_host = ""
        self.ws_port = 0
        self._gateway_conns: set[wsmod.WsEndpoint] = set()
        self._sub_conns: set[_SubConn] = set()
        self._endpoints: set[wsmod.WsEndpoint] = set()  # every open websocket (faults apply to all)
        # Hooks for tests and benchmarks (trio time).
        self.execute_log: deque = deque(maxlen=100_000)  # (t_recv_s, request_type, sender)
        self.stream_write_log: deque = deque(maxlen=100_000)  # (t_written_s, event type)
        # Called right before a stream frame is handed to the socket (before the websocket
        # framing and permessage-deflate), on every subscription connection, including ones
        # opened by a reconnect: ``on_stream_send(t_s, kind, frame_bytes)``.
        self.on_stream_send: Callable[[float, str, bytes], None] | None = None
        # Called when an execute has been read and parsed, before it is processed:
        # ``on_execute(t_s, request_type)`` (same stamp as ``execute_log``).
        self.on_execute: Callable[[float, str], None] | None = None
        self.rejected_handshakes = 0
        self._nonce_rand = 0
        self._setup_routes()

    # -- URLs ---------------------------------------------------------------------------

    @property
    def gateway_ws_url(self) -> str:
        return f"ws://{self.ws_host}:{self.ws_port}/v1/ws"

    @property
    def subscribe_ws_url(self) -> str:
        return f"ws://{self.ws_host}:{self.ws_port}/v1/subscribe"

    @property
    def gateway_rest_url(self) -> str:
        return f"{self.http.url}/v1"

    @property
    def trigger_url(self) -> str:
        return f"{self.http.url}/trigger"

    @property
    def archive_url(self) -> str:
        return f"{self.http.url}/archive"

    @property
    def admin_url(self) -> str:
        return f"{self.http.url}/admin"

    @property
    def chain_id(self) -> int:
        return self.core.chain_id

    @property
    def endpoint_address(self) -> str:
        return self.core.endpoint

    # -- serving ------------------------------------------------------------------------

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            await nursery.start(self.http.serve, host, 0)
            listeners = await trio.open_tcp_listeners(port, host=host)
            self.ws_host, self.ws_port = listeners[0].socket.getsockname()[:2]
            nursery.start_soon(trio.serve_listeners, self._handle_ws, listeners)
            task_status.started(self)

    def _now(self) -> tuple[int, float]:
        return self.clock.wall_ms() + self.faults.clock_offset_ms, self.clock.monotonic_s()

    def _decide(self, req) -> tuple[bool, list, int, bytes]:
        path = req.target.split("?")[0]
        if path == "/v1/ws":
            return True, [], 0, b""
        if path == "/v1/subscribe":
            offered = any(e.split(";")[0].strip() == "permessage-deflate" for e in req.extensions)
            if offered:
                return True, [PerMessageDeflate()], 0, b""
            if not self.require_deflate:
                return True, [], 0, b""
            self.rejected_handshakes += 1
            body = {"status": "failure", "error_code": 2080,
                    "error": "WebsocketCompressionRequired: permessage-deflate is required"}
            return False, [], 400, orjson.dumps(body)
        return False, [], 404, orjson.dumps({"status": "failure", "error": "not found"})

    async def _handle_ws(self, stream: trio.SocketStream) -> None:
        ep = None
        try:
            ep = await wsmod.accept(stream, timeout_s=5, decide=self._decide)
            if ep is None:
                return
            ep.answer_pings = not self.faults.ignore_pings
            self._endpoints.add(ep)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._idle_watch, ep, nursery.cancel_scope)
                try:
                    if ep.target.startswith("/v1/ws"):
                        await self._gateway_loop(ep)
                    else:
                        await self._subscribe_loop(ep, nursery)
                except (wsmod.WsClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                except Exception:  # a sim bug must not take the whole sim down
                    log.exception("sim_connection_error", target=ep.target)
                finally:
                    nursery.cancel_scope.cancel()
        except (wsmod.WsClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._endpoints.discard(ep)
            with trio.move_on_after(1) as cs:
                cs.shield = True
                await stream.aclose()

    async def _idle_watch(self, ep: wsmod.WsEndpoint, scope: trio.CancelScope) -> None:
        # Sleeps until the connection would be idle for idle_timeout_s (re-armed by every
        # frame received), instead of polling: the sim wakes only when there is work.
        while not ep.closed:
            deadline = ep.last_recv_s + self.idle_timeout_s
            if trio.current_time() >= deadline:
                log.info("sim_idle_drop", target=ep.target)
                await ep.abort()
                scope.cancel()
                return
            await trio.sleep_until(deadline)

    # -- gateway --------------------------------------------------------------------------

    async def _gateway_loop(self, ep: wsmod.WsEndpoint) -> None:
        self._gateway_conns.add(ep)
        try:
            while True:
                raw = await ep.receive()
                resp = await self.handle_gateway(raw)
                if resp is not None:
                    await ep.send_text(orjson.dumps(resp))
        finally:
            self._gateway_conns.discard(ep)

    async def handle_gateway(self, raw: str | bytes) -> dict | None:
        """One gateway request (WS frame or REST body); None = drop the response (fault)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"status": "failure", "error": "invalid JSON", "error_code": 2038, "request_type": "unknown"}
        if isinstance(body, dict) and "type" in body:
            now_ms, _ = self._now()
            return self.core.query(body, now_ms=now_ms)
        return await self._execute(body, trigger=False)

    async def _execute(self, body: Any, *, trigger: bool) -> dict | None:
        name = next(iter(body), "unknown") if isinstance(body, dict) and body else "unknown"
        f = self.faults
        t_recv = trio.current_time()
        self.execute_log.append((t_recv, f"execute_{name}", _sender_of(body)))
        if self.on_execute is not None:
            self.on_execute(t_recv, f"execute_{name}")
        if f.delay_count > 0:
            f.delay_count -= 1
            await trio.sleep(f.delay_s)
        drop = False
        if f.drop_response_count > 0:
            f.drop_response_count -= 1
            drop = True
        if f.query_only:
            resp = {"status": "failure", "error": "ip_query_only: this IP may only query",
                    "request_type": f"execute_{name}"}
        elif f.maintenance_count > 0:
            f.maintenance_count -= 1
            resp = {"status": "failure", "error": "maintenance", "error_code": f.maintenance_code,
                    "request_type": f"execute_{name}"}
        elif f.reject_count > 0:
            f.reject_count -= 1
            resp = {"status": "failure", "error": "injected rejection", "error_code": f.reject_code,
                    "request_type": f"execute_{name}"}
        else:
            now_ms, now_s = self._now()
            resp, pushes = self.core.execute(body, now_ms=now_ms, now_s=now_s, trigger=trigger)
            self._publish(pushes)
        return None if drop else resp

    # -- subscriptions ------------------------------------------------------------------------

    async def _subscribe_loop(self, ep: wsmod.WsEndpoint, nursery: trio.Nursery) -> None:
        send, recv = trio.open_memory_channel(OUTBOX_FRAMES)
        conn = _SubConn(ep, send)
        self._sub_conns.add(conn)
        nursery.start_soon(self._writer, conn, recv)
        try:
            while True:
                raw = await ep.receive()
                reply = self._handle_sub_message(conn, raw)
                if reply is None:
                    await ep.abort()  # over the per-wallet cap: "automatically disconnected"
                    return
                await self._enqueue(conn, reply)
        finally:
            self._sub_conns.discard(conn)

    async def _writer(self, conn: _SubConn, recv: trio.MemoryReceiveChannel) -> None:
        try:
            async for frame, kind in recv:
                hook = self.on_stream_send
                if hook is not None:
                    hook(trio.current_time(), kind, frame)
                await conn.ep.send_text(frame)
                self.stream_write_log.append((trio.current_time(), kind))
        except wsmod.WsClosed:
            await conn.ep.abort()

    async def _enqueue(self, conn: _SubConn, reply: dict) -> None:
        await conn.send.send((orjson.dumps(reply), "reply"))

    def _handle_sub_message(self, conn: _SubConn, raw: str | bytes) -> dict | None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"result": None, "error": "error parsing request", "id": 0}
        if not isinstance(msg, dict):
            return {"result": None, "error": "error parsing request", "id": 0}
        rid = msg.get("id") if isinstance(msg.get("id"), int) else 0
        method = msg.get("method")
        now_ms, _ = self._now()
        if method == "authenticate":
            try:
                wallet = self.core.authenticate(msg, now_ms)
            except ExecError as exc:
                return {"result": None, "error": exc.message, "error_code": exc.code, "id": rid}
            n = sum(1 for c in self._sub_conns if c.wallet == wallet and c is not conn)
            if n >= SUBSCRIPTION_CAP_PER_WALLET:
                return None
            conn.wallet = wallet
            return {"result": None, "id": rid}
        if method in ("subscribe", "unsubscribe"):
            error = self._subscription(conn, method, msg.get("stream"))
            return {"result": None, "id": rid} if error is None else {"result": None, "error": error, "id": rid}
        if method in ("subscribe_multi", "unsubscribe_multi"):
            # nado-protocol 2.0 only; the reply is undocumented: all or nothing, one ack.
            streams = msg.get("streams")
            if not isinstance(streams, list) or not streams:
                return {"result": None, "error": "error parsing request: missing field `streams`", "id": rid}
            single = method.removesuffix("_multi")
            for stream in streams:
                error = self._subscription(conn, single, stream, check_only=True)
                if error is not None:
                    return {"result": None, "error": error, "id": rid}
            for stream in streams:
                self._subscription(conn, single, stream)
            return {"result": None, "id": rid}
        if method == "time":
            return {"result": {"method": "time", "server_time": str(now_ms)}, "id": rid}
        if method == "list":
            return {"result": [{"type": t, "subaccount": s, "product_id": p} for t, s, p in conn.streams], "id": rid}
        if method == "ping":
            return {"result": {"method": "pong", "server_time": str(now_ms), "client_time": msg.get("client_time")},
                    "id": rid}
        return {"result": None, "error": f"unknown method {method!r}", "id": rid}

    @staticmethod
    def _subscription(conn: _SubConn, method: str, stream: Any, *, check_only: bool = False) -> str | None:
        """Apply one subscribe/unsubscribe; the error text, or None."""
        if not isinstance(stream, dict) or not isinstance(stream.get("type"), str):
            return "error parsing request: missing field `stream`"
        st = stream["type"]
        sub = str(stream.get("subaccount", "")).lower()
        pid = stream.get("product_id")
        key = (st, sub, pid if isinstance(pid, int) else None)
        if method == "subscribe" and st == "order_update" and (conn.wallet is None or sub[:42] != conn.wallet):
            return "Auth is needed."
        if not check_only:
            (conn.streams.discard if method == "unsubscribe" else conn.streams.add)(key)
        return None

    def _publish(self, pushes: list[Push]) -> None:
        if self.faults.mute_pushes:
            return
        for p in pushes:
            frame = orjson.dumps(p.event)
            for conn in list(self._sub_conns):
                if (p.stream, p.subaccount, p.product_id) in conn.streams or (p.stream, p.subaccount, None) in conn.streams:
                    try:
                        conn.send.send_nowait((frame, p.stream))
                    except trio.WouldBlock:
                        # A subscriber that cannot keep up is dropped, as a real server would.
                        conn.ep.closed = True
                    except trio.BrokenResourceError:
                        pass

    # -- Python API (same operations as the admin API) ---------------------------------------

    def create_subaccount(self, *, name: str = "default", private_key: str | None = None) -> dict:
        sub = self.core.create_subaccount(name=name, private_key=private_key)
        return {"private_key": sub.private_key_hex, "address": sub.address, "sender": sub.sender}

    def link_signer(self, sender: str, signer_address: str | None) -> None:
        """Set the linked signer directly (no signature, weight, budget or tx_nonce)."""
        self.core.subaccount(sender).linked_signer = signer_address.lower() if signer_address else None

    def spend_link_signer_budget(self, sender: str, count: int) -> int:
        """Record ``count`` link_signer requests now (as a strategy burning the weekly 50 would);
        returns the seconds until the next one is accepted."""
        sub = self.core.subaccount(sender)
        now_ms, _ = self._now()
        sub.link_signer_ms.extend([now_ms] * int(count))
        return self.core.link_signer_wait_s(sub, now_ms)

    def _admin_nonce(self, now_ms: int) -> int:
        return ((now_ms + 90_000) << 20) | secrets.randbits(20)

    def place_orders(self, sender: str, *, product_id: int, price: str | int, qty: str | int, side: str = "buy",
                     count: int = 1, trigger: bool = False, price_step: str | int = 0) -> list[str]:
        """Place ``count`` orders signed by the subaccount's key (no wallet weight charged).
        Trigger orders get a price trigger at their own price (below for a buy, above for a sell)."""
        sub = self.core.subaccount(sender)
        price_x18 = _to_x18(price)
        step_x18 = _to_x18(price_step)
        amount = _to_x18(qty) * (1 if side == "buy" else -1)
        digests = []
        for i in range(count):
            now_ms, now_s = self._now()
            px = price_x18 - i * step_x18 if side == "buy" else price_x18 + i * step_x18
            criteria = None
            if trigger:
                below = side == "buy"
                if self.core.flavour == "vertex":
                    criteria = {"price_below" if below else "price_above": str(px)}
                else:
                    kind = "oracle_price_below" if below else "oracle_price_above"
                    criteria = {"price_trigger": {"price_requirement": {kind: str(px)}}}
            body = self.core.sign_order_body(sub, product_id=product_id, price_x18=px, amount=amount,
                                             nonce=self._admin_nonce(now_ms), trigger=criteria)
            resp, pushes = self.core.execute(body, now_ms=now_ms, now_s=now_s, trigger=trigger, charge_weight=False)
            if resp["status"] != "success":
                raise ExecError(resp["error_code"], resp["error"])
            self._publish(pushes)
            digests.append(resp["data"]["digest"])
        return digests

    def open_orders(self, sender: str) -> dict:
        sub = self.core.subaccount(sender)
        return {"orders": [o.to_json() for o in sub.orders.values()],
                "trigger_orders": [o.to_json() for o in sub.trigger_orders.values()]}

    def set_oracle(self, prices: dict) -> None:
        for pid, px in prices.items():
            self.core.oracle_x18[int(pid)] = _to_x18(px)

    def set_balances(self, sender: str, *, spot: dict | None = None, perp: dict | None = None,
                     reason: str = DEFAULT_BALANCE_REASON) -> None:
        """Set balances (human units); emits position_change with ``reason`` for each product.

        The default reason is a PnL change (``settle_pnl``), as on the OX.FUN simulator: a
        lower balance reads as a loss, so a drawdown rehearsal trips. Pass
        ``reason="deposit_collateral"`` / ``"withdraw_collateral"`` to model a cash flow,
        which the session reports as ``CashFlowObserved`` and the drawdown rule discounts.
        """
        sub = self.core.subaccount(sender)
        now_ms, _ = self._now()
        pushes = []
        for pid, amt in (spot or {}).items():
            sub.spot_x18[int(pid)] = _to_x18(amt)
            pushes.append(self._position_push(sub, int(pid), sub.spot_x18[int(pid)], 0, reason, now_ms))
        for pid, val in (perp or {}).items():
            amount, vq = (val if isinstance(val, (list, tuple)) else (val, 0))
            sub.perp_x18[int(pid)] = (_to_x18(amount), _to_x18(vq))
            pushes.append(self._position_push(sub, int(pid), _to_x18(amount), _to_x18(vq), reason, now_ms))
        self._publish(pushes)

    def _position_push(self, sub: Subaccount, pid: int, amount: int, vq: int, reason: str, now_ms: int) -> Push:
        return Push("position_change", sub.sender, pid, {
            "type": "position_change", "timestamp": str(now_ms * 1_000_000), "product_id": pid,
            "subaccount": sub.sender, "isolated": False, "amount": str(amount), "v_quote_amount": str(vq),
            "reason": reason})

    def fill_order(self, digest: str, qty: str | int) -> None:
        """Fill part of a resting order: fill + order_update (+ position_change) pushes."""
        for sub in self.core.subaccounts.values():
            o = sub.orders.get(digest.lower())
            if o is None:
                continue
            now_ms, _ = self._now()
            q = min(_to_x18(qty), abs(o.unfilled_amount))
            sign = 1 if o.amount > 0 else -1
            o.unfilled_amount -= sign * q
            ts = str(now_ms * 1_000_000)
            pushes = [Push("fill", sub.sender, o.product_id, {
                "type": "fill", "timestamp": ts, "product_id": o.product_id, "subaccount": sub.sender,
                "order_digest": o.digest, "filled_qty": str(q), "remaining_qty": str(abs(o.unfilled_amount)),
                "original_qty": str(abs(o.amount)), "price": str(o.price_x18), "is_taker": False,
                "is_bid": o.amount > 0})]
            remaining = abs(o.unfilled_amount)
            pushes.append(Push("order_update", sub.sender, o.product_id, {
                "type": "order_update", "timestamp": ts, "product_id": o.product_id, "digest": o.digest,
                "amount": str(remaining), "reason": "filled"}))
            if remaining == 0:
                del sub.orders[o.digest]
            pos_amount, vq = sub.perp_x18.get(o.product_id, (0, 0))
            if o.product_id in self.core.perp_products:
                pos_amount += sign * q
                vq -= sign * q * o.price_x18 // X18
                sub.perp_x18[o.product_id] = (pos_amount, vq)
            else:
                pos_amount = sub.spot_x18.get(o.product_id, 0) + sign * q
                sub.spot_x18[o.product_id] = pos_amount
                sub.spot_x18[0] = sub.spot_x18.get(0, 0) - sign * q * o.price_x18 // X18
            pushes.append(self._position_push(sub, o.product_id, pos_amount, vq, "match_orders", now_ms))
            self._publish(pushes)
            return
        raise ExecError(2020, "order not found")

    def burn_weight(self, sender_or_address: str, weight: int) -> None:
        """Spend wallet weight as the strategy would (we only see it through 1000 errors)."""
        addr = sender_or_address.lower()[:42]
        _, now_s = self._now()
        self.core.budget(addr).charge(int(weight), now_s)

    def set_faults(self, **changes: Any) -> Faults:
        for k, v in changes.items():
            if not hasattr(self.faults, k):
                raise ValueError(f"unknown fault {k!r}")
            setattr(self.faults, k, type(getattr(self.faults, k))(v))
        for ep in self._endpoints:  # open connections follow the fault at once
            ep.answer_pings = not self.faults.ignore_pings
        return self.faults

    async def drop_connections(self, which: str = "all") -> int:
        """Abort TCP connections without a close frame. ``which``: all | gateway | subscribe."""
        eps = []
        if which in ("all", "gateway"):
            eps += list(self._gateway_conns)
        if which in ("all", "subscribe"):
            eps += [c.ep for c in self._sub_conns]
        for ep in eps:
            await ep.abort()
        return len(eps)

    def state(self) -> dict:
        _, now_s = self._now()
        return {
            "flavour": self.core.flavour, "chain_id": self.core.chain_id, "endpoint_addr": self.core.endpoint,
            "subaccounts": {s.sender: {"address": s.address, "orders": len(s.orders),
                                       "trigger_orders": len(s.trigger_orders),
                                       "linked_signer": s.linked_signer,
                                       "health_x18": str(self.core.health_x18(s))}
                            for s in self.core.subaccounts.values()},
            "wallet_weight_available": {a: b.available(now_s) for a, b in self.core.budgets.items()},
            "gateway_connections": len(self._gateway_conns),
            "subscription_connections": len(self._sub_conns),
            "authenticated_subscriptions": sum(1 for c in self._sub_conns if c.wallet),
            "executes_received": len(self.execute_log),
            "faults": {k: getattr(self.faults, k) for k in Faults.__slots__},
        }

    # -- HTTP: REST, trigger, admin ---------------------------------------------------------

    def _setup_routes(self) -> None:
        r = self.http.route
        r("POST", "/v1/execute", self._rest_execute)
        r("GET", "/v1/time", self._rest_time)
        r("GET", "/v1/ip", self._rest_ip)
        r("POST", "/v1/query", self._rest_query)
        r("GET", "/v1/query", self._rest_query)
        r("POST", "/trigger/execute", self._trigger_execute)
        r("POST", "/trigger/query", self._trigger_query)
        r("POST", "/archive", self._archive_query)
        r("POST", "/admin/subaccounts", self._admin_subaccounts)
        r("POST", "/admin/orders", self._admin_orders)
        r("POST", "/admin/trigger_orders", self._admin_trigger_orders)
        r("GET", "/admin/orders", self._admin_get_orders)
        r("POST", "/admin/oracle", self._admin_oracle)
        r("POST", "/admin/balances", self._admin_balances)
        r("POST", "/admin/faults", self._admin_faults)
        r("POST", "/admin/burn_weight", self._admin_burn)
        r("POST", "/admin/fill", self._admin_fill)
        r("GET", "/admin/state", self._admin_state)
        r("POST", "/admin/options", self._admin_options)
        r("POST", "/admin/linked_signer", self._admin_linked_signer)
        r("POST", "/admin/link_signer_budget", self._admin_link_signer_budget)

    def _refuse_encoding(self, req: Request) -> Response | None:
        # The docs: gateway HTTP requests must send Accept-Encoding with gzip, br or deflate.
        # The refusal's code and status are undocumented: HTTP 400, failure envelope, no code.
        if not self.require_accept_encoding or accepts_compression(req.headers.get("accept-encoding", "")):
            return None
        return Response.json({"status": "failure", "error": "Accept-Encoding must include gzip, br or deflate"}, 400)

    async def _rest_time(self, req: Request) -> Response:
        now_ms, _ = self._now()
        return Response.json(now_ms)  # a bare JSON number: the server epoch in ms

    async def _rest_ip(self, req: Request) -> Response:
        if self.faults.query_only:
            return Response.json({"blocked": True, "reason": "ip_query_only"}, 403)
        return Response.json({"blocked": False})

    async def _rest_execute(self, req: Request) -> Response:
        if self.faults.query_only:
            return Response.json({"blocked": True, "reason": "ip_query_only"}, 403)
        refused = self._refuse_encoding(req)
        if refused is not None:
            return refused
        try:
            body = req.json()
        except orjson.JSONDecodeError:
            return Response.json({"status": "failure", "error": "invalid JSON", "error_code": 2038}, 400)
        resp = await self._execute(body, trigger=False)
        return Response(status=-1) if resp is None else Response.json(resp)

    async def _rest_query(self, req: Request) -> Response:
        refused = self._refuse_encoding(req)
        if refused is not None:
            return refused
        if req.method == "GET":
            body: Any = dict(req.query)
            for k in ("product_id",):
                if k in body and body[k].isdigit():
                    body[k] = int(body[k])
            if "product_ids" in body:
                body["product_ids"] = [int(x) for x in body["product_ids"].split(",") if x]
        else:
            body = req.json()
        now_ms, _ = self._now()
        return Response.json(self.core.query(body, now_ms=now_ms))

    async def _trigger_execute(self, req: Request) -> Response:
        resp = await self._execute(req.json(), trigger=True)
        return Response(status=-1) if resp is None else Response.json(resp)

    async def _trigger_query(self, req: Request) -> Response:
        now_ms, _ = self._now()
        f = self.faults
        if f.trigger_query_fail_count > 0:
            f.trigger_query_fail_count -= 1
            return Response.json({"status": "failure", "error": "injected query failure",
                                  "error_code": f.trigger_query_fail_code, "request_type": "query_list_trigger_orders"})
        return Response.json(self.core.trigger_query(req.json(), now_ms=now_ms))

    async def _archive_query(self, req: Request) -> Response:
        now_ms, _ = self._now()
        try:
            return Response.json(self.core.archive_query(req.json(), now_ms=now_ms))
        except (ExecError, orjson.JSONDecodeError) as exc:
            return Response.json({"error": getattr(exc, "message", "invalid JSON")}, 400)

    async def _admin(self, fn) -> Response:
        try:
            return Response.json(fn())
        except ExecError as exc:
            return Response.json({"ok": False, "error_code": exc.code, "error": exc.message}, 400)
        except (ValueError, TypeError, KeyError) as exc:
            return Response.json({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 400)

    async def _admin_subaccounts(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: self.create_subaccount(name=b.get("name", "default"),
                                                                private_key=b.get("private_key")))

    def _place_from(self, b: dict, trigger: bool) -> dict:
        digests = self.place_orders(b["sender"], product_id=int(b["product_id"]), price=b["price"], qty=b["qty"],
                                    side=b.get("side", "buy"), count=int(b.get("count", 1)), trigger=trigger,
                                    price_step=b.get("price_step", 0))
        return {"ok": True, "digests": digests}

    async def _admin_orders(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: self._place_from(b, False))

    async def _admin_trigger_orders(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: self._place_from(b, True))

    async def _admin_get_orders(self, req: Request) -> Response:
        return await self._admin(lambda: self.open_orders(req.query["sender"]))

    async def _admin_oracle(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: (self.set_oracle(b), {"ok": True})[1])

    async def _admin_balances(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: (self.set_balances(b["sender"], spot=b.get("spot"), perp=b.get("perp"),
                                                            reason=b.get("reason", DEFAULT_BALANCE_REASON)),
                                          {"ok": True})[1])

    async def _admin_faults(self, req: Request) -> Response:
        b = dict(req.json() or {})
        drop = b.pop("drop_connections", None)
        if drop:
            n = await self.drop_connections("all" if drop is True else str(drop))
        else:
            n = 0
        return await self._admin(lambda: {"ok": True, "dropped": n,
                                          "faults": {k: getattr(self.set_faults(**b), k) for k in Faults.__slots__}})

    async def _admin_burn(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: (self.burn_weight(b["sender"], int(b["weight"])), {"ok": True})[1])

    async def _admin_fill(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: (self.fill_order(b["digest"], b["qty"]), {"ok": True})[1])

    def set_options(self, **changes: Any) -> dict:
        """Strictness knobs: require_accept_encoding, require_deflate (for new handshakes),
        allow_linked_signer_stream_auth, accept_revoked_signer_link."""
        for k, v in changes.items():
            if k in ("allow_linked_signer_stream_auth", "accept_revoked_signer_link"):
                setattr(self.core, k, bool(v))
            elif k in ("require_accept_encoding", "require_deflate"):
                setattr(self, k, bool(v))
            else:
                raise ValueError(f"unknown option {k!r}")
        return {"require_accept_encoding": self.require_accept_encoding, "require_deflate": self.require_deflate,
                "allow_linked_signer_stream_auth": self.core.allow_linked_signer_stream_auth,
                "accept_revoked_signer_link": self.core.accept_revoked_signer_link}

    async def _admin_options(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: {"ok": True, "options": self.set_options(**b)})

    async def _admin_linked_signer(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: (self.link_signer(b["sender"], b.get("signer")), {"ok": True})[1])

    async def _admin_link_signer_budget(self, req: Request) -> Response:
        b = req.json() or {}
        return await self._admin(lambda: {"ok": True,
                                          "wait_time": self.spend_link_signer_budget(b["sender"], int(b["count"]))})

    async def _admin_state(self, req: Request) -> Response:
        return await self._admin(self.state)


def accepts_compression(header: str) -> bool:
    """Does an Accept-Encoding value accept gzip, br or deflate (q=0 excluded)?"""
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "br", "deflate"):
            q = params.strip().lower()
            if not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000")):
                return True
    return False


def _to_x18(v: str | int) -> int:
    from decimal import Decimal

    d = Decimal(str(v)) * X18
    if d != d.to_integral_value():
        raise ValueError(f"{v} has more than 18 decimals")
    return int(d)


def _sender_of(body: Any) -> str:
    try:
        (payload,) = body.values()
        tx = payload.get("tx") or payload.get("order") or {}
        return str(tx.get("sender", ""))
    except Exception:
        return ""
