"""The fleet's pure core: message codec (strict), bus-loss policy, ack board, backoff, config."""

from __future__ import annotations

import textwrap

import orjson
import pytest

from killswitch.config import load_config_text
from killswitch.fleet.acks import AckBoard
from killswitch.fleet.messages import (
    MAX_MESSAGE_BYTES,
    BadMessage,
    Decoder,
    FleetReset,
    FleetTrip,
    InstanceStatus,
    TripAck,
    decode,
    encode,
)
from killswitch.fleet.policy import BusLossPolicy, BusWatch, Do
from killswitch.fleet.settings import BusSettings, connect_options, reconnect_delay_s
from killswitch.fleet.subjects import Subjects
from killswitch.schema.nodes import ConfigError
from killswitch.secrets import Secret

TRIP = FleetTrip("abc123", "desk kill", "anna", "cli@host", 1_700_000_000_000)


# ------------------------------------------------------------------ messages
def test_every_message_type_round_trips():
    for msg in (
        TRIP,
        FleetReset("r1", "ok", "bob", "cli@h", 5),
        TripAck("abc123", "host-a", "tripped", 3, ("ox-main",), 1.25, None, 9),
        InstanceStatus("host-a", "tripped", "abc123", 1, 2, 0, 1.0, 7),
    ):
        assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("reason"), "reason"),
        (lambda d: d.update(reason=5), "reason"),
        (lambda d: d.update(fleet_trip_id="has space"), "fleet_trip_id"),
        (lambda d: d.update(fleet_trip_id="x" * 65), "fleet_trip_id"),
        (lambda d: d.update(ts_wall_ms=True), "ts_wall_ms"),
        (lambda d: d.update(ts_wall_ms=-1), "ts_wall_ms"),
        (lambda d: d.update(reason="r" * 501), "reason"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(v=2), "v"),
        (lambda d: d.update(type="nope"), "type"),
    ],
)
def test_a_bad_field_is_rejected_naming_it(mutate, field):
    d = orjson.loads(encode(TRIP))
    mutate(d)
    with pytest.raises(BadMessage, match=field):
        decode(orjson.dumps(d))


