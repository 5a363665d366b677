"""kind: hyperliquid in the config loader: every key, the venue's own limits, lock actions."""

import textwrap

import pytest

from killswitch.config import ConfigError, load_config_text, summarize
from killswitch.secrets import SecretRef
from killswitch.venues.base import HyperliquidConfig

VENUE = """\
venues:
  - name: hl-main
    kind: hyperliquid
    private_key: {env: HL_KEY}
    network: testnet
    account_address: "0x5d5c99edf529335160ff180fa141dd4967fc00d2"
    rest_url: http://127.0.0.1:1
    ws_url: ws://127.0.0.1:2/ws
    coins: [BTC, ETH]
    cancel_batch_size: 20
    poll_interval: 3s
    dms_after: 30s
    dms_clear_on_shutdown: true
    master_key: {credential: hl-master}
    strategy_agent_name: strategy
    agent_cooldown: 1s
%s
rules:
  - name: r
    kind: max_open_orders
    max: 5
    action: %s
"""


def load(extra: str = "", action: str = "cancel_all"):
    return load_config_text(textwrap.dedent(VENUE % (extra, action)), "t.yaml")


def test_every_hyperliquid_key_parses():
    cfg = load()
    (v,) = cfg.venues
    assert isinstance(v, HyperliquidConfig)
    assert (v.network, v.coins, v.cancel_batch_size, v.poll_interval_s, v.dms_after_s) == \
        ("testnet", ("BTC", "ETH"), 20, 3.0, 30.0)
    assert v.master_key == SecretRef("credential", "hl-master") and v.strategy_agent_name == "strategy"
    assert "hyperliquid, testnet" in summarize(cfg)


@pytest.mark.parametrize("extra, message", [
    ("    network: main\n", "network"),
    ("    dms_after: 3s\n", "at least 6s"),
    ("    strategy_agent_name: a-name-longer-than-16\n", "1 to 16"),
    ("    account_address: nope\n", "20-byte hex address"),
])
def test_bad_hyperliquid_values_name_the_key(extra, message):
    text = textwrap.dedent(VENUE % ("", "cancel_all"))
    key = extra.split(":")[0].strip()
    text = "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith(key + ":")) + "\n"
    text = text.replace("    kind: hyperliquid\n", "    kind: hyperliquid\n" + extra)
    with pytest.raises(ConfigError, match=message):
        load_config_text(text, "t.yaml")


def test_master_key_is_optional_and_dms_can_be_off():
    text = textwrap.dedent(VENUE % ("", "cancel_all")).replace("    master_key: {credential: hl-master}\n", "")
    v = load_config_text(text.replace("dms_after: 30s", "dms_after: 0s"), "t.yaml").venues[0]
    assert v.master_key is None and v.dms_after_s == 0.0


@pytest.mark.parametrize("action, kind, lock", [
    ("{lock: true}", "cancel_all", True),
    ("{cancel_all: null, lock: true}", "cancel_all", True),
    ("{cancel_products: [BTC], lock: true}", "cancel_products", True),
    ("{cancel_products: [BTC]}", "cancel_products", False),
])
def test_rule_action_lock(action, kind, lock):
    rule = load(action=action).rules[0]
    assert rule.action.kind == kind and rule.action.lock is lock
    assert rule.breach("x", "y").lock is lock


def test_rule_action_lock_must_be_boolean():
    with pytest.raises(ConfigError, match="lock must be true or false"):
        load(action="{lock: yes please}")
