"""``deploy/`` agrees with the code: each deployment's command line and environment
start a real server (on loopback) that answers as that runtime, its variables are
documented, its stop timeout exceeds the shutdown bound (cancel grace + 2 s), and
the Kubernetes manifests wire ids, volumes, probes and the token together.
(``tox -e deploy`` validates the files against their own tools.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from adapters.cli import build_parser

from .support.deploy import (
    DEPLOY,
    SHUTDOWN_BOUND_S,
    Deployment,
    all_deployments,
    container,
    dockerfile,
    expand,
    manifest,
    on_loopback,
    secret_key,
    statefulset,
    systemd_unit,
    unit_lines,
)
from .support.helpers import section
from .support.server import TOKEN, serve

pytestmark = pytest.mark.timeout(120)


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
    # Each pod reads its own key of one Secret (see the per-runtime token test).
    assert env["WORKER_RUNTIME_TOKEN_FILE"] == f"{token_dir}/runtime-0"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    listen_port = int(build_parser().parse_args(c["args"]).listen.rpartition(":")[2])
    assert [p["containerPort"] for p in c["ports"]] == [listen_port]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_kubernetes_expands_a_reference_to_a_variable_defined_above() -> None:
    """What the kubelet does with ``$(VAR)`` in a value (and so ``statefulset``)."""
    defined = {"A": "x", "EMPTY": ""}
    assert expand("/p/$(A)", defined) == "/p/x"
    assert expand("$(A)$(EMPTY)-$$(A)-$(LATER)-$(A", defined) == "x-$(A)-$(LATER)-$(A"
    assert expand("$$$(A) $x $", defined) == "$x $x $"


def test_every_pod_reads_its_own_token_from_one_secret() -> None:
    """``WORKER_RUNTIME_TOKEN_FILE`` names this pod's key: its reference to
    ``WORKER_RUNTIME_ID`` comes after that variable, so Kubernetes expands it."""
    pods = [f"runtime-{n}" for n in range(4)]
    files = {pod: statefulset(pod).env["WORKER_RUNTIME_TOKEN_FILE"] for pod in pods}
    for pod, path in files.items():
        assert "$(" not in path, path  # a reference Kubernetes would leave as written
        assert secret_key(path) == ("worker-runtime-tokens", pod)
    assert len(set(files.values())) == len(pods)
    # No ``items``: a key added for a new pod appears in the volume as is.
    (volume,) = [
        v for v in manifest("StatefulSet")["spec"]["template"]["spec"]["volumes"] if "secret" in v
    ]
    assert "items" not in volume["secret"]
    assert all("subPath" not in m and "subPathExpr" not in m for m in container()["volumeMounts"])


@pytest.mark.parametrize("deployment", all_deployments(), ids=lambda d: d.name)
def test_the_deployment_serves_as_its_runtime(deployment: Deployment, tmp_path: Path) -> None:
    """Its arguments and environment, with paths moved into a temp dir and the
    listener on loopback, start a server that answers as the runtime it names."""
    argv, env = on_loopback(deployment, tmp_path, TOKEN)
    with serve(env, argv=argv, token=None) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert server.request("GET", "/healthz").status == 200
        runtime = server.request("GET", "/v1/runtime", headers=auth).json()["runtime"]
        assert server.request("GET", "/v1/runtime").status == 401
    assert runtime["runtime_id"] == env.get("WORKER_RUNTIME_ID", runtime["runtime_id"])
    assert runtime["store"] == "fs"
    assert (tmp_path / "data" / "runtimes" / runtime["runtime_id"]).is_dir()


def test_a_pod_without_its_key_exits_at_start_naming_the_file(tmp_path: Path) -> None:
    """runtime-3 scaled up before its key was added: one line, status 2 (the pod
    restarts until the kubelet adds the key to its volume)."""
    argv, env = on_loopback(statefulset("runtime-3"), tmp_path, TOKEN, secret={"runtime-0": TOKEN})
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    done = subprocess.run(
        argv, env={**inherited, **env}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    assert "WORKER_RUNTIME_TOKEN_FILE" in done.stderr
    assert "/run/secrets/worker-runtime/runtime-3" in done.stderr
    assert "Traceback" not in done.stderr
