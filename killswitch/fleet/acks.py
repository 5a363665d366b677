"""Acknowledgement aggregation for ``killswitch trip --fleet``: pure, fed by the CLI's subscription.

Expected instances are the ones the status bucket knows (seen recently); an instance that
acks without being expected is listed too. The verdict per instance is ``flat`` (both acks),
``acked`` (latched and cancelling, not confirmed flat by the deadline) or ``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from killswitch.fleet.messages import TripAck


@dataclass(slots=True)
class InstanceAcks:
    tripped: TripAck | None = None
    flat: TripAck | None = None

    @property
    def verdict(self) -> str:
        if self.flat is not None:
            return "flat"
        if self.tripped is not None:
            return "acked"
        return "missing"


@dataclass(slots=True)
class AckBoard:
    fleet_trip_id: str
    expected: frozenset[str] = frozenset()
    by_instance: dict[str, InstanceAcks] = field(default_factory=dict)
    ignored: int = 0  # acks for another trip
    forged: int = 0  # acks whose subject names another instance than the ack (ignored)

    def __post_init__(self) -> None:
        for name in self.expected:
            self.by_instance.setdefault(name, InstanceAcks())

    def add(self, ack: TripAck, *, sender: str | None = None) -> bool:
        """Count ``ack``; ``sender`` is the instance its subject names (``Subjects.ack_sender``).
        False when it is ignored: another trip's, or sent under another instance's subject (the
        server lets a daemon credential publish only its own, so a mismatch is a forgery)."""
        if ack.fleet_trip_id != self.fleet_trip_id:
            self.ignored += 1
            return False
        if sender is not None and sender != ack.instance:
            self.forged += 1
            return False
        slot = self.by_instance.setdefault(ack.instance, InstanceAcks())
        if ack.stage == "tripped":
            slot.tripped = slot.tripped or ack
        else:
            slot.flat = slot.flat or ack
            slot.tripped = slot.tripped or ack  # a flat ack implies it tripped
        return True

    def complete(self) -> bool:
        """Every expected instance is flat (nothing left worth waiting for)."""
        return bool(self.by_instance) and all(a.verdict == "flat" for a in self.by_instance.values())

    def counts(self) -> dict[str, int]:
        out = {"flat": 0, "acked": 0, "missing": 0}
        for a in self.by_instance.values():
            out[a.verdict] += 1
        return out

    def lines(self) -> list[str]:
        rows = []
        width = max((len(n) for n in self.by_instance), default=8)
        for name in sorted(self.by_instance):
            a = self.by_instance[name]
            v = a.verdict
            detail = ""
            src = a.flat or a.tripped
            if src is not None:
                first = a.tripped.trip_to_first_cancel_ms if a.tripped else None
                parts = [f"trip->first cancel {_ms(first)}"]
                if a.flat is not None:
                    parts.append(f"trip->flat {_ms(a.flat.trip_to_flat_ms)}")
                parts.append(f"venues {','.join(src.venues) or '-'}")
                detail = "  " + "  ".join(parts)
            rows.append(f"{name:<{width}}  {v:<7}{detail}")
        return rows


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"
