"""README.md stays a front page and the docs stay connected: no subprocess, no model."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200
# Link targets allowed to be missing, as paths relative to the repository root (none).
ALLOWED_MISSING: set[str] = set()

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)


def packages() -> list[str]:
    """Every Python package under lunar_exp/, as a repository-relative path."""
    return sorted(
        p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "lunar_exp").rglob("__init__.py")
    )


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a Markdown text (up to the next ``## ``)."""
    match = re.search(
        rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def names_package(layout: str, package: str) -> bool:
    """True when ``layout`` names ``package`` as lunar_exp/a/b(/) or, below lunar_exp, a/b/."""
    inner = package.removeprefix("lunar_exp").lstrip("/")
    forms = [rf"{re.escape(package)}/?"]
    if inner:
        forms.append(rf"{re.escape(inner)}/")
    pattern = rf"(?<![\w/.-])(?:{'|'.join(forms)})(?![\w/-])"
    return re.search(pattern, layout) is not None


def links(path: Path) -> list[str]:
    """Link targets of a Markdown file, outside code blocks and inline code."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text) + REFERENCE.findall(text)


def relative_targets(path: Path) -> list[tuple[str, str]]:
    """(link as written, repository-relative target) for every relative link of ``path``."""
    out = []
    for target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
            continue  # http(s):, mailto:, in-page anchors, absolute paths
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (path.parent / file_part).resolve()
        try:
            rel = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            rel = resolved.as_posix()
        out.append((target, rel))
    return out


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_readme_is_at_most_200_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (limit {MAX_README_LINES}): move detail into docs/ "
        "and measured numbers into docs/runs.md"
    )


def test_readme_first_code_block_is_the_setup():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, "README.md has no code block"
    assert "make run" in block.group(1) and "make test" in block.group(1), (
        "README.md's first code block must hold the set-up commands `make run` and `make test`"
    )


def test_every_package_is_named_in_the_readme_layout():
    layout = section(README.read_text(encoding="utf-8"), "Layout")
    found = packages()
    assert "lunar_exp" in found and len(found) > 1
    missing = [p for p in found if not names_package(layout, p)]
    assert not missing, (
        "README.md's Layout section does not name these packages (write e.g. "
        f"`lunar_exp/benchmarks/tofu/`): {missing}"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_existing_files(path):
    broken = [
        f"{target} -> {rel}"
        for target, rel in relative_targets(path)
        if not (ROOT / rel).exists() and rel not in ALLOWED_MISSING
    ]
    assert not broken, f"{path.relative_to(ROOT)} links to files that do not exist: {broken}"


def test_the_checks_catch_what_they_should(tmp_path):
    layout = "- `lunar_exp/`: x\n- `lunar_exp/benchmarks/`: y\n- `qa/` is not enough\n"
    assert names_package(layout, "lunar_exp") and names_package(layout, "lunar_exp/benchmarks")
    assert not names_package(layout, "lunar_exp/benchmarks/tofu")
    assert names_package("under `benchmarks/tofu/`", "lunar_exp/benchmarks/tofu")
    assert not names_package("`lunar_exp/benchmarks/tofu_extra/`", "lunar_exp/benchmarks/tofu")
    page = tmp_path / "page.md"
    page.write_text(
        "[a](gone.md#x) [b](https://example.org) [c](#here) `[d](inline.md)`\n"
        "```\n[e](fenced.md)\n```\n![f](img.png)\n",
        encoding="utf-8",
    )
    assert [t for t, _ in relative_targets(page)] == ["gone.md#x", "img.png"]


CODE_PATH = re.compile(
    r"`((?:lunar_exp|tests|conf|scripts|docs)/[\w/.-]+?\.(?:py|yaml|md))(?:::(\w+))?"
)


@pytest.mark.parametrize("page", ["docs/extending.md"])
def test_every_file_and_name_the_walk_through_cites_exists(page):
    # The walk-through names files and functions to copy; a rename must update it.
    text = (ROOT / page).read_text()
    cited = CODE_PATH.findall(text)
    assert len(cited) >= 20
    for path, name in cited:
        assert (ROOT / path).is_file(), f"{page} cites {path}, which does not exist"
        if name:
            assert re.search(rf"\b{name}\b", (ROOT / path).read_text()), f"{path}::{name}"
