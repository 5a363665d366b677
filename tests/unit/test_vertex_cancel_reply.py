"""parse_cancelled_orders reads only the digests, and still refuses what is malformed."""

import pytest

from killswitch.venues.vertex import wire

ORDER = {"product_id": 2, "sender": "0x" + "ab" * 32, "price_x18": "20000000000000000000000",
         "amount": "-100000000000000000", "expiration": "4611686020107119633", "nonce": "1768248100142339392",
         "unfilled_amount": "-100000000000000000", "digest": "0x" + "cd" * 32, "appendix": "3585",
         "placed_at": 1686332708}


def test_digests_of_a_big_reply_in_order_lowercased():
    orders = [dict(ORDER, digest="0x%064X" % i) for i in range(1000)]
    got = wire.parse_cancelled_orders({"cancelled_orders": orders})
    assert got == tuple(wire.parse_order(o).digest for o in orders)
    assert got[10] == "0x%064x" % 10


@pytest.mark.parametrize("bad", [
    {"cancelled_orders": [dict(ORDER, digest="0x1234")]},
    {"cancelled_orders": [dict(ORDER, digest="0x" + "zz" * 32)]},
    {"cancelled_orders": [{k: v for k, v in ORDER.items() if k != "digest"}]},
    {"cancelled_orders": ["0x" + "cd" * 32]},
    {"cancelled_orders": {"digest": "0x" + "cd" * 32}},
    ["not", "an", "object"],
])
def test_malformed_replies_raise_wire_error(bad):
    with pytest.raises(wire.WireError):
        wire.parse_cancelled_orders(bad)


def test_no_data_and_no_orders():
    assert wire.parse_cancelled_orders(None) == ()
    assert wire.parse_cancelled_orders({}) == ()
