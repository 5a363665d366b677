"""The machine's floor under a two-process trip: loopback TCP round trips between two idle
processes pinned to different cores, as the sim (bench process, CPU 0) and the daemon (child,
CPU 1) are in trip_latency.py.

A trip needs at least two cross-process hops: the breaching frame sim -> daemon and the
cancel daemon -> sim. Each lands on a process blocked in the kernel whose CPU is idle (the
daemon between trips, the sim after it wrote the frame), so each pays the kernel + hypervisor
wake-up of an idle CPU. One round trip here = those two hops with no work in between (plain
blocking sockets, no event loop, a 1-byte payload): what is left of a trip-latency target
for everything else. ``--gap`` is the idle time between round trips (trip_latency's pace).

    .venv/bin/python bench/wakeup_floor.py [--gap 0.2] [--n 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from _stats import reproduce_line, summarize


def run(gap_s: float, n: int, same_core: bool) -> list[float]:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    cpus = os.sched_getaffinity(0)
    pin = len(cpus) >= 2 and {0, 1} <= cpus
    pid = os.fork()
    if pid == 0:  # the "daemon": echo every byte back
        if pin:
            os.sched_setaffinity(0, {0} if same_core else {1})
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            d = c.recv(64)
            if not d:
                os._exit(0)
            c.sendall(d)
    if pin:
        os.sched_setaffinity(0, {0})
    s, _ = ls.accept()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    try:
        for i in range(n + 10):
            t = time.perf_counter()
            s.sendall(b"x")
            s.recv(64)
            if i >= 10:
                out.append(time.perf_counter() - t)
            if gap_s:
                time.sleep(gap_s)
    finally:
        s.close()
        ls.close()
        os.waitpid(pid, 0)
        if pin:
            os.sched_setaffinity(0, cpus)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gap", type=float, default=0.2, help="idle seconds between round trips")
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    for label, gap, same in ((f"idle {args.gap}s between, cores 0/1", args.gap, False),
                             ("back to back, cores 0/1", 0.0, False)):
        s = summarize(run(gap, args.n, same))
        print(f"loopback TCP round trip, two processes, {label}: {s.fmt('us', 1e6, 0)}")
    print(f"1-min load avg {load0:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(reproduce_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
