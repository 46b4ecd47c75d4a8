"""The book's storage: per-bucket counters (`Tally`) and thinned samples (`Column`)."""

from __future__ import annotations

from array import array

import pytest

from charter.monitors._columns import CodeTable, Column, Tally


class TestColumn:
    def test_a_busy_bucket_keeps_every_stride_th_value(self) -> None:
        """1,000 values into 8 places: the multiples of a power-of-two stride, evenly spread."""
        column = Column()
        for i in range(1000):
            column.add(7, float(i), 8)
        stride = column.strides[0]
        assert len(column.values) <= 8
        assert stride & (stride - 1) == 0
        assert list(column.values) == [float(i) for i in range(0, 1000, stride)]
        values, weights, seen = column.window(7, 7)
        assert seen == 1000
        assert weights is not None
        assert sum(weights) == pytest.approx(1000)
        assert list(values) == list(column.values)

    def test_quiet_buckets_are_kept_whole(self) -> None:
        """Below its size a bucket keeps every value, each of weight 1 (weights None)."""
        column = Column()
        for bucket, value in [(1, 3.0), (1, 1.0), (2, 2.0), (4, 9.0)]:
            column.add(bucket, value, 8)
        assert column.window(1, 2) == (array("d", [3.0, 1.0, 2.0]), None, 3)
        assert column.window(3, 3) == ((), None, 0)

    def test_a_late_value_is_found_and_put_in_order(self) -> None:
        """A value of an older bucket read late counts in its bucket, before and after a sweep."""
        column = Column()
        for bucket, value in [(5, 5.0), (6, 6.0), (2, 2.0), (6, 6.5)]:
            column.add(bucket, value, 8)
        assert sorted(column.window(0, 5)[0]) == [2.0, 5.0]
        column.drop_before(3)
        assert column.ordered
        assert list(column.window(0, 9)[0]) == [5.0, 6.0, 6.5]
        assert column.window(0, 4) == ((), None, 0)


def _count(tally: Tally, bucket: int, code: int, amount: float = 1.0) -> None:
    counts = tally.current(bucket)
    counts[code] = counts.get(code, 0.0) + amount


class TestTally:
    def test_counters_sum_over_their_buckets(self) -> None:
        """A bucket's counter is added to in place; a window sums its buckets' entries."""
        tally = Tally()
        for bucket, code, amount in [(1, 0, 1), (1, 0, 1), (1, 3, 0.5), (2, 0, 1), (4, 3, 2)]:
            _count(tally, bucket, code, amount)
        assert len(tally) == 4
        assert tally.sums(1, 2) == {0: 3.0, 3: 0.5}
        assert tally.sums(3, 9) == {3: 2.0}
        assert tally.distinct_buckets() == 3

    def test_late_entries_count_and_old_ones_go(self) -> None:
        """An older bucket's count is found by a window, and set in order when old ones go."""
        tally = Tally()
        for bucket in (5, 6, 2, 6, 2, 7):
            _count(tally, bucket, 1)
        assert tally.sums(2, 2) == {1: 2.0}
        assert tally.sums(0, 9) == {1: 6.0}
        tally.drop_before(3)
        assert tally.ordered
        assert list(tally.buckets) == sorted(tally.buckets)
        assert tally.sums(0, 9) == {1: 4.0}
        assert tally.live_codes() == {1}
        _count(tally, 7, 1)
        assert tally.sums(7, 7) == {1: 2.0}


class TestCodeTable:
    def test_a_freed_code_is_handed_out_again(self) -> None:
        """Codes count up from the first; one given back is reused before a new one."""
        table = CodeTable(46)
        a, b = table.new(("source", "crm", "checked")), table.new(("missing", "args.x"))
        assert (a, b) == (46, 47)
        table.free(a)
        assert table.new(("range", "args.y", "checked")) == 46
        assert table.new(("range", "args.y", "outside")) == 48
        assert table.keys[46] == ("range", "args.y", "checked")
