"""A small HTTP/1.1 server on trio (h11) for the simulated exchanges' REST and admin APIs.

Real sockets, keep-alive, Content-Length bodies. Handlers are plain async functions taking a
:class:`Request` and returning a :class:`Response`; routing is by (method, path). It is
loopback-only by default: the simulators are test doubles, not services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson
import trio

MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # raw target as sent: "/v3/orders/working?marketCode=X"
    path: str
    query_string: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    peer: str = ""

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


class HttpServer:
    """``routes`` maps (METHOD, path) to a handler; ``fallback`` gets everything else."""

    def __init__(self, routes: dict[tuple[str, str], Handler] | None = None, fallback: Handler | None = None):
        self.routes: dict[tuple[str, str], Handler] = dict(routes or {})
        self.fallback = fallback
        self.port: int = 0
        self.host: str = ""
        self.requests_served = 0

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
        await trio.serve_listeners(self._handle_stream, listeners)

    async def _dispatch(self, req: Request) -> Response:
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            if self.fallback is not None:
                return await self.fallback(req)
            return Response.json({"success": False, "message": "Not found"}, status=404)
        return await handler(req)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            peer = str(stream.socket.getpeername()[0])
        except OSError:
            peer = ""
        try:
            while True:
                req = await self._read_request(conn, stream, peer)
                if req is None:
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
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, ConnectionError):
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
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    return None
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
        await stream.send_all(out)
