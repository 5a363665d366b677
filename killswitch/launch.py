"""Process entry for ``killswitch`` and ``python -m killswitch``.

For ``run``, the signal handlers go in before anything else happens (argparse, trio, the
config): see :mod:`killswitch.signals`. Nothing heavy is imported at module level here.
"""

from __future__ import annotations

import sys

from killswitch.signals import StartupSignals, StopBeforeStart


def main() -> None:
    signals = None
    if sys.argv[1:2] == ["run"]:  # argv as given: parsing it would come after the handlers
        signals = StartupSignals()
        signals.install()
    try:
        from killswitch.cli import entry

        entry(signals)
    except StopBeforeStart as stop:
        print(stop.describe(), file=sys.stderr)
        sys.exit(0)
