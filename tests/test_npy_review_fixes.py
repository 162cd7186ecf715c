"""Review fixes of the numpy format: options a per-vector directory cannot use, ids the writer
cannot keep, ids arrays and manifests of the wrong kind, a damaged payloads file of a written
directory, string ids no point can carry, files that hold no vector or more than one, the
reader's warnings in ``inspect``, empty sources, and the writer's memory for long string ids.

Each test writes real ``.npy`` / ``.npz`` / JSONL files under ``tmp_path`` and runs vecferry on
them; messages are asserted whole.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

import vecferry
from failing import fails_converting
from roundtrip import leftovers, read_points
from vecferry.cli import main
from vecferry.errors import InputError, RecordError, UsageError
from vecferry.inspect import inspect_location

F32 = np.float32
ONE_VECTOR_HINT = "save each vector as a 1-D array of its values"
PER_VECTOR_OPTIONS = ("--ids and --payloads apply to one matrix; a directory of per-vector "
                      "files takes each id from its file name (<id>.npy) and its payload from "
                      "its <id>.json sidecar")
NUL_ID = ("id ends in a NUL character, which the numpy format's fixed-width strings cannot "
          "hold (numpy drops trailing NULs, so the id would read back as another) (write "
          "Parquet or JSONL instead, which keep any id)")
IDS_HINT = "ids must be a 1-D .npy of integers or unicode strings"


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _matrix(tmp_path: Path, rows: int = 4, dim: int = 4, name: str = "v.npy") -> str:
    path = tmp_path / name
    np.save(path, np.arange(rows * dim, dtype=F32).reshape(rows, dim))
    return str(path)


def _per_vector(tmp_path: Path, n: int = 3, dim: int = 4) -> Path:
    d = tmp_path / "pv"
    d.mkdir()
    for i in range(n):
        np.save(d / f"{i}.npy", np.full(dim, i, dtype=F32))
    return d


def _jsonl(path: Path, points: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in points))
    return str(path)


def _fails(cls: type[Any], src: str, tmp_path: Path, **options: Any) -> str:
    return fails_converting(cls, src, tmp_path / "fail.jsonl", **options)


def _skip(src: str, tmp_path: Path, **options: Any
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Convert ``src`` skipping bad points: the points written and the rejects file's lines,
    which the report counts."""
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    report = vecferry.convert(src, str(out), on_error="skip", rejects=str(rejects),
                              batch_size=2, reader_options=options)
    points, lines = read_points(str(out))[1], _rejects(rejects) if rejects.exists() else []
    assert (report["read"], report["written"], report["rejected"]) == \
        (len(points) + len(lines), len(points), len(lines))
    return points, lines


# ------------------------------------------------------------------------------------ A1


@pytest.mark.parametrize("option", ["ids", "payloads"])
def test_a_per_vector_directory_refuses_ids_and_payloads(tmp_path, option):
    d = _per_vector(tmp_path)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(3, dtype=np.uint64))
    payloads = _jsonl(tmp_path / "p.jsonl", [{"i": i} for i in range(3)])
    given = {"ids": str(ids), "payloads": payloads}[option]
    assert _fails(UsageError, str(d), tmp_path, **{option: given}) == \
        f"{d}: {PER_VECTOR_OPTIONS}"
    with pytest.raises(UsageError) as info:
        inspect_location(str(d), reader_options={option: given})
    assert str(info.value) == f"{d}: {PER_VECTOR_OPTIONS}"


def test_the_cli_refuses_ids_for_a_per_vector_directory_with_exit_2(tmp_path):
    d = _per_vector(tmp_path)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(3, dtype=np.uint64))
    for command in (["convert", str(d), str(tmp_path / "o.jsonl")], ["inspect", str(d)]):
        result = run(*command, "--ids", str(ids))
        assert result.exit_code == 2
        assert f"{d}: {PER_VECTOR_OPTIONS}" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


# ------------------------------------------------------------------------------------ A2


