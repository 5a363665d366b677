"""A small HTTP/1.1 server on trio (h11): the simulators' REST and admin APIs and the daemon's
metrics and status endpoint.

Real sockets, keep-alive, Content-Length bodies. Handlers are plain async functions taking a
:class:`Request` and returning a :class:`Response`; routing is by (method, path). Loopback by
default. Every resource is bounded (:class:`ServerLimits`): connections held at once (past
the cap the server stops accepting, so the kernel's backlog, not the daemon's descriptors,
holds the excess), the time to read a request head, the idle time between keep-alive
requests, the head and body sizes. A local user who opens a thousand idle connections to the
metrics port cannot take the descriptors a venue reconnect needs.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson
import trio

MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_connections: int = 256
    read_timeout_s: float = 10.0  # a started request (head and body) must arrive within this
    idle_timeout_s: float = 30.0  # keep-alive: close after this long without a request
    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = MAX_BODY_BYTES
    send_timeout_s: float = 10.0


# The daemon's own endpoint serves a scraper or a browser, never a crowd.
DAEMON_LIMITS = ServerLimits(max_connections=32, read_timeout_s=5.0, idle_timeout_s=5.0,
                             max_head_bytes=8 * 1024, max_body_bytes=4 * 1024, send_timeout_s=5.0)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # raw target as sent: "/v3/orders/working?marketCode=X"
    path: str
    query_string: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    peer: str = ""
    status: tuple[int, str] | None = None  # set when the server refuses the request itself

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self):
        return orjson.loads(self.body) if self.body else None


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        return cls(status=status, body=orjson.dumps(obj), headers=dict(headers or {}))

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> "Response":
        return cls(status=status, body=text.encode(), content_type=content_type)


Handler = Callable[[Request], Awaitable[Response]]

_TOO_LARGE = Request("", "", "", "", {}, b"", status=(413, "request body too large"))


class HttpServer:
    """``routes`` maps (METHOD, path) to a handler; ``fallback`` gets everything else."""

    def __init__(self, routes: dict[tuple[str, str], Handler] | None = None, fallback: Handler | None = None,
                 *, limits: ServerLimits = ServerLimits()):
        self.routes: dict[tuple[str, str], Handler] = dict(routes or {})
        self.fallback = fallback
        self.limits = limits
        self.port: int = 0
        self.host: str = ""
        self.requests_served = 0
        self.connections_open = 0
        self.connections_closed_idle = 0
        self.requests_refused = 0

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method.upper(), path)] = handler

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED):
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        self.host, self.port = sockname[0], sockname[1]
        task_status.started(self)
        slots = trio.Semaphore(self.limits.max_connections)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, slots, nursery)

    async def _accept_loop(self, listener, slots: trio.Semaphore, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                await slots.acquire()  # at the cap: stop accepting (excess waits in the backlog)
                try:
                    stream = await listener.accept()
                except OSError as exc:  # EMFILE and friends: back off, never spin or die
                    slots.release()
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        await trio.sleep(0.1)
                        continue
                    raise
                except BaseException:
                    slots.release()
                    raise
                nursery.start_soon(self._run_stream, stream, slots)

    async def _run_stream(self, stream: trio.SocketStream, slots: trio.Semaphore) -> None:
        self.connections_open += 1
        try:
            await self._handle_stream(stream)
        finally:
            self.connections_open -= 1
            slots.release()

    async def _dispatch(self, req: Request) -> Response:
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            if self.fallback is not None:
                return await self.fallback(req)
            return Response.json({"success": False, "message": "Not found"}, status=404)
        return await handler(req)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        try:
            peer = str(stream.socket.getpeername()[0])
        except OSError:
            peer = ""
        try:
            while True:
                if not conn.trailing_data[0]:  # nothing pipelined: wait for a request, bounded
                    with trio.move_on_after(self.limits.idle_timeout_s) as idle:
                        first = await stream.receive_some(65536)
                    if idle.cancelled_caught:
                        self.connections_closed_idle += 1
                        return
                    conn.receive_data(first)
                    if not first:
                        return
                req = None
                with trio.move_on_after(self.limits.read_timeout_s):
                    req = await self._read_request(conn, stream, peer)
                if req is None:
                    return
                if req.status is not None:  # too large: answer, then close
                    self.requests_refused += 1
                    await self._send_response(conn, stream, Response.json(
                        {"success": False, "message": req.status[1]}, status=req.status[0]))
                    return
                try:
                    resp = await self._dispatch(req)
                except Exception as exc:  # a sim bug must show as a 500, not kill the server
                    resp = Response.json({"success": False, "message": f"internal error: {type(exc).__name__}"}, 500)
                self.requests_served += 1
                if resp.status < 0:  # handler asked to drop the connection without answering
                    return
                await self._send_response(conn, stream, resp)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except h11.RemoteProtocolError as exc:  # malformed or an oversized head
            self.requests_refused += 1
            with trio.move_on_after(1):
                try:
                    await self._send_response(conn, stream, Response.json(
                        {"success": False, "message": str(exc)}, status=exc.error_status_hint))
                except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.ProtocolError,
                ConnectionError):
            return
        finally:
            with trio.move_on_after(1) as cs:
                cs.shield = True
                await stream.aclose()

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream, peer: str) -> Request | None:
        head = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    if head is None:
                        return None
                continue
            if isinstance(event, h11.Request):
                head = event
                length = next((v for k, v in event.headers if k == b"content-length"), b"0")
                if int(length or 0) > self.limits.max_body_bytes:
                    return _TOO_LARGE
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.limits.max_body_bytes:
                    return _TOO_LARGE
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                parts = urlsplit(target)
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
                return Request(
                    method=head.method.decode().upper(),
                    target=target,
                    path=parts.path,
                    query_string=parts.query,
                    headers=headers,
                    body=b"".join(chunks),
                    peer=peer,
                )
            elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
                return None

    async def _send_response(self, conn: h11.Connection, stream: trio.SocketStream, resp: Response) -> None:
        headers = [("content-type", resp.content_type), ("content-length", str(len(resp.body)))]
        headers += [(k, v) for k, v in resp.headers.items()]
        out = conn.send(h11.Response(status_code=resp.status, headers=headers))
        out += conn.send(h11.Data(data=resp.body)) if resp.body else b""
        out += conn.send(h11.EndOfMessage())
        with trio.fail_after(self.limits.send_timeout_s):
            await stream.send_all(out)
