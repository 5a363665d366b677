"""The real daemon as its own process, driven like production: ``killswitch run -c FILE``.

The benchmarks run the simulated venues (and the probe that stamps their frames) in the
benchmark's own process and the daemon in a child process, so each gets a core on the
2-core machine, as on a desk where the venue is another machine. Both stamps of a latency
figure are taken in the benchmark process (the sim writes the breaching frame, the sim reads
the cancel), so no cross-process clock is involved. The daemon is observed and commanded
only through its public surfaces: the control socket (status / trip / reset), SIGUSR1 and
/proc/PID/status for memory.

``pin=True`` puts the daemon on CPU 1 and the benchmark process on CPU 0 (sched_setaffinity),
so the scheduler does not migrate either between cores mid-run; it is reported with the
figures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Mapping

import trio

from killswitch.control import AsyncControlClient, ControlError


def rss_mb(pid: int | str = "self", field_name: str = "VmRSS") -> float:
    """Resident set (VmRSS) or its peak (VmHWM) of a process, in MiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(slots=True)
class DaemonProcess:
    proc: subprocess.Popen
    state_dir: Path
    control_path: Path
    config_path: Path
    log_path: Path
    _client: AsyncControlClient | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self, field_name: str = "VmRSS") -> float:
        return rss_mb(self.pid, field_name)

    async def request(self, obj: Mapping) -> dict:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}; log: {self.log_path}")
        if self._client is None:
            c = AsyncControlClient(self.control_path, timeout_s=30)
            await c.__aenter__()
            self._client = c
        return await self._client.request(obj)

    async def status(self) -> dict:
        return await self.request({"op": "status"})

    async def trip(self, reason: str = "bench", **scope) -> dict:
        return await self.request({"op": "trip", "reason": reason, "operator": "bench", **scope})

    async def reset(self, reason: str = "next round") -> dict:
        return await self.request({"op": "reset", "operator": "bench", "reason": reason})

    def sigusr1(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    async def wait_status(self, pred, timeout_s: float = 30.0, poll_s: float = 0.005) -> dict:
        """Poll status until ``pred(status)``; the last status is returned."""
        with trio.fail_after(timeout_s):
            while True:
                st = await self.status()
                if pred(st):
                    return st
                await trio.sleep(poll_s)

    async def close(self) -> None:
        if self._client is not None:
            try:
                await self._client.__aexit__(None, None, None)
            except (OSError, ControlError, trio.BrokenResourceError):
                pass
            self._client = None


def die_with_parent() -> None:
    """``preexec_fn`` for a bench's children: SIGKILL when the bench dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG), so no daemon outlives the bench that started it."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def stop_child(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; blocking (call it shielded or at exit)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def daemon_process(yaml_text: str, env: Mapping[str, str], *, state_dir: Path | None = None,
                         pin: bool = True, ready_timeout_s: float = 180.0,
                         module: str = "killswitch.cli",
                         ready=lambda st: st.get("ready") and all(v["connected"] for v in st["venues"].values()),
                         ) -> AsyncIterator[DaemonProcess]:
    """Write the config, start ``killswitch run`` and yield once ``ready(status)`` holds.

    Every ``{state}`` in ``yaml_text`` becomes the state directory. The secrets travel in the
    child's environment only (the config holds ``{env: NAME}`` references).
    """
    state = state_dir or Path(tempfile.mkdtemp(prefix="ks-bench-", dir=os.environ.get("KS_BENCH_STATE_PARENT")))
    cfg = state / "bench.yaml"
    cfg.write_text(yaml_text.replace("{state}", str(state)))
    os.chmod(cfg, 0o600)
    log_path = state / "daemon.out"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KILLSWITCH_")}
    child_env.update(env)
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), child_env.get("PYTHONPATH")) if p)
    cpus = os.sched_getaffinity(0)
    pin_ok = pin and len(cpus) >= 2 and {0, 1} <= cpus
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, "run", "-c", str(cfg)],
                                env=child_env, stdout=log, stderr=subprocess.STDOUT, cwd=state,
                                preexec_fn=die_with_parent)
    if pin_ok:
        os.sched_setaffinity(proc.pid, {1})
        os.sched_setaffinity(0, {0})
    dp = DaemonProcess(proc, state, state / "control.sock", cfg, log_path)
    try:
        with trio.fail_after(ready_timeout_s):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {proc.returncode} during startup; "
                                       f"log: {log_path}\n{log_path.read_text()[-3000:]}")
                if dp.control_path.exists():
                    try:
                        st = await dp.status()
                        if ready(st):
                            break
                    except (OSError, ControlError, trio.BrokenResourceError):
                        await dp.close()
                await trio.sleep(0.05)
        yield dp
    finally:
        # Shielded: a cancelled caller (a fail_after that fired, a nursery being torn down)
        # must still stop the child, or it is left running and eating a core.
        # dp.proc, not the first Popen: a bench may have restarted the daemon (bench/fleet.py
        # does), and the one running now is the one to stop.
        with trio.CancelScope(shield=True):
            await dp.close()
            await trio.to_thread.run_sync(stop_child, dp.proc)
        if pin_ok:
            os.sched_setaffinity(0, cpus)
