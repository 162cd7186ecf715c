"""Object storage (``vecferry.storage``) against a real S3-compatible server on loopback.

The server is moto's standalone server (``moto[server]``), started by the session fixture on
127.0.0.1 with an ephemeral port; credentials are fake values in the environment, as a user's
would be. A plain ``http.server`` on loopback serves files for ``https://``-style reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import S3_SECRET, open_uploads
from conftest import bucket_keys as keys
from roundtrip import DATASETS, assert_same_points, read_points, write_points
from vecferry import storage
from vecferry.cli import main
from vecferry.errors import InputError, OutputExistsError, RecordError, TargetError, UsageError
from vecferry.pipeline import convert

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

SECRET = S3_SECRET


def via_bucket(tmp_path: Path, opts: dict[str, Any], ds_name: str, local_name: str,
               remote: str, back_name: str, **up_options: Any) -> tuple[Any, list[Any]]:
    """local -> bucket -> local, then read the result back."""
    ds = DATASETS[ds_name]()
    src = str(tmp_path / local_name)
    write_points(src, ds)
    up = convert(src, remote, storage_options=opts, **up_options)
    assert up["written"] == len(ds.points)
    back = str(tmp_path / back_name)
    down = convert(remote, back, storage_options=opts)
    assert down["written"] == len(ds.points)
    manifest, got = read_points(back)
    return ds, (manifest, got)


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("ds_name", "name"), [
    ("dense_int", "points.jsonl"),
    ("named_mixed", "points.jsonl.gz"),
    ("string_ids", "points.parquet"),
    ("named_mixed", "points.parquet"),
])
def test_file_round_trip(tmp_path, opts, s3, bucket, ds_name, name):
    remote = f"s3://{bucket}/exports/{name}"
    ds, (manifest, got) = via_bucket(tmp_path, opts, ds_name, name, remote, "back-" + name)
    assert_same_points(got, manifest, ds)
    expected = [f"exports/{name}"] + ([f"exports/{name}.manifest.json"] if "jsonl" in name
                                      else [])
    assert keys(s3, bucket) == sorted(expected)
    # read straight from the bucket too
    with storage.using(opts):
        manifest, got = read_points(remote)
    assert_same_points(got, manifest, ds)


def test_parquet_directory_round_trip(tmp_path, opts, s3, bucket):
    remote = f"s3://{bucket}/dir/points/"
    ds, (manifest, got) = via_bucket(tmp_path, opts, "dense_int", "points.parquet", remote,
                                     "back.parquet", to_format="parquet")
    assert_same_points(got, manifest, ds)
    assert keys(s3, bucket) == ["dir/points/_manifest.json", "dir/points/part-00000.parquet"]
    # a directory of parts is recognised by its contents
    ds2, (manifest, got) = via_bucket(tmp_path, opts, "dense_int", "p2.parquet",
                                      f"s3://{bucket}/dir/points", "back2.jsonl",
                                      overwrite=True)
    assert_same_points(got, manifest, ds2)


@pytest.mark.parametrize("ds_name", ["dense_int", "string_ids", "uint8"])
def test_npy_directory_round_trip(tmp_path, opts, s3, bucket, ds_name):
    remote = f"s3://{bucket}/npy/{ds_name}"
    ds, (manifest, got) = via_bucket(tmp_path, opts, ds_name, "src.parquet", remote,
                                     "back.parquet", to_format="npy")
    assert_same_points(got, manifest, ds)
    assert {k.rsplit("/", 1)[1] for k in keys(s3, bucket)} == {
        "vectors.npy", "ids.npy", "payloads.jsonl", "manifest.json"}


def test_npy_matrix_read_by_ranges(tmp_path, opts, s3, bucket):
    rng = np.random.default_rng(3)
    mat = rng.standard_normal((37, 8)).astype(np.float32)
    ids = np.arange(100, 137, dtype=np.uint64)
    np.save(tmp_path / "v.npy", mat)
    np.save(tmp_path / "i.npy", ids)
    s3.put_file(str(tmp_path / "v.npy"), f"{bucket}/v.npy")
    s3.put_file(str(tmp_path / "i.npy"), f"{bucket}/i.npy")
    with storage.using(opts):
        _, got = read_points(f"s3://{bucket}/v.npy", batch_size=10, ids=f"s3://{bucket}/i.npy")
    assert [p["id"] for p in got] == ids.tolist()
    assert np.array_equal(np.array([p["vector"] for p in got], dtype=np.float32), mat)


def test_per_vector_files_in_a_bucket(tmp_path, opts, s3, bucket):
    # each file was opened as a local path (a TypeError from the built-in open)
    rng = np.random.default_rng(4)
    mat = rng.standard_normal((5, 8)).astype(np.float32)
    for i, row in enumerate(mat):
        np.save(tmp_path / f"{i}.npy", row)
        s3.put_file(str(tmp_path / f"{i}.npy"), f"{bucket}/pv/{i}.npy")
    s3.pipe({f"{bucket}/pv/3.json": b'{"k": 3}'})
    with storage.using(opts):
        _, got = read_points(f"s3://{bucket}/pv", format="npy", batch_size=2)
    assert [p["id"] for p in got] == [0, 1, 2, 3, 4]
    assert np.array_equal(np.array([p["vector"] for p in got], dtype=np.float32), mat)
    assert [p["payload"] for p in got] == [None, None, None, {"k": 3}, None]


def test_faiss_round_trip(tmp_path, opts, s3, bucket):
    pytest.importorskip("faiss")
    remote = f"s3://{bucket}/idx/points.faiss"
    ds, (manifest, got) = via_bucket(tmp_path, opts, "string_ids", "src.parquet", remote,
                                     "back.parquet")
    assert_same_points(got, manifest, ds)
    assert keys(s3, bucket) == ["idx/points.faiss", "idx/points.faiss.manifest.json",
                                "idx/points.faiss.payloads.parquet"]


# ------------------------------------------------------------------------ atomic outputs


def _big_jsonl(path: Path, n: int, dim: int, bad_at: int | None = None) -> None:
    rng = np.random.default_rng(5)
    with open(path, "w") as fh:
        for i in range(n):
            if i == bad_at:
                fh.write("{not json\n")
                continue
            vec = ",".join(repr(float(x)) for x in rng.standard_normal(dim).astype(np.float32))
            fh.write(f'{{"id": {i}, "vector": [{vec}], "payload": {{"i": {i}}}}}\n')


def test_large_multipart_upload(tmp_path, opts, s3, bucket):
    src = tmp_path / "big.jsonl"
    _big_jsonl(src, 3000, 256)
    # 5 MiB parts (S3's minimum): the ~8 MB output is uploaded in several parts
    small = {**opts, "default_block_size": 5 * 2**20}
    remote = f"s3://{bucket}/big.jsonl"
    report = convert(str(src), remote, storage_options=small, batch_size=256)
    assert report["written"] == 3000
    info = s3.info(f"{bucket}/big.jsonl")
    assert info["size"] == report["bytes_written"] > 5 * 2**20
    assert info["ETag"].strip('"').endswith("-2")  # a multipart object of two parts
    back, local = tmp_path / "back.jsonl", tmp_path / "local.jsonl"
    convert(remote, str(back), storage_options=opts)
    convert(str(src), str(local))
    assert back.read_bytes() == local.read_bytes()


@pytest.mark.parametrize(("target", "fmt"), [
    ("out.jsonl", None), ("out.jsonl.gz", None), ("out.parquet", None), ("outdir/", "parquet"),
    ("out.faiss", None), ("npydir", "npy")])
def test_interrupted_upload_leaves_nothing(tmp_path, opts, s3, bucket, target, fmt):
    if target.endswith(".faiss"):
        pytest.importorskip("faiss")
    src = tmp_path / "src.jsonl"
    _big_jsonl(src, 3000, 256, bad_at=2500)  # fails after ~7 MB were written
    small = {**opts, "default_block_size": 5 * 2**20}
    with pytest.raises(RecordError):
        convert(str(src), f"s3://{bucket}/{target}", storage_options=small, batch_size=256,
                to_format=fmt)
    assert keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []


def test_existing_output_needs_overwrite(tmp_path, opts, s3, bucket):
    ds = DATASETS["dense_int"]()
    src = str(tmp_path / "p.parquet")
    write_points(src, ds)
    remote = f"s3://{bucket}/p.parquet"
    convert(src, remote, storage_options=opts)
    with pytest.raises(OutputExistsError):
        convert(src, remote, storage_options=opts)
    convert(src, remote, storage_options=opts, overwrite=True)
    assert keys(s3, bucket) == ["p.parquet"]


def test_missing_bucket_and_object(tmp_path, opts):
    ds = DATASETS["dense_int"]()
    src = str(tmp_path / "p.parquet")
    write_points(src, ds)
    with pytest.raises(TargetError, match="does not exist"):
        convert(src, "s3://vf-no-such-bucket/p.parquet", storage_options=opts)
    with pytest.raises(InputError, match="no such object"):
        convert("s3://vf-no-such-bucket/p.parquet", str(tmp_path / "x.jsonl"),
                storage_options=opts)


# --------------------------------------------------------------------------- credentials



@pytest.mark.parametrize("direction", ["read", "write"])
def test_wrong_credentials_clear_error(tmp_path, s3_endpoint, bucket, direction,
                                       enforce_auth):
    ds = DATASETS["dense_int"]()
    local = str(tmp_path / "p.parquet")
    write_points(local, ds)
    remote = f"s3://{bucket}/p.parquet"
    args = [local, remote] if direction == "write" else [remote, str(tmp_path / "o.jsonl")]
    result = CliRunner().invoke(main, ["convert", *args, "--quiet", "--storage-option",
                                       f"endpoint_url={s3_endpoint}"])
    assert result.exit_code == 1, result.output
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "S3 refused access" in out
    assert "AWS_ACCESS_KEY_ID" in out
    assert SECRET not in out
    assert "Traceback" not in out


def test_credentials_never_from_location_or_command_line(tmp_path, s3_endpoint):
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "s3://AKIA:topsecret@bucket/x.parquet",
                                  str(tmp_path / "o.jsonl"), "--quiet"])
    assert result.exit_code == 2
    assert "credentials in the location" in result.output
    assert "topsecret" not in result.output
    result = runner.invoke(main, ["convert", "s3://bucket/x.parquet", str(tmp_path / "o.jsonl"),
                                  "--storage-option", "secret=topsecret"])
    assert result.exit_code == 2
    assert "holds a credential" in result.output
    assert "topsecret" not in result.output


def test_parse_storage_options():
    got = storage.parse_storage_options(["endpoint_url=http://127.0.0.1:9", "anon=false",
                                         "client_kwargs.region_name=eu-west-1",
                                         "default_block_size=5242880"])
    assert got == {"endpoint_url": "http://127.0.0.1:9", "anon": False,
                   "client_kwargs": {"region_name": "eu-west-1"},
                   "default_block_size": 5242880}
    with pytest.raises(UsageError):
        storage.parse_storage_options(["novalue"])


def test_cli_convert_through_bucket(tmp_path, s3_endpoint, bucket):
    ds = DATASETS["string_ids"]()
    local = str(tmp_path / "p.parquet")
    write_points(local, ds)
    runner = CliRunner()
    opt = ["--storage-option", f"endpoint_url={s3_endpoint}"]
    remote = f"s3://{bucket}/cli/p.jsonl"
    result = runner.invoke(main, ["convert", local, remote, "--quiet", *opt])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["verify", local, remote, "--quiet", *opt])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["inspect", remote, "--json", *opt])
    assert result.exit_code == 0, result.output
    assert '"count": 37' in result.output


# --------------------------------------------------------------------------------- https


@pytest.mark.parametrize("name", ["points.jsonl", "points.parquet"])
def test_http_read(tmp_path, http_dir, name):
    pytest.importorskip("aiohttp")
    root, base = http_dir
    ds = DATASETS["dense_int"]()
    write_points(str(root / name), ds)
    out = str(tmp_path / "back.parquet")
    report = convert(f"{base}/{name}", out)
    assert report["written"] == len(ds.points)
    manifest, got = read_points(out)
    assert_same_points(got, manifest, ds)
    with pytest.raises(UsageError, match="read-only"):
        convert(out, f"{base}/new.jsonl")
