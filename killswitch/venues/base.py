"""What every venue provides to the engine and the executor.

A venue *kind* (``oxfun``, ``vertex``/``nado``) is a folder with ``wire.py`` (pure codecs
and signing), ``session.py`` (the trio I/O shell implementing :class:`VenueSession`) and
``sim.py`` (a faithful simulated exchange on loopback). Adding a venue is adding a folder
and one line in :mod:`killswitch.venues.registry`.

Contract of a session:

- ``run(send)`` connects, authenticates, subscribes, reconciles (open orders, balances,
  positions by REST/query) and then forwards parsed events into ``send`` forever,
  reconnecting with exponential backoff and jitter. It calls ``task_status.started()``
  once the first connection is fully up (``VenueConnected`` has been sent), and raises
  :class:`AuthError` from ``run`` if the *first* login is refused (a wrong secret must be
  a clear start-up error, not a silent loop). Later auth failures are reported as
  ``VenueAuthFailed`` events and retried with backoff.
- The reader only reads, stamps ``ts_recv_s``, parses and forwards; a slow consumer
  applies backpressure through the bounded channel.
- Cancel verbs make ONE attempt each (per request they need), every request with a
  freshly computed nonce/timestamp and signature, call ``on_sent`` the moment a request is
  written to the wire, and return one :class:`~killswitch.model.CancelCompleted` per
  request. They never raise for venue outcomes: rejections, timeouts and dropped sockets
  are encoded in ``outcome`` (``ok | rejected | unknown | rate_limited | auth``). Retrying
  is the engine's decision, made on evidence (a fresh open-orders snapshot).
- ``fetch_open_orders`` returns the venue's own current list (both planes), raising
  :class:`OutcomeUnknown` / :class:`VenueRejected` when it cannot.
"""

from __future__ import annotations

import random

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import trio

from killswitch.model import CancelAttempted, CancelCompleted, OrderInfo, OrderRef
from killswitch.secrets import SecretRef

# --------------------------------------------------------------------------------------
# Errors: the exception type is the retry decision.
# --------------------------------------------------------------------------------------


