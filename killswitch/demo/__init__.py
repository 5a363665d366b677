"""The embedded default: `killswitch demo` (the real daemon against the built-in simulated
exchanges, loopback only) and `killswitch sim` (the simulators on their own, for rehearsals).

:mod:`.world` builds the simulated venues and the generated config, :mod:`.report` renders
what the demo shows, :mod:`.run` drives it, :mod:`.simcli` serves the simulators standalone.
"""
