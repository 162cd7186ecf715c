"""Proof that a migration lost nothing: counts, digests, a per-id diff and search parity.

``verify(src, dst)`` reads each side once, computing its digest (``vecferry.digest``) and
spilling ``(id hash, id, vector hash, payload hash)`` per point to hash partitions on disk.
Equal counts and digests prove the two sides hold the same points; otherwise the partitions
are joined one at a time to name the ids missing on either side and the ids whose vector or
payload differs, with memory bounded by one partition (``memory_rows`` records and
``memory_bytes`` bytes per side; a record spilled for ``tolerance`` carries its vector values,
so the partitions are sized from the row width), not by the id set: a partition that outgrows
either (the counts were unknown, or hashing was uneven) is split again by another hash before
it is loaded. The report (counts, examples) does not depend on how the ids were partitioned:
examples are the lowest ids of each kind of difference.

A file destination keeps every record, so it is compared record by record, repeated ids
included: the records of an id equal on both sides are set aside, and the rest are paired in
the order they come (a record left unpaired is missing or extra). A collection (``KEYED_FORMATS``)
holds one point per id, the last upserted, so against one each side's last record of each id
is compared.

A vector both sides hold with different sizes is a difference; with different distances, a
warning naming both (a later load of each would build a collection searching differently, but
the points are the same, and ``--distance`` changes it on purpose); a side that records no
distance (a plain .npy) differs from none.

With ``tolerance`` dense vectors, and multivectors under the Cosine distance, are compared by
maximum absolute error; sparse and other multi vectors, which vectors a point has and how many
sub-vectors a multivector has, are still compared exactly. Digests that differ where no record
was found to differ are a difference, unless some vectors differed within the tolerance (which
changes the digest of a correct lossy copy).

``verify(archive)`` with one location recomputes the digest a file writer recorded in the
manifest and compares, proving a file intact without its source; it also counts duplicate ids.

Search parity samples query vectors from the source and compares the top-k ids on both sides
(a reader's own ``search`` when it has one, FAISS or Qdrant, else exact brute force over the
stream); recall@k must reach ``min_recall``. A side with its own search also reports latency.
Points at the same distance from a query may come back in any order, so an id one side returned
and the other did not still counts as found when it ties with the other side's k-th result:
by that side's exact scores (brute force), else by exact scores recomputed from stored vectors
(one side's, fetched by id when it can) equal within the float32 rounding an engine's score may
carry. ``tied_ids`` counts the ids found only that way; an id clearly nearer than the other
side's k-th one is still a miss.
Packed bits of a FAISS binary index are compared by Hamming distance, as the index does; an IVF
index is searched in every inverted list, so an exact copy scores 1.0. Vectors of different
sizes on the two sides are a difference, and cannot be searched with the same queries. A
reader that says why it cannot search (``search_unsupported``: a multi-shard snapshot) has
search parity skipped, with that reason as a warning; the counts and digests still decide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import inspect
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from vecferry.converters import open_reader, resolve
from vecferry.converters.base import REJECT_KEY, Context, ScratchDir
from vecferry.digest import (
    ALGORITHM,
    EARLIER_ALGORITHMS,
    StreamDigest,
    _bytes_hash,
    _mix,
    point_hashes,
    point_parts,
    vector_hashes,
)
from vecferry.errors import Location, UsageError
from vecferry.fileio import loads_reject_line
from vecferry.ledger import IdLedger
from vecferry.stream import (
    ID_COLUMN,
    Manifest,
    VectorSpec,
    decode_ids,
    is_packed_bits,
    manifest_of,
)

DEFAULT_MIN_RECALL = 0.99
MEMORY_ROWS = 2_000_000
#: bytes of spilled records per side held at once while joining: a record spilled for
#: ``tolerance`` carries its vector values (3 KiB at 768 float32), so rows alone do not bound it
MEMORY_BYTES = 64 << 20
#: destinations that hold one point per id (an upsert replaces the point of its id)
KEYED_FORMATS = frozenset({"qdrant", "qdrant-edge", "snapshot"})
#: locations that are collections, not files: no manifest, so no recorded digest
_COLLECTIONS = frozenset({"qdrant", "qdrant-edge"})
EXAMPLES = 10
#: how many times an oversized partition may be split again (each split at least halves it)
MAX_SPLITS = 16
#: most partitions made at once (each an open file per side)
MAX_PARTITIONS = 64
#: key: id hash; hv / hp: vectors / payload hash; hx (tolerance only): hash of what is compared
#: exactly (``_tolerance_parts``); vec (tolerance only): the float32 values compared with it
_SPILL = pa.schema([("key", pa.uint64()), ("id", pa.string()), ("hv", pa.uint64()),
                    ("hp", pa.uint64()), ("hx", pa.uint64()), ("vec", pa.binary())])


def _write_parts(batch: pa.RecordBatch, part: np.ndarray, path_of: Any,
                 writers: dict[int, ipc.RecordBatchStreamWriter], rows: dict[int, int],
                 sizes: dict[int, int]) -> None:
    for p in np.unique(part):
        p = int(p)
        w = writers.get(p)
        if w is None:
            w = writers[p] = ipc.new_stream(str(path_of(p)), _SPILL)
        sub = batch.filter(pa.array(part == p))
        w.write_batch(sub)
        rows[p] = rows.get(p, 0) + sub.num_rows
        sizes[p] = sizes.get(p, 0) + sub.nbytes


class _Spill:
    """Hash partitions of per-point records for one side."""

    def __init__(self, directory: Path, side: str, partitions: int):
        self.dir, self.side, self.partitions = directory, side, partitions
        self.writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        self.rows: dict[int, int] = {}
        #: bytes of each partition as loaded (Arrow buffers)
        self.sizes: dict[int, int] = {}

    def path(self, p: int) -> Path:
        return self.dir / f"{self.side}-{p}.arrow"

    def add(self, keys: np.ndarray, ids: list[Any], hv: np.ndarray, hp: np.ndarray,
            hx: np.ndarray | None, vecs: list[bytes] | None) -> None:
        part = (keys % np.uint64(self.partitions)).astype(np.int64)
        n = len(keys)
        batch = pa.record_batch([
            pa.array(keys, pa.uint64()),
            pa.array([json.dumps(i) for i in ids], pa.string()),
            pa.array(hv, pa.uint64()), pa.array(hp, pa.uint64()),
            pa.array(hx if hx is not None else np.zeros(n, np.uint64), pa.uint64()),
            pa.array(vecs if vecs is not None else [None] * n, pa.binary()),
        ], schema=_SPILL)
        _write_parts(batch, part, self.path, self.writers, self.rows, self.sizes)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _load(path: Path | None) -> pa.Table:
    if path is None or not path.exists():
        return _SPILL.empty_table()
    with ipc.open_stream(str(path)) as r:
        table = r.read_all()
    path.unlink()  # each piece is read once: free the disk as the join goes
    return table


def _split(path: Path | None, parts: int, level: int, prefix: Path
           ) -> list[tuple[Path | None, int, int]]:
    """Stream one partition file into ``parts`` files by a hash of the key that is
    independent of the partitioning before (``level``); returns (path, rows, bytes) per
    part."""
    if path is None or not path.exists():
        return [(None, 0, 0)] * parts
    writers: dict[int, ipc.RecordBatchStreamWriter] = {}
    rows: dict[int, int] = {}
    sizes: dict[int, int] = {}
    salt = np.uint64((0x9E3779B97F4A7C15 * level) % 2**64)
    with ipc.open_stream(str(path)) as r:
        for batch in r:
            keys = batch.column("key").to_numpy()
            with np.errstate(over="ignore"):
                part = (_mix(keys ^ salt) % np.uint64(parts)).astype(np.int64)
            _write_parts(batch, part, lambda p: Path(f"{prefix}.{p}.arrow"), writers, rows,
                         sizes)
    for w in writers.values():
        w.close()
    path.unlink()
    return [(Path(f"{prefix}.{p}.arrow") if p in rows else None, rows.get(p, 0),
             sizes.get(p, 0)) for p in range(parts)]


def _pieces(spills: list[_Spill], memory_rows: int, memory_bytes: int = MEMORY_BYTES
            ) -> Iterator[list[pa.Table]]:
    """The spilled records, one table per side, for one set of keys at a time.

    Every key is in exactly one piece; a piece holds at most ``memory_rows`` records and
    ``memory_bytes`` bytes per side unless it cannot be split further (one id repeated more
    than that).
    """
    stack: list[tuple[list[tuple[Path | None, int, int]], int, str]] = [
        ([(s.path(p) if p in s.rows else None, s.rows.get(p, 0), s.sizes.get(p, 0))
          for s in spills], 1, str(p))
        for p in reversed(range(spills[0].partitions))]
    while stack:
        files, level, name = stack.pop()
        largest = max(rows for _, rows, _ in files)
        heaviest = max(size for _, _, size in files)
        if (largest > memory_rows or heaviest > memory_bytes) and level <= MAX_SPLITS:
            parts = min(MAX_PARTITIONS, max(2, math.ceil(largest / memory_rows),
                                            math.ceil(heaviest / memory_bytes)))
            split = [_split(path, parts, level, spills[0].dir / f"s{i}-{name}")
                     for i, (path, _, _) in enumerate(files)]
            for p in reversed(range(parts)):
                sub = [side[p] for side in split]
                # a part as large as before is one id repeated: no split can help it
                stuck = max(rows for _, rows, _ in sub) >= largest
                stack.append((sub, MAX_SPLITS + 1 if stuck else level + 1, f"{name}.{p}"))
            continue
        yield [_load(path) for path, _, _ in files]


def _id_order(id_value: Any) -> tuple[bool, Any]:
    """Sort key over mixed ids: integers first, then strings."""
    return (isinstance(id_value, str), id_value)


class _Examples:
    """The ``EXAMPLES`` lowest ids seen, each once (several records of a repeated id may
    differ), whatever order they come in."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, id_value: Any) -> None:
        self.items.append(id_value)
        if len(self.items) > 4 * EXAMPLES:
            self.items = self.result()

    def result(self) -> list[Any]:
        return heapq.nsmallest(EXAMPLES, dict.fromkeys(self.items), key=_id_order)


