"""Transport shared by every venue, the simulators and the metrics endpoint: websocket
framing and handshake (:mod:`.ws`), the one verifying TLS context (:mod:`.tls`), a small
h11 HTTP server (:mod:`.http`). No venue owns it; it imports no venue.
"""
