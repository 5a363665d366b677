import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from killswitch.config import Config, ConfigError, ConfigIssue, build_rules, check_secrets, load_config, load_config_text, summarize

from killswitch.config.loader import LITERAL_SECRET
from killswitch.model import Side
from killswitch.secrets import SecretRef
from killswitch.venues.base import BackoffConfig, OxfunConfig, VertexConfig

BASE = """\
venues:
  - name: ox-main
    kind: oxfun
    api_key: {env: OX_KEY}
    api_secret: {env: OX_SECRET}
    markets: [BTC-USD-SWAP-LIN]
  - name: nado-main
    kind: nado
    private_key: {credential: nado_key}
    products: [2, 4]
"""


def errors_of(text: str, filename: str = "rules.yaml") -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, filename)
    return info.value.issues


def one_error(text: str) -> ConfigIssue:
    issues = errors_of(text)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# --- happy path ------------------------------------------------------------------------


def test_minimal_config_defaults():
    cfg = load_config_text(BASE)
    assert isinstance(cfg, Config)
    d = cfg.daemon
    assert d.state_dir == Path("/var/lib/killswitch") and d.audit_log == Path("/var/lib/killswitch/audit.jsonl")
    assert d.control_socket == Path("/run/killswitch/control.sock") and d.control_socket_group is None
    assert (d.dry_run, d.cancel_on_shutdown, d.log_format) == (False, False, "auto")
    assert (d.tick_interval_s, d.repoll_interval_s, d.cancel_deadline_s, d.startup_timeout_s) == (0.1, 2.0, 10.0, 30.0)
    assert (d.metrics.enabled, d.metrics.host, d.metrics.port) == (False, "127.0.0.1", 9464)
    ox, nado = cfg.venues
    assert ox == OxfunConfig(name="ox-main", api_key=SecretRef("env", "OX_KEY"),
                             api_secret=SecretRef("env", "OX_SECRET"), markets=("BTC-USD-SWAP-LIN",))
    assert isinstance(nado, VertexConfig) and nado.kind == "nado" and nado.products == (2, 4)
    assert nado.chain_id == 57073 and nado.gateway_ws_url == VertexConfig.__dataclass_fields__["gateway_ws_url"].default
    assert cfg.rules == () and cfg.heartbeat_files == {} and cfg.warnings == ()


def test_every_daemon_key_and_relative_paths(tmp_path):
    path = tmp_path / "conf" / "ks.yaml"
    path.parent.mkdir()
    path.write_text(BASE + textwrap.dedent("""\
        daemon:
          state_dir: state
          control_socket: /tmp/ks.sock
          control_socket_group: traders
          dry_run: true
          tick_interval: 250ms
          repoll_interval: 1s
          cancel_deadline: 1m
          startup_timeout: 1h30m
          cancel_on_shutdown: true
          metrics: {enabled: true, host: 0.0.0.0, port: 9000}
          log_format: json
        """))
    d = load_config(path).daemon
    assert d.state_dir == path.parent / "state" and d.audit_log == path.parent / "state" / "audit.jsonl"
    assert d.control_socket == Path("/tmp/ks.sock") and d.control_socket_group == "traders"
    assert d.dry_run and d.cancel_on_shutdown and d.log_format == "json"
    assert (d.tick_interval_s, d.repoll_interval_s, d.cancel_deadline_s, d.startup_timeout_s) == (0.25, 1.0, 60.0, 5400.0)
    assert d.metrics.enabled and d.metrics.port == 9000


