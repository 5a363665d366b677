"""structlog set-up: JSON lines on stdout (journald), a console renderer on a TTY.

A redaction processor replaces any known secret value (registered at start-up from the
resolved credentials) wherever it appears in an event, and drops keys that look like
secrets — a second line of defence behind ``Secret``'s redacted ``repr``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

import orjson
import structlog

SECRET_KEY_HINTS = ("secret", "private_key", "password", "signature_key", "api_secret")
REDACTED = "***"


MAX_DEPTH = 8  # deeper structures are logged as (scrubbed) text: bounded work per event

_SCALARS = (int, float, bool, type(None))


class SecretRedactor:
    """structlog processor; ``add()`` registers secret values to scrub (kept only here).

    Walks lists, tuples, sets and dicts recursively, so they reach the JSON renderer as JSON
    arrays and objects (never as Python ``repr`` text): a key that looks like a secret is
    replaced at any depth, and every string is scrubbed of known secret values. Other objects
    (Decimal, Path, enums, dataclasses) become their ``str()``, scrubbed.
    """

    def __init__(self) -> None:
        self._values: list[str] = []

    def add(self, values: Iterable[str]) -> None:
        for v in values:
            if v and len(v) >= 6 and v not in self._values:
                self._values.append(v)

    def scrub(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, REDACTED)
        return text

    def redact(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, _SCALARS):
            return value
        if isinstance(value, str):
            return self.scrub(value) if self._values else value
        if depth < MAX_DEPTH:
            if isinstance(value, dict):
                return {str(k): (REDACTED if _looks_secret(str(k)) else self.redact(v, depth + 1))
                        for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [self.redact(v, depth + 1) for v in value]
            if isinstance(value, (set, frozenset)):
                return sorted((self.redact(v, depth + 1) for v in value), key=str)
        return self.scrub(str(value))

    def __call__(self, logger: Any, method: str, event_dict: dict) -> dict:
        for key, value in list(event_dict.items()):
            event_dict[key] = REDACTED if _looks_secret(key) else self.redact(value)
        return event_dict


def _looks_secret(key: str) -> bool:
    low = key.lower()
    return any(h in low for h in SECRET_KEY_HINTS)


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(fmt: str = "auto", *, redactor: SecretRedactor | None = None, stream=None,
                      level: int = logging.INFO) -> SecretRedactor:
    redactor = redactor or SecretRedactor()
    stream = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        redactor,
    ]
    processors.append(structlog.dev.ConsoleRenderer(colors=False) if use_console
                      else structlog.processors.JSONRenderer(serializer=_orjson_dumps))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return redactor
