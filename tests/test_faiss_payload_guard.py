"""Payloads that must not be lost or changed without a word: a ``--payloads`` file beside the
payload sidecar vecferry wrote, NaN in a Parquet payloads file (FAISS and numpy sources), an id
given twice in a ``metadata.json`` object; and FAISS metrics no Qdrant distance matches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from faiss_helpers import IDS, N, build, converted_index, read_all, vectors
from vecferry.cli import main
from vecferry.converters.base import Context
from vecferry.converters.faiss_index import FaissReader
from vecferry.errors import RecordError, UnsupportedError, UsageError


def _lines(path: Path) -> list[dict[str, Any]]:
    """A JSONL file's records; NaN and Infinity (a rejects file keeps them) read as floats."""
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------- 1. --payloads beside vecferry's sidecar


def test_payloads_file_beside_a_sidecar_of_ids_and_payloads_is_refused(tmp_path: Path) -> None:
    index = converted_index(tmp_path, ids="strings", payloads=True)
    side = tmp_path / "m.jsonl"
    side.write_text('{"id": "doc-1", "new": 1}\n')
    with pytest.raises(UsageError) as info:
        FaissReader(index, context=Context(), payloads=str(side))
    assert str(info.value) == (
        f"{index}: --payloads {side} and the payload sidecar {index}.payloads.parquet would "
        "both give the payloads (the sidecar holds the original ids and the payloads vecferry "
        "wrote with the index; drop --payloads to keep those payloads, or convert without "
        "--payloads and change the payloads in that output)")
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(main, ["convert", index, str(out), "--payloads", str(side)])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    # without --payloads, every stored payload comes back
    vecferry.convert(index, str(out))
    assert [p["payload"] for p in _lines(out)] == [{"i": i} for i in range(N)]


def test_payloads_file_beside_a_sidecar_of_integer_ids_says_how_to_join_it(
        tmp_path: Path) -> None:
    index = converted_index(tmp_path, ids="integers", payloads=True)
    side = tmp_path / "m.jsonl"
    side.write_text(json.dumps({"id": int(IDS[1]), "new": 1}) + "\n")
    with pytest.raises(UsageError) as info:
        vecferry.convert(index, str(tmp_path / "o.jsonl"), reader_options={"payloads": str(side)})
    assert str(info.value) == (
        f"{index}: --payloads {side} and the payload sidecar {index}.payloads.parquet would "
        "both give the payloads (the sidecar holds the payloads vecferry wrote with the index; "
        f"drop --payloads to keep them, or, to join {side} by FAISS id instead, move "
        f"{index}.payloads.parquet and {index}.manifest.json away)")
    # the way the hint gives
    away = tmp_path / "away"
    away.mkdir()
    for suffix in (".payloads.parquet", ".manifest.json"):
        shutil.move(index + suffix, away)
    ids, _, payloads, _, _ = read_all(index, payloads=str(side))
    got = dict(zip(ids.tolist(), payloads, strict=True))
    assert json.loads(got[int(IDS[1])]) == {"new": 1}


def test_payloads_file_joins_by_the_original_ids_of_a_sidecar_without_payloads(
        tmp_path: Path) -> None:
    """A sidecar holding only the id mapping gives no payload to lose: the file is joined by
    the ids it restores."""
    index = converted_index(tmp_path, ids="strings", payloads=False)
    assert Path(index + ".payloads.parquet").exists()
    side = tmp_path / "m.jsonl"
    side.write_text('{"id": "doc-3", "new": 3}\n{"id": "doc-5", "new": 5}\n')
    out = tmp_path / "o.jsonl"
    vecferry.convert(index, str(out), reader_options={"payloads": str(side)})
    got = {p["id"]: p.get("payload") for p in _lines(out)}
    assert got == {f"doc-{i}": {"new": i} if i in (3, 5) else None for i in range(N)}


# ------------------------------------------------------- 2. NaN in a Parquet payloads file


def _nan_payloads(tmp_path: Path, ids: list[int]) -> Path:
    path = tmp_path / "mp.parquet"
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()),
                             "f": [float("nan"), 1.0, 2.0],
                             "g": pa.array([[0.5], [1.0], [float("inf")]],
                                           pa.list_(pa.float64()))}), path)
    return path