def test_every_venue_field_is_settable():
    cfg = load_config_text(textwrap.dedent("""\
        venues:
          - name: ox
            kind: oxfun
            api_key: {env: K}
            api_secret: {file: /etc/killswitch/ox.secret}
            ws_url: wss://example.test/ws
            rest_url: https://example.test
            markets: [A, B]
            equity_currency: USD
            ping_interval: 15s
            pong_timeout: 5s
            request_timeout: 3s
            poll_interval: 10s
            backoff: {initial: 100ms, max: 30s, multiplier: 3, jitter: 0.1}
          - name: vx
            kind: vertex
            private_key: {env: P}
            wallet_address: "0x1111111111111111111111111111111111111111"
            subaccount_name: bot1
            verify_contracts: false
            recv_window: 100s
            equity_poll_interval: 500ms
            budget_reserve: 80
            products: [1, "2"]
        """))
    ox, vx = cfg.venues
    assert ox.ping_interval_s == 15.0 and ox.pong_timeout_s == 5.0 and ox.poll_interval_s == 10.0
    assert ox.backoff == BackoffConfig(0.1, 30.0, 3.0, 0.1)
    assert ox.api_secret == SecretRef("file", "/etc/killswitch/ox.secret")
    assert vx.kind == "vertex" and vx.chain_id == 42161
    assert vx.endpoint_address == "0xbbEE07B3e8121227AfCFe1E2B82772246226128e"
    assert vx.gateway_ws_url == "wss://gateway.prod.vertexprotocol.com/v1/ws"
    assert vx.subscribe_ws_url == "wss://gateway.prod.vertexprotocol.com/v1/subscribe"
    assert vx.gateway_rest_url == "https://gateway.prod.vertexprotocol.com/v1"
    assert vx.trigger_url == "https://trigger.prod.vertexprotocol.com/v1"
    assert vx.recv_window_s == 100.0 and vx.products == (1, 2) and vx.budget_reserve == 80
    assert not vx.verify_contracts and vx.subaccount_name == "bot1"


def test_rule_common_keys_and_action_scope():
    cfg = load_config_text(BASE + textwrap.dedent("""\
        rules:
          - name: a
            kind: order_rate
            max: 5
            window: 1s
          - name: b
            kind: order_rate
            max: 5
            window: 1s
            venues: [nado-main]
            latch: false
            action: {cancel_products: [2]}
          - name: c
            kind: order_rate
            max: 5
            window: 1s
            keep_protective_stops: true
            action: {cancel_orders: {products: [BTC-USD-SWAP-LIN], sides: [sell]}}
        """))
    a, b, c = cfg.rules
    assert a.venues == () and a.latch and a.action.kind == "cancel_all"
    assert a.action_scope.venues is None and a.action_scope.products is None and not a.action_scope.by_id_only
    assert b.action_scope.venues == frozenset({"nado-main"}) and b.action_scope.products == frozenset({"2"})
    assert not b.latch
    assert c.action_scope.sides == frozenset({Side.SELL}) and c.action_scope.by_id_only
    assert c.action_scope.keep_protective_stops
    rules = build_rules(cfg)
    assert [r.name for r in rules] == ["a", "b", "c"] and rules[1].latch is False


def test_summarize_mentions_everything():
    cfg = load_config_text(BASE + textwrap.dedent("""\
        rules:
          - {name: dd, kind: drawdown, max_drawdown: 3%, latch: false}
          - {name: hb, kind: stale_heartbeat, source: {strategy: alpha, file: /run/alpha.hb}, timeout: 10s}
        """))
    text = summarize(cfg)
    for needle in ("ox-main (oxfun)", "nado-main (nado)", "{env: OX_KEY}", "{credential: nado_key}",
                   "dd [drawdown]", "3%", "ALERT ONLY", "hb [stale_heartbeat]", "/run/alpha.hb",
                   "dry_run no", "cancel everything", "BTC-USD-SWAP-LIN", "products: 2, 4"):
        assert needle in text, needle
    assert cfg.heartbeat_files == {"alpha": Path("/run/alpha.hb")}


# --- one test per kind of error --------------------------------------------------------


