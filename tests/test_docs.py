"""The docs stay true to the code: the command reference is current, and no link leads nowhere."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", DOCS / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def local_links(page: Path) -> list[tuple[Path, str]]:
    """(target file, anchor) for every link of a page that stays inside the repository."""
    links = []
    for target in LINK.findall(outside_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        links.append(((page.parent / path).resolve() if path else page, anchor))
    return links


def outside_code(text: str) -> str:
    """The text without fenced code blocks (a `# comment` in a shell example is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", outside_code(page.read_text(encoding="utf-8")), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_cli_reference_is_current():
    expected = load_generator().render()
    current = (DOCS / "cli.md").read_text(encoding="utf-8") if (DOCS / "cli.md").exists() else ""
    assert current == expected, (
        "docs/cli.md is out of date with the commands' --help: run `.venv/bin/python docs/gen_cli_reference.py`"
    )


def test_cli_reference_lists_every_command():
    from scinsearch.cli import cli

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert len(cli.commands) >= 5
    for name in cli.commands:
        assert f"## scinsearch {name}\n" in text


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 150, f"README.md has {lines} lines; keep day-one material there and move the rest to docs/"


def test_readme_links_every_docs_page():
    linked = {path for path, _ in local_links(README) if path.parent == DOCS}
    pages = set(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    assert not pages - linked, f"not linked from README.md: {sorted(p.name for p in pages - linked)}"


@pytest.mark.parametrize(
    "page",
    [README, *sorted(DOCS.glob("*.md")), *sorted((ROOT / "scripts").glob("*.md"))],
    ids=lambda page: str(page.relative_to(ROOT)),
)
def test_local_links_resolve(page):
    links = local_links(page)
    missing = [str(path.relative_to(ROOT)) for path, _ in links if not path.exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"
    broken = [
        f"{path.relative_to(ROOT)}#{anchor}"
        for path, anchor in links
        if anchor and path.suffix == ".md" and anchor not in anchors(path)
    ]
    assert not broken, f"{page.name} links to headings that do not exist: {broken}"


def test_a_command_invoked_alone_keeps_the_short_help_option():
    """A subcommand run on its own (as tests do) must not change what the reference says: click caches the
    help option it first builds, which once turned `-h, --help` into `--help` for the rest of a test run."""
    from click.testing import CliRunner

    import scinsearch.cli  # noqa: F401  (registers the commands, as every run of the program does)
    from scinsearch.commands.download_cmds import prepare

    prepare._help_option = None  # as in a fresh process, whatever ran before in this one
    assert CliRunner().invoke(prepare, ["-h"]).exit_code == 0
    assert load_generator().render() == (DOCS / "cli.md").read_text(encoding="utf-8")


def option_env_vars() -> set[str]:
    """The environment variables the commands' options read (most named from their flag by `setting_option`)."""
    import click

    from scinsearch.cli import cli

    def walk(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    return {
        name
        for command in walk(cli)
        for param in command.params
        if isinstance(param, click.Option) and param.envvar
        for name in ([param.envvar] if isinstance(param.envvar, str) else param.envvar)
    }


def test_every_documented_variable_is_read():
    """A SCINSEARCH_ variable the docs name is one an option reads, or one of the few read directly (the
    traceback switch, the tests' own): a flag renamed without its variable would leave the docs wrong."""
    read_directly = {
        "SCINSEARCH_DEBUG",
        "SCINSEARCH_SLOW_TESTS",
        "SCINSEARCH_REQUIRE_BROWSER",
        "SCINSEARCH_KEEP_TEST_TMP",
    }
    pages = [README, *sorted(DOCS.glob("*.md"))]
    named = {
        name for page in pages for name in re.findall(r"SCINSEARCH_[A-Z_]*[A-Z]", page.read_text(encoding="utf-8"))
    }
    known = option_env_vars()
    assert {"SCINSEARCH_HNSW_M", "SCINSEARCH_SERVE_COMPILE", "QDRANT_URL"} <= known
    assert named - known - read_directly == set()
