"""Events (past tense, facts that happened) and commands (imperative, requests).

Every venue, the control plane and the executor speak to the engine only through these
types, over one bounded channel. They are frozen and slotted: cheap to create on the hot
path, safe to share between tasks, and a recorded list of them replays every decision.

Conventions:
- ``venue`` is the *configured* name of a venue entry (one authenticated account on one
  exchange, e.g. ``"ox-main"``), never the exchange kind.
- ``product`` is the venue's own product identifier as a string (OX.FUN ``marketCode``
  such as ``"BTC-USD-SWAP-LIN"``; Vertex/Nado ``product_id`` such as ``"2"``).
- Money and quantities are ``Decimal``; never float.
- ``ts_event_ms`` is the venue's timestamp (wall clock, ms) when it has one, else the
  receive wall time; ``ts_recv_s`` is the monotonic receive stamp (``trio.current_time()``)
  taken by the session reader, used for latency and staleness.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Union


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class CloseReason(enum.Enum):
    CANCELED = "canceled"
    FILLED = "filled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


# --------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderInfo:
    """An open order as the venue reports it (push or snapshot)."""

    venue: str
    product: str
    venue_order_id: str  # OX.FUN orderId; Vertex/Nado digest (0x...)
    client_order_id: str | None = None
    side: Side | None = None
    price: Decimal | None = None
    qty_remaining: Decimal | None = None
    is_trigger: bool = False  # conditional order (OX.FUN untriggered stop, Nado trigger service)
    reduce_only: bool = False
    ts_event_ms: int = 0


@dataclass(frozen=True, slots=True)
class OrderRef:
    """The minimum needed to cancel one order."""

    venue: str
    product: str
    venue_order_id: str
    is_trigger: bool = False


@dataclass(frozen=True, slots=True)
class CancelScope:
    """Which orders a trip cancels. ``None`` means "no restriction" on that axis."""

    venues: frozenset[str] | None = None
    products: frozenset[str] | None = None
    sides: frozenset[Side] | None = None
    # Keep reduce-only conditional orders (protective stops) alive. Off by default: a
    # blanket kill also kills stops unless the risk manager says otherwise.
    keep_protective_stops: bool = False
    # True when the action is "cancel these orders" (by id), never a bulk verb.
    by_id_only: bool = False

    def covers_venue(self, venue: str) -> bool:
        return self.venues is None or venue in self.venues

    def covers(self, order: OrderInfo) -> bool:
        if self.venues is not None and order.venue not in self.venues:
            return False
        if self.products is not None and order.product not in self.products:
            return False
        if self.sides is not None and order.side not in self.sides:
            return False
        if self.keep_protective_stops and order.is_trigger and order.reduce_only:
            return False
        return True

    def union(self, other: CancelScope) -> CancelScope:
        def join(a, b):
            return None if a is None or b is None else a | b

        return CancelScope(
            venues=join(self.venues, other.venues),
            products=join(self.products, other.products),
            sides=join(self.sides, other.sides),
            keep_protective_stops=self.keep_protective_stops and other.keep_protective_stops,
            by_id_only=self.by_id_only and other.by_id_only,
        )


EVERYTHING = CancelScope()


@dataclass(frozen=True, slots=True)
class Breach:
    """A rule's verdict: it is breached. Produced by pure rule code."""

    rule: str
    kind: str
    observed: str  # human-readable observed value ("-6.2% (94 000 from peak 100 200)")
    threshold: str  # human-readable threshold ("-5%")
    scope: CancelScope
    latch: bool = True  # False: alert only, no cancels
    detail: str = ""
    lock: bool = False  # also lock order entry on the venues in scope (venue capability)


# --------------------------------------------------------------------------------------
# Venue events (produced by venue sessions)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderOpened:
    order: OrderInfo
    ts_recv_s: float = 0.0
    is_new: bool = True  # False when only re-seen (e.g. modify); order_rate counts is_new only


