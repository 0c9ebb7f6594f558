"""The README and docs/ stay navigable: every relative link (and its #anchor) resolves, the README
names the two set-up commands and stays short, and every file the Makefile runs exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(text: str) -> list[str]:
    """The lines of a markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    return [t for line in _prose(path.read_text(encoding="utf-8")) for t in LINK.findall(line)]


def test_docs_exist():
    assert (REPO / "docs").is_dir() and len(DOCS) > 1


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        shown = dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest
        if not dest.exists():
            broken.append(f"{target}: no file {shown}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {shown}")
    assert not broken, f"{doc.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_every_doc_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in _links(REPO / "README.md")}
    unlinked = [p.name for p in DOCS if p.parent == REPO / "docs" and p.resolve() not in linked]
    assert not unlinked, f"docs not reachable from README.md: {unlinked}"


def test_readme_is_a_front_door():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    assert len(text.splitlines()) <= 170, "README.md grew past 170 lines; move the detail to docs/"


def test_makefile_runs_files_that_exist():
    """Every ``bench/...py`` or ``python X.py`` the Makefile names exists (a glob must match a file)."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/])((?:bench|tests|pipeline|train)/[\w*./-]+\.py)", makefile))
    assert named, "the Makefile names no script; update this test"
    missing = [n for n in sorted(named) if not list(REPO.glob(n))]
    assert not missing, f"Makefile names missing files: {missing}"
