"""`killswitch sim VENUE` as a subprocess: URLs printed, admin API answering, clean stop."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import httpx
import pytest

START_TIMEOUT_S = 30
URL_LINE = re.compile(r"^\s+(\w+_url): (\S+)$")


def _read_banner(proc: subprocess.Popen) -> tuple[dict[str, str], str]:
    """Read stdout up to the end of the YAML snippet (bounded by a watchdog that kills the child)."""
    timer = threading.Timer(START_TIMEOUT_S, proc.kill)
    timer.start()
    urls: dict[str, str] = {}
    text = []
    section = ""
    try:
        for line in proc.stdout:
            text.append(line)
            if not line.startswith(" "):
                section = line.strip()  # "urls:", "test account ...:", "YAML venue snippet ...:"
            elif section == "urls:" and (m := URL_LINE.match(line.rstrip("\n"))):
                urls[m.group(1)] = m.group(2)
            if "verify_contracts" in line or "markets:" in line or "dms_after:" in line:  # the snippet's last line
                break
    finally:
        timer.cancel()
    return urls, "".join(text)


@pytest.mark.parametrize("venue", ["oxfun", "nado", "vertex", "hyperliquid"])
def test_sim_serves_admin_state(venue):
    proc = subprocess.Popen([sys.executable, "-m", "killswitch", "sim", venue, "--host", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls, banner = _read_banner(proc)
        assert "admin_url" in urls, banner
        for url in urls.values():
            assert "127.0.0.1" in url
        if venue == "oxfun":
            assert {"ws_url", "rest_url"} <= set(urls) and "api_secret:" in banner
        elif venue == "hyperliquid":
            assert {"ws_url", "rest_url"} <= set(urls) and "killswitch_agent_private_key:" in banner
            assert "kind: hyperliquid" in banner and "network: testnet" in banner
        else:
            assert {"gateway_ws_url", "subscribe_ws_url", "gateway_rest_url", "trigger_url"} <= set(urls)
            assert "subaccount_sender:" in banner and f"kind: {venue}" in banner
        resp = httpx.get(urls["admin_url"] + "/state", timeout=5)
        assert resp.status_code == 200
        state = resp.json()
        accounts = state.get("accounts") or state.get("subaccounts")
        assert len(accounts) == 1  # the freshly created test account
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_sim_refuses_non_loopback_host():
    proc = subprocess.run([sys.executable, "-m", "killswitch", "sim", "oxfun", "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "refusing to listen" in proc.stderr
