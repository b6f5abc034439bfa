"""The partition merge releases records in (timestamp, partition, offset) order, whatever the
fetch pattern, and commits only what it released."""

import itertools
from collections import namedtuple

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.ordering import MergeBuffer

Msg = namedtuple("Msg", "topic partition offset timestamp")


@st.composite
def topic_and_fetches(draw, clocks_step_back: bool = False):
    """Partitions of records (timestamps non-decreasing per partition, unless producers'
    clocks may step back), and a fetch pattern: which partition answers next, and how many
    records it returns."""
    n_parts = draw(st.integers(1, 4))
    parts = []
    for p in range(n_parts):
        if clocks_step_back:
            stamps = draw(st.lists(st.integers(0, 30), max_size=25))
        else:
            stamps = list(itertools.accumulate(draw(st.lists(st.integers(0, 3), max_size=25))))
        parts.append([Msg("t", p, off, ts) for off, ts in enumerate(stamps)])
    steps = draw(st.lists(st.tuples(st.integers(0, n_parts - 1), st.integers(1, 7)), max_size=60))
    return parts, steps


@settings(max_examples=300, deadline=None)
@given(topic_and_fetches())
def test_release_order_is_the_global_order_for_any_fetch_pattern(data):
    parts, steps = data
    buf = MergeBuffer(max_buffered=1000)
    assigned = [("t", p) for p in range(len(parts))]
    pos = [0] * len(parts)
    released = []

    def caught_up():
        return {("t", p) for p in range(len(parts)) if pos[p] >= len(parts[p])}

    for p, k in steps:
        chunk = parts[p][pos[p]:pos[p] + k]
        pos[p] += len(chunk)
        buf.add(("t", p), chunk)
        released += buf.release(caught_up(), assigned)
        # Committed offsets never pass a record that was not released.
        for tp, off in buf.commit_offsets().items():
            assert all(m.offset < off for m in released if (m.topic, m.partition) == tp) or off == 0
            assert not any(m.offset >= off for m in released if (m.topic, m.partition) == tp)
    for p in range(len(parts)):  # drain
        buf.add(("t", p), parts[p][pos[p]:])
        pos[p] = len(parts[p])
    released += buf.release(caught_up(), assigned)
    expected = sorted((m for msgs in parts for m in msgs), key=lambda m: (m.timestamp, m.partition, m.offset))
    assert released == expected
    assert buf.commit_offsets() == {("t", p): len(parts[p]) for p in range(len(parts)) if parts[p]}


@settings(max_examples=300, deadline=None)
@given(topic_and_fetches(clocks_step_back=True))
def test_a_record_stamped_out_of_order_keeps_its_place_in_its_partition(data):
    """The released order is the same for any fetch pattern: by each record's timestamp raised
    to the latest before it in its partition, then partition, then offset."""
    parts, steps = data
    buf = MergeBuffer(max_buffered=1000)
    assigned = [("t", p) for p in range(len(parts))]
    pos = [0] * len(parts)
    released = []
    for p, k in steps:
        chunk = parts[p][pos[p]:pos[p] + k]
        pos[p] += len(chunk)
        buf.add(("t", p), chunk)
        released += buf.release({("t", q) for q in range(len(parts)) if pos[q] >= len(parts[q])}, assigned)
    for p in range(len(parts)):
        buf.add(("t", p), parts[p][pos[p]:])
    released += buf.release(set(assigned), assigned)

    def key(m):
        return max(x.timestamp for x in parts[m.partition][:m.offset + 1]), m.partition, m.offset

    assert released == sorted((m for msgs in parts for m in msgs), key=key)
    for p in range(len(parts)):
        assert [m.offset for m in released if m.partition == p] == list(range(len(parts[p])))


def test_a_partition_without_records_yet_holds_everything_back():
    buf = MergeBuffer()
    buf.add(("t", 0), [Msg("t", 0, 0, 5)])
    assert buf.release(idle=set(), assigned=[("t", 0), ("t", 1)]) == []
    assert buf.release(idle={("t", 1)}, assigned=[("t", 0), ("t", 1)]) == []  # t0 may get more at ts 5
    assert [m.offset for m in buf.release(idle={("t", 0), ("t", 1)}, assigned=[("t", 0), ("t", 1)])] == [0]


