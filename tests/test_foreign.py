"""Reading vector data other tools wrote: mapped Parquet (files and shard directories), JSONL
with other keys, numpy shard directories, and the mapping ``inspect`` suggests.

Every test writes its own input in the shape other tools write and checks the exact points that
come out (ids with their type, vector bits, payloads), or the exact error.
"""

from __future__ import annotations

import json
import math
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from roundtrip import read_points
from vecferry.cli import main
from vecferry.errors import InputError, RecordError, UsageError
from vecferry.inspect import inspect_location

N, DIM = 37, 8
EMB = "text-embedding-3-large-8-embedding"


def _rng() -> np.random.Generator:
    return np.random.default_rng(11)


def _dataset_table(n: int = N, start: int = 0, vec_type: str = "list64",
                   rng: np.random.Generator | None = None) -> tuple[pa.Table, np.ndarray]:
    """A table in the shape of public embedding datasets: _id, title, text, <model> vector."""
    rng = rng or _rng()
    vec = rng.standard_normal((n, DIM))
    if vec_type == "list64":
        col = pa.array(vec.tolist(), pa.list_(pa.float64()))
    elif vec_type == "list32":
        col = pa.array(vec.astype(np.float32).tolist(), pa.list_(pa.float32()))
    elif vec_type == "large_list":
        col = pa.array(vec.astype(np.float32).tolist(), pa.large_list(pa.float32()))
    elif vec_type == "fixed":
        col = pa.FixedSizeListArray.from_arrays(pa.array(vec.astype(np.float32).reshape(-1)),
                                                DIM)
    else:  # raw little-endian float32 bytes
        col = pa.array([r.astype("<f4").tobytes() for r in vec], pa.binary())
    table = pa.table({"_id": [f"doc-{start + i}" for i in range(n)],
                      "title": [f"Title {start + i}" for i in range(n)],
                      "text": [f"text of {start + i} – ü 山" for i in range(n)],
                      EMB: col})
    return table, vec.astype(np.float32)


def _triples(points):
    return [(p["id"], np.asarray(p["vector"]).tobytes(), p["payload"]) for p in points]


# ------------------------------------------------------------------------------ Parquet files


@pytest.mark.parametrize("vec_type", ["list64", "list32", "large_list", "fixed", "bytes"])
def test_dataset_parquet_with_mapping(tmp_path, vec_type):
    table, vec = _dataset_table(vec_type=vec_type)
    src = tmp_path / "corpus.parquet"
    pq.write_table(table, src, row_group_size=10)
    manifest, points = read_points(str(src), batch_size=7, id_column="_id",
                                   vector_column=[EMB])
    assert manifest.id_kind == "string"
    assert [(v.name, v.kind, v.size, v.datatype) for v in manifest.vectors] == [
        ("", "dense", DIM, "float32")]
    assert _triples(points) == [
        (f"doc-{i}", vec[i].tobytes(), {"title": f"Title {i}", "text": f"text of {i} – ü 山"})
        for i in range(N)]


def test_float64_narrowing_is_counted(tmp_path):
    table, _ = _dataset_table()
    src = tmp_path / "corpus.parquet"
    pq.write_table(table, src)
    out = tmp_path / "out.parquet"
    report = vecferry.convert(str(src), str(out), batch_size=10,
                              reader_options={"id_column": "_id", "vector_column": [EMB]})
    assert report["written"] == N
    assert report["warnings"] == [
        "float64 vectors are narrowed to float32 (Qdrant, FAISS and the stream store float32); "
        "the report counts values that changed",
        f"{N * DIM} float64 value(s) changed when narrowed to float32"]
    # what was written is a vecferry file now: read without a mapping
    _, points = read_points(str(out))
    assert [p["id"] for p in points] == [f"doc-{i}" for i in range(N)]


