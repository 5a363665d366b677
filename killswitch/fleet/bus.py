"""The bus shell: the official nats-py client on its own thread with its own asyncio loop.

Why a thread and not trio-asyncio: the daemon's trio thread runs the trip path, and nothing
of the bus may stand in its way. On a dedicated thread, nats-py's parsing, pings, reconnect
loop and JetStream requests never take a slice of the trio scheduler, and a stuck bus cannot
delay a cancel; the two sides meet only through two bounded, non-blocking hand-offs:

- trio -> bus: :meth:`NatsBus.publish` / :meth:`NatsBus.kv_put` call
  ``loop.call_soon_threadsafe`` (a few µs, never waits); the item lands in a bounded outbox
  drained by the bus loop. A full outbox drops and counts (the latch is reconciled from the
  key-value bucket anyway).
- bus -> trio: every event goes to ``on_event`` *on the bus thread*; the daemon's callback
  hands it to trio with ``TrioToken.run_sync_soon`` into a bounded memory channel.

The figures behind this choice are in docs/fleet.md (bench/fleet.py ``--bridge``).

Reconnects: nats-py reconnects by itself; the delay is ours (``reconnect_delay_s``: capped
exponential backoff with jitter). After every (re)connect, and every ``reconcile_interval_s``,
the latch keys are read back (:class:`LatchRead`) so a trip published while this instance
was away is never missed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import nats  # at import time (before the daemon runs): a stop never waits for this import
import structlog

from killswitch.fleet.messages import MAX_MESSAGE_BYTES
from killswitch.fleet.settings import BusSettings, connect_options, reconnect_delay_s
from killswitch.fleet.subjects import LATCH_RESET_KEY, LATCH_TRIP_KEY, Subjects

log = structlog.get_logger("killswitch.fleet.bus")

OUTBOX_SIZE = 1024
# nats-py's initial connect never gives up with unlimited attempts (and then ignores our
# backoff): it tries each server this many times, then our loop backs off and tries again.
INITIAL_TRIES_PER_SERVER = 1
ERROR_LOG_EVERY_S = 30.0
STOP_GRACE_S = 1.0  # longest the bus loop waits for its tasks to end on stop
STATUS_TTL_S = 600.0  # a status entry outlives a silent instance this long, then the bucket drops it


# ------------------------------------------------------------------------------ events (bus -> daemon)


@dataclass(frozen=True, slots=True)
class BusUp:
    server: str


@dataclass(frozen=True, slots=True)
class BusDown:
    reason: str


@dataclass(frozen=True, slots=True)
class Received:
    subject: str
    data: bytes
    reply: str = ""


@dataclass(frozen=True, slots=True)
class LatchEntry:
    revision: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LatchRead:
    """The latch keys as the bucket has them now (None: never written)."""

    trip: LatchEntry | None
    reset: LatchEntry | None


@dataclass(frozen=True, slots=True)
class BusError:
    what: str
    error: str


BusEvent = BusUp | BusDown | Received | LatchRead | BusError


@dataclass(slots=True)
class BusCounters:
    published: int = 0
    outbox_dropped: int = 0
    oversize_dropped: int = 0
    publish_errors: int = 0
    connects: int = 0
    disconnects: int = 0
    reconciles: int = 0
    reconcile_errors: int = 0


async def ensure_buckets(js, subjects: Subjects, replicas: int) -> None:
    """Create the two buckets when missing (a daemon without the right may only bind)."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError

    for bucket, history, ttl in (
        (subjects.latch_bucket, 16, None),
        (subjects.status_bucket, 1, STATUS_TTL_S),
    ):
        try:
            await js.key_value(bucket)
            continue
        except BucketNotFoundError:
            pass
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=history,
                ttl=ttl,
                replicas=replicas,
                storage=StorageType.FILE,
                max_value_size=MAX_MESSAGE_BYTES,
                # Reads go to the stream leader: a replica catching up after a partition must not
                # answer "armed" for a fleet that tripped meanwhile.
                direct=False,
            )
        )


async def read_latch(js, subjects: Subjects) -> LatchRead:
    from nats.js.errors import KeyNotFoundError

    kv = await js.key_value(subjects.latch_bucket)
    out = []
    for key in (LATCH_TRIP_KEY, LATCH_RESET_KEY):
        try:
            e = await kv.get(key)
            out.append(LatchEntry(e.revision, e.value or b""))
        except KeyNotFoundError:
            out.append(None)
    return LatchRead(out[0], out[1])


