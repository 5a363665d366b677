"""Hyperliquid wire codecs, pure: canonical actions, request bodies, replies, info rows, WS frames.

The venue hashes its own re-serialisation of the *parsed* action, so the client must sign
exactly that form (doc §3.4): fixed key order, optional keys absent (never null), ``f``/``a``
only as ``true``, normalised decimals, lower-case hex, integers never floats.
:func:`canonical_action` produces it from any posted action and raises :class:`WireError`
naming the field; the simulator hashes its output, and the session's builders emit it
directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Sequence

import orjson

from killswitch.model import Side


class WireError(ValueError):
    """A frame, reply or action that does not have the documented shape."""


_HEX_RE = re.compile(r"0x[0-9a-fA-F]+")
_CLOID_RE = re.compile(r"0x[0-9a-fA-F]{32}")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


# --------------------------------------------------------------------------------------
# Canonical actions
# --------------------------------------------------------------------------------------


def _int(v: Any, field: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 64:
        raise WireError(f"{field}: expected an unsigned 64-bit integer")
    return v


def _bool(v: Any, field: str) -> bool:
    if not isinstance(v, bool):
        raise WireError(f"{field}: expected a boolean")
    return v


def _str(v: Any, field: str) -> str:
    if not isinstance(v, str):
        raise WireError(f"{field}: expected a string")
    return v


def decimal_str(v: Any, field: str = "decimal") -> str:
    """Normalised decimal text: no trailing or leading zeros, no exponent (doc §3.4)."""
    if not isinstance(v, str):
        raise WireError(f"{field}: expected a decimal string")
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise WireError(f"{field}: not a decimal: {v!r}") from None
    if not d.is_finite():
        raise WireError(f"{field}: not a finite decimal")
    return format(d.normalize(), "f")


def decimal_to_wire(d: Decimal) -> str:
    return format(d.normalize(), "f")


def _hex(v: Any, field: str, pattern: re.Pattern = _HEX_RE) -> str:
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise WireError(f"{field}: expected 0x-hex")
    return v.lower()


def _map(v: Any, field: str) -> dict:
    if not isinstance(v, dict):
        raise WireError(f"{field}: expected an object")
    return v


def _list(v: Any, field: str) -> list:
    if not isinstance(v, list):
        raise WireError(f"{field}: expected an array")
    return v


def _order_type(t: Any, field: str) -> dict:
    t = _map(t, field)
    if "limit" in t and "trigger" not in t:
        lim = _map(t["limit"], f"{field}.limit")
        return {"limit": {"tif": _str(lim.get("tif"), f"{field}.limit.tif")}}
    if "trigger" in t and "limit" not in t:
        tr = _map(t["trigger"], f"{field}.trigger")
        return {"trigger": {"isMarket": _bool(tr.get("isMarket"), f"{field}.trigger.isMarket"),
                            "triggerPx": decimal_str(tr.get("triggerPx"), f"{field}.trigger.triggerPx"),
                            "tpsl": _str(tr.get("tpsl"), f"{field}.trigger.tpsl")}}
    raise WireError(f"{field}: expected exactly one of limit / trigger")


def _order(o: Any, field: str) -> dict:
    o = _map(o, field)
    out = {"a": _int(o.get("a"), f"{field}.a"), "b": _bool(o.get("b"), f"{field}.b"),
           "p": decimal_str(o.get("p"), f"{field}.p"), "s": decimal_str(o.get("s"), f"{field}.s"),
           "r": _bool(o.get("r"), f"{field}.r"), "t": _order_type(o.get("t"), f"{field}.t")}
    if o.get("c") is not None:
        out["c"] = _hex(o["c"], f"{field}.c", _CLOID_RE)
    return out


def _fast_flag(action: dict, out: dict, key: str) -> dict:
    # Only `true` is hashed; "actions hashed with f: false will be rejected" -- so a posted
    # false is kept as false here, and hashes differently from what a correct client signs.
    if key in action and action[key] is not None:
        out[key] = _bool(action[key], key)
    return out


def canonical_action(action: Any) -> dict:
    """The action as the venue re-serialises it (key order, normalisation). Unknown types
    are returned as posted (their hash is then whatever the client sent)."""
    action = _map(action, "action")
    t = _str(action.get("type"), "action.type")
    if t == "cancel":
        cancels = [{"a": _int(_map(c, f"cancels[{i}]").get("a"), f"cancels[{i}].a"),
                    "o": _int(c.get("o"), f"cancels[{i}].o")}
                   for i, c in enumerate(_list(action.get("cancels"), "cancels"))]
        return _fast_flag(action, {"type": t, "cancels": cancels}, "f")
    if t == "cancelByCloid":
        cancels = [{"asset": _int(_map(c, f"cancels[{i}]").get("asset"), f"cancels[{i}].asset"),
                    "cloid": _hex(c.get("cloid"), f"cancels[{i}].cloid", _CLOID_RE)}
                   for i, c in enumerate(_list(action.get("cancels"), "cancels"))]
        return _fast_flag(action, {"type": t, "cancels": cancels}, "f")
    if t == "order":
        orders = [_order(o, f"orders[{i}]") for i, o in enumerate(_list(action.get("orders"), "orders"))]
        grouping = action.get("grouping")
        if isinstance(grouping, dict):
            grouping = {"p": _int(grouping.get("p"), "grouping.p")}
        elif grouping not in ("na", "normalTpsl", "positionTpsl"):
            raise WireError("grouping: expected na | normalTpsl | positionTpsl | {p}")
        out = {"type": t, "orders": orders, "grouping": grouping}
        if action.get("builder") is not None:
            b = _map(action["builder"], "builder")
            out["builder"] = {"b": _hex(b.get("b"), "builder.b", _ADDRESS_RE), "f": _int(b.get("f"), "builder.f")}
        return out
    if t == "scheduleCancel":
        out = {"type": t}
        if action.get("time") is not None:
            out["time"] = _int(action["time"], "time")
        return out
    if t == "noop":
        return {"type": t}
    if t == "twapCancel":
        return {"type": t, "a": _int(action.get("a"), "a"), "t": _int(action.get("t"), "t")}
    if t == "twapOrder":
        tw = _map(action.get("twap"), "twap")
        return {"type": t, "twap": {"a": _int(tw.get("a"), "twap.a"), "b": _bool(tw.get("b"), "twap.b"),
                                    "s": decimal_str(tw.get("s"), "twap.s"), "r": _bool(tw.get("r"), "twap.r"),
                                    "m": _int(tw.get("m"), "twap.m"), "t": _bool(tw.get("t"), "twap.t")}}
    return action


# --------------------------------------------------------------------------------------
# Action builders (emit canonical form directly: the hot path skips canonical_action)
# --------------------------------------------------------------------------------------


def cancel_action(items: Sequence[tuple[int, int]], *, fast: bool) -> dict:
    """``items``: (asset, oid). ``fast``: add ``f:true`` (only for non-trigger orders)."""
    out = {"type": "cancel", "cancels": [{"a": a, "o": o} for a, o in items]}
    if fast:
        out["f"] = True
    return out


def cancel_by_cloid_action(items: Sequence[tuple[int, str]], *, fast: bool) -> dict:
    out = {"type": "cancelByCloid", "cancels": [{"asset": a, "cloid": c.lower()} for a, c in items]}
    if fast:
        out["f"] = True
    return out


def schedule_cancel_action(time_ms: int | None) -> dict:
    return {"type": "scheduleCancel"} if time_ms is None else {"type": "scheduleCancel", "time": time_ms}


def twap_cancel_action(asset: int, twap_id: int) -> dict:
    return {"type": "twapCancel", "a": asset, "t": twap_id}


def limit_order_action(asset: int, is_buy: bool, price: Decimal, size: Decimal, *, tif: str = "Gtc",
                       reduce_only: bool = False, cloid: str | None = None) -> dict:
    o = {"a": asset, "b": is_buy, "p": decimal_to_wire(price), "s": decimal_to_wire(size), "r": reduce_only,
         "t": {"limit": {"tif": tif}}}
    if cloid is not None:
        o["c"] = cloid.lower()
    return {"type": "order", "orders": [o], "grouping": "na"}


def approve_agent_action(agent_address: str, agent_name: str, nonce: int, *, hyperliquid_chain: str,
                         signature_chain_id: str) -> dict:
    return {"type": "approveAgent", "agentAddress": agent_address, "agentName": agent_name, "nonce": nonce,
            "signatureChainId": signature_chain_id, "hyperliquidChain": hyperliquid_chain}


def encode_exchange(action: dict, nonce: int, signature: dict, *, vault_address: str | None = None,
                    expires_after_ms: int | None = None) -> bytes:
    return orjson.dumps({"action": action, "nonce": nonce, "signature": signature, "vaultAddress": vault_address,
                         "expiresAfter": expires_after_ms})


def encode_info(req_type: str, **params: Any) -> bytes:
    return orjson.dumps({"type": req_type, **params})


# --------------------------------------------------------------------------------------
# /exchange replies
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExchangeReply:
    ok: bool
    error: str = ""  # whole-action refusal text (status "err")
    response_type: str = ""
    statuses: tuple[Any, ...] = ()  # per element: "success" | {"error": ...} | {"resting": ...} ...
    status: Any = None  # twapCancel's singular status


def parse_exchange_reply(obj: Any) -> ExchangeReply:
    if not isinstance(obj, dict):
        raise WireError("exchange reply is not an object")
    st = obj.get("status")
    if st == "err":
        resp = obj.get("response")
        return ExchangeReply(False, resp if isinstance(resp, str) else orjson.dumps(resp).decode())
    if st != "ok":
        raise WireError(f"exchange reply status {st!r}")
    resp = obj.get("response")
    if not isinstance(resp, dict):
        raise WireError("exchange reply without response")
    data = resp.get("data")
    statuses: tuple = ()
    status = None
    if isinstance(data, dict):
        if isinstance(data.get("statuses"), list):
            statuses = tuple(data["statuses"])
        status = data.get("status")
    return ExchangeReply(True, "", str(resp.get("type", "")), statuses, status)


def status_error(status: Any) -> str | None:
    """The element's error text, or None for a success / resting / filled element."""
    if isinstance(status, dict) and "error" in status:
        return str(status["error"])
    if isinstance(status, str) and status not in ("success", "waitingForFill", "waitingForTrigger"):
        return status
    return None


