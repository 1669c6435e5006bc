"""bench/eventlog_paths.py: the ingest write alone, in process, per path and batch size."""

from __future__ import annotations

import pytest
from conftest import run_script


@pytest.mark.timeout(60)
def test_both_batch_sizes(backend: str) -> None:
    completed = run_script(
        "eventlog_paths.py", [f"--backend={backend}", "--batch=1,4", "--batches=5", "--repeat=1"], timeout=60
    )
    header, _rule, *rows = completed.stdout.strip().splitlines()
    assert header.startswith("| backend | batch | path |")
    # SQLite times the one-statement path only (the multi-row write needs PostgreSQL).
    paths = ["one statement per event"] + (["one INSERT per batch"] if backend == "postgres" else [])
    assert len(rows) == 2 * len(paths)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == backend
        assert cells[1] in ("1", "4")
        assert cells[2] in paths
        wall, cpu = (float(cell.split()[0]) for cell in cells[3:5])
        assert wall > 0
        assert cpu > 0
