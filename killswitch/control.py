"""The control socket: an AF_UNIX stream socket speaking JSON lines, plus its clients and CLI.

Protocol: one JSON object per line in, one JSON object per line out, on a connection that
may carry many requests (a strategy sends heartbeats many times a second on one
connection). Every reply has ``"ok"``; failures carry ``"error"`` (and ``"code"``). A
request may carry ``"id"``, echoed back.

    {"op":"status"}
    {"op":"trip","reason":"..","operator":"..","venues":[..]?,"products":[..]?}
    {"op":"reset","operator":"..","reason":".."}
    {"op":"heartbeat","source":".."}
    {"op":"cash_flow","venue":"..","amount":"-250.5","operator":".."}

Who may talk: root, the daemon's own uid, and members of ``control_socket_group`` (checked
with SO_PEERCRED on every connection, behind the socket's file mode). Everyone else gets
one error reply, and the refusal is logged and audited (``control_refused``).

Every command goes through the engine's event channel like any other event, so the engine
stays the single writer of risk state; ``trip`` and ``reset`` reply only once the engine has
acted (bounded by a deadline), so "ok" is evidence, not hope.

Sections: pure core (request validation, peer decision, status rendering) / server shell /
clients / CLI.
"""

from __future__ import annotations

import errno
import getpass
import grp
import os
import pwd
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

import orjson
import structlog
import trio

from killswitch.model import EVERYTHING, CancelScope, DeclareCashFlow, HeartbeatReceived, ResetCommand, TripCommand

log = structlog.get_logger("killswitch.control")

MAX_REQUEST_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 300.0  # a persistent heartbeat connection may idle this long between requests
REQUEST_READ_DEADLINE_S = 5.0  # a started request line must be complete within this
REPLY_SEND_DEADLINE_S = 5.0
COMMAND_DEADLINE_S = 5.0  # trip/reset: wait this long for the engine to act before replying
MAX_CONNECTIONS = 64
ENGINE_POLL_S = 0.002
SOCKET_DIR_MODE = 0o750
DEBUG_OPS_ENV = "KILLSWITCH_ENABLE_DEBUG_OPS"
MAX_TEXT_CHARS = 500


class ControlSetupError(Exception):
    """The control socket cannot be created (path taken by a non-socket, live daemon, group)."""


class RequestError(Exception):
    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


# ====================================================================================
# Pure core
# ====================================================================================


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


def peer_allowed(peer: PeerCred, *, own_uid: int, group_gid: int | None,
                 peer_groups: frozenset[int] = frozenset()) -> bool:
    """root, our own uid, or a member (primary or supplementary) of the control group."""
    if peer.uid == 0 or peer.uid == own_uid:
        return True
    if group_gid is None:
        return False
    return peer.gid == group_gid or group_gid in peer_groups


def parse_proc_groups(status_text: str) -> frozenset[int]:
    """Supplementary groups from ``/proc/<pid>/status`` (the ``Groups:`` line)."""
    for line in status_text.splitlines():
        if line.startswith("Groups:"):
            return frozenset(int(g) for g in line.split()[1:] if g.isdigit())
    return frozenset()