@pytest.mark.parametrize(
    "snippet, needle, key_path, message",
    [
        ("daemon: {bogus: 1}\n", "bogus", "daemon.bogus", "unknown key"),
        ("colour: red\n", "colour", "colour", "unknown key"),
        ("daemon: {tick_interval: fast}\n", "tick_interval", "daemon.tick_interval", "not a duration"),
        ("daemon: {cancel_deadline: 0s}\n", "cancel_deadline", "daemon.cancel_deadline", "greater than 0"),
        ("daemon: {startup_timeout: -3s}\n", "startup_timeout", "daemon.startup_timeout", "negative"),
        ("daemon: {dry_run: yes please}\n", "dry_run", "daemon.dry_run", "true or false"),
        ("daemon: {log_format: xml}\n", "log_format", "daemon.log_format", "one of auto, json, console"),
        ("daemon: {metrics: {port: 70000}}\n", "metrics", "daemon.metrics.port", "at most 65535"),
        ("rules:\n  - {name: r, kind: nope}\n", "nope", "rules[0].kind", "unknown rule kind"),
        ("rules:\n  - {name: r, kind: drawdown, max_drawdown: 0%}\n", "max_drawdown", "rules[0].max_drawdown",
         "above 0%"),
        ("rules:\n  - {name: r, kind: drawdown, max_drawdown: 150%}\n", "max_drawdown", "rules[0].max_drawdown",
         "at most 100%"),
        ("rules:\n  - {name: r, kind: drawdown, max_drawdown: lots}\n", "max_drawdown", "rules[0].max_drawdown",
         "must be a percentage like 5% or an amount like 2000 USD"),
        ("rules:\n  - {name: r, kind: drawdown, max_drawdown: -5 USD}\n", "max_drawdown",
         "rules[0].max_drawdown", "greater than 0"),
        ("rules:\n  - {name: r, kind: stale_heartbeat, source: {strategy: s}, timeout: 0s}\n", "timeout",
         "rules[0].timeout", "greater than 0"),
        ("rules:\n  - {name: r, kind: stale_heartbeat, source: {strategy: s}}\n", "name: r",
         "rules[0].timeout", "required"),
        ("rules:\n  - {name: r, kind: stale_heartbeat, source: {venue: ghost}, timeout: 1s}\n", "ghost",
         "rules[0].source", "unknown venue 'ghost'"),
        ("rules:\n  - {name: r, kind: order_rate, max: 0, window: 1s}\n", "max: 0", "rules[0].max", "at least 1"),
        ("rules:\n  - {name: r, kind: order_rate, max: 5, window: 1s, venues: [ox-mian]}\n", "ox-mian",
         "rules[0].venues[0]", "unknown venue 'ox-mian'"),
        ("rules:\n  - {name: r, kind: max_open_orders}\n", "name: r", "rules[0]", "max and/or max_per_product"),
        ("rules:\n  - {name: r, kind: max_position, max_qty: 1, action: cancel_some}\n", "action",
         "rules[0].action", "must be cancel_all"),
        ("rules:\n  - {name: r, kind: manual, action: {cancel_orders: {sides: [up]}}}\n", "sides",
         "rules[0].action.cancel_orders.sides[0]", "buy or sell"),
        ("rules:\n  - {name: r, kind: manual, latch: 1}\n", "latch", "rules[0].latch", "true or false"),
        ("rules:\n  - {name: r, kind: drawdown, max_drawdown: 5%, peak: {daily_reset: 12:30}}\n", "daily_reset",
         "rules[0].peak.daily_reset", "HH:MM"),
        ("rules:\n  - {name: r, kind: drawdown, max_drawdown: 5%, debounce: {count: 2, duration: 1s}}\n",
         "debounce", "rules[0].debounce", "exactly one"),
        ("rules:\n  - {name: r, kind: drawdown, max_drawdown: 100 USD}\n", "100 USD", "rules[0].max_drawdown",
         "reports equity in OX"),
    ],
)
def test_each_error_names_line_and_key_path(snippet, needle, key_path, message):
    text = BASE + snippet
    issue = one_error(text)
    assert issue.file == "rules.yaml"
    assert issue.key_path == key_path
    assert message in issue.message, issue.message
    assert issue.line == line_of(text, needle)
    assert str(issue).startswith(f"rules.yaml:{issue.line}:{issue.column}: {key_path}: ")


def test_duplicate_key():
    text = BASE + "daemon:\n  dry_run: true\n  dry_run: false\n"
    issue = one_error(text)
    assert issue.line == 13 and issue.key_path == "daemon.dry_run" and "duplicate key" in issue.message


