"""The simulated HyperCore's state machine: pure, synchronous, time passed in (doc §11).

``exchange(body, now_ms)`` does what the venue does with a POST /exchange body: re-encode
the *parsed* action canonically, hash, ecrecover, resolve the signer to an account (master
or approved agent), check nonces / expiresAfter / the address budget, then apply the action
element by element. ``info(body, now_ms)`` answers POST /info. Stream pushes are returned as
:class:`Push` data; the trio shell in :mod:`.server` delivers them. Every threshold is a
constructor knob with the documented default.
"""

from __future__ import annotations

import bisect
import re
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .. import signing, wire

DAY_MS = 86_400_000
NONCES_KEPT = 100
DMS_MIN_AHEAD_MS = 5_000
DMS_VOLUME_GATE = Decimal(1_000_000)
DMS_TRIGGERS_PER_DAY = 10
ADDRESS_BASE_BUDGET = 10_000
AGENT_NAME_MAX = 16
AGENT_MAX_VALID_MS = 180 * DAY_MS
AGENT_REMOVAL_COOLDOWN_MS = 5_000
NAMED_AGENT_SLOTS = 3
OPEN_ORDER_CAP = 1000
_VALID_UNTIL_RE = re.compile(r"^(.*) valid_until (\d+)$")

INFO_WEIGHT_2 = frozenset({"l2Book", "allMids", "clearinghouseState", "orderStatus", "spotClearinghouseState",
                           "exchangeStatus"})


class Refused(Exception):
    """A whole-action refusal: HTTP 200 ``{"status":"err","response": text}``."""


class BadBody(Exception):
    """Does not deserialize: HTTP 422 plain text."""


@dataclass(frozen=True, slots=True)
class Push:
    user: str  # account address, lower-case
    channel: str  # orderUpdates | user | userFills | clearinghouseState
    data: Any


@dataclass(slots=True)
class Asset:
    coin: str
    sz_decimals: int
    mark: Decimal


@dataclass(slots=True)
class SimOrder:
    oid: int
    coin: str
    asset: int
    is_buy: bool
    limit_px: Decimal
    sz: Decimal
    orig_sz: Decimal
    timestamp_ms: int
    cloid: str | None = None
    reduce_only: bool = False
    tif: str | None = "Gtc"
    trigger: dict | None = None  # {"isMarket","triggerPx","tpsl"} for untriggered TP/SL

    def row(self, frontend: bool) -> dict:
        d = {"coin": self.coin, "side": "B" if self.is_buy else "A", "limitPx": wire.decimal_to_wire(self.limit_px),
             "sz": wire.decimal_to_wire(self.sz), "oid": self.oid, "timestamp": self.timestamp_ms,
             "origSz": wire.decimal_to_wire(self.orig_sz)}
        if self.cloid is not None:
            d["cloid"] = self.cloid
        if frontend:
            trig = self.trigger
            d.update({
                "isTrigger": trig is not None, "reduceOnly": self.reduce_only, "isPositionTpsl": False,
                "triggerPx": trig["triggerPx"] if trig else "0.0",
                "triggerCondition": f"Price {'above' if (trig['tpsl'] == 'tp') != self.is_buy else 'below'} "
                                    f"{trig['triggerPx']}" if trig else "N/A",
                "orderType": ("Take Profit" if trig["tpsl"] == "tp" else "Stop") +
                             (" Market" if trig["isMarket"] else " Limit") if trig else "Limit",
                "tif": None if trig else self.tif, "children": [],
            })
        elif self.reduce_only:
            d["reduceOnly"] = True
        return d


@dataclass(slots=True)
class Twap:
    twap_id: int
    coin: str
    asset: int
    is_buy: bool
    sz: Decimal
    minutes: int
    timestamp_ms: int
    status: str = "activated"


