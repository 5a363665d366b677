"""Scale: many accounts across both venues, one daemon process.

``--ox`` OX.FUN API keys + ``--nado`` Nado subaccounts (two sims in this process), each
account with ``--orders`` resting orders (Nado caps 500 per product, so its orders are
spread over perps 2 and 4). One Daemon with one venue entry per account. Measures:

* RSS of the whole process (sims + daemon) after startup reconciliation, VmRSS from
  /proc/self/status; the daemon's share is estimated as RSS after - RSS with the sims
  loaded but before the daemon started.
* a global TripCommand: trip -> every cancel request on the wire (the executor's
  ``cancel_sent`` audit records, stamped in-process when each is written), rate-limit
  rejections counted by the sims, and trip -> the sims' own books show zero open orders.

    .venv/bin/python bench/scale.py [--ox 50] [--nado 50] [--orders 1000]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import trio

from _harness import DAEMON_YAML, OX_MARKET, nado_venue_yaml, ox_venue_yaml
from _stats import reproduce_line, verdict
from killswitch.config import load_config_text
from killswitch.daemon import Daemon
from killswitch.logs import configure_logging
from killswitch.model import TripCommand
from killswitch.venues.oxfun.sim import OxfunSim
from killswitch.venues.vertex.sim import VertexSim

RULES = """
  - name: operator
    kind: manual
