"""Core formats: numpy / JSONL / Parquet conversions against the script users write today.

N x 768 float32 with a realistic payload (default N = 100,000; ``VECFERRY_BENCH_N``). Every step
runs in its own process (``_common.run_step``), so each peak RSS is that step's own. The
baselines are the per-row loops found in migration scripts: ``json.dumps(vec.tolist())`` per
point to write JSONL, ``json.loads`` per line collected into one table to write Parquet, and
``read_table().to_pylist()`` to export Parquet. A second size (``VECFERRY_BENCH_BIG_N``, default
1,000,000; 0 to skip) repeats the vecferry steps to show that peak RSS does not grow with N.
At N, each vecferry step and the raw write run ``VECFERRY_BENCH_REPEAT`` times (default 3) and
the median run counts; the scripts run once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # the harness sits beside this script
    OUT,
    PY,
    python_script,
    ratio,
    raw_fsync_script,
    report,
    run_step,
    vecferry,
)

DIM = 768
N = int(os.environ.get("VECFERRY_BENCH_N", 100_000))
BIG_N = int(os.environ.get("VECFERRY_BENCH_BIG_N", 1_000_000))
RSS_GOAL_MB = 400
#: runs of each vecferry step and of the raw write at N (median taken); the per-row scripts,
#: 40-60 s each, run once
REPEAT = int(os.environ.get("VECFERRY_BENCH_REPEAT", 3))


def make_data(d: Path, n: int) -> None:
    """vectors.npy, ids.npy and payloads.jsonl for n points (written in blocks: bounded RAM)."""
    d.mkdir(parents=True, exist_ok=True)
    if (d / "vectors.npy").exists() and np.load(d / "vectors.npy", mmap_mode="r").shape[0] == n:
        return
    rng = np.random.default_rng(7)
    mat = np.lib.format.open_memmap(d / "vectors.npy", mode="w+", dtype=np.float32,
                                    shape=(n, DIM))
    for lo in range(0, n, 50_000):
        hi = min(n, lo + 50_000)
        mat[lo:hi] = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
    mat.flush()
    del mat
    np.save(d / "ids.npy", np.arange(n, dtype=np.uint64) * 7 + 2**33)
    words = ["vector", "ferry", "qdrant", "faiss", "parquet", "search", "embedding", "river"]
    with open(d / "payloads.jsonl", "w") as fh:
        for i in range(n):
            fh.write(json.dumps({
                "title": f"Document {i}: " + " ".join(words[(i + k) % 8] for k in range(6)),
                "url": f"https://example.org/docs/{i}",
                "tags": [words[i % 8], words[(i * 3) % 8]],
                "year": 1990 + i % 35, "score": round((i % 1000) / 997, 6),
                "author": {"name": f"Author {i % 50}", "team": i % 7},
            }) + "\n")


NAIVE_NPY_TO_JSONL = """
import json, numpy as np, sys
vecs = np.load({vec!r}, mmap_mode="r"); ids = np.load({ids!r})
with open({pay!r}) as p, open({out!r}, "w") as f:
    for i, line in enumerate(p):
        f.write(json.dumps({{"id": int(ids[i]), "vector": vecs[i].tolist(),
                            "payload": json.loads(line)}}) + "\\n")
"""

NAIVE_JSONL_TO_PARQUET = """
import json, pyarrow as pa, pyarrow.parquet as pq
ids, vecs, pays = [], [], []
with open({src!r}) as f:
    for line in f:
        p = json.loads(line)
        ids.append(p["id"]); vecs.append(p["vector"]); pays.append(json.dumps(p["payload"]))
pq.write_table(pa.table({{"id": ids, "vector": vecs, "payload": pays}}), {out!r})
"""

NAIVE_PARQUET_TO_JSONL = """
import json, pyarrow.parquet as pq
rows = pq.read_table({src!r}).to_pylist()
with open({out!r}, "w") as f:
    for r in rows:
        f.write(json.dumps({{"id": r["id"], "vector": r["vector"],
                            "payload": json.loads(r["payload"])}}) + "\\n")
"""

# The same columns written by pyarrow alone: no reading checks, no digest, no manifest; what any
# converter writing this Parquet (zstd level 1, the row groups vecferry cuts) pays at least.
# Payload texts go in as a numpy array: a list would have pyarrow import pandas first.
PYARROW_ALONE = """
import os, numpy as np, pyarrow as pa, pyarrow.parquet as pq
vecs = np.load({vec!r}, mmap_mode="r"); ids = np.load({ids!r})
with open({pay!r}, "rb") as f:
    texts = np.array([line.rstrip(b"\\n").decode() for line in f], dtype=object)
n, dim = vecs.shape
schema = pa.schema([("id", pa.uint64()), ("vector", pa.list_(pa.float32(), dim)),
                    ("payload", pa.string())])
w = pq.ParquetWriter({out!r}, schema, compression="zstd", compression_level=1,
                     use_dictionary=False, write_statistics=["id"], data_page_size=1 << 20)
for lo in range(0, n, 10_000):
    hi = min(n, lo + 10_000)
    flat = pa.array(np.ascontiguousarray(vecs[lo:hi]).reshape(-1))
    w.write_table(pa.Table.from_arrays([pa.array(ids[lo:hi]),
                                        pa.FixedSizeListArray.from_arrays(flat, dim),
                                        pa.array(texts[lo:hi], type=pa.string())],
                                       schema=schema))
