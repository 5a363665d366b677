"""Opening the daemon's own state files safely (the latch files and the audit log).

A state file is opened with ``O_NOFOLLOW`` and checked with ``fstat`` on the descriptor
actually opened (no check-then-open race): it must be a regular file owned by the daemon's
effective uid. Anything else — a symlink planted at the path, a FIFO, a file another user
created — is refused with a :class:`StateFileError` that names the file and the reason, so
nobody can redirect the latch or the audit trail by squatting a path in ``state_dir``.

``StateFileError`` is deliberately not an ``OSError``: disk faults (ENOSPC, EIO) are
retried and alarmed, a refused file is a configuration or tampering error.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class StateFileError(Exception):
    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"refusing state file {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def open_state_file(path: Path | str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` for a state file: no symlinks, regular files owned by us only."""
    try:
        # O_NONBLOCK: opening a FIFO planted at the path must not hang (regular files ignore it).
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileError(path, "it is a symbolic link (state files are never followed through links)") \
                from None
        raise
    try:
        check_fd(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_fd(fd: int, path: Path | str) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StateFileError(path, "it is not a regular file")
    own = os.geteuid()
    if st.st_uid != own:
        raise StateFileError(path, f"it is owned by uid {st.st_uid}, not by this daemon's uid {own}")
    return st


def read_state_file(path: Path | str, *, max_bytes: int) -> bytes | None:
    """The whole file (bounded), or None when it does not exist."""
    try:
        fd = open_state_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise ValueError(f"{size} bytes, more than the {max_bytes} a state file may hold")
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise ValueError(f"more than the {max_bytes} bytes a state file may hold")
        return data
    finally:
        os.close(fd)


def same_file(path: Path | str, fd: int) -> str | None:
    """Why ``path`` no longer names the file open on ``fd``, or None when it still does.

    "deleted" (the open file has no name left), "moved away" (renamed, nothing at the path),
    "replaced" (another file at the path, e.g. logrotate's ``create``).
    """
    st_fd = os.fstat(fd)
    try:
        st_path = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return "deleted" if st_fd.st_nlink == 0 else "moved away"
    if (st_path.st_dev, st_path.st_ino) != (st_fd.st_dev, st_fd.st_ino):
        return "deleted" if st_fd.st_nlink == 0 else "replaced"
    return None


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
