"""Issue #12 over real sockets: the daemon against the simulated OX.FUN and Nado venues.

Each test names the blind spot it proves closed: a loss right after a reset, unpriced
assets and silent aggregate members, positions held at start-up, a stalled Nado stream,
and a mistyped trip product.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from decimal import Decimal

import trio

from killswitch.config import load_config_text
from killswitch.control import AsyncControlClient, control_service
from killswitch.daemon import Daemon
from killswitch.model import ResetCommand, TripCommand
from killswitch.venues.oxfun.sim import OxfunSim
from killswitch.venues.oxfun.sim.book import SimPosition
from killswitch.venues.vertex.sim import VertexSim
from tests.e2e.helpers import short_tmpdir

from .daemon_harness import audit_of, daemon_yaml, wait_for

MARKET = "BTC-USD-SWAP-LIN"


def ox_yaml(sim: OxfunSim, name: str = "ox-main", key_env: str = "OX") -> str:
    return f"""
  - name: {name}
    kind: oxfun
    api_key: {{env: {key_env}_KEY}}
    api_secret: {{env: {key_env}_SECRET}}
    ws_url: {sim.ws_url}
    rest_url: {sim.rest_url}
    markets: [{MARKET}]
    ping_interval: 2s
    pong_timeout: 2s
    request_timeout: 2s
    poll_interval: 1s
"""


def nado_yaml(sim: VertexSim, products: str = "[2]") -> str:
    return f"""
  - name: nado-main
    kind: nado
    private_key: {{env: NADO_KEY}}
    gateway_ws_url: {sim.gateway_ws_url}
    subscribe_ws_url: {sim.subscribe_ws_url}
    gateway_rest_url: {sim.gateway_rest_url}
    trigger_url: {sim.trigger_url}
    chain_id: {sim.chain_id}
    endpoint_address: "{sim.endpoint_address}"
    products: {products}
    equity_poll_interval: 200ms
    orders_poll_interval: 500ms
    ping_interval: 1s
    request_timeout: 3s
