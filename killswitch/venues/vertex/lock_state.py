"""The Nado order-entry lock's state file: which linked signer to restore on unlock.

Written (atomically, fsynced) *before* the revoke is sent, so a crash between the two still
knows the strategy's signer; deleted once an unlock is verified. A file that exists but
cannot be read means "locked, restore target unknown": the daemon keeps the lock (and signs
with the owner key) rather than guess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from killswitch.statefile import StateFileError, fsync_dir, open_state_file, read_state_file

MAX_BYTES = 4096


@dataclass(frozen=True, slots=True)
class LockState:
    strategy_signer: str | None  # lowercase address to re-link on unlock; None = unreadable file
    trip_id: int
    locked_at_ms: int
    unreadable: str = ""  # why the file could not be read

    def to_json(self) -> bytes:
        return orjson.dumps({"strategy_signer": self.strategy_signer, "trip_id": self.trip_id,
                             "locked_at_ms": self.locked_at_ms})


class LockStore:
    """One subaccount's lock state: a file in ``state_dir``, or memory only without one."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mem: LockState | None = None
        self._loaded = path is None

    def load(self) -> LockState | None:
        if self._loaded:
            return self._mem
        self._loaded = True
        assert self.path is not None
        try:
            raw = read_state_file(self.path, max_bytes=MAX_BYTES)
            if raw is None:
                return None
            d = orjson.loads(raw)
            signer = d["strategy_signer"]
            if not (isinstance(signer, str) and signer.startswith("0x") and len(signer) == 42):
                raise ValueError("strategy_signer is not an address")
            self._mem = LockState(signer.lower(), int(d.get("trip_id", 0)), int(d.get("locked_at_ms", 0)))
        except (OSError, StateFileError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            self._mem = LockState(None, 0, 0, unreadable=f"{self.path}: {type(exc).__name__}: {exc}")
        return self._mem

    def save(self, state: LockState) -> None:
        """Raises OSError / StateFileError when it cannot be persisted (memory is updated anyway)."""
        self._mem = state
        self._loaded = True
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = open_state_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, state.to_json())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def clear(self) -> None:
        self._mem = None
        self._loaded = True
        if self.path is not None:
            self.path.unlink(missing_ok=True)
