"""The simulated OX.FUN exchange: a faithful stand-in (signatures, error codes, rate limits,
keep-alives) that `killswitch demo`, `killswitch sim` and the tests talk to over loopback.

:mod:`.book` holds the pure book/matching state; :mod:`.server` the trio websocket + REST shell.
"""

from killswitch.venues.oxfun.sim.server import OxfunSim

__all__ = ["OxfunSim"]
