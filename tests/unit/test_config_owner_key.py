"""Config keys for a linked-signer Nado venue (issue #13 item 9): owner_private_key is an
optional secret reference (checked like the others), open_orders_poll a duration."""

from __future__ import annotations

import textwrap

import pytest

from killswitch.config import ConfigError, load_config_text, summarize
from killswitch.config.loader import LITERAL_SECRET
from killswitch.secrets import SecretRef

VENUE = textwrap.dedent("""\
    venues:
      - name: nado-bot
        kind: nado
        private_key: {env: SIGNER}
        wallet_address: "0x1111111111111111111111111111111111111111"
    """)


def test_owner_key_and_poll_interval_are_optional():
    (vx,) = load_config_text(VENUE).venues
    assert vx.owner_private_key is None and vx.open_orders_poll_s == 1.0


def test_owner_key_is_a_secret_reference_and_is_checked_like_one():
    cfg = load_config_text(VENUE + "    owner_private_key: {file: /etc/ks/owner.key}\n"
                                   "    open_orders_poll: 2s\n")
    (vx,) = cfg.venues
    assert vx.owner_private_key == SecretRef("file", "/etc/ks/owner.key") and vx.open_orders_poll_s == 2.0
    assert any(s.ref == vx.owner_private_key for s in cfg.secret_sites)
    assert "owner_private_key {file: /etc/ks/owner.key}" in summarize(cfg)
    with pytest.raises(ConfigError) as info:
        load_config_text(VENUE + "    owner_private_key: '0xabc'\n")
    (issue,) = info.value.issues
    assert "owner_private_key" in str(issue) and LITERAL_SECRET in str(issue) and "0xabc" not in str(issue)