"""


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def main_async(n_ox: int, n_nado: int, n_orders: int, out: dict) -> None:
    state = Path(tempfile.mkdtemp(prefix="ks-scale-", dir=os.environ.get("KS_BENCH_STATE_PARENT")))
    log_file = open(state / "daemon.log", "a", encoding="utf-8")
    configure_logging("json", stream=log_file)
    out["rss_start"] = rss_mb()
    async with trio.open_nursery() as nursery:
        ox = OxfunSim()
        await nursery.start(ox.serve, "127.0.0.1")
        nado = VertexSim(flavour="nado")
        await nursery.start(nado.serve, "127.0.0.1")
        env: dict[str, str] = {}
        venues = []
        ox_keys, senders = [], []
        t = time.perf_counter()
        for i in range(n_ox):
            key, secret = ox.add_account()
            env[f"OX{i}_KEY"], env[f"OX{i}_SECRET"] = key, secret
            venues.append(ox_venue_yaml(f"ox-{i}", ox, f"OX{i}"))
            ox_keys.append(key)
            for j in range(n_orders):  # no daemon connected yet: no pushes
                await ox.place_orders(key, market=OX_MARKET, side="BUY", price=str(20000 + j % 5000), qty="0.01")
        per_product = (n_orders + 1) // 2
        for i in range(n_nado):
            sub = nado.create_subaccount()
            nado.set_balances(sub["sender"], spot={0: "100000000"})
            env[f"NADO{i}_KEY"] = sub["private_key"]
            venues.append(nado_venue_yaml(f"nado-{i}", nado, f"NADO{i}", products="[2, 4]"))
            senders.append(sub["sender"])
            for k, pid in enumerate((2, 4)):
                cnt = min(per_product, n_orders - k * per_product)
                if cnt > 0:
                    nado.place_orders(sub["sender"], product_id=pid, price="10", qty="0.1", count=cnt, price_step="0.01")
        out["setup_s"] = time.perf_counter() - t

        def sim_open() -> int:
            n = sum(len(ox.accounts[k].orders) for k in ox_keys)
            for s in senders:
                sub = nado.core.subaccount(s)
                n += len(sub.orders) + len(sub.trigger_orders)
            return n

        out["orders_total"] = sim_open()
        gc.collect()
        out["rss_sims"] = rss_mb()

        text = DAEMON_YAML.format(state=state, tick="100ms", venues="".join(venues), rules=RULES)
        config = load_config_text(text, str(state / "scale.yaml"))
        daemon = Daemon(config, handle_signals=False, environ=env)
        t = time.perf_counter()
        await nursery.start(daemon.run)
        engine = daemon.engine
        with trio.fail_after(180):
            while not (all(v["connected"] for v in daemon.status()["venues"].values())
                       and engine.state.open_count() >= out["orders_total"]):
                await trio.sleep(0.05)
        out["startup_s"] = time.perf_counter() - t
        out["engine_open"] = engine.state.open_count()
        await trio.sleep(1.0)
        gc.collect()
        out["rss_daemon"] = rss_mb()

        sent: list[tuple[float, str, int]] = []
        orig_record = daemon.audit.record

        def record(kind: str, **kw):
            if kind == "cancel_sent":
                sent.append((trio.current_time(), kw.get("venue", ""), kw.get("n_orders") or 0))
            return orig_record(kind, **kw)

        daemon.audit.record = record
        ox_counters0 = dict(ox.counters)
        t0 = trio.current_time()
        await daemon.send.send(TripCommand(reason="scale bench", source="bench"))
        t_flat = None
        with trio.move_on_after(30):
            while True:
                await trio.sleep(0.002)
                if t_flat is None and sim_open() == 0:
                    t_flat = trio.current_time() - t0
                if t_flat is not None and engine.all_flat():
                    break
        out["t_engine_flat"] = trio.current_time() - t0 if engine.all_flat() else None
        out["t_sim_flat"] = t_flat
        first_per_venue: dict[str, float] = {}
        for ts, v, _n in sent:
            first_per_venue.setdefault(v, ts - t0)
        out["venues_with_cancel"] = len(first_per_venue)
        out["t_all_venues_first_cancel"] = max(first_per_venue.values()) if first_per_venue else None
        trip_sent = [s for s in sent if s[0] - t0 <= (t_flat or 30)]
        out["t_last_cancel_before_flat"] = max(s[0] for s in trip_sent) - t0 if trip_sent else None
        out["cancel_requests"] = len(sent)
        out["ox_counters_delta"] = {k: v - ox_counters0.get(k, 0) for k, v in ox.counters.items()
                                    if v - ox_counters0.get(k, 0)}
        out["ox_rate_limited"] = sum(vars(ox.accounts[k].counters).get("rate_limited", 0) for k in ox_keys)
        out["nado_state"] = {k: v for k, v in nado.state().items() if k in ("executes_received",)}
        out["audit_rate_errors"] = sum(1 for line in open(daemon.config.daemon.audit_log)
                                       if "rate" in line and "cancel_completed" in line and "limit" in line)
        out["verbs"] = sorted({line.split('"verb":"')[1].split('"')[0] for line in open(daemon.config.daemon.audit_log)
                               if '"cancel_sent"' in line and '"verb":"' in line})
        daemon.request_stop()
        nursery.cancel_scope.cancel()
    log_file.close()
    out["state_dir"] = str(state)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ox", type=int, default=50)
    ap.add_argument("--nado", type=int, default=50)
    ap.add_argument("--orders", type=int, default=1000)
    args = ap.parse_args()
    out: dict = {}
    trio.run(main_async, args.ox, args.nado, args.orders, out)
    for k, v in out.items():
        print(f"  {k}: {v}")
    rss_ok = out["rss_daemon"] <= 300
    wire_ok = out["t_all_venues_first_cancel"] is not None and out["t_last_cancel_before_flat"] is not None \
        and out["t_last_cancel_before_flat"] <= 0.5 and out["venues_with_cancel"] == args.ox + args.nado
    flat_ok = out["t_sim_flat"] is not None and out["t_sim_flat"] <= 2.0
    print(f"== {args.ox} OX.FUN + {args.nado} Nado accounts x {args.orders} orders = {out['orders_total']} open; "
          f"RSS {out['rss_daemon']:.0f} MB (sims alone {out['rss_sims']:.0f} MB) <= 300 MB -> {verdict(rss_ok)}; "
          f"trip -> last cancel on the wire {out['t_last_cancel_before_flat']} s <= 0.5 s -> {verdict(wire_ok)}; "
          f"trip -> sims flat {out['t_sim_flat']} s <= 2 s -> {verdict(flat_ok)}")
    print(reproduce_line())
    return 0 if rss_ok and wire_ok and flat_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
