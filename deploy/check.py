"""Validate the files in ``deploy/`` (run by ``tox -e deploy``).

- every Kubernetes manifest with ``kubernetes-validate --strict`` against the
  schemas it ships (offline) for ``KUBERNETES_VERSION``;
- the Dockerfile with ``hadolint``;
- the systemd unit with ``systemd-analyze verify`` where that command exists
  (skipped, and said so, where it does not). ``verify`` checks that ``ExecStart``
  is executable, so the unit is verified with its program pointed at the
  ``worker-runtime`` script installed next to this Python; any line it prints
  (an unknown key is only a warning to systemd) fails the check.

Exit status 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.31.0"
INSTALLED_PATH = "/opt/worker-runtime/bin/worker-runtime"
TIMEOUT_S = 120


def run(argv: list[str]) -> bool:
    """Run one checker, show what it said; True when it exits 0."""
    print("+", " ".join(argv), flush=True)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = (result.stdout + result.stderr).strip()
    if output:
        print(output)
    return result.returncode == 0


def schemas_shipped() -> list[str] | None:
    """The Kubernetes versions whose schemas the installed kubernetes-validate
    ships, or None when it cannot be imported from this Python."""
    try:
        from kubernetes_validate import utils
    except ImportError:
        return None
    versions: list[str] = utils.all_versions()
    return versions


def check_kubernetes() -> bool:
    manifests = sorted(str(p) for p in (DEPLOY / "kubernetes").glob("*.yaml"))
    if not manifests:
        print("no Kubernetes manifests found")
        return False
    # Releases drop the oldest schemas; asked for one it lacks, the tool fails
    # with "list index out of range". tox.ini caps the release for this reason.
    shipped = schemas_shipped()
    if shipped is not None and KUBERNETES_VERSION not in shipped:
        print(
            f"kubernetes-validate ships no {KUBERNETES_VERSION} schemas "
            f"({shipped[0]} to {shipped[-1]}): pin a release that does, or update "
            "KUBERNETES_VERSION here and the cap in tox.ini together"
        )
        return False
    return run(
        ["kubernetes-validate", "--strict", "--kubernetes-version", KUBERNETES_VERSION, *manifests]
    )


def check_dockerfile() -> bool:
    return run(["hadolint", str(DEPLOY / "Dockerfile")])


def installed_script() -> str | None:
    """The ``worker-runtime`` console script of this environment."""
    name = "worker-runtime"
    beside = Path(sysconfig.get_path("scripts")) / name
    return str(beside) if os.access(beside, os.X_OK) else shutil.which(name)


def check_systemd_unit() -> bool:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("systemd-analyze not found: the systemd unit is not verified here (skipped)")
        return True
    script = installed_script()
    if script is None:
        print("the worker-runtime script is not installed: cannot verify ExecStart")
        return False
    unit = DEPLOY / "systemd" / "worker-runtime.service"
    text = unit.read_text("utf-8")
    if INSTALLED_PATH not in text:
        print(f"{unit}: ExecStart no longer runs {INSTALLED_PATH}; update deploy/check.py")
        return False
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / unit.name
        copy.write_text(text.replace(INSTALLED_PATH, script), "utf-8")
        print("+", analyze, "verify", unit, f"(ExecStart -> {script})", flush=True)
        result = subprocess.run(
            [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=TIMEOUT_S
        )
    output = (result.stdout + result.stderr).strip()
    if output:
        print(output)
    return result.returncode == 0 and not output


def main() -> int:
    results = {
        "kubernetes manifests": check_kubernetes(),
        "Dockerfile": check_dockerfile(),
        "systemd unit": check_systemd_unit(),
    }
    for name, ok in results.items():
        print(f"{name}: {'ok' if ok else 'FAILED'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
