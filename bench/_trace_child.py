"""`killswitch run` with trip-path trace points, for bench/trace_trip.py (never used in production).

Wraps a few functions of the daemon's classes so each stage of a trip stamps
``time.perf_counter()`` (CLOCK_MONOTONIC, the same clock in every process on Linux, so the
benchmark process can line the stamps up with its own). Stamps are kept in memory and
written as JSON lines to ``$KS_TRACE_OUT`` when the daemon exits.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

import orjson

STAMPS: list[tuple[str, float]] = []


def _stamp(label: str) -> None:
    STAMPS.append((label, time.perf_counter()))


def _dump() -> None:
    out = os.environ.get("KS_TRACE_OUT")
    if out:
        with open(out, "wb") as f:
            f.write(orjson.dumps(STAMPS))


def wrap_sync(cls, name, label):
    """Stamp ``label_in`` / ``label_out`` around every call of ``cls.name``."""
    orig = getattr(cls, name)

    def w(*a, **k):
        _stamp(label + "_in")
        try:
            return orig(*a, **k)
        finally:
            _stamp(label + "_out")

    setattr(cls, name, w)


def _install_spin() -> None:
    """KS_TRACE_SPIN=1: a task that never lets the daemon's core idle (cold-cache experiment)."""
    if not os.environ.get("KS_TRACE_SPIN"):
        return
    import trio

    from killswitch.engine.loop import Engine

    orig_run = Engine.run

    async def run(self, receive, *, task_status=trio.TASK_STATUS_IGNORED):
        async def spin():
            while True:
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as n:
            n.start_soon(spin)
            await orig_run(self, receive, task_status=task_status)

    Engine.run = run


def install() -> None:
    if os.environ.get("KS_TRACE_VENUE") == "nado":
        install_nado()
        return
    import trio

    from killswitch.engine.loop import Engine
    from killswitch.executor import Executor
    from killswitch.venues.oxfun import wire as ox_wire
    from killswitch.venues.oxfun.session import OxfunSession

    orig_recv = trio.SocketStream.receive_some

    async def receive_some(self, max_bytes=None):
        data = await orig_recv(self, max_bytes)
        if data and b"OrderOpened" in data:
            _stamp("a_socket_read")
        return data

    trio.SocketStream.receive_some = receive_some

    orig_parse = ox_wire.parse_frame

    def parse_frame(text, *a, **k):
        if '"OrderOpened"' in text:
            _stamp("b_session_got_message")
        return orig_parse(text, *a, **k)

    ox_wire.parse_frame = parse_frame

    def wrap_async(cls, name, label, pred=None):
        orig = getattr(cls, name)

        async def w(*a, **k):
            hit = pred is None or pred(*a, **k)
            if hit:
                _stamp(label + "_in")
            try:
                return await orig(*a, **k)
            finally:
                if hit:
                    _stamp(label + "_out")

        setattr(cls, name, w)

    wrap_sync(Engine, "_trip", "d_engine_trip")
    wrap_sync(Engine, "_start_round", "e_start_round")
    wrap_sync(Executor, "submit", "f_executor_submit")
    wrap_async(Executor, "_run_job", "g_job")
    wrap_async(OxfunSession, "_ws_send", "h_ws_send", lambda self, live, text: "cancelorder" in text)

    orig_handle = Engine.handle

    def handle(self, ev):
        if type(ev).__name__ == "OrderOpened":
            _stamp("c_engine_handle")
        return orig_handle(self, ev)

    Engine.handle = handle

    if os.environ.get("KS_TRACE_TASKS"):
        # Every task step and I/O wait, to see what runs between two trace points.
        class Steps(trio.abc.Instrument):
            def before_task_step(self, task):
                STAMPS.append(("step:" + task.name.rsplit(".", 1)[-1], time.perf_counter()))

            def before_io_wait(self, timeout):
                STAMPS.append((f"io_wait:{timeout:.4f}", time.perf_counter()))

        orig_run_eng = Engine.run

        async def run_with_instrument(self, receive, *, task_status=trio.TASK_STATUS_IGNORED):
            trio.lowlevel.add_instrument(Steps())
            await orig_run_eng(self, receive, task_status=task_status)

        Engine.run = run_with_instrument

    _install_spin()


