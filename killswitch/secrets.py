"""Secret references and values that never print themselves.

The YAML never holds a secret, only a reference: ``{env: NAME}``, ``{file: PATH}`` or
``{credential: NAME}`` (systemd ``LoadCredential=``, read from ``$CREDENTIALS_DIRECTORY``).
Resolution happens once at start-up (and on reload); the value lives in a :class:`Secret`
whose ``repr``/``str`` are redacted, so it cannot leak through logs, tracebacks or audit
records by accident. ``reveal()`` is the only way to get the text, used by signers.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

SECRET_KINDS = ("env", "file", "credential")


class SecretError(Exception):
    """A secret reference could not be resolved. The message never contains the value."""


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __reduce__(self):  # never pickled / copied out in clear
        raise TypeError("Secret values cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True, slots=True)
class SecretRef:
    kind: str  # env | file | credential
    name: str

    def describe(self) -> str:
        return f"{{{self.kind}: {self.name}}}"

    def resolve(self, environ: Mapping[str, str] | None = None) -> Secret:
        return resolve_secret(self, environ)


def _check_private_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist") from None
    except PermissionError:
        raise SecretError(f"secret file {path} is not readable by this user") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"secret file {path} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"secret file {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )


def _read_secret_file(path: Path) -> str:
    _check_private_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"secret file {path} could not be read: {type(exc).__name__}") from None
    value = text.strip()
    if not value:
        raise SecretError(f"secret file {path} is empty")
    return value


def resolve_secret(ref: SecretRef, environ: Mapping[str, str] | None = None) -> Secret:
    env = os.environ if environ is None else environ
    if ref.kind == "env":
        value = env.get(ref.name)
        if value is None or not value.strip():
            raise SecretError(f"environment variable {ref.name} is not set (secret {ref.describe()})")
        return Secret(value.strip())
    if ref.kind == "file":
        return Secret(_read_secret_file(Path(ref.name).expanduser()))
    if ref.kind == "credential":
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise SecretError(
                f"secret {ref.describe()}: $CREDENTIALS_DIRECTORY is not set "
                "(use LoadCredential= in the systemd unit, or an {env:}/{file:} reference)"
            )
        if "/" in ref.name or ref.name in ("", ".", ".."):
            raise SecretError(f"credential name {ref.name!r} must be a plain name")
        path = Path(cred_dir) / ref.name
        # systemd creates credentials 0400 owned by the service user: same check applies.
        return Secret(_read_secret_file(path))
    raise SecretError(f"unknown secret kind {ref.kind!r}; use one of {', '.join(SECRET_KINDS)}")
