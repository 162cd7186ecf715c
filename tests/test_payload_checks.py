"""NaN, infinity and text that is not a JSON object in payloads, and NaN in refused vectors.

README, "Bad input": JSON has no NaN or infinity, so a payload holding one is a bad record named
by file, line or row and id, never written as null (null would read back as a value, and the
digest would call the two payloads equal). A Parquet file in vecferry's own layout has its
payload texts checked like any other source's. A record refused for a NaN keeps it in the
rejects file, written as ``NaN``, so a re-run of the unfixed line is refused again, naming it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from vecferry.cli import main
from vecferry.converters import open_reader
from vecferry.converters.base import Context
from vecferry.digest import StreamDigest, canonical_payload, payload_hashes
from vecferry.errors import RecordError
from vecferry.fileio import constant_and_id
from vecferry.points import BatchBuilder, NonFinitePayloadError, dumps_payload, point_from_row
from vecferry.stream import MANIFEST_KEY, Manifest, VectorSpec

NAN_HINT = ("write null or a number instead; Python's json.dumps writes NaN and Infinity unless "
            "given allow_nan=False")
CELL_HINT = "each cell must hold a JSON object or null"


def _lines(path: Path) -> list[Any]:
    # the stdlib parser reads the NaN a rejects line keeps
    return [json.loads(line) for line in path.read_text().splitlines()]


def _convert(*args: str, code: int = 0) -> str:
    """``vecferry convert ARGS``, which must exit with ``code``; returns the output."""
    result = CliRunner().invoke(main, ["convert", *args])
    assert result.exit_code == code, result.output
    return result.output


def _stream_parquet(path: Path, payloads: list[str | None], ids: list[int] | None = None,
                    metadata: dict[bytes, bytes] | None = None, row_group_size: int | None = None
                    ) -> str:
    """A Parquet file in vecferry's layout (id, vector, payload) as another tool writes it."""
    n = len(payloads)
    ids = list(range(10, 10 + n)) if ids is None else ids
    vectors = np.arange(n * 2, dtype=np.float32)
    table = pa.table({"id": pa.array(ids, pa.uint64()),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors), 2),
                      "payload": pa.array(payloads, pa.string())})
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


# ----------------------------------------------------------- 1. dumps_payload, BatchBuilder


@pytest.mark.parametrize(("payload", "message"), [
    ({"score": float("nan")}, "payload holds NaN at score"),
    ({"a": {"b": [1.0, float("inf")]}}, "payload holds Infinity at a.b[1]"),
    ({"x": None, "y": [-math.inf]}, "payload holds -Infinity at y[0]"),
    # the stdlib path of integers past 64 bits refuses them too
    ({"big": 2**70, "v": float("nan")}, "payload holds NaN at v"),
])
def test_dumps_payload_refuses_nan_and_infinity(payload: dict, message: str) -> None:
    with pytest.raises(NonFinitePayloadError) as info:
        dumps_payload(payload)
    assert str(info.value) == (f"{message}, which JSON cannot express (store null or a number "
                               "there instead)")
    # a ValueError as well, for callers that refuse what they cannot encode
    assert isinstance(info.value, ValueError) and isinstance(info.value, RecordError)


def test_dumps_payload_keeps_nulls_and_big_integers() -> None:
    assert dumps_payload({"a": None, "s": "null", "n": [None]}) == (
        '{"a":null,"s":"null","n":[null]}')
    assert dumps_payload({"big": 2**70, "z": None}) == '{"big":1180591620717411303424,"z":null}'


def _builder(on_error: str, sink: list[RecordError] | None = None) -> BatchBuilder:
    manifest = Manifest(vectors=[VectorSpec("", "dense", 2)], id_kind="int")
    return BatchBuilder(manifest, Context(on_error, sink.append if sink is not None else None),
                        source="points.jsonl")


