"""The documentation site's structure: every page is in the navigation, the API reference documents every public
name. (That every page builds with no broken link is ``mkdocs build --strict``, run by .ci/run.)"""

from __future__ import annotations

import re

import yaml
from conftest import ROOT

DOCS = ROOT / "docs"


def _nav_pages(nav) -> list[str]:
    out: list[str] = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            out.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return out


def test_every_page_is_in_the_navigation_and_every_nav_entry_exists():
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def test_the_reference_documents_every_public_name():
    from visctl.library import EXPORTS

    text = (DOCS / "reference.md").read_text()
    documented = {(m.removeprefix("library.") if m.startswith("library.") else f"visctl.{m}", a)
                  for m, a in re.findall(r"^::: visctl\.((?:library\.)?\w+)\.(\w+)$", text, re.M)}
    assert documented == set(EXPORTS.values())
    for name in EXPORTS:
        assert f"## visctl.{name}\n" in text  # under the name users import
