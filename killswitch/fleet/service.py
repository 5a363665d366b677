"""The daemon side of the fleet: a trio task between the bus thread and the engine channel.

A fleet trip enters the engine exactly like a control-socket trip (a ``TripCommand`` on the
one engine channel), so the latch, cancel and sweep path is the existing one. Nothing here is
on that path: the engine tells this service about a trip only after the first cancel is on
the wire (``TripNotice``), and every publish is a non-blocking hand-off to the bus thread.

What it does:

- ``ks.<fleet>.trip`` or the latch bucket's ``trip`` key newer than its ``reset`` key: trip
  locally once per fleet trip id (audited ``fleet_trip``: id, operator, origin), then ack on
  the trip's reply subject: ``tripped`` (with trip -> first cancel) and ``flat``.
- ``ks.<fleet>.reset`` (operators only, enforced by the server): reset locally, audited
  ``fleet_reset``. A reset read back from the bucket (this instance was away) re-arms it only
  when every local trip came from the fleet: a local rule's trip stays until reset by hand.
- a local rule with ``fleet: true`` trips: publish a fleet trip (core subject + bucket).
- bus loss: the :class:`~killswitch.fleet.policy.BusWatch` decides alarm / trip.
- status on an interval (core subject + status bucket, which has a TTL).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass

import structlog
import trio

from killswitch.engine.loop import FlatNotice, TripNotice
from killswitch.fleet.bus import BusDown, BusError, BusEvent, BusUp, LatchRead, NatsBus, Received
from killswitch.fleet.config import FleetConfig
from killswitch.fleet.messages import Decoder, FleetReset, FleetTrip, InstanceStatus, TripAck, encode
from killswitch.fleet.policy import BusWatch, Do
from killswitch.fleet.subjects import LATCH_TRIP_KEY, Subjects
from killswitch.model import ResetCommand, TripCommand
from killswitch.secrets import SecretError

log = structlog.get_logger("killswitch.fleet")

INBOX_SIZE = 1024  # bus -> trio events; a full inbox drops (the latch read repairs what matters)
REMEMBER_IDS = 256  # fleet trip / reset ids already applied (bounded)
POLICY_TICK_S = 0.1
STARTUP_LATCH_WAIT_S = 2.0  # how long start-up waits for the first latch read before venues connect
BUS_ALARM = "fleet_bus"
LATCH_ALARM = "fleet_latch"
FAULT_ALARM = "fleet_fault"


def fleet_tag(fleet_trip_id: str) -> str:
    """Marks a local trip's reason as coming from this fleet trip (survives in the local latch)."""
    return f"[fleet {fleet_trip_id}]"


def fleet_id_in(source: str, reason: str) -> str | None:
    """The fleet trip id a local trip came from (see :func:`fleet_tag`), or None."""
    if source != "fleet" or "[fleet " not in reason:
        return None
    return reason.rsplit("[fleet ", 1)[1].split("]", 1)[0] or None


def local_fleet_ids(latch) -> set[str]:
    return {fid for t in latch.trips if (fid := fleet_id_in(t.source, t.reason)) is not None}


@dataclass(slots=True)
class PendingAck:
    fleet_trip_id: str
    reply: str
    started_s: float
    local_trip_id: int | None = None
    tripped_sent: bool = False


@dataclass(slots=True)
class FleetCounters:
    inbox_dropped: int = 0
    trips_applied: int = 0
    trips_published: int = 0
    resets_applied: int = 0
    acks_sent: int = 0
    status_sent: int = 0
    bus_errors: int = 0


class _Remembered:
    def __init__(self, size: int = REMEMBER_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, key: str) -> bool:
        """True when new."""
        if key in self._ids:
            return False
        self._ids[key] = None
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, key: str) -> bool:
        return key in self._ids