def test_named_vectors_payload_columns_and_int_ids(tmp_path):
    rng = _rng()
    a, b = rng.standard_normal((N, DIM)).astype(np.float32), rng.random((N, 3)).astype(np.float32)
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "pk": pa.array(np.arange(N) * 3 + 2**40, pa.int64()),
        "dense_a": pa.array(a.tolist(), pa.list_(pa.float32())),
        "b": pa.array(b.tolist(), pa.list_(pa.float32())),
        "keep": list(range(N)), "drop": ["x"] * N}), src)
    manifest, points = read_points(str(src), id_column="pk", vector_column=["a=dense_a", "b"],
                                   payload_columns="keep")
    assert manifest.id_kind == "int"
    assert [(v.name, v.size) for v in manifest.vectors] == [("a", DIM), ("b", 3)]
    assert [(p["id"], p["vector"]["a"].tobytes(), p["vector"]["b"].tobytes(), p["payload"])
            for p in points] == [(i * 3 + 2**40, a[i].tobytes(), b[i].tobytes(), {"keep": i})
                                 for i in range(N)]


def test_json_strings_nested_structs_nulls_and_sparse(tmp_path):
    src = tmp_path / "t.parquet"
    meta = [json.dumps({"lang": "en", "n": i, "tags": ["a", None], "big": 2**70 + i})
            for i in range(N)]
    meta[3] = None
    nested = [{"author": {"name": f"A{i}", "age": i}, "tags": [f"t{i}"]} for i in range(N)]
    score = [float(i) for i in range(N)]
    score[4] = None  # pandas writes a missing float (NaN in the frame) as null
    pq.write_table(pa.table({
        "vec": pa.array([[float(i), 1.0] for i in range(N)], pa.list_(pa.float32())),
        "meta": meta, "nested": nested, "score": score,
        "note": [None if i % 2 else "x" for i in range(N)],
        "kw": [{"indices": [i, i + 5], "values": [0.5, 1.5]} for i in range(N)]}), src)
    manifest, points = read_points(str(src), vector_column=["vec"], sparse_column=["kw"],
                                   json_columns="meta")
    assert [(v.name, v.kind) for v in manifest.vectors] == [("vec", "dense"), ("kw", "sparse")]
    p0, p3, p4 = points[0], points[3], points[4]
    assert p0["id"] == 0 and points[-1]["id"] == N - 1  # row numbers
    assert p0["payload"] == {"meta": {"lang": "en", "n": 0, "tags": ["a", None],
                                      "big": 2**70},
                             "nested": {"author": {"name": "A0", "age": 0}, "tags": ["t0"]},
                             "score": 0.0, "note": "x"}
    assert "meta" not in p3["payload"] and "note" not in p3["payload"]
    assert "score" not in p4["payload"]
    assert p0["vector"]["kw"]["indices"].tolist() == [0, 5]
    assert p0["vector"]["kw"]["values"].tolist() == [0.5, 1.5]


def test_json_column_that_is_not_json_is_a_record_error(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"v": [[1.0, 2.0]] * 3, "m": ['{"a": 1}', "{oops", "[]"]}), src)
    with pytest.raises(RecordError) as info:
        read_points(str(src), vector_column=["v"], json_columns=["m"])
    assert str(info.value).startswith(f"{src}, row 1, id 1: column 'm' does not hold valid "
                                      "JSON: ")
    assert str(info.value).endswith("(leave 'm' out of --json-columns to keep it as text)")


def test_uuid_ids_then_a_string_is_rejected_with_a_hint(tmp_path):
    ids = [str(uuid.UUID(int=i + 1)) for i in range(2000)] + ["not-a-uuid"]
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id_": ids, "v": [[1.0, 2.0]] * len(ids)}), src)
    reader = vecferry.open_reader(str(src), id_column="id_", vector_column=["v"])
    assert reader.manifest.id_kind == "uuid"
    with pytest.raises(RecordError) as info:
        list(reader.batches(1000))
    assert str(info.value) == (f"{src}, row 2000, id 'not-a-uuid': id 'not-a-uuid' is not a "
                               "UUID but the ids of the first rows are UUIDs (pass --id-kind "
                               "string to read every string id as it is)")
    manifest, points = read_points(str(src), id_column="id_", vector_column=["v"],
                                   id_kind="string")
    assert manifest.id_kind == "string" and points[-1]["id"] == "not-a-uuid"


