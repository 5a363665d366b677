"""A minimal websocket endpoint on trio streams, client and server side.

trio-websocket 0.12 cannot negotiate extensions, and the subscription socket requires
permessage-deflate, so both the session and the simulator speak websocket through this
module. The opening handshake (HTTP/1.1 upgrade, extension negotiation) is wsproto's; after
it, frames are encoded and parsed by :class:`Frames` (RFC 6455 framing + RFC 7692
permessage-deflate with the negotiated window bits and context-takeover rules): a complete
single-frame message takes a handful of byte operations instead of wsproto's generator
pipeline (hot: ~3 vs ~15 us to receive a deflated 200-byte frame), which sits on the trip
path twice (the breaching frame in, the cancel out). One class serves both roles: the
receive loop answers pings itself (unless told not to, which the simulator's fault
injection uses) and records pongs for keep-alive timeouts.
"""

from __future__ import annotations

import os
import ssl
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.extensions import PerMessageDeflate

RECV_BYTES = 65536
MAX_MESSAGE_BYTES = 16 << 20

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_LOCAL_ONLY_CLOSE_CODES = (1005, 1006, 1015)
_KNOWN_PROTOCOL_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))


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


class FrameError(Exception):
    """The peer broke the protocol; ``code`` is the close code to answer with."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


class _MaskPool:
    """Masking keys from the OS CSPRNG (RFC 6455 §5.3), drawn 4 KiB at a time instead of one
    getrandom() system call per frame."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def reset(self) -> None:
        self._buf, self._pos = b"", 0

    def take(self) -> bytes:
        pos = self._pos
        if pos + 4 > len(self._buf):
            self._buf = os.urandom(4096)
            pos = 0
        self._pos = pos + 4
        return self._buf[pos:pos + 4]


_masks = _MaskPool()
os.register_at_fork(after_in_child=_masks.reset)  # a forked child never reuses the parent's keys