def test_the_writer_refuses_a_string_id_ending_in_nul(tmp_path):
    src = _jsonl(tmp_path / "s.jsonl", [{"id": "a", "vector": [1.0, 2.0]},
                                        {"id": "a\0", "vector": [3.0, 4.0]}])
    out = tmp_path / "out"
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(out), to_format="npy")
    assert str(info.value) == f"{out}, id 'a\\x00': {NUL_ID}"
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_string_id_ending_in_nul_is_rejected_not_written_changed(tmp_path):
    src = _jsonl(tmp_path / "s.jsonl", [{"id": "a", "vector": [1.0, 2.0]},
                                        {"id": "a\0", "vector": [3.0, 4.0]},
                                        {"id": "b\0\0", "vector": [5.0, 6.0]},
                                        {"id": "c\0d", "vector": [7.0, 8.0]}])
    out, rejects = tmp_path / "out", tmp_path / "rejects.jsonl"
    report = vecferry.convert(src, str(out), to_format="npy", on_error="skip",
                              rejects=str(rejects))
    assert (report["read"], report["written"], report["rejected"]) == (4, 2, 2)
    # a NUL inside an id is kept: numpy drops only the trailing ones
    assert [p["id"] for p in read_points(str(out))[1]] == ["a", "c\0d"]
    lines = _rejects(rejects)
    assert [(r["id"], r["vector"], r["_vecferry_reject"]["reason"]) for r in lines] == [
        ("a\0", [3.0, 4.0], NUL_ID.rsplit(" (write", 1)[0]),
        ("b\0\0", [5.0, 6.0], NUL_ID.rsplit(" (write", 1)[0])]
    assert vecferry.verify(str(out))["ok"]


# ------------------------------------------------------------------------------------ B1, B2


def test_an_npz_whose_ids_are_2d_is_refused_as_ids_are(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, vectors=np.ones((4, 2), dtype=F32), ids=np.arange(8).reshape(4, 2))
    assert _fails(InputError, str(path), tmp_path) == f"{path}: ids must be 1-D, found shape (4, 2)"


def test_ids_given_as_an_npz_are_refused(tmp_path):
    archive = tmp_path / "ids.npz"
    np.savez(archive, ids=np.arange(4, dtype=np.uint64))
    text = _fails(InputError, _matrix(tmp_path), tmp_path, ids=str(archive))
    assert text == (f"{archive}: ids file is an .npz archive, not an .npy file (save the ids "
                    "array by itself with np.save('ids.npy', ids), or convert the .npz itself, "
                    "whose 'ids' array is used)")


# ------------------------------------------------------------------------------------ B3


def test_a_foreign_manifest_beside_per_vector_files_is_named(tmp_path):
    d = _per_vector(tmp_path)
    (d / "manifest.json").write_text('{"model": "bge", "dim": 4}')
    text = _fails(InputError, str(d), tmp_path)
    assert text == (
        f"{d}: directory holds 1 file(s) that are not per-vector <id>.npy files or their "
        "<id>.json sidecars, which would not be read: manifest.json (not a manifest vecferry "
        "wrote) (a manifest.json without format_version is not vecferry's and is not read; or "
        "move them out of the directory, or give them a leading _ or . (which vecferry skips))")
    (d / "manifest.json").rename(d / "_manifest.json")
    assert len(read_points(str(d))[1]) == 3


def test_a_foreign_manifest_beside_a_manifest_vector_is_its_sidecar(tmp_path):
    d = _per_vector(tmp_path)
    np.save(d / "manifest.npy", np.full(4, 9, dtype=F32))
    (d / "manifest.json").write_text('{"model": "bge"}')
    points = {p["id"]: p for p in read_points(str(d))[1]}
    assert points["manifest"]["payload"] == {"model": "bge"}
    assert sorted(points) == ["0", "1", "2", "manifest"]


