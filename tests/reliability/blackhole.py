"""A TCP proxy on 127.0.0.1 that can go silent: the loopback stand-in for a blackholed path.

Bytes are pumped both ways until ``blackhole()``: from then on the proxy keeps reading both
sides (so nothing errors, the peers' writes still "succeed") and forwards nothing, like a
route that silently drops packets. ``new_connections_too`` makes later connections silent
from the start (the venue stays unreachable).
"""

from __future__ import annotations

import trio


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.silent_epoch = 0  # connections opened before this epoch went silent
        self._epoch = 0
        self.all_silent = False
        self.connections = 0

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    def blackhole(self, *, new_connections_too: bool = False) -> None:
        self._epoch += 1
        self.silent_epoch = self._epoch
        self.all_silent = new_connections_too

    def restore(self) -> None:
        self.all_silent = False

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        epoch = self._epoch
        silent = self.all_silent

        def muted() -> bool:
            return silent or self.silent_epoch > epoch

        try:
            if silent:
                while await client.receive_some(65536):
                    pass
                return
            upstream = await trio.open_tcp_stream(*self.target)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await client.aclose()
            return

        async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
            try:
                while True:
                    data = await src.receive_some(65536)
                    if not data:
                        break
                    if not muted():
                        await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            if not muted():
                nursery.cancel_scope.cancel()

        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream)
            nursery.start_soon(pump, upstream, client)