def test_negative_and_null_ids_are_record_errors(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"key": pa.array([1, 2, -3, None, 5], pa.int64()),
                             "v": [[1.0, 2.0]] * 5}), src)
    with pytest.raises(RecordError) as info:
        read_points(str(src), id_column="key", vector_column=["v"])
    assert str(info.value) == (f"{src}, row 2, id -3: id -3 is outside 0..2^64-1; integer ids "
                               "must be unsigned 64-bit (as in Qdrant and FAISS); write it as a "
                               "string id to keep it")
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"id_column": "key", "vector_column": ["v"]})
    assert (report["written"], report["rejected"]) == (3, 2)
    with open(report["rejects_file"]) as fh:
        rejects = [json.loads(line) for line in fh]
    assert [r["_vecferry_reject"]["reason"] for r in rejects] == [
        "id -3 is outside 0..2^64-1; integer ids must be unsigned 64-bit (as in Qdrant and "
        "FAISS); write it as a string id to keep it", "id column 'key' is null"]


def test_wrong_dimension_and_nan_rows_are_rejected(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [1.0], [float("nan"), 1.0], None,
                                            [3.0, 4.0]], pa.list_(pa.float64()))}), src)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"vector_column": ["v"]})
    assert (report["written"], report["rejected"]) == (2, 3)
    with open(report["rejects_file"]) as fh:
        rejects = [json.loads(line)["_vecferry_reject"] for line in fh]
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (1, "vector (column 'v') has 1 dimensions, expected 2"),
        (2, "vector (column 'v') holds NaN, infinity or a value outside float range"),
        (3, "point has no vector (every vector cell is null)")]


def test_mapping_naming_a_missing_column_lists_the_columns(tmp_path):
    table, _ = _dataset_table(n=3)
    src = tmp_path / "corpus.parquet"
    pq.write_table(table, src)
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(src), id_column="_id", vector_column=["embedding"])
    assert str(info.value) == (f"{src}: --vector-column names column 'embedding', which is not "
                               f"there (columns: _id, title, text, {EMB}) (check the spelling; "
                               "`vecferry inspect FILE` suggests a mapping)")
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(src), id_column="id", vector_column=[EMB])
    assert str(info.value).startswith(f"{src}: --id-column names column 'id', which is not "
                                      f"there (columns: _id, title, text, {EMB})")
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(src), vector_column=[EMB], payload_columns="title,body")
    assert str(info.value).startswith(f"{src}: --payload-columns names column 'body'")


def test_foreign_parquet_without_mapping_suggests_one(tmp_path):
    table, _ = _dataset_table(n=3)
    src = tmp_path / "corpus.parquet"
    pq.write_table(table, src)
    with pytest.raises(InputError) as info:
        vecferry.convert(str(src), str(tmp_path / "o.jsonl"))
    assert str(info.value) == (f"{src}: not a vecferry file: no manifest and no 'id' or 'vector' "
                               f"column (columns: _id, title, text, {EMB}) (read it with a "
                               f"mapping, e.g. --id-column _id --vector-column {EMB})")
    assert os.listdir(tmp_path) == ["corpus.parquet"]


def test_cli_mapping_flags(tmp_path):
    table, vec = _dataset_table()
    src = tmp_path / "corpus.parquet"
    pq.write_table(table, src)
    out = tmp_path / "o.jsonl"
    runner = CliRunner()
    result = runner.invoke(main, ["convert", str(src), str(out), "-q", "--id-column", "_id",
                                  "--vector-column", f"emb={EMB}", "--payload-columns",
                                  "title"])
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text().splitlines()[0])
    assert first["id"] == "doc-0" and first["payload"] == {"title": "Title 0"}
    assert np.array(first["vector"]["emb"], np.float32).tobytes() == vec[0].tobytes()
    result = runner.invoke(main, ["convert", str(src), str(tmp_path / "p.jsonl")])
    assert result.exit_code == 1
    assert "--id-column _id --vector-column" in result.stderr


# ------------------------------------------------------------------------- Parquet shard dirs


def _shards(tmp_path, names=("1.parquet", "2.parquet", "10.parquet"), sizes=(10, 12, 15)):
    d = tmp_path / "train"
    d.mkdir()
    rng = _rng()
    vecs = []
    start = 0
    for name, n in zip(names, sizes, strict=True):
        table, vec = _dataset_table(n, start, rng=rng)
        pq.write_table(table.drop_columns(["_id"]), d / name, row_group_size=4)
        vecs.append(vec)
        start += n
    return d, np.concatenate(vecs)


