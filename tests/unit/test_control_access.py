"""Control-socket roles and connection slots (pure): who may do what, and who gets a slot."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from killswitch.config.loader import ControlGrants, Grant
from killswitch.control.access import (
    OP_ROLES,
    AccessError,
    ConnectionBudget,
    Role,
    allowed,
    resolve_access,
)

OWN = 990
USERS = {"root": 0, "ks": OWN, "mm-bot": 1001, "alice": 1002, "bob": 1003, "pager": 1004}
GROUPS = {"risk": (3000, ("alice",)), "bots": (3001, ()), "oncall": (3002, ("pager",))}


def getpwnam(name):
    if name not in USERS:
        raise KeyError(name)
    return SimpleNamespace(pw_uid=USERS[name], pw_name=name)


def getpwuid(uid):
    for name, u in USERS.items():
        if u == uid:
            return SimpleNamespace(pw_uid=uid, pw_name=name)
    raise KeyError(uid)


def getgrnam(name):
    if name not in GROUPS:
        raise KeyError(name)
    gid, members = GROUPS[name]
    return SimpleNamespace(gr_gid=gid, gr_mem=list(members))


def policy(grants=ControlGrants(), legacy=None):
    return resolve_access(grants, own_uid=OWN, legacy_group=legacy, getpwnam=getpwnam, getgrnam=getgrnam,
                          getpwuid=getpwuid)


DESK = ControlGrants(operators=Grant(groups=("risk",)), heartbeat=Grant(users=("mm-bot",)),
                     trip=Grant(groups=("oncall",)))


@pytest.mark.parametrize("uid, gid, groups, role", [
    (0, 0, frozenset(), Role.OPERATOR),                 # root
    (OWN, OWN, frozenset(), Role.OPERATOR),             # the daemon's own user
    (1001, 1001, frozenset(), Role.HEARTBEAT),          # the strategy, by user name
    (1002, 1002, frozenset(), Role.OPERATOR),           # alice: member of risk in the group db
    (1003, 3000, frozenset(), Role.OPERATOR),           # bob: primary group risk
    (1003, 1003, frozenset({3000}), Role.OPERATOR),     # bob: supplementary (from /proc)
    (1004, 1004, frozenset(), Role.TRIP),               # pager: member of oncall
    (1003, 1003, frozenset(), None),                    # bob without the group: no role
    (4242, 4242, frozenset({3001}), None),              # a group that holds no role
])
def test_role_comes_from_kernel_credentials_and_resolved_grants(uid, gid, groups, role):
    assert policy(DESK).role_of(uid, gid, groups) is role


@pytest.mark.parametrize("role, op, ok", [
    (Role.HEARTBEAT, "heartbeat", True),
    (Role.HEARTBEAT, "status", True),
    (Role.HEARTBEAT, "trip", True),       # may keep the switch quiet => may pull it
    (Role.HEARTBEAT, "reset", False),     # never re-arm
    (Role.HEARTBEAT, "cash_flow", False),  # never hide a loss
    (Role.HEARTBEAT, "reload", False),
    (Role.HEARTBEAT, "reopen", False),
    (Role.TRIP, "trip", True),
    (Role.TRIP, "status", True),
    (Role.TRIP, "heartbeat", False),
    (Role.OPERATOR, "reset", True),
    (Role.OPERATOR, "cash_flow", True),
    (None, "status", False),
    (Role.OPERATOR, "no_such_op", False),
])
def test_each_op_needs_its_role(role, op, ok):
    assert allowed(role, op) is ok


def test_every_protocol_op_has_a_role():
    from killswitch.control.protocol import OPS

    assert set(OPS) <= set(OP_ROLES)


def test_unknown_user_or_group_is_refused_naming_it():
    with pytest.raises(AccessError, match="operator: no such group 'nogroup'; control heartbeat: no such user 'ghost'"):
        policy(ControlGrants(heartbeat=Grant(users=("ghost",)), operators=Grant(groups=("nogroup",))))


def test_legacy_control_socket_group_keeps_its_meaning_operator():
    p = policy(legacy="bots")
    assert p.role_of(4242, 3001) is Role.OPERATOR
    assert p.role_of(4242, 4242) is None


def test_user_names_for_audit_are_resolved_up_front():
    p = policy(DESK)
    assert p.user_name(1001) == "mm-bot" and p.user_name(0) == "root" and p.user_name(7777) == "uid:7777"


def test_one_uid_cannot_take_every_slot_and_operators_keep_a_reserve():
    b = ConnectionBudget(per_uid=4, shared=6, operator_reserve=2)
    got = [b.admit(1001, Role.HEARTBEAT) for _ in range(100)]
    assert got.count("shared") == 4 and got.count(None) == 96  # capped per uid
    assert [b.admit(1005, Role.HEARTBEAT) for _ in range(3)] == ["shared", "shared", None]  # shared full
    assert b.admit(1002, Role.OPERATOR) == "reserve"  # an operator still gets in
    assert b.admit(1003, Role.OPERATOR) == "reserve"
    assert b.admit(1003, Role.OPERATOR) is None  # the reserve is bounded too
    b.release(1001, "shared")
    assert b.admit(1005, Role.HEARTBEAT) == "shared"
    assert b.held[1001] == 3 and b.shared_used == 6 and b.reserve_used == 2
