"""Config reading is bounded: only regular files are read (a symlink to /dev/zero, a FIFO and
a directory are refused before any read), a file over the size cap is refused without being
read (``--max-config-bytes`` raises the cap), and every error names the file and the OS's own
reason. The same reader serves includes and SIGHUP reloads."""

from __future__ import annotations

import os
import subprocess
import sys

import trio

from killswitch.config import ConfigError, load_config
from tests.e2e.helpers import REPO, child_env

from .harness import daemon_yaml, running_daemon, start_ox, wait_for

CHECK_TIMEOUT_S = 20  # a hang or an OOM-sized read would blow far past this


def _check(path, *extra: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "killswitch", "check", "--no-secrets", str(path), *extra],
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, cwd=cwd,
                          env=child_env(REPO))


def _minimal_yaml(tmp_path) -> str:
    return (f"daemon:\n  state_dir: {tmp_path / 'state'}\n"
            "venues:\n  - {name: ox-a, kind: oxfun, api_key: {env: K}, api_secret: {env: S}, markets: [BTC-USD-SWAP-LIN]}\n"
            "rules:\n  - {name: m, kind: max_open_orders, max: 5}\n")


def test_check_on_symlink_to_dev_zero_is_refused_not_read(tmp_path):
    link = tmp_path / "killswitch.yaml"
    os.symlink("/dev/zero", link)
    res = _check(link)
    assert res.returncode == 1, res.stderr
    assert str(link) in res.stderr and "not a regular file" in res.stderr and "character device" in res.stderr


def test_check_on_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "killswitch.yaml"
    os.mkfifo(fifo)
    res = _check(fifo)
    assert res.returncode == 1, res.stderr
    assert str(fifo) in res.stderr and "not a regular file" in res.stderr and "FIFO" in res.stderr


def test_check_on_file_over_the_cap_is_refused_and_the_flag_raises_the_cap(tmp_path):
    big = tmp_path / "killswitch.yaml"
    body = _minimal_yaml(tmp_path)
    big.write_text(body + ("# padding padding padding padding padding padding padding\n" * 40_000))  # ~2.3 MB
    res = _check(big)
    assert res.returncode == 1, res.stderr
    assert str(big) in res.stderr and "over the limit of 1048576 bytes" in res.stderr
    assert "--max-config-bytes" in res.stderr and "alias" not in res.stderr
    ok = _check(big, "--max-config-bytes", str(4 << 20))
    assert ok.returncode == 0, ok.stderr


def test_missing_file_error_names_the_file_and_the_os_reason(tmp_path):
    missing = tmp_path / "nope.yaml"
    res = _check(missing)
    assert res.returncode == 1
    assert str(missing) in res.stderr and "No such file or directory" in res.stderr
    assert "FileNotFoundError" not in res.stderr


def test_too_many_nodes_without_aliases_does_not_blame_aliases(tmp_path, monkeypatch):
    monkeypatch.setattr("killswitch.schema.nodes.MAX_NODES", 2000)  # the real cap, 100k, is slow to reach
    p = tmp_path / "k.yaml"
    p.write_text(_minimal_yaml(tmp_path) + "extra: [" + ", ".join(["1"] * 3000) + "]\n")
    try:
        load_config(p)
    except ConfigError as exc:
        text = str(exc)
    else:
        raise AssertionError("3000 nodes accepted over a cap of 2000")
    assert "too large: more than 2000 YAML nodes" in text and "alias" not in text
    q = tmp_path / "a.yaml"
    bomb = "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n" for i in range(1, 6))
    q.write_text(_minimal_yaml(tmp_path) + bomb)
    try:
        load_config(q)
    except ConfigError as exc:
        assert "alias" in str(exc), str(exc)
    else:
        raise AssertionError("alias bomb accepted")


def test_include_of_a_fifo_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "rules.yaml")
    p = tmp_path / "killswitch.yaml"
    p.write_text(_minimal_yaml(tmp_path) + "include: [rules.yaml]\n")
    res = _check(p)
    assert res.returncode == 1, res.stderr
    assert "rules.yaml" in res.stderr and "not a regular file" in res.stderr and "FIFO" in res.stderr


async def test_sighup_reload_of_a_config_replaced_by_a_fifo_is_refused_and_old_config_kept(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, ox.venue_yaml()), ox.env()) as d:
                cfg = tmp_path / "killswitch.yaml"
                os.unlink(cfg)
                os.mkfifo(cfg)
                rules_before = [r.name for r in d.engine.rules]
                with trio.fail_after(5):  # the old reader blocked forever in open()/read() here
                    ok = await d.reload()
                assert not ok
                assert any("not a regular file" in e and str(cfg) in e for e in d.reload_errors), d.reload_errors
                assert [r.name for r in d.engine.rules] == rules_before
                await wait_for(lambda: d.engine is not None)
            nursery.cancel_scope.cancel()
