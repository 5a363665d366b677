"""Wire schemas of the fleet: frozen dataclasses, JSON on the wire, strict decoding.

Every message carries ``v`` (schema version) and ``type``. Decoding is strict: a message that
is too large, not JSON, of an unknown type or version, missing a field, with a field of the
wrong type or out of bounds, or with an unknown field is rejected with a :class:`BadMessage`
naming the field; :class:`Decoder` logs and counts it, the caller drops it. Nothing a peer
sends can crash a daemon.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Union

import orjson
import structlog

log = structlog.get_logger("killswitch.fleet")

VERSION = 1
MAX_MESSAGE_BYTES = 4096  # also the nats-py publish guard: a status or ack is ~300 bytes
MAX_TEXT = 500
MAX_NAME = 128
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # ids are subject tokens (ack subject)
STATES = ("armed", "tripped")
ACK_STAGES = ("tripped", "flat")


class BadMessage(ValueError):
    """A message that does not match its schema (the text names the field)."""


@dataclass(frozen=True, slots=True)
class FleetTrip:
    """Trip every instance. Published on ``ks.<fleet>.trip`` and stored under the latch's ``trip`` key."""

    fleet_trip_id: str
    reason: str
    operator: str
    origin: str  # instance name, or "cli@<host>" for an operator's command
    ts_wall_ms: int
    type: str = field(default="trip", init=False)


@dataclass(frozen=True, slots=True)
class FleetReset:
    """Re-arm every instance. Operators only (the server refuses it from a daemon's credentials)."""

    reset_id: str
    reason: str
    operator: str
    origin: str
    ts_wall_ms: int
    type: str = field(default="reset", init=False)


@dataclass(frozen=True, slots=True)
class TripAck:
    """An instance's answer to a fleet trip: once ``tripped`` (latched, cancels sent), once ``flat``."""

    fleet_trip_id: str
    instance: str
    stage: str  # tripped | flat
    local_trip_id: int
    venues: tuple[str, ...]
    trip_to_first_cancel_ms: float | None
    trip_to_flat_ms: float | None
    ts_wall_ms: int
    type: str = field(default="ack", init=False)


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One instance's compact status, published on an interval and kept in the status bucket."""

    instance: str
    state: str  # armed | tripped
    fleet_trip_id: str | None  # the fleet trip this instance is latched on, if any
    venues_up: int
    venues_total: int
    alarms: int
    interval_s: float
    ts_wall_ms: int
    type: str = field(default="status", init=False)


Message = Union[FleetTrip, FleetReset, TripAck, InstanceStatus]
_TYPES: dict[str, type] = {"trip": FleetTrip, "reset": FleetReset, "ack": TripAck, "status": InstanceStatus}


def encode(msg: Message) -> bytes:
    body = {"v": VERSION}
    for f in dataclasses.fields(msg):
        body[f.name] = getattr(msg, f.name)
    data = orjson.dumps(body)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"{msg.type} message is {len(data)} bytes, over {MAX_MESSAGE_BYTES}")
    return data


# ------------------------------------------------------------------------------ decoding


def _text(d: dict, key: str, limit: int = MAX_TEXT) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise BadMessage(f"{key}: expected a string")
    if len(v) > limit:
        raise BadMessage(f"{key}: longer than {limit} characters")
    return v


def _ident(d: dict, key: str) -> str:
    v = _text(d, key, 64)
    if not ID_RE.match(v):
        raise BadMessage(f"{key}: must be 1-64 letters, digits, '_' or '-'")
    return v


def _int(d: dict, key: str, lo: int = 0) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > 2**63:
        raise BadMessage(f"{key}: expected an integer >= {lo}")
    return v


def _opt_ms(d: dict, key: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 <= v < 1e9):
        raise BadMessage(f"{key}: expected milliseconds >= 0 or null")
    return float(v)


def _choice(d: dict, key: str, options: tuple[str, ...]) -> str:
    v = d.get(key)
    if v not in options:
        raise BadMessage(f"{key}: must be one of {', '.join(options)}")
    return v


def _build(cls: type, d: dict) -> Message:
    if cls is FleetTrip:
        return FleetTrip(
            _ident(d, "fleet_trip_id"),
            _text(d, "reason"),
            _text(d, "operator", MAX_NAME),
            _text(d, "origin", MAX_NAME),
            _int(d, "ts_wall_ms"),
        )
    if cls is FleetReset:
        return FleetReset(
            _ident(d, "reset_id"),
            _text(d, "reason"),
            _text(d, "operator", MAX_NAME),
            _text(d, "origin", MAX_NAME),
            _int(d, "ts_wall_ms"),
        )
    if cls is TripAck:
        venues = d.get("venues")
        if (
            not isinstance(venues, list)
            or len(venues) > 256
            or not all(isinstance(v, str) and len(v) <= MAX_NAME for v in venues)
        ):
            raise BadMessage("venues: expected a list of at most 256 names")
        return TripAck(
            _ident(d, "fleet_trip_id"),
            _ident(d, "instance"),
            _choice(d, "stage", ACK_STAGES),
            _int(d, "local_trip_id"),
            tuple(venues),
            _opt_ms(d, "trip_to_first_cancel_ms"),
            _opt_ms(d, "trip_to_flat_ms"),
            _int(d, "ts_wall_ms"),
        )
    fid = d.get("fleet_trip_id")
    interval = d.get("interval_s")
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or not (0 < interval <= 3600):
        raise BadMessage("interval_s: expected seconds in (0, 3600]")
    return InstanceStatus(
        _ident(d, "instance"),
        _choice(d, "state", STATES),
        None if fid is None else _ident(d, "fleet_trip_id"),
        _int(d, "venues_up"),
        _int(d, "venues_total"),
        _int(d, "alarms"),
        float(interval),
        _int(d, "ts_wall_ms"),
    )


def decode(data: bytes, expect: type | None = None) -> Message:
    """Parse one message; raise :class:`BadMessage` naming what is wrong."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message is {len(data)} bytes, over {MAX_MESSAGE_BYTES}")
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadMessage("not JSON") from None
    if not isinstance(d, dict):
        raise BadMessage("not a JSON object")
    if d.get("v") != VERSION:
        raise BadMessage(f"v: unsupported schema version {d.get('v')!r} (this build speaks {VERSION})")
    cls = _TYPES.get(d.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise BadMessage(f"type: unknown message type {str(d.get('type'))[:32]!r}")
    if expect is not None and cls is not expect:
        raise BadMessage(f"type: expected {expect.__name__}, got {d['type']!r}")
    known = {f.name for f in dataclasses.fields(cls)} | {"v"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise BadMessage(f"unknown field {str(unknown[0])[:32]!r}")
    return _build(cls, d)


@dataclass(slots=True)
class Decoder:
    """Decodes, and logs and counts what it rejects (per subject kind), so a bad peer is visible."""

    bad: Counter = field(default_factory=Counter)
    good: int = 0

    def decode(self, data: bytes, *, subject: str, expect: type | None = None) -> Any:
        try:
            msg = decode(data, expect)
        except BadMessage as exc:
            kind = subject.split(".")[2] if subject.count(".") >= 2 else subject
            self.bad[kind] += 1
            log.warning(
                "fleet_bad_message",
                subject=subject[:128],
                error=str(exc),
                size=len(data),
                sample=data[:80].decode("utf-8", "replace"),
            )
            return None
        self.good += 1
        return msg

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())
