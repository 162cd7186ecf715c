"""Points in Qdrant's REST shape <-> Arrow record batches.

A point is ``{"id": ..., "vector": [...] | {"name": [...] | {"indices": [...], "values": [...]}
| [[...], ...]}, "payload": {...}}``. JSONL and Qdrant both speak this shape; this module is the
one place that turns it into stream batches (``BatchBuilder``) and back (``iter_points``,
``point_json_lines``), validating every record on the way in.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from vecferry.converters.base import Context
from vecferry.errors import RecordError
from vecferry.fileio import has_long_number
from vecferry.stream import (
    ID_COLUMN,
    PAYLOAD_COLUMN,
    Manifest,
    VectorSpec,
    decode_ids,
    encode_id,
    kind_of_id,
    merge_id_kinds,
    record_error,
)

_NP = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


#: what to do about a payload value JSON cannot express (NaN, infinity)
PAYLOAD_NAN_HINT = "store null or a number there instead"


class NonFinitePayloadError(RecordError, ValueError):
    """A payload holds NaN or infinity, which JSON cannot express (``dumps_payload``).

    Raised without a location: ``dumps_payload`` sees only the payload, so its caller names the
    record (``BatchBuilder`` rejects the point by line or row and id). ``constant`` is ``NaN``,
    ``Infinity`` or ``-Infinity``, ``path`` where it sits (``a.b[2]``). A ``ValueError`` too,
    so a caller that already refuses values it cannot encode refuses this one.
    """

    def __init__(self, constant: str, path: str):
        super().__init__(f"payload holds {constant} at {path}, which JSON cannot express",
                         hint=PAYLOAD_NAN_HINT)
        self.constant = constant
        self.path = path


def dumps_payload(payload: Any) -> str:
    """Payload as JSON text; integers past 64 bits go through the stdlib encoder (exact).

    Raises ``NonFinitePayloadError`` for a payload holding NaN or infinity: orjson would write
    null for them, which reads back as a value, so the payload would change unnoticed (and the
    digest would call it equal to one holding null).
    """
    try:
        text = orjson.dumps(payload)
    except orjson.JSONEncodeError:
        try:
            return json.dumps(payload, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False)
        except ValueError as exc:  # "Out of range float values are not JSON compliant"
            found = _non_finite(payload)
            if found is None:
                raise
            raise NonFinitePayloadError(*found) from exc
    # orjson writes NaN and infinity as null: only a payload whose text holds a null can hold
    # one, and only such a payload pays for the walk
    if b"null" in text:
        found = _non_finite(payload)
        if found is not None:
            raise NonFinitePayloadError(*found)
    return text.decode()


def _non_finite(payload: Any) -> tuple[str, str] | None:
    from vecferry.mapping import non_finite  # mapping imports this module

    return non_finite(payload)


def huge_int_path(payload_text: str | None) -> str | None:
    """Path (``a.b[2]``) of the first payload integer outside -2^63..2^64-1, else None.

    Qdrant's engine keeps payload numbers as 64-bit values: such an integer would come back as
    a rounded float. A 19-digit run is the cheap test that sends a payload to the full walk.
    """
    if payload_text is None or not has_long_number(payload_text):
        return None

    def walk(value: Any, path: str) -> str | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return None if -(2**63) <= value < 2**64 else path
        if isinstance(value, dict):
            for k, v in value.items():
                found = walk(v, f"{path}.{k}" if path else k)
                if found:
                    return found
        if isinstance(value, list):
            for i, v in enumerate(value):
                found = walk(v, f"{path}[{i}]")
                if found:
                    return found
        return None

    return walk(json.loads(payload_text), "")


#: a point holding its vectors under both keys (``BatchBuilder`` refuses it)
BOTH_VECTOR_KEYS = ('point has both "vector" and "vectors", two names of one key: which of '
                    "them holds its vectors is unclear")
BOTH_VECTOR_KEYS_HINT = ('keep one of them ("vectors" is the name Qdrant\'s batch upsert '
                         'uses); it holds all of the point\'s vectors, named ones as '
                         '{"name": [...]}')


def vector_value(point: dict[str, Any]) -> Any:
    """What a point holds under ``vector``, or else under ``vectors`` (Qdrant's batch shape
    names the key so); None when it has neither, or both are null. A point holding both
    (``has_both_vector_keys``) gives its ``vector``."""
    vec = point.get("vector")
    return point.get("vectors") if vec is None else vec


def has_both_vector_keys(point: dict[str, Any]) -> bool:
    """Whether a point holds values under both ``vector`` and ``vectors``: reading one would
    drop the other unseen. A null under either is no value (Qdrant's records carry nulls)."""
    return point.get("vector") is not None and point.get("vectors") is not None


def vectors_of(point: dict[str, Any]) -> dict[str, Any]:
    """The named vectors of a point; an unnamed vector is returned under ''."""
    vec = vector_value(point)
    if vec is None:
        return {}
    if isinstance(vec, dict):
        return vec
    return {"": vec}


def infer_vector_spec(name: str, value: Any) -> VectorSpec:
    """Guess a vector's kind and size from one value (used when no manifest says it)."""
    if isinstance(value, dict):
        return VectorSpec(name=name, kind="sparse")
    if isinstance(value, list) and value and isinstance(value[0], list):
        return VectorSpec(name=name, kind="multi", size=len(value[0]))
    if isinstance(value, list) and value:
        return VectorSpec(name=name, kind="dense", size=len(value))
    raise ValueError(f"vector {name!r} is empty or not a list")


def _shape(kind: str, size: int | None) -> str:
    return {"dense": f"size {size}", "multi": f"multivectors of size {size}",
            "sparse": "sparse vectors"}.get(kind, kind)


def infer_manifest(points: list[dict[str, Any]], disagreements: list[str] | None = None,
                   lines: list[int] | None = None) -> Manifest:
    """A manifest for a stream whose first points are ``points`` (no manifest available).

    A vector's kind and size are those most of ``points`` hold (ties: the first seen), not
    the first point's: a first line of another size made every other point a bad record.
    Each vector the points disagree on is described in ``disagreements`` (with the line of
    the first point of each shape not taken, from ``lines``, the points' line numbers)."""
    counts: dict[str, dict[tuple[str, int | None], int]] = {}
    first: dict[tuple[str, str, int | None], int] = {}
    kinds = set()
    for i, p in enumerate(points):
        # A bad id is reported when the point is read; inference just looks past it.
        with contextlib.suppress(ValueError):
            kinds.add(kind_of_id(p.get("id")))
        for name, value in vectors_of(p).items():
            try:
                spec = infer_vector_spec(name, value)
            except ValueError:
                continue
            shape = (spec.kind, spec.size)
            held = counts.setdefault(name, {})
            held[shape] = held.get(shape, 0) + 1
            first.setdefault((name, *shape), i)
    specs = []
    for name, held in counts.items():
        taken = max(held, key=held.__getitem__)  # the first seen of the most held
        specs.append(VectorSpec(name=name, kind=taken[0], size=taken[1]))
        if len(held) > 1 and disagreements is not None:
            label = f"vector {name!r}" if name else "the unnamed vector"
            ranked = sorted(held.items(), key=lambda item: -item[1])
            others = [f"{_shape(*shape)}" + (f" (first at line {lines[first[(name, *shape)]]})"
                                              if lines else "")
                      for shape, _ in ranked if shape != taken]
            disagreements.append(
                f"{label}: the {len(points)} points sampled to infer the vectors hold "
                f"{', '.join(f'{n} of {_shape(*shape)}' for shape, n in ranked)}; "
                f"{_shape(*taken)}, which most hold, is taken, so points of "
                f"{', '.join(others)} are bad records")
    return Manifest(vectors=specs, id_kind=merge_id_kinds(kinds))


class BatchBuilder:
    """Accumulates validated points and emits record batches of the manifest's schema.

    ``add`` checks a point's shape (id, vector names, sizes, payload object) and rejects it
    through ``context`` when bad; ``flush`` converts the accumulated rows column-wise (one
    numpy conversion per vector column), rejecting rows whose values are not finite numbers.
    """

    def __init__(self, manifest: Manifest, context: Context, source: str):
        self.manifest = manifest
        self.schema = manifest.schema()
        self.context = context
        self.source = source
        self.specs = {v.name: v for v in manifest.vectors}
        self._reset()

    def _reset(self) -> None:
        self.ids: list[Any] = []
        self.payloads: list[str | None] = []
        self.where: list[dict[str, Any]] = []
        self.points: list[dict[str, Any]] = []
        self.vectors: dict[str, list[Any]] = {name: [] for name in self.specs}

    def __len__(self) -> int:
        return len(self.ids)

    def _vectorless_ok(self, point: dict[str, Any]) -> bool:
        # Only an explicit empty vector ("vector": {}, as Qdrant shows such a point) stands
        # for none: a point lacking the key more likely keeps its vector under another name.
        return self.manifest.vectors_optional and isinstance(vector_value(point), dict)

    def _vectorless_hint(self) -> str:
        if self.manifest.vectors_optional:
            return ('give the point its vectors, or "vector": {} for a point that has none; '
                    "named vectors are each optional")
        return "every point needs the unnamed vector"

    def _fail(self, message: str, where: dict[str, Any], point: Any, hint: str | None = None,
              point_id: Any = None, cause: BaseException | None = None) -> None:
        err = record_error(message, source=self.source, point_id=point_id, hint=hint,
                           raw=point, **where)
        err.__cause__ = cause
        self.context.reject(err)

    def add(self, point: Any, *, line: int | None = None, row: int | None = None) -> bool:
        """Add one point; returns False when it was rejected (and skipping is on)."""
        where = {"line": line} if line is not None else {"row": row}
        if not isinstance(point, dict):
            self._fail(f"a point must be a JSON object, not {type(point).__name__}", where, point)
            return False
        if "id" not in point:
            self._fail("point has no 'id'", where, point, hint="every point needs an id")
            return False
        pid = point["id"]
        try:
            sid = encode_id(pid, self.manifest.id_kind)
        except ValueError as exc:
            hint = None
            if "UUIDs" in str(exc):
                hint = "pass --id-kind string (or mixed) to read UUIDs and other strings together"
            elif "before it" in str(exc):
                hint = "pass --id-kind mixed to read integer and string ids together"
            elif "looks like an integer" in str(exc):
                hint = (f"write it as the number {pid} if that is the id, or make every id of "
                        "the source a string (\"1\", not 1) to keep it as text")
            self._fail(str(exc), where, point, hint=hint, point_id=pid)
            return False
        if has_both_vector_keys(point):
            self._fail(BOTH_VECTOR_KEYS, where, point, point_id=pid, hint=BOTH_VECTOR_KEYS_HINT)
            return False
        vecs = vectors_of(point)
        if not isinstance(vecs, dict) or (not vecs and not self._vectorless_ok(point)):
            self._fail("point has no vector", where, point, point_id=pid,
                       hint=self._vectorless_hint())
            return False
        unknown = [n for n in vecs if n not in self.specs]
        if unknown:
            known = [n or "(unnamed)" for n in self.specs]
            # A file without a manifest gets its schema from its first points, so a vector
            # first seen later lands here: the hint says how to declare it.
            self._fail(f"vector {unknown[0]!r} is not in the schema (vectors: {known or 'none'})",
                       where, point, point_id=pid,
                       hint="drop it, or declare every vector in a manifest sidecar: without one "
                            "the schema comes from the first points read")
            return False
        for name, value in vecs.items():
            problem = _check_vector(self.specs[name], value)
            if problem:
                self._fail(problem, where, point, point_id=pid)
                return False
        payload = point.get("payload")
        if payload is not None and not isinstance(payload, dict):
            # a rejects file keeps a payload that was not JSON as the text it was read from
            hint = ("the payload is the text it was read from, which was not JSON: fix it "
                    "into an object" if isinstance(payload, str) else None)
            self._fail(f"payload must be a JSON object, not {type(payload).__name__}", where,
                       point, point_id=pid, hint=hint)
            return False
        try:
            text = None if payload is None else dumps_payload(payload)
        except NonFinitePayloadError as exc:
            # ``raw`` keeps the NaN: a rejects file writes it as NaN, so a re-run of the
            # unfixed line is refused again rather than taking null for it
            self._fail(exc.message, where, point, point_id=pid, hint=exc.hint, cause=exc)
            return False
        self.ids.append(sid)
        self.payloads.append(text)
        self.where.append(where)
        self.points.append(point)
        for name, acc in self.vectors.items():
            acc.append(vecs.get(name))
        return True

    def flush(self) -> pa.RecordBatch | None:
        """The accumulated points as a batch (None when all were rejected or none added)."""
        if not self.ids:
            self._reset()
            return None
        n = len(self.ids)
        keep = np.ones(n, dtype=bool)
        columns: dict[str, pa.Array] = {}
        for name, values in self.vectors.items():
            spec = self.specs[name]
            arr, bad = _vector_array(spec, values)
            for i, reason in bad.items():
                if keep[i]:
                    keep[i] = False
                    self._fail(reason, self.where[i], self.points[i],
                               point_id=self.points[i].get("id"),
                               hint="fix the value: vectors hold finite numbers in the range of "
                               f"{spec.datatype}")
            columns[spec.column] = arr
        columns[ID_COLUMN] = pa.array(self.ids, type=self.schema.field(ID_COLUMN).type)
        columns[PAYLOAD_COLUMN] = pa.array(self.payloads, type=pa.string())
        batch = pa.RecordBatch.from_arrays([columns[f.name] for f in self.schema],
                                           schema=self.schema)
        if not keep.all():
            batch = batch.filter(pa.array(keep))
        self._reset()
        return batch if batch.num_rows else None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


_NONE = object()
#: the types of a JSON array of numbers (null read as NaN, then refused)
_PLAIN = {float, int, type(None)}


def _shown(value: Any) -> str:
    """A JSON value as a message shows it: short, and typed where its JSON would mislead."""
    text = json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"the string {text}" if isinstance(value, str) else text


def _check_vector(spec: VectorSpec, value: Any) -> str | None:
    """Why a vector value does not fit ``spec`` (cheap structural checks), or None."""
    label = "vector" if spec.name == "" else f"vector {spec.name!r}"
    if value is None:
        return None
    if spec.kind == "dense":
        if not isinstance(value, list):
            return f"{label} must be a list of numbers"
        if len(value) != spec.size:
            return f"{label} has {len(value)} dimensions, expected {spec.size}"
        return None
    if spec.kind == "multi":
        if not isinstance(value, list) or not value or not all(isinstance(v, list) for v in value):
            return f"{label} must be a non-empty list of vectors (multivector)"
        for v in value:
            if len(v) != spec.size:
                return f"{label} has a sub-vector of {len(v)} dimensions, expected {spec.size}"
        return None
    if not isinstance(value, dict) or set(value) != {"indices", "values"}:
        return f"{label} must be a sparse vector {{'indices': [...], 'values': [...]}}"
    idx, vals = value["indices"], value["values"]
    if not isinstance(idx, list) or not isinstance(vals, list) or len(idx) != len(vals):
        return f"{label}: indices and values must be lists of the same length"
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**32 for i in idx):
        return f"{label}: sparse indices must be integers in 0..2^32-1"
    if len(set(idx)) != len(idx):
        return f"{label}: sparse indices repeat"
    if not all(_is_number(v) and math.isfinite(v) for v in vals):
        return f"{label}: sparse values must be finite numbers"
    return None


