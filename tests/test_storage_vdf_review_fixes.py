"""Review fixes: two runs racing to one new S3 object, VDF folders missing a data file or
holding a damaged manifest, VDF written to a bucket, a JSONL file cut at a line boundary, and
``inspect`` suggesting a mapping for a foreign Parquet source in a bucket.

Object storage is moto's S3 server on loopback (``conftest.s3_endpoint``), as in
``test_storage.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from conftest import bucket_keys as keys
from conftest import open_uploads
from failing import fails
from roundtrip import DATASETS, assert_same_points, batches_of, leftovers, read_points
from vecferry import storage
from vecferry.cli import main
from vecferry.converters import vdf
from vecferry.errors import InputError, OutputExistsError, UnsupportedError, VecferryWarning
from vecferry.inspect import inspect_location

APPEARED = ("output appeared while this run was writing it (another run to the same "
            "place?); it is left as it is (pass --overwrite to replace it, or choose another "
            "output)")


def _jsonl(path: Path, n: int, shift: float = 0.0) -> str:
    path.write_text("".join(json.dumps({"id": i, "vector": [0.5 + shift, float(i)],
                                        "payload": {"i": i}}) + "\n" for i in range(n)))
    return str(path)


# ------------------------------------------------------------------ A1: racing to one object


def _open_jsonl_writer(location: str, src: str) -> Any:
    reader = vecferry.open_reader(src)
    try:
        batches = list(reader.batches(100))
    finally:
        reader.close()
    writer = vecferry.open_writer(location, reader.schema)
    for b in batches:
        writer.write_batch(b)
    return writer


def test_two_runs_to_one_new_object_the_later_stops(tmp_path, opts, s3, bucket):
    """Both runs open the new key while nothing is there; the first to close wins and the
    second stops as a local run does, its data and manifest sidecar both left out (it used
    to replace the first run's object, exit 0)."""
    target = f"s3://{bucket}/race/r1.jsonl"
    first_src = _jsonl(tmp_path / "first.jsonl", 7)
    second_src = _jsonl(tmp_path / "second.jsonl", 5, shift=1.0)
    with storage.using(opts):
        first = _open_jsonl_writer(target, first_src)
        second = _open_jsonl_writer(target, second_src)
        first.close()
        try:
            text = fails(OutputExistsError, second.close)
        finally:
            second.abort()
        manifest, got = read_points(target)
    assert text == f"{target}: {APPEARED}"
    assert keys(s3, bucket) == ["race/r1.jsonl", "race/r1.jsonl.manifest.json"]
    assert manifest.count == 7
    assert [(p["id"], p["vector"].tolist()) for p in got] == [(i, [0.5, float(i)])
                                                              for i in range(7)]
    assert open_uploads(s3, bucket) == []


def test_the_cli_exits_2_for_the_run_that_lost(tmp_path, opts, s3_endpoint, s3, bucket,
                                               monkeypatch):
    """The command line's word for it: exit 2, the first run's output untouched. The other
    run lands while this one is writing (after its open-time check)."""
    target = f"s3://{bucket}/race/cli.jsonl"
    src = _jsonl(tmp_path / "a.jsonl", 4)
    real = vecferry.converters.jsonl.JsonlWriter.close

    def close_after_another_run(self: Any) -> Any:
        s3.pipe(f"{bucket}/race/cli.jsonl", b'{"id": 99, "vector": [1.0, 2.0]}\n')
        return real(self)

    monkeypatch.setattr(vecferry.converters.jsonl.JsonlWriter, "close", close_after_another_run)
    result = CliRunner().invoke(main, ["convert", src, target, "--storage-option",
                                       f"endpoint_url={s3_endpoint}"])
    assert result.exit_code == 2, result.output
    assert f"{target}: {APPEARED}" in result.output
    assert keys(s3, bucket) == ["race/cli.jsonl"]
    assert s3.cat_file(f"{bucket}/race/cli.jsonl") == b'{"id": 99, "vector": [1.0, 2.0]}\n'


@pytest.mark.parametrize(("size", "completion"), [(1000, "put_object"),
                                                  (6 << 20, "complete_multipart_upload")])
def test_an_object_landing_after_the_last_check_is_not_replaced(opts, s3, bucket, monkeypatch,
                                                                 size, completion):
    """The other run's object lands between the check at commit and the request that makes
    this run's object appear: the store refuses that request (``If-None-Match: *``), for a
    one-shot PUT and for the completion of a multipart upload, which is then aborted."""
    import s3fs
    from fsspec.asyn import sync_wrapper

    key = "race/obj.bin"
    real = s3fs.S3FileSystem._call_s3
    landed: list[str] = []

    async def call_s3(fs: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == completion and kwargs.get("Key") == key and not landed:
            landed.append(method)
            await real(fs, "put_object", Bucket=bucket, Key=key, Body=b"the other run")
        return await real(fs, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", call_s3)
    monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", sync_wrapper(call_s3))
    with storage.using(opts):
        # parts of 5 MB, S3's smallest: 6 MB is a multipart upload of two
        out = storage.RemoteOutput(f"s3://{bucket}/{key}", block_size=5 << 20)
        with out.temp.open_output() as fh:
            fh.write(b"x" * size)
        text = fails(OutputExistsError, out.commit)
    assert landed == [completion]
    assert text == f"s3://{bucket}/{key}: {APPEARED}"
    assert s3.cat_file(f"{bucket}/{key}") == b"the other run"
    assert open_uploads(s3, bucket) == []


def test_overwrite_still_replaces_the_object(tmp_path, opts, s3, bucket):
    target = f"s3://{bucket}/race/ow.jsonl"
    with storage.using(opts):
        vecferry.convert(_jsonl(tmp_path / "a.jsonl", 3), target)
        vecferry.convert(_jsonl(tmp_path / "b.jsonl", 6), target, overwrite=True)
        manifest, got = read_points(target)
    assert manifest.count == len(got) == 6


# ---------------------------------------------------------- A2: a VDF folder missing a file


def _vdf_of_three_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "vs"
                        ) -> Path:
    """A VDF folder vecferry wrote, of three data files (``v_pts/1..3.parquet``)."""
    rng = np.random.default_rng(2)
    n = 60
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"id": i, "vector": rng.standard_normal(8).tolist(),
                                       "payload": {"i": i}}) + "\n" for i in range(n)))
    reader = vecferry.open_reader(str(src))
    batches = list(reader.batches(20))
    reader.close()
    monkeypatch.setattr(vdf, "FILE_BYTES", 1)  # a data file per batch of 20 points
    out = tmp_path / name
    writer = vecferry.open_writer(str(out), reader.schema, format="vdf", vdf_index="v_pts")
    for b in batches:
        writer.write_batch(b)
    writer.close()
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "v_pts").iterdir()) == ["1.parquet", "2.parquet",
                                                                  "3.parquet"]
    return out


