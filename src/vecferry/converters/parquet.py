"""Apache Parquet: one file, or a directory of part files read in name order.

Spec: https://parquet.apache.org/docs/file-format/ ; library: https://arrow.apache.org/docs/python/parquet.html

Columns are the point stream's own (``id``, ``vector`` / ``vector.<name>``, ``payload`` as JSON
text), so DuckDB, pandas and polars read the file as it is. Dense vectors are
``fixed_size_list<float32>``, compressed with zstd; the manifest is the file's key-value metadata
``vecferry.manifest`` (written at close, so it carries the final count), and the Arrow schema's
metadata (``ARROW:schema``, written again at close with the same manifest). Row groups are cut at
about 32 MB so readers can stream them and skip to a resume position without decoding.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecferry.converters.base import (
    NOT_DATA,
    AtomicPath,
    ClosingReader,
    ClosingWriter,
    Context,
    fsync_path,
    input_path,
    listing,
    output_size,
    reject_unknown_options,
    unread_files_error,
)
from vecferry.converters.parts import (
    DIR_MANIFEST,
    PartLog,
    combined_digest,
    directory_only,
    listed_parts,
    parse_part_size,
    read_directory_manifest,
)
from vecferry.digest import StreamDigest
from vecferry.errors import (
    InputError,
    Location,
    RecordError,
    SchemaError,
    UsageError,
    VecferryError,
)
from vecferry.fileio import PAYLOAD_TEXT_WORDS, loads_with_constants, payload_texts
from vecferry.mapping import (
    Mapping,
    MoreValues,
    TableMapper,
    check_same_schema,
    narrowed_warning,
    suggest_table,
)
from vecferry.plan import pack
from vecferry.points import point_from_row
from vecferry.storage import arrow_sink, arrow_source, output_path
from vecferry.stream import (
    ID_COLUMN,
    MANIFEST_KEY,
    PAYLOAD_COLUMN,
    Manifest,
    VectorSpec,
    decode_ids,
    manifest_of,
    vector_name,
    with_distance,
)

ROW_GROUP_BYTES = 32 << 20
#: the footer entry where pyarrow keeps the Arrow schema, metadata included (base64 of its
#: IPC serialization)
ARROW_SCHEMA_KEY = "ARROW:schema"
#: what to do about a payload cell that is not a JSON object
CELL_HINT = PAYLOAD_TEXT_WORDS["cell"][3]
PART_NAME = "part-{:05d}.parquet"


def _data_bytes(pf: pq.ParquetFile) -> int:
    return sum(pf.metadata.row_group(g).total_byte_size
               for g in range(pf.metadata.num_row_groups))


def natural_key(path: Path) -> list[Any]:
    """Sort key putting ``2.parquet`` before ``10.parquet`` (shards as tools number them)."""
    return natural_key_text(path.name)


def _parts(path: Path) -> list[Path]:
    return _parts_with_manifest(path)[0]


def _parts_with_manifest(path: Path) -> tuple[list[Path], Manifest | None]:
    """The files to read, and the directory's ``manifest.json`` manifest if it has one (its
    part list then decides which files are read, in its order). A directory's files are its
    Parquet files (``DATA_SUFFIXES``, any letter case) and those in its subdirectories, hive
    ``key=value`` ones or plain ones, in natural order of their paths; hidden names (``.`` and
    ``_`` prefixes, ``base.NOT_DATA``) are left out. ``InputError`` naming them when any other
    file is there: nothing in a source directory is skipped unsaid."""
    if path.is_dir():
        found_files, unread = _directory_files(path)
        parts = sorted(found_files, key=lambda p: _path_key(path, p))
        found = read_directory_manifest(path)
        listed = found[1] if found is not None else None
        if not parts and not listed:
            # no data at all: the other files are no data either
            raise InputError("directory holds no .parquet files", location=Location(str(path)))
        if unread:
            raise _unread_error(path, unread)
        if found is not None and listed:
            nested = [rel for rel in (_relative(path, p) for p in parts) if "/" in rel]
            if nested:
                # vecferry writes its parts side by side: a file below is none of them, and
                # ``listed_parts`` compares bare names, which a subdirectory's file could repeat
                raise InputError(f"part file(s) not listed in {DIR_MANIFEST}: "
                                 f"{listing(nested)}", location=Location(str(path)),
                                 hint="remove them, or delete the directory's manifest to read "
                                      "every part")
            return listed_parts(path, listed, parts), found[0]
        return parts, found[0] if found is not None else None
    return [path], None


#: the value Hive and Spark write for a null partition key
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
#: name endings of the files of a directory read as Parquet (the format's extensions),
#: compared in lower case
DATA_SUFFIXES = (".parquet", ".pq")


def _is_hive_dir(name: str) -> bool:
    return "=" in name.strip("=")


def _directory_files(root: Any) -> tuple[list[Any], list[Any]]:
    """(Parquet files, other files) in ``root`` and, recursively, its subdirectories.

    Subdirectories are read whether or not they are hive ``key=value`` ones, as pyarrow's
    datasets (so pandas) and polars read a directory: a plain folder of shards is data
    too, and leaving it out was a silent loss. Names starting with ``.`` or ``_`` are left
    out, files and directories (Spark's ``_SUCCESS``, ``_temporary/``, ``_metadata``,
    vecferry's ``_manifest.json`` and ``.<name>.vftmp-*`` temporaries), and so are
    ``base.NOT_DATA``; every other file is returned as not read."""
    files: list[Any] = []
    unread: list[Any] = []
    for child in root.iterdir():
        name = child.name
        if name.startswith((".", "_")):
            continue
        if child.is_dir():
            more, other = _directory_files(child)
            files += more
            unread += other
        elif name.lower().endswith(DATA_SUFFIXES):
            files.append(child)
        elif not NOT_DATA.fullmatch(name):
            unread.append(child)
    return files, unread


def _relative(root: Any, path: Any) -> str:
    return str(path)[len(str(root)):].strip("/")


def _unread_error(root: Any, unread: list[Any]) -> InputError:
    names = sorted((_relative(root, p) for p in unread), key=natural_key_text)
    return unread_files_error(
        str(root), names, "that are not Parquet by name",
        "Parquet parts end in .parquet or .pq (any letter case, the extensions of the format); "
        "rename those that are Parquet, and move the others out or give them a leading _ or . "
        "(which vecferry, Spark and pyarrow skip)")


def natural_key_text(text: str) -> list[Any]:
    """``natural_key`` of a name or relative path."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _path_key(root: Any, path: Any) -> list[Any]:
    return natural_key_text(_relative(root, path))


def hive_partitions(root: Any, parts: list[Any]) -> tuple[list[dict[str, Any]], list[pa.Field]]:
    """The partition values of each part (``k=v`` directories between ``root`` and the part,
    URL-decoded as Hive writes them, ``__HIVE_DEFAULT_PARTITION__`` as null) and their fields:
    ``int64`` for a key whose values are all integers, else ``string`` (pyarrow's and Spark's
    reading of such a layout). Empty when no part sits in a partition directory."""
    from urllib.parse import unquote

    values: list[dict[str, Any]] = []
    keys: list[str] = []
    for part in parts:
        rel = _relative(root, part).split("/")[:-1]
        found: dict[str, Any] = {}
        for seg in rel:
            if not _is_hive_dir(seg):
                continue  # a plain folder names no partition (as pyarrow reads it)
            key, _, value = seg.partition("=")
            found[unquote(key)] = None if value == HIVE_NULL else unquote(value)
        keys += [k for k in found if k not in keys]
        values.append(found)
    fields = []
    for key in keys:
        seen = [v.get(key) for v in values if v.get(key) is not None]
        integral = bool(seen) and all(re.fullmatch(r"-?\d{1,18}", v) for v in seen)
        fields.append(pa.field(key, pa.int64() if integral else pa.string()))
        if integral:
            for v in values:
                if v.get(key) is not None:
                    v[key] = int(v[key])
    return values, fields


class PartitionedFile:
    """A Parquet file of a hive-partitioned directory, read with its directory's partition
    keys as constant columns after its own (a column the file has itself wins). Offers the
    part of ``pq.ParquetFile`` the readers use: ``schema_arrow``, ``metadata``,
    ``num_row_groups``, ``iter_batches`` and ``close``."""

    def __init__(self, pf: pq.ParquetFile, values: dict[str, Any], fields: list[pa.Field]):
        self._pf = pf
        own = set(pf.schema_arrow.names)
        self._extra = [f for f in fields if f.name not in own]
        self._values = values
        self.schema_arrow = pa.schema([*pf.schema_arrow, *self._extra])
        self.metadata = pf.metadata
        self.num_row_groups = pf.num_row_groups

    def iter_batches(self, *, columns: list[str] | None = None, **kw: Any
                     ) -> Iterator[pa.RecordBatch]:
        names = {f.name for f in self._extra}
        add = [f for f in self._extra if columns is None or f.name in columns]
        own = None if columns is None else [c for c in columns if c not in names]
        for b in self._pf.iter_batches(columns=own, **kw):
            consts = [pa.array([self._values.get(f.name)] * b.num_rows, f.type) for f in add]
            yield pa.RecordBatch.from_arrays([*b.columns, *consts],
                                             schema=pa.schema([*b.schema, *add]))

    def close(self) -> None:
        self._pf.close()


def _open(path: Path) -> pq.ParquetFile:
    try:
        # Buffered reads of 1 MB, no memory map and no pre-buffering: a map's pages count in
        # RSS up to the file size, and pre-buffering holds whole row groups (~32 MB each) ahead.
        return pq.ParquetFile(arrow_source(path), memory_map=False, buffer_size=1 << 20,
                              pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", location=Location(str(path)),
                         hint="the file may be truncated or not Parquet") from exc


def _recorded_digest(pf: pq.ParquetFile) -> dict[str, Any] | None:
    """The digest a part's own manifest records, None when it has none."""
    kv = pf.metadata.metadata or {}
    if MANIFEST_KEY not in kv:
        return None
    try:
        return Manifest.from_json(kv[MANIFEST_KEY]).digest
    except (ValueError, TypeError, SchemaError):
        return None


def _dtype_name(t: pa.DataType, column: str, source: str) -> str:
    for name, dt in (("float32", pa.float32()), ("float16", pa.float16()), ("uint8", pa.uint8())):
        if t == dt:
            return name
    raise SchemaError(f"column {column!r}: vector values of type {t} are not supported",
                      location=Location(source),
                      hint="vectors must be float32, float16 or uint8")


def _vector_spec(f: pa.Field, source: str) -> VectorSpec:
    """The vector a column of the stream layout holds; ``SchemaError`` for any other type."""
    t = f.type
    if pa.types.is_fixed_size_list(t):
        return VectorSpec(vector_name(f.name), "dense", t.list_size,
                          _dtype_name(t.value_type, f.name, source))
    if pa.types.is_list(t) and pa.types.is_fixed_size_list(t.value_type):
        return VectorSpec(vector_name(f.name), "multi", t.value_type.list_size,
                          _dtype_name(t.value_type.value_type, f.name, source))
    if pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} == {
            "indices", "values"}:
        return VectorSpec(vector_name(f.name), "sparse")
    raise SchemaError(f"column {f.name!r} has type {t}, which is not a vector type",
                      location=Location(source),
                      hint="dense vectors must be fixed_size_list<float32>[dim]")


