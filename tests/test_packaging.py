"""The sdist is a source tree whose tests run: built from a copy of this checkout with
the project's own build backend (setuptools, offline), it holds the package and its
schemas, the tests, the docs, tox.ini, README and LICENSE, declares the dependencies
and classifiers of the packaging issue, and a few of its own tests pass when run
from the unpacked tree."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".tox", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".hypothesis",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.pyc",
)  # fmt: skip
BUILD_SDIST = (
    "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools", minversion="64")
    work = tmp_path_factory.mktemp("sdist")
    source, out = work / "source", work / "out"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out.mkdir()
    built = subprocess.run(
        [sys.executable, "-c", BUILD_SDIST, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(work / "unpacked", filter="data")
    (tree,) = (work / "unpacked").iterdir()
    return tree


def relative_files(root: Path, under: str, pattern: str) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in (root / under).rglob(pattern)
        if "__pycache__" not in p.parts
    }


def test_the_sdist_holds_tests_docs_tox_and_license(unpacked: Path) -> None:
    for name in ("README.md", "LICENSE", "tox.ini", "setup.cfg", "pyproject.toml"):
        assert (unpacked / name).is_file(), name
    assert "MIT License" in (unpacked / "LICENSE").read_text("utf-8")
    for under, pattern in [
        ("tests", "*.py"),
        ("docs", "*.md"),
        ("deploy", "*"),
        ("worker_runtime/schemas", "*.json"),
        ("worker_runtime", "*.py"),
        ("adapters", "*.py"),
    ]:
        expected = relative_files(ROOT, under, pattern)
        assert expected, (under, pattern)
        assert expected <= relative_files(unpacked, under, pattern), (under, pattern)
    assert (unpacked / "worker_runtime" / "py.typed").is_file()
    assert (unpacked / "adapters" / "py.typed").is_file()


def test_the_sdist_declares_its_dependencies_and_classifiers(unpacked: Path) -> None:
    info = Parser().parsestr((unpacked / "PKG-INFO").read_text("utf-8"))
    # An sdist's PKG-INFO may leave dependencies out (older setuptools): read the
    # declaration that pip builds the wheel from.
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(unpacked / "setup.cfg", encoding="utf-8")
    requires = {
        r.replace(" ", "")
        for r in setup_cfg["options"]["install_requires"].splitlines()
        + (info.get_all("Requires-Dist") or [])
        if r.strip()
    }
    for requirement in ("falcon>=4.2", "waitress>=3.0.2", "jsonschema>=4.18"):
        assert requirement in requires, requirement
    assert any(
        r.startswith("prometheus_client") or r.startswith("prometheus-client") for r in requires
    )
    classifiers = set(info.get_all("Classifier") or [])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers, version
    assert "Typing :: Typed" in classifiers
    assert info["License"] == "MIT" or info["License-Expression"] == "MIT"


def test_tests_run_from_the_unpacked_sdist(unpacked: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "WORKER_RUNTIME_"))}
    env["PYTHONPATH"] = str(unpacked)  # the unpacked code, not this checkout's
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "tests/test_readme.py",
            "tests/test_fs_readme.py",
            "tests/test_docs.py",
            "tests/test_wire.py",
        ],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
    assert (
        str(unpacked)
        in subprocess.run(
            [sys.executable, "-c", "import worker_runtime; print(worker_runtime.__file__)"],
            cwd=unpacked,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
