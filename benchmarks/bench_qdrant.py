"""Qdrant: Parquet <-> Qdrant Edge and Parquet -> qdrant-client local mode, against the loops and
helpers users have today, on the same engine, in one run.

N x 768 float32 with a small payload (``VECFERRY_BENCH_N``, default 100,000). Steps run in their
own processes (``_common.run_step``), each run after the previous one's dirty pages were flushed
and with its source read once (so no step pays for another's writeback, and all start from a
warm page cache); vecferry's steps run ``VECFERRY_BENCH_REPEAT`` times (default 3, median
taken), each into a fresh target. Baselines:

* plain loop, Parquet -> Edge: ``read_table().to_pylist()`` rows, one ``Point`` per row, upserts
  of the same batch size vecferry uses;
* raw Edge upsert rate: a script that reads the same Parquet file, builds every ``Point`` up
  front the fastest way the binding takes them (float32 ``memoryview`` rows, not numpy rows,
  which it reads element by element), then upserts the same batches and flushes. Like every
  step it is timed as a whole process, as vecferry is; the time of the ``shard.update`` calls
  alone is shown beside it for reference, but a process cannot run faster than its own reading
  and point building, so comparing a whole process against the calls alone is not like with
  like;
* plain loop, Edge -> Parquet: scroll pages of the same size, one dict per point,
  ``pa.Table.from_pylist`` per page into a ``ParquetWriter``;
* Parquet -> local mode: qdrant-client's ``upload_collection`` (vectors as a numpy matrix) and
  ``migrate()`` of a local collection into another. Local mode commits every point to SQLite, so
  this part runs at ``VECFERRY_BENCH_LOCAL_N`` points (default 5,000) to keep the run short.

Goals: vecferry >= 3x the plain loops, >= 80% of Edge's raw upsert rate, at least as fast as
``upload_collection`` / ``migrate()``, peak RSS < 500 MB. Exit status 1 on a missed goal.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # the harness sits beside this script
    OUT,
    PY,
    python_script,
    ratio,
    report,
    run_step,
    warm,
)

N = int(os.environ.get("VECFERRY_BENCH_N", 100_000))
#: runs of each vecferry step (median taken); the baselines, which take minutes, run once
REPEAT = int(os.environ.get("VECFERRY_BENCH_REPEAT", 3))
LOCAL_N = int(os.environ.get("VECFERRY_BENCH_LOCAL_N", 5_000))
DIM = 768
BATCH = 1024
RSS_GOAL_MB = 500


def make_parquet(path: Path, n: int) -> None:
    """N x 768 points in vecferry's stream layout (unnamed vector, int ids, JSON payload)."""
    from vecferry.stream import Manifest, VectorSpec

    schema = Manifest(vectors=[VectorSpec("", size=DIM, distance="Dot")], count=n).schema()
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, schema, compression="zstd") as out:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            vec = rng.standard_normal((m, DIM)).astype(np.float32)
            ids = pa.array(np.arange(start, start + m, dtype=np.uint64))
            payload = pa.array([json.dumps({"i": i, "tag": f"t{i % 17}"})
                                for i in range(start, start + m)])
            col = pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), DIM)
            out.write_batch(pa.RecordBatch.from_arrays([ids, col, payload], schema=schema))


def vf(*args: str) -> list[str]:
    return [PY, "-m", "vecferry", *args, "--quiet", "--batch-size", str(BATCH)]


PLAIN_TO_EDGE = """
import json, pyarrow.parquet as pq, qdrant_edge as qe
shard = qe.EdgeShard.create({dst!r}, qe.EdgeConfig(vectors=qe.EdgeVectorParams(size={dim},
    distance=qe.Distance.Dot)))
rows = pq.read_table({src!r}).to_pylist()
for s in range(0, len(rows), {batch}):
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(r["id"], r["vector"],
        json.loads(r["payload"])) for r in rows[s:s + {batch}]]))
shard.flush(); shard.close()
"""

