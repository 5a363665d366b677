"""A malformed Nado private key is a clean start-up error: exit 2, a message naming the
secret reference and the problem, no traceback, and never the key's text."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from tests.e2e.helpers import REPO, child_env, short_tmpdir

from .harness import daemon_yaml, start_nado

BAD_KEYS = {
    "not-hex": "0x" + "zz" * 32,
    "too-short": "0x" + "ab" * 20,
    "zero-scalar": "0x" + "00" * 32,  # 32 hex bytes, but not a valid secp256k1 key
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
async def test_malformed_nado_private_key_exits_2_naming_the_reference_not_the_value(case):
    bad = BAD_KEYS[case]
    with short_tmpdir() as root, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nado = await start_nado(nursery)
            cfg = root / "killswitch.yaml"
            cfg.write_text(daemon_yaml(root, nado.venue_yaml()))
            env = child_env(root, RL_NADO_KEY=bad)
            res = await trio.to_thread.run_sync(lambda: subprocess.run(
                [sys.executable, "-m", "killswitch", "run", "-c", str(cfg)], env=env, capture_output=True,
                text=True, timeout=20, cwd=REPO))
            out = res.stdout + res.stderr
            assert res.returncode == 2, out
            assert "{env: RL_NADO_KEY}" in out and "nado-main" in out, out
            assert "Traceback" not in out, out
            bare = bad[2:]
            assert bare not in out and bare[:16] not in out
            nursery.cancel_scope.cancel()
