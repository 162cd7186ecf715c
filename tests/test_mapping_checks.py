"""Mapped sources checked as strictly as vecferry's own (README, "Reading data other tools
wrote" and "Bad input"): a mapped re-run of a rejects file takes the source's shape from the
rejects manifest, a record the key mapping cannot make a point of is named by line and id,
``--payload-key`` loses no other key unseen, 16-byte UUID id columns are found whatever their
name, and Parquet payload values Python's ``datetime`` cannot hold (nanoseconds, years past
9999) or Arrow maps (keys repeated, not strings, none) come out whole.

Each test writes real files, runs the conversion and checks the exact points or messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from failing import fails
from roundtrip import read_points
from vecferry.cli import main
from vecferry.errors import InputError, RecordError, UsageError
from vecferry.inspect import inspect_location
from vecferry.mapping import KeyMapping, UnmappedRecord, column_values

NAN_HINT = ("write null or a number instead; Python's json.dumps writes NaN and Infinity "
            "unless given allow_nan=False")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _write_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _vectors(rows: list) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32()))


def _convert(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["convert", *args])
    assert result.exit_code == code, result.output
    return result.output


def _mapped_rejects(tmp_path: Path, table: pa.Table, **mapping: object) -> Path:
    """The rejects file (and its manifest) of converting ``table`` as Parquet by ``mapping``."""
    src = tmp_path / "src.parquet"
    pq.write_table(table, src)
    report = vecferry.convert(str(src), str(tmp_path / "out.parquet"), on_error="skip",
                              reader_options=mapping)
    assert report["rejected"] > 0
    return Path(report["rejects_file"])


# --------------------------------------------- 1. a mapped re-run keeps the source's shape


def test_a_mapped_rerun_refuses_the_unfixed_line_by_the_sources_size(tmp_path):
    """Mapped, the re-run ignored the rejects manifest and took the size from the unfixed
    line: it wrote 2-dim vectors beside the 3-dim ones of the output."""
    rejects = _mapped_rejects(tmp_path, pa.table({
        "doc": ["a", "b", "c"], "emb": _vectors([[1, 2, 3], [4, 5], [7, 8, 9]])}),
        id_column="doc", vector_column=["emb"])
    again = tmp_path / "again.parquet"
    text = fails(RecordError, lambda: vecferry.convert(
        str(rejects), str(again), reader_options={"id_key": "doc", "vector_key": ["emb"]}))
    assert text == f"{rejects}, line 1, id 'b': vector has 2 dimensions, expected 3"
    assert not again.exists()
    output = _convert(str(rejects), str(again), "--id-key", "doc", "--vector-key", "emb",
                      code=1)
    assert f"error: {rejects}, line 1, id 'b': vector has 2 dimensions, expected 3" in output


def test_a_fixed_line_after_an_unfixed_one_gets_the_sources_shape(tmp_path):
    """The unfixed line first in the file no longer sets the size (so the fixed one after it
    was refused), and the source's float16 datatype and string id kind are kept."""
    rejects = _mapped_rejects(tmp_path, pa.table({
        "doc": ["a", "b", "c", "d"],
        "emb": pa.array([[1, 2, 3], [4, 5], [7, 8], [1, 1, 1]], pa.list_(pa.float16())),
        "t": ["ta", "tb", "tc", "td"]}), id_column="doc", vector_column=["emb"])
    lines = _lines(rejects)
    assert [r["doc"] for r in lines] == ["b", "c"]
    lines[1]["emb"] = [7.0, 8.0, 9.0]  # c fixed, b left as it was
    _write_lines(rejects, lines)
    report = vecferry.convert(str(rejects), str(tmp_path / "again.parquet"), on_error="skip",
                              reader_options={"id_key": "doc", "vector_key": ["emb"]})
    assert (report["written"], report["rejected"]) == (1, 1)
    (left,) = _lines(Path(report["rejects_file"]))
    assert (left["doc"], left["_vecferry_reject"]["reason"], left["_vecferry_reject"]["line"]) \
        == ("b", "vector has 2 dimensions, expected 3", 1)
    manifest, points = read_points(str(tmp_path / "again.parquet"))
    assert [(v.name, v.size, v.datatype) for v in manifest.vectors] == [("", 3, "float16")]
    assert manifest.id_kind == "string"
    assert [(p["id"], p["vector"].tolist(), p["payload"]) for p in points] == [
        ("c", [7.0, 8.0, 9.0], {"t": "tc"})]