def test_duplicate_venue_and_rule_names():
    text = BASE + (
        "  - name: ox-main\n"
        "    kind: oxfun\n"
        "    api_key: {env: A}\n"
        "    api_secret: {env: B}\n"
        "rules:\n"
        "  - {name: r, kind: manual}\n"
        "  - {name: r, kind: order_rate, max: 1, window: 1s}\n"
    )
    issues = errors_of(text)
    assert [(i.key_path, i.line) for i in issues] == [("venues[2].name", 11), ("rules[1].name", 17)]
    assert "duplicate venue name 'ox-main'" in issues[0].message
    assert "duplicate rule name 'r'" in issues[1].message


def test_two_manual_rules():
    issue = one_error(BASE + "rules:\n  - {name: a, kind: manual}\n  - {name: b, kind: manual}\n")
    assert issue.key_path == "rules[1].kind" and "one manual rule" in issue.message


def test_wrong_types_and_venue_fields():
    text = BASE + (
        "  - name: Bad Name\n"
        "    kind: nado\n"
        "    private_key: {env: K}\n"
        "    recv_window: 101s\n"
        "    chain_id: zero\n"
        "    products: [one]\n"
        "    endpoint_address: 0x12\n"
        "    gateway_ws_url: https://not-a-websocket\n"
    )
    issues = errors_of(text)
    assert [i.key_path for i in issues] == [
        "venues[2].name", "venues[2].recv_window", "venues[2].chain_id", "venues[2].products[0]",
        "venues[2].endpoint_address", "venues[2].gateway_ws_url"]
    assert [i.line for i in issues] == [11, 14, 15, 16, 17, 18]


def test_unknown_venue_kind_and_keys():
    issues = errors_of(BASE + "  - {name: x, kind: binance, api_key: {env: K}}\n")
    assert [(i.key_path, i.line) for i in issues] == [("venues[2].kind", 11)]


def test_missing_and_empty():
    assert "empty" in one_error("").message
    assert "no venues" in one_error("rules: []\n").message
    assert "mapping" in one_error("- 1\n- 2\n").message


def test_yaml_syntax_error_has_position():
    issue = one_error(BASE + "rules: [\n")
    assert issue.message.startswith("YAML syntax error") and issue.line >= 11


def test_cancel_products_not_watched_is_a_warning():
    cfg = load_config_text(BASE + "rules:\n  - {name: r, kind: manual, venues: [nado-main], "
                                  "action: {cancel_products: [2, 9]}}\n", "rules.yaml")
    (warning,) = cfg.warnings
    assert warning.severity == "warning" and warning.line == 12 and "'9'" in warning.message
    assert str(warning).startswith("rules.yaml:12:")


def test_all_errors_at_once():
    text = textwrap.dedent("""\
        daemon:
          tick_interval: soon
          extra: 1
        venues:
          - name: ox
            kind: oxfun
            api_key: hunter2
            api_secret: {env: S}
        rules:
          - name: dd
            kind: drawdown
            max_drawdown: 0%
          - name: dd
            kind: order_rate
            max: 3
            window: -1s
            venues: [nope]
        """)
    issues = errors_of(text)
    got = [(i.line, i.key_path) for i in issues]
    assert got == [
        (2, "daemon.tick_interval"), (3, "daemon.extra"), (7, "venues[0].api_key"), (12, "rules[0].max_drawdown"),
        (13, "rules[1].name"), (16, "rules[1].window"), (17, "rules[1].venues[0]")]
    assert "hunter2" not in str(ConfigError(issues))


# --- secrets ---------------------------------------------------------------------------


def test_literal_secret_rejected_without_echo():
    text = BASE.replace("{env: OX_KEY}", "sk-live-123456")
    issue = one_error(text)
    assert issue.key_path == "venues[0].api_key" and issue.message == LITERAL_SECRET and issue.line == 4
    assert "sk-live" not in str(issue)


