"""Where SIGUSR1 latency goes, without a venue: a sender process stamps CLOCK_MONOTONIC right
before each ``kill()``; the receiver is an idle trio loop with a 100 ms ticker (like the daemon
between trips) and stamps the Python-level handler, the in-loop callback and the consumer's
``receive()`` (where the engine would trip).

``--mode daemon``: :class:`killswitch.signals.StartupSignals` forwarding with ``run_sync_soon``
straight into a memory channel (what ``killswitch run`` does). ``--mode trio``:
``trio.open_signal_receiver`` + a receiver task + ``await send()`` (before #11).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import trio

from _stats import reproduce_line, summarize

SENDER = """
import os, signal, sys, time
pid, n = int(sys.argv[1]), int(sys.argv[2])
out = []
for _ in range(n):
    time.sleep(0.02)
    t = time.monotonic(); os.kill(pid, signal.SIGUSR1); out.append(t)
    os.read(0, 1)
print(" ".join(map(repr, out)))
"""


async def measure(mode: str, n: int) -> dict[str, list[float]]:
    send, recv = trio.open_memory_channel(100)
    at_handler: list[float] = []
    in_loop: list[float] = []
    received: list[float] = []
    async with trio.open_nursery() as nursery:
        if mode == "daemon":
            from killswitch.signals import StartupSignals

            sigs = StartupSignals()
            sigs.install()
            token = trio.lowlevel.current_trio_token()

            def in_loop_cb(signum: int) -> None:
                in_loop.append(time.monotonic())
                send.send_nowait(signum)

            def deliver(signum: int) -> None:
                at_handler.append(time.monotonic())
                token.run_sync_soon(in_loop_cb, signum)

            sigs.forward_to(deliver)
        else:
            async def receiver(task_status=trio.TASK_STATUS_IGNORED):
                with trio.open_signal_receiver(signal.SIGUSR1) as rx:
                    task_status.started()
                    async for signum in rx:
                        in_loop.append(time.monotonic())
                        await send.send(signum)

            await nursery.start(receiver)

        async def ticker():
            while True:
                await trio.sleep(0.1)

        nursery.start_soon(ticker)
        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(os.getpid()), str(n)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(n):
            await recv.receive()
            received.append(time.monotonic())
            sender.stdin.write(b"x")
            sender.stdin.flush()
        kills = [float(x) for x in sender.communicate()[0].split()]
        nursery.cancel_scope.cancel()
    out = {"kill -> consumer receive": [a - k for a, k in zip(received, kills)],
           "kill -> in-loop callback": [a - k for a, k in zip(in_loop, kills)]}
    if at_handler:
        out["kill -> Python handler"] = [a - k for a, k in zip(at_handler, kills)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["daemon", "trio", "both"], default="both")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    for mode in (["trio", "daemon"] if args.mode == "both" else [args.mode]):
        for stage, values in trio.run(measure, mode, args.n).items():
            print(f"{mode:6} {stage:26} {summarize(values).fmt('ms', 1e3)}")
    print(f"1-min load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(reproduce_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
