"""The official nado-protocol / vertex-protocol SDKs drive the simulator (issue #13 item 11): place -> list ->
cancel -> list on the engine and the trigger service, plus the catalogue queries
(all_products, symbols, market_price), subaccount_info, place_orders, cancel_and_place,
link_signer and the subscription socket (time, authenticate, subscribe_multi, order_update),
all built and parsed by the SDK's own models.
"""

from __future__ import annotations

import json

import pytest
import trio

from killswitch.venues.vertex.sim import VertexSim

from .sdk_env import DRIVERS, sdk_python


# Sync fixtures: a skip raised here keeps its reason in pytest's summary (from inside a trio
# test it is reported as a bare "Skipped").
@pytest.fixture(scope="session")
def nado_python() -> str:
    return sdk_python("nado")


@pytest.fixture(scope="session")
def vertex_python() -> str:
    return sdk_python("vertex")


async def test_nado_sdk_place_list_cancel_list_against_the_sim(nado_python):
    python = nado_python
    with trio.fail_after(60):
        sim = VertexSim(flavour="nado")
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve)
            acct = sim.create_subaccount()
            sim.set_balances(acct["sender"], spot={0: "10000"})
            proc = await trio.run_process([python, str(DRIVERS / "nado_sdk_driver.py"), sim.gateway_rest_url,
                                           sim.trigger_url, sim.subscribe_ws_url.removesuffix("/subscribe"),
                                           acct["private_key"]], capture_stdout=True,
                                          capture_stderr=True, check=False)
            nursery.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "active" and out["perp_ids"] == [2, 4, 6]
    assert "BTC-PERP" in out["symbols"] and int(out["market_price"][0]) < int(out["market_price"][1])
    assert out["listed"] == out["placed"] and len(out["placed"]) == 3
    assert len(out["after_cancel_orders"]) == 2 and out["after_cancel_product"] == []
    assert out["swapped_out"] not in out["after_cancel_and_place"] and out["swapped_in"] in out["after_cancel_and_place"]
    assert out["time"]["result"]["method"] == "time" and int(out["time"]["result"]["server_time"]) > 0
    assert out["auth"] == {"result": None, "id": out["auth"]["id"]}
    assert out["subscribe_multi"]["result"] is None and "error" not in out["subscribe_multi"]
    assert out["subscriptions"] == 3
    assert out["pushed"]["type"] == "order_update" and out["pushed"]["reason"] == "placed"
    assert out["linked_signer"].lower() == "0x" + "00" * 19 + "42"
    assert int(out["health"]) == 10_000 * 10**18
    assert out["trigger_listed"] == ["waiting_price"] and out["trigger_after_cancel"] == 0


async def test_vertex_sdk_place_list_cancel_list_against_the_sim(vertex_python):
    python = vertex_python
    with trio.fail_after(60):
        sim = VertexSim(flavour="vertex")
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve)
            acct = sim.create_subaccount()
            sim.set_balances(acct["sender"], spot={0: "10000"})
            proc = await trio.run_process([python, str(DRIVERS / "vertex_sdk_driver.py"), sim.gateway_rest_url,
                                           sim.trigger_url, acct["private_key"]], capture_stdout=True,
                                          capture_stderr=True, check=False)
            nursery.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "active" and out["perp_ids"] == [2, 4, 6]
    assert "BTC-PERP" in out["symbols"] and int(out["market_price"][0]) < int(out["market_price"][1])
    assert out["listed"] == out["placed"] and len(out["placed"]) == 3
    assert len(out["after_cancel_orders"]) == 2 and out["after_cancel_product"] == []
    assert int(out["health"]) == 10_000 * 10**18
    assert out["trigger_listed"] == ["pending"] and out["trigger_after_cancel"] == 0
