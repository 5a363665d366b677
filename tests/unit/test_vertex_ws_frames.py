"""ws.Frames (the post-handshake websocket codec) against wsproto, both directions, and the
protocol checks it must make. Sans-io: no sockets (see integration/test_vertex_ws.py)."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from killswitch.net import ws as wsmod
from killswitch.net.ws import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameError, Frames

DEFLATE_VARIANTS = [
    None,
    {},
    {"client_no_context_takeover": True},
    {"server_no_context_takeover": True},
    {"client_no_context_takeover": True, "server_no_context_takeover": True},
    {"client_max_window_bits": 9, "server_max_window_bits": 10},
]


def _handshake(variant):
    """A wsproto client and server after the handshake, plus their negotiated extensions."""
    c = WSConnection(ConnectionType.CLIENT)
    s = WSConnection(ConnectionType.SERVER)
    c_ext = [] if variant is None else [PerMessageDeflate(**variant)]
    s.receive_data(c.send(Request(host="x", target="/v1/subscribe", extensions=c_ext)))
    (req,) = [e for e in s.events() if isinstance(e, Request)]
    s_ext = [PerMessageDeflate()] if req.extensions else []
    c.receive_data(s.send(AcceptConnection(extensions=s_ext)))
    (acc,) = [e for e in c.events() if isinstance(e, AcceptConnection)]
    return c, s, wsmod._negotiated_deflate(acc.extensions), wsmod._negotiated_deflate(s_ext)


def _drain(frames: Frames):
    out = []
    while (ev := frames.next_event()) is not None:
        out.append(ev)
    return out


def _wsproto_messages(conn: WSConnection):
    """Complete messages (str/bytes) and control events from a wsproto connection."""
    out, parts = [], []
    for e in conn.events():
        if isinstance(e, Message):
            parts.append(e.data)
            if e.message_finished:
                out.append(("".join(parts) if isinstance(e, TextMessage) else b"".join(parts)))
                parts = []
        else:
            out.append(e)
    return out


MESSAGES = [
    '{"type":"order_update","product_id":2,"reason":"placed"}',
    "",
    b"",
    b"\x00\x01binary\xff",
    "é" * 70,  # 140 bytes: 16-bit length
    "x" * 70_000,  # 64-bit length
    bytes(os.urandom(300)),  # incompressible
    '{"cancel_orders":{"tx":{"nonce":"1"}}}' * 3,
]


@pytest.mark.parametrize("variant", DEFLATE_VARIANTS)
def test_frames_server_to_wsproto_client_and_back(variant):
    c, s, c_ext, s_ext = _handshake(variant)
    ours = Frames(client=False, deflate=s_ext)  # we are the server
    assert ours.deflate == (variant is not None)
    for m in MESSAGES * 2:  # twice: context takeover across messages
        c.receive_data(ours.encode_message(m))
        assert _wsproto_messages(c) == [m]
        # and the wsproto client -> our server
        ours.receive_data(c.send(TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m)))
        assert _drain(ours) == [(OP_TEXT if isinstance(m, str) else OP_BINARY, m)]


@pytest.mark.parametrize("variant", DEFLATE_VARIANTS)
def test_frames_client_to_wsproto_server_and_back(variant):
    c, s, c_ext, s_ext = _handshake(variant)
    ours = Frames(client=True, deflate=c_ext)  # we are the client
    for m in MESSAGES * 2:
        s.receive_data(ours.encode_message(m))
        assert _wsproto_messages(s) == [m]
        ours.receive_data(s.send(TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m)))
        assert _drain(ours) == [(OP_TEXT if isinstance(m, str) else OP_BINARY, m)]


@pytest.mark.parametrize("variant", [None, {}])
def test_fragmented_messages_with_interleaved_control_frames_and_byte_by_byte_feeding(variant):
    c, s, c_ext, s_ext = _handshake(variant)
    ours = Frames(client=True, deflate=c_ext)
    wire = s.send(TextMessage(data="hello, ", message_finished=False))
    wire += s.send(Ping(payload=b"p1"))
    wire += s.send(TextMessage(data="wörld", message_finished=False))
    wire += s.send(TextMessage(data="!", message_finished=True))
    wire += s.send(BytesMessage(data=b"\x01" * 200, message_finished=False))
    wire += s.send(BytesMessage(data=b"\x02" * 200, message_finished=True))
    wire += s.send(Pong(payload=b"p2"))
    wire += s.send(CloseConnection(code=1001, reason="bye"))
    events = []
    for i in range(len(wire)):  # one byte at a time: every partial-header path
        ours.receive_data(wire[i:i + 1])
        events += _drain(ours)
    assert events == [(OP_PING, b"p1"), (OP_TEXT, "hello, wörld!"), (OP_BINARY, b"\x01" * 200 + b"\x02" * 200),
                      (OP_PONG, b"p2"), (OP_CLOSE, (1001, "bye"))]


def test_control_frames_and_close_encoding_roundtrip():
    c, s, c_ext, s_ext = _handshake({})
    ours = Frames(client=True, deflate=c_ext)
    s.receive_data(ours.encode_ping(b"abc") + ours.encode_pong(b"def") + ours.encode_close(1000, "done"))
    evs = list(s.events())
    assert isinstance(evs[0], Ping) and evs[0].payload == b"abc"
    assert isinstance(evs[1], Pong) and evs[1].payload == b"def"
    assert isinstance(evs[2], CloseConnection) and (evs[2].code, evs[2].reason) == (1000, "done")
    ours2 = Frames(client=False)
    for code, reason, want in ((None, "", (1005, "")), (1005, "", (1005, "")), (1006, "x", (1000, "x")),
                               (4000, "é" * 100, None)):
        back = Frames(client=True)
        back.receive_data(ours2.encode_close(code, reason))
        (op, got), = _drain(back)
        assert op == OP_CLOSE
        if want is not None:
            assert got == want
        else:  # reason cut to 123 bytes on a character boundary
            assert got[0] == 4000 and got[1] == "é" * 61


def _raw(b0: int, payload: bytes, *, masked: bool, length_bytes: bytes | None = None) -> bytes:
    n = len(payload)
    if length_bytes is None:
        length_bytes = bytes((n,)) if n < 126 else (bytes((126,)) + n.to_bytes(2, "big") if n < 65536
                                                    else bytes((127,)) + n.to_bytes(8, "big"))
    if masked:
        mask = b"\x01\x02\x03\x04"
        return bytes((b0, length_bytes[0] | 0x80)) + length_bytes[1:] + mask + wsmod._xor_mask(payload, mask)
    return bytes((b0,)) + length_bytes + payload


@pytest.mark.parametrize("frame, code", [
    (_raw(0x81, b"hi", masked=True), 1002),  # a server must not mask
    (_raw(0xC1, b"hi", masked=False), 1002),  # RSV1 without deflate
    (_raw(0xA1, b"hi", masked=False), 1002),  # RSV2
    (_raw(0x83, b"hi", masked=False), 1002),  # opcode 3
    (_raw(0x8B, b"", masked=False), 1002),  # opcode 0xB
    (_raw(0x09, b"", masked=False), 1002),  # fragmented ping
    (_raw(0x89, b"x" * 126, masked=False), 1002),  # control payload > 125
    (_raw(0x80, b"x", masked=False), 1002),  # continuation without a message
    (_raw(0x01, b"a", masked=False) + _raw(0x81, b"b", masked=False), 1002),  # new message mid-fragment
    (_raw(0x81, b"x" * 10, masked=False, length_bytes=b"\x7e\x00\x0a"), 1002),  # 16-bit for a short length
    (_raw(0x81, b"x" * 10, masked=False, length_bytes=b"\x7f" + (10).to_bytes(8, "big")), 1002),
    (b"\x81\x7f" + (1 << 63).to_bytes(8, "big"), 1002),  # 64-bit length with the high bit
    (_raw(0x81, b"\xff\xfe", masked=False), 1007),  # text not UTF-8
    (_raw(0x88, b"\x03", masked=False), 1002),  # close with 1 byte
    (_raw(0x88, (999).to_bytes(2, "big"), masked=False), 1002),
    (_raw(0x88, (1005).to_bytes(2, "big"), masked=False), 1002),  # local-only code
    (_raw(0x88, (1016).to_bytes(2, "big"), masked=False), 1002),  # reserved code
    (_raw(0x88, (5000).to_bytes(2, "big"), masked=False), 1002),
    (_raw(0x88, (1000).to_bytes(2, "big") + b"\xff", masked=False), 1007),  # reason not UTF-8
])
def test_client_side_protocol_violations(frame, code):
    ours = Frames(client=True)
    ours.receive_data(frame)
    with pytest.raises(FrameError) as exc:
        _drain(ours)
    assert exc.value.code == code


def test_server_side_requires_masking():
    ours = Frames(client=False)
    ours.receive_data(_raw(0x81, b"hi", masked=False))
    with pytest.raises(FrameError):
        ours.next_event()
    ours = Frames(client=False)
    ours.receive_data(_raw(0x81, b"hi", masked=True))
    assert ours.next_event() == (OP_TEXT, "hi")


def test_deflate_rules_rsv1_on_continuation_and_bad_data():
    c, s, c_ext, _ = _handshake({})
    ours = Frames(client=True, deflate=c_ext)
    ours.receive_data(_raw(0x41, b"", masked=False) + _raw(0xC0, b"", masked=False))  # RSV1 on continuation
    with pytest.raises(FrameError) as exc:
        _drain(ours)
    assert exc.value.code == 1002
    ours = Frames(client=True, deflate=c_ext)
    ours.receive_data(_raw(0xC1, b"\xff\xff\xff\xff", masked=False))  # not deflate data
    with pytest.raises(FrameError) as exc:
        _drain(ours)
    assert exc.value.code == 1007


def test_message_size_is_bounded_including_inflated_size():
    ours = Frames(client=True, max_message_bytes=1000)
    ours.receive_data(_raw(0x82, b"x" * 1001, masked=False))
    with pytest.raises(FrameError) as exc:
        ours.next_event()
    assert exc.value.code == 1009
    # Fragments that add up past the limit.
    ours = Frames(client=True, max_message_bytes=1000)
    ours.receive_data(_raw(0x02, b"x" * 600, masked=False) + _raw(0x80, b"x" * 600, masked=False))
    with pytest.raises(FrameError):
        _drain(ours)
    # A deflate bomb: 60 bytes on the wire, 10 MB inflated; refused without inflating it all.
    c, s, c_ext, _ = _handshake({})
    ours = Frames(client=True, deflate=c_ext, max_message_bytes=100_000)
    comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    bomb = (comp.compress(b"\x00" * 10_000_000) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(bomb) < 20_000
    ours.receive_data(_raw(0xC2, bomb, masked=False))
    with pytest.raises(FrameError) as exc:
        ours.next_event()
    assert exc.value.code == 1009


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1, max_size=12),
       st.sampled_from(DEFLATE_VARIANTS), st.integers(1, 50))
def test_property_roundtrip_both_directions_any_chunking(msgs, variant, chunk):
    c, s, c_ext, s_ext = _handshake(variant)
    client, server = Frames(client=True, deflate=c_ext), Frames(client=False, deflate=s_ext)
    wire_cs = b"".join(client.encode_message(m) for m in msgs)
    wire_sc = b"".join(server.encode_message(m) for m in msgs)
    got_s, got_c = [], []
    for i in range(0, max(len(wire_cs), len(wire_sc)), chunk):
        server.receive_data(wire_cs[i:i + chunk])
        client.receive_data(wire_sc[i:i + chunk])
        got_s += _drain(server)
        got_c += _drain(client)
    want = [(OP_TEXT if isinstance(m, str) else OP_BINARY, m) for m in msgs]
    assert got_s == want and got_c == want
    # And wsproto reads what our client wrote.
    s.receive_data(wire_cs)
    assert _wsproto_messages(s) == msgs
