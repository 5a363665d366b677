"""Shared helpers for the benchmarks: percentiles, repeated runs, the reproduce line.

Not part of the test run. Every benchmark prints its figures and the exact command that
reproduces them, so a number in the docs can always be re-measured.
"""

from __future__ import annotations

import os
import shlex
import statistics
import sys
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float

    def fmt(self, unit: str = "ms", scale: float = 1.0, digits: int = 3) -> str:
        f = lambda v: f"{v * scale:.{digits}f}"  # noqa: E731 - local formatting helper
        return (f"n={self.n} p50={f(self.p50)}{unit} p90={f(self.p90)}{unit} p99={f(self.p99)}{unit} "
                f"p99.9={f(self.p999)}{unit} max={f(self.max)}{unit} mean={f(self.mean)}{unit}")

    def as_dict(self, scale: float = 1.0) -> dict:
        return {k: round(getattr(self, k) * scale, 6) if k != "n" else self.n
                for k in ("n", "p50", "p90", "p99", "p999", "max", "mean")}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def summarize(values: Sequence[float]) -> Summary:
    s = sorted(values)
    return Summary(len(s), percentile(s, 50), percentile(s, 90), percentile(s, 99), percentile(s, 99.9),
                   s[-1] if s else float("nan"), statistics.fmean(s) if s else float("nan"))


def median_of(summaries: Sequence[Summary], field: str) -> float:
    return statistics.median(getattr(s, field) for s in summaries)


def reproduce_line() -> str:
    """The command that re-runs this benchmark with the same arguments."""
    argv = [os.path.relpath(sys.argv[0])] + sys.argv[1:]
    return "reproduce: .venv/bin/python " + " ".join(shlex.quote(a) for a in argv)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