def test_a_foreign_manifest_in_a_shard_directory_is_named(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    _matrix(d, name="emb_0.npy")
    _matrix(d, name="emb_1.npy")
    (d / "manifest.json").write_text('{"model": "bge"}')
    assert _fails(InputError, str(d), tmp_path).startswith(
        f"{d}: directory holds 1 file(s) that are not shards (.npy) or their metadata "
        "(.parquet), which would not be read: manifest.json (")


def test_a_manifest_listing_no_vectors_is_said(tmp_path):
    d = _per_vector(tmp_path)
    (d / "manifest.json").write_text('{"format_version": 1}')
    assert _fails(InputError, str(d), tmp_path) == (
        f"{d / 'manifest.json'}: manifest lists no vectors, so no vectors.npy to read (the "
        "numpy writer always lists its vectors; re-create the directory, or restore its "
        "manifest.json)")


# ------------------------------------------------------------------------------------ B4


def _written(tmp_path: Path) -> Path:
    src = _jsonl(tmp_path / "s.jsonl", [{"id": i, "vector": [float(i), 1.0],
                                         "payload": {"i": i}} for i in range(5)])
    out = tmp_path / "written"
    vecferry.convert(src, str(out), to_format="npy")
    return out


@pytest.mark.parametrize("lines", [4, 6])
def test_a_written_directory_checks_its_payloads_rows(tmp_path, lines):
    d = _written(tmp_path)
    payloads = d / "payloads.jsonl"
    rows = payloads.read_bytes().splitlines(keepends=True)
    payloads.write_bytes(b"".join([*rows, b'{"extra": 1}\n'][:lines]))
    assert _fails(InputError, str(d), tmp_path) == (
        f"{payloads}: payloads file has {lines} rows but the vectors have 5 (payloads are "
        "matched to vectors by row: one per vector)")


def test_a_written_directory_of_no_points_reads(tmp_path):
    """Its empty payloads file is as many rows as its vectors: none."""
    src = _jsonl(tmp_path / "s.jsonl", [{"id": 1, "vector": [1.0, 2.0]}])
    reader = vecferry.open_reader(src)
    out = tmp_path / "none"
    vecferry.open_writer(str(out), reader.schema, format="npy").close()
    reader.close()
    assert (out / "payloads.jsonl").read_bytes() == b""
    assert read_points(str(out))[1] == []


# ------------------------------------------------------------------------------------ B5, B6


STRING_IDS = {
    "surrogate": ("a\ud800", "id is not valid Unicode: it holds a lone surrogate ('\\ud800' at "
                  "index 1), which UTF-8 cannot encode (ids are written as UTF-8 text: fix the "
                  "id in the ids file)", "'a\\ud800'"),
    "empty": ("", "id is an empty string (ids must be unsigned integers, UUIDs or non-empty "
              "strings)", "''"),
}


@pytest.mark.parametrize("name", sorted(STRING_IDS))
def test_a_string_id_no_point_can_carry_fails_naming_its_row(tmp_path, name):
    bad, message, shown = STRING_IDS[name]
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array(["x0", "x1", bad, "x3"]))
    text = _fails(RecordError, _matrix(tmp_path), tmp_path, ids=str(ids))
    assert text == f"{ids}, row 2, id {shown}: {message}"


@pytest.mark.parametrize("name", sorted(STRING_IDS))
def test_a_string_id_no_point_can_carry_is_rejected_when_skipping(tmp_path, name):
    bad, message, _ = STRING_IDS[name]
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array(["x0", "x1", bad, "x3"]))
    points, rejects = _skip(_matrix(tmp_path), tmp_path, ids=str(ids))
    assert [p["id"] for p in points] == ["x0", "x1", "x3"]
    assert [(r["id"], r["vector"], r["_vecferry_reject"]["row"]) for r in rejects] == [
        (bad, [8.0, 9.0, 10.0, 11.0], 2)]
    assert rejects[0]["_vecferry_reject"]["reason"] == message.rsplit(" (", 1)[0]


