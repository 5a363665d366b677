"""The Nado simulator's link_signer rules (doc "2026 changes" item 7): who may sign it, the
tx_nonce, weight 30, 50 per 7 days per subaccount (2030), >= 5 USDT0 to enable a signer
(2025), the archive's linked_signer_rate_limit, and orders from a revoked signer (2028)."""

from __future__ import annotations

import pytest

from killswitch.venues.vertex import eip712, wire
from killswitch.venues.vertex.signing import FastSigner
from killswitch.venues.vertex.sim.core import X18, SimCore

STRATEGY = FastSigner("0x" + "5a" * 32)
OTHER = FastSigner("0x" + "6b" * 32)
T0_MS = 1_800_000_000_000
WEEK_MS = 7 * 86_400_000


def _core(value_usd: int = 100):
    core = SimCore(flavour="nado")
    sub = core.create_subaccount()
    sub.spot_x18[0] = value_usd * X18
    return core, sub


def _link(core, sub, signer_addr: str | None, by: FastSigner, *, nonce: int | None = None, now_ms=T0_MS,
          now_s=0.0, charge=False):
    sender = bytes.fromhex(sub.sender[2:])
    signer32 = (bytes.fromhex(signer_addr[2:]) if signer_addr else b"\0" * 20) + b"\0" * 12
    n = core.tx_nonces.get(sub.address, 0) if nonce is None else nonce
    digest = core.domain.digest(eip712.hash_link_signer(sender, signer32, n))
    body = wire.loads(wire.encode_link_signer(sender, signer32, n, by.sign_digest(digest)))
    resp, _ = core.execute(body, now_ms=now_ms, now_s=now_s, charge_weight=charge)
    return resp


def _order(core, sub, by: FastSigner, now_ms=T0_MS):
    sender = bytes.fromhex(sub.sender[2:])
    nonce = ((now_ms + 60_000) << 20) | 7
    digest = core.order_domain(2).digest(eip712.hash_order(sender, 1000 * X18, X18, 4_294_967_295, nonce, 1))
    body = {"place_order": {"product_id": 2, "order": {
        "sender": sub.sender, "priceX18": str(1000 * X18), "amount": str(X18), "expiration": "4294967295",
        "nonce": str(nonce), "appendix": "1"}, "signature": "0x" + by.sign_digest(digest).hex()}}
    resp, _ = core.execute(body, now_ms=now_ms, now_s=0.0, charge_weight=False)
    return resp


def test_an_owner_revoke_makes_the_old_signers_orders_fail_with_2028():
    core, sub = _core()
    owner = FastSigner(sub.private_key_hex)
    assert _link(core, sub, STRATEGY.address, owner)["status"] == "success"
    assert _order(core, sub, STRATEGY)["status"] == "success"
    assert _link(core, sub, None, owner)["status"] == "success"
    assert core.query({"type": "linked_signer", "subaccount": sub.sender}, now_ms=T0_MS)["data"] == {
        "linked_signer": wire.ZERO_ADDRESS}
    refused = _order(core, sub, STRATEGY, now_ms=T0_MS + 1)
    assert refused["status"] == "failure" and refused["error_code"] == 2028
    assert _order(core, sub, owner, now_ms=T0_MS + 2)["status"] == "success"


def test_the_current_linked_signer_may_sign_link_signer_but_a_revoked_one_may_not():
    core, sub = _core()
    owner = FastSigner(sub.private_key_hex)
    _link(core, sub, STRATEGY.address, owner)
    # The doc's caveat: the linked signer itself re-links (here: to another key of its own).
    assert _link(core, sub, OTHER.address, STRATEGY)["status"] == "success"
    assert sub.linked_signer == OTHER.address.lower()
    _link(core, sub, None, owner)
    refused = _link(core, sub, OTHER.address, OTHER)
    assert refused["status"] == "failure" and refused["error_code"] == 2028
    # ... unless the (unconfirmed) lagging-check fault is on.
    core.accept_revoked_signer_link = True
    assert _link(core, sub, OTHER.address, OTHER)["status"] == "success"
    assert sub.linked_signer == OTHER.address.lower()
    assert _link(core, sub, OTHER.address, STRATEGY)["error_code"] == 2028  # not the last revoked one


