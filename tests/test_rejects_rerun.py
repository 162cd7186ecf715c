"""A rejects file is fixed and run again (README, "Bad input"): each case here makes real rejects
(Parquet, JSONL, real FAISS indexes), fixes the lines the way a user would (the
``_vecferry_reject`` note left in place) and converts them again, checking the exact points and
messages that come out: the same points a good record gives, nothing of the note in a payload.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from roundtrip import DATASETS, FORMATS, Dataset, leftovers, write_points
from vecferry.cli import main
from vecferry.errors import InputError, Location, RecordError, UnsupportedError
from vecferry.mapping import KeyMapping


def _lines(path: Path) -> list[dict]:
    # the stdlib parser: payload integers past 64 bits stay exact
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _convert(*args: str, code: int = 0) -> None:
    """``vecferry convert ARGS``, which must exit with ``code`` (3: records were rejected)."""
    result = CliRunner().invoke(main, ["convert", *args])
    assert result.exit_code == code, result.output


# ------------------------------------------------- 1. a mapped Parquet row, run again as JSONL


def test_a_mapped_parquet_row_runs_again_with_the_payload_a_good_row_gets(tmp_path):
    src = tmp_path / "docs.parquet"
    pq.write_table(pa.table({
        "doc_id": pa.array([1, 2, 3], pa.int64()),
        "emb": pa.array([[0.5, 1.0], [2.0, 3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float32())),
        "meta": ['{"lang": "en"}', '{"tags": [1, 2], "big": 123456789012345678901234}',
                 '{"lang": "de"}'],
        "title": ["a", "b", "c"],
        "note": pa.array([None, None, "n"], pa.string())}), src)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    _convert(str(src), str(out), "--id-column", "doc_id", "--vector-column", "emb",
             "--json-columns", "meta", "--on-error", "skip", "--rejects", str(rejects), code=3)
    assert _lines(out) == [
        {"id": 1, "vector": [0.5, 1.0], "payload": {"meta": {"lang": "en"}, "title": "a"}},
        {"id": 3, "vector": [5.0, 6.0],
         "payload": {"meta": {"lang": "de"}, "title": "c", "note": "n"}}]
    # the JSON column parsed and the null cell left out, as in a good row's payload
    (line,) = _lines(rejects)
    assert line == {
        "doc_id": 2, "emb": [2.0, 3.0, 4.0],
        "meta": {"tags": [1, 2], "big": 123456789012345678901234}, "title": "b",
        "_vecferry_reject": {"reason": "vector (column 'emb') has 3 dimensions, expected 2",
                             "source": str(src), "row": 1, "point_id": 2}}

    line["emb"] = [2.0, 3.0]
    fixed = tmp_path / "fixed.jsonl"
    _write_lines(fixed, [line])
    again = tmp_path / "again.jsonl"
    _convert(str(fixed), str(again), "--id-key", "doc_id", "--vector-key", "emb")
    assert _lines(again) == [{
        "id": 2, "vector": [2.0, 3.0],
        "payload": {"meta": {"tags": [1, 2], "big": 123456789012345678901234}, "title": "b"}}]


def test_json_column_text_that_does_not_parse_stays_text_in_the_rejects_line(tmp_path):
    src = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"doc_id": pa.array([1, 2], pa.int64()),
                             "emb": pa.array([[0.5, 1.0], [2.0, 3.0]], pa.list_(pa.float32())),
                             "meta": ['{"lang": "en"}', '{"lang": ']}), src)
    report = vecferry.convert(str(src), str(tmp_path / "out.jsonl"), on_error="skip",
                              reader_options={"id_column": "doc_id", "vector_column": ["emb"],
                                              "json_columns": ["meta"]})
    assert (report["read"], report["written"], report["rejected"]) == (2, 1, 1)
    (line,) = _lines(Path(report["rejects_file"]))
    assert line["meta"] == '{"lang": '
    assert line["_vecferry_reject"]["reason"].startswith(
        "column 'meta' does not hold valid JSON: ")


def test_nan_in_a_mapped_parquet_row_is_kept_so_an_unfixed_rerun_names_it(tmp_path):
    """NaN cells are written as NaN, not null: a re-run of the unfixed line is refused again
    (null would have been taken as the value), and fixing the cell lets it through."""
    src = tmp_path / "docs.parquet"
    pq.write_table(pa.table({
        "doc_id": pa.array([1, 2, 3], pa.int64()),
        "emb": pa.array([[0.5, 1.0], [2.0, 3.0], [float("nan"), 6.0]], pa.list_(pa.float32())),
        "score": [0.5, float("nan"), 1.0]}), src)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    _convert(str(src), str(out), "--id-column", "doc_id", "--vector-column", "emb",
             "--on-error", "skip", "--rejects", str(rejects), code=3)
    text = rejects.read_text().splitlines()
    assert text[0].startswith('{"doc_id":2,"emb":[2.0,3.0],"score":NaN,"_vecferry_reject":')
    assert text[1].startswith('{"doc_id":3,"emb":[NaN,6.0],"score":1.0,"_vecferry_reject":')

    with pytest.raises(InputError) as info:
        vecferry.convert(str(rejects), str(tmp_path / "again.jsonl"),
                         reader_options={"id_key": "doc_id", "vector_key": ["emb"]})
    assert str(info.value) == (
        f"{rejects}, line 1, id 2: line holds NaN, which JSON cannot express (write null or a "
        "number instead; Python's json.dumps writes NaN and Infinity unless given "
        "allow_nan=False)")

    fixed = tmp_path / "fixed.jsonl"
    rows = _lines(rejects)
    rows[0]["score"], rows[1]["emb"] = None, [4.0, 6.0]
    _write_lines(fixed, rows)
    again = tmp_path / "again.jsonl"
    _convert(str(fixed), str(again), "--id-key", "doc_id", "--vector-key", "emb")
    assert _lines(again) == [{"id": 2, "vector": [2.0, 3.0], "payload": {"score": None}},
                             {"id": 3, "vector": [4.0, 6.0], "payload": {"score": 1.0}}]


@pytest.mark.parametrize("source", ["parquet", "jsonl"])
def test_numbered_rows_run_again_with_the_ids_they_were_numbered(tmp_path, source):
    """Without an id column or key, rows are numbered; fixed rejects keep their numbers, where
    numbering the rejects file afresh gave ids good rows hold (overwriting them in Qdrant)."""
    emb = [[0.5, 1.0], [2.0, 3.0, 4.0], [5.0, 6.0], [1.0], [7.0, 8.0]]
    if source == "parquet":
        src = tmp_path / "docs.parquet"
        pq.write_table(pa.table({"emb": pa.array(emb, pa.list_(pa.float32())),
                                 "title": list("abcde")}), src)
        flag = "--vector-column"
    else:
        src = tmp_path / "docs.jsonl"
        _write_lines(src, [{"emb": e, "title": t} for e, t in zip(emb, "abcde", strict=True)])
        flag = "--vector-key"
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    _convert(str(src), str(out), flag, "emb", "--on-error", "skip", "--rejects", str(rejects),
             code=3)
    assert [p["id"] for p in _lines(out)] == [0, 2, 4]
    rows = _lines(rejects)
    assert [r["_vecferry_reject"]["point_id"] for r in rows] == [1, 3]
    for r in rows:
        r["emb"] = [9.0, 9.0]
    fixed = tmp_path / "fixed.jsonl"
    _write_lines(fixed, rows)
    again = tmp_path / "again.jsonl"
    _convert(str(fixed), str(again), "--vector-key", "emb")
    assert _lines(again) == [{"id": 1, "vector": [9.0, 9.0], "payload": {"title": "b"}},
                             {"id": 3, "vector": [9.0, 9.0], "payload": {"title": "d"}}]


def test_a_binary_vector_cell_is_kept_as_numbers_so_the_line_can_be_fixed(tmp_path):
    src = tmp_path / "docs.parquet"
    good = np.array([0.1, 0.2], np.float32)
    wrong = np.array([0.3, 0.4, 0.5], np.float32)
    pq.write_table(pa.table({"doc_id": pa.array([1, 2], pa.int64()),
                             "emb": pa.array([good.tobytes(), wrong.tobytes()], pa.binary())}),
                   src)
    report = vecferry.convert(str(src), str(tmp_path / "out.jsonl"), on_error="skip",
                              reader_options={"id_column": "doc_id", "vector_column": ["emb"]})
    (line,) = _lines(Path(report["rejects_file"]))
    assert line["_vecferry_reject"]["reason"] == (
        "vector (column 'emb') holds 12 bytes, expected 8 (2 float32 values)")
    assert np.array(line["emb"], np.float32).tobytes() == wrong.tobytes()

    line["emb"] = line["emb"][:2]
    fixed = tmp_path / "fixed.jsonl"
    _write_lines(fixed, [line])
    again = tmp_path / "again.jsonl"
    vecferry.convert(str(fixed), str(again),
                     reader_options={"id_key": "doc_id", "vector_key": ["emb"]})
    (point,) = _lines(again)
    assert point["id"] == 2 and "payload" not in point
    assert np.array(point["vector"], np.float32).tobytes() == wrong[:2].tobytes()


def test_a_mapped_jsonl_record_is_rejected_as_read_and_runs_again_with_its_flags(tmp_path):
    src = tmp_path / "docs.jsonl"
    _write_lines(src, [{"doc_id": "a", "emb": [1.0, 2.0], "t": 1},
                       {"doc_id": "b", "emb": [1.0, 2.0, 3.0], "t": 2},
                       {"doc_id": "c", "emb": [1.0, "x"], "t": 3}])
    options = {"id_key": "doc_id", "vector_key": ["emb"]}
    report = vecferry.convert(str(src), str(tmp_path / "out.jsonl"), on_error="skip",
                              reader_options=options)
    assert (report["written"], report["rejected"]) == (1, 2)
    rejected = _lines(Path(report["rejects_file"]))
    assert [{k: v for k, v in r.items() if k != "_vecferry_reject"} for r in rejected] == [
        {"doc_id": "b", "emb": [1.0, 2.0, 3.0], "t": 2},
        {"doc_id": "c", "emb": [1.0, "x"], "t": 3}]
    assert [r["_vecferry_reject"]["reason"] for r in rejected] == [
        "vector has 3 dimensions, expected 2",
        'vector holds the string "x", which is not a number']

    rejected[0]["emb"] = [1.0, 2.0]
    rejected[1]["emb"] = [1.0, 3.0]
    fixed = tmp_path / "fixed.jsonl"
    _write_lines(fixed, rejected)
    again = tmp_path / "again.jsonl"
    report = vecferry.convert(str(fixed), str(again), reader_options=options)
    assert (report["written"], report["rejected"]) == (2, 0)
    assert _lines(again) == [{"id": "b", "vector": [1.0, 2.0], "payload": {"t": 2}},
                             {"id": "c", "vector": [1.0, 3.0], "payload": {"t": 3}}]


def test_the_key_mapping_leaves_the_reject_note_out_of_the_payload():
    mapping = KeyMapping("doc_id", ("=emb",))
    note = {"reason": "r", "line": 3}
    point = mapping.to_point({"doc_id": 1, "emb": [1.0], "t": 1, "_vecferry_reject": note},
                             0, mapping.pairs())
    assert point == {"id": 1, "vector": [1.0], "payload": {"t": 1}}
    point = mapping.to_point({"doc_id": 1, "emb": [1.0], "_raw": "x", "_vecferry_reject": note},
                             0, mapping.pairs())
    assert point == {"id": 1, "vector": [1.0], "payload": None}
    # a record's own _raw (no reject note) is its data
    point = mapping.to_point({"doc_id": 1, "emb": [1.0], "_raw": "x"}, 0, mapping.pairs())
    assert point["payload"] == {"_raw": "x"}


def test_an_unparseable_line_kept_under_raw_is_refused_with_a_mapping_too(tmp_path):
    fixed = tmp_path / "rejects.jsonl"
    _write_lines(fixed, [{"doc_id": 1, "emb": [1.0, 2.0], "_vecferry_reject": {"reason": "r"}},
                         {"_raw": '{"doc_id": 2, "emb": [', "_vecferry_reject": {"reason": "r"}}])
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(fixed), str(tmp_path / "out.jsonl"),
                         reader_options={"id_key": "doc_id", "vector_key": ["emb"]})
    assert str(info.value) == (f"{fixed}, line 2: rejected line still holds the unparseable "
                               "original under _raw (replace the line with the corrected point)")


# -------------------------------------------------------- 2. points without vectors, no manifest


def test_rejects_of_a_stream_without_vectors_run_again(tmp_path):
    src = tmp_path / "tags.jsonl"
    write_points(str(src), Dataset("tags", [], "int", [
        {"id": 1, "vector": {}, "payload": {"tag": "a"}},
        {"id": 5, "vector": {}, "payload": {"tag": "b"}},
        {"id": 7, "vector": {}, "payload": {"tag": "c"}}]))
    lines = src.read_bytes().splitlines()
    lines[1] = b'{"id":5,"vector":{},"payload":"tag b"}'
    src.write_bytes(b"\n".join(lines) + b"\n")
    report = vecferry.convert(str(src), str(tmp_path / "out.jsonl"), on_error="skip")
    assert (report["read"], report["written"], report["rejected"]) == (3, 2, 1)
    rejects = Path(report["rejects_file"])
    (line,) = _lines(rejects)
    assert line == {"id": 5, "vector": {}, "payload": "tag b", "_vecferry_reject": {
        "reason": "payload must be a JSON object, not str", "source": str(src), "line": 2,
        "point_id": 5}}

    line["payload"] = {"tag": "b"}
    _write_lines(rejects, [line])
    assert Path(f"{rejects}.manifest.json").exists()  # the source's schema: no vectors
    again = tmp_path / "again.parquet"
    report = vecferry.convert(str(rejects), str(again))
    assert (report["read"], report["written"], report["rejected"]) == (1, 1, 0)
    reader = vecferry.open_reader(str(again))
    try:
        assert reader.manifest.vectors == []
        assert [b.to_pylist() for b in reader.batches(10)] == [
            [{"id": 5, "payload": '{"tag":"b"}'}]]
    finally:
        reader.close()


def test_vectorless_inference_looks_past_unparseable_lines_of_a_rejects_file(tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    _write_lines(rejects, [
        {"_raw": '{"id": 3, "vector": {', "_vecferry_reject": {"reason": "r", "line": 1}},
        {"id": 4, "vector": {}, "payload": {"a": 1}, "_vecferry_reject": {"reason": "r"}}])
    out = tmp_path / "out.jsonl"
    report = vecferry.convert(str(rejects), str(out), on_error="skip",
                              rejects=str(tmp_path / "again.rejects.jsonl"))
    assert (report["written"], report["rejected"]) == (1, 1)
    assert _lines(out) == [{"id": 4, "vector": {}, "payload": {"a": 1}}]


@pytest.mark.parametrize("lines", [
    [{"id": 1, "payload": {"a": 1}}, {"id": 2, "payload": {"a": 2}}],
    # one line without the key is enough: it more likely keeps its vector under another name
    [{"id": 1, "vector": {}, "payload": {"a": 1}}, {"id": 2, "payload": {"a": 2}}],
])
def test_lines_without_the_vector_key_are_still_refused(tmp_path, lines):
    src = tmp_path / "p.jsonl"
    _write_lines(src, lines)
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(src))
    assert str(info.value) == (f'{src}: no point has a vector (each line needs "vector": [...] '
                               'or {"name": [...]})')


# ------------------------------------------------------------ 3. FAISS payloads joined by id

IDS = [10, 11, 12, 13]
X = np.arange(12, dtype=np.float32).reshape(4, 3) / 7


def _index(tmp_path: Path) -> Path:
    """A real IDMap2,Flat index of ``X`` with ids ``IDS``."""
    faiss = pytest.importorskip("faiss")
    index = faiss.index_factory(3, "IDMap2,Flat")
    index.add_with_ids(X, np.array(IDS, np.int64))
    path = tmp_path / "i.faiss"
    faiss.write_index(index, str(path))
    return path


def test_a_payload_that_is_not_an_object_rejects_its_point_which_runs_again(tmp_path):
    path = _index(tmp_path)
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"10": {"a": 1}, "11": "draft", "12": {"a": 3}}))
    out = tmp_path / "out.jsonl"
    report = vecferry.convert(str(path), str(out), on_error="skip",
                              reader_options={"payloads": str(meta)})
    assert (report["read"], report["written"], report["rejected"]) == (4, 3, 1)
    assert [(p["id"], p.get("payload")) for p in _lines(out)] == [
        (10, {"a": 1}), (12, {"a": 3}), (13, None)]
    rejects = Path(report["rejects_file"])
    (line,) = _lines(rejects)
    assert np.array(line.pop("vector"), np.float32).tobytes() == X[1].tobytes()
    assert line == {"id": 11, "payload": "draft", "_vecferry_reject": {
        "reason": "payload for id 11 is not a JSON object", "source": str(meta),
        "point_id": 11}}

    line["payload"] = {"status": "draft"}
    line["vector"] = X[1].tolist()
    _write_lines(rejects, [line])
    again = tmp_path / "again.jsonl"
    report = vecferry.convert(str(rejects), str(again))
    assert (report["written"], report["rejected"]) == (1, 0)
    (point,) = _lines(again)
    assert (point["id"], point["payload"]) == (11, {"status": "draft"})
    assert np.array(point["vector"], np.float32).tobytes() == X[1].tobytes()


def test_bad_payloads_of_a_parquet_payloads_file_and_one_without_a_vector(tmp_path):
    path = _index(tmp_path)
    table = tmp_path / "payloads.parquet"
    pq.write_table(pa.table({"id": pa.array([10, 11, 12, 13, 99], pa.int64()),
                             "payload": ['{"a": 1}', "[1, 2]", '{"a": ', None, '"x"']}), table)
    out = tmp_path / "out.jsonl"
    report = vecferry.convert(str(path), str(out), on_error="skip",
                              reader_options={"payloads": str(table)})
    assert (report["read"], report["written"], report["rejected"]) == (5, 2, 3)
    # a null payload cell is no payload, as in vecferry's own Parquet
    assert [(p["id"], p.get("payload")) for p in _lines(out)] == [(10, {"a": 1}), (13, None)]
    rejected = _lines(Path(report["rejects_file"]))
    assert [(r["id"], "vector" in r, r["payload"]) for r in rejected] == [
        (11, True, [1, 2]), (12, True, '{"a": '), (99, False, "x")]
    reasons = [r["_vecferry_reject"]["reason"] for r in rejected]
    assert reasons[0] == "payload for id 11 is not a JSON object"
    assert reasons[1].startswith("payload for id 12 is not valid JSON: ")
    assert reasons[2] == ("payload for id 99 is not a JSON object, and has no vector in the "
                          "FAISS index")
    assert [r["_vecferry_reject"]["row"] for r in rejected] == [1, 2, 4]


def test_a_bad_payload_still_stops_a_run_that_fails_on_errors(tmp_path):
    path = _index(tmp_path)
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"11": ["draft"]}))
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(path), str(tmp_path / "out.jsonl"),
                         reader_options={"payloads": str(meta)})
    assert str(info.value) == f"{meta}, id 11: payload for id 11 is not a JSON object"
    assert sorted(os.listdir(tmp_path)) == ["i.faiss", "metadata.json"]


# ----------------------------------------------------------------- 4. VDF needs vectors


def test_vdf_refuses_a_stream_without_vectors_before_writing(tmp_path):
    src, _ = FORMATS["parquet"].make(DATASETS["no_vectors"](), tmp_path, "src")
    out = tmp_path / "dst"
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(src, str(out), to_format="vdf")
    assert str(info.value) == (f"{out}: the stream has no vectors (its points carry ids and "
                               "payloads only); a VDF dataset holds vectors (write Parquet or "
                               "JSONL instead)")
    assert sorted(os.listdir(tmp_path)) == ["src.parquet"]
    assert leftovers(tmp_path) == []


def test_a_rejects_file_holding_nan_is_replaced_and_resumed_like_any_other(tmp_path):
    """A rejects file whose first line keeps the NaN its record was refused for is still
    vecferry's own: the same command runs again (it replaces the file), and a resumed run
    appending to it does not write that record a second time."""
    from vecferry.pipeline import RejectsFile

    src = tmp_path / "docs.parquet"
    pq.write_table(pa.table({
        "doc_id": pa.array([1, 2], pa.int64()),
        "emb": pa.array([[0.5, 1.0], [2.0, 3.0]], pa.list_(pa.float32())),
        "score": [float("nan"), 1.0]}), src)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    args = (str(src), str(out), "--id-column", "doc_id", "--vector-column", "emb",
            "--on-error", "skip", "--rejects", str(rejects))
    _convert(*args, code=3)
    assert rejects.read_text().startswith('{"doc_id":1,"emb":[0.5,1.0],"score":NaN,')
    _convert(*args, "--overwrite", code=3)  # refused before: "not one vecferry wrote"
    assert len(rejects.read_text().splitlines()) == 1

    (line,) = _lines(rejects)
    note = line["_vecferry_reject"]
    error = RecordError(note["reason"], location=Location(
        source=note["source"], row=note["row"], point_id=note["point_id"]),
        raw={k: v for k, v in line.items() if k != "_vecferry_reject"})
    assert RejectsFile(rejects, append=True)(error) is False
    assert len(rejects.read_text().splitlines()) == 1


def test_a_rejects_file_keeps_the_sources_schema_for_its_rerun(tmp_path):
    """Read without one, the schema came from the file's first line: an unfixed record of
    the wrong size first in it was written, and the fixed record after it refused."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "vector": [1, 2, 3]}\n{"id": 3, "vector": [1, 2]}\n'
                   '{"id": 4, "vector": ["1", 2, 3]}\n')
    report = vecferry.convert(str(src), str(tmp_path / "out.parquet"), on_error="skip")
    rejects = Path(report["rejects_file"])
    side = Path(f"{rejects}.manifest.json")
    kept = json.loads(side.read_text())
    assert [(v["name"], v["size"]) for v in kept["vectors"]] == [("", 3)]
    assert (kept["count"], kept["digest"]) == (None, None)
    lines = _lines(rejects)
    lines[1]["vector"] = [1, 2, 3]  # id 4 fixed, id 3 left as it was
    _write_lines(rejects, lines)
    again = vecferry.convert(str(rejects), str(tmp_path / "again.parquet"), on_error="skip")
    assert (again["written"], again["rejected"]) == (1, 1)
    (left,) = _lines(Path(again["rejects_file"]))
    assert left["id"] == 3
    assert left["_vecferry_reject"]["reason"] == "vector has 2 dimensions, expected 3"
    # a clean run over the same output removes the stale rejects file and its manifest
    src.write_text('{"id": 1, "vector": [1, 2, 3]}\n')
    vecferry.convert(str(src), str(tmp_path / "out.parquet"), overwrite=True)
    assert not rejects.exists() and not side.exists()
