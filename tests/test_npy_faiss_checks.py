"""numpy and FAISS inputs that used to pass wrong or fail badly:

* a finite float64 value beyond float32's range is one bad point naming the source file, its
  row and id (it used to become infinity, with numpy's overflow warning on stderr);
* a per-vector file named by a number past 2^64-1 is one bad point (it used to crash);
* the numpy writer refuses vector names that cannot name its files, before writing, and a
  failed write leaves no temporary directory;
* uint8 vectors come back as uint8 from a FAISS index vecferry wrote;
* a ``--payloads`` entry without a vector is blamed on the payloads file, at its line or row;
* FAISS hints name the command-line flag and the Python keyword alike.
"""

from __future__ import annotations

import errno
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from roundtrip import leftovers, read_points
from vecferry.converters import npy
from vecferry.converters.base import Context
from vecferry.errors import (
    InputError,
    RecordError,
    TargetError,
    UnsupportedError,
    VecferryWarning,
)
from vecferry.stream import Manifest, VectorSpec

faiss = pytest.importorskip("faiss")

from vecferry.converters.faiss_index import FaissReader, FaissWriter  # noqa: E402

OVERFLOW = ("outside float32 range (float64 vectors are narrowed to float32, where it would "
            "become infinity)")
OVERFLOW_HINT = ("vectors are stored as float32: fix the value, or scale the vectors to "
                 "magnitudes below about 3.4e38")
NAME_HINT = ("the numpy layout keeps each named vector in a file vectors.<name>.npy; write "
             "Parquet or JSONL instead, which keep any vector name")


