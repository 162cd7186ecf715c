"""The point stream: Arrow schema, manifest and id handling shared by every format.

A point stream is a sequence of ``pyarrow.RecordBatch`` with one fixed schema:

* ``id``: ``uint64`` when every id is an unsigned integer (id kind ``int``), otherwise ``string``
  (id kinds ``uuid``, ``string`` and ``mixed``; in a ``mixed`` stream an integer id travels as
  its canonical decimal text and is restored to an integer on the way out).
* one column per vector: ``vector`` for the unnamed default vector, ``vector.<name>`` for a named
  one. Dense: ``fixed_size_list<float32|float16|uint8>[size]``; sparse:
  ``struct<indices: list<uint32>, values: list<float32>>``; multi:
  ``list<fixed_size_list<float32>[size]>``. A null cell means the point has no such vector.
  As in Qdrant, a point may have none of the named vectors (or the stream none at all: a
  collection made with an empty vectors config); the unnamed vector, when there is one, is
  every point's (``Manifest.vectors_optional``).
* ``payload``: JSON text (null means no payload). Text keeps every JSON value exactly, including
  integers past 2^53 that a float64 column would round.

The manifest (``Manifest``) travels in the schema metadata under ``vecferry.manifest`` and is
documented as JSON Schema in ``vecferry/schemas/manifest.schema.json``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from vecferry.errors import Location, RecordError, SchemaError, UsageError

FORMAT_VERSION = 1
MANIFEST_KEY = b"vecferry.manifest"
ID_COLUMN = "id"
PAYLOAD_COLUMN = "payload"
DEFAULT_VECTOR_COLUMN = "vector"

ID_KINDS = ("int", "uuid", "string", "mixed")
VECTOR_KINDS = ("dense", "sparse", "multi")
DATATYPES = {"float32": pa.float32(), "float16": pa.float16(), "uint8": pa.uint8()}
#: the distances a vector can record (Qdrant's names)
DISTANCES = ("Cosine", "Euclid", "Dot", "Manhattan")
MAX_UINT64 = 2**64 - 1

_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)\Z")


def vector_column(name: str) -> str:
    """Column holding the vector called ``name`` ('' is the unnamed default vector)."""
    return DEFAULT_VECTOR_COLUMN if name == "" else f"{DEFAULT_VECTOR_COLUMN}.{name}"


def vector_name(column: str) -> str:
    if column == DEFAULT_VECTOR_COLUMN:
        return ""
    if column.startswith(DEFAULT_VECTOR_COLUMN + "."):
        return column[len(DEFAULT_VECTOR_COLUMN) + 1 :]
    raise SchemaError(f"column {column!r} is not a vector column")


@dataclass
class VectorSpec:
    """One vector of a point: its name ('' = unnamed), kind, size and how it is compared.

    ``extra`` carries settings that only some targets understand (Qdrant ``on_disk``, HNSW,
    multivector comparator, sparse modifier), kept so a round trip can recreate them.
    """

    name: str
    kind: str = "dense"
    size: int | None = None
    datatype: str = "float32"
    distance: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in VECTOR_KINDS:
            raise SchemaError(f"vector {self.name!r}: unknown kind {self.kind!r}")
        if self.kind != "sparse" and (self.size is None or self.size <= 0):
            raise SchemaError(f"vector {self.name!r}: a {self.kind} vector needs a positive size")
        if self.datatype not in DATATYPES:
            raise SchemaError(
                f"vector {self.name!r}: unsupported datatype {self.datatype!r}",
                hint=f"supported: {', '.join(DATATYPES)}",
            )

    @property
    def column(self) -> str:
        return vector_column(self.name)

    def arrow_type(self) -> pa.DataType:
        value = DATATYPES[self.datatype]
        if self.kind == "dense":
            return pa.list_(value, self.size)
        if self.kind == "multi":
            return pa.list_(pa.list_(value, self.size))
        return pa.struct([("indices", pa.list_(pa.uint32())), ("values", pa.list_(pa.float32()))])


@dataclass
class Manifest:
    """What a stream holds, known before its first batch. See ``manifest.schema.json``."""

    vectors: list[VectorSpec]
    id_kind: str = "int"
    count: int | None = None
    source: dict[str, Any] = field(default_factory=dict)
    collection: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: digest and count of the points a file holds, written by every file writer
    #: (``vecferry.digest``); lets ``verify`` prove an archive intact without its source
    digest: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.id_kind not in ID_KINDS:
            raise SchemaError(f"unknown id kind {self.id_kind!r}",
                              hint=f"one of {', '.join(ID_KINDS)}")
        names = [v.name for v in self.vectors]
        if len(set(names)) != len(names):
            raise SchemaError(f"vector names repeat: {names}")

    @property
    def vectors_optional(self) -> bool:
        """Whether a point may come without any vector: Qdrant's rule, where named vectors are
        each optional but a collection's unnamed vector is required."""
        return all(v.name for v in self.vectors)

    def vector(self, name: str) -> VectorSpec:
        for v in self.vectors:
            if v.name == name:
                return v
        raise SchemaError(f"no vector named {name!r}; vectors: {[v.name for v in self.vectors]}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_by"] = _created_by()
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """The manifest ``d`` (parsed JSON) records. ``SchemaError`` saying which field is
        wrong when ``d`` is no manifest (a field of the wrong JSON type, an unknown key of a
        vector, an unknown kind / id kind / datatype) or one a newer vecferry
        wrote. The caller names the file and says what to do."""
        problem = manifest_problem(d)
        if problem is not None:
            raise SchemaError(problem)
        version = d.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise SchemaError(
                f"manifest format version {version} is newer than this vecferry ({FORMAT_VERSION})",
                hint="upgrade vecferry",
            )
        return cls(
            vectors=[VectorSpec(**v) for v in d.get("vectors", [])],
            id_kind=d.get("id_kind", "int"),
            count=d.get("count"),
            source=d.get("source") or {},
            collection=d.get("collection"),
            extra=d.get("extra") or {},
            format_version=version,
            digest=d.get("digest"),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        return cls.from_dict(orjson.loads(data))

    def schema(self) -> pa.Schema:
        """The Arrow schema of a stream with this manifest, the manifest in its metadata."""
        fields = [pa.field(ID_COLUMN, id_arrow_type(self.id_kind), nullable=False)]
        fields += [pa.field(v.column, v.arrow_type()) for v in self.vectors]
        fields.append(pa.field(PAYLOAD_COLUMN, pa.string()))
        return pa.schema(fields, metadata={MANIFEST_KEY: self.to_json()})


#: the fields of a manifest and the JSON types each may hold (``type(None)``: may be null)
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,), "vectors": (list,), "id_kind": (str,),
    "count": (int, type(None)), "source": (dict, type(None)),
    "collection": (dict, type(None)), "extra": (dict, type(None)),
    "digest": (dict, type(None)), "created_by": (str, type(None)),
}
_VECTOR_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "kind": (str,), "size": (int, type(None)), "datatype": (str,),
    "distance": (str, type(None)), "extra": (dict,),
}
_JSON_TYPE = {int: "an integer", list: "a list", str: "text", dict: "an object",
              type(None): "null", bool: "true or false", float: "a number"}