def test_shard_directory_in_numeric_order_with_row_number_ids(tmp_path):
    d, vec = _shards(tmp_path)
    manifest, points = read_points(str(d), batch_size=5, vector_column=[EMB],
                                   payload_columns=["title"])
    assert manifest.count == N and manifest.id_kind == "int"
    assert _triples(points) == [(i, vec[i].tobytes(), {"title": f"Title {i}"})
                                for i in range(N)]
    reader = vecferry.open_reader(str(d), vector_column=[EMB])
    sizes = [b.num_rows for b in reader.batches(5, start=13)]
    reader.close()
    assert sum(sizes) == N - 13
    reader = vecferry.open_reader(str(d), vector_column=[EMB])
    first = next(reader.batches(5, start=13))
    reader.close()
    assert first.column("id").to_pylist()[0] == 13


def test_shards_with_mismatched_schemas_name_both_files(tmp_path):
    d, _ = _shards(tmp_path)
    table, _ = _dataset_table(3, rng=_rng())
    pq.write_table(table.drop_columns(["_id"]).rename_columns(
        ["title", "body", EMB]), d / "11.parquet")
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(d), vector_column=[EMB])
    assert str(info.value) == (f"{d / '11.parquet'}: schema differs from the first shard "
                               f"{d / '1.parquet'}: columns only here: body; columns missing "
                               "here: text (all shards of one source must share one schema; "
                               "convert the odd shard on its own)")


# ------------------------------------------------------------------------------------- JSONL


def _foreign_jsonl(path, n=N, lang="en"):
    rng = _rng()
    vec = rng.standard_normal((n, 4)).astype(np.float32)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"doc_id": f"d{i}", "embedding": [float(x) for x in vec[i]],
                                 "metadata": {"k": i, "big": 2**70 + i, "none": None},
                                 "lang": lang}) + "\n")
    return vec


def test_jsonl_keys_mapping(tmp_path):
    src = tmp_path / "f.jsonl"
    # --payload-key takes the metadata object alone: a null beside it loses nothing (a value
    # is refused, tests/test_mapping_checks.py)
    vec = _foreign_jsonl(src, lang=None)
    manifest, points = read_points(str(src), batch_size=7, id_key="doc_id",
                                   vector_key=["embedding"], payload_key="metadata")
    assert manifest.id_kind == "string"
    assert _triples(points) == [(f"d{i}", vec[i].tobytes(),
                                 {"k": i, "big": 2**70 + i, "none": None}) for i in range(N)]


def test_jsonl_without_id_key_numbers_records_and_keeps_other_keys(tmp_path):
    src = tmp_path / "f.jsonl"
    vec = _foreign_jsonl(src)
    manifest, points = read_points(str(src), batch_size=5, vector_key=["e=embedding"],
                                   workers=1)
    assert manifest.id_kind == "int" and [v.name for v in manifest.vectors] == ["e"]
    assert [(p["id"], p["vector"]["e"].tobytes(), p["payload"]) for p in points] == [
        (i, vec[i].tobytes(), {"doc_id": f"d{i}", "metadata": {"k": i, "big": 2**70 + i,
                                                               "none": None}, "lang": "en"})
        for i in range(N)]


def test_jsonl_missing_key_lists_the_keys(tmp_path):
    src = tmp_path / "f.jsonl"
    _foreign_jsonl(src, 3)
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(src), vector_key=["vector"])
    assert str(info.value) == (f"{src}: --vector-key names key 'vector', which is not there "
                               "(keys: doc_id, embedding, metadata, lang) (check the spelling; "
                               "`vecferry inspect FILE` suggests a mapping)")
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(src))
    assert str(info.value) == (f"{src}: no point has a vector (each line needs \"vector\": [...] "
                               'or {"name": [...]}, or read foreign records with a mapping: '
                               "--id-key doc_id --vector-key embedding)")


def test_jsonl_record_without_the_id_key_names_its_line(tmp_path):
    src = tmp_path / "f.jsonl"
    _foreign_jsonl(src, 3)
    with open(src, "a") as fh:
        fh.write('{"embedding": [1, 2, 3, 4]}\n')
    with pytest.raises(RecordError) as info:
        read_points(str(src), id_key="doc_id", vector_key=["embedding"])
    assert str(info.value) == (f"{src}, line 4: record has no key 'doc_id' (--id-key; keys: "
                               "embedding) (every record needs an id under that key, or leave "
                               "--id-key out to number the records)")


