"""The reference NATS authorisation for a fleet: who may trip, who may reset, who may do neither.

The server enforces it, not the daemons: subjects carry the meaning, so a permission on a
subject is a permission on an action. Three roles:

- **daemon** (one user per instance): publish trips and its own acks and status; read the
  latch; never publish a reset, never write the latch's ``reset`` key.
- **operator** (risk staff): everything on the fleet's subjects, both latch keys, and the
  JetStream API (they create the buckets: ``trip --fleet`` does it on first use).
- **strategy**: nothing of the fleet's (its own subjects only).

:func:`authorization_block` renders the ``authorization { users = [...] }`` block; the
passwords given here are for tests (production uses nkeys or JWT creds with the same
permissions; see docs/fleet.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from killswitch.fleet.subjects import LATCH_RESET_KEY, LATCH_TRIP_KEY, Subjects, check_name


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str
    role: str  # daemon | operator | strategy
    instance: str = ""  # daemon: the instance name it publishes status as


def permissions(role: str, subjects: Subjects, instance: str = "") -> dict:
    latch, status = subjects.latch_bucket, subjects.status_bucket
    p = subjects.prefix
    if role == "daemon":
        check_name("instance", instance)
        return {
            "publish": {
                "allow": [
                    subjects.trip,
                    subjects.ack_all,
                    subjects.status(instance),
                    subjects.kv_subject(latch, LATCH_TRIP_KEY),
                    subjects.kv_subject(status, instance),
                    "$JS.API.INFO",
                    f"$JS.API.STREAM.INFO.KV_{latch}",
                    f"$JS.API.STREAM.INFO.KV_{status}",
                    f"$JS.API.DIRECT.GET.KV_{latch}.>",
                    f"$JS.API.STREAM.MSG.GET.KV_{latch}",
                ],
                "deny": [subjects.reset, subjects.kv_subject(latch, LATCH_RESET_KEY)],
            },
            "subscribe": {"allow": [subjects.trip, subjects.reset, "_INBOX.>"]},
        }
    if role == "operator":
        return {
            "publish": {"allow": [f"{p}.>", f"$KV.{latch}.>", f"$KV.{status}.>", "$JS.API.>"]},
            "subscribe": {"allow": [f"{p}.>", "_INBOX.>"]},
        }
    if role == "strategy":
        return {
            "publish": {"allow": ["strategy.>"], "deny": [f"{p}.>", "$KV.>", "$JS.API.>"]},
            "subscribe": {"allow": ["strategy.>", "_INBOX.>"]},
        }
    raise ValueError(f"unknown role {role!r}")


def authorization_block(fleet: str, users: list[User]) -> str:
    subjects = Subjects(fleet)
    entries = []
    for u in users:
        perms = permissions(u.role, subjects, u.instance)
        entries.append(
            f"    {{user: {json.dumps(u.name)}, password: {json.dumps(u.password)}, "
            f"permissions: {json.dumps(perms)}}}"
        )
    return "authorization {\n  users = [\n" + ",\n".join(entries) + "\n  ]\n}"