def json_type_problem(where: str, value: Any, types: tuple[type, ...]) -> str | None:
    """``"<where> must be an integer, not text"`` when ``value`` (parsed JSON) is none of
    ``types`` (a bool is no integer unless ``bool`` is listed), None when it is one."""
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return None
    wanted = " or ".join(_JSON_TYPE[t] for t in types)
    return f"{where} must be {wanted}, not {_JSON_TYPE.get(type(value), type(value).__name__)}"


def manifest_problem(d: Any) -> str | None:
    """What makes ``d`` (parsed JSON) no manifest ``Manifest`` can be built from, None when
    nothing does. Checked before building it, which would keep a wrong type as it is (a
    ``count`` of ``"x"``) or fail with a ``TypeError`` naming no field."""
    if not isinstance(d, dict):
        return json_type_problem("it", d, (dict,))
    for key, types in _MANIFEST_TYPES.items():
        if key in d and (problem := json_type_problem(repr(key), d[key], types)):
            return problem
    if isinstance(d.get("count"), int) and d["count"] < 0:
        return f"'count' must not be negative ({d['count']})"
    for i, v in enumerate(d.get("vectors") or []):
        if not isinstance(v, dict):
            return json_type_problem(f"vectors[{i}]", v, (dict,))
        unknown = sorted(set(v) - set(_VECTOR_TYPES))
        if unknown or "name" not in v:
            return (f"vectors[{i}] has no 'name'" if not unknown else
                    f"vectors[{i}] holds unknown key(s) {', '.join(map(repr, unknown))}")
        for key, types in _VECTOR_TYPES.items():
            if key in v and (problem := json_type_problem(f"vectors[{i}].{key}", v[key], types)):
                return problem
    # a distance is any name: FAISS binary indexes record Hamming, which Qdrant lacks; a
    # target that cannot search by it says so when it is opened
    return None


