"""Check the built wheels and sdists hold what the packages need, before anything installs them.

    python tests/smoke/check_dists.py DIST_DIR

For each of the five distributions: one wheel and one sdist of the version in its
pyproject.toml; every file git tracks in its packages (modules, migrations, templates,
fixtures, the plugin template, py.typed) in both, so a package-data glob that misses a file
fails here rather than on a user's machine; nothing else at the wheel's top level; and each
dependency on `payhook` satisfied by the core's version here, so the local core wheel can
serve it. Exits 1 listing every problem.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from distributions import ROOT, Distribution, distributions
from packaging.requirements import Requirement


def package_files(dist: Distribution) -> set[str]:
    """The files of the distribution's packages, relative to its source root, as git tracks them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", str(dist.source_root)],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    files = set()
    for path in filter(None, listed.split("\0")):
        relative = (ROOT / path).relative_to(dist.source_root).as_posix()
        # Tracked files beside the packages (a README in src/) are not package files.
        if "/" in relative:
            files.add(relative)
    if not files:
        raise SystemExit(f"check_dists: git lists no files under {dist.source_root}")
    return files


def check(dist: Distribution, dist_dir: Path, core_version: str) -> list[str]:
    problems = []
    wheel, sdist = dist_dir / dist.wheel, dist_dir / dist.sdist
    for built in (wheel, sdist):
        if not built.is_file():
            problems.append(f"{built.name} was not built")
    if problems:
        return problems
    expected = package_files(dist)
    packages = {PurePosixPath(path).parts[0] for path in expected}

    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    for path in sorted(expected - in_wheel):
        problems.append(f"{wheel.name} lacks {path} (package-data in its pyproject.toml?)")
    info = f"{dist.file_stem}-{dist.version}.dist-info"
    for top in sorted({PurePosixPath(path).parts[0] for path in in_wheel} - packages - {info}):
        problems.append(f"{wheel.name} holds {top}/, which is none of its packages")

    with tarfile.open(sdist) as archive:
        in_sdist = set(archive.getnames())
    prefix = f"{dist.file_stem}-{dist.version}/{dist.source_root.relative_to(dist.project_dir).as_posix()}"
    for path in sorted(expected):
        if f"{prefix}/{path}".replace("/./", "/") not in in_sdist:
            problems.append(f"{sdist.name} lacks {path}")

    for requirement in map(Requirement, dist.dependencies):
        if requirement.name == "payhook" and not requirement.specifier.contains(core_version):
            problems.append(f"{dist.name} needs {requirement}, which payhook {core_version} does not satisfy")
    return problems


def main() -> int:
    dist_dir = Path(sys.argv[1]).resolve()
    found = distributions()
    core_version = found[0].version
    problems = [problem for dist in found for problem in check(dist, dist_dir, core_version)]
    if problems:
        print("check_dists: FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    for dist in found:
        print(f"check_dists: {dist.wheel} and {dist.sdist} hold all {len(package_files(dist))} package files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
