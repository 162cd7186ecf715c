"""The Qdrant fast paths give exactly what the general paths give.

* reader: ``DenseColumns`` (column-wise batches from scroll records, dense float32 streams)
  against ``BatchBuilder`` on the same points, regular and irregular, rejects included;
* Edge writer: ``QdrantWriter._row_view_points`` (memoryview rows, orjson payloads, points built
  while the previous request runs) against the general ``_points``;
* local mode: the load's write-ahead log is folded back into the SQLite file at the end;
* end to end: dense-only collections with named vectors, missing vectors, every id kind, mapped
  ids, big integers and odd floats in payloads, through Edge and local mode and back, exact.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

pytest.importorskip("qdrant_client")
pytest.importorskip("qdrant_edge")

import vecferry
from qdrant_helpers import dump_edge, dump_local, dump_stream, normalize
from vecferry.converters import open_reader, open_writer
from vecferry.converters.base import Context
from vecferry.converters.qdrant import DEFAULT_ID_FIELD, DenseColumns
from vecferry.errors import RecordError
from vecferry.points import BatchBuilder
from vecferry.stream import Manifest, VectorSpec


def dense_points(n: int = 41, seed: int = 5) -> list[dict[str, Any]]:
    """Named dense vectors ``a`` (always) and ``b`` (every third point missing), ids of every
    kind (integers, canonical UUIDs, strings Qdrant maps), payloads with integers near 2^64,
    tiny and negative-zero floats, unicode, and no payload at all."""
    rng = np.random.default_rng(seed)
    odd = np.array([-0.0, 1e-45, 3.4028235e38, -1.1754944e-38], dtype=np.float32)
    points = []
    for i in range(n):
        pid: Any = [i * 7, str(uuid.UUID(int=(i + 1) << 70)), f"doc-{i}"][i % 3]
        a = rng.standard_normal(8).astype(np.float32)
        a[:4] = odd if i % 4 == 0 else a[:4]
        vec: dict[str, Any] = {"a": a}
        if i % 3:
            vec["b"] = rng.standard_normal(3).astype(np.float32)
        payload = None if i % 5 == 4 else {
            "i": i, "big": 2**64 - 1 - i, "f": 0.25 * i, "neg": -0.0, "t": "é😀" * (i % 3),
            "n": {"l": [1, None, {"x": True}]}}
        points.append({"id": pid, "vector": vec, "payload": payload})
    return points


def jsonl(path: Path, points: list[dict[str, Any]]) -> str:
    rows = []
    for p in points:
        rows.append(orjson.dumps({"id": p["id"], "payload": p["payload"],
                                  "vector": {k: v.tolist() for k, v in p["vector"].items()}}))
    path.write_bytes(b"\n".join(rows) + b"\n")
    return str(path)


def as_stored(points: list[dict[str, Any]]) -> dict[Any, Any]:
    """What any exact copy holds: ids as given, no payload and {} alike."""
    return normalize([{**p, "payload": p["payload"] or {}} for p in points])


# ------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_dense_streams_round_trip_exactly(tmp_path: Path, batch: int) -> None:
    pytest.importorskip("vecferry.converters.jsonl")
    pytest.importorskip("vecferry.converters.parquet")
    points = dense_points()
    want = as_stored(points)
    src = jsonl(tmp_path / "in.jsonl", points)
    mid = str(tmp_path / "mid.parquet")
    vecferry.convert(src, mid, batch_size=batch)
    edge = tmp_path / "shard"
    report = vecferry.convert(mid, f"qdrant-edge://{edge}", batch_size=batch)
    assert report["written"] == len(points) and report["points_in_collection"] == len(points)
    # inside the engine: mapped ids carry the original in the payload
    inside = dump_edge(edge)
    assert len(inside) == len(points)
    assert any(DEFAULT_ID_FIELD in orjson.loads(v[1]) for v in inside.values())
    # Edge -> Parquet -> local mode -> Parquet, all exact
    back = str(tmp_path / "back.parquet")
    vecferry.convert(f"qdrant-edge://{edge}", back, batch_size=batch)
    assert dump_stream(back) == want
    local = f"qdrant-local://{tmp_path / 'q'}/docs"
    vecferry.convert(back, local, batch_size=batch)
    assert dump_stream(local) == want
    again = str(tmp_path / "again.parquet")
    vecferry.convert(local, again, batch_size=batch)
    assert dump_stream(again) == want
    assert dump_stream(f"qdrant-edge://{edge}", page_size=5) == want


def test_edge_fast_writer_matches_qdrant_client_view(tmp_path: Path) -> None:
    """The same points written to Edge (fast path) and to local mode (general path) are the
    same points, read with each engine's own client."""
    pytest.importorskip("vecferry.converters.jsonl")
    points = [p for p in dense_points() if isinstance(p["id"], int) or p["id"][0] != "d"]
    src = jsonl(tmp_path / "in.jsonl", points)
    vecferry.convert(src, f"qdrant-edge://{tmp_path / 'e'}", batch_size=6)
    vecferry.convert(src, f"qdrant-local://{tmp_path / 'q'}/docs", batch_size=6)
    assert dump_edge(tmp_path / "e") == dump_local(tmp_path / "q") == as_stored(points)