def describe_vectors(specs: Iterable[VectorSpec]) -> str:
    """Vectors in words, for a message: ``"vector 'text' (dense, 384 dims) and the unnamed
    vector (sparse)"``, or ``"no vector"``."""
    return " and ".join(f"{'vector ' + repr(v.name) if v.name else 'the unnamed vector'} "
                        f"({v.kind}" + (f", {v.size} dims)" if v.size else ")")
                        for v in specs) or "no vector"


def _created_by() -> str:
    from vecferry import __version__

    return f"vecferry {__version__}"


def manifest_of(schema: pa.Schema) -> Manifest:
    """The manifest a stream schema carries; a schema without one is a programming error."""
    meta = schema.metadata or {}
    if MANIFEST_KEY not in meta:
        raise SchemaError("stream schema carries no vecferry manifest")
    return Manifest.from_json(meta[MANIFEST_KEY])


def with_manifest(schema: pa.Schema, manifest: Manifest) -> pa.Schema:
    meta = dict(schema.metadata or {})
    meta[MANIFEST_KEY] = manifest.to_json()
    return schema.with_metadata(meta)


def is_packed_bits(manifest: Manifest, spec: VectorSpec | None) -> bool:
    """Whether ``spec`` holds the packed bits of a FAISS binary index: the FAISS reader marks
    them (``extra["faiss"]["binary_bits"]``) and every copy keeps the mark."""
    facts = manifest.extra.get("faiss")
    bits = facts.get("binary_bits") if isinstance(facts, dict) else None
    return (spec is not None and spec.kind == "dense" and spec.datatype == "uint8"
            and isinstance(bits, int) and bits == 8 * (spec.size or 0))


def with_distance(schema: pa.Schema, distance: str | None) -> pa.Schema:
    """``schema`` with ``distance`` (``--distance``) recorded for each dense or multi vector
    whose source records none, so a file keeps it for a later load into Qdrant or FAISS; a
    recorded distance stays (the pipeline warns); sparse vectors and packed bits (compared by
    Hamming distance) get none. ``UsageError`` for a name that is not one of ``DISTANCES``."""
    if distance is None:
        return schema
    if distance not in DISTANCES:
        raise UsageError(f"unknown distance {distance!r}", hint=f"one of {', '.join(DISTANCES)}")
    manifest = manifest_of(schema)
    unset = [v for v in manifest.vectors if v.kind != "sparse" and not v.distance
             and not is_packed_bits(manifest, v)]
    for v in unset:
        v.distance = distance
    return with_manifest(schema, manifest) if unset else schema


# ----------------------------------------------------------------------------------------- ids


def id_arrow_type(id_kind: str) -> pa.DataType:
    return pa.uint64() if id_kind == "int" else pa.string()


