"""The public modules' ``__all__`` (every module found by walking the packages):
present, every name real; what the README imports; and every module in a layer."""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import adapters
import worker_runtime

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PACKAGES = (worker_runtime, adapters)
# Built at import: its module-level ``app`` (the one line ``waitress-serve`` needs)
# opens a runtime from the environment, so its ``__all__`` is read from its source.
BUILT_AT_IMPORT = {"adapters.falcon_app"}


def public_modules() -> list[str]:
    """Every module of the packages whose dotted name has no ``_private`` part."""
    names = [p.__name__ for p in PACKAGES]
    for package in PACKAGES:
        # A subpackage that fails to import must fail here, not drop out of the walk.
        walk = pkgutil.walk_packages(package.__path__, package.__name__ + ".", onerror=_raise)
        names.extend(m.name for m in walk if not any(p.startswith("_") for p in m.name.split(".")))
    return sorted(names)


def _raise(name: str) -> None:
    raise ImportError(f"cannot import {name}")


def test_every_public_module_is_found() -> None:
    # The modules this test once listed by hand, and those it missed: a walk that
    # lost any would leave the test below with less to check.
    listed = {
        "worker_runtime",
        "worker_runtime.clock",
        "worker_runtime.commands",
        "worker_runtime.config",
        "worker_runtime.dispatcher",
        "worker_runtime.domain",
        "worker_runtime.engines",
        "worker_runtime.errors",
        "worker_runtime.fields",
        "worker_runtime.handlers",
        "worker_runtime.profiles",
        "worker_runtime.results",
        "worker_runtime.runs",
        "worker_runtime.runs.lifecycle",
        "worker_runtime.runtime",
        "worker_runtime.state",
        "worker_runtime.stores",
        "worker_runtime.testing",
        "worker_runtime.version",
        "worker_runtime.wire",
    }
    missed = {
        "worker_runtime.answers",
        "worker_runtime.api",
        "worker_runtime.client",
        "worker_runtime.codec",
        "worker_runtime.routes",
        "worker_runtime.stores.fs",
        "adapters",
        "adapters.falcon_app",
    }
    assert listed | missed <= set(public_modules())


def declared_in_source(name: str) -> tuple[list[str] | None, set[str]]:
    """``__all__`` and the names bound at the top of ``name``'s source, unimported."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text("utf-8"))
    exported: list[str] | None = None
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    bound.add(target.id)
                    if target.id == "__all__" and node.value is not None:
                        exported = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return exported, bound


@pytest.mark.parametrize("name", public_modules())
def test_a_public_module_declares_its_names_and_has_them(name: str) -> None:
    if name in BUILT_AT_IMPORT:
        exported, bound = declared_in_source(name)
    else:
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        bound = {n for n in exported or () if hasattr(module, n)}
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if n not in bound]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_the_source_reader_sees_a_missing_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "half_public.py").write_text(
        'import os\nfrom x import y as z\n__all__ = ["os", "z", "f", "gone"]\ndef f(): ...\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    exported, bound = declared_in_source("half_public")
    assert exported == ["os", "z", "f", "gone"]
    assert {"os", "z", "f"} <= bound and "gone" not in bound


def layered(contract: str) -> set[str]:
    """The modules a layers contract of setup.cfg places, as ``container.module``."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    section = config[f"importlinter:contract:{contract}"]
    (container,) = section["containers"].split()
    return {f"{container}.{m}" for m in re.split(r"[\s:]+", section["layers"]) if m}


@pytest.mark.parametrize(
    ("package", "contract"), [(worker_runtime, "core-layers"), (adapters, "adapter-layers")]
)
def test_every_module_of_a_package_has_its_layer(package: ModuleType, contract: str) -> None:
    top = {f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)}
    assert top, package
    assert top == layered(contract)


def test_the_runs_package_docstring_names_each_of_its_modules() -> None:
    from worker_runtime import runs

    modules = {m.name for m in pkgutil.iter_modules(runs.__path__)}
    assert {"lifecycle", "queue", "recovery"} <= modules
    assert runs.__doc__ is not None
    listed = set(re.findall(r"^- ``(\w+)`` — ", runs.__doc__, re.M))
    assert listed == modules


def imports_from_the_package(*documents: Path) -> set[str]:
    """Every name the documents' python blocks import with ``from worker_runtime import``."""
    names: set[str] = set()
    text = "".join(d.read_text("utf-8") for d in documents)
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module == "worker_runtime":
                names.update(alias.name for alias in node.names)
    return names


def test_the_package_exports_what_the_readme_imports() -> None:
    used = imports_from_the_package(README)
    assert {"Runtime", "commands"} <= used  # the README's examples are still found
    assert used <= set(worker_runtime.__all__)
    # Nothing exported that the manual never shows, beyond the result types and the version.
    documented = imports_from_the_package(README, *sorted((ROOT / "docs").glob("*.md")))
    assert set(worker_runtime.__all__) - documented <= {"results", "__version__"}