# ------------------------------------------------------------------------------------ inspect


def test_inspect_suggests_a_mapping(tmp_path):
    table, _ = _dataset_table(n=5)
    table = table.append_column("meta", pa.array(['{"a": 1}'] * 5))
    src = tmp_path / "corpus.parquet"
    pq.write_table(table, src)
    info = inspect_location(str(src))
    s = info["suggested_mapping"]
    assert s["flags"] == f"--id-column _id --vector-column {EMB} --json-columns meta"
    assert s["payload_columns"] == ["title", "text", "meta"]
    assert info["first_ids"] == [f"doc-{i}" for i in range(5)]
    assert info["vectors"][0]["size"] == DIM
    jsrc = tmp_path / "f.jsonl"
    _foreign_jsonl(jsrc, 5)
    s = inspect_location(str(jsrc))["suggested_mapping"]
    # --payload-key metadata would drop "lang": every remaining key stays the payload
    assert s["flags"] == "--id-key doc_id --vector-key embedding"
    assert s["payload_keys"] == ["metadata", "lang"]
    # with the metadata object the only other key, it becomes the payload itself
    jsrc.write_text("".join(json.dumps({"doc_id": f"d{i}", "embedding": [1.0, 2.0],
                                        "metadata": {"k": i}}) + "\n" for i in range(3)))
    s = inspect_location(str(jsrc))["suggested_mapping"]
    assert s["flags"] == "--id-key doc_id --vector-key embedding --payload-key metadata"


def test_inspect_of_a_vecferry_file_suggests_nothing(samples):
    info = inspect_location(str(samples / "points_rich.jsonl"))
    assert "suggested_mapping" not in info


# ------------------------------------------------------------------------------- .npy shards


def _npy_shards(tmp_path, ids=True, metadata=True, sizes=(10, 12, 15)):
    d = tmp_path / "emb"
    d.mkdir()
    rng = _rng()
    vecs, start = [], 0
    for k, n in enumerate(sizes):
        vec = rng.standard_normal((n, DIM)).astype(np.float32)
        np.save(d / f"img_emb_{k}.npy", vec)
        if ids:
            np.save(d / f"ids_{k}.npy", np.arange(start, start + n, dtype=np.int64) * 10)
        if metadata:
            pq.write_table(pa.table({"caption": [f"c{start + i}" for i in range(n)],
                                     "w": [None if i % 3 == 0 else i for i in range(n)]}),
                           d / f"metadata_{k}.parquet")
        vecs.append(vec)
        start += n
    return d, np.concatenate(vecs)


def test_npy_shards_with_ids_and_metadata(tmp_path):
    d, vec = _npy_shards(tmp_path)
    manifest, points = read_points(str(d), batch_size=7)
    assert manifest.count == N and manifest.source["layout"] == "shards"
    expected = []
    start = 0
    for n in (10, 12, 15):
        for i in range(n):
            payload = {"caption": f"c{start + i}"}
            if i % 3:
                payload["w"] = i
            expected.append(((start + i) * 10, vec[start + i].tobytes(), payload))
        start += n
    assert _triples(points) == expected
    reader = vecferry.open_reader(str(d))
    resumed = [r for b in reader.batches(4, start=11) for r in b.column("id").to_pylist()]
    reader.close()
    assert resumed == [i * 10 for i in range(11, N)]


