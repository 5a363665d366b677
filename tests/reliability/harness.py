"""Shared helpers for the reliability tests: the real Daemon in-process (with an injectable
clock) against OxfunSim / VertexSim (Nado flavour) on 127.0.0.1:0, audit-log checks, and
waits on conditions (never sleeps for luck).
"""

from __future__ import annotations

import textwrap
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson
import trio

from killswitch.clock import Clock
from killswitch.config import load_config_text
from killswitch.daemon import Daemon
from killswitch.model import TripCommand
from killswitch.venues.oxfun.sim import OxfunSim
from killswitch.venues.vertex.sim import VertexSim

OX_MARKETS = ("BTC-USD-SWAP-LIN", "ETH-USD-SWAP-LIN")
OX_VENUE = "ox-main"
NADO_VENUE = "nado-main"
NADO_PRODUCTS = (2, 4)
DEFAULT_RULES = "  - {name: max-open, kind: max_open_orders, max: 100000}\n"


def daemon_yaml(tmp_path: Path, venues_yaml: str, rules_yaml: str = DEFAULT_RULES, *,
                cancel_deadline: str = "3s", repoll: str = "300ms", startup_timeout: str = "10s") -> str:
    return (textwrap.dedent(f"""\
        daemon:
          state_dir: {tmp_path / 'state'}
          control_socket: {tmp_path / 'control.sock'}
          tick_interval: 50ms
          repoll_interval: {repoll}
          cancel_deadline: {cancel_deadline}
          startup_timeout: {startup_timeout}
          log_format: json
        venues:
        """) + venues_yaml + "rules:\n" + rules_yaml)


# ------------------------------------------------------------------------------ venues


@dataclass
class OxWorld:
    sim: OxfunSim
    key: str
    secret: str
    env_prefix: str = "RL_OX"

    def env(self) -> dict[str, str]:
        return {f"{self.env_prefix}_KEY": self.key, f"{self.env_prefix}_SECRET": self.secret}

    def venue_yaml(self, *, name: str = OX_VENUE, request_timeout: str = "1s", ping_interval: str = "1s",
                   pong_timeout: str = "1s", poll_interval: str = "1s") -> str:
        return textwrap.indent(textwrap.dedent(f"""\
            - name: {name}
              kind: oxfun
              api_key: {{env: {self.env_prefix}_KEY}}
              api_secret: {{env: {self.env_prefix}_SECRET}}
              ws_url: {self.sim.ws_url}
              rest_url: {self.sim.rest_url}
              markets: [{', '.join(OX_MARKETS)}]
              ping_interval: {ping_interval}
              pong_timeout: {pong_timeout}
              request_timeout: {request_timeout}
              poll_interval: {poll_interval}
              backoff: {{initial: 50ms, max: 300ms}}
            """), "  ")

    def open_orders(self) -> list[dict]:
        return self.sim.open_orders(self.key)

    async def place(self, n: int, market: str = OX_MARKETS[0], side: str = "BUY", price: str = "1") -> list[str]:
        return await self.sim.place_orders(self.key, market=market, side=side, price=price, qty="1", count=n)


async def start_ox(nursery: trio.Nursery, *, clock: Clock | None = None, **options: Any) -> OxWorld:
    sim = OxfunSim(clock=clock, **options)
    await nursery.start(sim.serve)
    key, secret = sim.add_account(balances={"OX": "1000"})
    return OxWorld(sim, key, secret)


@dataclass
class NadoWorld:
    sim: VertexSim
    account: dict
    env_name: str = "RL_NADO_KEY"

    @property
    def sender(self) -> str:
        return self.account["sender"]

    def env(self) -> dict[str, str]:
        return {self.env_name: self.account["private_key"]}

    def venue_yaml(self, *, name: str = NADO_VENUE, request_timeout: str = "1s", ping_interval: str = "500ms",
                   recv_window: str = "30s") -> str:
        s = self.sim
        return textwrap.indent(textwrap.dedent(f"""\
            - name: {name}
              kind: nado
              private_key: {{env: {self.env_name}}}
              gateway_ws_url: {s.gateway_ws_url}
              subscribe_ws_url: {s.subscribe_ws_url}
              gateway_rest_url: {s.gateway_rest_url}
              trigger_url: {s.trigger_url}
              chain_id: {s.chain_id}
              endpoint_address: "{s.endpoint_address}"
              products: [{', '.join(str(p) for p in NADO_PRODUCTS)}]
              equity_poll_interval: 250ms
              ping_interval: {ping_interval}
              request_timeout: {request_timeout}
              recv_window: {recv_window}
              backoff: {{initial: 50ms, max: 300ms}}
            """), "  ")

    def open_count(self) -> int:
        o = self.sim.open_orders(self.sender)
        return len(o["orders"]) + len(o["trigger_orders"])

    def place(self, n: int, product_id: int = NADO_PRODUCTS[0], *, trigger: bool = False, side: str = "buy") -> list[str]:
        price = "1000" if side == "buy" else "100000"
        return self.sim.place_orders(self.sender, product_id=product_id, price=price, qty="0.1", side=side,
                                     count=n, trigger=trigger, price_step="1")


