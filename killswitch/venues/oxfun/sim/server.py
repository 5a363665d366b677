"""A simulated OX.FUN exchange on loopback: WS v2 (trio-websocket) + REST v3 + admin API.

It enforces what the real venue does (oxfun.md §10): Welcome+nonce greeting, HMAC login
(20000/20025/20024/20005), per-connection message rate (50/s authed, 1/s before login,
20007), 50 orders/s per account, frame length (20027), tag length (20034), invalid JSON
(20009), idle close, text ping/pong, order lifecycle pushes fanned out to every
authenticated socket of the account, cancel-all over REST with the ``CANCEL`` event, and
REST signing (§7.1) with a timestamp window and 429 above 100 req/s per IP.

Design choices where the venue is undocumented (see README "Venue: OX.FUN"):
- private op or private subscription before login -> failure envelope, code ``05001``
  ("Your operation authority is invalid"), configurable via ``unauth_code``;
- REST bad signature -> HTTP 401 ``{"success":false,"code":"20000"}``; unknown key 20025;
  timestamp outside the window 20024;
- text ``ping`` is not counted against the message rate (it is the documented keep-alive).

Time checks use the injected :class:`Clock`, so tests can skew or autojump it.
"""

from __future__ import annotations

import base64
import hmac
import itertools
import os
import re
import socket
import struct
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket
from wsproto.events import TextMessage

from killswitch.clock import Clock
from killswitch.venues.base import RateBudget
from killswitch.venues.oxfun import wire
from killswitch.venues.oxfun.sim.envelope import check_order_envelope
from killswitch.venues.oxfun.sim.book import (
    ORDER_ID_BASE,
    SimAccount,
    SimOrder,
    SimPosition,
    apply_fill,
    crosses,
    fmt,
    new_key_pair,
    order_payload,
    position_pnl,
    rest_order_payload,
    stop_triggers,
)
from killswitch.net.http import HttpServer, Request, Response


DEFAULT_MARKS = {
    "BTC-USD-SWAP-LIN": Decimal("60000"),
    "ETH-USD-SWAP-LIN": Decimal("3000"),
    "SOL-USD-SWAP-LIN": Decimal("150"),
    "OX-USDT": Decimal("0.01"),
}
_OP_RE = re.compile(r'"op"\s*:\s*"([A-Za-z]{1,20})"')
_ORDER_OPS = frozenset({"placeorder", "placeorders", "cancelorder", "cancelorders", "modifyorder", "modifyorders"})
_PRIVATE_CHANNELS = ("order", "balance", "position")


@dataclass
class SimOptions:
    login_window_ms: int = 30_000
    rest_window_s: float = 60.0
    idle_timeout_s: float = 60.0
    ws_rate_authed: int = 50
    ws_rate_unauthed: int = 1
    order_rate: int = 50
    rest_rate: int = 100
    max_frame_chars: int = 4000
    ticker_interval_s: float = 0.5
    unauth_code: str = "05001"
    unknown_cancel_mode: str = "reject"  # reject: immediate 100005 | race: ack true + async CANCEL 100004
    push_before_ack: bool = False
    cancel_all_order_pushes: bool = True
    # REST order commands: recvWindow when the request has none (the docs, as quoted by
    # ccxt: "a default recvWindow of 1000ms is used"); how far ahead of the server a
    # timestamp may be (undocumented; see sim/envelope.py).
    rest_default_recv_window_ms: int = 1_000
    rest_future_tolerance_ms: int = 1_000
    marks: dict = field(default_factory=lambda: dict(DEFAULT_MARKS))


@dataclass
class SimFaults:
    pong_enabled: bool = True
    ack_delay_s: float = 0.0
    drop_acks: bool = False
    reject_cancels_code: str | None = None
    rest_mode: str | None = None  # "429" | "403" | "maintenance"
    rest_remaining: int = 0
    lose_race: bool = False  # cancels of open orders lose the race: the order fills first
    refuse_logins_code: str | None = None


@dataclass
class _Conn:
    conn_id: int
    ws: WebSocketConnection
    budget: RateBudget
    last_rx_s: float
    account: SimAccount | None = None
    subs: set = field(default_factory=set)
    tickers: set = field(default_factory=set)
    nursery: trio.Nursery | None = None
    aborted: bool = False


