"""`payhook plugin new NAME`: a working plugin package, with a passing test, to start from.

The package is rendered from `plugin_template/`: every `*.tmpl` file, with `$name`,
`$module` and `$distribution` filled in and `__module__` in paths replaced.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from string import Template

import click

__all__ = ["TEMPLATE", "plugin", "render"]

TEMPLATE = Path(__file__).parent / "plugin_template"

# The name goes into config, an entry point, a distribution and a module name.
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def render(name: str, directory: Path) -> list[Path]:
    """Write the template for plugin `name` into `directory`; returns the files written.

    Raises ValueError for a name that cannot be a plugin's, or a directory in use.
    """
    if not PLUGIN_NAME.match(name):
        raise ValueError(
            f"{name!r} cannot be a plugin name: use 1-40 lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} exists and is not empty")
    module = "payhook_" + name.replace("-", "_")
    values = {"name": name, "module": module, "distribution": f"payhook-{name}"}
    written = []
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = source.relative_to(TEMPLATE).with_suffix("")
        target = directory.joinpath(*(part.replace("__module__", module) for part in relative.parts))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(source.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        written.append(target)
    return written


@click.group()
def plugin() -> None:
    """Commands for plugin authors."""


@plugin.command()
@click.argument("name")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to create the package (default: ./payhook-NAME).",
)
def new(name: str, directory: Path | None) -> None:
    """Create the package payhook-NAME: one handler, its entry point, and a passing test."""
    target = directory or Path(f"payhook-{name}")
    try:
        files = render(name, target)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for path in files:
        click.echo(f"created {path}")
    click.echo(f'\nnext: pip install -e "{target}[testing]" && pytest {target}')
