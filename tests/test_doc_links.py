"""The README and the pages under docs/ link only to files that exist; each results page to its JSON."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RESULTS = sorted((ROOT / "docs" / "results").glob("*.md"))
_LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def relative_links(text: str) -> list[str]:
    """Link targets that point into the repository (no URL, no in-page anchor), anchors cut."""
    targets = (m.group(1).split("#")[0] for m in _LINK.finditer(text))
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_relative_links_are_found():
    text = "see [a](docs/a.md#x), ![b](../b.png), [c](https://c.org), [d](#top), [e](mailto:e@f)"
    assert relative_links(text) == ["docs/a.md", "../b.png"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves_to_a_file(page):
    missing = [
        link
        for link in relative_links(page.read_text(encoding="utf-8"))
        if not (page.parent / link).resolve().is_file()
    ]
    assert not missing, f"{page.relative_to(ROOT)}: no such file: {missing}"


def test_every_results_page_is_linked_from_the_readme_and_links_its_json():
    assert RESULTS, "no page under docs/results/"
    readme_links = {(ROOT / link).resolve() for link in relative_links(PAGES[0].read_text())}
    for page in RESULTS:
        assert page.resolve() in readme_links, f"README.md does not link {page.name}"
        links = relative_links(page.read_text(encoding="utf-8"))
        assert any(link.endswith(".json") for link in links), f"{page.name} links no JSON"
