"""Secrets never leak: a full trip through a real ``killswitch run`` subprocess (real stdout
and stderr) against both simulators, with known secrets, then a grep of everything it wrote.
Also: secret files with group/other permissions are refused (check + startup), and the
control socket is 0600."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import trio

from killswitch.config import load_config_text
from killswitch.daemon import EXIT_CONFIG, Daemon
from tests.e2e.helpers import REPO, child_env, short_tmpdir

from .harness import (
    NADO_PRODUCTS,
    NADO_VENUE,
    OX_MARKETS,
    OX_VENUE,
    audit_lines_lenient,
    daemon_yaml,
    start_nado,
    start_ox,
    wait_for,
)

OX_SECRET = "s3cr3t-OXFUN-api-secret-7f1d2c9ab0e4"


def _forms_of_key(pk: str) -> list[str]:
    bare = pk[2:] if pk.startswith("0x") else pk
    return [pk, bare, bare.upper(), bare[:32], bare[32:], "0x" + bare.upper()]


async def test_no_secret_in_stdout_stderr_audit_or_status():
    with short_tmpdir() as root, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            ox.sim.accounts[ox.key].api_secret = OX_SECRET  # a known, greppable secret
            ox.secret = OX_SECRET
            nado = await start_nado(nursery)
            pk = nado.account["private_key"]
            await ox.place(10, OX_MARKETS[0])
            nado.place(10, NADO_PRODUCTS[0])
            nado.place(2, NADO_PRODUCTS[0], trigger=True)
            # OX.FUN secret from a 0600 file; Nado key from the environment
            secret_file = root / "ox.secret"
            secret_file.write_text(OX_SECRET + "\n")
            os.chmod(secret_file, 0o600)
            venues = ox.venue_yaml().replace("{env: RL_OX_SECRET}", f"{{file: {secret_file}}}") + nado.venue_yaml()
            cfg = root / "killswitch.yaml"
            cfg.write_text(daemon_yaml(root, venues))
            env = child_env(root, RL_OX_KEY=ox.key, **nado.env())
            out, err = open(root / "stdout", "wb"), open(root / "stderr", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "killswitch", "run", "-c", str(cfg)], env=env,
                                    stdout=out, stderr=err, cwd=REPO)
            audit = root / "state" / "audit.jsonl"
            status_text = ""
            try:
                await wait_for(lambda: any(r["event"] == "ready" for r in audit_lines_lenient(audit)), step_s=0.02)
                sock = root / "control.sock"
                await wait_for(sock.exists, step_s=0.02)
                mode = stat.S_IMODE(sock.stat().st_mode)
                assert mode == 0o600, oct(mode)  # no control_group configured: owner only
                proc.send_signal(signal.SIGUSR1)
                await wait_for(lambda: not ox.open_orders() and nado.open_count() == 0, step_s=0.02)
                await wait_for(lambda: {r.get("venue") for r in audit_lines_lenient(audit) if r["event"] == "flat"}
                               >= {OX_VENUE, NADO_VENUE}, step_s=0.02)
                if True:
                    res = await trio.run_process([sys.executable, "-m", "killswitch", "status", "--socket", str(sock),
                                                  "--json"], capture_stdout=True, capture_stderr=True, check=False,
                                                 cwd=REPO, env=child_env(root))
                    if res.returncode != 0:  # older CLI without --json
                        res = await trio.run_process([sys.executable, "-m", "killswitch", "status", "--socket",
                                                      str(sock)], capture_stdout=True, capture_stderr=True,
                                                     check=False, cwd=REPO, env=child_env(root))
                    status_text = res.stdout.decode() + res.stderr.decode()
                    assert "tripped" in status_text.lower()
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    while proc.poll() is None:
                        await trio.sleep(0.02)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
                out.close()
                err.close()
            nursery.cancel_scope.cancel()
        texts = {
            "stdout": (root / "stdout").read_text(errors="replace"),
            "stderr": (root / "stderr").read_text(errors="replace"),
            "audit": audit.read_text(errors="replace"),
            "status": status_text,
            "latch": (root / "state" / "latch.json").read_text(errors="replace"),
        }
        assert "TRIP" in texts["stdout"] + texts["stderr"]
        forms = [OX_SECRET] + _forms_of_key(pk)
        for where, text in texts.items():
            for form in forms:
                assert form not in text, f"secret form {form[:6]}... leaked into {where}"
                assert form.lower() not in text.lower(), f"secret form {form[:6]}... leaked into {where}"


def _secret_file_config(root, mode: int) -> tuple[str, object]:
    f = root / "ox.secret"
    f.write_text("whatever-secret\n")
    os.chmod(f, mode)
    text = daemon_yaml(root, f"""\
  - name: ox-main
    kind: oxfun
    api_key: {{env: RL_OX_KEY}}
    api_secret: {{file: {f}}}
    ws_url: ws://127.0.0.1:9/v2/websocket
    rest_url: http://127.0.0.1:9
""")
    return text, f


async def test_group_or_world_readable_secret_file_is_refused_by_check_and_startup():
    with short_tmpdir() as root:
        for mode in (0o640, 0o604, 0o660, 0o644):
            text, f = _secret_file_config(root, mode)
            cfg = root / "killswitch.yaml"
            cfg.write_text(text)
            res = subprocess.run([sys.executable, "-m", "killswitch", "check", str(cfg)], env=child_env(
                root, RL_OX_KEY="k"), capture_output=True, text=True, cwd=REPO, timeout=30)
            assert res.returncode != 0, (oct(mode), res.stdout, res.stderr)
            assert "group/others" in res.stdout + res.stderr
            assert "whatever-secret" not in res.stdout + res.stderr
            with trio.fail_after(10):
                code = await Daemon(load_config_text(text, str(cfg)), environ={"RL_OX_KEY": "k"},
                                    handle_signals=False).run()
            assert code == EXIT_CONFIG, oct(mode)
        # and the same file at 0600 passes the permission check
        text, f = _secret_file_config(root, 0o600)
        cfg.write_text(text)
        res = subprocess.run([sys.executable, "-m", "killswitch", "check", str(cfg)],
                             env=child_env(root, RL_OX_KEY="k"), capture_output=True, text=True, cwd=REPO, timeout=30)
        assert "group/others" not in res.stdout + res.stderr