async def start_nado(nursery: trio.Nursery, *, clock: Clock | None = None, **kwargs: Any) -> NadoWorld:
    sim = VertexSim(flavour="nado", clock=clock, **kwargs)
    await nursery.start(sim.serve)
    account = sim.create_subaccount()
    sim.set_balances(account["sender"], spot={0: "10000"})
    return NadoWorld(sim, account)


# ------------------------------------------------------------------------------ daemon


@asynccontextmanager
async def running_daemon(tmp_path: Path, text: str, environ: dict[str, str], *, clock: Clock | None = None):
    """The real Daemon in-process (no signal handlers); stopped on exit."""
    cfg_path = tmp_path / "killswitch.yaml"
    cfg_path.write_text(text)
    config = load_config_text(text, str(cfg_path))
    daemon = Daemon(config, environ=environ, handle_signals=False, clock=clock)
    async with trio.open_nursery() as nursery:
        exit_code: list[int] = []

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            exit_code.append(await daemon.run(task_status=task_status))

        await nursery.start(run)
        daemon.exit_code = exit_code  # type: ignore[attr-defined]
        try:
            yield daemon
        finally:
            daemon.request_stop()


async def wait_for(predicate: Callable[[], Any], *, step_s: float = 0.01) -> Any:
    while True:
        value = predicate()
        if value:
            return value
        await trio.sleep(step_s)


async def trip(daemon: Daemon, reason: str = "reliability test") -> None:
    await daemon.send.send(TripCommand(reason=reason, source="test", operator="tester"))


def venue_flat(daemon: Daemon, venue: str) -> bool:
    p = daemon.engine.progress.get(venue)
    return p is not None and p.flat


# ------------------------------------------------------------------------------ audit


def read_audit_strict(path: Path) -> list[dict]:
    """Every non-empty line must be one JSON object with ``event`` and an increasing ``seq``."""
    recs = []
    raw = Path(path).read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "audit log ends with a partial line"
    for i, line in enumerate(raw.splitlines()):
        assert line.strip(), f"empty audit line {i + 1}"
        rec = orjson.loads(line)  # raises on a corrupt line
        assert isinstance(rec, dict) and isinstance(rec.get("event"), str), line[:200]
        recs.append(rec)
    return recs


async def audit_records(daemon: Daemon) -> list[dict]:
    await daemon.audit.flush()
    return read_audit_strict(daemon.config.daemon.audit_log)


def assert_trip_audit_complete(recs: list[dict], venue: str, *, need_cancel: bool = True) -> None:
    """trip, cancel_sent, cancel_result and flat records for ``venue``, in a sound order.

    By design the ``trip`` record is written *after* the first cancel is on the wire (the
    trip path puts nothing slow before the first cancel), so the order checked is:
    first cancel_sent < first cancel_result, trip < flat, and the last flat comes after the
    last cancel_result of a trip round.
    """
    events = [r["event"] for r in recs]
    seqs = [r.get("seq") for r in recs if "seq" in r]
    assert "trip" in events, events
    sent = [i for i, r in enumerate(recs) if r["event"] == "cancel_sent" and r.get("venue") == venue]
    results = [i for i, r in enumerate(recs) if r["event"] == "cancel_result" and r.get("venue") == venue]
    flats = [i for i, r in enumerate(recs) if r["event"] == "flat" and r.get("venue") == venue]
    if need_cancel:
        assert sent, f"no cancel_sent for {venue}: {events}"
        assert results, f"no cancel_result for {venue}: {events}"
        assert sent[0] < results[0]
    assert flats, f"no flat for {venue}: {events}"
    assert events.index("trip") < flats[-1]
    if results:
        assert results[0] < flats[-1]
    # per-process seq numbers are increasing within one daemon run
    runs: list[list[int]] = [[]]
    for r in recs:
        if r["event"] == "daemon_start":
            runs.append([])
        if "seq" in r:
            runs[-1].append(r["seq"])
    for run in runs:
        assert run == sorted(run), "audit seq not increasing"
    del seqs


