"""Configuration of one Hyperliquid account (``kind: hyperliquid``), parsed from YAML by the loader."""

from __future__ import annotations

from dataclasses import dataclass, field

from killswitch.secrets import SecretRef
from killswitch.venues.base import BackoffConfig

MAINNET_REST = "https://api.hyperliquid.xyz"
MAINNET_WS = "wss://api.hyperliquid.xyz/ws"


@dataclass(frozen=True, slots=True)
class HyperliquidConfig:
    name: str
    # The kill switch's OWN agent key (never the strategy's: nonces are per signer).
    private_key: SecretRef
    kind: str = "hyperliquid"
    # mainnet | testnet: selects the L1 `source` ("a"/"b") and hyperliquidChain. Explicit,
    # never derived from the URL (the official SDK's pitfall, venue doc §0.3).
    network: str = "mainnet"
    # The account (master or sub) the agent trades for; None = the key's own address.
    account_address: str | None = None
    rest_url: str = MAINNET_REST
    ws_url: str = MAINNET_WS
    coins: tuple[str, ...] = ()  # products watched (coin names); empty = all
    # Signed actions as WS posts on the open socket (same body as POST /exchange); REST when
    # the socket is down.
    post_over_ws: bool = True
    cancel_batch_size: int = 39  # up to 39 keeps the IP weight of one /exchange at 1
    ping_interval_s: float = 20.0  # the venue closes a socket idle for 60 s
    request_timeout_s: float = 5.0
    poll_interval_s: float = 10.0  # drift poll over POST /info: 44 IP weight each (of 1200/min)
    # Dead-man's switch (scheduleCancel): armed at now + dms_after, refreshed every third of
    # it; 0 = off. The venue needs >= 5 s and $1M lifetime volume (else an alarm).
    dms_after_s: float = 60.0
    dms_clear_on_shutdown: bool = False
    # Order-entry lock (optional): the MASTER key approves a throwaway agent under the
    # strategy agent's name, which deregisters the strategy's key; reset --unlock re-approves it.
    master_key: SecretRef | None = None
    strategy_agent_name: str | None = None
    agent_cooldown_s: float = 5.0  # "User has pending agent removal": wait this long, retry (3 tries)
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