@pytest.mark.parametrize(("flags", "problem"), [
    (["--vector-key", "e=emb"], "the mapping gives 'e' (key 'emb'), but the manifest holds the "
                                "unnamed vector"),
    (["--sparse-key", "emb"], "the mapping gives 'emb' (key 'emb'), but the manifest holds the "
                              "unnamed vector"),
])
def test_a_mapping_that_does_not_fit_the_rejects_manifest_names_the_flags(tmp_path, flags,
                                                                         problem):
    rejects = _mapped_rejects(tmp_path, pa.table({
        "doc": ["a", "b"], "emb": _vectors([[1, 2, 3], [4, 5]])}),
        id_column="doc", vector_column=["emb"])
    output = _convert(str(rejects), str(tmp_path / "again.parquet"), "--id-key", "doc", *flags,
                      code=2)
    assert output.strip().splitlines()[-1] == (
        f"error: {rejects}: the records do not fit the file's manifest ({rejects}.manifest.json, "
        f"the shape of the source it came from): {problem} (map the keys as the source was "
        "mapped: --id-key doc --vector-key emb; or delete the manifest to take the shape from "
        "the lines)")


def test_a_sparse_key_for_a_dense_vector_of_the_manifest_is_refused(tmp_path):
    rejects = _mapped_rejects(tmp_path, pa.table({
        "doc": ["a", "b"], "d": _vectors([[1, 2], [4, 5, 6]]), "s": _vectors([[1, 2], [3, 4]])}),
        id_column="doc", vector_column=["d", "s"])
    text = fails(UsageError, lambda: vecferry.open_reader(
        str(rejects), id_key="doc", vector_key=["d"], sparse_key=["s=s"]))
    assert text == (
        f"{rejects}: the records do not fit the file's manifest ({rejects}.manifest.json, the "
        "shape of the source it came from): --sparse-key maps key 's' to vector 's', which the "
        "manifest holds as dense (map the keys as the source was mapped: --id-key doc "
        "--vector-key d --vector-key s; or delete the manifest to take the shape from the "
        "lines)")


# ----------------------------------------- 2. a record without its vector, by line and id


def _nan_and_null_rejects(tmp_path: Path) -> Path:
    return _mapped_rejects(tmp_path, pa.table({
        "doc": ["k1", "k2", "k3", "k4"], "emb": _vectors([[1, 2], [3, 4], None, [5, 6]]),
        "score": [1.0, float("nan"), 2.0, 3.0]}), id_column="doc", vector_column=["emb"])


def test_an_unfixed_mapped_rejects_file_names_each_line(tmp_path):
    """It said "no point has a vector (each line needs "vector": [...] ...)", naming no line,
    no id and not the key mapped."""
    rejects = _nan_and_null_rejects(tmp_path)
    options = {"id_key": "doc", "vector_key": ["emb"]}
    text = fails(RecordError, lambda: vecferry.convert(str(rejects), str(tmp_path / "a.jsonl"),
                                                       reader_options=options))
    assert text == (f"{rejects}, line 1, id 'k2': line holds NaN, which JSON cannot express "
                    f"({NAN_HINT})")
    report = vecferry.convert(str(rejects), str(tmp_path / "a.jsonl"), on_error="skip",
                              reader_options=options, rejects=str(tmp_path / "again.jsonl"))
    assert (report["written"], report["rejected"]) == (0, 2)
    second = _lines(tmp_path / "again.jsonl")[1]
    assert second["_vecferry_reject"] == {
        "reason": "point has no vector: its key 'emb' is null", "source": str(rejects),
        "line": 2, "point_id": "k3"}


