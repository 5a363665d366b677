"""A venue session running degraded (VenueDegraded) is one alarm while it lasts, cleared when
the session reports the mode over (issue #13 item 9: a refused stream authentication)."""

from __future__ import annotations

import trio

from killswitch.model import VenueDegraded

from .fakes import FakeSession
from .harness import running


async def test_degraded_mode_is_one_alarm_until_cleared(tmp_path, autojump_clock):
    with trio.fail_after(60):
        nado = FakeSession("nado")
        async with running(tmp_path, [nado]) as h:
            for _ in range(3):  # re-sent on every reconnect: one alarm, one audit record
                await h.send.send(VenueDegraded("nado", "stream_auth_refused", "stream auth refused; polling",
                                                ts_recv_s=trio.current_time()))
            await h.until(lambda: "stream_auth_refused:nado" in h.engine.alarms)
            assert h.engine.alarms["stream_auth_refused:nado"] == "nado: stream auth refused; polling"
            await h.send.send(VenueDegraded("nado", "stream_auth_refused", active=False,
                                            ts_recv_s=trio.current_time()))
            await h.until(lambda: "stream_auth_refused:nado" not in h.engine.alarms)
            recs = await h.audit_records()
        assert [(r["event"], r["key"]) for r in recs if r["event"] in ("alarm", "alarm_cleared")] == [
            ("alarm", "stream_auth_refused:nado"), ("alarm_cleared", "stream_auth_refused:nado")]
