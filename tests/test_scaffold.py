"""`payhook plugin new`: the generated package installs, is found, and its tests pass."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from click.testing import CliRunner
from payhook.scaffold import plugin, render


def test_render_fills_in_names_and_paths(tmp_path: Path) -> None:
    files = render("badge-printer", tmp_path / "out")

    relative = sorted(str(path.relative_to(tmp_path / "out")) for path in files)
    assert relative == [
        "README.md",
        "pyproject.toml",
        "src/payhook_badge_printer/__init__.py",
        "src/payhook_badge_printer/handlers.py",
        "src/payhook_badge_printer/py.typed",
        "tests/conftest.py",
        "tests/test_payhook_badge_printer.py",
    ]
    pyproject = (tmp_path / "out" / "pyproject.toml").read_text()
    assert 'name = "payhook-badge-printer"' in pyproject
    assert 'badge-printer = "payhook_badge_printer"' in pyproject
    for path in files:
        assert "$" not in path.read_text(), path


@pytest.mark.parametrize("name", ["", "Badges", "1badge", "badges!", "a" * 41, "../escape"])
def test_names_that_cannot_be_plugin_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="cannot be a plugin name"):
        render(name, tmp_path / "out")


def test_an_existing_non_empty_directory_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        render("badges", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_the_command_creates_payhook_name_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(plugin, ["new", "badges"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "payhook-badges/src/payhook_badges/__init__.py").is_file()
    assert "created payhook-badges/pyproject.toml" in result.output
    assert 'pip install -e "payhook-badges[testing]"' in result.output


def test_the_command_reports_a_bad_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(plugin, ["new", "Bad Name", "--directory", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "cannot be a plugin name" in result.output


def test_the_generated_package_installs_and_its_own_tests_pass(tmp_path: Path) -> None:
    package = tmp_path / "payhook-badges"
    render("badges", package)
    site = tmp_path / "site"
    # Installed into a folder of its own, so this environment's plugins stay as they were.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(package)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout


@pytest.mark.skipif(find_spec("ruff") is None, reason="ruff is not installed here (tox -e lint has it)")
def test_the_generated_code_is_ruff_clean_with_its_own_settings(tmp_path: Path) -> None:
    render("badges", tmp_path)
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=tmp_path, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