@dataclass(frozen=True, slots=True)
class OrderClosed:
    venue: str
    product: str
    venue_order_id: str
    reason: CloseReason = CloseReason.CANCELED
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """A (partial) fill of one of our orders. ``qty`` > 0; side tells the direction."""

    venue: str
    product: str
    venue_order_id: str
    side: Side | None
    qty: Decimal
    price: Decimal
    remaining: Decimal | None = None
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class OrderRejected:
    """The venue rejected one of the account's own order commands (for reject_burst)."""

    venue: str
    code: str
    message: str = ""
    product: str | None = None
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class OpenOrdersSnapshot:
    """The venue's own complete list of open orders for this account.

    ``products`` is None when the snapshot covers every product; otherwise only those.
    ``purpose`` is "reconcile" (after (re)connect), "verify" (after a cancel) or "poll".
    """

    venue: str
    orders: tuple[OrderInfo, ...]
    products: frozenset[str] | None = None
    purpose: str = "reconcile"
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0
    # Products whose orders the account stream reports (None: all). Stream drift is judged
    # only on these: an order on an unsubscribed product is no evidence of a broken stream.
    stream_products: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class EquityObserved:
    """Mark-to-market account equity in ``currency`` as computed by the venue layer."""

    venue: str
    equity: Decimal
    currency: str = "USD"
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class EquityUnavailable:
    """The venue layer cannot value the account: ``missing`` names what has no price.

    Incomplete valuation is *missing* equity, never a smaller number: drawdown rules count
    the venue's equity as missing from the last complete observation on.
    """

    venue: str
    missing: tuple[str, ...]
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CashFlowObserved:
    """A deposit (+) or withdrawal (-) of ``amount``; drawdown rules shift their peak by it."""

    venue: str
    amount: Decimal
    currency: str = "USD"
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PositionObserved:
    venue: str
    product: str
    qty: Decimal  # signed: + long, - short
    notional: Decimal | None = None  # |qty| * mark, in the venue's quote currency, when known
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0
    polled: bool = False  # from a REST/gateway reconcile or poll, not the account stream


