"""Append-only JSONL audit log, fsync'd.

``record()`` is synchronous and cheap: it serialises the record and ``write()``s it to the
file at once (a few µs into the kernel's page cache, so even a SIGKILL right after loses
nothing), which is what lets it be called on the hot path — including from inside a venue
session's ``on_sent`` callback, the moment a cancel hits the wire. A flusher task fsyncs in
a worker thread, batching records that arrive together, so the event loop never waits for
the disk. Every record is fsync'd before ``flush()`` returns; shutdown flushes everything.

Records carry ``ts_wall_ms``, the same instant as ISO-8601 UTC text (``ts_utc``, millisecond
precision), ``seq`` and ``event`` (the record type). ``seq`` continues across restarts: ``open()``
reads the last record's ``seq`` from the end of the file, so one file is one sequence (a gap
or a repeat means lines were lost or the file was edited). Secrets never appear because callers
only pass ids, nonces, codes and messages (and ``Secret`` renders as ***).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import trio


# Group commit: the flusher waits this long after a wake-up before its fsync. Records are
# already in the page cache (written by record()), so this only delays power-loss
# durability by milliseconds, and it keeps the worker-thread hand-off off the trip path
# (profiled: 26% of the main thread during trips when every record woke the flusher).
GROUP_COMMIT_S = 0.005
TAIL_CHUNK_BYTES = 1 << 20  # open() reads the file backwards in chunks of this size for the last seq


def _default(obj: Any) -> Any:
    # Decimal, enums, frozensets, dataclasses-with-slots: render readably, never fail.
    if isinstance(obj, (set, frozenset)):
        return sorted(str(x) for x in obj)
    if hasattr(obj, "value") and obj.__class__.__module__.startswith("killswitch"):
        return obj.value
    return str(obj)


class AuditLog:
    def __init__(self, path: Path, *, wall_ms: Callable[[], int],
                 offload: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.path = Path(path)
        # Disk I/O runs in a worker thread; tests under autojump_clock pass an inline runner
        # so virtual time does not jump while a thread works.
        self._offload = offload or trio.to_thread.run_sync
        self._wall_ms = wall_ms
        self._batch: list[bytes] = []
        self._wakeup = trio.Event()
        self._seq = 0
        self._fd: int | None = None
        self._write_lock = trio.Lock()
        self._unsynced = 0
        self.records_written = 0
        self._utc_second = -1  # the last second formatted, and its text (one strftime per second)
        self._utc_prefix = ""

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        base = last_seq(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(self.path, 0o600)
        if _ends_without_newline(self.path):
            self._write_all(b"\n")  # a torn last line (power loss) must not swallow the next record
        if base:
            # Records made before open() were numbered from 1: move them after the file's last.
            self._batch = [_renumber(line, base) for line in self._batch]
            self._seq += base
        if self._batch:  # written now, so they stay ahead of the records made after open()
            self._unsynced += len(self._batch)
            self._write_all(self._take())

    def ts_utc(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if second != self._utc_second:
            self._utc_second = second
            self._utc_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._utc_prefix}.{milli:03d}Z"

    def close(self) -> None:
        if self._fd is not None:
            self._unsynced = 0
            self._write_sync(self._take())
            os.close(self._fd)
            self._fd = None

    def record(self, event: str, /, **fields: Any) -> int:
        self._seq += 1
        ms = self._wall_ms()
        rec = {"ts_wall_ms": ms, "ts_utc": self.ts_utc(ms), "seq": self._seq, "event": event, **fields}
        line = orjson.dumps(rec, default=_default, option=orjson.OPT_NON_STR_KEYS) + b"\n"
        if self._fd is not None:
            self._write_all(line)
            self._unsynced += 1
        else:
            self._batch.append(line)  # before open(): written by the first flush
        self._wakeup.set()
        return self._seq

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _take(self) -> bytes:
        data = b"".join(self._batch)
        self._batch.clear()
        return data

    def _write_sync(self, data: bytes) -> None:
        if self._fd is None:
            return
        if data:
            self._write_all(data)
        os.fsync(self._fd)

    async def flush(self) -> None:
        """Write and fsync everything recorded so far. The lock keeps batches in order."""
        async with self._write_lock:
            if self._batch or self._unsynced:
                data = self._take()
                n = data.count(b"\n") + self._unsynced
                self._unsynced = 0
                await self._offload(self._write_sync, data)
                self.records_written += n

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self._fd is None:
            self.open()
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                await trio.sleep(GROUP_COMMIT_S)
                self._wakeup = trio.Event()
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                if self._batch or self._unsynced:
                    self._unsynced = 0
                    self._write_sync(self._take())


def last_seq(path: Path) -> int:
    """The ``seq`` of the last parseable record in an audit file (0: none, or no file)."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return 0
    with fh:
        end = fh.seek(0, os.SEEK_END)
        tail = b""
        while end > 0:
            start = max(0, end - TAIL_CHUNK_BYTES)
            fh.seek(start)
            tail = fh.read(end - start) + tail
            lines = tail.split(b"\n")
            # The first piece may be a partial line unless the chunk began at the file's start.
            candidates = lines if start == 0 else lines[1:]
            for line in reversed(candidates):
                seq = _seq_of(line)
                if seq is not None:
                    return seq
            tail = lines[0] if start > 0 else b""
            end = start
    return 0


def _seq_of(line: bytes) -> int | None:
    if not line.strip():
        return None
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    seq = rec.get("seq") if isinstance(rec, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _ends_without_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return False
        fh.seek(size - 1)
        return fh.read(1) != b"\n"


def _renumber(line: bytes, base: int) -> bytes:
    rec = orjson.loads(line)
    rec["seq"] += base
    return orjson.dumps(rec, default=_default, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def read_audit(path: Path) -> list[dict]:
    """Parse an audit log (for tests, `status` and post-mortems). Raises on a corrupt line."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                out.append(orjson.loads(line))
    return out
