"""Nado order-entry lock: the owner replaces the subaccount's linked signer with zero.

The strategy trades through the linked signer ("1-click trading"); the daemon holds the
wallet owner's key. Locking sends an owner-signed ``link_signer`` with a zero signer (the
restore target is persisted first, see :mod:`.lock_state`), then confirms with the
``linked_signer`` query. From then on the strategy's signatures get 2028.

The venue's signature check on ``LinkSigner`` also accepts the current linked signer, and
the owner key may be held elsewhere too (the web app re-enabling 1-click trading), so the
lock is re-verified every ``lock_verify_interval_s`` while it is held. A non-zero signer
raises the ``lock_breached`` alarm, is re-locked at once, then with a doubling delay (each
link_signer costs one of the subaccount's 50 per 7 days, which a runaway strategy spends
too), and the venue's open orders are re-read so a tripped engine cancels what was placed
meanwhile. The budget comes from the archive's ``linked_signer_rate_limit`` when it answers.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

import structlog
import trio

from killswitch.clock import Clock
from killswitch.model import OrderEntryLockChanged, VenueDegraded
from killswitch.venues.base import OutcomeUnknown, VenueError, VenueRejected

from . import eip712, wire
from .lock_state import LockState, LockStore
from .signing import FastSigner

LOCK_BREACHED = "lock_breached"  # VenueDegraded condition: the engine alarms lock_breached:<venue>
LOCK_UNVERIFIED = "lock_unverified"  # the check itself keeps failing: a breach would go unseen
UNVERIFIED_AFTER = 3  # consecutive failed checks before that alarm
MAX_LINK_ATTEMPTS = 3  # per lock/unlock: a 2022 (tx_nonce moved) or an unknown outcome is retried
RELOCK_BACKOFF_MAX_S = 600.0
_WAIT_RE = re.compile(r"wait for (\d+) seconds")

Query = Callable[..., Awaitable[Any]]  # (qtype, **params) -> data; raises VenueError
Execute = Callable[[bytes], Awaitable[wire.GatewayResponse]]  # raises OutcomeUnknown
Archive = Callable[[dict], Awaitable[Any]]  # -> reply object, or None when the archive did not answer


class SignerLock:
    def __init__(self, *, venue: str, kind: str, sender: bytes, owner: FastSigner | None, domain: eip712.Domain,
                 store: LockStore, clock: Clock, verify_interval_s: float, query: Query, execute: Execute,
                 archive: Archive, before_link: Callable[[], Awaitable[None]]) -> None:
        self.venue = venue
        self._kind = kind
        self._sender = sender
        self._sender_hex = wire.hex0x(sender)
        self._owner = owner
        self._domain = domain
        self._store = store
        self._clock = clock
        self._interval_s = verify_interval_s
        self._query = query
        self._execute = execute
        self._archive = archive
        self._before_link = before_link  # waits for room in the wallet budget (weight 30)
        self._mutex = trio.Lock()
        self._breaches = 0
        self._next_relock_s = float("-inf")
        self._breach_alarmed = False
        self._verify_failures = 0
        # Was the held lock ever verified? False after a failed lock (the engine already
        # alarms lock_failed; the watch retries quietly), None after a restart (unknown).
        self._confirmed: bool | None = None
        self._log = structlog.get_logger("killswitch.venue.vertex.lock").bind(venue=venue)

    @property
    def held(self) -> bool:
        """A lock is wanted (verified or not yet): the daemon signs with the owner key."""
        return self._store.load() is not None

    # ------------------------------------------------------------------------------- lock

    def _require_owner(self) -> FastSigner:
        if self._owner is None:
            raise VenueRejected("order-entry lock needs owner_private_key (the wallet owner replaces the linked "
                                "signer)", code="lock_config", venue=self.venue)
        return self._owner

    async def lock(self, *, trip_id: int) -> str:
        self._require_owner()
        async with self._mutex:
            try:
                message = await self._lock_locked(trip_id)
            except VenueError as exc:
                if self.held:  # the watch retries it, no sooner than the venue allows
                    self._confirmed = False
                    self._defer(exc)
                raise
            self._confirmed = True
            return message

    async def _lock_locked(self, trip_id: int) -> str:
        state = self._store.load()
        current = await self._linked_signer()
        if state is not None and current == wire.ZERO_ADDRESS:
            return f"already locked: subaccount {self._sender_hex} has no linked signer " \
                   f"(restores {state.strategy_signer or 'unknown'} on unlock)"
        note = ""
        if state is None:
            if current == wire.ZERO_ADDRESS:
                raise VenueRejected(f"subaccount {self._sender_hex} has no linked signer: nothing to lock (a strategy "
                                    f"signing with the owner's key cannot be locked out)", code="lock_signer",
                                    venue=self.venue)
            state = LockState(current, trip_id, self._clock.wall_ms())
            try:
                self._store.save(state)  # before the revoke: a crash after it still knows what to restore
            except Exception as exc:  # fail closed: lock anyway, say the restore target is not on disk
                self._log.error("venue_lock_state_not_saved", error=f"{type(exc).__name__}: {exc}")
                note = f"; WARNING: lock state not saved ({type(exc).__name__}), unlock needs this process"
        elif current != state.strategy_signer:
            note = f"; the linked signer was {current}, not the saved {state.strategy_signer} (kept for unlock)"
        left = await self._link(wire.ZERO_ADDRESS)
        return f"linked signer {current} of {self._sender_hex} replaced by zero (owner-signed link_signer, " \
               f"verified){left}{note}"

    async def unlock(self, *, operator: str) -> str:
        self._require_owner()
        async with self._mutex:
            state = self._store.load()
            if state is None:
                return "not locked"
            if state.strategy_signer is None:
                raise VenueRejected(f"lock state unreadable ({state.unreadable}): the strategy's signer is unknown; "
                                    f"link it with the owner wallet, then delete the file", code="lock_state",
                                    venue=self.venue)
            current = await self._linked_signer()
            left = ""
            if current != state.strategy_signer:
                left = await self._link(state.strategy_signer)
            self._store.clear()
            self._breaches = 0
            self._next_relock_s = float("-inf")
        return f"linked signer {state.strategy_signer} of {self._sender_hex} restored by {operator}{left}"

    async def _linked_signer(self) -> str:
        try:
            return wire.parse_linked_signer(await self._query("linked_signer", subaccount=self._sender_hex))
        except wire.WireError as exc:
            raise VenueRejected(f"linked_signer reply malformed: {exc}", venue=self.venue) from None

    async def _budget(self) -> wire.LinkSignerBudget | None:
        if self._kind != "nado":
            return None  # the weekly cap is Nado's
        reply = await self._archive({"linked_signer_rate_limit": {"subaccount": self._sender_hex}})
        if reply is None:
            return None
        try:
            return wire.parse_link_signer_rate_limit(reply)
        except wire.WireError as exc:
            self._log.warning("venue_link_budget_malformed", error=str(exc))
            return None

    async def _link(self, target: str) -> str:
        """Owner-signed link_signer to ``target`` (zero = revoke), verified by query; returns
        a note on the weekly budget left. Raises VenueRejected (the code says why)."""
        owner = self._require_owner()
        budget = await self._budget()
        if budget is not None and budget.remaining <= 0:
            raise VenueRejected(f"the subaccount's weekly link_signer budget is used up ({budget.total} per 7 days): "
                                f"wait for {budget.wait_time_s} seconds", code=str(wire.LINK_SIGNER_LIMIT),
                                venue=self.venue)
        signer32 = eip712.address_bytes(target) + b"\0" * 12
        last = ""
        for _ in range(MAX_LINK_ATTEMPTS):
            try:
                tx_nonce = wire.parse_tx_nonce(await self._query("nonces", address=owner.address.lower()))
            except wire.WireError as exc:
                raise VenueRejected(f"nonces reply malformed: {exc}", venue=self.venue) from None
            digest = self._domain.digest(eip712.hash_link_signer(self._sender, signer32, tx_nonce))
            body = wire.encode_link_signer(self._sender, signer32, tx_nonce, owner.sign_digest(digest))
            await self._before_link()
            try:
                resp = await self._execute(body)
            except OutcomeUnknown as exc:  # it may have applied: the query says
                last = str(exc)
                if await self._linked_signer() == target:
                    break
                continue
            if resp.ok:
                break
            last = f"{resp.error_code} {resp.error}"
            if resp.error_code == wire.INVALID_NONCE:  # the strategy moved tx_nonce: read it again
                self._log.warning("venue_link_signer_nonce", error=resp.error)
                continue
            raise VenueRejected(f"link_signer refused: {last}", code=str(resp.error_code or ""), venue=self.venue)
        else:
            raise VenueRejected(f"link_signer not accepted after {MAX_LINK_ATTEMPTS} attempts: {last}",
                                code="link_retries", venue=self.venue)
        now = await self._linked_signer()
        if now != target:
            raise VenueRejected(f"link_signer not confirmed: the linked signer is {now}, not {target}",
                                code="lock_verify", venue=self.venue)
        return "" if budget is None else f"; {max(0, budget.remaining - 1)} of {budget.total} link_signer left " \
                                         f"this week"

    # ------------------------------------------------------------------------------ watch

    async def watch(self, send: trio.MemorySendChannel, on_relocked: Callable[[], Awaitable[None]]) -> None:
        """While a lock is held: confirm the signer is still zero; re-lock and alarm if not.
        The first check runs at once (a lock held across a restart is reported to the engine,
        whose lock table starts empty). Never raises: a failed check is logged and retried."""
        first = True
        while True:
            if not first:
                await trio.sleep(self._interval_s)
            first = False
            if not self.held or self._owner is None or self._mutex.locked():
                continue  # a lock or unlock in progress verifies itself
            try:
                await self._check(send, on_relocked)
            except Exception as exc:  # never ends the session: logged, and alarmed when it lasts
                self._verify_failures += 1
                self._log.warning("venue_lock_verify_failed", error=f"{type(exc).__name__}: {exc}",
                                  failures=self._verify_failures)
                if self._verify_failures == UNVERIFIED_AFTER:
                    await send.send(VenueDegraded(
                        self.venue, LOCK_UNVERIFIED, f"order-entry lock not verified in {UNVERIFIED_AFTER} checks in a "
                                                     f"row ({type(exc).__name__}: {exc}); a re-linked signer would go "
                                                     f"unseen", active=True, ts_recv_s=self._clock.monotonic_s()))
                continue
            if self._verify_failures >= UNVERIFIED_AFTER:
                await send.send(VenueDegraded(self.venue, LOCK_UNVERIFIED, active=False,
                                              ts_recv_s=self._clock.monotonic_s()))
            self._verify_failures = 0

    async def _check(self, send, on_relocked) -> None:
        if await self._linked_signer() != wire.ZERO_ADDRESS:
            await self._on_breach(send, on_relocked)
            return
        if self._confirmed is None:
            state = self._store.load()
            await send.send(OrderEntryLockChanged(
                self.venue, True, True, f"lock held across a restart: subaccount {self._sender_hex} has no linked "
                                        f"signer (restores {state.strategy_signer if state else 'unknown'})",
                state.trip_id if state else None, "", self._clock.monotonic_s()))
        self._confirmed = True

    async def _on_breach(self, send, on_relocked) -> None:
        async with self._mutex:  # a lock or unlock that finished meanwhile is not a breach
            if not self.held:
                return
            current = await self._linked_signer()
            if current == wire.ZERO_ADDRESS:
                self._confirmed = True
                return
            relocked = await self._relock(current, send)
        if relocked is not None:
            await send.send(OrderEntryLockChanged(self.venue, True, True, f"re-locked: {relocked}",
                                                  self._trip_id(), "", self._clock.monotonic_s()))
            try:
                await on_relocked()  # the venue's open orders: a tripped engine cancels what was placed
            except VenueError as exc:
                self._log.warning("venue_lock_snapshot_failed", error=str(exc))

    def _trip_id(self) -> int | None:
        state = self._store.load()
        return state.trip_id if state else None

    async def _relock(self, current: str, send) -> str | None:
        now_s = self._clock.monotonic_s()
        # A lock that never took (its failure is alarmed as lock_failed) is retried quietly.
        breached = self._confirmed is not False
        what = f"order-entry lock breached: the subaccount's linked signer is {current} again"
        if now_s < self._next_relock_s:
            if breached:
                await self._alarm(send, f"{what}; next re-lock in {self._next_relock_s - now_s:.0f} s")
            return None
        self._breaches += 1
        if breached:
            self._log.critical("venue_lock_breached", signer=current, breaches=self._breaches)
            await self._alarm(send, f"{what}; re-locking (breach {self._breaches})")
        try:
            message = await self._lock_locked(self._trip_id() or 0)
        except VenueError as exc:
            delay_s = self._defer(exc)
            self._log.error("venue_relock_failed", error=str(exc), retry_in_s=delay_s)
            if breached:
                await self._alarm(send, f"{what}; re-lock failed: {exc}; next attempt in {delay_s:.0f} s")
            return None
        self._confirmed = True
        self._next_relock_s = self._clock.monotonic_s() + self._backoff_s()
        if breached:
            await self._alarm(send, f"{what} (breach {self._breaches}); re-locked: {message}")
        return message

    def _defer(self, exc: VenueError) -> float:
        """No link_signer before the venue's "wait for N seconds" (2030), else the backoff."""
        m = _WAIT_RE.search(str(exc))
        delay_s = float(m.group(1)) if m else self._backoff_s()
        self._next_relock_s = self._clock.monotonic_s() + delay_s
        return delay_s

    def _backoff_s(self) -> float:
        return min(RELOCK_BACKOFF_MAX_S, self._interval_s * 2 ** max(0, self._breaches - 1))

    async def _alarm(self, send, message: str) -> None:
        self._breach_alarmed = True
        await send.send(VenueDegraded(self.venue, LOCK_BREACHED, message, active=True,
                                      ts_recv_s=self._clock.monotonic_s()))

    async def clear_alarm(self, send: trio.MemorySendChannel | None) -> None:
        if self._breach_alarmed and send is not None:
            self._breach_alarmed = False
            await send.send(VenueDegraded(self.venue, LOCK_BREACHED, active=False,
                                          ts_recv_s=self._clock.monotonic_s()))