def _drop_vecferry_key(folder: Path) -> dict[str, Any]:
    meta = json.loads((folder / "VDF_META.json").read_text())
    del meta["vecferry"]
    (folder / "VDF_META.json").write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize("ours", [True, False], ids=["vecferry", "vector-io-style"])
def test_a_vdf_folder_missing_a_listed_file_is_refused(tmp_path, monkeypatch, ours):
    folder = _vdf_of_three_files(tmp_path, monkeypatch)
    if not ours:
        _drop_vecferry_key(folder)
    (folder / "v_pts" / "2.parquet").unlink()
    text = fails(InputError, lambda: vecferry.open_reader(str(folder)))
    assert text == (f"{folder}/VDF_META.json: data file(s) that VDF_META.json lists "
                    "(file_structure) are missing: v_pts/2.parquet (the folder was copied or "
                    "downloaded in part: copy it again whole (or, if the files were removed on "
                    "purpose, take them out of file_structure and the counts))")
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError):
        vecferry.convert(str(folder), str(out))
    assert not out.exists()


def test_a_vdf_file_replaced_by_a_shorter_one_is_refused_by_the_count(tmp_path, monkeypatch):
    folder = _vdf_of_three_files(tmp_path, monkeypatch)
    part = folder / "v_pts" / "2.parquet"
    pq.write_table(pq.read_table(part).slice(0, 5), part)
    text = fails(InputError, lambda: vecferry.open_reader(str(folder)))
    assert text == (f"{folder}/VDF_META.json: VDF_META.json records 60 point(s) for 'v_pts', "
                    "but its data files hold 45 (1.parquet, 2.parquet, 3.parquet) (a data file "
                    "was lost, cut short, replaced or added since vecferry wrote the folder: "
                    "copy it again whole)")


