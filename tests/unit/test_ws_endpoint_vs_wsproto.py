"""WsEndpoint.receive against a wsproto server over a memory stream: every length form, split
reads, fragments with control frames between, binary, close (the endpoint's own codec must
agree with wsproto, the reference implementation)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from killswitch.net.ws import WsClosed, WsEndpoint


def pair():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = WsEndpoint(client_stream, Connection(ConnectionType.CLIENT))
    server = Connection(ConnectionType.SERVER)
    return client, server, server_stream


async def feed(stream, data: bytes, step: int | None) -> None:
    if step is None:
        await stream.send_all(data)
        return
    for i in range(0, len(data), step):
        await stream.send_all(data[i:i + step])


@pytest.mark.parametrize("step", [None, 1, 7, 1000])
async def test_text_frames_of_every_length_form_and_split_reads(step, autojump_clock):
    # Byte-at-a-time feeding is CPU-bound: on virtual time the bound checks for a hang, not
    # for the machine's load.
    with trio.fail_after(10):
        client, server, sstream = pair()
        texts = ["", "a", "é" * 62, "x" * 125, "y" * 126, "z" * 65535, "w" * 65536, '{"table":"order","data":[]}']
        data = b"".join(server.send(TextMessage(data=t)) for t in texts)
        async with trio.open_nursery() as n:
            n.start_soon(feed, sstream, data, step)
            got = [await client.receive() for _ in texts]
        assert got == texts


async def test_fragments_pings_binary_and_close_go_through_wsproto():
    with trio.fail_after(10):
        client, server, sstream = pair()
        data = b"".join([
            server.send(TextMessage(data="one")),
            server.send(TextMessage(data="fra", message_finished=False)),
            server.send(Ping(payload=b"p1")),  # control frame between fragments
            server.send(TextMessage(data="gmented", message_finished=True)),
            server.send(BytesMessage(data=b"\x00\x01")),
            server.send(TextMessage(data="two")),
            server.send(CloseConnection(code=1000, reason="bye")),
        ])
        await sstream.send_all(data)
        assert await client.receive() == "one"
        assert await client.receive() == "fragmented"
        assert await client.receive() == b"\x00\x01"
        assert await client.receive() == "two"
        with pytest.raises(WsClosed) as info:
            await client.receive()
        assert info.value.code == 1000
        # the client answered the ping (and the close) on its own
        server.receive_data(await sstream.receive_some(65536))
        kinds = [type(e).__name__ for e in server.events()]
        assert "Pong" in kinds


async def test_invalid_utf8_is_1007():
    with trio.fail_after(10):
        client, server, sstream = pair()
        await sstream.send_all(b"\x81\x02\xff\xfe")
        with pytest.raises(WsClosed) as info:
            await client.receive()
        assert info.value.code == 1007


async def test_masked_server_frame_is_a_protocol_error():
    with trio.fail_after(10):
        client, server, sstream = pair()
        await sstream.send_all(b"\x81\x81abcd" + bytes([ord("x") ^ ord("a")]))
        with pytest.raises(WsClosed) as info:
            await client.receive()
        assert info.value.code == 1002


async def test_eof_mid_frame_is_1006():
    with trio.fail_after(10):
        client, server, sstream = pair()
        await sstream.send_all(server.send(TextMessage(data="abcdef"))[:4])
        await sstream.aclose()
        with pytest.raises(WsClosed) as info:
            await client.receive()
        assert info.value.code == 1006

