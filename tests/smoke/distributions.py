"""The five distributions this repository releases, read from their pyproject.toml files."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The core first: the others depend on it, and it is installed first.
PROJECT_DIRS = (".", "plugins/registration", "plugins/disputes", "plugins/notify", "integrations/django")


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    project_dir: Path
    source_root: Path  # [tool.setuptools.packages.find] where: the packages' parent
    dependencies: tuple[str, ...]

    @property
    def file_stem(self) -> str:
        """The name as wheel and sdist file names spell it (PEP 625, PEP 491)."""
        return re.sub(r"[-_.]+", "_", self.name).lower()

    @property
    def wheel(self) -> str:
        return f"{self.file_stem}-{self.version}-py3-none-any.whl"

    @property
    def sdist(self) -> str:
        return f"{self.file_stem}-{self.version}.tar.gz"


def distributions() -> list[Distribution]:
    found = []
    for relative in PROJECT_DIRS:
        project_dir = ROOT / relative
        pyproject = tomllib.loads((project_dir / "pyproject.toml").read_text())
        project = pyproject["project"]
        where = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
        found.append(
            Distribution(
                name=project["name"],
                version=project["version"],
                project_dir=project_dir,
                source_root=project_dir / where[0],
                dependencies=tuple(project.get("dependencies", ())),
            )
        )
    return found
