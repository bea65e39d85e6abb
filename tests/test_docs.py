"""The user documentation: generated reference pages are current, every relative link in the
README and docs/ resolves, and the product's pages read as documentation, not as a lab log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _regenerate_hint(module: str, page: str) -> str:
    return f"{page} is stale: run `.venv/bin/python -m {module} > {page}`"


def test_configuration_reference_is_generated_from_the_config_model():
    from edgead.service.config_doc import render

    page = REPO / "docs/reference/configuration.md"
    assert page.read_text() == render(), _regenerate_hint("edgead.service.config_doc", "docs/reference/configuration.md")


def test_every_config_setting_has_a_description():
    """The descriptions ARE the configuration reference."""
    from edgead.service.config import EdgeadConfig

    missing = [name for name, info in EdgeadConfig.model_fields.items() if not info.description
               and not hasattr(info.annotation, "model_fields")]
    for section, info in EdgeadConfig.model_fields.items():
        for name, field in getattr(info.annotation, "model_fields", {}).items():
            if not field.description:
                missing.append(f"{section}.{name}")
    assert not missing, f"settings without a description: {', '.join(missing)}"


def test_cli_reference_is_generated_from_the_parsers():
    from edgead.workstation import available

    if not available("export_parser"):
        pytest.skip("edgead[export] is not installed: the export options cannot be listed")
    from edgead.cli_doc import render

    page = REPO / "docs/reference/cli.md"
    assert page.read_text() == render(), _regenerate_hint("edgead.cli_doc", "docs/reference/cli.md")


def test_cli_reference_lists_every_command_and_option():
    from edgead.cli import COMMANDS
    from edgead.service.main import build_parser

    text = (REPO / "docs/reference/cli.md").read_text()
    for name in COMMANDS:
        assert f"## edgead {name}\n" in text
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}" in text, option


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for match in LINK.finditer(page.read_text()):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {'; '.join(broken)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_are_written_for_users(page):
    """No development log in the product's pages: no sessions, issue numbers or paths that
    exist only on the developers' machines."""
    text = page.read_text()
    for pattern in (r"\bsession\b", r"\bsessions\b", r"\bissue \d", r"\.\./shared", r"\bhelper\b"):
        found = re.search(pattern, text, re.IGNORECASE)
        assert found is None, f"{page.relative_to(REPO)}: {found.group(0)!r} near {text[max(0, found.start() - 60):found.end() + 20]!r}"


def test_one_dated_benchmarks_page_names_the_machine():
    text = (REPO / "docs/benchmarks.md").read_text()
    head = text[:800]
    assert "2026-12-03" in head and "x86-64" in head
    assert not (REPO / "docs/performance.md").exists() and not (REPO / "docs/realdata.md").exists()
