"""The documentation a newcomer follows has no dead ends.

Every relative link in README.md, docs/ and bench/README.md resolves to a file in the repository
(and an ``#anchor`` to a heading in it); every ``*.md`` path written in backticks exists; the
systemd units' ``Documentation=`` points at a page the install steps put there.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_BYTES = 20 * 1024

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_MD_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)*\.md$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# A repository path written in backticks (`tests/e2e/test_demo.py`, `killswitch/net/ws.py::Frames`).
_REPO_PATH = re.compile(r"^(?:killswitch|tests|bench|rules|systemd|contrib|docs)/[\w./-]+\.(?:py|ya?ml|json|service|md)$")


def _doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "bench" / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.exists()]


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with their 1-based numbers."""
    out, fenced = [], False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose_lines(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = _slug(m.group(1))
        k = seen.get(base, 0)
        seen[base] = k + 1
        anchors.add(base if k == 0 else f"{base}-{k}")
    return anchors


def _links(path: Path):
    for n, line in _prose_lines(path):
        # Links inside code spans are examples, not links.
        for m in _LINK.finditer(_CODE_SPAN.sub("", line)):
            yield n, m.group(1)


def _problems_in(path: Path) -> list[str]:
    problems = []
    rel = path.relative_to(ROOT)
    for n, target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, file: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / file_part).resolve()
        if not dest.exists():
            problems.append(f"{rel}:{n}: link to {target!r}: {file_part} does not exist")
            continue
        if ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{rel}:{n}: link to {target!r} leaves the repository")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{rel}:{n}: link to {target!r}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    for n, line in _prose_lines(path):
        for m in _CODE_SPAN.finditer(line):
            token = m.group(1).strip()
            repo_path = token.split("::")[0]
            if _REPO_PATH.match(repo_path) and not (ROOT / repo_path).exists():
                problems.append(f"{rel}:{n}: `{token}` names a file that does not exist")
                continue
            if not _MD_PATH.match(token):
                continue
            if not ((ROOT / token).exists() or (path.parent / token).exists()):
                problems.append(f"{rel}:{n}: `{token}` names a page that does not exist")
    return problems


def test_every_relative_link_in_the_docs_resolves():
    files = _doc_files()
    assert ROOT / "README.md" in files and any(f.parent.name == "docs" for f in files)
    problems = [p for f in files for p in _problems_in(f)]
    assert not problems, "dead links:\n" + "\n".join(problems)


def test_the_link_checker_finds_a_dead_link_and_a_dead_anchor(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text(
        "# Page\n\n[ok](other.md#a-section) [gone](docs/oxfun.md) [bad](other.md#nope) `missing.md`\n"
        "`tests/unit/test_gone.py::test_x`\n"
        "```\n[in a fence](nowhere.md)\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    problems = _problems_in(page)
    assert len(problems) == 4, problems
    assert "docs/oxfun.md" in problems[0] and "#nope" in problems[1] and "missing.md" in problems[2]
    assert "tests/unit/test_gone.py" in problems[3]


def test_readme_is_short_and_has_a_table_of_contents():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= README_MAX_BYTES
    assert "## Contents" in text
    for section in ("The two commands", "Guard one account in five minutes", "What happens when it trips",
                    "Exit codes", "Architecture on one screen", "Figures"):
        assert f"## {section}" in text, section
        assert f"](#{_slug(section)})" in text, f"{section} missing from the table of contents"


@pytest.mark.parametrize("unit", sorted((ROOT / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_unit_documentation_points_at_an_installed_page(unit):
    urls = [u for line in unit.read_text().splitlines() if line.startswith("Documentation=")
            for u in line.split("=", 1)[1].split()]
    assert urls, f"{unit.name} has no Documentation="
    install = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for url in urls:
        if url.startswith(("http://", "https://", "man:", "info:")):
            continue
        assert url.startswith("file:///usr/share/doc/killswitch/"), url
        page = url.removeprefix("file:///usr/share/doc/killswitch/")
        assert (ROOT / "docs" / page).exists(), f"{url}: docs/{page} is not in the repository"
        # The install steps must put it where the unit says.
        assert f"/usr/share/doc/killswitch/{page}" in install, url


def test_the_readme_walkthrough_config_passes_check():
    """The config the five-minute walk-through writes is valid as printed (it is copied verbatim)."""
    from killswitch.config import check_secrets, load_config_text

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"cat > /tmp/guard/guard\.yaml <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    assert m, "walk-through config block not found"
    cfg = load_config_text(m.group(1), "/tmp/guard/guard.yaml")
    assert [v.name for v in cfg.venues] == ["ox-sim"]
    assert {r.kind for r in cfg.rules} == {"drawdown", "max_open_orders", "manual"}
    env = {"KILLSWITCH_SIM_OX_KEY": "k", "KILLSWITCH_SIM_OX_SECRET": "s"}
    assert not [i for i in check_secrets(cfg, env, strict_env=True) if i.severity == "error"]


def test_every_test_the_docs_name_exists():
    """A docs table that cites ``test_x`` (or ``file.py::test_x[param]``) cites a real test."""
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    missing = []
    for doc in _doc_files():
        for n, line in _prose_lines(doc):
            for m in _CODE_SPAN.finditer(line):
                token = m.group(1).strip()
                names = re.findall(r"::(test_\w+)", token)
                if not names and re.fullmatch(r"test_\w+", token):
                    names = [token]
                missing += [f"{doc.relative_to(ROOT)}:{n}: {name}" for name in names if name not in defined]
    assert not missing, "the docs cite tests that do not exist:\n" + "\n".join(missing)
