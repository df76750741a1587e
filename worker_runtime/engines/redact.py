"""Keep a secret (an API key) out of everything an engine writes.

:func:`mask` cleans a whole message (an error, a provider's reason). A reply
arrives in pieces, and a provider echoing the key may cut it anywhere, so
:class:`MaskingEmit` holds back the end of each piece that could be the start
of the key until the next piece shows whether it is.
"""

from __future__ import annotations

from .base import Emit

__all__ = ["MASK", "MIN_STREAM_SECRET_CHARS", "MaskingEmit", "mask"]

MASK = "***"
MIN_STREAM_SECRET_CHARS = 8
"""Shorter keys are not masked in replies: they are placeholders (Ollama's
``ollama``), not secrets, and masking them would mangle ordinary words."""


def mask(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` (if any) replaced by :data:`MASK`."""
    return text.replace(secret, MASK) if secret else text


class MaskingEmit:
    """An :data:`Emit` that passes text on with every occurrence of ``secret``
    masked, even one split across calls. Call :meth:`close` at the end to pass
    on what was held back."""

    def __init__(self, emit: Emit, secret: str | None) -> None:
        self._emit = emit
        self._secret = secret if secret and len(secret) >= MIN_STREAM_SECRET_CHARS else None
        self._held = ""

    def __call__(self, text: str) -> None:
        if self._secret is None:
            self._emit(text)
            return
        text = mask(self._held + text, self._secret)
        keep = _partial_suffix(text, self._secret)
        self._held = text[len(text) - keep :]
        if len(text) > keep:
            self._emit(text[: len(text) - keep])

    def close(self) -> None:
        """Pass on the held-back tail. A reply that ends in the middle of an echo
        (half the key or more) has that tail masked too."""
        held, self._held = self._held, ""
        if held and self._secret is not None and len(held) * 2 >= len(self._secret):
            held = MASK
        if held:
            self._emit(held)


def _partial_suffix(text: str, secret: str) -> int:
    """The length of the longest end of ``text`` that is a proper start of ``secret``."""
    for size in range(min(len(secret) - 1, len(text)), 0, -1):
        if text.endswith(secret[:size]):
            return size
    return 0
