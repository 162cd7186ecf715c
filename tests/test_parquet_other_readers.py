"""Parquet written by vecferry is read as it is by DuckDB, polars and pandas.

The README promises it (``SELECT id, payload->>'title' FROM 'points.parquet'``); these tests
read one file and a directory of parts written by several worker processes with each tool and
compare what they see with the points written: ids up to 2^64 - 1, float32 vector bits,
named dense, sparse and multi vectors, and the payload JSON text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb  # the dev extra installs all three: a missing one fails here, not skips
import numpy as np
import pandas as pd
import polars as pl
import pytest
from click.testing import CliRunner

from roundtrip import Dataset, canonical, dense_int, named_mixed, write_points
from vecferry.cli import main


def _bits(values: Any) -> list[int]:
    return np.asarray(values, dtype=np.float32).view(np.uint32).tolist()


def _id_text(value: Any) -> str:
    return str(value)


def _expected(ds: Dataset) -> dict[str, dict[str, Any]]:
    return {_id_text(p["id"]): p for p in ds.points}


def _check_row(expected: dict[str, Any], row: dict[str, Any]) -> None:
    """One row as a tool returned it (column name -> Python value) against its point."""
    vectors = expected["vector"]
    if not isinstance(vectors, dict):
        vectors = {"": vectors}
    for name, value in vectors.items():
        column = "vector" if name == "" else f"vector.{name}"
        got = row[column]
        if isinstance(value, dict):  # sparse: struct of indices and values
            assert list(got["indices"]) == value["indices"], expected["id"]
            assert _bits(got["values"]) == _bits(value["values"]), expected["id"]
        elif value and isinstance(value[0], list):  # multivector
            assert [_bits(r) for r in got] == [_bits(r) for r in value], expected["id"]
        else:
            assert _bits(got) == _bits(value), expected["id"]
    assert canonical(json.loads(row["payload"])) == canonical(expected["payload"])


def _written(tmp_path: Path, ds: Dataset, layout: str) -> str:
    if layout == "file":
        out = str(tmp_path / f"{ds.name}.parquet")
        write_points(out, ds)
        return out
    src = str(tmp_path / f"{ds.name}.jsonl")
    write_points(src, ds)
    out = tmp_path / f"{ds.name}_parts"
    result = CliRunner().invoke(main, ["convert", src, f"{out}/", "--to", "parquet",
                                       "--workers", "2", "--partition-size", "4kB", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.parquet"))) > 1  # really several parts
    return str(out)


def _glob(location: str) -> str:
    return location if location.endswith(".parquet") else f"{location}/*.parquet"


@pytest.mark.parametrize("layout", ["file", "parts"])
@pytest.mark.parametrize("make", [dense_int, named_mixed], ids=lambda f: f.__name__)
def test_duckdb_reads_every_column(tmp_path: Path, make: Any, layout: str) -> None:
    ds = make()
    location = _written(tmp_path, ds, layout)
    con = duckdb.connect()
    cursor = con.execute(f"SELECT * FROM read_parquet('{_glob(location)}')")
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
    expected = _expected(ds)
    assert sorted(_id_text(r["id"]) for r in rows) == sorted(expected)
    for row in rows:
        _check_row(expected[_id_text(row["id"])], row)
    # the README's query: a payload field through DuckDB's JSON operators
    titles = dict(con.execute(
        f"SELECT id, payload->>'title' FROM read_parquet('{_glob(location)}')").fetchall())
    assert {_id_text(k): v for k, v in titles.items()} == {
        k: p["payload"]["title"] for k, p in expected.items()}
    if ds.id_kind == "int":
        top = con.execute(f"SELECT max(id) FROM read_parquet('{_glob(location)}')").fetchone()[0]
        assert top == 2**64 - 1  # an unsigned 64-bit column, not wrapped to a negative number


@pytest.mark.parametrize("layout", ["file", "parts"])
@pytest.mark.parametrize("make", [dense_int, named_mixed], ids=lambda f: f.__name__)
def test_polars_reads_every_column(tmp_path: Path, make: Any, layout: str) -> None:
    ds = make()
    location = _written(tmp_path, ds, layout)
    frame = pl.read_parquet(_glob(location))
    if ds.id_kind == "int":
        assert frame.schema["id"] == pl.UInt64
    expected = _expected(ds)
    rows = frame.to_dicts()
    assert sorted(_id_text(r["id"]) for r in rows) == sorted(expected)
    for row in rows:
        _check_row(expected[_id_text(row["id"])], row)
    dense = "vector" if "vector" in frame.columns else "vector.text"
    mat = frame[dense].to_numpy()
    assert mat.dtype == np.float32 and mat.shape == (len(ds.points), 8)


@pytest.mark.parametrize("make", [dense_int, named_mixed], ids=lambda f: f.__name__)
def test_pandas_reads_every_column(tmp_path: Path, make: Any) -> None:
    ds = make()
    location = _written(tmp_path, ds, "file")
    frame = pd.read_parquet(location)
    if ds.id_kind == "int":
        assert str(frame["id"].dtype) == "uint64"
    expected = _expected(ds)
    assert sorted(_id_text(i) for i in frame["id"]) == sorted(expected)
    for row in frame.to_dict("records"):
        _check_row(expected[_id_text(row["id"])], row)


def test_a_directory_of_parts_reads_as_one_dataset_by_its_path(tmp_path: Path) -> None:
    """pandas and pyarrow take the directory itself: its manifest is named so they skip it
    (polars wants a glob of the part files, as the other tests give it)."""
    import pyarrow.dataset as pads

    ds = named_mixed()
    location = _written(tmp_path, ds, "parts")
    expected = _expected(ds)
    frame = pd.read_parquet(location)
    assert sorted(_id_text(i) for i in frame["id"]) == sorted(expected)
    for row in frame.to_dict("records"):
        _check_row(expected[_id_text(row["id"])], row)
    assert pads.dataset(location).count_rows() == len(ds.points)


def test_a_directory_written_with_the_old_manifest_name_still_reads(tmp_path: Path) -> None:
    from roundtrip import read_points
    from vecferry.errors import InputError
    from vecferry.verification import verify

    ds = dense_int()
    location = Path(_written(tmp_path, ds, "parts"))
    (location / "_manifest.json").rename(location / "manifest.json")
    manifest, got = read_points(str(location))
    assert sorted(_id_text(p["id"]) for p in got) == sorted(_expected(ds))
    assert manifest.digest is not None and manifest.digest["count"] == len(ds.points)
    assert verify(str(location))["ok"]
    # its part list still decides: a part it does not list is refused, naming the old file
    first = sorted(location.glob("part-*.parquet"))[0]
    (location / "part-00099.parquet").write_bytes(first.read_bytes())
    with pytest.raises(InputError, match=r"not listed in manifest\.json: part-00099\.parquet"):
        read_points(str(location))