def _rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _fail(src: str, dst: Path, cls: type[Exception] = RecordError, **options: Any) -> str:
    """Convert failing on the first bad point, with every warning an error (numpy's included,
    which must not reach stderr): the error's text; no output, no temporary left."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(cls) as info:
            vecferry.convert(src, str(dst), batch_size=2, **options)
    assert type(info.value) is cls
    assert not dst.exists() and leftovers(dst.parent) == []
    return str(info.value)


def _skip(src: str, dst: Path, **options: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rejects = dst.parent / "rejects.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the run's own warnings (float64 narrowed) are in the report; any other is an error
        warnings.simplefilter("ignore", VecferryWarning)
        report = vecferry.convert(src, str(dst), batch_size=2, on_error="skip",
                                  rejects=str(rejects), **options)
    assert report["read"] == report["written"] + report["rejected"]
    return report, _rejects(rejects) if rejects.exists() else []


# ------------------------------------------------------------- float64 beyond float32's range


def _big(tmp_path: Path, dtype: str = "<f8") -> str:
    path = tmp_path / "b.npy"
    np.save(path, np.array([[1.0, 2.0], [1e39, 1.0], [0.1, 4.0]], dtype=dtype))
    return str(path)


@pytest.mark.parametrize("out", ["o.parquet", "o.jsonl", "o.faiss"])
def test_a_float64_value_too_big_for_float32_names_the_source_row(tmp_path, out):
    src = _big(tmp_path)
    text = _fail(src, tmp_path / out)
    # the source file and its row, not the output and a NaN it never held
    assert text == f"{src}, row 1, id 1: vector holds 1e+39, {OVERFLOW} ({OVERFLOW_HINT})"


def test_a_float64_value_too_big_for_float32_is_a_rejected_point(tmp_path):
    src = _big(tmp_path)
    report, rejects = _skip(src, tmp_path / "o.parquet")
    assert (report["written"], report["rejected"]) == (2, 1)
    assert rejects == [{"id": 1, "vector": [1e39, 1.0], "payload": None, "_vecferry_reject": {
        "reason": f"vector holds 1e+39, {OVERFLOW}", "source": src, "row": 1, "point_id": 1}}]
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert [r["id"] for r in rows] == [0, 2]
    assert all(np.isfinite(r["vector"]).all() for r in rows)
    # the rejected value is not counted as one narrowing changed; 0.1 is
    assert "1 float64 value(s) changed when narrowed to float32" in report["warnings"]


def test_big_endian_float64_is_narrowed_and_checked_too(tmp_path):
    src = _big(tmp_path, ">f8")
    assert _fail(src, tmp_path / "o.jsonl") == (
        f"{src}, row 1, id 1: vector holds 1e+39, {OVERFLOW} ({OVERFLOW_HINT})")


def test_a_float64_nan_is_not_counted_as_changed_by_narrowing(tmp_path):
    src = tmp_path / "n.npy"
    np.save(src, np.array([[np.nan, 0.5], [0.1, 0.25]]))
    report = vecferry.convert(str(src), str(tmp_path / "o.parquet"))
    assert "1 float64 value(s) changed when narrowed to float32" in report["warnings"]


def test_a_float64_value_too_big_in_an_npz_archive(tmp_path):
    src = tmp_path / "v.npz"
    np.savez(src, vectors=np.array([[1.0, 2.0], [3.0, -4e40]]),
             ids=np.array([7, 8], dtype=np.uint64))
    assert _fail(str(src), tmp_path / "o.jsonl") == (
        f"{src}, row 1, id 8: vector holds -4e+40, {OVERFLOW} ({OVERFLOW_HINT})")


def test_a_float64_value_too_big_in_a_shard_names_the_shard_and_keeps_other_vectors(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    np.save(d / "img_0.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.save(d / "img_1.npy", np.array([[5.0, 6.0], [1e300, 8.0]]))
    for n in (0, 1):
        np.save(d / f"txt_{n}.npy", np.full((2, 3), n, dtype=np.float32))
    shard = str(d / "img_1.npy")
    assert _fail(str(d), tmp_path / "o.jsonl") == (
        f"{shard}, row 1, id 3: vector 'img' holds 1e+300, {OVERFLOW} ({OVERFLOW_HINT})")
    report, rejects = _skip(str(d), tmp_path / "o.jsonl")
    assert (report["written"], report["rejected"]) == (3, 1)
    # the float64 values as the shard has them, and the other vector of the point
    assert rejects == [{"id": 3, "vector": {"img": [1e300, 8.0], "txt": [1.0, 1.0, 1.0]},
                        "payload": None, "_vecferry_reject": {
                            "reason": f"vector 'img' holds 1e+300, {OVERFLOW}",
                            "source": shard, "row": 1, "point_id": 3}}]


def test_a_float64_value_too_big_in_a_per_vector_file(tmp_path):
    d = tmp_path / "vecs"
    d.mkdir()
    np.save(d / "1.npy", np.array([1.0, 2.0]))
    np.save(d / "2.npy", np.array([2e38, 5e38]))
    (d / "2.json").write_text('{"k": "v"}')
    assert _fail(str(d), tmp_path / "o.jsonl", from_format="npy") == (
        f"{d / '2.npy'}, row 1, id 2: vector holds 5e+38, {OVERFLOW} ({OVERFLOW_HINT})")
    report, rejects = _skip(str(d), tmp_path / "o.jsonl", from_format="npy")
    assert (report["written"], report["rejected"]) == (1, 1)
    assert rejects == [{"id": 2, "vector": [2e38, 5e38], "payload": {"k": "v"},
                        "_vecferry_reject": {"reason": f"vector holds 5e+38, {OVERFLOW}",
                                             "source": str(d / "2.npy"), "row": 1,
                                             "point_id": 2}}]


# ----------------------------------------------------------- per-vector names past 2^64 - 1


def test_a_per_vector_file_named_past_2_64_is_a_bad_point(tmp_path):
    d = tmp_path / "vecs"
    d.mkdir()
    np.save(d / "18446744073709551616.npy", np.array([1.0, 2.0], dtype=np.float32))
    np.save(d / "5.npy", np.array([3.0, 4.0], dtype=np.float32))
    big = d / "18446744073709551616.npy"
    reason = ("id 18446744073709551616 (the file name) is outside 0..2^64-1; integer ids must "
              "be unsigned 64-bit (as in Qdrant and FAISS)")
    assert _fail(str(d), tmp_path / "o.jsonl", from_format="npy") == (
        f"{big}, row 1, id 18446744073709551616: {reason} (rename the file to a number below "
        "2^64; file names that are all numbers are read as integer ids, names that are not "
        "make every id of the directory a string)")
    report, rejects = _skip(str(d), tmp_path / "o.jsonl", from_format="npy")
    assert (report["written"], report["rejected"]) == (1, 1)
    assert rejects == [{"id": 2**64, "vector": [1.0, 2.0], "payload": None, "_vecferry_reject": {
        "reason": reason, "source": str(big), "row": 1, "point_id": 2**64}}]
    _, points = read_points(str(tmp_path / "o.jsonl"))
    assert [p["id"] for p in points] == [5]  # still an integer id


def test_the_largest_uint64_file_name_is_an_id(tmp_path):
    d = tmp_path / "vecs"
    d.mkdir()
    np.save(d / f"{2**64 - 1}.npy", np.array([1.0, 2.0], dtype=np.float32))
    vecferry.convert(str(d), str(tmp_path / "o.jsonl"), from_format="npy")
    assert [p["id"] for p in read_points(str(tmp_path / "o.jsonl"))[1]] == [2**64 - 1]


# ------------------------------------------------------------------- numpy writer's names


def _named(tmp_path: Path, *names: str) -> str:
    src = tmp_path / "n.jsonl"
    src.write_text(json.dumps({"id": 1, "vector": {n: [1.0, 2.0] for n in names}}) + "\n")
    return str(src)


@pytest.mark.parametrize(("names", "message"), [
    (("x/y", "a"), "vector name 'x/y' holds '/', a path separator, so it cannot name a file"),
    (("a\0b",), "vector name 'a\\x00b' holds a NUL character, so it cannot name a file"),
    (("x" * 244,), f"vector name {'x' * 244!r} makes a file name of 256 bytes "
                   "(vectors.<name>.npy), over 255, so it cannot name a file"),
    (("Text", "text"), "vector names 'Text' and 'text' differ only in letter case: where file "
                       "names ignore case (macOS, Windows) their files would be one"),
])
def test_the_numpy_writer_refuses_names_its_files_cannot_have(tmp_path, names, message):
    out = tmp_path / "out"
    text = _fail(_named(tmp_path, *names), out, UnsupportedError, to_format="npy")
    assert text == f"{out}: {message} ({NAME_HINT})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.jsonl"]  # no lock either


def test_a_name_of_dots_is_a_file_name_like_any_other(tmp_path):
    out = tmp_path / "out"
    vecferry.convert(_named(tmp_path, "..", "x" * 243), str(out), to_format="npy")
    assert (out / "vectors....npy").exists() and not (tmp_path / "vectors.npy").exists()
    _, points = read_points(str(out))
    assert sorted(points[0]["vector"]) == ["..", "x" * 243]


def test_a_manifest_naming_a_file_outside_the_layout_is_refused(tmp_path):
    out = tmp_path / "out"
    vecferry.convert(_named(tmp_path, "a", "b"), str(out), to_format="npy")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["vectors"][0]["name"] = "../../a"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError) as info:
        vecferry.convert(str(out), str(tmp_path / "o.jsonl"))
    assert str(info.value) == (
        f"{out / 'manifest.json'}: manifest names vector '../../a', which holds '/', a path "
        "separator (the numpy writer never writes such a name; fix the manifest's vector names)")


def test_a_numpy_write_failing_when_opened_leaves_no_temporary(tmp_path, monkeypatch):
    real = npy._NpyStream

    def full_disk(path: Path, *args: Any) -> Any:
        if path.name == "ids.npy":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args)

    monkeypatch.setattr(npy, "_NpyStream", full_disk)
    out = tmp_path / "out"
    text = _fail(_named(tmp_path, "a"), out, TargetError, to_format="npy")
    assert text == (f"{out}: cannot write: No space left on device (free space there or write "
                    "to another place, then run the conversion again)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.jsonl"]


def test_a_numpy_write_failing_when_closed_leaves_no_temporary(tmp_path, monkeypatch):
    def full_disk(self: Any, d: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(d / "ids.npy"))

    monkeypatch.setattr(npy.NpyWriter, "_write_string_ids", full_disk)
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": "a", "vector": [1.0]}\n')
    out = tmp_path / "out"
    _fail(str(src), out, TargetError, to_format="npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


# ------------------------------------------------------------------------- uint8 via FAISS


def _uint8_index(tmp_path: Path, **writer_options: Any) -> tuple[str, np.ndarray]:
    values = np.array([[0, 255, 3], [4, 5, 6], [7, 8, 9]], dtype=np.uint8)
    np.save(tmp_path / "u.npy", values)
    index = str(tmp_path / "u.faiss")
    vecferry.convert(str(tmp_path / "u.npy"), index, writer_options=writer_options)
    return index, values


def test_uint8_vectors_come_back_from_faiss_as_uint8(tmp_path):
    index, values = _uint8_index(tmp_path, distance="Euclid")
    manifest = json.loads(Path(index + ".manifest.json").read_text())
    assert manifest["vectors"][0]["datatype"] == "uint8"
    reader = FaissReader(index, context=Context())
    assert reader.manifest.vectors[0].datatype == "uint8"
    col = next(reader.batches(10)).column("vector")
    assert col.type == pa.list_(pa.uint8(), 3)
    assert np.array(col.to_pylist(), dtype=np.uint8).tolist() == values.tolist()
    vecferry.convert(index, str(tmp_path / "back"), to_format="npy")
    back = np.load(tmp_path / "back" / "vectors.npy")
    assert back.dtype == np.uint8 and back.tolist() == values.tolist()


def test_an_index_changed_after_its_uint8_manifest_names_the_points(tmp_path):
    index, _ = _uint8_index(tmp_path, distance="Euclid")
    changed = faiss.IndexIDMap2(faiss.IndexFlatL2(3))
    changed.add_with_ids(np.array([[1, 2, 3], [4.5, 5, 6], [7, 8, 300]], dtype=np.float32),
                         np.arange(3, dtype=np.int64))
    faiss.write_index(changed, index)
    hint = ("the index was changed after vecferry wrote it: write it again from its source, or "
            "use --on-error skip to keep such points in the rejects file")
    assert _fail(index, tmp_path / "o.jsonl") == (
        f"{index}, row 1, id 1: vector holds 4.5, not an integer in 0..255, but "
        f"{index}.manifest.json records uint8 vectors ({hint})")
    report, rejects = _skip(index, tmp_path / "o.jsonl")
    assert (report["written"], report["rejected"]) == (1, 2)
    assert [(r["id"], r["vector"], r["_vecferry_reject"]["row"]) for r in rejects] == [
        (1, [4.5, 5.0, 6.0], 1), (2, [7.0, 8.0, 300.0], 2)]
    assert rejects[1]["_vecferry_reject"]["reason"] == (
        f"vector holds 300.0, not an integer in 0..255, but {index}.manifest.json records "
        "uint8 vectors")


def test_uint8_vectors_normalized_for_cosine_read_back_as_float32(tmp_path):
    index, _ = _uint8_index(tmp_path, distance="Cosine")
    context = Context()
    reader = FaissReader(index, context=context)
    assert reader.manifest.vectors[0].datatype == "float32"
    assert context.warnings == [
        f"{index}: vectors read as float32, not as the uint8 {index}.manifest.json records: "
        "3 of them were normalized for the Cosine distance when written"]
    vectors = np.array(next(reader.batches(10)).column("vector").to_pylist())
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


# -------------------------------------------------------- payload entries without a vector


def _idmap(tmp_path: Path) -> str:
    index = faiss.IndexIDMap(faiss.IndexFlatL2(3))
    index.add_with_ids(np.ones((2, 3), dtype=np.float32), np.array([10, 11], dtype=np.int64))
    path = str(tmp_path / "idmap.faiss")
    faiss.write_index(index, path)
    return path


def _payloads(tmp_path: Path, kind: str) -> tuple[str, str]:
    """A payloads file with an entry for id 999, which the index does not hold, and where an
    error names that entry."""
    entries = [(10, {"a": 1}), (999, {"a": 3}), (11, {"a": 2})]
    if kind == "object":
        path = tmp_path / "orphan.json"
        path.write_text(json.dumps({str(i): p for i, p in entries}))
        return str(path), ""
    if kind == "array":
        path = tmp_path / "orphan.json"
        path.write_text(json.dumps([{"id": i, **p} for i, p in entries]))
        return str(path), ", row 1"
    if kind == "jsonl":
        path = tmp_path / "orphan.jsonl"
        path.write_text("".join(json.dumps({"id": i, **p}) + "\n" for i, p in entries))
        return str(path), ", line 2"
    path = tmp_path / "orphan.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": i, **p} for i, p in entries]), path)
    return str(path), ", row 1"


@pytest.mark.parametrize("kind", ["object", "array", "jsonl", "parquet"])
def test_a_payload_without_a_vector_is_blamed_on_the_payloads_file(tmp_path, kind):
    index = _idmap(tmp_path)
    payloads, where = _payloads(tmp_path, kind)
    reason = "payload for id 999 has no vector in the FAISS index"
    options = {"reader_options": {"payloads": payloads}}
    text = _fail(index, tmp_path / "o.parquet", **options)
    assert text == (f"{payloads}{where}, id 999: {reason} (check the payloads belong to this "
                    "index; use --on-error skip to write such entries to the rejects file and "
                    "carry on)")
    report, rejects = _skip(index, tmp_path / "o.parquet", **options)
    assert report["written"] == 2
    orphan = [r for r in rejects if r["id"] == 999]
    note = {"reason": reason, "source": payloads, "point_id": 999}
    if where:
        key, number = where.removeprefix(", ").split()
        note[key] = int(number)
    assert orphan == [{"id": 999, "payload": {"a": 3}, "_vecferry_reject": note}]


# ------------------------------------------------------------------------------ FAISS hints


def test_faiss_hints_name_the_flag_and_the_keyword(tmp_path):
    out = str(tmp_path / "o.faiss")
    two = Manifest(vectors=[VectorSpec(name="a", size=2), VectorSpec(name="b", size=2)])
    with pytest.raises(UnsupportedError) as info:
        FaissWriter(out, two.schema(), context=Context())
    assert info.value.hint == ("choose one with --vector NAME (in Python: "
                               'writer_options={"vector": NAME})')
    mixed = Manifest(vectors=[VectorSpec(name="a", size=2), VectorSpec(name="s", kind="sparse")])
    with pytest.raises(UnsupportedError) as info:
        FaissWriter(out, mixed.schema(), context=Context())
    assert info.value.hint == ("choose one dense vector with --vector NAME (in Python: "
                               'writer_options={"vector": NAME})')
    context = Context()
    FaissWriter(out, Manifest(vectors=[VectorSpec(name="", size=2)]).schema(),
                context=context).abort()
    assert context.warnings == [f"{out}: the stream has no distance; the index uses L2 "
                                "(Euclid); pass --distance NAME (in Python: "
                                'writer_options={"distance": NAME}) to choose']


def test_payloads_without_a_vector_are_found_at_their_lines_past_bad_ones(tmp_path):
    index = _idmap(tmp_path)
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 998, "a": 0}\nnot json\n{"id": 10, "a": 1}\n{"id": 10, "a": 9}\n'
                    '{"x": 1}\n{"id": 999, "a": 3}\n{"id": 998, "a": 8}\n{"id": "s"}\n')
    _, rejects = _skip(index, tmp_path / "o.parquet", reader_options={"payloads": str(path)})
    unmatched = [(r["id"], r["_vecferry_reject"].get("line")) for r in rejects
                 if r["_vecferry_reject"]["reason"].endswith("has no vector in the FAISS index")]
    # the first entry of id 998 is the one kept, so the one named
    assert unmatched == [(998, 1), (999, 6), ("s", 8)]
    assert {r["_vecferry_reject"]["source"] for r in rejects} == {str(path)}


def test_a_rejected_shard_metadata_row_keeps_its_timestamps_exactly(tmp_path: Path) -> None:
    """The rejects line of a metadata row holding NaN is read as the payload is, so a
    timestamp in nanoseconds (or past year 9999) neither crashes it nor loses digits."""
    d = tmp_path / "sh"
    d.mkdir()
    np.save(d / "emb_0.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    stamps = pa.array([1577836800123456789, 1577836800000000001, 1577836800000000002],
                      pa.timestamp("ns"))
    far = pa.array([253402300800000000] * 3, pa.timestamp("us"))  # 10000-01-01
    pq.write_table(pa.table({"t": stamps, "far": far, "score": [1.0, float("nan"), 3.0]}),
                   d / "metadata_0.parquet")
    out, rejects = tmp_path / "o.jsonl", tmp_path / "bad.jsonl"
    report = vecferry.convert(str(d), str(out), from_format="npy", on_error="skip",
                              rejects=str(rejects))
    assert report["written"] == 2
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [p["payload"]["t"] for p in lines] == ["2020-01-01T00:00:00.123456789",
                                                  "2020-01-01T00:00:00.000000002"]
    (bad,) = [json.loads(x) for x in rejects.read_text().splitlines()]  # json reads NaN
    assert bad["id"] == 1 and bad["payload"]["t"] == "2020-01-01T00:00:00.000000001"
    assert bad["payload"]["far"] == lines[0]["payload"]["far"] == "+10000-01-01T00:00:00"
    assert np.isnan(bad["payload"]["score"])


def test_an_index_cut_anywhere_in_its_first_bytes_is_an_input_error(tmp_path: Path) -> None:
    """faiss crashed the process (SIGSEGV) mapping an IDMap2 file cut inside its inner index's
    header (26-30 and 62-68 bytes): every cut must be a message, so the cuts run in a child
    process, where a crash shows as its exit status instead of ending the test run."""
    import subprocess
    import sys

    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatL2(4))
    index.add_with_ids(np.arange(20, dtype=np.float32).reshape(5, 4), np.arange(5) + 10)
    whole = tmp_path / "whole.faiss"
    faiss.write_index(index, str(whole))
    code = f"""
