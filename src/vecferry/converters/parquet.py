"""Apache Parquet: one file, or a directory of part files read in name order.

Spec: https://parquet.apache.org/docs/file-format/ ; library: https://arrow.apache.org/docs/python/parquet.html

Columns are the point stream's own (``id``, ``vector`` / ``vector.<name>``, ``payload`` as JSON
text), so DuckDB, pandas and polars read the file as it is. Dense vectors are
``fixed_size_list<float32>``, compressed with zstd; the manifest is the file's key-value metadata
``vecferry.manifest`` (written at close, so it carries the final count). Row groups are cut at
about 32 MB so readers can stream them and skip to a resume position without decoding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vecferry.converters.base import (
    AtomicPath,
    Context,
    fsync_path,
    input_path,
    reject_unknown_options,
)
from vecferry.digest import StreamDigest
from vecferry.errors import InputError, Location, SchemaError
from vecferry.stream import (
    ID_COLUMN,
    MANIFEST_KEY,
    PAYLOAD_COLUMN,
    Manifest,
    VectorSpec,
    manifest_of,
    vector_name,
)

ROW_GROUP_BYTES = 32 << 20
PART_NAME = "part-{:05d}.parquet"


def _parts(path: Path) -> list[Path]:
    if path.is_dir():
        parts = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
        if not parts:
            raise InputError("directory holds no .parquet files", location=Location(str(path)))
        return parts
    return [path]


def _open(path: Path) -> pq.ParquetFile:
    try:
        # Buffered reads of 1 MB, no memory map and no pre-buffering: a map's pages count in
        # RSS up to the file size, and pre-buffering holds whole row groups (~32 MB each) ahead.
        return pq.ParquetFile(path, memory_map=False, buffer_size=1 << 20, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", location=Location(str(path)),
                         hint="the file may be truncated or not Parquet") from exc


def _dtype_name(t: pa.DataType) -> str:
    for name, dt in (("float32", pa.float32()), ("float16", pa.float16()), ("uint8", pa.uint8())):
        if t == dt:
            return name
    raise SchemaError(f"vector values of type {t} are not supported",
                      hint="vectors must be float32, float16 or uint8")


def infer_manifest(schema: pa.Schema, source: str) -> Manifest:
    """A manifest for a Parquet file in the stream layout that was written without one."""
    names = schema.names
    if ID_COLUMN not in names:
        raise InputError(f"no 'id' column (columns: {', '.join(names)})",
                         location=Location(source), hint="the file needs an 'id' column")
    vectors = []
    for f in schema:
        if f.name != "vector" and not f.name.startswith("vector."):
            continue
        t = f.type
        if pa.types.is_fixed_size_list(t):
            vectors.append(VectorSpec(vector_name(f.name), "dense", t.list_size,
                                      _dtype_name(t.value_type)))
        elif pa.types.is_list(t) and pa.types.is_fixed_size_list(t.value_type):
            vectors.append(VectorSpec(vector_name(f.name), "multi", t.value_type.list_size,
                                      _dtype_name(t.value_type.value_type)))
        elif pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} == {
                "indices", "values"}:
            vectors.append(VectorSpec(vector_name(f.name), "sparse"))
        else:
            raise SchemaError(f"column {f.name!r} has type {t}, which is not a vector type",
                              location=Location(source),
                              hint="dense vectors must be fixed_size_list<float32>[dim]")
    if not vectors:
        raise InputError(f"no vector column (columns: {', '.join(names)})",
                         location=Location(source),
                         hint="name the vector column 'vector' or 'vector.<name>'")
    id_type = schema.field(ID_COLUMN).type
    id_kind = "int" if pa.types.is_integer(id_type) else "string"
    return Manifest(vectors=vectors, id_kind=id_kind)


class ParquetReader:
    """Streams row groups of one file or a directory of parts; memory bounded by a row group.

    ``InputError`` when a file is missing, not Parquet, or parts disagree on their schema.
    """

    def __init__(self, location: str, *, context: Context, **options: Any):
        reject_unknown_options("parquet", options)
        self.location = location
        self.context = context
        self.parts = _parts(input_path(location))
        first = _open(self.parts[0])
        kv = first.metadata.metadata or {}
        if MANIFEST_KEY in kv:
            try:
                manifest = Manifest.from_json(kv[MANIFEST_KEY])
            except (ValueError, TypeError) as exc:
                raise InputError(f"manifest metadata is not valid: {exc}",
                                 location=Location(str(self.parts[0]))) from exc
        else:
            manifest = infer_manifest(first.schema_arrow, str(self.parts[0]))
        self._rows = 0
        self._files: list[pq.ParquetFile] = []
        for part in self.parts:
            pf = first if part == self.parts[0] else _open(part)
            if [n for n in pf.schema_arrow.names] != first.schema_arrow.names:
                raise InputError(
                    f"part has columns {pf.schema_arrow.names}, but {self.parts[0].name} has "
                    f"{first.schema_arrow.names}", location=Location(str(part)),
                    hint="all parts of a directory must share one schema")
            self._rows += pf.metadata.num_rows
            self._files.append(pf)
        manifest.count = self._rows
        manifest.source = manifest.source or {"format": "parquet", "location": location}
        self.manifest = manifest
        self.schema = manifest.schema()
        self._check_columns(first)

    def _check_columns(self, pf: pq.ParquetFile) -> None:
        have = set(pf.schema_arrow.names)
        missing = [f.name for f in self.schema if f.name not in have and f.name != PAYLOAD_COLUMN]
        if missing:
            raise InputError(f"columns named in the manifest are missing: {', '.join(missing)}",
                             location=Location(str(self.parts[0])))

    def count(self) -> int:
        return self._rows

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        for part, pf in zip(self.parts, self._files, strict=True):
            groups = []
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if start >= n:
                    start -= n  # whole row group already written by an earlier run
                    continue
                groups.append(g)
            if not groups:
                continue
            columns = [f.name for f in self.schema if f.name in pf.schema_arrow.names]
            try:
                for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups,
                                             columns=columns):
                    if start:
                        if batch.num_rows <= start:
                            start -= batch.num_rows
                            continue
                        batch = batch.slice(start)
                        start = 0
                    yield self._conform(batch, part)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"cannot decode Parquet data: {exc}", location=Location(
                    str(part)), hint="the file may be truncated or corrupt") from exc

    def _conform(self, batch: pa.RecordBatch, part: Path) -> pa.RecordBatch:
        """Cast to the stream schema (e.g. int64 ids to uint64, missing payload to nulls)."""
        arrays = []
        for f in self.schema:
            if f.name not in batch.schema.names:
                arrays.append(pa.nulls(batch.num_rows, f.type))
                continue
            col = batch.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(f"column {f.name!r} of type {col.type} cannot be read as "
                                      f"{f.type}: {exc}", location=Location(str(part)),
                                      hint="negative or non-integer ids are not supported"
                                      if f.name == ID_COLUMN else None) from exc
            arrays.append(col)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def close(self) -> None:
        for pf in self._files:
            pf.close()


class ParquetWriter:
    """Writes one Parquet file (or ``part-00000.parquet`` in a directory target), atomically.

    A location ending in ``/`` or naming an existing directory is written as a directory.
    """

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, compression: str = "zstd",
                 compression_level: int | None = 1, row_group_bytes: int | None = None,
                 **options: Any):
        reject_unknown_options("parquet", options)
        self.location = location
        self.context = context
        self.manifest = manifest_of(schema)
        self.schema = schema
        directory = location.endswith("/") or Path(location).is_dir()
        self.out = AtomicPath(location.rstrip("/") or location, overwrite=overwrite,
                              directory=directory)
        self.file = self.out.temp / PART_NAME.format(0) if directory else self.out.temp
        self.row_group_bytes = row_group_bytes or ROW_GROUP_BYTES
        floats = [v.column for v in self.manifest.vectors
                  if v.kind != "sparse" and v.datatype != "uint8"]
        self._writer = pq.ParquetWriter(
            self.file, schema, compression=compression,
            # zstd level 1 compresses float vectors as well as the default level in 2/3 the
            # time; byte-stream-split groups the float bytes so exponents compress.
            compression_level=compression_level if compression == "zstd" else None,
            use_byte_stream_split=floats or False,
            # Statistics and dictionaries on vector and payload columns cost time and bytes
            # and no reader uses them; ids keep statistics for predicate pushdown.
            write_statistics=[ID_COLUMN],
            use_dictionary=False,
            data_page_size=1 << 20,
        )
        self.digest = StreamDigest(self.manifest)
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self.count = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.digest.update(batch)
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.count += batch.num_rows
        if self._pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._pending, self._pending_bytes = [], 0

    def close(self) -> dict[str, Any]:
        self._flush()
        self.manifest.count = self.count
        self.manifest.digest = self.digest.as_dict()
        self._writer.add_key_value_metadata({MANIFEST_KEY.decode(): self.manifest.to_json()
                                             .decode()})
        self._writer.close()
        fsync_path(self.file)
        self.out.commit()
        final = self.out.target / PART_NAME.format(0) if self.out.directory else self.out.target
        return {"bytes_written": os.path.getsize(final)}

    def abort(self) -> None:
        # Already failing: a second error from closing must not hide the first.
        with contextlib.suppress(Exception):
            self._writer.close()
        self.out.abort()