"""


@asynccontextmanager
async def daemon_with_control(root, venues_yaml: str, rules_yaml: str, env: dict):
    text = daemon_yaml(root, venues_yaml, rules_yaml)
    (root / "killswitch.yaml").write_text(text)
    daemon = Daemon(load_config_text(text, str(root / "killswitch.yaml")), environ=env, handle_signals=False,
                    services=[control_service])
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.request_stop()


async def ox_sim(nursery, balances=None, qty="1"):
    sim = OxfunSim()
    await nursery.start(sim.serve)
    key, secret = sim.add_account(balances=balances or {"OX": "1000"})
    await sim.set_positions(key, {MARKET: {"qty": qty, "entry_price": "100"}})
    await sim.set_mark(MARKET, "200")
    return sim, key, secret


def dd_rule(venues: str = "[ox-main]", extra: str = "") -> str:
    return f"""
  - name: dd
    kind: drawdown
    venues: {venues}
    max_drawdown: 5%
{extra}"""


async def test_a_loss_right_after_reset_trips_against_the_peak_kept_across_the_reset(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, key, secret = await ox_sim(nursery)  # equity 1000 + (200 - 100) = 1100 OX
            env = {"OX_KEY": key, "OX_SECRET": secret}
            async with daemon_with_control(root, ox_yaml(sim), dd_rule(), env) as d:
                await wait_for(lambda: d.engine.state.book("ox-main").equity == Decimal(1100))
                await d.send.send(TripCommand(reason="operator test"))
                await wait_for(lambda: d.engine.latch.tripped)
                await d.send.send(ResetCommand(operator="op", reason="done"))
                await wait_for(lambda: not d.engine.latch.tripped)
                await sim.set_mark(MARKET, "140")  # 1040: -5.45% from 1100, moments after the reset
                await wait_for(lambda: d.engine.latch.tripped)
                assert d.engine.latch.trips[-1].rule == "dd"
            nursery.cancel_scope.cancel()


async def test_an_unpriced_asset_makes_equity_missing_so_drawdown_trips_and_the_alarm_names_it(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, key, secret = await ox_sim(nursery, balances={"OX": "100000", "BTC": "0.001"})
            env = {"OX_KEY": key, "OX_SECRET": secret}
            rules = dd_rule(extra="    startup_grace: 1s\n")
            async with daemon_with_control(root, ox_yaml(sim), rules, env) as d:
                await wait_for(lambda: d.engine.latch.tripped)
                trip = d.engine.latch.trips[-1]
                assert trip.rule == "dd" and "no price for BTC" in trip.observed
                await wait_for(lambda: "equity:ox-main" in d.engine.alarms)  # once it has lasted 5 s
                assert "BTC" in d.engine.alarms["equity:ox-main"]
                assert d.engine.state.book("ox-main").equity is None  # never a smaller number
            nursery.cancel_scope.cancel()


async def test_an_aggregate_with_a_silent_member_trips_as_missing_while_the_other_loses(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, key, secret = await ox_sim(nursery)
            key2, secret2 = sim.add_account(balances={"OX": "1000", "ETH": "1"})  # ETH has no price: silent
            env = {"OX_KEY": key, "OX_SECRET": secret, "OX2_KEY": key2, "OX2_SECRET": secret2}
            venues = ox_yaml(sim) + ox_yaml(sim, "ox-two", "OX2")
            rules = dd_rule("[ox-main, ox-two]", "    aggregate: true\n    startup_grace: 2s\n")
            async with daemon_with_control(root, venues, rules, env) as d:
                await wait_for(lambda: d.engine.state.book("ox-main").equity is not None)
                await sim.set_mark(MARKET, "10")  # ox-main loses 17%; the aggregate never forms
                await wait_for(lambda: d.engine.latch.tripped)
                trip = d.engine.latch.trips[-1]
                assert trip.rule == "dd" and "ox-two" in trip.observed and "aggregate" in trip.observed
            nursery.cancel_scope.cancel()


async def test_oxfun_position_held_at_startup_trips_max_position_from_the_reconcile(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, key, secret = await ox_sim(nursery, qty="10")
            env = {"OX_KEY": key, "OX_SECRET": secret}
            rules = "\n  - {name: pos, kind: max_position, venues: [ox-main], max_qty: 5}\n"
            async with daemon_with_control(root, ox_yaml(sim), rules, env) as d:
                await wait_for(lambda: d.engine.latch.tripped)
                assert d.engine.latch.trips[-1].rule == "pos"
                assert d.engine.state.position_qty("ox-main", MARKET) == Decimal(10)
            nursery.cancel_scope.cancel()


async def nado_sim(nursery):
    sim = VertexSim(flavour="nado")
    await nursery.start(sim.serve)
    acct = sim.create_subaccount()
    sim.set_oracle({2: "1000", 3: "10"})
    sim.set_balances(acct["sender"], spot={0: "10000"}, perp={2: ("10", "-10000")})
    return sim, acct


async def test_nado_position_held_at_startup_trips_max_position_from_the_reconcile(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, acct = await nado_sim(nursery)
            rules = "\n  - {name: pos, kind: max_position, venues: [nado-main], max_qty: 5}\n"
            async with daemon_with_control(root, nado_yaml(sim), rules, {"NADO_KEY": acct["private_key"]}) as d:
                await wait_for(lambda: d.engine.latch.tripped)
                assert d.engine.latch.trips[-1].rule == "pos"
                assert d.engine.state.position_qty("nado-main", "2") == Decimal(10)
            nursery.cancel_scope.cancel()


async def test_a_stalled_nado_stream_is_caught_by_the_drift_poll_which_alarms_and_reconnects(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, acct = await nado_sim(nursery)
            rules = ("\n  - {name: drift, kind: stream_drift, venues: [nado-main], latch: false}"
                     "\n  - {name: open, kind: max_open_orders, venues: [nado-main], max: 60}\n")
            async with daemon_with_control(root, nado_yaml(sim), rules, {"NADO_KEY": acct["private_key"]}) as d:
                await wait_for(lambda: d.engine.state.is_connected("nado-main"))
                sim.set_faults(mute_pushes=True)  # socket open, pings answered, no pushes
                # 50 orders, 25 on product 3, which `products:` does not list: the poll covers every product.
                sim.place_orders(acct["sender"], product_id=2, price="10", qty="1", count=25, price_step="0.01")
                sim.place_orders(acct["sender"], product_id=3, price="1", qty="1", count=25, price_step="0.01")
                # The drift poll puts them in the book: count rules see them.
                await wait_for(lambda: d.engine.state.open_count("nado-main") == 50)
                await wait_for(lambda: d.engine.counters.stream_drift >= 1)
                # ...and the stream is torn down and re-established (reconnect + reconcile).
                recs = await audit_of(d)
                while sum(1 for r in recs if r["event"] == "venue_connected") < 2:
                    await trio.sleep(0.05)
                    recs = await audit_of(d)
                sim.set_faults(mute_pushes=False)
                # Everything-scope trip: flat means no open order on any product, listed or not.
                await d.send.send(TripCommand(reason="flatten"))
                await wait_for(lambda: d.engine.all_flat())
                assert sim.open_orders(acct["sender"])["orders"] == []
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
        drift = [r for r in recs if r["event"] == "stream_drift"]
        assert drift and drift[0]["venue"] == "nado-main" and drift[0]["n_orders"] >= 1
        assert any(r["event"] == "alarm" and r["key"] == "stream_drift:nado-main" for r in recs)
        assert any(r["event"] == "alert" and r["rule"] == "drift" for r in recs)


async def test_a_mistyped_trip_product_is_refused_listing_known_products_unless_forced(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, key, secret = await ox_sim(nursery)
            await sim.place_orders(key, market=MARKET, side="BUY", price="1", qty="1", count=3)
            env = {"OX_KEY": key, "OX_SECRET": secret}
            async with daemon_with_control(root, ox_yaml(sim), "\n  - {name: m, kind: manual}\n", env) as d:
                await wait_for(lambda: d.engine.state.open_count("ox-main") == 3)
                async with AsyncControlClient(d.config.daemon.control_socket) as c:
                    r = await c.request({"op": "trip", "reason": "typo", "products": ["BTC-USD-SWAP"]})
                    assert not r["ok"] and r["code"] == "unknown_product"
                    assert MARKET in r["error"] and not d.engine.latch.tripped
                    r = await c.request({"op": "trip", "reason": "right", "products": [MARKET]})
                    assert r["ok"] and r["orders_in_scope"] == {"ox-main": 3}
                    await c.request({"op": "reset", "operator": "op", "reason": "again"})
                    r = await c.request({"op": "trip", "reason": "forced", "products": ["NEW-MKT"], "force": True})
                    assert r["ok"] and r["orders_in_scope"] == {"ox-main": 0}
            nursery.cancel_scope.cancel()


async def test_reload_keeps_the_peak_for_a_threshold_change_and_audits_a_rebase_for_a_peak_mode_change(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, key, secret = await ox_sim(nursery)  # 1100 OX
            env = {"OX_KEY": key, "OX_SECRET": secret}
            async with daemon_with_control(root, ox_yaml(sim), dd_rule(), env) as d:
                await wait_for(lambda: d.engine.state.book("ox-main").equity == Decimal(1100))
                await sim.set_mark(MARKET, "160")  # 1060: -3.6%
                await wait_for(lambda: d.engine.state.book("ox-main").equity == Decimal(1060))
                cfg = root / "killswitch.yaml"
                cfg.write_text(cfg.read_text().replace("max_drawdown: 5%", "max_drawdown: 6%"))
                assert await d.reload()
                await sim.set_mark(MARKET, "135")  # 1035: -5.9% from the kept peak 1100
                await wait_for(lambda: d.engine.state.book("ox-main").equity == Decimal(1035))
                assert not d.engine.latch.tripped
                cfg.write_text(cfg.read_text().replace("max_drawdown: 6%", "max_drawdown: 6%\n    peak: {rolling: 1h}"))
                assert await d.reload()
                await wait_for(lambda: d.engine.rules[0].config.peak == "rolling")
                recs = await audit_of(d)
                rb = [r for r in recs if r["event"] == "rule_state_rebased"]
                assert rb and rb[0]["old_peaks"] == {"ox-main": "1100"} and rb[0]["new_peaks"] == {"ox-main": "1035"}
            nursery.cancel_scope.cancel()


async def test_gateway_equity_polls_do_not_keep_a_silent_nado_stream_alive(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, acct = await nado_sim(nursery)
            venue = nado_yaml(sim).replace("ping_interval: 1s", "ping_interval: 30s")
            rules = "\n  - {name: stream-alive, kind: stale_heartbeat, source: {venue: nado-main}, timeout: 2s}\n"
            async with daemon_with_control(root, venue, rules, {"NADO_KEY": acct["private_key"]}) as d:
                await wait_for(lambda: d.engine.state.is_connected("nado-main"))
                sim.set_faults(mute_pushes=True)
                events_before = d.engine.counters.events
                await wait_for(lambda: d.engine.latch.tripped)
                assert d.engine.latch.trips[-1].rule == "stream-alive"
                assert d.engine.counters.events > events_before + 3  # equity polls kept arriving meanwhile
                assert d.status()["venues"]["nado-main"]["last_seen_ago_s"] >= 2.0
            nursery.cancel_scope.cancel()


async def test_a_position_changed_while_the_stream_was_down_reaches_max_position_after_the_reconnect(tmp_path):
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim, key, secret = await ox_sim(nursery, qty="1")
            env = {"OX_KEY": key, "OX_SECRET": secret}
            rules = "\n  - {name: pos, kind: max_position, venues: [ox-main], max_qty: 5}\n"
            async with daemon_with_control(root, ox_yaml(sim), rules, env) as d:
                await wait_for(lambda: d.engine.state.position_qty("ox-main", MARKET) == Decimal(1))
                # The position grows while the stream is gone: no push will ever say so.
                sim._account(key).positions[MARKET] = SimPosition(Decimal(10), Decimal(100))
                await sim.drop_connections(key)
                await wait_for(lambda: d.engine.latch.tripped)
                assert d.engine.latch.trips[-1].rule == "pos"
                assert d.engine.state.position_qty("ox-main", MARKET) == Decimal(10)
            nursery.cancel_scope.cancel()
