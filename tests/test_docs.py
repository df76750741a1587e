"""The README is a front door and every page it points to is there: its two commands
come first, it stays short, and every relative link of the README and ``docs/`` resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def anchors(document: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    text = FENCE.sub("", document.read_text("utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_starts_with_the_two_commands() -> None:
    fences = FENCE.findall((ROOT / "README.md").read_text("utf-8"))
    (lang1, serve), (lang2, test) = fences[:2]
    assert lang1 == lang2 == "sh"
    assert serve.startswith("pip install -e . && waitress-serve ")
    assert "adapters.falcon_app:app" in serve
    assert test.strip() == "pip install tox && tox"


def test_the_readme_is_read_in_five_minutes() -> None:
    lines = (ROOT / "README.md").read_text("utf-8").splitlines()
    assert len(lines) <= 160, len(lines)


def test_the_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    pages = [p.name for p in DOCUMENTS[1:] if p.name != "README.md"]
    assert {"http-api.md", "engines.md", "stores.md", "operations.md", "development.md"} <= set(
        pages
    )
    for page in pages:
        assert f"(docs/{page})" in readme, page


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(document: Path) -> None:
    links = LINK.findall(FENCE.sub("", document.read_text("utf-8")))
    assert links, "a page without links is an island"
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        assert target.exists(), f"{document.name}: {link} points at nothing"
        if anchor:
            assert anchor in anchors(target), f"{document.name}: no heading for {link}"


def test_the_anchor_rule_is_not_an_accept_all(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## TLS in front\n\n## Over HTTP, with curl\n", "utf-8")
    assert anchors(page) == {"title", "tls-in-front", "over-http-with-curl"}
