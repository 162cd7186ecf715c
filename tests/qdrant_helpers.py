"""Shared pieces of the Qdrant tests: a source collection with every vector kind and id kind,
and exact dumps of a collection (ids with their types, vector bits, payloads)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

N, DIM, MDIM = 37, 8, 3


def source_points(n: int = N, seed: int = 7) -> list[dict[str, Any]]:
    """Points with a named dense vector ``d`` on every point, a sparse ``s`` on odd points and a
    multivector ``mv`` on every fifth, ids mixing integers and UUIDs (some starting with 0),
    payloads with a big integer, nesting and text."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        pid: Any = i * 11 if i % 3 else str(uuid.UUID(int=int(rng.integers(1 << 62)) * (i + 1)))
        vec: dict[str, Any] = {"d": rng.standard_normal(DIM).astype(np.float32)}
        if i % 2:
            vec["s"] = {"indices": [1, 5 + i], "values": [0.5, float(np.float32(i / 3))]}
        if i % 5 == 0:
            vec["mv"] = rng.standard_normal((1 + i % 3, MDIM)).astype(np.float32)
        payload = {"i": i, "big": 2**63 + i, "lang": ["en", "de", "fr"][i % 3],
                   "nested": {"a": [1, {"b": None}]}, "t": "é" * (i % 4)}
        points.append({"id": pid, "vector": vec, "payload": payload})
    return points


def make_local(folder: Path, name: str = "docs", points: list[dict[str, Any]] | None = None,
               distance: str = "Dot") -> str:
    """A qdrant-client local-mode collection holding ``points``; returns its location."""
    from qdrant_client import QdrantClient, models

    points = source_points() if points is None else points
    client = QdrantClient(path=str(folder))
    try:
        client.create_collection(
            name,
            vectors_config={
                "d": models.VectorParams(size=DIM, distance=distance, on_disk=True),
                "mv": models.VectorParams(size=MDIM, distance="Euclid",
                                          multivector_config=models.MultiVectorConfig(
                                              comparator="max_sim")),
            },
            sparse_vectors_config={"s": models.SparseVectorParams(modifier="idf")},
            hnsw_config=models.HnswConfigDiff(m=24, ef_construct=64),
        )
        structs = []
        for p in points:
            vec = {}
            for k, v in p["vector"].items():
                vec[k] = (models.SparseVector(**v) if isinstance(v, dict) else v.tolist())
            structs.append(models.PointStruct(id=p["id"], vector=vec, payload=p["payload"]))
        client.upsert(name, structs)
    finally:
        client.close()
    return f"qdrant-local://{folder}/{name}"


def _norm_vector(value: Any) -> Any:
    if isinstance(value, dict):
        return ("sparse", tuple(value["indices"]),
                np.asarray(value["values"], dtype=np.float32).tobytes())
    arr = np.asarray(value, dtype=np.float32)
    return (arr.shape, arr.tobytes())


def normalize(points: list[dict[str, Any]]) -> dict[Any, Any]:
    """{(id type, id): (vectors by name as exact bytes, canonical payload JSON)}."""
    out = {}
    for p in points:
        vec = p["vector"] if isinstance(p["vector"], dict) else {"": p["vector"]}
        key = (type(p["id"]).__name__, p["id"])
        out[key] = ({k: _norm_vector(v) for k, v in vec.items() if v is not None},
                    orjson.dumps(p.get("payload") or {}, option=orjson.OPT_SORT_KEYS))
    return out


def dump_stream(location: str, **reader_options: Any) -> dict[Any, Any]:
    """Every point of any vecferry location, normalized (reads through vecferry's reader)."""
    from vecferry.converters import open_reader
    from vecferry.points import iter_points
    from vecferry.stream import manifest_of

    reader = open_reader(location, **reader_options)
    try:
        manifest = manifest_of(reader.schema)
        points = [p for b in reader.batches(16) for p in iter_points(b, manifest)]
    finally:
        reader.close()
    return normalize(points)


def dump_local(folder: Path, name: str = "docs") -> dict[Any, Any]:
    """A local-mode collection read with qdrant-client itself (not vecferry)."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    try:
        records, _ = client.scroll(name, limit=100_000, with_vectors=True)
    finally:
        client.close()
    points = []
    for r in records:
        vec = {k: ({"indices": v.indices, "values": v.values}
                   if isinstance(v, models.SparseVector) else v)
               for k, v in (r.vector or {}).items()}
        points.append({"id": r.id, "vector": vec, "payload": r.payload})
    return normalize(points)


def dump_edge(path: Path) -> dict[Any, Any]:
    """An Edge shard read with qdrant-edge itself (not vecferry)."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.load(str(path))
    try:
        records, _ = shard.scroll(qe.ScrollRequest(limit=100_000, with_payload=True,
                                                   with_vector=True))
    finally:
        shard.close()
    points = []
    for r in records:
        vec = {k: ({"indices": list(v.indices), "values": list(v.values)}
                   if isinstance(v, qe.SparseVector) else v)
               for k, v in (r.vector or {}).items()}
        pid = str(r.id) if isinstance(r.id, uuid.UUID) else r.id
        points.append({"id": pid, "vector": vec, "payload": r.payload})
    return normalize(points)


def edge_shards(base: Path, *, whole: bool = False) -> dict[str, Any]:
    """Qdrant Edge shards of ``source_points()`` under ``base``: its int ids (``ints``), its
    UUIDs (``uuids``) and with ``whole`` all of them (``all``), loaded through local mode;
    with the points themselves (``points``, ``int_points``, ``uuid_points``, ``n_ints``)."""
    import vecferry

    def shard(folder: Path, points: list[dict[str, Any]]) -> Path:
        vecferry.convert(make_local(folder / "local", points=points),
                         f"qdrant-edge://{folder / 'edge'}")
        return folder / "edge"

    pts = source_points()
    ints = [p for p in pts if isinstance(p["id"], int)]
    uuids = [p for p in pts if not isinstance(p["id"], int)]
    out: dict[str, Any] = {"ints": shard(base / "ints", ints),
                           "uuids": shard(base / "uuids", uuids), "points": pts,
                           "int_points": ints, "uuid_points": uuids, "n_ints": len(ints)}
    if whole:
        out["all"] = shard(base / "all", pts)
    return out


def create_snapshot(stand: Any) -> dict[str, Any]:
    """A snapshot made on the stand-in ``stand``'s collection ``docs``: its description."""
    from vecferry.snapshots import SnapshotClient

    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
    assert snap is not None
    return snap


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` under ``dst`` (keeps sparse files sparse, copies
    nothing)."""
    import os

    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
