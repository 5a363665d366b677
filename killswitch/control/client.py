"""Clients of the control socket (sync and trio) and the CLI verbs that use them.
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

import orjson
import trio


from killswitch.control.protocol import COMMAND_DEADLINE_S
from killswitch.control.render import render_command_reply, render_status, use_colour
from killswitch.control.watch import watch_status


class ControlError(Exception):
    """Talking to the daemon failed (not running, permission, protocol)."""


class DaemonNotRunning(ControlError):
    pass


class ControlPermissionDenied(ControlError):
    pass


def _connect_error(path: Path, exc: OSError) -> ControlError:
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return ControlPermissionDenied(
            f"permission denied on {path}: run as root, the daemon's user, or a principal granted "
            "a role in daemon.control (or a member of control_socket_group)")
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


class _ClosedBeforeReply(Exception):
    pass


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
        """Send one request, return the reply dict (``ok`` may be False).

        The daemon closes idle connections after a few seconds (slots are few). A heartbeat
        or status on a connection it closed meanwhile is sent once more on a fresh one;
        commands (trip, reset, ...) are never resent behind the caller's back."""
        reused = self._sock is not None
        try:
            return self._request_once(obj)
        except _ClosedBeforeReply:
            if not (reused and obj.get("op") in ("heartbeat", "status")):
                raise ControlError("daemon closed the connection without a reply") from None
        return self._request_once(obj)

    def _request_once(self, obj: Mapping[str, Any]) -> dict:
        self.connect()
        assert self._sock is not None
        try:
            try:
                self._sock.sendall(orjson.dumps(obj) + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have refused us already: its reply is still readable
            while b"\n" not in self._buf:
                try:
                    chunk = self._sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.close()
                    raise _ClosedBeforeReply()
                self._buf += chunk
        except socket.timeout:
            self.close()
            raise ControlError(f"no reply from the daemon within {self.timeout_s}s") from None
        except _ClosedBeforeReply:
            raise
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

    def trip(self, reason: str, operator: str, *, venues=None, products=None, force: bool = False) -> dict:
        req: dict = {"op": "trip", "reason": reason, "operator": operator}
        if force:
            req["force"] = True
        if venues:
            req["venues"] = list(venues)
        if products:
            req["products"] = list(products)
        return self.request(req)

    def reset(self, operator: str, reason: str, *, rebase: bool = False) -> dict:
        return self.request({"op": "reset", "operator": operator, "reason": reason, "rebase": rebase})

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
        if getattr(args, "force", False):
            req["force"] = True
        return req
    if verb == "reset":
        req = {"op": "reset", "operator": args.operator, "reason": args.reason,
               "rebase": bool(getattr(args, "rebase", False))}
        if getattr(args, "unlock", False):
            req["unlock"] = True
        return req
    if verb == "reopen":
        return {"op": "reopen"}
    raise ValueError(f"not a control verb: {verb}")


def run_cli(args, socket_path: str | os.PathLike) -> int:
    path = Path(socket_path)
    want_json = bool(getattr(args, "json", False))
    colour = use_colour(sys.stdout, os.environ)
    if args.verb == "status" and getattr(args, "watch", False):
        def fetch() -> Mapping[str, Any]:
            with ControlClient(path) as client:
                return client.request({"op": "status"})

        return watch_status(fetch, out=sys.stdout, interval_s=args.interval, colour=colour,
                            count=args.count, json_lines=want_json, errors=(ControlError, OSError))
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
        print(render_status(reply, colour=colour))
    else:
        print(render_command_reply(args.verb, reply))
    return 0