def test_vector_io_exported_count_that_differs_is_a_warning(tmp_path, monkeypatch):
    """vector-io's exporters count what they fetched, before repeated ids are merged: the
    data is read, with a warning."""
    folder = _vdf_of_three_files(tmp_path, monkeypatch)
    meta = _drop_vecferry_key(folder)
    meta["indexes"]["v_pts"][0]["exported_vector_count"] = 61
    (folder / "VDF_META.json").write_text(json.dumps(meta))
    warning = ("VDF_META.json says 61 vector(s) of 'v_pts' were exported, but its data files "
               "hold 60; the data wins (a file lost or added would explain it; so would ids an "
               "exporter fetched twice)")
    with pytest.warns(VecferryWarning) as issued:
        report = vecferry.convert(str(folder), str(tmp_path / "out.jsonl"))
    assert report["written"] == 60
    assert warning in report["warnings"]
    assert warning in [str(w.message) for w in issued]


def _vector_io_folder(root: Path) -> Path:
    """An export as vector-io writes it: paths in file_structure start with the export
    folder's name, another index's files are listed too, data_path is relative."""
    rng = np.random.default_rng(4)
    for index, files in (("coll", (1, 2)), ("other", (1,))):
        (root / index).mkdir(parents=True)
        for number in files:
            pq.write_table(pa.table({
                "id": [f"{index}{number}-{i}" for i in range(3)],
                "vector": pa.array(rng.standard_normal((3, 4)).tolist(),
                                   pa.list_(pa.float64()))}), root / index / f"{number}.parquet")
    stamp = "vdf_20240101_abc"
    meta = {
        "version": "0.1.300", "author": "someone", "exported_from": "qdrant",
        "file_structure": [f"{stamp}/coll/1.parquet", f"{stamp}/coll/2.parquet",
                           f"{stamp}/other/1.parquet", f"{stamp}/VDF_META.json"],
        "indexes": {name: [{
            "namespace": "", "index_name": name, "total_vector_count": count,
            "exported_vector_count": count, "dimensions": 4, "model_name": "m",
            "vector_columns": ["vector"], "data_path": name, "metric": "Cosine"}]
            for name, count in (("coll", 6), ("other", 3))},
        "exported_at": "2024-01-01T00:00:00",
    }
    (root / "VDF_META.json").write_text(json.dumps(meta))
    return root


def test_a_vector_io_export_missing_a_file_is_refused_and_others_are_not_checked(tmp_path):
    root = _vector_io_folder(tmp_path / "export")
    _, points = read_points(str(root), vdf_index="coll")
    assert len(points) == 6
    (root / "other" / "1.parquet").unlink()  # another index's file: not this read's
    _, points = read_points(str(root), vdf_index="coll")
    assert len(points) == 6
    (root / "coll" / "2.parquet").unlink()
    text = fails(InputError, lambda: vecferry.open_reader(str(root), vdf_index="coll"))
    assert text.startswith(f"{root}/VDF_META.json: data file(s) that VDF_META.json lists "
                           "(file_structure) are missing: vdf_20240101_abc/coll/2.parquet (")


# ------------------------------------------------------------- B1: VDF into a bucket


def test_vdf_written_to_a_bucket_and_read_back(tmp_path, opts, s3, bucket, monkeypatch):
    """A VDF output in a bucket streams each data file under the hidden prefix and is moved
    into place, manifest last (it crashed: a StoragePath has no mkdir)."""
    ds = DATASETS["named_dense_uuid"]()
    src = tmp_path / "pts.parquet"
    writer = vecferry.open_writer(str(src), batches_of(ds)[0].schema)
    for b in batches_of(ds):
        writer.write_batch(b)
    writer.close()
    monkeypatch.setattr(vdf, "FILE_BYTES", 1)  # several data files
    remote = f"s3://{bucket}/vdf/out"
    report = vecferry.convert(str(src), remote, to_format="vdf", storage_options=opts,
                              batch_size=10)
    assert report["written"] == len(ds.points)
    got_keys = keys(s3, bucket)
    assert got_keys[0] == "vdf/out/VDF_META.json"
    assert got_keys[1:] == [f"vdf/out/out/{i}.parquet" for i in range(1, len(got_keys))]
    assert len(got_keys) > 2
    meta = json.loads(s3.cat_file(f"{bucket}/vdf/out/VDF_META.json"))
    assert meta["file_structure"][-1] == "VDF_META.json"
    assert report["bytes_written"] == sum(s3.info(f"{bucket}/{k}")["size"] for k in got_keys)
    # read straight from the bucket, and through a local copy
    with storage.using(opts):
        manifest, got = read_points(remote)
    assert_same_points(got, manifest, ds)
    s3.get(f"{bucket}/vdf/out", str(tmp_path / "copy"), recursive=True)
    manifest, got = read_points(str(tmp_path / "copy"))
    assert_same_points(got, manifest, ds)
    assert not leftovers(tmp_path)