def test_without_the_manifest_the_first_record_without_its_vector_is_named(tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_text(_nan_and_null_rejects(tmp_path).read_text())
    text = fails(RecordError, lambda: vecferry.open_reader(str(copy), id_key="doc",
                                                           vector_key=["emb"]))
    assert text == (f"{copy}, line 2, id 'k3': point has no vector: its key 'emb' is null "
                    "(give the record its vector under 'emb' (--vector-key), or map the key that "
                    "holds it)")


@pytest.mark.parametrize(("records", "options", "message"), [
    ([{"doc": "a", "title": "x", "emb": None}, {"doc": "b", "title": "y"}],
     {"vector_key": ["emb"]},
     "line 1, id 'a': point has no vector: its key 'emb' is null (give the record its vector "
     "under 'emb' (--vector-key), or map the key that holds it)"),
    ([{"doc": "a", "title": "x"}, {"doc": "b", "emb": None}], {"vector_key": ["emb"]},
     "line 1, id 'a': point has no vector: the record has no key 'emb' (keys: doc, title) "
     "(give the record its vector under 'emb' (--vector-key), or map the key that holds it)"),
    ([{"doc": "a", "v1": None}, {"doc": "b", "v2": None}], {"vector_key": ["v1", "v2"]},
     "line 1, id 'a': point has no vector: keys 'v1', 'v2' are missing or null (give the "
     "record at least one of its vectors under those keys (--vector-key, --sparse-key))"),
    ([{"doc": "a", "kw": None}], {"sparse_key": ["kw=kw"]},
     "line 1, id 'a': point has no vector: its key 'kw' is null (give the record its vector "
     "under 'kw' (--sparse-key), or map the key that holds it)"),
])
def test_records_without_their_vectors(tmp_path, records, options, message):
    src = tmp_path / "r.jsonl"
    _write_lines(src, [{"doc": "z", "emb": [1.0, 2.0], "v1": [1.0, 2.0],
                        "kw": {"indices": [1], "values": [0.5]}}, *records])
    # the first line tells the vectors; the record after it is refused by its line and id
    report = vecferry.convert(str(src), str(tmp_path / "o.jsonl"), on_error="skip",
                              reader_options={"id_key": "doc", **options})
    assert (report["written"], report["rejected"]) == (1, len(records))
    text = fails(RecordError, lambda: vecferry.convert(
        str(src), str(tmp_path / "p.jsonl"), reader_options={"id_key": "doc", **options}))
    assert text == f"{src}, {message.replace('line 1', 'line 2')}"
    # with no line to tell them, the first record stops the reading with the same words
    _write_lines(src, records)
    text = fails(RecordError, lambda: vecferry.open_reader(str(src), id_key="doc", **options))
    assert text == f"{src}, {message}"


def test_values_under_the_vector_key_that_are_no_vectors(tmp_path):
    src = tmp_path / "r.jsonl"
    _write_lines(src, [{"doc": "a", "emb": "0.5 0.25"}, {"doc": "b", "emb": []}])
    text = fails(InputError, lambda: vecferry.open_reader(str(src), id_key="doc",
                                                          vector_key=["emb"]))
    assert text == (f"{src}: no record holds a vector under 'emb' (vectors are lists of numbers "
                    '(sparse ones {"indices": [...], "values": [...]}); check the --vector-key '
                    "/ --sparse-key given; `vecferry inspect FILE` suggests a mapping)")


# ------------------------------------------- 3. --payload-key loses no other key unseen


def test_a_key_beside_the_payload_key_is_refused_by_line_and_id(tmp_path):
    """--payload-key took the metadata object and dropped "other" without a word."""
    src = tmp_path / "docs.jsonl"
    _write_lines(src, [{"doc_id": "x0", "embedding": [1.0, 2.0], "metadata": {"a": 0},
                        "none": None},
                       {"doc_id": "x1", "embedding": [3.0, 4.0], "metadata": {"a": 1},
                        "other": 1, "text": "t"}])
    flags = ["--id-key", "doc_id", "--vector-key", "embedding", "--payload-key", "metadata"]
    output = _convert(str(src), str(tmp_path / "o.jsonl"), *flags, code=1)
    assert output.strip().splitlines()[-1] == (
        f"error: {src}, line 2, id 'x1': record has 'other', 'text' beside the payload key "
        "'metadata' (--payload-key), which takes that key's object alone (leave --payload-key "
        "out to keep every other key as the payload ('metadata' nested in it), or drop those "
        "keys from the records; or pass --on-error skip to go on past such records: convert "
        "and copy set them aside in a rejects file)")
    _convert(str(src), str(tmp_path / "o.jsonl"), *flags, "--on-error", "skip", code=3)
    assert _lines(tmp_path / "o.jsonl") == [{"id": "x0", "vector": [1.0, 2.0],
                                             "payload": {"a": 0}}]
    (rejected,) = _lines(tmp_path / "o.jsonl.rejects.jsonl")
    assert rejected["other"] == 1 and rejected["_vecferry_reject"]["point_id"] == "x1"
    # the default payload keeps them all
    _convert(str(src), str(tmp_path / "all.jsonl"), *flags[:4])
    assert _lines(tmp_path / "all.jsonl")[1]["payload"] == {"metadata": {"a": 1}, "other": 1,
                                                            "text": "t"}


def test_the_reject_note_is_no_key_beside_the_payload_key(tmp_path):
    src = tmp_path / "docs.jsonl"
    _write_lines(src, [{"doc_id": "x0", "embedding": [1.0, 2.0], "metadata": {"a": 0}},
                       {"doc_id": "x1", "embedding": [3.0], "metadata": {"a": 1}}])
    options = {"id_key": "doc_id", "vector_key": ["embedding"], "payload_key": "metadata"}
    report = vecferry.convert(str(src), str(tmp_path / "o.jsonl"), on_error="skip",
                              reader_options=options)
    rejects = Path(report["rejects_file"])
    (line,) = _lines(rejects)
    line["embedding"] = [3.0, 4.0]
    _write_lines(rejects, [line])
    vecferry.convert(str(rejects), str(tmp_path / "again.jsonl"), reader_options=options)
    assert _lines(tmp_path / "again.jsonl") == [{"id": "x1", "vector": [3.0, 4.0],
                                                 "payload": {"a": 1}}]
    mapping = KeyMapping("doc_id", ("=embedding",), (), "metadata")
    with pytest.raises(UnmappedRecord) as info:
        mapping.to_point({"doc_id": 1, "embedding": [1.0], "_raw": "x"}, 0, mapping.pairs())
    assert info.value.point_id == 1 and str(info.value).startswith("record has '_raw' beside")


# ---------------------------------------------------- 4. 16-byte UUID id columns, any name


UUIDS = [uuid.UUID(int=7), uuid.UUID("8f14e45f-ceea-467f-a0e6-d1b0c7a9b2e1"),
         uuid.UUID("0b6a4a5e-2d7c-4f8e-9a1b-3c5d7e9f1a2b")]
SPARSE = pa.struct([("indices", pa.list_(pa.uint32())), ("values", pa.list_(pa.float32()))])


@pytest.mark.parametrize("id_type", [pa.binary(16), pa.binary(), pa.large_binary()])
def test_inspect_takes_a_column_of_sixteen_byte_uuids_for_the_ids(tmp_path, id_type):
    """The suggestion left ``uid`` out (not an id-like name): followed, it numbered the
    points and put each UUID's base64 in the payload."""
    src = tmp_path / "t.parquet"
    vec = np.arange(9, dtype=np.float32).reshape(3, 3)
    pq.write_table(pa.table({
        "uid": pa.array([u.bytes for u in UUIDS], id_type),
        "vec": pa.array([row.tobytes() for row in vec], pa.binary()),
        "sp": pa.array([{"indices": [i], "values": [0.5]} for i in range(3)], SPARSE),
        "title": ["a", "b", "c"]}), src)
    info = inspect_location(str(src))
    s = info["suggested_mapping"]
    assert s["flags"] == "--id-column uid --vector-column vec --sparse-column sp"
    assert s["payload_columns"] == ["title"]
    assert (info["id_kind"], info["first_ids"]) == ("uuid", [str(u) for u in UUIDS])
    out = tmp_path / "o.jsonl"
    _convert(str(src), str(out), *s["flags"].split())
    assert [(p["id"], p["vector"]["vec"], p["payload"]) for p in _lines(out)] == [
        (str(u), vec[i].tolist(), {"title": "abc"[i]}) for i, u in enumerate(UUIDS)]


def test_a_repeated_or_named_column_wins_over_sixteen_bytes(tmp_path):
    src = tmp_path / "t.parquet"
    same = uuid.UUID(int=1).bytes
    pq.write_table(pa.table({"blob": pa.array([same, same, same], pa.binary(16)),
                             "emb": _vectors([[1, 2], [3, 4], [5, 6]])}), src)
    # the same 16 bytes in every row are no ids
    assert inspect_location(str(src))["suggested_mapping"]["flags"] == "--vector-column emb"
    pq.write_table(pa.table({"blob": pa.array([u.bytes for u in UUIDS], pa.binary(16)),
                             "doc_id": [1, 2, 3], "emb": _vectors([[1, 2], [3, 4], [5, 6]])}),
                   src)
    assert inspect_location(str(src))["suggested_mapping"]["flags"] == (
        "--id-column doc_id --vector-column emb")


def test_a_binary_id_that_is_not_sixteen_bytes_is_a_rejected_record(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"uid": pa.array([UUIDS[0].bytes, b"abc", UUIDS[2].bytes]),
                             "emb": _vectors([[1, 2], [3, 4], [5, 6]])}), src)
    report = vecferry.convert(str(src), str(tmp_path / "o.jsonl"), on_error="skip",
                              reader_options={"id_column": "uid", "vector_column": ["emb"]})
    assert [p["id"] for p in _lines(tmp_path / "o.jsonl")] == [str(UUIDS[0]), str(UUIDS[2])]
    (line,) = _lines(Path(report["rejects_file"]))
    assert line == {"uid": "YWJj", "emb": [3.0, 4.0], "_vecferry_reject": {
        "reason": "id column 'uid' holds 3 bytes, not a 16-byte UUID", "source": str(src),
        "row": 1, "point_id": "YWJj"}}
    text = fails(RecordError, lambda: vecferry.convert(
        str(src), str(tmp_path / "p.jsonl"),
        reader_options={"id_column": "uid", "vector_column": ["emb"]}))
    assert text == (f"{src}, row 1, id 'YWJj': id column 'uid' holds 3 bytes, not a 16-byte "
                    "UUID (binary ids are read as UUIDs: fix the value, or map another id "
                    "column)")


