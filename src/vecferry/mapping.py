"""Reading tables and records that vecferry did not write: which column or key is what.

A *mapping* names the id column, the vector columns and the payload columns of a foreign source
(Parquet from an embedding pipeline or a public dataset, a vector-io export, JSONL whose keys are
``embedding`` / ``metadata`` / ``doc_id``). ``Mapping`` is the Parquet side (columns),
``KeyMapping`` the JSONL side (keys); ``suggest_table`` / ``suggest_records`` guess one from a
schema and a few rows (``vecferry inspect`` shows it as CLI flags).

Rules, the same wherever a mapping is used:

* ids: no id column means row numbers (0, 1, ... across all shards). An integer column gives
  ``int`` ids (a negative or null id is a rejected record). A string column gives ``uuid`` ids when
  every id in the first batch is a UUID, else ``string``; a later id that is not a UUID is rejected
  with a hint to pass ``--id-kind string`` (``--id-kind`` forces the kind up front). A
  dictionary-encoded column (a pandas categorical) is read as its values. A
  ``fixed_size_binary(16)`` or Arrow ``uuid`` column gives ``uuid`` ids in canonical text, and
  so does a ``binary`` column whose values are 16 bytes (another length is a rejected record).
  ``suggest_table`` takes such a column for the ids, whatever its name, when no column is
  named like ids.
* vectors: ``--vector-column [NAME=]COLUMN``, repeatable. One vector without a name is the unnamed
  default vector; when several are mapped, an unnamed one is named after its column. A column may
  be ``list``, ``large_list`` or ``fixed_size_list`` of numbers (view types read as these), or
  raw little-endian float32 bytes (``binary``; 4 bytes per value); a list of
  ``fixed_size_list`` of numbers is a multivector. float64 (and integer) values are narrowed to
  float32 and the values that changed are counted in a warning naming the source type; float16
  and uint8 stay as they are. The size comes from the type, or from the first value that is
  neither null nor empty (a reader may scan the column for it). A row of another size, or
  holding NaN, infinity or a null, is a rejected record; a null cell means the point has no
  such vector.
* sparse vectors: ``--sparse-column NAME=COLUMN``, a struct with ``indices`` and ``values`` lists.
* payload: ``--payload-columns a,b,c``, or by default every column not used above (for a
  Parquet file, less pandas' unnamed index, and a lone payload-named column of objects is the
  payload itself: ``TableMapper``'s ``tidy``); ``payload_column`` names a column whose object
  is the payload, as JSONL's ``--payload-key`` names a key. In Parquet a
  null cell leaves its key out of the payload, and a row with no values has no payload; a float
  NaN or infinity (also inside a list or struct) is a rejected record, as JSON cannot hold it;
  ``--json-columns`` names string columns holding JSON text, parsed into their values.
  Values JSON cannot hold are written as text: timestamps, dates and times in ISO 8601 at the
  column's full precision (computed by Arrow, not Python's ``datetime``, which holds neither
  nanoseconds nor years past 9999), decimals as their exact digits, bytes as base64; durations
  are seconds. A map is an object when its keys are strings (a key given twice is a rejected
  record: an object would keep one value), else a list of ``[key, value]`` pairs
  (``column_values``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
import math
import re
import shlex
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecferry.converters.base import REJECT_KEY, Context
from vecferry.errors import InputError, Location, SchemaError, UsageError
from vecferry.fileio import loads_exact
from vecferry.points import dumps_payload
from vecferry.stream import (
    ID_COLUMN,
    ID_KINDS,
    PAYLOAD_COLUMN,
    Manifest,
    VectorSpec,
    is_uuid,
    kind_of_id,
    record_error,
)

#: column / key names taken for ids by ``suggest_*``, best first
ID_NAMES = ("id", "_id", "doc_id", "docid", "document_id", "doc-id", "corpus_id", "corpus-id",
            "point_id", "uuid", "pk", "key")
#: keys of a JSON object taken for its payload by ``suggest_records``
PAYLOAD_NAMES = ("payload", "metadata", "meta", "attributes", "properties", "fields")
_SUGGEST_HINT = "`vecferry inspect FILE` suggests a mapping"
_NARROWED = " value(s) changed when narrowed to float32"
_NARROWED_RE = re.compile(r"(\d+) (.+)" + re.escape(_NARROWED))


def narrowing_warning(source_type: str = "float64") -> str:
    """The warning that vectors of ``source_type`` (``float64``, ``int64``, ``float64 and
    int64``) are narrowed to float32."""
    return (f"{source_type} vectors are narrowed to float32 (Qdrant, FAISS and the stream store "
            "float32); the report counts values that changed")


#: how every ``narrowing_warning`` ends, whatever the source type it names
_NARROWING = narrowing_warning("")


def narrowed_warning(count: int, source_type: str = "float64") -> str:
    """The warning counting values of ``source_type`` that narrowing to float32 changed."""
    return f"{count} {source_type}{_NARROWED}"


def narrowed_values(warnings: list[str], counted: bool = True) -> int | None:
    """The values narrowing to float32 changed, as a run's ``warnings`` count them (the sum
    of its ``narrowed_warning`` counts, every source type's), for its report: readers count
    them in those warnings only (the numpy, Parquet and VDF readers). 0 when the run narrowed
    vectors (``narrowing_warning``) and no count was given, since a reader counts only values
    that changed; None when nothing was narrowed, or when no count was given and the read
    was not ``counted`` whole (one cut short ends before its reader counts)."""
    counts = [int(m[1]) for w in warnings if (m := _NARROWED_RE.fullmatch(w))]
    if counts:
        return sum(counts)
    narrowing = any(w.endswith(_NARROWING) for w in warnings)
    return 0 if narrowing and counted else None


def merge_narrowed(warnings: list[str]) -> list[str]:
    """``warnings`` with their ``narrowed_warning`` counts of one source type summed into one,
    where the first was: a partitioned run gathers one from each partition (two of them may
    say the same count, so each is counted, not each text)."""
    matches = [_NARROWED_RE.fullmatch(w) for w in warnings]
    totals: dict[str, int] = {}
    for m in matches:
        if m:
            totals[m[2]] = totals.get(m[2], 0) + int(m[1])
    out = []
    for w, m in zip(warnings, matches, strict=True):
        if m is None:
            out.append(w)
        elif m[2] in totals:
            out.append(narrowed_warning(totals.pop(m[2]), m[2]))
    return out


def _mark_not_finite(mat: np.ndarray, rows: np.ndarray, label: str, datatype: str,
                     bad: dict[int, tuple[str, str | None]]) -> None:
    """Record in ``bad`` the row (``rows[i]``, the source row of ``mat``'s row i) of each
    vector holding NaN, infinity or a value its datatype's range turned into one."""
    finite = np.isfinite(mat).all(axis=1)
    for r in np.flatnonzero(~finite):
        bad.setdefault(int(rows[r]), (
            f"{label} holds NaN, infinity or a value outside float range",
            f"fix the value: vectors hold finite numbers in the range of {datatype}"))


def _type_name(t: pa.DataType) -> str:
    """A value type as the warnings name it (Arrow calls float64 ``double``)."""
    return {pa.float64(): "float64", pa.float32(): "float32", pa.float16(): "float16"}.get(
        t, str(t))


def _plain_type(t: pa.DataType) -> pa.DataType:
    """The type a view type (``string_view``, ``binary_view``, ``list_view``,
    ``large_list_view``: Arrow's newer layouts, which polars and DuckDB hand over) is read as:
    its plain counterpart, which the id, vector and payload code takes. Other types as they
    are."""
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_list_view(t):
        return pa.list_(t.value_field)
    if pa.types.is_large_list_view(t):
        return pa.large_list(t.value_field)
    return t


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its view types plain (``_plain_type``)."""
    fields = [f.with_type(_plain_type(f.type)) for f in schema]
    if all(f.type == g.type for f, g in zip(fields, schema, strict=True)):
        return schema
    return pa.schema(fields, metadata=schema.metadata)


def plain_array(arr: pa.Array) -> pa.Array:
    """``arr`` in its plain type (``_plain_type``)."""
    t = _plain_type(arr.type)
    if t == arr.type:
        return arr
    if not (pa.types.is_list_view(arr.type) or pa.types.is_large_list_view(arr.type)):
        return arr.cast(t)
    # pyarrow's cast of a list view to a list makes an offsets buffer one entry short (an
    # invalid array): the list is built from the view's lengths and values instead
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(
        np.int64 if pa.types.is_large_list(t) else np.int32)
    kind = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
    return kind.from_arrays(pa.array(offsets), arr.flatten(), type=t,
                            mask=pc.invert(arr.is_valid()))


def plain_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its view-typed columns in their plain types (``_plain_type``)."""
    schema = plain_schema(batch.schema)
    if schema is batch.schema:
        return batch
    return pa.RecordBatch.from_arrays([plain_array(c) for c in batch.columns], schema=schema)


def _split_list(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def _tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def missing_name(kind: str, flag: str, name: str, have: Iterable[str], source: str
                 ) -> UsageError:
    """The error for a mapping naming a column (or key) the source does not have."""
    listed = ", ".join(have) or "none"
    return UsageError(f"{flag} names {kind} {name!r}, which is not there ({kind}s: {listed})",
                      location=Location(source),
                      hint=f"check the spelling; {_SUGGEST_HINT}")


def _vector_pairs(specs: Sequence[str], names: Sequence[str], flag: str, source: str,
                  kind: str, sparse: bool) -> list[tuple[str, str]]:
    """(vector name, column) for each ``[NAME=]COLUMN`` spec; a spec that is a column wins."""
    pairs = []
    for spec in specs:
        if spec in names or "=" not in spec:
            name, col = "", spec
        else:
            name, col = spec.split("=", 1)
        if col not in names:
            raise missing_name(kind, flag, col, names, source)
        pairs.append((name or (col if sparse else ""), col))
    return pairs


def _name_vectors(dense: list[tuple[str, str]], sparse: list[tuple[str, str]], source: str,
                  flags: tuple[str, str], kind: str) -> list[tuple[str, str]]:
    """Give an unnamed vector its column's name when it is not the only vector.

    Raises UsageError when two vectors end up with one name; the hint names ``flags`` (the
    dense and sparse options of this source) and ``kind`` (column or key).
    """
    if len(dense) + len(sparse) > 1:
        dense = [(name or col, col) for name, col in dense]
    names = [n for n, _ in dense + sparse]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"vector name(s) {', '.join(map(repr, repeated))} given twice",
                         location=Location(source),
                         hint=f"name each vector once: {flags[0]} or {flags[1]} "
                              f"NAME={kind.upper()}")
    return dense


# ------------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Mapping:
    """Which columns of a table are the id, the vectors and the payload (Parquet, VDF)."""

    id_column: str | None = None
    vector_columns: tuple[str, ...] = ()
    sparse_columns: tuple[str, ...] = ()
    payload_columns: tuple[str, ...] | None = None
    json_columns: tuple[str, ...] = ()
    #: the column whose object (struct, map with string keys, or JSON text) is the payload
    #: itself, as JSONL's ``--payload-key`` takes a key's object; the other columns are not
    #: read
    payload_column: str | None = None

    @classmethod
    def from_options(cls, *, id_column: str | None = None,
                     vector_column: str | Sequence[str] | None = None,
                     sparse_column: str | Sequence[str] | None = None,
                     payload_columns: str | Sequence[str] | None = None,
                     json_columns: str | Sequence[str] | None = None,
                     payload_column: str | None = None) -> Mapping | None:
        """The mapping the options give, or None when none was given. ``UsageError`` for
        ``payload_column`` beside ``payload_columns`` (the payload is one or the other)."""
        m = cls(id_column=id_column or None, vector_columns=_tuple(vector_column),
                sparse_columns=_tuple(sparse_column),
                payload_columns=_split_list(payload_columns),
                json_columns=_split_list(json_columns) or (),
                payload_column=payload_column or None)
        if m == cls():
            return None
        if m.payload_column is not None and m.payload_columns is not None:
            raise UsageError("payload_column and payload_columns both name the payload",
                             hint="pass payload_column for a column whose object is the "
                                  "payload, or payload_columns for columns that are its keys")
        return m

    def as_dict(self) -> dict[str, Any]:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        if out["payload_column"] is None:
            del out["payload_column"]  # the mapping as recorded before there was one
        return out


@dataclass
class _Dense:
    spec: VectorSpec
    column: str
    binary: bool
    narrow: bool  # values are not float32 / float16 / uint8 and are cast to float32
    source_type: str = "float32"  # the column's value type, as the narrowing warning names it

    @property
    def multi(self) -> bool:
        return self.spec.kind == "multi"


#: further values of a column past a first batch (a reader's bounded scan; ``_first_len``)
MoreValues = Callable[[str], Iterable[pa.Array]]


_NP_TYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


def _dense_layout(name: str, column: str, field: pa.Field, first: pa.RecordBatch | None,
                  source: str, more: MoreValues | None = None) -> _Dense:
    """How column ``column`` holds vector ``name``: dense (a list of numbers, or float32
    bytes) or, for a list of ``fixed_size_list`` of numbers (polars' ``List(Array(Float32,
    n))``), multi. The size comes from a fixed-size type, else from the first value
    (``_first_len``)."""
    t = field.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        size = (t.byte_width if pa.types.is_fixed_size_binary(t)
                else _first_len(column, first, source, more, binary=True))
        if size % 4:
            raise SchemaError(f"column {column!r} holds {size} bytes per row, not a whole number "
                              "of float32 values", location=Location(source),
                              hint="binary vector columns must hold little-endian float32")
        return _Dense(VectorSpec(name, "dense", size // 4, "float32"), column, True, False)
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise SchemaError(f"column {column!r} has type {t}, which is not a vector",
                          location=Location(source),
                          hint="vector columns hold lists of numbers or float32 bytes")
    vt = t.value_type
    kind = "dense"
    if pa.types.is_fixed_size_list(vt) and not pa.types.is_fixed_size_list(t):
        kind, size, vt = "multi", vt.list_size, vt.value_type
    if not (pa.types.is_floating(vt) or pa.types.is_integer(vt)):
        raise SchemaError(f"column {column!r} holds lists of {vt}, not numbers",
                          location=Location(source),
                          hint="vector columns hold lists of numbers or float32 bytes, "
                               "multivectors lists of fixed_size_list of numbers")
    if kind == "dense":
        size = (t.list_size if pa.types.is_fixed_size_list(t)
                else _first_len(column, first, source, more))
    datatype = {pa.float16(): "float16", pa.uint8(): "uint8"}.get(vt, "float32")
    return _Dense(VectorSpec(name, kind, size, datatype), column, False,
                  datatype == "float32" and vt != pa.float32(), _type_name(vt))


def _first_len(column: str, first: pa.RecordBatch | None, source: str,
               more: MoreValues | None = None, binary: bool = False) -> int:
    """The length of the first value of ``column`` that is neither null nor empty: in the
    ``first`` batch, else in the values ``more`` hands over (a reader's scan of the rest of
    the column, a batch at a time, so memory stays bounded; it stops at the first value).
    ``InputError`` when there is none: a variable-length column gives its size only by a
    value."""
    def arrays() -> Iterable[pa.Array]:
        if first is not None:
            yield first.column(column)
        if more is not None:
            yield from more(column)

    for col in arrays():
        col = plain_array(col)
        lengths = (pc.binary_length(col) if binary else pc.list_value_length(col)).fill_null(0)
        hit = pc.index(pc.greater(lengths, 0), True).as_py()
        if hit >= 0:
            return int(lengths[hit].as_py())
    rows = "any row" if more is not None else "the first rows"
    raise InputError(f"column {column!r} holds no vector in {rows} (every cell is null or "
                     "empty), so its vector size is unknown", location=Location(source),
                     hint="write the column as fixed_size_list<float32>[size] (its type then "
                          "gives the size), or leave it out of --vector-column if it holds no "
                          "vectors")


def _is_uuid_type(t: pa.DataType) -> bool:
    """Arrow's ``uuid`` extension type, or the 16 bytes it is stored as (how a reader without
    the extension, or Spark / DuckDB, hands over a Parquet UUID column)."""
    return (getattr(t, "extension_name", None) == "arrow.uuid"
            or (pa.types.is_fixed_size_binary(t) and t.byte_width == 16))


def id_type_kind(t: pa.DataType) -> str | None:
    """'int', 'text' or 'uuid' for a column type that can hold ids; None for any other type.

    A dictionary (pandas writes categoricals so) is judged by its values: they are what
    ``to_pylist`` hands over.
    """
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if _is_uuid_type(t):
        return "uuid"
    return None


def _is_bytes_type(t: pa.DataType) -> bool:
    """``binary`` / ``large_binary``: as an id column, UUIDs of 16 bytes each (pandas and Polars
    write a column of ``uuid.bytes`` so)."""
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _all_sixteen_bytes(col: pa.Array) -> bool:
    """Whether a binary column holds a value, and each of its values is 16 bytes long."""
    lengths = pc.binary_length(col).drop_null()
    return len(lengths) > 0 and pc.all(pc.equal(lengths, 16)).as_py()


def _id_values(col: pa.Array) -> list[Any]:
    """The ids of a column as Python values; UUID columns as canonical UUID text. A binary
    value that is not 16 bytes long (refused by ``TableMapper._ids``) is its base64 text, as
    a rejects line and a message can show it."""
    values = col.to_pylist()
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if _is_uuid_type(t) or _is_bytes_type(col.type):
        return [None if v is None else str(v) if isinstance(v, uuid.UUID)
                else str(uuid.UUID(bytes=v)) if len(v) == 16 else base64.b64encode(v).decode()
                for v in values]
    return values


def _sparse_ok(t: pa.DataType) -> bool:
    if not pa.types.is_struct(t):
        return False
    fields = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
    return set(fields) == {"indices", "values"} and all(
        pa.types.is_list(f) or pa.types.is_large_list(f) for f in fields.values())


class TableMapper:
    """Turns batches of a foreign table into point-stream batches, by a ``Mapping``.

    Built from the first file's schema and first batch (vector sizes, id kind); ``convert`` takes
    a batch of any file with the same columns. Bad rows go to ``context.reject`` with file, row
    and column, and are left out of the batch. View types (``string_view``, ``list_view``, ...)
    are read as their plain types.

    ``more`` hands over further values of a vector column whose first batch holds none, to
    size it (``_first_len``). ``tidy`` (a foreign Parquet file; not a VDF export, whose
    columns are the payload keys an exporter wrote, to be kept as they are) shapes the default
    payload as the table's writer meant it: pandas' unnamed index columns
    (``__index_level_0__``, named in the schema's ``pandas`` metadata) are left out
    (``dropped``; the reader warns), and a lone payload column named like a payload
    (``PAYLOAD_NAMES``) holding objects (a struct, a map with string keys, JSON text in
    ``json_columns``) is the payload itself, not a key of it (``payload_object``), as
    ``suggest_records`` takes such a JSONL key.
    """

    def __init__(self, mapping: Mapping, schema: pa.Schema, source: str,
                 first: pa.RecordBatch | None, *, id_kind: str | None = None,
                 manifest: Manifest | None = None, flag: str = "--{}-column",
                 more: MoreValues | None = None, tidy: bool = False):
        self.mapping = mapping
        self.source = source
        schema = plain_schema(schema)
        first = None if first is None else plain_batch(first)
        names = schema.names
        flags = {k: flag.format(k) for k in ("id", "vector", "sparse", "payload", "json")}
        if flag == "--{}-column":
            flags["payload"], flags["json"] = "--payload-columns", "--json-columns"
        flags["object"] = "--payload-column"
        if mapping.id_column is not None and mapping.id_column not in names:
            raise missing_name("column", flags["id"], mapping.id_column, names, source)
        if not mapping.vector_columns and not mapping.sparse_columns:
            raise UsageError("the mapping names no vector column", location=Location(source),
                             hint=f"pass {flags['vector']} [NAME=]COLUMN; {_SUGGEST_HINT}")
        dense = _vector_pairs(mapping.vector_columns, names, flags["vector"], source, "column",
                              sparse=False)
        sparse = _vector_pairs(mapping.sparse_columns, names, flags["sparse"], source, "column",
                               sparse=True)
        dense = _name_vectors(dense, sparse, source, (flags["vector"], flags["sparse"]),
                              "column")
        self.dense = [_dense_layout(n, c, schema.field(c), first, source, more)
                      for n, c in dense]
        self.sparse: list[tuple[VectorSpec, str]] = []
        for name, col in sparse:
            if not _sparse_ok(schema.field(col).type):
                raise SchemaError(f"column {col!r} has type {schema.field(col).type}, not a "
                                  "sparse vector", location=Location(source),
                                  hint="sparse columns are struct<indices: list, values: list>")
            self.sparse.append((VectorSpec(name, "sparse"), col))
        used = {mapping.id_column} | {c for _, c in dense} | {c for _, c in sparse}
        #: pandas' unnamed index columns left out of the default payload (``tidy``)
        self.dropped: list[str] = []
        #: the column whose object is the payload itself, if one is
        self.payload_object: str | None = None
        json_columns = set(mapping.json_columns)
        if mapping.payload_column is not None:
            col = mapping.payload_column
            if col not in names:
                raise missing_name("column", flags["object"], col, names, source)
            t = schema.field(col).type
            if not _holds_objects(t):
                raise SchemaError(f"column {col!r} has type {t}, which holds no JSON object to "
                                  "be the payload", location=Location(source),
                                  hint=f"{flags['object']} takes a struct, a map with string "
                                       f"keys or JSON text; {flags['payload']} keeps columns "
                                       "as keys of the payload")
            self.payload = [col]
            self.payload_object = col
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                json_columns.add(col)  # the text of an object: JSON, or refused by row
        elif mapping.payload_columns is None:
            self.payload = [n for n in names if n not in used]
            if tidy:
                self.dropped = [n for n in pandas_index_columns(schema) if n in self.payload]
                self.payload = [n for n in self.payload if n not in self.dropped]
                if len(self.payload) == 1 and is_payload_object(
                        schema.field(self.payload[0]), self.payload[0] in json_columns):
                    self.payload_object = self.payload[0]
        else:
            for col in mapping.payload_columns:
                if col not in names:
                    raise missing_name("column", flags["payload"], col, names, source)
            self.payload = list(mapping.payload_columns)
        for col in mapping.json_columns:
            if col not in names:
                raise missing_name("column", flags["json"], col, names, source)
            if col not in self.payload:
                raise UsageError(f"{flags['json']} names {col!r}, which is not a payload column",
                                 location=Location(source))
        self.json = json_columns
        self.columns = [c for c in names if c in used or c in self.payload]
        self.id_type = None if mapping.id_column is None else schema.field(mapping.id_column).type
        kind = self._id_kind(first, id_kind)
        vectors = [d.spec for d in self.dense] + [s for s, _ in self.sparse]
        if manifest is not None:
            # A manifest the writer left (a vecferry VDF export) knows datatypes and the id kind.
            known = {v.name: v for v in manifest.vectors}
            for d in self.dense:
                if d.spec.name in known:
                    d.spec = known[d.spec.name]
            vectors = [known.get(v.name, v) for v in vectors]
            kind = manifest.id_kind if id_kind is None else kind
        self.manifest = Manifest(vectors=vectors, id_kind=kind)
        self.narrowed = 0
        self.narrowing = any(d.narrow for d in self.dense)
        #: the value types narrowing changes, as the warnings name them (``int64``, ...)
        self.narrowed_type = " and ".join(dict.fromkeys(d.source_type for d in self.dense
                                                        if d.narrow))

    @property
    def narrowing_warning(self) -> str | None:
        """The warning that vectors are narrowed to float32, naming their source type."""
        return narrowing_warning(self.narrowed_type) if self.narrowing else None

    @property
    def dropped_warning(self) -> str | None:
        """The warning naming pandas' index columns left out of the payload (``tidy``)."""
        if not self.dropped:
            return None
        names = ", ".join(map(repr, self.dropped))
        return (f"column(s) {names} left out of the payload: pandas' unnamed row index "
                "(DataFrame.to_parquet writes it when the index is not a plain range), not "
                "data; name it in --payload-columns to keep it")

    def _id_kind(self, first: pa.RecordBatch | None, forced: str | None) -> str:
        t = self.id_type
        if forced is not None and forced not in ID_KINDS:
            raise UsageError(f"unknown id kind {forced!r}", hint=f"one of {', '.join(ID_KINDS)}")
        if t is None:
            if forced not in (None, "int"):
                raise UsageError("ids are row numbers (no id column), so the id kind is int",
                                 location=Location(self.source))
            return "int"
        what = id_type_kind(t)
        if what is None and _is_bytes_type(t):
            # The column was named for the ids: UUID bytes unless none of the first values
            # has their length (one that has another is a rejected record, by its row)
            lengths = ([] if first is None else
                       pc.binary_length(first.column(self.mapping.id_column)).drop_null()
                       .to_pylist())
            if lengths and 16 not in lengths:
                shown = ", ".join(map(str, sorted(set(lengths))))
                raise SchemaError(
                    f"id column {self.mapping.id_column!r} has type {t}, and none of its first "
                    f"values is 16 bytes long (lengths: {shown}); binary ids are read as "
                    "16-byte UUIDs", location=Location(self.source),
                    hint="map another id column, or leave --id-column out to number rows")
            what = "uuid"
        if what == "int":
            return forced or "int"
        if what == "uuid":
            if forced == "int":
                raise UsageError(f"id column {self.mapping.id_column!r} holds UUIDs ({t}), so "
                                 "--id-kind int does not apply", location=Location(self.source),
                                 hint="leave --id-kind out, or pass --id-kind string")
            return forced or "uuid"
        if what == "text":
            if forced is not None:
                return forced
            if first is None:
                return "string"
            values = [v for v in first.column(self.mapping.id_column).to_pylist() if v]
            return "uuid" if values and all(is_uuid(v) for v in values) else "string"
        raise SchemaError(f"id column {self.mapping.id_column!r} has type {t}; ids are integers "
                          "or strings", location=Location(self.source),
                          hint="map another id column, or leave --id-column out to number rows")

    # -- conversion ------------------------------------------------------------------------

    def convert(self, batch: pa.RecordBatch, *, row0: int, number0: int, source: str,
                context: Context) -> pa.RecordBatch | None:
        """One stream batch from ``batch``: ``row0`` is its first row in ``source`` (for
        messages), ``number0`` its first row in the whole input (ids when there is no id
        column). None when every row was rejected."""
        batch = plain_batch(batch)
        n = batch.num_rows
        bad: dict[int, tuple[str, str | None]] = {}
        schema = self.manifest.schema()
        columns: dict[str, pa.Array] = {}
        ids, id_values = self._ids(batch, number0, bad)
        columns[ID_COLUMN] = ids
        for d in self.dense:
            columns[d.spec.column] = self._dense(batch.column(d.column), d, bad)
        for spec, col in self.sparse:
            columns[spec.column] = self._sparse(batch.column(col), spec, col, source, bad)
        columns[PAYLOAD_COLUMN] = self._payload(batch, bad)
        if not self.manifest.vectors_optional:
            # the unnamed vector is every point's (Qdrant's rule; named ones are optional)
            present = np.zeros(n, dtype=bool)
            for spec in self.manifest.vectors:
                present |= columns[spec.column].is_valid().to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(~present):
                bad.setdefault(int(i), ("point has no vector (every vector cell is null)", None))
        out = pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)
        if not bad:
            return out
        for i in sorted(bad):
            message, hint = bad[i]
            raw = self._rejected_row(batch, i)
            if self.mapping.id_column is not None:
                # the id as it was read (a UUID column's canonical text, not base64 of its
                # bytes), so a fixed rejects file converts again with the same ids
                raw[self.mapping.id_column] = id_values[i]
            context.reject(record_error(
                message, source=source, row=row0 + i, hint=hint,
                point_id=id_values[i], raw=raw))
        keep = np.ones(n, dtype=bool)
        keep[list(bad)] = False
        out = out.filter(pa.array(keep))
        return out if out.num_rows else None

    def _rejected_row(self, batch: pa.RecordBatch, i: int) -> dict[str, Any]:
        """Row ``i`` of ``batch`` as its rejects-file line holds it: column -> JSON value.

        The line is meant to be fixed and read again as JSONL with the matching key mapping
        (``--id-key`` / ``--vector-key`` for ``--id-column`` / ``--vector-column``), whose
        default payload is every other key. So the payload columns come as a good row's payload
        has them: a null cell is left out, a JSON column's text that parses is its value (text
        that does not parse stays text, as the reason names it). A binary vector cell whose
        length is a whole number of float32 values is its list of numbers, since base64 could
        not be read back as a vector. NaN and infinities are written as they are (``NaN``,
        ``Infinity``), so a re-run left unfixed names them instead of taking null for them.
        """
        one = batch.slice(i, 1)
        row = {name: column_values(one.column(name))[0] for name in one.schema.names}
        binary = {d.column for d in self.dense if d.binary}
        out: dict[str, Any] = {}
        for key, value in row.items():
            if value is None and key in self.payload:
                continue
            if key in self.json and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = loads_exact(value.encode())
            elif key in binary and isinstance(value, bytes) and len(value) % 4 == 0:
                value = np.frombuffer(value, dtype="<f4").tolist()
            out[key] = jsonable(value, keep_non_finite=True)
        return out

    def _ids(self, batch: pa.RecordBatch, number0: int, bad: dict[int, tuple[str, str | None]]
             ) -> tuple[pa.Array, Sequence[Any]]:
        n = batch.num_rows
        kind = self.manifest.id_kind
        if self.mapping.id_column is None:
            numbers = np.arange(number0, number0 + n, dtype=np.uint64)
            return pa.array(numbers), range(number0, number0 + n)
        col = batch.column(self.mapping.id_column)
        values = _id_values(col)
        lengths = (pc.binary_length(col).to_pylist() if _is_bytes_type(col.type)
                   else [16] * n)
        out: list[Any] = []
        for i, v in enumerate(values):
            if v is None:
                bad[i] = (f"id column {self.mapping.id_column!r} is null", None)
                out.append(0 if kind == "int" else "")
                continue
            if lengths[i] != 16:
                bad[i] = (f"id column {self.mapping.id_column!r} holds {lengths[i]} bytes, not "
                          "a 16-byte UUID", "binary ids are read as UUIDs: fix the value, or "
                          "map another id column")
                out.append("")
                continue
            try:
                got = kind_of_id(v)
            except ValueError as exc:
                bad[i] = (str(exc), None)
                out.append(0 if kind == "int" else "")
                continue
            if kind == "uuid" and got != "uuid":
                bad[i] = (f"id {v!r} is not a UUID but the ids of the first rows are UUIDs",
                          "pass --id-kind string to read every string id as it is")
            elif kind == "int" and got != "int":
                bad[i] = (f"id {v!r} is a string but the id kind is int", None)
                v = 0
            elif kind != "int" and not isinstance(v, str):
                v = str(v)
            out.append(v)
        return pa.array(out, type=pa.uint64() if kind == "int" else pa.string()), values

    def _dense(self, col: pa.Array, d: _Dense, bad: dict[int, tuple[str, str | None]]
               ) -> pa.Array:
        if d.multi:
            return self._multi(col, d, bad)
        spec = d.spec
        size = spec.size or 0
        label = _label(d)
        n = len(col)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        if d.binary:
            lengths = pc.binary_length(col).fill_null(0).to_numpy(zero_copy_only=False)
            ok = valid & (lengths == size * 4)
            for i in np.flatnonzero(valid & ~ok):
                bad.setdefault(int(i), (f"{label} holds {lengths[i]} bytes, expected {size * 4} "
                                        f"({size} float32 values)", None))
            good = col.filter(pa.array(ok)).cast(pa.large_binary())
            offsets = np.frombuffer(good.buffers()[1], dtype=np.int64)[
                good.offset:good.offset + len(good) + 1]
            data = good.buffers()[2]
            flat = (np.frombuffer(data, dtype="<f4", count=(offsets[-1] - offsets[0]) // 4,
                                  offset=int(offsets[0])) if len(good) else
                    np.empty(0, np.float32)).astype(np.float32)
        else:
            if pa.types.is_fixed_size_list(col.type):
                lengths = np.full(n, size)
            else:
                lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
            ok = valid & (lengths == size)
            for i in np.flatnonzero(valid & ~ok):
                bad.setdefault(int(i), (f"{label} has {lengths[i]} dimensions, expected {size}",
                                        None))
            good = col.filter(pa.array(ok))
            values = good.flatten()
            if values.null_count:
                holes = ~values.is_valid().to_numpy(zero_copy_only=False).reshape(-1, size)
                rows = np.flatnonzero(ok)
                for r in np.flatnonzero(holes.any(axis=1)):
                    bad.setdefault(int(rows[r]), (f"{label} holds a null value", None))
                values = values.fill_null(0)
            flat = values.to_numpy(zero_copy_only=False)
        flat = self._as_datatype(flat, d)
        mat = flat.reshape(-1, size)
        if spec.datatype != "uint8" and len(mat):
            _mark_not_finite(mat, np.flatnonzero(ok), label, spec.datatype, bad)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), size)
        if ok.all():
            return inner
        take = np.full(n, -1, dtype=np.int64)
        take[ok] = np.arange(int(ok.sum()))
        return inner.take(pa.array(take, mask=take < 0))

    def _as_datatype(self, flat: np.ndarray, d: _Dense) -> np.ndarray:
        """``flat`` values as the vector's datatype, counting those narrowing changed."""
        target = _NP_TYPES[d.spec.datatype]
        if flat.dtype == target:
            return flat
        with np.errstate(over="ignore", invalid="ignore"):
            cast = flat.astype(target)
        if d.narrow:
            same = (cast.astype(np.float64) == flat) | (np.isnan(flat) & np.isnan(cast))
            self.narrowed += int(np.count_nonzero(~same))
        return cast

    def _multi(self, col: pa.Array, d: _Dense, bad: dict[int, tuple[str, str | None]]
               ) -> pa.Array:
        """A multivector column (a list of ``fixed_size_list``) as the stream's
        ``list<fixed_size_list<float32>>``. A row holding no sub-vector, a null sub-vector, a
        null value, NaN or infinity is recorded in ``bad`` (a null cell is no vector)."""
        spec = d.spec
        size = spec.size or 0
        label = _label(d)
        n = len(col)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        counts = pc.list_value_length(col).fill_null(0).to_numpy(
            zero_copy_only=False).astype(np.int64)
        for i in np.flatnonzero(valid & (counts == 0)):
            bad.setdefault(int(i), (f"{label} holds no sub-vector (a multivector holds at "
                                    "least one)", None))
        ok = valid & (counts > 0)
        subs = col.filter(pa.array(ok)).flatten()
        owner = np.repeat(np.flatnonzero(ok), counts[ok])  # the row of each sub-vector
        for r in np.flatnonzero(~subs.is_valid().to_numpy(zero_copy_only=False)):
            bad.setdefault(int(owner[r]), (f"{label} holds a null sub-vector", None))
        # ``values``, not ``flatten()``: a null sub-vector keeps its slots, so rows stay aligned
        values = subs.values.slice(subs.offset * size, len(subs) * size)
        if values.null_count:
            holes = ~values.is_valid().to_numpy(zero_copy_only=False).reshape(-1, size)
            for r in np.flatnonzero(holes.any(axis=1)):
                bad.setdefault(int(owner[r]), (f"{label} holds a null value", None))
            values = values.fill_null(0)
        flat = self._as_datatype(values.to_numpy(zero_copy_only=False), d)
        if spec.datatype != "uint8" and len(flat):
            _mark_not_finite(flat.reshape(-1, size), owner, label, spec.datatype, bad)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), size)
        offsets = np.concatenate([[0], np.cumsum(counts[ok])]).astype(np.int32)
        outer = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner).cast(
            spec.arrow_type())
        if ok.all():
            return outer
        take = np.full(n, -1, dtype=np.int64)
        take[ok] = np.arange(int(ok.sum()))
        return outer.take(pa.array(take, mask=take < 0))

    def _sparse(self, col: pa.Array, spec: VectorSpec, name: str, source: str,
                bad: dict[int, tuple[str, str | None]]) -> pa.Array:
        try:
            out = col.cast(spec.arrow_type())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"sparse column {name!r} cannot be read as uint32 indices and "
                              f"float32 values: {exc}", location=Location(source),
                              hint="indices must be integers in 0..2^32-1") from exc
        idx = pc.list_value_length(out.field("indices")).fill_null(0).to_numpy(
            zero_copy_only=False)
        val = pc.list_value_length(out.field("values")).fill_null(0).to_numpy(
            zero_copy_only=False)
        for i in np.flatnonzero(idx != val):
            bad.setdefault(int(i), (f"sparse vector {spec.name!r} (column {name!r}) has "
                                    f"{idx[i]} indices but {val[i]} values", None))
        return out

    def _payload(self, batch: pa.RecordBatch, bad: dict[int, tuple[str, str | None]]
                 ) -> pa.Array:
        return payload_texts(batch, self.payload, self.json, bad, whole=self.payload_object)