@dataclass(frozen=True, slots=True)
class MarkPriceObserved:
    venue: str
    product: str
    mark_price: Decimal
    ts_event_ms: int = 0
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class VenueConnected:
    """Connected, authenticated, subscribed and reconciled: the feed is trustworthy."""

    venue: str
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class VenueDisconnected:
    venue: str
    reason: str = ""
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class VenueAlive:
    """Any sign of life from the venue's private stream (a pong, a push) with no other event."""

    venue: str
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamDriftDetected:
    """A drift poll found open orders the account stream never reported: the stream is broken."""

    venue: str
    order_ids: tuple[str, ...]
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class VenueDegraded:
    """A venue-side condition the session observed (``active``) or saw end (not ``active``):
    the session runs degraded, or the venue itself is in a state that stops cancels.

    ``condition``: ``stream_auth_refused`` (open orders polled instead of streamed) |
    ``clock_skew`` | ``venue_maintenance`` | ``venue_query_only`` | ``rate_limited`` |
    ``lock_breached`` / ``lock_unverified`` (Nado order-entry lock, see venues/vertex/signer_lock.py).
    ``message`` does not name the venue (the engine prefixes it). The engine keeps one alarm
    per (condition, venue) while it lasts; the event never reaches the book or the rules.
    """

    venue: str
    condition: str
    message: str = ""
    active: bool = True
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class VenueAuthFailed:
    """Credentials rejected: the kill switch cannot act on this venue. Always loud."""

    venue: str
    code: str
    message: str = ""
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BackstopObserved:
    """The venue's own dead-man's switch (Hyperliquid ``scheduleCancel``) as last set by the
    session. ``unavailable_reason``: the venue refused to arm it (its own text); the engine
    alarms ``venue_dms_unavailable`` and keeps running."""

    venue: str
    armed: bool
    fires_at_ms: int | None = None
    unavailable_reason: str = ""
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class OrderEntryLockChanged:
    """Result of a venue's ``lock_order_entry`` / ``unlock_order_entry`` (run by the executor)."""

    venue: str
    locked: bool  # the state the call aimed for
    ok: bool
    message: str = ""
    trip_id: int | None = None
    operator: str = ""
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that could not be parsed; counted and logged, never a crash."""

    venue: str
    error: str
    sample: str = ""  # first bytes of the frame, for the log (never includes our secrets)
    ts_recv_s: float = 0.0


# --------------------------------------------------------------------------------------
# Executor results (produced by the executor, audited by the engine)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelAttempted:
    """One signed request went on the wire (or would have, in dry-run)."""

    venue: str
    trip_id: int
    verb: str  # cancel_orders | cancel_products | cancel_all_orders (+ ":trigger")
    request_id: str  # tag / nonce: what identifies this attempt at the venue
    n_orders: int | None = None
    products: tuple[str, ...] = ()
    detail: dict = field(default_factory=dict)  # nonce, recv_time_ms, ...; never secrets
    dry_run: bool = False
    ts_sent_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CancelCompleted:
    """The outcome of one attempt. ``outcome`` is ok | rejected | unknown | rate_limited | auth.

    ``retry_after_s``: when the venue (or the session's own budget) says a retry can succeed.
    ``venue_state``: ``maintenance`` | ``query_only`` when the venue refused for its own state
    (outcome ``unknown``: not confirmed, and not a failure of the cancel itself).
    """

    venue: str
    trip_id: int
    verb: str
    request_id: str
    outcome: str
    code: str = ""
    message: str = ""
    cancelled_ids: tuple[str, ...] = ()
    gone_ids: tuple[str, ...] = ()  # "not found": probably gone, to confirm by snapshot
    latency_s: float = 0.0
    ts_recv_s: float = 0.0
    retry_after_s: float | None = None
    venue_state: str = ""


@dataclass(frozen=True, slots=True)
class VerifyFailed:
    """Fetching the open-orders snapshot failed: state is unknown, the engine retries."""

    venue: str
    error: str
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CancelJobFinished:
    """The executor finished one job (cancel round and/or verification) for a venue."""

    venue: str
    job_id: int
    timed_out: bool = False
    ts_recv_s: float = 0.0


# --------------------------------------------------------------------------------------
# Time and control
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Drives absence rules (stale heartbeat), re-polls and debounce durations."""

    now_s: float


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """A strategy said it is alive (control socket, CLI, or a touched file)."""

    source: str
    ts_recv_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TripCommand:
    reason: str
    source: str = "cli"  # cli | signal | control | startup
    operator: str = ""
    scope: CancelScope = EVERYTHING
    lock: bool = False  # also lock order entry (``killswitch trip --lock``)


@dataclass(frozen=True, slots=True)
class ResetCommand:
    operator: str
    reason: str
    source: str = "cli"
    unlock: bool = False  # also restore order entry on locked venues (``killswitch reset --unlock``)
    operator_uid: int | None = None  # the control peer's uid, audited with an unlock
    # True: rule baselines (drawdown peaks, windows) restart from the current equity.
    # False (the default): they survive the reset, so a loss just before or after it counts.
    rebase: bool = False


@dataclass(frozen=True, slots=True)
class DeclareCashFlow:
    """Operator declares a deposit/withdrawal the venue feed could not identify."""

    venue: str
    amount: Decimal
    operator: str = ""


VenueEvent = Union[
    OrderOpened,
    OrderClosed,
    OrderFilled,
    OrderRejected,
    OpenOrdersSnapshot,
    EquityObserved,
    EquityUnavailable,
    CashFlowObserved,
    PositionObserved,
    MarkPriceObserved,
    VenueConnected,
    VenueDisconnected,
    VenueAlive,
    VenueAuthFailed,
    BackstopObserved,
    StreamDriftDetected,
    BadFrame,
]
