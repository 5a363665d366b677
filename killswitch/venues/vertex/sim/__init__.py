"""The simulated Vertex / Nado exchange (gateway websocket + REST, subscription stream, trigger
service): faithful signatures, nonce windows, weights and error codes, over loopback.

:mod:`.core` is the pure exchange state (sans-io); :mod:`.server` the trio shell.
"""

from killswitch.venues.vertex.sim.server import VertexSim

__all__ = ["VertexSim"]