import pathlib, vecferry
from vecferry.errors import InputError
data = pathlib.Path({str(whole)!r}).read_bytes()
cut = pathlib.Path({str(tmp_path / 'cut.faiss')!r})
for n in range(4, 160):
    cut.write_bytes(data[:n])
    try:
        vecferry.open_reader(str(cut)).close()
    except InputError as exc:
        assert "truncated" in str(exc) or "not a FAISS index" in str(exc), (n, str(exc))
    else:
        raise SystemExit(f"a file cut at {{n}} bytes was read")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_a_parquet_payloads_file_takes_any_column_type(tmp_path: Path) -> None:
    """--payloads FILE.parquet beside a matrix: cells are read column by column as a mapped
    Parquet source reads them (timestamps at full precision, past year 9999 too, decimals,
    bytes), where a row read whole crashed or could not be written as JSON."""
    import decimal

    np.save(tmp_path / "v.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    pq.write_table(pa.table({
        "t": pa.array([1577836800123456789] * 3, pa.timestamp("ns")),
        "far": pa.array([253402300800000000] * 3, pa.timestamp("us")),
        "d": pa.array([decimal.Decimal("1.25")] * 3, pa.decimal128(5, 2)),
        "b": pa.array([b"\x00\x01"] * 3),
        "n": pa.array([None, 1, 2], pa.int64()),
    }), tmp_path / "pay.parquet")
    out = tmp_path / "o.jsonl"
    vecferry.convert(str(tmp_path / "v.npy"), str(out),
                     reader_options={"payloads": str(tmp_path / "pay.parquet")})
    payloads = [json.loads(x)["payload"] for x in out.read_text().splitlines()]
    assert payloads[0] == {"t": "2020-01-01T00:00:00.123456789", "far": "+10000-01-01T00:00:00",
                           "d": "1.25", "b": "AAE=", "n": None}
    assert [p["n"] for p in payloads] == [None, 1, 2]
