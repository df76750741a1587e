"""The public modules' ``__all__``: present, every name real, and what the README imports."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import worker_runtime

PUBLIC_MODULES = [
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
]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_a_public_module_declares_its_names_and_has_them(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


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
