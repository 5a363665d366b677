"""Unsafe-input hygiene: no unsafe deserialisation / code execution in the package (AST walk),
and hostile ids echoed by a venue never reach the book or a cancel request unvalidated."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import trio

import killswitch

from .harness import (
    NADO_PRODUCTS,
    NADO_VENUE,
    OX_MARKETS,
    OX_VENUE,
    daemon_yaml,
    running_daemon,
    start_nado,
    start_ox,
    trip,
    venue_flat,
    wait_for,
)

PKG = Path(killswitch.__file__).resolve().parent

BANNED_CALLS = {"eval", "exec", "compile", "__import__"}
BANNED_ATTRS = {
    ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all"),
    ("yaml", "unsafe_load_all"), ("yaml", "UnsafeLoader"), ("yaml", "FullLoader"), ("yaml", "Loader"),
    ("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"), ("marshal", "load"),
    ("os", "system"), ("os", "popen"), ("shelve", "open"),
}
BANNED_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill"}


def _violations(path: Path, root: Path = PKG.parent) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for n in names:
                if n.split(".")[0] in BANNED_MODULES:
                    out.append(f"{where}: import {n}")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in BANNED_CALLS:
                out.append(f"{where}: {f.id}()")
            for kw in node.keywords:
                if kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
                    out.append(f"{where}: shell=True")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in BANNED_ATTRS:
                out.append(f"{where}: {node.value.id}.{node.attr}")
    return out


def test_no_unsafe_yaml_eval_exec_pickle_in_the_package():
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 30
    bad = [v for f in files for v in _violations(f)]
    assert not bad, "\n".join(bad)


def test_the_scanner_catches_what_it_should(tmp_path):
    src = "import yaml, pickle\nyaml.load('a')\neval('1')\nimport subprocess\nsubprocess.run('x', shell=True)\n"
    p = tmp_path / "p.py"
    p.write_text(src)
    tree_hits = _violations(p, tmp_path)
    assert len(tree_hits) == 4, tree_hits


HOSTILE_IDS = ["9" * 5000, "12ab", "1; DROP TABLE orders", "../../etc/passwd", "-1", "1e9", "", " 1", "１２３",
               "<script>alert(1)</script>", "0x" + "f" * 200]


async def test_hostile_order_ids_from_oxfun(tmp_path):
    """OrderOpened pushes with hostile orderIds while TRIPPED: the daemon keeps running, every
    cancel that leaves it carries only ids the venue accepts, and it ends flat by the sim's book."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            await w.place(5)
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, w.venue_yaml()), w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == 5)
                await trip(d)
                await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE))
                acct = w.sim.accounts[w.key]
                conns = [c for c in w.sim._conns.values() if c.account is acct]
                for hid in HOSTILE_IDS:
                    frame = {"table": "order", "data": [{
                        "notice": "OrderOpened", "accountId": acct.account_id, "orderId": hid, "clientOrderId": hid,
                        "marketCode": OX_MARKETS[0], "side": "BUY", "orderType": "LIMIT", "price": "1",
                        "quantity": "1", "remainQuantity": "1", "status": "OPEN", "timeInForce": "GTC",
                        "timestamp": "1", "isTriggered": True, "source": 0}]}
                    for c in conns:
                        await w.sim._send(c, orjson.dumps(frame).decode())
                await w.place(2)  # a real order after the hostile ones: swept
                with trio.fail_after(8):
                    await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE)
                                   and d.engine.state.open_count(OX_VENUE) == 0)
                assert d.engine.latch.tripped
            nursery.cancel_scope.cancel()
    # no cancel frame the sim received was refused as malformed (20019 orderId invalid / 20034)
    assert d.engine.counters.bad_frames == len(HOSTILE_IDS)  # every hostile id refused at the parser
    assert acct.counters.rejects_sent == 0  # no malformed cancel ever reached the venue
    assert w.sim.state()["counters"]["connections_opened"] >= 1


async def test_hostile_digests_from_nado(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w = await start_nado(nursery)
            w.place(5, NADO_PRODUCTS[0])
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, w.venue_yaml()), w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(NADO_VENUE) == 5)
                await trip(d)
                await wait_for(lambda: w.open_count() == 0 and venue_flat(d, NADO_VENUE))
                conns = [c for c in w.sim._sub_conns if c.wallet]
                bad_before = d.engine.counters.bad_frames
                for hid in HOSTILE_IDS:
                    for pid in (NADO_PRODUCTS[0], "2; DROP", -1, 2**63 - 1):
                        ev = {"type": "order_update", "timestamp": "1", "product_id": pid, "digest": hid,
                              "amount": "1000000000000000000", "reason": "placed"}
                        for c in conns:
                            c.send.send_nowait((orjson.dumps(ev), "hostile"))
                w.place(2, NADO_PRODUCTS[1])
                with trio.fail_after(8):
                    await wait_for(lambda: d.engine.counters.bad_frames > bad_before)
                    await wait_for(lambda: w.open_count() == 0 and venue_flat(d, NADO_VENUE)
                                   and d.engine.state.open_count(NADO_VENUE) == 0)
                # no hostile digest made it into the book
                for o in d.engine.state.open_orders(NADO_VENUE):
                    assert o.venue_order_id.startswith("0x") and len(o.venue_order_id) == 66
            nursery.cancel_scope.cancel()