@dataclass(slots=True)
class Account:
    address: str
    cum_vlm: Decimal = Decimal(0)
    usdc: Decimal = Decimal(0)  # cross-margin cash (accountValue = usdc + unrealised)
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # coin -> (szi, entryPx)
    orders: dict[int, SimOrder] = field(default_factory=dict)
    twaps: dict[int, Twap] = field(default_factory=dict)
    history: dict[int, tuple[SimOrder, str, int]] = field(default_factory=dict)  # oid -> (order, status, ts)
    requests_used: int = 0
    last_limited_ms: int = -10_000_000
    dms_time_ms: int | None = None
    dms_day: int = -1
    dms_fired_today: int = 0
    named_agents: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # name -> (addr, validUntil)
    unnamed_agent: tuple[str, int | None] | None = None
    removal_pending_until_ms: int = 0
    funded: bool = True

    @property
    def cap(self) -> int:
        return ADDRESS_BASE_BUDGET + int(self.cum_vlm)


def _utc_day(now_ms: int) -> int:
    return now_ms // DAY_MS


class SimCore:
    def __init__(self, *, network: str = signing.TESTNET, assets: tuple[tuple[str, int, str], ...] | None = None,
                 dms_min_ahead_ms: int = DMS_MIN_AHEAD_MS, dms_volume_gate: Decimal = DMS_VOLUME_GATE,
                 dms_triggers_per_day: int = DMS_TRIGGERS_PER_DAY, dms_includes_triggers: bool = True,
                 open_order_cap: int = OPEN_ORDER_CAP, agent_removal_cooldown_ms: int = AGENT_REMOVAL_COOLDOWN_MS,
                 open_orders_lists_triggers: bool = True) -> None:
        self.network = signing.check_network(network)
        if dms_min_ahead_ms < DMS_MIN_AHEAD_MS:
            raise ValueError(f"the venue's scheduleCancel minimum is {DMS_MIN_AHEAD_MS} ms")
        self.dms_min_ahead_ms = dms_min_ahead_ms
        self.dms_volume_gate = dms_volume_gate
        self.dms_triggers_per_day = dms_triggers_per_day
        self.dms_includes_triggers = dms_includes_triggers
        self.open_order_cap = open_order_cap
        self.agent_removal_cooldown_ms = agent_removal_cooldown_ms
        self.open_orders_lists_triggers = open_orders_lists_triggers
        spec = assets or (("BTC", 5, "60000"), ("ETH", 4, "3000"), ("SOL", 2, "150"), ("HYPE", 2, "30"))
        self.assets = [Asset(c, d, Decimal(m)) for c, d, m in spec]
        self.asset_by_coin = {a.coin: i for i, a in enumerate(self.assets)}
        self.accounts: dict[str, Account] = {}
        self.agents: dict[str, tuple[str, int | None]] = {}  # live agent -> (master, validUntil)
        self.used_agent_addresses: dict[str, str] = {}  # agent address -> the master it was approved for
        self.nonces: dict[str, list[int]] = {}  # signer -> sorted, at most NONCES_KEPT
        self.next_oid = 1_000_000
        self.next_twap = 3_000
        self.exchange_log: deque[tuple[int, str, str]] = deque(maxlen=100_000)  # (now_ms, action type, signer)
        self.fast_cancels_refused = 0  # cancel elements refused: f:true on a trigger order

    # -- setup (admin) -------------------------------------------------------------------------

    def add_account(self, address: str, *, usdc: Decimal = Decimal(10_000), cum_vlm: Decimal = Decimal(0)) -> Account:
        acct = Account(address.lower(), cum_vlm=cum_vlm, usdc=usdc)
        self.accounts[acct.address] = acct
        return acct

    def add_agent(self, master: str, agent: str, name: str = "", valid_until_ms: int | None = None) -> None:
        """Approve an agent directly (test setup), with the same replacement rules."""
        self._register_agent(self.accounts[master.lower()], agent.lower(), name, valid_until_ms, now_ms=0)

    # -- /exchange -------------------------------------------------------------------------------

    def exchange(self, body: Any, now_ms: int) -> tuple[dict, list[Push]]:
        """Raises BadBody (422). Returns the JSON reply and the pushes it causes."""
        if not isinstance(body, dict) or not isinstance(body.get("action"), dict) \
                or isinstance(body.get("nonce"), bool) or not isinstance(body.get("nonce"), int) \
                or not 0 <= body["nonce"] < 1 << 64 or not isinstance(body.get("signature"), dict):
            raise BadBody("Failed to deserialize the JSON body into the target type")
        action, nonce = body["action"], body["nonce"]
        pushes: list[Push] = []
        try:
            if action.get("type") == "approveAgent":
                reply = self._approve_agent(body, now_ms)
            else:
                reply = self._l1(body, action, nonce, now_ms, pushes)
        except Refused as exc:
            return {"status": "err", "response": str(exc)}, pushes
        except wire.WireError:
            raise BadBody("Failed to deserialize the JSON body into the target type") from None
        return reply, pushes

    def _recover(self, digest: bytes, sig_obj: Any) -> str:
        try:
            return signing.recover_address(digest, signing.parse_signature(sig_obj))
        except signing.SignatureError:
            raise Refused("Unable to recover signer.") from None

    def _resolve(self, signer: str, now_ms: int) -> Account:
        acct = self.accounts.get(signer)
        if acct is not None and acct.funded:
            return acct
        agent = self.agents.get(signer)
        if agent is not None and (agent[1] is None or agent[1] > now_ms):
            return self.accounts[agent[0]]
        raise Refused(f"L1 error: User or API Wallet {signer} does not exist.")

    def _check_nonce(self, signer: str, nonce: int, now_ms: int) -> None:
        if not now_ms - 2 * DAY_MS < nonce:
            raise Refused(f"Invalid nonce: nonce too low {nonce} < {now_ms - 2 * DAY_MS}")
        if nonce >= now_ms + DAY_MS:
            raise Refused(f"Invalid nonce: nonce too high {nonce} > {now_ms + DAY_MS}")
        kept = self.nonces.get(signer, [])
        i = bisect.bisect_left(kept, nonce)
        if i < len(kept) and kept[i] == nonce:
            raise Refused(f"Invalid nonce: duplicate nonce {nonce}")
        if len(kept) >= NONCES_KEPT and nonce < kept[0]:
            raise Refused(f"Invalid nonce: nonce too low {nonce} < {kept[0]}")

    def _use_nonce(self, signer: str, nonce: int) -> None:
        kept = self.nonces.setdefault(signer, [])
        bisect.insort(kept, nonce)
        if len(kept) > NONCES_KEPT:
            del kept[0]

    def _charge_address(self, acct: Account, n: int, is_cancel: bool, now_ms: int) -> None:
        cap = acct.cap
        limit = min(cap + 100_000, 2 * cap) if is_cancel else cap
        if acct.requests_used + n > limit:
            if now_ms - acct.last_limited_ms < 10_000:
                raise Refused(f"Too many cumulative requests sent ({acct.requests_used + n} > {cap}) for cumulative "
                              f"volume traded ${wire.decimal_to_wire(acct.cum_vlm)}. Place taker orders to free up "
                              f"1 request per USDC traded.")
            acct.last_limited_ms = now_ms
        acct.requests_used += n

    def _l1(self, body: dict, action: dict, nonce: int, now_ms: int, pushes: list[Push]) -> dict:
        canon = wire.canonical_action(action)
        vault = body.get("vaultAddress")
        expires = body.get("expiresAfter")
        if vault is not None and (not isinstance(vault, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", vault)):
            raise wire.WireError("vaultAddress")
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)
                                    or not 0 <= expires < 1 << 64):
            raise wire.WireError("expiresAfter")
        cid = signing.action_hash(signing.pack_action(canon), nonce, vault, expires)
        signer = self._recover(signing.l1_digest(cid, self.network), body["signature"])
        acct = self._resolve(signer, now_ms)
        self.exchange_log.append((now_ms, canon["type"], signer))
        if vault is not None:
            raise Refused(f"Vault not registered: {vault.lower()}")
        t = canon["type"]
        n = len(canon.get("cancels", ())) or len(canon.get("orders", ())) or 1
        is_cancel = t in ("cancel", "cancelByCloid", "twapCancel", "scheduleCancel")
        if expires is not None and expires < now_ms:
            self._charge_address(acct, 5 * n, is_cancel, now_ms)
            raise Refused("Action already expired")
        self._check_nonce(signer, nonce, now_ms)
        self._charge_address(acct, n, is_cancel, now_ms)
        self._use_nonce(signer, nonce)  # consumed once it reached the block, whatever the elements do
        if t == "cancel":
            return self._cancel(acct, canon, now_ms, pushes, by_cloid=False)
        if t == "cancelByCloid":
            return self._cancel(acct, canon, now_ms, pushes, by_cloid=True)
        if t == "order":
            return self._order(acct, canon, now_ms, pushes)
        if t == "scheduleCancel":
            return self._schedule_cancel(acct, canon, now_ms)
        if t == "twapOrder":
            return self._twap_order(acct, canon, now_ms)
        if t == "twapCancel":
            tw = acct.twaps.get(canon["t"])
            if tw is None or tw.asset != canon["a"] or tw.status != "activated":
                status: Any = {"error": "TWAP was never placed, already canceled, or filled."}
            else:
                tw.status = "terminated"
                status = "success"
            return {"status": "ok", "response": {"type": "twapCancel", "data": {"status": status}}}
        if t == "noop":
            return {"status": "ok", "response": {"type": "default"}}
        raise Refused(f"Unsupported action in simulator: {t}")

    # -- actions ---------------------------------------------------------------------------------

    def _close(self, acct: Account, o: SimOrder, status: str, now_ms: int, pushes: list[Push]) -> None:
        acct.orders.pop(o.oid, None)
        acct.history[o.oid] = (o, status, now_ms)
        pushes.append(Push(acct.address, "orderUpdates",
                           [{"order": o.row(False), "status": status, "statusTimestamp": now_ms}]))

    def _cancel(self, acct: Account, canon: dict, now_ms: int, pushes: list[Push], *, by_cloid: bool) -> dict:
        fast = canon.get("f") is True
        statuses: list[Any] = []
        for c in canon["cancels"]:
            asset = c["asset"] if by_cloid else c["a"]
            if by_cloid:
                o = next((x for x in acct.orders.values() if x.cloid == c["cloid"]), None)
            else:
                o = acct.orders.get(c["o"])
            if o is None or o.asset != asset:
                statuses.append({"error": f"{wire.NOT_FOUND_PREFIX}. asset={asset}"})
            elif fast and o.trigger is not None:
                self.fast_cancels_refused += 1
                statuses.append({"error": f"Fast cancel is not supported for trigger orders. asset={asset}"})
            else:
                self._close(acct, o, "canceled", now_ms, pushes)
                statuses.append("success")
        return {"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}}

    def _schedule_cancel(self, acct: Account, canon: dict, now_ms: int) -> dict:
        if acct.cum_vlm < self.dms_volume_gate:
            raise Refused(f"Cannot set scheduled cancel time until enough volume traded. Required: "
                          f"${int(self.dms_volume_gate)}. Traded: ${wire.decimal_to_wire(acct.cum_vlm)}.")
        t = canon.get("time")
        if t is not None and t < now_ms + self.dms_min_ahead_ms:
            raise Refused("Scheduled cancel time too early, must be at least 5 seconds from now.")
        acct.dms_time_ms = t
        return {"status": "ok", "response": {"type": "default"}}

    def _twap_order(self, acct: Account, canon: dict, now_ms: int) -> dict:
        tw = canon["twap"]
        if tw["a"] >= len(self.assets):
            raise Refused(f"Invalid asset {tw['a']}")
        self.next_twap += 1
        acct.twaps[self.next_twap] = Twap(self.next_twap, self.assets[tw["a"]].coin, tw["a"], tw["b"],
                                          Decimal(tw["s"]), tw["m"], now_ms)
        return {"status": "ok", "response": {"type": "twapOrder",
                                             "data": {"status": {"running": {"twapId": self.next_twap}}}}}

    def _order(self, acct: Account, canon: dict, now_ms: int, pushes: list[Push]) -> dict:
        statuses: list[Any] = []
        for o in canon["orders"]:
            try:
                statuses.append(self._place(acct, o, now_ms, pushes))
            except Refused as exc:
                statuses.append({"error": f"{exc} asset={o['a']}"})
        return {"status": "ok", "response": {"type": "order", "data": {"statuses": statuses}}}

    def _place(self, acct: Account, o: dict, now_ms: int, pushes: list[Push]) -> Any:
        if o["a"] >= len(self.assets):
            raise Refused("Order has invalid asset.")
        asset = self.assets[o["a"]]
        px, sz = Decimal(o["p"]), Decimal(o["s"])
        if sz <= 0:
            raise Refused("Order has zero size.")
        if -sz.as_tuple().exponent > asset.sz_decimals if sz.as_tuple().exponent < 0 else False:
            raise Refused("Order has invalid size.")
        if px <= 0:
            raise Refused("Order has invalid price.")
        decimals = max(0, -px.as_tuple().exponent)
        if px != px.to_integral_value() and (len(px.normalize().as_tuple().digits) > 5
                                             or decimals > 6 - asset.sz_decimals):
            raise Refused("Price must be divisible by tick size.")
        if px * sz < 10:
            raise Refused("Order must have minimum value of $10.")
        trig = o["t"].get("trigger")
        if (trig is not None or o["r"]) and len(acct.orders) >= self.open_order_cap:
            raise Refused("Too many open orders.")
        if len(acct.orders) >= self.open_order_cap + 1000:
            raise Refused("Too many open orders.")
        self.next_oid += 1
        oid = self.next_oid
        tif = o["t"]["limit"]["tif"] if trig is None else None
        order = SimOrder(oid, asset.coin, o["a"], o["b"], px, sz, sz, now_ms, o.get("c"), o["r"], tif, trig)
        crosses = (o["b"] and px >= asset.mark) or (not o["b"] and px <= asset.mark)
        if trig is None and tif == "Alo" and crosses:
            raise Refused(f"Post only order would have immediately matched, bbo was {asset.mark}@{asset.mark}.")
        if trig is None and crosses and tif in ("Ioc", "Gtc"):
            self._fill(acct, order, asset.mark, now_ms, pushes)
            st = {"totalSz": wire.decimal_to_wire(sz), "avgPx": wire.decimal_to_wire(asset.mark), "oid": oid}
            if order.cloid:
                st["cloid"] = order.cloid
            return {"filled": st}
        if trig is None and tif == "Ioc":
            raise Refused("Order could not immediately match against any resting orders.")
        acct.orders[oid] = order
        pushes.append(Push(acct.address, "orderUpdates",
                           [{"order": order.row(False), "status": "open", "statusTimestamp": now_ms}]))
        st = {"oid": oid}
        if order.cloid:
            st["cloid"] = order.cloid
        return {"resting": st}

    def _fill(self, acct: Account, order: SimOrder, px: Decimal, now_ms: int, pushes: list[Push]) -> None:
        signed = order.sz if order.is_buy else -order.sz
        szi, entry = acct.positions.get(order.coin, (Decimal(0), Decimal(0)))
        acct.usdc += szi * (px - entry)  # realise the old position at px; the sum re-enters at px
        acct.positions[order.coin] = (szi + signed, px)
        acct.cum_vlm += order.sz * px
        acct.history[order.oid] = (order, "filled", now_ms)
        fill = {"coin": order.coin, "px": wire.decimal_to_wire(px), "sz": wire.decimal_to_wire(order.sz),
                "side": "B" if order.is_buy else "A", "time": now_ms, "startPosition": wire.decimal_to_wire(szi),
                "dir": "Open Long" if order.is_buy else "Open Short", "closedPnl": "0", "hash": "0x" + "00" * 32,
                "oid": order.oid, "crossed": True, "fee": "0", "tid": order.oid, "feeToken": "USDC"}
        pushes.append(Push(acct.address, "userFills", {"user": acct.address, "fills": [fill]}))
        pushes.append(Push(acct.address, "user", {"fills": [fill]}))
        pushes.append(Push(acct.address, "orderUpdates",
                           [{"order": order.row(False), "status": "filled", "statusTimestamp": now_ms}]))

    # -- approveAgent (user-signed) ----------------------------------------------------------------

    def _approve_agent(self, body: dict, now_ms: int) -> dict:
        a = body["action"]
        try:
            agent = a["agentAddress"]
            chain_id = int(a["signatureChainId"], 16)
            chain = a["hyperliquidChain"]
            anonce = a["nonce"]
        except (KeyError, TypeError, ValueError):
            raise BadBody("Failed to deserialize the JSON body into the target type") from None
        if not isinstance(agent, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", agent) or not isinstance(chain, str) \
                or isinstance(anonce, bool) or not isinstance(anonce, int):
            raise BadBody("Failed to deserialize the JSON body into the target type")
        name = a.get("agentName") or ""
        if not isinstance(name, str):
            raise BadBody("Failed to deserialize the JSON body into the target type")
        digest = signing.approve_agent_digest(hyperliquid_chain=chain, agent_address=agent, agent_name=name,
                                              nonce=anonce, signature_chain_id=chain_id)
        signer = self._recover(digest, body["signature"])
        if chain != signing.chain_name(self.network):
            raise Refused("Mainnet and testnet require different signature.")
        if body.get("vaultAddress") is not None:
            raise Refused("Vault may not perform this action.")
        if body.get("expiresAfter") is not None:
            raise Refused("expiresAfter is not supported for this action.")
        acct = self.accounts.get(signer)
        if acct is None or not acct.funded:
            raise Refused(f"Must deposit before performing actions. User: {signer}")
        if anonce != body["nonce"]:
            raise Refused("Invalid nonce: action nonce does not match the request nonce")
        self._check_nonce(signer, anonce, now_ms)
        valid_until = None
        m = _VALID_UNTIL_RE.match(name)
        if m:
            name, valid_until = m.group(1), int(m.group(2))
            if valid_until > now_ms + AGENT_MAX_VALID_MS:
                raise Refused("Agent valid_until is more than 180 days in the future.")
        if a.get("agentName") is not None and a.get("agentName") != "" and not 1 <= len(name) <= AGENT_NAME_MAX:
            raise Refused("Extra agent name must be between 1 and 16 characters long.")
        self._use_nonce(signer, anonce)
        self._register_agent(acct, agent.lower(), name, valid_until, now_ms)
        return {"status": "ok", "response": {"type": "default"}}

    def _register_agent(self, acct: Account, agent: str, name: str, valid_until: int | None, now_ms: int) -> None:
        if now_ms < acct.removal_pending_until_ms:
            raise Refused("User has pending agent removal")
        if self.used_agent_addresses.get(agent, acct.address) != acct.address:
            raise Refused("Extra agent already used")
        old = acct.named_agents.get(name) if name else acct.unnamed_agent
        if name and old is None and len(acct.named_agents) >= NAMED_AGENT_SLOTS:
            raise Refused(f"Too many extra agents for cumulative volume traded. Current limit is {NAMED_AGENT_SLOTS}")
        if old is not None:
            self.agents.pop(old[0], None)  # deregistered: "does not exist" from now on; its orders stay
            acct.removal_pending_until_ms = now_ms + self.agent_removal_cooldown_ms
        self.used_agent_addresses[agent] = acct.address
        self.agents[agent] = (acct.address, valid_until)
        if name:
            acct.named_agents[name] = (agent, valid_until)
        else:
            acct.unnamed_agent = (agent, valid_until)

    # -- time -------------------------------------------------------------------------------------

    def next_dms_ms(self) -> int | None:
        times = [a.dms_time_ms for a in self.accounts.values() if a.dms_time_ms is not None]
        return min(times) if times else None

    def tick(self, now_ms: int) -> list[Push]:
        """Fire every scheduled cancel that is due (one-shot; at most N firings per UTC day)."""
        pushes: list[Push] = []
        for acct in self.accounts.values():
            if acct.dms_time_ms is None or acct.dms_time_ms > now_ms:
                continue
            day = _utc_day(acct.dms_time_ms)
            if acct.dms_day != day:
                acct.dms_day, acct.dms_fired_today = day, 0
            acct.dms_time_ms = None
            if acct.dms_fired_today >= self.dms_triggers_per_day:
                continue  # past the daily budget the switch does not fire
            acct.dms_fired_today += 1
            for o in list(acct.orders.values()):
                if o.trigger is None or self.dms_includes_triggers:
                    self._close(acct, o, "scheduledCancel", now_ms, pushes)
        return pushes

    # -- /info ------------------------------------------------------------------------------------

    @staticmethod
    def info_weight(body: Any) -> int:
        t = body.get("type") if isinstance(body, dict) else None
        if t in INFO_WEIGHT_2:
            return 2
        if t == "userRole":
            return 60
        return 20

    def info(self, body: Any, now_ms: int) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            raise BadBody("Failed to deserialize the JSON body into the target type")
        t = body["type"]
        if t == "meta":
            return {"universe": [{"name": a.coin, "szDecimals": a.sz_decimals, "maxLeverage": 50}
                                 for a in self.assets], "marginTables": []}
        if t == "spotMeta":
            return {"tokens": [{"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0,
                                "tokenId": "0x" + "00" * 16, "isCanonical": True}], "universe": []}
        if t == "allMids":
            return {a.coin: wire.decimal_to_wire(a.mark) for a in self.assets}
        if t == "exchangeStatus":
            return {"specialStatuses": None, "time": now_ms}
        user = body.get("user")
        if not isinstance(user, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", user):
            raise BadBody("Failed to deserialize the JSON body into the target type")
        acct = self.accounts.get(user.lower())
        if t == "userRole":
            if acct is not None:
                return {"role": "user"}
            ag = self.agents.get(user.lower())
            return {"role": "agent", "data": {"user": ag[0]}} if ag else {"role": "missing"}
        if t in ("openOrders", "frontendOpenOrders"):
            if acct is None or body.get("dex", "") != "":
                return []
            front = t == "frontendOpenOrders"
            return [o.row(front) for o in sorted(acct.orders.values(), key=lambda x: -x.oid)
                    if front or o.trigger is None or self.open_orders_lists_triggers]
        if t == "orderStatus":
            oid = body.get("oid")
            if acct is None:
                return {"status": "unknownOid"}
            o = acct.orders.get(oid) if isinstance(oid, int) else next(
                (x for x in acct.orders.values() if x.cloid == str(oid).lower()), None)
            if o is not None:
                return {"status": "order", "order": {"order": o.row(True), "status": "open",
                                                     "statusTimestamp": o.timestamp_ms}}
            h = acct.history.get(oid) if isinstance(oid, int) else None
            if h is not None:
                return {"status": "order", "order": {"order": h[0].row(True), "status": h[1], "statusTimestamp": h[2]}}
            return {"status": "unknownOid"}
        if t == "clearinghouseState":
            return self.clearinghouse_state(acct, now_ms)
        if t == "spotClearinghouseState":
            return {"balances": []}
        if t == "userRateLimit":
            if acct is None:
                return {"cumVlm": "0.0", "nRequestsUsed": 0, "nRequestsCap": ADDRESS_BASE_BUDGET,
                        "nRequestsSurplus": 0}
            return {"cumVlm": wire.decimal_to_wire(acct.cum_vlm), "nRequestsUsed": acct.requests_used,
                    "nRequestsCap": acct.cap, "nRequestsSurplus": 0}
        if t == "extraAgents":
            if acct is None:
                return []
            return [{"name": n, "address": a, "validUntil": v or 0} for n, (a, v) in acct.named_agents.items()]
        if t == "twapHistory":
            if acct is None:
                return []
            return [{"time": tw.timestamp_ms // 1000, "twapId": tw.twap_id, "status": {"status": tw.status},
                     "state": {"coin": tw.coin, "user": acct.address, "side": "B" if tw.is_buy else "A",
                               "sz": wire.decimal_to_wire(tw.sz), "executedSz": "0", "executedNtl": "0",
                               "minutes": tw.minutes, "reduceOnly": False, "randomize": False,
                               "timestamp": tw.timestamp_ms}} for tw in acct.twaps.values()]
        if t == "userFills":
            return []
        raise BadBody("Failed to deserialize the JSON body into the target type")

    def clearinghouse_state(self, acct: Account | None, now_ms: int) -> dict:
        positions = []
        value = Decimal(0)
        if acct is not None:
            value = acct.usdc
            for coin, (szi, entry) in acct.positions.items():
                if szi == 0:
                    continue
                mark = self.assets[self.asset_by_coin[coin]].mark
                value += szi * (mark - entry)
                positions.append({"type": "oneWay", "position": {
                    "coin": coin, "szi": wire.decimal_to_wire(szi), "entryPx": wire.decimal_to_wire(entry),
                    "positionValue": wire.decimal_to_wire(abs(szi) * mark),
                    "unrealizedPnl": wire.decimal_to_wire(szi * (mark - entry)), "liquidationPx": None,
                    "marginUsed": "0", "leverage": {"type": "cross", "value": 20}}})
        v = wire.decimal_to_wire(value)
        summary = {"accountValue": v, "totalNtlPos": "0", "totalRawUsd": v, "totalMarginUsed": "0"}
        return {"marginSummary": summary, "crossMarginSummary": summary, "crossMaintenanceMarginUsed": "0",
                "withdrawable": v, "assetPositions": positions, "time": now_ms}
