"""The pieces of the ``openai_chat`` engine that need no server: masking a key in
a reply that arrives in pieces, and the retry policy."""

from __future__ import annotations

import email.utils
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker_runtime.engines.redact import MASK, MaskingEmit, mask
from worker_runtime.engines.retry import RetryPolicy, is_retryable, parse_retry_after

KEY = "sk-abcabcXYZ-0123"  # repeats its own start: partial matches must not confuse the mask


def _through(pieces: list[str], key: str | None) -> list[str]:
    out: list[str] = []
    emit = MaskingEmit(out.append, key)
    for piece in pieces:
        emit(piece)
    emit.close()
    return out


@given(
    parts=st.lists(st.sampled_from(["a", "sk-", "sk-abc", "abc", KEY, KEY[:-1], " ", "é"])),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_any_cut_of_the_stream_is_masked_as_whole(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts) + "."  # ends clear of the key, so nothing is left half-matched
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    out = _through(pieces, KEY)
    assert "".join(out) == mask(text, KEY)
    assert all(KEY not in piece for piece in out)
    assert "" not in out


def test_a_key_cut_character_by_character_is_masked() -> None:
    text = f"key={KEY}!"
    assert "".join(_through(list(text), KEY)) == f"key={MASK}!"


def test_a_reply_ending_inside_an_echo_masks_the_tail() -> None:
    assert "".join(_through(["see ", KEY[:10]], KEY)) == f"see {MASK}"
    assert "".join(_through(["see ", KEY[:2]], KEY)) == "see sk"  # too little to be an echo


@pytest.mark.parametrize("key", [None, "", "ollama"])
def test_no_key_or_a_placeholder_key_leaves_replies_alone(key: str | None) -> None:
    assert _through(["run ollama", " locally"], key) == ["run ollama", " locally"]


def test_retryable_statuses() -> None:
    assert [s for s in (400, 401, 404, 409, 429, 500, 502, 503, 504, 599) if is_retryable(s)] == [
        429,
        500,
        502,
        503,
        504,
        599,
    ]


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    assert parse_retry_after("7", None) == 7.0
    assert parse_retry_after(" 1.5 ", None) == 1.5
    assert parse_retry_after("-3", None) == 0.0
    assert parse_retry_after(date, None, now=lambda: now) == 12.0
    assert parse_retry_after("7", "250") == 0.25  # the finer hint wins
    assert parse_retry_after("soon", None) is None
    assert parse_retry_after("nan", "x") is None
    assert parse_retry_after(None, None) is None


def test_the_policy_is_bounded_and_never_waits_past_the_deadline() -> None:
    policy = RetryPolicy(max_retries=3, max_wait_s=30.0, backoff_s=0.5)
    waits = [policy.wait_s(retry=n, retry_after=None, remaining_s=100.0) for n in (1, 2, 3, 4)]
    assert waits == [0.5, 1.0, 2.0, None]
    assert policy.wait_s(retry=1, retry_after=7.0, remaining_s=100.0) == 7.0
    assert policy.wait_s(retry=1, retry_after=7.0, remaining_s=7.0) is None
    assert policy.wait_s(retry=1, retry_after=31.0, remaining_s=100.0) is None
    assert policy.wait_s(retry=1, retry_after=0.0, remaining_s=0.0) is None
    assert RetryPolicy(max_retries=0).wait_s(retry=1, retry_after=0.0, remaining_s=9.0) is None