class VenueError(Exception):
    """Base class. ``code`` is the venue's own error code as a string."""

    def __init__(self, message: str, *, code: str = "", venue: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.venue = venue


class VenueRejected(VenueError):
    """A deterministic rejection: the same request will be rejected again."""


class OutcomeUnknown(VenueError):
    """Timeout, socket closed (1006), send failed: the request may or may not have acted."""


class RateLimited(VenueError):
    """Over a rate limit (OX.FUN 20007 / HTTP 429, Vertex/Nado 1000). ``retry_after_s`` if known."""

    def __init__(self, message: str, *, code: str = "", venue: str = "", retry_after_s: float | None = None):
        super().__init__(message, code=code, venue=venue)
        self.retry_after_s = retry_after_s


class AuthError(VenueError):
    """Credentials refused. Never retried silently: reported loudly."""


class Maintenance(VenueError):
    """Venue in maintenance (OX.FUN 000101, Vertex/Nado 1004/2068): back off and retry."""


# --------------------------------------------------------------------------------------
# Capabilities and costs (read by the pure planner)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VenueCapabilities:
    """What a venue can cancel with, and what each verb costs against its rate budget.

    Costs are in the venue's own budget unit (Nado: wallet weight; OX.FUN: requests).
    """

    cancel_all_cost: int
    cancel_products_cost_per_product: int
    cancel_orders_cost_per_request: int  # cost of one by-id request (OX.FUN: one WS message)
    cancel_orders_cost_per_order: int  # extra cost per order id (Nado: 1 per digest)
    max_orders_per_request: int
    has_trigger_plane: bool  # conditional orders live in a separate service (Nado trigger)
    # Prefer by-id cancels for up to this many known orders when the feed is trusted:
    # lower latency (OX.FUN: WS on the open socket instead of a new REST request).
    prefer_by_id_below: int = 0
    # Cost of a by-id trigger-plane cancel per order against *this* budget: the trigger
    # service (Nado) is a separate service that does not draw on the wallet's weight.
    trigger_cancel_cost_per_order: int = 0

    def cost_cancel_orders(self, n_orders: int) -> int:
        if n_orders <= 0:
            return 0
        n_requests = -(-n_orders // self.max_orders_per_request)
        return n_requests * self.cancel_orders_cost_per_request + n_orders * self.cancel_orders_cost_per_order

    def cost_cancel_triggers(self, n_orders: int) -> int:
        """By-id cancels on the trigger plane (two-plane venues only)."""
        return max(0, n_orders) * self.trigger_cancel_cost_per_order

    def cost_cancel_products(self, n_products: int) -> int:
        return n_products * self.cancel_products_cost_per_product


OnSent = Callable[[CancelAttempted], None]


@runtime_checkable
class VenueSession(Protocol):
    name: str
    capabilities: VenueCapabilities

    async def run(self, send: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None: ...

    async def cancel_orders(
        self, orders: Sequence[OrderRef], *, trip_id: int, on_sent: OnSent
    ) -> list[CancelCompleted]: ...

    async def cancel_products(
        self, products: Sequence[str], *, include_triggers: bool, trip_id: int, on_sent: OnSent
    ) -> list[CancelCompleted]: ...

    async def cancel_all_orders(
        self, *, include_triggers: bool, trip_id: int, on_sent: OnSent
    ) -> list[CancelCompleted]: ...

    async def fetch_open_orders(self) -> tuple[OrderInfo, ...]: ...

    def budget_available(self, now_s: float) -> int | None:
        """Remaining cancel budget as far as this process knows, None if unlimited/unknown."""
        ...


@runtime_checkable
class OrderEntryLock(Protocol):
    """Optional venue capability: stop the *strategy's* credentials from placing orders.

    ``lock_order_entry`` revokes (or disables) the strategy's order entry, verifies it took
    effect on the venue, and returns a human-readable description for the audit; it raises
    :class:`VenueError` when it cannot (the engine alarms ``lock_failed:<venue>`` and keeps
    cancelling). Resting orders are NOT its concern: the trip cancels them. It must be safe
    to call again while locked. ``unlock_order_entry`` restores what the lock took away.
    Sessions that cannot lock simply do not implement it (the engine alarms if asked).
    """

    async def lock_order_entry(self, *, trip_id: int) -> str: ...

    async def unlock_order_entry(self, *, operator: str) -> str: ...


# --------------------------------------------------------------------------------------
# Sans-io sliding-window rate budget (used by sessions and simulators alike)
# --------------------------------------------------------------------------------------


class RateBudget:
    """Weight charged over several sliding windows, e.g. ``[(60, 600), (10, 100)]``.

    Pure: callers pass ``now_s``. ``reserve`` weight is kept back from ordinary spending so
    cancels can always be charged (``for_cancel=True`` may use it).

    Each window keeps its own queue of (time, weight) and a running sum, so checking and
    charging are O(1) amortised however many requests the longest window holds (a 5-minute
    REST window fills with thousands); only ``wait_s`` on an exhausted window walks it.
    """

    __slots__ = ("_windows", "_reserve", "_blocked_until_s")

    def __init__(self, limits: Sequence[tuple[float, int]], *, reserve: int = 0) -> None:
        self._windows = tuple(_Window(float(w), int(cap)) for w, cap in limits)
        self._reserve = reserve
        self._blocked_until_s = float("-inf")

    # A refusal by the venue (Nado 1000, OX.FUN 429/20007) means someone we cannot see (the
    # strategy on the same wallet or IP) spent the budget: nothing fits until the venue's
    # window has passed, whatever our own count says. The first request after the block is
    # the window's one probe; if it is refused too, the block starts again.
    def refused(self, now_s: float, block_s: float) -> None:
        self._blocked_until_s = max(self._blocked_until_s, now_s + block_s)

    def blocked_for_s(self, now_s: float) -> float:
        return max(0.0, self._blocked_until_s - now_s)

    def _window(self, window_s: float) -> "_Window":
        for win in self._windows:
            if win.window_s == window_s:
                return win
        raise ValueError(f"no {window_s}s window in this budget")

    def used(self, window_s: float, now_s: float) -> int:
        win = self._window(float(window_s))
        win.expire(now_s)
        return win.total

    def available(self, now_s: float, *, for_cancel: bool = True) -> int:
        if now_s < self._blocked_until_s:
            return 0
        keep = 0 if for_cancel else self._reserve
        best: int | None = None
        for win in self._windows:
            win.expire(now_s)
            free = win.cap - win.total
            if best is None or free < best:
                best = free
        return (0 if best is None else best) - keep

    def try_charge(self, weight: int, now_s: float, *, for_cancel: bool = True) -> bool:
        if weight > self.available(now_s, for_cancel=for_cancel):
            return False
        self.charge(weight, now_s)
        return True

    def charge(self, weight: int, now_s: float) -> None:
        """Record weight spent regardless of limits (what the venue will count anyway)."""
        for win in self._windows:
            win.events.append((now_s, weight))
            win.total += weight

    def wait_s(self, weight: int, now_s: float) -> float:
        """Seconds until ``weight`` fits in every window (0 if it fits now)."""
        worst = self.blocked_for_s(now_s)
        for win in self._windows:
            win.expire(now_s)
            excess = win.total + weight - win.cap
            if excess <= 0:
                continue
            freed = 0
            for t, w in win.events:
                freed += w
                if freed >= excess:
                    # Never 0 while it does not fit now: t + window can round to now_s.
                    worst = max(worst, t + win.window_s - now_s, 1e-9)
                    break
            else:
                return float("inf")  # never fits (weight > cap)
        return worst


class _Window:
    __slots__ = ("window_s", "cap", "events", "total")

    def __init__(self, window_s: float, cap: int) -> None:
        self.window_s = window_s
        self.cap = cap
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now_s: float) -> None:
        ev = self.events
        horizon = now_s - self.window_s
        while ev and ev[0][0] <= horizon:
            self.total -= ev.popleft()[1]


# --------------------------------------------------------------------------------------
# Per-kind venue configuration (parsed from YAML by killswitch.config)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    initial_s: float = 0.25
    max_s: float = 15.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction

    def delay_s(self, attempt: int, rng=random) -> float:
        """The wait before retry number ``attempt`` (0-based): capped exponential, +/- jitter."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


class ReconnectBackoff:
    """Attempt counting for a session's reconnect loop (pure): a connection that lasted longer
    than the longest delay starts the count again; a venue that keeps dropping keeps backing off."""

    __slots__ = ("cfg", "_attempt")

    def __init__(self, cfg: BackoffConfig) -> None:
        self.cfg = cfg
        self._attempt = 0

    def next_delay_s(self, lasted_s: float, rng=random) -> float:
        """The wait before reconnecting, after a connection (attempt) that lasted ``lasted_s``."""
        if lasted_s > self.cfg.max_s:
            self._attempt = 0
        delay = self.cfg.delay_s(self._attempt, rng)
        self._attempt += 1
        return delay


@dataclass(frozen=True, slots=True)
class OxfunConfig:
    name: str
    api_key: SecretRef
    api_secret: SecretRef
    kind: str = "oxfun"
    ws_url: str = "wss://api.ox.fun/v2/websocket"
    rest_url: str = "https://api.ox.fun"
    # Markets to watch for marks/positions; empty = every market the account has orders or
    # positions in. Cancel scopes may still name any market.
    markets: tuple[str, ...] = ()
    equity_currency: str = "OX"  # equity is computed in OX (see README, OX.FUN equity)
    # Dead connections: a text ping every ping_interval_s; no pong (or any frame) within
    # pong_timeout_s declares the socket dead and reconnects: a silent connection is gone
    # within ping_interval_s + pong_timeout_s (default 7.5 s), the feed alarm follows
    # disconnect_alarm_after_s later (default 12.5 s after the last frame at worst).
    ping_interval_s: float = 2.5
    pong_timeout_s: float = 5.0
    disconnect_alarm_after_s: float = 5.0
    request_timeout_s: float = 5.0
    poll_interval_s: float = 5.0  # REST re-poll of balances/positions/orders for equity and drift
    # Venue clock: measured from the login/subscribe replies' timestamps, re-measured every
    # clock_sync_interval_s; a skew above clock_skew_alarm_s raises the clock_skew alarm.
    clock_sync_interval_s: float = 60.0
    clock_skew_alarm_s: float = 10.0
    backoff: BackoffConfig = field(default_factory=BackoffConfig)


@dataclass(frozen=True, slots=True)
class VertexConfig:
    name: str
    private_key: SecretRef
    kind: str = "nado"  # "nado" | "vertex": the flavour (EIP-712 domain name, endpoints)
    gateway_ws_url: str = "wss://gateway.prod.nado.xyz/v1/ws"
    subscribe_ws_url: str = "wss://gateway.prod.nado.xyz/v1/subscribe"
    gateway_rest_url: str = "https://gateway.prod.nado.xyz/v1"
    trigger_url: str = "https://trigger.prod.nado.xyz/v1"
    chain_id: int = 57073
    endpoint_address: str = "0x05ec92D78ED421f3D3Ada77FFdE167106565974E"
    # Check chain id and endpoint against the venue's `contracts` query at start-up.
    verify_contracts: bool = True
    # The wallet that owns the subaccount; None = the private key's own address. Set it
    # when the key is a linked signer ("1-click trading").
    wallet_address: str | None = None
    subaccount_name: str = "default"
    # The wallet owner's key, when private_key is a linked signer: stream authentication
    # must be signed by the wallet itself (the docs), so the daemon signs it with this key.
    # Without it, a refused stream authentication is alarmed and open orders are polled
    # every open_orders_poll_s instead of streamed (order_update needs authentication).
    owner_private_key: SecretRef | None = None
    open_orders_poll_s: float = 1.0
    # Order-entry lock (needs owner_private_key): the owner replaces the linked signer with
    # zero; re-verified this often while locked (the linked_signer query weighs 5 IP weight).
    lock_verify_interval_s: float = 10.0
    # The archive (indexer) answers linked_signer_rate_limit: link_signer requests left of the
    # 50 per 7 days. Unreachable = not checked (the venue's 2030 still says so).
    archive_url: str = "https://archive.prod.nado.xyz/v1"
    products: tuple[int, ...] = ()
    recv_window_s: float = 30.0  # cancel nonces carry recv_time = now + this, in (0, 100]
    equity_poll_interval_s: float = 1.0
    orders_poll_interval_s: float = 5.0  # open-orders drift poll (every product) while connected
    products_refresh_interval_s: float = 300.0  # the venue's product list is re-read this often
    # Protocol pings (the venue wants one at least every 30 s); a pong missing for
    # pong_timeout_s declares the socket dead (see OxfunConfig for the arithmetic).
    ping_interval_s: float = 2.5
    pong_timeout_s: float = 5.0
    disconnect_alarm_after_s: float = 5.0
    request_timeout_s: float = 5.0
    # Venue clock from GET /time (and the subscription socket's time reply), re-measured
    # every clock_sync_interval_s and on any 2011/2012; alarm above clock_skew_alarm_s.
    clock_sync_interval_s: float = 60.0
    clock_skew_alarm_s: float = 10.0
    # Weight budget of the wallet (600/min, 100/10 s). reserve: kept for cancels.
    budget_reserve: int = 50
    backoff: BackoffConfig = field(default_factory=BackoffConfig)



HYPERLIQUID_MAINNET_REST = "https://api.hyperliquid.xyz"
HYPERLIQUID_MAINNET_WS = "wss://api.hyperliquid.xyz/ws"


@dataclass(frozen=True, slots=True)
class HyperliquidConfig:
    """One Hyperliquid account (``kind: hyperliquid``); see docs/venues/hyperliquid.md."""

    name: str
    # The kill switch's OWN agent key (never the strategy's: nonces are per signer).
    private_key: SecretRef
    kind: str = "hyperliquid"
    # mainnet | testnet: selects the L1 `source` ("a"/"b") and hyperliquidChain. Explicit,
    # never derived from the URL (the official SDK's pitfall, venue doc §0.3).
    network: str = "mainnet"
    # The account (master or sub) the agent trades for; None = the key's own address.
    account_address: str | None = None
    rest_url: str = HYPERLIQUID_MAINNET_REST
    ws_url: str = HYPERLIQUID_MAINNET_WS
    coins: tuple[str, ...] = ()  # products watched (coin names); empty = all
    # Signed actions as WS posts on the open socket (same body as POST /exchange); REST when
    # the socket is down.
    post_over_ws: bool = True
    cancel_batch_size: int = 39  # up to 39 keeps the IP weight of one /exchange at 1
    # The venue's per-IP REST weight per minute; lower it when other processes share the IP.
    ip_weight_per_min: int = 1200
    # Application pings (the venue closes a socket idle for 60 s); a socket with no pong
    # within pong_timeout_s of a ping is dead (see OxfunConfig for the arithmetic: gone
    # within 7.5 s by default, alarmed disconnect_alarm_after_s later).
    ping_interval_s: float = 2.5
    pong_timeout_s: float = 5.0
    disconnect_alarm_after_s: float = 5.0
    request_timeout_s: float = 5.0
    poll_interval_s: float = 10.0  # drift poll over POST /info: 44 IP weight each (of 1200/min)
    # Dead-man's switch (scheduleCancel): armed at now + dms_after, refreshed every third of
    # it; 0 = off. The venue needs >= 5 s and $1M lifetime volume (else an alarm).
    dms_after_s: float = 60.0
    dms_clear_on_shutdown: bool = False
    # Order-entry lock (optional): the MASTER key approves a throwaway agent under the
    # strategy agent's name, which deregisters the strategy's key; reset --unlock re-approves it.
    master_key: SecretRef | None = None
    strategy_agent_name: str | None = None
    agent_cooldown_s: float = 5.0  # "User has pending agent removal": wait this long, retry (3 tries)
    backoff: BackoffConfig = field(default_factory=BackoffConfig)


VenueConfig = OxfunConfig | VertexConfig | HyperliquidConfig