def infer_manifest(schema: pa.Schema, source: str) -> Manifest:
    """A manifest for a Parquet file in the stream layout that was written without one."""
    names = schema.names
    if ID_COLUMN not in names:
        raise InputError(f"no 'id' column (columns: {', '.join(names)})",
                         location=Location(source), hint="the file needs an 'id' column")
    vectors = [_vector_spec(f, source) for f in schema if _is_vector_name(f.name)]
    if not vectors:
        raise InputError(f"no vector column (columns: {', '.join(names)})",
                         location=Location(source),
                         hint="name the vector column 'vector' or 'vector.<name>'")
    id_type = schema.field(ID_COLUMN).type
    id_kind = "int" if pa.types.is_integer(id_type) else "string"
    return Manifest(vectors=vectors, id_kind=id_kind)


def _is_vector_name(name: str) -> bool:
    return name == "vector" or name.startswith("vector.")


def _has_stream_names(schema: pa.Schema) -> bool:
    """Whether a file has a column named as vecferry names them (an ``id`` or a vector)."""
    return any(n == ID_COLUMN or _is_vector_name(n) for n in schema.names)


def layout_problem(schema: pa.Schema) -> str | None:
    """Why a file without a manifest is not in vecferry's stream layout; None when it is.

    The stream layout is read column for column (only the payload texts are checked, a batch
    at a time), and only its own columns are read: so it must be exactly vecferry's columns
    with vecferry's types. Anything
    else (a column more, a ``list<float>`` or float64 vector as pandas writes it, a dictionary
    id) is another tool's file and is read through a mapping, which keeps every column and
    checks every row.
    """
    names = schema.names
    vectors = [n for n in names if _is_vector_name(n)]
    if ID_COLUMN not in names:
        return "no 'id' column" if vectors else "no 'id' or 'vector' column"
    id_type = schema.field(ID_COLUMN).type
    if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type)
            or pa.types.is_large_string(id_type)):
        return f"column 'id' has type {id_type}, which vecferry does not write"
    if not vectors:
        return "no 'vector' column"
    for name in vectors:
        try:
            _vector_spec(schema.field(name), "")
        except SchemaError:
            return (f"column {name!r} has type {schema.field(name).type}, which is not a "
                    "vecferry vector type")
    if PAYLOAD_COLUMN in names:
        t = schema.field(PAYLOAD_COLUMN).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            return f"column 'payload' has type {t}, not JSON text"
    others = [n for n in names if n not in (ID_COLUMN, PAYLOAD_COLUMN) and n not in vectors]
    if others:
        return f"columns that are not vecferry's: {', '.join(others)}"
    return None


