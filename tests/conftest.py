"""Shared fixtures and the hypothesis profiles (``dev`` is the default, ``ci`` for tox)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from worker_runtime import Runtime, RuntimeConfig

from .support.openai_stub import Stub, run_stub

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """An embedded runtime (memory store, echo engine), closed after the test."""
    rt = Runtime.open(RuntimeConfig(runtime_id="rt-test", display_name="test"))
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A chat-completions stub server on loopback (the LLM engine's tests)."""
    with run_stub() as running:
        yield running
