"""`killswitch run` under tracemalloc, for bench/scale.py --tracemalloc (diagnosis only).

tracemalloc starts before the daemon imports anything; SIGUSR2 (not used by the daemon)
writes a snapshot to ``$KS_TRACEMALLOC_OUT``. Tracing slows the daemon and adds its own
memory, so figures from this mode are for finding what holds memory, never for the table.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _dump(signum, frame) -> None:
    out = os.environ["KS_TRACEMALLOC_OUT"]
    rss = [("before", _rss_kb())]
    gc.collect()
    rss.append(("after gc.collect", _rss_kb()))
    tracemalloc.take_snapshot().dump(out + ".tmp")
    rss.append(("after snapshot", _rss_kb()))
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        rss.append(("after malloc_trim(0)", _rss_kb()))
    except OSError:
        pass
    with open(out + ".rss", "w") as f:
        f.write("\n".join(f"{k}: {v / 1024:.1f} MiB" for k, v in rss) + "\n")
    os.replace(out + ".tmp", out)


def main() -> None:
    tracemalloc.start(int(os.environ.get("KS_TRACEMALLOC_FRAMES", "8")))
    signal.signal(signal.SIGUSR2, _dump)
    from killswitch.cli import entry

    sys.argv = ["killswitch"] + sys.argv[1:]
    entry()


if __name__ == "__main__":
    main()
