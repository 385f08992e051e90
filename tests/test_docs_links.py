"""The documentation's links: every relative link (and its #anchor) in README.md and the pages under docs/
resolves to a file in the repository and a heading in it; config.example.yaml names only docs pages that
exist; no page cites a document that is not in the repository. All broken links are reported at once.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
OUTSIDE_DOCS = re.compile(r"\bdesign\.md\b|\bfacts\.md\b|\bDesign §|seed/data-model\.md")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _prose(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with inline code removed, numbered from 1."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, CODE_SPAN.sub("", line)))
    return out


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file (lowercase, punctuation dropped, spaces to
    hyphens, -1, -2... for repeats)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose(path.read_text()):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    # inline code was removed from prose: recompute headings with their code text kept
    for line in path.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            title = m.group(1).strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    problems = []
    rel = page.relative_to(root)
    for n, line in _prose(page.read_text()):
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                problems.append(f"{rel}:{n}: {target}: no file {file_part}")
                continue
            if not dest.is_relative_to(root):
                problems.append(f"{rel}:{n}: {target}: outside the repository")
                continue
            if anchor:
                if dest.is_dir() or dest.suffix != ".md":
                    problems.append(f"{rel}:{n}: {target}: an anchor into a non-Markdown target")
                elif anchor not in anchors(dest):
                    problems.append(f"{rel}:{n}: {target}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


def test_every_relative_link_and_anchor_resolves() -> None:
    problems = [p for page in pages() for p in broken_links(page)]
    assert not problems, f"{len(problems)} broken link(s):\n" + "\n".join(problems)


def test_config_example_names_only_docs_that_exist() -> None:
    text = (REPO / "config.example.yaml").read_text()
    named = sorted(set(re.findall(r"\bdocs/[\w./-]+\.md\b", text)))
    assert named, "config.example.yaml points its sections at their docs pages"
    missing = [d for d in named if not (REPO / d).exists()]
    assert not missing, f"config.example.yaml names missing pages: {missing}"


def test_no_page_cites_documents_outside_the_repository() -> None:
    cited = [
        f"{page.relative_to(REPO)}:{n}: {m.group(0)}"
        for page in [*pages(), REPO / "config.example.yaml"]
        for n, line in enumerate(page.read_text().splitlines(), 1)
        for m in OUTSIDE_DOCS.finditer(line)
    ]
    assert not cited, "\n".join(cited)


def test_the_readme_stays_a_newcomers_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for name in sorted(p.stem for p in (REPO / "runbooks").glob("*.yaml")):
        assert f"`{name}`" in readme, f"README lists no line for runbook {name}"


def test_the_link_checker_finds_what_is_broken(tmp_path: Path) -> None:
    """The checker itself, on pages of its own: a missing file, a missing anchor, a link out of the tree,
    and good links to a heading with inline code and to another page's heading."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "other.md").write_text("# The `x:` key\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Title here\n\n[a](nope.md) [b](#no-such) [c](#title-here) [d](../other.md#the-x-key)\n"
        "[e](../../outside.md) `[f](ignored.md)`\n```\n[g](in-code.md)\n```\n"
    )
    (tmp_path.parent / "outside.md").write_text("# out\n")
    try:
        found = broken_links(page, tmp_path)
    finally:
        (tmp_path.parent / "outside.md").unlink()
    assert [f.split(": ", 2)[1] for f in found] == ["nope.md", "#no-such", "../../outside.md"], found
