"""Proof that a migration lost nothing: counts, digests, a per-id diff and search parity.

``verify(src, dst)`` reads each side once, computing its digest (``vecferry.digest``) and
spilling ``(id hash, id, vector hash, payload hash)`` per point to hash partitions on disk.
Equal counts and digests prove the two sides hold the same points; otherwise the partitions
are joined one at a time to name the ids missing on either side and the ids whose vector or
payload differs, with memory bounded by one partition (``memory_rows``), not by the id set.

``verify(archive)`` with one location recomputes the digest a file writer recorded in the
manifest and compares, proving a file intact without its source; it also counts duplicate ids.

Search parity samples query vectors from the source and compares the top-k ids on both sides
(a reader's own ``search`` when it has one, FAISS or Qdrant, else exact brute force over the
stream); recall@k must reach ``min_recall``. A side with its own search also reports latency.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from vecferry.converters import open_reader, resolve
from vecferry.converters.base import Context
from vecferry.digest import ALGORITHM, StreamDigest, point_hashes, point_parts
from vecferry.errors import UsageError
from vecferry.stream import ID_COLUMN, Manifest, decode_ids, manifest_of

DEFAULT_MIN_RECALL = 0.99
MEMORY_ROWS = 2_000_000
EXAMPLES = 10
_SPILL = pa.schema([("key", pa.uint64()), ("id", pa.string()), ("hv", pa.uint64()),
                    ("hp", pa.uint64()), ("vec", pa.binary())])


class _Spill:
    """Hash partitions of per-point records for one side."""

    def __init__(self, directory: Path, side: str, partitions: int):
        self.dir, self.side, self.partitions = directory, side, partitions
        self.writers: dict[int, ipc.RecordBatchStreamWriter] = {}

    def add(self, keys: np.ndarray, ids: list[Any], hv: np.ndarray, hp: np.ndarray,
            vecs: list[bytes] | None) -> None:
        part = (keys % np.uint64(self.partitions)).astype(np.int64)
        batch = pa.record_batch([
            pa.array(keys, pa.uint64()),
            pa.array([json.dumps(i) for i in ids], pa.string()),
            pa.array(hv, pa.uint64()), pa.array(hp, pa.uint64()),
            pa.array(vecs if vecs is not None else [None] * len(keys), pa.binary()),
        ], schema=_SPILL)
        for p in np.unique(part):
            w = self.writers.get(int(p))
            if w is None:
                w = ipc.new_stream(str(self.dir / f"{self.side}-{p}.arrow"), _SPILL)
                self.writers[int(p)] = w
            w.write_batch(batch.filter(pa.array(part == p)))

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def load(self, p: int) -> pa.Table:
        path = self.dir / f"{self.side}-{p}.arrow"
        if not path.exists():
            return _SPILL.empty_table()
        with ipc.open_stream(str(path)) as r:
            return r.read_all()


class _Side:
    """One location being verified: its reader, digest, count and duplicate ids."""

    def __init__(self, location: str, fmt: str | None, options: dict[str, Any]):
        self.location = location
        self.format = resolve(location, fmt).name
        self.reader = open_reader(location, format=self.format, context=Context("fail"),
                                  **options)
        self.manifest: Manifest = manifest_of(self.reader.schema)
        self.digest = StreamDigest(self.manifest)
        self.duplicates = 0
        self.duplicate_examples: list[Any] = []

    def close(self) -> None:
        self.reader.close()

    def report(self) -> dict[str, Any]:
        return {"location": self.location, "format": self.format, "count": self.digest.count,
                "digest": self.digest.as_dict()["value"], "duplicate_ids": self.duplicates,
                "duplicate_examples": self.duplicate_examples}


def _canonical_vectors(batch: pa.RecordBatch, manifest: Manifest) -> list[bytes]:
    """Each point's dense vectors as float32 bytes (name order), for tolerance comparison."""
    parts = []
    for spec in sorted(manifest.vectors, key=lambda v: v.name):
        if spec.kind != "dense":
            continue
        col = batch.column(spec.column)
        if col.null_count:
            col = col.fill_null(pa.scalar([float("nan")] * spec.size, col.type))
        mat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(
            len(col), spec.size)
        parts.append(mat)
    if not parts:
        return [b""] * batch.num_rows
    full = np.concatenate(parts, axis=1)
    return [row.tobytes() for row in full]


