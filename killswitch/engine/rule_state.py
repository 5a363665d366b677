"""Rule baselines that outlive the process: drawdown peaks, rolling windows, day boundaries, flows.

A rule that has a baseline offers ``baseline_key()`` (the config fields that define what
its baseline means), ``export_baseline(wall_offset_s)`` / ``import_baseline(data,
wall_offset_s)`` (JSON-able state, times as wall-clock seconds) and ``carry_from(old)``
(in-process hand-over on reset and reload). Rules without ``baseline_key`` have nothing
to keep.

The pure part (:func:`collect`, :func:`plan_restore`, :func:`encode`, :func:`decode`) has
no I/O; :class:`RuleStateStore` is the thin file shell: one file in ``state_dir``, written
to a temporary name and renamed (atomic), capped at ``MAX_BYTES``, ending in a SHA-256 of
its body. A corrupt, oversized or unreadable file is never fatal: every rule starts from
the current equity and the caller raises an alarm.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import orjson

from killswitch.statefile import StateFileError, open_state_file

FILE_NAME = "rule_state.json"
FORMAT_VERSION = 1
MAX_BYTES = 4 * 1024 * 1024  # far above 100 rules x 100 venues x 512 window entries


class RuleStateError(Exception):
    """The stored rule state cannot be used (the message says why)."""


class RuleStateUnreadable(RuleStateError):
    """The file exists but this process may not read it (permissions, I/O)."""


@dataclass(frozen=True, slots=True)
class Rebase:
    """A rule whose stored baseline does not apply to its current config."""

    rule: str
    reason: str
    old_key: dict | None
    new_key: dict
    old_baseline: dict | None


def has_baseline(rule: object) -> bool:
    return callable(getattr(rule, "baseline_key", None))


def key_diff(old: dict, new: dict) -> str:
    fields = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in fields)


# ---------------------------------------------------------------- pure core


def collect(rules: Iterable[object], wall_offset_s: float, cache: dict | None = None) -> dict:
    """What to store: rule name -> {key, baseline}.

    ``cache`` (name -> (rule id, baseline_version, entry)) skips re-exporting rules whose
    baseline has not changed since the last call; the caller keeps it between calls.
    """
    out = {}
    for r in rules:
        if not has_baseline(r):
            continue
        version = getattr(r, "baseline_version", None)
        hit = cache.get(r.name) if cache is not None else None
        if hit is not None and hit[0] == id(r) and hit[1] == version and version is not None:
            out[r.name] = hit[2]
            continue
        entry = {"key": r.baseline_key(), "baseline": r.export_baseline(wall_offset_s)}
        out[r.name] = entry
        if cache is not None:
            cache[r.name] = (id(r), version, entry)
    return out


def plan_restore(rules: Iterable[object], stored: dict) -> tuple[list[tuple[object, dict]], list[Rebase]]:
    """Split rules into (rule, stored baseline) pairs to import and rules that rebase.

    A rule with no stored entry (new rule, first start) starts fresh without a rebase
    record; a stored entry whose key differs rebases explicitly.
    """
    restore, rebases = [], []
    for r in rules:
        if not has_baseline(r):
            continue
        entry = stored.get(r.name)
        if entry is None:
            continue
        new_key = r.baseline_key()
        if entry.get("key") != new_key:
            rebases.append(Rebase(r.name, key_diff(entry.get("key") or {}, new_key), entry.get("key"),
                                  new_key, entry.get("baseline")))
            continue
        restore.append((r, entry.get("baseline") or {}))
    return restore, rebases


def carry(old_rules: Iterable[object], new_rules: Iterable[object]) -> list[Rebase]:
    """Hand baselines from the running rules to their replacements (same name, same key)."""
    old = {r.name: r for r in old_rules}
    rebases = []
    for r in new_rules:
        prev = old.get(r.name)
        if prev is None or prev is r or not has_baseline(r) or not has_baseline(prev):
            continue
        if prev.baseline_key() != r.baseline_key():
            rebases.append(Rebase(r.name, key_diff(prev.baseline_key(), r.baseline_key()), prev.baseline_key(),
                                  r.baseline_key(), prev.export_baseline(0.0)))
            continue
        r.carry_from(prev)
    return rebases


def encode(rules_state: dict, saved_wall_ms: int) -> bytes:
    body = orjson.dumps({"version": FORMAT_VERSION, "saved_wall_ms": saved_wall_ms, "rules": rules_state},
                        option=orjson.OPT_SORT_KEYS)
    return body + b"\nsha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def decode(data: bytes) -> dict:
    """rule name -> {key, baseline}; raises RuleStateError for anything not trustworthy."""
    if len(data) > MAX_BYTES:
        raise RuleStateError(f"file is {len(data)} bytes, above the {MAX_BYTES} byte cap")
    body, sep, tail = data.rstrip(b"\n").rpartition(b"\nsha256:")
    if not sep:
        raise RuleStateError("no checksum line")
    if hashlib.sha256(body).hexdigest().encode() != tail.strip():
        raise RuleStateError("checksum mismatch (torn or edited file)")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RuleStateError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION or not isinstance(doc.get("rules"), dict):
        raise RuleStateError(f"unknown format (version {doc.get('version') if isinstance(doc, dict) else '?'})")
    return doc["rules"]


# ---------------------------------------------------------------- file shell


class RuleStateStore:
    """The file. ``save`` may run in a worker thread: writes are serialised by a lock, and a
    write older (lower ``seq``) than one already on disk is dropped."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE_NAME
        self._lock = threading.Lock()
        self._written_seq = -1

    def load(self) -> dict:
        """Stored entries ({} when there is no file); RuleStateError when it is unusable."""
        try:
            # Like the latch files: never through a symlink, never a FIFO (it would block).
            fd = open_state_file(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return {}
        except StateFileError as exc:
            raise RuleStateUnreadable(str(exc)) from None
        except OSError as exc:
            raise RuleStateUnreadable(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            chunks, size = [], 0
            while size <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise RuleStateUnreadable(f"cannot read {self.path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        return decode(b"".join(chunks))

    def save(self, rules_state: dict, saved_wall_ms: int, *, durable: bool = False, seq: int | None = None) -> None:
        """Atomic replace. ``durable`` adds fsync of file and directory (reset, shutdown)."""
        data = encode(rules_state, saved_wall_ms)
        if len(data) > MAX_BYTES:
            raise OSError(f"rule state is {len(data)} bytes, above the {MAX_BYTES} byte cap")
        with self._lock:
            if seq is not None:
                if seq <= self._written_seq:
                    return  # a newer state is already on disk
                self._written_seq = seq
            self._write(data, durable)

    def _write(self, data: bytes, durable: bool) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(FILE_NAME + ".tmp")
        try:
            os.unlink(tmp)  # a leftover, or something planted there: never written through
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if durable:
            dfd = os.open(self.state_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def describe_rebases(config_rules: Iterable[object], state_dir: Path | str) -> list[str]:
    """For ``killswitch check``: which rules would rebase against the stored state."""
    store = RuleStateStore(state_dir)
    try:
        stored = store.load()
    except RuleStateUnreadable as exc:
        return [f"{exc}: run check as the daemon's user to see which rules would rebase"]
    except RuleStateError as exc:
        return [f"stored rule state in {store.path} is unusable ({exc}): every baseline restarts"]
    _, rebases = plan_restore(config_rules, stored)
    return [f"rule {rb.rule}: baseline will rebase on reload/restart ({rb.reason})" for rb in rebases]
