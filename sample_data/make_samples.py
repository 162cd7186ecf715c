"""Regenerate ``sample_data/``: a small deterministic data set and the broken inputs in ``bad/``.

Run ``make samples`` (or ``python sample_data/make_samples.py``). Output is byte-identical on
every run: fixed seeds, no timestamps. The files are committed so tests and ``make demo`` need no
generation step; ``tests/test_samples.py`` checks they match this script.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N, DIM = 200, 64
NAMESPACE = uuid.UUID("6c1b3a3e-5c1e-4b0e-9a57-3d1f00c0ffee")


def payload(i: int) -> dict:
    """A realistic document payload exercising what JSON round trips get wrong."""
    return {
        "title": f"Document {i}",
        "lang": ["en", "de", "ja"][i % 3],
        "tags": [f"t{i % 7}", f"t{i % 11}"],
        "score": round(0.5 + i / 1000, 4),
        "views": 2**53 + i,  # past float64's exact integers
        "author": {"name": "Zoë Ångström" if i % 2 else "山田太郎", "id": i * 31},
        "draft": i % 5 == 0,
        "note": None if i % 4 else "see §3 – “quoted”",
        "extra": {},
    }


def write_jsonl(path: Path, lines: list[str], trailing_newline: bool = True) -> None:
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    path.write_text(text, encoding="utf-8")


def main() -> int:
    rng = np.random.default_rng(20261123)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    # Non-sequential ids, some above 2^32, as real systems hand them out.
    ids = np.sort(rng.choice(2**40, size=N, replace=False)).astype(np.uint64)
    np.save(HERE / "vectors.npy", vectors)
    np.save(HERE / "ids.npy", ids)
    write_jsonl(HERE / "payloads.jsonl",
                [json.dumps(payload(i), ensure_ascii=False) for i in range(N)])

    # A directory of per-vector files with JSON sidecars (some points have none).
    per = HERE / "per_vector"
    per.mkdir(exist_ok=True)
    for old in per.iterdir():
        old.unlink()
    for i in range(12):
        stem = f"doc-{i:03d}"
        np.save(per / f"{stem}.npy", vectors[i])
        if i % 3:
            (per / f"{stem}.json").write_text(json.dumps(payload(i), ensure_ascii=False))

    # JSONL with every vector kind and mixed int / UUID ids.
    rich = []
    for i in range(40):
        pid: int | str = i * 1000 if i % 2 else str(uuid.uuid5(NAMESPACE, str(i)))
        point = {
            "id": pid,
            "vector": {
                "text": [round(float(x), 6) for x in vectors[i, :16]],
                "keywords": {"indices": sorted({int(x) for x in rng.integers(0, 5000, 4)}),
                             "values": []},
                "colbert": [[round(float(x), 6) for x in vectors[(i + k) % N, :8]]
                            for k in range(1 + i % 3)],
            },
            "payload": payload(i),
        }
        kw = point["vector"]["keywords"]
        kw["values"] = [round(float(v), 4) for v in rng.random(len(kw["indices"]))]
        rich.append(json.dumps(point, ensure_ascii=False))
    write_jsonl(HERE / "points_rich.jsonl", rich)

    make_bad(HERE / "bad", vectors)
    return 0


def point_line(pid: object, vec: np.ndarray, extra: dict | None = None) -> str:
    return json.dumps({"id": pid, "vector": [float(x) for x in vec], "payload": extra or {}})


def make_bad(bad: Path, vectors: np.ndarray) -> None:
    """Broken inputs, one problem each; tests assert the exact message for every one."""
    bad.mkdir(exist_ok=True)
    v = vectors[:, :8]
    good = [point_line(i, v[i]) for i in range(6)]

    lines = list(good)
    lines[2] = '{"id": 2, "vector": [0.1, 0.2'  # not JSON, mid-file
    write_jsonl(bad / "not_json.jsonl", lines)

    write_jsonl(bad / "truncated.jsonl", [*good, good[0][:25]], trailing_newline=False)

    lines = list(good)
    lines[3] = point_line(3, v[3][:7])
    write_jsonl(bad / "wrong_dim.jsonl", lines)

    lines = list(good)
    lines[4] = json.dumps({"id": 4, "payload": {"title": "no vector"}})
    write_jsonl(bad / "missing_vector.jsonl", lines)

    lines = list(good)
    lines[1] = lines[1].replace(str(float(v[1][0])), "1e39", 1)  # finite in JSON, inf in float32
    write_jsonl(bad / "overflow.jsonl", lines)

    lines = list(good)
    lines[5] = point_line(2, v[5])
    write_jsonl(bad / "duplicate_ids.jsonl", lines)

    lines = list(good)
    lines[1] = json.dumps({"id": 1, "vector": [float(x) for x in v[1]], "payload": ["a", "b"]})
    write_jsonl(bad / "payload_not_object.jsonl", lines)

    lines = list(good)
    lines[3] = point_line(-3, v[3])
    write_jsonl(bad / "negative_id.jsonl", lines)

    (bad / "empty.jsonl").write_bytes(b"")

    nan = v[:6].copy()
    nan[2, 5] = np.nan
    np.save(bad / "nan_vector.npy", nan)

    np.save(bad / "int64_matrix.npy", np.arange(48, dtype=np.int64).reshape(6, 8))

    np.save(bad / "truncated.npy", v[:6].copy())
    data = (bad / "truncated.npy").read_bytes()
    (bad / "truncated.npy").write_bytes(data[:-40])

    np.save(bad / "ids_too_few.npy", np.arange(5, dtype=np.uint64))


if __name__ == "__main__":
    sys.exit(main())
