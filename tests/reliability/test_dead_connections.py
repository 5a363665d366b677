"""Issue #13 item 4: a silent (blackholed) connection is declared dead and reconnected within
ping_interval + pong_timeout, and a venue that stays silent alarms disconnect_alarm_after
later; venue sockets carry TCP keepalive and TCP_USER_TIMEOUT. Over a blackholing loopback
proxy, on both venues, with the timings scaled down (the defaults' arithmetic is checked
separately: 2.5 + 5 = 7.5 s <= 10 s to reconnect, + 5 = 12.5 s <= 15 s to alarm).
"""

from __future__ import annotations

import socket

import pytest
import trio

from killswitch.net import ws as wsmod
from killswitch.net.sockopts import socket_of
from killswitch.venues.base import OxfunConfig, VertexConfig
from tests.reliability.blackhole import BlackholeProxy
from tests.reliability.harness import (
    NADO_VENUE, OX_VENUE, audit_records, daemon_yaml, running_daemon, start_nado, start_ox, wait_for,
)

PING_S, PONG_S, ALARM_AFTER_S = 0.3, 0.6, 1.0
SLACK_S = 0.6  # scheduling on a loaded 2-core box


def test_default_timings_reconnect_within_10s_and_alarm_within_15s():
    for cls in (OxfunConfig, VertexConfig):
        fields = cls.__dataclass_fields__
        dead_s = fields["ping_interval_s"].default + fields["pong_timeout_s"].default
        assert dead_s <= 10.0
        assert dead_s + fields["disconnect_alarm_after_s"].default <= 15.0
        assert fields["ping_interval_s"].default <= 30.0  # Nado wants a ping at least every 30 s


async def test_venue_socket_has_keepalive_and_tcp_user_timeout():
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            w = await start_nado(n)
            ep = await wsmod.connect(w.sim.gateway_ws_url, deflate=False, timeout_s=2, dead_after_s=7.5)
            sock = socket_of(ep._stream)
            assert sock is not None
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 7500
            else:
                print("TCP_USER_TIMEOUT not available on this platform: only keepalive checked")
            await ep.abort()
            n.cancel_scope.cancel()


def _timing_yaml(text: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        if line.strip().startswith("pong_timeout:"):
            continue
        out.append(line)
        if line.strip().startswith("ping_interval:"):
            indent = line[:len(line) - len(line.lstrip())]
            out.append(f"{indent}pong_timeout: {int(PONG_S * 1000)}ms\n")
            out.append(f"{indent}disconnect_alarm_after: {int(ALARM_AFTER_S * 1000)}ms\n")
    return "".join(out)


@pytest.mark.parametrize("venue", [OX_VENUE, NADO_VENUE])
async def test_blackholed_connection_reconnects_fast_and_a_silent_venue_alarms(tmp_path, venue):
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            if venue == OX_VENUE:
                w = await start_ox(n)
                host, port = w.sim.ws_url.split("//")[1].split("/")[0].split(":")
                proxy = await n.start(BlackholeProxy(host, int(port)).serve)
                vy = w.venue_yaml(ping_interval=f"{int(PING_S * 1000)}ms").replace(
                    f":{port}/", f":{proxy.port}/")
            else:
                w = await start_nado(n)
                proxy = await n.start(BlackholeProxy(w.sim.ws_host, w.sim.ws_port).serve)
                vy = w.venue_yaml(ping_interval=f"{int(PING_S * 1000)}ms").replace(
                    f":{w.sim.ws_port}/", f":{proxy.port}/")
            assert f":{proxy.port}/" in vy
            text = daemon_yaml(tmp_path, _timing_yaml(vy))
            async with running_daemon(tmp_path, text, w.env()) as d:
                book = d.engine.state.book(venue)
                await wait_for(lambda: book.connected)
                # 1. The path goes silent; new connections get through.
                t0 = trio.current_time()
                proxy.blackhole()
                await wait_for(lambda: not book.connected)
                t_dead = trio.current_time() - t0
                await wait_for(lambda: book.connected)
                t_back = trio.current_time() - t0
                # 2. Silent for good: the feed alarm follows.
                t1 = trio.current_time()
                proxy.blackhole(new_connections_too=True)
                await wait_for(lambda: f"feed:{venue}" in d.engine.alarms)
                t_alarm = trio.current_time() - t1
                recs = await audit_records(d)
                proxy.restore()
            n.cancel_scope.cancel()
    dead_budget_s = PING_S + PONG_S
    assert t_dead <= dead_budget_s + SLACK_S, t_dead
    assert t_back <= dead_budget_s + 1.0 + SLACK_S, t_back
    assert t_alarm <= dead_budget_s + ALARM_AFTER_S + SLACK_S + 0.3, t_alarm  # + one tick interval
    assert any(r["event"] == "venue_disconnected" for r in recs)
