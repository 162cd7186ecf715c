"""Payloads joined to points by id, from a payloads file of any size.

A FAISS index has no payloads; ``--payloads FILE`` names them by id. A ``metadata.json`` of
millions of entries takes gigabytes as Python objects, and every worker process of a
partitioned run would hold its own copy. ``PayloadTable`` keeps the payloads in a scratch
SQLite table instead (SQLite comes with Python): filled once by streaming the file, looked up a
batch of ids at a time. Memory stays bounded by the batch size; the disk holds about the
payloads' own size.

The tables live in SQLite's private temporary database (an empty file name): SQLite keeps a
few MB of it in memory, spills the rest to a file in ``$SQLITE_TMPDIR`` or ``$TMPDIR`` (else
``/var/tmp`` or ``/tmp``) and unlinks that file as soon as it opens it, so a process killed
mid-run (a worker lost to the OOM killer) leaves nothing behind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

#: ids per lookup statement: under SQLite's oldest limit of 999 bound parameters
_CHUNK = 900


class _ScratchTables:
    """A private temporary database, filled in one transaction, then looked up a chunk of
    keys at a time. Scratch data, rebuilt by any run that needs it: no journal, no syncing.
    The connection may move between threads (one uses it at a time)."""

    def __init__(self, *ddl: str):
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        for statement in ddl:
            self._db.execute(statement)
        self._db.execute("BEGIN")
        self._filling = True

    def _done_filling(self) -> None:
        if self._filling:
            self._db.execute("COMMIT")
            self._filling = False

    @staticmethod
    def _chunks(keys: Sequence[Any]) -> Iterator[tuple[Sequence[Any], str]]:
        """``keys`` in chunks a statement can bind, each with its ``?,?,...`` list."""
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            yield chunk, ",".join("?" * len(chunk))

    def close(self) -> None:
        self._db.close()


class PayloadTable(_ScratchTables):
    """Payload JSON texts by id key, in file order, with a record of the keys looked up.

    Not safe for concurrent use from several threads (one reader uses it at a time); the
    connection may move between threads, as a reader's batches run in a prefetch thread.
    """

    def __init__(self) -> None:
        super().__init__("CREATE TABLE p (n INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, "
                         "payload TEXT NOT NULL)",
                         "CREATE TABLE used (key TEXT PRIMARY KEY) WITHOUT ROWID")
        self.count = 0

    def add(self, key: str, payload: str) -> bool:
        """Keep ``payload`` (JSON text) for ``key``; False, keeping nothing, when the key has a
        payload already (the first one stays)."""
        cur = self._db.execute("INSERT OR IGNORE INTO p (key, payload) VALUES (?, ?)",
                               (key, payload))
        if cur.rowcount != 1:
            return False
        self.count += 1
        return True

    def add_many(self, pairs: Iterable[tuple[str, str]]) -> None:
        """``add`` for many (key, payload) pairs in one statement."""
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO p (key, payload) VALUES (?, ?)", pairs)
        self.count += self._db.total_changes - before

    def take(self, keys: Sequence[str]) -> list[str | None]:
        """The payload of each key (None where the file has none); the keys found count as
        used (see ``unused``)."""
        self._done_filling()
        found: dict[str, str] = {}
        for chunk, marks in self._chunks(keys):
            found.update(self._db.execute(
                f"SELECT key, payload FROM p WHERE key IN ({marks})", chunk))
        self.mark(list(found))
        return [found.get(k) for k in keys]

    def mark(self, keys: Sequence[str]) -> None:
        """Count ``keys`` as used without fetching their payloads."""
        self._done_filling()
        for chunk, marks in self._chunks(keys):
            self._db.execute(f"INSERT OR IGNORE INTO used SELECT key FROM p "
                             f"WHERE key IN ({marks})", chunk)

    def unused(self) -> Iterator[tuple[str, str]]:
        """(key, payload) of the entries never looked up, in file order."""
        self._done_filling()
        yield from self._db.execute(
            "SELECT key, payload FROM p WHERE key NOT IN (SELECT key FROM used) ORDER BY n")

    def __len__(self) -> int:
        return self.count


class RowsById(_ScratchTables):
    """Rows of text columns by integer key, in a scratch SQLite table: the on-disk side of a
    lookup too large to hold in memory. The first row of a key stays, and the later ones are
    counted (``repeats``); ``take`` returns rows in the order of the keys asked for. Same
    threading rules as ``PayloadTable``."""

    def __init__(self, columns: Sequence[str]):
        self.columns = list(columns)
        names = ", ".join(f"c{i} TEXT" for i in range(len(self.columns)))
        super().__init__(f"CREATE TABLE r (k INTEGER PRIMARY KEY, {names}, "
                         "n INTEGER NOT NULL DEFAULT 0)")
        self._select = ", ".join(f"c{i}" for i in range(len(self.columns)))
        # a later row of a key only counts: dropped without a count, its loss could not be told
        self._insert = (f"INSERT INTO r (k{', ' if self.columns else ''}{self._select}) "
                        f"VALUES (?{', ?' * len(self.columns)}) "
                        "ON CONFLICT (k) DO UPDATE SET n = n + 1")

    def add_many(self, rows: Iterator[tuple[int | str | None, ...]]) -> None:
        """Add (key, *column values) rows."""
        self._db.executemany(self._insert, rows)

    def repeats(self) -> tuple[int, int | None]:
        """(rows whose key an earlier row had, the smallest such key or None)."""
        self._done_filling()
        count, first = self._db.execute(
            "SELECT COALESCE(SUM(n), 0), MIN(CASE WHEN n > 0 THEN k END) FROM r").fetchone()
        return int(count), first

    def take(self, keys: Sequence[int]) -> list[tuple[str | None, ...] | None]:
        """The columns of each key's row (None for a key with no row)."""
        self._done_filling()
        found: dict[int, tuple[str | None, ...]] = {}
        for chunk, marks in self._chunks(keys):
            for row in self._db.execute(
                    f"SELECT k, {self._select} FROM r WHERE k IN ({marks})", chunk):
                found[row[0]] = row[1:]
        return [found.get(k) for k in keys]
