"""Test helpers: wait on the runtime's own event log (long-poll) instead of sleeping;
run the examples of the README and of ``docs/*.md`` and check what they print."""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker_runtime import Runtime, commands
from worker_runtime.domain import Event
from worker_runtime.results import EventPage

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

TERMINAL_EVENTS = {
    "run_completed",
    "run_failed",
    "run_cancelled",
    "run_timed_out",
    "run_interrupted",
}


def wait_for_event(
    rt: Runtime, predicate: object, *, cursor: int = 0, timeout: float = 10.0
) -> Event:
    """The first event (from ``cursor`` on) that ``predicate`` accepts; fails past ``timeout``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching event within {timeout}s")
        page = rt.dispatch(commands.ReadEvents(cursor=cursor, wait=min(remaining, 5.0)))
        assert isinstance(page, EventPage)
        for event in page.events:
            if predicate(event):
                return event
        cursor = page.cursor.next_event_id


def wait_for_run_end(rt: Runtime, run_id: str, *, timeout: float = 10.0) -> Event:
    """The terminal event of ``run_id`` (completed, failed, cancelled, ...)."""
    return wait_for_event(
        rt, lambda e: e.run_id == run_id and e.type in TERMINAL_EVENTS, timeout=timeout
    )


# -- README and docs examples -----------------------------------------------------------


def section(name: str, document: str = "README.md") -> str:
    """The text between ``<!-- section:NAME -->`` markers of ``document`` (a path
    from the repository root, e.g. ``docs/stores.md``)."""
    text = (ROOT / document).read_text("utf-8")
    match = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", text, re.DOTALL)
    assert match, f"{document} has no {name} section"
    return match.group(1)


def examples(text: str) -> list[tuple[str, str | None]]:
    """(code, expected output or None) for each python block."""
    fences = [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    pairs = []
    for i, (lang, body) in enumerate(fences):
        if lang == "python":
            following = fences[i + 1] if i + 1 < len(fences) else None
            pairs.append((body, following[1] if following and following[0] == "text" else None))
    return pairs


def matches(expected: str, actual: str) -> bool:
    pattern = ".+?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def run_examples(
    blocks: list[tuple[str, str | None]],
    name: str,
    namespace: dict[str, object],
    document: str = "README.md",
) -> None:
    """Execute ``blocks`` (from :func:`examples` of section ``name`` of ``document``)
    in order in ``namespace``; each one's stdout must match its expected output, if
    it has one."""
    for number, (code, expected) in enumerate(blocks, 1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{document} {name} block {number}", "exec"), namespace)
        if expected is not None:
            assert matches(expected, out.getvalue()), (
                f"block {number} printed:\n{out.getvalue()}\n{document} says:\n{expected}"
            )


@contextmanager
def state_lock_held_elsewhere(rt: Runtime) -> Iterator[None]:
    """Hold ``rt``'s state lock on another thread (as a long operation would)
    for the duration of the block."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with rt.locked():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10), "the holder never got the lock"
        yield
    finally:
        release.set()
        holder.join(10)
    assert not holder.is_alive()
