"""Reading what the deploy files run (Dockerfile, systemd unit, StatefulSet): the
``worker-runtime`` arguments and environment of each, and a loopback version of
them for tests (paths moved into a temp dir, the listener on loopback).

The StatefulSet's values are expanded as the kubelet does (``$(VAR)`` from the
variables defined above), and its Secret volume is laid out as the kubelet
writes one (every key a symlink into ``..data``)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from worker_runtime import RuntimeConfig

from .http_helpers import cli_argv

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TOKEN_FILE_VAR = "WORKER_RUNTIME_TOKEN_FILE"
# SIGTERM: the process exits within the cancel grace + 2 s (SPEC section 9).
SHUTDOWN_BOUND_S = RuntimeConfig().cancel_grace_s + 2


@dataclass(frozen=True, kw_only=True, slots=True)
class Deployment:
    """What one deploy file runs: ``worker-runtime`` arguments and its environment."""

    name: str
    args: list[str]
    env: dict[str, str]


def dockerfile() -> Deployment:
    text = (DEPLOY / "Dockerfile").read_text("utf-8").replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]  # the runtime stage
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", final, re.MULTILINE):
        env.update(item.split("=", 1) for item in shlex.split(line))
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", final, re.MULTILINE)[1])  # type: ignore[index]
    cmd = json.loads(re.search(r"^CMD (.+)$", final, re.MULTILINE)[1])  # type: ignore[index]
    assert entrypoint == ["worker-runtime"]
    return Deployment(name="docker", args=cmd, env=env)


def unit_lines() -> list[tuple[str, str]]:
    text = (DEPLOY / "systemd" / "worker-runtime.service").read_text("utf-8")
    return re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE)


def systemd_unit(state_dir: str, credentials_dir: str) -> Deployment:
    lines = unit_lines()
    specifiers = {"%H": "host-1", "%S": state_dir, "%d": credentials_dir}
    env: dict[str, str] = {}
    for key, value in lines:
        if key == "Environment":
            for spec, real in specifiers.items():
                value = value.replace(spec, real)
            name, _, val = value.partition("=")
            env[name] = val
    (exec_start,) = [v for k, v in lines if k == "ExecStart"]
    program, *args = shlex.split(exec_start)
    assert program.endswith("/worker-runtime")
    return Deployment(name="systemd", args=args, env=env)


def manifests() -> Iterator[dict[str, Any]]:
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        yield from (doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc)


def manifest(kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests() if m["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    (found,) = manifest("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return found


_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """``value`` with Kubernetes's dependent-variable expansion: ``$(NAME)`` is the
    value of ``NAME`` when it is in ``defined`` (the container's variables listed
    above this one), else kept as written; ``$$`` is one ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match[1] == "$":
            return "$"
        return defined.get(match[2], match[0])

    return _REFERENCE.sub(substitute, value)


def statefulset(pod_name: str) -> Deployment:
    """What pod ``pod_name`` of the StatefulSet runs, its values expanded."""
    env: dict[str, str] = {}
    for item in container()["env"]:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[item["name"]] = pod_name
    args = [expand(arg, env) for arg in container()["args"]]
    return Deployment(name="kubernetes", args=args, env=env)


def secret_key(path: str) -> tuple[str, str]:
    """The Secret and the key whose file a StatefulSet container sees at ``path``."""
    volumes = manifest("StatefulSet")["spec"]["template"]["spec"]["volumes"]
    secrets = {v["name"]: v["secret"] for v in volumes if "secret" in v}
    for mount in container()["volumeMounts"]:
        if mount["name"] in secrets and path.startswith(mount["mountPath"] + "/"):
            assert "subPath" not in mount and "subPathExpr" not in mount
            name = path.removeprefix(mount["mountPath"] + "/")
            secret = secrets[mount["name"]]
            # Without ``items`` every key is a file named by its key.
            items = {i["path"]: i["key"] for i in secret.get("items", [])}
            if items and name not in items:
                break
            return secret["secretName"], items.get(name, name)
    raise LookupError(f"{path} is on no Secret volume")


def write_secret_volume(directory: Path, data: Mapping[str, str]) -> None:
    """Write (or update) a Secret volume as the kubelet does: the files in a new
    timestamped directory, ``..data`` switched to it in one rename, and each key
    a symlink through ``..data``."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = directory / f"..2025_01_01_00_00_00.{len(list(directory.glob('..2*'))):09d}"
    payload.mkdir()
    for key, value in data.items():
        (payload / key).write_text(value, "ascii")
    (directory / "..data_tmp").symlink_to(payload.name)
    (directory / "..data_tmp").replace(directory / "..data")
    for key in data:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")


def all_deployments() -> list[Deployment]:
    return [dockerfile(), systemd_unit("/var/lib", "/run/credentials"), statefulset("runtime-0")]


def on_loopback(
    deployment: Deployment, root: Path, token: str, *, secret: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The deployment's command line and environment with its data directory and
    token file moved under ``root`` and its listener on a free loopback port.

    The token file stays where the deployment says, under ``root/mnt``; for the
    StatefulSet that is its Secret volume holding ``secret`` (every pod's token
    by key: by default ``token`` under this pod's key), so the pod must pick its
    own key."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(deployment.env)
    env["WORKER_RUNTIME_DATA_DIR"] = str(root / "data")
    configured = env[TOKEN_FILE_VAR]
    token_file = root / "mnt" / configured.lstrip("/")
    if deployment.name == "kubernetes":
        _name, key = secret_key(configured)
        write_secret_volume(token_file.parent, {key: token + "\n"} if secret is None else secret)
    else:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token + "\n", "ascii")
    env[TOKEN_FILE_VAR] = str(token_file)
    args = list(deployment.args)
    args[args.index("--listen") + 1] = "127.0.0.1:0"
    return [*cli_argv()[:-2], *args], env