def test_a_failed_vdf_upload_leaves_nothing_in_the_bucket(tmp_path, opts, s3, bucket):
    src = tmp_path / "pts.jsonl"
    src.write_text('{"id": 1, "vector": [0.5, 1.0], "payload": {"id": 3}}\n')
    with pytest.raises(UnsupportedError):
        vecferry.convert(str(src), f"s3://{bucket}/vdf/bad", to_format="vdf",
                         storage_options=opts)
    assert keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []


# ----------------------------------------------------- B3: a damaged manifest in VDF_META


def _vdf_with_manifest(tmp_path: Path, edit: Any) -> Path:
    out = tmp_path / "v"
    vecferry.convert(_jsonl(tmp_path / "p.jsonl", 4), str(out), to_format="vdf")
    meta = json.loads((out / "VDF_META.json").read_text())
    edit(meta["vecferry"], meta["vecferry"]["manifest"])
    (out / "VDF_META.json").write_text(json.dumps(meta))
    return out


def _set(key: str, value: Any) -> Any:
    return lambda ours, m: m.__setitem__(key, value)


def _set_vector(key: str, value: Any) -> Any:
    return lambda ours, m: m["vectors"][0].__setitem__(key, value)


DAMAGE = [
    ("vectors-text", _set("vectors", "x"), "'vectors' must be a list, not text", None),
    ("manifest-text", lambda ours, m: ours.__setitem__("manifest", "x"),
     "it must be an object, not text", None),
    ("vecferry-empty", lambda ours, m: ours.clear(), None, None),  # read as vector-io's
    ("vector-foo", lambda ours, m: m.__setitem__("vectors", [{"foo": 1}]),
     "vectors[0] holds unknown key(s) 'foo'", None),
    ("vector-no-name", lambda ours, m: m["vectors"][0].pop("name"), "vectors[0] has no 'name'",
     None),
    ("digest-5", _set("digest", 5), "'digest' must be an object or null, not an integer", None),
    ("count-text", _set("count", "500"), "'count' must be an integer or null, not text", None),
    ("count-negative", _set("count", -1), "'count' must not be negative (-1)", None),
    ("extra-list", _set("extra", []), "'extra' must be an object or null, not a list", None),
    ("size-text", _set_vector("size", "8"), "vectors[0].size must be an integer or null, not "
                                            "text", None),
    ("distance-number", _set_vector("distance", 5),
     "vectors[0].distance must be text or null, not an integer", None),
    ("id-kind", _set("id_kind", "weird"), "unknown id kind 'weird'",
     "one of int, uuid, string, mixed"),
    ("datatype", _set_vector("datatype", "float99"),
     "vector '': unsupported datatype 'float99'", "supported: float32, float16, uint8"),
    ("version", _set("format_version", 99),
     "manifest format version 99 is newer than this vecferry (1)", "upgrade vecferry"),
]


@pytest.mark.parametrize(("edit", "problem", "hint"), [d[1:] for d in DAMAGE],
                         ids=[d[0] for d in DAMAGE])
def test_a_damaged_vecferry_manifest_names_vdf_meta(tmp_path, edit, problem, hint):
    folder = _vdf_with_manifest(tmp_path, edit)
    if problem is None:  # {"vecferry": {}}: no manifest recorded, read as vector-io's
        _, points = read_points(str(folder))
        assert len(points) == 4
        return
    text = fails(InputError, lambda: vecferry.open_reader(str(folder)))
    assert text == (f"{folder}/VDF_META.json: the stream manifest vecferry keeps under "
                    f"\"vecferry\" -> \"manifest\" is not valid: {problem} ("
                    + (f"{hint}; or " if hint else "")
                    + "restore the file as vecferry wrote it, or remove its \"vecferry\" key to "
                      "read the folder as a vector-io export (the index entry then gives the "
                      "vectors and metric))")


