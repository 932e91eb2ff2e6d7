"""Relative links in README.md and docs/**/*.md resolve.

Every markdown link and image (`[text](path)`, `![alt](path)`, reference definitions
`[name]: path`) that is not a URL must name an existing file or folder, relative to the page
(or to the repository root when it starts with `/`, as on GitHub). A `#anchor` must match a
heading of the target page, slugged the way GitHub does. Links inside code are not links.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[\"'(].*?)?\)"
)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (code blocks come out as empty lines)."""
    lines, fence = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            lines.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return lines


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image on a page."""
    found = []
    for number, line in enumerate(prose_lines(text), start=1):
        line = INLINE_CODE.sub("", line)
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        targets += [m.group(1) for m in REFERENCE.finditer(line)]
        found += [(number, t.strip("<>")) for t in targets]
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation other than
    hyphens and underscores removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown page; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Why each relative link on ``page`` does not resolve (empty when all do)."""
    problems = []
    for number, target in links(page.read_text(encoding="utf-8")):
        if URL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if not path_part:
            dest = page
        elif path_part.startswith("/"):
            dest = root / path_part.lstrip("/")
        else:
            dest = (page.parent / path_part).resolve()
        where = f"{page.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file {os.path.relpath(dest, root)}")
        elif anchor and dest.suffix.lower() == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def test_pages_exist():
    assert (ROOT / "README.md").is_file()
    assert len(PAGES) > 1, "no markdown pages under docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_checker_reports_broken_links(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "topic.md").write_text("# Topic\n\n## Step one: `armvla run`\n")
    (tmp_path / "README.md").write_text(
        "See [the topic](docs/topic.md#step-one-armvla-run) and ![a](docs/topic.md).\n"
        "`[in code](missing.md)` and [web](https://example.com/x.md) are not checked.\n"
        "```\n[in a block](missing.md)\n```\n"
        "[gone](docs/missing.md) [bad anchor](docs/topic.md#step-two)\n"
        "[ref]: docs/also-missing.md\n"
    )
    problems = broken_links(tmp_path / "README.md", root=tmp_path)
    assert len(problems) == 3, problems
    assert "docs/missing.md" in problems[0]
    assert "#step-two" in problems[1]
    assert "docs/also-missing.md" in problems[2]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        (
            "Recording teleoperated demos: `armvla record`",
            "recording-teleoperated-demos-armvla-record",
        ),
        ("Safety gate and the arm runtime", "safety-gate-and-the-arm-runtime"),
        ("Fault → reaction", "fault--reaction"),
        ("The `safety_gate` figures (p99, ms)", "the-safety_gate-figures-p99-ms"),
    ],
)
def test_github_slug(heading: str, slug: str):
    assert github_slug(heading) == slug