def test_nan_in_a_parquet_payloads_file_of_a_faiss_source_is_a_bad_record(tmp_path: Path) -> None:
    _, index = build(tmp_path / "i.faiss", "IDMap,Flat")
    a, b, c = (int(i) for i in IDS[:3])
    meta = _nan_payloads(tmp_path, [a, b, c])
    with pytest.raises(RecordError) as info:
        vecferry.convert(index, str(tmp_path / "o.jsonl"), reader_options={"payloads": str(meta)})
    assert str(info.value) == (f"{meta}, row 0, id {a}: column 'f' holds NaN, which JSON "
                               "cannot hold (write null for a missing value)")
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(index, str(out), on_error="skip", overwrite=True,
                              reader_options={"payloads": str(meta)})
    assert (report["written"], report["rejected"]) == (N - 2, 2)
    got = {p["id"]: p.get("payload") for p in _lines(out)}
    assert got[b] == {"f": 1.0, "g": [1.0]} and a not in got and c not in got
    rejected = _lines(Path(report["rejects_file"]))
    assert [(r["id"], r["_vecferry_reject"]["reason"], r["_vecferry_reject"]["row"])
            for r in rejected] == [
        (a, "column 'f' holds NaN, which JSON cannot hold", 0),
        (c, "column 'g' holds Infinity at [0], which JSON cannot hold", 2)]
    # the point whole, its payload as read: NaN stays NaN, so an unfixed re-run names it again
    assert np.isnan(rejected[0]["payload"]["f"]) and "vector" in rejected[0]
    assert rejected[1]["payload"]["g"] == [float("inf")]


def test_nan_in_json_text_of_a_parquet_payloads_file_is_named(tmp_path: Path) -> None:
    _, index = build(tmp_path / "i.faiss", "IDMap,Flat")
    first = int(IDS[0])
    meta = tmp_path / "mp.parquet"
    pq.write_table(pa.table({"id": pa.array([first], pa.int64()),
                             "payload": ['{"f": NaN}']}), meta)
    with pytest.raises(RecordError) as info:
        vecferry.convert(index, str(tmp_path / "o.jsonl"), reader_options={"payloads": str(meta)})
    assert str(info.value).startswith(
        f"{meta}, row 0, id {first}: payload for id {first} holds NaN, which JSON cannot hold (")


def _npy(tmp_path: Path) -> Path:
    path = tmp_path / "v.npy"
    np.save(path, vectors(n=3))
    return path


def test_nan_in_a_parquet_payloads_file_of_a_numpy_source_is_a_bad_record(tmp_path: Path) -> None:
    src = _npy(tmp_path)
    meta = _nan_payloads(tmp_path, [10, 11, 12])
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "o.jsonl"),
                         reader_options={"payloads": str(meta)})
    assert str(info.value) == (f"{meta}, row 0, id 0: column 'f' holds NaN, which JSON cannot "
                               "hold (write null for a missing value)")
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip", overwrite=True,
                              reader_options={"payloads": str(meta)})
    assert (report["written"], report["rejected"]) == (1, 2)
    assert [(p["id"], p["payload"]) for p in _lines(out)] == [
        (1, {"id": 11, "f": 1.0, "g": [1.0]})]
    rejected = _lines(Path(report["rejects_file"]))
    assert [(r["id"], r["_vecferry_reject"]["reason"], r["_vecferry_reject"]["row"])
            for r in rejected] == [
        (0, "column 'f' holds NaN, which JSON cannot hold", 0),
        (2, "column 'g' holds Infinity at [0], which JSON cannot hold", 2)]
    assert np.isnan(rejected[0]["payload"]["f"]) and "vector" in rejected[0]


def test_json_text_cells_of_a_numpy_parquet_payloads_file_are_checked(tmp_path: Path) -> None:
    """A lone ``payload`` column of JSON text went into the stream unchecked: NaN made the
    output invalid JSON, and a list was taken for a payload."""
    src = _npy(tmp_path)
    meta = tmp_path / "mp.parquet"
    pq.write_table(pa.table({"payload": ['{"f": NaN}', "[1]", '{"a": 1}']}), meta)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), on_error="skip",
                              reader_options={"payloads": str(meta)})
    assert [(p["id"], p["payload"]) for p in _lines(out)] == [(2, {"a": 1})]
    rejected = _lines(Path(report["rejects_file"]))
    assert [(r["id"], r["payload"], r["_vecferry_reject"]["reason"]) for r in rejected] == [
        (0, '{"f": NaN}', "column 'payload' holds NaN, which JSON cannot hold"),
        (1, [1], "payload must be a JSON object, not list")]


