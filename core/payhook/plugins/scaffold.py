"""`payhook plugins new NAME`: a working plugin package, with passing tests, to start from.

The package is rendered from the `*.tmpl` files of `template/` (those of
`template/table/` replace or add files for `--with-table`), with `$name`, `$module`,
`$distribution` and `$prefix` filled in. `FILES` says which file comes from which template.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

__all__ = ["FILES", "TABLE_FILES", "TEMPLATE", "package_folder", "render"]

TEMPLATE = Path(__file__).parent / "template"

# The name goes into config, an entry point, a distribution and a module name.
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

# The package's files (paths may use {module} and {prefix}) and the template of each.
FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "src/{module}/__init__.py": "init.py.tmpl",
    "src/{module}/settings.py": "settings.py.tmpl",
    "src/{module}/handlers.py": "handlers.py.tmpl",
    "src/{module}/py.typed": "py.typed.tmpl",
    "tests/conftest.py": "conftest.py.tmpl",
    "tests/test_{module}.py": "test_plugin.py.tmpl",
}
# --with-table: a model, its migration on the plugin's own Alembic branch, and their tests.
TABLE_FILES = {
    **FILES,
    "pyproject.toml": "table/pyproject.toml.tmpl",
    "README.md": "table/README.md.tmpl",
    "src/{module}/handlers.py": "table/handlers.py.tmpl",
    "src/{module}/models.py": "table/models.py.tmpl",
    "src/{module}/migrations/__init__.py": "table/migrations_init.py.tmpl",
    "src/{module}/migrations/{prefix}_0001_tables.py": "table/migration_0001.py.tmpl",
    "tests/test_{module}.py": "table/test_plugin.py.tmpl",
}


def render(name: str, directory: Path, *, with_table: bool = False) -> list[Path]:
    """Write the package for plugin `name` into `directory`; returns the files written.

    Raises ValueError for a name that cannot be a plugin's, or a directory in use.
    """
    if not PLUGIN_NAME.match(name):
        raise ValueError(
            f"{name!r} cannot be a plugin name: use 1-40 lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} exists and is not empty")
    # Tables, revisions and the module need an identifier: "badge-printer" -> "badge_printer".
    prefix = name.replace("-", "_")
    values = {
        "name": name,
        "module": f"payhook_{prefix}",
        "distribution": f"payhook-{name}",
        "prefix": prefix,
    }
    written = []
    for path, template in (TABLE_FILES if with_table else FILES).items():
        target = directory / path.format(**values)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = Template((TEMPLATE / template).read_text(encoding="utf-8")).substitute(values)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return sorted(written)


def package_folder(name: str, directory: Path | None) -> Path:
    """Where `payhook plugins new NAME --directory DIR` creates the package: DIR/payhook-NAME.

    A DIR that is itself named payhook-NAME is taken as the package's folder.
    """
    folder = f"payhook-{name}"
    if directory is None:
        return Path(folder)
    return directory if directory.name == folder else directory / folder
