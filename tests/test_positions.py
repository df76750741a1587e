"""The ordered position index against a sorted list, and the state table's
kept counts and pages against full scans (including removal)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker_runtime import commands as c
from worker_runtime.domain import WorkerStatus
from worker_runtime.positions import PositionSet
from worker_runtime.testing import make_runtime

operations = st.lists(
    st.tuples(st.sampled_from(["add", "discard"]), st.integers(min_value=0, max_value=3000)),
    max_size=1500,
)


@given(operations, st.integers(min_value=-1, max_value=3000), st.integers(1, 700))
def test_position_set_behaves_as_a_sorted_set(
    ops: list[tuple[str, int]], after: int, limit: int
) -> None:
    index, model = PositionSet(), set()
    for op, value in ops:
        if op == "add":
            index.add(value)
            model.add(value)
        else:
            index.discard(value)
            model.discard(value)
    ordered = sorted(model)
    assert list(index) == ordered and len(index) == len(model)
    assert index.after(after, limit) == [p for p in ordered if p > after][:limit]
    for value in (after, *ordered[:5]):
        assert (value in index) == (value in model)


def test_many_positions_split_into_chunks_and_page_in_order() -> None:
    index = PositionSet()
    for value in range(5000):
        index.add(value)
    for value in range(0, 5000, 3):
        index.discard(value)
    expected = [v for v in range(5000) if v % 3]
    assert list(index) == expected
    assert index.after(2500, 100) == [v for v in expected if v > 2500][:100]
    assert index.after(4999, 10) == []


def test_remove_worker_takes_it_out_of_counts_and_pages() -> None:
    with make_runtime({}) as rt:
        for i in range(6):
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"))
        rt.dispatch(c.StopWorker(worker_id="w2"))
        state = rt.context.state
        with state.locked():
            assert state.remove_worker("w2") is not None
            assert state.remove_worker("w2") is None
            assert state.remove_worker("w4") is not None
            assert state.counts() == state.recount()
            assert state.counts()[WorkerStatus.STOPPED] == 0 and len(state) == 4
            for status in (None, *WorkerStatus):
                for after in (None, "w0", "w1", "w3", "w5"):
                    page = state.page(after=after, status=status, limit=2)
                    assert page == state.scan_page(after=after, status=status, limit=2)
        listed = rt.dispatch(c.ListWorkers(limit=10))
        assert [w.worker_id for w in listed.workers] == ["w0", "w1", "w3", "w5"]
        info = rt.dispatch(c.GetRuntime())
        assert (info.workers.idle, info.workers.stopped, info.workers.total) == (4, 0, 4)
