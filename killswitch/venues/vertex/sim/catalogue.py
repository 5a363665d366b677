"""Product catalogue replies of the simulated gateway, shaped as the docs and nado-protocol
2.0.0's / vertex-protocol 3.3.1's models show (``all_products``, ``symbols``, ``market_price``,
the product parts of ``subaccount_info``), so an SDK-based strategy can load markets from the
sim. ``vertex=True`` gives the Vertex-era shape (LP state, ``large_position_penalty_x18``,
``lp_spread_x18``; docs §6.1 "Vertex differences"). Pure.

Risk weights, increments and fees are fixed plausible values (the sim does no margining);
oracle prices come from the sim's state.
"""

from __future__ import annotations

X18 = 10**18
_ONE = str(X18)
PRICE_INCREMENT_X18 = X18 // 1000  # 0.001
SIZE_INCREMENT_X18 = X18 // 1000
SYMBOLS = {0: "USDT0", 1: "KBTC", 2: "BTC-PERP", 3: "WETH", 4: "ETH-PERP", 5: "USDC", 6: "SOL-PERP"}


def symbol_of(product_id: int, is_perp: bool) -> str:
    return SYMBOLS.get(product_id, f"P{product_id}{'-PERP' if is_perp else ''}")


def _risk(product_id: int, oracle_x18: int, vertex: bool = False) -> dict:
    long_i, short_i = (X18, X18) if product_id == 0 else (9 * X18 // 10, 11 * X18 // 10)
    long_m, short_m = (X18, X18) if product_id == 0 else (95 * X18 // 100, 105 * X18 // 100)
    d = {"long_weight_initial_x18": str(long_i), "short_weight_initial_x18": str(short_i),
         "long_weight_maintenance_x18": str(long_m), "short_weight_maintenance_x18": str(short_m)}
    if vertex:
        d["large_position_penalty_x18"] = "0"
    else:
        d["price_x18"] = str(oracle_x18)
    return d


def _book_info(product_id: int, vertex: bool = False) -> dict:
    if product_id == 0:
        d = {"size_increment": "0", "price_increment_x18": "0", "min_size": "0", "collected_fees": "0"}
    else:
        d = {"size_increment": str(SIZE_INCREMENT_X18), "price_increment_x18": str(PRICE_INCREMENT_X18),
             "min_size": str(10 * X18), "collected_fees": "0"}
    if vertex:
        d["lp_spread_x18"] = str(3 * X18 // 1000)
    return d


def spot_product(product_id: int, oracle_x18: int, vertex: bool = False) -> dict:
    config = {"token": "0x" + product_id.to_bytes(20, "big").hex(), "interest_inflection_util_x18": "0",
              "interest_floor_x18": "0", "interest_small_cap_x18": "0", "interest_large_cap_x18": "0"}
    if not vertex:
        config.update(withdraw_fee_x18="0", min_deposit_rate_x18="0")
    d = {
        "product_id": product_id, "oracle_price_x18": str(oracle_x18), "risk": _risk(product_id, oracle_x18, vertex),
        "config": config,
        "state": {"cumulative_deposits_multiplier_x18": _ONE, "cumulative_borrows_multiplier_x18": _ONE,
                  "total_deposits_normalized": "0", "total_borrows_normalized": "0"},
        "book_info": _book_info(product_id, vertex),
    }
    if vertex:
        lp = {"amount": "0", "last_cumulative_multiplier_x18": _ONE}
        d["lp_state"] = {"supply": "0", "quote": dict(lp), "base": dict(lp)}
    return d


def perp_product(product_id: int, oracle_x18: int, vertex: bool = False) -> dict:
    d = {
        "product_id": product_id, "oracle_price_x18": str(oracle_x18), "risk": _risk(product_id, oracle_x18, vertex),
        "state": {"cumulative_funding_long_x18": "0", "cumulative_funding_short_x18": "0",
                  "available_settle": "0", "open_interest": "0"},
        "book_info": _book_info(product_id, vertex),
    }
    if vertex:
        d["lp_state"] = {"supply": "0", "last_cumulative_funding_x18": "0", "cumulative_funding_per_lp_x18": "0",
                         "base": "0", "quote": "0"}
    return d


def symbol_entry(product_id: int, is_perp: bool, oracle_x18: int, vertex: bool = False) -> dict:
    risk = _risk(product_id, oracle_x18)
    book = _book_info(product_id)
    d = {"type": "perp" if is_perp else "spot", "product_id": product_id, "symbol": symbol_of(product_id, is_perp),
         "price_increment_x18": book["price_increment_x18"], "size_increment": book["size_increment"],
         "min_size": book["min_size"], "maker_fee_rate_x18": "0", "taker_fee_rate_x18": str(2 * X18 // 10_000),
         "long_weight_initial_x18": risk["long_weight_initial_x18"],
         "long_weight_maintenance_x18": risk["long_weight_maintenance_x18"]}
    if vertex:  # the LP-era fields vertex-protocol requires
        d.update(min_depth_x18=str(1000 * X18), max_spread_rate_x18=str(X18 // 100))
        return d
    d["trading_status"] = "live"  # 2026 (docs "2026 changes", item 8)
    if is_perp:
        d["max_open_interest_x18"] = str(10**9 * X18)
    return d


def market_price(product_id: int, oracle_x18: int) -> dict:
    """Best bid/ask around the oracle (the sim keeps no order book of its own)."""
    spread = max(oracle_x18 // 10_000, PRICE_INCREMENT_X18)
    return {"product_id": product_id, "bid_x18": str(oracle_x18 - spread), "ask_x18": str(oracle_x18 + spread)}