NOT_FOUND_PREFIX = "Order was never placed, already canceled, or filled"
TWAP_NOT_FOUND_PREFIX = "TWAP was never placed, already canceled, or filled"
RATE_LIMIT_TEXT = "Too many cumulative requests sent"
DOES_NOT_EXIST_RE = re.compile(r"User or API Wallet (0x[0-9a-fA-F]{40}) does not exist")
VOLUME_GATE_TEXT = "Cannot set scheduled cancel time until enough volume traded"


def is_auth_refusal(text: str) -> bool:
    return bool(DOES_NOT_EXIST_RE.search(text)) or "Unable to recover signer" in text \
        or "Must deposit before performing actions" in text


def is_nonce_refusal(text: str) -> bool:
    return text.startswith("Invalid nonce")


# --------------------------------------------------------------------------------------
# Info rows
# --------------------------------------------------------------------------------------


def ms_of(v: Any, field: str) -> int:
    """A millisecond timestamp (absent/null = 0); anything else is a WireError naming ``field``."""
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise WireError(f"{field}: expected a timestamp in ms")
    return v


def decimal_of(v: Any, field: str) -> Decimal:
    """A decimal from a JSON string or integer (the venue sends numbers as strings)."""
    if isinstance(v, (int, str)) and not isinstance(v, bool):
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise WireError(f"{field}: not a decimal") from None
        if d.is_finite():
            return d
    raise WireError(f"{field}: expected a decimal")