def test_oversize_non_json_and_wrong_type_are_rejected():
    with pytest.raises(BadMessage, match="bytes"):
        decode(b" " * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(BadMessage, match="JSON"):
        decode(b"{nope")
    with pytest.raises(BadMessage, match="object"):
        decode(b"[]")
    with pytest.raises(BadMessage, match="expected FleetReset"):
        decode(encode(TRIP), FleetReset)


def test_ack_stage_and_bounds_are_checked():
    ok = orjson.loads(encode(TripAck("abc", "h", "flat", 1, (), None, 3.0, 1)))
    for bad in ({"stage": "done"}, {"trip_to_flat_ms": -1}, {"venues": ["a"] * 300}, {"venues": "a"}):
        with pytest.raises(BadMessage):
            decode(orjson.dumps({**ok, **bad}))


def test_decoder_counts_and_never_raises():
    dec = Decoder()
    assert dec.decode(b"junk", subject="ks.prod.trip") is None
    assert dec.decode(encode(TRIP), subject="ks.prod.reset", expect=FleetReset) is None
    assert dec.decode(encode(TRIP), subject="ks.prod.trip", expect=FleetTrip) == TRIP
    assert dec.bad == {"trip": 1, "reset": 1} and dec.good == 1 and dec.bad_total == 2


def test_encode_refuses_a_message_over_the_cap():
    with pytest.raises(ValueError, match="over"):
        encode(TripAck("abc", "h", "flat", 1, tuple("v" * 100 for _ in range(60)), None, None, 1))


# ------------------------------------------------------------------ policy
def test_bus_loss_alarm_branch_acts_once_after_the_delay_and_clears_on_reconnect():
    w = BusWatch(BusLossPolicy(after_s=10, action="alarm"), now_s=0)
    assert w.on_connected(1) == [Do.RECONCILE]
    assert w.on_disconnected(5) == []
    assert w.on_tick(14.9) == []
    assert w.on_tick(15.0) == [Do.ALARM]
    assert w.on_tick(30) == []  # once
    assert w.on_connected(31) == [Do.CLEAR_ALARM, Do.RECONCILE]
    assert w.losses == 1


def test_bus_loss_trip_branch_and_never_connected_counts_as_lost():
    w = BusWatch(BusLossPolicy(after_s=2, action="trip"), now_s=100)
    assert w.on_tick(101) == []
    assert w.on_tick(102) == [Do.ALARM, Do.TRIP]
    assert w.on_tick(200) == []


def test_a_short_blip_does_nothing():
    w = BusWatch(BusLossPolicy(after_s=2, action="trip"), now_s=0)
    w.on_connected(0)
    w.on_disconnected(1)
    assert w.on_connected(2.5) == [Do.RECONCILE]
    assert w.on_tick(10) == []


def test_policy_validates_its_values():
    with pytest.raises(ValueError):
        BusLossPolicy(action="panic")
    with pytest.raises(ValueError):
        BusLossPolicy(after_s=0)


# ------------------------------------------------------------------ acks
def ack(inst, stage, fid="t1", first=1.0, flat=None):
    return TripAck(fid, inst, stage, 1, ("v",), first if stage == "tripped" else None, flat, 0)


def test_ack_board_verdicts_flat_acked_missing_and_unexpected_instances():
    b = AckBoard("t1", frozenset({"a", "b", "c"}))
    b.add(ack("a", "tripped"))
    b.add(ack("a", "flat", flat=20.0))
    b.add(ack("b", "tripped"))
    b.add(ack("d", "flat", flat=5.0))  # not expected, still listed
    b.add(ack("c", "flat", fid="other"))
    assert b.counts() == {"flat": 2, "acked": 1, "missing": 1} and b.ignored == 1
    assert not b.complete()
    lines = {line.split()[0]: line for line in b.lines()}
    assert lines["a"].split()[1] == "flat" and "20.00 ms" in lines["a"]
    assert lines["b"].split()[1] == "acked" and lines["c"].split()[1] == "missing"
    b.add(ack("b", "flat"))
    b.add(ack("c", "flat"))
    assert b.complete()


def test_an_ack_sent_under_another_instances_subject_is_ignored_as_forged():
    subjects = Subjects("f")
    b = AckBoard("t1", frozenset({"a", "b"}))
    assert subjects.ack("t1", "a") == "ks.f.ack.t1.a" and Subjects.ack_sender(subjects.ack("t1", "a")) == "a"
    assert not b.add(ack("b", "flat", flat=1.0), sender=Subjects.ack_sender(subjects.ack("t1", "a")))
    assert b.forged == 1 and b.counts() == {"flat": 0, "acked": 0, "missing": 2}
    assert b.add(ack("a", "flat", flat=1.0), sender="a") and b.counts()["flat"] == 1


def test_an_empty_board_is_not_complete():
    assert not AckBoard("t1").complete()


# ------------------------------------------------------------------ backoff and settings
def test_reconnect_backoff_grows_and_is_capped_with_jitter():
    lo = [reconnect_delay_s(n, 0.1, 5.0, rand=lambda: 0.0) for n in range(12)]
    hi = [reconnect_delay_s(n, 0.1, 5.0, rand=lambda: 1.0) for n in range(12)]
    assert lo[0] == pytest.approx(0.075) and hi[0] == pytest.approx(0.125)
    assert lo == sorted(lo) and max(hi) == pytest.approx(6.25) and max(lo) == pytest.approx(3.75)
    assert reconnect_delay_s(10_000, 0.1, 5.0) <= 6.25


def test_bus_settings_never_print_credentials():
    s = BusSettings(
        servers=("nats://h:4222",),
        client_name="x",
        user="u",
        password=Secret("hunter2"),
        token=Secret("tok-xyz"),
    )
    assert "hunter2" not in repr(s) and "tok-xyz" not in repr(s) and "hunter2" not in str(s)


# ------------------------------------------------------------------ config
BASE = textwrap.dedent("""\
    venues:
      - {name: ox, kind: oxfun, api_key: {env: K}, api_secret: {env: S}, markets: [BTC-USD-SWAP-LIN]}
    rules:
      - {name: max-open, kind: max_open_orders, max: 10, fleet: true}
    """)


def test_fleet_section_parses_with_defaults_and_rule_fleet_flag():
    cfg = load_config_text(
        textwrap.dedent("""\
        fleet:
          servers: [nats://10.0.0.5:4222, tls://10.0.0.6:4222]
          name: prod
          instance: host-a
          credentials: {user: d-a, password: {env: KS_NATS_PW}}
          on_bus_loss: {after: 3s, action: trip}
        """)
        + BASE
    )
    f = cfg.fleet
    assert f.servers == ("nats://10.0.0.5:4222", "tls://10.0.0.6:4222") and f.name == "prod"
    assert (
        f.on_bus_loss == BusLossPolicy(3.0, "trip") and f.status_interval_s == 1.0 and f.silent_after_s == 5.0
    )
    assert f.credentials.user == "d-a" and f.credentials.password.name == "KS_NATS_PW"
    assert cfg.rules[0].fleet is True
    assert load_config_text(BASE).fleet is None


def test_the_inbox_prefix_reaches_nats_py_and_defaults_to_its_own():
    cfg = load_config_text("fleet: {servers: [nats://h:4222], name: prod, inbox_prefix: _INBOX.d-a}\n" + BASE)
    assert connect_options(cfg.fleet.bus_settings({}))["inbox_prefix"] == "_INBOX.d-a"
    cfg = load_config_text("fleet: {servers: [nats://h:4222], name: prod}\n" + BASE)
    assert connect_options(cfg.fleet.bus_settings({}))["inbox_prefix"] == "_INBOX"


def test_on_bus_loss_defaults_to_alarm_after_10s():
    cfg = load_config_text("fleet: {servers: [nats://h:4222], name: prod}\n" + BASE)
    assert cfg.fleet.on_bus_loss == BusLossPolicy(10.0, "alarm")


@pytest.mark.parametrize(
    "fleet, where",
    [
        ("{servers: [http://h:4222], name: prod}", "fleet.servers[0]"),
        ("{servers: [nats://h:4222], name: 'a.b'}", "fleet.name"),
        ("{servers: [nats://h:4222], name: prod, on_bus_loss: {action: panic}}", "fleet.on_bus_loss.action"),
        ("{servers: [nats://h:4222], name: prod, credentials: {token: hunter2}}", "fleet.credentials.token"),
        (
            "{servers: [nats://h:4222], name: prod, credentials: {user: u, token: {env: T}}}",
            "fleet.credentials",
        ),
        ("{servers: [nats://h:4222], name: prod, colour: red}", "fleet.colour"),
        ("{name: prod}", "fleet.servers"),
        ("{servers: [nats://h:4222], name: prod, inbox_prefix: '_INBOX.*'}", "fleet.inbox_prefix"),
        ("{servers: [nats://h:4222], name: prod, inbox_prefix: '_INBOX.a.'}", "fleet.inbox_prefix"),
    ],
)
def test_a_bad_fleet_section_names_file_line_and_key(fleet, where):
    with pytest.raises(ConfigError) as exc:
        load_config_text(f"fleet: {fleet}\n" + BASE, "ks.yaml")
    text = str(exc.value)
    assert where in text and "ks.yaml:1" in text, text
    assert "hunter2" not in text


def test_check_secrets_covers_the_fleet_credentials():
    from killswitch.config import check_secrets

    cfg = load_config_text(
        "fleet: {servers: [nats://h:4222], name: prod, credentials: {user: u, password: {env: KS_NATS_PW}}}\n"
        + BASE,
        "ks.yaml",
    )
    issues = check_secrets(cfg, {"K": "k", "S": "s"})
    assert [i.key_path for i in issues] == ["fleet.credentials.password"]
    assert "KS_NATS_PW" in str(issues[0])
    assert check_secrets(cfg, {"K": "k", "S": "s", "KS_NATS_PW": "pw"}) == []


def test_cli_fleet_verbs_need_a_config_and_refuse_a_scope(tmp_path, capsys):
    from killswitch.cli import main

    assert main(["trip", "--fleet", "--reason", "x"]) == 2
    assert "needs -c CONFIG" in capsys.readouterr().err
    cfg = tmp_path / "op.yaml"
    cfg.write_text("fleet: {servers: [nats://127.0.0.1:1], name: prod}\n")
    assert main(["trip", "--fleet", "-c", str(cfg), "--reason", "x", "--venue", "ox"]) == 2
    assert "--venue/--product" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("fleet: {servers: [nats://127.0.0.1:1], name: 'a b'}\n")
    assert main(["status", "--fleet", "-c", str(tmp_path / "bad.yaml")]) == 2
    assert "fleet.name" in capsys.readouterr().err
    # Nothing listens on port 1: a clear error, exit 3.
    assert main(["status", "--fleet", "-c", str(cfg)]) == 3
    assert "cannot connect" in capsys.readouterr().err