def _text(req: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = req.get(key)
    if value is None or value == "":
        if required:
            raise RequestError(f"{key!r} is required (non-empty string)")
        return None
    if not isinstance(value, str):
        raise RequestError(f"{key!r} must be a string")
    value = value.strip()
    if required and not value:
        raise RequestError(f"{key!r} is required (non-empty string)")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(f"{key!r} is longer than {MAX_TEXT_CHARS} characters")
    return value


def _str_list(req: Mapping[str, Any], key: str) -> frozenset[str] | None:
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RequestError(f"{key!r} must be a non-empty list of strings")
    return frozenset(value)


def parse_request(line: bytes) -> dict:
    """Decode one request line into a dict with a known ``op``. Raises RequestError."""
    try:
        req = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise RequestError("request is not valid JSON") from None
    if not isinstance(req, dict):
        raise RequestError("request must be a JSON object")
    op = req.get("op")
    if op not in OPS:
        raise RequestError(f"unknown op {op!r}; expected one of {', '.join(sorted(OPS))}", "unknown_op")
    return req


def trip_command(req: Mapping[str, Any], *, known_venues: frozenset[str], default_operator: str) -> TripCommand:
    reason = _text(req, "reason", required=True)
    operator = _text(req, "operator", required=False) or default_operator
    venues = _str_list(req, "venues")
    if venues is not None and not venues <= known_venues:
        unknown = ", ".join(sorted(venues - known_venues))
        raise RequestError(f"unknown venue(s): {unknown}; configured: {', '.join(sorted(known_venues))}")
    products = _str_list(req, "products")
    scope = EVERYTHING if venues is None and products is None else CancelScope(venues=venues, products=products)
    return TripCommand(reason=reason, source="control", operator=operator, scope=scope, lock=_flag(req, "lock"))


def _flag(req: Mapping[str, Any], key: str) -> bool:
    value = req.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be true or false")
    return value


def reset_command(req: Mapping[str, Any], operator_uid: int | None = None) -> ResetCommand:
    return ResetCommand(operator=_text(req, "operator", required=True), reason=_text(req, "reason", required=True),
                        source="control", unlock=_flag(req, "unlock"), operator_uid=operator_uid)


def cash_flow_command(req: Mapping[str, Any], *, known_venues: frozenset[str], default_operator: str) -> DeclareCashFlow:
    venue = _text(req, "venue", required=True)
    if venue not in known_venues:
        raise RequestError(f"unknown venue {venue!r}; configured: {', '.join(sorted(known_venues))}")
    raw = req.get("amount")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise RequestError("'amount' must be a decimal string such as \"-250.5\" (never a float)")
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise RequestError(f"'amount' is not a decimal number: {raw!r}") from None
    if not amount.is_finite() or amount == 0:
        raise RequestError("'amount' must be a finite, non-zero decimal (+ deposit, - withdrawal)")
    operator = _text(req, "operator", required=False) or default_operator
    return DeclareCashFlow(venue=venue, amount=amount, operator=operator)


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    return orjson.dumps(reply, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def error_reply(message: str, code: str = "bad_request") -> dict:
    return {"ok": False, "error": message, "code": code}


# ---------------------------------------------------------------------- status rendering


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    fmt = indent + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*row).rstrip() for row in rows]


def _s(value: Any, none: str = "-") -> str:
    return none if value is None else str(value)


