"""Start-up signal window: how long after exec a ``killswitch run`` process still dies of a
SIGUSR1/SIGHUP (default action), i.e. the time until its handlers are in place.

Spawns ``python -m killswitch run -c CONFIG`` N times and polls ``/proc/PID/status`` (SigCgt)
every 0.2 ms until SIGUSR1, SIGHUP, SIGTERM and SIGINT are all caught, then SIGKILLs it.
For comparison it also times a bare interpreter to its first line of code (the part no
Python code can cover). The config need not be valid: the handlers come before it is read.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _stats import reproduce_line, summarize

REPO = Path(__file__).resolve().parents[1]
WANT = {int(s) for s in (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}


def caught(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    mask = int(line.split()[1], 16)
                    return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    except OSError:
        pass
    return set()


def handlers_after_exec_s(config: Path, env: dict[str, str]) -> float:
    p = subprocess.Popen([sys.executable, "-m", "killswitch", "run", "-c", str(config)], env=env, cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while not WANT <= caught(p.pid):
            if p.poll() is not None:
                raise RuntimeError(f"exited {p.returncode} before installing handlers")
            time.sleep(0.0002)
        return time.monotonic() - t0
    finally:
        p.kill()
        p.wait()


def first_line_after_exec_s(env: dict[str, str]) -> float:
    r, w = os.pipe()
    p = subprocess.Popen([sys.executable, "-c", "import os; os.write(1, b'x')"], stdout=w, env=env)
    t0 = time.monotonic()
    os.close(w)
    os.read(r, 1)
    t = time.monotonic() - t0
    os.close(r)
    p.wait()
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="processes to start")
    args = ap.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "killswitch.yaml"
        config.write_text("daemon: {state_dir: " + tmp + "/state}\n")
        ks = summarize([handlers_after_exec_s(config, env) for _ in range(args.n)])
        bare = summarize([first_line_after_exec_s(env) for _ in range(args.n)])
    print(f"exec -> killswitch run's handlers in place: {ks.fmt('ms', 1e3, 1)}")
    print(f"exec -> a bare interpreter's first line:    {bare.fmt('ms', 1e3, 1)}")
    print(f"1-min load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(reproduce_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
