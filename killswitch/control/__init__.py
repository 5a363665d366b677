"""The control socket: an AF_UNIX stream socket speaking JSON lines, plus its clients and CLI.

Protocol: one JSON object per line in, one JSON object per line out, on a connection that
may carry many requests (a strategy sends heartbeats many times a second on one
connection). Every reply has ``"ok"``; failures carry ``"error"`` (and ``"code"``). A
request may carry ``"id"``, echoed back.

    {"op":"status"}
    {"op":"trip","reason":"..","operator":"..","venues":[..]?,"products":[..]?}
    {"op":"reset","operator":"..","reason":".."}
    {"op":"heartbeat","source":".."}
    {"op":"cash_flow","venue":"..","amount":"-250.5","operator":".."}
    {"op":"reopen"}   (audit log + latch intent, e.g. logrotate's postrotate)

Who may talk: root, the daemon's own uid, and members of ``control_socket_group`` (checked
with SO_PEERCRED on every connection, behind the socket's file mode). Everyone else gets
one error reply, and the refusal is logged and audited (``control_refused``).

Every command goes through the engine's event channel like any other event, so the engine
stays the single writer of risk state; ``trip`` and ``reset`` reply only once the engine has
acted (bounded by a deadline), so "ok" is evidence, not hope.

Modules: :mod:`.protocol` (pure request/peer/reply core), :mod:`.render` (status text),
:mod:`.server` (the trio shell), :mod:`.client` (clients and the CLI verbs).
"""

from killswitch.control.client import (
    AsyncControlClient,
    ControlClient,
    ControlError,
    ControlPermissionDenied,
    DaemonNotRunning,
    build_cli_request,
    run_cli,
)
from killswitch.control.protocol import MAX_REQUEST_BYTES, ControlSetupError, RequestError
from killswitch.control.render import render_command_reply, render_status
from killswitch.control.server import ControlServer, control_service, prepare_socket_path

__all__ = [
    "MAX_REQUEST_BYTES",
    "AsyncControlClient",
    "ControlClient",
    "ControlError",
    "ControlPermissionDenied",
    "ControlServer",
    "ControlSetupError",
    "DaemonNotRunning",
    "RequestError",
    "build_cli_request",
    "control_service",
    "prepare_socket_path",
    "render_command_reply",
    "render_status",
    "run_cli",
]
