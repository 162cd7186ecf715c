"""Fixes to directory sources, the JSONL reader and numpy inputs, each driven through the public
API with real files in ``tmp_path``:

1. a directory source (per-vector ``.npy``, ``.npy`` shards, JSONL) names what it would leave
   unread instead of skipping it, and reads upper-case extensions of its own kind;
2. a JSONL point holding both ``vector`` and ``vectors`` is a bad record, not one of them lost;
3. ``JsonlReader.batches`` reads from the first line again on every call;
4. a JSONL file without a single valid point names each bad line, and skipping rejects each;
5. an ``.npz`` archive warns of the arrays it does not read;
6. a structured (record) array says so, with its fields and what to do.

Messages are asserted as ``str(exc)`` (``"<location>: <message> (<hint>)"``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import vecferry
from failing import fails
from vecferry import storage
from vecferry.converters.base import Context
from vecferry.errors import InputError, RecordError, UnsupportedError, VecferryWarning

F32 = np.float32


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _read(location: str, **options: Any) -> list[dict[str, Any]]:
    """Every point of a source, as the JSONL writer writes it."""
    out = Path(location).parent / "read-back.jsonl"
    vecferry.convert(location, str(out), overwrite=True, reader_options=options or None)
    return _lines(out)


def _hidden_and_own(d: Path) -> None:
    """What a directory may hold that no reader reads, and none may name: Spark's marker,
    macOS's, a Hadoop checksum, vecferry's temporaries, their locks and manifest sidecars."""
    (d / "_SUCCESS").write_text("")
    (d / ".DS_Store").write_bytes(b"\0")
    (d / "part.crc").write_bytes(b"\0")
    (d / ".out.vftmp-0a1b2c3d").mkdir()
    (d / ".out.vftmp-0a1b2c3d.lock").write_text("")
    (d / "_temporary").mkdir()


# ------------------------------------------------------- 1. per-vector .npy directories


def _per_vector(d: Path) -> Path:
    d.mkdir()
    for i in range(3):
        np.save(d / f"{i}.npy", np.full(2, i, dtype=F32))
    (d / "1.json").write_text('{"a": 1}')
    _hidden_and_own(d)
    return d


PER_VECTOR_HINT_END = ("or move them out of the directory, or give them a leading _ or . "
                       "(which vecferry skips)")


def test_a_per_vector_directory_names_what_it_would_not_read(tmp_path):
    d = _per_vector(tmp_path / "vecs")
    (d / "7.json").write_text('{"a": 7}')  # a payload whose vector is not there
    np.savez(d / "more.npz", vectors=np.ones((2, 2), dtype=F32))
    (d / "sub").mkdir()
    np.save(d / "sub" / "9.npy", np.ones(2, dtype=F32))
    (d / "notes.txt").write_text("x")
    text = fails(InputError, lambda: vecferry.convert(str(d), str(tmp_path / "o.jsonl")))
    assert text == (
        f"{d}: directory holds 4 file(s) that are not per-vector <id>.npy files or their "
        "<id>.json sidecars, which would not be read: 7.json (no 7.npy beside it), "
        "more.npz, notes.txt, sub/ (a payload sidecar <id>.json is read with its vector "
        "<id>.npy: add the vector file, or move the sidecar out; an .npz archive is a source "
        "of its own: convert it by itself; subdirectories are not read: convert each as a "
        f"source of its own; {PER_VECTOR_HINT_END})")
    assert not (tmp_path / "o.jsonl").exists()


def test_a_per_vector_directory_names_the_first_five_and_counts_the_rest(tmp_path):
    d = _per_vector(tmp_path / "vecs")
    for i in range(10, 17):
        (d / f"{i}.json").write_text("{}")
    text = fails(InputError, lambda: vecferry.open_reader(str(d)))
    assert text == (
        f"{d}: directory holds 7 file(s) that are not per-vector <id>.npy files or their "
        "<id>.json sidecars, which would not be read: 10.json (no 10.npy beside it), "
        "11.json (no 11.npy beside it), 12.json (no 12.npy beside it), 13.json (no 13.npy "
        "beside it), 14.json (no 14.npy beside it) and 2 more (a payload sidecar <id>.json is "
        "read with its vector <id>.npy: add the vector file, or move the sidecar out; "
        f"{PER_VECTOR_HINT_END})")


def test_a_per_vector_directory_reads_upper_case_extensions_and_leaves_hidden_files(tmp_path):
    d = _per_vector(tmp_path / "vecs")
    np.save(d / "tmp.npy", np.full(2, 5, dtype=F32))
    (d / "tmp.npy").rename(d / "5.NPY")
    (d / "5.JSON").write_text('{"b": 5}')
    # an underscore names a vector still (as before), with its sidecar
    np.save(d / "_6.npy", np.full(2, 6, dtype=F32))
    (d / "_6.json").write_text('{"c": 6}')
    (d / "_orphan.json").write_text("{}")  # hidden: left out, as _SUCCESS is
    (d / "0.npy.manifest.json").write_text("{}")  # a manifest sidecar's name: no data
    points = _read(str(d))
    assert points == [
        {"id": "0", "vector": [0.0, 0.0]},
        {"id": "1", "vector": [1.0, 1.0], "payload": {"a": 1}},
        {"id": "2", "vector": [2.0, 2.0]},
        {"id": "5", "vector": [5.0, 5.0], "payload": {"b": 5}},
        {"id": "_6", "vector": [6.0, 6.0], "payload": {"c": 6}},
    ]


def test_upper_case_npy_files_with_number_names_keep_integer_ids(tmp_path):
    d = _per_vector(tmp_path / "vecs")
    np.save(d / "tmp.npy", np.full(2, 5, dtype=F32))
    (d / "tmp.npy").rename(d / "5.NPY")
    assert [p["id"] for p in _read(str(d))] == [0, 1, 2, 5]


def test_a_per_vector_directory_refuses_a_second_sidecar_of_one_file(tmp_path):
    d = _per_vector(tmp_path / "vecs")
    (d / "1.JSON").write_text('{"a": 2}')
    text = fails(InputError, lambda: vecferry.open_reader(str(d)))
    assert text.startswith(
        f"{d}: directory holds 1 file(s) that are not per-vector <id>.npy files or their "
        "<id>.json sidecars, which would not be read: 1.json (a second sidecar of 1.npy, "
        "beside 1.JSON) (")


def test_a_shard_directory_names_what_it_would_not_read(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    for n in (0, 1):
        np.save(d / f"emb_{n}.npy", np.full((2, 3), n, dtype=F32))
    _hidden_and_own(d)
    (d / "config.json").write_text("{}")
    text = fails(InputError, lambda: vecferry.open_reader(str(d)))
    assert text == (
        f"{d}: directory holds 1 file(s) that are not shards (.npy) or their metadata "
        "(.parquet), which would not be read: config.json (a shard directory holds numbered "
        "(N, D) matrices, ids_<n>.npy and metadata_<n>.parquet: move the other files out of "
        "the directory, or give them a leading _ or . (which vecferry skips))")
    (d / "config.json").unlink()
    assert [p["id"] for p in _read(str(d))] == [0, 1, 2, 3]


# ------------------------------------------------------------------ 1. JSONL directories


def _point(i: int) -> str:
    return json.dumps({"id": i, "vector": [float(i), 1.0]}) + "\n"


def _jsonl_dir(d: Path) -> Path:
    d.mkdir()
    (d / "a_1.jsonl").write_text(_point(1))
    _hidden_and_own(d)
    (d / "a_1.jsonl.manifest.json").write_text("{}")  # a file's own sidecar: no data
    return d


JSONL_HINT_END = ("or move them out of the directory, or give them a leading _ or . (which "
                  "vecferry and Spark skip)")


def test_a_jsonl_directory_names_what_it_would_not_read(tmp_path):
    d = _jsonl_dir(tmp_path / "export")
    (d / "b.json").write_text(_point(2))
    (d / "c.json.gz").write_bytes(gzip.compress(_point(3).encode()))
    (d / "d.jsonl.GZ").write_bytes(gzip.compress(_point(4).encode()))
    (d / "sub").mkdir()
    (d / "sub" / "e.jsonl").write_text(_point(5))
    (d / "notes.txt").write_text("x")
    text = fails(InputError, lambda: vecferry.convert(str(d), str(tmp_path / "o.parquet")))
    assert text == (
        f"{d}: directory holds 5 file(s) that are not JSONL by name, which would not be "
        "read: b.json, c.json.gz, d.jsonl.GZ, notes.txt, sub/ (a .json file is read as JSONL "
        "only when named .jsonl or .ndjson (Spark names its JSON Lines .json): rename it if "
        "it holds one point per line; rename a compressed file to end in lower-case .gz or "
        ".zst; subdirectories are not read: convert each as a source of its own; "
        f"{JSONL_HINT_END})")
    assert not (tmp_path / "o.parquet").exists()


def test_a_jsonl_directory_reads_upper_case_extensions_in_natural_order(tmp_path):
    d = _jsonl_dir(tmp_path / "export")
    (d / "a_2.JSONL").write_text(_point(2))
    (d / "a_3.NDJSON").write_text(_point(3))
    (d / "a_10.Jsonl.gz").write_bytes(gzip.compress(_point(10).encode()))
    assert vecferry.converters.resolve(str(d)).name == "jsonl"
    assert [p["id"] for p in _read(str(d))] == [1, 2, 3, 10]


def test_a_jsonl_directory_vecferry_wrote_names_a_file_put_there(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(_point(i) for i in range(4)))
    out = tmp_path / "out"
    vecferry.convert(str(src), str(out) + "/", to_format="jsonl",
                     writer_options={"max_part_size": 40})
    assert len(list(out.glob("part-*.jsonl"))) > 1
    assert [p["id"] for p in _read(str(out))] == [0, 1, 2, 3]
    (out / "readme.md").write_text("x")
    text = fails(InputError, lambda: vecferry.open_reader(str(out)))
    assert text == (f"{out}: directory holds 1 file(s) that are not JSONL by name, which "
                    f"would not be read: readme.md ({JSONL_HINT_END})")


# ---------------------------------------------- 2. a JSONL point with "vector" and "vectors"

BOTH = ('point has both "vector" and "vectors", two names of one key: which of them holds its '
        "vectors is unclear")
BOTH_HINT = ('keep one of them ("vectors" is the name Qdrant\'s batch upsert uses); it holds '
             'all of the point\'s vectors, named ones as {"name": [...]}')


def _both(tmp_path: Path) -> Path:
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": 1, "vector": [1.0, 2.0]}\n'
                   '{"id": 2, "vector": [3.0, 4.0], "vectors": {"b": [5.0, 6.0]}}\n'
                   '{"id": 3, "vector": null, "vectors": [7.0, 8.0]}\n')
    return src


def test_a_point_with_vector_and_vectors_is_refused_by_line_and_id(tmp_path):
    src = _both(tmp_path)
    text = fails(RecordError, lambda: vecferry.convert(str(src), str(tmp_path / "o.jsonl")))
    assert text == f"{src}, line 2, id 2: {BOTH} ({BOTH_HINT})"


def test_a_point_with_vector_and_vectors_goes_to_the_rejects_file(tmp_path):
    src = _both(tmp_path)
    rejects = tmp_path / "r.jsonl"
    report = vecferry.convert(str(src), str(tmp_path / "o.jsonl"), on_error="skip",
                              rejects=str(rejects))
    assert (report["read"], report["written"], report["rejected"]) == (3, 2, 1)
    assert _lines(rejects) == [{
        "id": 2, "vector": [3.0, 4.0], "vectors": {"b": [5.0, 6.0]},
        "_vecferry_reject": {"reason": BOTH, "source": str(src), "line": 2, "point_id": 2}}]
    # a null under one of the keys is no value: the other is the point's vectors
    assert _lines(tmp_path / "o.jsonl") == [{"id": 1, "vector": [1.0, 2.0]},
                                            {"id": 3, "vector": [7.0, 8.0]}]


# ------------------------------------------------------- 3. JSONL batches read twice


def _ids(reader: Any, **kwargs: Any) -> list[int]:
    return [i for b in reader.batches(2, **kwargs) for i in b.column("id").to_pylist()]


@pytest.mark.parametrize("kind", ["plain", "gz", "zst", "directory", "with_manifest"])
def test_jsonl_batches_read_from_the_first_line_on_every_call(tmp_path, kind):
    text = "".join(_point(i) for i in range(5))
    if kind == "directory":
        src = tmp_path / "d"
        src.mkdir()
        (src / "a_1.jsonl").write_text("".join(_point(i) for i in range(3)))
        (src / "a_2.jsonl.gz").write_bytes(gzip.compress("".join(
            _point(i) for i in range(3, 5)).encode()))
    elif kind == "gz":
        src = tmp_path / "p.jsonl.gz"
        src.write_bytes(gzip.compress(text.encode()))
    elif kind == "zst":
        import zstandard

        src = tmp_path / "p.jsonl.zst"
        src.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    else:
        src = tmp_path / "p.jsonl"
        src.write_text(text)
        if kind == "with_manifest":  # no lines are peeked when the reader opens
            vecferry.convert(str(src), str(tmp_path / "w.jsonl"))
            src = tmp_path / "w.jsonl"
    reader = vecferry.open_reader(str(src))
    try:
        assert _ids(reader) == [0, 1, 2, 3, 4]
        assert _ids(reader) == [0, 1, 2, 3, 4]
        assert _ids(reader, start=3) == [3, 4]
        assert _ids(reader) == [0, 1, 2, 3, 4]
    finally:
        reader.close()


def test_a_jsonl_read_left_half_way_starts_again_from_the_first_line(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(_point(i) for i in range(6)))
    reader = vecferry.open_reader(str(src))
    try:
        first = reader.batches(2)
        assert next(first).column("id").to_pylist() == [0, 1]
        first.close()
        assert _ids(reader) == [0, 1, 2, 3, 4, 5]
    finally:
        reader.close()


# -------------------------------------------------- 4. a JSONL file without a valid point

NOT_JSON = "line is not valid JSON"
EMPTY_HINT = ('a vector holds numbers: [0.1, 0.2, ...] (sparse: {"indices": [...], "values": '
              '[...]}, multi: [[...], [...]])')


def _no_valid_point(tmp_path: Path) -> Path:
    src = tmp_path / "bad.jsonl"
    src.write_text('[1, 2]\n{"id": 1, "vector": []}\n{bad\n{"id": 2, "vector": "abc"}\n')
    return src


def test_a_jsonl_file_without_a_valid_point_names_its_first_bad_line(tmp_path):
    src = tmp_path / "lists.jsonl"
    src.write_text("[1, 2]\n[3, 4]\n")
    text = fails(RecordError, lambda: vecferry.open_reader(str(src)))
    assert text == (f"{src}, line 1: a point must be a JSON object, not list (each line is "
                    'one point: {"id": ..., "vector": [...], "payload": {...}})')
    src.write_text('{"id": 1, "vector": []}\n')
    text = fails(RecordError, lambda: vecferry.convert(str(src), str(tmp_path / "o.parquet")))
    assert text == f"{src}, line 1, id 1: vector is empty ({EMPTY_HINT})"


def test_skipping_rejects_every_line_of_a_jsonl_file_without_a_valid_point(tmp_path):
    src = _no_valid_point(tmp_path)
    rejects = tmp_path / "r.jsonl"
    with pytest.warns(VecferryWarning):
        report = vecferry.convert(str(src), str(tmp_path / "o.parquet"), on_error="skip",
                                  rejects=str(rejects))
    assert (report["read"], report["written"], report["rejected"]) == (4, 0, 4)
    assert report["warnings"] == [
        f"none of the lines sampled from {src} is a point to infer the vectors from, so the "
        "stream has none: every line is rejected"]
    notes = [line["_vecferry_reject"] for line in _lines(rejects)]
    assert [(n["line"], n.get("point_id"), n["reason"]) for n in notes] == [
        (1, None, "a point must be a JSON object, not list"),
        (2, 1, "vector is empty"),
        (3, None, notes[2]["reason"]),
        (4, 2, "vector must be a list of numbers, not str"),
    ]
    assert notes[2]["reason"].startswith(NOT_JSON)
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 0
    # fixed, the lines run again: the rejects' manifest does not hold them to "no vectors"
    fixed = [{"id": i, "vector": [float(i), 1.0]} for i in (1, 2)]
    rejects.write_text("".join(json.dumps(p) + "\n" for p in fixed))
    vecferry.convert(str(rejects), str(tmp_path / "again.jsonl"))
    assert _lines(tmp_path / "again.jsonl") == [{"id": 1, "vector": [1.0, 1.0]},
                                                {"id": 2, "vector": [2.0, 1.0]}]


def test_lines_after_a_sample_without_vectors_are_rejected_with_the_reason(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": 1, "vector": []}\n' * 1000 + _point(2))
    context = Context("skip", sink=lambda err: None)
    reader = vecferry.open_reader(str(src), context=context)
    try:
        errors: list[RecordError] = []
        context.sink = errors.append
        assert list(reader.batches(100)) == []
    finally:
        reader.close()
    assert len(errors) == 1001
    assert str(errors[-1]) == (
        f"{src}, line 1001, id 2: no point read before it tells the vectors' shape (without "
        "a manifest sidecar it comes from the first points) (fix the lines before it, or add "
        "a manifest sidecar declaring the vectors)")


# ------------------------------------------------------- 5. .npz arrays that are not read


def test_an_npz_warns_of_the_arrays_it_does_not_read_before_writing(tmp_path):
    src = tmp_path / "v.npz"
    np.savez(src, vectors=np.ones((2, 3), dtype=F32), ids=np.array([7, 8], dtype=np.uint64),
             labels=np.array([0, 1]), text_emb=np.zeros((2, 4), dtype=F32))
    context = Context()
    reader = vecferry.open_reader(str(src), context=context)
    reader.close()
    assert context.warnings == [
        f"{src}: array(s) 'labels', 'text_emb' of the archive are not read (an .npz gives "
        "'vectors' and 'ids'): to keep them, write them to a JSONL or Parquet file aligned by "
        "row and pass it with --payloads"]
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([1, 2], dtype=np.uint64))
    with pytest.warns(VecferryWarning):
        report = vecferry.convert(str(src), str(tmp_path / "o.jsonl"),
                                  reader_options={"ids": str(ids)})
    assert report["warnings"][1:] == [
        f"{src}: the archive's 'ids' array is not read: --ids gives the ids"]
    assert [p["id"] for p in _lines(tmp_path / "o.jsonl")] == [1, 2]


def test_an_npz_of_vectors_and_ids_warns_of_nothing(tmp_path):
    src = tmp_path / "v.npz"
    np.savez(src, vectors=np.ones((2, 3), dtype=F32), ids=np.array([7, 8], dtype=np.uint64))
    assert vecferry.convert(str(src), str(tmp_path / "o.jsonl"))["warnings"] == []


# ----------------------------------------------------------- 6. structured (record) arrays

RECORDS = np.zeros(3, dtype=[("id", "<i8"), ("emb", "<f4", (4,)), ("title", "<U8")])
STRUCTURED = ("the array is structured (a record array) with fields 'id' (int64), 'emb' "
              "(4 x float32), 'title' (<U8); vectors are read from a plain (N, D) matrix of "
              "numbers (save the vector field as its own .npy, e.g. np.save('vectors.npy', "
              "arr['emb']), and the ids, if a field holds them, as ids.npy (--ids))")


def test_a_structured_npy_says_so_with_its_fields(tmp_path):
    src = tmp_path / "records.npy"
    np.save(src, RECORDS)
    text = fails(UnsupportedError, lambda: vecferry.convert(str(src), str(tmp_path / "o.jsonl")))
    assert text == f"{src}: {STRUCTURED}"
    # what the hint says to do reads
    np.save(tmp_path / "vectors.npy", RECORDS["emb"])
    vecferry.convert(str(tmp_path / "vectors.npy"), str(tmp_path / "o.jsonl"))
    assert len(_lines(tmp_path / "o.jsonl")) == 3


def test_a_structured_array_in_an_npz_or_a_per_vector_file_says_so(tmp_path):
    src = tmp_path / "v.npz"
    np.savez(src, vectors=RECORDS)
    text = fails(UnsupportedError, lambda: vecferry.open_reader(str(src)))
    assert text == f"{src}:vectors.npy: {STRUCTURED}"
    d = tmp_path / "vecs"
    d.mkdir()
    np.save(d / "a.npy", np.ones(4, dtype=F32))
    np.save(d / "b.npy", RECORDS[:1])
    text = fails(RecordError, lambda: vecferry.convert(str(d), str(tmp_path / "o.jsonl")))
    assert text == f"{d / 'b.npy'}, row 1, id 'b': {STRUCTURED}"


def test_a_per_vector_file_holding_one_number_is_a_bad_point_not_a_crash(tmp_path):
    # an IndexError (the first file's size was its shape's last entry) before
    d = tmp_path / "vecs"
    d.mkdir()
    np.save(d / "1.npy", F32(3))
    np.save(d / "2.npy", np.ones(2, dtype=F32))
    text = fails(RecordError, lambda: vecferry.convert(str(d), str(tmp_path / "o.jsonl")))
    assert text == (f"{d / '1.npy'}, row 0, id 1: file holds a single float32 number (a 0-d "
                    "array), not a vector (save each vector as a 1-D array of its values)")
    report = vecferry.convert(str(d), str(tmp_path / "o.jsonl"), on_error="skip")
    assert (report["written"], report["rejected"]) == (1, 1)
    assert _lines(tmp_path / "o.jsonl") == [{"id": 2, "vector": [1.0, 1.0]}]


def test_a_jsonl_directory_in_a_bucket_names_what_it_would_not_read(tmp_path, opts, s3,
                                                                    bucket):
    # a remote listing says which names are directories only when asked: those shown are
    prefix = f"{bucket}/export"
    s3.pipe({f"{prefix}/a_1.jsonl": _point(1).encode(),
             f"{prefix}/a_2.JSONL": _point(2).encode(),
             f"{prefix}/_SUCCESS": b"",
             f"{prefix}/b.json": _point(3).encode(),
             f"{prefix}/sub/c.jsonl": _point(4).encode()})
    remote = f"s3://{prefix}"
    with storage.using(opts):
        text = fails(InputError, lambda: vecferry.open_reader(remote, format="jsonl"))
    assert text == (
        f"{remote}: directory holds 2 file(s) that are not JSONL by name, which would not be "
        "read: b.json, sub/ (a .json file is read as JSONL only when named .jsonl or .ndjson "
        "(Spark names its JSON Lines .json): rename it if it holds one point per line; "
        f"subdirectories are not read: convert each as a source of its own; {JSONL_HINT_END})")
    s3.rm(f"{prefix}/b.json")
    s3.rm(f"{prefix}/sub", recursive=True)
    s3.invalidate_cache()
    report = vecferry.convert(remote, str(tmp_path / "o.jsonl"), from_format="jsonl",
                              storage_options=opts, workers=1)
    assert report["written"] == 2
    assert [p["id"] for p in _lines(tmp_path / "o.jsonl")] == [1, 2]
