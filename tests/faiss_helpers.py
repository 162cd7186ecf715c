"""Small real FAISS indexes for the FAISS tests: N=37 points, dim 8, non-sequential int64 ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from vecferry.converters.base import Context
from vecferry.converters.faiss_index import FaissReader

N = 37
D = 8
#: ids that are neither positions nor sorted; several above 2^32, one near 2^63
IDS = np.array(
    [(i * 7919 + 13) % 1000 for i in range(30)]
    + [2**32 + 1, 2**32 + 77, 2**40 + 3, 5 * 2**33, 2**62 + 9, 2**63 - 1, 4_000_000_001],
    dtype=np.int64,
)
assert len(set(IDS.tolist())) == N


def vectors(seed: int = 0, n: int = N, d: int = D, unit: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    if unit:
        faiss.normalize_L2(x)
    return x


def binary_vectors(seed: int = 0, n: int = N, d: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, d // 8), dtype=np.uint8)


def _train_set(x: np.ndarray) -> np.ndarray:
    # enough points that k-means with a few centroids does not complain
    rng = np.random.default_rng(99)
    reps = np.concatenate([x] * 12)
    return (reps + rng.standard_normal(reps.shape).astype(np.float32) * 0.01).astype(np.float32)


#: exact float index kinds: factory string, whether ids come from add_with_ids
EXACT = {
    "flat": ("Flat", False),
    "idmap_flat": ("IDMap,Flat", True),
    "idmap2_flat": ("IDMap2,Flat", True),
    "hnsw": ("HNSW4", False),
    "idmap2_hnsw": ("IDMap2,HNSW4", True),
    "ivfflat": ("IVF3,Flat", True),
    "idmap_ivfflat": ("IDMap,IVF3,Flat", True),
    "refine": ("IVF3,PQ2x4,RFlat", False),
}
LOSSY = {
    "pq": "PQ2x4",
    "sq8": "SQ8",
    "ivfpq": "IVF3,PQ2x4",
    "ivfsq": "IVF3,SQ8",
    "hnsw_sq": "HNSW4,SQ8",
    "pca": "PCA4,Flat",
    "idmap_pca_ivf": "IDMap,PCA6,IVF3,Flat",
}


def build(path: Path, factory: str, *, with_ids: bool = True, x: np.ndarray | None = None,
          ids: np.ndarray | None = None, metric: int = faiss.METRIC_L2) -> tuple[Any, str]:
    """Build, fill and save one float index; returns (index, path)."""
    x = vectors() if x is None else x
    index = faiss.index_factory(x.shape[1], factory, metric)
    if not index.is_trained:
        index.train(_train_set(x))
    if with_ids:
        index.add_with_ids(x, IDS if ids is None else ids)
    else:
        index.add(x)
    faiss.write_index(index, str(path))
    return index, str(path)


def build_binary(path: Path, kind: str, xb: np.ndarray | None = None) -> tuple[Any, str]:
    xb = binary_vectors() if xb is None else xb
    d = xb.shape[1] * 8
    if kind == "flat":
        index = faiss.IndexBinaryFlat(d)
        index.add(xb)
    elif kind == "idmap2":
        index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(d))
        index.add_with_ids(xb, IDS)
    elif kind == "ivf":
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, 2)
        index.cp.min_points_per_centroid = 1
        index.train(np.concatenate([xb] * 5))
        index.add_with_ids(xb, IDS)
    elif kind == "hnsw":
        index = faiss.IndexBinaryHNSW(d, 4)
        index.add(xb)
    else:
        raise ValueError(kind)
    faiss.write_index_binary(index, str(path))
    return index, str(path)


def read_all(path: str, batch_size: int = 10, context: Context | None = None,
             **options: Any) -> tuple[np.ndarray, np.ndarray, list[Any], FaissReader, list[int]]:
    """(ids, vectors, payloads, reader, batch sizes) of a whole index read through FaissReader."""
    reader = FaissReader(path, context=context or Context(), **options)
    batches = list(reader.batches(batch_size))
    sizes = [b.num_rows for b in batches]
    spec = reader.manifest.vectors[0]
    ids = np.concatenate([b.column("id").to_numpy() for b in batches]) if batches else \
        np.zeros(0, np.uint64)
    vecs = np.concatenate([
        b.column(spec.column).flatten().to_numpy().reshape(-1, spec.size) for b in batches
    ]) if batches else np.zeros((0, spec.size))
    payloads = [p for b in batches for p in b.column("payload").to_pylist()]
    reader.close()
    return ids, vecs, payloads, reader, sizes


def by_id(ids: Any, vecs: np.ndarray) -> dict[Any, bytes]:
    """{id: exact vector bytes}, to compare two streams in any order."""
    return {i if isinstance(i, str) else int(i): v.tobytes()
            for i, v in zip(ids, vecs, strict=True)}


def converted_index(directory: Path, *, ids: str = "strings", payloads: bool = True,
                    name: str = "i.faiss") -> str:
    """An index vecferry wrote (with its sidecars) from N points of JSONL: string ids
    ``doc-<i>`` or the integer ids ``IDS``, payloads ``{"i": i}`` on every point or none."""
    import orjson

    import vecferry

    src = directory / f"{name}.src.jsonl"
    src.write_bytes(b"".join(
        orjson.dumps({"id": f"doc-{i}" if ids == "strings" else int(IDS[i]),
                      "vector": v.tolist(), **({"payload": {"i": i}} if payloads else {})})
        + b"\n" for i, v in enumerate(vectors())))
    index = str(directory / name)
    vecferry.convert(str(src), index)
    return index
