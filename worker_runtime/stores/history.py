"""One worker's run history in memory: the latest version of each run, in first-put order.

Shared by both stores. A page after a run id costs one dict lookup and a
slice: O(limit), never O(history).
"""

from __future__ import annotations

from ..domain import Run

__all__ = ["RunHistory"]


class RunHistory:
    """Runs by id (latest version) and their order of first put."""

    __slots__ = ("_order", "_position", "_runs")

    def __init__(self) -> None:
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        self._runs: dict[str, Run] = {}

    def put(self, run: Run) -> None:
        """Record a version of ``run``: the latest wins; its place is its first put."""
        if run.run_id not in self._position:
            self._position[run.run_id] = len(self._order)
            self._order.append(run.run_id)
        self._runs[run.run_id] = run

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def page(self, after: str | None, limit: int) -> list[Run]:
        """Up to ``limit`` runs after run ``after`` (all from the first if None;
        ``[]`` if ``after`` is not one of these runs)."""
        if after is None:
            begin = 0
        else:
            position = self._position.get(after)
            if position is None:
                return []
            begin = position + 1
        return [self._runs[run_id] for run_id in self._order[begin : begin + max(limit, 0)]]

    def __len__(self) -> int:
        return len(self._order)
