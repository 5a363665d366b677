"""Parsing of human-written quantities: durations, percentages and amounts.

Everything goes through ``Decimal`` so that ``0.1s`` or ``2.5%`` mean exactly what was
written; durations are handed out as float seconds (they feed trio deadlines), money never
is. Each parser raises :class:`UnitError` (a ``ValueError``) with a message fit to show a
risk manager, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = [
    "Amount",
    "UnitError",
    "parse_amount",
    "parse_decimal",
    "parse_duration",
    "parse_duration_decimal",
    "parse_percent",
    "format_duration",
]


class UnitError(ValueError):
    """A value could not be parsed; the message says what form was expected."""


_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_DURATION_FULL = re.compile(rf"(?:(?:{_NUMBER})(?:ms|s|m|h|d))+")
_PLAIN_NUMBER = re.compile(rf"[+-]?(?:{_NUMBER})")
_CURRENCY = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,15}")


@dataclass(frozen=True, slots=True)
class Amount:
    """A quantity of money: ``value`` in ``currency`` (None = unspecified / account currency)."""

    value: Decimal
    currency: str | None = None

    def __str__(self) -> str:
        text = format_decimal(self.value)
        return f"{text} {self.currency}" if self.currency else text


def format_decimal(value: Decimal) -> str:
    """``Decimal`` without exponent notation or trailing zeros (``2000``, ``0.05``)."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    text = format(value.normalize(), "f")
    return text


def _finite_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UnitError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise UnitError(f"{text!r} is not a finite number")
    return value


def parse_decimal(value: object) -> Decimal:
    """An exact number from YAML: int, numeric string, or float (via its repr, never binary)."""
    if isinstance(value, bool):
        raise UnitError("expected a number, got a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # YAML gave us a float; its shortest repr is what the human wrote.
        return _finite_decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise UnitError("expected a finite number")
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if not _PLAIN_NUMBER.fullmatch(text):
            raise UnitError(f"{value!r} is not a number")
        return _finite_decimal(text)
    raise UnitError(f"expected a number, got {type(value).__name__}")


def parse_duration_decimal(value: object) -> Decimal:
    """Seconds as an exact ``Decimal``: ``250ms``, ``30s``, ``5m``, ``1h30m``, ``2d``, or a
    plain number of seconds. Negative values and garbage are errors; zero is allowed here
    (callers decide whether a zero duration makes sense)."""
    if isinstance(value, bool):
        raise UnitError("expected a duration like 30s, 5m, 250ms, got a boolean")
    if isinstance(value, (int, float, Decimal)):
        seconds = parse_decimal(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _PLAIN_NUMBER.fullmatch(text):
            seconds = _finite_decimal(text)
        elif text.startswith("-"):
            raise UnitError(f"duration {value!r} is negative")
        elif _DURATION_FULL.fullmatch(text):
            seconds = Decimal(0)
            for number, unit in _DURATION_PART.findall(text):
                seconds += _finite_decimal(number) * _DURATION_UNITS[unit]
        else:
            raise UnitError(f"{value!r} is not a duration; write e.g. 250ms, 30s, 5m, 1h30m")
    else:
        raise UnitError(f"expected a duration like 30s, 5m, 250ms, got {type(value).__name__}")
    if seconds < 0:
        raise UnitError(f"duration {value!r} is negative")
    return seconds


def parse_duration(value: object) -> float:
    """Seconds as float (for deadlines and clocks), parsed exactly first."""
    return float(parse_duration_decimal(value))


def format_duration(seconds: float | Decimal) -> str:
    """Shortest exact spelling: ``250ms``, ``30s``, ``5m``, ``1h``, ``90s``."""
    value = Decimal(str(seconds))
    if value != 0 and abs(value) < 1:
        return f"{format_decimal(value * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{format_decimal(value / size)}{unit}"
    return f"{format_decimal(value)}s"


def parse_percent(value: object) -> Decimal:
    """``2%`` -> ``Decimal("0.02")``. Only the explicit ``%`` form is accepted: a bare 0.05
    could mean 5% or 0.05%, and a risk limit must not be guessed."""
    if not isinstance(value, str):
        raise UnitError(f"expected a percentage like 5%, got {type(value).__name__}")
    text = value.strip()
    if not text.endswith("%"):
        raise UnitError(f"{value!r} is not a percentage; write e.g. 5%")
    number = text[:-1].strip()
    if not _PLAIN_NUMBER.fullmatch(number):
        raise UnitError(f"{value!r} is not a percentage; write e.g. 5%")
    return _finite_decimal(number) / 100


def parse_amount(value: object) -> Amount:
    """``50000 USD``, ``1.5 OX``, ``2000`` (no currency) -> :class:`Amount`."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Amount(parse_decimal(value), None)
    if not isinstance(value, str):
        raise UnitError(f"expected an amount like 2000 USD, got {type(value).__name__}")
    parts = value.strip().replace("_", "").split()
    if len(parts) == 1:
        number, currency = parts[0], None
    elif len(parts) == 2:
        number, currency = parts
    else:
        raise UnitError(f"{value!r} is not an amount; write e.g. 2000 USD")
    if not _PLAIN_NUMBER.fullmatch(number):
        raise UnitError(f"{value!r} is not an amount; write e.g. 2000 USD")
    if currency is not None and not _CURRENCY.fullmatch(currency):
        raise UnitError(f"{currency!r} is not a currency code")
    return Amount(_finite_decimal(number), currency.upper() if currency else None)