w.close()
fd = os.open({out!r}, os.O_RDONLY); os.fsync(fd); os.close(fd)
"""


def vecferry_steps(d: Path, n: int, tag: str, repeat: int = 1) -> dict[str, dict]:
    vec, ids, pay = str(d / "vectors.npy"), str(d / "ids.npy"), str(d / "payloads.jsonl")
    raw_bytes = n * DIM * 4
    steps = {}
    pq_out, jl_out = str(d / "vf.parquet"), str(d / "vf.jsonl")
    steps["npy->parquet"] = run_step(f"vecferry numpy -> Parquet {tag}",
                                     vecferry("convert", vec, pq_out, "--ids", ids,
                                              "--payloads", pay, "--no-duplicate-check"),
                                     points=n, nbytes=raw_bytes, repeat=repeat)
    steps["npy->jsonl"] = run_step(f"vecferry numpy -> JSONL {tag}",
                                   vecferry("convert", vec, jl_out, "--ids", ids,
                                            "--payloads", pay, "--no-duplicate-check"),
                                   points=n, nbytes=raw_bytes, repeat=repeat)
    steps["jsonl->parquet"] = run_step(f"vecferry JSONL -> Parquet {tag}",
                                       vecferry("convert", jl_out, str(d / "vf2.parquet"),
                                                "--no-duplicate-check"),
                                       points=n, nbytes=raw_bytes, repeat=repeat)
    steps["parquet->jsonl"] = run_step(f"vecferry Parquet -> JSONL {tag}",
                                       vecferry("convert", pq_out, str(d / "vf2.jsonl"),
                                                "--no-duplicate-check"),
                                       points=n, nbytes=raw_bytes, repeat=repeat)
    return steps


def main() -> int:
    d = OUT / f"core_{N}"
    make_data(d, N)
    vec, ids, pay = str(d / "vectors.npy"), str(d / "ids.npy"), str(d / "payloads.jsonl")
    raw_bytes = N * DIM * 4
    ours = vecferry_steps(d, N, f"({N:,})", repeat=REPEAT)
    parquet_size = os.path.getsize(d / "vf.parquet")
    raw = run_step("raw write + fsync of the Parquet's bytes",
                   python_script(raw_fsync_script(d / "raw.bin", parquet_size)),
                   points=N, nbytes=parquet_size, repeat=REPEAT)
    alone = run_step("pyarrow alone, same Parquet (no checks, no digest)",
                     python_script(PYARROW_ALONE.format(vec=vec, ids=ids, pay=pay,
                                                        out=str(d / "alone.parquet"))),
                     points=N, nbytes=raw_bytes, repeat=REPEAT)
    naive_jsonl = run_step("script: numpy -> JSONL (json.dumps per row)",
                           python_script(NAIVE_NPY_TO_JSONL.format(
                               vec=vec, ids=ids, pay=pay, out=str(d / "naive.jsonl"))),
                           points=N, nbytes=raw_bytes)
    naive_j2p = run_step("script: JSONL -> Parquet (json.loads per line)",
                         python_script(NAIVE_JSONL_TO_PARQUET.format(
                             src=str(d / "vf.jsonl"), out=str(d / "naive.parquet"))),
                         points=N, nbytes=raw_bytes)
    naive_p2j = run_step("script: Parquet -> JSONL (to_pylist + json.dumps)",
                         python_script(NAIVE_PARQUET_TO_JSONL.format(
                             src=str(d / "vf.parquet"), out=str(d / "naive2.jsonl"))),
                         points=N, nbytes=raw_bytes)
    rows = [*ours.values(), raw, alone, naive_jsonl, naive_j2p, naive_p2j]
    big_rss = {}
    if BIG_N:
        db = OUT / f"core_{BIG_N}"
        make_data(db, BIG_N)
        big = vecferry_steps(db, BIG_N, f"({BIG_N:,})")
        rows += big.values()
        big_rss = {k: v["peak_rss_mb"] for k, v in big.items()}
    max_rss = max([s["peak_rss_mb"] for s in ours.values()] + list(big_rss.values()))
    goals = [
        {"goal": "numpy -> JSONL >= 10x the json.dumps script",
         "measured": f"{ratio(ours['npy->jsonl'], naive_jsonl)}x",
         "met": ratio(ours["npy->jsonl"], naive_jsonl) >= 10},
        {"goal": "Parquet -> JSONL >= 10x the to_pylist script",
         "measured": f"{ratio(ours['parquet->jsonl'], naive_p2j)}x",
         "met": ratio(ours["parquet->jsonl"], naive_p2j) >= 10},
        {"goal": "numpy -> Parquet within 3x of raw write + fsync",
         "measured": f"{round(ours['npy->parquet']['seconds'] / raw['seconds'], 2)}x raw "
                     f"(pyarrow alone: {round(alone['seconds'] / raw['seconds'], 2)}x raw)",
         "met": ours["npy->parquet"]["seconds"] <= 3 * raw["seconds"]},
        {"goal": "JSONL -> Parquet >= 5x the json.loads script",
         "measured": f"{ratio(ours['jsonl->parquet'], naive_j2p)}x",
         "met": ratio(ours["jsonl->parquet"], naive_j2p) >= 5},
        {"goal": f"peak RSS < {RSS_GOAL_MB} MB at {N:,}" + (f" and {BIG_N:,}" if BIG_N else ""),
         "measured": f"max {max_rss} MB" + (f" ({BIG_N:,}: {big_rss})" if BIG_N else ""),
         "met": max_rss < RSS_GOAL_MB},
    ]
    print(f"python: {PY}")
    return 0 if report("core", rows, goals) else 1


if __name__ == "__main__":
    sys.exit(main())
