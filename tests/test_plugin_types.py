"""The bundled plugins type-check with `mypy --strict`, through payhook's public names.

The lint env is where this belongs (it has mypy); elsewhere the test is skipped. A freshly
generated plugin is checked the same way in test_scaffold.py.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(str(path) for path in ROOT.glob("plugins/*/src"))


@pytest.mark.skipif(find_spec("mypy") is None, reason="mypy is not installed here (tox -e lint has it)")
@pytest.mark.timeout(300)
def test_the_bundled_plugins_are_mypy_strict_clean(tmp_path: Path) -> None:
    assert SOURCES, "no bundled plugins found"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy"), *SOURCES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