# ----------------------------------------------------------------- reader: DenseColumns


def manifest(id_kind: str = "mixed") -> Manifest:
    return Manifest(vectors=[VectorSpec("a", size=4), VectorSpec("b", size=2)], id_kind=id_kind)


def build(cls: type, points: list[tuple[Any, dict[str, Any], Any]], batch_size: int,
          m: Manifest) -> tuple[list[pa.RecordBatch], list[tuple[str, Any]]]:
    rejects: list[RecordError] = []
    ctx = Context(on_error="skip", sink=rejects.append)
    builder = cls(m, ctx, source="test")
    out = []
    for row, (pid, vec, payload) in enumerate(points):
        builder.add({"id": pid, "vector": vec, "payload": payload}, row=row)
        if len(builder) >= batch_size:
            b = builder.flush()
            if b is not None:
                out.append(b)
    b = builder.flush()
    if b is not None:
        out.append(b)
    return out, [(e.message, e.location.row, orjson.dumps(e.raw, option=orjson.OPT_SERIALIZE_NUMPY)
                  ) for e in rejects]


def regular_points() -> list[tuple[Any, dict[str, Any], Any]]:
    rng = np.random.default_rng(1)
    pts = []
    for i in range(23):
        vec: dict[str, Any] = {"a": [float(x) for x in rng.standard_normal(4).astype(np.float32)]}
        if i % 2:
            vec["b"] = [-0.0, float(np.float32(1e-45))]
        pid = i if i % 3 else str(uuid.UUID(int=i + 9))
        pts.append((pid, vec, None if i % 4 == 3 else {"i": i, "big": 2**70}))
    return pts


def assert_same(a: list[pa.RecordBatch], b: list[pa.RecordBatch]) -> None:
    assert [x.num_rows for x in a] == [x.num_rows for x in b]
    for x, y in zip(a, b, strict=True):
        assert x.schema == y.schema
        assert x.equals(y)
        for name in x.schema.names:
            cx, cy = x.column(name), y.column(name)
            if pa.types.is_fixed_size_list(cx.type):  # bits, not float equality
                assert cx.is_valid().equals(cy.is_valid())
                vx = cx.filter(cx.is_valid()).flatten().to_numpy().view(np.uint32)
                vy = cy.filter(cy.is_valid()).flatten().to_numpy().view(np.uint32)
                assert np.array_equal(vx, vy)


@pytest.mark.parametrize("batch_size", [1, 5, 50])
def test_dense_columns_equal_batch_builder(batch_size: int) -> None:
    m = manifest()
    assert DenseColumns.fits(m)
    fast, r1 = build(DenseColumns, regular_points(), batch_size, m)
    slow, r2 = build(BatchBuilder, regular_points(), batch_size, m)
    assert r1 == r2 == []
    assert_same(fast, slow)


@pytest.mark.parametrize("batch_size", [3, 50])
def test_dense_columns_hand_irregular_points_to_batch_builder(batch_size: int) -> None:
    m = manifest()
    pts = regular_points()
    pts[2] = (pts[2][0], {"a": [1.0, 2.0, 3.0]}, None)                 # wrong length
    pts[5] = (pts[5][0], {"a": [1.0, float("nan"), 0.0, 0.0]}, {"k": 1})  # NaN
    pts[8] = (pts[8][0], {"a": [1.0, "x", 0.0, 0.0]}, None)             # not a number
    pts[11] = (pts[11][0], {"c": [1.0, 2.0]}, None)                     # unknown vector
    pts[14] = (pts[14][0], {"a": [1e300, 0.0, 0.0, 0.0]}, None)         # outside float32
    pts[16] = (pts[16][0], {}, None)              # no vector: taken (named ones are optional)
    pts[19] = ("7", pts[19][1], None)                                   # ambiguous in mixed
    pts[21] = (pts[21][0], {"a": [float("inf"), 0.0, 0.0, 0.0]}, None)  # infinity
    fast, r1 = build(DenseColumns, pts, batch_size, m)
    slow, r2 = build(BatchBuilder, pts, batch_size, m)
    assert len(r2) == 7
    assert r1 == r2
    assert_same(fast, slow)


def test_dense_columns_not_used_for_other_kinds() -> None:
    assert not DenseColumns.fits(Manifest(vectors=[VectorSpec("a", size=4, datatype="float16")]))
    assert not DenseColumns.fits(Manifest(vectors=[VectorSpec("s", kind="sparse")]))
    assert not DenseColumns.fits(Manifest(vectors=[VectorSpec("a", size=2),
                                                   VectorSpec("m", kind="multi", size=2)]))


# --------------------------------------------------------------- Edge writer: row views