def test_dropping_revoked_partitions_forgets_their_buffer_and_offsets():
    buf = MergeBuffer()
    buf.add(("t", 0), [Msg("t", 0, 7, 1)])
    buf.add(("t", 1), [Msg("t", 1, 3, 1)])
    buf.drop([("t", 1)])
    assert buf.commit_offsets() == {("t", 0): 7}
    assert buf.size(("t", 1)) == 0
    assert buf.full(("t", 0)) is False


def _rec(partition, offset, ts):
    return Msg("t", partition, offset, ts)


def test_after_a_pause_an_idle_partition_holds_back_records_its_in_flight_ones_may_precede():
    buf = MergeBuffer()
    buf.add(("t", 0), [_rec(0, 0, 100)], arrival=1.0)
    buf.add(("t", 1), [_rec(1, 0, 100)], arrival=1.0)
    both = {("t", 0), ("t", 1)}
    assert [m.offset for m in buf.release(both, hold_after=2100 - 1000, arrived_before=0)] == [0, 0]
    # A pause; production resumes at ts 5000. Partition 0's first records arrive first; partition
    # 1 is still idle (caught up, silent), and its record stamped 4999 is in flight.
    buf.add(("t", 0), [_rec(0, 1, 5000), _rec(0, 2, 5001)], arrival=10.0)
    assert buf.release({("t", 1)}, hold_after=5001 - 1000, arrived_before=10.0 - 1.0) == []
    buf.add(("t", 1), [_rec(1, 1, 4999)], arrival=10.05)
    released = buf.release(both, hold_after=6100 - 1000, arrived_before=11.1 - 1.0)
    assert [(m.partition, m.timestamp) for m in released] == [(1, 4999), (0, 5000), (0, 5001)]
    # Without the hold (the old rule) partition 0's record would have gone first.
    old = MergeBuffer()
    old.add(("t", 0), [_rec(0, 0, 100)])
    old.add(("t", 1), [_rec(1, 0, 100)])
    old.release(both)
    old.add(("t", 0), [_rec(0, 1, 5000), _rec(0, 2, 5001)])
    assert [m.timestamp for m in old.release({("t", 1)})] == [5000]


def test_the_hold_is_bounded_by_arrival():
    buf = MergeBuffer()
    buf.add(("t", 1), [_rec(1, 0, 100)], arrival=1.0)
    assert len(buf.release({("t", 1)}, hold_after=2100 - 1000, arrived_before=0)) == 1
    # A record stamped far in the future waits for partition 1 at most max_idle after arrival.
    buf.add(("t", 0), [_rec(0, 0, 10**13)], arrival=5.0)
    idle = {("t", 0), ("t", 1)}
    assert buf.release(idle, hold_after=6000, arrived_before=4.5) == []
    assert [m.timestamp for m in buf.release(idle, hold_after=6000, arrived_before=5.0)] == [10**13]


def test_a_partition_that_delivered_nothing_yet_holds_back_the_first_records_for_max_idle():
    """A topic's first records: partition 0's fetch comes first, partition 1 (idle: caught up with
    an empty log, silent) has an earlier record in flight. Released at once, partition 0's records
    would go in arrival order, and a replay (both in the log) would order them otherwise."""
    both, tps = {("t", 0), ("t", 1)}, [("t", 0), ("t", 1)]
    fresh = MergeBuffer()
    fresh.add(("t", 0), [_rec(0, 0, 5000), _rec(0, 1, 5001)], arrival=10.0)
    assert fresh.release({("t", 1)}, tps, hold_after=5001 - 1000, arrived_before=10.0 - 1.0) == []
    fresh.add(("t", 1), [_rec(1, 0, 4999)], arrival=10.05)
    released = fresh.release(both, tps, hold_after=6100 - 1000, arrived_before=11.1 - 1.0)
    assert [(m.partition, m.timestamp) for m in released] == [(1, 4999), (0, 5000), (0, 5001)]
    replay = MergeBuffer()
    replay.add(("t", 1), [_rec(1, 0, 4999)])
    replay.add(("t", 0), [_rec(0, 0, 5000), _rec(0, 1, 5001)])
    assert [(m.partition, m.offset) for m in replay.release(idle=both, assigned=tps)] == \
        [(m.partition, m.offset) for m in released]
    # For max_idle after the first records only: a partition that never gets any (producers
    # keyed by few models) does not make every later record wait.
    quiet = MergeBuffer()
    quiet.add(("t", 0), [_rec(0, 0, 5000)], arrival=10.0)
    assert quiet.release({("t", 1)}, tps, hold_after=5000 - 1000, arrived_before=10.0 - 1.0) == []
    assert len(quiet.release(both, tps, hold_after=6000 - 1000, arrived_before=11.0 - 1.0)) == 1
    quiet.add(("t", 0), [_rec(0, 1, 20000), _rec(0, 2, 20001)], arrival=25.0)
    assert [m.timestamp for m in quiet.release({("t", 1)}, tps, hold_after=20001 - 1000,
                                               arrived_before=25.0 - 1.0)] == [20000]
    # Outcomes wait the same way (``release_below`` with the merge's ``held``).
    first = MergeBuffer()
    first.add(("t", 0), [_rec(0, 0, 5000)], arrival=10.0)
    assert first.held(tps, {("t", 1)}, hold_after=4000, arrived_before=9.0) == 4000
    assert first.held(tps, {("t", 1)}, hold_after=4000, arrived_before=10.0) == float("inf")