def _is_stream_layout(schema: pa.Schema) -> bool:
    """Whether a file without a manifest is in vecferry's stream layout (``layout_problem``)."""
    return layout_problem(schema) is None


def _first_batch(files: list[pq.ParquetFile], columns: list[str] | None = None
                 ) -> pa.RecordBatch | None:
    """The first rows of the first non-empty file (vector sizes, id kind, a suggestion)."""
    for pf in files:
        if pf.metadata.num_rows:
            return next(pf.iter_batches(batch_size=_FIRST_ROWS, columns=columns), None)
    return None


#: rows a batch of the scan for a vector column's first value reads (one column only)
SCAN_BATCH = 8192


def _more_values(files: list[pq.ParquetFile]) -> MoreValues:
    """The values of a column of ``files``, from their first row on (the rows
    ``_first_batch`` read are read again: a few, and their batch may have been cut short by a
    row group), ``SCAN_BATCH`` rows of that column at a time: memory stays bounded, and the
    caller stops at the first value it can use."""
    def more(column: str) -> Iterator[pa.Array]:
        for pf in files:
            if pf.metadata.num_rows:
                for batch in pf.iter_batches(batch_size=SCAN_BATCH, columns=[column]):
                    yield batch.column(0)
    return more


#: rows ``_first_batch`` reads
_FIRST_ROWS = 1024


