"""A minimal websocket endpoint on wsproto + a trio stream, client and server side.

trio-websocket 0.12 cannot negotiate extensions, and the subscription socket requires
permessage-deflate, so both the session and the simulator speak wsproto directly. One
class serves both roles: the receive loop answers pings itself (unless told not to, which
the simulator's fault injection uses) and records pongs for keep-alive timeouts.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

RECV_BYTES = 65536
MAX_MESSAGE_BYTES = 16 << 20


class WsClosed(Exception):
    """The connection ended (close frame, EOF, reset or protocol error)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class WsHandshakeRejected(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"websocket handshake rejected with HTTP {status}")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class WsUrl:
    secure: bool
    host: str
    port: int
    target: str

    @classmethod
    def parse(cls, url: str) -> "WsUrl":
        p = urlsplit(url)
        if p.scheme not in ("ws", "wss"):
            raise ValueError(f"not a websocket url: {url}")
        secure = p.scheme == "wss"
        target = (p.path or "/") + (f"?{p.query}" if p.query else "")
        return cls(secure, p.hostname or "", p.port or (443 if secure else 80), target)


class WsEndpoint:
    def __init__(self, stream: trio.abc.Stream, conn: WSConnection, *, clock=trio.current_time) -> None:
        self._stream = stream
        self._conn = conn
        self._send_lock = trio.Lock()
        self._clock = clock
        self._buf: list = []  # fragments of the message being assembled
        self._raw = bytearray()
        self._pos = 0
        self._size = 0
        self.closed = False
        self.answer_pings = True
        self.last_pong_s = clock()
        self.last_recv_s = clock()
        self.extensions: tuple[str, ...] = ()
        self.target = ""

    # -- sending ----------------------------------------------------------------------

    async def _send(self, event) -> None:
        if self.closed:
            raise WsClosed("connection closed")
        try:
            data = self._conn.send(event)
        except LocalProtocolError as exc:
            raise WsClosed(f"cannot send: {exc}") from None
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            # Free: take it without ``Lock.acquire``'s scheduler round (it yields even when
            # the lock is free). ``send_all`` below still checkpoints, after the bytes are
            # handed to the kernel.
            lock.acquire_nowait()
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.closed = True
            raise WsClosed(f"send failed: {type(exc).__name__}") from None
        finally:
            lock.release()

    async def send_text(self, data: bytes | str) -> None:
        await self._send(TextMessage(data=data.decode() if isinstance(data, bytes) else data))

    async def ping(self, payload: bytes = b"ks") -> None:
        await self._send(Ping(payload=payload))

    # -- receiving --------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """Next complete data message; answers pings on the way.

        Fast path (the trip path's first hop): a whole, unfragmented, unmasked text frame
        without extensions is cut straight out of the byte buffer; wsproto costs ~10 us per
        frame in pure Python. Every other frame is handed to wsproto whole, so wsproto never
        holds a partial frame while the fast path reads. Should wsproto still hold bytes of
        its own (e.g. a partial frame that came in with the handshake response), or its
        internals not look as expected, everything goes to wsproto as before.
        """
        raw = self._raw
        while True:
            for event in self._conn.events():
                msg = await self._handle(event)
                if msg is not None:
                    return msg
            pos = self._pos
            if pos < len(raw) and not self._wsproto_idle():
                try:
                    self._conn.receive_data(bytes(raw[pos:]))
                except RemoteProtocolError as exc:
                    self.closed = True
                    raise WsClosed(f"protocol error: {exc}", 1002) from None
                self._pos = pos = len(raw)
                continue
            avail = len(raw) - pos
            while avail >= 2:
                b0 = raw[pos]
                b1 = raw[pos + 1]
                n = b1 & 0x7F
                h = 2
                if n == 126:
                    if avail < 4:
                        break
                    n = int.from_bytes(raw[pos + 2:pos + 4], "big")
                    h = 4
                elif n == 127:
                    if avail < 10:
                        break
                    n = int.from_bytes(raw[pos + 2:pos + 10], "big")
                    h = 10
                if b1 & 0x80:
                    h += 4
                if n > MAX_MESSAGE_BYTES:
                    await self.abort()
                    raise WsClosed("message too large", 1009)
                end = pos + h + n
                if end > len(raw):
                    break
                if b0 == 0x81 and not b1 & 0x80 and not self._buf and not self.extensions:
                    self._pos = end
                    try:
                        return raw[pos + h:end].decode("utf-8")
                    except UnicodeDecodeError:
                        self.closed = True
                        raise WsClosed("protocol error: invalid utf-8", 1007) from None
                try:
                    self._conn.receive_data(bytes(raw[pos:end]))
                except RemoteProtocolError as exc:
                    self.closed = True
                    raise WsClosed(f"protocol error: {exc}", 1002) from None
                self._pos = pos = end
                avail = len(raw) - pos
                for event in self._conn.events():
                    msg = await self._handle(event)
                    if msg is not None:
                        return msg
            if self.closed:
                raise WsClosed("connection closed")
            if self._pos:
                del raw[:self._pos]
                self._pos = 0
            try:
                data = await self._stream.receive_some(RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.closed = True
                raise WsClosed(f"receive failed: {type(exc).__name__}", 1006) from None
            if not data:
                self.closed = True
                raise WsClosed("EOF without close frame", 1006)
            self.last_recv_s = self._clock()
            raw += data

    def _wsproto_idle(self) -> bool:
        """True only when wsproto provably holds no partial frame (private attributes,
        read defensively: any surprise means "not idle" and the slow path)."""
        try:
            conn = self._conn.connection if isinstance(self._conn, WSConnection) else self._conn
            decoder = conn._proto._frame_decoder
            buf = decoder.buffer
            return decoder.header is None and len(buf.buffer) == buf.bytes_used
        except AttributeError:
            return False

    async def _handle(self, event):
        if isinstance(event, Message):
            self._buf.append(event.data)
            self._size += len(event.data)
            if self._size > MAX_MESSAGE_BYTES:
                await self.abort()
                raise WsClosed("message too large", 1009)
            if not event.message_finished:
                return None
            parts, self._buf, self._size = self._buf, [], 0
            if isinstance(event, TextMessage):
                return "".join(parts)
            return b"".join(parts)
        if isinstance(event, Ping):
            if self.answer_pings:
                try:
                    await self._send(event.response())
                except WsClosed:
                    pass
            return None
        if isinstance(event, Pong):
            self.last_pong_s = self._clock()
            return None
        if isinstance(event, CloseConnection):
            try:
                await self._send(event.response())
            except WsClosed:
                pass
            self.closed = True
            await self._close_stream()
            raise WsClosed(f"closed by peer: {event.code} {event.reason}", event.code)
        return None

    # -- closing ----------------------------------------------------------------------

    async def _close_stream(self) -> None:
        with trio.move_on_after(1) as cs:
            cs.shield = True
            try:
                await self._stream.aclose()
            except Exception:
                pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            try:
                await self._send(CloseConnection(code=code, reason=reason))
            except WsClosed:
                pass
        self.closed = True
        await self._close_stream()

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame (the peer sees 1006)."""
        self.closed = True
        await self._close_stream()


async def _open_stream(url: WsUrl, timeout_s: float) -> trio.abc.Stream:
    with trio.fail_after(timeout_s):
        if url.secure:
            return await trio.open_ssl_over_tcp_stream(url.host, url.port, ssl_context=ssl.create_default_context())
        return await trio.open_tcp_stream(url.host, url.port)


async def connect(url: str, *, deflate: bool, timeout_s: float, clock=trio.current_time) -> WsEndpoint:
    """Client handshake; raises WsHandshakeRejected, WsClosed, OSError or trio.TooSlowError."""
    u = WsUrl.parse(url)
    stream = await _open_stream(u, timeout_s)
    conn = WSConnection(ConnectionType.CLIENT)
    ext = [PerMessageDeflate()] if deflate else []
    host = u.host if u.port in (80, 443) else f"{u.host}:{u.port}"
    try:
        with trio.fail_after(timeout_s):
            await stream.send_all(conn.send(Request(host=host, target=u.target, extensions=ext)))
            status, body = None, b""
            while True:
                data = await stream.receive_some(RECV_BYTES)
                if not data:
                    raise WsClosed("EOF during handshake", 1006)
                conn.receive_data(data)
                for event in conn.events():
                    if isinstance(event, AcceptConnection):
                        ep = WsEndpoint(stream, conn, clock=clock)
                        ep.extensions = tuple(e.name for e in event.extensions)
                        ep.target = u.target
                        return ep
                    if isinstance(event, RejectConnection):
                        status = event.status_code
                        if not event.has_body:
                            raise WsHandshakeRejected(status, b"")
                    if isinstance(event, RejectData):
                        body += event.data
                        if event.body_finished:
                            raise WsHandshakeRejected(status or 0, body)
    except BaseException:
        with trio.move_on_after(1) as cs:
            cs.shield = True
            await stream.aclose()
        raise


async def accept(
    stream: trio.abc.Stream, *, timeout_s: float, decide, clock=trio.current_time
) -> WsEndpoint | None:
    """Server handshake. ``decide(request) -> (accept: bool, extensions, status, body)``."""
    conn = WSConnection(ConnectionType.SERVER)
    with trio.move_on_after(timeout_s):
        while True:
            data = await stream.receive_some(RECV_BYTES)
            if not data:
                return None
            conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, Request):
                    ok, extensions, status, body = decide(event)
                    if ok:
                        await stream.send_all(conn.send(AcceptConnection(extensions=extensions)))
                        ep = WsEndpoint(stream, conn, clock=clock)
                        ep.target = event.target
                        ep.extensions = tuple(e.name for e in extensions)
                        return ep
                    out = conn.send(
                        RejectConnection(
                            status_code=status, headers=[(b"content-type", b"application/json")], has_body=True
                        )
                    )
                    out += conn.send(RejectData(data=body, body_finished=True))
                    await stream.send_all(out)
                    return None
    return None