@pytest.mark.parametrize("ref", ["{vault: x}", "{env: 1BAD}", "{env: A, file: B}", "{credential: a/b}", "[x]"])
def test_malformed_secret_refs(ref):
    issue = one_error(BASE.replace("{env: OX_KEY}", ref))
    assert issue.key_path.startswith("venues[0].api_key") and issue.line == 4


def _file_secret_config(tmp_path, mode):
    secret = tmp_path / "ox.secret"
    secret.write_text("s3cr3t\n")
    os.chmod(secret, mode)
    conf = tmp_path / "ks.yaml"
    conf.write_text(BASE.replace("{env: OX_SECRET}", "{file: ox.secret}"))
    return load_config(conf), secret


def test_file_secret_0600_accepted(tmp_path):
    cfg, secret = _file_secret_config(tmp_path, 0o600)
    assert cfg.venues[0].api_secret == SecretRef("file", str(secret))
    env = {"OX_KEY": "k", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    (tmp_path / "nado_key").write_text("0xabc")
    os.chmod(tmp_path / "nado_key", 0o400)
    assert check_secrets(cfg, env, strict_env=True) == []


def test_file_secret_0644_refused(tmp_path):
    cfg, secret = _file_secret_config(tmp_path, 0o644)
    issues = [i for i in check_secrets(cfg, {"OX_KEY": "k"}) if i.severity == "error"]
    (issue,) = issues
    assert issue.key_path == "venues[0].api_secret" and str(secret) in issue.message and "0644" in issue.message
    assert "s3cr3t" not in str(issue)


def test_missing_env_is_warning_unless_strict():
    cfg = load_config_text(BASE)
    issues = check_secrets(cfg, {})
    assert {i.severity for i in issues} == {"warning"} and len(issues) == 3
    strict = check_secrets(cfg, {}, strict_env=True)
    assert {i.severity for i in strict} == {"error"}
    assert [i.key_path for i in strict] == ["venues[0].api_key", "venues[0].api_secret", "venues[1].private_key"]


def test_secret_refs_do_not_show_values_in_repr():
    cfg = load_config_text(BASE)
    assert "OX_KEY" in repr(cfg.venues[0])  # names only, never values


# --- includes --------------------------------------------------------------------------


def test_include_merges_venues_and_rules(tmp_path):
    (tmp_path / "venues").mkdir()
    (tmp_path / "venues" / "ox.yaml").write_text(BASE)
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: r, kind: order_rate, max: 1, window: 1s}\n")
    main = tmp_path / "main.yaml"
    main.write_text("daemon: {dry_run: true}\ninclude: [venues/ox.yaml, rules.yaml]\n"
                    "rules:\n  - {name: m, kind: manual}\n")
    cfg = load_config(main)
    assert [v.name for v in cfg.venues] == ["ox-main", "nado-main"]
    assert [r.name for r in cfg.rules] == ["m", "r"] and cfg.daemon.dry_run


def test_include_errors_name_the_included_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("rules:\n  - {name: r, kind: order_rate, max: 0, window: 1s}\n")
    main = tmp_path / "main.yaml"
    main.write_text(BASE + "include: [bad.yaml]\n")
    issue = one_error_path(main)
    assert issue.file.endswith("bad.yaml") and issue.line == 2 and issue.key_path == "rules[0].max"


def one_error_path(path) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.issues) == 1, [str(i) for i in info.value.issues]
    return info.value.issues[0]


def test_include_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    main = tmp_path / "main.yaml"
    main.write_text(BASE + "include: [a.yaml]\n")
    issue = one_error_path(main)
    assert "cycle" in issue.message and issue.file.endswith("b.yaml") and issue.key_path == "include[0]"


def test_include_cannot_escape(tmp_path):
    (tmp_path / "outside.yaml").write_text("rules: []\n")
    (tmp_path / "conf").mkdir()
    main = tmp_path / "conf" / "main.yaml"
    for target in ("../outside.yaml", str(tmp_path / "outside.yaml")):
        main.write_text(BASE + f"include: ['{target}']\n")
        issue = one_error_path(main)
        assert issue.line == 11 and issue.key_path == "include[0]"


