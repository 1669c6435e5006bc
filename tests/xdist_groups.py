"""Groups of tests that pytest-xdist keeps on one worker (`--dist loadgroup`).

A group shares something costly that each worker would otherwise build for itself.
"""

# mypy's session-wide cache (conftest's `mypy_cache_dir`) and test_scaffold's installed packages.
TYPECHECK = "typecheck"