def test_npy_shard_metadata_nan_is_a_bad_record_not_a_dropped_value(tmp_path):
    d, vec = _npy_shards(tmp_path)
    pq.write_table(pa.table({"caption": [f"c{10 + i}" for i in range(12)],
                             "w": [float("nan") if i == 4 else float(i) for i in range(12)]}),
                   d / "metadata_1.parquet")
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(d), str(tmp_path / "o.jsonl"))
    assert str(info.value) == (
        f"{d / 'metadata_1.parquet'}, row 4, id 140: column 'w' holds NaN, which JSON cannot "
        "hold (write null for a missing value in the metadata file)")

    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(str(d), str(tmp_path / "o.jsonl"), on_error="skip",
                              rejects=str(rejects), batch_size=5)
    assert (report["read"], report["written"], report["rejected"]) == (N, N - 1, 1)
    (line,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert line["id"] == 140 and line["payload"]["caption"] == "c14"
    # NaN is written as it is, so a re-run left unfixed names it instead of dropping it
    assert math.isnan(line["payload"]["w"])
    with pytest.raises(InputError) as again:
        vecferry.convert(str(rejects), str(tmp_path / "again.jsonl"))
    assert str(again.value).startswith(f"{rejects}, line 1, id 140: line holds NaN, which JSON "
                                       "cannot express (write null or a number instead")
    assert np.array(line["vector"], np.float32).tobytes() == vec[14].tobytes()
    assert line["_vecferry_reject"]["row"] == 4


def test_npy_shards_without_ids_use_row_numbers(tmp_path):
    d, vec = _npy_shards(tmp_path, ids=False, metadata=False)
    manifest, points = read_points(str(d), batch_size=5)
    assert manifest.id_kind == "int"
    assert _triples(points) == [(i, vec[i].tobytes(), None) for i in range(N)]


def test_npy_shard_missing_its_ids_is_an_error(tmp_path):
    d, _ = _npy_shards(tmp_path, metadata=False)
    os.remove(d / "ids_1.npy")
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(d))
    assert str(info.value) == (f"{d / 'img_emb_1.npy'}: shard 1 has no ids file (others have) "
                               "(give every shard its ids, or none)")


def test_per_vector_directory_is_still_per_vector(samples):
    manifest, points = read_points(str(samples / "per_vector"))
    assert manifest.source.get("layout") != "shards"
    assert len(points) > 0


def test_inspect_text_prints_the_suggested_mapping(tmp_path):
    from click.testing import CliRunner

    from vecferry.cli import main

    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"_id": ["a", "b"], "title": ["x", "y"],
                             "emb": [[0.5, 1.5, 2.5], [3.5, 4.5, 5.5]]}), path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert ("mapping:   read with the suggested mapping; convert with: --id-column _id "
            "--vector-column emb") in result.output


def test_a_directory_of_jsonl_files_from_another_tool_reads_in_natural_order(tmp_path):
    import gzip

    d = tmp_path / "export"
    d.mkdir()
    for k in (1, 2, 10):
        text = "".join(json.dumps({"id": k * 100 + i, "vector": [float(k), float(i)]}) + "\n"
                       for i in range(2))
        if k == 2:
            (d / f"chunk_{k}.jsonl.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (d / f"chunk_{k}.ndjson" if k == 10 else d / f"chunk_{k}.jsonl").write_text(text)
    (d / "_SUCCESS").write_text("")
    (d / ".chunk_3.jsonl.crc").write_text("x")
    (d / "_temporary.jsonl").write_text("not json\n")
    assert vecferry.converters.resolve(str(d)).name == "jsonl"
    _, points = read_points(str(d))
    assert [p["id"] for p in points] == [100, 101, 200, 201, 1000, 1001]


def test_a_hive_partitioned_dataset_reads_with_its_partition_keys(tmp_path):
    # what Spark's partitionBy and pyarrow's write_to_dataset make: lang=en/year=2024/*.parquet
    n = 8
    vec = _rng().standard_normal((n, DIM)).astype(np.float32)
    table = pa.table({"doc": [f"d{i}" for i in range(n)],
                      "emb": pa.array(list(vec), pa.list_(pa.float32())),
                      "lang": ["en", "en", "de", "a b/c", None, "fr", "de", "en"],
                      "year": [2024, 2025, 2025, 2024, 2024, 2025, 2025, 2024]})
    d = tmp_path / "ds"
    pq.write_to_dataset(table, d, partition_cols=["lang", "year"])
    (d / "_SUCCESS").write_text("")
    assert vecferry.converters.resolve(str(d)).name == "parquet"
    manifest, points = read_points(str(d), id_column="doc", vector_column=["emb"])
    assert manifest.count == n
    got = {p["id"]: (p["vector"].tobytes(), p["payload"]) for p in points}
    expected = {}
    for i in range(n):
        payload = {"year": table["year"][i].as_py()}
        if table["lang"][i].as_py() is not None:
            payload["lang"] = table["lang"][i].as_py()
        expected[f"d{i}"] = (vec[i].tobytes(), payload)
    assert got == expected
    # the year directories hold integers: they come back as integers, not text
    assert all(type(p["payload"]["year"]) is int for p in points)
