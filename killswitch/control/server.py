"""The control socket's trio shell: socket setup, peer credentials, connection handling.

Every command goes through the engine's event channel like any other event, so the engine
stays the single writer of risk state; ``trip`` and ``reset`` reply only once the engine has
acted (bounded by a deadline), so "ok" is evidence, not hope.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any, Mapping

import structlog
import trio

from killswitch.schema.rule import venue_products
from killswitch.control.access import (
    AccessError,
    AccessPolicy,
    ConnectionBudget,
    Role,
    allowed,
    resolve_access,
)
from killswitch.control.protocol import (
    COMMAND_DEADLINE_S,
    DEBUG_OPS_ENV,
    ENGINE_POLL_S,
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    REPLY_SEND_DEADLINE_S,
    REQUEST_READ_DEADLINE_S,
    SOCKET_DIR_MODE,
    STATUS_VERSION,
    ControlSetupError,
    PeerCred,
    RequestError,
    cash_flow_command,
    encode_reply,
    error_reply,
    parse_proc_groups,
    parse_request,
    reset_command,
    text_field,
    trip_command,
)
from killswitch.model import HeartbeatReceived


log = structlog.get_logger("killswitch.control")

PROC_STATUS = "/proc/{pid}/status"


def peer_credentials(sock) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


def peer_groups(peer: PeerCred) -> frozenset[int]:
    """Supplementary groups of the peer process from /proc (a small read, never NSS). Where
    /proc is hidden this is empty; members listed in the group database were resolved with
    the config (:func:`~killswitch.control.access.resolve_access`), never per request."""
    try:
        with open(PROC_STATUS.format(pid=peer.pid), "rb") as f:
            return parse_proc_groups(f.read(16384).decode("ascii", "replace"))
    except OSError:
        return frozenset()


def load_policy(config) -> AccessPolicy:
    """Resolve ``daemon.control`` and ``control_socket_group`` to ids (start-up and reload)."""
    d = config.daemon
    try:
        return resolve_access(d.control, own_uid=os.getuid(), legacy_group=d.control_socket_group,
                              getpwnam=pwd.getpwnam, getgrnam=grp.getgrnam, getpwuid=pwd.getpwuid)
    except AccessError as exc:
        raise ControlSetupError(str(exc)) from None


def resolve_group(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ControlSetupError(f"control_socket_group {name!r} does not exist") from None


def prepare_socket_path(path: Path, group_gid: int | None, *, dir_mode: int = SOCKET_DIR_MODE) -> None:
    """Create the parent dir if needed; remove a stale socket; refuse anything else."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=dir_mode, parents=True)
        if group_gid is not None:
            os.chown(parent, -1, group_gid)
        os.chmod(parent, dir_mode)
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
        self.busy = 0
        self.policy: AccessPolicy = AccessPolicy(own_uid=self.own_uid)
        self.idle_timeout_s = d.control.idle_timeout_s
        self.budget = ConnectionBudget()
        self._refusal_audits: dict[int, list[float]] = {}
        self._inode: int | None = None

    # -------------------------------------------------------------- lifecycle
    def bind(self) -> trio.socket.SocketType:
        self.group_gid = resolve_group(self.group_name)
        self.policy = load_policy(self.daemon.config)
        # Roles beyond one group need a socket every principal can open; who may do what is
        # then decided per request from SO_PEERCRED (the file mode is only a first fence).
        self.open_mode = self.daemon.config.daemon.control.any()
        prepare_socket_path(self.path, self.group_gid, dir_mode=0o755 if self.open_mode else SOCKET_DIR_MODE)
        self.daemon.reload_hooks.append(self.prepare_reload)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # bind() is synchronous for AF_UNIX paths; trio's wrapper is async only for name resolution.
            sock._sock.bind(os.fspath(self.path))
            if self.group_gid is not None:
                os.chown(self.path, -1, self.group_gid)
            os.chmod(self.path, 0o666 if self.open_mode else 0o660 if self.group_gid is not None else 0o600)
            sock.listen(MAX_CONNECTIONS)
        except BaseException:
            sock.close()
            raise
        self._inode = os.lstat(self.path).st_ino
        return sock

    def prepare_reload(self, config):
        """Reload step: resolve the new grants (an unknown user or group refuses the reload)
        and return what applies them."""
        policy = load_policy(config)
        idle = config.daemon.control.idle_timeout_s

        def apply() -> None:
            self.policy, self.idle_timeout_s = policy, idle
            log.info("control_roles_reloaded", roles=self.describe_roles())

        return apply

    def describe_roles(self) -> dict:
        return {role.name.lower(): sorted(self.policy.user_name(u) for u in g.uids | g.member_uids)
                + [f"group:{gid}" for gid in sorted(g.gids)] for role, g in self.policy.grants.items()}

    def unlink(self) -> None:
        try:
            if self._inode is not None and os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    async def serve(self, sock, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(sock)
        log.info("control_listening", path=str(self.path), group=self.group_name,
                 mode="0666" if self.open_mode else "0660" if self.group_gid is not None else "0600",
                 roles=self.describe_roles(), debug_ops=self.debug_ops)
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
        pool = None
        try:
            async with stream:
                peer = peer_credentials(stream.socket)
                groups = peer_groups(peer) if self.policy.needs_groups() else frozenset()
                role = self.policy.role_of(peer.uid, peer.gid, groups)
                if role is None:
                    await self._refuse(stream, peer)
                    return
                pool = self.budget.admit(peer.uid, role)
                if pool is None:
                    self.busy += 1
                    with trio.move_on_after(0.2):  # never let a refused socket hold a task
                        await stream.send_all(encode_reply(error_reply(
                            f"too many control connections (uid {peer.uid} holds "
                            f"{self.budget.held.get(peer.uid, 0)}; idle ones close after "
                            f"{self.idle_timeout_s:g}s)", "busy")))
                    return
                await self._session(stream, peer, role)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            return
        except Exception as exc:  # a control bug must never take the kill switch down
            log.error("control_connection_error", error=f"{type(exc).__name__}: {exc}")
        finally:
            if pool is not None:
                self.budget.release(peer.uid, pool)

    def _audit_refusal(self, peer: PeerCred, **fields: Any) -> None:
        """Every refusal is logged; audit records are bounded to 10 a minute per uid so a
        hostile uid cannot flood the audit log (the rest are counted)."""
        now = time.monotonic()
        recent = [t for t in self._refusal_audits.get(peer.uid, []) if now - t < 60.0]
        if len(recent) < 10:
            recent.append(now)
            self.daemon.audit.record("control_refused", peer_uid=peer.uid, peer_gid=peer.gid,
                                     peer_pid=peer.pid, peer_user=self.policy.user_name(peer.uid), **fields)
        self._refusal_audits[peer.uid] = recent
        if len(self._refusal_audits) > 1024:  # bounded: forget the oldest uids
            self._refusal_audits.pop(next(iter(self._refusal_audits)))

    async def _refuse(self, stream: trio.SocketStream, peer: PeerCred) -> None:
        self.refused += 1
        log.warning("control_refused", peer_uid=peer.uid, peer_gid=peer.gid, peer_pid=peer.pid,
                    group=self.group_name)
        self._audit_refusal(peer)
        await self._send(stream, error_reply(
            f"permission denied: uid {peer.uid} holds no control role (see daemon.control)",
            "permission_denied"))
        # Let the client finish sending its request before we close, so it reads our reply
        # instead of a broken pipe. Bounded: at most one request's worth, one second.
        with trio.move_on_after(1.0):
            await stream.receive_some(MAX_REQUEST_BYTES)

    async def _session(self, stream: trio.SocketStream, peer: PeerCred, role: Role) -> None:
        buf = bytearray()
        while True:
            data = None
            # Idle connections close quickly (slots are few and capped per uid); a started
            # request line must complete within the read deadline.
            with trio.move_on_after(REQUEST_READ_DEADLINE_S if buf else self.idle_timeout_s):
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
                    await self._send(stream, await self.handle_line(line, peer, role))
            if len(buf) > MAX_REQUEST_BYTES:
                await self._send(stream, error_reply(f"request larger than {MAX_REQUEST_BYTES} bytes", "too_large"))
                return

    async def handle_line(self, line: bytes, peer: PeerCred, role: Role | None = Role.OPERATOR) -> dict:
        if len(line) > MAX_REQUEST_BYTES:
            return error_reply(f"request larger than {MAX_REQUEST_BYTES} bytes", "too_large")
        req: dict = {}
        try:
            req = parse_request(line)
            if not allowed(role, req["op"]):
                reply = self._op_refused(req["op"], peer, role)
            else:
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

    def _configured_products(self) -> frozenset[str]:
        return frozenset(p for v in self.daemon.config.venues for p in venue_products(v))

    def _default_operator(self, peer: PeerCred) -> str:
        return self.policy.user_name(peer.uid)

    def _op_refused(self, op: str, peer: PeerCred, role: Role | None) -> dict:
        self.refused += 1
        held = role.name.lower() if role is not None else "none"
        log.warning("control_op_refused", op=op, peer_uid=peer.uid, peer_pid=peer.pid, role=held)
        self._audit_refusal(peer, op=op, role=held)
        return error_reply(f"permission denied: {op!r} needs the operator role; uid {peer.uid} "
                           f"({self.policy.user_name(peer.uid)}) holds {held}", "permission_denied")

    def _peer_fields(self, peer: PeerCred) -> dict:
        return {"peer_uid": peer.uid, "peer_user": self.policy.user_name(peer.uid), "peer_pid": peer.pid}

    async def handle(self, req: dict, peer: PeerCred) -> dict:
        self.requests += 1
        op = req["op"]
        daemon = self.daemon
        engine = daemon.engine
        if op == "heartbeat":
            source = text_field(req, "source", required=True)
            await daemon.send.send(HeartbeatReceived(source, daemon.clock.monotonic_s()))
            return {"ok": True}
        if op == "status":
            return {"ok": True, "status_version": STATUS_VERSION, "pid": os.getpid(), **daemon.status()}
        if op == "trip":
            cmd = trip_command(req, known_venues=self._known_venues(), default_operator=self._default_operator(peer),
                               known_products=engine.known_products(self._configured_products()))
            daemon.audit.record("control_command", op="trip", operator=cmd.operator, reason=cmd.reason,
                                lock=cmd.lock, force=bool(req.get("force")), **self._peer_fields(peer))
            covered = engine.orders_covered(cmd.scope)
            before = engine.latch.next_trip_id
            await daemon.send.send(cmd)
            acted = await _wait_until(lambda: engine.latch.next_trip_id > before)
            return self._command_reply(acted, "trip", trip_id=before if acted else None, orders_in_scope=covered)
        if op == "reset":
            cmd = reset_command(req, peer.uid)
            was_tripped = engine.latch.tripped
            daemon.audit.record("control_command", op="reset", operator=cmd.operator, reason=cmd.reason,
                                was_tripped=was_tripped, unlock=cmd.unlock, **self._peer_fields(peer))
            await daemon.send.send(cmd)
            acted = await _wait_until(lambda: not engine.latch.tripped)
            return self._command_reply(acted, "reset", noop=not was_tripped)
        if op == "cash_flow":
            venue = req.get("venue")
            cmd = cash_flow_command(req, known_venues=self._known_venues(),
                                    default_operator=self._default_operator(peer),
                                    equity={venue: engine.state.book(venue).equity}
                                    if isinstance(venue, str) and venue in self._known_venues() else None,
                                    max_cash_flow=daemon.config.daemon.max_cash_flow)
            daemon.audit.record("control_command", op="cash_flow", operator=cmd.operator, venue=cmd.venue,
                                amount=str(cmd.amount), **self._peer_fields(peer))
            await daemon.send.send(cmd)
            return {"ok": True, "venue": cmd.venue, "amount": str(cmd.amount)}
        if op == "reopen":
            return await self._reopen(peer)
        if op == "debug_wedge":
            return self._debug_wedge(req, peer)
        raise RequestError(f"unknown op {op!r}", "unknown_op")  # pragma: no cover - parse_request guards

    async def _reopen(self, peer: PeerCred) -> dict:
        """Reopen the audit log and the trip intent at their paths (logrotate's postrotate)."""
        self.daemon.audit.record("control_command", op="reopen", peer_uid=peer.uid, peer_pid=peer.pid)
        result = await self.daemon.reopen_state_files()
        ok = bool(result["audit_ok"] and result["intent_ok"])
        reply = {"ok": ok, **result}
        if not ok:
            reply.update(error="; ".join(str(result.get(k)) for k in ("audit_problem", "intent_problem")
                                         if result.get(k)), code="reopen_failed")
        return reply

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
