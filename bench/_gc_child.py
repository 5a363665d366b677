"""`killswitch run` that records its garbage-collector pauses, for bench/scale.py (diagnosis only).

Each collection is recorded as (start ``time.perf_counter()``, generation, seconds, objects
collected); CLOCK_MONOTONIC is the same clock in every process on Linux, so the benchmark can
place the pauses on its own timeline. Written as JSON to ``$KS_GC_OUT`` when the daemon exits.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time

import orjson

PAUSES: list[tuple[float, int, float, int]] = []
_start = [0.0]


def _cb(phase: str, info: dict) -> None:
    if phase == "start":
        _start[0] = time.perf_counter()
    else:
        PAUSES.append((_start[0], info["generation"], time.perf_counter() - _start[0], info.get("collected", 0)))


def _dump() -> None:
    out = os.environ.get("KS_GC_OUT")
    if out:
        with open(out, "wb") as f:
            f.write(orjson.dumps(PAUSES))


def main() -> None:
    gc.callbacks.append(_cb)
    atexit.register(_dump)
    from killswitch.cli import entry

    sys.argv = ["killswitch"] + sys.argv[1:]
    entry()


if __name__ == "__main__":
    main()