def _scan(side: _Side, spill: _Spill | None, batch_size: int, tolerance: float | None,
          on_batch: Any = None) -> None:
    for batch in side.reader.batches(batch_size):
        hid, hv, hp = point_parts(batch, side.manifest)
        side.digest.total = (side.digest.total + int(point_hashes(hid, hv, hp).sum(
            dtype=np.uint64))) % 2**64
        side.digest.count += batch.num_rows
        if spill is not None:
            ids = decode_ids(batch.column(ID_COLUMN), side.manifest.id_kind)
            vecs = _canonical_vectors(batch, side.manifest) if tolerance is not None else None
            spill.add(hid, ids, hv, hp, vecs)
        if on_batch is not None:
            on_batch(batch)
    if spill is not None:
        spill.close()


def _dedupe(table: pa.Table, side: _Side) -> pa.Table:
    """The last record of each id (what a Qdrant upsert keeps); counts repeated ids."""
    if table.num_rows == 0:
        return table
    counts = pc.value_counts(table.column("key").combine_chunks())
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dup) == 0:
        return table
    side.duplicates += len(dup)
    keep = np.ones(table.num_rows, dtype=bool)
    seen: set[int] = set()
    keys = table.column("key").to_numpy()
    dup_keys = set(dup.field("values").to_pylist())
    for i in range(len(keys) - 1, -1, -1):
        k = int(keys[i])
        if k in dup_keys:
            if k in seen:
                keep[i] = False
            else:
                seen.add(k)
                if len(side.duplicate_examples) < EXAMPLES:
                    side.duplicate_examples.append(json.loads(table.column("id")[i].as_py()))
    return table.filter(pa.array(keep))


def _compare_partitions(src: _Side, dst: _Side, s_spill: _Spill, d_spill: _Spill,
                        tolerance: float | None, diff_path: str | None) -> dict[str, Any]:
    found = {"missing_in_destination": 0, "extra_in_destination": 0, "vector_differs": 0,
             "payload_differs": 0}
    examples: dict[str, list[Any]] = {k: [] for k in found}
    max_err = 0.0
    largest = 0
    out = open(diff_path, "w", encoding="utf-8") if diff_path else None  # noqa: SIM115
    try:
        for p in range(s_spill.partitions):
            a = _dedupe(s_spill.load(p), src)
            b = _dedupe(d_spill.load(p), dst)
            largest = max(largest, a.num_rows, b.num_rows)
            ka, kb = a.column("key").to_numpy(), b.column("key").to_numpy()
            ia = {int(k): i for i, k in enumerate(ka)}
            ib = {int(k): i for i, k in enumerate(kb)}
            rows: list[tuple[str, str]] = []
            for k, i in ia.items():
                if k not in ib:
                    rows.append(("missing_in_destination", a.column("id")[i].as_py()))
                    continue
                j = ib[k]
                if a.column("hp")[i].as_py() != b.column("hp")[j].as_py():
                    rows.append(("payload_differs", a.column("id")[i].as_py()))
                if a.column("hv")[i].as_py() != b.column("hv")[j].as_py():
                    if tolerance is not None:
                        va = np.frombuffer(a.column("vec")[i].as_py(), np.float32)
                        vb = np.frombuffer(b.column("vec")[j].as_py(), np.float32)
                        err = float(np.max(np.abs(va - vb))) if va.size == vb.size else math.inf
                        max_err = max(max_err, err)
                        if err <= tolerance:
                            continue
                    rows.append(("vector_differs", a.column("id")[i].as_py()))
            for k, j in ib.items():
                if k not in ia:
                    rows.append(("extra_in_destination", b.column("id")[j].as_py()))
            for kind, id_text in rows:
                found[kind] += 1
                if len(examples[kind]) < EXAMPLES:
                    examples[kind].append(json.loads(id_text))
                if out is not None:
                    out.write(f'{{"id":{id_text},"status":"{kind}"}}\n')
    finally:
        if out is not None:
            out.close()
    return {**found, "examples": {k: v for k, v in examples.items() if v},
            "largest_partition_rows": largest,
            **({"max_abs_error": max_err} if tolerance is not None else {})}


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