def test_a_full_partition_whose_records_all_sit_at_the_horizon_releases_them():
    # Full, a partition is no longer fetched, so it can never show a later timestamp: a burst of
    # one timestamp, or ordinary records after one stamped ahead (keyed at it), held the merge,
    # and every partition behind it, for ever.
    buf = MergeBuffer(max_buffered=5)
    a = ("t", 0)
    buf.add(a, [Msg("t", 0, i, 100) for i in range(4)])
    assert buf.release(set(), [a]) == []  # not full: more records of 100 may come
    buf.add(a, [Msg("t", 0, 4, 100)])
    assert [m.offset for m in buf.release(set(), [a])] == [0, 1, 2, 3, 4]
    b, c = ("t", 1), ("t", 2)
    buf = MergeBuffer(max_buffered=5)
    buf.add(b, [Msg("t", 1, 0, 500)] + [Msg("t", 1, i, 100 + i) for i in range(1, 5)])  # keyed 500 from the first
    buf.add(c, [Msg("t", 2, i, 200 * i) for i in range(4)])  # up to 600: the horizon is 500
    released = buf.release(set(), [b, c])
    assert [(m.partition, m.offset) for m in released] == [(2, 0), (2, 1), (2, 2), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    assert buf.commit_offsets() == {b: 5, c: 3}


@settings(max_examples=300, deadline=None)
@given(topic_and_fetches(clocks_step_back=True), st.integers(1, 6))
def test_a_merge_with_small_buffers_never_stalls_and_releases_in_timestamp_order(data, max_buffered):
    # As the consumer does: a full partition is not fetched until it has released some. Whatever
    # the fetches, while records wait unfetched some are released, and those released come in
    # (merge key) order, each partition's in offset order.
    parts, steps = data
    buf = MergeBuffer(max_buffered=max_buffered)
    assigned = [("t", p) for p in range(len(parts))]
    pos = [0] * len(parts)
    released = []
    def fetch(p: int, k: int) -> None:  # one poll: a fetch (none while full), then a release
        nonlocal released
        if not buf.full(("t", p)):
            chunk = parts[p][pos[p]:pos[p] + k]
            pos[p] += len(chunk)
            buf.add(("t", p), chunk)
        caught_up = {("t", q) for q in range(len(parts)) if pos[q] >= len(parts[q])}
        released += buf.release(caught_up, assigned)

    for p, k in steps:
        fetch(p, k)
    for _ in range(sum(map(len, parts)) + 1):  # then every partition in turn, to its end
        for p in range(len(parts)):
            fetch(p, 7)
    assert pos == [len(msgs) for msgs in parts]  # the merge never stopped the fetching
    released += buf.release(set(assigned), assigned)
    assert sorted(released) == sorted(m for msgs in parts for m in msgs)
    keys = {}
    for msgs in parts:
        latest = float("-inf")
        for m in msgs:
            latest = keys[m] = max(latest, m.timestamp)
    assert [keys[m] for m in released] == sorted(keys[m] for m in released)
    for p in range(len(parts)):
        assert [m.offset for m in released if m.partition == p] == list(range(len(parts[p])))
