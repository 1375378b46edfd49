"""Crash-safe recording at a batch's cost: files written now, made durable in batches, journaled after.

The live recorder's rule is that a journal line (``frames.jsonl``, ``results.jsonl``) is only ever
written once every file it names is on disk: after a crash (process killed, power lost) each line
still points at intact files, and files without a line are ignored by the readers. Written one
frame at a time, that costs an fsync per file and per line, on the thread that produced them.

:class:`DurableJournal` keeps the rule and moves the cost: in batch mode ``write_file`` only writes
(a temporary file renamed into place, no fsync) and ``commit`` queues the line; :meth:`sync_pending`
(called from a background thread by :meth:`run`, and by :meth:`flush`) fsyncs the batch's files,
then their folders, then appends the batch's lines to each journal in one write and one fsync.
A crash loses at most the last unsynced batch (files present, lines absent), never a journaled frame.
Unbatched (the default), every call is durable on return, as before.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

from rig.core.imageio import atomic_write_bytes


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (opened read-only; fsync flushes the inode's data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_unsynced(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it into place, without fsync:
    readers never see a partial file, and durability is left to a later :func:`fsync_path`."""
    atomic_write_bytes(Path(path), data, sync=False)


def append_lines(path: Path, entries: Sequence[dict[str, Any]]) -> None:
    """JSON lines appended in a single write + fsync (a torn last line is skipped by the readers)."""
    data = "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in entries).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableJournal:
    """Journal lines that follow their files to disk; fsyncs batched when ``batch`` is on.

    max_delay_s: :meth:`run` syncs at least this often while lines are pending (the most a crash
    can lose). Thread-safe: any thread may write and commit; syncs are serialised and keep order.
    """

    def __init__(self, batch: bool = False, max_delay_s: float = 0.25) -> None:
        self.batch = batch
        self.max_delay_s = max_delay_s
        self._pending: list[tuple[Path, dict[str, Any], tuple[Path, ...]]] = []
        self._cond = threading.Condition()
        self._sync_lock = threading.Lock()
        self.batches = 0  # syncs that wrote at least one line

    def write_file(self, path: Path, data: bytes) -> None:
        """Write a file a journal line will name: durable now (unbatched) or at the next sync."""
        from rig.core.imageio import atomic_write_bytes

        if self.batch:
            write_unsynced(Path(path), data)
        else:
            atomic_write_bytes(Path(path), data)

    def commit(self, journal: Path, entry: dict[str, Any], files: Sequence[Path]) -> None:
        """Append ``entry`` to ``journal`` once ``files`` (written by :meth:`write_file`) are durable."""
        if not self.batch:
            append_lines(Path(journal), [entry])
            return
        with self._cond:
            self._pending.append((Path(journal), entry, tuple(Path(f) for f in files)))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def sync_pending(self) -> int:
        """fsync the pending lines' files and folders, then append the lines; returns how many."""
        with self._sync_lock:
            with self._cond:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            files = list(OrderedDict.fromkeys(f for _, _, fs in batch for f in fs))
            for f in files:
                fsync_path(f)
            for folder in OrderedDict.fromkeys(f.parent for f in files):
                fsync_path(folder)  # the renames
            by_journal: OrderedDict[Path, list[dict[str, Any]]] = OrderedDict()
            for journal, entry, _ in batch:
                by_journal.setdefault(journal, []).append(entry)
            for journal, entries in by_journal.items():
                append_lines(journal, entries)
            self.batches += 1
            return len(batch)

    def flush(self) -> None:
        """Make everything committed so far durable and journaled."""
        self.sync_pending()

    def run(self, finished: Callable[[], bool]) -> None:
        """Sync loop for a background thread: a batch every ``max_delay_s`` (or sooner when lines
        pile up) until ``finished()`` is true, then a last flush."""
        while True:
            done = finished()
            with self._cond:
                if not done and len(self._pending) < 64:
                    self._cond.wait(self.max_delay_s)
            self.sync_pending()
            if done:
                self.flush()
                return