def _scores(queries: np.ndarray, mat: np.ndarray, distance: str) -> np.ndarray:
    """Higher is better, shape (queries, rows)."""
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
    """Exact top-k over a stream, memory bounded by k and the batch."""

    def __init__(self, queries: np.ndarray, k: int, column: str, distance: str, id_kind: str):
        self.q, self.k, self.column, self.distance, self.id_kind = (
            queries.astype(np.float64), k, column, distance, id_kind)
        self.best_scores = np.full((len(queries), 0), -np.inf)
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
        scores = np.concatenate([self.best_scores, _scores(self.q, mat, self.distance)], axis=1)
        for qi in range(len(self.q)):
            pool_ids = self.best_ids[qi] + ids
            top = np.argsort(-scores[qi], kind="stable")[: self.k]
            self.best_ids[qi] = [pool_ids[t] for t in top]
        width = min(self.k, scores.shape[1])
        self.best_scores = np.stack([np.sort(scores[qi])[::-1][:width]
                                     for qi in range(len(self.q))])

    def result(self) -> list[list[Any]]:
        return self.best_ids


def _percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.array(ms)
    return {f"p{p}": round(float(np.percentile(arr, p)), 3) for p in (50, 95, 99)}


def _search_side(side: _Side, queries: np.ndarray, k: int, vector: str, distance: str,
                 batch_size: int, fmt_options: dict[str, Any]) -> tuple[list[list[Any]],
                                                                        dict | None]:
    search = getattr(side.reader, "search", None)
    if search is not None:
        results, latencies = [], []
        for q in queries:
            t0 = time.perf_counter()
            results.append(search(q[None, :], k, vector)[0])
            latencies.append((time.perf_counter() - t0) * 1000)
        return results, _percentiles(latencies)
    # No index: exact search over a fresh pass of the stream.
    reader = open_reader(side.location, format=side.format, context=Context("fail"),
                         **fmt_options)
    try:
        spec = side.manifest.vector(vector)
        brute = _BruteForce(queries, k, spec.column, distance, side.manifest.id_kind)
        for batch in reader.batches(batch_size):
            brute(batch)
        return brute.result(), None
    finally:
        reader.close()


def _pick_vector(src: Manifest, dst: Manifest | None, name: str | None) -> str | None:
    dense_src = [v.name for v in src.vectors if v.kind == "dense"]
    if name is not None:
        if name not in dense_src:
            raise UsageError(f"no dense vector named {name!r} (dense vectors: {dense_src})")
        return name
    for n in dense_src:
        if dst is None or any(v.name == n and v.kind == "dense" for v in dst.vectors):
            return n
    return None