class FleetService:
    def __init__(self, daemon, cfg: FleetConfig) -> None:
        self.daemon = daemon
        self.cfg = cfg
        self.subjects = Subjects(cfg.name)
        self.decoder = Decoder()
        self.counters = FleetCounters()
        self.watch = BusWatch(cfg.on_bus_loss, trio.current_time())
        self.applied_trips = _Remembered()
        self.applied_resets = _Remembered()
        self.pending: dict[str, PendingAck] = {}
        self.bus: NatsBus | None = None
        self.latch_seen = trio.Event()
        self.server = ""
        self._status_poke = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._outstanding: FleetTrip | None = None  # originated here, not yet seen in the latch
        self._send, self._receive = trio.open_memory_channel(INBOX_SIZE)

    @property
    def fleet_rules(self) -> frozenset[str]:
        return frozenset(r.name for r in self.daemon.config.rules if getattr(r, "fleet", False))

    @property
    def engine(self):
        return self.daemon.engine

    # ------------------------------------------------------------------ bus -> trio
    def _on_bus_event(self, ev: BusEvent) -> None:
        """Runs on the bus thread: hand over to trio, never wait."""
        try:
            self._token.run_sync_soon(self._deliver, ev)
        except trio.RunFinishedError:
            pass

    def _deliver(self, ev: BusEvent) -> None:
        try:
            self._send.send_nowait(ev)
        except trio.WouldBlock:
            self.counters.inbox_dropped += 1
            log.error("fleet_inbox_full", dropped=self.counters.inbox_dropped, event=type(ev).__name__)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    # ------------------------------------------------------------------ run
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        try:
            settings = self.cfg.bus_settings(self.daemon.environ)
        except SecretError as exc:
            # Fail loud, keep guarding: the daemon's own rules and latch do not need the bus.
            self.engine.raise_alarm(BUS_ALARM, f"fleet credentials: {exc}")
            task_status.started(self)
            await trio.sleep_forever()
        self.daemon.redactor.add(s.reveal() for s in (settings.password, settings.token) if s is not None)
        self.bus = NatsBus(
            settings,
            self.subjects,
            subscribe=(self.subjects.trip, self.subjects.reset),
            on_event=self._on_bus_event,
            bucket_replicas=self.cfg.latch_replicas,
        )
        self.engine.listeners.append(self._on_engine_notice)
        self.daemon.audit.record(
            "fleet_start",
            fleet=self.cfg.name,
            instance=self.cfg.instance,
            servers=list(self.cfg.servers),
            on_bus_loss=self.cfg.on_bus_loss.action,
            fleet_rules=sorted(self.fleet_rules),
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await trio.to_thread.run_sync(self.bus.start)
                nursery.start_soon(self._consume)
                nursery.start_soon(self._policy_ticker)
                nursery.start_soon(self._status_loop)
                # Come up TRIPPED if the fleet is: the first latch read, bounded, before venues
                # connect. A stop request ends the wait (the daemon then connects nothing).
                with trio.move_on_after(STARTUP_LATCH_WAIT_S) as wait_scope:
                    nursery.start_soon(self._end_wait_on_stop, wait_scope)
                    await self.latch_seen.wait()
                if not self.latch_seen.is_set() and not self.daemon.stopping_requested:
                    log.warning("fleet_latch_unknown_at_start", waited_s=STARTUP_LATCH_WAIT_S)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                if self.bus is not None:
                    await trio.to_thread.run_sync(self.bus.stop)

    async def _end_wait_on_stop(self, scope: trio.CancelScope) -> None:
        await self.daemon.wait_stop_requested()
        scope.cancel()

    async def _consume(self) -> None:
        async for ev in self._receive:
            self._guarded(f"handling {type(ev).__name__}", lambda ev=ev: self._handle(ev))

    def _handle(self, ev: BusEvent) -> None:
        now = trio.current_time()
        if isinstance(ev, Received):
            if ev.subject == self.subjects.trip:
                msg = self.decoder.decode(ev.data, subject=ev.subject, expect=FleetTrip)
                if msg is not None:
                    self._apply_trip(msg, via="bus", reply=ev.reply)
            elif ev.subject == self.subjects.reset:
                msg = self.decoder.decode(ev.data, subject=ev.subject, expect=FleetReset)
                if msg is not None:
                    self._apply_reset(msg, via="bus")
        elif isinstance(ev, LatchRead):
            self.engine.clear_alarm(LATCH_ALARM)
            self._reconcile(ev)
            self.latch_seen.set()
        elif isinstance(ev, BusUp):
            self.server = ev.server
            log.info("fleet_bus_up", server=ev.server)
            self._act(self.watch.on_connected(now), now)
        elif isinstance(ev, BusDown):
            log.warning("fleet_bus_down", reason=ev.reason)
            self._act(self.watch.on_disconnected(now), now)
        elif isinstance(ev, BusError):
            self.counters.bus_errors += 1
            log.warning("fleet_bus_error", what=ev.what, error=ev.error)
            if ev.what == "latch read":  # connected but blind to the fleet latch: loud
                self.engine.raise_alarm(LATCH_ALARM, f"fleet latch unreadable: {ev.error}"[:300])

    # ------------------------------------------------------------------ trips
    def _apply_trip(self, t: FleetTrip, *, via: str, reply: str = "") -> None:
        if not self.applied_trips.add(t.fleet_trip_id):
            return
        if t.fleet_trip_id in local_fleet_ids(self.engine.latch):
            return  # latched on it already (restart with the state dir intact): on_start sweeps
        self.counters.trips_applied += 1
        # Acks go to the trip's ack subject only: a reply subject pointing elsewhere is not obeyed.
        ack_subject = self.subjects.ack(t.fleet_trip_id, self.cfg.instance)
        self.pending[t.fleet_trip_id] = PendingAck(t.fleet_trip_id, ack_subject, trio.current_time())
        if reply and reply != self.subjects.acks_of_trip(t.fleet_trip_id):
            log.warning("fleet_trip_reply_ignored", reply=reply[:128], ack_subject=ack_subject)
        # The command first: the engine runs it at its next turn, after this record and log line
        # (so the audit still reads fleet_trip, then trip), but neither costs the cancel any time.
        self._to_engine(
            TripCommand(
                reason=f"{t.reason} {fleet_tag(t.fleet_trip_id)} from {t.origin}",
                source="fleet",
                operator=t.operator,
            )
        )
        self.daemon.audit.record(
            "fleet_trip",
            fleet_trip_id=t.fleet_trip_id,
            operator=t.operator,
            origin=t.origin,
            reason=t.reason,
            via=via,
            ts_origin_ms=t.ts_wall_ms,
        )
        log.critical(
            "fleet_trip", fleet_trip_id=t.fleet_trip_id, operator=t.operator, origin=t.origin, via=via
        )

    def _to_engine(self, cmd: object) -> None:
        try:
            self.daemon.send.send_nowait(cmd)
        except trio.WouldBlock:  # the engine channel is full: wait for room on a task of its own
            self._nursery.start_soon(self.daemon.send.send, cmd)

    def _on_engine_notice(self, notice: object) -> None:
        """Engine task, after the cancels are on the wire: publish, never wait."""
        if isinstance(notice, TripNotice):
            fid = fleet_id_in(notice.source, notice.reason)
            if fid is not None and fid in self.pending:
                p = self.pending[fid]
                p.local_trip_id = notice.trip_id
                p.tripped_sent = True
                self._ack(p, "tripped", notice.venues, notice.trip_to_first_cancel_ms, None)
            elif notice.source == "rule" and notice.rule in self.fleet_rules:  # as of the last reload
                self._originate(notice)
            self._status_poke.set()
        elif isinstance(notice, FlatNotice) and notice.all_flat:
            for fid, p in list(self.pending.items()):
                if p.tripped_sent:
                    started = self.engine.trip_started_s.get(p.local_trip_id)
                    to_flat = None if started is None else round((trio.current_time() - started) * 1000, 3)
                    venues = tuple(v for v in self.engine.progress)
                    self._ack(p, "flat", venues, None, to_flat)
                    del self.pending[fid]

    def _ack(self, p: PendingAck, stage: str, venues, first_ms, flat_ms) -> None:
        if self.bus is None:
            return
        ack = TripAck(
            p.fleet_trip_id,
            self.cfg.instance,
            stage,
            p.local_trip_id or 0,
            tuple(venues)[:256],
            first_ms,
            flat_ms,
            self.daemon.clock.wall_ms(),
        )
        self.bus.publish(p.reply, encode(ack))
        self.counters.acks_sent += 1

    def _originate(self, notice: TripNotice) -> None:
        fid = uuid.uuid4().hex
        self.applied_trips.add(fid)
        t = FleetTrip(
            fid,
            f"rule {notice.rule}: {notice.reason}"[:500],
            f"rule:{notice.rule}"[:128],
            self.cfg.instance,
            self.daemon.clock.wall_ms(),
        )
        self._outstanding = t  # until the latch shows it (a bus that is down gets it on return)
        self._publish_trip(t)
        self.counters.trips_published += 1
        self.daemon.audit.record(
            "fleet_trip_published",
            fleet_trip_id=fid,
            rule=notice.rule,
            local_trip_id=notice.trip_id,
            bus_up=bool(self.bus and self.bus.connected),
        )
        log.critical("fleet_trip_published", fleet_trip_id=fid, rule=notice.rule)

    def _publish_trip(self, t: FleetTrip) -> None:
        if self.bus is None:
            return
        data = encode(t)
        self.bus.publish(
            self.subjects.trip, data, reply=self.subjects.acks_of_trip(t.fleet_trip_id)
        )  # fast path first
        self.bus.kv_put(self.subjects.latch_bucket, LATCH_TRIP_KEY, data)  # then the latch

    def _settle_outstanding(self, trip: FleetTrip | None, reset: FleetReset | None) -> None:
        """At-least-once for a trip this instance originated: re-sent at each latch read until
        the latch holds it, or a later reset superseded it."""
        t = self._outstanding
        if t is None:
            return
        if (trip is not None and trip.fleet_trip_id == t.fleet_trip_id) or (
            reset is not None and reset.ts_wall_ms > t.ts_wall_ms
        ):
            self._outstanding = None
            return
        log.warning("fleet_trip_republished", fleet_trip_id=t.fleet_trip_id)
        self._publish_trip(t)

    # ------------------------------------------------------------------ resets and the latch
    def _apply_reset(self, r: FleetReset, *, via: str) -> None:
        if not self.applied_resets.add(r.reset_id):
            return
        self.counters.resets_applied += 1
        self.pending.clear()
        self.daemon.audit.record(
            "fleet_reset",
            reset_id=r.reset_id,
            operator=r.operator,
            origin=r.origin,
            reason=r.reason,
            via=via,
            ts_origin_ms=r.ts_wall_ms,
        )
        log.warning("fleet_reset", reset_id=r.reset_id, operator=r.operator, origin=r.origin, via=via)
        self._to_engine(
            ResetCommand(operator=r.operator, reason=f"{r.reason} [fleet reset {r.reset_id}]", source="fleet")
        )
        self._status_poke.set()

    def _reconcile(self, read: LatchRead) -> None:
        trip = reset = None
        if read.trip is not None:
            trip = self.decoder.decode(read.trip.data, subject="kv.latch.trip", expect=FleetTrip)
        if read.reset is not None:
            reset = self.decoder.decode(read.reset.data, subject="kv.latch.reset", expect=FleetReset)
        if read.trip is not None and trip is None:
            # A trip entry nobody can read is still a trip (fail closed), named by its revision.
            trip = FleetTrip(
                f"rev{read.trip.revision}", "fleet latch trip entry unreadable (fail closed)", "?", "latch", 0
            )
        self._settle_outstanding(trip, reset)
        trip_rev = read.trip.revision if trip is not None else 0
        reset_rev = read.reset.revision if reset is not None else 0
        if trip is not None and trip_rev > reset_rev:
            self._apply_trip(trip, via="latch")
        elif reset is not None and reset_rev > trip_rev and reset.reset_id not in self.applied_resets:
            latch = self.engine.latch
            if (
                latch.tripped
                and latch.trips
                and all(t.source == "fleet" for t in latch.trips)
                and all(t.ts_wall_ms <= reset.ts_wall_ms for t in latch.trips)
            ):
                self._apply_reset(reset, via="latch")
            else:
                self.applied_resets.add(reset.reset_id)

    # ------------------------------------------------------------------ bus loss
    def _act(self, actions: list[Do], now: float) -> None:
        for a in actions:
            if a is Do.ALARM:
                lost = round(self.watch.lost_for_s(now), 1)
                self.engine.raise_alarm(
                    BUS_ALARM, f"fleet bus lost for {lost}s (on_bus_loss: {self.cfg.on_bus_loss.action})"
                )
                self.daemon.audit.record("fleet_bus_lost", lost_s=lost, action=self.cfg.on_bus_loss.action)
            elif a is Do.TRIP:
                self._to_engine(
                    TripCommand(
                        reason=f"fleet bus lost for more than {self.cfg.on_bus_loss.after_s:g}s "
                        "(on_bus_loss: trip)",
                        source="fleet_bus_loss",
                        operator="on_bus_loss",
                    )
                )
            elif a is Do.CLEAR_ALARM:
                self.engine.clear_alarm(BUS_ALARM)
                self.daemon.audit.record("fleet_bus_restored", server=self.server)

    def _guarded(self, what: str, fn) -> None:
        """A fault in the fleet's machinery is an alarm, never the end of the daemon."""
        try:
            fn()
        except Exception as exc:
            self.counters.bus_errors += 1
            msg = f"fleet {what} failed: {type(exc).__name__}: {exc}"[:300]
            log.error("fleet_fault", what=what, error=msg)
            self.engine.raise_alarm(FAULT_ALARM, msg)

    async def _policy_ticker(self) -> None:
        while True:
            await trio.sleep(POLICY_TICK_S)
            self._guarded("bus-loss policy", self._policy_tick)

    def _policy_tick(self) -> None:
        now = trio.current_time()
        self._act(self.watch.on_tick(now), now)
        for fid, p in list(self.pending.items()):
            if now - p.started_s > self.cfg.ack_flat_timeout_s:
                del self.pending[fid]  # not flat in time: the CLI shows it as acked, not flat

    # ------------------------------------------------------------------ status
    def status_message(self) -> InstanceStatus:
        e = self.engine
        fid = next((f for t in reversed(e.latch.trips) if (f := fleet_id_in(t.source, t.reason))), None)
        venues = e.state.venues()
        up = sum(1 for v in venues if e.state.book(v).connected)
        return InstanceStatus(
            self.cfg.instance,
            e.latch.state.value,
            fid,
            up,
            len(venues),
            len(e.alarms),
            self.cfg.status_interval_s,
            self.daemon.clock.wall_ms(),
        )

    async def _status_loop(self) -> None:
        while True:
            with trio.move_on_after(self.cfg.status_interval_s):
                await self._status_poke.wait()
                await trio.sleep(0.02)  # let the engine apply what poked us
            self._status_poke = trio.Event()
            if self.bus is not None and self.bus.connected:
                self._guarded("status", self._publish_status)

    def _publish_status(self) -> None:
        data = encode(self.status_message())
        self.bus.publish(self.subjects.status(self.cfg.instance), data)
        self.bus.kv_put(self.subjects.status_bucket, self.cfg.instance, data)
        self.counters.status_sent += 1

    def metrics(self, prefix: str):
        """Prometheus families for killswitch.metrics (the fleet's own, next to the daemon's)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.counters
        yield GaugeMetricFamily(
            f"{prefix}_fleet_bus_up",
            "1 while connected to the fleet bus",
            value=1 if self.watch.state.value == "up" else 0,
        )
        bus = self.bus.counters if self.bus is not None else None
        for name, value, doc in (
            ("fleet_trips_applied", c.trips_applied, "Fleet trips that tripped this instance"),
            (
                "fleet_trips_published",
                c.trips_published,
                "Fleet trips this instance published (fleet: true rules)",
            ),
            ("fleet_resets_applied", c.resets_applied, "Fleet resets applied"),
            ("fleet_acks_sent", c.acks_sent, "Trip acknowledgements sent"),
            ("fleet_bad_messages", self.decoder.bad_total, "Fleet messages rejected by the strict decoder"),
            ("fleet_inbox_dropped", c.inbox_dropped, "Bus events dropped: the bus -> engine inbox was full"),
            (
                "fleet_outbox_dropped",
                bus.outbox_dropped if bus else 0,
                "Publishes dropped: the outbox was full",
            ),
            ("fleet_publish_errors", bus.publish_errors if bus else 0, "Publishes the bus refused or failed"),
            ("fleet_bus_disconnects", bus.disconnects if bus else 0, "Fleet bus connections lost"),
        ):
            yield CounterMetricFamily(f"{prefix}_{name}", doc, value=value)

    def status(self) -> dict:
        c = self.counters
        return {
            "fleet": self.cfg.name,
            "instance": self.cfg.instance,
            "bus": self.watch.state.value,
            "server": self.server,
            "bad_messages": dict(self.decoder.bad),
            "pending_acks": len(self.pending),
            "inbox_dropped": c.inbox_dropped,
            "trips_applied": c.trips_applied,
            "trips_published": c.trips_published,
            "resets_applied": c.resets_applied,
            "acks_sent": c.acks_sent,
            "outbox_dropped": self.bus.counters.outbox_dropped if self.bus else 0,
        }


async def fleet_service(daemon, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A daemon service (see killswitch.services): started before the venues connect."""
    svc = FleetService(daemon, daemon.config.fleet)
    daemon.fleet = svc
    await svc.run(task_status=task_status)
