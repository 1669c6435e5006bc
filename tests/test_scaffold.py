"""`payhook plugins new`: the generated package installs, is found, is typed, and its tests pass
on SQLite and PostgreSQL, with or without a table."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest
from click.testing import CliRunner
from payhook.cli import main
from payhook.plugins.scaffold import render
from payhook.testing import postgres_admin_url, postgres_problem

# Names of every shape: lines that hold the name must stay formatted at 40 characters.
NAMES = ["badges", "badge-printer", "b" + "a" * 39]


def test_render_fills_in_names_and_paths(tmp_path: Path) -> None:
    files = render("badge-printer", tmp_path / "out")

    relative = [str(path.relative_to(tmp_path / "out")) for path in files]
    assert relative == [
        "README.md",
        "pyproject.toml",
        "src/payhook_badge_printer/__init__.py",
        "src/payhook_badge_printer/handlers.py",
        "src/payhook_badge_printer/py.typed",
        "src/payhook_badge_printer/settings.py",
        "tests/conftest.py",
        "tests/test_payhook_badge_printer.py",
    ]
    pyproject = (tmp_path / "out" / "pyproject.toml").read_text()
    assert 'name = "payhook-badge-printer"' in pyproject
    assert 'badge-printer = "payhook_badge_printer"' in pyproject
    for path in files:
        assert "$" not in path.read_text(), path


def test_with_a_table_it_adds_a_model_and_a_migration_on_the_plugins_own_branch(tmp_path: Path) -> None:
    files = render("badge-printer", tmp_path / "out", with_table=True)

    relative = {str(path.relative_to(tmp_path / "out")) for path in files}
    assert {
        "src/payhook_badge_printer/models.py",
        "src/payhook_badge_printer/migrations/__init__.py",
        "src/payhook_badge_printer/migrations/badge_printer_0001_tables.py",
    } <= relative
    migration = (
        tmp_path / "out/src/payhook_badge_printer/migrations/badge_printer_0001_tables.py"
    ).read_text()
    assert 'revision = "badge_printer_0001"' in migration
    assert 'branch_labels = ("badge-printer",)' in migration
    assert '"badge_printer_payment"' in migration
    pyproject = (tmp_path / "out" / "pyproject.toml").read_text()
    assert (
        '[project.entry-points."payhook.migrations"]\nbadge-printer = "payhook_badge_printer.migrations"'
        in (pyproject)
    )
    assert '"migrations/*.py"' in pyproject  # shipped in the wheel


@pytest.mark.parametrize("with_table", [False, True], ids=["plain", "with-table"])
def test_the_generated_tests_annotate_the_fixtures_with_the_kits_types(
    tmp_path: Path, with_table: bool
) -> None:
    render("badges", tmp_path, with_table=with_table)
    tests = (tmp_path / "tests" / "test_payhook_badges.py").read_text()
    assert "stripe_event: StripeEventFactory" in tests
    assert "StripeEventFactory," in tests or "StripeEventFactory, store_backends" in tests
    assert "Callable[..., dict" not in tests  # no alias of its own to keep in step


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
    result = CliRunner().invoke(main, ["plugins", "new", "badges"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "payhook-badges/src/payhook_badges/__init__.py").is_file()
    assert "created payhook-badges/pyproject.toml" in result.output
    assert 'pip install -e "payhook-badges[testing]"' in result.output


def test_directory_is_the_folder_to_create_the_package_in(tmp_path: Path) -> None:
    """A new author passes the folder they keep their code in, which is not empty."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "another-project").mkdir()

    result = CliRunner().invoke(main, ["plugins", "new", "badges", "--directory", str(code), "--with-table"])
    assert result.exit_code == 0, result.output
    assert (code / "payhook-badges/src/payhook_badges/models.py").is_file()

    # Naming the package's folder itself works too.
    result = CliRunner().invoke(
        main, ["plugins", "new", "tickets", "--directory", str(code / "payhook-tickets")]
    )
    assert result.exit_code == 0, result.output
    assert (code / "payhook-tickets/pyproject.toml").is_file()


def test_a_package_folder_in_use_is_refused_with_what_to_pass(tmp_path: Path) -> None:
    (tmp_path / "payhook-badges").mkdir()
    (tmp_path / "payhook-badges" / "notes.txt").write_text("mine")

    result = CliRunner().invoke(main, ["plugins", "new", "badges", "--directory", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'payhook-badges'} exists and is not empty" in result.output
    assert f"--directory is the folder to create payhook-badges in (here {tmp_path})" in result.output


def test_the_command_reports_a_bad_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plugins", "new", "Bad Name", "--directory", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "cannot be a plugin name" in result.output


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bool], tuple[Path, Path]]:
    """`installed(with_table)`: a generated package, and the folder it is installed in."""
    packages: dict[bool, tuple[Path, Path]] = {}

    def install(with_table: bool) -> tuple[Path, Path]:
        if with_table not in packages:
            root = tmp_path_factory.mktemp("table" if with_table else "plain")
            package, site = root / "payhook-badges", root / "site"
            render("badges", package, with_table=with_table)
            # Installed into a folder of its own, so this environment's plugins stay as they were.
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
            result = subprocess.run([*command, str(package)], capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr
            packages[with_table] = package, site
        return packages[with_table]

    return install


@pytest.mark.timeout(300)
@pytest.mark.parametrize("with_table", [False, True], ids=["plain", "with-table"])
def test_the_generated_package_installs_and_its_own_tests_pass_on_both_stores(
    installed: Callable[[bool], tuple[Path, Path]], with_table: bool
) -> None:
    package, site = installed(with_table)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"],
        cwd=package,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    if postgres_problem(postgres_admin_url()) is None:
        assert "[postgresql]" in tests.stdout and "SKIPPED" not in tests.stdout, tests.stdout
    if with_table:
        assert "PASSED tests/test_payhook_badges.py::test_the_migration_creates_exactly_the_models_table" in (
            tests.stdout
        )


@pytest.mark.skipif(find_spec("mypy") is None, reason="mypy is not installed here (tox -e lint has it)")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("with_table", [False, True], ids=["plain", "with-table"])
def test_the_generated_package_is_mypy_strict_clean(
    installed: Callable[[bool], tuple[Path, Path]], with_table: bool, mypy_cache_dir: Path
) -> None:
    package, site = installed(with_table)
    # Its own [tool.mypy]: strict, over src and tests.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(mypy_cache_dir)],
        cwd=package,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


@pytest.mark.skipif(find_spec("ruff") is None, reason="ruff is not installed here (tox -e lint has it)")
@pytest.mark.parametrize("with_table", [False, True], ids=["plain", "with-table"])
@pytest.mark.parametrize("name", NAMES)
def test_the_generated_code_is_ruff_clean_with_its_own_settings(
    tmp_path: Path, name: str, with_table: bool
) -> None:
    render(name, tmp_path, with_table=with_table)
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
