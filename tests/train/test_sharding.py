"""`train.data_sharding: interleave`: how workers divide one shared order of batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml.train.worker import interleave_plan, interleaved_shard


@given(
    rows=st.integers(min_value=1, max_value=5000),
    batch=st.integers(min_value=1, max_value=64),
    world=st.integers(min_value=1, max_value=8),
)
def test_workers_take_equal_disjoint_shares_of_one_order(rows, batch, world):
    if rows < world:
        return  # run_training refuses fewer rows than workers
    size, steps = interleave_plan(rows, batch, world)
    order = [list(range(i, min(i + size, rows))) for i in range(0, rows, size)]
    shares = [list(interleaved_shard(iter(order), rank, world, steps)) for rank in range(world)]

    # DDP needs every worker to take the same number of steps, each with at least one row.
    assert steps >= 1 and all(len(share) == steps for share in shares)
    assert all(batch_rows for share in shares for batch_rows in share)
    seen = [row for share in shares for batch_rows in share for row in batch_rows]
    assert len(seen) == len(set(seen)), "a row went to two workers in one epoch"
    # At most world-1 trailing batches of the epoch are left out.
    assert len(order) - steps * world <= world - 1
    assert size <= batch


@pytest.mark.parametrize(
    ("rows", "batch", "world", "plan"),
    [(611, 16, 2, (16, 19)), (40, 4, 2, (4, 5)), (12, 16, 2, (6, 1)), (7, 16, 1, (7, 1))],
)
def test_plan(rows, batch, world, plan):
    assert interleave_plan(rows, batch, world) == plan