def verify(src: str, dst: str | None = None, *, from_format: str | None = None,
           to_format: str | None = None, queries: int = 10, k: int = 10,
           tolerance: float | None = None, diff: str | None = None,
           min_recall: float = DEFAULT_MIN_RECALL, vector: str | None = None,
           memory_rows: int = MEMORY_ROWS, batch_size: int = 4096,
           src_options: dict[str, Any] | None = None,
           dst_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare ``src`` with ``dst`` (or ``src`` with its recorded digest); return a report.

    ``report["ok"]`` is True only when everything matches; ``report["problems"]`` says what
    does not. Raises the readers' errors for unreadable input (it never reports a broken file
    as "different" when it cannot read it).
    """
    if k <= 0 or queries < 0:
        raise UsageError("k must be positive and queries not negative")
    if dst is None:
        return _verify_archive(src, from_format, batch_size, src_options or {})
    started = time.perf_counter()
    a = _Side(src, from_format, src_options or {})
    b = _Side(dst, to_format, dst_options or {})
    tmp = Path(tempfile.mkdtemp(prefix="vecferry-verify-"))
    problems: list[str] = []
    try:
        counts = [c for c in (a.reader.count(), b.reader.count()) if c is not None]
        partitions = max(1, math.ceil(max(counts, default=memory_rows * 8) / memory_rows))
        sa, sb = _Spill(tmp, "src", partitions), _Spill(tmp, "dst", partitions)
        name = _pick_vector(a.manifest, b.manifest, vector) if queries else None
        reservoir = _Reservoir(queries, a.manifest.vector(name).column) if name is not None \
            else None
        _scan(a, sa, batch_size, tolerance, reservoir)
        _scan(b, sb, batch_size, tolerance)
        if a.digest.count != b.digest.count:
            problems.append(f"counts differ: source {a.digest.count}, destination "
                            f"{b.digest.count}")
        same = a.digest.total == b.digest.total and a.digest.count == b.digest.count
        details: dict[str, Any] = {}
        if not same:
            details = _compare_partitions(a, b, sa, sb, tolerance, diff)
            for key in ("missing_in_destination", "extra_in_destination", "vector_differs",
                        "payload_differs"):
                if details[key]:
                    shown = ", ".join(map(repr, details["examples"].get(key, [])))
                    problems.append(f"{details[key]} {key.replace('_', ' ')}: {shown}")
            if tolerance is None and not problems:
                problems.append("digests differ")
        search: dict[str, Any] | None = None
        if reservoir is not None and len(reservoir.queries()):
            search = _parity(a, b, reservoir.queries(), k, name, min_recall, batch_size,
                             src_options or {}, dst_options or {})
            if not search["ok"]:
                problems.append(f"search parity: recall@{k} {search['recall']:.4f} < "
                                f"{min_recall}")
    finally:
        a.close()
        b.close()
        shutil.rmtree(tmp, ignore_errors=True)
    warnings = [f"{side.duplicates} duplicate id(s) in the {label} (compared by their last "
                f"record): " + ", ".join(map(repr, side.duplicate_examples))
                for side, label in ((a, "source"), (b, "destination")) if side.duplicates]
    return {
        "ok": not problems,
        "problems": problems,
        "warnings": warnings,
        "source": a.report(),
        "destination": b.report(),
        "digests_match": a.digest.total == b.digest.total,
        "counts_match": a.digest.count == b.digest.count,
        **({"diff": details} if details else {}),
        **({"diff_file": diff} if diff and details else {}),
        **({"search": search} if search else {}),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _parity(a: _Side, b: _Side, queries: np.ndarray, k: int, vector: str, min_recall: float,
            batch_size: int, a_opts: dict[str, Any], b_opts: dict[str, Any]) -> dict[str, Any]:
    spec_b = next((v for v in b.manifest.vectors if v.name == vector), None)
    spec_a = a.manifest.vector(vector)
    # One metric for both sides: the index's own when there is one, so brute force agrees.
    distance = (spec_b.distance if spec_b and spec_b.distance else spec_a.distance) or "Euclid"
    ra, la = _search_side(a, queries, k, vector, distance, batch_size, a_opts)
    rb, lb = _search_side(b, queries, k, vector, distance, batch_size, b_opts)
    recalls = [len({json.dumps(i) for i in x} & {json.dumps(i) for i in y}) / max(1, len(x))
               for x, y in zip(ra, rb, strict=True)]
    recall = float(np.mean(recalls)) if recalls else 1.0
    out: dict[str, Any] = {"queries": len(queries), "k": k, "vector": vector or "(unnamed)",
                           "distance": distance, "recall": round(recall, 6),
                           "min_recall": min_recall, "ok": recall >= min_recall}
    latency = {label: lat for label, lat in (("source", la), ("destination", lb)) if lat}
    if latency:
        out["latency_ms"] = latency
    return out


def _verify_archive(location: str, fmt: str | None, batch_size: int,
                    options: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    side = _Side(location, fmt, options)
    recorded = side.manifest.digest
    tmp = Path(tempfile.mkdtemp(prefix="vecferry-verify-"))
    problems: list[str] = []
    try:
        count = side.reader.count() or MEMORY_ROWS
        spill = _Spill(tmp, "src", max(1, math.ceil(count / MEMORY_ROWS)))
        _scan(side, spill, batch_size, None)
        for p in range(spill.partitions):
            _dedupe(spill.load(p), side)
    finally:
        side.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if recorded is None:
        problems.append("the file records no digest (it was not written by vecferry >= 0.1); "
                        "compare it with its source: vecferry verify SRC DST")
    elif recorded.get("algorithm") != ALGORITHM:
        problems.append(f"unknown digest algorithm {recorded.get('algorithm')!r}")
    else:
        if recorded.get("count") != side.digest.count:
            problems.append(f"count differs: manifest says {recorded.get('count')}, file holds "
                            f"{side.digest.count}")
        if recorded.get("value") != side.digest.as_dict()["value"]:
            problems.append(f"digest differs: manifest says {recorded.get('value')}, data gives "
                            f"{side.digest.as_dict()['value']} (the file was changed or damaged)")
    warnings = [f"{side.duplicates} duplicate id(s): "
                + ", ".join(map(repr, side.duplicate_examples))] if side.duplicates else []
    return {"ok": not problems, "problems": problems, "warnings": warnings,
            "source": side.report(),
            "recorded_digest": recorded, "seconds": round(time.perf_counter() - started, 3)}


def iter_diff(path: str) -> Iterator[dict[str, Any]]:
    """Lines of a ``--diff`` file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
