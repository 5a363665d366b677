"""The reference NATS authorisation for a fleet: who may trip, who may reset, who may do neither.

The server enforces it, not the daemons: subjects carry the meaning, so a permission on a
subject is a permission on an action. Four roles:

- **daemon** (one user per instance): publish trips and its own acks and status; read the
  latch; never publish a reset, never write the latch's ``reset`` key.
- **trip** (on-call, a pager bot, a desk "stop" button): ``trip --fleet`` and
  ``status --fleet`` only: publish a trip and the latch's ``trip`` key, read the acks, the
  latch and the status board; never a reset, never the buckets' configuration.
- **operator** (risk staff): everything on the fleet's subjects, both latch keys, and the
  JetStream API (they create the buckets: ``trip --fleet`` does it on first use).
- **strategy**: nothing of the fleet's (its own subjects only).

Every user reads replies only under its own inbox prefix ``_INBOX.<user>`` (the fleet
config's ``inbox_prefix``): no user can subscribe to another's JetStream answers, and no
role may publish into an inbox. Acks are not replies to an inbox: they travel on
``ks.<fleet>.ack.<fleet_trip_id>.<instance>``: a daemon may publish only under its own
instance name, and operators and trip users read them.

:func:`authorization_block` renders the ``authorization { users = [...] }`` block; the
passwords given here are for tests (production uses nkeys or JWT creds with the same
permissions: :func:`permissions` is what a user JWT's ``pub``/``sub`` carry; see docs/fleet.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from killswitch.fleet.subjects import LATCH_RESET_KEY, LATCH_TRIP_KEY, Subjects, check_name

ROLES = ("daemon", "trip", "operator", "strategy")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str
    role: str  # one of ROLES
    instance: str = ""  # daemon: the instance name it publishes status as


def _stream_read(bucket: str) -> list[str]:
    """What reading one key-value bucket needs (nats-py: stream info, then a direct or
    stream message get per key)."""
    return [
        f"$JS.API.STREAM.INFO.KV_{bucket}",
        f"$JS.API.DIRECT.GET.KV_{bucket}.>",
        f"$JS.API.STREAM.MSG.GET.KV_{bucket}",
    ]


def _keys_listing(bucket: str) -> list[str]:
    """Listing a bucket's keys (nats-py's ``kv.keys()``: an ephemeral ordered consumer)."""
    return [
        f"$JS.API.CONSUMER.CREATE.KV_{bucket}",
        f"$JS.API.CONSUMER.CREATE.KV_{bucket}.>",
        f"$JS.API.CONSUMER.INFO.KV_{bucket}.>",
        f"$JS.API.CONSUMER.DELETE.KV_{bucket}.>",
        f"$JS.FC.KV_{bucket}.>",
    ]


def permissions(role: str, subjects: Subjects, instance: str = "", user: str = "") -> dict:
    """The permission lists of ``user`` in ``role``; with a user, replies are allowed only
    under its own inbox prefix (``Subjects.user_inbox``), else under any ``_INBOX``."""
    latch, status = subjects.latch_bucket, subjects.status_bucket
    p = subjects.prefix
    inbox = f"{Subjects.user_inbox(user)}.>" if user else "_INBOX.>"
    no_reset = [subjects.reset, subjects.kv_subject(latch, LATCH_RESET_KEY)]
    if role == "daemon":
        check_name("instance", instance)
        return {
            "publish": {
                "allow": [
                    subjects.trip,
                    subjects.acks_by(instance),
                    subjects.status(instance),
                    subjects.kv_subject(latch, LATCH_TRIP_KEY),
                    subjects.kv_subject(status, instance),
                    "$JS.API.INFO",
                    *_stream_read(latch),
                    f"$JS.API.STREAM.INFO.KV_{status}",
                ],
                "deny": no_reset,
            },
            "subscribe": {"allow": [subjects.trip, subjects.reset, inbox]},
        }
    if role == "trip":
        return {
            "publish": {
                "allow": [
                    subjects.trip,
                    subjects.kv_subject(latch, LATCH_TRIP_KEY),
                    "$JS.API.INFO",
                    *_stream_read(latch),
                    *_stream_read(status),
                    *_keys_listing(status),
                ],
                "deny": no_reset,
            },
            "subscribe": {"allow": [subjects.ack_all, inbox]},
        }
    if role == "operator":
        return {
            "publish": {"allow": [f"{p}.>", f"$KV.{latch}.>", f"$KV.{status}.>", "$JS.API.>", "$JS.FC.>"]},
            "subscribe": {"allow": [f"{p}.>", inbox]},
        }
    if role == "strategy":
        return {
            "publish": {"allow": ["strategy.>"], "deny": [f"{p}.>", "$KV.>", "$JS.API.>"]},
            "subscribe": {"allow": ["strategy.>", inbox]},
        }
    raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")


def authorization_block(fleet: str, users: list[User]) -> str:
    subjects = Subjects(fleet)
    entries = []
    for u in users:
        perms = permissions(u.role, subjects, u.instance, u.name)
        entries.append(
            f"    {{user: {json.dumps(u.name)}, password: {json.dumps(u.password)}, "
            f"permissions: {json.dumps(perms)}}}"
        )
    return "authorization {\n  users = [\n" + ",\n".join(entries) + "\n  ]\n}"
