"""The shared round-trip helper: a table of formats, a set of datasets, and exact comparison.

A format joins the round-trip matrix with one ``FormatCase`` entry in ``FORMATS``: how to make a
location for it in ``tmp_path``, what it can hold (vector kinds, named vectors, points missing a
named vector, id kinds, datatypes) and, for read-only layouts, how to build a source by hand.
``tests/test_roundtrip.py`` parametrizes over every reader x writer pair and every dataset,
skipping pairs whose target cannot hold the dataset.

Comparison is exact: float vectors bit for bit (``.view(np.uint32)`` / ``np.uint16``), ids with
their Python type, payloads as canonical JSON (so ``1`` and ``1.0``, ``0.0`` and ``-0.0`` differ).
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import vecferry
from vecferry.converters.base import Context
from vecferry.points import BatchBuilder, iter_points, vectors_of
from vecferry.stream import Manifest, VectorSpec, manifest_of

N, DIM = 37, 8
DENSE = frozenset({"dense"})
ALL_KINDS = frozenset({"dense", "sparse", "multi"})
ALL_IDS = frozenset({"int", "uuid", "string", "mixed"})
ALL_DATATYPES = frozenset({"float32", "float16", "uint8"})
NS = uuid.UUID("0e7a1d2c-4b8f-4c1e-9d3a-5f6b7c8d9e0f")


# ------------------------------------------------------------------------------------ datasets


@dataclass
class Dataset:
    """Points in Qdrant's REST shape and the manifest (vectors, id kind) that describes them."""

    name: str
    vectors: list[VectorSpec]
    id_kind: str
    points: list[dict[str, Any]]

    def manifest(self) -> Manifest:
        specs = [VectorSpec(v.name, v.kind, v.size, v.datatype, v.distance, dict(v.extra))
                 for v in self.vectors]
        return Manifest(vectors=specs, id_kind=self.id_kind)

    @property
    def kinds(self) -> set[str]:
        return {v.kind for v in self.vectors}

    @property
    def datatypes(self) -> set[str]:
        return {v.datatype for v in self.vectors}

    @property
    def named(self) -> bool:
        return [v.name for v in self.vectors] != [""]

    @property
    def no_vectors(self) -> bool:
        return not self.vectors

    @property
    def missing_vectors(self) -> bool:
        names = {v.name for v in self.vectors}
        return any(set(vectors_of(p)) != names for p in self.points)


def rich_payload(i: int) -> dict[str, Any]:
    """A payload holding what JSON round trips get wrong."""
    return {
        "title": f"Doc {i} – Zoë Ångström 山田 🚀",
        "nested": {"a": [1, 2.5, {"b": None}], "empty": {}, "list": []},
        "null": None,
        "big53": 2**53 + i,
        "big64": 2**64 + i,
        "neg64": -(2**63) - 1 - i,  # 19 digits, outside int64
        "huge": -(10**30) - i,
        "float": 0.1 * i,
        "neg_zero": -0.0,
        "one_float": 1.0,
        "flag": i % 2 == 0,
        "esc": 'quote " backslash \\ newline \n tab \t \u0000',
    }