# ------------------------------------------ 5. temporal payload values, at full precision


def _temporal_table() -> pa.Table:
    return pa.table({
        "id": [1, 2, 3],
        "emb": _vectors([[1, 2], [3, 4], [5, 6, 7]]),
        "ns": pa.array([1577836800123456789, 0, 1577836800123456789], pa.timestamp("ns")),
        "far": pa.array([253402300800000000, 1577836800100000, 253402300800000000],
                        pa.timestamp("us")),
        "zoned": pa.array([1577836800123] * 3, pa.timestamp("ms", "Asia/Kolkata")),
        "utc": pa.array([1577836800123456789] * 3, pa.timestamp("ns", "UTC")),
        "day": pa.array([3000000, 0, 3000000], pa.date32()),
        "clock": pa.array([3600123456789, 3600 * 10**9, 3600123456789], pa.time64("ns")),
        "span": pa.array([1500000001, 2000, 1500000001], pa.duration("ns")),
        "nested": pa.array([[1577836800123456789], [], None], pa.list_(pa.timestamp("ns"))),
    })


FIRST_ROW = {"ns": "2020-01-01T00:00:00.123456789", "far": "+10000-01-01T00:00:00",
             "zoned": "2020-01-01T05:30:00.123+05:30",
             "utc": "2020-01-01T00:00:00.123456789+00:00", "day": "+10183-09-21",
             "clock": "01:00:00.123456789", "span": 1.500000001,
             "nested": ["2020-01-01T00:00:00.123456789"]}


