"""Official venue SDKs for the SDK-driven simulator tests, each in a venv of its own.

nado-protocol 2.0.0 pins eth-account<0.9 and vertex-protocol 3.3.1 pins pydantic<2; both
conflict with the daemon's own pins (eth-account>=0.13, pydantic 2), so neither can be in the
``test`` extra. The fixture builds a cached venv per SDK (``KILLSWITCH_SDK_VENVS`` or
~/.cache/killswitch/sdk-venvs) from the pinned requirement below and runs a driver script in
it against the sim over 127.0.0.1. Without PyPI access the test skips with the reason.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

SDK_REQUIREMENTS = {"nado": "nado-protocol==2.0.0", "vertex": "vertex-protocol==3.3.1"}
SDK_MODULES = {"nado": "nado_protocol", "vertex": "vertex_protocol"}
DRIVERS = Path(__file__).parent / "sdk_drivers"


def _root() -> Path:
    return Path(os.environ.get("KILLSWITCH_SDK_VENVS", Path.home() / ".cache" / "killswitch" / "sdk-venvs"))


def sdk_python(sdk: str) -> str:
    """The python of a venv holding the SDK; skips the test when it cannot be built."""
    req = SDK_REQUIREMENTS[sdk]
    venv = _root() / f"{sdk}-{hashlib.sha256(req.encode()).hexdigest()[:10]}"
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import {SDK_MODULES[sdk]}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q", req], capture_output=True, text=True,
                           timeout=600)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot build a venv for {req}: {exc}")
    if r.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        msg = f"{req} not installable here (needs PyPI): {tail[0]}"
        print(msg)
        pytest.skip(msg)
    return str(python)
