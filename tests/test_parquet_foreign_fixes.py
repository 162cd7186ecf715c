"""Parquet that other tools write, read as they meant it: directories of parts named as Spark,
DuckDB and hand copies name them; pandas' payload columns and index; vector columns null in
their first rows; the view types polars and pyarrow write; decimals; integer vectors; polars'
multivectors.

Every test writes real files with pandas, polars or pyarrow under ``tmp_path`` and checks the
exact points, warnings or error that come out.
"""

from __future__ import annotations

import decimal
import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from failing import fails
from roundtrip import read_points
from vecferry.errors import InputError, UsageError
from vecferry.inspect import inspect_location
from vecferry.mapping import merge_narrowed, narrowed_warning


def _table(ids: list[int]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "v": pa.array([[float(i), 1.0] for i in ids], pa.list_(pa.float32()))})


def _ids(location: Path, **options: object) -> list[object]:
    _, points = read_points(str(location), id_column="id", vector_column=["v"], **options)
    return [p["id"] for p in points]


def _convert(src: Path, out: Path, **reader_options: object) -> tuple[dict, list[dict]]:
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options=reader_options)
    with open(out) as fh:
        return report, [json.loads(line) for line in fh]


def _rejects(report: dict) -> list[tuple[int, str]]:
    with open(report["rejects_file"]) as fh:
        return [(r["_vecferry_reject"]["row"], r["_vecferry_reject"]["reason"])
                for r in map(json.loads, fh)]


# ------------------------------------------------------------------ 1. source directories


def test_directory_reads_pq_upper_case_and_plain_subfolders(tmp_path):
    root = tmp_path / "d"
    for sub in ("sub", "k=x", "_temporary/0", ".d.vftmp-1234abcd"):
        (root / sub).mkdir(parents=True)
    pq.write_table(_table([1]), root / "a.parquet")
    pq.write_table(_table([2]), root / "b.pq")
    pq.write_table(_table([3]), root / "c.PARQUET")
    pl.from_arrow(_table([4])).write_parquet(root / "sub" / "d.parquet")
    _table([5]).to_pandas().to_parquet(root / "k=x" / "e.parquet")
    # hidden as Spark, Hadoop and vecferry hide them: never read, never refused
    pq.write_table(_table([90]), root / "_temporary" / "0" / "f.parquet")
    pq.write_table(_table([91]), root / ".d.vftmp-1234abcd" / "g.parquet")
    for name in ("_SUCCESS", "_metadata", "_common_metadata", ".a.parquet.crc",
                 "part-1.parquet.crc", "x.jsonl.manifest.json"):
        (root / name).write_bytes(b"x")
    _, points = read_points(str(root), id_column="id", vector_column=["v"])
    # natural path order; only the part in k=x/ has the partition field
    assert [(p["id"], p["payload"]) for p in points] == [
        (1, None), (2, None), (3, None), (5, {"k": "x"}), (4, None)]


def test_directory_refuses_files_it_would_not_read(tmp_path):
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    pq.write_table(_table([1]), root / "a.parquet")
    for name in ("notes.txt", "000000_0", "sub/data.csv", "b.json", "c.orc", "d.parq",
                 "e.txt"):
        (root / name).write_bytes(b"x")
    text = fails(InputError, lambda: _ids(root))
    assert text == (
        f"{root}: directory holds 7 file(s) that are not Parquet by name, which would not be "
        "read: 000000_0, b.json, c.orc, d.parq, e.txt and 2 more (Parquet parts end in "
        ".parquet or .pq (any letter case, the extensions of the format); rename those that "
        "are Parquet, and move the others out or give them a leading _ or . (which vecferry, "
        "Spark and pyarrow skip))")


def test_file_below_a_vecferry_directory_is_not_one_of_its_parts(tmp_path):
    src = tmp_path / "s.parquet"
    pq.write_table(_table([1, 2]), src)
    out = tmp_path / "out"
    vecferry.convert(str(src), f"{out}/", to_format="parquet",
                     reader_options={"id_column": "id", "vector_column": ["v"]})
    (out / "sub").mkdir()
    pq.write_table(_table([3]), out / "sub" / "part-00000.parquet")
    text = fails(InputError, lambda: read_points(str(out)))
    assert text == (f"{out}: part file(s) not listed in _manifest.json: sub/part-00000.parquet "
                    "(remove them, or delete the directory's manifest to read every part)")


# ------------------------------------------------------------------ 2. pandas' payloads


def _pandas_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2, 3],
                         "vector": [np.array([1, 2], np.float32) + i for i in range(3)],
                         "metadata": [{"a": 1, "b": "x"}, {"a": 2}, None]})


def test_pandas_metadata_column_is_the_payload_itself(tmp_path):
    src = tmp_path / "pd.parquet"
    _pandas_frame().to_parquet(src)  # default RangeIndex: metadata only, no column
    suggested = inspect_location(str(src))["suggested_mapping"]
    assert (suggested["payload_column"], suggested["dropped_columns"]) == ("metadata", [])
    _, points = read_points(str(src), id_column="id", vector_column=["vector"])
    # pandas writes the dicts as a struct; a key a dict lacks is a null field, left out
    assert [p["payload"] for p in points] == [{"a": 1, "b": "x"}, {"a": 2}, None]