def _xor_mask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class Frames:
    """Sans-io websocket framing after the handshake (RFC 6455 + RFC 7692).

    ``receive_data(bytes)`` buffers; ``next_event()`` returns ``(opcode, payload)`` for the
    next complete message (text as ``str``, binary as ``bytes``) or control frame (ping /
    pong payload as ``bytes``; close as ``(code, reason)``), or ``None`` when more bytes are
    needed; it raises :class:`FrameError` on a protocol violation. ``encode_*`` build frames
    (masked when we are the client, compressed when deflate was negotiated).

    Checks, as wsproto does them: masking direction, reserved bits (RSV1 only with deflate,
    on the first frame of a data message), control frames (FIN set, payload <= 125), opcode
    values, continuation order, minimal length encoding, close codes and reasons, UTF-8 of
    text messages (1007), message size (1009; the inflater is bounded, no zip bombs).
    """

    __slots__ = ("client", "max_message_bytes", "_buf", "_op", "_compressed", "_parts", "_size",
                 "_deflate", "_in_bits", "_out_bits", "_in_reset", "_out_reset", "_inflater", "_deflater")

    def __init__(self, *, client: bool, deflate: PerMessageDeflate | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.client = client
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._op: int | None = None  # opcode of the fragmented message in progress
        self._compressed = False
        self._parts: list[bytes] = []
        self._size = 0
        self._deflate = deflate is not None
        if deflate is not None:
            # Each side compresses with its own window and context-takeover parameters.
            c_bits, s_bits = int(deflate.client_max_window_bits), int(deflate.server_max_window_bits)
            c_reset, s_reset = deflate.client_no_context_takeover, deflate.server_no_context_takeover
            self._in_bits, self._out_bits = (s_bits, c_bits) if client else (c_bits, s_bits)
            self._in_reset, self._out_reset = (s_reset, c_reset) if client else (c_reset, s_reset)
        else:
            self._in_bits = self._out_bits = 15
            self._in_reset = self._out_reset = False
        self._inflater = None
        self._deflater = None

    @property
    def deflate(self) -> bool:
        return self._deflate

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    # -- parsing --------------------------------------------------------------------------

    def next_event(self):
        buf = self._buf
        while True:
            n = len(buf)
            if n < 2:
                return None
            b0 = buf[0]
            b1 = buf[1]
            fin = b0 & 0x80
            rsv = b0 & 0x70
            op = b0 & 0x0F
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if n < 4:
                    return None
                length = (buf[2] << 8) | buf[3]
                pos = 4
                if length < 126:
                    raise FrameError("payload length not minimally encoded")
            elif length == 127:
                if n < 10:
                    return None
                length = int.from_bytes(buf[2:10], "big")
                pos = 10
                if length >> 63:
                    raise FrameError("payload length with the high bit set")
                if length < 65536:
                    raise FrameError("payload length not minimally encoded")
            masked = b1 & 0x80
            if masked:
                if self.client:
                    raise FrameError("server frames must not be masked")
                if n < pos + 4:
                    return None
                mask = bytes(buf[pos:pos + 4])
                pos += 4
            elif not self.client:
                raise FrameError("client frames must be masked")
            if op >= 0x8:
                if op > OP_PONG:
                    raise FrameError(f"unknown opcode {op:#x}")
                if not fin:
                    raise FrameError("fragmented control frame")
                if length > 125:
                    raise FrameError("control frame payload over 125 bytes")
                if rsv:
                    raise FrameError("reserved bits set on a control frame")
            else:
                if op > OP_BINARY:
                    raise FrameError(f"unknown opcode {op:#x}")
                if rsv & 0x30:
                    raise FrameError("reserved bits RSV2/RSV3 set")
                if op == OP_CONT:
                    if self._op is None:
                        raise FrameError("continuation frame without a message")
                    if rsv:
                        raise FrameError("RSV1 set on a continuation frame")
                else:
                    if self._op is not None:
                        raise FrameError("new message inside a fragmented message")
                    if rsv and not self._deflate:
                        raise FrameError("RSV1 set without permessage-deflate")
                if length > self.max_message_bytes - self._size:
                    raise FrameError("message too large", 1009)
            end = pos + length
            if n < end:
                return None
            payload = bytes(buf[pos:end])
            del buf[:end]
            if masked:
                payload = _xor_mask(payload, mask)
            if op >= 0x8:
                if op == OP_CLOSE:
                    return op, self._parse_close(payload)
                return op, payload
            if op != OP_CONT:
                self._op = op
                self._compressed = bool(rsv)
            if self._compressed:
                payload = self._inflate(payload, False)
            self._size += len(payload)
            if not fin:
                self._parts.append(payload)
                continue
            if self._compressed:
                tail = self._inflate(_DEFLATE_TAIL, True)
                if tail:
                    self._size += len(tail)
                    self._parts.append(payload)
                    payload = tail
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts = []
            op, self._op, self._size = self._op, None, 0
            if op == OP_TEXT:
                try:
                    return op, payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise FrameError("text message is not valid UTF-8", 1007) from None
            return op, payload

    def _inflate(self, data: bytes, last: bool) -> bytes:
        d = self._inflater
        if d is None:
            d = self._inflater = zlib.decompressobj(-self._in_bits)
        room = self.max_message_bytes - self._size
        try:
            out = d.decompress(data, room + 1)
        except zlib.error:
            raise FrameError("invalid deflate data", 1007) from None
        if len(out) > room or d.unconsumed_tail:
            raise FrameError("message too large", 1009)
        if last and self._in_reset:
            self._inflater = None
        return out

    @staticmethod
    def _parse_close(payload: bytes) -> tuple[int, str]:
        if not payload:
            return 1005, ""
        if len(payload) == 1:
            raise FrameError("close frame with a 1-byte payload")
        code = (payload[0] << 8) | payload[1]
        if code < 1000 or code > 4999 or code in _LOCAL_ONLY_CLOSE_CODES:
            raise FrameError(f"invalid close code {code}")
        if code < 3000 and code not in _KNOWN_PROTOCOL_CLOSE_CODES:
            raise FrameError(f"reserved close code {code}")
        try:
            return code, payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("close reason is not valid UTF-8", 1007) from None

    # -- encoding -------------------------------------------------------------------------

    def _frame(self, b0: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            head = bytes((b0, n | 0x80)) if self.client else bytes((b0, n))
        elif n < 65536:
            head = bytes((b0, 126 | 0x80 if self.client else 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((b0, 127 | 0x80 if self.client else 127)) + n.to_bytes(8, "big")
        if self.client:
            mask = _masks.take()
            return head + mask + _xor_mask(payload, mask)
        return head + payload

    def encode_message(self, data: bytes | str) -> bytes:
        """One whole message in one frame: text for ``str``, binary for ``bytes``."""
        if isinstance(data, str):
            return self._encode_data(OP_TEXT, data.encode("utf-8"))
        return self._encode_data(OP_BINARY, bytes(data))

    def encode_text(self, data: bytes | str) -> bytes:
        """A text message; ``bytes`` must be UTF-8 (e.g. JSON from orjson) and are sent as is."""
        if isinstance(data, str):
            return self._encode_data(OP_TEXT, data.encode("utf-8"))
        data = bytes(data)
        data.decode("utf-8")  # validation only: a text frame must carry UTF-8
        return self._encode_data(OP_TEXT, data)

    def _encode_data(self, op: int, payload: bytes) -> bytes:
        if self._deflate:
            c = self._deflater
            if c is None:
                c = self._deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self._out_bits)
            payload = (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
            if self._out_reset:
                self._deflater = None
            return self._frame(0xC0 | op, payload)  # FIN + RSV1 (compressed)
        return self._frame(0x80 | op, payload)

    def encode_ping(self, payload: bytes = b"") -> bytes:
        return self._frame(0x80 | OP_PING, bytes(payload)[:125])

    def encode_pong(self, payload: bytes = b"") -> bytes:
        return self._frame(0x80 | OP_PONG, bytes(payload)[:125])

    def encode_close(self, code: int | None = 1000, reason: str = "") -> bytes:
        if code is None or code == 1005:
            return self._frame(0x80 | OP_CLOSE, b"")
        if code in _LOCAL_ONLY_CLOSE_CODES:
            code = 1000
        raw = reason.encode("utf-8")[:123]
        while raw:
            try:
                raw.decode("utf-8")
                break
            except UnicodeDecodeError:
                raw = raw[:-1]  # never cut a character in half
        return self._frame(0x80 | OP_CLOSE, code.to_bytes(2, "big") + raw)


class WsEndpoint:
    """One open websocket. ``frames`` is a :class:`Frames`; a wsproto ``Connection`` after its
    handshake is accepted too (its role and negotiated permessage-deflate are taken over)."""

    def __init__(self, stream: trio.abc.Stream, frames, *, clock=trio.current_time) -> None:
        if not isinstance(frames, Frames):
            conn = getattr(frames, "connection", None) or frames  # WSConnection or Connection
            frames = Frames(client=bool(conn.client),
                            deflate=_negotiated_deflate(getattr(conn._proto, "extensions", ())))
        self._stream = stream
        self._frames = frames
        self._send_lock = trio.Lock()
        self._clock = clock
        self._close_sent = False
        self.closed = False
        self.answer_pings = True
        self.last_pong_s = clock()
        self.last_recv_s = clock()
        self.extensions: tuple[str, ...] = ("permessage-deflate",) if frames.deflate else ()
        self.target = ""

    # -- sending ----------------------------------------------------------------------

    async def _send_bytes(self, data: bytes) -> None:
        # The frame was encoded by the caller without a checkpoint in between, and the lock
        # is FIFO: frames hit the socket in encoding order (the deflate context needs that).
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

    def _check_open(self) -> None:
        if self.closed:
            raise WsClosed("connection closed")
        if self._close_sent:
            raise WsClosed("cannot send: close frame already sent")

    async def send_text(self, data: bytes | str) -> None:
        self._check_open()
        await self._send_bytes(self._frames.encode_text(data))

    async def send_bytes(self, data: bytes) -> None:
        self._check_open()
        await self._send_bytes(self._frames.encode_message(bytes(data)))

    async def ping(self, payload: bytes = b"ks") -> None:
        self._check_open()
        await self._send_bytes(self._frames.encode_ping(payload))

    async def _send_close(self, code: int | None, reason: str = "") -> None:
        if self.closed or self._close_sent:
            return
        self._close_sent = True
        try:
            await self._send_bytes(self._frames.encode_close(code, reason))
        except WsClosed:
            pass

    # -- receiving --------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """Next complete data message; answers pings on the way."""
        frames = self._frames
        while True:
            try:
                ev = frames.next_event()
            except FrameError as exc:
                await self._send_close(exc.code, str(exc))
                self.closed = True
                await self._close_stream()
                raise WsClosed(f"protocol error: {exc}", exc.code) from None
            if ev is not None:
                op, payload = ev
                if op <= OP_BINARY:
                    return payload
                await self._control(op, payload)
                continue
            if self.closed:
                raise WsClosed("connection closed")
            try:
                data = await self._stream.receive_some(RECV_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.closed = True
                raise WsClosed(f"receive failed: {type(exc).__name__}", 1006) from None
            if not data:
                self.closed = True
                raise WsClosed("EOF without close frame", 1006)
            self.last_recv_s = self._clock()
            frames.receive_data(data)

    async def _control(self, op: int, payload) -> None:
        if op == OP_PING:
            if self.answer_pings and not self.closed and not self._close_sent:
                try:
                    await self._send_bytes(self._frames.encode_pong(payload))
                except WsClosed:
                    pass
            return
        if op == OP_PONG:
            self.last_pong_s = self._clock()
            return
        code, reason = payload  # OP_CLOSE
        await self._send_close(code, reason)  # echo the code (1005: empty close frame)
        self.closed = True
        await self._close_stream()
        raise WsClosed(f"closed by peer: {code} {reason}", code)

    # -- closing ----------------------------------------------------------------------

    async def _close_stream(self) -> None:
        with trio.move_on_after(1) as cs:
            cs.shield = True
            try:
                await self._stream.aclose()
            except Exception:
                pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._send_close(code, reason)
        self.closed = True
        await self._close_stream()

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame (the peer sees 1006)."""
        self.closed = True
        await self._close_stream()


def _negotiated_deflate(extensions) -> PerMessageDeflate | None:
    for ext in extensions or ():
        if isinstance(ext, PerMessageDeflate) and ext.enabled():
            return ext
    return None


def _trailing_bytes(conn: WSConnection) -> bytes:
    """Bytes that arrived after the handshake in the same read (the first frames)."""
    h11c = getattr(conn.handshake, "_h11_connection", None)
    trailing = getattr(h11c, "trailing_data", (b"", False))
    return bytes(trailing[0])


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
                        frames = Frames(client=True, deflate=_negotiated_deflate(event.extensions))
                        frames.receive_data(_trailing_bytes(conn))
                        ep = WsEndpoint(stream, frames, clock=clock)
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
                        frames = Frames(client=False, deflate=_negotiated_deflate(extensions))
                        frames.receive_data(_trailing_bytes(conn))
                        ep = WsEndpoint(stream, frames, clock=clock)
                        ep.target = event.target
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
