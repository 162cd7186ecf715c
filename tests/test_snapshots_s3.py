"""Snapshots streamed between Qdrant (the loopback stand-in) and S3 (moto on loopback),
without a local copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import vecferry
from qdrant_helpers import dump_stream, make_local, normalize
from qdrant_standin import Fault, QdrantStandIn
from vecferry import storage
from vecferry.cli import main
from vecferry.errors import InputError, OutputExistsError
from vecferry.snapshots import ChecksumMismatchError, SnapshotClient

pytest.importorskip("qdrant_client")
s3_fixtures = pytest.importorskip("test_storage")  # skips without moto; fixtures in conftest
keys, open_uploads = s3_fixtures.keys, s3_fixtures.open_uploads
snapshot_tests = pytest.importorskip("test_snapshots")  # Edge shards in Qdrant's layout
shards, _collection_archive = snapshot_tests.shards, snapshot_tests._collection_archive

#: 5 MiB upload parts (S3's minimum) and a ~6 MB snapshot: a real multipart upload
BLOCK = 5 * 2**20


@pytest.fixture(autouse=True)
def _fast_retries_and_clean_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                tmp_path_factory: pytest.TempPathFactory) -> None:
    import tempfile

    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.001")
    monkeypatch.chdir(tmp_path)  # nothing may be written here (no .vfpart, no temp file)
    # nor in the temporary directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tempdir")))


@pytest.fixture(scope="module")
def local_src(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_local(tmp_path_factory.mktemp("local") / "q")


@pytest.fixture
def stand(local_src: str):
    with QdrantStandIn() as server:
        server.snapshot_padding = 6_000_000
        vecferry.convert(local_src, server.location("docs"))
        yield server


def _tmp_files() -> list[str]:
    import tempfile

    # the stand-in keeps its (server-side) snapshots in a temporary directory of its own
    return [n for n in os.listdir(tempfile.gettempdir()) if not n.startswith("standin-")]


def test_download_streams_into_the_bucket(stand: QdrantStandIn, opts: Any, s3: Any,
                                          bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/snaps/docs.snapshot"
    with SnapshotClient(stand.location("docs")) as c, \
            storage.using({**opts, "default_block_size": BLOCK}):
        snap = c.create()
        # the connection drops half way: the same upload goes on from a Range request
        stand.add_fault(Fault("snapshot_download", "truncate"))
        got = c.download(snap["name"], url, chunk_size=65536)
        with pytest.raises(OutputExistsError):
            c.download(snap["name"], url)
    assert got["verified"] and got["sha256"] == snap["checksum"] and got["path"] == url
    assert got["resumed_at"] and got["resumed_at"][0] > 0
    ranges = [e["range"] for e in stand.snapshot_log if e["op"] == "snapshot_download"]
    assert ranges == [None, f"bytes={got['resumed_at'][0]}-"]
    assert keys(s3, bucket) == ["snaps/docs.snapshot"]
    data = s3.cat_file(f"{bucket}/snaps/docs.snapshot")
    assert len(data) == snap["size"] == got["bytes"] > BLOCK
    assert hashlib.sha256(data).hexdigest() == snap["checksum"]
    assert s3.info(f"{bucket}/snaps/docs.snapshot")["ETag"].strip('"').endswith("-2")
    assert open_uploads(s3, bucket) == []
    assert list(tmp_path.iterdir()) == [] and _tmp_files() == []
    assert _tmp_files() == []


def test_download_without_range_support_starts_the_object_over(
        stand: QdrantStandIn, opts: Any, s3: Any, bucket: str) -> None:
    stand.snapshot_ranges = False
    url = f"s3://{bucket}/s.snapshot"
    with SnapshotClient(stand.location("docs")) as c, storage.using(opts):
        snap = c.create()
        stand.add_fault(Fault("snapshot_download", "truncate"))
        got = c.download(snap["name"], url)
    assert got["verified"] and not got["range_supported"]
    assert hashlib.sha256(s3.cat_file(f"{bucket}/s.snapshot")).hexdigest() == snap["checksum"]
    assert open_uploads(s3, bucket) == []


def test_checksum_mismatch_leaves_no_object(stand: QdrantStandIn, opts: Any, s3: Any,
                                            bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/bad.snapshot"
    with SnapshotClient(stand.location("docs")) as c, \
            storage.using({**opts, "default_block_size": BLOCK}):
        snap = c.create()
        stand.add_fault(Fault("snapshot_download", "corrupt"))
        with pytest.raises(ChecksumMismatchError, match=snap["checksum"]) as err:
            c.download(snap["name"], url)
    assert err.value.exit_code == 4
    assert keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []  # the multipart upload was aborted
    assert list(tmp_path.iterdir()) == [] and _tmp_files() == []


def test_upload_from_the_bucket(stand: QdrantStandIn, opts: Any, s3: Any, bucket: str,
                                tmp_path: Path) -> None:
    url = f"s3://{bucket}/docs.snapshot"
    with SnapshotClient(stand.location("docs")) as c, storage.using(opts):
        snap = c.create()
        c.download(snap["name"], url)
    with QdrantStandIn() as other, SnapshotClient(other.location("restored")) as d, \
            storage.using(opts):
        seen: list[tuple[str, int, int | None]] = []
        got = d.upload(url, priority="snapshot", progress=lambda *a: seen.append(a))
        assert got["sha256"] == snap["checksum"] and got["bytes"] == snap["size"]
        entry = other.snapshot_log[-1]
        assert entry["query"]["checksum"] == snap["checksum"]
        # two streaming passes: the checksum, then the upload
        assert ("checksum", snap["size"], snap["size"]) in seen
        assert ("upload", snap["size"], snap["size"]) in seen
        assert d.count() == 37
        assert dump_stream(other.location("restored")) == dump_stream(stand.location("docs"))
        with pytest.raises(ChecksumMismatchError):
            d.upload(url, checksum="0" * 64, overwrite=True)
        with pytest.raises(InputError, match="no such object"):
            d.upload(f"s3://{bucket}/nope.snapshot")
    assert list(tmp_path.iterdir()) == [] and _tmp_files() == []


def test_cli_download_and_upload_with_a_bucket(stand: QdrantStandIn, s3_endpoint: str,
                                               s3: Any, bucket: str, tmp_path: Path) -> None:
    runner = CliRunner()
    opt = ["--storage-option", f"endpoint_url={s3_endpoint}"]
    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
    url = f"s3://{bucket}/cli.snapshot"
    result = runner.invoke(main, ["snapshot", "download", stand.location("docs"), snap["name"],
                                  "--out", url, *opt])
    assert result.exit_code == 0, result.output
    assert "sha256 verified" in result.stderr and url in result.stderr
    assert hashlib.sha256(s3.cat_file(f"{bucket}/cli.snapshot")).hexdigest() == \
        snap["checksum"]
    with QdrantStandIn() as other:
        result = runner.invoke(main, ["snapshot", "upload", url, other.location("copy"), *opt])
        assert result.exit_code == 0, result.output
        with SnapshotClient(other.location("copy")) as d:
            assert d.count() == 37
    assert list(tmp_path.iterdir()) == [] and _tmp_files() == []


def test_snapshot_file_in_a_bucket_is_read_offline(shards: dict[str, Any], tmp_path: Path,
                                                   opts: Any, s3: Any, bucket: str) -> None:
    archive = _collection_archive(tmp_path, [shards["ints"], shards["uuids"]])
    url = f"s3://{bucket}/backups/docs.snapshot"
    s3.put(str(archive), url.removeprefix("s3://"))
    out = tmp_path / "out.jsonl"
    report = vecferry.convert(url, str(out), storage_options=opts)
    assert report["written"] == 37
    assert dump_stream(str(out)) == normalize(shards["points"])
    assert _tmp_files() == []  # the local copy of the archive is gone
