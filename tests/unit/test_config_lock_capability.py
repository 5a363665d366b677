"""`lock: true` on a rule is refused by the loader (and so by `killswitch check`) for a venue
that cannot lock order entry: OX.FUN has no API for it, Nado needs the owner's key,
Hyperliquid the master key and the strategy agent's name. The error names file, line and key."""

import textwrap

import pytest

from killswitch.config import ConfigError, load_config_text

OX = """\
  - name: ox-main
    kind: oxfun
    api_key: {env: OX_KEY}
    api_secret: {env: OX_SECRET}
"""
NADO = """\
  - name: nado-main
    kind: nado
    private_key: {env: NADO_KEY}
"""
NADO_OWNER = NADO + "    owner_private_key: {env: NADO_OWNER}\n"
HL = """\
  - name: hl-main
    kind: hyperliquid
    private_key: {env: HL_KEY}
"""
HL_MASTER = HL + "    master_key: {env: HL_MASTER}\n    strategy_agent_name: strategy\n"


def config(venues: str, rule_venues: str = "", lock: str = "true") -> str:
    scope = f"    venues: [{rule_venues}]\n" if rule_venues else ""
    return textwrap.dedent("venues:\n" + venues + "rules:\n  - name: r\n    kind: max_open_orders\n"
                           "    max: 5\n" + scope + f"    action: {{cancel_all: null, lock: {lock}}}\n")


@pytest.mark.parametrize("venues, rule_venues, venue, says", [
    (OX, "", "ox-main", "OX.FUN cannot lock order entry"),
    (OX + HL_MASTER, "", "ox-main", "OX.FUN cannot lock order entry"),
    (NADO, "", "nado-main", "owner_private_key"),
    (HL, "", "hl-main", "master_key and strategy_agent_name"),
])
def test_lock_on_a_venue_that_cannot_lock_is_an_error_naming_file_line_and_key(venues, rule_venues, venue, says):
    text = config(venues, rule_venues)
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "ks.yaml")
    message = str(info.value)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip().startswith("action:"))
    assert f"ks.yaml:{line}" in message and "rules[0].action.lock" in message, message
    assert f"venue {venue!r}" in message and says in message, message


@pytest.mark.parametrize("venues, rule_venues", [
    (HL_MASTER, ""),
    (NADO_OWNER, ""),
    (OX + HL_MASTER, "hl-main"),  # the rule covers only the venue that can lock
])
def test_lock_on_venues_that_can_lock_loads(venues, rule_venues):
    cfg = load_config_text(config(venues, rule_venues), "ks.yaml")
    assert cfg.rules[0].action.lock is True


def test_lock_false_on_oxfun_loads():
    assert load_config_text(config(OX, lock="false"), "ks.yaml").rules[0].action.lock is False