def test_batch_builder_rejects_a_nan_payload_by_line_and_id() -> None:
    point = {"id": 7, "vector": [1.0, 2.0], "payload": {"score": float("nan")}}
    with pytest.raises(RecordError) as info:
        _builder("fail").add(point, line=3)
    assert str(info.value) == ("points.jsonl, line 3, id 7: payload holds NaN at score, which "
                               "JSON cannot express (store null or a number there instead)")
    assert isinstance(info.value.__cause__, NonFinitePayloadError)

    rejected: list[RecordError] = []
    builder = _builder("skip", rejected)
    assert builder.add(point, line=3) is False
    assert builder.add({"id": 8, "vector": [3.0, 4.0], "payload": {"score": None}}, line=4)
    batch = builder.flush()
    assert batch.column("id").to_pylist() == [8]
    assert batch.column("payload").to_pylist() == ['{"score":null}']
    # the point as it came, NaN kept: the rejects file writes it as NaN
    (err,) = rejected
    assert err.raw is point and math.isnan(err.raw["payload"]["score"])


def _qdrant_points(n: int = 5) -> list[dict[str, Any]]:
    from qdrant_helpers import source_points

    points = source_points(n)
    points[2]["payload"]["score"] = float("nan")
    points[3]["payload"]["score"] = float("-inf")
    return points


