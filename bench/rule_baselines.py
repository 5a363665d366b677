"""Cost of never going blind: drawdown evaluation per equity event, and writing/reading baselines.

Prints figures (µs per operation) for:
- ``DrawdownRule.on_event`` (since_start and rolling peaks), with the 96-digit arithmetic;
- ``RuleStateStore.save`` (atomic replace, no fsync: what the engine does at most every
  0.1 s after a change) and ``save(durable=True)`` (reset / shutdown), for N rules;
- ``load`` + ``import_baseline`` on start-up.

    python bench/rule_baselines.py [--rules 20] [--window 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from decimal import Decimal

from killswitch.config import build_rules, load_config_text
from killswitch.engine import rule_state
from killswitch.engine.rule_state import RuleStateStore
from killswitch.model import EquityObserved

VENUES = """
venues:
  - {name: ox, kind: oxfun, api_key: {env: K}, api_secret: {env: S}, equity_currency: USD}
"""


class Book:
    def venues(self):
        return ("ox",)


def rules(n: int, peak: str):
    text = VENUES + "rules:\n" + "".join(
        f"  - {{name: dd{i}, kind: drawdown, venues: [ox], max_drawdown: 50%, peak: {peak}}}\n" for i in range(n))
    return build_rules(load_config_text(text))


def per_op_us(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=20)
    ap.add_argument("--window", type=int, default=512, help="rolling-window entries per rule (slow decline)")
    args = ap.parse_args()
    book = Book()
    for peak in ("since_start", "{rolling: 1h}"):
        (rule,) = rules(1, peak)
        events = [EquityObserved("ox", Decimal(100000) + Decimal(i % 1000) / 7) for i in range(20000)]
        us = per_op_us(lambda i: rule.on_event(events[i], book, float(i)), len(events))
        print(f"drawdown on_event ({peak}): {us:.2f} us/event")
    many = rules(args.rules, "{rolling: 1h}")
    for r in many:
        for i in range(args.window):
            r.on_event(EquityObserved("ox", Decimal(100000 - i)), book, float(i))
    with tempfile.TemporaryDirectory() as d:
        store = RuleStateStore(d)
        data = rule_state.collect(many, 0.0)
        snap = per_op_us(lambda i: rule_state.collect(many, 0.0), 20)
        plain = per_op_us(lambda i: store.save(rule_state.collect(many, 0.0), i), 50)
        durable = per_op_us(lambda i: store.save(data, i, durable=True), 20)
        size = store.path.stat().st_size

        def restore(i):
            stored = store.load()
            for r, b in rule_state.plan_restore(many, stored)[0]:
                r.import_baseline(b, 0.0)

        load = per_op_us(restore, 20)
    print(f"{args.rules} rolling rules x {args.window} window entries ({size} bytes): snapshot on the engine "
          f"{snap:.0f} us; save {plain:.0f} us (snapshot + encode + write + rename, the rest in a worker thread); "
          f"durable {durable:.0f} us (+ fsync file and dir)")
    print(f"load + restore on start-up: {load:.0f} us")


if __name__ == "__main__":
    main()
