"""Typed, issue-collecting readers over located YAML mappings (shared by the loader and every rule kind).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable


from killswitch.model import Side
from killswitch.units import (
    UnitError,
    format_decimal,
    format_duration,
    parse_decimal,
    parse_duration_decimal,
)

from killswitch.schema.nodes import ConfigIssue, Mark, YMap, YNode, YScalar, YSeq
from killswitch.schema.suggest import did_you_mean


MAX_DURATION_S = Decimal(10 * 365 * 86400)


# Validation context and typed readers


class Invalid:
    """Placeholder returned after an issue was recorded; never reaches a built Config."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = Invalid()


class Ctx:
    """Collects issues during one load. ``base_dir`` resolves relative paths of the file
    currently being validated."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def error(self, mark: Mark, path: str, message: str) -> Any:
        self.issues.append(ConfigIssue(mark.file, mark.line, mark.column, path, message))
        return INVALID

    def warn(self, mark: Mark, path: str, message: str) -> None:
        self.warnings.append(ConfigIssue(mark.file, mark.line, mark.column, path, message, "warning"))


def type_name(node: YNode) -> str:
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return f"a {type(v).__name__}"


class MapReader:
    """Typed access to one mapping's keys. Every accessor records an issue (and returns
    :data:`INVALID` or the default) instead of raising; :meth:`finish` reports the keys
    nobody asked for as unknown."""

    def __init__(self, ctx: Ctx, node: YMap, path: str, base_dir: Path) -> None:
        self.ctx = ctx
        self.node = node
        self.path = path
        self.base_dir = base_dir
        self._used: set[str] = set()

    # -- plumbing ------------------------------------------------------------------------

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.node.entries

    def raw(self, key: str) -> YNode | None:
        self._used.add(key)
        entry = self.node.entries.get(key)
        return None if entry is None else entry[1]

    def mark_of(self, key: str) -> Mark:
        entry = self.node.entries.get(key)
        return entry[1].mark if entry is not None else self.node.mark

    def error(self, key: str, message: str) -> Any:
        return self.ctx.error(self.mark_of(key), self.key_path(key), message)

    def _get(self, key: str, default: Any, required: bool) -> tuple[YNode | None, Any]:
        node = self.raw(key)
        if node is None:
            if required:
                return None, self.ctx.error(self.node.mark, self.key_path(key), "required key is missing")
            return None, default
        if isinstance(node, YScalar) and node.value is None and not required:
            return None, default
        return node, None

    def finish(self) -> None:
        for key, (key_mark, _) in self.node.entries.items():
            if key not in self._used:
                self.ctx.error(key_mark, self.key_path(key), f"unknown key {key!r}{did_you_mean(key, self._used)}")

    def sub(self, key: str, *, required: bool = False) -> MapReader | None:
        node, fallback = self._get(key, None, required)
        if node is None:
            return None
        if not isinstance(node, YMap):
            self.error(key, f"must be a mapping, got {type_name(node)}")
            return None
        return MapReader(self.ctx, node, self.key_path(key), self.base_dir)

    # -- scalars -------------------------------------------------------------------------

    def convert(self, key: str, default: Any, fn: Callable[[YNode], Any], *, required: bool = False) -> Any:
        node, fallback = self._get(key, default, required)
        if node is None:
            return fallback
        try:
            return fn(node)
        except (UnitError, ValueError) as exc:
            return self.error(key, str(exc))

    def str(self, key: str, default: Any = None, *, required: bool = False,
            pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] | None = None,
            hint: str = "") -> Any:
        def fn(node: YNode) -> str:
            if not isinstance(node, YScalar) or not isinstance(node.value, str):
                raise ValueError(f"must be a string, got {type_name(node)}")
            value = node.value
            if choices is not None and value not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}{did_you_mean(value, choices)}")
            if pattern is not None and not pattern.fullmatch(value):
                raise ValueError(hint or f"{value!r} is not valid")
            if not value:
                raise ValueError("must not be empty")
            return value

        return self.convert(key, default, fn, required=required)

    def bool(self, key: str, default: bool) -> Any:
        def fn(node: YNode) -> bool:
            if not isinstance(node, YScalar) or not isinstance(node.value, bool):
                raise ValueError(f"must be true or false, got {type_name(node)}")
            return node.value

        return self.convert(key, default, fn)

    def int(self, key: str, default: Any = None, *, required: bool = False,
            min_value: int | None = None, max_value: int | None = None) -> Any:
        def fn(node: YNode) -> int:
            value = node.value if isinstance(node, YScalar) else None
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be an integer, got {type_name(node)}")
            if min_value is not None and value < min_value:
                raise ValueError(f"must be at least {min_value}, got {value}")
            if max_value is not None and value > max_value:
                raise ValueError(f"must be at most {max_value}, got {value}")
            return value

        return self.convert(key, default, fn, required=required)

    def decimal(self, key: str, default: Any = None, *, required: bool = False,
                positive: bool = False, min_value: Decimal | None = None,
                max_value: Decimal | None = None) -> Any:
        def fn(node: YNode) -> Decimal:
            if not isinstance(node, YScalar):
                raise ValueError(f"must be a number, got {type_name(node)}")
            value = parse_decimal(node.value)
            if positive and value <= 0:
                raise ValueError(f"must be greater than 0, got {format_decimal(value)}")
            if min_value is not None and value < min_value:
                raise ValueError(f"must be at least {format_decimal(min_value)}")
            if max_value is not None and value > max_value:
                raise ValueError(f"must be at most {format_decimal(max_value)}")
            return value

        return self.convert(key, default, fn, required=required)

    def duration(self, key: str, default: Any = None, *, required: bool = False,
                 positive: bool = True, max_s: Decimal = MAX_DURATION_S) -> Any:
        """Seconds as float; ``positive`` rejects 0 (a zero timeout is never meant)."""

        def fn(node: YNode) -> float:
            if not isinstance(node, YScalar):
                raise ValueError(f"must be a duration like 30s, got {type_name(node)}")
            seconds = parse_duration_decimal(node.value)
            if positive and seconds <= 0:
                raise ValueError("must be greater than 0 (a duration like 500ms, 5s, 1m)")
            if seconds > max_s:
                raise ValueError(f"must be at most {format_duration(max_s)}")
            return float(seconds)

        return self.convert(key, default, fn, required=required)

    def file_path(self, key: str, default: Path | None) -> Any:
        def fn(node: YNode) -> Path:
            if not isinstance(node, YScalar) or not isinstance(node.value, str) or not node.value:
                raise ValueError(f"must be a path, got {type_name(node)}")
            if "\x00" in node.value:
                raise ValueError("path contains a NUL byte")
            return resolve_path(node.value, self.base_dir)

        return self.convert(key, default, fn)

    # -- lists ---------------------------------------------------------------------------

    def list(self, key: str, item: Callable[[YNode], Any], *, required: bool = False,
             non_empty: bool = False) -> Any:
        node, fallback = self._get(key, (), required)
        if node is None:
            return fallback
        if not isinstance(node, YSeq):
            return self.error(key, f"must be a list, got {type_name(node)}")
        if non_empty and not node.items:
            return self.error(key, "must not be empty")
        out, ok, seen = [], True, set()
        for i, child in enumerate(node.items):
            child_path = f"{self.key_path(key)}[{i}]"
            try:
                value = item(child)
            except (UnitError, ValueError) as exc:
                self.ctx.error(child.mark, child_path, str(exc))
                ok = False
                continue
            if value in seen:
                self.ctx.error(child.mark, child_path, f"duplicate entry {value!r}")
                ok = False
                continue
            seen.add(value)
            out.append(value)
        return tuple(out) if ok else INVALID


def resolve_path(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


def item_str(node: YNode) -> str:
    if not isinstance(node, YScalar) or not isinstance(node.value, str) or not node.value:
        raise ValueError(f"must be a non-empty string, got {type_name(node)}")
    return node.value


def item_product(node: YNode) -> str:
    """Product ids are strings; Vertex/Nado ids written as YAML ints become ``"2"``."""
    value = node.value if isinstance(node, YScalar) else None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise ValueError(f"must be a product id (string, or integer for Vertex/Nado), got {type_name(node)}")
    if isinstance(value, int) and value < 0:
        raise ValueError("product ids are not negative")
    return str(value)


def item_int_product(node: YNode) -> int:
    value = node.value if isinstance(node, YScalar) else None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a non-negative integer product id, got {type_name(node)}")
    return value


def item_side(node: YNode) -> Side:
    value = node.value if isinstance(node, YScalar) else None
    if value not in ("buy", "sell"):
        raise ValueError("must be buy or sell")
    return Side(value)