def alarm_records(recs: list[dict]) -> list[dict]:
    return [r for r in recs if r["event"] == "alarm"]


# ------------------------------------------------------------------------------ subprocess


def audit_lines_lenient(path: Path) -> list[dict]:
    """For a live (or killed) daemon: complete lines only; a torn last line is reported."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.split(b"\n")[:-1]:  # the part after the last newline may be in flight
        if line.strip():
            out.append(orjson.loads(line))
    return out


async def kill9_midtrip_then_restart(tmp_path: Path, *, venue_yaml: str, env: dict[str, str], venue: str,
                                     open_count: Callable[[], int], hold_cancels: Callable[[], Any],
                                     release_cancels: Callable[[], Any], cancel_seen: Callable[[], bool],
                                     place_more: Callable[[], Any]) -> list[dict]:
    """``killswitch run`` as a child; SIGUSR1 trip; SIGKILL the moment the first cancel reaches
    the venue (cancels held so nothing is done); a runaway strategy places more orders while it
    is down; restart: TRIPPED, re-poll, sweep -> the venue's own book is empty."""
    import signal

    from tests.e2e.helpers import DaemonProcess, child_env

    cfg = tmp_path / "killswitch.yaml"
    cfg.write_text(daemon_yaml(tmp_path, venue_yaml))
    audit_path = tmp_path / "state" / "audit.jsonl"
    environ = child_env(tmp_path, **env)
    n0 = open_count()
    proc = DaemonProcess(cfg, environ, tmp_path / "daemon.log").start()
    try:
        await wait_for(lambda: any(r["event"] == "ready" for r in audit_lines_lenient(audit_path)), step_s=0.02)
        hold_cancels()
        proc.signal(signal.SIGUSR1)
        await wait_for(cancel_seen, step_s=0.002)
        proc.signal(signal.SIGKILL)
        assert await proc.wait_exit(5) == -signal.SIGKILL
    finally:
        proc.kill()
    assert open_count() == n0  # the kill landed mid-trip: nothing cancelled yet
    from killswitch.engine.latch import LatchStore

    assert LatchStore(tmp_path / "state").load().tripped  # what the next start will see
    release_cancels()
    await place_more()
    assert open_count() > n0
    proc = DaemonProcess(cfg, environ, tmp_path / "daemon.log").start()
    try:
        await wait_for(lambda: open_count() == 0 and any(
            r["event"] == "flat" and r.get("venue") == venue for r in audit_lines_lenient(audit_path)
            if r.get("seq") is not None), step_s=0.02)
        recs = audit_lines_lenient(audit_path)
    finally:
        proc.kill()
    return recs


def check_restart_audit(recs: list[dict], venue: str) -> None:
    """The audit of a SIGKILL mid-trip and a restart: the second run starts TRIPPED and goes
    flat from a fresh sweep."""
    starts = [i for i, r in enumerate(recs) if r["event"] == "daemon_start"]
    assert len(starts) == 2
    first, second = recs[:starts[1]], recs[starts[1]:]
    assert second[0]["latch"] == "tripped"
    ev2 = [r["event"] for r in second]
    assert "startup_tripped" in ev2 and "flat" in ev2
    assert ev2.index("startup_tripped") < ev2.index("flat")
    # Records still in the audit flusher's batch at SIGKILL are lost (the latch file, written
    # to the page cache before the first cancel, is what survives); the restart's
    # startup_tripped record names the trip that was in flight.
    assert all(r["event"] != "flat" for r in first)
    st = next(r for r in second if r["event"] == "startup_tripped")
    # (full trip record, or, if killed before latch.json was written, the pre-opened trip intent)
    assert st["trips"] == [1] or "trip 1" in st.get("reason", ""), st
    assert any(r["event"] == "cancel_sent" and r.get("venue") == venue for r in second)