def test_tx_nonce_must_match_and_moves_by_one():
    core, sub = _core()
    owner = FastSigner(sub.private_key_hex)
    bad = _link(core, sub, STRATEGY.address, owner, nonce=5)
    assert bad["status"] == "failure" and bad["error_code"] == 2022
    assert _link(core, sub, STRATEGY.address, owner, nonce=0)["status"] == "success"
    assert core.query({"type": "nonces", "address": sub.address}, now_ms=T0_MS)["data"]["tx_nonce"] == "1"


def test_fifty_per_seven_days_then_2030_naming_the_wait():
    core, sub = _core()
    owner = FastSigner(sub.private_key_hex)
    for i in range(50):
        assert _link(core, sub, None, owner, now_ms=T0_MS + i * 1000)["status"] == "success", i
    refused = _link(core, sub, None, owner, now_ms=T0_MS + 50_000)
    assert refused["status"] == "failure" and refused["error_code"] == 2030
    wait_s = (WEEK_MS - 50_000) // 1000
    assert f"wait for {wait_s} seconds" in refused["error"]
    archive = core.archive_query({"linked_signer_rate_limit": {"subaccount": sub.sender}}, now_ms=T0_MS + 50_000)
    assert archive == {"remaining_tx": "0", "wait_time": wait_s, "signer": wire.ZERO_ADDRESS, "total_tx_limit": "50"}
    # The oldest request leaves the window: one more fits.
    assert _link(core, sub, None, owner, now_ms=T0_MS + WEEK_MS + 1)["status"] == "success"
    assert wire.parse_link_signer_rate_limit(core.archive_query(
        {"linked_signer_rate_limit": {"subaccount": sub.sender}}, now_ms=T0_MS + WEEK_MS + 1)).remaining == 0


def test_a_refused_request_does_not_use_the_weekly_budget():
    core, sub = _core()
    owner = FastSigner(sub.private_key_hex)
    _link(core, sub, STRATEGY.address, owner, nonce=9)  # 2022
    _link(core, sub, STRATEGY.address, OTHER)  # 2028
    got = core.archive_query({"linked_signer_rate_limit": {"subaccount": sub.sender}}, now_ms=T0_MS)
    assert got["remaining_tx"] == "50" and got["wait_time"] == 0


def test_enabling_a_signer_needs_five_usdt0_but_a_revoke_does_not():
    core, sub = _core(value_usd=4)
    owner = FastSigner(sub.private_key_hex)
    refused = _link(core, sub, STRATEGY.address, owner)
    assert refused["status"] == "failure" and refused["error_code"] == 2025
    assert _link(core, sub, None, owner)["status"] == "success"
    sub.spot_x18[0] = 5 * X18
    assert _link(core, sub, STRATEGY.address, owner)["status"] == "success"


def test_link_signer_weighs_30_of_the_wallets_100_per_10_s():
    core, sub = _core()
    owner = FastSigner(sub.private_key_hex)
    for i in range(3):
        assert _link(core, sub, None, owner, now_s=1.0 + i, charge=True)["status"] == "success"
    limited = _link(core, sub, None, owner, now_s=4.0, charge=True)
    assert limited["status"] == "failure" and limited["error_code"] == 1000
    assert _link(core, sub, None, owner, now_s=11.5, charge=True)["status"] == "success"


def test_the_vertex_flavour_has_no_weekly_cap_or_account_value_rule():
    core = SimCore(flavour="vertex")
    sub = core.create_subaccount()
    owner = FastSigner(sub.private_key_hex)
    for i in range(51):
        assert _link(core, sub, STRATEGY.address if i % 2 else None, owner)["status"] == "success", i


@pytest.mark.parametrize("body", [{}, {"nope": {}}, {"linked_signer_rate_limit": "x"}])
def test_archive_refuses_other_queries(body):
    from killswitch.venues.vertex.sim.core import ExecError

    core, _ = _core()
    with pytest.raises(ExecError):
        core.archive_query(body, now_ms=T0_MS)
