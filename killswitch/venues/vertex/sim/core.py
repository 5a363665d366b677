"""The simulated gateway's state machine: pure, synchronous, time passed in.

It validates executes the way the doc (§11) describes — parse, signature length/v, signer
recovery against the rebuilt struct, recv_time window, product ids, wallet weight — and
keeps subaccounts, resting orders, trigger orders, balances and oracle prices. Stream
pushes are returned as data; the trio shell in ``sim.py`` delivers them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from killswitch.venues.base import RateBudget

from killswitch.venues.vertex import eip712
from killswitch.venues.vertex.eip712 import Domain, product_address
from killswitch.venues.vertex.nonce import MAX_RECV_AHEAD_MS, split_nonce
from killswitch.venues.vertex.signing import FastSigner, SignatureError, recover_address
from killswitch.venues.vertex.sim.catalogue import market_price, perp_product, spot_product, symbol_entry

X18 = 10**18
WALLET_LIMITS = ((60, 600), (10, 100))
SUBSCRIPTION_CAP_PER_WALLET = 5
MAX_PLACE_ORDERS = 50  # per place_orders request (2111)
# Nado link_signer (doc "2026 changes" item 7): weight 30, at most 50 per 7 days per
# subaccount (then 2030 "wait for {wait_time} seconds"), >= 5 USDT0 of account value to
# enable a signer (2025; a zero-signer revoke is taken as exempt, which is unconfirmed).
LINK_SIGNER_WEIGHT = 30
LINK_SIGNER_WEEKLY_LIMIT = 50
LINK_SIGNER_WINDOW_MS = 7 * 86_400_000
LINK_SIGNER_MIN_VALUE_X18 = 5 * 10**18
ZERO_ADDRESS = "0x" + "00" * 20
VERTEX_ENDPOINT = "0xbbEE07B3e8121227AfCFe1E2B82772246226128e"
NADO_ENDPOINT = "0x05ec92D78ED421f3D3Ada77FFdE167106565974E"


class ExecError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class SimOrder:
    product_id: int
    sender: str  # 0x-hex bytes32, lowercase
    price_x18: int
    amount: int
    expiration: int
    nonce: int
    digest: str
    placed_at: int
    unfilled_amount: int
    appendix: int | None = None
    signature: str = ""
    trigger: dict | None = None  # trigger service: the order's TriggerCriteria as sent

    def to_json(self) -> dict:
        d = {
            "product_id": self.product_id,
            "sender": self.sender,
            "price_x18": str(self.price_x18),
            "amount": str(self.amount),
            "expiration": str(self.expiration),
            "order_type": "default",
            "nonce": str(self.nonce),
            "unfilled_amount": str(self.unfilled_amount),
            "digest": self.digest,
            "placed_at": self.placed_at,
        }
        if self.appendix is not None:
            d["appendix"] = str(self.appendix)
        return d

    def to_trigger_json(self, status: str = "waiting_price") -> dict:
        """One ``list_trigger_orders`` item, shaped as nado-protocol's / vertex-protocol's
        ``TriggerOrder`` (Vertex's status for a pending trigger is ``pending``)."""
        order = {
            "sender": self.sender,
            "priceX18": str(self.price_x18),
            "amount": str(self.amount),
            "expiration": str(self.expiration),
            "nonce": str(self.nonce),
        }
        if self.appendix is not None:
            order["appendix"] = str(self.appendix)
        return {
            "order": {"product_id": self.product_id, "order": order, "signature": self.signature,
                      "digest": self.digest, "trigger": self.trigger},
            "status": status,
            "placed_at": self.placed_at,
            "updated_at": self.placed_at,
        }


@dataclass(slots=True)
class Subaccount:
    sender: str
    address: str
    private_key_hex: str | None = None  # only for subaccounts the sim created
    linked_signer: str | None = None
    revoked_signer: str | None = None  # the last linked signer replaced (see accept_revoked_signer_link)
    link_signer_ms: list[int] = field(default_factory=list)  # accepted link_signer times (7-day window)
    orders: dict[str, SimOrder] = field(default_factory=dict)
    trigger_orders: dict[str, SimOrder] = field(default_factory=dict)
    spot_x18: dict[int, int] = field(default_factory=dict)
    perp_x18: dict[int, tuple[int, int]] = field(default_factory=dict)  # amount, v_quote


@dataclass(frozen=True, slots=True)
class Push:
    """One stream event for subscribers of (stream type, subaccount, product)."""

    stream: str
    subaccount: str
    product_id: int
    event: dict


def _hex_bytes(v: Any, n: int, what: str) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x"):
        raise ExecError(2038, f"invalid {what}")
    try:
        raw = bytes.fromhex(v[2:])
    except ValueError:
        raise ExecError(2038, f"invalid {what}") from None
    if n and len(raw) != n:
        raise ExecError(2038, f"invalid {what} length")
    return raw


def _uint(v: Any, bits: int, what: str, *, signed: bool = False) -> int:
    if isinstance(v, bool):
        raise ExecError(2038, f"invalid {what}")
    if isinstance(v, str):
        try:
            v = int(v, 10)
        except ValueError:
            raise ExecError(2038, f"invalid {what}") from None
    if not isinstance(v, int):
        raise ExecError(2038, f"invalid {what}")
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    if not lo <= v < hi:
        raise ExecError(2038, f"{what} out of range")
    return v


def _obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise ExecError(2038, f"invalid {what}")
    return v


class SimCore:
    def __init__(
        self,
        *,
        flavour: str = "nado",
        chain_id: int | None = None,
        endpoint_address: str | None = None,
        spot_products: tuple[int, ...] = (0, 1, 3, 5),
        perp_products: tuple[int, ...] = (2, 4, 6),
        allow_linked_signer_stream_auth: bool = False,
        accept_revoked_signer_link: bool = False,
    ) -> None:
        if flavour not in ("nado", "vertex"):
            raise ValueError("flavour is 'nado' or 'vertex'")
        self.flavour = flavour
        self.chain_id = chain_id if chain_id is not None else (57073 if flavour == "nado" else 42161)
        self.endpoint = endpoint_address or (NADO_ENDPOINT if flavour == "nado" else VERTEX_ENDPOINT)
        self.domain = Domain("Nado" if flavour == "nado" else "Vertex", self.chain_id, self.endpoint)
        self.spot_products = spot_products
        self.perp_products = perp_products
        self.products = tuple(sorted(set(spot_products) | set(perp_products)))
        self.book_addrs = {
            pid: "0x" + eip712.keccak256(b"book" + pid.to_bytes(4, "big"))[-20:].hex() for pid in self.products
        }
        self.oracle_x18: dict[int, int] = {pid: (1 if pid == 0 else 1000 * pid) * X18 for pid in self.products}
        self.subaccounts: dict[str, Subaccount] = {}
        self.budgets: dict[str, RateBudget] = {}
        self.seen_cancel_nonces: set[tuple[str, int]] = set()
        self.tx_nonces: dict[str, int] = {}  # wallet address -> next tx_nonce (link_signer)
        # The docs: StreamAuthentication "must be signed by the wallet address specified by
        # sender"; whether a linked signer may is undocumented, so it is refused unless asked.
        self.allow_linked_signer_stream_auth = allow_linked_signer_stream_auth
        # Fault for the doc's unconfirmed caveat (a runaway strategy re-linking itself): a
        # LinkSigner signed by the signer that was linked before the last change is accepted,
        # as a lagging signer check would. Off by default: the documented check (sender or the
        # current linked signer) is what the sim enforces.
        self.accept_revoked_signer_link = accept_revoked_signer_link

    # -- setup --------------------------------------------------------------------------

    def order_domain(self, product_id: int) -> Domain:
        if self.flavour == "nado":
            return self.domain.with_contract(product_address(product_id))
        return self.domain.with_contract(self.book_addrs[product_id])

    def create_subaccount(self, *, name: str = "default", private_key: str | None = None) -> Subaccount:
        key_hex = private_key or "0x" + secrets.token_bytes(32).hex()
        signer = FastSigner(key_hex)
        sender = "0x" + eip712.sender_bytes(signer.address, name).hex()
        sub = self.subaccounts.get(sender)
        if sub is None:
            sub = self.subaccounts[sender] = Subaccount(sender, signer.address, key_hex)
            sub.spot_x18[0] = 0
        return sub

    def subaccount(self, sender: str) -> Subaccount:
        sub = self.subaccounts.get(sender.lower())
        if sub is None:
            raise ExecError(2024, "subaccount not found")
        return sub

    def budget(self, address: str) -> RateBudget:
        b = self.budgets.get(address)
        if b is None:
            b = self.budgets[address] = RateBudget(WALLET_LIMITS)
        return b

    def health_x18(self, sub: Subaccount) -> int:
        """Unweighted health: Σ spot amount×oracle + Σ perp (amount×oracle + v_quote)."""
        total = sum(a * self.oracle_x18.get(p, 0) // X18 for p, a in sub.spot_x18.items())
        total += sum(a * self.oracle_x18.get(p, 0) // X18 + vq for p, (a, vq) in sub.perp_x18.items())
        return total

    # -- validation helpers ---------------------------------------------------------------

    def _check_signer(self, digest: bytes, signature: Any, sender: bytes, *, owner_only: bool = False) -> str:
        """The recovered signer (lowercase address); raises unless it may act for ``sender``."""
        sig = _hex_bytes(signature, 0, "signature")
        try:
            signer = recover_address(digest, sig)
        except SignatureError as exc:
            raise ExecError(exc.code, str(exc)) from None
        owner = "0x" + sender[:20].hex()
        sub = self.subaccounts.get("0x" + sender.hex())
        linked = None if owner_only or sub is None else sub.linked_signer
        if signer != owner and signer != linked:
            raise ExecError(2028, "invalid signer" + (": must be signed by the sender's wallet" if owner_only else ""))
        return signer

    @staticmethod
    def _check_recv_time(nonce: int, now_ms: int) -> None:
        recv_time, _ = split_nonce(nonce)
        if recv_time <= now_ms:
            raise ExecError(2011, "Request received after 'recv_time'")
        if recv_time > now_ms + MAX_RECV_AHEAD_MS:
            raise ExecError(2012, "Request received more than 100 s before 'recv_time'")

    def _check_products(self, pids: list[int], *, allow_dupes: bool = False) -> None:
        for pid in pids:
            if pid not in self.products or pid == 0:
                raise ExecError(2016, f"invalid product id {pid}")
        if not allow_dupes and len(set(pids)) != len(pids):
            raise ExecError(2060, "duplicate product ids")

    def _charge(self, address: str, weight: int, now_s: float) -> None:
        if not self.budget(address).try_charge(weight, now_s):
            raise ExecError(1000, "Too Many Requests! Please slow down your requests.")

    # -- executes -------------------------------------------------------------------------

    def execute(self, body: Any, *, now_ms: int, now_s: float, trigger: bool = False,
                charge_weight: bool = True) -> tuple[dict, list[Push]]:
        """Returns (response, pushes). ``trigger``: the trigger service's plane."""
        if not isinstance(body, dict) or len(body) != 1:
            return _failure("unknown", 2038, "invalid execute message"), []
        (name, payload), = body.items()
        rt = f"execute_{name}"
        sig = payload.get("signature") if isinstance(payload, dict) else None
        try:
            handler = {
                "cancel_product_orders": self._cancel_product_orders,
                "cancel_orders": self._cancel_orders,
                "place_order": self._place_order,
                "place_orders": self._place_orders,
                "cancel_and_place": self._cancel_and_place,
                "link_signer": self._link_signer,
            }.get(name)
            if trigger and name in ("place_orders", "cancel_and_place", "link_signer"):
                handler = None
            if handler is None:
                raise ExecError(2038, f"unsupported execute {name}")
            data, pushes = handler(_obj(payload, name), now_ms, now_s, trigger, charge_weight)
        except ExecError as exc:
            return _failure(rt, exc.code, exc.message, sig), []
        resp = {"status": "success", "signature": sig, "request_type": rt}
        if data is not None:
            resp["data"] = data
        if isinstance(payload.get("id"), int):
            resp["id"] = payload["id"]
        return resp, pushes

    def _parse_cancel_tx(self, payload: dict, with_digests: bool):
        tx = _obj(payload.get("tx"), "tx")
        sender = _hex_bytes(tx.get("sender"), 32, "sender")
        pids_raw = tx.get("productIds")
        if not isinstance(pids_raw, list):
            raise ExecError(2038, "invalid productIds")
        pids = [_uint(p, 32, "productId") for p in pids_raw]
        if "nonce" not in tx:
            raise ExecError(2033, "nonce missing in payload")
        nonce = _uint(tx.get("nonce"), 64, "nonce")
        digests: list[bytes] = []
        if with_digests:
            raw = tx.get("digests")
            if not isinstance(raw, list):
                raise ExecError(2038, "invalid digests")
            digests = [_hex_bytes(d, 32, "digest") for d in raw]
            if len(digests) != len(pids):
                raise ExecError(2039, "mismatched digests and productIds length")
        return sender, pids, digests, nonce

    def _cancel_product_orders(self, payload, now_ms, now_s, trigger, charge):
        sender, pids, _, nonce = self._parse_cancel_tx(payload, False)
        digest = self.domain.digest(eip712.hash_cancellation_products(sender, pids, nonce))
        self._check_signer(digest, payload.get("signature"), sender)
        self._check_recv_time(nonce, now_ms)
        self._check_products(pids)
        claimed = payload.get("digest")
        if claimed not in (None, "0x") and _hex_bytes(claimed, 32, "digest") != digest:
            raise ExecError(2038, "digest does not match the transaction")
        self._check_replay(sender, nonce)
        sub = self.subaccount("0x" + sender.hex())
        if charge and not trigger:
            self._charge(sub.address, 50 if not pids else 5 * len(pids), now_s)
        book = sub.trigger_orders if trigger else sub.orders
        wanted = set(pids)
        removed = [o for o in book.values() if not wanted or o.product_id in wanted]
        return self._remove(sub, removed, trigger, now_ms)

    def _cancel_orders(self, payload, now_ms, now_s, trigger, charge):
        sender, pids, digests, nonce = self._parse_cancel_tx(payload, True)
        digest = self.domain.digest(eip712.hash_cancellation(sender, pids, digests, nonce))
        self._check_signer(digest, payload.get("signature"), sender)
        self._check_recv_time(nonce, now_ms)
        self._check_products(pids, allow_dupes=True)
        self._check_replay(sender, nonce)
        sub = self.subaccount("0x" + sender.hex())
        if charge and not trigger:
            self._charge(sub.address, max(1, len(digests)), now_s)
        required = _required_unfilled(payload, len(digests), trigger)
        book = sub.trigger_orders if trigger else sub.orders
        removed, missing = [], []
        for pid, d in zip(pids, digests):
            o = book.get("0x" + d.hex())
            if o is None or o.product_id != pid:
                missing.append("0x" + d.hex())
            else:
                removed.append(o)
        if missing:
            # The whole request fails; the message names every missing digest so a client
            # can tell which ones are gone and re-cancel the rest.
            raise ExecError(2020, "Order not found: " + ",".join(missing))
        if required is not None and abs(removed[0].unfilled_amount) != abs(required):
            raise ExecError(2124, f"unfilled amount {removed[0].unfilled_amount} != required {required}")
        return self._remove(sub, removed, trigger, now_ms)

    def _check_replay(self, sender: bytes, nonce: int) -> None:
        key = (sender.hex(), nonce)
        if key in self.seen_cancel_nonces:
            raise ExecError(2022, "nonce already used")
        self.seen_cancel_nonces.add(key)

    def _remove(self, sub: Subaccount, removed: list[SimOrder], trigger: bool, now_ms: int):
        book = sub.trigger_orders if trigger else sub.orders
        pushes = []
        for o in removed:
            del book[o.digest]
            if not trigger:
                pushes.append(Push("order_update", sub.sender, o.product_id, {
                    "type": "order_update", "timestamp": str(now_ms * 1_000_000), "product_id": o.product_id,
                    "digest": o.digest, "amount": "0", "reason": "cancelled",
                }))
        data = None if trigger else {"cancelled_orders": [o.to_json() for o in removed]}
        return data, pushes

    def _place_order(self, payload, now_ms, now_s, trigger, charge):
        pid = _uint(payload.get("product_id"), 32, "product_id")
        self._check_products([pid])
        o = _obj(payload.get("order"), "order")
        sender = _hex_bytes(o.get("sender"), 32, "sender")
        price = _uint(o.get("priceX18"), 128, "priceX18", signed=True)
        amount = _uint(o.get("amount"), 128, "amount", signed=True)
        expiration = _uint(o.get("expiration"), 64, "expiration")
        nonce = _uint(o.get("nonce"), 64, "nonce")
        appendix = _uint(o.get("appendix", 1), 128, "appendix") if self.flavour == "nado" else None
        digest = self.order_domain(pid).digest(eip712.hash_order(sender, price, amount, expiration, nonce, appendix))
        self._check_signer(digest, payload.get("signature"), sender)
        self._check_recv_time(nonce, now_ms)
        if amount == 0:
            raise ExecError(2001, "order amount is zero")
        sub = self.subaccount("0x" + sender.hex())
        dh = "0x" + digest.hex()
        if dh in sub.orders or dh in sub.trigger_orders:
            raise ExecError(2013, "digest already exists")
        criteria = _trigger_criteria(payload.get("trigger"), self.flavour) if trigger else None
        book = sub.trigger_orders if trigger else sub.orders
        if sum(1 for x in book.values() if x.product_id == pid) >= 500:
            raise ExecError(2005, "too many open orders")
        if charge and not trigger:
            self._charge(sub.address, 1 if payload.get("spot_leverage", True) is not False else 20, now_s)
        order = SimOrder(pid, sub.sender, price, amount, expiration, nonce, dh, now_ms // 1000, amount, appendix,
                         str(payload.get("signature")), criteria)
        book[dh] = order
        pushes = []
        if not trigger:
            pushes.append(Push("order_update", sub.sender, pid, {
                "type": "order_update", "timestamp": str(now_ms * 1_000_000), "product_id": pid,
                "digest": dh, "amount": str(amount), "reason": "placed",
            }))
        return {"digest": dh}, pushes

    def _place_orders(self, payload, now_ms, now_s, trigger, charge):
        """Nado batch: one result per order (digest or error); stop_on_failure stops at the first error."""
        orders = payload.get("orders")
        if not isinstance(orders, list) or not orders:
            raise ExecError(2038, "invalid orders")
        if len(orders) > MAX_PLACE_ORDERS:
            raise ExecError(2111, f"at most {MAX_PLACE_ORDERS} orders per place_orders")
        results, pushes = [], []
        for item in orders:
            try:
                data, p = self._place_order(_obj(item, "orders[]"), now_ms, now_s, trigger, charge)
            except ExecError as exc:
                results.append({"digest": None, "error": exc.message})
                if payload.get("stop_on_failure"):
                    break
                continue
            results.append({"digest": data["digest"], "error": None})
            pushes += p
        return {"place_orders": results}, pushes

    def _cancel_and_place(self, payload, now_ms, now_s, trigger, charge):
        cancel_tx = _obj(payload.get("cancel_tx"), "cancel_tx")
        place = _obj(payload.get("place_order"), "place_order")
        sender, pids, digests, nonce = self._parse_cancel_tx({"tx": cancel_tx}, True)
        cancel_signer = self._check_signer(self.domain.digest(eip712.hash_cancellation(sender, pids, digests, nonce)),
                                           payload.get("cancel_signature"), sender)
        order = _obj(place.get("order"), "order")
        if _hex_bytes(order.get("sender"), 32, "sender") != sender:
            raise ExecError(2066, "cancel and place have different senders")
        pid = _uint(place.get("product_id"), 32, "product_id")
        appendix = _uint(order.get("appendix", 1), 128, "appendix") if self.flavour == "nado" else None
        place_digest = self.order_domain(pid).digest(eip712.hash_order(
            sender, _uint(order.get("priceX18"), 128, "priceX18", signed=True),
            _uint(order.get("amount"), 128, "amount", signed=True), _uint(order.get("expiration"), 64, "expiration"),
            _uint(order.get("nonce"), 64, "nonce"), appendix))
        if self._check_signer(place_digest, place.get("signature"), sender) != cancel_signer:
            raise ExecError(2066, "cancel and place are signed by different signers")
        cancel_payload = {"tx": cancel_tx, "signature": payload.get("cancel_signature")}
        if payload.get("required_unfilled_amount") is not None:
            cancel_payload["required_unfilled_amount"] = payload["required_unfilled_amount"]
        try:
            _, cancel_pushes = self._cancel_orders(cancel_payload, now_ms, now_s, trigger, charge)
        except ExecError as exc:
            if payload.get("place_requires_unfilled"):
                raise ExecError(2121, f"place aborted: the cancel failed ({exc.code} {exc.message})") from None
            raise
        data, place_pushes = self._place_order(place, now_ms, now_s, trigger, charge)
        return data, cancel_pushes + place_pushes

    def _link_signer(self, payload, now_ms, now_s, trigger, charge):
        tx = _obj(payload.get("tx"), "tx")
        sender = _hex_bytes(tx.get("sender"), 32, "sender")
        signer = _hex_bytes(tx.get("signer"), 32, "signer")
        if "nonce" not in tx:
            raise ExecError(2033, "nonce missing in payload")
        nonce = _uint(tx.get("nonce"), 64, "nonce")
        digest = self.domain.digest(eip712.hash_link_signer(sender, signer, nonce))
        sub = self.subaccounts.get("0x" + sender.hex())
        try:
            # validateSignedTx: the sender's wallet or the *current* linked signer (doc caveat 1).
            self._check_signer(digest, payload.get("signature"), sender)
        except ExecError as exc:
            if not (exc.code == 2028 and self.accept_revoked_signer_link and sub is not None
                    and sub.revoked_signer is not None
                    and recover_address(digest, _hex_bytes(payload.get("signature"), 0, "signature"))
                    == sub.revoked_signer):
                raise
        sub = self.subaccount("0x" + sender.hex())
        if nonce != self.tx_nonces.get(sub.address, 0):
            raise ExecError(2022, f"invalid nonce: expected tx_nonce {self.tx_nonces.get(sub.address, 0)}")
        linked = "0x" + signer[:20].hex()
        if self.flavour == "nado":
            wait_s = self.link_signer_wait_s(sub, now_ms)
            if wait_s > 0:
                raise ExecError(2030, f"too many link_signer requests: wait for {wait_s} seconds")
            if linked != ZERO_ADDRESS and self.health_x18(sub) < LINK_SIGNER_MIN_VALUE_X18:
                raise ExecError(2025, "insufficient account value: linking a signer needs at least 5 USDT0")
        if charge:
            self._charge(sub.address, LINK_SIGNER_WEIGHT, now_s)
        self.tx_nonces[sub.address] = nonce + 1
        if self.flavour == "nado":
            sub.link_signer_ms.append(now_ms)
        new = None if linked == ZERO_ADDRESS else linked
        if new != sub.linked_signer and sub.linked_signer is not None:
            sub.revoked_signer = sub.linked_signer
        sub.linked_signer = new
        return None, []

    def _link_signer_window(self, sub: Subaccount, now_ms: int) -> list[int]:
        sub.link_signer_ms = [t for t in sub.link_signer_ms if t > now_ms - LINK_SIGNER_WINDOW_MS]
        return sub.link_signer_ms

    def link_signer_wait_s(self, sub: Subaccount, now_ms: int) -> int:
        """Seconds until one more link_signer fits the 7-day window (0 = now)."""
        used = self._link_signer_window(sub, now_ms)
        if len(used) < LINK_SIGNER_WEEKLY_LIMIT:
            return 0
        oldest = used[-LINK_SIGNER_WEEKLY_LIMIT]
        return max(1, -(-(oldest + LINK_SIGNER_WINDOW_MS - now_ms) // 1000))

    def archive_query(self, body: Any, *, now_ms: int) -> dict:
        """The archive (indexer) queries the sim serves: ``linked_signer_rate_limit`` only.
        Archive replies are bare objects (no status envelope); a failure is ``{"error": ...}``."""
        if not isinstance(body, dict) or len(body) != 1:
            raise ExecError(2038, "invalid archive query")
        (name, params), = body.items()
        if name != "linked_signer_rate_limit" or not isinstance(params, dict):
            raise ExecError(2038, f"unsupported archive query {name}")
        sub = self.subaccount(str(params.get("subaccount", "")))
        used = self._link_signer_window(sub, now_ms)
        return {"remaining_tx": str(max(0, LINK_SIGNER_WEEKLY_LIMIT - len(used))),
                "wait_time": self.link_signer_wait_s(sub, now_ms),
                "signer": sub.linked_signer or ZERO_ADDRESS, "total_tx_limit": str(LINK_SIGNER_WEEKLY_LIMIT)}

    def sign_order_body(self, sub: Subaccount, *, product_id: int, price_x18: int, amount: int, nonce: int,
                        expiration: int = 4_294_967_295, trigger: dict | None = None) -> dict:
        """A ``place_order`` execute signed with the subaccount's own key (admin helper)."""
        if sub.private_key_hex is None:
            raise ExecError(2028, "the sim does not hold this subaccount's key")
        appendix = 1 if self.flavour == "nado" else None
        sender = bytes.fromhex(sub.sender[2:])
        digest = self.order_domain(product_id).digest(
            eip712.hash_order(sender, price_x18, amount, expiration, nonce, appendix))
        sig = FastSigner(sub.private_key_hex).sign_digest(digest)
        order = {"sender": sub.sender, "priceX18": str(price_x18), "amount": str(amount),
                 "expiration": str(expiration), "nonce": str(nonce)}
        if appendix is not None:
            order["appendix"] = str(appendix)
        body: dict = {"product_id": product_id, "order": order, "signature": "0x" + sig.hex()}
        if trigger is not None:
            body["trigger"] = trigger
        return {"place_order": body}

    # -- queries --------------------------------------------------------------------------

    def query(self, body: Any, *, now_ms: int) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return _failure("query_unknown", 2038, "invalid query")
        t = body["type"]
        rt = f"query_{t}"
        try:
            data = self._query(t, body, now_ms)
        except ExecError as exc:
            return _failure(rt, exc.code, exc.message)
        return {"status": "success", "data": data, "request_type": rt}

    def _query(self, t: str, body: dict, now_ms: int) -> Any:
        if t == "status":
            return "active"
        if t == "contracts":
            d = {"chain_id": str(self.chain_id), "endpoint_addr": self.endpoint.lower()}
            if self.flavour == "vertex":
                d["book_addrs"] = ["0x" + "00" * 20] + [self.book_addrs[p] for p in range(1, max(self.products) + 1)
                                                         if p in self.book_addrs]
            return d
        if t == "all_products":
            vx = self.flavour == "vertex"
            return {"spot_products": [spot_product(p, self.oracle_x18[p], vx) for p in self.spot_products],
                    "perp_products": [perp_product(p, self.oracle_x18[p], vx) for p in self.perp_products]}
        if t == "symbols":
            return {"symbols": self._symbols(body)}
        if t == "market_price":
            pid = _uint(body.get("product_id"), 32, "product_id")
            self._check_products([pid])
            return market_price(pid, self.oracle_x18[pid])
        if t == "market_prices":
            pids = body.get("product_ids")
            if not isinstance(pids, list):
                raise ExecError(2038, "invalid product_ids")
            pids = [_uint(p, 32, "product_id") for p in pids]
            self._check_products(pids)
            return {"market_prices": [market_price(p, self.oracle_x18[p]) for p in pids]}
        if t == "nonces":
            addr = str(body.get("address", "")).lower()[:42]
            return {"tx_nonce": str(self.tx_nonces.get(addr, 0)), "order_nonce": str((now_ms + 100_000) << 20)}
        if t == "subaccount_info":
            return self._subaccount_info(str(body.get("subaccount", "")).lower())
        if t == "subaccount_orders":
            sub = self.subaccount(str(body.get("sender", "")))
            pid = _uint(body.get("product_id"), 32, "product_id")
            return {"sender": sub.sender, "product_id": pid,
                    "orders": [o.to_json() for o in sub.orders.values() if o.product_id == pid]}
        if t == "orders":
            sub = self.subaccount(str(body.get("sender", "")))
            pids = body.get("product_ids")
            if not isinstance(pids, list):
                raise ExecError(2038, "invalid product_ids")
            pids = [_uint(p, 32, "product_id") for p in pids]
            return {"sender": sub.sender, "product_orders": [
                {"product_id": p, "orders": [o.to_json() for o in sub.orders.values() if o.product_id == p]}
                for p in pids]}
        if t == "order":
            digest = str(body.get("digest", "")).lower()
            for sub in self.subaccounts.values():
                if digest in sub.orders:
                    return sub.orders[digest].to_json()
            raise ExecError(2020, "order not found")
        if t == "linked_signer":
            sub = self.subaccount(str(body.get("subaccount", "")))
            return {"linked_signer": sub.linked_signer or ZERO_ADDRESS}
        raise ExecError(2038, f"unsupported query {t}")

    def _spot_balance(self, pid: int, amount: int) -> dict:
        if self.flavour == "vertex":
            return {"product_id": pid, "lp_balance": {"amount": "0"},
                    "balance": {"amount": str(amount), "last_cumulative_multiplier_x18": str(X18)}}
        return {"product_id": pid, "balance": {"amount": str(amount)}}

    def _perp_balance(self, pid: int, amount: int, v_quote: int) -> dict:
        d = {"product_id": pid, "balance": {"amount": str(amount), "v_quote_balance": str(v_quote),
                                            "last_cumulative_funding_x18": "0"}}
        if self.flavour == "vertex":
            d["lp_balance"] = {"amount": "0", "last_cumulative_funding_x18": "0"}
        return d

    def _symbols(self, body: dict) -> dict:
        kind = body.get("product_type")
        wanted = body.get("product_ids")
        out = {}
        for pid in self.products:
            is_perp = pid in self.perp_products
            if kind not in (None, "perp" if is_perp else "spot") or (isinstance(wanted, list) and pid not in wanted):
                continue
            entry = symbol_entry(pid, is_perp, self.oracle_x18[pid], self.flavour == "vertex")
            out[entry["symbol"]] = entry
        return out

    def _subaccount_info(self, sender: str) -> dict:
        # Shaped as the docs' example (§6.1) and nado-protocol's SubaccountInfoData; the sim
        # does no margining, so all three healths are the unweighted one.
        sub = self.subaccounts.get(sender)
        if sub is None:
            zero = {"assets": "0", "liabilities": "0", "health": "0"}
            return {"subaccount": sender, "exists": False, "healths": [zero, zero, zero], "health_contributions": [],
                    "spot_count": 0, "perp_count": 0, "spot_balances": [], "perp_balances": [],
                    "spot_products": [], "perp_products": []}
        h = self.health_x18(sub)
        vx = self.flavour == "vertex"
        health = {"assets": str(max(h, 0)), "liabilities": str(max(-h, 0)), "health": str(h)}
        contributions = [["0", "0", "0"] for _ in range(max(self.products) + 1)]
        for p, a in sub.spot_x18.items():
            contributions[p] = [str(a * self.oracle_x18.get(p, 0) // X18)] * 3
        for p, (a, vq) in sub.perp_x18.items():
            contributions[p] = [str(a * self.oracle_x18.get(p, 0) // X18 + vq)] * 3
        spot = sorted(sub.spot_x18.items())
        perp = sorted(sub.perp_x18.items())
        return {
            "subaccount": sub.sender, "exists": True, "healths": [health, health, health],
            "health_contributions": contributions, "spot_count": len(spot), "perp_count": len(perp),
            "spot_balances": [self._spot_balance(p, a) for p, a in spot],
            "perp_balances": [self._perp_balance(p, a, vq) for p, (a, vq) in perp],
            "spot_products": [spot_product(p, self.oracle_x18[p], vx) for p in self.spot_products],
            "perp_products": [perp_product(p, self.oracle_x18[p], vx) for p in self.perp_products],
        }

    def trigger_query(self, body: Any, *, now_ms: int) -> dict:
        rt = "query_list_trigger_orders"
        try:
            if not isinstance(body, dict) or body.get("type") != "list_trigger_orders":
                raise ExecError(2038, "unsupported trigger query")
            tx = _obj(body.get("tx"), "tx")
            sender = _hex_bytes(tx.get("sender"), 32, "sender")
            recv_time = _uint(tx.get("recvTime"), 64, "recvTime")
            digest = self.domain.digest(eip712.hash_list_trigger_orders(sender, recv_time))
            self._check_signer(digest, body.get("signature"), sender)
            if recv_time <= now_ms:
                raise ExecError(2011, "Request received after 'recvTime'")
            if recv_time > now_ms + MAX_RECV_AHEAD_MS:
                raise ExecError(2012, "recvTime too far ahead")
            sub = self.subaccount("0x" + sender.hex())
            pid = body.get("product_id")
            pids = body.get("product_ids")  # nado-protocol's filter
            status = "pending" if self.flavour == "vertex" else "waiting_price"
            orders = [o.to_trigger_json(status) for o in sub.trigger_orders.values()
                      if (pid is None or o.product_id == pid) and (not isinstance(pids, list) or o.product_id in pids)]
        except ExecError as exc:
            return _failure(rt, exc.code, exc.message)
        return {"status": "success", "data": {"orders": orders}, "request_type": rt}

    # -- stream authentication -------------------------------------------------------------

    def authenticate(self, msg: dict, now_ms: int) -> str:
        """Wallet address (lowercase) on success; raises ExecError otherwise."""
        tx = _obj(msg.get("tx"), "tx")
        sender = _hex_bytes(tx.get("sender"), 32, "sender")
        expiration = _uint(tx.get("expiration"), 64, "expiration")
        if not now_ms < expiration <= now_ms + MAX_RECV_AHEAD_MS:
            raise ExecError(2011, "expiration outside (now, now + 100 s]")
        digest = self.domain.digest(eip712.hash_stream_authentication(sender, expiration))
        self._check_signer(digest, msg.get("signature"), sender, owner_only=not self.allow_linked_signer_stream_auth)
        return "0x" + sender[:20].hex()


_PRICE_REQUIREMENTS = frozenset(f"{src}_price_{side}" for src in ("oracle", "last", "mid") for side in ("above", "below"))


_VERTEX_TRIGGERS = frozenset(("price_above", "price_below", "last_price_above", "last_price_below"))


def _trigger_criteria(v: Any, flavour: str = "nado") -> dict:
    """A trigger service order's ``trigger``: on Nado a price trigger (one price requirement)
    or a TWAP time trigger, as nado-protocol's ``TriggerCriteria``; on Vertex one of
    vertex-protocol's ``{price_above|price_below|last_price_above|last_price_below: x18}``.
    Anything else is refused."""
    if v is None:
        raise ExecError(2038, "missing field `trigger`: a trigger order needs a trigger condition")
    if flavour == "vertex":
        if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in _VERTEX_TRIGGERS:
            _uint(next(iter(v.values())), 128, "trigger price", signed=True)
            return v
        raise ExecError(2038, "invalid trigger: expected price_above, price_below, last_price_above or last_price_below")
    if isinstance(v, dict) and len(v) == 1 and isinstance(v.get("price_trigger"), dict):
        req = v["price_trigger"].get("price_requirement")
        if isinstance(req, dict) and len(req) == 1:
            ((kind, price),) = req.items()
            if kind in _PRICE_REQUIREMENTS:
                _uint(price, 128, kind, signed=True)
                return v
    if isinstance(v, dict) and len(v) == 1 and isinstance(v.get("time_trigger"), dict):
        _uint(v["time_trigger"].get("interval"), 64, "time_trigger.interval")
        return v
    raise ExecError(2038, "invalid trigger: expected price_trigger.price_requirement or time_trigger")


def _required_unfilled(payload: dict, n_digests: int, trigger: bool) -> int | None:
    """Nado ``cancel_orders.required_unfilled_amount`` (x18, unsigned field next to tx)."""
    v = payload.get("required_unfilled_amount")
    if v is None or trigger:
        return None
    amount = _uint(v, 128, "required_unfilled_amount", signed=True)
    if n_digests != 1:
        raise ExecError(2123, "required_unfilled_amount needs exactly one digest")
    return amount


def _failure(rt: str, code: int, message: str, signature: Any = None) -> dict:
    d = {"status": "failure", "error": message, "error_code": code, "request_type": rt}
    if signature is not None:
        d["signature"] = signature
    return d
