"""Drives the simulator in Vertex flavour with the official vertex-protocol 3.3.1 SDK (run in
the SDK's own venv; pydantic 1).

argv: gateway REST url, trigger url, private key (0x hex). place -> list -> cancel -> list on
the engine (orders signed against the book address from ``contracts``) and on the trigger
service, plus all_products, symbols, market_price and subaccount_info. Prints one JSON object.
"""

import json
import sys
import time

from vertex_protocol.engine_client import EngineClient, EngineClientOpts
from vertex_protocol.engine_client.types.execute import (
    CancelOrdersParams,
    CancelProductOrdersParams,
    PlaceOrderParams,
)
from vertex_protocol.trigger_client import TriggerClient, TriggerClientOpts
from vertex_protocol.trigger_client.types.execute import PlaceTriggerOrderParams
from vertex_protocol.trigger_client.types.models import PriceBelowTrigger
from vertex_protocol.trigger_client.types.query import ListTriggerOrdersParams, ListTriggerOrdersTx
from vertex_protocol.utils.bytes32 import subaccount_to_hex
from vertex_protocol.utils.execute import OrderParams
from vertex_protocol.utils.expiration import OrderType, get_expiration_timestamp
from vertex_protocol.utils.math import to_x18
from vertex_protocol.utils.subaccount import SubaccountParams
from vertex_protocol.utils.time import now_in_millis

PERP = 2


def main(gateway_url: str, trigger_url: str, key: str) -> dict:
    engine = EngineClient(EngineClientOpts(url=gateway_url, signer=key))
    trigger = TriggerClient(TriggerClientOpts(url=trigger_url, signer=key))
    contracts = engine.get_contracts()
    for client in (engine, trigger):
        client.endpoint_addr, client.book_addrs = contracts.endpoint_addr, contracts.book_addrs
        client.chain_id = int(contracts.chain_id)
    owner = engine.signer.address
    sub = SubaccountParams(subaccount_owner=owner, subaccount_name="default")
    sender = subaccount_to_hex(sub)
    out: dict = {"status": engine.get_status()}
    out["perp_ids"] = [p.product_id for p in engine.get_all_products().perp_products]
    out["symbols"] = sorted(engine.get_symbols().symbols)
    bbo = engine.get_market_price(PERP)
    out["market_price"] = [bbo.bid_x18, bbo.ask_x18]

    def order(price: float, amount: float) -> OrderParams:
        expiration = get_expiration_timestamp(OrderType.DEFAULT, int(time.time()) + 3600)
        return OrderParams(sender=sub, priceX18=to_x18(price), amount=to_x18(amount), expiration=expiration)

    digests = [engine.place_order(PlaceOrderParams(product_id=PERP, order=order(1800 - i, 0.1))).data.digest
               for i in range(3)]
    out["placed"] = sorted(digests)
    out["listed"] = sorted(o.digest for o in engine.get_subaccount_open_orders(PERP, sender).orders)
    engine.cancel_orders(CancelOrdersParams(sender=sender, productIds=[PERP], digests=[digests[0]]))
    out["after_cancel_orders"] = sorted(o.digest for o in engine.get_subaccount_open_orders(PERP, sender).orders)
    engine.cancel_product_orders(CancelProductOrdersParams(sender=sender, productIds=[PERP]))
    out["after_cancel_product"] = [o.digest for o in engine.get_subaccount_open_orders(PERP, sender).orders]
    out["health"] = engine.get_subaccount_info(sender).healths[2].health

    trigger.place_trigger_order(PlaceTriggerOrderParams(
        product_id=PERP, order=order(1700, 0.1), trigger=PriceBelowTrigger(price_below=str(to_x18(1700)))))

    def list_triggers() -> list:
        tx = ListTriggerOrdersTx(sender=sender, recvTime=now_in_millis(90))
        return trigger.list_trigger_orders(ListTriggerOrdersParams(tx=tx, pending=True)).data.orders

    out["trigger_listed"] = [o.status for o in list_triggers()]
    trigger.cancel_product_trigger_orders(CancelProductOrdersParams(sender=sender, productIds=[PERP]))
    out["trigger_after_cancel"] = len(list_triggers())
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4]), default=str))
