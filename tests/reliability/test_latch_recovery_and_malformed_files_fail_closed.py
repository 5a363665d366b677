"""#11.4 / #11.5: whatever is on disk, loading the latch never crashes and never narrows the scope.

A trip recovered from ``latch.intent`` (its full save failed or was cut by SIGKILL) covers
everything, never the older trips' scope in ``latch.json``; any intent or latch content that
is not a well-formed record loads as TRIPPED with everything in scope and names the file.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killswitch.engine.latch import Latch, LatchState, LatchStore
from killswitch.model import EVERYTHING, CancelScope

ETH_ONLY = CancelScope(products=frozenset({"ETH-USD-SWAP-LIN"}))


def _saved_eth_trip(state_dir) -> LatchStore:
    store = LatchStore(state_dir)
    latch = Latch()
    latch.trip(rule="eth-dd", kind="drawdown", reason="r", observed="o", threshold="t", scope=ETH_ONLY,
               source="rule", ts_wall_ms=1)
    store.save(latch, durable=True)
    return store


def test_trip_recovered_from_intent_covers_everything_not_the_older_trips_scope(tmp_path):
    store = _saved_eth_trip(tmp_path)
    store.mark_tripped(2, 2)  # trip 2 (cancel everything) went out; its full save never happened
    store.close()
    latch = LatchStore(tmp_path).load()
    assert latch.tripped
    assert latch.scope() == EVERYTHING
    assert latch.next_trip_id == 3
    assert [t.trip_id for t in latch.trips] == [1, 2]


JSON_WRONG_SHAPES = [b"[]", b"1", b'"tripped"', b"null", b"true", b"{}", b'{"state": "tripped"}',
                     b'{"state": "tripped", "trip_id": "x"}', b'{"state": "tripped", "trip_id": null}',
                     b'{"state": "tripped", "trip_id": true}', b'{"state": "exploded", "trip_id": 3}',
                     b'{"state": "armed", "trip_id": -1}', b"\xff\xfe", b"{"]


@pytest.mark.parametrize("content", JSON_WRONG_SHAPES, ids=lambda c: c.decode(errors="replace"))
def test_malformed_intent_loads_tripped_everything_naming_the_file(tmp_path, content):
    (tmp_path / "latch.intent").write_bytes(content)
    latch = LatchStore(tmp_path).load()
    assert latch.state is LatchState.TRIPPED
    assert latch.scope() == EVERYTHING
    assert any("latch.intent" in p for p in latch.problems), latch.problems


LATCH_WRONG_SHAPES = JSON_WRONG_SHAPES + [
    b'{"version": 1, "state": "armed", "next_trip_id": 1, "trips": {}}',
    b'{"version": 1, "state": "armed", "next_trip_id": "1", "trips": []}',
    b'{"version": 1, "state": "tripped", "next_trip_id": 2, "trips": [1]}',
    b'{"version": 1, "state": "tripped", "next_trip_id": 2, "trips": [{"trip_id": 1}]}',
    b'{"version": 99, "state": "armed", "next_trip_id": 1, "trips": []}',
]


@pytest.mark.parametrize("content", LATCH_WRONG_SHAPES, ids=lambda c: c.decode(errors="replace"))
def test_malformed_latch_json_loads_tripped_everything_naming_the_file(tmp_path, content):
    (tmp_path / "latch.json").write_bytes(content)
    latch = LatchStore(tmp_path).load()
    assert latch.state is LatchState.TRIPPED
    assert latch.scope() == EVERYTHING
    assert any("latch.json" in p for p in latch.problems), latch.problems


def test_empty_and_preallocated_intent_files_mean_no_trip(tmp_path):
    (tmp_path / "latch.intent").write_bytes(b"")
    assert LatchStore(tmp_path).load().state is LatchState.ARMED
    (tmp_path / "latch.intent").write_bytes(b"\0" * 128)
    latch = LatchStore(tmp_path).load()
    assert latch.state is LatchState.ARMED and latch.problems == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["state", "trip_id", "trips", "next_trip_id", "version", "scope", "rule", "x"]),
        children, max_size=5),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(intent=json_values | st.binary(max_size=64), latch=json_values | st.binary(max_size=64) | st.none())
def test_fuzzed_state_file_content_never_crashes_and_never_loads_armed_by_accident(tmp_path_factory, intent, latch):
    d = tmp_path_factory.mktemp("fuzz")
    raw_intent = intent if isinstance(intent, bytes) else orjson.dumps(intent)
    (d / "latch.intent").write_bytes(raw_intent)
    if latch is not None:
        (d / "latch.json").write_bytes(latch if isinstance(latch, bytes) else orjson.dumps(latch))
    loaded = LatchStore(d).load()  # never raises
    blank_intent = raw_intent.strip(b" \t\r\n\0") == b""
    if latch is None and blank_intent:
        assert loaded.state is LatchState.ARMED
        return
    # Random content is (almost surely) not a well-formed record: it must fail closed.
    if loaded.state is LatchState.ARMED:
        # Only a well-formed armed intent with no latch file may load armed.
        assert latch is None and isinstance(intent, dict) and intent.get("state") == "armed" \
            and type(intent.get("trip_id")) is int and 0 <= intent["trip_id"] <= 2**53, (intent, latch)
    else:
        assert loaded.scope() == EVERYTHING