def _label(d: _Dense) -> str:
    """How messages name a mapped vector."""
    return (f"vector {d.spec.name!r} (column {d.column!r})" if d.spec.name
            else f"vector (column {d.column!r})")


def _holds_objects(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` can hold one JSON object a row."""
    return (pa.types.is_struct(t) or _is_text_map(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t))


def is_payload_object(field: pa.Field, json_text: bool) -> bool:
    """Whether ``field`` is a column whose objects are a payload each: named like a payload
    (``PAYLOAD_NAMES``) and holding a struct, a map with string keys, or JSON text
    (``json_text``: a column read as JSON)."""
    t = field.type
    if field.name.lower() not in PAYLOAD_NAMES:
        return False
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return json_text
    return _holds_objects(t)


#: the names pandas gives index levels without a name when it writes them as columns
_PANDAS_UNNAMED = re.compile(r"__index_level_\d+__")


def pandas_index_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` that hold pandas' unnamed index (``__index_level_0__``), as
    the ``pandas`` metadata ``DataFrame.to_parquet`` writes names them.

    A RangeIndex is written as metadata only (no column); an index of other labels becomes a
    column. An unnamed one is row labels pandas kept (after a filter, a concat), not data; a
    named index (``df.set_index("doc_id")``) is a column the user named and stays one.
    """
    raw = (schema.metadata or {}).get(b"pandas")
    if not raw:
        return []
    try:
        meta = json.loads(raw)
    except ValueError:
        return []
    listed = meta.get("index_columns") if isinstance(meta, dict) else None
    if not isinstance(listed, list):
        return []
    return [c for c in listed if isinstance(c, str) and _PANDAS_UNNAMED.fullmatch(c)
            and c in schema.names]


def payload_texts(batch: pa.RecordBatch, columns: Sequence[str], json_columns: Iterable[str] = (),
                  bad: dict[int, tuple[str, str | None]] | None = None, *,
                  whole: str | None = None) -> pa.Array:
    """The payload column (JSON text) of ``columns`` of ``batch``, by the module's rules.

    A value of a JSON column that does not parse, or a float NaN or infinity (JSON cannot hold
    them; inside lists and structs too), is recorded in ``bad`` (row -> reason, hint); without
    ``bad`` a JSON column that does not parse raises ``ValueError``, and a float NaN at the top
    of a cell leaves its key out (other non-finite floats become null).

    ``whole`` names a column (the only one in ``columns``) whose object is the payload itself
    rather than a key of it: a struct's null fields are left out, as null cells are; a value
    that is not an object (JSON text of a list, say) is recorded in ``bad``.
    """
    if not columns:
        return pa.nulls(batch.num_rows, pa.string())
    json_set = set(json_columns)
    # only columns with a float somewhere in their type are walked for NaN and infinity, and
    # only those with a string-keyed map for a key given twice
    floats = {c for c in columns if holds_floats(batch.schema.field(c).type)}
    maps = {c for c in columns if _holds(batch.schema.field(c).type, _is_text_map)}
    names = list(columns)
    cells = [column_values(batch.column(c)) for c in names]
    texts: list[str | None] = []
    for i, values in enumerate(zip(*cells, strict=True)):
        payload: dict[str, Any] = {}
        for key, value in zip(names, values, strict=True):
            if value is None:
                continue
            if key in maps:
                found = repeated_key(value, "")
                if found is not None and bad is not None:
                    name, path = found
                    at = f" at {path}" if path else ""
                    bad.setdefault(i, (f"column {key!r} holds a map with the key {name!r} more "
                                       f"than once{at}, which a JSON object cannot hold",
                                       f"keep each key once in the map, or leave {key!r} out "
                                       "with --payload-columns"))
                    continue
            if key in floats:
                found = non_finite(value, "")
                if found is not None and bad is not None:
                    name, path = found
                    at = f" at {path}" if path else ""
                    bad.setdefault(i, (f"column {key!r} holds {name}{at}, which JSON cannot "
                                       "hold", f"write null for a missing value, or leave "
                                       f"{key!r} out with --payload-columns"))
                    continue
                if isinstance(value, float) and math.isnan(value):
                    continue
            if key in json_set and isinstance(value, str):
                try:
                    value = loads_exact(value.encode())
                except ValueError as exc:
                    if bad is None:
                        raise
                    bad.setdefault(i, (f"column {key!r} does not hold valid JSON: {exc}",
                                       f"leave {key!r} out of --json-columns to keep it "
                                       "as text"))
                    continue
            if key == whole:
                if not isinstance(value, dict):
                    if value is not None and bad is not None:
                        bad.setdefault(i, (f"column {key!r} holds {_json_kind(value)}, not an "
                                           "object, so it cannot be the payload",
                                           f"write an object (or null) in {key!r}"))
                    continue
                struct = pa.types.is_struct(batch.schema.field(key).type)
                payload.update({str(k): jsonable(v) for k, v in value.items()
                                if not (struct and v is None)})
                continue
            payload[key] = jsonable(value)
        texts.append(dumps_payload(payload) if payload else None)
    return pa.array(texts, type=pa.string())


def _json_kind(value: Any) -> str:
    """What a JSON value is, as a message names it (``a list``, ``a number``)."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def holds_floats(t: pa.DataType) -> bool:
    """Whether values of type ``t`` can hold a float (at the top or nested)."""
    if pa.types.is_floating(t):
        return True
    if pa.types.is_dictionary(t):
        return holds_floats(t.value_type)
    if isinstance(t, pa.BaseExtensionType):
        return holds_floats(t.storage_type)
    return any(holds_floats(t.field(i).type) for i in range(t.num_fields))


T = TypeVar("T")


def find_first(value: Any, found: Callable[[Any, str], T | None], path: str = "",
               key: Callable[[str, str], T | None] | None = None) -> T | None:
    """The first answer of ``found(item, its path)`` that is not None, asked of ``value`` and,
    depth first in order, of every item of its objects and lists (a container before its
    items); ``key``, when given, is asked of each object key with the path it names. Paths
    read ``a.b[2]``. None when nothing answers."""
    hit = found(value, path)
    if hit is not None:
        return hit
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if key is not None and (hit := key(k, sub)) is not None:
                return hit
            if (hit := find_first(v, found, sub, key)) is not None:
                return hit
    elif isinstance(value, (list, tuple)):
        for j, v in enumerate(value):
            if (hit := find_first(v, found, f"{path}[{j}]", key)) is not None:
                return hit
    return None


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (half of a UTF-16 pair), which has no UTF-8:
    SQLite, Arrow and the output files all need UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def surrogate_at(value: Any, path: str = "", *, key_repr: bool = True) -> str | None:
    """Path (``text``, ``metadata.a[2]``) of the first text or key in ``value`` holding a lone
    surrogate, else None; a key is shown as its repr, which shows the surrogate (the path
    through it with ``key_repr=False``)."""
    return find_first(
        value, lambda v, at: at if isinstance(v, str) and has_surrogate(v) else None, path,
        key=lambda k, at: (at[:len(at) - len(k)] + repr(k) if key_repr else at)
        if isinstance(k, str) and has_surrogate(k) else None)


def non_finite(value: Any, path: str = "") -> tuple[str, str] | None:
    """(``NaN`` / ``Infinity`` / ``-Infinity``, its path such as ``a.b[2]``) for the first float
    in ``value`` JSON cannot hold (numpy values and arrays included); None when there is
    none."""
    return find_first(value, _non_finite_here, path)


def _non_finite_here(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return ("NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"), path
    if not isinstance(value, (dict, list, tuple)) and getattr(
            getattr(value, "dtype", None), "kind", "") in ("f", "c", "O"):
        return non_finite(value.tolist(), path)  # numpy, as the values JSON would get
    return None


class RepeatedKeys(list):  # type: ignore[type-arg]
    """A string-keyed Arrow map that holds a key more than once, as its ``[key, value]`` pairs
    (all of them: merged into an object, the later value would replace the earlier unseen);
    ``key`` is the first key met again. A payload refuses it (``repeated_key``), a rejects line
    keeps it as the pairs."""

    def __init__(self, pairs: list[list[Any]], key: str):
        super().__init__(pairs)
        self.key = key


def repeated_key(value: Any, path: str = "") -> tuple[str, str] | None:
    """(the key, its map's path such as ``a.b[2]``) of the first map in ``value`` holding a key
    twice (a ``RepeatedKeys`` from ``column_values``); None when there is none."""
    return find_first(value, lambda v, p: (v.key, p) if isinstance(v, RepeatedKeys) else None,
                      path)


def _holds(t: pa.DataType, test: Any) -> bool:
    """Whether ``test`` holds for ``t`` or a type nested in it."""
    if test(t):
        return True
    if pa.types.is_dictionary(t):
        return _holds(t.value_type, test)
    if isinstance(t, pa.BaseExtensionType):
        return _holds(t.storage_type, test)
    return any(_holds(t.field(i).type, test) for i in range(t.num_fields))


def _is_text_map(t: pa.DataType) -> bool:
    return pa.types.is_map(t) and (pa.types.is_string(t.key_type)
                                   or pa.types.is_large_string(t.key_type))


def _needs_walk(t: pa.DataType) -> bool:
    # Python's datetime holds neither nanoseconds nor years past 9999 (pyarrow then raises, or
    # imports pandas), and a map comes out of ``to_pylist`` as pairs whose shape depends on
    # its keys: such values are converted from Arrow, everything else by ``to_pylist``
    return pa.types.is_temporal(t) or pa.types.is_map(t)


def column_values(arr: pa.Array) -> list[Any]:
    """The values of ``arr`` as Python values JSON can hold (``jsonable`` finishes bytes,
    decimals and UUIDs), read from Arrow without Python's ``datetime``.

    * timestamps, dates and times: ISO 8601 text at the column's full precision
      (``2020-01-01T00:00:00.123456789``); the fraction is left out when it is zero, a zoned
      timestamp carries its offset (``+05:30``, UTC ``+00:00``), and a year past 9999 its sign
      (``+10000-01-01``). Beyond the years -32767..32767 a zoned timestamp is written in UTC.
    * durations: seconds, a number (the nearest double of the exact count).
    * maps: an object when the keys are strings (an empty map ``{}``); a map holding a string
      key twice is a ``RepeatedKeys`` (see there). Maps with other keys (numbers, ...) are
      lists of ``[key, value]`` pairs, empty or not, as JSON objects have string keys only.
    """
    t = arr.type
    if not _holds(t, _needs_walk):
        return arr.to_pylist()
    if pa.types.is_dictionary(t):
        return column_values(arr.dictionary_decode())
    if isinstance(t, pa.BaseExtensionType):
        return column_values(arr.storage)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _instant_texts(arr)
    if pa.types.is_time(t):
        return _texts(arr.cast(pa.string()))
    if pa.types.is_duration(t):
        per = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[t.unit]
        # Python divides integers to the nearest double: the count itself is exact
        return [None if v is None else v / per for v in arr.cast(pa.int64()).to_pylist()]
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        fields = [column_values(arr.field(i)) for i in range(t.num_fields)]
        return [dict(zip(names, row, strict=True)) if ok else None
                for ok, row in zip(valid, zip(*fields, strict=True), strict=True)] \
            if fields else [{} if ok else None for ok in valid]
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        values = column_values(arr.values.slice(arr.offset * size, len(arr) * size))
        return [values[i * size:(i + 1) * size] if ok else None for i, ok in enumerate(valid)]
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        arr = arr.cast(pa.large_list(t.value_field))
    # list, large_list and map share the layout: offsets into one child array
    offsets = arr.offsets.to_numpy(zero_copy_only=False)
    lo = int(offsets[0]) if len(offsets) else 0
    child = arr.values.slice(lo, int(offsets[-1]) - lo if len(offsets) else 0)
    bounds = (offsets - lo).tolist()
    if not pa.types.is_map(t):
        values = column_values(child)
        return [values[bounds[i]:bounds[i + 1]] if ok else None for i, ok in enumerate(valid)]
    keys, items = column_values(child.field(0)), column_values(child.field(1))
    out: list[Any] = []
    for i, ok in enumerate(valid):
        if not ok:
            out.append(None)
            continue
        pairs = [[k, v] for k, v in zip(keys[bounds[i]:bounds[i + 1]],
                                        items[bounds[i]:bounds[i + 1]], strict=True)]
        if not _is_text_map(t):
            out.append(pairs)
            continue
        obj = dict(pairs)
        if len(obj) == len(pairs):
            out.append(obj)
        else:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    break
                seen.add(key)
            out.append(RepeatedKeys(pairs, key))
    return out


#: the years Arrow's formatting of timestamps and dates is right for
_FORMATTED_YEARS = (-32767, 32767)


def _instant_texts(arr: pa.Array) -> list[str | None]:
    """Timestamps and dates as ISO 8601 text (see ``column_values``)."""
    t = arr.type
    if pa.types.is_date32(t):
        unit, counts = "D", arr.cast(pa.int32()).cast(pa.int64())
    elif pa.types.is_date64(t):
        unit, counts = "ms", arr.cast(pa.int64())
    else:
        unit, counts = t.unit, arr.cast(pa.int64())
    # A day inside the bounds on each side: a zone's offset moves the local date by one.
    lo, hi = (np.datetime64(f"{_FORMATTED_YEARS[0]:+06d}-01-02", "D"),
              np.datetime64(f"{_FORMATTED_YEARS[1]:+06d}-12-30", "D"))
    lo_n, hi_n = (int(lo.astype(np.int64)), int(hi.astype(np.int64)))
    scale = {"D": 1, "s": 86400, "ms": 86400 * 10**3, "us": 86400 * 10**6,
             "ns": 86400 * 10**9}[unit]
    lo_n, hi_n = max(lo_n * scale, -(2**63)), min(hi_n * scale, 2**63 - 1)
    n = counts.fill_null(0).to_numpy(zero_copy_only=False)
    far = (n < lo_n) | (n > hi_n)
    near = arr.filter(pa.array(~far)) if far.any() else arr
    texts = near.cast(pa.string())
    zoned = pa.types.is_timestamp(t) and t.tz is not None
    if pa.types.is_timestamp(t):
        texts = pc.replace_substring_regex(texts, r"^(-?\d+-\d\d-\d\d) ", r"\1T")
        if zoned:
            texts = pc.replace_substring_regex(texts, r"Z$", "+00:00")
            texts = pc.replace_substring_regex(texts, r"([+-]\d\d)(\d\d)$", r"\1:\2")
    out = _texts(texts)
    if not far.any():
        return out
    # Past the years Arrow formats: numpy's text, in UTC for a zoned timestamp
    values = iter(out)
    whole: list[str | None] = []
    day = pa.types.is_date(t)
    for i, is_far in enumerate(far):
        if not is_far:
            whole.append(next(values))
            continue
        text = str(np.datetime_as_string(np.datetime64(int(n[i]) // scale, "D") if day
                                         else np.datetime64(int(n[i]), unit)))
        whole.append(_expanded_year(_no_zero_fraction(text + ("+00:00" if zoned else ""))))
    return whole


def _no_zero_fraction(text: str) -> str:
    return re.sub(r"\.0+(?=$|[+-]\d\d:\d\d$)", "", text)


def _expanded_year(text: str) -> str:
    # ISO 8601 writes a year past 9999 with its sign, as one before year 0 has it
    return "+" + text if re.match(r"\d{5}", text) else text


def _texts(texts: pa.Array) -> list[str | None]:
    """Arrow's text of times and instants, without a zero fraction, years past 9999 signed."""
    texts = pc.replace_substring_regex(texts, r"\.0+($|[+-]\d\d:\d\d$)", r"\1")
    texts = pc.replace_substring_regex(texts, r"^(\d{5})", r"+\1")
    return texts.to_pylist()


def jsonable(value: Any, *, keep_non_finite: bool = False) -> Any:
    """A value read from Arrow as JSON can hold it (see the module docstring).

    NaN and infinities become null, unless ``keep_non_finite`` (a rejects-file line, which
    writes them as they are so that a re-run left unfixed names them instead of taking null).
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v, keep_non_finite=keep_non_finite) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            # an Arrow map as ``to_pylist`` gives it (``column_values`` gives the map's own
            # shape, an empty one included): the same rule, no pair merged away
            keys = [k for k, _ in value]
            if all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys):
                return {k: jsonable(v, keep_non_finite=keep_non_finite) for k, v in value}
            return [[jsonable(k, keep_non_finite=keep_non_finite),
                     jsonable(v, keep_non_finite=keep_non_finite)] for k, v in value]
        return [jsonable(v, keep_non_finite=keep_non_finite) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        # Only reached for a row already refused, or by callers that pass no ``bad``
        return value if keep_non_finite else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        # str() writes small and large values in scientific notation (1E-7); the exact
        # digits at the column's scale read as the number everywhere
        return format(value, "f")
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _undictionary(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _loose(t: pa.DataType) -> pa.DataType:
    """``t`` as shards are compared: a dictionary as its values, a view, large or small
    string, binary or list as one (each is read as its values; polars writes large types,
    pyarrow and pandas small ones), list item names and nullability not told apart."""
    t = _plain_type(_undictionary(t))
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_loose(t.value_type))
    return t


def check_same_schema(schema: pa.Schema, where: str, first: pa.Schema, first_where: str) -> None:
    """``InputError`` naming both files when a shard's columns differ from the first shard's.

    A column typed ``null`` (all null in that shard, as pandas writes it) matches any type; a
    dictionary column matches its value type (pandas picks the index width of a categorical by
    its number of categories, and a shard without one writes plain values): both are read as
    their values. So are large and view types and the small ones (``_loose``).
    """
    problems = []
    only_here = [n for n in schema.names if n not in first.names]
    only_first = [n for n in first.names if n not in schema.names]
    if only_here:
        problems.append(f"columns only here: {', '.join(only_here)}")
    if only_first:
        problems.append(f"columns missing here: {', '.join(only_first)}")
    for name in schema.names:
        if name in first.names:
            a, b = _loose(schema.field(name).type), _loose(first.field(name).type)
            if a != b and not pa.types.is_null(a) and not pa.types.is_null(b):
                problems.append(f"column {name!r} is {a} here but {b} there")
    if problems:
        raise InputError(f"schema differs from the first shard {first_where}: "
                         + "; ".join(problems), location=Location(where),
                         hint="all shards of one source must share one schema; convert the odd "
                         "shard on its own")


# ----------------------------------------------------------------------------------- records


class UnmappedRecord(ValueError):
    """A record a ``KeyMapping`` makes no point of: the message says why, ``hint`` what to do,
    ``point_id`` is the id when the record has one. The reader adds file and line."""

    def __init__(self, message: str, *, hint: str | None = None, point_id: Any = None):
        super().__init__(message)
        self.hint = hint
        self.point_id = point_id


@dataclass(frozen=True)
class KeyMapping:
    """Which keys of a JSON record are the id, the vectors and the payload (JSONL)."""

    id_key: str | None = None
    vector_keys: tuple[str, ...] = ()
    sparse_keys: tuple[str, ...] = ()
    payload_key: str | None = None

    @classmethod
    def from_options(cls, *, id_key: str | None = None,
                     vector_key: str | Sequence[str] | None = None,
                     sparse_key: str | Sequence[str] | None = None,
                     payload_key: str | None = None) -> KeyMapping | None:
        m = cls(id_key or None, _tuple(vector_key), _tuple(sparse_key), payload_key or None)
        return None if m == cls() else m

    def resolve(self, records: list[dict[str, Any]], source: str) -> KeyMapping:
        """Check the keys against those of the first records; name unnamed vectors."""
        seen: list[str] = []
        for r in records:
            for k in r:
                if k not in seen:
                    seen.append(k)
        if not self.vector_keys and not self.sparse_keys:
            raise UsageError("the mapping names no vector key", location=Location(source),
                             hint=f"pass --vector-key [NAME=]KEY; {_SUGGEST_HINT}")
        for key, flag in ((self.id_key, "--id-key"), (self.payload_key, "--payload-key")):
            if key is not None and key not in seen:
                raise missing_name("key", flag, key, seen, source)
        dense = _vector_pairs(self.vector_keys, seen, "--vector-key", source, "key", False)
        sparse = _vector_pairs(self.sparse_keys, seen, "--sparse-key", source, "key", True)
        dense = _name_vectors(dense, sparse, source, ("--vector-key", "--sparse-key"), "key")
        return KeyMapping(self.id_key, tuple(f"{n}={k}" for n, k in dense),
                          tuple(f"{n}={k}" for n, k in sparse), self.payload_key)

    def pairs(self) -> list[tuple[str, str]]:
        """(vector name, key) of a resolved mapping."""
        return [tuple(s.split("=", 1)) for s in self.vector_keys + self.sparse_keys]  # type: ignore[misc]

    def to_point(self, record: Any, number: int, pairs: list[tuple[str, str]],
                 note: Any = None) -> Any:
        """A Qdrant REST point from ``record`` (the ``number``-th record, 0-based).

        Without an id key the id is ``number``, or, for a rejects-file line, the ``point_id``
        its ``note`` (``_vecferry_reject``) keeps. Raises ``UnmappedRecord`` (a ``ValueError``)
        when the id key is missing, when no mapped vector key holds a value, and, with a
        payload key, when another key holds one (the payload takes that key's object alone:
        the value would be lost unseen; a null is nothing to lose); anything else wrong is left
        for the point's own validation (``BatchBuilder``). The default payload (every key not
        mapped) never takes ``_vecferry_reject``, nor the ``_raw`` beside it: on a rejects-file
        line they are vecferry's notes, not the record's data.
        """
        if not isinstance(record, dict):
            return record
        if self.id_key is None:
            # A rejects line of a numbered input keeps its record's number as the note's
            # point_id: numbering the rejects file afresh would give it an id a good row holds
            pid: Any = (note["point_id"] if isinstance(note, dict) and "point_id" in note
                        else number)
        elif self.id_key in record:
            pid = record[self.id_key]
        else:
            raise UnmappedRecord(f"record has no key {self.id_key!r} (--id-key; keys: "
                                 f"{', '.join(record)})",
                                 hint="every record needs an id under that key, or leave "
                                      "--id-key out to number the records")
        vectors = {name: record[key] for name, key in pairs if record.get(key) is not None}
        if not vectors:
            raise self._no_vector(record, pid, pairs)
        point: dict[str, Any] = {"id": pid}
        if [n for n, _ in pairs] == [""]:
            point["vector"] = vectors[""]
        else:
            point["vector"] = vectors
        notes = {REJECT_KEY, "_raw"} if REJECT_KEY in record or note is not None else set()
        used = {self.id_key} | {k for _, k in pairs} | notes
        if self.payload_key is not None:
            extra = [k for k, v in record.items()
                     if k not in used and k != self.payload_key and v is not None]
            if extra:
                raise UnmappedRecord(
                    f"record has {', '.join(map(repr, extra))} beside the payload key "
                    f"{self.payload_key!r} (--payload-key), which takes that key's object "
                    "alone", point_id=pid,
                    hint=f"leave --payload-key out to keep every other key as the payload "
                         f"({self.payload_key!r} nested in it), or drop "
                         f"{'that key' if len(extra) == 1 else 'those keys'} from the records")
            point["payload"] = record.get(self.payload_key)
        else:
            rest = {k: v for k, v in record.items() if k not in used}
            point["payload"] = rest or None
        return point

    def _no_vector(self, record: dict[str, Any], pid: Any, pairs: list[tuple[str, str]]
                   ) -> UnmappedRecord:
        keys = [k for _, k in pairs]
        if len(keys) == 1:
            key = keys[0]
            why = (f"its key {key!r} is null" if key in record else
                   f"the record has no key {key!r} (keys: {', '.join(record) or 'none'})")
            flag = "--sparse-key" if self.sparse_keys else "--vector-key"
            return UnmappedRecord(f"point has no vector: {why}", point_id=pid,
                                  hint=f"give the record its vector under {key!r} ({flag}), "
                                       "or map the key that holds it")
        return UnmappedRecord(
            f"point has no vector: keys {', '.join(map(repr, keys))} are missing or null",
            point_id=pid, hint="give the record at least one of its vectors under those keys "
                               "(--vector-key, --sparse-key)")

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# -------------------------------------------------------------------------------- suggestion


def _id_rank(name: str) -> int:
    low = name.lower()
    if low in ID_NAMES:
        return ID_NAMES.index(low)
    if re.search(r"(^|[_\-. ])id$", low):
        return len(ID_NAMES)
    return -1


def _distinct(col: pa.Array) -> bool:
    """Whether a column holds values, none null and none twice."""
    if isinstance(col.type, pa.BaseExtensionType):
        col = col.storage
    return len(col) > 0 and col.null_count == 0 and pc.count_distinct(col).as_py() == len(col)


def _looks_like_json(values: list[Any]) -> bool:
    texts = [v for v in values if isinstance(v, str) and v.strip()]
    if not texts:
        return False
    for t in texts[:20]:
        if t.lstrip()[:1] not in ("{", "["):
            return False
        try:
            loads_exact(t.encode())
        except ValueError:
            return False
    return True


def suggest_table(schema: pa.Schema, first: pa.RecordBatch | None) -> dict[str, Any]:
    """A mapping for a foreign table: which columns look like vectors, ids and payload.

    Returns ``{"id_column", "vector_columns", "sparse_columns", "payload_columns",
    "json_columns", "payload_column", "dropped_columns", "flags"}``; ``flags`` is the CLI to
    pass (a string, shell-quoted). ``payload_column`` is the column whose objects are the
    payload itself and ``dropped_columns`` pandas' index columns left out, as a reader given
    the flags takes them (``TableMapper``'s ``tidy``).
    """
    schema = plain_schema(schema)
    first = None if first is None else plain_batch(first)
    vectors: list[str] = []
    sparse: list[str] = []
    for f in schema:
        t = f.type
        if _sparse_ok(t):
            sparse.append(f.name)
            continue
        if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_fixed_size_list(
                t.value_type) and pa.types.is_floating(t.value_type.value_type):
            if t.value_type.list_size >= 2:
                vectors.append(f.name)  # a multivector, as polars' List(Array(Float32, n))
        elif (pa.types.is_list(t) or pa.types.is_large_list(t)
              or pa.types.is_fixed_size_list(t)) and (pa.types.is_floating(t.value_type)):
            size = t.list_size if pa.types.is_fixed_size_list(t) else None
            if size is None and first is not None:
                lengths = [n for n in pc.list_value_length(first.column(f.name)).to_pylist() if n]
                size = max(lengths) if lengths else None
            if size is not None and size >= 2:
                vectors.append(f.name)
        elif (pa.types.is_binary(t) or pa.types.is_large_binary(t)) and first is not None \
                and re.search(r"emb|vec", f.name, re.I):
            lengths = [n for n in pc.binary_length(first.column(f.name)).to_pylist() if n]
            if lengths and all(n == lengths[0] and n % 4 == 0 for n in lengths):
                vectors.append(f.name)
    def uuid_bytes(f: pa.Field) -> bool:
        if _is_uuid_type(_undictionary(f.type)):
            return True
        return _is_bytes_type(f.type) and first is not None \
            and _all_sixteen_bytes(first.column(f.name))

    candidates = sorted(
        (f for f in schema if _id_rank(f.name) >= 0 and f.name not in vectors
         and (id_type_kind(f.type) is not None or uuid_bytes(f))),
        key=lambda f: _id_rank(f.name))
    if not candidates:
        # A column of 16-byte UUIDs is the ids whatever its name (``uid``, ``key_bytes``)
        # when its first values are distinct; left out, its ids would be base64 payload text
        # and the points numbered.
        candidates = [f for f in schema if f.name not in vectors and f.name not in sparse
                      and uuid_bytes(f) and first is not None
                      and _distinct(first.column(f.name))]
    id_column = candidates[0].name if candidates else None
    used = set(vectors) | set(sparse) | {id_column}
    dropped = [n for n in pandas_index_columns(schema) if n not in used]
    payload = [n for n in schema.names if n not in used and n not in dropped]
    json_cols = [n for n in payload if first is not None
                 and (pa.types.is_string(schema.field(n).type)
                      or pa.types.is_large_string(schema.field(n).type))
                 and _looks_like_json(first.column(n).slice(0, 50).to_pylist())]
    whole = payload[0] if len(payload) == 1 and is_payload_object(
        schema.field(payload[0]), payload[0] in json_cols) else None
    flags: list[str] = []
    if id_column is not None:
        flags += ["--id-column", id_column]
    for col in vectors:
        flags += ["--vector-column", col]
    for col in sparse:
        flags += ["--sparse-column", col]
    if json_cols:
        flags += ["--json-columns", ",".join(json_cols)]
    return {"id_column": id_column, "vector_columns": vectors, "sparse_columns": sparse,
            "payload_columns": payload, "json_columns": json_cols, "payload_column": whole,
            "dropped_columns": dropped, "flags": shlex.join(flags),
            "ids": "from the id column" if id_column
            else "row numbers (no id-like column found)"}


def _is_numbers(v: Any) -> bool:
    return isinstance(v, list) and len(v) >= 2 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v[:16])


def suggest_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A key mapping for foreign JSON records (see ``suggest_table``).

    Lines of a rejects file count as the records they hold: ``_vecferry_reject`` is left out,
    and a line keeping an unparseable original under ``_raw`` is no record.
    """
    records = [{k: v for k, v in r.items() if k != REJECT_KEY} for r in records
               if not (REJECT_KEY in r and "_raw" in r)]
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    vectors = [k for k in keys if any(_is_numbers(r.get(k)) for r in records)]
    sparse = [k for k in keys if any(isinstance(r.get(k), dict) and set(r[k]) == {"indices",
                                                                                   "values"}
                                     for r in records)]
    ids = sorted((k for k in keys if _id_rank(k) >= 0 and all(
        isinstance(r.get(k), (int, str)) and not isinstance(r.get(k), bool)
        for r in records if k in r)), key=_id_rank)
    id_key = ids[0] if ids else None
    objects = [k for k in keys if k not in vectors and k not in sparse and any(
        isinstance(r.get(k), dict) for r in records)]
    payload_key = next((k for k in objects if k.lower() in PAYLOAD_NAMES), None)
    used = set(vectors) | set(sparse) | {id_key}
    if payload_key is not None and [k for k in keys if k not in used] != [payload_key]:
        # --payload-key takes that object alone: with other keys beside it, the default (every
        # remaining key, the object nested) keeps them all
        payload_key = None
    flags: list[str] = []
    if id_key is not None:
        flags += ["--id-key", id_key]
    for k in vectors:
        flags += ["--vector-key", k]
    for k in sparse:
        flags += ["--sparse-key", k]
    if payload_key is not None:
        flags += ["--payload-key", payload_key]
    return {"id_key": id_key, "vector_keys": vectors, "sparse_keys": sparse,
            "payload_key": payload_key,
            "payload_keys": [payload_key] if payload_key else [k for k in keys if k not in used],
            "flags": shlex.join(flags), "ids": "from the id key" if id_key
            else "record numbers (no id-like key found)"}


def suggest_mapping(location: str, fmt: str, sample: int = 200) -> dict[str, Any] | None:
    """The mapping ``vecferry inspect`` suggests for a foreign Parquet or JSONL source.

    None when the source is vecferry's own (a manifest, the stream layout, REST-shaped points),
    is another format, or has nothing that looks like a vector. Otherwise the suggestion
    (``suggest_table`` / ``suggest_records``) plus ``options``: the reader keyword arguments.
    A remote source (``s3://`` ...) is read through ``vecferry.storage`` with the storage
    options in force, as its reader reads it.
    """
    from vecferry.errors import VecferryError
    from vecferry.storage import as_path

    try:
        path = as_path(location)
        if not path.exists():
            return None  # the reader says so, with its own message
    except VecferryError:
        return None  # refused access, a bad storage option: the reader says so too
    if fmt == "parquet":
        from vecferry.converters.parquet import _first_batch, _is_stream_layout, _open, _parts
        from vecferry.stream import MANIFEST_KEY

        parts = _parts(path)
        pf = _open(parts[0])
        try:
            if MANIFEST_KEY in (pf.metadata.metadata or {}) or _is_stream_layout(
                    pf.schema_arrow):
                return None
            s = suggest_table(pf.schema_arrow, _first_batch([pf]))
        finally:
            pf.close()
        opts: dict[str, Any] = {"id_column": s["id_column"], "vector_column": s["vector_columns"],
                                "sparse_column": s["sparse_columns"],
                                "json_columns": s["json_columns"]}
        vectors = s["vector_columns"] or s["sparse_columns"]
    elif fmt == "jsonl":
        from vecferry.converters.jsonl import _jsonl_parts
        from vecferry.fileio import iter_lines, open_read

        records: list[dict[str, Any]] = []
        first = _jsonl_parts(path, location)[0][0]  # a directory: its first part
        with open_read(first) as fh:
            for _, line, _ in iter_lines(fh, location):
                try:
                    value = loads_exact(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    if "vector" in value or "vectors" in value:
                        return None
                    records.append(value)
                if len(records) >= sample:
                    break
        s = suggest_records(records)
        opts = {"id_key": s["id_key"], "vector_key": s["vector_keys"],
                "sparse_key": s["sparse_keys"], "payload_key": s["payload_key"]}
        vectors = s["vector_keys"] or s["sparse_keys"]
    else:
        return None
    if not vectors:
        return None
    s["options"] = {k: v for k, v in opts.items() if v}
    return s
