"""Reading what the deploy files run (Dockerfile, systemd unit, StatefulSet): the
``worker-runtime`` arguments and environment of each, and a loopback version of
them for tests (paths moved into a temp dir, the listener on loopback)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from worker_runtime import RuntimeConfig

from .http_helpers import cli_argv

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
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


def statefulset(pod_name: str) -> Deployment:
    env: dict[str, str] = {}
    for item in container()["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            env[item["name"]] = pod_name
    return Deployment(name="kubernetes", args=container()["args"], env=env)


def all_deployments() -> list[Deployment]:
    return [dockerfile(), systemd_unit("/var/lib", "/run/credentials"), statefulset("runtime-0")]


def on_loopback(deployment: Deployment, root: Path, token: str) -> tuple[list[str], dict[str, str]]:
    """The deployment's command line and environment with its data directory and
    token file moved under ``root`` and its listener on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    token_file = root / "token"
    token_file.write_text(token + "\n", "ascii")
    env = dict(deployment.env)
    env["WORKER_RUNTIME_DATA_DIR"] = str(root / "data")
    env["WORKER_RUNTIME_TOKEN_FILE"] = str(token_file)
    args = list(deployment.args)
    args[args.index("--listen") + 1] = "127.0.0.1:0"
    return [*cli_argv()[:-2], *args], env
