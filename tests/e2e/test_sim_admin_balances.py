"""A drawdown rehearsal through a simulator's admin API trips on both venues.

The operator lowers the account's balance with ``POST /admin/balances`` (no ``reason``) and a
real daemon with a 5% drawdown rule must trip. On the Nado simulator that used to default to
``deposit_collateral``: the session reported a withdrawal (a cash flow the rule discounts) and
the rehearsal silently never tripped, unlike on the OX.FUN simulator.
"""

from __future__ import annotations

import textwrap

import httpx
import trio

from tests.e2e.helpers import short_tmpdir
from tests.reliability.harness import NADO_VENUE, OX_VENUE, running_daemon, start_nado, start_ox, wait_for

RULES = textwrap.dedent("""\
    rules:
      - {name: drawdown, kind: drawdown, max_drawdown: 5%}
    """)


def _yaml(root, venue_yaml: str) -> str:
    return textwrap.dedent(f"""\
        daemon:
          state_dir: {root}/state
          control_socket: {root}/control.sock
          tick_interval: 50ms
          startup_timeout: 10s
          log_format: json
        venues:
        """) + venue_yaml + RULES


def _equity(daemon, venue: str):
    return daemon.engine.state.book(venue).equity


async def test_nado_admin_balances_without_reason_is_a_loss_that_trips():
    with trio.fail_after(30), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            nado = await start_nado(nursery)  # funded with 10000 USDC
            async with running_daemon(root, _yaml(root, nado.venue_yaml()), nado.env()) as daemon:
                await wait_for(lambda: _equity(daemon, NADO_VENUE) is not None)
                async with httpx.AsyncClient(base_url=nado.sim.http.url) as http:
                    resp = await http.post("/admin/balances", json={"sender": nado.sender, "spot": {"0": "9000"}})
                    assert resp.status_code == 200, resp.text
                await wait_for(lambda: daemon.engine.latch.tripped)
                assert daemon.engine.latch.trips[0].rule == "drawdown"
            nursery.cancel_scope.cancel()


async def test_nado_admin_balances_with_a_withdrawal_reason_is_a_cash_flow_that_does_not_trip():
    with trio.fail_after(30), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            nado = await start_nado(nursery)
            async with running_daemon(root, _yaml(root, nado.venue_yaml()), nado.env()) as daemon:
                await wait_for(lambda: _equity(daemon, NADO_VENUE) is not None)
                async with httpx.AsyncClient(base_url=nado.sim.http.url) as http:
                    resp = await http.post("/admin/balances", json={"sender": nado.sender, "spot": {"0": "9000"},
                                                                    "reason": "withdraw_collateral"})
                    assert resp.status_code == 200, resp.text
                await wait_for(lambda: _equity(daemon, NADO_VENUE) == 9000)
                events_seen = daemon.engine.counters.events
                # A few more engine events (equity polls, ticks) after the new equity: still armed.
                await wait_for(lambda: daemon.engine.counters.events >= events_seen + 3)
                assert not daemon.engine.latch.tripped
            nursery.cancel_scope.cancel()


async def test_oxfun_admin_balances_is_a_loss_that_trips():
    with trio.fail_after(30), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)  # 1000 OX
            async with running_daemon(root, _yaml(root, ox.venue_yaml()), ox.env()) as daemon:
                await wait_for(lambda: _equity(daemon, OX_VENUE) is not None)
                async with httpx.AsyncClient(base_url=ox.sim.rest_url) as http:
                    resp = await http.post("/admin/balances", json={"api_key": ox.key, "balances": {"OX": "900"}})
                    assert resp.status_code == 200, resp.text
                await wait_for(lambda: daemon.engine.latch.tripped)
            nursery.cancel_scope.cancel()
