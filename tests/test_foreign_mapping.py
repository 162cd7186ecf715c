"""Parquet files other tools write, read through a mapping: float payload values JSON cannot
hold, files that look like vecferry's but are not (an ``id`` column with another vector column,
pandas' ``list<float>`` vectors), and id columns of the types pandas, Spark and DuckDB write
(categoricals, 16-byte UUIDs, Arrow's ``uuid`` type).

Every test writes real Parquet with pyarrow (or pandas) and checks the exact points that come
out, or the exact error.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from failing import fails
from roundtrip import read_points
from vecferry.cli import main
from vecferry.converters.base import Context
from vecferry.errors import InputError, RecordError, SchemaError, UsageError
from vecferry.inspect import inspect_location
from vecferry.mapping import Mapping, TableMapper

NAN, INF = float("nan"), float("inf")
HINT = "write null for a missing value, or leave {!r} out with --payload-columns"


def _vectors(n: int, dim: int = 2, fixed: bool = False) -> pa.Array:
    flat = np.arange(n * dim, dtype=np.float32)
    if fixed:
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
    return pa.array(flat.reshape(n, dim).tolist(), pa.list_(pa.float32()))


def _rejects(report: dict) -> list[dict]:
    with open(report["rejects_file"]) as fh:
        return [json.loads(line) for line in fh]


# ------------------------------------------------------------- NaN and infinity in payloads


def test_nan_in_a_float_payload_column_is_a_record_error(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([7, 8], pa.int64()), "emb": _vectors(2),
                             "score": [0.5, NAN]}), src)
    text = fails(RecordError, lambda: read_points(str(src), id_column="id",
                                                  vector_column=["emb"]))
    assert text == (f"{src}, row 1, id 8: column 'score' holds NaN, which JSON cannot hold "
                    f"({HINT.format('score')})")


def test_nan_and_infinity_rows_go_to_the_rejects_file(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "id": pa.array([1, 2, 3, 4, 5], pa.int64()), "emb": _vectors(5),
        "score": pa.array([0.25, NAN, INF, -INF, None], pa.float64()),
        "f32": pa.array([1.5, 2.5, 3.5, 4.5, NAN], pa.float32())}), src)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"id_column": "id", "vector_column": ["emb"]})
    assert (report["written"], report["rejected"]) == (1, 4)
    assert [(r["_vecferry_reject"]["row"], r["_vecferry_reject"]["point_id"],
             r["_vecferry_reject"]["reason"]) for r in _rejects(report)] == [
        (1, 2, "column 'score' holds NaN, which JSON cannot hold"),
        (2, 3, "column 'score' holds Infinity, which JSON cannot hold"),
        (3, 4, "column 'score' holds -Infinity, which JSON cannot hold"),
        (4, 5, "column 'f32' holds NaN, which JSON cannot hold")]
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"id": 1, "vector": [0.0, 1.0], "payload": {"score": 0.25, "f32": 1.5}}]


def test_nan_in_a_float32_column_and_null_cells(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "emb": _vectors(3),
                             "score": pa.array([None, 0.5, 1.0], pa.float64()),
                             "f32": pa.array([1.5, None, NAN], pa.float32())}), src)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"id_column": "id", "vector_column": ["emb"]})
    assert (report["written"], report["rejected"]) == (2, 1)
    assert [r["_vecferry_reject"]["reason"] for r in _rejects(report)] == [
        "column 'f32' holds NaN, which JSON cannot hold"]
    points = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["id"], p["payload"]) for p in points] == [(1, {"f32": 1.5}),
                                                         (2, {"score": 0.5})]


@pytest.mark.parametrize(("column", "value", "message"), [
    ("scores", pa.array([[1.0, NAN]], pa.list_(pa.float64())),
     "column 'scores' holds NaN at [1], which JSON cannot hold"),
    ("meta", pa.array([{"a": {"b": -INF}, "c": 1}],
                      pa.struct([("a", pa.struct([("b", pa.float32())])), ("c", pa.int64())])),
     "column 'meta' holds -Infinity at a.b, which JSON cannot hold"),
    ("items", pa.array([[{"w": 0.5}, {"w": INF}]], pa.list_(pa.struct([("w", pa.float64())]))),
     "column 'items' holds Infinity at [1].w, which JSON cannot hold"),
])
def test_nan_nested_in_lists_and_structs(tmp_path, column, value, message):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([3], pa.int64()), "emb": _vectors(1),
                             column: value}), src)
    text = fails(RecordError, lambda: read_points(str(src), id_column="id",
                                                  vector_column=["emb"]))
    assert text == f"{src}, row 0, id 3: {message} ({HINT.format(column)})"


def test_finite_nested_floats_and_payload_columns_choice(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "emb": _vectors(2),
                             "scores": pa.array([[0.5, -1.25], None], pa.list_(pa.float64())),
                             "bad": [NAN, 2.0]}), src)
    _, points = read_points(str(src), id_column="id", vector_column=["emb"],
                            payload_columns="scores")
    assert [(p["id"], p["payload"]) for p in points] == [(1, {"scores": [0.5, -1.25]}),
                                                         (2, None)]


def test_cli_names_the_nan_row(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "emb": _vectors(2),
                             "score": [NAN, INF]}), src)
    result = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "o.jsonl"), "-q",
                                       "--id-column", "id", "--vector-column", "emb"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {src}, row 0, id 1: column 'score' holds NaN, "
                                     f"which JSON cannot hold ({HINT.format('score')}; or "
                                     "pass --on-error skip to go on past such records: "
                                     "convert and copy set them aside in a rejects file)")


# ------------------------------------------------------ files that are not vecferry's own


def _convert_error(tmp_path, src) -> str:
    return fails(InputError, lambda: vecferry.convert(str(src), str(tmp_path / "o.jsonl")))


FOREIGN = [
    ({"id": pa.array([1, 2], pa.int64()), "emb": _vectors(2, 4, fixed=True)},
     "no 'vector' column", "--id-column id --vector-column emb"),
    ({"id": pa.array([1, 2], pa.int64()), "vector": _vectors(2, 4)},
     "column 'vector' has type list<element: float>, which is not a vecferry vector type",
     "--id-column id --vector-column vector"),
    ({"id": pa.array([1, 2], pa.int64()),
      "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(8.0)), 4)},
     "column 'vector' has type fixed_size_list<element: double>[4], which is not a "
     "vecferry vector type", "--id-column id --vector-column vector"),
    ({"id": pa.array([1, 2], pa.int64()), "vector": _vectors(2, 4, fixed=True),
      "title": ["a", "b"]},
     "columns that are not vecferry's: title", "--id-column id --vector-column vector"),
    ({"id": pa.array([1, 2], pa.int64()), "vector": _vectors(2, 4, fixed=True),
      "payload": pa.array([{"a": 1}, {"a": 2}])},
     "column 'payload' has type struct<a: int64>, not JSON text",
     "--id-column id --vector-column vector"),
    ({"id": pa.array(["a", "b"]).dictionary_encode(), "vector": _vectors(2, 4, fixed=True)},
     "column 'id' has type dictionary<values=string, indices=int32, ordered=0>, which "
     "vecferry does not write", "--id-column id --vector-column vector"),
    ({"vector": _vectors(2, 4, fixed=True)}, "no 'id' column", "--vector-column vector"),
]


@pytest.mark.parametrize(("columns", "problem", "flags"), FOREIGN)
def test_a_foreign_file_with_vecferry_like_columns_names_the_flags(tmp_path, columns, problem,
                                                                   flags):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table(columns), src)
    names = ", ".join(columns)
    assert _convert_error(tmp_path, src) == (
        f"{src}: not a vecferry file: no manifest and {problem} (columns: {names}) (read it "
        f"with a mapping, e.g. {flags})")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
    # inspect reads it through the same mapping
    info = inspect_location(str(src))
    assert info["suggested_mapping"]["flags"] == flags
    assert info["count"] == 2 and info["vectors"][0]["size"] == 4


def test_id_and_emb_read_with_the_suggested_mapping(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([10, 11], pa.int64()),
                             "emb": _vectors(2, 4, fixed=True), "lang": ["en", "de"]}), src)
    info = inspect_location(str(src))
    assert info["first_ids"] == [10, 11] and info["id_kind"] == "int"
    assert info["payload_keys"] == {"lang": 2}
    manifest, points = read_points(str(src), **info["suggested_mapping"]["options"])
    assert [(v.name, v.size) for v in manifest.vectors] == [("", 4)]
    assert [(p["id"], p["vector"].tolist(), p["payload"]) for p in points] == [
        (10, [0.0, 1.0, 2.0, 3.0], {"lang": "en"}), (11, [4.0, 5.0, 6.0, 7.0], {"lang": "de"})]


def test_pandas_id_and_vector_list(tmp_path):
    src = tmp_path / "p.parquet"
    pd.DataFrame({"id": [1, 2], "vector": [np.array([0.5, 1.5, 2.5], np.float32),
                                           np.array([3.5, 4.5, 5.5], np.float32)],
                  "title": ["x", "y"]}).to_parquet(src)
    assert _convert_error(tmp_path, src) == (
        f"{src}: not a vecferry file: no manifest and column 'vector' has type list<element: "
        "float>, which is not a vecferry vector type (columns: id, vector, title) (read it "
        "with a mapping, e.g. --id-column id --vector-column vector)")
    result = CliRunner().invoke(main, ["inspect", str(src)])
    assert result.exit_code == 0, result.output
    assert ("mapping:   read with the suggested mapping; convert with: --id-column id "
            "--vector-column vector") in result.output
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(main, ["convert", str(src), str(out), "-q", "--id-column", "id",
                                       "--vector-column", "vector"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"id": 1, "vector": [0.5, 1.5, 2.5], "payload": {"title": "x"}},
        {"id": 2, "vector": [3.5, 4.5, 5.5], "payload": {"title": "y"}}]


def test_the_stream_layout_without_a_manifest_is_still_read_as_it_is(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([4, 5], pa.uint64()),
                             "vector": _vectors(2, 4, fixed=True),
                             "payload": ['{"a":1}', None]}), src)
    manifest, points = read_points(str(src))
    assert manifest.source == {"format": "parquet", "location": str(src)}
    assert [(p["id"], p["payload"]) for p in points] == [(4, {"a": 1}), (5, None)]
    assert "suggested_mapping" not in inspect_location(str(src))


def test_ids_but_nothing_like_a_vector_keeps_the_layout_message(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "title": ["a", "b"],
                             "extra": [1, 2]}), src)
    assert _convert_error(tmp_path, src) == (
        f"{src}: no vector column (columns: id, title, extra) (name the vector column "
        "'vector' or 'vector.<name>')")


def test_stream_layout_with_an_extra_column_and_no_vector_like_column(tmp_path):
    # a one-value vector is no vector to the suggestion: the error says what to pass
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()),
                             "vector": _vectors(2, 1, fixed=True), "title": ["a", "b"]}), src)
    assert _convert_error(tmp_path, src) == (
        f"{src}: not a vecferry file: no manifest and columns that are not vecferry's: title "
        "(columns: id, vector, title) (read it with a mapping: --vector-column [NAME=]COLUMN, "
        "optionally --id-column COLUMN and --payload-columns a,b,c; no column looks like a "
        "vector)")


# ---------------------------------------------------------------------------- id column types


def test_pandas_categorical_ids_are_decoded(tmp_path):
    src = tmp_path / "p.parquet"
    pd.DataFrame({"doc_id": pd.Categorical(["b", "a", "b2", None]),
                  "emb": [np.array([1, 2], np.float32)] * 4,
                  "lang": pd.Categorical(["en", "de", "en", "fr"])}).to_parquet(src)
    assert pa.types.is_dictionary(pq.read_schema(src).field("doc_id").type)
    info = inspect_location(str(src))
    assert info["suggested_mapping"]["flags"] == "--id-column doc_id --vector-column emb"
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"id_column": "doc_id", "vector_column": ["emb"]})
    assert (report["written"], report["rejected"]) == (3, 1)
    assert [(r["_vecferry_reject"]["row"], r["_vecferry_reject"]["reason"])
            for r in _rejects(report)] == [(3, "id column 'doc_id' is null")]
    assert [(p["id"], p["payload"]) for p in map(json.loads, out.read_text().splitlines())] == [
        ("b", {"lang": "en"}), ("a", {"lang": "de"}), ("b2", {"lang": "en"})]


def test_dictionary_integer_ids():
    # Parquet hands integer dictionaries back decoded; an Arrow table (a VDF or IPC source)
    # keeps them, so the mapper is fed one directly
    ids = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, None], pa.int8()),
                                         pa.array([2**40, 5], pa.int64()))
    batch = pa.record_batch({"key": ids, "emb": _vectors(4)})
    mapper = TableMapper(Mapping(id_column="key", vector_columns=("emb",)), batch.schema,
                         "t.arrow", batch)
    context = Context(on_error="skip")
    out = mapper.convert(batch, row0=0, number0=0, source="t.arrow", context=context)
    assert mapper.manifest.id_kind == "int"
    assert out.column("id").to_pylist() == [2**40, 5, 2**40]
    assert context.rejected == 1


def test_categorical_shards_with_different_index_widths(tmp_path):
    # pandas picks the index width by the number of categories: int8 here, int16 there
    d = tmp_path / "shards"
    d.mkdir()
    pd.DataFrame({"doc_id": pd.Categorical(["a", "b"]),
                  "emb": [np.array([1, 2], np.float32)] * 2}).to_parquet(d / "1.parquet")
    many = [f"d{i}" for i in range(300)]
    pd.DataFrame({"doc_id": pd.Categorical(many),
                  "emb": [np.array([3, 4], np.float32)] * 300}).to_parquet(d / "2.parquet")
    assert pq.read_schema(d / "2.parquet").field("doc_id").type.index_type == pa.int16()
    manifest, points = read_points(str(d), batch_size=100, id_column="doc_id",
                                   vector_column=["emb"])
    assert manifest.count == 302 and manifest.id_kind == "string"
    assert [p["id"] for p in points] == ["a", "b", *many]


UUIDS = [uuid.UUID(int=5), uuid.UUID("8f14e45f-ceea-467f-a0e6-d1b0c7a9b2e1")]


@pytest.mark.parametrize("id_type", [pa.binary(16), pa.uuid()])
def test_sixteen_byte_and_arrow_uuid_ids(tmp_path, id_type):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"uuid": pa.array([u.bytes for u in UUIDS], id_type),
                             "emb": _vectors(2), "n": [1, 2]}), src)
    info = inspect_location(str(src))
    assert info["suggested_mapping"]["flags"] == "--id-column uuid --vector-column emb"
    assert info["id_kind"] == "uuid"
    manifest, points = read_points(str(src), id_column="uuid", vector_column=["emb"])
    assert manifest.id_kind == "uuid"
    assert [(p["id"], p["payload"]) for p in points] == [
        ("00000000-0000-0000-0000-000000000005", {"n": 1}),
        ("8f14e45f-ceea-467f-a0e6-d1b0c7a9b2e1", {"n": 2})]
    manifest, points = read_points(str(src), id_column="uuid", vector_column=["emb"],
                                   id_kind="string")
    assert manifest.id_kind == "string"
    assert [p["id"] for p in points] == [str(u) for u in UUIDS]


def test_uuid_ids_in_the_rejects_file_are_canonical_text(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([UUIDS[0].bytes, None, UUIDS[1].bytes],
                                            pa.binary(16)),
                             "emb": _vectors(3), "score": [1.0, 2.0, NAN]}), src)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"id_column": "id", "vector_column": ["emb"]})
    assert (report["written"], report["rejected"]) == (1, 2)
    rejects = _rejects(report)
    assert [(r["id"], r["_vecferry_reject"].get("point_id"), r["_vecferry_reject"]["reason"])
            for r in rejects] == [
        (None, None, "id column 'id' is null"),
        (str(UUIDS[1]), str(UUIDS[1]), "column 'score' holds NaN, which JSON cannot hold")]
    assert json.loads(out.read_text())["id"] == str(UUIDS[0])


def test_int_id_kind_for_uuid_ids_is_refused(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([u.bytes for u in UUIDS], pa.binary(16)),
                             "emb": _vectors(2)}), src)
    text = fails(UsageError, lambda: vecferry.open_reader(str(src), id_column="id",
                                                          vector_column=["emb"], id_kind="int"))
    assert text == (f"{src}: id column 'id' holds UUIDs (fixed_size_binary[16]), so --id-kind "
                    "int does not apply (leave --id-kind out, or pass --id-kind string)")


@pytest.mark.parametrize(("column", "name"), [
    (pa.array([b"12345678", b"abcdefgh"], pa.binary(8)), "fixed_size_binary[8]"),
    (pa.array([b"a", b"b"]).dictionary_encode(),
     "dictionary<values=binary, indices=int32, ordered=0>"),
])
def test_other_id_types_are_still_refused(tmp_path, column, name):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"key": column, "emb": _vectors(2)}), src)
    text = fails(SchemaError, lambda: vecferry.open_reader(str(src), id_column="key",
                                                           vector_column=["emb"]))
    assert text == (f"{src}: id column 'key' has type {name}; ids are integers or strings "
                    "(map another id column, or leave --id-column out to number rows)")
