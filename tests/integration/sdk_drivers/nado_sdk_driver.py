"""Drives a Nado simulator with the official nado-protocol SDK (run in the SDK's own venv).

argv: gateway REST url, trigger url, subscription base url (ws://.../v1), private key (0x hex).
place -> list -> cancel -> list on the engine and on the trigger service, the catalogue
queries an SDK strategy loads, cancel_and_place, link_signer, and the subscription socket
(time, authenticate, subscribe_multi, an order_update push).
Prints one JSON object; any SDK exception exits non-zero with its text.
"""

import json
import sys

from nado_protocol.engine_client import EngineClient, EngineClientOpts
from nado_protocol.contracts.types import NadoTxType
from nado_protocol.engine_client.types.execute import (
    CancelAndPlaceParams,
    CancelOrdersParams,
    CancelProductOrdersParams,
    PlaceOrderParams,
    LinkSignerParams,
    PlaceOrdersParams,
)
from nado_protocol.engine_client.types.stream import StreamAuthenticationParams
from nado_protocol.trigger_client import TriggerClient, TriggerClientOpts
from nado_protocol.trigger_client.types.execute import (
    CancelProductTriggerOrdersParams,
    PlaceTriggerOrderParams,
)
from nado_protocol.trigger_client.types.models import OraclePriceBelow, PriceTrigger, PriceTriggerData
from nado_protocol.trigger_client.types.query import (
    ListTriggerOrdersParams,
    ListTriggerOrdersRequest,
    ListTriggerOrdersTx,
)
from nado_protocol.utils.bytes32 import subaccount_to_hex
from nado_protocol.utils.execute import OrderParams
from nado_protocol.utils.expiration import get_expiration_timestamp
from nado_protocol.utils.math import to_x18
from nado_protocol.utils.order import OrderType, build_appendix
from nado_protocol.utils.subaccount import SubaccountParams
from nado_protocol.utils.time import now_in_millis
from nado_protocol.ws.client import NadoSubscriptionClient
from nado_protocol.ws.streams import FillStream, OrderUpdateStream, PositionChangeStream

PERP = 2


def main(gateway_url: str, trigger_url: str, ws_url: str, key: str) -> dict:
    engine = EngineClient(EngineClientOpts(url=gateway_url, signer=key))
    contracts = engine.get_contracts()
    engine.endpoint_addr, engine.chain_id = contracts.endpoint_addr, int(contracts.chain_id)
    trigger = TriggerClient(TriggerClientOpts(url=trigger_url, signer=key))
    trigger.endpoint_addr, trigger.chain_id = contracts.endpoint_addr, int(contracts.chain_id)
    owner = engine.signer.address
    sender = subaccount_to_hex(SubaccountParams(subaccount_owner=owner, subaccount_name="default"))
    out: dict = {"status": engine.get_status()}
    products = engine.get_all_products()
    out["perp_ids"] = [p.product_id for p in products.perp_products]
    out["symbols"] = sorted(engine.get_symbols().symbols)
    bbo = engine.get_market_price(PERP)
    out["market_price"] = [bbo.bid_x18, bbo.ask_x18]

    def order(price: float, amount: float) -> OrderParams:
        return OrderParams(sender=SubaccountParams(subaccount_owner=owner, subaccount_name="default"),
                           priceX18=to_x18(price), amount=to_x18(amount), expiration=get_expiration_timestamp(3600),
                           appendix=build_appendix(OrderType.DEFAULT))

    subs = NadoSubscriptionClient(ws_url).connect()
    out["time"] = subs.time()
    expiration = now_in_millis(60)
    auth_sig = engine._sign(NadoTxType.AUTHENTICATE_STREAM,
                            {"sender": bytes.fromhex(sender[2:]), "expiration": expiration})
    out["auth"] = subs.authenticate(StreamAuthenticationParams(sender=sender, expiration=expiration,
                                                               signature=auth_sig))
    out["subscribe_multi"] = subs.subscribe_multi([
        OrderUpdateStream(subaccount=sender, product_id=PERP), FillStream(subaccount=sender, product_id=PERP),
        PositionChangeStream(subaccount=sender, product_id=PERP)])
    out["subscriptions"] = len(subs.list_subscriptions()["result"])

    placed = engine.place_order(PlaceOrderParams(product_id=PERP, order=order(1800, 0.1)))
    out["pushed"] = subs.recv(timeout=5)
    # Closed before more pushes queue up: websockets' sync client cannot finish the close
    # handshake while an unread message is pending (it would wait out its 10 s timeout).
    subs.close()
    batch = engine.place_orders(PlaceOrdersParams(orders=[PlaceOrderParams(product_id=PERP, order=order(1790, 0.1)),
                                                          PlaceOrderParams(product_id=PERP, order=order(1780, 0.1))]))
    digests = [placed.data.digest] + [r.digest for r in batch.data.place_orders]
    listed = engine.get_subaccount_open_orders(PERP, sender)
    out["listed"] = sorted(o.digest for o in listed.orders)
    out["placed"] = sorted(digests)
    engine.cancel_orders(CancelOrdersParams(sender=sender, productIds=[PERP], digests=[digests[0]]))
    out["after_cancel_orders"] = sorted(o.digest for o in engine.get_subaccount_open_orders(PERP, sender).orders)
    swapped = engine.cancel_and_place(CancelAndPlaceParams(
        cancel_orders=CancelOrdersParams(sender=sender, productIds=[PERP], digests=[digests[1]]),
        place_order=PlaceOrderParams(product_id=PERP, order=order(1770, 0.1))))
    out["after_cancel_and_place"] = sorted(o.digest for o in engine.get_subaccount_open_orders(PERP, sender).orders)
    out["swapped_in"] = swapped.data.digest
    out["swapped_out"] = digests[1]
    engine.cancel_product_orders(CancelProductOrdersParams(sender=sender, productIds=[PERP]))
    out["after_cancel_product"] = [o.digest for o in engine.get_subaccount_open_orders(PERP, sender).orders]
    info = engine.get_subaccount_info(sender)
    out["health"] = info.healths[2].health
    delegate = "0x" + "00" * 19 + "42"
    engine.link_signer(LinkSignerParams(sender=sender, signer=delegate + "00" * 12))
    out["linked_signer"] = engine.get_linked_signer(sender).linked_signer

    criteria = PriceTrigger(price_trigger=PriceTriggerData(price_requirement=OraclePriceBelow(
        oracle_price_below=str(to_x18(1700)))))
    trigger.place_trigger_order(PlaceTriggerOrderParams(product_id=PERP, order=order(1700, 0.1), trigger=criteria))

    def list_triggers() -> list:
        # TriggerClient.list_trigger_orders() itself fails in 2.0.0 (it model_validates a
        # ListTriggerOrdersParams instance as its subclass); sign and send as it would.
        params = ListTriggerOrdersParams(tx=ListTriggerOrdersTx(sender=sender, recvTime=now_in_millis(90)),
                                         product_ids=[PERP])
        signature = trigger._sign(NadoTxType.LIST_TRIGGER_ORDERS, params.tx.dict())
        body = ListTriggerOrdersRequest.model_validate({**params.dict(), "signature": signature}).dict()
        return trigger.query(body).data.orders

    out["trigger_listed"] = [o.status for o in list_triggers()]
    trigger.cancel_product_trigger_orders(CancelProductTriggerOrdersParams(sender=sender, productIds=[PERP]))
    out["trigger_after_cancel"] = len(list_triggers())
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5]), default=str))