def foreign_error(pf: pq.ParquetFile, path: Path, problem: str) -> VecferryError:
    """The error for a file holding no manifest and not in the stream layout (``problem`` says
    why): the mapping to pass, as ``vecferry inspect`` would suggest it."""
    schema = pf.schema_arrow
    names = schema.names
    suggestion = suggest_table(schema, _first_batch([pf]))
    if suggestion["vector_columns"] or suggestion["sparse_columns"]:
        hint = f"read it with a mapping, e.g. {suggestion['flags']}"
    else:
        if _has_stream_names(schema):
            # Named like vecferry's columns, and no column a mapping could read as a vector:
            # what is wrong with the stream layout is the useful message.
            try:
                infer_manifest(schema, str(path))
            except VecferryError as exc:
                return exc
        hint = ("read it with a mapping: --vector-column [NAME=]COLUMN, optionally --id-column "
                "COLUMN and --payload-columns a,b,c; no column looks like a vector")
    return InputError(f"not a vecferry file: no manifest and {problem} "
                      f"(columns: {', '.join(names)})", location=Location(str(path)), hint=hint)


_simd = threading.local()


def _all_objects(texts: list[str | None], column: pa.Array) -> bool:
    """Whether every text of a payload ``column`` (``texts``: its values) is one JSON object,
    or None: the cheap test every batch of a stream-layout file takes.

    simdjson parses each text completely (RFC 8259: no NaN, no trailing text) without building
    Python values, several times faster than orjson, which builds them. Each text is parsed on
    its own: one parse of the texts joined into an array can take two bad cells as one good
    value (``{"a":[{}`` and ``{}]}``). False (for a bad text, but also a JSON ``null`` text,
    an integer past 64 bits, a lone surrogate escape, a byte order mark simdjson would skip)
    sends the batch to the exact per-cell checks of ``fileio.payload_texts``.
    """
    found = getattr(_simd, "parser", None)
    if found is None:
        try:
            import simdjson
        except ImportError:  # a speed-up only: orjson gives the same answer
            found = ()
        else:
            # one parser per thread: a parser takes one document at a time
            found = (simdjson.Parser().parse, simdjson.Object)
        _simd.parser = found
    try:
        if not found:
            return all(type(orjson.loads(t)) is dict for t in texts if t is not None)
        parse, obj = found
        # a document's proxy must be gone before the parser takes the next: type() drops it
        if not all(type(parse(t)) is obj for t in texts if t is not None):
            return False
    except (ValueError, RuntimeError):  # orjson's and simdjson's parse errors
        return False
    return not pc.any(pc.starts_with(column, "\ufeff")).as_py()


def _take(stored: Iterator[tuple[pa.RecordBatch, Path, int]], rows: int
          ) -> Iterator[tuple[pa.RecordBatch, Path, int]]:
    """``plan.take_rows`` for ``ParquetReader._stored``: its first ``rows`` rows."""
    left = rows
    if left <= 0:
        return
    for batch, part, row0 in stored:
        if batch.num_rows > left:
            batch = batch.slice(0, left)
        left -= batch.num_rows
        yield batch, part, row0
        if left <= 0:
            return  # the next batch is not even read