def test_pandas_unnamed_index_is_dropped_with_a_warning(tmp_path):
    src = tmp_path / "pd.parquet"
    _pandas_frame().iloc[[0, 2]].set_index(pd.Index(["x", "y"])).to_parquet(src)
    assert "__index_level_0__" in pq.read_schema(src).names
    assert inspect_location(str(src))["suggested_mapping"]["dropped_columns"] == [
        "__index_level_0__"]
    report, lines = _convert(src, tmp_path / "o.jsonl", id_column="id",
                             vector_column=["vector"])
    assert report["warnings"] == [
        "column(s) '__index_level_0__' left out of the payload: pandas' unnamed row index "
        "(DataFrame.to_parquet writes it when the index is not a plain range), not data; name "
        "it in --payload-columns to keep it"]
    assert [line.get("payload") for line in lines] == [{"a": 1, "b": "x"}, None]
    # named, it is kept
    _, points = read_points(str(src), id_column="id", vector_column=["vector"],
                            payload_columns="metadata,__index_level_0__")
    assert points[0]["payload"] == {"metadata": {"a": 1, "b": "x"}, "__index_level_0__": "x"}


def test_pandas_named_index_is_data(tmp_path):
    src = tmp_path / "pd.parquet"
    _pandas_frame().set_index(pd.Index(["r0", "r1", "r2"], name="row")).to_parquet(src)
    _, points = read_points(str(src), id_column="id", vector_column=["vector"])
    # beside another column the payload column stays a key, as JSONL's suggestion keeps it
    assert points[0]["payload"] == {"metadata": {"a": 1, "b": "x"}, "row": "r0"}


def test_payload_json_text_column_is_the_payload_and_a_list_is_refused(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "emb": pa.array([[1.0, 2.0]] * 3),
                             "payload": ['{"a": null, "b": [1]}', "[1, 2]", None]}), src)
    suggested = inspect_location(str(src))["suggested_mapping"]
    assert suggested["flags"] == "--id-column id --vector-column emb --json-columns payload"
    assert suggested["payload_column"] == "payload"
    report, lines = _convert(src, tmp_path / "o.jsonl", id_column="id", vector_column=["emb"],
                             json_columns="payload")
    assert [(line["id"], line.get("payload")) for line in lines] == [
        (1, {"a": None, "b": [1]}), (3, None)]
    assert _rejects(report) == [
        (1, "column 'payload' holds a list, not an object, so it cannot be the payload")]


def test_payload_column_option_takes_one_column_as_the_payload(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1], "emb": pa.array([[1.0, 2.0]]), "text": ["t"],
                             "attrs": pa.array([{"k": 1}], pa.struct([("k", pa.int64())]))}),
                   src)
    # without it, two payload columns stay keys
    _, points = read_points(str(src), id_column="id", vector_column=["emb"])
    assert points[0]["payload"] == {"text": "t", "attrs": {"k": 1}}
    manifest, points = read_points(str(src), id_column="id", vector_column=["emb"],
                                   payload_column="attrs")
    assert points[0]["payload"] == {"k": 1}
    assert manifest.source["mapping"]["payload_column"] == "attrs"
    text = fails(UsageError, lambda: read_points(
        str(src), id_column="id", vector_column=["emb"], payload_column="attrs",
        payload_columns="text"))
    assert text == ("payload_column and payload_columns both name the payload (pass "
                    "payload_column for a column whose object is the payload, or "
                    "payload_columns for columns that are its keys)")


# ------------------------------------------------------ 3. vectors null in the first rows


def test_vector_column_null_in_its_first_rows_is_sized_by_a_later_value(tmp_path):
    n = 3000
    src = tmp_path / "late.parquet"
    late = [None] * 2500 + [[float(i), 1.0, 2.0] for i in range(n - 2500)]
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()),
                             "a": pa.array(late, pa.list_(pa.float32())),
                             "b": pa.array([[1.0, 2.0]] * n, pa.list_(pa.float32()))}),
                   src, row_group_size=1000)
    manifest, points = read_points(str(src), batch_size=500, id_column="id",
                                   vector_column=["a=a", "b=b"])
    assert [(v.name, v.size) for v in manifest.vectors] == [("a", 3), ("b", 2)]
    assert points[2500]["vector"]["a"].tolist() == [0.0, 1.0, 2.0]
    assert "a" not in points[0]["vector"]


def test_vector_column_without_any_value_says_how_to_give_the_size(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1, 2], "a": pa.array([None, []], pa.list_(pa.float32())),
                             "b": pa.array([[1.0, 2.0]] * 2, pa.list_(pa.float32()))}), src)
    text = fails(InputError, lambda: read_points(str(src), id_column="id",
                                                 vector_column=["a=a", "b=b"]))
    assert text == (f"{src}: column 'a' holds no vector in any row (every cell is null or "
                    "empty), so its vector size is unknown (write the column as "
                    "fixed_size_list<float32>[size] (its type then gives the size), or leave it "
                    "out of --vector-column if it holds no vectors)")