def test_a_vecferry_key_that_is_not_an_object_names_vdf_meta(tmp_path):
    out = tmp_path / "v"
    vecferry.convert(_jsonl(tmp_path / "p.jsonl", 4), str(out), to_format="vdf")
    meta = json.loads((out / "VDF_META.json").read_text())
    meta["vecferry"] = ["x"]
    (out / "VDF_META.json").write_text(json.dumps(meta))
    text = fails(InputError, lambda: vecferry.open_reader(str(out)))
    assert text.startswith(f"{out}/VDF_META.json: the stream manifest vecferry keeps under "
                           "\"vecferry\" -> \"manifest\" is not valid: 'vecferry' must be an "
                           "object, not a list (")


def test_verify_of_a_vdf_with_a_damaged_digest_names_vdf_meta(tmp_path):
    folder = _vdf_with_manifest(tmp_path, _set("digest", 5))
    result = CliRunner().invoke(main, ["verify", str(folder)])
    assert result.exit_code == 1, result.output
    assert (f"{folder}/VDF_META.json: the stream manifest vecferry keeps under \"vecferry\" -> "
            "\"manifest\" is not valid: 'digest' must be an object or null, not an integer"
            ) in result.output


def test_verify_of_a_jsonl_sidecar_digest_that_is_not_an_object(tmp_path):
    """A digest that is not an object is refused when the sidecar is read, naming the field
    (verify crashed with an AttributeError)."""
    src = tmp_path / "a.jsonl"
    vecferry.convert(_jsonl(tmp_path / "p.jsonl", 4), str(src))
    side = Path(f"{src}.manifest.json")
    manifest = json.loads(side.read_text())
    manifest["digest"] = 5
    side.write_text(json.dumps(manifest))
    text = fails(InputError, lambda: vecferry.verify(str(src)))
    assert text == (f"{side}: manifest sidecar is not valid: 'digest' must be an object or "
                    "null, not an integer (fix or delete it; without it the schema is inferred)")


# --------------------------------------------------- A3: a JSONL file cut at a line boundary


def _cut(tmp_path: Path, n: int = 500, keep: int = 300) -> tuple[Path, str]:
    src = _jsonl(tmp_path / "p.jsonl", n)
    cut = tmp_path / "cut.jsonl"
    vecferry.convert(src, str(cut))
    lines = cut.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:keep]))
    return cut, CUT_MESSAGE.format(cut=cut, held=keep, recorded=n)


CUT_MESSAGE = ("{cut}: the file holds {held} record(s) (lines, bad ones included), but its "
               "manifest {cut}.manifest.json records {recorded} point(s) (the file was cut short "
               "(an interrupted copy or download?) or edited after vecferry wrote it: copy it "
               "again from where it came from; if it was edited on purpose, delete "
               "{cut}.manifest.json to read it as it is)")


def test_a_jsonl_file_cut_at_a_line_boundary_is_refused(tmp_path):
    cut, message = _cut(tmp_path)
    out = tmp_path / "out.jsonl"
    text = fails(InputError, lambda: vecferry.convert(str(cut), str(out)))
    assert text == message
    assert not out.exists() and not Path(f"{out}.manifest.json").exists()
    assert not leftovers(tmp_path)
    result = CliRunner().invoke(main, ["convert", str(cut), str(tmp_path / "o.parquet")])
    assert result.exit_code == 1 and message in result.output
    # lines added are refused too
    lines = cut.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines + lines[:250]))
    text = fails(InputError, lambda: vecferry.convert(str(cut), str(out)))
    assert text == CUT_MESSAGE.format(cut=cut, held=550, recorded=500)


def test_a_cut_jsonl_file_reads_when_its_manifest_is_deleted(tmp_path):
    cut, _ = _cut(tmp_path)
    Path(f"{cut}.manifest.json").unlink()
    assert vecferry.convert(str(cut), str(tmp_path / "out.jsonl"))["written"] == 300


