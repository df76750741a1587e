"""Profiles: a name for an engine with its settings, timeout and capabilities.

The builtin ``echo`` profile is the runtime default. Named profiles come from
a profiles file (see ``profiles_file``) and are resolved here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .domain import ProfileSelector
from .engines import ENGINES, Engine, EngineFactory
from .errors import ConfigError, UnknownProfile

__all__ = ["DEFAULT_PROFILE", "Profile", "ProfileRegistry"]

DEFAULT_PROFILE = "echo"


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """``kind`` is ``builtin`` or ``named``; ``timeout_s`` None means the runtime default."""

    name: str
    kind: str
    engine: str
    timeout_s: float | None = None
    capabilities: frozenset[str] = frozenset()
    settings: Mapping[str, Any] = field(default_factory=dict)


BUILTIN_PROFILES = (Profile(name="echo", kind="builtin", engine="echo"),)


class ProfileRegistry:
    """Resolves profile selectors to profiles and builds one engine per profile
    (the one place engines are built; ``ConfigError`` names the profile).

    ``engines`` adds engine factories (by engine name) beside the built-in
    ``ENGINES`` registry, for this registry only: how an embedding
    application, or a test, plugs in an engine of its own.
    """

    def __init__(
        self, named: Iterable[Profile] = (), *, engines: Mapping[str, EngineFactory] | None = None
    ) -> None:
        self._builtin = {p.name: p for p in BUILTIN_PROFILES}
        self._named = {p.name: p for p in named}
        self._factories: dict[str, EngineFactory] = {**ENGINES, **(engines or {})}
        self._engine_names = sorted(self._factories)
        self._engines: dict[tuple[str, str], Engine] = {}
        # Every engine is built here, once and up front, so a bad setting fails at
        # start-up; those already built are closed if a later one cannot be.
        try:
            for profile in self.all():
                self._engines[(profile.kind, profile.name)] = self._build(profile)
        except BaseException:
            self.close()
            raise

    def _build(self, profile: Profile) -> Engine:
        """``profile``'s engine; ``ConfigError`` naming the profile and the fault."""
        try:
            factory = self._factories.get(profile.engine)
            if factory is None:
                known = ", ".join(self._engine_names)
                raise ConfigError(f"unknown engine {profile.engine!r} (known: {known})")
            return factory(profile.settings)
        except ConfigError as exc:
            raise ConfigError(f"profile {profile.name!r}: {exc.message}") from None

    def all(self) -> list[Profile]:
        return [*self._builtin.values(), *self._named.values()]

    def resolve(self, selector: ProfileSelector) -> Profile:
        """The profile ``selector`` names; ``UnknownProfile`` if there is none."""
        if selector.kind == "runtime_default":
            return self._builtin[DEFAULT_PROFILE]
        table = self._builtin if selector.kind == "builtin" else self._named
        profile = table.get(selector.value or "")
        if profile is None:
            raise UnknownProfile(
                f"no {selector.kind} profile named {selector.value!r}",
                details={"field": "/profile/value", "profile": selector.value},
            )
        return profile

    def engine_for(self, profile: Profile) -> Engine:
        return self._engines[(profile.kind, profile.name)]

    def engine_names(self) -> list[str]:
        """Every engine a profile may name here (not only those in use)."""
        return self._engine_names

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
