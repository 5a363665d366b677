"""The control protocol's pure core: request validation, peer decisions, replies.

One JSON object per line in, one per line out; every reply has ``"ok"``, failures carry
``"error"`` and ``"code"``. No I/O here, so every decision is table-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

import orjson

from killswitch.model import EVERYTHING, CancelScope, DeclareCashFlow, ResetCommand, TripCommand
from killswitch.schema.suggest import did_you_mean


# The status reply's schema (docs/status.md): bumped when a field is renamed, removed or
# changes meaning; adding a field keeps the version.
STATUS_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
REQUEST_READ_DEADLINE_S = 5.0  # a started request line must be complete within this
REPLY_SEND_DEADLINE_S = 5.0
COMMAND_DEADLINE_S = 5.0  # trip/reset: wait this long for the engine to act before replying
MAX_CONNECTIONS = 64
ENGINE_POLL_S = 0.002
SOCKET_DIR_MODE = 0o750
DEBUG_OPS_ENV = "KILLSWITCH_ENABLE_DEBUG_OPS"
MAX_TEXT_CHARS = 500
MAX_FLOW_DECIMALS = 18  # finer than any venue's unit; keeps every accepted flow exact in the rules


class ControlSetupError(Exception):
    """The control socket cannot be created (path taken by a non-socket, live daemon, group)."""


class RequestError(Exception):
    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


def parse_proc_groups(status_text: str) -> frozenset[int]:
    """Supplementary groups from ``/proc/<pid>/status`` (the ``Groups:`` line)."""
    for line in status_text.splitlines():
        if line.startswith("Groups:"):
            return frozenset(int(g) for g in line.split()[1:] if g.isdigit())
    return frozenset()


def text_field(req: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = req.get(key)
    if value is None or value == "":
        if required:
            raise RequestError(f"{key!r} is required (non-empty string)")
        return None
    if not isinstance(value, str):
        raise RequestError(f"{key!r} must be a string")
    value = value.strip()
    if required and not value:
        raise RequestError(f"{key!r} is required (non-empty string)")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(f"{key!r} is longer than {MAX_TEXT_CHARS} characters")
    return value


def _str_list(req: Mapping[str, Any], key: str) -> frozenset[str] | None:
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RequestError(f"{key!r} must be a non-empty list of strings")
    return frozenset(value)


def parse_request(line: bytes) -> dict:
    """Decode one request line into a dict with a known ``op``. Raises RequestError."""
    try:
        req = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise RequestError("request is not valid JSON") from None
    if not isinstance(req, dict):
        raise RequestError("request must be a JSON object")
    op = req.get("op")
    if op not in OPS:
        raise RequestError(f"unknown op {op!r}; expected one of {', '.join(sorted(OPS))}", "unknown_op")
    return req


def _flag(req: Mapping[str, Any], key: str) -> bool:
    value = req.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(f"{key!r} must be true or false")
    return value


def trip_command(req: Mapping[str, Any], *, known_venues: frozenset[str], default_operator: str,
                 known_products: frozenset[str] | None = None) -> TripCommand:
    """``known_products``: every product a configured venue lists or the engine has seen.

    A product outside it is most likely a typo (the trip would cancel nothing and report
    flat), so it is refused unless the request says ``force``.
    """
    reason = text_field(req, "reason", required=True)
    operator = text_field(req, "operator", required=False) or default_operator
    venues = _str_list(req, "venues")
    if venues is not None and not venues <= known_venues:
        unknown = ", ".join(f"{v}{did_you_mean(v, known_venues)}" for v in sorted(venues - known_venues))
        raise RequestError(f"unknown venue(s): {unknown}; configured: {', '.join(sorted(known_venues))}")
    products = _str_list(req, "products")
    force = _flag(req, "force")
    if products is not None and known_products is not None and not force and not products <= known_products:
        unknown = ", ".join(sorted(products - known_products))
        known = ", ".join(sorted(known_products)) or "none yet"
        raise RequestError(f"unknown product(s): {unknown}; known: {known} (pass --force to trip on it anyway)",
                           "unknown_product")
    scope = EVERYTHING if venues is None and products is None else CancelScope(venues=venues, products=products)
    return TripCommand(reason=reason, source="control", operator=operator, scope=scope, lock=_flag(req, "lock"))


def reset_command(req: Mapping[str, Any], operator_uid: int | None = None) -> ResetCommand:
    """``unlock``: also restore order entry on locked venues (audited with the peer's uid)."""
    return ResetCommand(operator=text_field(req, "operator", required=True), reason=text_field(req, "reason", required=True),
                        source="control", unlock=_flag(req, "unlock"), operator_uid=operator_uid,
                        rebase=_flag(req, "rebase"))


def cash_flow_command(req: Mapping[str, Any], *, known_venues: frozenset[str], default_operator: str,
                      equity: Mapping[str, Decimal | None] | None = None,
                      max_cash_flow: Decimal | None = None) -> DeclareCashFlow:
    """``equity``: the venue's current equity. A flow larger in magnitude than it (or than
    ``max_cash_flow``) is refused: a flow shifts every drawdown baseline, so an absurd one
    would neutralise the rule. With the equity unknown there is nothing to bound it by."""
    venue = text_field(req, "venue", required=True)
    if venue not in known_venues:
        raise RequestError(f"unknown venue {venue!r}{did_you_mean(venue, known_venues)}; "
                           f"configured: {', '.join(sorted(known_venues))}")
    raw = req.get("amount")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise RequestError("'amount' must be a decimal string such as \"-250.5\" (never a float)")
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise RequestError(f"'amount' is not a decimal number: {raw!r}") from None
    if not amount.is_finite() or amount == 0:
        raise RequestError("'amount' must be a finite, non-zero decimal (+ deposit, - withdrawal)")
    if amount.as_tuple().exponent < -MAX_FLOW_DECIMALS:
        raise RequestError(f"'amount' has more than {MAX_FLOW_DECIMALS} decimal places")
    if max_cash_flow is not None and abs(amount) > max_cash_flow:
        raise RequestError(f"'amount' {amount} is larger than max_cash_flow {max_cash_flow}", "flow_too_large")
    if equity is not None:
        current = equity.get(venue)
        if current is None:
            raise RequestError(f"venue {venue!r} has reported no equity yet: a cash flow cannot be checked "
                               f"against it; declare it once the venue is up", "flow_unchecked")
        if abs(amount) > abs(current):
            raise RequestError(f"'amount' {amount} is larger in magnitude than the current equity of "
                               f"{venue!r} ({current})", "flow_too_large")
    operator = text_field(req, "operator", required=False) or default_operator
    return DeclareCashFlow(venue=venue, amount=amount, operator=operator)


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    return orjson.dumps(reply, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def error_reply(message: str, code: str = "bad_request") -> dict:
    return {"ok": False, "error": message, "code": code}



OPS = frozenset({"status", "trip", "reset", "heartbeat", "cash_flow", "reopen", "debug_wedge"})
