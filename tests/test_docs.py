"""The documentation a newcomer reads: the README is a front page, and every option of every command is in docs/."""

import runpy

import click

from tests.conftest import REPO

COMMANDS = (
    "synth", "ingest", "preprocess", "train", "crossval", "extract-features", "tune", "inspect", "export-scores",
    "fuse", "export-model", "classify", "benchmark",
)  # fmt: skip


def _commands(name: str):
    """(path, click command) of bin/NAME and of each of its subcommands, loaded without running it."""
    namespace = runpy.run_path(str(REPO / "bin" / name), run_name=f"docs_{name}")
    main = namespace["main"]
    found = []

    def walk(command, path):
        found.append((path, command))
        if isinstance(command, click.Group):
            context = click.Context(command, info_name=path)
            for sub in command.list_commands(context):
                walk(command.get_command(context, sub), f"{path} {sub}")

    walk(main, f"bin/{name}")
    return found


def test_every_command_and_option_is_in_docs():
    docs = "\n".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))
    python_commands = {
        p.name for p in (REPO / "bin").iterdir() if p.read_text().splitlines()[1].startswith(4 * "'" + "true;")
    }
    assert python_commands == set(COMMANDS)  # a new command is documented (and added here) too
    missing = []
    for name in COMMANDS:
        for path, command in _commands(name):
            if f"`{path}`" not in docs:
                missing.append(f"{path} (no section)")
            for parameter in command.params:
                for option in getattr(parameter, "opts", []):
                    if option.startswith("-") and option not in docs:
                        missing.append(f"{path} {option}")
    assert missing == []


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name


# Which page documents which commands: the page ends with their --help (python -m tests.test_docs rewrites it).
PAGES = {
    "datasets.md": ("ingest",),
    "preprocessing.md": ("preprocess",),
    "training.md": ("train", "crossval", "extract-features"),
    "fusion.md": ("fuse",),
    "classify.md": ("classify", "export-model"),
    "analysis.md": ("tune", "inspect", "export-scores"),
    "synthetic.md": ("synth",),
    "benchmarks.md": ("benchmark",),
}
OPTIONS_HEADING = "## Options (from `--help`)"


def options_section(names) -> str:
    parts = [OPTIONS_HEADING, ""]
    for name in names:
        for path, command in _commands(name):
            context = click.Context(command, info_name=path, terminal_width=80, max_content_width=80)
            parts += [f"### `{path}`", "", "```text", command.get_help(context), "```", ""]
    return "\n".join(parts)


def test_every_command_has_its_page():
    assert sorted(n for names in PAGES.values() for n in names) == sorted(COMMANDS)


if __name__ == "__main__":  # rewrite each page's options section from the commands' --help
    for page, names in PAGES.items():
        path = REPO / "docs" / page
        text = path.read_text()
        head = text.split(OPTIONS_HEADING)[0].rstrip() + "\n\n"
        path.write_text(head + options_section(names))
        print(f"{path}: options of {', '.join(names)}")