class OxfunSim:
    def __init__(self, *, clock: Clock | None = None, **options: Any) -> None:
        self.clock = clock or Clock()
        self.options = SimOptions(**options)
        self.faults = SimFaults()
        self.marks: dict[str, Decimal] = {k: Decimal(str(v)) for k, v in self.options.marks.items()}
        self.accounts: dict[str, SimAccount] = {}
        self._conns: dict[int, _Conn] = {}
        self._conn_ids = itertools.count(1)
        self._order_ids = itertools.count(ORDER_ID_BASE + 1)
        self._account_ids = itertools.count(100001)
        self._order_rate: dict[str, RateBudget] = {}
        self._rest_rate: dict[str, RateBudget] = {}
        self.http = HttpServer()
        self.ws_port = 0
        self.host = "127.0.0.1"
        self.counters = {"connections_opened": 0, "frames_received": 0, "pushes_sent": 0, "rest_requests": 0}
        # Hooks for tests/benchmarks: (trio time, tag, n elements) per cancel frame;
        # (conn_id, frame text, trio time) right after each push frame is written.
        self.on_cancel_received: Callable[[float, str | None, int], None] | None = None
        self.on_push_written: Callable[[int, str, float], None] | None = None
        self._register_routes()

    # ==================================================================================
    # Serving
    # ==================================================================================

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/v2/websocket"

    @property
    def rest_url(self) -> str:
        return self.http.url

    async def serve(self, host: str = "127.0.0.1", ws_port: int = 0, http_port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_websocket(
                    self._ws_handler, host, ws_port, None, handler_nursery=nursery,
                    message_queue_size=64, task_status=task_status,
                )
            )
            self.host = host
            self.ws_port = server.port
            await nursery.start(self.http.serve, host, http_port)
            nursery.start_soon(self._ticker_loop)
            task_status.started(self)

    # ==================================================================================
    # Accounts and admin operations (Python API; the admin HTTP API calls these)
    # ==================================================================================

    def add_account(self, api_key: str | None = None, api_secret: str | None = None, balances: dict | None = None) -> tuple[str, str]:
        key, secret = new_key_pair()
        key, secret = api_key or key, api_secret or secret
        acct = SimAccount(key, secret, str(next(self._account_ids)))
        for asset, total in (balances if balances is not None else {"OX": "100000"}).items():
            acct.balances[asset] = Decimal(str(total))
        self.accounts[key] = acct
        return key, secret

    def _account(self, api_key: str) -> SimAccount:
        acct = self.accounts.get(api_key)
        if acct is None:
            raise KeyError("unknown api_key")
        return acct

    def open_orders(self, api_key: str) -> list[dict]:
        return [rest_order_payload(o) for o in self._account(api_key).orders.values()]

    async def place_orders(
        self, api_key: str, *, market: str, side: str = "BUY", price: Any = None, qty: Any = "1", count: int = 1,
        order_type: str = "LIMIT", stop_price: Any = None,
    ) -> list[str]:
        """Place orders as if a strategy had sent them (pushes go to the account's sockets)."""
        acct = self._account(api_key)
        ids = []
        for _ in range(count):
            o = self._new_order(
                market, side.upper(), order_type.upper(), _dec(price), _dec(qty) or Decimal(1), "GTC", _dec(stop_price), None, 0
            )
            ids.append(o.order_id)
            await self._book_order(acct, o)
        return ids

    async def set_mark(self, market: str, price: Any) -> None:
        self.marks[market] = Decimal(str(price))
        await self._push_ticker(market)
        for acct in self.accounts.values():
            await self._trigger_stops(acct, market)
            if market in acct.positions:
                await self._push_positions(acct, [market])

    async def set_balances(self, api_key: str, balances: dict) -> None:
        acct = self._account(api_key)
        for asset, total in balances.items():
            acct.balances[asset] = Decimal(str(total))
        await self._push_balances(acct, list(balances))

    async def set_positions(self, api_key: str, positions: dict) -> None:
        """``{market: {"qty": q, "entry_price": p}}``; qty 0 closes."""
        acct = self._account(api_key)
        for market, p in positions.items():
            qty = Decimal(str(p["qty"]))
            if qty == 0:
                acct.positions.pop(market, None)
            else:
                acct.positions[market] = SimPosition(qty, Decimal(str(p.get("entry_price", self.marks.get(market, 0)))))
        await self._push_positions(acct, list(positions), zero_missing=True)

    async def inject_fault(self, fault: str, **params: Any) -> None:
        f = self.faults
        enabled = bool(params.get("enabled", True))
        if fault == "drop_connections":
            await self.drop_connections(params.get("api_key"))
        elif fault == "pong":
            f.pong_enabled = enabled
        elif fault == "stop_pong":
            f.pong_enabled = False
        elif fault == "ack_delay":
            f.ack_delay_s = float(params.get("seconds", 0))
        elif fault == "drop_acks":
            f.drop_acks = enabled
        elif fault == "reject_cancels":
            code = params.get("code")
            f.reject_cancels_code = str(code) if code else None
        elif fault == "rest":
            mode = params.get("mode")
            if mode not in (None, "429", "403", "maintenance"):
                raise ValueError("rest mode must be 429, 403 or maintenance")
            f.rest_mode, f.rest_remaining = mode, int(params.get("count", 1))
        elif fault == "lose_race":
            f.lose_race = enabled
        elif fault == "unknown_cancel_mode":
            mode = params.get("mode", "reject")
            if mode not in ("reject", "race"):
                raise ValueError("mode must be reject or race")
            self.options.unknown_cancel_mode = mode
        elif fault == "refuse_logins":
            code = params.get("code", "20000")
            f.refuse_logins_code = str(code) if code and enabled else None
        elif fault == "push_before_ack":
            self.options.push_before_ack = enabled
        elif fault == "cancel_all_order_pushes":
            self.options.cancel_all_order_pushes = enabled
        elif fault == "clear":
            self.faults = SimFaults()
        else:
            raise ValueError(f"unknown fault {fault!r}")

    # -- bulk order feed (benchmarks) ---------------------------------------------------

    def order_feed(
        self, api_key: str, *, market: str, n_orders: int, per_frame: int = 1, side: str = "BUY",
        price: Any = "30000", price_levels: int = 1, tick: Any = "0.5", qty: Any = "0.01", close: bool = True,
    ) -> list[str]:
        """``n_orders`` orders placed (and, with ``close``, then cancelled by the user), as
        the order-channel pushes the venue sends for them, encoded now so a benchmark can
        time the sending alone. Nothing is sent: write them with :meth:`encode_pushes` /
        :meth:`send_encoded` (or ``_push``). The account's book goes through the same
        transitions, so with ``close`` it ends where it started; without, the orders rest.

        ``per_frame`` orders share one push (the ``data`` list, §5.3): ``per_frame=1`` gives
        OrderOpened(a), OrderClosed(a), OrderOpened(b), ... (one event per frame);
        ``per_frame=k`` gives OrderOpened(k orders), OrderClosed(the same k), ...
        Prices cycle over ``price_levels`` levels ``tick`` apart below/above ``price``.
        """
        acct = self._account(api_key)
        q = _dec(qty) or Decimal(1)
        base, step = _dec(price), _dec(tick) or Decimal(0)
        sign = -1 if side.upper() == "BUY" else 1  # away from the mark: nothing fills
        levels = [base + sign * step * i for i in range(max(1, price_levels))]
        ts = self.clock.wall_ms()
        frames: list[str] = []
        dumps = orjson.dumps
        k = 0
        for start in range(0, n_orders, per_frame):
            batch = []
            for _ in range(min(per_frame, n_orders - start)):
                batch.append(self._new_order(market, side.upper(), "LIMIT", levels[k % len(levels)], q, "GTC",
                                             None, None, 13))
                k += 1
            for o in batch:
                acct.orders[o.order_id] = o
            acct.counters.orders_placed += len(batch)
            frames.append(dumps({"table": "order", "data": [
                order_payload(acct, o, "OrderOpened", "OPEN", ts) for o in batch]}).decode())
            if not close:
                continue
            for o in batch:
                del acct.orders[o.order_id]
            acct.counters.orders_cancelled += len(batch)
            frames.append(dumps({"table": "order", "data": [
                order_payload(acct, o, "OrderClosed", "CANCELED_BY_USER", ts) for o in batch]}).decode())
        return frames

    def encode_pushes(self, api_key: str, texts: list[str], *, chunk_bytes: int = 1 << 16) -> list[tuple[_Conn, list[bytes]]]:
        """Websocket frames for ``texts``, for every authenticated socket of the account,
        encoded by that connection's own wsproto encoder (the bytes ``send_message`` would
        write), grouped into chunks of whole frames of about ``chunk_bytes``."""
        acct = self._account(api_key)
        out = []
        for conn in [c for c in self._conns.values() if c.account is acct]:
            proto = conn.ws._wsproto  # trio-websocket 0.12 keeps its wsproto connection here
            if getattr(getattr(proto, "connection", None), "_proto", None) is not None and proto.connection._proto.extensions:
                raise RuntimeError("a websocket extension is negotiated: frames cannot be pre-encoded")
            chunks: list[bytes] = []
            cur: list[bytes] = []
            size = 0
            for text in texts:
                data = proto.send(TextMessage(data=text))
                cur.append(data)
                size += len(data)
                if size >= chunk_bytes:
                    chunks.append(b"".join(cur))
                    cur, size = [], 0
            if cur:
                chunks.append(b"".join(cur))
            out.append((conn, chunks))
        return out

    async def send_encoded(self, encoded: list[tuple[_Conn, list[bytes]]], n_frames: int) -> None:
        """Write frames from :meth:`encode_pushes`. Each chunk is written under the
        connection's send lock, so a concurrent push (ticker, pong) lands between frames."""
        for conn, chunks in encoded:
            ws = conn.ws
            stream = ws._stream
            lock = ws._stream_lock
            try:
                for chunk in chunks:
                    async with lock:
                        await stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue
            self.counters["pushes_sent"] += n_frames

    async def drop_connections(self, api_key: str | None = None) -> int:
        """Abort sockets without a close frame (the client sees 1006)."""
        n = 0
        for conn in list(self._conns.values()):
            if api_key is None or (conn.account is not None and conn.account.api_key == api_key):
                await self._abort(conn)
                n += 1
        return n

    def state(self) -> dict:
        return {
            "connections": len(self._conns),
            "authenticated_connections": sum(1 for c in self._conns.values() if c.account is not None),
            "counters": dict(self.counters),
            "marks": {k: fmt(v) for k, v in self.marks.items()},
            "faults": {k: v for k, v in vars(self.faults).items()},
            "accounts": {
                a.api_key: {
                    "account_id": a.account_id,
                    "open_orders": len(a.orders),
                    "balances": {k: fmt(v) for k, v in a.balances.items()},
                    "positions": {k: {"qty": fmt(p.qty), "entry_price": fmt(p.entry_price)} for k, p in a.positions.items()},
                    "counters": {k: v for k, v in vars(a.counters).items() if k != "cancel_frames"},
                    "connections": sum(1 for c in self._conns.values() if c.account is a),
                }
                for a in self.accounts.values()
            },
        }

    # ==================================================================================
    # WebSocket
    # ==================================================================================

    async def _ws_handler(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        conn = _Conn(
            next(self._conn_ids), ws, RateBudget([(1.0, self.options.ws_rate_unauthed)]), self.clock.monotonic_s()
        )
        self._conns[conn.conn_id] = conn
        self.counters["connections_opened"] += 1
        try:
            nonce = base64.b64encode(os.urandom(16)).decode()
            await self._send(conn, orjson.dumps({"event": "Welcome", "nonce": nonce}).decode())
            async with trio.open_nursery() as nursery:
                conn.nursery = nursery
                nursery.start_soon(self._idle_watchdog, conn, nursery.cancel_scope)
                try:
                    while True:
                        message = await ws.get_message()
                        conn.last_rx_s = self.clock.monotonic_s()
                        self.counters["frames_received"] += 1
                        await self._on_message(conn, message)
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
        except ConnectionClosed:
            pass
        finally:
            self._conns.pop(conn.conn_id, None)

    async def _idle_watchdog(self, conn: _Conn, scope: trio.CancelScope) -> None:
        while True:
            deadline = conn.last_rx_s + self.options.idle_timeout_s
            now = self.clock.monotonic_s()
            if now >= deadline:
                self._conns.pop(conn.conn_id, None)
                with trio.move_on_after(1):
                    await conn.ws.aclose(code=1000, reason="idle timeout")
                scope.cancel()
                return
            await trio.sleep(deadline - now)

    async def _abort(self, conn: _Conn) -> None:
        # RST without a close frame: SO_LINGER 0 then close. trio-websocket keeps the TCP
        # stream in ``_stream``; there is no public abort.
        conn.aborted = True
        self._conns.pop(conn.conn_id, None)
        stream = getattr(conn.ws, "_stream", None)
        try:
            sock = stream.socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
        except (AttributeError, OSError, trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _send(self, conn: _Conn, text: str) -> bool:
        if conn.aborted:
            return False
        try:
            await conn.ws.send_message(text)
            return True
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            return False

    async def _push(self, conn: _Conn, text: str) -> None:
        if await self._send(conn, text):
            self.counters["pushes_sent"] += 1
            if self.on_push_written is not None:
                self.on_push_written(conn.conn_id, text, trio.current_time())

    async def _fanout(self, acct: SimAccount, obj: dict) -> None:
        text = orjson.dumps(obj).decode()
        for conn in [c for c in self._conns.values() if c.account is acct]:
            await self._push(conn, text)

    def _ts(self) -> str:
        return str(self.clock.wall_ms())

    async def _reply(self, conn: _Conn, obj: dict, *, is_ack: bool = False) -> None:
        if "code" in obj and obj.get("submitted", obj.get("success")) is False and conn.account is not None:
            conn.account.counters.rejects_sent += 1
        text = orjson.dumps(obj).decode()
        if is_ack:
            if self.faults.drop_acks:
                return
            if self.faults.ack_delay_s > 0 and conn.nursery is not None:
                delay = self.faults.ack_delay_s

                async def later() -> None:
                    await trio.sleep(delay)
                    await self._send(conn, text)

                conn.nursery.start_soon(later)
                return
        await self._send(conn, text)

    def _error(self, op: str, code: str, message: str, tag: str | None, *, order_op: bool) -> dict:
        obj: dict = {"event": op, ("submitted" if order_op else "success"): False, "code": code, "message": message,
                     "timestamp": self._ts()}
        if tag is not None:
            obj["tag"] = tag
        return obj

    async def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        if message == "ping":
            if self.faults.pong_enabled:
                await self._send(conn, "pong")
            return
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            req = None
        op = req.get("op") if isinstance(req, dict) and isinstance(req.get("op"), str) else None
        if op is None:
            m = _OP_RE.search(message)
            op = m.group(1) if m else "unknown"
        raw_tag = req.get("tag") if isinstance(req, dict) else None
        tag = str(raw_tag) if isinstance(raw_tag, (str, int)) and not isinstance(raw_tag, bool) else None
        order_op = op in _ORDER_OPS
        if not conn.budget.try_charge(1, self.clock.monotonic_s()):
            await self._reply(conn, self._error(op, "20007", "You are accessing server too rapidly", tag, order_op=order_op))
            return
        if len(message) > self.options.max_frame_chars:
            await self._reply(conn, self._error(op, "20027", "The length of the message exceeds the maximum length", tag,
                                                order_op=order_op))
            return
        if not isinstance(req, dict):
            await self._reply(conn, self._error(op, "20009", "JSON data format is invalid", None, order_op=order_op))
            return
        if tag is not None and len(tag) >= 32:
            await self._reply(conn, self._error(op, "20034", "The size of tag must be less than 32", None, order_op=order_op))
            return
        if op == "login":
            await self._on_login(conn, req, tag)
        elif op in ("subscribe", "unsubscribe"):
            await self._on_subscribe(conn, op, req, tag)
        elif op in _ORDER_OPS:
            if conn.account is None:
                await self._reply(conn, self._error(op, self.options.unauth_code, "Your operation authority is invalid", tag,
                                                    order_op=True))
            elif op in ("placeorder", "placeorders"):
                await self._on_place(conn, op, req, tag)
            elif op in ("cancelorder", "cancelorders"):
                await self._on_cancel(conn, op, req, tag)
            else:
                await self._reply(conn, self._error(op, "20003", "Unrecognized operation", tag, order_op=True))
        else:
            await self._reply(conn, self._error(op, "20003", "Unrecognized operation", tag, order_op=False))

    # -- login / subscribe ---------------------------------------------------------------

    async def _on_login(self, conn: _Conn, req: dict, tag: str | None) -> None:
        data = req.get("data") if isinstance(req.get("data"), dict) else {}
        key, ts, sig = data.get("apiKey"), data.get("timestamp"), data.get("signature")
        acct = self.accounts.get(key) if isinstance(key, str) else None

        def fail(code: str, message: str) -> dict:
            if acct is not None:
                acct.counters.logins_failed += 1
            return self._error("login", code, message, tag, order_op=False)

        if conn.account is not None:
            await self._reply(conn, fail("20005", "Already logged in"))
            return
        if acct is None:
            await self._reply(conn, fail("20025", "API key is invalid"))
            return
        if self.faults.refuse_logins_code is not None:
            await self._reply(conn, fail(self.faults.refuse_logins_code, "Login refused"))
            return
        ts_text = str(ts) if isinstance(ts, (str, int)) and not isinstance(ts, bool) else ""
        if not ts_text.isdigit() or abs(int(ts_text) - self.clock.wall_ms()) > self.options.login_window_ms:
            await self._reply(conn, fail("20024", "timestamp exceeds the threshold"))
            return
        expected = wire.login_signature(acct.api_secret, ts_text)
        if not isinstance(sig, str) or not _consteq(sig, expected):
            await self._reply(conn, fail("20000", "Signature is invalid"))
            return
        conn.account = acct
        conn.budget = RateBudget([(1.0, self.options.ws_rate_authed)])
        acct.counters.logins_ok += 1
        reply: dict = {"event": "login", "success": True, "timestamp": self._ts()}
        if tag is not None:
            reply["tag"] = tag
        await self._reply(conn, reply)

    async def _on_subscribe(self, conn: _Conn, op: str, req: dict, tag: str | None) -> None:
        args = req.get("args")
        if not isinstance(args, list) or not args:
            await self._reply(conn, self._error(op, "30001", "Required parameter 'args' is missing", tag, order_op=False))
            return
        for arg in args:
            channel = arg if isinstance(arg, str) else ""
            name, _, scope = channel.partition(":")
            if name in _PRIVATE_CHANNELS and conn.account is None:
                reply = self._error(op, self.options.unauth_code, "Your operation authority is invalid", tag, order_op=False)
            elif name not in _PRIVATE_CHANNELS + ("ticker",) or not scope:
                reply = self._error(op, "20001", f"Invalid channel {channel[:40]}", tag, order_op=False)
            else:
                if name == "ticker":
                    (conn.tickers.add if op == "subscribe" else conn.tickers.discard)(scope)
                else:
                    (conn.subs.add if op == "subscribe" else conn.subs.discard)(channel)
                reply = {"success": True, "event": op, "channel": channel, "timestamp": self._ts()}
                if tag is not None:
                    reply["tag"] = tag
            await self._reply(conn, reply)
            if name == "ticker" and op == "subscribe" and scope in self.marks:
                await self._send(conn, self._ticker_text([scope]))

    # -- orders --------------------------------------------------------------------------

    def _new_order(self, market, side, order_type, price, qty, tif, stop_price, client_order_id, source) -> SimOrder:
        now = self.clock.wall_ms()
        is_stop = order_type in ("STOP_LIMIT", "STOP_MARKET")
        return SimOrder(
            order_id=str(next(self._order_ids)), market=market, side=side, order_type=order_type,
            price=price if order_type != "STOP_MARKET" else None, qty=qty, remain=qty, time_in_force=tif,
            stop_price=stop_price, client_order_id=client_order_id, is_triggered=not is_stop,
            created_ms=now, modified_ms=now, source=source,
        )

    async def _book_order(self, acct: SimAccount, o: SimOrder) -> None:
        """Rest the order (OrderOpened push) and fill it at the mark if it crosses."""
        acct.orders[o.order_id] = o
        acct.counters.orders_placed += 1
        await self._fanout(acct, {"table": "order", "data": [order_payload(acct, o, "OrderOpened", "OPEN", self.clock.wall_ms())]})
        mark = self.marks.get(o.market)
        if o.order_type == "MARKET" or (o.is_triggered and crosses(o.side, o.price, mark)):
            if mark is not None:
                await self._fill(acct, o, mark)
        elif not o.is_triggered and stop_triggers(o.side, o.stop_price, mark):
            await self._trigger(acct, o)

    async def _fill(self, acct: SimAccount, o: SimOrder, price: Decimal) -> None:
        qty = o.remain
        o.remain = Decimal(0)
        acct.orders.pop(o.order_id, None)
        acct.counters.orders_filled += 1
        realised = apply_fill(acct, o.market, o.side, qty, price)
        await self._fanout(acct, {"table": "order", "data": [order_payload(
            acct, o, "OrderMatched", "FILLED", self.clock.wall_ms(), matchId=str(next(self._order_ids)),
            matchPrice=fmt(price), matchQuantity=fmt(qty), orderMatchType="TAKER", fees="0", feeInstrumentId="OX",
        )]})
        await self._push_positions(acct, [o.market], zero_missing=True)
        if realised != 0:
            acct.balances["OX"] = acct.balances.get("OX", Decimal(0)) + realised
            await self._push_balances(acct, ["OX"])

    async def _trigger(self, acct: SimAccount, o: SimOrder) -> None:
        o.is_triggered = True
        o.order_type = "LIMIT" if o.order_type == "STOP_LIMIT" else "MARKET"
        mark = self.marks.get(o.market)
        if mark is not None and (o.order_type == "MARKET" or crosses(o.side, o.price, mark)):
            await self._fill(acct, o, mark)

    async def _trigger_stops(self, acct: SimAccount, market: str) -> None:
        mark = self.marks.get(market)
        for o in [o for o in acct.orders.values() if o.market == market and not o.is_triggered]:
            if stop_triggers(o.side, o.stop_price, mark):
                await self._trigger(acct, o)

    async def _on_place(self, conn: _Conn, op: str, req: dict, tag: str | None) -> None:
        acct = conn.account
        assert acct is not None
        items = [req.get("data")] if op == "placeorder" else req.get("dataArray")
        if not isinstance(items, list) or not items:
            await self._reply(conn, self._error("placeorder", "30001", "Required parameter 'data' is missing", tag,
                                                order_op=True), is_ack=True)
            return
        budget = self._order_rate.setdefault(acct.api_key, RateBudget([(1.0, self.options.order_rate)]))
        for item in items:
            if not budget.try_charge(1, self.clock.monotonic_s()):
                await self._reply(conn, self._error("placeorder", "20007", "You are accessing server too rapidly", tag,
                                                    order_op=True), is_ack=True)
                continue
            order, error = self._validate_place(item)
            if order is None:
                code, message = error
                obj = self._error("placeorder", code, message, tag, order_op=True)
                if isinstance(item, dict):
                    obj["data"] = {k: v for k, v in item.items() if k in ("marketCode", "side", "orderType", "clientOrderId")}
                await self._reply(conn, obj, is_ack=True)
                continue
            ack: dict = {"event": "placeorder", "submitted": True, "timestamp": self._ts(), "data": {
                "marketCode": order.market, "side": order.side, "orderType": order.order_type, "quantity": fmt(order.qty),
                "timeInForce": order.time_in_force, "price": fmt(order.price), "limitPrice": fmt(order.price),
                "orderId": order.order_id, "source": 13}}
            if order.client_order_id is not None:
                ack["data"]["clientOrderId"] = order.client_order_id
            if tag is not None:
                ack["tag"] = tag
            if self.options.push_before_ack:
                await self._book_order(acct, order)
                await self._reply(conn, ack, is_ack=True)
            else:
                await self._reply(conn, ack, is_ack=True)
                await self._book_order(acct, order)

    def _validate_place(self, item: Any) -> tuple[SimOrder | None, tuple[str, str]]:
        if not isinstance(item, dict):
            return None, ("20002", "Unexpected error, please check if your request data complies with the specification.")
        market = item.get("marketCode")
        if not market:
            return None, ("20011", "marketCode is required")
        if market not in self.marks:
            return None, ("20015", "marketCode is invalid")
        side = item.get("side")
        if side not in ("BUY", "SELL"):
            return None, ("20016" if side else "20012", "side is invalid")
        order_type = item.get("orderType", "LIMIT")
        if order_type not in ("LIMIT", "MARKET", "STOP_LIMIT", "STOP_MARKET"):
            return None, ("20017", "orderType is invalid")
        qty = _dec(item.get("quantity"))
        if qty is None or qty <= 0:
            return None, ("20006", "Quantity must be greater than zero")
        price = _dec(item.get("price") if order_type != "STOP_LIMIT" else item.get("limitPrice"))
        if order_type in ("LIMIT", "STOP_LIMIT") and (price is None or price <= 0):
            return None, ("20022", "price is required for LIMIT order")
        stop = _dec(item.get("stopPrice"))
        if order_type.startswith("STOP") and (stop is None or stop <= 0):
            return None, ("20020", "stopPrice or limitPrice is invalid")
        coid = item.get("clientOrderId")
        if coid is not None and (not str(coid).isdigit() or int(str(coid)) <= 0):
            return None, ("20008", "clientOrderId must be greater than zero if provided")
        tif = item.get("timeInForce", "GTC")
        return self._new_order(market, side, order_type, price, qty, tif, stop,
                               str(coid) if coid is not None else None, 13), ("", "")

    async def _on_cancel(self, conn: _Conn, op: str, req: dict, tag: str | None) -> None:
        acct = conn.account
        assert acct is not None
        items = [req.get("data")] if op == "cancelorder" else req.get("dataArray")
        if not isinstance(items, list) or not items:
            await self._reply(conn, self._error("cancelorder", "30001", "Required parameter 'data' is missing", tag,
                                                order_op=True), is_ack=True)
            return
        acct.counters.cancels_received += len(items)
        acct.counters.cancel_frames.append((trio.current_time(), tag, len(items)))
        if self.on_cancel_received is not None:
            self.on_cancel_received(trio.current_time(), tag, len(items))
        for item in items:
            await self._cancel_one(conn, acct, item, tag)

    async def _cancel_one(self, conn: _Conn, acct: SimAccount, item: Any, tag: str | None) -> None:
        def reply(submitted: bool, data: dict, code: str = "", message: str = "") -> dict:
            obj: dict = {"event": "cancelorder", "submitted": submitted, "timestamp": self._ts(), "data": data}
            if tag is not None:
                obj["tag"] = tag
            if not submitted:
                obj["code"], obj["message"] = code, message
            return obj

        if not isinstance(item, dict):
            await self._reply(conn, self._error("cancelorder", "20002", "Unexpected error", tag, order_op=True), is_ack=True)
            return
        market, raw_id = item.get("marketCode"), item.get("orderId")
        echo = {"marketCode": market} if raw_id is None else {"marketCode": market, "orderId": str(raw_id)}
        if not market:
            await self._reply(conn, reply(False, echo, "20011", "marketCode is required"), is_ack=True)
            return
        if raw_id is None:
            # The WS cancel is by orderId only; the docs' code for a missing id.
            await self._reply(conn, reply(False, echo, "20010", "Either clientOrderId or orderId is required"), is_ack=True)
            return
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or not str(raw_id).isdigit():
            await self._reply(conn, reply(False, echo, "20019", "orderId is invalid"), is_ack=True)
            return
        if market not in self.marks:
            await self._reply(conn, reply(False, echo, "20015", "marketCode is invalid"), is_ack=True)
            return
        if self.faults.reject_cancels_code is not None:
            await self._reply(conn, reply(False, echo, self.faults.reject_cancels_code, "Cancel rejected (injected)"), is_ack=True)
            return
        order_id = str(raw_id)
        order = acct.orders.get(order_id)
        if order is not None and order.market != market:
            order = None
        if order is not None and self.faults.lose_race:
            # The order fills while the cancel is in flight: the engine acks the request,
            # then rejects it asynchronously (oxfun.md §5.3.3).
            await self._reply(conn, reply(True, echo), is_ack=True)
            await self._fill(acct, order, order.price or self.marks[market])
            await self._async_cancel_reject(conn, acct, market, order_id)
            return
        if order is None:
            owned_elsewhere = any(order_id in a.orders for a in self.accounts.values() if a is not acct)
            if self.options.unknown_cancel_mode == "race" and not owned_elsewhere:
                await self._reply(conn, reply(True, echo), is_ack=True)
                await self._async_cancel_reject(conn, acct, market, order_id)
            elif owned_elsewhere:
                await self._reply(conn, reply(False, echo, "100006", "Open order is not owned by the user"), is_ack=True)
            else:
                await self._reply(conn, reply(False, echo, "100005", "Open order not found"), is_ack=True)
            return
        if order.client_order_id is not None:
            echo["clientOrderId"] = order.client_order_id
        acct.orders.pop(order_id, None)
        acct.counters.orders_cancelled += 1
        acct.counters.cancel_acks_ok += 1
        push = {"table": "order", "data": [order_payload(acct, order, "OrderClosed", "CANCELED_BY_USER", self.clock.wall_ms())]}
        if self.options.push_before_ack:
            await self._fanout(acct, push)
            await self._reply(conn, reply(True, echo), is_ack=True)
        else:
            await self._reply(conn, reply(True, echo), is_ack=True)
            await self._fanout(acct, push)

    async def _async_cancel_reject(self, conn: _Conn, acct: SimAccount, market: str, order_id: str) -> None:
        acct.counters.async_rejects_sent += 1
        await self._push(conn, orjson.dumps({
            "event": "CANCEL", "submitted": False,
            "message": "Order request was rejected : REJECT_CANCEL_ORDER_ID_NOT_FOUND", "code": "100004", "timestamp": "0",
            "data": {"orderId": int(order_id), "marketCode": market, "status": "REJECT_CANCEL_ORDER_ID_NOT_FOUND",
                     "timeCondition": "GTC", "timestampEpochMs": self.clock.wall_ms(), "price": 0.0, "quantity": 0.0,
                     "isTriggered": False},
        }).decode())

    # -- account pushes ------------------------------------------------------------------

    async def _push_balances(self, acct: SimAccount, assets: list[str]) -> None:
        ts = self._ts()
        data = [{"instrumentId": a, "total": fmt(acct.balances.get(a, Decimal(0))), "available": fmt(acct.balances.get(a, Decimal(0))),
                 "reserved": "0", "locked": "0", "quantityLastUpdated": ts} for a in assets]
        await self._fanout(acct, {"table": "balance", "accountId": acct.account_id, "timestamp": ts, "tradeType": "PORTFOLIO",
                                  "data": data})

    async def _push_positions(self, acct: SimAccount, markets: list[str], *, zero_missing: bool = False) -> None:
        ts = self._ts()
        data = []
        for m in markets:
            pos = acct.positions.get(m)
            if pos is None:
                if not zero_missing:
                    continue
                pos = SimPosition(Decimal(0), Decimal(0))
            data.append({"instrumentId": m, "quantity": fmt(pos.qty), "lastUpdated": ts, "contractValCurrency": m.split("-")[0],
                         "entryPrice": fmt(pos.entry_price), "positionPnl": fmt(position_pnl(pos, self.marks.get(m))),
                         "estLiquidationPrice": "0", "margin": "0", "leverage": "0"})
        if data:
            await self._fanout(acct, {"table": "position", "accountId": acct.account_id, "timestamp": ts, "data": data})

    def _ticker_text(self, markets: list[str]) -> str:
        ts = self._ts()
        return orjson.dumps({"table": "ticker", "data": [
            {"marketCode": m, "markPrice": fmt(self.marks[m]), "lastMarkPrice": fmt(self.marks[m]), "last": fmt(self.marks[m]),
             "timestamp": ts} for m in markets if m in self.marks]}).decode()

    async def _push_ticker(self, market: str) -> None:
        text = self._ticker_text([market])
        for conn in [c for c in self._conns.values() if market in c.tickers or "all" in c.tickers]:
            await self._push(conn, text)

    async def _ticker_loop(self) -> None:
        while True:
            await trio.sleep(self.options.ticker_interval_s)
            for conn in list(self._conns.values()):
                markets = sorted(self.marks) if "all" in conn.tickers else sorted(m for m in conn.tickers if m in self.marks)
                if markets:
                    await self._push(conn, self._ticker_text(markets))

    # ==================================================================================
    # REST
    # ==================================================================================

    def _register_routes(self) -> None:
        r = self.http.route
        r("GET", "/v3/orders/working", self._rest_guard(self._r_working))
        r("GET", "/v3/balances", self._rest_guard(self._r_balances))
        r("GET", "/v3/positions", self._rest_guard(self._r_positions))
        r("GET", "/v3/account", self._rest_guard(self._r_account))
        r("GET", "/v3/tickers", self._rest_guard(self._r_tickers, auth=False))
        r("GET", "/v3/markets", self._rest_guard(self._r_markets, auth=False))
        r("GET", "/v3/assets", self._rest_guard(self._r_assets, auth=False))
        r("POST", "/v3/orders/place", self._rest_guard(self._r_place))
        r("DELETE", "/v3/orders/cancel-all", self._rest_guard(self._r_cancel_all))
        r("DELETE", "/v3/orders/cancel", self._rest_guard(self._r_cancel))
        r("POST", "/admin/accounts", self._admin(self._a_accounts))
        r("POST", "/admin/orders", self._admin(self._a_place))
        r("GET", "/admin/orders", self._admin(self._a_orders))
        r("POST", "/admin/marks", self._admin(self._a_marks))
        r("POST", "/admin/balances", self._admin(self._a_balances))
        r("POST", "/admin/positions", self._admin(self._a_positions))
        r("POST", "/admin/faults", self._admin(self._a_faults))
        r("GET", "/admin/state", self._admin(self._a_state))

    def _rest_guard(self, handler, *, auth: bool = True):
        async def guarded(req: Request) -> Response:
            self.counters["rest_requests"] += 1
            budget = self._rest_rate.setdefault(req.peer, RateBudget([(1.0, self.options.rest_rate), (300.0, 2500)]))
            if not budget.try_charge(1, self.clock.monotonic_s()):
                return Response.json({"success": False, "code": "429", "message": "Too many requests"}, 429, {"Retry-After": "1"})
            f = self.faults
            if f.rest_mode is not None and f.rest_remaining > 0:
                f.rest_remaining -= 1
                mode = f.rest_mode
                if f.rest_remaining == 0:
                    f.rest_mode = None
                if mode == "429":
                    return Response.json({"success": False, "code": "429", "message": "Too many requests"}, 429, {"Retry-After": "1"})
                if mode == "403":
                    return Response.text("<html><head><title>403 Forbidden</title></head><body>403 Forbidden</body></html>", 403,
                                         "text/html")
                return Response.json({"success": False, "code": "000101",
                                      "message": "Internal server is unavailable temporary, try again later"}, 503)
            acct = None
            if auth:
                acct_or_error = self._rest_auth(req)
                if isinstance(acct_or_error, Response):
                    return acct_or_error
                acct = acct_or_error
                acct.counters.rest_requests += 1
            return await handler(req, acct)

        return guarded

    def _rest_auth(self, req: Request) -> SimAccount | Response:
        h = req.headers
        key, ts, sig, nonce = h.get("accesskey"), h.get("timestamp"), h.get("signature"), h.get("nonce")
        if not key or not ts or not sig or nonce is None:
            return Response.json({"success": False, "code": "30001", "message": "Missing auth headers"}, 401)
        acct = self.accounts.get(key)
        if acct is None:
            return Response.json({"success": False, "code": "20025", "message": "API key is invalid"}, 401)
        try:
            ts_ms = wire.parse_rest_timestamp(ts)
        except wire.WireError:
            return Response.json({"success": False, "code": "20024", "message": "timestamp exceeds the threshold"}, 401)
        if abs(ts_ms - self.clock.wall_ms()) > self.options.rest_window_s * 1000:
            return Response.json({"success": False, "code": "20024", "message": "timestamp exceeds the threshold"}, 401)
        host = h.get("host", "")
        if req.method == "GET":
            bodies = [req.query_string, wire.encode_query(req.query)]
        else:
            bodies = [req.body.decode("utf-8", "replace")]
        for body in bodies:
            expected = wire.rest_signature(acct.api_secret, ts, nonce, req.method, host, req.path, body)
            if _consteq(sig, expected):
                return acct
        return Response.json({"success": False, "code": "20000", "message": "Signature is invalid"}, 401)

    async def _r_working(self, req: Request, acct: SimAccount) -> Response:
        q = req.query
        orders = [o for o in acct.orders.values()
                  if (not q.get("marketCode") or o.market == q["marketCode"]) and (not q.get("orderId") or o.order_id == q["orderId"])]
        return Response.json({"success": True, "data": [rest_order_payload(o) for o in orders]})

    async def _r_balances(self, req: Request, acct: SimAccount) -> Response:
        ts = self._ts()
        return Response.json({"success": True, "data": [{"accountId": acct.account_id, "name": "main", "balances": [
            {"asset": a, "total": fmt(v), "available": fmt(v), "reserved": "0", "lastUpdatedAt": ts}
            for a, v in acct.balances.items()]}]})

    def _positions_payload(self, acct: SimAccount) -> list[dict]:
        ts = self._ts()
        return [{"marketCode": m, "baseAsset": m.split("-")[0], "counterAsset": "USD", "position": fmt(p.qty),
                 "entryPrice": fmt(p.entry_price), "markPrice": fmt(self.marks.get(m)),
                 "positionPnl": fmt(position_pnl(p, self.marks.get(m))), "estLiquidationPrice": "0", "lastUpdatedAt": ts}
                for m, p in acct.positions.items()]

    async def _r_positions(self, req: Request, acct: SimAccount) -> Response:
        return Response.json({"success": True, "data": [{"accountId": acct.account_id, "name": "main",
                                                         "positions": self._positions_payload(acct)}]})

    async def _r_account(self, req: Request, acct: SimAccount) -> Response:
        collateral = acct.balances.get("OX", Decimal(0))
        notional = sum((abs(p.qty) * self.marks.get(m, p.entry_price) for m, p in acct.positions.items()), Decimal(0))
        return Response.json({"success": True, "data": [{
            "accountId": acct.account_id, "name": "main", "accountType": "LINEAR", "collateral": fmt(collateral),
            "notionalPositionSize": fmt(notional), "portfolioVarMargin": "0", "maintenanceMargin": "0", "marginRatio": "0",
            "liquidating": False, "balances": [{"asset": a, "total": fmt(v)} for a, v in acct.balances.items()],
            "positions": self._positions_payload(acct)}]})

    async def _r_tickers(self, req: Request, acct: SimAccount | None) -> Response:
        mc = req.query.get("marketCode")
        return Response.json({"success": True, "data": [
            {"marketCode": m, "markPrice": fmt(p), "lastTradedPrice": fmt(p), "timestamp": self._ts()}
            for m, p in self.marks.items() if not mc or m == mc]})

    # -- REST market data and order placement (what SDK-based tools such as ccxt load) ------

    async def _r_markets(self, req: Request, acct: SimAccount | None) -> Response:
        """``GET /v3/markets``, shaped as the capture in ccxt's oxfun.fetch_markets."""
        mc = req.query.get("marketCode")
        ts = self._ts()
        data = []
        for m, p in self.marks.items():
            if mc and m != mc:
                continue
            parts = m.split("-")
            perp = m.endswith("-SWAP-LIN")
            data.append({"marketCode": m, "name": f"{parts[0]}/{parts[1]}{' Perp' if perp else ''}",
                         "referencePair": f"{parts[0]}/USDT" if perp else f"{parts[0]}/{parts[1]}",
                         "base": parts[0], "counter": parts[1], "type": "FUTURE" if perp else "SPOT",
                         "tickSize": fmt(_tick(p)), "minSize": "0.0001", "listedAt": "1704686640000",
                         "upperPriceBound": fmt(p * Decimal("1.1")), "lowerPriceBound": fmt(p * Decimal("0.9")),
                         "markPrice": fmt(p), "indexPrice": fmt(p), "lastUpdatedAt": ts})
        return Response.json({"success": True, "data": data})

    async def _r_assets(self, req: Request, acct: SimAccount | None) -> Response:
        """``GET /v3/assets``, shaped as the capture in ccxt's oxfun.fetch_currencies."""
        assets = sorted({"OX", "USDT"} | {m.split("-")[0] for m in self.marks})
        return Response.json({"success": True, "data": [
            {"asset": a, "isCollateral": True, "loanToValue": "1.000000000" if a == "OX" else "0.950000000",
             "loanToValueFactor": "0.000000000", "networkList": []} for a in assets]})

    async def _r_place(self, req: Request, acct: SimAccount) -> Response:
        """``POST /v3/orders/place``: up to 8 orders; FULL answers OrderOpened / OrderMatched
        entries, ACK only the acceptance; per-order refusals are ``submitted: false``."""
        try:
            body = req.json() or {}
        except orjson.JSONDecodeError:
            return Response.json({"success": False, "code": "20009", "message": "JSON data format is invalid"}, 400)
        if not isinstance(body, dict):
            return Response.json({"success": False, "code": "20001", "message": "Invalid parameter"}, 400)
        refused = self._check_envelope(body)
        if refused is not None:
            return refused
        items = body.get("orders")
        if not isinstance(items, list) or not items or len(items) > 8:
            return Response.json({"success": False, "code": "20001", "message": "orders must hold 1 to 8 entries"}, 400)
        budget = self._order_rate.setdefault(acct.api_key, RateBudget([(1.0, self.options.order_rate)]))
        results = []
        for item in items:
            if not budget.try_charge(1, self.clock.monotonic_s()):
                results.append({"submitted": False, "code": "20007", "message": "You are accessing server too rapidly"})
                continue
            order, (code, message) = self._validate_place(item)
            if order is None:
                results.append({"submitted": False, "code": code, "message": message,
                                "marketCode": item.get("marketCode") if isinstance(item, dict) else None})
                continue
            order.source = 11  # REST
            await self._book_order(acct, order)
            if body["responseType"] == "ACK":
                results.append({"submitted": True, "orderId": order.order_id, "marketCode": order.market})
                continue
            filled = order.order_id not in acct.orders
            results.append({**order_payload(acct, order, "OrderMatched" if filled else "OrderOpened",
                                            "FILLED" if filled else "OPEN", self.clock.wall_ms()),
                            "submitted": True, "createdAt": str(order.created_ms), "isTriggered": order.is_triggered})
        return Response.json({"success": True, "data": results})

    async def _r_cancel_all(self, req: Request, acct: SimAccount) -> Response:
        acct.counters.rest_cancel_all += 1
        try:
            body = req.json() or {}
        except orjson.JSONDecodeError:
            return Response.json({"success": False, "code": "20009", "message": "JSON data format is invalid"}, 400)
        market = body.get("marketCode") if isinstance(body, dict) else None
        victims = [o for o in acct.orders.values() if not market or o.market == market]
        if not victims:
            return Response.json({"success": True, "data": {"notice": "No working orders found"}})
        for o in victims:
            acct.orders.pop(o.order_id, None)
            acct.counters.orders_cancelled += 1
        if self.options.cancel_all_order_pushes:
            ts = self.clock.wall_ms()
            for o in victims:
                await self._fanout(acct, {"table": "order", "data": [order_payload(acct, o, "OrderClosed", "CANCELED_BY_USER", ts)]})
        await self._fanout(acct, {"event": "CANCEL", "submitted": True, "timestamp": self._ts()})
        return Response.json({"success": True, "data": {"notice": "Orders queued for cancelation"}})

    def _check_envelope(self, body: dict) -> Response | None:
        o = self.options
        refusal = check_order_envelope(body, now_ms=self.clock.wall_ms(), default_recv_window_ms=o.rest_default_recv_window_ms,
                                       future_tolerance_ms=o.rest_future_tolerance_ms)
        if refusal is None:
            return None
        return Response.json({"success": False, "code": refusal[0], "message": refusal[1]}, 400)

    async def _r_cancel(self, req: Request, acct: SimAccount) -> Response:
        acct.counters.rest_cancel += 1
        try:
            body = req.json() or {}
        except orjson.JSONDecodeError:
            return Response.json({"success": False, "code": "20009", "message": "JSON data format is invalid"}, 400)
        if not isinstance(body, dict):
            return Response.json({"success": False, "code": "20001", "message": "Invalid parameter"}, 400)
        refused = self._check_envelope(body)
        if refused is not None:
            return refused
        items = body.get("orders") if "orders" in body else [body]
        if not isinstance(items, list) or not items or len(items) > 8:
            return Response.json({"success": False, "code": "20001", "message": "orders must hold 1 to 8 entries"}, 400)
        results = []
        ts = self.clock.wall_ms()
        for item in items:
            oid = str(item.get("orderId")) if isinstance(item, dict) else ""
            order = acct.orders.get(oid)
            if order is None or (isinstance(item, dict) and item.get("marketCode") not in (None, order.market)):
                results.append({"orderId": oid, "submitted": False, "code": "40035", "message": "Open order not found with id"})
                continue
            acct.orders.pop(oid, None)
            acct.counters.orders_cancelled += 1
            payload = order_payload(acct, order, "OrderClosed", "CANCELED_BY_USER", ts)
            await self._fanout(acct, {"table": "order", "data": [payload]})
            results.append({**payload, "submitted": True, "closedAt": str(ts)})
        return Response.json({"success": True, "data": results})

    # ==================================================================================
    # Admin API (loopback only, no auth)
    # ==================================================================================

    def _admin(self, handler):
        async def wrapped(req: Request) -> Response:
            if req.peer not in ("127.0.0.1", "::1", ""):
                return Response.json({"success": False, "message": "admin API is loopback-only"}, 403)
            try:
                body = req.json() if req.body else {}
                return await handler(req, body if isinstance(body, dict) else {})
            except (KeyError, ValueError, TypeError, InvalidOperation) as exc:
                return Response.json({"success": False, "message": f"{type(exc).__name__}: {exc}"}, 400)

        return wrapped

    async def _a_accounts(self, req: Request, body: dict) -> Response:
        key, secret = self.add_account(body.get("api_key"), body.get("api_secret"), body.get("balances"))
        return Response.json({"success": True, "api_key": key, "api_secret": secret, "account_id": self.accounts[key].account_id})

    async def _a_place(self, req: Request, body: dict) -> Response:
        order_type = body.get("order_type") or ("STOP_LIMIT" if body.get("stop") else "LIMIT")
        stop_price = body.get("stop_price") if body.get("stop_price") is not None else (body.get("price") if body.get("stop") else None)
        ids = await self.place_orders(body["api_key"], market=body["market"], side=body.get("side", "BUY"), price=body.get("price"),
                                      qty=body.get("qty", "1"), count=int(body.get("count", 1)), order_type=order_type,
                                      stop_price=stop_price)
        return Response.json({"success": True, "order_ids": ids})

    async def _a_orders(self, req: Request, body: dict) -> Response:
        return Response.json({"success": True, "orders": self.open_orders(req.query["api_key"])})

    async def _a_marks(self, req: Request, body: dict) -> Response:
        for market, price in body.items():
            await self.set_mark(market, price)
        return Response.json({"success": True})

    async def _a_balances(self, req: Request, body: dict) -> Response:
        await self.set_balances(body["api_key"], body["balances"])
        return Response.json({"success": True})

    async def _a_positions(self, req: Request, body: dict) -> Response:
        await self.set_positions(body["api_key"], body["positions"])
        return Response.json({"success": True})

    async def _a_faults(self, req: Request, body: dict) -> Response:
        params = dict(body)
        fault = params.pop("fault")
        await self.inject_fault(fault, **params)
        return Response.json({"success": True})

    async def _a_state(self, req: Request, body: dict) -> Response:
        return Response.json(self.state(), headers=None)


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _tick(price: Decimal) -> Decimal:
    # About five significant digits, as the captured markets have (BTC 1, OX 0.00001).
    return Decimal(1).scaleb(max(price.adjusted() - 4, -8))


def _consteq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
