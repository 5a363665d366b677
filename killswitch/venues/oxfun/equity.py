"""Pure account-equity book for OX.FUN (Decimal only; see README "Venue: OX.FUN", Equity).

equity_OX = sum_assets(total_a * price_OX(a)) + sum_positions(upnl_p)

- price_OX(OX) = 1; otherwise the mark of ``<A>-OX`` if known, else 1 / mark of ``OX-<A>``.
  An asset with a non-zero total and no price makes the equity *incomplete*: the session
  does not publish a number it cannot stand behind (a stale equity feed fails closed in
  the rules, a silently wrong one would not).
- upnl_p = qty_p * (mark_p - entryPrice_p) when a mark for the position's market is
  known, else the venue-pushed ``positionPnl`` (OX). OX.FUN settles perps in OX, and the
  venue itself reports positionPnl in OX; the recomputed value is taken 1:1 in OX.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable

from killswitch.venues.oxfun.wire import BalanceEntry, PositionEntry

EQUITY_ASSET = "OX"
# Quote currencies equity can be reported in, and the market whose mark converts OX to it.
# USD uses the OX-USDT mark (USDT taken 1:1 as USD, as OX.FUN's own USD figures do).
CONVERSION_MARKETS = {"USD": "OX-USDT", "USDT": "OX-USDT"}


@dataclass(frozen=True, slots=True)
class Position:
    qty: Decimal
    entry_price: Decimal
    pushed_pnl: Decimal | None


@dataclass(frozen=True, slots=True)
class EquityResult:
    equity: Decimal
    missing_prices: tuple[str, ...] = ()  # assets held with no known price in OX

    @property
    def complete(self) -> bool:
        return not self.missing_prices


class EquityBook:
    __slots__ = ("balances", "positions", "marks")

    def __init__(self) -> None:
        self.balances: dict[str, Decimal] = {}
        self.positions: dict[str, Position] = {}
        self.marks: dict[str, Decimal] = {}

    # -- updates ------------------------------------------------------------------------

    def apply_balances(self, entries: Iterable[BalanceEntry], *, replace: bool = False) -> None:
        """Pushes carry only changed assets (upsert); a REST snapshot replaces everything."""
        if replace:
            self.balances = {}
        for e in entries:
            self.balances[e.asset] = e.total

    def apply_positions(self, entries: Iterable[PositionEntry], *, replace: bool = False) -> None:
        if replace:
            self.positions = {}
        for e in entries:
            if e.qty == 0:
                self.positions.pop(e.product, None)
            else:
                self.positions[e.product] = Position(e.qty, e.entry_price, e.pnl)
            if e.mark_price is not None and e.product not in self.marks:
                self.marks[e.product] = e.mark_price

    def set_mark(self, market: str, price: Decimal) -> None:
        self.marks[market] = price

    # -- queries ------------------------------------------------------------------------

    def asset_price(self, asset: str) -> Decimal | None:
        if asset == EQUITY_ASSET:
            return Decimal(1)
        direct = self.marks.get(f"{asset}-{EQUITY_ASSET}")
        if direct is not None:
            return direct
        inverse = self.marks.get(f"{EQUITY_ASSET}-{asset}")
        if inverse is not None and inverse != 0:
            return Decimal(1) / inverse
        return None

    def unrealised_pnl(self, market: str) -> Decimal:
        pos = self.positions.get(market)
        if pos is None:
            return Decimal(0)
        mark = self.marks.get(market)
        if mark is not None:
            return pos.qty * (mark - pos.entry_price)
        return pos.pushed_pnl if pos.pushed_pnl is not None else Decimal(0)

    def notional(self, market: str, qty: Decimal) -> Decimal | None:
        mark = self.marks.get(market)
        return abs(qty) * mark if mark is not None else None

    def needed_markets(self, currency: str = EQUITY_ASSET) -> frozenset[str]:
        """Markets whose marks the equity depends on (positions + conversion pairs)."""
        out = set(self.positions)
        if currency != EQUITY_ASSET:
            out.add(CONVERSION_MARKETS.get(currency, f"{EQUITY_ASSET}-{currency}"))
        for asset, total in self.balances.items():
            if asset != EQUITY_ASSET and total != 0:
                out.add(f"{EQUITY_ASSET}-{asset}" if asset.startswith("USD") else f"{asset}-{EQUITY_ASSET}")
        return frozenset(out)

    def compute_in(self, currency: str) -> EquityResult:
        """Equity in ``currency``: the OX equity times the OX price in that currency."""
        result = self.compute()
        if currency == EQUITY_ASSET:
            return result
        rate = self.marks.get(CONVERSION_MARKETS.get(currency, f"{EQUITY_ASSET}-{currency}"))
        if rate is None:
            return EquityResult(result.equity, result.missing_prices + (f"{EQUITY_ASSET}->{currency}",))
        return EquityResult(result.equity * rate, result.missing_prices)

    def compute(self) -> EquityResult:
        total = Decimal(0)
        missing = []
        for asset in sorted(self.balances):
            amount = self.balances[asset]
            if amount == 0:
                continue
            price = self.asset_price(asset)
            if price is None:
                missing.append(asset)
                continue
            total += amount * price
        for market in sorted(self.positions):
            total += self.unrealised_pnl(market)
        return EquityResult(total, tuple(missing))
