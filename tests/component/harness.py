"""Wires a real Engine + Executor + AuditLog + LatchStore around fake sessions."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import trio

from killswitch.audit import AuditLog, read_audit
from killswitch.clock import TrioWallClock
from killswitch.engine.latch import LatchStore
from killswitch.engine.loop import Engine
from killswitch.executor import Executor
from killswitch.model import Tick


class Harness:
    def __init__(self, engine, executor, send, audit, store, sessions):
        self.engine, self.executor, self.send, self.audit = engine, executor, send, audit
        self.store, self.sessions = store, sessions

    async def until(self, predicate, *, step_s: float = 0.01):
        while not predicate():
            await trio.sleep(step_s)

    async def audit_records(self):
        await self.audit.flush()
        return read_audit(self.audit.path)


async def inline(fn, *args):
    """Run blocking disk I/O inline: under autojump_clock a worker thread lets time jump."""
    return fn(*args)


@asynccontextmanager
async def running(tmp_path: Path, sessions, rules=(), *, dry_run=False, repoll_interval_s=0.5,
                  tick_s=0.05, deadline_s=5.0, rule_factory=None, rule_store=None, reconnect=None):
    clock = TrioWallClock()
    store = LatchStore(tmp_path / "state")
    latch = store.load()
    audit = AuditLog(tmp_path / "state" / "audit.jsonl", wall_ms=clock.wall_ms, offload=inline)
    send, receive = trio.open_memory_channel(1000)
    executor = Executor(sessions={s.name: s for s in sessions}, send=send, audit=audit, clock=clock,
                        deadline_s=deadline_s, dry_run=dry_run, offload=inline)
    engine = Engine(rules=list(rules), rule_factory=rule_factory,
                    venues={s.name: s.capabilities for s in sessions}, latch=latch, store=store,
                    audit=audit, executor=executor, clock=clock,
                    budget=lambda v, now: None, repoll_interval_s=repoll_interval_s, dry_run=dry_run,
                    rule_store=rule_store, **({"reconnect": reconnect} if reconnect else {}))
    executor.on_first_cancel = engine.note_first_cancel

    async def ticker():
        while True:
            await trio.sleep(tick_s)
            await send.send(Tick(trio.current_time()))

    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        await nursery.start(executor.run)
        await nursery.start(engine.run, receive)
        for s in sessions:
            await nursery.start(s.run, send)
        nursery.start_soon(ticker)
        h = Harness(engine, executor, send, audit, store, sessions)
        try:
            yield h
        finally:
            nursery.cancel_scope.cancel()
    audit.close()
