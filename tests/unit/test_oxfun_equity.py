"""EquityBook: exact Decimal math per README "Venue: OX.FUN"."""

from decimal import Decimal as D

from killswitch.venues.oxfun.equity import EquityBook
from killswitch.venues.oxfun.wire import BalanceEntry, PositionEntry


def test_ox_only_balance():
    b = EquityBook()
    b.apply_balances([BalanceEntry("OX", D("100000.20"))])
    assert b.compute().equity == D("100000.20") and b.compute().complete


def test_pushed_pnl_until_a_mark_arrives_then_recomputed():
    b = EquityBook()
    b.apply_balances([BalanceEntry("OX", D("1000"))])
    b.apply_positions([PositionEntry("ETH-USD-SWAP-LIN", D("0.01"), D("3709.6"), D("-5.000"))])
    assert b.compute().equity == D("995.000")
    b.set_mark("ETH-USD-SWAP-LIN", D("3609.6"))
    assert b.compute().equity == D("1000") + D("0.01") * (D("3609.6") - D("3709.6"))  # 999.000
    b.apply_positions([PositionEntry("BTC-USD-SWAP-LIN", D("-0.5"), D("60000"), None)])
    b.set_mark("BTC-USD-SWAP-LIN", D("61000.1"))
    assert b.compute().equity == D("999.000") + D("-0.5") * D("1000.1")


def test_other_assets_priced_from_marks_or_incomplete():
    b = EquityBook()
    b.apply_balances([BalanceEntry("OX", D("10")), BalanceEntry("USDT", D("5")), BalanceEntry("BTC", D("0"))])
    r = b.compute()
    assert not r.complete and r.missing_prices == ("USDT",)
    assert "OX-USDT" in b.needed_markets()
    b.set_mark("OX-USDT", D("0.02"))  # 1 OX = 0.02 USDT -> 1 USDT = 50 OX
    assert b.compute().equity == D("10") + D("5") * (D(1) / D("0.02"))
    b.apply_balances([BalanceEntry("ETH", D("2"))])
    b.set_mark("ETH-OX", D("150000"))
    assert b.compute().equity == D("10") + D("250") + D("300000")


def test_snapshot_replaces_and_zero_position_removes():
    b = EquityBook()
    b.apply_balances([BalanceEntry("OX", D("1")), BalanceEntry("USDT", D("1"))])
    b.apply_balances([BalanceEntry("OX", D("2"))], replace=True)
    assert b.balances == {"OX": D("2")}
    b.apply_positions([PositionEntry("A-USD-SWAP-LIN", D("1"), D("1"), D("3"), mark_price=D("4"))])
    assert b.compute().equity == D("2") + D("3")
    b.apply_positions([PositionEntry("A-USD-SWAP-LIN", D("0"), D("0"))])
    assert b.compute().equity == D("2")


def test_equity_in_usd_converts_with_the_ox_usdt_mark():
    from decimal import Decimal as D

    from killswitch.venues.oxfun.equity import EquityBook

    book = EquityBook()
    book.balances = {"OX": D("1000")}
    assert book.compute_in("USD").complete is False  # no OX-USDT mark yet: not published
    assert "OX-USDT" in book.needed_markets("USD")
    book.set_mark("OX-USDT", D("0.02"))
    r = book.compute_in("USD")
    assert r.complete and r.equity == D("20.00")
    assert book.compute_in("OX").equity == D("1000")
