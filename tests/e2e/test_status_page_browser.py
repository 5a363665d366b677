"""The HTML status page in a real headless browser: a real ``killswitch run`` guarding the OX.FUN
simulator serves ``/status`` on its metrics listener; Chromium renders it ARMED (green banner),
then TRIPPED (red banner) after a trip, checked on the screenshot's pixels and on the DOM.

Chromium comes from the distribution (Debian: ``apt-get install chromium``); without it the
browser test skips with that reason. The page's read-only contract (no scripts, a CSP that
loads nothing, GET only) is checked over plain HTTP.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import httpx
import pytest
import trio

from killswitch.control import ControlClient
from tests.e2e.helpers import DaemonProcess, child_env, short_tmpdir
from tests.e2e.test_metrics_contrib import free_port
from tests.reliability.harness import start_ox

TRIPPED_RED = (0xC0, 0x00, 0x00)  # .banner.tripped in killswitch/status_page.py
ARMED_GREEN = (0x12, 0x7A, 0x2E)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def banner_share(png_path, colour: tuple[int, int, int]) -> float:
    """Share of the top 50 pixel rows painted in ``colour`` (the banner is ~70 px tall)."""
    from PIL import Image

    with Image.open(png_path) as img:
        rgb = img.convert("RGB")
        width = rgb.width
        top = rgb.crop((0, 0, width, 50))
        data = top.tobytes()  # RGB triplets
        hits = sum(1 for i in range(0, len(data), 3)
                   if all(abs(data[i + k] - colour[k]) <= 8 for k in range(3)))
        return hits / (width * 50)


async def screenshot(browser: str, url: str, out, profile) -> str:
    """Render ``url`` headless; returns the DOM as the browser built it."""
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile}", "--window-size=1200,800"]
    await trio.run_process(args + [f"--screenshot={out}", url], capture_stdout=True, capture_stderr=True)
    dom = await trio.run_process(args + ["--dump-dom", url], capture_stdout=True, capture_stderr=True)
    return dom.stdout.decode()


@pytest.fixture
def browser() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium); status page browser test skipped")
    pytest.importorskip("PIL", reason="Pillow (test extra) not installed: cannot read the screenshot")
    return path


async def _with_daemon(body) -> None:
    with short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            port = free_port()
            config = root / "killswitch.yaml"
            config.write_text(textwrap.dedent(f"""\
                daemon:
                  state_dir: {root}/state
                  control_socket: {root}/control.sock
                  startup_timeout: 10s
                  log_format: json
                  metrics: {{enabled: true, host: 127.0.0.1, port: {port}}}
                venues:
                """) + ox.venue_yaml() + textwrap.dedent("""\
                rules:
                  - {name: max-open, kind: max_open_orders, max: 100}
                  - {name: operator, kind: manual}
                """))
            proc = DaemonProcess(config, child_env(root, **ox.env()), root / "daemon.log").start()
            base = f"http://127.0.0.1:{port}"
            try:
                async with httpx.AsyncClient(base_url=base, timeout=2.0) as http:
                    while True:
                        try:
                            if "killswitch_up 1.0" in (await http.get("/metrics")).text:
                                break
                        except httpx.TransportError:
                            pass
                        assert proc.proc.poll() is None, proc.log_text()[-4000:]
                        await trio.sleep(0.05)

                    async def trip() -> None:
                        req = {"op": "trip", "reason": "browser <test>", "operator": "pytest"}
                        reply = await trio.to_thread.run_sync(lambda: ControlClient(root / "control.sock").request(req))
                        assert reply["ok"], reply

                    await body(root, base, http, trip, ox)
            finally:
                proc.kill()
                nursery.cancel_scope.cancel()


async def test_status_page_is_read_only_html_without_scripts():
    async def body(root, base, http, trip, ox):
        resp = await http.get("/status")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in resp.headers["content-security-policy"]
        page = resp.text
        assert "<script" not in page.lower() and "http-equiv=\"refresh\"" in page
        assert ">ARMED<" in page and "max-open" in page and "ox-main" in page
        # Nothing but GET: a POST to the page or the metrics changes nothing.
        assert (await http.post("/status", content=b"op=reset")).status_code in (404, 405)
        assert (await http.post("/metrics")).status_code in (404, 405)
        await trip()
        page = (await http.get("/status")).text
        assert 'id="banner" class="banner tripped">TRIPPED' in page
        assert "browser &lt;test&gt;" in page and "<test>" not in page  # escaped
        assert "pytest" in page and "everything" in page

    with trio.fail_after(40):
        await _with_daemon(body)


async def test_status_page_in_headless_chromium_shows_the_tripped_banner(browser):
    async def body(root, base, http, trip, ox):
        armed_png, tripped_png = root / "armed.png", root / "tripped.png"
        dom = await screenshot(browser, f"{base}/status", armed_png, root / "profile")
        assert "ARMED" in dom
        assert banner_share(armed_png, ARMED_GREEN) > 0.5 and banner_share(armed_png, TRIPPED_RED) == 0
        await trip()
        dom = await screenshot(browser, f"{base}/status", tripped_png, root / "profile")
        assert "TRIPPED" in dom and "browser &lt;test&gt;" in dom
        assert banner_share(tripped_png, TRIPPED_RED) > 0.5, "no red TRIPPED banner in the screenshot"
        if os.environ.get("KS_KEEP_SCREENSHOT"):  # for a human look: KS_KEEP_SCREENSHOT=/tmp/status.png
            shutil.copy(tripped_png, os.environ["KS_KEEP_SCREENSHOT"])

    with trio.fail_after(90):
        await _with_daemon(body)
