"""Install the built wheels into a clean virtualenv, as someone without the checkout would.

    python tests/smoke/install_wheels.py DIST_DIR VENV_DIR

The core first, with its `postgres` extra, then the plugins and payhook-django, each named by
its wheel file. `payhook` is not on PyPI: the plugins' dependency on it is met by the core
already installed from DIST_DIR (`--find-links` too, never an index); their other
dependencies come from the configured index as usual.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from distributions import distributions


def pip_install(venv: Path, dist_dir: Path, *requirements: str) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input"]
    argv += ["--disable-pip-version-check", "--find-links", str(dist_dir), *requirements]
    print("install_wheels:", " ".join(argv[3:]), flush=True)
    if subprocess.run(argv, check=False).returncode != 0:
        raise SystemExit(f"install_wheels: pip could not install {' '.join(requirements)} into {venv}")


def main() -> int:
    dist_dir, venv = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    core, *others = distributions()
    pip_install(venv, dist_dir, f"{dist_dir / core.wheel}[postgres]")
    pip_install(venv, dist_dir, *(str(dist_dir / dist.wheel) for dist in others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