# --------------------------------------------------------------------------- 4. view types


def test_view_typed_id_and_vector_columns_are_read(tmp_path):
    src = tmp_path / "views.parquet"
    pq.write_table(pa.table({
        "id": pa.array(["a", "b"], pa.string_view()),
        "emb": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_view(pa.float32())),
        "big": pa.array([[5.0], [6.0]], pa.large_list_view(pa.float64())),
        "tag": pa.array(["x", None], pa.string_view())}), src)
    assert pq.read_schema(src).field("id").type == pa.string_view()
    suggested = inspect_location(str(src))["suggested_mapping"]
    assert suggested["flags"] == "--id-column id --vector-column emb"
    _, points = read_points(str(src), id_column="id", vector_column=["e=emb", "g=big"])
    assert [(p["id"], p["vector"]["e"].tolist(), p["vector"]["g"].tolist(), p["payload"])
            for p in points] == [("a", [1.0, 2.0], [5.0], {"tag": "x"}),
                                 ("b", [3.0, 4.0], [6.0], None)]


# ------------------------------------------------------------------------------ 5. decimals


def test_decimals_are_plain_exact_digits(tmp_path):
    src = tmp_path / "dec.parquet"
    pq.write_table(pa.table({
        "id": [1, 2], "emb": pa.array([[1.0, 2.0]] * 2),
        "small": pa.array([decimal.Decimal("0.0000001"), decimal.Decimal("-0.0000120")],
                          pa.decimal128(20, 7)),
        "zero": pa.array([decimal.Decimal("0E-9"), decimal.Decimal("1E+30")],
                         pa.decimal256(45, 9))}), src)
    _, lines = _convert(src, tmp_path / "o.jsonl", id_column="id", vector_column=["emb"])
    assert [line["payload"] for line in lines] == [
        {"small": "0.0000001", "zero": "0.000000000"},
        {"small": "-0.0000120", "zero": "1000000000000000000000000000000.000000000"}]


# ------------------------------------------------------------------ 6. narrowing warnings


def test_integer_vectors_are_named_in_the_narrowing_warnings(tmp_path):
    src = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": [1, 2], "v": pa.array([[1, 2], [16777217, 3]],
                                                         pa.list_(pa.int64()))}), src)
    report, lines = _convert(src, tmp_path / "o.jsonl", id_column="id", vector_column=["v"])
    assert report["warnings"] == [
        "int64 vectors are narrowed to float32 (Qdrant, FAISS and the stream store float32); "
        "the report counts values that changed",
        "1 int64 value(s) changed when narrowed to float32"]
    assert lines[1]["vector"] == [16777216.0, 3.0]


def test_narrowed_counts_merge_by_source_type():
    assert narrowed_warning(3) == "3 float64 value(s) changed when narrowed to float32"
    assert merge_narrowed([narrowed_warning(1, "int64"), "other", narrowed_warning(2),
                           narrowed_warning(4, "int64"), narrowed_warning(5)]) == [
        "5 int64 value(s) changed when narrowed to float32", "other",
        "7 float64 value(s) changed when narrowed to float32"]


# ----------------------------------------------------------------- 7. polars multivectors


def test_polars_list_of_arrays_is_a_multivector(tmp_path):
    src = tmp_path / "mv.parquet"
    pl.DataFrame({
        "id": [1, 2, 3, 4],
        "mv": pl.Series([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]], [], [[float("nan"), 1.0]]],
                        dtype=pl.List(pl.Array(pl.Float32, 2))),
    }).write_parquet(src)
    assert inspect_location(str(src))["suggested_mapping"]["flags"] == (
        "--id-column id --vector-column mv")
    report, lines = _convert(src, tmp_path / "o.jsonl", id_column="id", vector_column=["mv"])
    manifest = json.loads((tmp_path / "o.jsonl.manifest.json").read_text())
    assert [(v["kind"], v["size"]) for v in manifest["vectors"]] == [("multi", 2)]
    assert [(line["id"], line["vector"]) for line in lines] == [
        (1, [[1.0, 2.0], [3.0, 4.0]]), (2, [[5.0, 6.0]])]
    assert _rejects(report) == [
        (2, "vector (column 'mv') holds no sub-vector (a multivector holds at least one)"),
        (3, "vector (column 'mv') holds NaN, infinity or a value outside float range")]


@pytest.mark.parametrize("dtype", [pl.Float64, pl.Int32])
def test_polars_multivector_of_other_numbers_is_narrowed(tmp_path, dtype):
    src = tmp_path / "mv.parquet"
    pl.DataFrame({"id": [1], "mv": pl.Series([[[1, 2], [3, 4]]],
                                             dtype=pl.List(pl.Array(dtype, 2)))}
                 ).write_parquet(src)
    _, points = read_points(str(src), id_column="id", vector_column=["mv"])
    assert [v.tolist() for v in points[0]["vector"]] == [[1.0, 2.0], [3.0, 4.0]]
