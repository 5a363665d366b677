"""Command line: ``killswitch run | check | status | trip | reset | reopen | heartbeat | demo | sim``.

Wrong usage exits 2 with a message (argparse). ``check`` exits 1 on an invalid config.
The verbs that talk to a running daemon use its control socket (see killswitch.control).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from killswitch import __version__

DEFAULT_SOCKET = "/run/killswitch/control.sock"
DEFAULT_MAX_CONFIG_BYTES = 1 << 20  # = killswitch.config.reading's; not imported here (start-up cost)


def _byte_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return n


def _add_max_config_bytes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-config-bytes", type=_byte_count, default=DEFAULT_MAX_CONFIG_BYTES, metavar="N",
                   help=f"refuse a config file (or include) larger than N bytes (default {DEFAULT_MAX_CONFIG_BYTES})")


def _add_socket(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=None,
                   help=f"control socket path (default: from -c CONFIG, else {DEFAULT_SOCKET})")
    p.add_argument("-c", "--config", default=None, help="read the control socket path from this config")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="killswitch", description="Risk kill-switch daemon for crypto trading accounts.")
    p.add_argument("--version", action="version", version=f"killswitch {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("-c", "--config", required=True, help="YAML configuration file")
    r.add_argument("--dry-run", action="store_true", help="evaluate and plan, send nothing")
    _add_max_config_bytes(r)

    c = sub.add_parser("check", help="validate a configuration and print what it will do")
    c.add_argument("config", help="YAML configuration file")
    c.add_argument("--no-secrets", action="store_true", help="do not try to resolve secret references")
    _add_max_config_bytes(c)

    s = sub.add_parser("status", help="show the daemon's state")
    _add_socket(s)
    s.add_argument("--json", action="store_true", help="machine-readable output (docs/status.md)")
    s.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    s.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="--watch refresh interval (1)")
    s.add_argument("--count", type=int, default=None, metavar="N", help="--watch: stop after N refreshes")

    t = sub.add_parser("trip", help="trip the kill switch by hand (latched)")
    _add_socket(t)
    t.add_argument("--reason", required=True, help="why (audited)")
    t.add_argument("--operator", default=None, help="who (default: $USER)")
    t.add_argument("--venue", action="append", default=None, help="limit to this venue (repeatable)")
    t.add_argument("--product", action="append", default=None, help="limit to this product (repeatable)")
    t.add_argument("--lock", action="store_true",
                   help="also lock order entry on venues that support it (docs/venues/hyperliquid.md)")
    t.add_argument("--force", action="store_true",
                   help="trip even on a product no configured venue lists or has seen")

    rs = sub.add_parser("reset", help="re-arm after a trip (audited)")
    _add_socket(rs)
    rs.add_argument("--operator", required=True, help="who resets (audited)")
    rs.add_argument("--reason", required=True, help="why (audited)")
    rs.add_argument("--unlock", action="store_true", help="also restore order entry on locked venues (audited)")
    rs.add_argument("--rebase", action="store_true",
                    help="also restart rule baselines (drawdown peaks) from the current equity (audited)")

    ro = sub.add_parser("reopen", help="reopen the audit log and latch intent (after logrotate)")
    _add_socket(ro)

    h = sub.add_parser("heartbeat", help="send a strategy heartbeat")
    _add_socket(h)
    h.add_argument("source", help="heartbeat source name (as in the stale_heartbeat rule)")

    d = sub.add_parser("demo", help="run the daemon against the built-in simulated venues")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.add_argument("--keep", action="store_true", help="keep the demo's state directory")

    sm = sub.add_parser("sim", help="run one simulated exchange on loopback")
    sm.add_argument("venue", choices=["oxfun", "vertex", "nado", "hyperliquid"])
    sm.add_argument("--network", choices=["testnet", "mainnet"], default="testnet",
                    help="hyperliquid: which signatures the sim accepts (the official SDK signs testnet "
                         "unless its base_url is the real mainnet URL)")
    sm.add_argument("--host", default="127.0.0.1")
    sm.add_argument("--port", type=int, default=0, help="first port (0: any free)")
    return p


def _socket_path(args) -> Path:
    if args.socket:
        return Path(args.socket)
    if args.config:
        from killswitch.config import ConfigError, load_config

        try:
            return load_config(args.config).daemon.control_socket
        except ConfigError as exc:
            print(f"killswitch: cannot read {args.config}:\n{exc}", file=sys.stderr)
            raise SystemExit(2)
    return Path(DEFAULT_SOCKET)


def cmd_check(args) -> int:
    from killswitch.config import ConfigError, check_secrets, load_config, summarize

    try:
        cfg = load_config(args.config, max_bytes=args.max_config_bytes)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"\n{args.config}: INVALID", file=sys.stderr)
        return 1
    issues = [] if args.no_secrets else check_secrets(cfg)
    print(summarize(cfg))
    from killswitch.config import build_rules
    from killswitch.engine.rule_state import describe_rebases

    for line in describe_rebases(build_rules(cfg), cfg.daemon.state_dir):
        print(f"note: {line}")
    errors = [i for i in issues if getattr(i, "severity", "error") == "error"]
    for i in issues:
        print(f"{getattr(i, 'severity', 'error')}: {i}", file=sys.stderr)
    if errors:
        print(f"\n{args.config}: INVALID (secrets)", file=sys.stderr)
        return 1
    print(f"\n{args.config}: OK")
    return 0


def cmd_run(args, signals=None) -> int:
    """``signals``: the handlers ``killswitch.launch`` installed first thing; installed here
    when called another way."""
    from killswitch.signals import StartupSignals, StopBeforeStart

    if signals is None:
        signals = StartupSignals()
        signals.install()
    try:
        return _run(args, signals)
    except StopBeforeStart as stop:
        print(stop.describe(), file=sys.stderr)
        return 0


def _run(args, signals) -> int:
    import dataclasses

    import trio

    from killswitch.config import ConfigError, load_config
    from killswitch.daemon import Daemon
    from killswitch.logs import configure_logging

    try:
        cfg = load_config(args.config, max_bytes=args.max_config_bytes)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.dry_run:
        cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, dry_run=True))
    redactor = configure_logging(cfg.daemon.log_format)
    _check_fd_budget(cfg)
    services = []
    try:
        from killswitch.services import default_services
    except ImportError:
        default_services = None
    if default_services is not None:
        services = default_services(cfg)
    daemon = Daemon(cfg, redactor=redactor, services=services, freeze_gc=True, signals=signals,
                    config_max_bytes=args.max_config_bytes)
    signals.exit_on_stop = False  # from here a stop is the daemon's graceful stop
    return trio.run(daemon.run)


def _check_fd_budget(cfg) -> None:
    import structlog

    from killswitch.control.access import ConnectionBudget
    from killswitch.fdlimit import RESERVE_FDS, fd_budget
    from killswitch.net.http import DAEMON_LIMITS

    slots = ConnectionBudget().total + (DAEMON_LIMITS.max_connections if cfg.daemon.metrics.enabled else 0)
    b = fd_budget(venues=len(cfg.venues), listener_slots=slots)
    log = structlog.get_logger("killswitch.daemon")
    fields = dict(soft_before=b.soft_before, soft=b.soft, hard=b.hard, needed=b.needed, reserve=RESERVE_FDS)
    if b.headroom_ok:
        log.info("fd_limit", **fields)
    else:
        log.critical("fd_limit_too_low", note="raise LimitNOFILE= in the unit", **fields)


def cmd_control(args) -> int:
    from killswitch import control

    return control.run_cli(args, _socket_path(args))


def main(argv: list[str] | None = None, signals=None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb == "check":
        return cmd_check(args)
    if args.verb == "run":
        return cmd_run(args, signals)
    if args.verb in ("status", "trip", "reset", "heartbeat", "reopen"):
        return cmd_control(args)
    if args.verb == "demo":
        from killswitch.demo.run import main as demo_main

        return demo_main(args)
    if args.verb == "sim":
        from killswitch.demo.simcli import main as sim_main

        return sim_main(args)
    return 2  # pragma: no cover - argparse requires a verb


def entry(signals=None) -> None:
    """Process entry (via :mod:`killswitch.launch`): a closed stdout (``killswitch check x | head``)
    is not an error."""
    try:
        code = main(signals=signals)
        sys.stdout.flush()
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover - ``killswitch`` / ``python -m killswitch`` go via launch
    entry()
