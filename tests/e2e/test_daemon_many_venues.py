"""Daemon with many venues: start-up concurrency gate; per-daemon shared venue state (OX.FUN
REST budget per host, one TLS context)."""

from __future__ import annotations

import ssl

import trio

import killswitch.daemon as daemon_mod
from killswitch.clock import Clock
from killswitch.model import OpenOrdersSnapshot, VenueConnected
from killswitch.secrets import Secret, SecretRef
from killswitch.venues.base import OxfunConfig, VertexConfig
from killswitch.venues.registry import make_session
from killswitch.net.tls import shared_ssl_context
from tests.component.fakes import OX_LIKE
from tests.e2e.helpers import base_yaml, inprocess_daemon, short_tmpdir


def venues_yaml(names) -> str:
    out = "venues:\n"
    for n in names:
        out += (f"  - name: {n}\n    kind: oxfun\n    api_key: {{env: KS_TEST_OX_KEY}}\n"
                f"    api_secret: {{env: KS_TEST_OX_SECRET}}\n    markets: [BTC-USD-SWAP-LIN]\n")
    return out


class Starting:
    """Counts how many sessions are between "run() entered" and "started()" at once."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0


class SlowStartSession:
    def __init__(self, name: str, gauge: Starting, *, startup_s: float = 0.05, hang: bool = False) -> None:
        self.name = name
        self.capabilities = OX_LIKE
        self.gauge = gauge
        self.startup_s = startup_s
        self.hang = hang

    async def run(self, send, *, task_status=trio.TASK_STATUS_IGNORED):
        self.gauge.active += 1
        self.gauge.max_active = max(self.gauge.max_active, self.gauge.active)
        try:
            if self.hang:
                await trio.sleep_forever()  # a venue that never answers (the session keeps retrying)
            await trio.sleep(self.startup_s)
            await send.send(OpenOrdersSnapshot(self.name, (), None, "reconcile"))
            await send.send(VenueConnected(self.name))
        finally:
            self.gauge.active -= 1
        task_status.started()
        await trio.sleep_forever()

    async def fetch_open_orders(self):
        return ()

    def budget_available(self, now_s):
        return None


async def test_startup_connects_at_most_n_venues_at_once(monkeypatch):
    monkeypatch.setattr(daemon_mod, "STARTUP_CONCURRENCY", 3)
    gauge = Starting()
    names = [f"g{i}" for i in range(10)]
    with trio.fail_after(20), short_tmpdir() as root:
        sessions = [SlowStartSession(n, gauge) for n in names]
        async with inprocess_daemon(root, sessions, [], yaml_text=base_yaml(root, venues_yaml(names))) as d:
            await d.ready.wait()
            assert not d.degraded
            assert all(rt.up.is_set() for rt in d.venues.values())
    assert gauge.max_active == 3


async def test_a_venue_that_never_comes_up_frees_its_startup_slot(monkeypatch):
    monkeypatch.setattr(daemon_mod, "STARTUP_CONCURRENCY", 1)
    monkeypatch.setattr(daemon_mod, "STARTUP_SLOT_S", 0.2)
    gauge = Starting()
    names = ["dead", "g1", "g2"]
    with trio.fail_after(20), short_tmpdir() as root:
        sessions = [SlowStartSession("dead", gauge, hang=True)] + [SlowStartSession(n, gauge) for n in names[1:]]
        async with inprocess_daemon(root, sessions, [], yaml_text=base_yaml(root, venues_yaml(names))) as d:
            while not (d.venues["g1"].up.is_set() and d.venues["g2"].up.is_set()):
                await trio.sleep(0.01)
            assert not d.venues["dead"].up.is_set()


def _ox(name: str, rest_url: str) -> OxfunConfig:
    return OxfunConfig(name=name, api_key=SecretRef("env", "K"), api_secret=SecretRef("env", "S"), rest_url=rest_url)


CREDS = {"api_key": Secret("key-value-1"), "api_secret": Secret("secret-value-1")}


def test_oxfun_sessions_on_one_rest_host_share_one_budget():
    shared: dict = {}
    clock = Clock()
    a = make_session(_ox("a", "https://api.ox.fun"), CREDS, clock, shared)
    b = make_session(_ox("b", "https://API.ox.fun/"), CREDS, clock, shared)
    c = make_session(_ox("c", "http://127.0.0.1:9999"), CREDS, clock, shared)
    lone = make_session(_ox("d", "https://api.ox.fun"), CREDS, clock)
    assert a._rest_budget is b._rest_budget and a._rest_pace_lock is b._rest_pace_lock
    assert c._rest_budget is not a._rest_budget and lone._rest_budget is not a._rest_budget
    now = 1000.0
    before = b.budget_available(now)
    for _ in range(30):
        a._rest_budget.charge(1, now)  # requests of account a count against b as well (one IP)
    assert b.budget_available(now) == before - 30
    assert c.budget_available(now) == lone.budget_available(now) == before


def test_venue_http_clients_share_one_verifying_tls_context():
    ctx = shared_ssl_context()
    assert ctx is shared_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ox = make_session(_ox("a", "https://api.ox.fun"), CREDS, Clock(), {})
    # httpx keeps the context on its connection pool (checked, not a public API: if httpx
    # moves it, this line needs updating, not the daemon).
    assert ox._client()._transport._pool._ssl_context is ctx
    nado = make_session(VertexConfig(name="n", private_key=SecretRef("env", "P")),
                        {"private_key": Secret("0x" + "11" * 32)}, Clock(), {})
    assert nado is not None


class _BatchCounter(trio.abc.Instrument):
    """Counts scheduler batches (the run loop polls for I/O between two batches)."""

    def __init__(self) -> None:
        self.batch = 0

    def before_io_wait(self, timeout) -> None:
        self.batch += 1


async def test_sessions_sharing_a_rest_budget_do_not_queue_when_it_is_free():
    """Thirty accounts' REST cancels all leave in the same scheduler batch: the shared pace lock
    is only taken when the budget is short (taking it, even free, costs a round while held)."""
    shared: dict = {}
    sessions = [make_session(_ox(f"a{i}", "https://api.ox.fun"), CREDS, Clock(), shared) for i in range(30)]
    counter = _BatchCounter()
    sent_in_batch: list[int] = []

    class FakeClient:
        def build_request(self, verb, url, content=None):
            import httpx
            return httpx.Request(verb, "https://api.ox.fun" + url, content=content)

        async def send(self, request):
            sent_in_batch.append(counter.batch)
            raise __import__("httpx").ConnectError("not really sending")

    for s in sessions:
        s._http = FakeClient()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                for s in sessions:
                    n.start_soon(s._rest, "DELETE", "/v3/orders/cancel-all")
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert len(sent_in_batch) == 30
    assert max(sent_in_batch) - min(sent_in_batch) <= 1
    # And the budget is shared: 30 charged against every session on the host.
    assert sessions[0]._rest_budget.used(1.5, trio.current_time()) == 30
