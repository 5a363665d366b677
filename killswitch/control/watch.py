"""``killswitch status --watch``: the status view, refreshed in place until Ctrl-C.

On a terminal each refresh clears the screen and redraws from the top (like ``watch(1)``);
piped, each refresh is appended after a blank line so a log of it stays readable. A daemon
that goes away is shown as such and retried at the same interval: an operator watching a
restart sees it come back (TRIPPED, if it was). With ``--json`` each refresh is one JSON
object on one line (JSON lines), with no header and no screen control.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, TextIO

import orjson

from killswitch.control.render import render_status

CLEAR_HOME = "\x1b[H\x1b[2J"
MIN_INTERVAL_S = 0.1


def watch_status(
    fetch: Callable[[], Mapping[str, Any]],
    *,
    out: TextIO,
    interval_s: float = 1.0,
    colour: bool = False,
    count: int | None = None,
    json_lines: bool = False,
    errors: tuple[type[BaseException], ...] = (OSError,),
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> int:
    """Render ``fetch()`` every ``interval_s`` (``count`` times, or until Ctrl-C). Exit status 0."""
    interval_s = max(interval_s, MIN_INTERVAL_S)
    in_place = not json_lines and bool(getattr(out, "isatty", None) and out.isatty())
    shown = 0
    try:
        while count is None or shown < count:
            try:
                reply = fetch()
                body = render_status(reply, colour=colour) if reply.get("ok") else (
                    f"killswitch: status failed: {reply.get('error', 'unknown error')}")
            except errors as exc:
                reply, body = {"ok": False, "error": str(exc), "code": "unreachable"}, f"killswitch: {exc}"
            if json_lines:
                frame = orjson.dumps(reply, default=str).decode() + "\n"
            else:
                header = f"every {interval_s:g}s  {now().strftime('%Y-%m-%d %H:%M:%S UTC')}  (Ctrl-C to stop)"
                frame = (CLEAR_HOME if in_place else ("\n" if shown else "")) + f"{header}\n\n{body}\n"
            out.write(frame)
            out.flush()
            shown += 1
            if count is None or shown < count:
                sleep(interval_s)
    except KeyboardInterrupt:
        out.write("\n")
    return 0