@dataclass(slots=True)
class _Out:
    subject: str
    data: bytes
    reply: str = ""
    kv: bool = False  # JetStream publish (a key-value put): waits for the server's ack, on the bus thread


class NatsBus:
    """One NATS connection on a dedicated thread. Every public method is thread-safe and non-blocking."""

    def __init__(
        self,
        settings: BusSettings,
        subjects: Subjects,
        *,
        subscribe: tuple[str, ...],
        on_event: Callable[[BusEvent], None],
        reconcile_interval_s: float = 2.0,
        bucket_replicas: int = 1,
        outbox_size: int = OUTBOX_SIZE,
    ) -> None:
        self.settings = settings
        self.subjects = subjects
        self.subscribe_to = subscribe
        self.on_event = on_event
        self.reconcile_interval_s = reconcile_interval_s
        self.bucket_replicas = bucket_replicas
        self.outbox_size = outbox_size
        self.counters = BusCounters()
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._outbox: asyncio.Queue | None = None
        self._kv_outbox: asyncio.Queue | None = None
        self._stop: asyncio.Event | None = None
        self._reconcile_wanted: asyncio.Event | None = None
        self._started = threading.Event()
        self._nc = None
        self._js = None

    # ------------------------------------------------------------------ thread-safe API
    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="killswitch-fleet-bus", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def stop(self, timeout_s: float = 3.0) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)

    def publish(self, subject: str, data: bytes, reply: str = "") -> None:
        self._enqueue(_Out(subject, data, reply))

    def kv_put(self, bucket: str, key: str, data: bytes) -> None:
        self._enqueue(_Out(self.subjects.kv_subject(bucket, key), data, kv=True))

    def reconcile_now(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._reconcile_wanted.set)
            except RuntimeError:
                pass

    def run_coro(self, fn: Callable[[Any, Any], Awaitable[Any]]) -> concurrent.futures.Future:
        """Run ``fn(nc, js)`` on the bus loop (tests, status reads); the caller bounds the wait."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(self._nc, self._js), self._loop)

    def _enqueue(self, item: _Out) -> None:
        if len(item.data) > MAX_MESSAGE_BYTES:
            self.counters.oversize_dropped += 1
            log.error("fleet_publish_oversize", subject=item.subject, size=len(item.data))
            return
        loop = self._loop
        if loop is None:
            self.counters.outbox_dropped += 1
            return
        try:
            loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:  # loop closed: the bus is stopping
            self.counters.outbox_dropped += 1

    def _put(self, item: _Out) -> None:
        try:
            # Key-value puts wait for the server's ack (up to request_timeout_s): a queue of their
            # own, so a slow put never holds up a trip ack or a status behind it.
            (self._kv_outbox if item.kv else self._outbox).put_nowait(item)
        except asyncio.QueueFull:
            self.counters.outbox_dropped += 1
            log.error("fleet_outbox_full", subject=item.subject, size=self.outbox_size)

    # ------------------------------------------------------------------ bus thread
    def _emit(self, ev: BusEvent) -> None:
        try:
            self.on_event(ev)
        except Exception as exc:  # the receiver's problem must not kill the bus loop
            log.error(
                "fleet_event_handler_failed", event=type(ev).__name__, error=f"{type(exc).__name__}: {exc}"
            )

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:
            log.error("fleet_bus_crashed", error=f"{type(exc).__name__}: {exc}")
            self._emit(BusDown(f"bus thread crashed: {type(exc).__name__}"))
        finally:
            self._loop = None
            loop.close()

    async def _main(self) -> None:
        self._outbox = asyncio.Queue(self.outbox_size)
        self._kv_outbox = asyncio.Queue(self.outbox_size)
        self._stop = asyncio.Event()
        self._reconcile_wanted = asyncio.Event()
        self._started.set()
        tasks = [
            asyncio.ensure_future(self._connection()),
            asyncio.ensure_future(self._writer(self._outbox)),
            asyncio.ensure_future(self._writer(self._kv_outbox)),
            asyncio.ensure_future(self._reconciler()),
        ]
        await self._stop.wait()
        # nats-py swallows a cancellation in parts of its connect/close path, so one cancel() may
        # be absorbed and the task carry on: cancel again until every task has ended (bounded).
        pending = set(tasks)
        deadline = time.monotonic() + STOP_GRACE_S
        while pending and time.monotonic() < deadline:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.05)
        if pending:
            log.error("fleet_bus_stop_incomplete", tasks=len(pending))
        if self._nc is not None:
            try:
                await asyncio.wait_for(self._nc.close(), 1.0)
            except Exception:
                pass

    async def _connection(self) -> None:
        s = self.settings
        attempt = 0

        async def on_disconnected() -> None:
            if self.connected:
                self.connected = False
                self.counters.disconnects += 1
                self._emit(BusDown("disconnected"))

        async def on_reconnected() -> None:
            self._up()

        last_error = ["", 0.0]

        async def on_error(exc: Exception) -> None:
            # nats-py reports every failed attempt: the same error is logged at most every 30 s.
            text = f"{type(exc).__name__}: {exc}"[:300]
            now = time.monotonic()
            if text != last_error[0] or now - last_error[1] >= ERROR_LOG_EVERY_S:
                last_error[0], last_error[1] = text, now
                log.warning("fleet_bus_error", error=text)

        def pick(servers, info) -> tuple[None, float]:
            tries = min((sv.reconnects for sv in servers), default=0)
            return None, reconnect_delay_s(tries, s.reconnect_min_s, s.reconnect_max_s)

        while True:  # one connection per pass; a new one if nats-py ever closes it for good
            closed = asyncio.Event()

            async def on_closed(closed=closed) -> None:
                closed.set()

            while True:  # the initial connect (nats-py reconnects by itself once connected)
                try:
                    nc = await nats.connect(
                        **{**connect_options(s), "max_reconnect_attempts": INITIAL_TRIES_PER_SERVER},
                        disconnected_cb=on_disconnected,
                        reconnected_cb=on_reconnected,
                        error_cb=on_error,
                        closed_cb=on_closed,
                        reconnect_to_server_handler=pick,
                    )
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self._stop.is_set():  # a stop the client swallowed: end here
                        return
                    delay = reconnect_delay_s(attempt, s.reconnect_min_s, s.reconnect_max_s)
                    attempt += 1
                    log.warning(
                        "fleet_connect_failed",
                        error=f"{type(exc).__name__}: {exc}"[:300],
                        retry_in_s=round(delay, 3),
                        attempt=attempt,
                    )
                    await asyncio.sleep(delay)
            attempt = 0
            # Connected once: from now on nats-py reconnects for ever, with our backoff (pick).
            nc.options["max_reconnect_attempts"] = -1
            self._nc = nc
            if self._stop.is_set():  # connected as the stop came: _main closes it
                return
            self._js = nc.jetstream(timeout=s.request_timeout_s)
            for subject in self.subscribe_to:
                await nc.subscribe(
                    subject, cb=self._on_msg, pending_msgs_limit=1024, pending_bytes_limit=4 << 20
                )
            try:
                await ensure_buckets(self._js, self.subjects, self.bucket_replicas)
            except Exception as exc:
                self._emit(BusError("buckets", f"{type(exc).__name__}: {exc}"))
            self._up()
            await closed.wait()  # nats-py owns the connection until it gives up on it
            if self.connected:
                self.connected = False
                self.counters.disconnects += 1
                self._emit(BusDown("connection closed"))
            log.warning("fleet_bus_closed", error=str(getattr(nc, "last_error", ""))[:300])
            self._nc = None
            await asyncio.sleep(reconnect_delay_s(0, s.reconnect_min_s, s.reconnect_max_s))

    def _up(self) -> None:
        self.connected = True
        self.counters.connects += 1
        url = getattr(self._nc, "connected_url", None)
        self._emit(BusUp(url.netloc if url is not None else "?"))
        self._reconcile_wanted.set()

    async def _on_msg(self, msg) -> None:
        self._emit(Received(msg.subject, msg.data, msg.reply or ""))

    async def _writer(self, queue: asyncio.Queue) -> None:
        while True:
            item: _Out = await queue.get()
            nc = self._nc
            if nc is None or nc.is_closed:
                self.counters.publish_errors += 1
                continue
            try:
                if item.kv:
                    await self._js.publish(item.subject, item.data)
                else:
                    await nc.publish(item.subject, item.data, reply=item.reply)
                self.counters.published += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters.publish_errors += 1
                self._emit(BusError(f"publish {item.subject}", f"{type(exc).__name__}: {exc}"[:300]))

    async def _reconciler(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._reconcile_wanted.wait(), self.reconcile_interval_s)
            except asyncio.TimeoutError:
                pass
            self._reconcile_wanted.clear()
            if not self.connected or self._js is None:
                continue
            try:
                read = await asyncio.wait_for(
                    read_latch(self._js, self.subjects), self.settings.request_timeout_s
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters.reconcile_errors += 1
                self._emit(BusError("latch read", f"{type(exc).__name__}: {exc}"[:300]))
                continue
            self.counters.reconciles += 1
            self._emit(read)
