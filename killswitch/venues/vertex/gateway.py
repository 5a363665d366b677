"""Request/response over the v1 gateway socket: in-order replies matched by a FIFO.

The v1 socket answers strictly in request order and echoes no id, so a lost or late reply
would shift every later match. Any doubt (timeout, unexpected request_type, unparsable
reply) therefore kills the connection and fails everything pending as OutcomeUnknown:
never guess which request a reply belongs to.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import trio

from killswitch.venues.base import OutcomeUnknown

from killswitch.net import ws as wsmod
from .wire import GatewayResponse, WireError, parse_response_bytes


class _Pending:
    __slots__ = ("event", "result", "error", "expect")

    def __init__(self, expect: str) -> None:
        self.event = trio.Event()
        self.result: GatewayResponse | None = None
        self.error: Exception | None = None
        self.expect = expect


class GatewayConn:
    def __init__(self, ep: wsmod.WsEndpoint, *, venue: str) -> None:
        self.ep = ep
        self.venue = venue
        self._pending: deque[_Pending] = deque()
        self._write_lock = trio.Lock()
        self.dead_reason: str | None = None

    @property
    def alive(self) -> bool:
        return self.dead_reason is None and not self.ep.closed

    def _fail_all(self, reason: str) -> None:
        if self.dead_reason is None:
            self.dead_reason = reason
        while self._pending:
            p = self._pending.popleft()
            if not p.event.is_set():
                p.error = OutcomeUnknown(f"gateway connection lost: {reason}", venue=self.venue)
                p.event.set()

    async def kill(self, reason: str) -> None:
        self._fail_all(reason)
        await self.ep.abort()

    async def request(
        self,
        body: bytes,
        *,
        expect_request_type: str,
        timeout_s: float,
        on_written: Callable[[], None] | None = None,
    ) -> GatewayResponse:
        if not self.alive:
            raise OutcomeUnknown(f"gateway connection down: {self.dead_reason}", venue=self.venue)
        p = _Pending(expect_request_type)
        lock = self._write_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # free: no scheduler round before the frame is on the wire
        try:
            self._pending.append(p)
            # Shielded from outside cancellation (a half-written frame would corrupt the
            # stream for everyone), bounded by its own deadline: one scope, not two.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout_s) as cs:
                try:
                    await self.ep.send_text(body)
                except wsmod.WsClosed as exc:
                    self._fail_all(str(exc))
                    raise OutcomeUnknown(f"send failed: {exc}", venue=self.venue) from None
            if cs.cancelled_caught:
                await self.kill("send timed out")
                raise OutcomeUnknown("send timed out", venue=self.venue)
        finally:
            lock.release()
        if on_written is not None:
            on_written()
        with trio.move_on_after(timeout_s):
            await p.event.wait()
        if not p.event.is_set():
            await self.kill("reply timed out")
            raise OutcomeUnknown(f"no reply within {timeout_s} s", venue=self.venue)
        if p.error is not None:
            raise p.error
        assert p.result is not None
        return p.result

    async def reader(self) -> None:
        """Match replies to requests until the socket ends; raises WsClosed at the end."""
        try:
            while True:
                raw = await self.ep.receive()
                if not self._pending:
                    await self.kill("reply with no request pending")
                    raise wsmod.WsClosed("unexpected gateway frame")
                p = self._pending.popleft()
                try:
                    resp = parse_response_bytes(raw)
                except WireError as exc:
                    p.error = OutcomeUnknown(f"unparsable reply: {exc}", venue=self.venue)
                    p.event.set()
                    await self.kill("unparsable reply")
                    raise wsmod.WsClosed("unparsable gateway reply") from None
                if resp.request_type and resp.request_type != p.expect and not resp.request_type.endswith("unknown"):
                    p.error = OutcomeUnknown(f"reply type {resp.request_type} for {p.expect}", venue=self.venue)
                    p.event.set()
                    await self.kill("reply out of order")
                    raise wsmod.WsClosed("gateway replies out of order")
                p.result = resp
                p.event.set()
        except wsmod.WsClosed as exc:
            self._fail_all(str(exc))
            raise
