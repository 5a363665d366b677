"""The operator's side of the fleet: ``killswitch trip|reset|status --fleet``.

A short-lived command, so plain ``asyncio.run`` with nats-py (no trio, no thread). It reads
the ``fleet:`` section of a config file: a daemon's own file, or an operator's file that has
only ``fleet:`` (with the operator's credentials; the server decides what they may do).

``trip --fleet``: the expected instances are those the status bucket has seen within
``silent_after``; the trip goes out on ``ks.<fleet>.trip`` with its ack subject as the reply
subject (core request/reply, many replies), then into the latch bucket (so instances that are
away, or start later, trip too). The command waits for every instance to be flat, or the
deadline, and prints one line per instance: flat / acked / missing.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from killswitch.config.reading import DEFAULT_MAX_CONFIG_BYTES, ConfigReadError, read_config_text
from killswitch.fleet.acks import AckBoard
from killswitch.fleet.bus import ensure_buckets, read_latch
from killswitch.fleet.config import FleetConfig, parse_fleet
from killswitch.fleet.messages import Decoder, FleetReset, FleetTrip, InstanceStatus, TripAck, encode
from killswitch.fleet.settings import connect_options
from killswitch.fleet.subjects import LATCH_RESET_KEY, LATCH_TRIP_KEY, Subjects
from killswitch.schema.nodes import ConfigError, Mark, YMap, parse_yaml
from killswitch.schema.reader import Ctx, MapReader

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # some instance missing or not flat by the deadline
EXIT_CONFIG = 2
EXIT_BUS = 3  # cannot reach the bus, or refused by it
REFUSAL_POLL_S = 0.05  # how often a latch write looks for the server's permissions refusal


class OperatorError(Exception):
    pass


def load_fleet_section(path: str | Path, max_bytes: int = DEFAULT_MAX_CONFIG_BYTES) -> FleetConfig:
    """The ``fleet:`` section of ``path`` alone (the other sections are not validated here).
    Read like every config file: bounded, regular files only."""
    from killswitch.config.loader import parse_secret_ref

    p = Path(path)
    display = str(path)
    try:
        text = read_config_text(p, max_bytes)
    except ConfigReadError as exc:
        raise OperatorError(f"cannot read {display}: {exc}") from None
    ctx = Ctx()
    root = parse_yaml(text, display, ctx.issues)
    if ctx.issues:
        raise ConfigError(ctx.issues)
    if not isinstance(root, YMap) or "fleet" not in root.entries:
        raise OperatorError(f"{display}: no fleet: section")
    top = MapReader(ctx, root, "", p.parent.resolve())
    f = top.sub("fleet")
    cfg = parse_fleet(f, parse_secret_ref) if f is not None else None
    if ctx.issues or cfg is None:
        raise ConfigError(ctx.issues or [ctx.error(Mark(display, 1, 1), "fleet", "invalid")])
    return cfg


def origin_of() -> str:
    return f"cli@{socket.gethostname()}"[:128]


def operator_of(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


@dataclass(frozen=True, slots=True)
class SeenInstance:
    status: InstanceStatus
    age_s: float
    silent: bool


class ServerErrors(list):
    """The server's asynchronous errors on one connection (a refused publish is one of these:
    NATS answers a denied publish with ``-ERR 'Permissions Violation ...'``, not a reply)."""

    def refused(self, subject: str) -> str | None:
        for e in self:  # nats-py lower-cases the server's text
            if "permissions violation" in e.lower() and subject.lower() in e.lower():
                return e
        return None


async def _connect(
    cfg: FleetConfig, environ: Mapping[str, str] | None, client_name: str
) -> tuple[Any, ServerErrors]:
    import nats

    s = cfg.bus_settings(environ, client_name=client_name)
    opts = connect_options(s)
    # One pass over the servers, bounded; a command reports and exits, it does not retry for ever.
    opts.update(allow_reconnect=False, max_reconnect_attempts=1)
    errors = ServerErrors()

    async def on_error(exc: Exception) -> None:
        errors.append(f"{type(exc).__name__}: {exc}"[:500])

    try:
        nc = await asyncio.wait_for(
            nats.connect(**opts, error_cb=on_error), s.connect_timeout_s * (2 * len(s.servers) + 1)
        )
    except Exception as exc:
        why = errors[-1] if errors else f"{type(exc).__name__}: {exc}"
        raise OperatorError(f"cannot connect to {', '.join(cfg.servers)}: {why}") from None
    return nc, errors


async def read_statuses(
    js, subjects: Subjects, silent_after_s: float, now_ms: int | None = None
) -> list[SeenInstance]:
    from nats.js.errors import BucketNotFoundError, NoKeysError

    try:
        kv = await js.key_value(subjects.status_bucket)
        keys = await kv.keys()
    except (BucketNotFoundError, NoKeysError):
        return []
    dec = Decoder()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    out = []
    for key in keys:
        try:
            e = await kv.get(key)
        except Exception:
            continue
        st = dec.decode(e.value or b"", subject=f"kv.status.{key}", expect=InstanceStatus)
        if st is None:
            continue
        age = max(0.0, (now_ms - st.ts_wall_ms) / 1000)
        out.append(SeenInstance(st, age, age > silent_after_s))
    return sorted(out, key=lambda s: s.status.instance)


async def _statuses_or_none(js, subjects: Subjects, silent_after_s: float, on_line) -> list[SeenInstance]:
    try:
        return await read_statuses(js, subjects, silent_after_s)
    except Exception as exc:  # e.g. a stream leader election in progress: go on without the list
        on_line(
            f"WARNING: instance list unavailable ({type(exc).__name__}: {exc}); listing only those that ack"
        )
        return []


async def _latch_put(
    js,
    errors: ServerErrors,
    subjects: Subjects,
    cfg: FleetConfig,
    key: str,
    data: bytes,
    deadline: float,
    on_line,
) -> bool:
    """Write one latch key, retrying (a stream leader may be being elected) until ``deadline``;
    a write the server refused (permissions) ends at once, not at the request timeout."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import ServiceUnavailableError

    subject = subjects.kv_subject(subjects.latch_bucket, key)
    delay = 0.1
    while True:
        try:
            await ensure_buckets(js, subjects, cfg.latch_replicas)
            put = asyncio.ensure_future(js.publish(subject, data))
            while not put.done():  # a denied publish gets no reply, only the server's -ERR
                await asyncio.wait({put}, timeout=REFUSAL_POLL_S)
                refused = errors.refused(subject)
                if refused is not None and not put.done():
                    put.cancel()
                    on_line(f"latch write refused by the server: {refused}")
                    return False
            put.result()
            return True
        except (NatsTimeout, NoRespondersError, ServiceUnavailableError, asyncio.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                on_line(f"latch write failed: {type(exc).__name__}: {exc}")
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        except Exception as exc:  # refused (permissions) or a bug: no retry
            on_line(f"latch write failed: {type(exc).__name__}: {exc}")
            return False


async def fleet_trip(
    cfg: FleetConfig,
    *,
    reason: str,
    operator: str,
    deadline_s: float,
    environ: Mapping[str, str] | None = None,
    on_line=print,
) -> tuple[int, AckBoard]:
    subjects = Subjects(cfg.name)
    nc, errors = await _connect(cfg, environ, f"killswitch-cli/{cfg.name}/trip")
    try:
        js = nc.jetstream(timeout=2.0)
        seen = await _statuses_or_none(js, subjects, cfg.silent_after_s, on_line)
        fid = uuid.uuid4().hex
        board = AckBoard(fid, frozenset(s.status.instance for s in seen if not s.silent))
        done = asyncio.Event()
        dec = Decoder()

        async def on_ack(msg) -> None:
            ack = dec.decode(msg.data, subject=msg.subject, expect=TripAck)
            if ack is None:
                return
            forged = board.forged
            if not board.add(ack, sender=Subjects.ack_sender(msg.subject)):
                if board.forged > forged:
                    on_line(f"WARNING: ignored an ack for {ack.instance[:64]!r} sent on {msg.subject[:200]!r}")
                return
            if board.complete():
                done.set()

        ack_subject = subjects.acks_of_trip(fid)
        await nc.subscribe(ack_subject, cb=on_ack)
        trip = FleetTrip(fid, reason[:500], operator[:128], origin_of(), int(time.time() * 1000))
        data = encode(trip)
        t0 = time.monotonic()
        await nc.publish(subjects.trip, data, reply=ack_subject)  # the fast path, first
        await nc.flush(2.0)
        latched = await _latch_put(js, errors, subjects, cfg, LATCH_TRIP_KEY, data, t0 + deadline_s, on_line)
        if not latched:
            on_line("WARNING: the fleet latch was not written; instances that restart will not see this trip")
        try:  # one deadline for the whole command, latch write included
            await asyncio.wait_for(done.wait(), max(0.0, t0 + deadline_s - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        elapsed = time.monotonic() - t0
        on_line(
            f"FLEET TRIP {fid} ({cfg.name}): {'latched' if latched else 'NOT LATCHED'}, waited {elapsed:.2f}s"
        )
        for line in board.lines():
            on_line(line)
        c = board.counts()
        on_line(f"{c['flat']} flat, {c['acked']} acked (not flat), {c['missing']} missing")
        return (EXIT_OK if board.complete() and latched else EXIT_INCOMPLETE), board
    finally:
        await nc.close()


async def fleet_reset(
    cfg: FleetConfig,
    *,
    reason: str,
    operator: str,
    deadline_s: float,
    environ: Mapping[str, str] | None = None,
    on_line=print,
) -> int:
    subjects = Subjects(cfg.name)
    nc, errors = await _connect(cfg, environ, f"killswitch-cli/{cfg.name}/reset")
    try:
        js = nc.jetstream(timeout=2.0)
        seen = await _statuses_or_none(js, subjects, cfg.silent_after_s, on_line)
        expected = {s.status.instance for s in seen if not s.silent}
        armed: dict[str, InstanceStatus] = {}
        dec = Decoder()
        done = asyncio.Event()
        reset = FleetReset(
            uuid.uuid4().hex, reason[:500], operator[:128], origin_of(), int(time.time() * 1000)
        )

        async def on_status(msg) -> None:
            st = dec.decode(msg.data, subject=msg.subject, expect=InstanceStatus)
            if st is not None and st.ts_wall_ms >= reset.ts_wall_ms and st.state == "armed":
                armed[st.instance] = st
                if expected and expected <= set(armed):
                    done.set()

        await nc.subscribe(subjects.status_all, cb=on_status)
        data = encode(reset)
        # Latch first: a reset the bucket does not hold would be undone by the next reconcile.
        t_end = time.monotonic() + deadline_s
        if not await _latch_put(js, errors, subjects, cfg, LATCH_RESET_KEY, data, t_end, on_line):
            on_line("RESET NOT DONE: the fleet latch could not be written (nothing was re-armed)")
            return EXIT_BUS
        await nc.publish(subjects.reset, data)
        await nc.flush(2.0)
        try:
            await asyncio.wait_for(done.wait(), max(0.0, t_end - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        on_line(f"FLEET RESET {reset.reset_id} ({cfg.name}) by {operator}")
        width = max((len(n) for n in expected | set(armed)), default=8)
        for name in sorted(expected | set(armed)):
            on_line(f"{name:<{width}}  {'armed' if name in armed else 'not confirmed'}")
        return EXIT_OK if expected <= set(armed) else EXIT_INCOMPLETE
    finally:
        await nc.close()


async def fleet_status(cfg: FleetConfig, *, environ: Mapping[str, str] | None = None, on_line=print) -> int:
    subjects = Subjects(cfg.name)
    nc, _ = await _connect(cfg, environ, f"killswitch-cli/{cfg.name}/status")
    try:
        js = nc.jetstream(timeout=2.0)
        try:
            latch = await read_latch(js, subjects)
        except Exception as exc:
            on_line(f"fleet {cfg.name}: latch unreadable ({type(exc).__name__})")
            latch = None
        seen = await read_statuses(js, subjects, cfg.silent_after_s)
    finally:
        await nc.close()
    on_line(f"fleet {cfg.name}: {describe_latch(latch)}")
    width = max((len(s.status.instance) for s in seen), default=8)
    on_line(f"{'instance':<{width}}  {'state':<8} {'venues up':<10} {'alarms':<7} last seen")
    for s in seen:
        st = s.status
        state = "SILENT" if s.silent else st.state.upper()
        on_line(
            f"{st.instance:<{width}}  {state:<8} {f'{st.venues_up}/{st.venues_total}':<10} "
            f"{st.alarms:<7} {s.age_s:.1f}s ago" + (f" (was {st.state})" if s.silent else "")
        )
    silent = [s.status.instance for s in seen if s.silent]
    on_line(f"{len(seen)} instances, {len(silent)} silent" + (f": {', '.join(silent)}" if silent else ""))
    return EXIT_OK


def describe_latch(latch) -> str:
    if latch is None:
        return "latch unknown"
    dec = Decoder()
    trip = dec.decode(latch.trip.data, subject="kv.latch.trip", expect=FleetTrip) if latch.trip else None
    reset = dec.decode(latch.reset.data, subject="kv.latch.reset", expect=FleetReset) if latch.reset else None
    trip_rev = latch.trip.revision if trip else 0
    reset_rev = latch.reset.revision if reset else 0
    if trip is not None and trip_rev > reset_rev:
        return (
            f"TRIPPED (trip {trip.fleet_trip_id} by {trip.operator} from {trip.origin}: {trip.reason}; "
            f"revision {trip_rev})"
        )
    if reset is not None:
        return f"ARMED (reset {reset.reset_id} by {reset.operator}; revision {reset_rev})"
    return "ARMED (never tripped)"


def run(args, verb: str) -> int:
    """Entry from killswitch.cli for ``<verb> --fleet``."""
    import sys

    if not args.config:
        print("killswitch: --fleet needs -c CONFIG (a file with a fleet: section)", file=sys.stderr)
        return EXIT_CONFIG
    if getattr(args, "venue", None) or getattr(args, "product", None):
        print(
            "killswitch: a fleet trip cancels everything on every instance; --venue/--product "
            "apply to one daemon only (drop --fleet)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        cfg = load_fleet_section(args.config, getattr(args, "max_config_bytes", DEFAULT_MAX_CONFIG_BYTES))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except OperatorError as exc:
        print(f"killswitch: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from killswitch.secrets import SecretError

    try:
        if verb == "trip":
            code, _ = asyncio.run(
                fleet_trip(
                    cfg, reason=args.reason, operator=operator_of(args.operator), deadline_s=args.deadline
                )
            )
            return code
        if verb == "reset":
            return asyncio.run(
                fleet_reset(cfg, reason=args.reason, operator=args.operator, deadline_s=args.deadline)
            )
        return asyncio.run(fleet_status(cfg))
    except (OperatorError, SecretError) as exc:
        print(f"killswitch: {exc}", file=sys.stderr)
        return EXIT_BUS
