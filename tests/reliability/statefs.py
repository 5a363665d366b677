"""A real small filesystem for the disk-full tests: a tmpfs mounted by the test (root only).

``small_fs(path)`` mounts a tmpfs of ``size`` at ``path`` and unmounts it afterwards; when the
runner is not root or the mount fails the test is skipped with the reason printed.
``fill(path)`` writes a filler file until the filesystem reports ENOSPC.
"""

from __future__ import annotations

import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_fs(path: Path, size: str = "512k"):
    if os.geteuid() != 0:
        print(f"SKIP: mounting a tmpfs needs root (euid {os.geteuid()})")
        pytest.skip("mounting a tmpfs for the disk-full test needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       check=False, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        reason = f"mount -t tmpfs failed: {r.stderr.strip() or r.returncode}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=10)


def fill(fs_root: Path, name: str = "filler") -> Path:
    """Fill the filesystem to the last byte; returns the filler file (delete it to free space)."""
    filler = fs_root / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 4096, 1):
            block = b"\0" * chunk
            while True:
                try:
                    if os.write(fd, block) < chunk:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def enospc(*_args, **_kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
