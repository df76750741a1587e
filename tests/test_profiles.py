"""The profiles file: JSON and TOML, every fault's message, and named profiles at work."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from worker_runtime import Runtime, RuntimeConfig, commands, wire
from worker_runtime.domain import CapabilityRequest, ProfileSelector
from worker_runtime.engines import ENGINES, EchoEngine
from worker_runtime.errors import (
    ConfigError,
    UnknownProfile,
    UnsupportedCapability,
    WorkerRuntimeError,
)
from worker_runtime.profiles import Profile, ProfileRegistry
from worker_runtime.profiles_file import load_profiles, parse_profiles

from .support.engine_support import create, reply, run_once

TOML = """
[profiles.words]
engine = "command"
argv = ["wc", "-w"]
timeout_s = 5
capabilities = ["count"]

[profiles.words.env]
LC_ALL = "C"

[profiles.llm]
engine = "openai_chat"
base_url = "http://127.0.0.1:11434/v1"
model = "llama3.2"
api_key_env = "OPENAI_API_KEY"
"""


def write(tmp_path: Path, document: Any, name: str = "profiles.json") -> str:
    path = tmp_path / name
    text = document if isinstance(document, str) else json.dumps(document)
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_json_and_toml_load_the_same_profiles(tmp_path: Path) -> None:
    from_toml = load_profiles(write(tmp_path, TOML, "p.toml"))
    as_json = {
        "profiles": {
            "words": {
                "engine": "command",
                "argv": ["wc", "-w"],
                "timeout_s": 5,
                "capabilities": ["count"],
                "env": {"LC_ALL": "C"},
            },
            "llm": {
                "engine": "openai_chat",
                "base_url": "http://127.0.0.1:11434/v1",
                "model": "llama3.2",
                "api_key_env": "OPENAI_API_KEY",
            },
        }
    }
    assert from_toml == load_profiles(write(tmp_path, as_json))
    assert from_toml[0] == Profile(
        name="words",
        kind="named",
        engine="command",
        timeout_s=5,
        capabilities=frozenset({"count"}),
        settings={"argv": ["wc", "-w"], "env": {"LC_ALL": "C"}},
    )


FAULTS = [
    ('{"profiles": {', "invalid JSON at line 1 column 15: Expecting property name"),
    ("[]", "[] is not of type 'object'"),
    ({"profile": {}}, "'profiles' is a required property"),
    ({"profiles": {"bad name": {"engine": "echo"}}}, "'bad name' does not match"),
    ({"profiles": {"p": {"argv": ["x"]}}}, "profile 'p': 'engine' is a required property"),
    ({"profiles": {"p": {"engine": "gpt"}}}, "profile 'p': unknown engine 'gpt' (known: "),
    ({"profiles": {"p": {"engine": "command"}}}, "profile 'p': 'argv' is a required property"),
    (
        {"profiles": {"p": {"engine": "command", "argv": ["a", 1]}}},
        "profile 'p': argv/1: 1 is not of type 'string'",
    ),
    (
        {"profiles": {"p": {"engine": "command", "argv": ["a"], "shel": True}}},
        "profile 'p': Additional properties are not allowed ('shel' was unexpected)",
    ),
    (
        {"profiles": {"p": {"engine": "command", "argv": ["a"], "timeout_s": 0}}},
        "profile 'p': timeout_s: 0 is less than or equal to the minimum of 0",
    ),
    (
        {"profiles": {"p": {"engine": "command", "argv": ["a"], "cwd": "/no/such/dir"}}},
        "profile 'p': cwd '/no/such/dir' is not a directory",
    ),
    (
        {"profiles": {"p": {"engine": "openai_chat", "base_url": "ftp://x", "model": "m"}}},
        "profile 'p': base_url: 'ftp://x' does not match",
    ),
    (
        {"profiles": {"p": {"engine": "openai_chat", "base_url": "http://x/v1"}}},
        "profile 'p': 'model' is a required property",
    ),
    (
        {"profiles": {"p": {"engine": "echo", "capabilities": ["a", "a"]}}},
        "profile 'p': capabilities: ['a', 'a'] has non-unique elements",
    ),
]


@pytest.mark.parametrize(("document", "fault"), FAULTS)
def test_each_fault_names_the_file_the_profile_and_the_fault(
    tmp_path: Path, document: Any, fault: str
) -> None:
    path = write(tmp_path, document)
    with pytest.raises(ConfigError) as raised:
        load_profiles(path)
    assert raised.value.message.startswith(f"profiles file {path}: ")
    assert fault in raised.value.message
    assert raised.value.code == "invalid_config"


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[profiles.p\nengine = 1", "p.toml")
    with pytest.raises(ConfigError, match=r"profiles file .*p\.toml: invalid TOML: "):
        load_profiles(path)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.json")
    with pytest.raises(ConfigError) as raised:
        load_profiles(missing)
    assert raised.value.message == (
        f"profiles file {missing}: cannot read it: No such file or directory"
    )
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"profiles": {"caf\xe9": {}}}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_profiles(str(latin))


def test_a_bad_file_stops_start_up(tmp_path: Path) -> None:
    path = write(tmp_path, {"profiles": {"p": {"engine": "command"}}})
    with pytest.raises(ConfigError, match="profile 'p'"):
        Runtime.from_env({"WORKER_RUNTIME_PROFILES": path})


@pytest.fixture
def rt(tmp_path: Path) -> Any:
    profiles = {
        "profiles": {
            "words": {
                "engine": "command",
                "argv": ["wc", "-w"],
                "capabilities": ["count"],
                "env": {"SECRET_TOKEN": "hunter2-env-secret"},
            },
            "llm": {
                "engine": "openai_chat",
                "base_url": "http://user:hunter2-url-secret@127.0.0.1:9/v1",
                "model": "m",
                "api_key_env": "HUNTER2_KEY_NAME",
                "timeout_s": 42,
            },
        }
    }
    runtime = Runtime.from_env({"WORKER_RUNTIME_PROFILES": write(tmp_path, profiles)})
    yield runtime
    runtime.close()


def test_runtime_lists_profiles_and_engines_without_settings(rt: Runtime) -> None:
    info = rt.dispatch(commands.GetRuntime())
    listed = {p.name: (p.kind, p.engine, p.timeout_s, p.capabilities) for p in info.profiles}
    assert listed == {
        "echo": ("builtin", "echo", rt.config.run_timeout_s, ()),
        "words": ("named", "command", rt.config.run_timeout_s, ("count",)),
        "llm": ("named", "openai_chat", 42, ()),
    }
    assert info.engines == ("command", "echo", "openai_chat")
    text = json.dumps(wire.to_json(info))
    assert "hunter2" not in text.lower()


def test_named_profiles_resolve_and_run(rt: Runtime) -> None:
    worker = create(rt, "words")
    end = run_once(rt, worker, "three little words")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id).strip() == "3"


def test_an_unknown_profile_name(rt: Runtime) -> None:
    with pytest.raises(UnknownProfile) as raised:
        create(rt, "nope")
    assert raised.value.code == "unknown_profile"


def test_capabilities_must_be_offered_by_the_profile(rt: Runtime) -> None:
    def create_with(profile: str, capability: str) -> None:
        rt.dispatch(
            commands.CreateWorker(
                profile=ProfileSelector(kind="named", value=profile),
                requested_capabilities=(CapabilityRequest(name=capability),),
            )
        )

    create_with("words", "count")
    with pytest.raises(UnsupportedCapability) as raised:
        create_with("llm", "count")
    assert raised.value.code == "unsupported_capability"
    assert raised.value.details["unsupported"] == ["count"]


def test_without_a_profiles_file_only_the_builtin_exists() -> None:
    with Runtime.open(RuntimeConfig()) as runtime:
        info = runtime.dispatch(commands.GetRuntime())
    assert [p.name for p in info.profiles] == ["echo"]


def test_the_readme_examples_are_valid_profiles_files(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "docs" / "engines.md").read_text(encoding="utf-8")
    section = readme[
        readme.index("<!-- section:engines -->") : readme.index("<!-- /section:engines -->")
    ]
    examples = re.findall(r"```(json|toml)\n(.*?)```", section, re.S)
    assert len(examples) == 3
    for language, text in examples:
        text = text.replace('"/opt/tools"', json.dumps(str(tmp_path)))  # cwd must exist
        assert parse_profiles(text.encode(), f"example.{language}")


def test_runtime_lists_every_registered_engine_even_unused() -> None:
    with Runtime.open() as runtime:
        info = runtime.dispatch(commands.GetRuntime())
    assert [p.name for p in info.profiles] == ["echo"]
    assert info.engines == ("command", "echo", "openai_chat")


class CountedEngine(EchoEngine):
    """The echo engine, counting how many were built and closed."""

    built = 0
    closed = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).built += 1

    def close(self) -> None:
        type(self).closed += 1


def test_start_up_builds_each_engine_of_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CountedEngine, "built", 0)
    monkeypatch.setitem(ENGINES, "counted", lambda settings: CountedEngine())
    path = write(tmp_path, {"profiles": {"a": {"engine": "counted"}, "b": {"engine": "counted"}}})
    with Runtime.open(RuntimeConfig(profiles_path=path)) as runtime:
        assert CountedEngine.built == 2  # one per profile, by the registry the runtime keeps
        worker = create(runtime, "a")
        assert run_once(runtime, worker, "hi").type == "run_completed"
    assert CountedEngine.built == 2


def test_a_registry_that_cannot_build_an_engine_closes_those_it_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CountedEngine, "built", 0)
    monkeypatch.setattr(CountedEngine, "closed", 0)
    profiles = [
        Profile(name="first", kind="named", engine="mine"),
        Profile(name="second", kind="named", engine="theirs"),
    ]
    with pytest.raises(ConfigError) as raised:
        ProfileRegistry(profiles, engines={"mine": lambda settings: CountedEngine()})
    # The one unknown-engine check knows the registry's own engines too.
    assert raised.value.message.startswith("profile 'second': unknown engine 'theirs' (known: ")
    assert "mine" in raised.value.message
    assert (CountedEngine.built, CountedEngine.closed) == (1, 1)


def test_an_open_that_fails_after_building_the_engines_closes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CountedEngine, "built", 0)
    monkeypatch.setattr(CountedEngine, "closed", 0)
    monkeypatch.setitem(ENGINES, "counted", lambda settings: CountedEngine())
    path = write(tmp_path, {"profiles": {"a": {"engine": "counted"}}})
    data_dir = tmp_path / "data"
    config = RuntimeConfig(profiles_path=path, store="fs", data_dir=str(data_dir), runtime_id="rt")
    with Runtime.open(config), pytest.raises(WorkerRuntimeError):
        Runtime.open(config)  # the data directory is owned: the store cannot open
    assert (CountedEngine.built, CountedEngine.closed) == (2, 2)