#: the form most UUID ids come in (uuid4() as text): matched without parsing
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_uuid(value: str) -> bool:
    """Whether ``uuid.UUID`` takes ``value`` (any of its spellings)."""
    if isinstance(value, str) and len(value) == 36 and _CANONICAL_UUID.fullmatch(value):
        return True
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def kind_of_id(value: Any) -> str:
    """'int', 'uuid' or 'string' for one id; raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"id {value!r} is a boolean; ids are unsigned integers or strings")
    if isinstance(value, int):
        if 0 <= value <= MAX_UINT64:
            return "int"
        raise ValueError(
            f"id {value} is outside 0..2^64-1; integer ids must be unsigned 64-bit "
            "(as in Qdrant and FAISS); write it as a string id to keep it"
        )
    if isinstance(value, str):
        if value == "":
            raise ValueError("id is an empty string")
        return "uuid" if is_uuid(value) else "string"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2**63:
        # orjson hands over integers past 64 bits as floats
        raise ValueError(f"id {value:.0f} is outside 0..2^64-1; integer ids must be unsigned "
                         "64-bit (as in Qdrant and FAISS); write it as a string id to keep it")
    raise ValueError(f"id {value!r} is a {type(value).__name__}; ids are integers or strings")


def merge_id_kinds(kinds: Iterable[str]) -> str:
    """The id kind of a stream holding ids of these kinds."""
    ks = set(kinds)
    if not ks or ks == {"int"}:
        return "int"
    if ks == {"uuid"}:
        return "uuid"
    if "int" in ks:
        return "mixed"
    return "string"


def encode_id(value: Any, id_kind: str) -> Any:
    """One Python id as the stream stores it under ``id_kind``; ``ValueError`` when it cannot."""
    kind = kind_of_id(value)
    if id_kind == "int":
        if kind != "int":
            raise ValueError(
                f"id {value!r} is a string but the ids before it are integers"
            )
        return value
    if id_kind == "mixed":
        if kind == "int":
            return str(value)
        if _int_text(value):
            raise ValueError(
                f"string id {value!r} looks like an integer and cannot be told apart from one "
                "in a stream that mixes integer and string ids"
            )
        return value
    if kind == "int":
        raise ValueError(f"id {value!r} is an integer but the ids before it are strings")
    if id_kind == "uuid" and kind != "uuid":
        raise ValueError(f"id {value!r} is not a UUID but the ids before it are UUIDs")
    return value


def decode_ids(column: pa.Array, id_kind: str) -> list[Any]:
    """Python ids (int or str) from an ``id`` column, restoring integers in a mixed stream."""
    values = column.to_pylist()
    if id_kind == "mixed":
        return [int(v) if _int_text(v) else v for v in values]
    return values


def _int_text(value: str) -> bool:
    """Whether an id text of a mixed stream stands for an integer id: a decimal of at most
    2^64 - 1. A longer one cannot be an integer id, so it is told apart as a string id."""
    return _DECIMAL.match(value) is not None and (
        len(value) < 20 or (len(value) == 20 and int(value) < 2**64))


# ------------------------------------------------------------------------------------ batches


def rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a batch stream so every batch but the last has exactly ``size`` rows.

    Holds at most ``size`` rows plus one incoming batch, so memory stays bounded.
    """
    if size <= 0:
        raise ValueError("batch size must be positive")
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(size - rows, batch.num_rows - offset)
            pending.append(batch.slice(offset, take))
            rows += take
            offset += take
            if rows == size:
                yield _concat(pending)
                pending, rows = [], 0
    if rows:
        yield _concat(pending)


def _concat(parts: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def record_error(message: str, *, source: str | None = None, line: int | None = None,
                 row: int | None = None, point_id: Any = None, hint: str | None = None,
                 raw: Any = None) -> RecordError:
    """Shorthand for a ``RecordError`` with its location."""
    return RecordError(
        message,
        location=Location(source=source, line=line, row=row, point_id=point_id),
        hint=hint,
        raw=raw,
    )


class _NoPandas:
    """A meta-path finder that refuses ``pandas`` (see ``skip_pandas_probe``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not imported by vecferry's own processes")
        return None


def skip_pandas_probe() -> None:
    """Spare this process pyarrow's import of pandas.

    When pandas is installed (``ray[data]`` installs it), pyarrow imports it (about 0.3 s) on
    the first ``pa.array`` of a list, only to check whether the list is a pandas object. For
    the CLI and vecferry's worker processes, which never hand pyarrow pandas objects, that is
    a third of the time of a 100k-point numpy -> Parquet run. pandas is refused while pyarrow
    makes that check once, then allowed again: pyarrow's explicit pandas APIs
    (``to_pandas``) still import it when called. Does nothing when pandas is already loaded.
    Not for library callers: their own pandas objects would no longer be recognised.
    """
    import sys

    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)
