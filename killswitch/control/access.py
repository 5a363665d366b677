"""Who may do what on the control socket: roles, grants, and the per-uid connection budget.

The guarded strategy usually runs on the same host. It must be able to send heartbeats (and,
fail-closed, to trip), never to re-arm the latch or to declare a cash flow that hides a loss.
So every request is checked against a role derived from the peer's kernel credentials
(``SO_PEERCRED``), never from the self-declared ``operator`` field:

    trip       < heartbeat               < operator
    trip,status  + heartbeat                + reset, cash_flow, reload, reopen, debug ops

root and the daemon's own uid are operators. Names in the config are resolved to ids when the
config is loaded or reloaded (:func:`resolve_access`), so a request never waits on NSS (LDAP,
``getgrall()``). Pure: no I/O here except the resolver's injected look-ups.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from killswitch.config.loader import ControlGrants, Grant


class Role(enum.IntEnum):
    TRIP = 1
    HEARTBEAT = 2
    OPERATOR = 3


# The least role each request needs. Anything that may heartbeat may also trip: a principal
# trusted to keep the switch quiet is trusted to pull it (fail closed), never to re-arm it.
OP_ROLES: Mapping[str, Role] = {
    "status": Role.TRIP,
    "trip": Role.TRIP,
    "heartbeat": Role.HEARTBEAT,
    "reset": Role.OPERATOR,
    "cash_flow": Role.OPERATOR,
    "reload": Role.OPERATOR,
    "reopen": Role.OPERATOR,
    "debug_wedge": Role.OPERATOR,
}


class AccessError(Exception):
    """A configured user or group does not exist (refused at start-up and on reload)."""


@dataclass(frozen=True, slots=True)
class ResolvedGrant:
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    # uids listed as members of ``gids`` in the group database, read once at resolution so a
    # request never calls getgrall() (it can block the event loop where /proc is hidden).
    member_uids: frozenset[int] = frozenset()

    def covers(self, uid: int, gid: int, groups: frozenset[int]) -> bool:
        return uid in self.uids or uid in self.member_uids or gid in self.gids or bool(self.gids & groups)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    own_uid: int
    grants: Mapping[Role, ResolvedGrant] = field(default_factory=dict)
    names: Mapping[int, str] = field(default_factory=dict)  # uid -> user name, for audit records

    def role_of(self, uid: int, gid: int, groups: frozenset[int] = frozenset()) -> Role | None:
        if uid == 0 or uid == self.own_uid:
            return Role.OPERATOR
        for role in (Role.OPERATOR, Role.HEARTBEAT, Role.TRIP):
            grant = self.grants.get(role)
            if grant is not None and grant.covers(uid, gid, groups):
                return role
        return None

    def needs_groups(self) -> bool:
        """Whether a peer's supplementary groups can change its role (then /proc is read)."""
        return any(g.gids for g in self.grants.values())

    def user_name(self, uid: int) -> str:
        return self.names.get(uid, f"uid:{uid}")


def allowed(role: Role | None, op: str) -> bool:
    need = OP_ROLES.get(op)
    return role is not None and need is not None and role >= need


def grants_by_role(grants: ControlGrants) -> dict[Role, Grant]:
    return {Role.OPERATOR: grants.operators, Role.HEARTBEAT: grants.heartbeat, Role.TRIP: grants.trip}


def resolve_access(grants: ControlGrants, *, own_uid: int, legacy_group: str | None,
                   getpwnam: Callable[[str], object], getgrnam: Callable[[str], object],
                   getpwuid: Callable[[int], object]) -> AccessPolicy:
    """Names -> ids, once. ``legacy_group`` (``control_socket_group``) keeps its old meaning:
    every member may do everything, i.e. it is an operator grant."""
    problems: list[str] = []
    resolved: dict[Role, ResolvedGrant] = {}
    names: dict[int, str] = {}
    by_role = grants_by_role(grants)
    if legacy_group:
        op = by_role[Role.OPERATOR]
        by_role[Role.OPERATOR] = Grant(op.users, tuple(dict.fromkeys(op.groups + (legacy_group,))))
    for role, grant in by_role.items():
        uids: set[int] = set()
        gids: set[int] = set()
        members: set[int] = set()
        for user in grant.users:
            try:
                pw = getpwnam(user)
            except KeyError:
                problems.append(f"control {role.name.lower()}: no such user {user!r}")
                continue
            uids.add(pw.pw_uid)
            names[pw.pw_uid] = user
        for group in grant.groups:
            try:
                gr = getgrnam(group)
            except KeyError:
                problems.append(f"control {role.name.lower()}: no such group {group!r}")
                continue
            gids.add(gr.gr_gid)
            for member in _members(gr):
                try:
                    pw = getpwnam(member)
                except KeyError:
                    continue
                members.add(pw.pw_uid)
                names[pw.pw_uid] = member
        if uids or gids:
            resolved[role] = ResolvedGrant(frozenset(uids), frozenset(gids), frozenset(members))
    if problems:
        raise AccessError("; ".join(problems))
    for uid in (0, own_uid):
        try:
            names.setdefault(uid, getpwuid(uid).pw_name)
        except KeyError:
            pass
    return AccessPolicy(own_uid=own_uid, grants=resolved, names=names)


def _members(gr: object) -> Iterable[str]:
    return getattr(gr, "gr_mem", ()) or ()


@dataclass(slots=True)
class ConnectionBudget:
    """Control connections held at once: a cap per uid and a global cap, with slots kept for
    operators, so that no number of idle connections from one principal (a strategy that
    leaks sockets) can keep ``killswitch trip`` or ``reset`` out.

    Mutable, owned by the server task; ``admit`` and ``release`` are O(1)."""

    per_uid: int = 8
    shared: int = 48
    operator_reserve: int = 16
    held: dict[int, int] = field(default_factory=dict)
    shared_used: int = 0
    reserve_used: int = 0

    def admit(self, uid: int, role: Role | None) -> str | None:
        """Take a slot for ``uid``: returns the pool it came from, or None (refuse: busy)."""
        n = self.held.get(uid, 0)
        operator = role is Role.OPERATOR
        if n >= self.per_uid and not (operator and uid == 0):
            return None
        if self.shared_used < self.shared:
            self.shared_used += 1
            pool = "shared"
        elif operator and self.reserve_used < self.operator_reserve:
            self.reserve_used += 1
            pool = "reserve"
        else:
            return None
        self.held[uid] = n + 1
        return pool

    def release(self, uid: int, pool: str) -> None:
        if pool == "shared":
            self.shared_used -= 1
        else:
            self.reserve_used -= 1
        n = self.held.get(uid, 1) - 1
        if n:
            self.held[uid] = n
        else:
            self.held.pop(uid, None)

    @property
    def total(self) -> int:
        return self.shared + self.operator_reserve