def _wall(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_status(st: Mapping[str, Any]) -> str:
    """The human view of ``{"op":"status"}`` (the reply minus "ok")."""
    state = str(st.get("state", "?")).upper()
    flags = []
    flags.append("ready" if st.get("ready") else "NOT READY (starting)")
    if st.get("dry_run"):
        flags.append("DRY-RUN: no cancel is sent")
    if st.get("degraded"):
        flags.append(f"degraded: {', '.join(st['degraded'])} not up at start")
    head = f"killswitch: {state}  ({'; '.join(flags)})"
    if st.get("pid"):
        head += f"  pid {st['pid']}"
    out = [head]
    if st.get("reload_errors"):
        out += ["", "RELOAD FAILED, running the previous configuration:"]
        out += [f"  {e}" for e in st["reload_errors"]]
    trips = st.get("trips") or []
    if trips:
        out += ["", f"trips ({len(trips)}):"]
        rows = [[f"#{t.get('trip_id')}", _s(t.get("rule")), _s(t.get("observed")), _s(t.get("threshold")),
                 _s(t.get("source")), _wall(t.get("ts_wall_ms"))] for t in trips]
        out += _table(["TRIP", "RULE", "OBSERVED", "THRESHOLD", "SOURCE", "AT"], rows)
        for t in trips:
            out.append(f"  #{t.get('trip_id')} reason: {t.get('reason')}")
    elif st.get("last_reset"):
        r = st["last_reset"]
        out += ["", f"last reset: by {r.get('operator')} at {_wall(r.get('ts_wall_ms'))}: {r.get('reason')}"]
    venues = st.get("venues") or {}
    out += ["", f"venues ({len(venues)}):"]
    rows = []
    for name, v in venues.items():
        conn = "up" if v.get("connected") else "DOWN"
        if v.get("connected") and not v.get("trusted", True):
            conn = "up (unreconciled)"
        equity = "-" if v.get("equity") is None else f"{v['equity']} {v.get('equity_currency') or ''}".strip()
        rows.append([name, conn, _s(v.get("open_orders")), equity, _s(v.get("cancel_state")),
                     _s(v.get("last_seen_ago_s")), _s(v.get("restarts"), "0")])
    out += _table(["VENUE", "CONNECTION", "OPEN", "EQUITY", "CANCEL", "LAST SEEN S", "RESTARTS"], rows)
    for name, v in venues.items():
        bs = v.get("backstop")
        if bs:
            state = f"armed, fires at {_wall(bs.get('fires_at_ms'))}" if bs.get("armed") else \
                f"NOT ARMED ({bs.get('unavailable_reason') or 'not yet'})"
            out.append(f"  {name}: venue dead-man's switch {state}")
    rules = st.get("rules") or []
    out += ["", f"rules ({len(rules)}):"]
    rows = [[_s(r.get("name")), _s(r.get("kind")), _s(r.get("observed")), _s(r.get("threshold")),
             "BREACHED" if r.get("breached") else "ok", "latch" if r.get("latch", True) else "alert"]
            for r in rules]
    out += _table(["RULE", "KIND", "OBSERVED", "THRESHOLD", "STATE", "ACTION"], rows)
    alarms = st.get("alarms") or {}
    out += ["", "alarms: none" if not alarms else f"ALARMS ({len(alarms)}):"]
    out += [f"  {k}: {m}" for k, m in alarms.items()]
    counters = st.get("counters") or {}
    if counters:
        out += ["", "counters: " + "  ".join(f"{k}={_s(v)}" for k, v in counters.items())]
    return "\n".join(out)


# ====================================================================================
# Server shell
# ====================================================================================


def peer_credentials(sock) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


def peer_groups(peer: PeerCred) -> frozenset[int]:
    """Supplementary groups of the peer process, best effort (/proc, then the group database)."""
    try:
        return parse_proc_groups(Path(f"/proc/{peer.pid}/status").read_text())
    except OSError:
        pass
    try:
        name = pwd.getpwuid(peer.uid).pw_name
        return frozenset(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
    except KeyError:
        return frozenset()


def resolve_group(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ControlSetupError(f"control_socket_group {name!r} does not exist") from None


def prepare_socket_path(path: Path, group_gid: int | None) -> None:
    """Create the parent dir if needed; remove a stale socket; refuse anything else."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=SOCKET_DIR_MODE, parents=True)
        if group_gid is not None:
            os.chown(parent, -1, group_gid)
        os.chmod(parent, SOCKET_DIR_MODE)
    if len(os.fsencode(path)) >= 108:
        raise ControlSetupError(f"control socket path is too long for AF_UNIX (max 107 bytes): {path}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSetupError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        os.unlink(path)  # nobody listening: a leftover from a crash
        return
    finally:
        probe.close()
    raise ControlSetupError(f"another process is serving {path} (is a second killswitch running?)")


class ControlServer:
    def __init__(self, daemon, *, environ: Mapping[str, str] | None = None) -> None:
        self.daemon = daemon
        d = daemon.config.daemon
        self.path = Path(d.control_socket)
        self.group_name = d.control_socket_group
        self.group_gid: int | None = None
        self.own_uid = os.getuid()
        env = daemon.environ if environ is None else environ
        self.debug_ops = env.get(DEBUG_OPS_ENV) == "1"
        self.requests = 0
        self.refused = 0
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self._inode: int | None = None

    # -------------------------------------------------------------- lifecycle
    def bind(self) -> trio.socket.SocketType:
        self.group_gid = resolve_group(self.group_name)
        prepare_socket_path(self.path, self.group_gid)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # bind() is synchronous for AF_UNIX paths; trio's wrapper is async only for name resolution.
            sock._sock.bind(os.fspath(self.path))
            if self.group_gid is not None:
                os.chown(self.path, -1, self.group_gid)
                os.chmod(self.path, 0o660)
            else:
                os.chmod(self.path, 0o600)
            sock.listen(MAX_CONNECTIONS)
        except BaseException:
            sock.close()
            raise
        self._inode = os.lstat(self.path).st_ino
        return sock

    def unlink(self) -> None:
        try:
            if self._inode is not None and os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    async def serve(self, sock, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(sock)
        log.info("control_listening", path=str(self.path), group=self.group_name,
                 mode="0660" if self.group_gid is not None else "0600", debug_ops=self.debug_ops)
        task_status.started()
        try:
            async with listener, trio.open_nursery() as nursery:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._connection, stream)
        finally:
            self.unlink()

    # -------------------------------------------------------------- connections
    async def _send(self, stream, reply: Mapping[str, Any]) -> None:
        with trio.fail_after(REPLY_SEND_DEADLINE_S):
            await stream.send_all(encode_reply(reply))

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                if self._slots.value == 0:
                    await self._send(stream, error_reply("too many control connections", "busy"))
                    return
                async with self._slots:
                    await self._session(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            return
        except Exception as exc:  # a control bug must never take the kill switch down
            log.error("control_connection_error", error=f"{type(exc).__name__}: {exc}")

    async def _session(self, stream: trio.SocketStream) -> None:
        peer = peer_credentials(stream.socket)
        groups = peer_groups(peer) if self.group_gid is not None else frozenset()
        if not peer_allowed(peer, own_uid=self.own_uid, group_gid=self.group_gid, peer_groups=groups):
            self.refused += 1
            log.warning("control_refused", peer_uid=peer.uid, peer_gid=peer.gid, peer_pid=peer.pid,
                        group=self.group_name)
            self.daemon.audit.record("control_refused", peer_uid=peer.uid, peer_gid=peer.gid, peer_pid=peer.pid)
            await self._send(stream, error_reply(
                f"permission denied: uid {peer.uid} is not root, the daemon's user, or in control_socket_group",
                "permission_denied"))
            # Let the client finish sending its request before we close, so it reads our reply
            # instead of a broken pipe. Bounded: at most one request's worth, one second.
            with trio.move_on_after(1.0):
                await stream.receive_some(MAX_REQUEST_BYTES)
            return
        buf = bytearray()
        while True:
            data = None
            with trio.move_on_after(REQUEST_READ_DEADLINE_S if buf else IDLE_TIMEOUT_S):
                data = await stream.receive_some(MAX_REQUEST_BYTES)
            if data is None:  # deadline: idle connection, or a request line that never ended
                if buf:
                    await self._send(stream, error_reply("incomplete request line (timed out)", "timeout"))
                return
            if not data:
                return
            buf += data
            while (nl := buf.find(b"\n")) >= 0:
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                if line.strip():
                    await self._send(stream, await self.handle_line(line, peer))
            if len(buf) > MAX_REQUEST_BYTES:
                await self._send(stream, error_reply(f"request larger than {MAX_REQUEST_BYTES} bytes", "too_large"))
                return

    async def handle_line(self, line: bytes, peer: PeerCred) -> dict:
        if len(line) > MAX_REQUEST_BYTES:
            return error_reply(f"request larger than {MAX_REQUEST_BYTES} bytes", "too_large")
        req: dict = {}
        try:
            req = parse_request(line)
            reply = await self.handle(req, peer)
        except RequestError as exc:
            reply = error_reply(str(exc), exc.code)
        except Exception as exc:  # never crash the daemon on a control request
            log.error("control_request_error", op=req.get("op"), error=f"{type(exc).__name__}: {exc}")
            reply = error_reply(f"internal error: {type(exc).__name__}", "internal")
        if "id" in req:
            reply["id"] = req["id"]
        return reply

    # -------------------------------------------------------------- requests
    def _known_venues(self) -> frozenset[str]:
        return frozenset(self.daemon.venues) or frozenset(v.name for v in self.daemon.config.venues)

    @staticmethod
    def _default_operator(peer: PeerCred) -> str:
        try:
            return pwd.getpwuid(peer.uid).pw_name
        except KeyError:
            return f"uid:{peer.uid}"

    async def handle(self, req: dict, peer: PeerCred) -> dict:
        self.requests += 1
        op = req["op"]
        daemon = self.daemon
        engine = daemon.engine
        if op == "heartbeat":
            source = _text(req, "source", required=True)
            await daemon.send.send(HeartbeatReceived(source, daemon.clock.monotonic_s()))
            return {"ok": True}
        if op == "status":
            return {"ok": True, "pid": os.getpid(), **daemon.status()}
        if op == "trip":
            cmd = trip_command(req, known_venues=self._known_venues(), default_operator=self._default_operator(peer))
            daemon.audit.record("control_command", op="trip", operator=cmd.operator, reason=cmd.reason,
                                peer_uid=peer.uid, peer_pid=peer.pid, lock=cmd.lock)
            before = engine.latch.next_trip_id
            await daemon.send.send(cmd)
            acted = await _wait_until(lambda: engine.latch.next_trip_id > before)
            return self._command_reply(acted, "trip", trip_id=before if acted else None)
        if op == "reset":
            cmd = reset_command(req, peer.uid)
            was_tripped = engine.latch.tripped
            daemon.audit.record("control_command", op="reset", operator=cmd.operator, reason=cmd.reason,
                                peer_uid=peer.uid, peer_pid=peer.pid, was_tripped=was_tripped, unlock=cmd.unlock)
            await daemon.send.send(cmd)
            acted = await _wait_until(lambda: not engine.latch.tripped)
            return self._command_reply(acted, "reset", noop=not was_tripped)
        if op == "cash_flow":
            cmd = cash_flow_command(req, known_venues=self._known_venues(),
                                    default_operator=self._default_operator(peer))
            daemon.audit.record("control_command", op="cash_flow", operator=cmd.operator, venue=cmd.venue,
                                amount=str(cmd.amount), peer_uid=peer.uid, peer_pid=peer.pid)
            await daemon.send.send(cmd)
            return {"ok": True, "venue": cmd.venue, "amount": str(cmd.amount)}
        if op == "debug_wedge":
            return self._debug_wedge(req, peer)
        raise RequestError(f"unknown op {op!r}", "unknown_op")  # pragma: no cover - parse_request guards

    def _command_reply(self, acted: bool, what: str, **extra: Any) -> dict:
        st = self.daemon.status()
        reply = {"ok": acted, "state": st["state"], "trips": st["trips"], "last_reset": st["last_reset"],
                 "venues": {n: {"cancel_state": v["cancel_state"], "open_orders": v["open_orders"]}
                            for n, v in st["venues"].items()}, **extra}
        if not acted:
            reply.update(error=f"{what} queued but the engine did not confirm it within {COMMAND_DEADLINE_S}s",
                         code="unconfirmed")
        return reply

    def _debug_wedge(self, req: dict, peer: PeerCred) -> dict:
        """TEST HOOK (README "Testing the watchdog"): wedge the engine task.

        Enabled only when the daemon was started with KILLSWITCH_ENABLE_DEBUG_OPS=1. The next
        event the engine handles blocks synchronously for ``seconds`` (as a rule stuck in a
        loop would), so the engine makes no progress and WATCHDOG=1 pings stop. Never enable
        it in production."""
        if not self.debug_ops:
            raise RequestError(f"debug ops are disabled (set {DEBUG_OPS_ENV}=1 to enable)", "disabled")
        seconds = req.get("seconds", 5)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 600:
            raise RequestError("'seconds' must be a number in (0, 600]")
        engine = self.daemon.engine
        original = engine.handle

        def wedged(ev: object) -> None:
            engine.handle = original  # one-shot
            time.sleep(seconds)
            original(ev)

        engine.handle = wedged
        log.critical("debug_wedge", seconds=seconds, peer_uid=peer.uid)
        self.daemon.audit.record("debug_wedge", seconds=seconds, peer_uid=peer.uid, peer_pid=peer.pid)
        return {"ok": True, "wedge_s": seconds}


async def _wait_until(predicate, deadline_s: float = COMMAND_DEADLINE_S) -> bool:
    with trio.move_on_after(deadline_s):
        while not predicate():
            await trio.sleep(ENGINE_POLL_S)
        return True
    return False


async def control_service(daemon, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Daemon service: bind the socket (before READY, so a trip works during start-up) and serve."""
    from killswitch.daemon import EXIT_CONFIG, StartupError

    server = ControlServer(daemon)
    try:
        sock = server.bind()
    except (ControlSetupError, OSError) as exc:
        msg = f"control socket {server.path}: {exc}"
        log.error("control_socket_failed", error=msg)
        daemon.fatal = StartupError(msg, EXIT_CONFIG)
        daemon.request_stop()
        task_status.started()
        return
    daemon.control = server
    await server.serve(sock, task_status=task_status)


# ====================================================================================
# Clients
# ====================================================================================


class ControlError(Exception):
    """Talking to the daemon failed (not running, permission, protocol)."""


class DaemonNotRunning(ControlError):
    pass


class ControlPermissionDenied(ControlError):
    pass


def _connect_error(path: Path, exc: OSError) -> ControlError:
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return ControlPermissionDenied(
            f"permission denied on {path}: run as root, the daemon's user, or a member of control_socket_group")
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        return DaemonNotRunning(f"killswitch is not running (no control socket listening at {path})")
    return ControlError(f"cannot connect to {path}: {exc}")


def _check_reply(raw: bytes, path: Path) -> dict:
    try:
        reply = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ControlError("daemon sent an invalid reply") from None
    if not isinstance(reply, dict):
        raise ControlError("daemon sent an invalid reply")
    if reply.get("code") == "permission_denied":
        raise ControlPermissionDenied(f"{path}: {reply.get('error')}")
    return reply


class ControlClient:
    """Synchronous client on a plain socket; one connection, many requests.

    >>> with ControlClient("/run/killswitch/control.sock") as ks:
    ...     ks.heartbeat("strat-a")
    """

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = COMMAND_DEADLINE_S + 5) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def connect(self) -> "ControlClient":
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.settimeout(self.timeout_s)
            try:
                s.connect(os.fspath(self.path))
            except OSError as exc:
                s.close()
                raise _connect_error(self.path, exc) from None
            self._sock = s
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buf.clear()

    def __enter__(self) -> "ControlClient":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, obj: Mapping[str, Any]) -> dict:
        """Send one request, return the reply dict (``ok`` may be False)."""
        self.connect()
        assert self._sock is not None
        try:
            try:
                self._sock.sendall(orjson.dumps(obj) + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have refused us already: its reply is still readable
            while b"\n" not in self._buf:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ControlError("daemon closed the connection without a reply")
                self._buf += chunk
        except socket.timeout:
            self.close()
            raise ControlError(f"no reply from the daemon within {self.timeout_s}s") from None
        except OSError as exc:
            self.close()
            raise ControlError(f"control connection failed: {exc}") from None
        nl = self._buf.index(b"\n")
        raw = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        return _check_reply(raw, self.path)

    # Conveniences for strategies and tests.
    def status(self) -> dict:
        return self.request({"op": "status"})

    def heartbeat(self, source: str) -> dict:
        return self.request({"op": "heartbeat", "source": source})

    def trip(self, reason: str, operator: str, *, venues=None, products=None) -> dict:
        req: dict = {"op": "trip", "reason": reason, "operator": operator}
        if venues:
            req["venues"] = list(venues)
        if products:
            req["products"] = list(products)
        return self.request(req)

    def reset(self, operator: str, reason: str) -> dict:
        return self.request({"op": "reset", "operator": operator, "reason": reason})

    def cash_flow(self, venue: str, amount: str | Decimal, operator: str) -> dict:
        return self.request({"op": "cash_flow", "venue": venue, "amount": str(amount), "operator": operator})


class AsyncControlClient:
    """trio client (in-process tests, trio strategies); same protocol as ControlClient."""

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = COMMAND_DEADLINE_S + 5) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._stream: trio.SocketStream | None = None
        self._buf = bytearray()

    async def __aenter__(self) -> "AsyncControlClient":
        try:
            self._stream = await trio.open_unix_socket(os.fspath(self.path))
        except OSError as exc:
            raise _connect_error(self.path, exc) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def request(self, obj: Mapping[str, Any]) -> dict:
        assert self._stream is not None, "use `async with AsyncControlClient(path) as c`"
        with trio.fail_after(self.timeout_s):
            await self._stream.send_all(orjson.dumps(obj) + b"\n")
            while b"\n" not in self._buf:
                chunk = await self._stream.receive_some(65536)
                if not chunk:
                    raise ControlError("daemon closed the connection without a reply")
                self._buf += chunk
        nl = self._buf.index(b"\n")
        raw = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        return _check_reply(raw, self.path)


# ====================================================================================
# CLI verbs (killswitch status | trip | reset | heartbeat)
# ====================================================================================


def _default_operator() -> str:
    try:
        return os.environ.get("SUDO_USER") or os.environ.get("USER") or getpass.getuser()
    except Exception:
        return f"uid:{os.getuid()}"


def build_cli_request(args) -> dict:
    verb = args.verb
    if verb == "status":
        return {"op": "status"}
    if verb == "heartbeat":
        return {"op": "heartbeat", "source": args.source}
    if verb == "trip":
        req: dict = {"op": "trip", "reason": args.reason, "operator": args.operator or _default_operator()}
        if getattr(args, "venue", None):
            req["venues"] = list(args.venue)
        if getattr(args, "product", None):
            req["products"] = list(args.product)
        if getattr(args, "lock", False):
            req["lock"] = True
        return req
    if verb == "reset":
        req = {"op": "reset", "operator": args.operator, "reason": args.reason}
        if getattr(args, "unlock", False):
            req["unlock"] = True
        return req
    raise ValueError(f"not a control verb: {verb}")


def render_command_reply(verb: str, reply: Mapping[str, Any]) -> str:
    if verb == "heartbeat":
        return "ok"
    state = str(reply.get("state", "?")).upper()
    venues = reply.get("venues") or {}
    vtxt = ", ".join(f"{n}: {v.get('cancel_state') or '-'} ({v.get('open_orders')} open)" for n, v in venues.items())
    if verb == "trip":
        return f"{state}: trip #{reply.get('trip_id')} latched; venues: {vtxt or 'none'}"
    if verb == "reset":
        if reply.get("noop"):
            return f"{state}: nothing to reset (was not tripped)"
        r = reply.get("last_reset") or {}
        return f"{state}: re-armed by {r.get('operator')} ({r.get('reason')})"
    return orjson.dumps(reply, default=str).decode()


def run_cli(args, socket_path: str | os.PathLike) -> int:
    path = Path(socket_path)
    want_json = bool(getattr(args, "json", False))
    try:
        req = build_cli_request(args)
        with ControlClient(path) as client:
            reply = client.request(req)
    except ControlError as exc:
        print(f"killswitch: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"killswitch: {args.verb} failed: {reply.get('error', 'unknown error')}", file=sys.stderr)
        if want_json:
            print(orjson.dumps(reply, default=str, option=orjson.OPT_INDENT_2).decode())
        return 1
    if want_json:
        print(orjson.dumps(reply, default=str, option=orjson.OPT_INDENT_2).decode())
    elif args.verb == "status":
        print(render_status(reply))
    else:
        print(render_command_reply(args.verb, reply))
    return 0


OPS = frozenset({"status", "trip", "reset", "heartbeat", "cash_flow", "debug_wedge"})
