"""vector-io's VDF folder (VDF_META.json + Parquet): written and read back exactly, and read as
vector-io itself writes it (numbered files, pandas-typed metadata columns, float64 lists)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from roundtrip import DATASETS, assert_same_points, leftovers, read_points, write_points
from vecferry.converters import resolve
from vecferry.errors import UnsupportedError, UsageError

N, DIM = 37, 8


@pytest.mark.parametrize("name", ["dense_int", "string_ids", "float16", "uint8", "gaps",
                                  "named_dense_uuid"])
def test_vecferry_vdf_vecferry_is_exact(tmp_path, name):
    ds = DATASETS[name]()
    out = str(tmp_path / "export")
    write_points(out, ds, format="vdf")
    assert resolve(out).name == "vdf"
    manifest, points = read_points(out, batch_size=7)
    assert_same_points(points, manifest, ds)
    assert {v.name: v.distance for v in manifest.vectors} == {v.name: v.distance
                                                              for v in ds.vectors}


def test_written_folder_is_vector_io_shaped(tmp_path):
    ds = DATASETS["named_dense_uuid"]()
    out = tmp_path / "export"
    write_points(str(out), ds, format="vdf", vdf_index="docs")
    meta = json.loads((out / "VDF_META.json").read_text())
    assert set(meta) >= {"version", "file_structure", "author", "exported_from", "indexes",
                         "exported_at", "id_column"}
    assert meta["file_structure"] == ["docs/1.parquet", "VDF_META.json"]
    (ns,) = meta["indexes"]["docs"]
    assert {k: ns[k] for k in ("namespace", "index_name", "total_vector_count",
                               "exported_vector_count", "dimensions", "vector_columns",
                               "data_path", "metric")} == {
        "namespace": "", "index_name": "docs", "total_vector_count": N,
        "exported_vector_count": N, "dimensions": DIM, "vector_columns": ["a", "b"],
        "data_path": "docs", "metric": "Euclid"}
    table = pq.read_table(out / "docs" / "1.parquet")
    assert table.column_names[:3] == ["id", "a", "b"]
    assert table.schema.field("a").type == pa.list_(pa.float32())
    # typed payload columns where the values allow it, JSON text for the rest
    assert table.schema.field("title").type == pa.string()
    assert table.schema.field("big53").type == pa.int64()
    assert table.schema.field("float").type == pa.float64()
    assert table.schema.field("flag").type == pa.bool_()
    json_cols = json.loads(table.schema.metadata[b"vecferry.json_columns"])
    assert set(json_cols) == {"nested", "null", "big64", "neg64", "huge"}


def test_sparse_or_multi_is_refused_before_writing(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(UnsupportedError) as info:
        write_points(str(out), DATASETS["named_mixed"](), format="vdf")
    assert str(info.value) == (f"{out}: VDF holds dense vectors only; cannot hold: kw (sparse), "
                               "colbert (multi) (write Parquet or JSONL instead, which hold "
                               "every kind)")
    assert os.listdir(tmp_path) == []


def _vector_io_export(root, files=((1, 10), (2, 12), (10, 15)), metric="Cosine", **ns_extra):
    """A folder as vector-io's exporters write it: pandas frames, numbered files, float64."""
    rng = np.random.default_rng(7)
    data = root / "vdf_20240101_abc" / "my_collection"
    data.mkdir(parents=True)
    expected = []
    start = 0
    for number, n in files:
        vec = rng.standard_normal((n, DIM))
        ids = [f"doc{start + i}" for i in range(n)]
        cols = {"id": ids, "vector": pa.array(vec.tolist(), pa.list_(pa.float64())),
                "title": [f"t{start + i}" for i in range(n)],
                "score": [float(i) if i % 4 else None for i in range(n)]}
        if number == 2:  # a file where one metadata column is all missing: typed null
            cols["score"] = pa.nulls(n)
        pq.write_table(pa.table(cols), data / f"{number}.parquet")
        for i in range(n):
            payload = {"title": f"t{start + i}"}
            if number != 2 and i % 4:
                payload["score"] = float(i)
            expected.append((f"doc{start + i}", vec[i].astype(np.float32), payload))
        start += n
    meta = {
        "version": "0.1.300", "file_structure": [], "author": "someone",
        "exported_from": "qdrant",
        "indexes": {"my_collection": [{
            "namespace": "", "index_name": "my_collection", "total_vector_count": start,
            "exported_vector_count": start, "dimensions": DIM, "model_name": "bge-small",
            "vector_columns": ["vector"], "data_path": "vdf_20240101_abc/my_collection",
            "metric": metric, **ns_extra}]},
        "exported_at": "2024-01-01T00:00:00",
    }
    (root / "VDF_META.json").write_text(json.dumps(meta))
    return expected


def test_reads_a_vector_io_export(tmp_path):
    expected = _vector_io_export(tmp_path)
    assert resolve(str(tmp_path)).name == "vdf"
    out = tmp_path / "out.jsonl"
    report = vecferry.convert(str(tmp_path), str(out), batch_size=5)
    assert report["written"] == N
    assert report["warnings"][-1] == f"{N * DIM} float64 value(s) changed when narrowed to " \
                                     "float32"
    manifest, points = read_points(str(tmp_path), batch_size=5)
    assert manifest.id_kind == "string"
    assert [(v.name, v.size, v.distance) for v in manifest.vectors] == [("", DIM, "Cosine")]
    assert manifest.extra == {"vdf": {"index": "my_collection", "model_name": "bge-small",
                                      "exported_from": "qdrant", "metric": "Cosine"}}
    # files in numeric order: 1, 2, 10 (not 1, 10, 2)
    assert [p["id"] for p in points] == [e[0] for e in expected]
    for p, (_, vec, payload) in zip(points, expected, strict=True):
        assert p["vector"].tobytes() == vec.tobytes()
        assert p["payload"] == payload


def test_several_namespaces_need_a_choice(tmp_path):
    _vector_io_export(tmp_path)
    meta = json.loads((tmp_path / "VDF_META.json").read_text())
    second = dict(meta["indexes"]["my_collection"][0], namespace="ns2")
    meta["indexes"]["my_collection"].append(second)
    (tmp_path / "VDF_META.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(tmp_path))
    assert str(info.value) == (f"{tmp_path}: VDF_META.json holds 2 index namespaces "
                               "(my_collection, my_collection/ns2), and vecferry reads one per "
                               "run (name one with --vdf-index INDEX/NAMESPACE, e.g. --vdf-index "
                               'my_collection (in Python: reader_options={"vdf_index": '
                               '"my_collection"}); an index\'s unnamed namespace, or its only '
                               "one, is named by the index's name alone)")
    reader = vecferry.open_reader(str(tmp_path), vdf_index="my_collection/ns2")
    assert reader.count() == N
    reader.close()


def test_vdf_to_vdf_keeps_model_metric_and_points(tmp_path):
    _vector_io_export(tmp_path / "in")
    out = tmp_path / "out"
    vecferry.convert(str(tmp_path / "in"), str(out), to_format="vdf")
    meta = json.loads((out / "VDF_META.json").read_text())
    (ns,) = meta["indexes"]["my_collection"]
    assert (ns["model_name"], ns["metric"], ns["dimensions"]) == ("bge-small", "Cosine", DIM)
    _, a = read_points(str(tmp_path / "in"))
    _, b = read_points(str(out))
    assert not leftovers(tmp_path)
    assert [(p["id"], p["vector"].tobytes(), p["payload"]) for p in a] == [
        (p["id"], p["vector"].tobytes(), p["payload"]) for p in b]
