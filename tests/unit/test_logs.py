"""JSON logs keep their structure (lists and dicts as JSON values, not repr strings), redaction
reaches every depth, and log event names follow one convention."""

from __future__ import annotations

import ast
import io
import re
from decimal import Decimal
from pathlib import Path

import orjson
import structlog

from killswitch.logs import MAX_DEPTH, REDACTED, SecretRedactor, configure_logging

PACKAGE = Path(__file__).resolve().parents[2] / "killswitch"
SECRET = "s3cr3t-value-0123456789"
# Upper case on purpose: the one-per-event canonical lines operators grep for.
CANONICAL = frozenset({"TRIP", "RESET", "ALARM"})
LEVELS = frozenset({"debug", "info", "warning", "error", "critical", "exception"})


def _log_json(**fields) -> dict:
    out = io.StringIO()
    redactor = configure_logging("json", stream=out)
    redactor.add([SECRET])
    try:
        structlog.get_logger("test").info("probe", **fields)
    finally:
        structlog.reset_defaults()
    return orjson.loads(out.getvalue().splitlines()[-1])


def test_lists_and_dicts_are_json_values_not_repr_strings():
    line = _log_json(venues=["ox-a", "nado-b"], scope={"venues": None, "products": ["2", "4"]},
                     ids=("1", "2"), kinds={"b", "a"}, amount=Decimal("1.50"), path=Path("/var/lib/ks"), n=3)
    assert line["venues"] == ["ox-a", "nado-b"]
    assert line["scope"] == {"venues": None, "products": ["2", "4"]}
    assert line["ids"] == ["1", "2"] and line["kinds"] == ["a", "b"]
    assert line["amount"] == "1.50" and line["path"] == "/var/lib/ks" and line["n"] == 3


def test_redaction_is_recursive():
    line = _log_json(
        detail={"api_secret": "plain", "nested": [{"private_key": "0xabc", "msg": f"bad key {SECRET}!"}]},
        errors=[f"login with {SECRET} refused"],
        api_secret="top-level",
    )
    assert line["api_secret"] == REDACTED
    assert line["detail"]["api_secret"] == REDACTED
    assert line["detail"]["nested"][0]["private_key"] == REDACTED
    assert line["detail"]["nested"][0]["msg"] == f"bad key {REDACTED}!"
    assert line["errors"] == [f"login with {REDACTED} refused"]
    assert SECRET not in orjson.dumps(line).decode()


def test_redaction_depth_is_bounded_and_still_scrubs():
    deep: object = SECRET
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    r = SecretRedactor()
    r.add([SECRET])
    out = orjson.dumps(r.redact(deep)).decode()
    assert SECRET not in out and REDACTED in out


def _event_names() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS and node.args):
                continue
            recv = node.func.value
            name = recv.attr if isinstance(recv, ast.Attribute) else getattr(recv, "id", "")
            if name not in ("log", "_log", "logger") or not isinstance(node.args[0], ast.Constant):
                continue
            if isinstance(node.args[0].value, str):
                found.append((str(path.relative_to(PACKAGE.parent)), node.lineno, node.args[0].value))
    return found


def test_log_event_names_are_snake_case_with_venue_events_prefixed():
    names = _event_names()
    assert len(names) > 40  # the scan sees the package's log calls
    bad = [f"{p}:{n}: {e!r}" for p, n, e in names
           if e not in CANONICAL and not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", e)]
    assert not bad, "log event names must be snake_case:\n" + "\n".join(bad)
    # A venue session's connection events read the same for every venue.
    for event in ("connected", "disconnected", "connecting"):
        assert event not in {e for _, _, e in names}, f"use venue_{event}"
    sessions = {e for p, _, e in names if p.endswith("session.py")}
    assert {"venue_connected", "venue_disconnected", "venue_auth_failed"} <= sessions