RAW_EDGE = """
import json, time, numpy as np, pyarrow.parquet as pq, qdrant_edge as qe
t = pq.read_table({src!r})
mv = memoryview(t.column("vector").combine_chunks().flatten().to_numpy())
ids = t.column("id").to_pylist()
payloads = [json.loads(p) for p in t.column("payload").to_pylist()]
del t
batches = [[qe.Point(ids[i], mv[i * {dim}:(i + 1) * {dim}], payloads[i])
            for i in range(s, min(s + {batch}, len(ids)))]
           for s in range(0, len(ids), {batch})]
shard = qe.EdgeShard.create({dst!r}, qe.EdgeConfig(vectors=qe.EdgeVectorParams(size={dim},
    distance=qe.Distance.Dot)))
started = time.perf_counter()
for b in batches:
    shard.update(qe.UpdateOperation.upsert_points(b))
shard.flush()
print(json.dumps({{"upsert_seconds": time.perf_counter() - started}}))
shard.close()
"""

PLAIN_FROM_EDGE = """
import json, pyarrow as pa, pyarrow.parquet as pq, qdrant_edge as qe
shard = qe.EdgeShard.load({src!r})
writer = None; offset = None
while True:
    recs, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit={batch},
        with_payload=True, with_vector=True))
    rows = [{{"id": r.id, "vector": r.vector if isinstance(r.vector, list) else r.vector[""],
             "payload": json.dumps(r.payload)}}
            for r in recs]
    table = pa.Table.from_pylist(rows)
    writer = writer or pq.ParquetWriter({dst!r}, table.schema, compression="zstd")
    writer.write_table(table)
    if offset is None:
        break
writer.close(); shard.close()
"""

UPLOAD_COLLECTION = """
import json, warnings, pyarrow.parquet as pq
from qdrant_client import QdrantClient, models
warnings.simplefilter("ignore")
t = pq.read_table({src!r})
vec = t.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, {dim})
client = QdrantClient(path={dst!r})
client.create_collection("docs", vectors_config=models.VectorParams(size={dim},
    distance=models.Distance.DOT))
client.upload_collection("docs", vectors=vec, ids=t.column("id").to_pylist(),
    payload=[json.loads(p) for p in t.column("payload").to_pylist()], wait=True)
client.close()
"""

MIGRATE = """
import warnings
from qdrant_client import QdrantClient
warnings.simplefilter("ignore")
src = QdrantClient(path={src!r}); dst = QdrantClient(path={dst!r})
src.migrate(dst, collection_names=["docs"])
src.close(); dst.close()
"""


def step(name: str, argv: list[str], n: int, nbytes: int, *, source: Path,
         target: Path | None = None, repeat: int = 1) -> dict:
    """``run_step`` with each run starting alike: ``target`` removed, the previous run's dirty
    pages flushed (the plain loops leave gigabytes behind) and ``source`` read once."""
    def before() -> None:
        if target is not None and target.is_dir():
            shutil.rmtree(target)
        elif target is not None:
            target.unlink(missing_ok=True)
        os.sync()
        warm(source)

    r = run_step(name, argv, points=n, nbytes=nbytes, repeat=repeat, before=before)
    print(f"  {name}: {r['seconds']:.2f} s, {r['peak_rss_mb']:.0f} MB", flush=True)
    return r


def vf_step(name: str, args: list[str], n: int, nbytes: int, *, source: Path,
            target: Path) -> dict:
    return step(name, vf(*args), n, nbytes, source=source, target=target, repeat=REPEAT)


