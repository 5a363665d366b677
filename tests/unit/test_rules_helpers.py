"""A small fake BookView and rule-building helpers shared by the rule tests."""

from __future__ import annotations

from decimal import Decimal

from killswitch.config import Config, build_rules, load_config_text

VENUES_YAML = """
venues:
  - name: ox
    kind: oxfun
    api_key: {env: OX_KEY}
    api_secret: {env: OX_SECRET}
    equity_currency: USD
  - name: nd
    kind: nado
    private_key: {env: ND_KEY}
"""


class FakeBook:
    def __init__(self, venues=("ox", "nd")) -> None:
        self._venues = tuple(venues)
        self.counts: dict[tuple[str | None, str | None], int] = {}
        self.positions: dict[tuple[str, str], Decimal] = {}
        self.marks: dict[tuple[str, str], Decimal] = {}
        self.connected: dict[str, bool] = {}
        self.seen: dict[str, float] = {}

    def open_count(self, venue=None, product=None) -> int:
        return self.counts.get((venue, product), 0)

    def position_qty(self, venue, product) -> Decimal:
        return self.positions.get((venue, product), Decimal(0))

    def mark_price(self, venue, product):
        return self.marks.get((venue, product))

    def is_connected(self, venue) -> bool:
        return self.connected.get(venue, False)

    def last_seen_s(self, venue):
        return self.seen.get(venue)

    def venues(self):
        return self._venues


def load_rules(rules_yaml: str) -> tuple[Config, list]:
    config = load_config_text(VENUES_YAML + rules_yaml)
    return config, build_rules(config)


def one_rule(rules_yaml: str):
    _, rules = load_rules(rules_yaml)
    assert len(rules) == 1
    return rules[0]


def test_fake_book_satisfies_protocol():
    from killswitch.rules.base import BookView  # noqa: F401 - Protocol without runtime check

    book = FakeBook()
    assert book.open_count("ox") == 0 and book.last_seen_s("ox") is None
