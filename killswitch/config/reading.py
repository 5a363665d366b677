"""Reading a configuration file, bounded: the one reader for ``run``, ``check``, includes and SIGHUP.

A config path is operator input and the reload runs inside the live daemon, so the read
must neither hang nor exhaust memory: ``stat`` first and read only regular files (a symlink
to ``/dev/zero`` is a character device, a FIFO would block ``open()`` forever), refuse a file
over the size cap before reading it, and never read more than the cap even if the file grows
meanwhile. Errors carry the OS's own words ("No such file or directory").
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

DEFAULT_MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a real config is a few KiB
_READ_CHUNK_BYTES = 1 << 16


class ConfigReadError(Exception):
    """The file could not be read; the message says why, without the file name (callers add it)."""


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _os_reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _refuse_special(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise ConfigReadError(f"not a regular file ({_file_kind(mode)}); only regular files are read")


def read_config_text(path: str | Path, max_bytes: int = DEFAULT_MAX_CONFIG_BYTES) -> str:
    """The file's text (UTF-8), or :class:`ConfigReadError`."""
    try:
        _refuse_special(os.stat(path).st_mode)  # before open(): opening a FIFO or a device can block or act
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open() still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigReadError(_os_reason(exc)) from None
    try:
        st = os.fstat(fd)
        _refuse_special(st.st_mode)
        if st.st_size > max_bytes:
            raise ConfigReadError(f"file is {st.st_size} bytes, over the limit of {max_bytes} bytes "
                                  f"(raise it with --max-config-bytes)")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(_READ_CHUNK_BYTES, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ConfigReadError(f"file grew over the limit of {max_bytes} bytes while being read "
                                      f"(raise it with --max-config-bytes)")
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            raise ConfigReadError("not a regular file; only regular files are read") from None
        raise ConfigReadError(_os_reason(exc)) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigReadError(f"not valid UTF-8 (line {line}, byte offset {exc.start})") from None