def main() -> int:
    work = OUT / "qdrant"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "points.parquet"
    small = work / "small.parquet"
    make_parquet(src, N)
    make_parquet(small, LOCAL_N)
    nbytes = N * DIM * 4
    lbytes = LOCAL_N * DIM * 4
    rows: list[dict] = []
    goals: list[dict] = []

    edge_vf, local_vf = work / "edge_vf", work / "local_vf"
    to_edge = vf_step(f"vecferry parquet -> edge ({N})",
                      ["convert", str(src), f"qdrant-edge://{edge_vf}"], N, nbytes,
                      source=src, target=edge_vf)
    plain_to = step("plain loop parquet -> edge", python_script(PLAIN_TO_EDGE.format(
        src=str(src), dst=str(work / "edge_plain"), dim=DIM, batch=BATCH)), N, nbytes,
        source=src)
    raw = step("edge raw upsert (same batches)", python_script(RAW_EDGE.format(
        src=str(src), dst=str(work / "edge_raw"), dim=DIM, batch=BATCH)), N, nbytes,
        source=src)
    raw_s = json.loads(raw["stdout_tail"].strip().splitlines()[-1])["upsert_seconds"]
    raw["step"] += f" [upserts alone {raw_s:.2f} s]"
    back = work / "back.parquet"
    from_edge = vf_step("vecferry edge -> parquet",
                        ["convert", f"qdrant-edge://{edge_vf}", str(back)], N, nbytes,
                        source=edge_vf, target=back)
    plain_from = step("plain scroll loop edge -> parquet", python_script(PLAIN_FROM_EDGE.format(
        src=str(edge_vf), dst=str(work / "plain_back.parquet"), batch=BATCH)),
        N, nbytes, source=edge_vf)
    to_local = vf_step(f"vecferry parquet -> local mode ({LOCAL_N})",
                       ["convert", str(small), f"qdrant-local://{local_vf}/docs"],
                       LOCAL_N, lbytes, source=small, target=local_vf)
    upload = step("qdrant-client upload_collection", python_script(UPLOAD_COLLECTION.format(
        src=str(small), dst=str(work / "local_upload"), dim=DIM)), LOCAL_N, lbytes,
        source=small)
    migrate = step("qdrant-client migrate() local -> local", python_script(MIGRATE.format(
        src=str(local_vf), dst=str(work / "local_migrate"))), LOCAL_N, lbytes,
        source=local_vf)
    rows += [to_edge, plain_to, raw, from_edge, plain_from, to_local, upload, migrate]

    # like with like: both whole processes reading the same file and upserting the same
    # batches (the upsert calls alone are reported beside)
    ours_rate = N / to_edge["seconds"]
    raw_rate = N / raw["seconds"]
    goals += [
        {"goal": "parquet -> edge >= 3x the plain loop", "measured": f"{ratio(to_edge, plain_to)}x",
         "met": ratio(to_edge, plain_to) >= 3},
        {"goal": "edge -> parquet >= 3x the plain scroll loop",
         "measured": f"{ratio(from_edge, plain_from)}x", "met": ratio(from_edge, plain_from) >= 3},
        {"goal": ">= 80% of Edge's raw upsert rate (same batches)",
         "measured": f"{ours_rate:,.0f} vs {raw_rate:,.0f} points/s = "
                     f"{100 * ours_rate / raw_rate:.0f}% (upsert calls alone: "
                     f"{N / raw_s:,.0f} points/s)",
         "met": ours_rate >= 0.8 * raw_rate},
        {"goal": "parquet -> local mode at least as fast as upload_collection",
         "measured": f"{ratio(to_local, upload)}x",
         "met": to_local["seconds"] <= upload["seconds"]},
        {"goal": "parquet -> local mode at least as fast as migrate()",
         "measured": f"{ratio(to_local, migrate)}x",
         "met": to_local["seconds"] <= migrate["seconds"]},
        {"goal": f"vecferry peak RSS < {RSS_GOAL_MB} MB",
         "measured": f"{max(r['peak_rss_mb'] for r in (to_edge, from_edge, to_local)):.0f} MB "
                     f"(anonymous, without mapped files: "
                     f"{max(r['peak_anon_mb'] for r in (to_edge, from_edge, to_local)):.0f} MB)",
         "met": all(r["peak_rss_mb"] < RSS_GOAL_MB for r in (to_edge, from_edge, to_local))},
    ]
    ok = report("qdrant", rows, goals)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
