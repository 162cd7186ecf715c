"""Follow-ups of the source-listing and Parquet-mapping fixes that reach the command line and
format detection: ``--payload-column`` on the command line, the flags a rejects file's re-run
is told to use when the payload was such a column, and directories recognised by their files'
extensions in any letter case (the readers take them so)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from vecferry.cli import main
from vecferry.converters import resolve


def _objects_table(bad_row: bool = False) -> pa.Table:
    vectors = [[1.0, 2.0], [3.0, 4.0], [5.0]] if bad_row else [[1.0, 2.0], [3.0, 4.0]]
    n = len(vectors)
    return pa.table({
        "id": pa.array(range(1, n + 1), pa.int64()),
        "emb": pa.array(vectors, pa.list_(pa.float32())),
        "text": ["a", "b", "c"][:n],
        "attrs": pa.array([{"k": i} for i in range(n)], pa.struct([("k", pa.int64())]))})


def test_payload_column_flag_reads_a_column_as_the_payload(tmp_path: Path) -> None:
    src = tmp_path / "t.parquet"
    pq.write_table(_objects_table(), src)
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(main, ["convert", str(src), str(out), "--id-column", "id",
                                       "--vector-column", "emb", "--payload-column", "attrs",
                                       "-q"])
    assert result.exit_code == 0, result.output
    points = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["payload"] for p in points] == [{"k": 0}, {"k": 1}]


def test_rejects_of_a_payload_column_source_are_rerun_with_payload_key(tmp_path: Path) -> None:
    src = tmp_path / "t.parquet"
    pq.write_table(_objects_table(bad_row=True), src)
    report = vecferry.convert(src, tmp_path / "o.jsonl", on_error="skip", reader_options={
        "id_column": "id", "vector_column": ["emb"], "payload_column": "attrs"})
    assert (report["written"], report["rejected"]) == (2, 1)
    rejects = Path(report["rejects_file"])
    # a re-run mapping the vector to another name is told the flags the source was read with
    with pytest.raises(vecferry.errors.UsageError) as info:
        vecferry.convert(rejects, tmp_path / "again.jsonl", reader_options={
            "id_key": "id", "vector_key": ["other=emb"]})
    assert info.value.hint.startswith(
        "map the keys as the source was mapped: --id-key id --vector-key emb --payload-key "
        "attrs;")
    record = json.loads(rejects.read_text().splitlines()[0])
    record["emb"] = [5.0, 6.0]
    rejects.write_text(json.dumps(record) + "\n")
    vecferry.convert(rejects, tmp_path / "again.jsonl", reader_options={
        "id_key": "id", "vector_key": ["emb"], "payload_key": "attrs"})
    fixed = json.loads((tmp_path / "again.jsonl").read_text())
    assert (fixed["id"], fixed["payload"]) == (3, {"k": 2})


@pytest.mark.parametrize(("name", "fmt"), [
    ("part-0.PQ", "parquet"), ("part-0.Parquet", "parquet"), ("sub/part-0.parquet", "parquet"),
    ("a.JSONL", "jsonl"), ("a.ndjson.GZ", None), ("a.Ndjson.gz", "jsonl"), ("7.NPY", "npy")])
def test_a_directory_is_told_by_extensions_in_any_case(tmp_path: Path, name: str,
                                                        fmt: str | None) -> None:
    path = tmp_path / "d" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    if fmt is None:  # a compression suffix in upper case is not read, so tells nothing
        with pytest.raises(vecferry.errors.FormatNotFoundError):
            resolve(str(tmp_path / "d"), None, role="reader")
    else:
        assert resolve(str(tmp_path / "d"), None, role="reader").name == fmt


def test_an_upper_case_npy_directory_converts_without_from(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    for i in (1, 2):
        np.save(d / f"{i}.NPY", np.array([i, 0.5], np.float32))
    report = vecferry.convert(d, tmp_path / "o.jsonl")
    assert report["written"] == 2