def stream_batch(points: list[dict[str, Any]], m: Manifest) -> pa.RecordBatch:
    builder = BatchBuilder(m, Context(), source="test")
    for row, p in enumerate(points):
        assert builder.add({**p, "vector": {k: v.tolist() for k, v in p["vector"].items()}},
                           row=row)
    batch = builder.flush()
    assert batch is not None
    return batch


def general_and_fast(tmp_path: Path, batch: pa.RecordBatch, on_error: str = "fail"
                     ) -> tuple[Any, Any, list[RecordError]]:
    rejects: list[RecordError] = []
    w = open_writer(f"qdrant-edge://{tmp_path / 'w'}", batch.schema,
                    context=Context(on_error=on_error, sink=rejects.append))
    try:
        fast = w._row_view_points(batch)
        w.backend.row_views = False
        general = w._points(batch)
        # what the engine is handed: Edge points, built the same way for both
        prepare = w.backend.prepare
        if fast is not None:
            fast = list(zip(prepare([p for p, _ in fast]), [o for _, o in fast], strict=True))
        general = list(zip(prepare([p for p, _ in general]), [o for _, o in general],
                           strict=True))
    finally:
        w.abort()
    return fast, general, rejects


def canon(items: list[tuple[Any, Any]]) -> list[Any]:
    """Edge points as (id type, id, vector bits by name, payload JSON, original id)."""
    out = []
    for point, original in items:
        vec = point.vector
        vec = {k: bytes(np.asarray(v, dtype=np.float32).tobytes()) for k, v in
               (vec.items() if isinstance(vec, dict) else [("", vec)])}
        payload = point.payload
        out.append((type(point.id), point.id, vec, orjson.dumps(
            payload, option=orjson.OPT_SORT_KEYS) if payload is not None else None,
            type(original), original))
    return out


def test_row_view_points_equal_general_points(tmp_path: Path) -> None:
    m = Manifest(vectors=[VectorSpec("a", size=8), VectorSpec("b", size=3)], id_kind="mixed")
    batch = stream_batch(dense_points(), m).slice(3)  # an offset into the buffers, too
    fast, general, _ = general_and_fast(tmp_path, batch)
    assert fast is not None
    assert canon(fast) == canon(general)
    assert len(fast) == batch.num_rows


def test_row_view_points_leave_rejects_to_the_general_path(tmp_path: Path) -> None:
    m = Manifest(vectors=[VectorSpec("", size=2)], id_kind="string")
    pts = [{"id": "doc-1", "vector": {"": np.array([1, 2], np.float32)},
            "payload": {DEFAULT_ID_FIELD: "someone else"}},
           {"id": "doc-2", "vector": {"": np.array([3, 4], np.float32)}, "payload": None}]
    fast, general, rejects = general_and_fast(tmp_path, stream_batch(pts, m), on_error="skip")
    assert fast is None
    assert [o for _, o in general] == ["doc-2"] and len(rejects) == 1
    # the builder refuses NaN, but a Parquet file can hold it
    nan_batch = pa.RecordBatch.from_arrays(
        [pa.array([1], pa.uint64()),
         pa.FixedSizeListArray.from_arrays(pa.array(np.array([np.nan, 4], np.float32)), 2),
         pa.array([None], pa.string())],
        schema=Manifest(vectors=[VectorSpec("", size=2)], id_kind="int").schema())
    fast, general, rejects = general_and_fast(tmp_path, nan_batch, on_error="skip")
    assert fast is None and general == [] and len(rejects) == 1


def test_payload_parsing_matches_json_loads() -> None:
    from vecferry.converters.qdrant import loads_payload

    for text in ['{"a":1,"a":2}', '{"x":1.0000000000000002,"y":1e-320,"z":-0.0}',
                 '{"n":123456789012345678901234567890,"m":-5}', '{"f":NaN}',
                 '[18446744073709551616,-9223372036854775809,18446744073709551615,1e400]',
                 '{"a":"1234567890123456789012"}', '[1E5,0.1e-400,-9223372036854775808]',
                 '{"s":"\\ud800"}', '{"u":"\\u00e9\\ud83d\\ude00"}', '[]']:
        import json

        got, want = loads_payload(text), json.loads(text)
        assert repr(got) == repr(want)
        assert [type(v) for v in (got.values() if isinstance(got, dict) else got)] == \
            [type(v) for v in (want.values() if isinstance(want, dict) else want)]


# --------------------------------------------------------------------------- local mode


def test_local_load_leaves_the_usual_journal(tmp_path: Path) -> None:
    pytest.importorskip("vecferry.converters.jsonl")
    points = [p for p in dense_points(12) if isinstance(p["id"], int)]
    src = jsonl(tmp_path / "in.jsonl", points)
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    vecferry.convert(src, dst, batch_size=5)
    vecferry.convert(src, dst, batch_size=3)  # append into the existing file
    db = tmp_path / "q" / "collection" / "docs" / "storage.sqlite"
    assert not Path(str(db) + "-wal").exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert dump_local(tmp_path / "q") == as_stored(points)
    reader = open_reader(dst)
    try:
        assert reader.count() == len(points)
    finally:
        reader.close()
