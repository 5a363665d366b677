"""Per-signer monotonic nonces that survive restarts (doc §4).

The venue keeps each signer's 100 highest nonces; a new one must be above the smallest,
unused, and within (T - 2 d, T + 1 d). Handing out ``max(now_ms, last + 1)`` satisfies that
within one process. Across restarts (or a wall clock stepped back) ``last`` must not go
backwards, so a *lease* is persisted in ``state_dir``: before a nonce above the stored
ceiling is handed out, the ceiling is moved ``lease_ms`` ahead and written (atomically,
fsynced). A restart starts above the stored ceiling, so it never reuses or undercuts a
nonce the previous process may have sent; the file is written about once per lease, not
per cancel.
"""

from __future__ import annotations

import os
from pathlib import Path

LEASE_MS = 10_000


class NonceSource:
    __slots__ = ("_path", "_last", "_ceiling", "_lease_ms")

    def __init__(self, path: Path | None, *, lease_ms: int = LEASE_MS) -> None:
        """``path`` None: in-memory only (tests, dry runs)."""
        self._path = path
        self._lease_ms = lease_ms
        self._ceiling = 0
        if path is not None and path.exists():
            text = path.read_text().strip()
            try:
                self._ceiling = int(text)
            except ValueError:
                raise ValueError(f"{path}: nonce high-water mark is not an integer") from None
        self._last = self._ceiling

    @property
    def last(self) -> int:
        return self._last

    def next(self, now_wall_ms: int) -> int:
        n = max(now_wall_ms, self._last + 1)
        if n > self._ceiling:
            self._persist(n + self._lease_ms)
        self._last = n
        return n

    def _persist(self, ceiling: int) -> None:
        if self._path is not None:
            tmp = self._path.with_name(self._path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{ceiling}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
        self._ceiling = ceiling


def nonce_path(state_dir: Path, signer_address: str) -> Path:
    """One file per signer: the nonce set is per signer, not per account."""
    return state_dir / f"hyperliquid-nonce-{signer_address.lower()}"