def _as_read(text: str) -> Any:
    """A refused payload cell as a rejects line holds it: its value where Python's json reads
    it (NaN and Infinity stay floats, written as such), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class ParquetReader(ClosingReader):
    """Streams row groups of one file or a directory of parts; memory bounded by a row group.

    Without mapping options the file is vecferry's (manifest in its metadata, or exactly the
    stream layout's columns and types, see ``layout_problem``). With them (``id_column``,
    ``vector_column``, ``sparse_column``, ``payload_columns``, ``json_columns``,
    ``payload_column``; see ``vecferry.mapping``) any table is read, shards of a directory in
    natural name order (``2.parquet`` before ``10.parquet``). ``InputError`` when a file is
    missing, not Parquet, not vecferry's and given no mapping (the message says why it is not,
    the hint suggests a mapping), when a directory holds a file not named as Parquet
    (``_directory_files``), or when parts disagree on their schema (naming both files). A row
    whose payload cell is not a JSON object or null (NaN, Infinity, text that is not JSON, a
    list) is a bad record, rejected through the context by file, row and id.
    """

    def __init__(self, location: str, *, context: Context, id_column: str | None = None,
                 vector_column: Any = None, sparse_column: Any = None,
                 payload_columns: Any = None, json_columns: Any = None,
                 payload_column: str | None = None, id_kind: str | None = None,
                 **options: Any):
        reject_unknown_options("parquet", options)
        self.location = location
        self.context = context
        root = input_path(location)
        self.parts, dir_manifest = _parts_with_manifest(root)
        self._hive = hive_partitions(root, self.parts) if root.is_dir() else ([], [])
        self.mapper: TableMapper | None = None
        first = self._open_part(0)
        mapping = Mapping.from_options(id_column=id_column, vector_column=vector_column,
                                       sparse_column=sparse_column,
                                       payload_columns=payload_columns,
                                       json_columns=json_columns,
                                       payload_column=payload_column)
        if mapping is not None:
            self._open_mapped(first, mapping, id_kind)
            return
        kv = first.metadata.metadata or {}
        if MANIFEST_KEY in kv:
            if id_kind is not None:
                raise UsageError("--id-kind does not apply to a file carrying a vecferry "
                                 "manifest (it records the id kind)",
                                 location=Location(str(self.parts[0])))
            try:
                manifest = Manifest.from_json(kv[MANIFEST_KEY])
            except SchemaError as exc:  # a manifest vecferry cannot take, named with its file
                raise SchemaError(exc.message, location=Location(str(self.parts[0])),
                                  hint=exc.hint or "the file's vecferry manifest metadata is "
                                  "damaged; export the file again") from exc
            except (ValueError, TypeError) as exc:
                raise InputError(f"manifest metadata is not valid: {exc}",
                                 location=Location(str(self.parts[0]))) from exc
        elif (problem := layout_problem(first.schema_arrow)) is None:
            manifest = infer_manifest(first.schema_arrow, str(self.parts[0]))
            if id_kind is not None:
                manifest.id_kind = id_kind
        else:
            raise foreign_error(first, self.parts[0], problem)
        self._rows = 0
        self._files: list[pq.ParquetFile] = []
        recorded: list[dict[str, Any] | None] = []
        for i, part in enumerate(self.parts):
            pf = first if i == 0 else self._open_part(i)
            if [n for n in pf.schema_arrow.names] != first.schema_arrow.names:
                raise InputError(
                    f"part has columns {pf.schema_arrow.names}, but {self.parts[0].name} has "
                    f"{first.schema_arrow.names}", location=Location(str(part)),
                    hint="all parts of a directory must share one schema")
            self._rows += pf.metadata.num_rows
            self._files.append(pf)
            if len(self.parts) > 1:
                recorded.append(_recorded_digest(pf))
        if dir_manifest is not None:
            # the directory's manifest.json wins: count and digest of all parts
            manifest = dir_manifest
        elif len(self.parts) > 1:
            # parts written one by one: the directory's digest is the sum of theirs
            manifest.digest = combined_digest(recorded)
        manifest.count = self._rows
        manifest.source = manifest.source or {"format": "parquet", "location": location}
        self.manifest = manifest
        self.schema = manifest.schema()
        self._check_columns(first)

    def _open_mapped(self, first: pq.ParquetFile, mapping: Mapping, id_kind: str | None
                     ) -> None:
        self._files = [first]
        for i, part in enumerate(self.parts[1:], 1):
            pf = self._open_part(i)
            check_same_schema(pf.schema_arrow, str(part), first.schema_arrow,
                              str(self.parts[0]))
            self._files.append(pf)
        names = first.schema_arrow.names
        wanted = [c for c in (mapping.id_column, *mapping.vector_columns,
                              *(s.split("=", 1)[-1] for s in mapping.vector_columns))
                  if c is not None and c in names]
        try:
            sample = _first_batch(self._files, list(dict.fromkeys(wanted)))
            # a vector column null in the first rows is sized by a scan of that column
            self.mapper = TableMapper(mapping, first.schema_arrow, str(self.parts[0]), sample,
                                      id_kind=id_kind, more=_more_values(self._files),
                                      tidy=True)
        except (OSError, pa.ArrowException) as exc:
            # the first rows are read at open to size the vectors: a corrupt page shows here
            raise InputError(f"cannot decode Parquet data: {exc}",
                             location=Location(str(self.parts[0])),
                             hint="the file may be truncated or corrupt") from exc
        self._rows = sum(pf.metadata.num_rows for pf in self._files)
        manifest = self.mapper.manifest
        manifest.count = self._rows
        recorded = mapping.as_dict()
        if self.mapper.payload_object is not None:
            # as read: a lone payload-named column taken as the payload is recorded too
            recorded["payload_column"] = self.mapper.payload_object
        manifest.source = {"format": "parquet", "location": self.location,
                           "mapping": recorded}
        for warning in (self.mapper.dropped_warning, self.mapper.narrowing_warning):
            if warning is not None:
                self.context.warn(warning)
        self.manifest = manifest
        self.schema = manifest.schema()

    def _open_part(self, i: int) -> Any:
        pf = _open(self.parts[i])
        values, fields = self._hive
        return PartitionedFile(pf, values[i], fields) if fields else pf

    def _check_columns(self, pf: pq.ParquetFile) -> None:
        have = set(pf.schema_arrow.names)
        missing = [f.name for f in self.schema if f.name not in have and f.name != PAYLOAD_COLUMN]
        if missing:
            raise InputError(f"columns named in the manifest are missing: {', '.join(missing)}",
                             location=Location(str(self.parts[0])))

    def count(self) -> int:
        return self._rows

    def partitions(self, target_bytes: int) -> list[dict[str, Any]]:
        """Row groups packed to about ``target_bytes`` (from the footers); foreign files read
        through a mapping (which may reject rows) are packed whole, file by file."""
        if self.mapper is not None:
            out = pack(((pf.metadata.num_rows, _data_bytes(pf)) for pf in self._files),
                       target_bytes)
            bounds = [0, *itertools.accumulate(pf.metadata.num_rows for pf in self._files)]
            for unit in out:
                spec = unit["spec"]
                spec["files"] = [bounds.index(spec["start"]), bounds.index(spec["stop"])]
            return out
        units = ((md.num_rows, md.total_byte_size)
                 for pf in self._files
                 for md in (pf.metadata.row_group(g) for g in range(pf.metadata.num_row_groups)))
        return pack(units, target_bytes)

    def read_partition(self, spec: dict[str, Any], batch_size: int
                       ) -> Iterator[pa.RecordBatch]:
        """The rows of whole row groups ``spec["start"]`` to ``spec["stop"]``, or, for a
        mapping, of files ``spec["files"]`` (numbered as in the whole source)."""
        if self.mapper is not None:
            lo, hi = spec["files"]
            return mapped_batches(self.mapper, self.parts[lo:hi], self._files[lo:hi],
                                  batch_size, 0, self.context, number=int(spec["start"]))
        # rows are counted before the payload check: a rejected row is still one of the
        # partition's, which ends at a row-group boundary of the file
        return self._checked(_take(self._stored(batch_size, int(spec["start"])),
                                   int(spec["stop"]) - int(spec["start"])))

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        """Batches of the stream from stored row ``start``; a row whose payload cell is not a
        JSON object (or null) is rejected through the context (``RecordError`` naming the
        file, row and id), see ``_check_payloads``."""
        if self.mapper is not None:
            yield from mapped_batches(self.mapper, self.parts, self._files, batch_size, start,
                                      self.context)
            return
        yield from self._checked(self._stored(batch_size, start))

    def _stored(self, batch_size: int, start: int
                ) -> Iterator[tuple[pa.RecordBatch, Path, int]]:
        """(batch, its file, its first row in that file) of the stored rows from ``start`` on,
        conformed to the stream schema but not checked."""
        for part, pf in zip(self.parts, self._files, strict=True):
            groups: list[int] = []
            row = 0
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if not groups and start >= n:
                    # whole row group already written by an earlier run; only those before
                    # the first one read: a later, smaller group is not before the start
                    start -= n
                    row += n
                    continue
                groups.append(g)
            if not groups:
                continue
            columns = [f.name for f in self.schema if f.name in pf.schema_arrow.names]
            try:
                for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups,
                                             columns=columns):
                    if start:
                        skip = min(start, batch.num_rows)
                        batch, start, row = batch.slice(skip), start - skip, row + skip
                        if batch.num_rows == 0:
                            continue
                    yield self._conform(batch, part), part, row
                    row += batch.num_rows
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"cannot decode Parquet data: {exc}", location=Location(
                    str(part)), hint="the file may be truncated or corrupt") from exc

    def _checked(self, stored: Iterator[tuple[pa.RecordBatch, Path, int]]
                 ) -> Iterator[pa.RecordBatch]:
        for batch, part, row0 in stored:
            batch = self._check_payloads(batch, part, row0)
            if batch.num_rows:
                yield batch

    def _check_payloads(self, batch: pa.RecordBatch, part: Path, row0: int
                        ) -> pa.RecordBatch:
        """``batch`` (rows ``row0``... of ``part``) without the rows whose payload cell is not
        a JSON object or null, each rejected through the context as a ``RecordError`` naming
        the file, row and id (the text holds NaN or Infinity, is not JSON, or is another JSON
        value); its ``raw`` is the point with the payload as the cell holds it (parsed where
        Python's json reads it, NaN kept, else the text), so a rejects line runs again once
        fixed and is refused again, naming what is wrong, while it is not.

        A file from another tool can hold any text there: written on, it would make a broken
        JSONL line or a payload Qdrant refuses, and ``null`` for NaN would read as a value.
        """
        column = batch.column(PAYLOAD_COLUMN)
        if column.null_count == len(column):
            return batch
        texts = column.to_pylist()
        if _all_objects(texts, column):
            return batch
        where = str(part)

        def locate(i: int) -> Location:
            return Location(source=where, row=row0 + i, point_id=decode_ids(
                batch.column(ID_COLUMN).slice(i, 1), self.manifest.id_kind)[0])

        kept, unparsed, not_object = payload_texts(
            [None if t is None else t.encode() for t in texts], locate, "cell")
        for i in list(unparsed):
            # Text only Python's json reads, bar NaN and Infinity (a lone surrogate escape),
            # was always taken here, as the digest takes it: still a payload if an object.
            try:
                value, constants = loads_with_constants(texts[i].encode())
            except ValueError:
                continue
            if constants:
                continue
            del unparsed[i]
            if type(value) is dict:
                kept[i] = texts[i]
            elif value is not None:
                not_object[i] = RecordError(
                    f"payload must be a JSON object, not {type(value).__name__}",
                    location=locate(i), hint=CELL_HINT)
        index = batch.schema.get_field_index(PAYLOAD_COLUMN)
        field = batch.schema.field(index)
        # a ``null`` text is no payload, as a null cell is
        checked = batch.set_column(index, field, pa.array(kept, type=field.type))
        bad = {**unparsed, **not_object}
        if not bad:
            return checked
        bare = batch.set_column(index, field, pa.nulls(batch.num_rows, field.type))
        for i in sorted(bad):
            error = bad[i]
            point = point_from_row(bare, i, self.manifest)
            point["payload"] = _as_read(texts[i])
            error.raw = point
            self.context.reject(error)
        keep = [i not in bad for i in range(batch.num_rows)]
        return checked.filter(pa.array(keep))

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


def mapped_batches(mapper: TableMapper, parts: list[Path], files: list[pq.ParquetFile],
                   batch_size: int, start: int, context: Context, number: int = 0,
                   ) -> Iterator[pa.RecordBatch]:
    """Stream batches of foreign files through ``mapper``, skipping the first ``start`` rows.

    Rows are numbered across the files in order from ``number`` (ids when there is no id
    column); messages name the file and the row within it. The read ends by warning how many
    float64 values narrowing changed in it.
    """
    for part, pf in zip(parts, files, strict=True):
        total = pf.metadata.num_rows
        if start >= total:
            start -= total
            number += total
            continue
        row = 0
        groups: list[int] = []
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if not groups and start >= n:
                start -= n  # whole row group already written by an earlier run
                row += n
                continue
            groups.append(g)
        columns = [c for c in mapper.columns if c in pf.schema_arrow.names]
        try:
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups,
                                         columns=columns):
                if start:
                    skip = min(start, batch.num_rows)
                    batch, start, row = batch.slice(skip), start - skip, row + skip
                    if batch.num_rows == 0:
                        continue
                out = mapper.convert(batch, row0=row, number0=number + row, source=str(part),
                                     context=context)
                row += batch.num_rows
                if out is not None:
                    yield out
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot decode Parquet data: {exc}", location=Location(
                str(part)), hint="the file may be truncated or corrupt") from exc
        number += total
    if mapper.narrowed:
        # each read (a partition, on a mapper kept for the next) its own count: a partitioned
        # run sums them (``mapping.merge_narrowed``)
        context.warn(narrowed_warning(mapper.narrowed, mapper.narrowed_type))
        mapper.narrowed = 0


class ParquetWriter(ClosingWriter):
    """Writes one Parquet file, or a directory of parts, atomically.

    A location ending in ``/`` or naming an existing directory is written as a directory:
    ``part-00000.parquet`` (``PART_NAME``), and with ``max_part_size`` (bytes, or a size text
    such as ``512MB``) ``part-00001.parquet``, ... once a part is full. Parts are cut at
    row-group boundaries (row groups are capped at a quarter of the part size, batches cut to
    fit), so a part stays close to the size: a row group is moved to a new part when the
    current part would pass the size with it (its compressed size estimated from the part so
    far). Each part carries its own manifest (count and digest) in its metadata, both in the
    key-value entry ``vecferry.manifest`` and in the Arrow schema pyarrow keeps there
    (``ARROW:schema``, whose metadata pyarrow and pandas show), and ``_manifest.json``
    (``converters.parts``) the
    directory's: total count, combined digest and the list of parts. The directory appears
    whole on commit (``AtomicPath``), never part by part.
    """

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, compression: str = "zstd",
                 compression_level: int | None = 1, row_group_bytes: int | None = None,
                 max_part_size: int | str | None = None, distance: str | None = None,
                 **options: Any):
        reject_unknown_options("parquet", options)
        schema = with_distance(schema, distance)
        self.location = location
        self.context = context
        self.manifest = manifest_of(schema)
        self.schema = schema
        directory = location.endswith("/") or output_path(location).is_dir()
        self.max_part_size = parse_part_size(max_part_size)
        if self.max_part_size and not directory:
            raise directory_only("Parquet", location)
        self.out = AtomicPath(location.rstrip("/") or location, overwrite=overwrite,
                              directory=directory)
        self.row_group_bytes = row_group_bytes or ROW_GROUP_BYTES
        if self.max_part_size:
            # a quarter of a part: a part closes when its next row group would not fit, so
            # it ends within a row group of the size (and never past it by more than the
            # estimate of that group's compressed size is off)
            self.row_group_bytes = min(self.row_group_bytes, max(1, self.max_part_size // 4))
        self._writer_kw = dict(
            compression=compression,
            # zstd level 1 compresses float vectors as well as the default level in 2/3 the
            # time. Byte-stream-split was measured too: no smaller on embeddings, and slower.
            compression_level=compression_level if compression == "zstd" else None,
            # Statistics and dictionaries on vector and payload columns cost time and bytes
            # and no reader uses them; ids keep statistics for predicate pushdown.
            write_statistics=[ID_COLUMN],
            use_dictionary=False,
            data_page_size=1 << 20,
        )
        self.digest = StreamDigest(self.manifest)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecferry-parquet")
        self.log = PartLog()
        # bytes a part's footer takes: a fixed share (schema, manifest), guessed until a part
        # was closed and then the largest seen, plus metadata per row group and column
        self._footer = 2 * len(self.manifest.to_json()) + 512
        self._group_meta = 160 * len(schema)
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._writing: Future[None] | None = None
        self.count = 0
        self._writer: pq.ParquetWriter | None = None
        self._open_part()

    def _open_part(self) -> None:
        directory = self.out.directory
        name = PART_NAME.format(len(self.log.parts)) if directory else None
        self.file = self.out.temp / name if name else self.out.temp
        self._part_name = name
        # A directory part is written through a stream whose position says how big it is.
        if directory and isinstance(self.file, Path):
            self._sink: Any = pa.OSFile(str(self.file), "wb")
        elif directory:
            self._sink = arrow_sink(self.file)
        else:
            self._sink = None
        self._writer = pq.ParquetWriter(self._sink if self._sink is not None
                                        else arrow_sink(self.file), self.schema,
                                        **self._writer_kw)
        self._part_digest = StreamDigest(self.manifest)
        self._part_arrow_bytes = 0
        self._groups = 0

    def _tell(self) -> int:
        return int(self._sink.tell()) if self._sink is not None else 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Add ``batch`` to the row groups; a batch larger than the room left in the row
        group being gathered is cut, so a row group holds about ``row_group_bytes`` (at least
        one row), whatever the batch size: a batch was a row group of its own, and a part
        could pass ``max_part_size`` by a whole batch."""
        self.count += batch.num_rows
        per_row = batch.nbytes / max(1, batch.num_rows)
        while batch.num_rows:
            room = self.row_group_bytes - self._pending_bytes
            rows = batch.num_rows if per_row <= 0 else max(1, int(room // per_row))
            head = batch if rows >= batch.num_rows else batch.slice(0, rows)
            batch = batch.slice(head.num_rows)
            self._pending.append(head)
            self._pending_bytes += head.nbytes
            if self._pending_bytes >= self.row_group_bytes:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._wait_writing()
        if self.max_part_size and self._part_digest.count:
            written = self._tell()
            ratio = written / max(1, self._part_arrow_bytes)
            footer = self._footer + self._group_meta * (self._groups + 1)
            if written + table.nbytes * ratio + footer > self.max_part_size:
                self._close_part()
                self._open_part()
        assert self._writer is not None
        # Compression and I/O run without the GIL, while this thread digests the row group and
        # the reader reads the next one: the write is waited for only before the next write
        # (one row group in flight, so memory stays bounded by two of them).
        self._writing = self._io.submit(self._writer.write_table, table,
                                        row_group_size=table.num_rows)
        for batch in self._pending:
            self._part_digest.add(self.digest.update(batch), batch.num_rows)
        self._part_arrow_bytes += table.nbytes
        self._groups += 1
        self._pending, self._pending_bytes = [], 0

    def _wait_writing(self) -> None:
        """Wait for the row group in flight; its write error, if any, is raised here."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _close_part(self) -> None:
        """Finish the current part: its own manifest (count, digest) in its metadata."""
        self._wait_writing()
        assert self._writer is not None
        part = Manifest.from_dict(self.manifest.to_dict())
        part.count = self._part_digest.count
        part.digest = self._part_digest.as_dict()
        text = part.to_json().decode()
        # The Arrow schema pyarrow keeps in the footer (``ARROW:schema``) was taken when the
        # part was opened, its metadata holding the manifest as it was then (no count, no
        # digest), and pyarrow and pandas show that schema's metadata, not the footer's
        # key-value entry: it is written again with the final manifest, as pyarrow writes it.
        final = self.schema.with_metadata({**(self.schema.metadata or {}),
                                           MANIFEST_KEY: text.encode()})
        self._writer.add_key_value_metadata({
            MANIFEST_KEY.decode(): text,
            ARROW_SCHEMA_KEY: base64.b64encode(final.serialize().to_pybytes()).decode()})
        body = self._tell()
        self._writer.close()
        self._writer = None
        size = self._tell()
        fixed = size - body - self._group_meta * self._groups
        self._footer = fixed if not self.log.parts else max(self._footer, fixed)
        if self._sink is not None:
            self._sink.close()
        fsync_path(self.file)
        if self._part_name is not None:
            self.log.add(self._part_name, self._part_digest.count, self._part_digest.total,
                         size)

    def close(self) -> dict[str, Any]:
        self._flush()
        self._io.shutdown()
        self._close_part()
        self.manifest.count = self.count
        self.manifest.digest = self.digest.as_dict()
        report: dict[str, Any] = {}
        if self.out.directory:
            # the directory's manifest: totals summed over the parts' digests
            (self.out.temp / DIR_MANIFEST).write_bytes(self.log.manifest_json(self.manifest))
            if isinstance(self.out.temp, Path):
                fsync_path(self.out.temp / DIR_MANIFEST)
            report = {"bytes_written": self.log.bytes, "parts": len(self.log.parts)}
        self.out.commit()
        if not self.out.directory:
            report = {"bytes_written": output_size(self.out.target)}
        return report

    def abort(self) -> None:
        self._io.shutdown(wait=True)
        # Already failing: a second error from closing must not hide the first.
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(Exception):
            if isinstance(self._sink, pa.NativeFile):
                self._sink.close()  # a remote upload is discarded by the output's abort
        self.out.abort()