class _Side:
    """One location being verified: its reader, digest, count and duplicate ids."""

    def __init__(self, location: str, fmt: str | None, options: dict[str, Any],
                 on_error: str = "fail", exclude: set[str] | None = None):
        self.location = location
        self.format = resolve(location, fmt).name
        # skipping, a bad record is left out of the comparison (and counted), as a
        # conversion with --on-error skip left it out of its output
        self.context = Context(on_error, sink=self._left_out)
        #: ids (as JSON text) left out of the comparison: the records a conversion's target
        #: refused (its rejects file), which the source holds and the destination cannot
        self.exclude = exclude or set()
        self.excluded = 0
        self.rejected_ids: set[str] = set()
        #: kept for a second pass (brute-force search parity) opened the same way
        self.options = options
        self.reader = open_reader(location, format=self.format, context=self.context,
                                  **options)
        if getattr(self.reader, "check_recorded_count", False):
            # a file holding other than the count its manifest records is a difference to
            # report with the digest (exit 4), not a source that cannot be read
            self.reader.check_recorded_count = False
        self.manifest: Manifest = manifest_of(self.reader.schema)
        #: the manifest before ``narrow``
        self.full_manifest = self.manifest
        self.digest = StreamDigest(self.manifest)
        self.duplicates = 0
        #: records past the first of each repeated id (what a keyed target does not hold)
        self.repeats = 0
        self._duplicate_examples = _Examples()

    @property
    def duplicate_examples(self) -> list[Any]:
        return self._duplicate_examples.result()

    def close(self) -> None:
        self.reader.close()

    def narrow(self, names: set[str]) -> None:
        """Compare this side by the vectors ``names`` only (the columns of others are read but
        left out of every hash and search)."""
        if any(v.name not in names for v in self.manifest.vectors):
            self.manifest = dataclasses.replace(
                self.manifest, vectors=[v for v in self.manifest.vectors if v.name in names])

    def _left_out(self, error: Any) -> None:
        # a point the reader rejects is not compared, but an index side's own search would
        # still return it (kept apart from ``exclude``: a good record may share its id)
        pid = error.location.point_id
        if pid is not None:
            self.rejected_ids.add(json.dumps(pid))

    def searchable(self, ids: list[Any]) -> list[Any]:
        """Search results without the ids left out of the comparison."""
        if not self.exclude and not self.rejected_ids:
            return ids
        return [i for i in ids if json.dumps(i) not in self.exclude
                and json.dumps(i) not in self.rejected_ids]

    def batches(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """The side's batches, without the ids in ``exclude`` (counted in ``excluded``)."""
        for batch in self.reader.batches(batch_size):
            kept = self._without_excluded(batch)
            self.excluded += batch.num_rows - kept.num_rows
            if kept.num_rows:
                yield kept

    def _without_excluded(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not self.exclude:
            return batch
        ids = decode_ids(batch.column(ID_COLUMN), self.manifest.id_kind)
        return batch.filter(pa.array([json.dumps(i) not in self.exclude for i in ids],
                                     type=pa.bool_()))

    def read_again(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """A second pass over the side (a fresh reader opened as the first was, skipping what
        it skipped), for the brute-force search and tie scores."""
        reader = open_reader(self.location, format=self.format,
                             context=Context(self.context.on_error), **self.options)
        try:
            for batch in reader.batches(batch_size):
                kept = self._without_excluded(batch)
                if kept.num_rows:
                    yield kept
        finally:
            reader.close()

    #: False when the side was not read whole (a spot check fetched points by id)
    digested = True

    def report(self) -> dict[str, Any]:
        return {"location": self.location, "format": self.format, "count": self.digest.count,
                "digest": self.digest.as_dict()["value"] if self.digested else None,
                "duplicate_ids": self.duplicates,
                "duplicate_examples": self.duplicate_examples}


def _unit_rows(mat: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    norms = np.linalg.norm(mat.astype(np.float64), axis=1, keepdims=True)
    return (mat / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def _cosine_multi(col: pa.Array, spec: VectorSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Cosine multivector column as (hash of its shape, unit sub-vectors, row offsets).

    Qdrant normalizes each sub-vector on its own, so its values can only be compared within
    tolerance; the shape (present or not, how many sub-vectors) is still compared exactly.
    """
    n = len(col)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if col.null_count:
        col = col.fill_null(pa.scalar([], col.type))
    offsets = col.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = offsets - offsets[0]  # a sliced list array's offsets are absolute
    subs = col.flatten()
    mat = subs.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(
        len(subs), spec.size)
    salt = np.uint64(_bytes_hash(f"present\x00{spec.name}\x00multi".encode()))
    with np.errstate(over="ignore"):
        shape = _mix(salt + np.diff(offsets).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return np.where(valid, shape, np.uint64(0)).reshape(n), _unit_rows(mat), offsets


def _tolerance_parts(batch: pa.RecordBatch, manifest: Manifest,
                     cosine: frozenset[str] = frozenset()) -> tuple[np.ndarray, list[bytes]]:
    """What tolerance compares: (hash of what is compared exactly, values within tolerance).

    The hash covers the sparse and other multi vectors and which dense vectors a point has,
    all compared exactly; the bytes are each point's dense vectors as float32 (name order), a
    missing one as NaN. Vectors named in ``cosine`` are compared as unit vectors: Qdrant
    normalizes what it stores under the Cosine distance, and only the direction counts. A
    Cosine multivector is normalized sub-vector by sub-vector, as Qdrant does: its unit
    sub-vectors follow the dense values and the hash covers only how many it has, which keeps
    the bytes of both sides the same length wherever the hashes agree.
    """
    n = batch.num_rows
    exact = np.zeros(n, dtype=np.uint64)
    parts = []
    multis: list[tuple[np.ndarray, np.ndarray]] = []
    for spec in sorted(manifest.vectors, key=lambda v: v.name):
        col = batch.column(spec.column)
        if spec.kind == "multi" and spec.name in cosine:
            shape, units, offsets = _cosine_multi(col, spec)
            with np.errstate(over="ignore"):
                exact += shape
            multis.append((units, offsets))
            continue
        if spec.kind != "dense":
            with np.errstate(over="ignore"):
                exact += vector_hashes(col, spec)
            continue
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        # only which dense vectors are present: their values are compared with tolerance
        present = _mix(np.array([_bytes_hash(f"present\x00{spec.name}".encode())], np.uint64))
        with np.errstate(over="ignore"):
            exact += np.where(valid, present[0], np.uint64(0))
        if col.null_count:  # zeros first: NaN does not fit every datatype (uint8)
            col = col.fill_null(pa.scalar([0] * spec.size, col.type))
        mat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(
            n, spec.size)
        if spec.name in cosine:
            mat = _unit_rows(mat)
        mat[~valid] = np.nan
        parts.append(mat)
    if not parts and not multis:
        return exact, [b""] * n
    dense = np.concatenate(parts, axis=1) if parts else np.empty((n, 0), np.float32)
    if not multis:
        return exact, [row.tobytes() for row in dense]
    return exact, [dense[i].tobytes() + b"".join(units[o[i]:o[i + 1]].tobytes()
                                                 for units, o in multis) for i in range(n)]


def _max_abs_error(a: bytes, b: bytes) -> float:
    """Largest absolute difference of two points' dense values; NaN (no vector) on both sides
    at the same place is equal, on one side only is infinitely different."""
    va, vb = np.frombuffer(a, np.float32), np.frombuffer(b, np.float32)
    if va.size != vb.size:
        return math.inf
    na, nb = np.isnan(va), np.isnan(vb)
    if (na != nb).any():
        return math.inf
    diff = np.abs(va[~na].astype(np.float64) - vb[~na].astype(np.float64))
    return float(diff.max()) if diff.size else 0.0


def _digested(side: _Side, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's (id, vectors, payload) hashes, its points added to the side's digest."""
    hid, hv, hp = point_parts(batch, side.manifest)
    side.digest.add(int(point_hashes(hid, hv, hp).sum(dtype=np.uint64)), batch.num_rows)
    return hid, hv, hp


def _scan(side: _Side, spill: _Spill | None, batch_size: int, tolerance: float | None,
          on_batch: Any = None, cosine: frozenset[str] = frozenset()) -> None:
    for batch in side.batches(batch_size):
        hid, hv, hp = _digested(side, batch)
        if spill is not None:
            ids = decode_ids(batch.column(ID_COLUMN), side.manifest.id_kind)
            hx, vecs = (_tolerance_parts(batch, side.manifest, cosine)
                        if tolerance is not None else (None, None))
            spill.add(hid, ids, hv, hp, hx, vecs)
        if on_batch is not None:
            on_batch(batch)
    if spill is not None:
        spill.close()


def _dedupe(table: pa.Table, side: _Side, every_record: bool = False) -> pa.Table:
    """The last record of each id (what a Qdrant upsert keeps), or with ``every_record`` the
    table as it is; either way counts the side's repeated ids."""
    if table.num_rows == 0:
        return table
    keys = table.column("key").to_numpy()
    _, first_from_end, counts = np.unique(keys[::-1], return_index=True, return_counts=True)
    repeated = counts > 1
    if not repeated.any():
        return table
    side.duplicates += int(repeated.sum())
    side.repeats += int((counts[repeated] - 1).sum())
    last = len(keys) - 1 - first_from_end
    for id_text in table.column("id").take(pa.array(last[repeated])).to_pylist():
        side._duplicate_examples.add(json.loads(id_text))
    return table if every_record else table.take(pa.array(np.sort(last)))


def _match(cols_a: Sequence[np.ndarray], cols_b: Sequence[np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pair the records of two sides that agree on every column of ``cols``: the n-th record
    of a group on one side (in the order they come) with the n-th on the other.

    Returns (a rows, b rows) paired, then the a rows and the b rows left unpaired, each in
    the order they come. Sorting, not a dict of rows: a piece may hold millions of records.
    """
    na = len(cols_a[0])
    cols = [np.concatenate([x, y]) for x, y in zip(cols_a, cols_b, strict=True)]
    position = np.arange(len(cols[0]))
    # by the columns, then by position: a group's a rows first, each side in its own order
    order = np.lexsort([position, *reversed(cols)])
    if not len(order):
        empty = np.empty(0, np.int64)
        return empty, empty, empty, empty
    sorted_cols = [c[order] for c in cols]
    new = np.zeros(len(order), dtype=bool)
    new[0] = True
    for c in sorted_cols:
        new[1:] |= c[1:] != c[:-1]
    group = np.cumsum(new) - 1
    start = np.flatnonzero(new)[group]
    is_b = order >= na
    in_a = np.bincount(group, weights=~is_b).astype(np.int64)[group]
    in_b = np.bincount(group, weights=is_b).astype(np.int64)[group]
    rank = position - start - np.where(is_b, in_a, 0)
    paired = np.where(is_b, rank < in_a, rank < in_b)
    first = np.flatnonzero(paired & ~is_b)
    pa_rows, pb_rows = order[first], order[first + in_a[first]] - na
    only_a = np.sort(order[~paired & ~is_b])
    only_b = np.sort(order[~paired & is_b] - na)
    return pa_rows, pb_rows, only_a, only_b


#: pairs of records whose vector values are compared at once (with ``tolerance``)
ERROR_CHUNK = 1024


def _value_rows(col: pa.ChunkedArray) -> np.ndarray | None:
    """The float32 values of spilled vector bytes as one matrix, or None when the rows are
    not all the same length (multivectors) or some have none."""
    arr = col.combine_chunks()
    if arr.null_count or len(arr) == 0:
        return None
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
    width = int(offsets[1] - offsets[0])
    if width % 4 or (np.diff(offsets) != width).any():
        return None
    data = arr.buffers()[2]
    if width == 0 or data is None:
        return np.empty((len(arr), 0), np.float32)
    return np.frombuffer(data, np.float32, count=len(arr) * width // 4,
                         offset=int(offsets[0])).reshape(len(arr), width // 4)


def _errors(a: pa.Table, b: pa.Table, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """``_max_abs_error`` of each pair of records, a chunk of pairs at a time (memory stays
    at a chunk of vectors), vectorised where the values are of one length."""
    out = np.empty(len(rows_a))
    for lo in range(0, len(rows_a), ERROR_CHUNK):
        ta = a.column("vec").take(pa.array(rows_a[lo:lo + ERROR_CHUNK]))
        tb = b.column("vec").take(pa.array(rows_b[lo:lo + ERROR_CHUNK]))
        va, vb = _value_rows(ta), _value_rows(tb)
        if va is None or vb is None or va.shape != vb.shape:
            out[lo:lo + len(ta)] = [_max_abs_error(x, y) for x, y in
                                    zip(ta.to_pylist(), tb.to_pylist(), strict=True)]
            continue
        nan_a, nan_b = np.isnan(va), np.isnan(vb)
        diff = np.abs(va.astype(np.float64) - vb.astype(np.float64))
        diff[nan_a & nan_b] = 0.0  # no vector on both sides: equal
        err = diff.max(axis=1) if diff.shape[1] else np.zeros(len(diff))
        err[(nan_a != nan_b).any(axis=1)] = math.inf  # a vector on one side only
        out[lo:lo + len(ta)] = err
    return out


def _compare_partitions(src: _Side, dst: _Side, s_spill: _Spill, d_spill: _Spill,
                        tolerance: float | None, diff_path: str | None,
                        memory_rows: int, memory_bytes: int = MEMORY_BYTES,
                        every_record: bool = False) -> dict[str, Any]:
    """Name the records that differ, one piece of the id hashes at a time.

    ``every_record`` (a file destination, which keeps every record): each record of a
    repeated id must be there, so the records equal on both sides (id, vectors, payload) are
    set aside and the rest of each id are paired in the order they come; a record left
    unpaired is missing or extra. Otherwise (a collection) each side's last record of each id
    is compared. Counts are of records, examples of ids. With ``tolerance`` the report
    carries ``max_abs_error`` and ``within_tolerance``: records whose vector bits differ but
    whose values are within the tolerance (what lets digests differ in a correct copy).
    """
    found = {"missing_in_destination": 0, "extra_in_destination": 0, "vector_differs": 0,
             "payload_differs": 0}
    examples = {k: _Examples() for k in found}
    max_err = 0.0
    within = 0
    largest = 0
    out = open(diff_path, "w", encoding="utf-8") if diff_path else None  # noqa: SIM115
    try:
        for a, b in _pieces([s_spill, d_spill], memory_rows, memory_bytes):
            a = _dedupe(a, src, every_record)
            b = _dedupe(b, dst, every_record)
            largest = max(largest, a.num_rows, b.num_rows)
            ca, cb = ({c: t.column(c).to_numpy() for c in ("key", "hv", "hp", "hx")}
                      for t in (a, b))
            # records equal on both sides first, so a repeated id's equal records pair up
            # whatever their order, and only what is left is paired by id
            _, _, left_a, left_b = _match([ca["key"], ca["hv"], ca["hp"]],
                                          [cb["key"], cb["hv"], cb["hp"]])
            ia, ib, only_a, only_b = _match([ca["key"][left_a]], [cb["key"][left_b]])
            ia, ib, only_a, only_b = left_a[ia], left_b[ib], left_a[only_a], left_b[only_b]
            vector_apart = ca["hv"][ia] != cb["hv"][ib]
            if tolerance is not None and vector_apart.any():
                near = np.flatnonzero(vector_apart & (ca["hx"][ia] == cb["hx"][ib]))
                err = _errors(a, b, ia[near], ib[near])
                finite = err[np.isfinite(err)]
                if finite.size:
                    max_err = max(max_err, float(finite.max()))
                close = err <= tolerance
                within += int(close.sum())
                vector_apart[near[close]] = False
            for kind, table, rows in (
                    ("missing_in_destination", a, only_a),
                    ("payload_differs", a, ia[ca["hp"][ia] != cb["hp"][ib]]),
                    ("vector_differs", a, ia[vector_apart]),
                    ("extra_in_destination", b, only_b)):
                if not len(rows):
                    continue
                texts = table.column("id").take(pa.array(rows)).to_pylist()
                found[kind] += len(texts)
                for id_text in texts:
                    examples[kind].add(json.loads(id_text))
                if out is not None:
                    out.writelines(f'{{"id":{t},"status":"{kind}"}}\n' for t in texts)
    finally:
        if out is not None:
            out.close()
    shown = {k: e.result() for k, e in examples.items()}
    return {**found, "examples": {k: v for k, v in shown.items() if v},
            "largest_partition_rows": largest,
            **({"max_abs_error": max_err, "within_tolerance": within}
               if tolerance is not None else {})}


# ------------------------------------------------------------------------------ search parity


class _Reservoir:
    """A uniform sample of ``n`` dense vectors from a stream (seeded, so reruns agree).

    Each row draws a random priority and the ``n`` lowest are kept: vectorised per batch,
    uniform over the whole stream.
    """

    def __init__(self, n: int, column: str, seed: int = 20261123):
        self.n, self.column = n, column
        self.rng = np.random.default_rng(seed)
        self.priority = np.empty(0)
        self.rows: np.ndarray | None = None

    def __call__(self, batch: pa.RecordBatch) -> None:
        col = batch.column(self.column)
        if col.null_count:
            col = col.filter(col.is_valid())
        if len(col) == 0:
            return
        mat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(
            len(col), -1)
        pri = np.concatenate([self.priority, self.rng.random(len(col))])
        rows = mat if self.rows is None else np.concatenate([self.rows, mat])
        keep = np.argsort(pri, kind="stable")[: self.n]
        self.priority, self.rows = pri[keep], rows[keep]

    def queries(self) -> np.ndarray:
        return self.rows if self.rows is not None else np.empty((0, 0), np.float32)


#: bits set in each byte value
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _scores(queries: np.ndarray, mat: np.ndarray, distance: str) -> np.ndarray:
    """Higher is better, shape (queries, rows)."""
    if distance == "Hamming":
        # packed bits (values 0..255): bits set in each byte of XOR, one query at a time so
        # memory stays at one batch of bytes (unpacking the bits would take 8 times that)
        packed = mat.astype(np.uint8)
        return -np.stack([_POPCOUNT[packed ^ q].sum(axis=1, dtype=np.int64)
                          for q in queries.astype(np.uint8)]).astype(np.float64)
    if distance == "Cosine":
        qn = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
        mn = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-30)
        return qn @ mn.T
    if distance == "Dot":
        return queries @ mat.T
    if distance == "Manhattan":
        return -np.abs(queries[:, None, :] - mat[None, :, :]).sum(axis=2)
    return -(np.sum(queries**2, axis=1)[:, None] - 2 * queries @ mat.T
             + np.sum(mat**2, axis=1)[None, :])


class _BruteForce:
    """Exact top-k over a stream, memory bounded by k and the batch.

    Also keeps the ids whose score ties the k-th best (``ties``): duplicate vectors are
    common, and an index may rank equal scores in another order, which is just as right.
    """

    def __init__(self, queries: np.ndarray, k: int, column: str, distance: str, id_kind: str):
        self.q, self.k, self.column, self.distance, self.id_kind = (
            queries.astype(np.float64), k, column, distance, id_kind)
        self.best_scores: list[np.ndarray] = [np.empty(0) for _ in range(len(queries))]
        self.best_ids: list[list[Any]] = [[] for _ in range(len(queries))]

    def __call__(self, batch: pa.RecordBatch) -> None:
        col = batch.column(self.column)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            return
        sub = batch.filter(pa.array(valid))
        col = sub.column(self.column)
        mat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(
            len(col), -1)
        ids = decode_ids(sub.column(ID_COLUMN), self.id_kind)
        scores = _scores(self.q, mat, self.distance)
        for qi in range(len(self.q)):
            pool = np.concatenate([self.best_scores[qi], scores[qi]])
            pool_ids = self.best_ids[qi] + ids
            order = np.argsort(-pool, kind="stable")
            if len(order) > self.k:
                kth = pool[order[self.k - 1]]
                rest = order[self.k:]
                order = np.concatenate([order[: self.k], rest[pool[rest] >= kth]])
            # scores and ids kept in the same order, so they stay aligned batch after batch
            self.best_scores[qi] = pool[order]
            self.best_ids[qi] = [pool_ids[t] for t in order]

    def result(self) -> list[list[Any]]:
        return [ids[: self.k] for ids in self.best_ids]

    def ties(self) -> list[list[Any]]:
        """Per query the top k and every id tied with the k-th score."""
        return self.best_ids


def _percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.array(ms)
    return {f"p{p}": round(float(np.percentile(arr, p)), 3) for p in (50, 95, 99)}


def _faiss_facts(side: _Side) -> dict[str, Any]:
    """What a FAISS reader recorded about its own index; nothing for other sides (a copy of a
    FAISS file keeps these facts in its manifest, but is not searched through that index)."""
    facts = side.manifest.extra.get("faiss") if side.format == "faiss" else None
    return facts if isinstance(facts, dict) else {}


@contextlib.contextmanager
def _every_list(side: _Side) -> Iterator[int | None]:
    """An IVF index searching all its inverted lists for the duration (nprobe = nlist; yields
    it, or None for other sides). At the default nprobe (1) a search sees one list, so even
    an exact copy misses most true neighbours: parity is a check of the data, not of nprobe."""
    every_list = getattr(side.reader, "every_list_searched", None)
    if every_list is None:
        yield None
        return
    with every_list() as nprobe:
        yield nprobe


def _search_side(side: _Side, queries: np.ndarray, k: int, vector: str, distance: str,
                 batch_size: int
                 ) -> tuple[list[list[Any]], dict | None, list[list[Any]], int | None]:
    """(top-k ids, latency percentiles or None, top-k plus ids tied with the k-th, the nprobe
    an IVF index was searched with or None)."""
    search = getattr(side.reader, "search", None)
    if search is not None:
        results, latencies = [], []
        with _every_list(side) as nprobe:
            for q in queries:
                t0 = time.perf_counter()
                results.append(side.searchable(search(q[None, :], k, vector)[0]))
                latencies.append((time.perf_counter() - t0) * 1000)
        # an index reports no ties
        return results, _percentiles(latencies), results, nprobe
    # No index: exact search over a fresh pass of the stream.
    spec = side.manifest.vector(vector)
    brute = _BruteForce(queries, k, spec.column, distance, side.manifest.id_kind)
    for batch in side.read_again(batch_size):
        brute(batch)
    return brute.result(), None, brute.ties(), None


def _pick_vector(src: Manifest, dst: Manifest | None, name: str | None) -> str | None:
    dense_src = [v.name for v in src.vectors if v.kind == "dense"]
    if name is not None:
        if name not in dense_src:
            raise UsageError(f"no dense vector named {name!r} (dense vectors: {dense_src})")
        dense_dst = [v.name for v in dst.vectors if v.kind == "dense"] if dst else [name]
        if name not in dense_dst:
            raise UsageError(f"the destination has no dense vector named {name!r} (its dense "
                             f"vectors: {dense_dst})")
        return name
    for n in dense_src:
        if dst is None or any(v.name == n and v.kind == "dense" for v in dst.vectors):
            return n
    return None


def verify(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, *,
           from_format: str | None = None,
           to_format: str | None = None, queries: int = 10, k: int = 10,
           tolerance: float | None = None, diff: str | os.PathLike[str] | None = None,
           min_recall: float = DEFAULT_MIN_RECALL, vector: str | None = None,
           memory_rows: int = MEMORY_ROWS, batch_size: int = 4096,
           sample: int | None = None, allow_lossy: bool = False,
           src_options: dict[str, Any] | None = None,
           dst_options: dict[str, Any] | None = None, on_error: str = "fail",
           rejects: str | os.PathLike[str] | None = None,
           only_vectors: Sequence[str] | None = None,
           memory_bytes: int = MEMORY_BYTES,
           reader_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare ``src`` with ``dst`` (or ``src`` with its recorded digest); return a report.
    Locations and files (``diff``, ``rejects``, paths in the options) may be ``pathlib``
    paths.

    ``reader_options`` are the source's reader options, by the name ``convert`` gives them
    (``{"ids": "ids.npy", "payloads": "meta.jsonl"}``), so a conversion is verified with the
    options it was run with; ``src_options`` is the same thing by its older name. Giving both
    is a ``UsageError``; ``dst_options`` are the destination's.

    ``report["ok"]`` is True only when everything matches; ``report["problems"]`` says what
    does not, ``report["verdict"]`` what was proven when it is ok (``"identical"``, equal
    within ``tolerance``, or a spot check of N points passed). With ``sample=N`` the
    per-point comparison is a spot check of N random source points looked up by id
    (``_spot_check``) instead of digests of both sides. ``allow_lossy`` reads lossy codes on
    whichever side is a FAISS index (compare those with ``tolerance``); each side's options
    may also carry it. Raises the readers' errors for unreadable input (it never reports a
    broken file as "different" when it cannot read it).

    A conversion run with ``--on-error skip`` is verified with ``on_error="skip"``: the
    source's bad records are left out, as the conversion left them out; ``rejects`` (its
    rejects file) also leaves out the points the target refused. The report counts both
    (``source_rejected``, ``source_excluded``), so "identical" is said of what was written.

    A vector one side holds and the other has no column for is one problem naming it (not a
    difference of every point); points are compared by the vectors both sides hold.
    ``only_vectors`` compares those vectors alone, the others named in a warning: a conversion
    that kept one vector on purpose (a FAISS target's ``--vector``) is verified by it.

    A vector both sides hold with different distances is a warning naming both (a side that
    records no distance differs from none). With ``tolerance``, a
    vector is compared as unit vectors only when the destination records Cosine (Qdrant, and
    a Cosine FAISS index, store it normalized) and the source records Cosine or no distance
    (the Cosine was chosen for its vectors at the conversion): under any other pair the
    values are compared as they are, so a Dot source beside a Cosine collection shows how far
    its values are from what the collection holds.

    The comparison holds at most ``memory_rows`` records and ``memory_bytes`` bytes of
    spilled records per side at once (a partition outgrowing either is split again).
    """
    if reader_options is not None and src_options is not None:
        raise UsageError("reader_options and src_options are two names of the source's "
                         "options: give one of them",
                         hint="pass reader_options=, the name convert() uses")
    if reader_options is not None:
        src_options = reader_options
    # pathlib paths, as convert takes them: the library works with location text
    src, dst, diff, rejects = (os.fspath(p) if isinstance(p, os.PathLike) else p
                               for p in (src, dst, diff, rejects))
    src_options, dst_options = (
        {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in o.items()}
        if isinstance(o, dict) else o for o in (src_options, dst_options))
    if k <= 0 or queries < 0:
        raise UsageError("k must be positive and queries not negative")
    if sample is not None and (sample <= 0 or dst is None):
        raise UsageError("--sample takes a positive number and two locations",
                         hint="a spot check compares sampled source points with the "
                              "destination, by id")
    if memory_rows <= 0:
        raise UsageError("memory_rows must be positive")
    if memory_bytes <= 0:
        raise UsageError("memory_bytes must be positive")
    src_options, dst_options = dict(src_options or {}), dict(dst_options or {})
    if allow_lossy:
        _allow_lossy([(src, from_format, src_options)]
                     + ([(dst, to_format, dst_options)] if dst is not None else []))
    if dst is None:
        return _verify_archive(src, from_format, batch_size, src_options, memory_rows)
    started = time.perf_counter()
    a = _Side(src, from_format, src_options, on_error=on_error,
              exclude=_refused_ids(rejects, dst) if rejects else None)
    try:
        b = _Side(dst, to_format, dst_options)
    except BaseException:
        a.close()  # a local-mode folder stays locked otherwise
        raise
    try:
        scratch = ScratchDir("verify")
    except BaseException:
        a.close()
        b.close()
        raise
    tmp = scratch.path
    problems: list[str] = []
    one_per_id = False
    # a collection holds one point per id; a file keeps every record, each to be compared
    keyed = b.format in KEYED_FORMATS
    try:
        not_compared = _common_vectors(a, b, only_vectors, problems)
        if diff:
            # Truncated now: a diff file left by an earlier run must not outlive "identical".
            Path(diff).write_text("", encoding="utf-8")
        counts = [c for c in (a.reader.count(), b.reader.count()) if c is not None]
        # Unknown counts start at 8 partitions; oversized ones are split again when joined.
        most = max(counts, default=0)
        partitions = 8 if not counts else max(
            1, math.ceil(most / memory_rows),
            math.ceil(most * _row_bytes(a.manifest, tolerance) / memory_bytes))
        # each partition is a file open while the sides are read: past the cap, the join
        # splits what is still too large
        partitions = min(partitions, MAX_PARTITIONS)
        sa, sb = _Spill(tmp, "src", partitions), _Spill(tmp, "dst", partitions)
        # checked even without queries: a wrong --vector is a mistake either way
        if vector is not None:  # names the side that lacks it, before narrowing hides it
            _pick_vector(a.full_manifest, b.full_manifest, vector)
        picked = _pick_vector(a.manifest, b.manifest, vector)
        sizes = _size_differences(a.manifest, b.manifest)
        search_skipped = None
        if queries and picked is not None and picked in sizes:
            # queries of the source's size cannot search the destination's vectors
            search_skipped = (f"{sizes[picked]}, so source queries cannot search the "
                              "destination")
            picked = None
        if queries and picked is not None:
            # a side whose reader cannot search (a multi-shard snapshot) leaves the verdict
            # to the counts and digests, as mismatched sizes do
            search_skipped = next((why for side in (a, b)
                                   if (why := getattr(side.reader, "search_unsupported", None))),
                                  None)
            if search_skipped is not None:
                picked = None
        name = picked if queries else None
        reservoir = _Reservoir(queries, a.manifest.vector(name).column) if name is not None \
            else None
        cosine = _unit_compared(a.manifest, b.manifest)
        spot: dict[str, Any] | None = None
        if sample is not None:
            spot = _spot_check(a, b, sample, batch_size, reservoir, tolerance, cosine)
        else:
            _scan(a, sa, batch_size, tolerance, reservoir, cosine)
            _scan(b, sb, batch_size, tolerance, cosine=cosine)
        counts_differ = (f"counts differ: source {a.digest.count}, destination "
                         f"{b.digest.count}") if a.digest.count != b.digest.count else None
        if counts_differ:
            problems.append(counts_differ)
        problems += sizes.values()
        distance_notes = _distance_differences(a.manifest, b.manifest)
        same = a.digest.total == b.digest.total and a.digest.count == b.digest.count
        details: dict[str, Any] = {}
        if spot is not None:
            for key in ("missing_in_destination", "vector_differs", "payload_differs"):
                if spot[key]:
                    shown = ", ".join(map(repr, spot["examples"].get(key, [])))
                    problems.append(f"{spot[key]} of {spot['size']} sampled points "
                                    f"{key.replace('_', ' ')}: {shown}")
            # a collection holds one point per id (see below): the repeats were counted
            one_per_id = (counts_differ is not None and b.format in KEYED_FORMATS
                          and a.repeats > 0 and a.digest.count - a.repeats == b.digest.count)
            if one_per_id:
                problems.remove(counts_differ)
        elif not same:
            details = _compare_partitions(a, b, sa, sb, tolerance, diff, memory_rows,
                                          memory_bytes, every_record=not keyed)
            for key in ("missing_in_destination", "extra_in_destination", "vector_differs",
                        "payload_differs"):
                if details[key]:
                    shown = ", ".join(map(repr, details["examples"].get(key, [])))
                    problems.append(f"{details[key]} {key.replace('_', ' ')}: {shown}")
            one_per_id = (counts_differ is not None and problems == [counts_differ]
                          and b.format in KEYED_FORMATS and not b.repeats
                          and a.digest.count - a.repeats == b.digest.count)
            if one_per_id:
                # A collection holds one point per id, the last upserted: the source's earlier
                # records of a repeated id are not lost by the copy but replaced by design,
                # and what it holds equals the source's last record of each id.
                problems.remove(counts_differ)
            elif not problems and not details.get("within_tolerance"):
                # no record found to differ, and no vector within the tolerance to explain it
                problems.append("digests differ")
        search: dict[str, Any] | None = None
        search_apart = None
        if reservoir is not None and len(reservoir.queries()):
            search = _parity(a, b, reservoir.queries(), k, name, min_recall, batch_size)
            search_apart = _distances_apart(a, b, name)
            if not search["ok"] and search_apart is not None:
                # each side searches by its own distance: neighbours that differ say nothing
                # of the data, which the digests compare
                search["ok"] = None
                search["distances_differ"] = search_apart
            elif not search["ok"]:
                why = "; ".join(search.get("approximate", []))
                problems.append(f"search parity: recall@{k} {search['recall']:.4f} < "
                                f"{min_recall}" + (f" ({why}, so even an exact copy can "
                                                   "miss true neighbours: lower --min-recall "
                                                   "for it)" if why else ""))
    finally:
        a.close()
        b.close()
        scratch.remove()
    how = ("compared by their last record" if keyed or spot is not None
           else "each record compared")
    warnings = [f"{side.duplicates} duplicate id(s) in the {label} ({how}): "
                + ", ".join(map(repr, side.duplicate_examples))
                for side, label in ((a, "source"), (b, "destination")) if side.duplicates]
    warnings += a.context.warnings + b.context.warnings  # e.g. a sidecar that no longer fits
    warnings += distance_notes
    left_out = a.context.rejected + a.excluded
    if left_out:
        warnings.append(f"{left_out} source record(s) the conversion rejected are not compared "
                        f"({a.context.rejected} bad in the source, {a.excluded} refused by the "
                        "destination)")
    if search_skipped:
        warnings.append(f"search parity skipped: {search_skipped}")
    if not_compared:
        warnings.append(f"not compared: {not_compared}")
    if search is not None and search["ok"] is None:
        warnings.append(f"search parity not compared: recall@{k} {search['recall']:.4f}, but "
                        f"{search_apart}, so their neighbours differ whatever the data (the "
                        "digests compare the data)")
    if problems:
        verdict = "differences found"
    elif spot is not None:
        # only the sampled points were compared: "identical" would claim more than that
        verdict = f"spot check of {spot['size']} sampled points passed"
        if tolerance is not None:
            verdict += (f", within tolerance {tolerance} (largest error "
                        f"{spot['max_abs_error']:.3g})")
        if one_per_id:
            verdict += (" (the destination holds one point per id: each sampled id's last "
                        "record in the source was compared)")
    elif one_per_id:
        verdict = ("identical to the source's last record of each id (the destination holds "
                   "one point per id)")
        if tolerance is not None:
            verdict += (f", within tolerance {tolerance} (largest error "
                        f"{details['max_abs_error']:.3g})")
    elif not same:
        verdict = (f"equal within tolerance {tolerance} (largest error "
                   f"{details['max_abs_error']:.3g})")
    else:
        verdict = "identical"
    return {
        "ok": not problems,
        "problems": problems,
        "verdict": verdict,
        "warnings": warnings,
        "source": a.report(),
        "destination": b.report(),
        "digests_match": None if spot is not None else a.digest.total == b.digest.total,
        "counts_match": a.digest.count == b.digest.count,
        **({"source_rejected": a.context.rejected, "source_excluded": a.excluded}
           if on_error == "skip" or rejects else {}),
        **({"sample": spot} if spot is not None else {}),
        **({"diff": details} if details else {}),
        **({"diff_file": diff} if diff else {}),
        **({"search": search} if search else {}),
        **({"search_skipped": search_skipped} if search_skipped else {}),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _refused_ids(path: str, dst: str) -> set[str]:
    """The ids (as JSON text) of the points ``dst`` refused, as its rejects file names them
    (lines whose ``source`` is ``dst``: the reader's own rejects are bad records, left out by
    skipping, and their ids may be those of good records too). A missing file names none."""
    ids: set[str] = set()
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                record = loads_reject_line(line)
                note = record.get(REJECT_KEY) if isinstance(record, dict) else None
                if isinstance(note, dict) and note.get("source") == dst and "point_id" in note:
                    ids.add(json.dumps(note["point_id"]))
    return ids


def _label(name: str) -> str:
    """A vector's name for a message: nothing for the unnamed one, else quoted and a space."""
    return f"{name!r} " if name else ""


def _common_vectors(a: _Side, b: _Side, only: Sequence[str] | None,
                    problems: list[str]) -> str | None:
    """Narrow both sides' manifests to the vectors they are compared by: ``only`` (each must
    be on both sides, else ``UsageError``), else those both hold, each vector held by one side
    alone added to ``problems`` once. Returns the vectors ``only`` leaves out, for a warning."""
    mine = {v.name: v for v in a.manifest.vectors}
    theirs = {v.name: v for v in b.manifest.vectors}
    if only is not None:
        missing = [n for n in only if n not in mine or n not in theirs]
        if missing:
            raise UsageError(f"vector(s) to compare not held by both sides: "
                             f"{', '.join(map(repr, missing))}",
                             hint=f"source vectors: {sorted(mine)}; destination vectors: "
                                  f"{sorted(theirs)}")
        keep = set(only)
    else:
        keep = set(mine) & set(theirs)
        for side, names in (("destination", [n for n in mine if n not in theirs]),
                            ("source", [n for n in theirs if n not in mine])):
            if names:
                held = mine if side == "destination" else theirs
                problems.append(f"the {side} holds no vector "
                                + ", ".join(f"{_shown(n)} ({held[n].kind})" for n in names))
    left = [n for n in {**mine, **theirs} if n not in keep]
    for side in (a, b):
        side.narrow(keep)
    if only is None or not left:
        return None
    return "vector(s) " + ", ".join(_shown(n) for n in left)


def _shown(name: str) -> str:
    return repr(name) if name else "(unnamed)"


def _distances_apart(a: _Side, b: _Side, name: str) -> str | None:
    """Why the two sides search vector ``name`` differently, or None when they do not (or a
    side does not say): each one's distance, the index's own for a FAISS side."""
    da = _metric(a, next((v for v in a.manifest.vectors if v.name == name), None))
    db = _metric(b, next((v for v in b.manifest.vectors if v.name == name), None))
    if da is None or db is None or da == db:
        return None
    what = f"vector {name!r} " if name else ""
    return f"the source searches {what}by {da} and the destination by {db}"


def _size_differences(src: Manifest, dst: Manifest) -> dict[str, str]:
    """{vector name: problem} for each vector both sides hold with a different size."""
    theirs = {v.name: v for v in dst.vectors}
    out = {}
    for mine in src.vectors:
        other = theirs.get(mine.name)
        if (other is not None and mine.size is not None and other.size is not None
                and mine.size != other.size):
            out[mine.name] = (f"vector {_label(mine.name)}size differs: source {mine.size}, "
                              f"destination {other.size}")
    return out


def _distance_differences(src: Manifest, dst: Manifest) -> list[str]:
    """A warning for each vector both sides hold under different recorded distances: a later
    load of each would build a collection searching differently. A warning, not a
    difference: the points are what verify proves, and a conversion given ``--distance``
    (an inner-product FAISS index loaded as Cosine) changes the distance on purpose. A side
    recording none (a plain .npy) differs from none."""
    theirs = {v.name: v for v in dst.vectors}
    return [f"vector {_label(mine.name)}distance differs: source {mine.distance}, destination "
            f"{other.distance} (the points are compared; a collection loaded from each would "
            "search differently)"
            for mine in src.vectors
            if (other := theirs.get(mine.name)) is not None and mine.distance is not None
            and other.distance is not None and mine.distance != other.distance]


def _unit_compared(src: Manifest, dst: Manifest) -> frozenset[str]:
    """The dense and multi vectors ``tolerance`` compares as unit vectors (a Cosine
    multivector sub-vector by sub-vector).

    Only where the destination records Cosine, which Qdrant (and a Cosine FAISS index)
    stores normalized, and the source records Cosine too or no distance (the Cosine was
    chosen for its vectors): there only the direction is kept, and a copy holds unit vectors.
    Under any other pair the values are compared as they are: a Dot source's lengths are part
    of its data (its distance differing is reported besides), and a destination not under
    Cosine holds what it was given.
    """
    mine = {v.name: v for v in src.vectors}
    return frozenset(v.name for v in dst.vectors
                     if v.kind in ("dense", "multi") and v.distance == "Cosine"
                     and v.name in mine and mine[v.name].distance in ("Cosine", None))


def _row_bytes(manifest: Manifest, tolerance: float | None) -> int:
    """About how many bytes one point's spilled record takes: the hashes and id, and with
    ``tolerance`` its dense values (multivectors' are not known before reading; a partition
    they make too large is split when joined)."""
    values = sum(4 * (v.size or 0) for v in manifest.vectors if v.kind == "dense")
    return 64 + (values if tolerance is not None else 0)


def _allow_lossy(sides: list[tuple[str, str | None, dict[str, Any]]]) -> None:
    """Add ``allow_lossy`` to the options of each side whose reader takes it (FAISS)."""
    takes = []
    for location, fmt, options in sides:
        spec = resolve(location, fmt)
        # asked of the reader itself, so any format that learns lossy codes is covered
        if "allow_lossy" in inspect.signature(spec.load("reader")).parameters:
            options.setdefault("allow_lossy", True)
            takes.append(True)
        else:
            takes.append(False)
    if not any(takes):
        names = " or ".join(f"{loc} ({resolve(loc, fmt).name})" for loc, fmt, _ in sides)
        raise UsageError(f"--allow-lossy applies to FAISS indexes, not to {names}",
                         hint="drop --allow-lossy")


SPOT_SEED = 20261123
RETRIEVE_CHUNK = 1000


def _spot_check(a: _Side, b: _Side, n: int, batch_size: int, on_batch: Any,
                tolerance: float | None = None,
                cosine: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Compare ``n`` source points, sampled uniformly (seeded), with the destination by id.

    The source is read once (its digest and count come along); the destination is asked for
    the sampled ids when its reader can fetch points by id (``retrieve``: Qdrant), so a spot
    check of a huge collection reads ``n`` points, not the collection; otherwise it is streamed
    keeping only the sampled ids. Memory is bounded by ``n``.

    The sample is of ids, each with its last record in the source (what a collection keeps of
    a repeated id): an id's place in the sample comes from a seeded hash of it, the same for
    every record of it. When the destination is a collection, the source's repeated ids are
    counted too (``IdLedger``, spilled to disk), so a count that differs by them alone is told
    from a loss.

    With ``tolerance``, vectors are compared as the full comparison compares them
    (``_tolerance_parts``): dense values, and Cosine multivectors' unit sub-vectors, within
    ``tolerance``; the rest exactly. The report then carries ``max_abs_error``.
    """
    salt = _mix(np.array([SPOT_SEED], dtype=np.uint64))
    pri = keys = hvs = hps = hxs = np.empty(0, dtype=np.uint64)
    ids: list[Any] = []
    vecs: list[bytes] = []
    ledger = IdLedger(a.manifest.id_kind) if b.format in KEYED_FORMATS else None
    try:
        for batch in a.batches(batch_size):
            hid, hv, hp = _digested(a, batch)
            if on_batch is not None:
                on_batch(batch)
            if ledger is not None:
                ledger.add(batch.column(ID_COLUMN))
            if tolerance is not None:
                hx, vx = _tolerance_parts(batch, a.manifest, cosine)
                hxs = np.concatenate((hxs, hx))
                vecs += vx
            pri, keys, hvs, hps = (np.concatenate(x) for x in (
                (pri, _mix(hid ^ salt)), (keys, hid), (hvs, hv), (hps, hp)))
            ids += decode_ids(batch.column(ID_COLUMN), a.manifest.id_kind)
            # the last record of each id, then the n ids of lowest priority
            _, first_from_end = np.unique(keys[::-1], return_index=True)
            last = len(keys) - 1 - first_from_end
            keep = last[np.argsort(pri[last], kind="stable")[:n]]
            pri, keys, hvs, hps = pri[keep], keys[keep], hvs[keep], hps[keep]
            ids = [ids[i] for i in keep]
            if tolerance is not None:
                hxs, vecs = hxs[keep], [vecs[i] for i in keep]
    except BaseException:
        if ledger is not None:
            ledger.discard()
        raise
    if ledger is not None:
        repeated = ledger.finish(repeats=True)
        a.duplicates, a.repeats = repeated["count"], repeated["repeats"]
        for example in repeated["examples"]:
            a._duplicate_examples.add(example)
    wanted = {int(k): i for i, k in enumerate(keys)}
    found: dict[int, tuple[int, int]] = {}
    near: dict[int, tuple[int, bytes]] = {}  # tolerance only: what _tolerance_parts gives

    def record(batch: pa.RecordBatch) -> None:
        hid, hv, hp = point_parts(batch, b.manifest)
        rows = [(r, k) for r, k in enumerate(hid.tolist()) if k in wanted]
        if not rows:
            return
        hv_list, hp_list = hv.tolist(), hp.tolist()
        for r, k in rows:
            found[k] = (hv_list[r], hp_list[r])
        if tolerance is not None:
            hx, vx = _tolerance_parts(batch.take([r for r, _ in rows]), b.manifest, cosine)
            for (_, k), x, v in zip(rows, hx.tolist(), vx, strict=True):
                near[k] = (x, v)

    retrieve = getattr(b.reader, "retrieve", None)
    if retrieve is not None:
        b.digested = False
        b.digest.count = b.reader.count()
        for lo in range(0, len(ids), RETRIEVE_CHUNK):
            record(retrieve(ids[lo:lo + RETRIEVE_CHUNK]))
    else:
        for batch in b.reader.batches(batch_size):
            b.digest.count += batch.num_rows
            record(batch)
    missing, vector, payload = _Examples(), _Examples(), _Examples()
    counts = {"missing_in_destination": 0, "vector_differs": 0, "payload_differs": 0}
    max_err = 0.0
    for k, i in wanted.items():
        got = found.get(k)
        if got is None:
            counts["missing_in_destination"] += 1
            missing.add(ids[i])
            continue
        if got[0] != int(hvs[i]):
            err = (_max_abs_error(vecs[i], near[k][1])
                   if tolerance is not None and near[k][0] == int(hxs[i]) else math.inf)
            if math.isfinite(err):
                max_err = max(max_err, err)
            if tolerance is None or err > tolerance:
                counts["vector_differs"] += 1
                vector.add(ids[i])
        if got[1] != int(hps[i]):
            counts["payload_differs"] += 1
            payload.add(ids[i])
    examples = {"missing_in_destination": missing.result(), "vector_differs": vector.result(),
                "payload_differs": payload.result()}
    return {"size": len(wanted), "fetched_by_id": retrieve is not None, **counts,
            "examples": {k: v for k, v in examples.items() if v},
            **({"max_abs_error": max_err} if tolerance is not None else {})}


def _metric(side: _Side, spec: VectorSpec | None) -> str | None:
    if is_packed_bits(side.manifest, spec):
        return "Hamming"  # the only metric of a binary index; bits have no other distance
    return spec.distance if spec is not None else None


def _approximate(side: _Side) -> str | None:
    """Why a side's own search can miss true neighbours of an exact copy, or None."""
    facts = _faiss_facts(side)
    if facts.get("lossy"):
        return "holds lossy codes"
    if "HNSW" in str(facts.get("index_type", "")):
        return "searches an approximate HNSW graph"
    return None


def _keys(ids: list[Any]) -> list[str]:
    """Ids as JSON text, so ids from different readers compare (1 and "1" stay apart), each
    once and in order."""
    return list(dict.fromkeys(json.dumps(i) for i in ids))


def _found(mine: list[str], theirs: list[str], their_ties: set[str], k: int,
           exact: dict[str, tuple[float, float]] | None = None) -> int:
    """How many of one side's top-k ids for a query the other side found.

    An id is found when the other side returned it, or reported it tied with its k-th score
    (``their_ties``, brute force only), or, given ``exact`` (id -> exact score, float32
    rounding bound), when its exact score equals the other side's worst returned score within
    the two bounds: the other side could have returned it in that place just as rightly. An
    id scoring clearly better than that worst one was missed, and one scoring clearly worse
    should not have been returned. Ties are only looked for at the other side's boundary,
    and only when it returned ``k`` ids each with an exact score: a short list is all a side
    holds, and an id without a score cannot be placed.
    """
    n = sum(1 for i in mine if i in their_ties)
    if exact is None or len(theirs) < k or any(j not in exact for j in theirs):
        return n
    worst, worst_bound = min(exact[j] for j in theirs)
    return n + sum(1 for i in mine if i not in their_ties and i in exact
                   and abs(exact[i][0] - worst) <= exact[i][1] + worst_bound)


def _vectors_by_id(side: _Side, keys: set[str], vector: str, batch_size: int
                   ) -> dict[str, np.ndarray]:
    """{id as JSON: its ``vector`` as float64} for the ids in ``keys`` that ``side`` holds
    with that vector; others are left out.

    Fetched by id when the reader can (``retrieve``: Qdrant), so only those points are read;
    otherwise one pass over a fresh reader opened as the side was, keeping only those ids.
    """
    spec = side.manifest.vector(vector)
    out: dict[str, np.ndarray] = {}

    def keep(batch: pa.RecordBatch) -> None:
        col = batch.column(spec.column)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        ids = [json.dumps(i) for i in decode_ids(batch.column(ID_COLUMN),
                                                 side.manifest.id_kind)]
        rows = [r for r, key in enumerate(ids) if key in keys and valid[r]]
        if not rows:
            return
        taken = col.take(pa.array(rows, pa.int64()))
        mat = taken.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(
            len(rows), -1)
        for r, row in zip(rows, mat, strict=True):
            out[ids[r]] = row  # a repeated id: its last record, as the diff compares it

    retrieve = getattr(side.reader, "retrieve", None)
    if retrieve is not None:
        ordered = sorted(keys)
        for lo in range(0, len(ordered), RETRIEVE_CHUNK):
            keep(retrieve([json.loads(key) for key in ordered[lo:lo + RETRIEVE_CHUNK]]))
        return out
    for batch in side.read_again(batch_size):
        keep(batch)
    return out


#: unit roundoff of float32, the precision FAISS and Qdrant compute distances in
F32_ROUNDOFF = 2.0 ** -24


def _exact_scores(query: np.ndarray, ids: list[str], stored: dict[str, np.ndarray],
                  distance: str) -> dict[str, tuple[float, float]]:
    """{id: (score, bound)} for the ids with a stored vector: the score (higher is better)
    computed in float64, as good as exact next to float32, and a bound on how far an engine
    computing it in float32 may be from it.

    Two points whose scores are closer than the sum of their bounds may come back in either
    order from an exact index, so neither order is a miss. The bound is the classic one for a
    sum of n rounded terms, g * (sum of the terms' sizes) with g = m u / (1 - m u), u the
    float32 unit roundoff (Higham, Accuracy and Stability of Numerical Algorithms, 3.1), m the
    dimension plus the roundings made before and after the sum (differences, squares,
    normalising, Qdrant's square root). Euclid and Manhattan are summed as differences, as the
    engines do for one query at a time (as verify searches), so their bound is relative to the
    distance itself and two copies of one vector tie exactly.
    """
    known = sorted({i for i in ids if i in stored})
    if not known:
        return {}
    mat = np.stack([stored[i] for i in known])
    q = np.asarray(query, dtype=np.float64)
    m = mat.shape[1] + 4
    g = m * F32_ROUNDOFF / (1 - m * F32_ROUNDOFF)
    if distance == "Hamming":
        scores = _scores(q[None, :], mat, distance)[0]
        bounds = np.zeros(len(known))  # counts of bits: exact
    elif distance in ("Dot", "Cosine"):
        scores = _scores(q[None, :], mat, distance)[0]
        if distance == "Cosine":
            q = q / max(float(np.linalg.norm(q)), 1e-30)
            mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-30)
        # normalising both vectors rounds each product about as much again
        bounds = (2 * g if distance == "Cosine" else g) * np.abs(mat * q).sum(axis=1)
    elif distance == "Manhattan":
        scores = -np.abs(mat - q).sum(axis=1)
        bounds = -g * scores
    else:  # Euclid, squared: the order is the same
        scores = -((mat - q) ** 2).sum(axis=1)
        bounds = -g * scores
    return {i: (float(s), float(e)) for i, s, e in zip(known, scores, bounds, strict=True)}


def _parity(a: _Side, b: _Side, queries: np.ndarray, k: int, vector: str, min_recall: float,
            batch_size: int) -> dict[str, Any]:
    spec_b = next((v for v in b.manifest.vectors if v.name == vector), None)
    spec_a = a.manifest.vector(vector)
    # One metric for both sides: the index's own when there is one, so brute force agrees.
    distance = _metric(b, spec_b) or _metric(a, spec_a) or "Euclid"
    ra, la, ta, na = _search_side(a, queries, k, vector, distance, batch_size)
    rb, lb, tb, nb = _search_side(b, queries, k, vector, distance, batch_size)

    xs, ys = [_keys(x) for x in ra], [_keys(y) for y in rb]
    xts, yts = [set(_keys(t)) for t in ta], [set(_keys(t)) for t in tb]
    # A hit is an id the other side also ranks in its top k or ties with its k-th result.
    found = [max(_found(x, y, yt, k), _found(y, x, xt, k))
             for x, y, xt, yt in zip(xs, ys, xts, yts, strict=True)]
    # An index reports no ties, so ids left over may still tie by distance: those queries
    # are scored again from the points' stored vectors (a lookup only when ids disagree).
    # counted over distinct ids: a side holding an id twice may return it twice
    unsettled = [q for q, (x, n) in enumerate(zip(xs, found, strict=True)) if n < len(x)]
    tie_side = None
    if unsettled:
        tie_side = next((s for s in (a, b) if hasattr(s.reader, "retrieve")), a)
        wanted = {i for q in unsettled for i in xs[q] + ys[q]}
        stored = _vectors_by_id(tie_side, wanted, vector, batch_size)
        for q in unsettled:
            exact = _exact_scores(queries[q], xs[q] + ys[q], stored, distance)
            found[q] = max(_found(xs[q], ys[q], yts[q], k, exact),
                           _found(ys[q], xs[q], xts[q], k, exact))
    recalls = [n / max(1, len(x)) for x, n in zip(xs, found, strict=True)]
    recall = float(np.mean(recalls)) if recalls else 1.0
    same_ids = sum(len(set(x) & set(y)) for x, y in zip(xs, ys, strict=True))
    out: dict[str, Any] = {"queries": len(queries), "k": k, "vector": vector or "(unnamed)",
                           "distance": distance, "recall": round(recall, 6),
                           "min_recall": min_recall, "ok": recall >= min_recall,
                           # ids found only as ties: what recall counts beyond equal ids
                           "tied_ids": sum(found) - same_ids}
    if tie_side is not None:
        out["tie_vectors_from"] = "source" if tie_side is a else "destination"
    latency = {label: lat for label, lat in (("source", la), ("destination", lb)) if lat}
    if latency:
        out["latency_ms"] = latency
    nprobe = {label: n for label, n in (("source", na), ("destination", nb)) if n}
    if nprobe:
        out["ivf_nprobe"] = nprobe  # every list: the latency is of an exhaustive search
    approximate = [f"{side.location} {why}" for side in (a, b)
                   if (why := _approximate(side)) is not None]
    if approximate:
        out["approximate"] = approximate
    return out


def _verify_archive(location: str, fmt: str | None, batch_size: int,
                    options: dict[str, Any], memory_rows: int) -> dict[str, Any]:
    """A file read whole against the count and digest its manifest records; ``UsageError``
    (before reading) when it records none this version computes, or when the location is a
    collection, which is not a file and records no digest."""
    started = time.perf_counter()
    name = resolve(location, fmt).name
    if name in _COLLECTIONS:
        # said before connecting: a collection has nothing to be checked against on its own
        raise UsageError(f"a collection ({name}) is not a file: verify with one location "
                         "checks a file vecferry wrote against the digest it records",
                         location=Location(location),
                         hint="give a second location to compare the collection with: "
                              "vecferry verify SRC DST")
    side = _Side(location, fmt, options)
    recorded = side.manifest.digest
    # Checked before the file is read: without a digest this version computes there is
    # nothing to compare with, which is a question for the user, not a difference (exit 4).
    unusable = None
    if recorded is None:
        unusable = ("the file records no digest (vecferry did not write it, or wrote it "
                    "before digests were recorded), so it cannot be verified on its own")
    elif recorded.get("algorithm") in EARLIER_ALGORITHMS:
        unusable = (f"the file records a digest of an earlier vecferry "
                    f"({recorded.get('algorithm')}), which this version does not compute")
    elif recorded.get("algorithm") != ALGORITHM:
        unusable = (f"the file records a digest of an unknown algorithm "
                    f"{recorded.get('algorithm')!r} (written by a later vecferry?)")
    if unusable is not None:
        side.close()
        raise UsageError(unusable, location=Location(location),
                         hint="compare it with its source: vecferry verify SRC DST")
    try:
        scratch = ScratchDir("verify")
    except BaseException:
        side.close()
        raise
    tmp = scratch.path
    problems: list[str] = []
    try:
        count = side.reader.count() or memory_rows * 8
        spill = _Spill(tmp, "src", min(MAX_PARTITIONS, max(1, math.ceil(count / memory_rows))))
        _scan(side, spill, batch_size, None)
        for (table,) in _pieces([spill], memory_rows):
            _dedupe(table, side)
    finally:
        side.close()
        scratch.remove()
    if recorded.get("count") != side.digest.count:
        problems.append(f"count differs: manifest says {recorded.get('count')}, file holds "
                        f"{side.digest.count}")
    if recorded.get("value") != side.digest.as_dict()["value"]:
        problems.append(f"digest differs: manifest says {recorded.get('value')}, data gives "
                        f"{side.digest.as_dict()['value']} (the file was changed or damaged)")
    warnings = [f"{side.duplicates} duplicate id(s): "
                + ", ".join(map(repr, side.duplicate_examples))] if side.duplicates else []
    warnings += side.context.warnings
    return {"ok": not problems, "problems": problems,
            "verdict": "differences found" if problems else "identical", "warnings": warnings,
            "source": side.report(),
            "recorded_digest": recorded, "seconds": round(time.perf_counter() - started, 3)}


def iter_diff(path: str) -> Iterator[dict[str, Any]]:
    """Lines of a ``--diff`` file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
