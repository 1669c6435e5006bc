"""The SQLite files under a running process: still the ones it opened, and writable.

A connection keeps its files open. Delete or replace `payhook.db` under a running receiver
and it goes on committing into the unlinked file, answering 200 for deliveries nobody will
find again. And SQLite writes the `-shm` file through a shared memory mapping: when that
file cannot be written (an immutable flag, a read-only remount), the next write to the
mapping is a SIGBUS, which ends the process without a log line.

So before each transaction the guard compares the path's file with the one first opened
(one stat) and asks whether `-shm` is writable (one access call): either problem fails the
transaction with StoreFileProblem, an sqlite3.OperationalError, so the store answers 503.
This narrows the SIGBUS window to the instant between that check and the write; it cannot
close it. The health check also asks for the database and WAL files and for free space.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

__all__ = ["FileGuard", "StoreFileProblem"]

log = logging.getLogger("payhook.sqlite")

# Less free space than this on the database's filesystem and /healthz says disk_full: a
# commit appends pages to the WAL, and a checkpoint grows the database.
MIN_FREE_BYTES = 1024 * 1024


class StoreFileProblem(sqlite3.OperationalError):
    """The database's files are not fit for a transaction; `reason` names why."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class FileGuard:
    """Watches one database file for the process that opened it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._known: dict[str, str] = {}  # what was checked (a file, say) -> its problem, as logged
        self._lock = threading.Lock()

    def opened(self) -> None:
        """Remember which file the path names; called when a connection has opened it."""
        if self._identity is None:
            try:
                found = os.stat(self.path)
            except OSError:
                return
            self._identity = (found.st_dev, found.st_ino)

    def check(self) -> None:
        """Raise StoreFileProblem unless a transaction may begin; cheap enough for each one."""
        shm = f"{self.path}-shm"
        self._settle({"identity": self._replaced(), shm: self._unwritable(shm)})

    def check_writable(self) -> None:
        """Raise StoreFileProblem unless the files would take a write now (for /healthz)."""
        found = {"identity": self._replaced()}
        for path in (self.path, f"{self.path}-wal", f"{self.path}-shm"):
            found[path] = self._unwritable(path)
        found["space"] = self._disk_full()
        self._settle(found)

    def _replaced(self) -> StoreFileProblem | None:
        if self._identity is None:
            return None
        try:
            found = os.stat(self.path)
        except OSError:
            found = None
        if found is not None and (found.st_dev, found.st_ino) == self._identity:
            return None
        return StoreFileProblem(
            f"the database file {self.path} was deleted or replaced while open; restart payhook",
            reason="file_replaced",
        )

    def _unwritable(self, path: str) -> StoreFileProblem | None:
        # access() answers for root too: EPERM for an immutable file, EROFS for a read-only
        # filesystem. A file that does not exist (yet) is SQLite's to create.
        if os.access(path, os.W_OK) or not os.path.exists(path):
            return None
        return StoreFileProblem(
            f"the database file {path} cannot be written (read-only or immutable)", reason="read_only"
        )

    def _disk_full(self) -> StoreFileProblem | None:
        try:
            space = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            return None
        # root may also write into the blocks the filesystem reserves for it.
        blocks = space.f_bfree if os.geteuid() == 0 else space.f_bavail
        if blocks * space.f_frsize >= MIN_FREE_BYTES:
            return None
        return StoreFileProblem(
            f"the filesystem holding {self.path} has less than {MIN_FREE_BYTES // 1024} KiB free",
            reason="disk_full",
        )

    def _settle(self, found: dict[str, StoreFileProblem | None]) -> None:
        """Log each problem once when it appears, and when none is left; raise the first.

        `found` holds what one check looked at: only that can be said to be fixed.
        """
        problems = [problem for problem in found.values() if problem is not None]
        if problems or self._known:
            with self._lock:
                had_some = bool(self._known)
                for subject, problem in found.items():
                    if problem is None:
                        self._known.pop(subject, None)
                    elif self._known.get(subject) != str(problem):
                        log.error("the store takes no writes: %s", problem)
                        self._known[subject] = str(problem)
                if had_some and not self._known:
                    log.warning("the database file %s takes writes again", self.path)
        if problems:
            raise problems[0]
