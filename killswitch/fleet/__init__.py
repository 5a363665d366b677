"""The fleet: one trip, latch and status across every killswitch instance, over NATS.

Layout (imports go one way, top to bottom):

- ``subjects``   subject and bucket names for one fleet
- ``messages``   the wire schemas (frozen dataclasses) and their strict codec
- ``policy``     the bus-loss state machine (pure)
- ``acks``       acknowledgement aggregation for ``trip --fleet`` (pure)
- ``settings``   connection settings, backoff, ``nats.connect`` arguments (pure)
- ``config``     the ``fleet:`` YAML section -> FleetConfig
- ``serverconf`` the reference NATS permissions (daemon / trip / operator / strategy)
- ``bus``        the nats-py client on its own thread and asyncio loop (the daemon's bus I/O)
- ``service``    the daemon side: bridges bus <-> engine channel, never on the trip path
- ``operator``   the CLI side: ``trip/reset/status --fleet`` (plain asyncio)
- ``natsserver`` a local ``nats-server`` (JetStream, temp store) for tests and benches

Each daemon stays autonomous: its rules, latch and cancel path never wait on the bus.
"""