def test_payload_chunks_of_a_parquet_file_stop_at_a_row_json_cannot_hold(tmp_path: Path) -> None:
    from vecferry.fileio import iter_payload_chunks

    meta = _nan_payloads(tmp_path, [10, 11, 12])
    with pytest.raises(RecordError) as info:
        list(iter_payload_chunks(str(meta), start=1))
    assert str(info.value) == (f"{meta}, row 2: column 'g' holds Infinity at [0], which JSON "
                               "cannot hold (write null for a missing value)")


# ------------------------------------------------------ 3. metrics with no Qdrant distance


@pytest.mark.parametrize(("metric", "name"), [(faiss.METRIC_Linf, "Linf"),
                                              (faiss.METRIC_Lp, "Lp"),
                                              (faiss.METRIC_Canberra, "Canberra")])
def test_a_metric_no_qdrant_distance_matches_is_refused_at_open(tmp_path: Path, metric: int,
                                                                name: str) -> None:
    index = faiss.IndexFlat(8, metric)
    index.add(vectors())
    path = tmp_path / "m.faiss"
    faiss.write_index(index, str(path))
    with pytest.raises(UnsupportedError) as info:
        FaissReader(str(path), context=Context())
    assert str(info.value) == (
        f"{path}: FAISS index IndexFlat ranks by metric {name}, which no Qdrant distance "
        "matches: vecferry cannot keep its ranking (supported metrics: L2 (Euclid), inner "
        "product (Dot or Cosine), L1 (Manhattan); rebuild the index with one of them to export "
        "it)")
    out = tmp_path / "o.faiss"
    for args in (["convert", str(path), str(out)], ["inspect", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
    assert not out.exists()


def test_an_id_mapped_index_of_such_a_metric_is_refused_too(tmp_path: Path) -> None:
    _, path = build(tmp_path / "i.faiss", "IDMap2,Flat", metric=faiss.METRIC_Linf)
    with pytest.raises(UnsupportedError, match=r"IndexIDMap2\(IndexFlat\) ranks by metric Linf"):
        FaissReader(path, context=Context())


# ------------------------------------------------------------- 4. an id given twice


def test_a_key_given_twice_in_a_metadata_json_object_is_not_last_wins(tmp_path: Path) -> None:
    _, index = build(tmp_path / "i.faiss", "IDMap,Flat")
    first = int(IDS[0])
    meta = tmp_path / "metadata.json"
    meta.write_text(f'{{"{first}": {{"a": 1}}, "{first}": {{"b": 2}}}}')
    with pytest.raises(RecordError) as info:
        vecferry.convert(index, str(tmp_path / "o.jsonl"), reader_options={"payloads": str(meta)})
    # the run stops: the message does not say a payload was kept
    assert str(info.value) == (
        f"{meta}, id {first}: payload id {first} is given more than once (keep one entry per "
        "id; with --on-error skip the first is joined and the others go to the rejects file)")
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(index, str(out), on_error="skip", overwrite=True,
                              reader_options={"payloads": str(meta)})
    assert (report["written"], report["rejected"]) == (N, 1)
    got = {p["id"]: p.get("payload") for p in _lines(out)}
    assert got[first] == {"a": 1}
    (reject,) = _lines(Path(report["rejects_file"]))
    assert reject["payload"] == {"b": 2}
    assert reject["_vecferry_reject"]["reason"] == (
        f"payload id {first} is given more than once; the first is kept")


def test_an_id_given_twice_in_jsonl_stops_a_failing_run_without_saying_one_is_kept(
        tmp_path: Path) -> None:
    _, index = build(tmp_path / "i.faiss", "IDMap,Flat")
    first = int(IDS[0])
    meta = tmp_path / "m.jsonl"
    meta.write_bytes(orjson.dumps({"id": first, "a": 1}) + b"\n"
                     + orjson.dumps({"id": first, "b": 2}) + b"\n")
    with pytest.raises(RecordError) as info:
        read_all(index, payloads=str(meta))
    assert info.value.message == f"payload id {first} is given more than once"
    assert info.value.location.line == 2


@pytest.mark.parametrize("statistics", [True, False])
def test_a_sidecar_tells_whether_it_holds_payloads_with_or_without_statistics(
        tmp_path: Path, statistics: bool) -> None:
    from vecferry.converters.faiss_index import _Sidecar

    for name, payloads in (("none", [None, None]), ("some", [None, '{"a": 1}'])):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"faiss_id": pa.array([0, 1], pa.int64()), "id": ["a", "b"],
                                 "payload": pa.array(payloads, pa.string())}), path,
                       write_statistics=statistics)
        assert _Sidecar(path).has_payloads() is (name == "some")
