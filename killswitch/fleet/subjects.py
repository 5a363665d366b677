"""Subject and bucket names for one fleet.

Everything lives under ``ks.<fleet>.`` so one NATS account can carry several fleets and a
permission like ``ks.prod.>`` scopes a credential to one of them. The two key-value buckets
are JetStream streams named ``KV_<bucket>``; their keys are separate subjects, which is what
lets the server's permissions tell a trip (``trip`` key) from a reset (``reset`` key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a NATS token: no '.', '*', '>' or spaces
# A literal subject (tokens of NAME_RE joined by '.'; no wildcards), e.g. an inbox prefix.
SUBJECT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$")

LATCH_TRIP_KEY = "trip"
LATCH_RESET_KEY = "reset"


def check_name(what: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"{what} {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


@dataclass(frozen=True, slots=True)
class Subjects:
    fleet: str

    def __post_init__(self) -> None:
        check_name("fleet name", self.fleet)

    @property
    def prefix(self) -> str:
        return f"ks.{self.fleet}"

    @property
    def trip(self) -> str:
        return f"{self.prefix}.trip"

    @property
    def reset(self) -> str:
        return f"{self.prefix}.reset"

    def ack(self, fleet_trip_id: str, instance: str) -> str:
        """Where ``instance`` acknowledges a trip: the instance is in the subject, so the
        server's permissions let a daemon credential publish its own acks only."""
        return f"{self.prefix}.ack.{fleet_trip_id}.{instance}"

    def acks_of_trip(self, fleet_trip_id: str) -> str:
        """Every instance's acks of one trip (what ``trip --fleet`` subscribes to); also the
        trip message's reply subject, naming where the acks go."""
        return f"{self.prefix}.ack.{fleet_trip_id}.*"

    def acks_by(self, instance: str) -> str:
        """Every ack ``instance`` may publish (its daemon role's permission)."""
        return f"{self.prefix}.ack.*.{instance}"

    @staticmethod
    def ack_sender(subject: str) -> str:
        """The instance an ack subject names (its last token)."""
        return subject.rsplit(".", 1)[-1]

    @property
    def ack_all(self) -> str:
        return f"{self.prefix}.ack.>"

    def status(self, instance: str) -> str:
        return f"{self.prefix}.status.{instance}"

    @property
    def status_all(self) -> str:
        return f"{self.prefix}.status.*"

    @property
    def latch_bucket(self) -> str:
        return f"ks_{self.fleet}_latch"

    @property
    def status_bucket(self) -> str:
        return f"ks_{self.fleet}_status"

    @staticmethod
    def user_inbox(user: str) -> str:
        """The inbox prefix for one NATS user (``inbox_prefix`` in its fleet config)."""
        return f"_INBOX.{check_name('NATS user', user)}"

    def kv_subject(self, bucket: str, key: str) -> str:
        """The subject a key-value put publishes to (what server permissions match)."""
        return f"$KV.{bucket}.{key}"