def _special_floats(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """float32 rows with -0.0, subnormals, the extremes and random bit patterns (all finite)."""
    bits = rng.integers(0, 2**32, size=(n, dim), dtype=np.uint64).astype(np.uint32)
    mat = bits.view(np.float32).copy()
    mat[~np.isfinite(mat)] = 1.5
    mat[0, :6] = [-0.0, 0.0, np.float32(1e-45), -np.float32(1e-45),
                  np.finfo(np.float32).max, np.finfo(np.float32).tiny]
    mat[1, :3] = [np.finfo(np.float32).min, np.float32(5.877472e-39), np.float32(0.1)]
    return mat


def _floats(row: np.ndarray) -> list[float]:
    return [float(x) for x in row]


def dense_int() -> Dataset:
    """(a) one unnamed float32 vector, int ids non-sequential, some past 2^32, up to 2^64-1."""
    rng = np.random.default_rng(1)
    mat = _special_floats(rng, N, DIM)
    ids = [int(x) for x in rng.choice(2**40, size=N - 3, replace=False)]
    ids += [0, 2**32 + 1, 2**64 - 1]
    points = [{"id": ids[i], "vector": _floats(mat[i]), "payload": rich_payload(i)}
              for i in range(N)]
    return Dataset("dense_int", [VectorSpec("", "dense", DIM)], "int", points)


def _mixed_ids(n: int) -> list[Any]:
    ids: list[Any] = []
    for i in range(n):
        if i % 3 == 0:
            ids.append(i * 1000 + 2**33)
        else:
            ids.append(str(uuid.uuid5(NS, str(i))))
    ids[1] = "0a1b2c3d-0000-4000-8000-000000000001"  # a UUID that starts with a digit '0'
    ids[2] = "12345678-1234-4234-8234-123456789abc"  # ... and one that starts with digits
    return ids


def named_mixed() -> Dataset:
    """(b) named dense + sparse + multi vectors, mixed int / UUID ids."""
    rng = np.random.default_rng(2)
    text = _special_floats(rng, N, DIM)
    points = []
    for i, pid in enumerate(_mixed_ids(N)):
        k = 1 + i % 3
        idx = sorted({int(x) for x in rng.integers(0, 2**32, size=1 + i % 4)})
        sub = rng.standard_normal((k, 4)).astype(np.float32)
        points.append({
            "id": pid,
            "vector": {
                "text": _floats(text[i]),
                "kw": {"indices": idx, "values": _floats(
                    rng.standard_normal(len(idx)).astype(np.float32))},
                "colbert": [_floats(r) for r in sub],
            },
            "payload": rich_payload(i),
        })
    points[5]["vector"]["kw"] = {"indices": [], "values": []}  # an empty sparse vector
    return Dataset("named_mixed", [VectorSpec("text", "dense", DIM, distance="Cosine"),
                                   VectorSpec("kw", "sparse"),
                                   VectorSpec("colbert", "multi", 4, distance="Dot")],
                   "mixed", points)


def string_ids() -> Dataset:
    """(c) string ids that are not UUIDs, some looking almost like numbers."""
    rng = np.random.default_rng(3)
    mat = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = [f"doc-{i:03d}" for i in range(N)]
    ids[:4] = ["007", "ü-ñ-山", "with space", "-1"]
    points = [{"id": ids[i], "vector": _floats(mat[i]), "payload": {"i": i}} for i in range(N)]
    return Dataset("string_ids", [VectorSpec("", "dense", DIM)], "string", points)


def typed(datatype: str) -> Callable[[], Dataset]:
    """(d) float16 or uint8 vectors, kept in their datatype."""

    def make() -> Dataset:
        rng = np.random.default_rng(4)
        if datatype == "uint8":
            mat = rng.integers(0, 256, size=(N, DIM)).astype(np.uint8)
            mat[0] = [0, 255, 1, 254, 0, 0, 128, 127]
            rows = [[int(x) for x in r] for r in mat]
        else:
            mat = (rng.standard_normal((N, DIM)) * 100).astype(np.float16)
            mat[0, :4] = [np.float16(-0.0), np.float16(6e-8), np.finfo(np.float16).max,
                          np.finfo(np.float16).min]
            rows = [_floats(r) for r in mat]
        points = [{"id": 3 * i + 1, "vector": rows[i], "payload": {"row": i}} for i in range(N)]
        return Dataset(datatype, [VectorSpec("", "dense", DIM, datatype)], "int", points)

    return make


def gaps() -> Dataset:
    """(e) two named dense vectors, some points missing one of them or both (Qdrant's named
    vectors are each optional), some with no payload."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((N, DIM)).astype(np.float32)
    b = rng.standard_normal((N, 3)).astype(np.float32)
    points = []
    for i in range(N):
        vec = {"a": _floats(a[i]), "b": _floats(b[i])}
        if i % 4 == 1:
            del vec["b"]
        elif i % 5 == 2:
            del vec["a"]
        if i % 9 == 4:
            vec = {}
        point: dict[str, Any] = {"id": i * 7, "vector": vec}
        point["payload"] = None if i % 3 == 0 else {"i": i}
        points.append(point)
    return Dataset("gaps", [VectorSpec("a", "dense", DIM), VectorSpec("b", "dense", 3)], "int",
                   points)


def named_dense_uuid() -> Dataset:
    """Two named dense vectors in every point, UUID ids, some points without payload."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((N, DIM)).astype(np.float32)
    b = rng.standard_normal((N, 5)).astype(np.float32)
    points = [{"id": str(uuid.uuid5(NS, f"p{i}")), "vector": {"a": _floats(a[i]),
                                                              "b": _floats(b[i])},
               "payload": None if i % 2 else rich_payload(i)} for i in range(N)]
    return Dataset("named_dense_uuid", [VectorSpec("a", "dense", DIM, distance="Euclid"),
                                        VectorSpec("b", "dense", 5)], "uuid", points)


def no_vectors() -> Dataset:
    """Points with ids and payloads only: a collection made with an empty vectors config."""
    points = [{"id": str(uuid.uuid5(NS, f"n{i}")) if i % 2 else i, "vector": {},
               "payload": None if i % 4 == 1 else rich_payload(i)} for i in range(N)]
    return Dataset("no_vectors", [], "mixed", points)


DATASETS: dict[str, Callable[[], Dataset]] = {
    "dense_int": dense_int,
    "named_mixed": named_mixed,
    "string_ids": string_ids,
    "float16": typed("float16"),
    "uint8": typed("uint8"),
    "gaps": gaps,
    "named_dense_uuid": named_dense_uuid,
    "no_vectors": no_vectors,
}


# ------------------------------------------------------------------------------------- formats


def batches_of(ds: Dataset, size: int = 10) -> list[Any]:
    """The dataset as stream batches of ``size`` rows (built the way JSONL input is)."""
    builder = BatchBuilder(ds.manifest(), Context(), ds.name)
    out = []
    for row, point in enumerate(ds.points):
        assert builder.add(point, row=row)
        if len(builder) == size:
            out.append(builder.flush())
    if len(builder):
        out.append(builder.flush())
    return out


def write_points(location: str, ds: Dataset, **writer_options: Any) -> dict[str, Any]:
    """Write ``ds`` to ``location`` through vecferry's own writer for that location."""
    batches = batches_of(ds)
    writer = vecferry.open_writer(location, batches[0].schema, **writer_options)
    try:
        for b in batches:
            writer.write_batch(b)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _matrix(ds: Dataset) -> np.ndarray:
    spec = ds.vectors[0]
    return np.array([p["vector"] for p in ds.points], dtype=spec.datatype)


def _id_array(ds: Dataset) -> np.ndarray:
    ids = [p["id"] for p in ds.points]
    return np.array(ids, dtype=np.uint64) if ds.id_kind == "int" else np.array(ids)


def _payload_lines(ds: Dataset, path: Path) -> str:
    path.write_text("".join(json.dumps(p.get("payload"), ensure_ascii=False) + "\n"
                            for p in ds.points), encoding="utf-8")
    return str(path)


def make_npy_matrix(ds: Dataset, base: Path) -> tuple[str, dict[str, Any]]:
    """A bare ``.npy`` matrix with an ids ``.npy`` and a payloads JSONL aligned by row."""
    loc = base.with_suffix(".npy")
    np.save(loc, _matrix(ds))
    ids = base.with_name(base.name + ".ids.npy")
    np.save(ids, _id_array(ds))
    payloads = _payload_lines(ds, base.with_name(base.name + ".payloads.jsonl"))
    return str(loc), {"ids": str(ids), "payloads": payloads}


def make_npz(ds: Dataset, base: Path) -> tuple[str, dict[str, Any]]:
    """An ``.npz`` archive (``vectors`` + ``ids``, deflated) with a payloads JSONL by row."""
    loc = base.with_suffix(".npz")
    np.savez_compressed(loc, vectors=_matrix(ds), ids=_id_array(ds))
    payloads = _payload_lines(ds, base.with_name(base.name + ".payloads.jsonl"))
    return str(loc), {"payloads": payloads}


def make_jsonl_without_sidecar(ds: Dataset, base: Path) -> tuple[str, dict[str, Any]]:
    """JSONL as other tools write it: no manifest sidecar, so the reader infers the schema."""
    loc = str(base) + ".jsonl"
    write_points(loc, ds)
    Path(loc + ".manifest.json").unlink()
    return loc, {}


def has_huge_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(has_huge_int(v) for v in value.values())
    if isinstance(value, list):
        return any(has_huge_int(v) for v in value)
    return False


@dataclass(frozen=True)
class FormatCase:
    """One format in the round-trip matrix and what it can hold."""

    name: str
    suffix: str
    can_write: bool = True
    kinds: frozenset[str] = ALL_KINDS
    named: bool = True
    missing_vectors: bool = True
    #: whether a stream with no vectors at all (ids and payloads only) fits
    no_vectors: bool = True
    id_kinds: frozenset[str] = ALL_IDS
    datatypes: frozenset[str] = ALL_DATATYPES
    #: modules that must be importable (optional extras); the case is skipped otherwise
    requires: tuple[str, ...] = ()
    #: builds a source by hand (read-only layouts): (dataset, base path) -> (location, options)
    make_source: Callable[[Dataset, Path], tuple[str, dict[str, Any]]] | None = None
    writer_options: dict[str, Any] = field(default_factory=dict)
    #: builds a location that is not a file name (a URI): (tmp_path, tag) -> location
    locate: Callable[[Path, str], str] | None = None
    #: whether points come back in the order they were written (Qdrant returns them by id)
    ordered: bool = True
    #: largest integer id the format holds (FAISS labels are int64)
    max_int_id: int = 2**64 - 1
    #: whether payload integers outside -2^63..2^64-1 stay exact (Qdrant's engine stores
    #: them as floats, so its writer refuses such points)
    huge_payload_ints: bool = True

    def location(self, tmp_path: Path, tag: str) -> str:
        if self.locate is not None:
            return self.locate(tmp_path, tag)
        return f"{tmp_path}/{tag}{self.suffix}"  # not a Path: a trailing '/' means a directory

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def cannot_hold(self, ds: Dataset) -> str | None:
        """Why this format cannot hold ``ds`` (None when it can)."""
        if ds.kinds - self.kinds:
            return f"no {'/'.join(sorted(ds.kinds - self.kinds))} vectors"
        if ds.named and not self.named:
            return "no named vectors"
        if ds.no_vectors and not self.no_vectors:
            return "no points without any vector"
        if ds.missing_vectors and not self.missing_vectors:
            return "no points missing a vector"
        if ds.id_kind not in self.id_kinds:
            return f"no {ds.id_kind} ids"
        if ds.datatypes - self.datatypes:
            return f"no {'/'.join(sorted(ds.datatypes - self.datatypes))}"
        if any(isinstance(p["id"], int) and p["id"] > self.max_int_id for p in ds.points):
            return f"no integer ids above {self.max_int_id}"
        if not self.huge_payload_ints and any(has_huge_int(p.get("payload"))
                                              for p in ds.points):
            return "no payload integers outside -2^63..2^64-1"
        return None

    def make(self, ds: Dataset, tmp_path: Path, tag: str) -> tuple[str, dict[str, Any]]:
        """Write ``ds`` in this format; returns (location, reader options)."""
        if self.make_source is not None:
            return self.make_source(ds, tmp_path / tag)
        loc = self.location(tmp_path, tag)
        write_points(loc, ds, **self.writer_options)
        return loc, {}


_MATRIX = {"kinds": DENSE, "named": False, "missing_vectors": False, "no_vectors": False,
           "can_write": False}

FORMATS: dict[str, FormatCase] = {f.name: f for f in (
    FormatCase("jsonl", ".jsonl"),
    FormatCase("jsonl.gz", ".jsonl.gz"),
    FormatCase("jsonl.zst", ".jsonl.zst", requires=("zstandard",)),
    # without a manifest, lines that all say "vector": {} are a stream without vectors
    FormatCase("jsonl-inferred", ".jsonl", can_write=False, datatypes=frozenset({"float32"}),
               make_source=make_jsonl_without_sidecar),
    FormatCase("parquet", ".parquet"),
    FormatCase("parquet-dir", ".parquet/", writer_options={"row_group_bytes": 1}),
    FormatCase("npy", ".npy", kinds=DENSE, missing_vectors=False, no_vectors=False),
    FormatCase("npy-matrix", ".npy", id_kinds=frozenset({"int", "uuid", "string"}),
               make_source=make_npy_matrix, **_MATRIX),
    FormatCase("npz", ".npz", id_kinds=frozenset({"int", "uuid", "string"}),
               make_source=make_npz, **_MATRIX),
    # FAISS holds one dense vector per point; other id kinds travel in its payload sidecar.
    FormatCase("faiss", ".faiss", kinds=DENSE, named=False, missing_vectors=False, no_vectors=False,
               datatypes=frozenset({"float32", "float16"}), requires=("faiss",),
               max_int_id=2**63 - 1),
    FormatCase("qdrant-edge", "", requires=("qdrant_edge",), ordered=False,
               huge_payload_ints=False, no_vectors=False,
               locate=lambda tmp, tag: f"qdrant-edge://{tmp}/{tag}-shard"),
    FormatCase("qdrant-local", "", requires=("qdrant_client",), ordered=False,
               locate=lambda tmp, tag: f"qdrant-local://{tmp}/{tag}-qdrant/points"),
)}

READERS = list(FORMATS)
WRITERS = [name for name, f in FORMATS.items() if f.can_write]


# ---------------------------------------------------------------------------------- comparison


def read_points(location: str, batch_size: int = 10, **options: Any
                ) -> tuple[Manifest, list[dict[str, Any]]]:
    """Every point of ``location`` through ``open_reader(...).batches()`` and ``iter_points``."""
    reader = vecferry.open_reader(location, **options)
    try:
        manifest = manifest_of(reader.schema)
        points = [p for b in reader.batches(batch_size) for p in iter_points(b, manifest)]
    finally:
        reader.close()
    return manifest, points


def _bits(value: Any, datatype: str) -> list[int]:
    arr = np.asarray(value, dtype=datatype)
    assert arr.dtype == np.dtype(datatype)
    view = {"float32": np.uint32, "float16": np.uint16, "uint8": np.uint8}[datatype]
    return arr.view(view).tolist()


def canonical(payload: Any) -> str:
    """JSON text that tells 1 from 1.0 and 0.0 from -0.0, keys sorted."""
    return json.dumps(payload, sort_keys=True, ensure_ascii=False)


def _order_key(point: dict[str, Any]) -> tuple[str, str]:
    return type(point["id"]).__name__, str(point["id"])


def assert_same_points(got: list[dict[str, Any]], manifest: Manifest, ds: Dataset,
                       ordered: bool = True) -> None:
    """``got`` (from ``iter_points``) holds exactly ``ds``: ids, vector bits, payloads, count.

    ``ordered=False`` compares as sets of points (a Qdrant collection returns points by id).
    """
    expected_points = ds.points
    if not ordered:
        got = sorted(got, key=_order_key)
        expected_points = sorted(ds.points, key=_order_key)
    assert len(got) == len(expected_points)
    assert [(type(p["id"]), p["id"]) for p in got] == [(type(p["id"]), p["id"])
                                                        for p in expected_points]
    assert manifest.id_kind == ds.id_kind
    specs = {v.name: v for v in manifest.vectors}
    assert {n: (v.kind, v.size, v.datatype) for n, v in specs.items()} == {
        v.name: (v.kind, v.size, v.datatype) for v in ds.vectors}
    for g, e in zip(got, expected_points, strict=True):
        gv, ev = vectors_of(g), vectors_of(e)
        assert set(gv) == set(ev), e["id"]
        for name, expected in ev.items():
            spec, value = specs[name], gv[name]
            if spec.kind == "dense":
                assert _bits(value, spec.datatype) == _bits(expected, spec.datatype), e["id"]
            elif spec.kind == "multi":
                assert [_bits(r, spec.datatype) for r in value] == [
                    _bits(r, spec.datatype) for r in expected], e["id"]
            else:
                assert list(value["indices"]) == expected["indices"], e["id"]
                assert _bits(value["values"], "float32") == _bits(expected["values"], "float32")
        assert canonical(g["payload"]) == canonical(e.get("payload")), e["id"]


def leftovers(directory: str | Path) -> list[str]:
    """Temporary files a failed or interrupted write left behind (``.<name>.vftmp-<random>``)."""
    return sorted(p.name for p in Path(directory).rglob("*") if ".vftmp" in p.name)


def jsonl_line(point: dict[str, Any]) -> bytes:
    return orjson.dumps(point) + b"\n"
