"""ws.connect / ws.accept over real loopback sockets: handshake edge cases."""

from __future__ import annotations

from functools import partial

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from killswitch.net import ws as wsmod


async def test_first_frame_in_the_same_read_as_the_handshake_response_is_kept():
    """A server that writes its first frame together with the 101 response."""
    async def server(stream):
        conn = WSConnection(ConnectionType.SERVER)
        while True:
            conn.receive_data(await stream.receive_some(65536))
            reqs = [e for e in conn.events() if isinstance(e, Request)]
            if reqs:
                break
        ext = [PerMessageDeflate()] if reqs[0].extensions else []
        out = conn.send(AcceptConnection(extensions=ext)) + conn.send(TextMessage(data="first"))
        await stream.send_all(out)  # one write: 101 + first frame
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            listeners = await n.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            for deflate in (False, True):
                ep = await wsmod.connect(f"ws://127.0.0.1:{port}/v1/subscribe", deflate=deflate, timeout_s=5)
                assert await ep.receive() == "first"
                await ep.aclose()
            n.cancel_scope.cancel()


async def test_accept_keeps_a_frame_sent_with_the_upgrade_request():
    got = []

    async def handler(stream):
        ep = await wsmod.accept(stream, timeout_s=5, decide=lambda req: (True, [], 0, b""))
        got.append(await ep.receive())
        await ep.send_text(b'{"ok":true}')
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            listeners = await n.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = WSConnection(ConnectionType.CLIENT)
            out = conn.send(Request(host=f"127.0.0.1:{port}", target="/v1/ws"))
            frames = wsmod.Frames(client=True)
            await stream.send_all(out + frames.encode_text("pipelined"))  # one write
            while True:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if any(isinstance(e, AcceptConnection) for e in conn.events()):
                    frames.receive_data(wsmod._trailing_bytes(conn))
                    break
            while (ev := frames.next_event()) is None:
                frames.receive_data(await stream.receive_some(65536))
            assert ev == (wsmod.OP_TEXT, '{"ok":true}') and got == ["pipelined"]
            await stream.aclose()
            n.cancel_scope.cancel()
