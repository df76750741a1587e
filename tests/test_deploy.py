"""``deploy/`` agrees with the code: each deployment's command line and environment
start a real server (on loopback) that answers as that runtime, its variables are
documented, its stop timeout exceeds the shutdown bound (cancel grace + 2 s), and
the Kubernetes manifests wire ids, volumes, probes and the token together.
(``tox -e deploy`` validates the files against their own tools.)"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.cli import build_parser
from worker_runtime import RuntimeConfig

from .support.helpers import section
from .support.http_helpers import cli_argv
from .support.server import TOKEN, serve

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.timeout(120)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
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


@pytest.mark.parametrize("deployment", all_deployments(), ids=lambda d: d.name)
def test_the_command_line_parses_and_listens_beyond_loopback_only_with_a_token_file(
    deployment: Deployment,
) -> None:
    args = build_parser().parse_args(deployment.args)
    assert args.command == "serve"
    if not args.listen.startswith("127.0.0.1:"):
        assert deployment.env.get("WORKER_RUNTIME_TOKEN_FILE") or args.token_file
    assert "WORKER_RUNTIME_TOKEN" not in deployment.env  # a secret never sits in a file here
    assert deployment.env["WORKER_RUNTIME_STORE"] == "fs"


@pytest.mark.parametrize("deployment", all_deployments(), ids=lambda d: d.name)
def test_every_variable_it_sets_is_documented(deployment: Deployment) -> None:
    documented = section("configuration", "docs/operations.md")
    for name in deployment.env:
        if name.startswith("WORKER_RUNTIME_"):
            assert f"`{name}`" in documented, name


def test_the_stop_timeouts_exceed_the_shutdown_bound() -> None:
    pod = manifest("StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_BOUND_S
    (timeout,) = [v for k, v in unit_lines() if k == "TimeoutStopSec"]
    assert int(timeout) > SHUTDOWN_BOUND_S
    assert ("KillMode", "mixed") in unit_lines()  # SIGTERM to the runtime, not its runs first
    docker = (DEPLOY / "Dockerfile").read_text("utf-8")
    stop_timeout = re.search(r"--stop-timeout (\d+)", docker)
    assert stop_timeout and int(stop_timeout[1]) > SHUTDOWN_BOUND_S


def test_the_systemd_unit_keeps_data_and_token_its_own() -> None:
    lines = dict(unit_lines())
    env = systemd_unit("/var/lib", "/run/credentials").env
    assert lines["DynamicUser"] == "yes" or "User" in lines
    assert env["WORKER_RUNTIME_DATA_DIR"] == f"/var/lib/{lines['StateDirectory']}"
    credential = lines["LoadCredential"].split(":", 1)[0]
    assert env["WORKER_RUNTIME_TOKEN_FILE"] == f"/run/credentials/{credential}"
    assert lines["Restart"] == "on-failure"


def test_the_dockerfile_runs_as_a_user_and_checks_health_without_curl() -> None:
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    healthcheck = re.search(r"^HEALTHCHECK .*$", text.replace("\\\n", " "), re.MULTILINE)
    assert healthcheck and '"python"' in healthcheck[0] and "/healthz" in healthcheck[0]
    assert "curl" not in healthcheck[0]
    volume = json.loads(re.search(r"^VOLUME (.+)$", text, re.MULTILINE)[1])  # type: ignore[index]
    assert volume == [dockerfile().env["WORKER_RUNTIME_DATA_DIR"]]


def test_the_statefulset_gives_each_pod_its_id_volume_token_and_probes() -> None:
    sts = manifest("StatefulSet")
    service = manifest("Service")
    pod = sts["spec"]["template"]["spec"]
    c = container()
    env = statefulset("runtime-0").env
    assert env["WORKER_RUNTIME_ID"] == "runtime-0"
    # A headless Service named like the StatefulSet: runtime-N.runtime.<ns>.svc.
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert (
        service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    )
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == env["WORKER_RUNTIME_DATA_DIR"]
    secret_volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    (token_volume,) = secret_volumes
    token_dir = mounts[token_volume]
    (item,) = secret_volumes[token_volume]["items"]
    assert env["WORKER_RUNTIME_TOKEN_FILE"] == f"{token_dir}/{item['path']}"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    listen_port = int(build_parser().parse_args(c["args"]).listen.rpartition(":")[2])
    assert [p["containerPort"] for p in c["ports"]] == [listen_port]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("deployment", all_deployments(), ids=lambda d: d.name)
def test_the_deployment_serves_as_its_runtime(deployment: Deployment, tmp_path: Path) -> None:
    """Its arguments and environment, with paths moved into a temp dir and the
    listener on loopback, start a server that answers as the runtime it names."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", "ascii")
    env = dict(deployment.env)
    env["WORKER_RUNTIME_DATA_DIR"] = str(tmp_path / "data")
    env["WORKER_RUNTIME_TOKEN_FILE"] = str(token_file)
    args = list(deployment.args)
    args[args.index("--listen") + 1] = "127.0.0.1:0"
    with serve(env, argv=[*cli_argv()[:-2], *args], token=None) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert server.request("GET", "/healthz").status == 200
        runtime = server.request("GET", "/v1/runtime", headers=auth).json()["runtime"]
        assert server.request("GET", "/v1/runtime").status == 401
    assert runtime["runtime_id"] == env.get("WORKER_RUNTIME_ID", runtime["runtime_id"])
    assert runtime["store"] == "fs"
    assert (tmp_path / "data" / "runtimes" / runtime["runtime_id"]).is_dir()
