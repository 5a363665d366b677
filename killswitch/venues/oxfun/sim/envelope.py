"""Checks on the request envelope of REST order commands (oxfun.md §7.3), pure.

``DELETE /v3/orders/cancel`` and ``POST /v3/orders/place`` carry ``timestamp`` (ms) and
``responseType`` (both required by the docs) and an optional ``recvWindow`` (ms). The docs
name the refusal for a stale request (``100015 recvWindow xxx has expired``) but not the
window's default nor the tolerance for a timestamp ahead of the server: those two are
simulator options (``SimOptions.rest_default_recv_window_ms`` / ``rest_future_tolerance_ms``).
"""

from __future__ import annotations

from typing import Any

RESPONSE_TYPES = ("FULL", "ACK")


def _ms(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def check_order_envelope(body: dict, *, now_ms: int, default_recv_window_ms: int,
                         future_tolerance_ms: int) -> tuple[str, str] | None:
    """``(code, message)`` of the refusal, or None when the envelope is acceptable."""
    for required in ("timestamp", "responseType"):
        if body.get(required) is None:
            return "30001", f"Required parameter '{required}' is missing"
    if body["responseType"] not in RESPONSE_TYPES:
        return "20001", "responseType is invalid (FULL or ACK)"
    ts = _ms(body["timestamp"])
    if ts is None:
        return "20001", "timestamp is invalid"
    window = body.get("recvWindow", default_recv_window_ms)
    window_ms = _ms(window)
    if window_ms is None or window_ms <= 0:
        return "20001", "recvWindow is invalid"
    if now_ms > ts + window_ms:
        return "100015", f"recvWindow {window_ms} has expired"
    if ts > now_ms + future_tolerance_ms:
        return "20001", "timestamp is ahead of the server time"
    return None
