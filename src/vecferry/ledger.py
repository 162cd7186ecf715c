"""Exact duplicate-id counting with memory bounded by a partition, not by the dataset.

Ids are spilled to hash partitions on disk as the run goes (Arrow IPC files in a temporary
directory); ``finish`` loads one partition at a time and counts repeats exactly. The spill costs
about 8-40 bytes of disk per point and is deleted when the count is done.
"""

from __future__ import annotations

import contextlib
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from vecferry.converters.base import ScratchDir
from vecferry.stream import decode_ids

PARTITIONS = 32
EXAMPLES = 10
#: ids buffered before a spill: one small IPC write per partition per spill, not per batch
SPILL_IDS = 1 << 16


class IdLedger:
    """Spills ids as they go by; ``finish`` counts repeats. ``path`` (a fresh directory) and
    ``seal`` keep the spill for ``count_sealed``, which counts over the spills of several
    ledgers (the partitions of a parallel run): hash buckets are the same in every process."""

    def __init__(self, id_kind: str, partitions: int = PARTITIONS,
                 directory: str | None = None, path: str | None = None):
        self.id_kind = id_kind
        self.partitions = partitions
        self._scratch: ScratchDir | None = None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)  # a retried partition starts over
            Path(path).mkdir(parents=True)
            self._dir = Path(path)
        else:
            self._scratch = ScratchDir("ids", directory)
            self._dir = self._scratch.path
        self._type = pa.uint64() if id_kind == "int" else pa.string()
        self._writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        self._schema = pa.schema([("id", self._type)])
        self._pending: list[pa.Array] = []
        self._pending_ids = 0

    def _part_of(self, ids: pa.Array) -> np.ndarray:
        if self.id_kind == "int":
            values = ids.to_numpy(zero_copy_only=False)
            # Multiplicative hashing spreads sequential ids over all partitions.
            return ((values * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(59)).astype(
                np.int64) % self.partitions
        # crc32, not hash(): string hashing differs between processes
        return np.fromiter((zlib.crc32(s.encode()) % self.partitions for s in ids.to_pylist()),
                           dtype=np.int64, count=len(ids))

    def add(self, ids: pa.Array) -> None:
        if len(ids) == 0:
            return
        self._pending.append(ids)
        self._pending_ids += len(ids)
        if self._pending_ids >= SPILL_IDS:
            self._spill()

    def _spill(self) -> None:
        if not self._pending:
            return
        ids = pa.concat_arrays(self._pending)
        self._pending, self._pending_ids = [], 0
        parts = self._part_of(ids)
        order = np.argsort(parts, kind="stable")
        sorted_parts = parts[order]
        bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(parts)]))
        taken = ids.take(pa.array(order))
        for s, e in zip(starts, ends, strict=True):
            p = int(sorted_parts[s])
            writer = self._writers.get(p)
            if writer is None:
                writer = ipc.new_stream(str(self._dir / f"{p}.arrow"), self._schema)
                self._writers[p] = writer
            writer.write_batch(pa.record_batch([taken.slice(s, e - s)], schema=self._schema))

    def discard(self) -> None:
        """Delete the spill without counting (the run failed)."""
        self._pending, self._pending_ids = [], 0
        for w in self._writers.values():
            with contextlib.suppress(Exception):
                w.close()
        self._remove()

    def _remove(self) -> None:
        if self._scratch is not None:
            self._scratch.remove()
        else:
            shutil.rmtree(self._dir, ignore_errors=True)

    def seal(self) -> None:
        """Write out and close the spill, keeping it for ``count_sealed``."""
        self._spill()
        for w in self._writers.values():
            w.close()
        self._writers = {}

    def finish(self, repeats: bool = False) -> dict[str, Any]:
        """{"count": ids occurring more than once, "examples": up to 10 of them}, and with
        ``repeats`` their records past the first (``count_sealed``)."""
        try:
            self.seal()
            return count_sealed([self._dir], self.id_kind, self.partitions, repeats)
        finally:
            self._remove()


def count_sealed(directories: list[Path], id_kind: str, partitions: int = PARTITIONS,
                 repeats: bool = False) -> dict[str, Any]:
    """Repeated ids over the sealed spills in ``directories``, one hash bucket at a time:
    {"count": ids occurring more than once, "examples": up to 10 of them}, and with
    ``repeats`` {"repeats": their records past the first}."""
    count = extra = 0
    examples: list[Any] = []
    for p in range(partitions):
        tables = [t for _, t in _bucket(directories, p)]
        if not tables:
            continue
        ids = pa.concat_tables(tables).column("id").combine_chunks()
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))
        count += len(dup)
        extra += int(pc.sum(dup.field("counts")).as_py() or 0) - len(dup)
        if len(examples) < EXAMPLES and len(dup):
            examples += decode_ids(dup.field("values")[: EXAMPLES - len(examples)], id_kind)
    found: dict[str, Any] = {"count": count, "examples": examples}
    if repeats:
        found["repeats"] = extra
    return found


def last_holders(directories: list[Path], limit: int, partitions: int = PARTITIONS
                 ) -> dict[int, pa.Array] | None:
    """For the ids sealed in more than one of ``directories`` (the parts of a partitioned
    run, in output order), which directory holds each one last: {directory index: ids}.

    A collection keeps the point an id was given last, and parts are written in parallel, so
    an id in two parts may end up with the earlier part's record; the caller sends the ids'
    records from the part that holds them last again. None when more than ``limit`` ids are
    repeated across parts (the answer would not be bounded in memory). Ids repeated within
    one part only are left out: a part's writer keeps their order.
    """
    out: dict[int, list[pa.Array]] = {}
    total = 0
    for p in range(partitions):
        tables = [t.append_column("part", pa.array(np.full(t.num_rows, i, dtype=np.int32)))
                  for i, t in _bucket(directories, p)]
        if len(tables) < 2:
            continue
        grouped = pa.concat_tables(tables).group_by("id").aggregate(
            [("part", "count_distinct"), ("part", "max")])
        spread = grouped.filter(pc.greater(grouped.column("part_count_distinct"), 1))
        total += spread.num_rows
        if total > limit:
            return None
        if not spread.num_rows:
            continue
        holder = spread.column("part_max").to_numpy()
        ids = spread.column("id").combine_chunks()
        for i in np.unique(holder):
            out.setdefault(int(i), []).append(ids.filter(pa.array(holder == i)))
    return {i: pa.concat_arrays(chunks) for i, chunks in out.items()}


def _bucket(directories: list[Path], p: int) -> list[tuple[int, pa.Table]]:
    """Hash bucket ``p`` of each sealed spill that has one: (index in ``directories``, ids)."""
    out = []
    for i, d in enumerate(directories):
        f = Path(d) / f"{p}.arrow"
        if f.exists():
            with ipc.open_stream(str(f)) as r:
                out.append((i, r.read_all()))
    return out