def install_nado() -> None:
    """Nado trip path. Stream frames are deflate-compressed on the socket, so the socket read
    is attributed at the websocket layer: the last ``receive_some`` of the endpoint that
    returned a ``placed`` order_update. Labels ending in ``_in``/``_out`` bracket a call."""
    import trio

    from killswitch.engine.loop import Engine
    from killswitch.executor import Executor
    from killswitch.venues.vertex import wire as vx_wire
    from killswitch.net import ws as vx_ws
    from killswitch.venues.vertex.gateway import GatewayConn
    from killswitch.venues.vertex.nonce import NonceSource
    from killswitch.venues.vertex.session import VertexSession
    from killswitch.venues.vertex.signing import FastSigner

    last_read: dict[int, float] = {}
    orig_recv = trio.SocketStream.receive_some

    async def receive_some(self, max_bytes=None):
        data = await orig_recv(self, max_bytes)
        last_read[id(self)] = time.perf_counter()
        if os.environ.get("KS_TRACE_ALL_READS"):
            _stamp("a0_any_socket_read")
        return data

    trio.SocketStream.receive_some = receive_some

    orig_send_all = trio.SocketStream.send_all

    async def send_all(self, data):
        _stamp("l_socket_send_all_in")
        try:
            return await orig_send_all(self, data)
        finally:
            _stamp("l_socket_send_all_out")

    trio.SocketStream.send_all = send_all

    orig_ws_receive = vx_ws.WsEndpoint.receive

    async def ws_receive(self):
        msg = await orig_ws_receive(self)
        if isinstance(msg, str) and '"reason":"placed"' in msg:
            t = last_read.get(id(self._stream))
            if t is not None:
                STAMPS.append(("a_socket_read", t))
            _stamp("b_ws_message")
        return msg

    vx_ws.WsEndpoint.receive = ws_receive

    orig_to_events = vx_wire.to_events

    def to_events(msg, *a, **k):
        _stamp("c_to_events_in")
        try:
            return orig_to_events(msg, *a, **k)
        finally:
            _stamp("c_to_events_out")

    vx_wire.to_events = to_events

    orig_handle = Engine.handle

    def handle(self, ev):
        if type(ev).__name__ == "OrderOpened":
            _stamp("d_engine_handle")
        return orig_handle(self, ev)

    Engine.handle = handle

    def wrap_async_in(cls, name, label):
        orig = getattr(cls, name)

        async def w(*a, **k):
            _stamp(label)
            return await orig(*a, **k)

        setattr(cls, name, w)

    wrap_sync(Engine, "_trip", "e_engine_trip")
    if os.environ.get("KS_TRACE_ENGINE_DETAIL"):  # engine internals of the trip (lead's code)
        from killswitch.audit import AuditLog
        from killswitch.engine import loop as engine_loop
        from killswitch.engine.latch import LatchStore

        wrap_sync(LatchStore, "mark_tripped", "e1_latch_mark_tripped")
        wrap_sync(Engine, "_start_round", "e2_start_round")
        orig_plan = engine_loop.plan_cancels

        def plan_cancels(*a, **k):
            _stamp("e3_plan_in")
            try:
                return orig_plan(*a, **k)
            finally:
                _stamp("e3_plan_out")

        engine_loop.plan_cancels = plan_cancels
        orig_record = AuditLog.record

        def record(self, event, /, **fields):
            if event == "cancel_plan":
                _stamp("e4_audit_cancel_plan_in")
                try:
                    return orig_record(self, event, **fields)
                finally:
                    _stamp("e4_audit_cancel_plan_out")
            return orig_record(self, event, **fields)

        AuditLog.record = record
    wrap_sync(Executor, "submit", "f_executor_submit")
    wrap_async_in(Executor, "_run_job", "g_job_task")
    wrap_async_in(VertexSession, "cancel_orders", "h_session_cancel_orders")
    wrap_async_in(VertexSession, "_cancel_products_both", "h_session_cancel_products")
    wrap_async_in(VertexSession, "_cancel_digests", "i_cancel_digests_task")
    wrap_sync(NonceSource, "next", "j_nonce")
    wrap_sync(FastSigner, "sign_digest", "j_sign")
    wrap_async_in(GatewayConn, "request", "k_gateway_request")

    _install_spin()


def main() -> None:
    install()
    atexit.register(_dump)
    from killswitch.cli import entry

    sys.argv = ["killswitch"] + sys.argv[1:]
    entry()


if __name__ == "__main__":
    main()
