"""The profiles file (``WORKER_RUNTIME_PROFILES`` / ``--profiles``): named profiles.

JSON, or TOML when the file name ends in ``.toml``::

    {"profiles": {
      "shell": {"engine": "command", "argv": ["wc", "-w"], "timeout_s": 10},
      "local-llm": {"engine": "openai_chat", "base_url": "http://127.0.0.1:11434/v1",
                    "model": "llama3.2", "capabilities": ["chat"]}
    }}

Each profile has an ``engine``, an optional ``timeout_s`` (else the runtime
default), optional ``capabilities`` it offers, and the engine's settings. The
file is checked against ``schemas/profiles.json``, then the profile registry
builds every engine (once: the runtime keeps that registry), so a bad file
stops start-up with a :class:`ConfigError` naming the file, the profile and
the fault.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from .errors import ConfigError
from .profiles import Profile, ProfileRegistry

__all__ = ["COMMON_KEYS", "load_profiles", "load_registry", "parse_profiles"]

COMMON_KEYS = frozenset({"engine", "timeout_s", "capabilities", "description"})
"""Keys every profile may have; the rest are the engine's settings."""


def load_registry(path: str) -> ProfileRegistry:
    """The builtin profiles and those of the file at ``path``, every engine built:
    what a runtime starts with. ``ConfigError`` if the file is bad."""
    return _registry(_parse(_read(path), path), path)


def load_profiles(path: str) -> list[Profile]:
    """The named profiles in the file at ``path``, checked as start-up checks
    them; ``ConfigError`` if it is bad."""
    return parse_profiles(_read(path), path)


def parse_profiles(raw: bytes, path: str) -> list[Profile]:
    """Parse and check the bytes of a profiles file (their registry is built, then
    closed); ``path`` names it in errors and picks the format (TOML for ``.toml``,
    else JSON)."""
    profiles = _parse(raw, path)
    _registry(profiles, path).close()
    return profiles


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"profiles file {path}: cannot read it: {exc.strerror or exc}") from None


def _parse(raw: bytes, path: str) -> list[Profile]:
    document = _decode(raw, path)
    error = best_match(_validator().iter_errors(document))
    if error is not None:
        raise ConfigError(_schema_message(path, list(error.absolute_path), error.message))
    return [_profile(name, entry) for name, entry in document["profiles"].items()]


def _registry(profiles: list[Profile], path: str) -> ProfileRegistry:
    """The registry builds (and so checks) every engine; its faults name the profile."""
    try:
        return ProfileRegistry(profiles)
    except ConfigError as exc:
        raise ConfigError(f"profiles file {path}: {exc.message}") from None


def _decode(raw: bytes, path: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"profiles file {path}: not UTF-8 (byte {exc.start})") from None
    if path.lower().endswith(".toml"):
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"profiles file {path}: invalid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"profiles file {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def _schema_message(path: str, where: list[str | int], fault: str) -> str:
    """``profiles file P: profile 'N': field/path: fault`` (as much as applies)."""
    message = f"profiles file {path}: "
    if len(where) >= 2 and where[0] == "profiles":
        message += f"profile {where[1]!r}: "
        where = where[2:]
    if where:
        message += "/".join(str(part) for part in where) + ": "
    return message + fault


def _profile(name: str, entry: Mapping[str, Any]) -> Profile:
    return Profile(
        name=name,
        kind="named",
        engine=entry["engine"],
        timeout_s=entry.get("timeout_s"),
        capabilities=frozenset(entry.get("capabilities", ())),
        settings={k: v for k, v in entry.items() if k not in COMMON_KEYS},
    )


@cache
def _validator() -> jsonschema.protocols.Validator:
    text = resources.files(__package__).joinpath("schemas/profiles.json").read_text("utf-8")
    schema = json.loads(text)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)
