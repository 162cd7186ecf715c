"""Every broken input in sample_data/bad/ and every bad-input path: exact message and class.

Messages are asserted as ``str(exc)``: location first (file, line, row, id), then what is wrong,
then the hint in parentheses. After any failure the output directory holds no output and no
``.vftmp`` temporary.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import tempfile

import numpy as np
import pytest

import vecferry
from roundtrip import leftovers, read_points
from vecferry.converters.base import Context
from vecferry.errors import (
    InputError,
    OutputExistsError,
    RecordError,
    SchemaError,
    UnsupportedError,
    UsageError,
)
from vecferry.points import BatchBuilder
from vecferry.stream import Manifest, VectorSpec

# file -> (error class, message after "<path>", and its first words)
JSONL_BAD = {
    "not_json.jsonl": (RecordError, ", line 3: line is not valid JSON: "),
    "truncated.jsonl": (RecordError, ", line 7: the last line is cut short (file truncated?) "
                        "(the file may still be downloading or was cut; re-create it)"),
    "wrong_dim.jsonl": (RecordError, ", line 4, id 3: vector has 7 dimensions, expected 8"),
    "missing_vector.jsonl": (RecordError, ", line 5, id 4: point has no vector (every point "
                             "needs the unnamed vector)"),
    "overflow.jsonl": (RecordError, ", line 2, id 1: vector holds 1e+39, outside float32's "
                       "range of about ±3.4e38 (fix the value: vectors hold finite numbers in "
                       "the range of float32)"),
    "payload_not_object.jsonl": (RecordError, ", line 2, id 1: payload must be a JSON object, "
                                 "not list"),
    "negative_id.jsonl": (RecordError, ", line 4, id -3: id -3 is outside 0..2^64-1; integer "
                          "ids must be unsigned 64-bit (as in Qdrant and FAISS); write it as a "
                          "string id to keep it"),
    "empty.jsonl": (InputError, ": input is empty: no points (check that the file holds one "
                    "JSON point per line)"),
    "int64_matrix.npy": (UnsupportedError, ": unsupported dtype int64 for vectors (vectors must "
                         "be float32, float16, uint8 or float64 (narrowed to float32))"),
    "truncated.npy": (InputError, ": file is truncated: the header says 6 x 8 float32 (192 "
                      "bytes of data) but the file holds 152 (re-create or re-copy the file)"),
}
# bad files that have their own tests below
OTHER_BAD = {"duplicate_ids.jsonl", "nan_vector.npy", "ids_too_few.npy"}


def test_every_bad_sample_has_a_test(samples):
    assert {p.name for p in (samples / "bad").iterdir()} == set(JSONL_BAD) | OTHER_BAD


@pytest.mark.parametrize("target", ["out.parquet", "out.jsonl"])
@pytest.mark.parametrize("name", sorted(JSONL_BAD))
def test_bad_sample_fails_with_its_message(samples, tmp_path, name, target):
    cls, message = JSONL_BAD[name]
    src = str(samples / "bad" / name)
    with pytest.raises(cls) as info:
        vecferry.convert(src, str(tmp_path / target), batch_size=2)
    assert type(info.value) is cls
    if message.endswith(": "):
        assert str(info.value).startswith(src + message)
    else:
        assert str(info.value) == src + message
    assert os.listdir(tmp_path) == []


def _rejects(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", sorted(n for n in JSONL_BAD if n.endswith(".jsonl")
                                        and n != "empty.jsonl"))
def test_skip_sends_the_bad_line_to_rejects(samples, tmp_path, name):
    src = str(samples / "bad" / name)
    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(src, str(tmp_path / "out.parquet"), on_error="skip",
                              rejects=str(rejects), batch_size=2)
    assert report["rejected"] == 1
    assert report["read"] == report["written"] + report["rejected"]
    assert report["written"] == len(read_points(str(tmp_path / "out.parquet"))[1])
    (line,) = _rejects(rejects)
    reason = JSONL_BAD[name][1].split(": ", 1)[1].split(" (")[0]
    assert line["_vecferry_reject"]["reason"].startswith(reason.rstrip(": "))
    assert line["_vecferry_reject"]["source"] == src


def test_jsonl_vectors_holding_strings_or_booleans_are_rejected(tmp_path):
    src = tmp_path / "p.jsonl"
    lines = [{"id": i, "vector": [0.5, -1.25, 2.0], "payload": {"ok": True}} for i in range(6)]
    lines[2]["vector"][1] = "-1.25"
    lines[4]["vector"][0] = False
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(str(src), str(tmp_path / "out.parquet"), on_error="skip",
                              rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (4, 2)
    assert [(p["_vecferry_reject"]["line"], p["_vecferry_reject"]["reason"])
            for p in _rejects(rejects)] == [
        (3, 'vector holds the string "-1.25", which is not a number'),
        (5, "vector holds false, which is not a number")]


def test_fixed_rejects_file_converts(samples, tmp_path):
    src = str(samples / "bad" / "wrong_dim.jsonl")
    rejects = tmp_path / "rejects.jsonl"
    vecferry.convert(src, str(tmp_path / "out.jsonl"), on_error="skip", rejects=str(rejects))
    (point,) = _rejects(rejects)
    assert point["_vecferry_reject"] == {"reason": "vector has 7 dimensions, expected 8",
                                         "source": src, "line": 4, "point_id": 3}
    point["vector"].append(0.5)  # the fix; the reject note stays and is ignored
    rejects.write_text(json.dumps(point) + "\n")
    report = vecferry.convert(str(rejects), str(tmp_path / "fixed.jsonl"))
    assert (report["written"], report["rejected"]) == (1, 0)
    _, points = read_points(str(tmp_path / "fixed.jsonl"))
    assert points[0]["id"] == 3 and len(points[0]["vector"]) == 8
    assert "_vecferry_reject" not in points[0]["payload"]


def test_an_id_past_64_bits_keeps_its_digits_in_message_and_rejects(tmp_path):
    # orjson reads such an integer as a float; the message and the rejects line must show the
    # number as written (not 1e+20), so that the fix (a string id) keeps the value
    big = 99999999999999999999
    src = tmp_path / "ids.jsonl"
    src.write_text("".join(json.dumps({"id": pid, "vector": [0.5, 1.5]}) + "\n"
                           for pid in (1, big, 2)))
    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(str(src), str(tmp_path / "o.parquet"), on_error="skip",
                              rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (2, 1)
    (line,) = _rejects(rejects)
    assert line["id"] == big and type(line["id"]) is int
    assert line["_vecferry_reject"]["reason"] == (
        f"id {big} is outside 0..2^64-1; integer ids must be unsigned 64-bit (as in Qdrant "
        "and FAISS); write it as a string id to keep it")
    assert line["_vecferry_reject"]["point_id"] == big


def test_unparseable_reject_must_be_replaced(samples, tmp_path):
    src = str(samples / "bad" / "not_json.jsonl")
    rejects = tmp_path / "rejects.jsonl"
    vecferry.convert(src, str(tmp_path / "out.jsonl"), on_error="skip", rejects=str(rejects))
    (line,) = _rejects(rejects)
    assert line["_raw"] == '{"id": 2, "vector": [0.1, 0.2'
    good = json.dumps({"id": 9, "vector": [0.5] * 8}) + "\n"
    rejects.write_text(good + rejects.read_text())
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(rejects), str(tmp_path / "again.parquet"), from_format="jsonl")
    assert str(info.value) == (f"{rejects}, line 2: rejected line still holds the unparseable "
                               "original under _raw (replace the line with the corrected point)")
    rejects.write_text(good + json.dumps({"id": 2, "vector": [0.1] * 8}) + "\n")
    assert vecferry.convert(str(rejects), str(tmp_path / "fixed.parquet"))["written"] == 2


def test_read_equals_written_plus_rejected_with_many_bad_lines(samples, tmp_path):
    src = tmp_path / "mixed.jsonl"
    parts = [(samples / "bad" / n).read_text() for n in sorted(JSONL_BAD)
             if n.endswith(".jsonl") and n not in ("empty.jsonl", "truncated.jsonl")]
    src.write_text("".join(p if p.endswith("\n") else p + "\n" for p in parts))
    rejects = tmp_path / "rej.jsonl"
    report = vecferry.convert(str(src), str(tmp_path / "out.jsonl"), on_error="skip",
                              rejects=str(rejects), batch_size=4)
    lines = len(src.read_text().splitlines())
    assert report["read"] == lines == report["written"] + report["rejected"]
    assert report["rejected"] == len(_rejects(rejects)) == 6
    assert report["written"] == len(read_points(str(tmp_path / "out.jsonl"))[1])


def test_a_clean_run_removes_the_rejects_of_an_earlier_run(samples, tmp_path):
    bad = tmp_path / "points.jsonl"
    shutil.copy(samples / "bad" / "wrong_dim.jsonl", bad)
    out = tmp_path / "out.parquet"
    rejects = tmp_path / "out.parquet.rejects.jsonl"  # the default name
    report = vecferry.convert(str(bad), str(out), on_error="skip")
    assert report["rejects_file"] == str(rejects) and len(_rejects(rejects)) == 1
    # the user fixes the input; the next run rejects nothing and leaves no stale rejects file
    lines = [json.loads(x) for x in bad.read_text().splitlines()]
    for point in lines:
        point["vector"] = (point["vector"] + [0.5] * 8)[:8]
    bad.write_text("".join(json.dumps(p) + "\n" for p in lines))
    report = vecferry.convert(str(bad), str(out), on_error="skip", overwrite=True)
    assert (report["rejected"], report["rejects_file"]) == (0, None)
    assert not rejects.exists()


def test_a_failed_run_keeps_the_rejects_of_the_output_it_left(samples, tmp_path):
    src = str(samples / "bad" / "wrong_dim.jsonl")
    out = tmp_path / "out.parquet"
    vecferry.convert(src, str(out), on_error="skip")
    rejects = tmp_path / "out.parquet.rejects.jsonl"
    before = rejects.read_text()
    with pytest.raises(RecordError):
        vecferry.convert(src, str(out), overwrite=True)  # fails at the bad line
    assert rejects.read_text() == before and out.exists()


@pytest.mark.parametrize("role", ["input", "output"])
def test_rejects_file_cannot_be_the_input_or_output(samples, tmp_path, role):
    src = tmp_path / "points.jsonl"
    shutil.copy(samples / "bad" / "wrong_dim.jsonl", src)
    out = tmp_path / "out.jsonl"
    named = src if role == "input" else out
    with pytest.raises(UsageError) as info:
        vecferry.convert(str(src), str(out), on_error="skip", rejects=str(named))
    assert str(info.value) == (f"--rejects names the {role} ({named}) "
                               "(give the rejects file a name of its own)")
    assert src.read_bytes() == (samples / "bad" / "wrong_dim.jsonl").read_bytes()


BOM = b"\xef\xbb\xbf"  # the byte order mark Windows tools put at the start of text files


@pytest.mark.parametrize("workers", [1, 2])
def test_jsonl_starting_with_a_byte_order_mark_reads(tmp_path, workers):
    lines = [json.dumps({"id": i, "vector": [i / 8, 0.5], "payload": {"n": i}}) for i in range(400)]
    src = tmp_path / "bom.jsonl"
    src.write_bytes(BOM + "\r\n".join(lines).encode() + b"\r\n")
    out = tmp_path / "out" if workers > 1 else tmp_path / "out.parquet"
    report = vecferry.convert(str(src), str(out) + ("/" if workers > 1 else ""),
                              to_format="parquet", workers=workers, partition_size=4096)
    if workers > 1:
        assert report["partitions"] > 1
    _, points = read_points(str(out))
    assert [(p["id"], p["payload"]) for p in points] == [(i, {"n": i}) for i in range(400)]


def test_payload_sidecars_with_a_byte_order_mark_read(samples, tmp_path):
    d = tmp_path / "pv"
    shutil.copytree(samples / "per_vector", d)
    side = sorted(d.glob("*.json"))[0]
    side.write_bytes(BOM + side.read_bytes())
    rows = tmp_path / "payloads.jsonl"
    rows.write_bytes(BOM + (samples / "payloads.jsonl").read_bytes())
    ids = str(samples / "ids.npy")
    for src, orig, opts, orig_opts in (
            (d, samples / "per_vector", {}, {}),
            (samples / "vectors.npy", samples / "vectors.npy", {"ids": ids, "payloads": str(rows)},
             {"ids": ids, "payloads": str(samples / "payloads.jsonl")})):
        out, expected = tmp_path / f"{src.name}.jsonl", tmp_path / f"{src.name}.orig.jsonl"
        vecferry.convert(str(src), str(out), reader_options=opts)
        vecferry.convert(str(orig), str(expected), reader_options=orig_opts)
        got, want = ([(p["id"], p["payload"]) for p in read_points(str(f))[1]]
                     for f in (out, expected))
        assert got == want and any(payload for _, payload in got)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_a_line_is_named(tmp_path, constant):
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": 1, "vector": [0.1, 0.2]}\n'
                   f'{{"id": 2, "vector": [0.1, 0.2], "payload": {{"score": {constant}}}}}\n')
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "out.parquet"))
    assert str(info.value) == (
        f"{src}, line 2, id 2: line holds {constant}, which JSON cannot express (write null or a "
        "number instead; Python's json.dumps writes NaN and Infinity unless given "
        "allow_nan=False)")


def test_duplicate_ids_are_kept_and_reported(samples, tmp_path):
    report = vecferry.convert(str(samples / "bad" / "duplicate_ids.jsonl"),
                              str(tmp_path / "out.parquet"))
    assert report["written"] == 6
    assert report["duplicate_ids"] == {"count": 1, "examples": [2]}
    assert report["warnings"] == ["1 id(s) occur more than once (2); every record was kept, but "
                                  "a Qdrant target keeps only the last point of each id"]
    _, points = read_points(str(tmp_path / "out.parquet"))
    assert [p["id"] for p in points] == [0, 1, 2, 3, 4, 2]


def test_nan_is_refused_by_jsonl_and_kept_by_parquet(samples, tmp_path):
    src = str(samples / "bad" / "nan_vector.npy")
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, out, batch_size=1)
    # named where it can be fixed: the source's row, not the output that refused it
    assert str(info.value) == (
        f"{src}, row 2, id 2: vector holds NaN or infinity, which JSON cannot hold (fix the source "
        "vector, or pass --on-error skip to write the rest and keep this point in the rejects "
        "file)")
    assert os.listdir(tmp_path) == []

    vecferry.convert(src, str(tmp_path / "out.parquet"))
    _, points = read_points(str(tmp_path / "out.parquet"))
    got = np.stack([p["vector"] for p in points])
    assert got.view(np.uint32).tolist() == np.load(src).view(np.uint32).tolist()
    assert np.isnan(got[2, 5])

    report = vecferry.convert(src, out, on_error="skip", rejects=str(tmp_path / "r.jsonl"))
    assert (report["read"], report["written"], report["rejected"]) == (6, 5, 1)
    (reject,) = _rejects(tmp_path / "r.jsonl")
    # kept as NaN (the rejects line says NaN, not null), so a re-run unfixed names it
    assert reject["id"] == 2 and math.isnan(reject["vector"][5])


def test_no_partial_output_after_a_failure_mid_write(tmp_path, monkeypatch):
    mat = np.ones((37, 8), dtype=np.float32)
    mat[30, 0] = np.inf
    np.save(tmp_path / "in.npy", mat)
    spill = tmp_path / "systmp"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    for target in ("out.jsonl", "out.jsonl.gz"):
        with pytest.raises(RecordError, match="id 30: vector holds NaN or infinity"):
            vecferry.convert(str(tmp_path / "in.npy"), str(tmp_path / target), batch_size=5)
    assert sorted(os.listdir(tmp_path)) == ["in.npy", "systmp"]
    assert os.listdir(spill) == []  # the duplicate-id ledger's spill is gone too


def test_output_exists(samples, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(OutputExistsError) as info:
        vecferry.convert(str(samples / "points_rich.jsonl"), str(out))
    assert str(info.value) == (f"{out}: output exists (pass --overwrite to replace it, or "
                               "choose another output)")
    assert info.value.exit_code == 2
    assert out.read_text() == "keep me\n"
    assert leftovers(tmp_path) == []
    report = vecferry.convert(str(samples / "points_rich.jsonl"), str(out), overwrite=True)
    assert report["written"] == 40


def test_output_directory_missing(samples, tmp_path):
    out = tmp_path / "nope" / "out.parquet"
    with pytest.raises(UsageError) as info:
        vecferry.convert(str(samples / "points_rich.jsonl"), str(out))
    assert str(info.value) == (f"{tmp_path / 'nope'}: output directory does not exist (create it "
                               "first)")


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.parquet", "missing.npy"])
def test_missing_file(tmp_path, name):
    path = str(tmp_path / name)
    with pytest.raises(InputError) as info:
        vecferry.open_reader(path)
    assert str(info.value) == f"{path}: no such file or directory (check the path)"


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(tmp_path / "dir.jsonl"))
    assert str(info.value) == f"{tmp_path / 'dir.jsonl'}: is a directory, not a JSONL file"


def test_ids_count_mismatch(samples):
    ids = str(samples / "bad" / "ids_too_few.npy")
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(samples / "bad" / "nan_vector.npy"), ids=ids)
    assert str(info.value) == (f"{ids}: ids file has 5 ids but the vectors have 6 rows (ids are "
                               "matched to vectors by row)")


def test_payload_count_mismatch(samples, tmp_path):
    payloads = tmp_path / "p.jsonl"
    payloads.write_text('{"a": 1}\n' * 5)
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(samples / "bad" / "nan_vector.npy"), payloads=str(payloads))
    assert str(info.value) == (f"{payloads}: payloads file has 5 rows but the vectors have 6 "
                               "(payloads are matched to vectors by row: one per vector)")


def test_payload_sidecar_line_not_an_object(samples, tmp_path):
    payloads = tmp_path / "p.jsonl"
    payloads.write_text('{"a": 1}\n{"a": 2}\n[1, 2]\n{}\nnull\n{}\n')
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(samples / "bad" / "nan_vector.npy"), str(tmp_path / "o.parquet"),
                         reader_options={"payloads": str(payloads)})
    assert str(info.value) == (f"{payloads}, line 3, row 2, id 2: payload must be a JSON object, "
                               "not list (each line must be a JSON object or null)")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.parquet").exists()


def test_negative_id_in_ids_file(samples, tmp_path):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([0, 1, -1, 3, 4, 5]))
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(samples / "bad" / "nan_vector.npy"), ids=str(ids))
    assert str(info.value) == (f"{ids}, row 2: id -1 is negative (ids must be unsigned "
                               "integers, UUIDs or strings)")


def test_jsonl_id_past_64_bits_is_named_as_an_integer(tmp_path):
    src = tmp_path / "big.jsonl"
    src.write_text('{"id": 100000000000000000000, "vector": [1.0, 2.0]}\n')
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "o.parquet"))
    assert str(info.value) == (
        f"{src}, line 1, id 100000000000000000000: id 100000000000000000000 is outside "
        "0..2^64-1; integer ids "
        "must be unsigned 64-bit (as in Qdrant and FAISS); write it as a string id to keep it")


def test_ids_of_unsupported_dtype(samples, tmp_path):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(6, dtype=np.float64))
    with pytest.raises(UnsupportedError) as info:
        vecferry.open_reader(str(samples / "bad" / "nan_vector.npy"), ids=str(ids))
    assert str(info.value) == (f"{ids}: ids of dtype float64 are not supported (ids must be "
                               "unsigned integers or unicode strings)")


def test_npy_shapes_and_pickles(tmp_path):
    one_d = tmp_path / "one.npy"
    np.save(one_d, np.ones(8, dtype=np.float32))
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(one_d))
    assert str(info.value) == (f"{one_d}: expected a 2-D matrix (points x dimensions), found "
                               "shape (8,) (reshape to (N, D) or use a directory of per-vector "
                               "files)")
    empty = tmp_path / "empty.npy"
    np.save(empty, np.ones((0, 8), dtype=np.float32))
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(empty))
    assert str(info.value) == f"{empty}: input is empty: the matrix has no rows"
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(UnsupportedError) as info:
        vecferry.open_reader(str(pickled))
    assert str(info.value) == (f"{pickled}: array holds Python objects (pickled) (save numeric "
                               "arrays; vecferry never unpickles)")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    with pytest.raises(InputError, match=r"not a valid \.npy file: "):
        vecferry.open_reader(str(garbage))


def test_npz_without_vectors(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, other=np.ones((2, 2)))
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(path))
    assert str(info.value) == (f"{path}: archive has no 'vectors' array (arrays: ['other']) "
                               "(save it as np.savez(f, vectors=..., ids=...))")


def test_per_vector_file_of_another_size(samples, tmp_path):
    d = tmp_path / "per"
    shutil.copytree(samples / "per_vector", d)
    np.save(d / "doc-005.npy", np.ones(3, dtype=np.float32))
    with pytest.raises(InputError) as info:
        vecferry.convert(str(d), str(tmp_path / "o.parquet"), batch_size=4)
    assert str(info.value) == (
        f"{d / 'doc-005.npy'}, row 5, id 'doc-005': vector has shape (3,) and dtype float32, "
        "but the first file has 64 values of float32 (every file must hold one vector of the "
        "same size and dtype)")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.parquet").exists()


def test_parquet_that_is_not_parquet(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1 but not really")
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(path))
    assert str(info.value).startswith(f"{path}: not a readable Parquet file: ")
    assert str(info.value).endswith("(the file may be truncated or not Parquet)")


def test_parquet_without_id_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"key": [1], "vector": pa.array([[1.0]], pa.list_(pa.float32(), 1))}),
                   path)
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(path))
    assert str(info.value) == (f"{path}: no 'id' column (columns: key, vector) (the file needs "
                               "an 'id' column)")


def test_truncated_gzip(tmp_path):
    text = b"".join(b'{"id": %d, "vector": [1.0, 2.0]}\n' % i for i in range(3000))
    data = gzip.compress(text)
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        vecferry.convert(str(path), str(tmp_path / "o.parquet"))
    assert "compressed stream is corrupt or truncated (" in str(info.value)
    assert "lines read before the error" in str(info.value)
    assert str(info.value).endswith("(re-create or re-download the file)")
    assert sorted(os.listdir(tmp_path)) == ["t.jsonl.gz"]


def test_bad_manifest_sidecar(samples, tmp_path):
    src = tmp_path / "p.jsonl"
    shutil.copy(samples / "bad" / "duplicate_ids.jsonl", src)
    side = tmp_path / "p.jsonl.manifest.json"
    side.write_text('{"vectors": [{"name": "", "kind": "dense", "size": 0}]}')
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(src))
    assert str(info.value) == (
        f"{side}: manifest sidecar is not valid: vector '': a dense vector needs a positive "
        "size (fix or delete it; without it the schema is inferred)")


def test_unknown_reader_option(samples):
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(samples / "points_rich.jsonl"), bogus=1)
    assert str(info.value) == "format 'jsonl' does not take option(s): bogus"


def test_unknown_options_are_named_by_their_flags_on_the_command_line(samples, tmp_path):
    from click.testing import CliRunner

    from vecferry.cli import main

    args = ["convert", str(samples / "points_rich.jsonl"), str(tmp_path / "out.jsonl"),
            "--collection-config", "{}", "--shard-key", "7"]
    message = "format 'jsonl' does not take --collection-config, --shard-key"
    result = CliRunner().invoke(main, args)
    assert (result.exit_code, result.output) == (2, f"error: {message}\n")
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["message"] == message
    assert not list(tmp_path.iterdir())


def test_unknown_id_kind(samples):
    with pytest.raises(SchemaError) as info:
        vecferry.open_reader(str(samples / "points_rich.jsonl"), id_kind="float")
    assert str(info.value) == "unknown id kind 'float' (one of int, uuid, string, mixed)"


def _late_string_id(tmp_path):
    path = tmp_path / "late.jsonl"
    lines = [json.dumps({"id": i, "vector": [1.0, 2.0]}) for i in range(1100)]
    lines[1050] = json.dumps({"id": "abc", "vector": [1.0, 2.0]})
    path.write_text("\n".join(lines) + "\n")
    return path


def test_id_kind_changing_after_the_peek_window(tmp_path):
    path = _late_string_id(tmp_path)
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(path), str(tmp_path / "o.parquet"))
    assert str(info.value) == (
        f"{path}, line 1051, id 'abc': id 'abc' is a string but the ids before it are integers "
        "(pass --id-kind mixed to read integer and string ids together)")
    assert sorted(os.listdir(tmp_path)) == ["late.jsonl"]

    report = vecferry.convert(str(path), str(tmp_path / "o.parquet"),
                              reader_options={"id_kind": "mixed"})
    assert report["written"] == 1100 and report["id_kind"] == "mixed"
    _, points = read_points(str(tmp_path / "o.parquet"))
    ids = [p["id"] for p in points]
    assert ids[1050] == "abc" and ids[:3] == [0, 1, 2] and type(ids[1099]) is int


def test_vector_first_seen_after_the_peek_window(tmp_path):
    """Without a manifest the first points fix the schema; a vector seen later names the fix."""
    path = tmp_path / "late.jsonl"
    lines = [json.dumps({"id": i, "vector": {}}) for i in range(1100)]
    lines[1050] = json.dumps({"id": 1050, "vector": [1.0, 2.0]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(path), str(tmp_path / "o.jsonl"))
    assert str(info.value) == (
        f"{path}, line 1051, id 1050: vector '' is not in the schema (vectors: none) (drop it, "
        "or declare every vector in a manifest sidecar: without one the schema comes from the "
        "first points read)")
    assert sorted(os.listdir(tmp_path)) == ["late.jsonl"]


SPECS = [VectorSpec("d", "dense", 2), VectorSpec("s", "sparse"), VectorSpec("m", "multi", 2),
         VectorSpec("u", "dense", 2, "uint8")]
POINTS = [
    (["a", "b"], "a point must be a JSON object, not list"),
    ({"vector": {"d": [1, 2]}}, "point has no 'id' (every point needs an id)"),
    ({"id": True, "vector": {"d": [1, 2]}},
     "id True: id True is a boolean; ids are unsigned integers or strings"),
    ({"id": 1.5, "vector": {"d": [1, 2]}},
     "id 1.5: id 1.5 is a float; ids are integers or strings"),
    ({"id": "", "vector": {"d": [1, 2]}}, "id '': id is an empty string"),
    ({"id": 1, "vector": {"zz": [1, 2]}},
     "id 1: vector 'zz' is not in the schema (vectors: ['d', 's', 'm', 'u']) (drop it, or "
     "declare every vector in a manifest sidecar: without one the schema comes from the first "
     "points read)"),
    # named vectors are each optional, but only "vector": {} says a point has none
    ({"id": 1}, 'id 1: point has no vector (give the point its vectors, or "vector": {} for a '
     "point that has none; named vectors are each optional)"),
    ({"id": 1, "vector": None}, 'id 1: point has no vector (give the point its vectors, or '
     '"vector": {} for a point that has none; named vectors are each optional)'),
    ({"id": 1, "vector": {"d": "x"}}, "id 1: vector 'd' must be a list of numbers"),
    ({"id": 1, "vector": {"d": [1, "x"]}}, "id 1: vector 'd' holds the string \"x\", which is not "
     "a number (fix the value: vectors hold finite numbers in the range of float32)"),
    # numbers written as strings and booleans are not read as numbers: 0.5 and 1 would be
    # guesses, and a vector holding them is usually a column mix-up
    ({"id": 1, "vector": {"d": [0.25, "0.5"]}}, "id 1: vector 'd' holds the string \"0.5\", "
     "which is not a number (fix the value: vectors hold finite numbers in the range of float32)"),
    ({"id": 1, "vector": {"d": [0.25, True]}}, "id 1: vector 'd' holds true, which is not a number "
     "(fix the value: vectors hold finite numbers in the range of float32)"),
    ({"id": 1, "vector": {"m": [[1, 2], [False, 0.5]]}}, "id 1: vector 'm' holds false, which is "
     "not a number (fix the value: vectors hold finite numbers in the range of float32)"),
    ({"id": 1, "vector": {"u": [1, [2]]}}, "id 1: vector 'u' holds [2], which is not a number "
     "(fix the value: vectors hold finite numbers in the range of uint8)"),
    ({"id": 1, "vector": {"d": [0.25, None]}}, "id 1: vector 'd' holds null, which is not a "
     "number (fix the value: vectors hold finite numbers in the range of float32)"),
    ({"id": 1, "vector": {"m": [[1, 2], [3]]}},
     "id 1: vector 'm' has a sub-vector of 1 dimensions, expected 2"),
    ({"id": 1, "vector": {"m": []}},
     "id 1: vector 'm' must be a non-empty list of vectors (multivector)"),
    ({"id": 1, "vector": {"s": [1, 2]}},
     "id 1: vector 's' must be a sparse vector {'indices': [...], 'values': [...]}"),
    ({"id": 1, "vector": {"s": {"indices": [1, 1], "values": [1, 2]}}},
     "id 1: vector 's': sparse indices repeat"),
    ({"id": 1, "vector": {"s": {"indices": [1], "values": [1, 2]}}},
     "id 1: vector 's': indices and values must be lists of the same length"),
    ({"id": 1, "vector": {"s": {"indices": [-1], "values": [1]}}},
     "id 1: vector 's': sparse indices must be integers in 0..2^32-1"),
    ({"id": 1, "vector": {"s": {"indices": [1], "values": [1e400]}}},
     "id 1: vector 's': sparse values must be finite numbers"),
    ({"id": 1, "vector": {"u": [1, 256]}}, "id 1: vector 'u' holds a value that is not an integer "
     "in 0..255 (fix the value: vectors hold finite numbers in the range of uint8)"),
    ({"id": 1, "vector": {"u": [1, 2.5]}}, "id 1: vector 'u' holds a value that is not an integer "
     "in 0..255 (fix the value: vectors hold finite numbers in the range of uint8)"),
]


@pytest.mark.parametrize(("point", "message"), POINTS)
def test_bad_point_shapes(point, message):
    builder = BatchBuilder(Manifest(SPECS), Context(), "src.jsonl")
    with pytest.raises(RecordError) as info:
        builder.add(point, line=9)
        builder.flush()
    sep = ", " if message.startswith("id ") else ": "
    assert str(info.value) == f"src.jsonl, line 9{sep}{message}"
    assert info.value.raw == point


def test_vector_values_that_are_numbers_are_taken_in_any_json_form():
    # integers (even past 64 bits), exact 0 and 1 and negative zero are numbers; the Python
    # check that looks for booleans must not refuse them
    spec = VectorSpec("d", "dense", 3)
    # the second set goes row by row: pyarrow refuses the integer past 64 bits
    for rows in ([[0, 1, -0.0], [7, 1, 0.5], [1.0, 0.0, 3]],
                 [[0, 1, -0.0], [2**70, 1, 0.5], [1.0, 0.0, 3]]):
        builder = BatchBuilder(Manifest([spec]), Context(), "src.jsonl")
        for i, row in enumerate(rows):
            builder.add({"id": i, "vector": {"d": row}}, line=i + 1)
        got = builder.flush().column(spec.column).to_pylist()
        assert got == [[float(np.float32(x)) for x in row] for row in rows]
        assert math.copysign(1.0, got[0][2]) == -1.0


def test_a_new_run_replaces_the_rejects_of_an_earlier_one(samples, tmp_path):
    rejects = tmp_path / "r.jsonl"
    for _ in range(2):
        report = vecferry.convert(str(samples / "bad" / "not_json.jsonl"),
                                  str(tmp_path / "o.parquet"), overwrite=True,
                                  on_error="skip", rejects=str(rejects))
        assert report["rejected"] == 1
    assert len(rejects.read_text().splitlines()) == 1


def test_a_point_without_the_unnamed_vector_is_refused():
    builder = BatchBuilder(Manifest([VectorSpec("", "dense", 2)]), Context(), "src.jsonl")
    with pytest.raises(RecordError) as info:
        builder.add({"id": 4, "vector": {}}, line=2)
    assert str(info.value) == ("src.jsonl, line 2, id 4: point has no vector "
                               "(every point needs the unnamed vector)")


def test_a_limit_reads_no_record_past_it(tmp_path):
    # a bad record after the limit failed the run, or was counted as rejected
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": 1, "vector": [0.1, 0.2]}\n{"id": 2, "vector": [0.3, 0.4]}\n'
                   '{"id": 3, "vector": [0.1]}\n')
    for limit, batch in ((2, 1), (2, 2048), (0, 2048)):
        report = vecferry.convert(str(src), str(tmp_path / f"o{limit}{batch}.parquet"),
                                  limit=limit, batch_size=batch)
        assert (report["read"], report["written"], report["rejected"]) == (limit, limit, 0)
    report = vecferry.convert(str(src), str(tmp_path / "s.parquet"), limit=1, on_error="skip",
                              rejects=str(tmp_path / "r.jsonl"))
    assert (report["read"], report["written"], report["rejected"]) == (1, 1, 0)
    assert not (tmp_path / "r.jsonl").exists()
    # a bad record before the limit is still one
    with pytest.raises(RecordError, match="line 3, id 3: vector has 1 dimensions"):
        vecferry.convert(str(src), str(tmp_path / "o3.parquet"), limit=3)


def test_a_compressed_rejects_name_is_refused(tmp_path):
    # it was written as plain text under a .gz name, which then did not read back
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": 1, "vector": [0.1, 0.2]}\n')
    with pytest.raises(UsageError) as info:
        vecferry.convert(str(src), str(tmp_path / "o.parquet"), on_error="skip",
                         rejects=str(tmp_path / "r.jsonl.gz"))
    assert str(info.value) == (f"{tmp_path / 'r.jsonl.gz'}: the rejects file is plain JSONL, not "
                               "compressed (name it .jsonl, and compress it afterwards if need "
                               "be)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_a_dash_is_not_taken_for_a_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": 1, "vector": [0.1, 0.2]}\n')
    with pytest.raises(UsageError) as info:
        vecferry.convert(str(src), "-", to_format="jsonl")
    assert str(info.value) == ("'-' (stdout) is not a vecferry output: it needs a file, a "
                               "directory or a collection (name a file; a JSONL file can be "
                               "piped afterwards)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]
    with pytest.raises(UsageError, match=r"^'-' \(stdin\) is not a vecferry input"):
        vecferry.convert("-", str(tmp_path / "o.parquet"), from_format="jsonl")