@dataclass(frozen=True, slots=True)
class OpenOrder:
    coin: str
    oid: int
    side: Side
    limit_px: Decimal
    sz: Decimal  # remaining
    cloid: str | None = None
    is_trigger: bool = False
    reduce_only: bool = False
    timestamp_ms: int = 0


def parse_open_order(row: Any) -> OpenOrder:
    row = _map(row, "order")
    side = row.get("side")
    if side not in ("A", "B"):
        raise WireError("order.side: expected A | B")
    oid = row.get("oid")
    if isinstance(oid, bool) or not isinstance(oid, int):
        raise WireError("order.oid: expected an integer")
    cloid = row.get("cloid")
    return OpenOrder(_str(row.get("coin"), "order.coin"), oid, Side.BUY if side == "B" else Side.SELL,
                     decimal_of(row.get("limitPx"), "order.limitPx"), decimal_of(row.get("sz"), "order.sz"),
                     cloid.lower() if isinstance(cloid, str) else None, bool(row.get("isTrigger", False)),
                     bool(row.get("reduceOnly", False)), ms_of(row.get("timestamp"), "order.timestamp"))


def parse_frontend_open_orders(data: Any) -> list[OpenOrder]:
    """Rows plus their ``children`` (TP/SL), de-duplicated by oid (children appear twice)."""
    seen: dict[int, OpenOrder] = {}

    def walk(rows: Iterable[Any]) -> None:
        for row in rows:
            o = parse_open_order(row)
            seen.setdefault(o.oid, o)
            kids = row.get("children")
            if isinstance(kids, list):
                walk(kids)

    walk(_list(data, "frontendOpenOrders"))
    return list(seen.values())