def test_include_missing_and_daemon_in_include(tmp_path):
    (tmp_path / "d.yaml").write_text("daemon: {dry_run: true}\n")
    main = tmp_path / "main.yaml"
    main.write_text(BASE + "include: [missing.yaml, d.yaml]\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    msgs = [i.message for i in info.value.issues]
    assert any("cannot read" in m for m in msgs) and any("main file" in m for m in msgs)


def test_unreadable_main_file(tmp_path):
    issue = one_error_path(tmp_path / "nope.yaml")
    assert "cannot read" in issue.message


# --- robustness: only ConfigError ever escapes -------------------------------------------


def _only_config_error(text: str) -> None:
    try:
        load_config_text(text, "fuzz.yaml")
    except ConfigError as exc:
        for issue in exc.issues:
            assert issue.line >= 1 and issue.column >= 1
            str(issue)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_random_text(text):
    _only_config_error(text)


FULL = BASE + textwrap.dedent("""\
    daemon: {dry_run: true, tick_interval: 100ms, metrics: {enabled: true}}
    rules:
      - {name: dd, kind: drawdown, max_drawdown: 5%, peak: {rolling: 1h}, debounce: {count: 2}, venues: [nado-main]}
      - {name: hb, kind: stale_heartbeat, source: {venue: ox-main}, timeout: 5s, grace: 30s}
      - {name: mo, kind: max_open_orders, max: 10, max_per_product: 3, action: {cancel_products: [BTC-USD-SWAP-LIN]}}
      - {name: rate, kind: order_rate, max: 10, window: 1s, latch: false}
      - {name: pos, kind: max_position, max_qty: 2, max_notional: 50000 USD, products: [2]}
      - {name: rej, kind: reject_burst, max: 5, window: 10s}
      - {name: op, kind: manual, action: {cancel_orders: {products: [2], sides: [buy]}}}
    """)


def test_full_config_loads_and_every_kind_is_a_rule():
    from killswitch.rules.base import Rule

    cfg = load_config_text(FULL)
    rules = build_rules(cfg)
    assert len(rules) == 7 and all(isinstance(r, Rule) for r in rules)
    assert {r.kind for r in rules} == {"drawdown", "stale_heartbeat", "max_open_orders", "order_rate",
                                       "max_position", "reject_burst", "manual"}


_TOKENS = ["", "0", "-1", "1.5", "5%", "0%", "200%", "1s", "-1s", "0s", "true", "null", "[]", "{}", "[1, 2]",
           "{env: X}", "abc", "1e999", "~", "2000 USD", "!!binary aGk=", "&a [*a]", "0x12", "'00:00'", "9999999999999"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_config(data):
    lines = FULL.splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["value", "delete", "dup", "indent", "token"]))
        line = lines[i]
        if op == "value" and ":" in line:
            key, _, _ = line.partition(":")
            lines[i] = f"{key}: {data.draw(st.sampled_from(_TOKENS))}"
        elif op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = " " * data.draw(st.integers(0, 6)) + line.lstrip()
        else:
            pos = data.draw(st.integers(0, len(line)))
            lines[i] = line[:pos] + data.draw(st.sampled_from(_TOKENS)) + line[pos:]
        if not lines:
            break
    _only_config_error("\n".join(lines) + "\n")


@pytest.mark.parametrize("text", [
    "a: &a [*a, *a]\n",  # recursive alias
    "x: " + "[" * 2000 + "]" * 2000 + "\n",  # deep nesting
    "venues: !!python/object:os.system [echo]\n",
    "? [1, 2]\n: 3\n",
    "<<: {a: 1}\n",
    "venues:\n  - !!set {a, b}\n",
    "venues: 1\nrules: x\ninclude: 5\n",
    "daemon: 2001-13-45\n",
    "--- 1\n--- 2\n",
    "lol: &a [x, x, x, x, x, x, x, x, x]\nl2: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "l3: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nl4: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "l5: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nl6: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
])
def test_hostile_yaml(text):
    with pytest.raises(ConfigError):
        load_config_text(text)
