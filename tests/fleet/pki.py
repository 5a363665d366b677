"""Test certificates made with openssl: CAs, a server certificate for 127.0.0.1 and client
certificates (for mutual TLS). EC P-256, valid one day."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HAVE_OPENSSL = shutil.which("openssl") is not None
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    """``<name>.pem`` and ``<name>.key`` in ``d``."""
    _openssl(
        "req",
        "-x509",
        *_EC,
        "-keyout",
        str(d / f"{name}.key"),
        "-out",
        str(d / f"{name}.pem"),
        "-days",
        "1",
        "-subj",
        f"/CN={name}",
    )


def make_cert(d: Path, ca: str, name: str, cn: str, extensions: str) -> None:
    """``<name>.pem`` / ``<name>.key`` signed by ``ca``, with ``extensions`` (openssl x509 v3 lines)."""
    _openssl(
        "req", *_EC, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", f"/CN={cn}"
    )
    (d / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        str(d / f"{name}.csr"),
        "-CA",
        str(d / f"{ca}.pem"),
        "-CAkey",
        str(d / f"{ca}.key"),
        "-CAcreateserial",
        "-out",
        str(d / f"{name}.pem"),
        "-days",
        "1",
        "-extfile",
        str(d / f"{name}.ext"),
    )


def make_server_cert(d: Path, ca: str) -> None:
    """``srv.pem`` / ``srv.key`` for 127.0.0.1."""
    make_cert(d, ca, "srv", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")


def make_client_cert(d: Path, ca: str, name: str) -> None:
    """``<name>.pem`` / ``<name>.key``: a client certificate (CN = name) for mutual TLS."""
    make_cert(d, ca, name, name, "extendedKeyUsage=clientAuth\n")


def tls_block(d: Path, *, verify: bool = False) -> str:
    """The server's ``tls { ... }`` block; ``verify``: clients must show a certificate from ``ca``."""
    extra = f', ca_file: "{d / "ca.pem"}", verify: true' if verify else ""
    return f'tls {{ cert_file: "{d / "srv.pem"}", key_file: "{d / "srv.key"}"{extra} }}'