def test_timestamps_past_microseconds_and_year_9999_are_iso_text(tmp_path):
    """Python's datetime raised: OverflowError past year 9999, "Install pandas" for
    nanoseconds; a time's nanoseconds were cut to microseconds."""
    src = tmp_path / "t.parquet"
    pq.write_table(_temporal_table(), src)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"id_column": "id", "vector_column": ["emb"]})
    assert (report["written"], report["rejected"]) == (2, 1)
    assert [p["payload"] for p in _lines(out)] == [FIRST_ROW, {
        "ns": "1970-01-01T00:00:00", "far": "2020-01-01T00:00:00.100000",
        "zoned": "2020-01-01T05:30:00.123+05:30", "utc": "2020-01-01T00:00:00.123456789+00:00",
        "day": "1970-01-01", "clock": "01:00:00", "span": 2e-06, "nested": []}]
    # a rejected row's line holds them as a good row's payload does
    (line,) = _lines(Path(report["rejects_file"]))
    assert {k: v for k, v in line.items() if k in FIRST_ROW and k != "nested"} == {
        k: v for k, v in FIRST_ROW.items() if k != "nested"}
    assert "nested" not in line


def test_nanosecond_timestamps_in_the_cli_which_refuses_pandas(tmp_path):
    """The CLI keeps pyarrow from importing pandas, which ``to_pylist`` of nanoseconds needs:
    the run ended in a traceback."""
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1], "emb": _vectors([[1, 2]]),
                             "ns": pa.array([1577836800123456789], pa.timestamp("ns")),
                             "span": pa.array([1500000001], pa.duration("ns"))}), src)
    done = subprocess.run([sys.executable, "-m", "vecferry", "convert", str(src), "o.jsonl",
                           "--id-column", "id", "--vector-column", "emb"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _lines(tmp_path / "o.jsonl")[0]["payload"] == {
        "ns": "2020-01-01T00:00:00.123456789", "span": 1.500000001}


def test_column_values_past_the_years_arrow_formats():
    stamps = pa.array([10**13, -(10**13), None], pa.timestamp("s", "+05:30"))
    assert column_values(stamps) == ["+318857-05-20T17:46:40+00:00",
                                     "-314918-08-13T06:13:20+00:00", None]
    days = pa.array([2**31 - 1], pa.date32())
    assert column_values(days) == ["+5881580-07-11"]
    assert column_values(pa.array([86400000 * 3], pa.date64()).slice(0)) == ["1970-01-04"]


# ------------------------------------------------------------- 6. maps, whole and alike


def test_maps_are_objects_by_string_keys_else_pairs_and_a_repeated_key_is_refused(tmp_path):
    """[("k", 1), ("k", 2)] became {"k": 2}, an empty map [] beside objects, integer keys a
    list of pairs only when not empty."""
    src = tmp_path / "m.parquet"
    pq.write_table(pa.table({
        "id": [1, 2, 3],
        "emb": _vectors([[1, 2], [3, 4], [5, 6]]),
        "tags": pa.array([[("a", 1), ("b", 2)], [], [("k", 1), ("k", 2)]],
                         pa.map_(pa.string(), pa.int64())),
        "codes": pa.array([[(7, "x")], [], None], pa.map_(pa.int64(), pa.string())),
        "deep": pa.array([{"m": [("a", 1)]}, {"m": []}, {"m": [("z", 1), ("z", 1)]}],
                         pa.struct([("m", pa.map_(pa.string(), pa.int64()))])),
    }), src)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"id_column": "id", "vector_column": ["emb"],
                                              "payload_columns": "tags,codes,deep"})
    assert [p["payload"] for p in _lines(out)] == [
        {"tags": {"a": 1, "b": 2}, "codes": [[7, "x"]], "deep": {"m": {"a": 1}}},
        {"tags": {}, "codes": [], "deep": {"m": {}}}]
    (line,) = _lines(Path(report["rejects_file"]))
    # every pair kept, so the line can be fixed
    assert (line["tags"], line["deep"]) == ([["k", 1], ["k", 2]], {"m": [["z", 1], ["z", 1]]})
    assert line["_vecferry_reject"]["reason"] == (
        "column 'tags' holds a map with the key 'k' more than once, which a JSON object cannot "
        "hold")
    text = fails(RecordError, lambda: vecferry.convert(
        str(src), str(tmp_path / "p.jsonl"),
        reader_options={"id_column": "id", "vector_column": ["emb"],
                        "payload_columns": "deep"}))
    assert text == (f"{src}, row 2, id 3: column 'deep' holds a map with the key 'z' more than "
                    "once at m, which a JSON object cannot hold (keep each key once in the map, "
                    "or leave 'deep' out with --payload-columns)")