def test_limit_and_start_are_not_refused_for_an_intact_file(tmp_path):
    """--limit stops before the end (nothing to compare); a resumed read (start) reads every
    line, so it counts the whole file."""
    src = _jsonl(tmp_path / "p.jsonl", 500)
    whole = tmp_path / "whole.jsonl"
    vecferry.convert(src, str(whole))
    report = vecferry.convert(str(whole), str(tmp_path / "lim.jsonl"), limit=120, batch_size=50)
    assert report["written"] == 120
    reader = vecferry.open_reader(str(whole))
    try:
        rows = sum(b.num_rows for b in reader.batches(64, start=130))
    finally:
        reader.close()
    assert rows == 370
    # a limit within a cut file stops before its end: nothing to compare yet
    cut, message = _cut(tmp_path, keep=300)
    assert vecferry.convert(str(cut), str(tmp_path / "lim2.jsonl"), limit=100,
                            batch_size=50)["written"] == 100
    reader = vecferry.open_reader(str(cut))
    try:
        with pytest.raises(InputError) as info:
            for _ in reader.batches(64, start=130):
                pass
    finally:
        reader.close()
    assert str(info.value) == message


def test_a_rejected_line_counts_as_a_record(tmp_path):
    """A line edited into a bad record still is one of the recorded records: skipped, the
    rest is read, not refused for the count."""
    src = _jsonl(tmp_path / "p.jsonl", 20)
    arch = tmp_path / "arch.jsonl"
    vecferry.convert(src, str(arch))
    lines = arch.read_bytes().splitlines(keepends=True)
    lines[4] = b"not json\n"
    arch.write_bytes(b"".join(lines))
    report = vecferry.convert(str(arch), str(tmp_path / "out.jsonl"), on_error="skip")
    assert (report["written"], report["rejected"]) == (19, 1)


def test_verify_still_reports_the_count_of_a_cut_file(tmp_path):
    cut, _ = _cut(tmp_path, n=50, keep=30)
    report = vecferry.verify(str(cut))
    assert report["problems"][0] == "count differs: manifest says 50, file holds 30"


def test_a_remote_cut_jsonl_file_is_refused(tmp_path, opts, s3, bucket):
    cut, _ = _cut(tmp_path, n=40, keep=25)
    s3.put_file(str(cut), f"{bucket}/c/cut.jsonl")
    s3.put_file(f"{cut}.manifest.json", f"{bucket}/c/cut.jsonl.manifest.json")
    remote = f"s3://{bucket}/c/cut.jsonl"
    text = fails(InputError, lambda: vecferry.convert(remote, str(tmp_path / "o.jsonl"),
                                                      storage_options=opts))
    assert text == CUT_MESSAGE.format(cut=remote, held=25, recorded=40)


# ------------------------------------------------- C1: inspect of a foreign file in a bucket


def _foreign_table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"doc_id": [f"d{start + i}" for i in range(n)],
                     "emb": pa.array([[float(start + i), 1.0, 2.0] for i in range(n)],
                                     pa.list_(pa.float32())),
                     "title": [f"t{start + i}" for i in range(n)]})


def test_inspect_suggests_a_mapping_for_a_foreign_parquet_file_in_a_bucket(tmp_path, opts, s3,
                                                                           bucket):
    local = tmp_path / "x.parquet"
    pq.write_table(_foreign_table(3), local)
    s3.put_file(str(local), f"{bucket}/flat/x.parquet")
    expected = inspect_location(str(local))
    with storage.using(opts):
        info = inspect_location(f"s3://{bucket}/flat/x.parquet")
    assert info["suggested_mapping"] == expected["suggested_mapping"]
    assert info["suggested_mapping"]["options"] == {"id_column": "doc_id",
                                                    "vector_column": ["emb"]}
    assert info["first_ids"] == ["d0", "d1", "d2"] and info["vectors"][0]["size"] == 3


def test_inspect_of_a_hive_directory_in_a_bucket(tmp_path, opts, s3, s3_endpoint, bucket):
    for lang, start in (("de", 0), ("en", 2)):
        local = tmp_path / f"{lang}.parquet"
        pq.write_table(_foreign_table(2, start), local)
        s3.put_file(str(local), f"{bucket}/hive/lang={lang}/part-0.parquet")
    remote = f"s3://{bucket}/hive"
    result = CliRunner().invoke(main, ["inspect", remote, "--json", "--storage-option",
                                       f"endpoint_url={s3_endpoint}"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output[result.output.index("{"):])
    assert info["suggested_mapping"]["options"] == {"id_column": "doc_id",
                                                    "vector_column": ["emb"]}
    assert info["first_ids"] == ["d0", "d1", "d2", "d3"]
    assert info["payload_keys"] == {"title": 4, "lang": 4}