def test_a_surrogate_id_in_a_shard_is_rejected(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    _matrix(d, name="emb_0.npy")
    np.save(d / "ids_0.npy", np.array(["a", "b\udc80", "c", "d"]))
    points, rejects = _skip(str(d), tmp_path)
    assert [p["id"] for p in points] == ["a", "c", "d"]
    assert [r["id"] for r in rejects] == ["b\udc80"]


def test_a_per_vector_file_name_that_is_no_utf8_is_a_bad_point(tmp_path):
    d = tmp_path / "pv"
    d.mkdir()
    np.save(d / "a.npy", np.ones(4, dtype=F32))
    with open(os.fsencode(d) + b"/b\xff.npy", "wb") as fh:
        np.save(fh, np.ones(4, dtype=F32))
    assert _fails(RecordError, str(d), tmp_path) == (
        f"{d}/b\udcff.npy, row 1, id 'b\\udcff': the file name is not valid UTF-8, so it "
        "cannot be an id (ids are written as UTF-8 text) (rename the file)")
    points, rejects = _skip(str(d), tmp_path)
    assert [p["id"] for p in points] == ["a"] and [r["id"] for r in rejects] == ["b\udcff"]


# ------------------------------------------------------------------------------------ C1, C3


def test_a_matrix_among_per_vector_files_is_not_flattened(tmp_path):
    d = _per_vector(tmp_path)
    np.save(d / "1.npy", np.ones((2, 2), dtype=F32))
    assert _fails(RecordError, str(d), tmp_path) == (
        f"{d / '1.npy'}, row 1, id 1: file holds an array of shape (2, 2), not one vector "
        f"({ONE_VECTOR_HINT})")
    points, rejects = _skip(str(d), tmp_path)
    assert [p["id"] for p in points] == [0, 2]
    # its values are not kept flat: the rejects file would convert them as one vector
    assert [(r["id"], "vector" in r) for r in rejects] == [(1, False)]


def test_a_row_of_one_vector_reads_as_the_vector(tmp_path):
    d = _per_vector(tmp_path)
    np.save(d / "1.npy", np.full((1, 4), 7, dtype=F32))
    assert [p["vector"].tolist() for p in read_points(str(d))[1]] == [[0.0] * 4, [7.0] * 4,
                                                                      [2.0] * 4]


def test_a_first_per_vector_file_of_a_matrix_does_not_set_the_size(tmp_path):
    """(Names that are not numbers: numbered ones, the first a matrix, are shards.)"""
    d = tmp_path / "pv"
    d.mkdir()
    np.save(d / "a.npy", np.ones((2, 2), dtype=F32))
    for name in ("b", "c"):
        np.save(d / f"{name}.npy", np.ones(4, dtype=F32))
    assert _fails(RecordError, str(d), tmp_path) == (
        f"{d / 'a.npy'}, row 0, id 'a': file holds an array of shape (2, 2), not one vector "
        f"({ONE_VECTOR_HINT})")
    points, rejects = _skip(str(d), tmp_path)
    assert [(p["id"], p["vector"].tolist()) for p in points] == [("b", [1.0] * 4),
                                                                 ("c", [1.0] * 4)]
    assert [r["id"] for r in rejects] == ["a"]


def test_an_empty_per_vector_file_is_named(tmp_path):
    d = _per_vector(tmp_path)
    np.save(d / "0.npy", np.zeros(0, dtype=F32))
    assert _fails(RecordError, str(d), tmp_path) == (
        f"{d / '0.npy'}, row 0, id 0: file holds an empty array (shape (0,)), not a vector "
        f"({ONE_VECTOR_HINT})")
    points, rejects = _skip(str(d), tmp_path)
    assert [p["id"] for p in points] == [1, 2] and [r["id"] for r in rejects] == [0]


ZERO_WIDTH = ("its vectors hold no values (a vector needs at least one value: check that the "
              "array saved is the embeddings)")


def test_a_matrix_of_no_columns_is_named(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros((3, 0), dtype=F32))
    assert _fails(InputError, str(path), tmp_path) == \
        f"{path}: the matrix has shape (3, 0): {ZERO_WIDTH}"
    archive = tmp_path / "v.npz"
    np.savez(archive, vectors=np.zeros((3, 0), dtype=F32))
    assert _fails(InputError, str(archive), tmp_path) == \
        f"{archive}: the matrix has shape (3, 0): {ZERO_WIDTH}"


def test_a_shard_of_no_columns_is_named(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    for i in range(2):
        np.save(d / f"emb_{i}.npy", np.zeros((3, 0), dtype=F32))
    assert _fails(InputError, str(d), tmp_path) == (
        f"{d / 'emb_0.npy'}: the matrix has shape (3, 0): {ZERO_WIDTH}")


# ------------------------------------------------------------------------------------ C2


def test_inspect_reports_the_readers_warnings(tmp_path):
    archive = tmp_path / "x.npz"
    np.savez(archive, vectors=np.array([[0.1, 0.2], [0.3, 0.4]]), labels=np.arange(2))
    info = inspect_location(str(archive))
    assert info["warnings"] == [
        f"{archive}: array(s) 'labels' of the archive are not read (an .npz gives 'vectors' "
        "and 'ids'): to keep them, write them to a JSONL or Parquet file aligned by row and "
        "pass it with --payloads",
        "float64 vectors are narrowed to float32 (Qdrant, FAISS and the stream store "
        "float32); the report counts values that changed",
        "4 float64 value(s) changed when narrowed to float32"]
    result = run("inspect", str(archive))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"warning: {w}" for w in info["warnings"]]


# ------------------------------------------------------------------------------------ C4, C5


def test_an_empty_npz_is_refused_as_an_empty_npy_is(tmp_path):
    archive = tmp_path / "x.npz"
    np.savez(archive, vectors=np.zeros((0, 4), dtype=F32))
    assert _fails(InputError, str(archive), tmp_path) == \
        f"{archive}: input is empty: the matrix has no rows"


def test_ids_that_are_not_npy_get_no_unpickling_advice(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("0\n1\n2\n3\n")
    assert _fails(InputError, _matrix(tmp_path), tmp_path, ids=str(ids)) == (
        f"{ids}: ids file is not a readable .npy array: it starts with b'0\\n1\\n2\\n', not "
        f"with a .npy header ({IDS_HINT})")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert _fails(InputError, _matrix(tmp_path), tmp_path, ids=str(empty)) == (
        f"{empty}: ids file is not a readable .npy array: it is empty ({IDS_HINT})")
    assert _fails(InputError, _matrix(tmp_path), tmp_path, ids=str(tmp_path)) == (
        f"{tmp_path}: cannot read the ids file: Is a directory ({IDS_HINT})")


# ------------------------------------------------------------------------------------ C6


def test_per_vector_errors_name_the_id(tmp_path):
    d = tmp_path / "pv"
    d.mkdir()
    for name in ("doc-a", "doc-b"):
        np.save(d / f"{name}.npy", np.ones(4, dtype=F32))
    (d / "doc-b.json").write_text("[1]")
    assert _fails(RecordError, str(d), tmp_path) == (
        f"{d / 'doc-b.json'}, row 1, id 'doc-b': payload sidecar must hold a JSON object, not "
        "list (make the file one JSON object (or null), or delete it)")
    (d / "doc-b.json").unlink()
    np.save(d / "doc-b.npy", np.ones(3, dtype=F32))
    assert _fails(RecordError, str(d), tmp_path) == (
        f"{d / 'doc-b.npy'}, row 1, id 'doc-b': vector has shape (3,) and dtype float32, but "
        "the first file has 4 values of float32 (every file must hold one vector of the same "
        "size and dtype)")


# ------------------------------------------------------------------------------------ C7


def test_one_long_string_id_does_not_widen_every_block(tmp_path):
    """ids.npy is as wide as its longest id; the block built in memory is bounded in bytes,
    not rows: 3,000 rows of 20,000 characters would be 240 MB at once."""
    long_id = "x" * 20_000
    ids = [long_id] + [f"d{i}" for i in range(2_999)]
    src = _jsonl(tmp_path / "s.jsonl", [{"id": pid, "vector": [1.0, 2.0]} for pid in ids])
    out = tmp_path / "out"
    reader = vecferry.open_reader(src)
    writer = vecferry.open_writer(str(out), reader.schema, format="npy")
    for batch in reader.batches(1000):
        writer.write_batch(batch)
    reader.close()
    tracemalloc.start()
    try:
        writer.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20
    written = np.load(out / "ids.npy")
    assert written.dtype == np.dtype("<U20000") and written.tolist() == ids
