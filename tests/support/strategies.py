"""Shared hypothesis strategies: ids, domain values and every command in a
form its wire schema accepts."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from worker_runtime import commands as c
from worker_runtime.domain import (
    ID_PATTERN,
    CapabilityRequest,
    ConfigBundleRef,
    InputKind,
    OpaqueRef,
    ProfileSelector,
    WorkerIntent,
    WorkerStatus,
)

ids = st.from_regex(ID_PATTERN, fullmatch=True)
"""Legal runtime/worker ids (the full alphabet, up to 128 characters)."""

short_ids = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,7}", fullmatch=True)
"""Legal ids drawn from a small space, so duplicates happen."""

invalid_ids = st.one_of(
    st.just(""),
    st.just("../etc"),
    st.just("a/b"),
    st.just("w\n"),
    st.just("a" * 129),
    st.from_regex(r"[._-][A-Za-z0-9]{0,5}", fullmatch=True),
    st.text(min_size=1, max_size=10).filter(lambda s: any(not ch.isascii() for ch in s)),
)

text = st.text(max_size=40)
labels = st.text(min_size=1, max_size=40)
reasons = st.none() | st.text(max_size=40)
limits = st.none() | st.integers(min_value=1, max_value=10**6)

intents = st.one_of(
    st.builds(WorkerIntent, kind=st.just("assistant"), purpose=st.none() | text),
    st.builds(WorkerIntent, kind=st.just("task"), objective=text),
    st.builds(WorkerIntent, kind=st.just("role"), role=labels, purpose=st.none() | text),
)

profile_selectors = st.one_of(
    st.just(ProfileSelector()),
    st.builds(ProfileSelector, kind=st.sampled_from(["builtin", "named"]), value=labels),
)

capability_requests = st.builds(
    CapabilityRequest,
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,15}", fullmatch=True),
    reason=st.none() | text,
)

opaque_refs = st.builds(OpaqueRef, name=labels, reference=st.text(min_size=1, max_size=40))


def _tuples(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(elements, max_size=3).map(tuple)


def create_worker(worker_ids: st.SearchStrategy[str] = ids) -> st.SearchStrategy[c.CreateWorker]:
    return st.builds(
        c.CreateWorker,
        worker_id=st.none() | worker_ids,
        display_name=st.none() | labels,
        intent=intents,
        profile=profile_selectors,
        config_bundle=st.none() | st.builds(ConfigBundleRef, id=ids),
        requested_capabilities=_tuples(capability_requests),
        workspace_refs=_tuples(opaque_refs),
        mount_refs=_tuples(opaque_refs),
    )


any_wait = st.floats(min_value=0, max_value=1e9, allow_nan=False)


def commands(
    worker_ids: st.SearchStrategy[str] = ids, waits: st.SearchStrategy[float] = any_wait
) -> st.SearchStrategy[c.Command[Any]]:
    """Any command, with every field drawn from what its wire schema accepts
    (pass ``waits=st.just(0.0)`` to keep ``ReadEvents`` from long-polling)."""
    return st.one_of(
        st.builds(c.GetRuntime),
        st.builds(
            c.ListWorkers,
            status=st.none() | st.sampled_from(WorkerStatus),
            limit=limits,
            after=st.none() | worker_ids,
        ),
        st.builds(c.GetWorker, worker_id=worker_ids),
        create_worker(worker_ids),
        st.builds(
            c.SendInput,
            worker_id=worker_ids,
            content=st.text(min_size=1, max_size=40),
            kind=st.sampled_from(InputKind),
        ),
        st.builds(c.StopWorker, worker_id=worker_ids, reason=reasons),
        st.builds(c.CancelRun, worker_id=worker_ids, run_id=st.none() | ids, reason=reasons),
        st.builds(
            c.GetTranscript,
            worker_id=worker_ids,
            start=st.integers(min_value=0, max_value=10**6),
            limit=limits,
        ),
        st.builds(
            c.ReadEvents,
            cursor=st.integers(min_value=0, max_value=10**6),
            limit=limits,
            wait=waits,
        ),
        st.builds(c.GetDiagnostics),
    )