def test_a_qdrant_payload_holding_nan_is_a_bad_record(tmp_path: Path) -> None:
    """A qdrant-client local collection keeps NaN in a payload; it is refused by id, not
    written as null (named vectors: read through ``BatchBuilder``)."""
    pytest.importorskip("qdrant_client")
    from qdrant_helpers import make_local

    points = _qdrant_points()
    src = make_local(tmp_path / "q", points=points)
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "out.jsonl"))
    assert info.value.location.point_id == points[2]["id"]
    assert str(info.value).endswith(": payload holds NaN at score, which JSON cannot express "
                                    "(store null or a number there instead)")
    assert not (tmp_path / "out.jsonl").exists()

    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(src, str(tmp_path / "out.jsonl"), on_error="skip",
                              rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (3, 2)
    bad = sorted(_lines(rejects), key=lambda r: r["_vecferry_reject"]["reason"])
    assert [r["id"] for r in bad] == [points[3]["id"], points[2]["id"]]
    assert bad[0]["payload"]["score"] == float("-inf")
    assert math.isnan(bad[1]["payload"]["score"])
    assert '"score":NaN' in rejects.read_text() and '"score":-Infinity' in rejects.read_text()
    written = {r["id"] for r in _lines(tmp_path / "out.jsonl")}
    assert written == {p["id"] for i, p in enumerate(points) if i not in (2, 3)}


def _dense_local(folder: Path) -> str:
    """A local collection of one unnamed dense vector: read through ``DenseColumns``."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    try:
        client.create_collection("c", vectors_config=models.VectorParams(
            size=4, distance=models.Distance.DOT))
        client.upsert("c", points=[
            models.PointStruct(id=1, vector=[0.1, 0.2, 0.3, 0.4],
                               payload={"score": float("nan")}),
            models.PointStruct(id=2, vector=[0.1, 0.2, 0.3, 0.5], payload={"score": 1.0})])
    finally:
        client.close()
    return f"qdrant-local://{folder}/c"


def test_a_dense_qdrant_payload_holding_nan_is_never_written_as_null(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    src = _dense_local(tmp_path / "q")
    with pytest.raises(RecordError, match="payload holds NaN at score, which JSON cannot "
                                          r"express \(store null or a number there instead\)"):
        vecferry.convert(src, str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()


def test_a_dense_qdrant_payload_holding_nan_is_rejected_by_id(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    src = _dense_local(tmp_path / "q")
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "out.jsonl"))
    assert str(info.value) == (f"{src}, row 0, id 1: payload holds NaN at score, which JSON "
                               "cannot express (store null or a number there instead)")
    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(src, str(tmp_path / "out.jsonl"), on_error="skip",
                              rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (1, 1)
    assert '"payload":{"score":NaN}' in rejects.read_text()


# ------------------------------------------------------------------------------ 1. the digest


@pytest.mark.parametrize(("text", "other"), [
    ('{"a": NaN}', '{"a": null}'),
    ('{"a": Infinity}', '{"a": null}'),
    ('{"a": [-Infinity]}', '{"a": [null]}'),
    ('{"a": Infinity}', '{"a": -Infinity}'),
    ('{"a": NaN}', '{"a": Infinity}'),
    ('{"a": 1e400}', '{"a": null}'),  # only Python's json reads it, as infinity
    ('{"n": 18446744073709551616, "a": NaN}', '{"n": 18446744073709551616, "a": null}'),
])
def test_the_digest_never_takes_nan_for_null(text: str, other: str) -> None:
    assert canonical_payload(text) != canonical_payload(other)
    assert payload_hashes(pa.array([text])).tolist() != payload_hashes(pa.array([other])).tolist()


def test_stream_digests_of_nan_and_null_payloads_differ() -> None:
    manifest = Manifest(vectors=[VectorSpec("", "dense", 2)], id_kind="int")

    def digest(text: str) -> str:
        batch = pa.RecordBatch.from_arrays(
            [pa.array([1], pa.uint64()),
             pa.FixedSizeListArray.from_arrays(pa.array([0.5, 1.0], pa.float32()), 2),
             pa.array([text], pa.string())], schema=manifest.schema())
        stream = StreamDigest(manifest)
        stream.update(batch)
        return stream.as_dict()["value"]

    assert digest('{"a": NaN}') != digest('{"a": null}')
    assert digest('{"a": null}') == digest('{"a":null}')


def test_payload_text_without_nan_keeps_its_canonical_form() -> None:
    # the canonical form (so the digests files record) is unchanged for everything else
    assert canonical_payload('{"b": [1, null], "a": "null"}') == b'{"a":"null","b":[1,null]}'
    assert canonical_payload('{"a": NaN}') == b'{"a":NaN}'
    assert canonical_payload('{"a": 1e400}') == canonical_payload('{"a": Infinity}')


# ------------------------------------------- 2. payload texts of a stream-layout Parquet file


BAD_CELLS = [
    ('{"a": NaN}', f"column 'payload' holds NaN, which JSON cannot hold ({NAN_HINT})"),
    ('{"a": [1, -Infinity]}',
     f"column 'payload' holds -Infinity, which JSON cannot hold ({NAN_HINT})"),
    ("[1, 2]", f"payload must be a JSON object, not list ({CELL_HINT})"),
    ('"hello"', f"payload must be a JSON object, not str ({CELL_HINT})"),
    ("7", f"payload must be a JSON object, not int ({CELL_HINT})"),
    ('["\\ud800"]', f"payload must be a JSON object, not list ({CELL_HINT})"),
    ("{bad", "column 'payload' is not JSON: unexpected character, expected a string key: line 1 "
             f"column 2 (char 1) ({CELL_HINT})"),
    ('{"a": 1} {"b": 2}', "column 'payload' is not JSON: unexpected content after document: "
                          f"line 1 column 10 (char 9) ({CELL_HINT})"),
    ("", "column 'payload' is not JSON: Input is a zero-length, empty document: line 1 column 1 "
         f"(char 0) ({CELL_HINT})"),
]


@pytest.mark.parametrize(("cell", "message"), BAD_CELLS)
def test_a_bad_payload_cell_stops_the_run_naming_file_row_and_id(tmp_path: Path, cell: str,
                                                                 message: str) -> None:
    src = _stream_parquet(tmp_path / "points.parquet", ['{"ok": 1}', cell, None])
    out = tmp_path / "out.jsonl"
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(out))
    assert str(info.value) == f"{src}, row 1, id 11: {message}"
    assert not out.exists()


def test_bad_payload_cells_go_to_the_rejects_file_as_the_file_holds_them(tmp_path: Path
                                                                        ) -> None:
    cells = ['{"ok": 1}', '{"a": NaN}', "[1, 2]", '"hello"', "{bad", "null", None,
             '{"big": 123456789012345678901234567890}', '{"s": "\\ud800"}', '{"ok": 2}']
    src = _stream_parquet(tmp_path / "points.parquet", cells)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    output = _convert(src, str(out), "--on-error", "skip", "--rejects", str(rejects), code=3)
    assert "4 record(s) rejected" in output
    got = _lines(out)
    assert [p["id"] for p in got] == [10, 15, 16, 17, 18, 19]
    # a JSON null text is no payload, as a null cell is; what Python's json reads is taken
    assert [p.get("payload") for p in got] == [
        {"ok": 1}, None, None, {"big": 123456789012345678901234567890}, {"s": "\ud800"},
        {"ok": 2}]

    bad = _lines(rejects)
    assert [(r["id"], r["_vecferry_reject"]["row"], r["_vecferry_reject"]["point_id"])
            for r in bad] == [(11, 1, 11), (12, 2, 12), (13, 3, 13), (14, 4, 14)]
    assert [r["vector"] for r in bad] == [[2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    # the payload as the cell holds it: NaN written as NaN, the text that is not JSON as text
    assert rejects.read_text().splitlines()[0].startswith(
        '{"id":11,"vector":[2.0,3.0],"payload":{"a":NaN},"_vecferry_reject":')
    assert [r["payload"] for r in bad[1:]] == [[1, 2], "hello", "{bad"]
    assert [r["_vecferry_reject"]["reason"] for r in bad[:3]] == [
        "column 'payload' holds NaN, which JSON cannot hold",
        "payload must be a JSON object, not list", "payload must be a JSON object, not str"]

    # run again unfixed, each line is refused again, naming what is wrong
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(rejects), str(tmp_path / "again.jsonl"))
    assert str(info.value).startswith(f"{rejects}, line 1")
    assert "line holds NaN, which JSON cannot express" in str(info.value)
    again = vecferry.convert(str(rejects), str(tmp_path / "again.jsonl"), on_error="skip",
                             rejects=str(tmp_path / "again.rejects.jsonl"))
    assert (again["written"], again["rejected"]) == (0, 4)
    # fixed, they convert
    fixed = tmp_path / "fixed.jsonl"
    rows = bad
    rows[0]["payload"], rows[1]["payload"] = {"a": None}, {"list": [1, 2]}
    rows[2]["payload"], rows[3]["payload"] = {"s": "hello"}, {"bad": True}
    fixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = vecferry.convert(str(fixed), str(tmp_path / "fixed_out.jsonl"))
    assert (done["written"], done["rejected"]) == (4, 0)


def test_a_payload_cell_is_checked_in_a_file_carrying_a_manifest_too(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    vecferry.convert(_stream_parquet(tmp_path / "src.parquet", ['{"a": 1}', '{"a": 2}']),
                     str(good))
    metadata = pq.ParquetFile(good).schema_arrow.metadata
    assert MANIFEST_KEY in metadata
    src = _stream_parquet(tmp_path / "edited.parquet", ['{"a": 1}', '{"a": Infinity}'],
                          metadata=metadata)
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "out.parquet"))
    assert str(info.value) == (f"{src}, row 1, id 11: column 'payload' holds Infinity, which "
                               f"JSON cannot hold ({NAN_HINT})")


def test_cells_that_only_joined_make_json_are_each_refused(tmp_path: Path) -> None:
    """Parsed joined into one array, these three cells read as three objects; each is
    refused on its own."""
    cells = ['{"ok": 0}', '{"a": [{}', '{}]}', '{}, {}', '{"ok": 4}']
    src = _stream_parquet(tmp_path / "points.parquet", cells)
    report = vecferry.convert(src, str(tmp_path / "out.jsonl"), on_error="skip",
                              rejects=str(tmp_path / "rejects.jsonl"))
    assert (report["written"], report["rejected"]) == (2, 3)
    assert [r["payload"] for r in _lines(tmp_path / "rejects.jsonl")] == cells[1:4]


def test_a_bad_cell_in_a_later_batch_is_named_by_its_row(tmp_path: Path) -> None:
    n = 5000
    cells: list[str | None] = [json.dumps({"i": i, "t": "x" * (i % 7)}) for i in range(n)]
    cells[4321] = '{"i": NaN}'
    src = _stream_parquet(tmp_path / "points.parquet", cells, ids=list(range(n)),
                          row_group_size=1500)
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "out.parquet"), batch_size=512)
    assert str(info.value) == (f"{src}, row 4321, id 4321: column 'payload' holds NaN, which "
                               f"JSON cannot hold ({NAN_HINT})")


def test_verify_no_longer_calls_a_nan_payload_equal_to_null(tmp_path: Path) -> None:
    from vecferry.verification import verify

    src = _stream_parquet(tmp_path / "nan.parquet", ['{"a": NaN}'], ids=[1])
    other = tmp_path / "null.jsonl"
    other.write_text('{"id": 1, "vector": [0.0, 1.0], "payload": {"a": null}}\n')
    with pytest.raises(RecordError, match=r"row 0, id 1: column 'payload' holds NaN"):
        verify(src, str(other), queries=0)


def test_a_resumed_read_starts_at_its_row_past_a_smaller_row_group(tmp_path: Path) -> None:
    """Row groups of 10 and 3 rows read from row 5: rows 5..12 (the smaller second group was
    taken for rows before the start, and the read began at row 2)."""
    src = _stream_parquet(tmp_path / "points.parquet", [None] * 13, ids=list(range(13)),
                          row_group_size=10)
    assert [pq.ParquetFile(src).metadata.row_group(g).num_rows for g in (0, 1)] == [10, 3]
    reader = open_reader(src)
    try:
        for size in (100, 4):
            got = [i for b in reader.batches(size, start=5) for i in b.column("id").to_pylist()]
            assert got == list(range(5, 13))
    finally:
        reader.close()


def test_a_partition_with_a_rejected_row_keeps_to_its_rows(tmp_path: Path) -> None:
    src = _stream_parquet(tmp_path / "points.parquet",
                          ['{"a": 0}', "[1]", '{"a": 2}', '{"a": 3}'] + ['{"b": 1}'] * 4,
                          ids=list(range(8)), row_group_size=4)
    rejected: list[RecordError] = []
    reader = open_reader(src, context=Context("skip", rejected.append))
    try:
        first = [i for b in reader.read_partition({"start": 0, "stop": 4}, 100)
                 for i in b.column("id").to_pylist()]
        second = [i for b in reader.read_partition({"start": 4, "stop": 8}, 3)
                  for i in b.column("id").to_pylist()]
    finally:
        reader.close()
    assert (first, second) == ([0, 2, 3], [4, 5, 6, 7])
    assert [str(e) for e in rejected] == [
        f"{src}, row 1, id 1: payload must be a JSON object, not list ({CELL_HINT})"]


# --------------------------------------------------------- 3. a refused NaN vector's rejects


def _nan_vector_parquet(path: Path) -> str:
    vectors = np.array([[0.5, np.nan, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [np.inf, 0, 0, -np.inf]],
                       dtype=np.float32)
    pq.write_table(pa.table({
        "id": pa.array([1, 2, 3], pa.uint64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 4),
        "payload": pa.array(['{"a": 1}', None, None])}), path)
    return str(path)


def test_point_from_row_keeps_nan_and_infinity() -> None:
    manifest = Manifest(vectors=[VectorSpec("", "dense", 2)], id_kind="int")
    batch = pa.RecordBatch.from_arrays(
        [pa.array([4], pa.uint64()),
         pa.FixedSizeListArray.from_arrays(pa.array([np.nan, np.inf], pa.float32()), 2),
         pa.array([None], pa.string())], schema=manifest.schema())
    point = point_from_row(batch, 0, manifest)
    assert point["id"] == 4 and point["payload"] is None
    assert math.isnan(point["vector"][0]) and point["vector"][1] == math.inf


def test_a_nan_vector_the_target_refuses_is_written_as_nan(tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    src = _nan_vector_parquet(tmp_path / "nanvec.parquet")
    rejects = tmp_path / "bad.jsonl"
    _convert(src, str(tmp_path / "nv.jsonl.zst"), "--on-error", "skip", "--rejects",
             str(rejects), code=3)
    lines = rejects.read_text().splitlines()
    assert lines[0].startswith('{"id":1,"vector":[0.5,NaN,1.0,2.0],"payload":{"a":1},')
    assert lines[1].startswith('{"id":3,"vector":[Infinity,0.0,0.0,-Infinity],"payload":null,')
    # run again unfixed, the line is refused for its NaN, not for a null
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(rejects), str(tmp_path / "again.parquet"))
    assert str(info.value).startswith(f"{rejects}, line 1")
    assert f"line holds NaN, which JSON cannot express ({NAN_HINT})" in str(info.value)


# ---------------------------------------------------- 4. a JSONL line holding NaN names its id


@pytest.mark.parametrize(("line", "id_key", "found"), [
    (b'{"id":1,"vector":[NaN,1,2,3]}', "id", ("NaN", 1)),
    (b'{"id":"a","vector":[1],"payload":{"x":-Infinity}}', "id", ("-Infinity", "a")),
    (b'{"id":18446744073709551616,"vector":[Infinity]}', "id", ("Infinity", 2**64)),
    (b'{"doc_id":"d7","emb":[NaN]}', "doc_id", ("NaN", "d7")),
    (b'{"doc_id":"d7","emb":[NaN]}', None, ("NaN", None)),  # records numbered, not keyed
    (b'{"id":true,"vector":[NaN]}', "id", ("NaN", None)),
    (b'{"id":NaN,"vector":[1]}', "id", ("NaN", None)),
    (b'{"vector":[NaN]}', "id", ("NaN", None)),
    (b"[NaN]", "id", ("NaN", None)),
    (b'{"id":1,"vector":[1]}', "id", None),  # nothing to name
    (b'{"id":1,"vector":[NaN', "id", None),  # not JSON for another reason
])
def test_constant_and_id(line: bytes, id_key: str | None, found: Any) -> None:
    assert constant_and_id(line, id_key) == found


def test_a_jsonl_line_holding_nan_is_refused_with_its_id(tmp_path: Path) -> None:
    src = tmp_path / "n.jsonl"
    src.write_text('{"id":1,"vector":[NaN,1,2,3]}\n')
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "n.parquet"))
    assert str(info.value) == (f"{src}, line 1, id 1: line holds NaN, which JSON cannot "
                               f"express ({NAN_HINT})")
    # past the first line too (parse_chunk), and under a mapped id key
    src.write_text('{"id":1,"vector":[0,1,2,3]}\n{"id":"b","vector":[Infinity,1,2,3]}\n')
    report = vecferry.convert(str(src), str(tmp_path / "m.parquet"), on_error="skip",
                              rejects=str(tmp_path / "r.jsonl"))
    assert report["rejected"] == 1
    note = json.loads((tmp_path / "r.jsonl").read_text())["_vecferry_reject"]
    assert (note["line"], note["point_id"]) == (2, "b")
    keyed = tmp_path / "k.jsonl"
    keyed.write_text('{"doc":"a","emb":[0,1]}\n{"doc":"z","emb":[NaN,1]}\n')
    with pytest.raises(RecordError, match=r"line 2, id 'z': line holds NaN"):
        vecferry.convert(str(keyed), str(tmp_path / "k.parquet"),
                         reader_options={"id_key": "doc", "vector_key": ["emb"]})


def test_a_decimal_string_id_among_integer_ids_says_what_to_do(tmp_path: Path) -> None:
    src = tmp_path / "ids.jsonl"
    src.write_text('{"id":1,"vector":[1.0]}\n{"id":"2","vector":[2.0]}\n')
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "o.parquet"))
    assert str(info.value) == (
        f"{src}, line 2, id '2': string id '2' looks like an integer and cannot be told apart "
        "from one in a stream that mixes integer and string ids (write it as the number 2 if "
        'that is the id, or make every id of the source a string ("1", not 1) to keep it as '
        "text)")
    # the second way out works: string ids only keep their text
    src.write_text('{"id":"1","vector":[1.0]}\n{"id":"2","vector":[2.0]}\n')
    vecferry.convert(str(src), str(tmp_path / "s.jsonl"))
    assert [json.loads(x)["id"] for x in (tmp_path / "s.jsonl").read_text().splitlines()] == [
        "1", "2"]
