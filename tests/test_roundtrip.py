"""Every reader x writer pair over every dataset, compared bit for bit (see roundtrip.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import vecferry
from roundtrip import (
    DATASETS,
    FORMATS,
    READERS,
    WRITERS,
    N,
    assert_same_points,
    leftovers,
    read_points,
    write_points,
)
from vecferry.errors import RecordError, UnsupportedError


def _case(name: str):
    fmt = FORMATS[name]
    if fmt.missing():
        pytest.skip(f"{name} needs {', '.join(fmt.missing())}")
    return fmt


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("src", READERS)
def test_source_reads_back_exactly(src, dataset, tmp_path):
    fmt, ds = _case(src), DATASETS[dataset]()
    why = fmt.cannot_hold(ds)
    if why:
        pytest.skip(f"{src} holds {why}")
    loc, options = fmt.make(ds, tmp_path, "src")
    manifest, points = read_points(loc, **options)
    assert_same_points(points, manifest, ds, ordered=fmt.ordered)


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("dst", WRITERS)
@pytest.mark.parametrize("src", READERS)
def test_roundtrip(src, dst, dataset, tmp_path):
    s, d, ds = _case(src), _case(dst), DATASETS[dataset]()
    why = s.cannot_hold(ds) or d.cannot_hold(ds)
    if why:
        pytest.skip(f"pair holds {why}")
    loc, options = s.make(ds, tmp_path, "src")
    out = d.location(tmp_path, "dst")
    report = vecferry.convert(loc, out, batch_size=8, reader_options=options)
    assert (report["read"], report["written"], report["rejected"]) == (N, N, 0)
    assert report["id_kind"] == ds.id_kind
    assert report["duplicate_ids"] == {"count": 0, "examples": []}
    manifest, points = read_points(out)
    assert manifest.count == N
    assert_same_points(points, manifest, ds, ordered=s.ordered and d.ordered)
    assert leftovers(tmp_path) == []


REFUSALS = [(dst, name) for dst in WRITERS for name, make in DATASETS.items()
            if make().kinds - FORMATS[dst].kinds]


def test_some_target_refuses_something():
    assert ("npy", "named_mixed") in REFUSALS


@pytest.mark.parametrize(("dst", "dataset"), REFUSALS)
def test_target_refuses_before_writing(dst, dataset, tmp_path):
    ds = DATASETS[dataset]()
    loc, _ = FORMATS["parquet"].make(ds, tmp_path, "src")
    out = FORMATS[dst].location(tmp_path, "dst")
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(loc, out)
    for spec in ds.vectors:
        if spec.kind not in FORMATS[dst].kinds:
            assert f"{spec.name} ({spec.kind})" in str(info.value)
    assert not os.path.exists(out.rstrip("/"))
    assert leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["src.parquet"]


def test_npy_refusal_message_exact(tmp_path):
    ds = DATASETS["named_mixed"]()
    loc, _ = FORMATS["jsonl"].make(ds, tmp_path, "src")
    out = str(tmp_path / "out.npy")
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(loc, out)
    assert str(info.value) == (
        f"{out}: a numpy matrix cannot hold these vectors: kw (sparse), colbert (multi) "
        "(write Parquet or JSONL instead, which hold every kind)")


def test_npy_rejects_point_missing_a_vector(tmp_path):
    ds = DATASETS["gaps"]()
    loc, _ = FORMATS["parquet"].make(ds, tmp_path, "src")
    out = str(tmp_path / "out.npy")
    with pytest.raises(RecordError) as info:
        vecferry.convert(loc, out)
    assert str(info.value) == (f"{out}, id 7: point lacks vector 'b'; a numpy matrix needs a "
                               "value in every row")
    assert not os.path.exists(out)
    assert leftovers(tmp_path) == []

    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(loc, out, on_error="skip", rejects=str(rejects))
    complete = [p for p in ds.points if set(p["vector"]) == {"a", "b"}]
    assert report["written"] == len(complete)
    assert report["rejected"] == N - len(complete)
    assert report["read"] == report["written"] + report["rejected"]
    _, points = read_points(out)
    assert [p["id"] for p in points] == [p["id"] for p in complete]
    lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert len(lines) == N - len(complete)
    reasons = {r["_vecferry_reject"]["reason"] for r in lines}
    assert reasons == {f"point lacks {which}; a numpy matrix needs a value in every row"
                       for which in ("vector 'b'", "vector 'a'", "vectors 'a', 'b'")}


def test_parquet_directory_of_parts_reads_in_name_order(tmp_path):
    ds = DATASETS["dense_int"]()
    parts = tmp_path / "parts.parquet"
    parts.mkdir()
    first, second = ds.points[:20], ds.points[20:]
    for name, chunk in (("part-00001.parquet", second), ("part-00000.parquet", first)):
        piece = type(ds)(ds.name, ds.vectors, ds.id_kind, chunk)
        write_points(str(tmp_path / name), piece)
        os.replace(tmp_path / name, parts / name)
    (parts / "_SUCCESS").write_text("")
    manifest, points = read_points(str(parts), batch_size=6)
    assert manifest.count == N
    assert_same_points(points, manifest, ds)


def test_float64_matrix_is_narrowed_with_a_warning(tmp_path):
    mat = np.random.default_rng(9).standard_normal((N, 8))
    mat[0, 0] = 0.5  # exact in float32: only the other values change
    np.save(tmp_path / "f64.npy", mat)
    report = vecferry.convert(str(tmp_path / "f64.npy"), str(tmp_path / "out.parquet"))
    changed = N * 8 - 1
    assert report["warnings"] == [
        "float64 vectors are narrowed to float32 (Qdrant, FAISS and the stream store float32); "
        "the report counts values that changed",
        f"{changed} float64 value(s) changed when narrowed to float32",
    ]
    _, points = read_points(str(tmp_path / "out.parquet"))
    got = np.stack([p["vector"] for p in points])
    assert got.dtype == np.float32
    assert got.view(np.uint32).tolist() == mat.astype(np.float32).view(np.uint32).tolist()


def test_per_vector_directory_sample(samples):
    manifest, points = read_points(str(samples / "per_vector"))
    assert manifest.id_kind == "string"
    assert [p["id"] for p in points] == [f"doc-{i:03d}" for i in range(12)]
    vectors = np.load(samples / "vectors.npy")
    for i, p in enumerate(points):
        assert p["vector"].view(np.uint32).tolist() == vectors[i].view(np.uint32).tolist()
        assert (p["payload"] is None) == (i % 3 == 0)
    assert points[1]["payload"]["views"] == 2**53 + 1
