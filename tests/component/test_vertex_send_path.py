"""The Nado send path (ws.WsEndpoint + gateway.GatewayConn) over in-memory trio streams.

What the trip path relies on: a request reaches the stream without a scheduler round when
nothing else is sending (no other task runs first), concurrent senders still hit the wire in
the order their frames were encoded (deflate context, FIFO reply matching), a cancelled
caller never leaves half a frame behind, and a send that cannot complete kills the socket
and fails every pending request as unknown.
"""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing

from killswitch.venues.base import OutcomeUnknown
from killswitch.net import ws as wsmod
from killswitch.venues.vertex.gateway import GatewayConn
from killswitch.net.ws import Frames, WsEndpoint


class RecordingStream(trio.abc.Stream):
    """Wraps a stream; notes who ran before each send_all reached it."""

    def __init__(self, inner: trio.abc.Stream, log: list) -> None:
        self.inner = inner
        self.log = log

    async def send_all(self, data) -> None:
        self.log.append(("send_all", bytes(data)))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _reader(gw: GatewayConn) -> None:
    try:
        await gw.reader()
    except wsmod.WsClosed:
        pass  # the connection was killed on purpose


def _server_messages(data: bytes, deflate=None) -> list:
    fr = Frames(client=False, deflate=deflate)
    fr.receive_data(data)
    out = []
    while (ev := fr.next_event()) is not None:
        out.append(ev[1])
    return out


async def test_a_request_is_on_the_stream_without_a_scheduler_round():
    """A spinner task counts scheduler rounds; the request must reach ``send_all`` before
    the caller yields once (Lock.acquire would yield even with the lock free)."""
    with trio.fail_after(5):
        a, b = trio.testing.memory_stream_pair()
        log: list = []
        rounds = [0]

        class Counting(RecordingStream):
            async def send_all(self, data) -> None:
                log.append(rounds[0])
                await self.inner.send_all(data)

        gw = GatewayConn(WsEndpoint(Counting(a, log), Frames(client=True)), venue="v")

        async def spinner():
            while True:
                rounds[0] += 1
                await trio.sleep(0)

        async with trio.open_nursery() as n:
            n.start_soon(_reader, gw)
            n.start_soon(spinner)
            await trio.sleep(0.01)
            start = rounds[0]
            with pytest.raises(OutcomeUnknown):  # nobody answers: the reply times out
                await gw.request(b'{"cancel_orders":{}}', expect_request_type="execute_cancel_orders",
                                 timeout_s=0.05)
            assert log[0] == start
            n.cancel_scope.cancel()


async def test_concurrent_deflate_senders_keep_encoding_order_under_backpressure():
    with trio.fail_after(10):
        a, b = trio.testing.lockstep_stream_pair()  # send_all blocks until the peer reads
        c, s, c_ext, s_ext = _deflate_pair()
        ep = WsEndpoint(a, Frames(client=True, deflate=c_ext))
        got = bytearray()
        msgs = [orjson.dumps({"i": i, "pad": "x" * (i % 7) * 50}) for i in range(40)]
        async with trio.open_nursery() as n:
            async def reader():
                while True:
                    data = await b.receive_some(7)  # slow, small reads: senders queue on the lock
                    if not data:
                        return
                    got.extend(data)

            n.start_soon(reader)
            async with trio.open_nursery() as senders:
                for m in msgs:
                    senders.start_soon(ep.send_text, m)
            await trio.testing.wait_all_tasks_blocked()
            n.cancel_scope.cancel()
        # Every message decodes (one shared deflate context), each exactly once.
        out = _server_messages(bytes(got), s_ext)
        assert sorted(out) == sorted(m.decode() for m in msgs)


def _deflate_pair():
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request
    from wsproto.extensions import PerMessageDeflate

    c = WSConnection(ConnectionType.CLIENT)
    s = WSConnection(ConnectionType.SERVER)
    s.receive_data(c.send(Request(host="x", target="/", extensions=[PerMessageDeflate()])))
    list(s.events())
    s_ext = [PerMessageDeflate()]
    c.receive_data(s.send(AcceptConnection(extensions=s_ext)))
    (acc,) = list(c.events())
    return c, s, wsmod._negotiated_deflate(acc.extensions), wsmod._negotiated_deflate(s_ext)


async def test_gateway_fifo_matches_replies_to_requests_sent_concurrently():
    with trio.fail_after(10):
        a, b = trio.testing.lockstep_stream_pair()
        gw = GatewayConn(WsEndpoint(a, Frames(client=True)), venue="v")
        server = Frames(client=False)
        results = {}

        async def serve():
            while True:
                data = await b.receive_some(11)
                if not data:
                    return
                server.receive_data(data)
                while (ev := server.next_event()) is not None:
                    body = orjson.loads(ev[1])
                    reply = {"status": "success", "data": body, "request_type": "query_x"}
                    await b.send_all(server.encode_text(orjson.dumps(reply)))

        async def call(i):
            resp = await gw.request(orjson.dumps({"type": "x", "i": i}), expect_request_type="query_x", timeout_s=5)
            results[i] = resp.data["i"]

        async with trio.open_nursery() as n:
            n.start_soon(serve)
            n.start_soon(_reader, gw)
            async with trio.open_nursery() as calls:
                for i in range(30):
                    calls.start_soon(call, i)
            n.cancel_scope.cancel()
        assert results == {i: i for i in range(30)}


async def test_outer_cancel_does_not_cut_a_frame_and_a_stuck_send_kills_the_socket():
    with trio.fail_after(10):
        a, b = trio.testing.lockstep_stream_pair()
        gw = GatewayConn(WsEndpoint(a, Frames(client=True)), venue="v")
        server = Frames(client=False)
        body = orjson.dumps({"cancel_orders": {"pad": "y" * 5000}})
        got = []
        arrived = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(_reader, gw)
            peer = trio.CancelScope()

            async def slow_peer():
                with peer:
                    while True:
                        server.receive_data(await b.receive_some(100))
                        while (ev := server.next_event()) is not None:
                            got.append(ev[1])
                            arrived.set()
                        await trio.sleep(0.001)  # a slow reader: the write takes ~50 reads

            n.start_soon(slow_peer)
            with trio.move_on_after(0.01) as caller:  # the caller gives up mid-write
                await gw.request(body, expect_request_type="execute_cancel_orders", timeout_s=5)
            assert caller.cancelled_caught
            # The whole frame still reached the peer (shielded write), and only once.
            await arrived.wait()
            assert [orjson.loads(g) for g in got] == [orjson.loads(body)]
            # The peer stops reading: the next send cannot complete -> socket killed, unknown.
            peer.cancel()
            with pytest.raises(OutcomeUnknown, match="send timed out"):
                await gw.request(body, expect_request_type="execute_cancel_orders", timeout_s=0.1)
            assert not gw.alive
            with pytest.raises(OutcomeUnknown):
                await gw.request(body, expect_request_type="execute_cancel_orders", timeout_s=0.1)
            n.cancel_scope.cancel()
