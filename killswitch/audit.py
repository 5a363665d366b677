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

Faults never leave this module (a kill switch must not stop because its diary is full):
a write that fails (ENOSPC, EIO, a refused file) sets ``problem`` (raised as the
``audit_unwritable`` alarm through ``on_alarm``) and the records wait, in order, in a
bounded queue (``AUDIT_QUEUE_MAX``; beyond it the oldest are dropped and counted in
``dropped``); the flusher retries every ``AUDIT_RETRY_S`` and writes them when space
returns, followed by an ``audit_dropped`` record if any were lost. Each flush checks that the
path still names the open file: a log deleted or moved away is recreated (records written to
a deleted file since the last check are written again) and alarmed once
(``audit_file_replaced``); a new file put at the path (logrotate's ``create``) is switched to
quietly; ``reopen()`` (SIGHUP, the ``reopen`` control verb, logrotate's
postrotate) switches to a new file quietly and clears that alarm.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import structlog
import trio

from killswitch.statefile import StateFileError, open_state_file, same_file

log = structlog.get_logger("killswitch.audit")


# Group commit: the flusher waits this long after a wake-up before its fsync. Records are
# already in the page cache (written by record()), so this only delays power-loss
# durability by milliseconds, and it keeps the worker-thread hand-off off the trip path
# (profiled: 26% of the main thread during trips when every record woke the flusher).
GROUP_COMMIT_S = 0.005
AUDIT_QUEUE_MAX = 10_000  # records held in memory while the log cannot be written
AUDIT_RETRY_S = 0.5  # retry period while the log cannot be written
ALARM_UNWRITABLE = "audit_unwritable"
ALARM_REPLACED = "audit_file_replaced"
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
                 offload: Callable[..., Awaitable[Any]] | None = None,
                 max_queued: int = AUDIT_QUEUE_MAX, retry_s: float = AUDIT_RETRY_S) -> None:
        self.path = Path(path)
        # Disk I/O runs in a worker thread; tests under autojump_clock pass an inline runner
        # so virtual time does not jump while a thread works.
        self._offload = offload or trio.to_thread.run_sync
        self._wall_ms = wall_ms
        self._max_queued = max_queued
        self._retry_s = retry_s
        self._queue: deque[bytes] = deque()  # not in the file yet, oldest first (bounded)
        self._head_done = 0  # bytes of _queue[0] already in the file (a short write)
        self._draining = False  # a worker thread writes the backlog: record() queues behind it
        self._inflight = 0  # records of that backlog
        # Written since the last check that the path still names our file: written again if
        # the file turns out to have been deleted meanwhile.
        self._since_check: deque[bytes] = deque(maxlen=max_queued)
        self._wakeup = trio.Event()
        self._seq = 0
        self._fd: int | None = None
        self._write_lock = trio.Lock()
        self._unsynced = 0
        self._reopen_requested = False
        self._reported: dict[str, str | None] = {ALARM_UNWRITABLE: None}
        self._dropped_unreported = 0
        # The write and fsync calls, as attributes so a test can inject ENOSPC at the write site.
        self._write: Callable[[int, Any], int] = os.write
        self._fsync: Callable[[int], None] = os.fsync
        self.records_written = 0
        self.problem: str | None = None  # why the log cannot be written right now
        self.dropped = 0  # records dropped from a full queue since start (audit_dropped)
        self.reopens = 0
        # on_alarm(key, message) raises an alarm, on_alarm(key, None) clears it (event loop).
        self.on_alarm: Callable[[str, str | None], None] | None = None
        self._utc_second = -1  # the last second formatted, and its text (one strftime per second)
        self._utc_prefix = ""

    @property
    def queued(self) -> int:
        """Records not in the file yet (waiting, or being written by a flush right now)."""
        return len(self._queue) + self._inflight

    # ---- files -------------------------------------------------------------------------
    def open(self) -> None:
        """Open at start-up. A refused file (symlink, another owner) raises StateFileError;
        a disk fault becomes ``problem`` and is retried by the flusher (the daemon starts)."""
        try:
            base = last_seq(self.path)
        except OSError:
            base = 0  # unreadable: the file's own records say where the sequence restarted
        try:
            self._open_fd()
        except OSError as exc:
            self._fail("open", exc)
            return
        try:
            torn = _ends_without_newline(self.path)
        except OSError:
            torn = False
        if base:
            # Records made before open() were numbered from 1: move them after the file's last.
            self._queue = deque(_renumber(line, base) for line in self._queue)
            self._seq += base
        if torn:  # a torn last line (power loss) must not swallow the next record
            self._queue.appendleft(b"\n")

    def ts_utc(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if second != self._utc_second:
            self._utc_second = second
            self._utc_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._utc_prefix}.{milli:03d}Z"

    def _open_fd(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_state_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _check_file(self) -> bool:
        """Event loop, under the write lock: (re)open if needed, notice a deleted/replaced log.
        False when there is no file at the path to write to (records stay queued)."""
        if self._fd is None:
            try:
                self._open_fd()
            except (OSError, StateFileError) as exc:
                self._fail("open", exc)
                return False
            return True
        if self._reopen_requested:
            self._reopen_requested = False
            return self._reopen(None)
        try:
            why = same_file(self.path, self._fd)
        except OSError:
            why = None  # cannot tell (e.g. EACCES on the path): keep the open file
        if why is not None:
            return self._reopen(why)
        self._since_check.clear()
        return True

    def _reopen(self, why: str | None) -> bool:
        old = self._fd
        deleted = why == "deleted"
        try:
            self._open_fd()
        except (OSError, StateFileError) as exc:
            self._fd = old
            self._fail("reopen", exc)
            return False
        if old is not None:
            os.close(old)  # safe: only the event loop writes outside a flush, and no flush runs
        rewritten = len(self._since_check) if deleted else 0
        if rewritten:
            # Those records went to the unlinked inode after the last check: write them again.
            self._queue.extendleft(reversed(self._since_check))
            self._trim()
        self._since_check.clear()
        self.reopens += 1
        if why is None:
            log.info("audit_reopened", path=str(self.path))
            self._emit(ALARM_REPLACED, None)
        elif why == "replaced":
            # A new file of ours at the path: logrotate's `create`, its postrotate `reopen` may
            # be a moment behind. Nothing was lost (the old file keeps its records): no alarm.
            log.warning("audit_rotated", path=str(self.path))
        else:
            msg = f"audit log {self.path} was {why} while open; writing to a new file at the path"
            log.error("audit_file_replaced", path=str(self.path), how=why, rewritten=rewritten)
            self._emit(ALARM_REPLACED, msg)
        self.record("audit_reopened", path=str(self.path), cause=why or "requested", rewritten=rewritten)
        return True

    def request_reopen(self) -> None:
        self._reopen_requested = True
        self._wakeup.set()

    async def reopen(self) -> bool:
        """Switch to a (new) file at the path now: logrotate's postrotate, SIGHUP, the control verb."""
        self.request_reopen()
        await self.flush()
        return self.problem is None

    def close(self) -> None:
        self._final_write()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ---- records -----------------------------------------------------------------------
    def record(self, event: str, /, **fields: Any) -> int:
        """Never raises on a disk fault: the record then waits in the queue."""
        self._seq += 1
        ms = self._wall_ms()
        rec = {"ts_wall_ms": ms, "ts_utc": self.ts_utc(ms), "seq": self._seq, "event": event, **fields}
        line = orjson.dumps(rec, default=_default, option=orjson.OPT_NON_STR_KEYS) + b"\n"
        if self._fd is not None and self.problem is None and not self._queue and not self._draining:
            try:
                n = self._write(self._fd, line)
            except OSError as exc:
                self._enqueue(line)
                self._fail("write", exc)
            else:
                if n < len(line):  # a short write: the disk filled up mid-record
                    self._enqueue(line)
                    self._head_done = n
                    self._fail("write", OSError(28, "short write (no space left on device?)"))
                else:
                    self._since_check.append(line)
                    self._unsynced += 1
        else:
            self._enqueue(line)  # before open(), while failing, or behind a backlog
        self._wakeup.set()
        return self._seq

    def _enqueue(self, line: bytes) -> None:
        self._queue.append(line)
        self._trim()

    def _trim(self) -> None:
        while len(self._queue) > self._max_queued:
            if self._head_done and len(self._queue) > 1:
                del self._queue[1]  # the head is half in the file: finish it, drop the next
            else:
                self._queue.popleft()
                self._head_done = 0
            self.dropped += 1
            self._dropped_unreported += 1

    def _fail(self, what: str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = f"cannot {what} audit log {self.path}: {reason}"
        if self.problem is None:
            log.error("audit_unwritable", path=str(self.path), error=reason, queued=len(self._queue))
        self.problem = problem

    def _emit(self, key: str, message: str | None) -> None:
        if self.on_alarm is None:
            return
        try:
            self.on_alarm(key, message)
        except Exception as exc:  # an observer's bug must not stop the audit
            log.error("audit_alarm_hook_failed", error=f"{type(exc).__name__}: {exc}")

    def _report(self) -> None:
        if self._reported[ALARM_UNWRITABLE] != self.problem:
            self._reported[ALARM_UNWRITABLE] = self.problem
            msg = None if self.problem is None else \
                f"{self.problem}; {len(self._queue)} records held in memory, {self.dropped} dropped"
            self._emit(ALARM_UNWRITABLE, msg)

    # ---- flushing ----------------------------------------------------------------------
    def _drain_sync(self, fd: int, batch: list[bytes], head_done: int) -> tuple[int, int, OSError | None]:
        """Worker thread: write ``batch`` in order, then fsync. Returns (records done, bytes of
        the next one done, error)."""
        done, offset = 0, head_done
        try:
            for line in batch:
                view = memoryview(line)[offset:]
                while view:
                    n = self._write(fd, view)
                    if n <= 0:
                        raise OSError(28, "short write (no space left on device?)")
                    view, offset = view[n:], offset + n
                done, offset = done + 1, 0
            self._fsync(fd)
        except OSError as exc:
            return done, offset, exc
        return done, 0, None

    def _after_drain(self, batch: list[bytes], done: int, offset: int, err: OSError | None,
                     unsynced: int) -> None:
        self._since_check.extend(batch[:done])
        rest = batch[done:]
        if rest:
            self._queue.extendleft(reversed(rest))  # older than anything queued meanwhile
            self._head_done = offset
            self._trim()
        if err is not None:
            self._unsynced += unsynced + done  # fsync again next time
            self._fail("write", err)
            return
        self.records_written += unsynced + done
        if self.problem is not None:
            log.info("audit_writable", path=str(self.path), dropped=self.dropped)
            self.problem = None
        if self._dropped_unreported:
            n, self._dropped_unreported = self._dropped_unreported, 0
            self.record("audit_dropped", dropped=n, dropped_total=self.dropped)

    async def flush(self) -> None:
        """Write and fsync everything recorded so far, in order. Never raises on a disk fault."""
        async with self._write_lock:
            usable = self._check_file()
            if usable and (self._queue or self._unsynced or self.problem is not None):
                batch = list(self._queue)
                self._queue.clear()
                head_done, self._head_done = self._head_done, 0
                unsynced, self._unsynced = self._unsynced, 0
                self._draining, self._inflight = bool(batch), len(batch)
                try:
                    done, offset, err = await self._offload(self._drain_sync, self._fd, batch, head_done)
                finally:
                    self._draining, self._inflight = False, 0
                self._after_drain(batch, done, offset, err, unsynced)
            self._report()

    def _final_write(self) -> None:
        if self._fd is None and self._queue:
            try:
                self._open_fd()  # one last try (shutdown), never a raise
            except (OSError, StateFileError):
                pass
        if self._fd is None:
            if self._queue:
                log.error("audit_records_lost_at_exit", records=len(self._queue), reason=self.problem)
            return
        batch = list(self._queue)
        self._queue.clear()
        done, offset, err = self._drain_sync(self._fd, batch, self._head_done)
        self._unsynced = 0
        if err is not None:
            log.error("audit_records_lost_at_exit", records=len(batch) - done, error=str(err))
            self._queue.extend(batch[done:])
            self._head_done = offset

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self._fd is None and self.problem is None:
            self.open()
        task_status.started()
        if self.problem is not None:
            await self.flush()  # raise the alarm at once (start-up without a writable log)
        try:
            while True:
                if self.problem is None:
                    await self._wakeup.wait()
                    await trio.sleep(GROUP_COMMIT_S)
                else:
                    await trio.sleep(self._retry_s)  # failing: retry on a period, not per record
                self._wakeup = trio.Event()
                await self.flush()
        finally:
            self._final_write()  # synchronous: runs even while cancelled


def read_audit(path: Path) -> list[dict]:
    """Parse an audit log (for tests, `status` and post-mortems). Raises on a corrupt line."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                out.append(orjson.loads(line))
    return out


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

