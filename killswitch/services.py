"""The daemon's operational services: systemd notify, control socket, metrics.

Each is ``async fn(daemon, *, task_status)``, started in the daemon's nursery before the
venues connect (so a manual trip over the socket works during start-up too).
"""

from __future__ import annotations

from killswitch.config import Config


def default_services(cfg: Config) -> list:
    from killswitch.control import control_service
    from killswitch.systemd import notify_service

    services = [notify_service, control_service]
    if cfg.fleet is not None:
        from killswitch.fleet.service import fleet_service

        services.append(fleet_service)
    if cfg.daemon.metrics.enabled:
        from killswitch.metrics import metrics_service

        services.append(metrics_service)
    return services