@dataclass(frozen=True, slots=True)
class Position:
    coin: str
    szi: Decimal
    position_value: Decimal | None


@dataclass(frozen=True, slots=True)
class ClearinghouseState:
    account_value: Decimal
    positions: tuple[Position, ...]
    time_ms: int = 0


def parse_clearinghouse_state(data: Any) -> ClearinghouseState:
    data = _map(data, "clearinghouseState")
    ms = _map(data.get("marginSummary"), "marginSummary")
    positions = []
    for i, ap in enumerate(_list(data.get("assetPositions", []), "assetPositions")):
        p = _map(_map(ap, f"assetPositions[{i}]").get("position"), f"assetPositions[{i}].position")
        pv = p.get("positionValue")
        positions.append(Position(_str(p.get("coin"), "position.coin"), decimal_of(p.get("szi"), "position.szi"),
                                  decimal_of(pv, "position.positionValue") if pv is not None else None))
    return ClearinghouseState(decimal_of(ms.get("accountValue"), "marginSummary.accountValue"), tuple(positions),
                              ms_of(data.get("time"), "clearinghouseState.time"))


def parse_spot_usd(data: Any, marks: dict[str, Decimal] | None = None) -> Decimal:
    """Spot balances valued in USD: USDC at 1, other tokens at ``marks[coin]`` when known."""
    data = _map(data, "spotClearinghouseState")
    total = Decimal(0)
    for i, b in enumerate(_list(data.get("balances", []), "balances")):
        b = _map(b, f"balances[{i}]")
        coin = _str(b.get("coin"), f"balances[{i}].coin")
        amount = decimal_of(b.get("total"), f"balances[{i}].total")
        if coin in ("USDC", "USDH", "USDT0"):
            total += amount
        elif marks and coin in marks:
            total += amount * marks[coin]
    return total


def unpriced_spot(data: Any, marks: dict[str, Decimal] | None = None) -> tuple[str, ...]:
    """Spot coins held (non-zero) that :func:`parse_spot_usd` cannot value: their presence
    makes the account's equity *missing*, never a smaller number."""
    data = _map(data, "spotClearinghouseState")
    out = []
    for i, b in enumerate(_list(data.get("balances", []), "balances")):
        b = _map(b, f"balances[{i}]")
        coin = _str(b.get("coin"), f"balances[{i}].coin")
        amount = decimal_of(b.get("total"), f"balances[{i}].total")
        if amount and coin not in ("USDC", "USDH", "USDT0") and not (marks and coin in marks):
            out.append(coin)
    return tuple(sorted(set(out)))


def parse_asset_map(meta: Any, spot_meta: Any | None = None) -> dict[str, int]:
    """coin -> asset id: perp index in ``universe``; spot 10000 + index (by pair name)."""
    out: dict[str, int] = {}
    for i, u in enumerate(_list(_map(meta, "meta").get("universe"), "meta.universe")):
        out[_str(_map(u, f"universe[{i}]").get("name"), f"universe[{i}].name")] = i
    if spot_meta is not None:
        for j, u in enumerate(_list(_map(spot_meta, "spotMeta").get("universe", []), "spotMeta.universe")):
            u = _map(u, f"spotMeta.universe[{j}]")
            out[_str(u.get("name"), "spotMeta.universe.name")] = 10000 + _int(u.get("index"), "spotMeta.universe.index")
    return out


def parse_twap_states(data: Any) -> list[tuple[int, str]]:
    """``[[twapId, state], ...]`` -> (twap id, coin)."""
    out = []
    for i, item in enumerate(_list(data, "twapStates")):
        if not isinstance(item, list) or len(item) != 2:
            raise WireError(f"twapStates[{i}]: expected [id, state]")
        out.append((_int(item[0], f"twapStates[{i}][0]"), _str(_map(item[1], "state").get("coin"), "state.coin")))
    return out


# --------------------------------------------------------------------------------------
# WebSocket frames
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WsFrame:
    channel: str
    data: Any


def parse_ws_frame(raw: str | bytes) -> WsFrame | None:
    """None for the legacy greeting text; WireError for anything else unparsable."""
    if isinstance(raw, str) and raw.startswith("Websocket connection established"):
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise WireError("frame is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("channel"), str):
        raise WireError("frame without a channel")
    return WsFrame(obj["channel"], obj.get("data"))


def encode_subscribe(sub: dict) -> bytes:
    return orjson.dumps({"method": "subscribe", "subscription": sub})


PING = b'{"method":"ping"}'