def _vector_array(spec: VectorSpec, values: list[Any]) -> tuple[pa.Array, dict[int, str]]:
    """One vector column from Python values, and {row: reason} for rows that cannot be held."""
    label = "vector" if spec.name == "" else f"vector {spec.name!r}"
    bad: dict[int, str] = {}
    dtype = _NP[spec.datatype]
    if spec.kind == "sparse":
        return pa.array(values, type=spec.arrow_type()), bad
    present = [i for i, v in enumerate(values) if v is not None]
    if spec.kind == "dense":
        rows = [values[i] for i in present]
        lengths = None
    else:
        rows = [sub for i in present for sub in values[i]]
        lengths = [len(values[i]) for i in present]
    size = spec.size or 0
    # pyarrow converts the lists about twice as fast as numpy and, unlike numpy, refuses a
    # string (numpy made "0.5" into 0.5); a null becomes NaN, which the check below refuses
    try:
        flat = pa.array(rows, type=pa.list_(pa.float64(), size)).flatten()
        mat = flat.to_numpy(zero_copy_only=False).reshape(-1, size)
        converted = True
        suspects = np.flatnonzero(((mat == 0) | (mat == 1)).any(axis=1))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        # a string, or an integer past 64 bits (a number, which numpy takes): row by row
        mat = np.zeros((len(rows), size), dtype=np.float64)
        converted = False
        suspects = np.arange(len(rows))
    if len(suspects):
        # true and false pass pyarrow's conversion as 1 and 0: only a row holding an exact 0
        # or 1 is looked at in Python, so float embeddings pay nothing for the check
        owner = _row_owner(present, lengths)
        for r in suspects:
            row = rows[r]
            if converted and bool not in map(type, row):
                continue  # an exact 0 or 1, not a boolean
            if not converted and set(map(type, row)) <= _PLAIN:
                mat[r] = np.array(row, dtype=np.float64)  # a null becomes NaN, refused below
                continue
            odd = next((x for x in row if x is not None and not _is_number(x)), _NONE)
            if odd is not _NONE:
                bad.setdefault(owner[r], f"{label} holds {_shown(odd)}, which is not a number")
            elif not converted:
                mat[r] = np.array(row, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = mat.astype(dtype)
    finite = np.isfinite(mat).all(axis=1)
    if dtype is np.float32 or dtype is np.float16:
        finite &= np.isfinite(cast).all(axis=1) if cast.size else finite
    else:
        finite &= ((mat >= 0) & (mat <= 255) & (mat == np.round(mat))).all(axis=1)
    if not finite.all():
        owner = _row_owner(present, lengths)
        for r in np.flatnonzero(~finite):
            what = ("a value that is not an integer in 0..255" if dtype is np.uint8
                    else _not_finite(rows[r], mat[r], cast[r], spec.datatype))
            bad.setdefault(owner[int(r)], f"{label} holds {what}")
    flat = pa.array(cast.reshape(-1), type=pa.from_numpy_dtype(dtype))
    inner = pa.FixedSizeListArray.from_arrays(flat, size)
    validity = np.zeros(len(values), dtype=bool)
    validity[present] = True
    if spec.kind == "dense":
        full = _scatter(inner, present, len(values))
    else:
        offsets = np.zeros(len(present) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        lists = pa.ListArray.from_arrays(pa.array(offsets), inner)
        full = _scatter(lists, present, len(values))
    return full, bad


#: the range of a float datatype, as a refused value's message gives it
_RANGE = {"float32": " of about ±3.4e38", "float16": " of ±65504"}


def _not_finite(values: list[Any], wide: np.ndarray, cast: np.ndarray, datatype: str) -> str:
    """What a vector whose row is not finite holds, for its reject: a null, NaN, infinity,
    or the first value (as given) that its datatype's range turns into infinity."""
    if any(v is None for v in values):
        return "null, which is not a number"
    if np.isnan(wide).any():
        return "NaN"
    if np.isinf(wide).any():
        return "infinity"
    i = int(np.flatnonzero(~np.isfinite(cast))[0])
    return f"{values[i]!r}, outside {datatype}'s range{_RANGE.get(datatype, '')}"


def _row_owner(present: list[int], lengths: list[int] | None) -> list[int]:
    """Map a flattened sub-row back to the point it belongs to."""
    if lengths is None:
        return present
    owner: list[int] = []
    for i, n in zip(present, lengths, strict=True):
        owner.extend([i] * n)
    return owner


def _scatter(arr: pa.Array, present: list[int], n: int) -> pa.Array:
    """Spread ``arr`` (one value per present row) over ``n`` rows, nulls elsewhere."""
    if len(present) == n:
        return arr
    take = np.full(n, -1, dtype=np.int64)
    take[present] = np.arange(len(present))
    indices = pa.array(take, mask=take < 0)
    return arr.take(indices)


# ------------------------------------------------------------------------------- batch -> out


def _vector_values(column: pa.Array, spec: VectorSpec) -> list[Any]:
    """Python values of one vector column, in Qdrant's REST shape (None where missing)."""
    if spec.kind == "sparse":
        return _sparse_rows(column)
    if spec.kind == "dense":
        return _dense_rows(column, spec)
    out: list[Any] = []
    for cell in column:
        if not cell.is_valid:
            out.append(None)
            continue
        out.append(_dense_rows(cell.values, spec))
    return out


def _sparse_rows(column: pa.Array) -> list[Any]:
    """Sparse cells as {"indices": uint32 array, "values": float32 array} (None where missing).

    numpy arrays, not Python floats, so JSON output prints float32 values in their short form.
    """
    indices, values = column.field("indices"), column.field("values")
    idx_off, val_off = indices.offsets.to_numpy(), values.offsets.to_numpy()
    idx_all = indices.values.to_numpy(zero_copy_only=False)
    val_all = values.values.to_numpy(zero_copy_only=False)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [
        {"indices": idx_all[idx_off[i]:idx_off[i + 1]],
         "values": val_all[val_off[i]:val_off[i + 1]]} if valid[i] else None
        for i in range(len(column))
    ]


def _dense_rows(column: pa.Array, spec: VectorSpec) -> list[Any]:
    """Rows of a fixed-size-list column as numpy rows (None where missing)."""
    flat = column.flatten() if column.null_count == 0 else None
    if flat is not None:
        mat = flat.to_numpy(zero_copy_only=False).reshape(len(column), spec.size)
        return list(mat)
    out = []
    for cell in column:
        out.append(None if not cell.is_valid else cell.values.to_numpy(zero_copy_only=False))
    return out


def iter_points(batch: pa.RecordBatch, manifest: Manifest) -> Iterator[dict[str, Any]]:
    """Points of a batch in Qdrant's REST shape, payload as dicts.

    Dense vectors are numpy rows, multivectors lists of numpy rows, sparse vectors
    ``{"indices": uint32 array, "values": float32 array}``; a missing named vector is left out.
    """
    ids = decode_ids(batch.column(ID_COLUMN), manifest.id_kind)
    payloads = batch.column(PAYLOAD_COLUMN).to_pylist()
    vecs = {v.name: _vector_values(batch.column(v.column), v) for v in manifest.vectors}
    unnamed_only = [v.name for v in manifest.vectors] == [""]
    for i, pid in enumerate(ids):
        point: dict[str, Any] = {"id": pid}
        if unnamed_only:
            point["vector"] = vecs[""][i]
        else:
            point["vector"] = {n: vals[i] for n, vals in vecs.items() if vals[i] is not None}
        text = payloads[i]
        point["payload"] = None if text is None else json.loads(text)
        yield point


def non_finite_rows(batch: pa.RecordBatch, manifest: Manifest) -> dict[int, str]:
    """{row: vector label} for rows holding NaN or infinity in any float vector."""
    bad: dict[int, str] = {}
    for spec in manifest.vectors:
        if spec.datatype == "uint8":
            continue
        col = batch.column(spec.column)
        if spec.kind == "sparse":
            lists = col.field("values")
            offsets = lists.offsets.to_numpy()
            vals = lists.values.to_numpy(zero_copy_only=False)
            ok = np.isfinite(vals)
            if ok.all():
                continue
            for row in range(len(col)):
                if col[row].is_valid and not ok[offsets[row]:offsets[row + 1]].all():
                    bad.setdefault(row, spec.name)
            continue
        if spec.kind == "multi":
            counts = col.value_lengths().fill_null(0).to_numpy()
            flat = col.flatten()
            mat = flat.flatten().to_numpy(zero_copy_only=False).reshape(len(flat), spec.size)
            ok_sub = np.isfinite(mat).all(axis=1)
            if ok_sub.all():
                continue
            owner = np.repeat(np.arange(len(col)), counts)
            for sub in np.flatnonzero(~ok_sub):
                bad.setdefault(int(owner[sub]), spec.name)
            continue
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        flat = col.fill_null(pa.scalar([0] * spec.size, col.type)) if col.null_count else col
        mat = flat.flatten().to_numpy(zero_copy_only=False).reshape(len(col), spec.size)
        ok = np.isfinite(mat).all(axis=1) | ~valid
        for row in np.flatnonzero(~ok):
            bad.setdefault(int(row), spec.name)
    return bad


def point_from_row(batch: pa.RecordBatch, row: int, manifest: Manifest) -> dict[str, Any]:
    """One row as a point of Python values (vectors as lists of floats) for rejects files and
    messages. NaN and infinity in a vector stay floats, not null: the rejects file writes them
    as ``NaN`` / ``Infinity``, so a re-run of the unfixed line is refused naming them, where
    null would be read as a value (or refused as one)."""
    point = next(iter_points(batch.slice(row, 1), manifest))
    return _jsonable(point)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype.kind in "iu" else value.astype(float).tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def reject_from_row(batch: pa.RecordBatch, row: int, manifest: Manifest, message: str,
                    source: str, hint: str | None = None) -> RecordError:
    point = point_from_row(batch, row, manifest)
    return record_error(message, source=source, point_id=point["id"], hint=hint, raw=point)
