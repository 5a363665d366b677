"""TCP options for venue sockets: a dead peer is noticed by the kernel too, not only by pings.

``TCP_USER_TIMEOUT`` bounds how long sent data may stay unacknowledged before the kernel
drops the connection (without it a blackholed socket retransmits for ~15 minutes while
writes still "succeed" into the send buffer); keepalive probes cover an idle socket with
nothing in flight. Both are Linux options; elsewhere only SO_KEEPALIVE is set.
"""

from __future__ import annotations

import socket

KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3


def tune_venue_socket(sock: socket.socket, *, dead_after_s: float) -> None:
    """Best effort: an option the platform lacks is skipped, never an error."""
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
                        ("TCP_USER_TIMEOUT", max(1, int(dead_after_s * 1000)))):
        opt = getattr(socket, name, None)
        if opt is not None:
            opts.append((socket.IPPROTO_TCP, opt, value))
    for level, opt, value in opts:
        try:
            sock.setsockopt(level, opt, value)
        except OSError:
            pass


def socket_of(stream) -> socket.socket | None:
    """The OS socket under a trio SocketStream or SSLStream (None if there is none)."""
    for _ in range(3):
        sock = getattr(stream, "socket", None)
        if sock is not None:
            return sock
        stream = getattr(stream, "transport_stream", None)
        if stream is None:
            return None
    return None
