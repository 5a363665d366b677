"""One daemon per state directory and per control socket, checked before any venue is touched.

Two daemons on one ``state_dir`` would write the same ``latch.json`` and audit log, one
TRIPPED and one ARMED; two on one control socket would leave ``killswitch trip`` reaching
whichever bound last. So ``killswitch run`` first takes an exclusive ``flock`` on
``state_dir/killswitch.lock`` (held for the life of the process; the kernel drops it when the
process dies, so a crash never leaves a stale lock) and probes the control socket; a second
instance stops with the holder's PID before it logs in anywhere.

The lock file is opened with ``O_NOFOLLOW`` and must be a regular file owned by this uid: a
symlink or another user's file planted in the state directory is refused, never written.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
from pathlib import Path

LOCK_FILE = "killswitch.lock"
PID_MAX_BYTES = 32
SOCKET_PROBE_S = 0.5


class InstanceLockError(Exception):
    """Another instance holds the state directory or the control socket (or the lock is unsafe)."""


class InstanceLock:
    """An exclusive ``flock`` on ``state_dir/killswitch.lock``; the file holds the owner's PID."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None
        self.pid_error: str | None = None  # why the holder PID could not be written

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.pid_error = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InstanceLockError(f"lock file {self.path} is a symlink; refusing to use it") from None
            raise InstanceLockError(f"cannot open lock file {self.path}: {os.strerror(exc.errno)}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InstanceLockError(f"lock file {self.path} is not a regular file; refusing to use it")
            if st.st_uid != os.geteuid():
                raise InstanceLockError(f"lock file {self.path} is owned by uid {st.st_uid}, not this user "
                                        f"(uid {os.geteuid()}); refusing to use it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                who = f"pid {holder}" if holder else "another process"
                raise InstanceLockError(f"another killswitch ({who}) is running with state_dir "
                                        f"{self.path.parent} (lock {self.path})") from None
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:
                # The flock is the lock; the PID is only for the second instance's message.
                # A full disk must not stop the guard (a second instance is still refused).
                self.pid_error = os.strerror(exc.errno) if exc.errno else str(exc)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, PID_MAX_BYTES, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def check_control_socket(path: Path) -> None:
    """Raise if a process already accepts connections on ``path`` (naming its PID).

    A socket file nobody listens on is a leftover from a crash: the control server replaces
    it. Only a live listener is a second instance."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        return  # the control server refuses to replace it, with its own message
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(SOCKET_PROBE_S)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        return
    else:
        pid = _peer_pid(probe)
        who = f"pid {pid}" if pid else "another process"
        raise InstanceLockError(f"another killswitch ({who}) is serving the control socket {path}")
    finally:
        probe.close()


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, _, _ = struct.unpack("3i", creds)
    return pid or None
