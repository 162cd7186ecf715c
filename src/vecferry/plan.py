"""Partition plans: a conversion cut into independent, deterministic pieces of its source.

A plan is made from metadata only (a ``.npy`` header, Parquet footers, file sizes, FAISS list
sizes, a few sampled Qdrant ids); no point is read on the driver. Each ``Partition`` is small
(``PARTITION_BYTES`` by default), picklable, and names its rows by where they are stored, not
by a position in a stream, so running it again reads exactly the same rows.

A reader takes part in planning through two optional methods:

* ``partitions(target_bytes) -> list[dict]``: one dict per partition, each with ``spec`` (a
  JSON-able description of its rows, understood by the same reader) and the estimates
  ``rows`` and ``bytes`` (either may be None);
* ``read_partition(spec, batch_size) -> Iterator[pa.RecordBatch]``: the rows of one spec.

A reader without them is one partition: the whole source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

#: size a partition aims at: big enough to repay a task's start, small enough to retry cheaply
PARTITION_BYTES = 64 << 20


@dataclass(frozen=True)
class Partition:
    """One piece of a source: ``spec`` for its reader, ``index`` its place in the output."""

    index: int
    spec: dict[str, Any] | None
    rows: int | None = None
    bytes: int | None = None


@dataclass
class Plan:
    """The partitions of one source, with the stream schema every one of them yields."""

    src: str
    fmt: str
    reader_options: dict[str, Any]
    schema: pa.Schema
    partitions: list[Partition] = field(default_factory=list)
    #: what the source holds now (``pipeline.source_state``): a resumed run of another
    #: content of the same source starts over
    source_state: str | None = None

    @property
    def rows(self) -> int | None:
        counts = [p.rows for p in self.partitions]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def identity(self) -> str:
        """A digest of the source and its reader options (a resumed run must read the same)."""
        options = {k: str(v) for k, v in sorted(self.reader_options.items())}
        body = orjson.dumps({"src": self.src, "fmt": self.fmt, "options": options},
                            option=orjson.OPT_SORT_KEYS)
        return hashlib.sha1(body).hexdigest()[:16]


def make_plan(reader: Any, src: str, fmt: str, reader_options: dict[str, Any],
              target_bytes: int = PARTITION_BYTES) -> Plan:
    """The plan of an open reader's source (its ``partitions``, or the whole source as one)."""
    plan = Plan(src, fmt, dict(reader_options), reader.schema)
    specs = reader.partitions(target_bytes) if hasattr(reader, "partitions") else None
    if not specs:
        plan.partitions = [Partition(0, None, reader.count(), None)]
    else:
        plan.partitions = [Partition(i, s["spec"], s.get("rows"), s.get("bytes"))
                           for i, s in enumerate(specs)]
    return plan


def read_partition(reader: Any, partition: Partition, batch_size: int
                   ) -> Iterator[pa.RecordBatch]:
    """The batches of one partition from an open reader of the plan's source."""
    if partition.spec is None:
        return reader.batches(batch_size)
    return reader.read_partition(partition.spec, batch_size)


def pack(units: Iterable[tuple[int, int]], target_bytes: int) -> list[dict[str, Any]]:
    """Row-range partitions from consecutive storage units of (rows, bytes).

    Units (Parquet row groups, FAISS inverted lists, row blocks) are packed in order until a
    partition reaches ``target_bytes``; a unit is never cut. Specs are
    ``{"start": first row, "stop": row after the last}``.
    """
    out: list[dict[str, Any]] = []
    start = pos = size = 0
    for rows, nbytes in units:
        if rows <= 0:
            continue
        if pos > start and size + nbytes > target_bytes:
            out.append({"spec": {"start": start, "stop": pos}, "rows": pos - start,
                        "bytes": size})
            start, size = pos, 0
        pos += rows
        size += nbytes
    if pos > start:
        out.append({"spec": {"start": start, "stop": pos}, "rows": pos - start, "bytes": size})
    return out


def row_blocks(total: int, row_bytes: int, target_bytes: int) -> Iterator[tuple[int, int]]:
    """Units of evenly sized rows (for storage without natural units, such as a matrix)."""
    per = max(1, target_bytes // max(1, row_bytes))
    for lo in range(0, total, per):
        n = min(per, total - lo)
        yield n, n * row_bytes


def take_rows(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The first ``rows`` rows of ``batches`` (for readers that reject no row while reading:
    their stream positions are their storage positions)."""
    left = rows
    if left <= 0:
        return
    for batch in batches:
        if batch.num_rows > left:
            batch = batch.slice(0, left)
        left -= batch.num_rows
        yield batch
        if left <= 0:
            return  # the next batch is not even read (a --limit run checks no record past it)
