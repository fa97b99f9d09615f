"""The allocator's invariants under arbitrary sequences of allocations and frees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsrv.store._arena import ALIGNMENT, Allocator

CAPACITY = 64 * ALIGNMENT * 16

# An operation: ("alloc", size) or ("free", index into the live blocks).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, CAPACITY // 4)),
        st.tuples(st.just("free"), st.integers(0, 1000)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_no_overlap_alignment_and_full_coalescing(operations: list[tuple[str, int]]) -> None:
    alloc = Allocator(CAPACITY)
    live: dict[int, int] = {}  # offset -> requested size
    for op, arg in operations:
        if op == "alloc":
            off = alloc.allocate(arg)
            if off is None:
                # First fit failed: then no free block is big enough.
                assert alloc.largest_free() < Allocator.block_size(arg)
                continue
            assert off % ALIGNMENT == 0
            assert off + arg <= CAPACITY
            for other, size in live.items():  # no overlap with any live block
                assert off + max(arg, 1) <= other or other + max(size, 1) <= off
            live[off] = arg
        elif live:
            off = sorted(live)[arg % len(live)]
            alloc.free(off)
            del live[off]
        alloc.check()
    for off in list(live):
        alloc.free(off)
    alloc.check()
    assert alloc.free_blocks() == [(0, CAPACITY)]
    assert alloc.used == 0


def test_first_fit_reuses_the_lowest_hole() -> None:
    alloc = Allocator(1024)
    a, b, c = (alloc.allocate(100) for _ in range(3))
    assert (a, b, c) == (0, 128, 256)
    alloc.free(0)
    assert alloc.allocate(64) == 0


def test_double_free_and_bad_capacity() -> None:
    alloc = Allocator(1024)
    off = alloc.allocate(10)
    assert off is not None
    alloc.free(off)
    with pytest.raises(KeyError):
        alloc.free(off)
    with pytest.raises(ValueError):
        Allocator(100)


def test_allocation_never_extends() -> None:
    alloc = Allocator(1024)
    assert alloc.allocate(1024) == 0
    assert alloc.allocate(1) is None
    assert alloc.allocate(0) is None
