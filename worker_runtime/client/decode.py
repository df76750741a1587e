"""The client's ``from_json``: one converter per type, built once from the type hints.

The converters live in :mod:`worker_runtime.codec` (``from_json`` uses them
too); this module keeps the client's name for them.
``tests/test_client_decode.py`` checks the client decodes what the server sent.
"""

from __future__ import annotations

from ..codec import Convert, converter

__all__ = ["Convert", "converter"]
