"""Qdrant snapshots: the REST flows against the loopback stand-in (``qdrant_standin``), offline
reading of snapshot archives built in Qdrant's layout from real Edge shards, extraction safety,
and (when ``QDRANT_URL`` is set) the same against a real server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import vecferry
from qdrant_helpers import dump_stream, edge_shards, link_tree, make_local, normalize, source_points
from qdrant_standin import Fault, QdrantStandIn
from vecferry.cli import main
from vecferry.errors import (
    InputError,
    OutputExistsError,
    TargetError,
    UnsupportedError,
    UsageError,
    VerificationError,
)
from vecferry.snapshots import (
    PART_SUFFIX,
    ChecksumMismatchError,
    SnapshotClient,
    copy_collection,
    parse_target,
)

pytest.importorskip("qdrant_edge")


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.001")



# ------------------------------------------------------------------------------ locations


def test_parse_target_kinds() -> None:
    assert parse_target("qdrant://h:1/docs").path == "/collections/docs/snapshots"
    assert parse_target("qdrant://h:1/docs", shard=3).path == \
        "/collections/docs/shards/3/snapshots"
    full = parse_target("qdrant://h:1")
    assert full.kind == "full" and full.path == "/snapshots"
    assert parse_target("qdrants://h/docs").base_url == "https://h:6333"
    with pytest.raises(UsageError, match="REST"):
        parse_target("qdrant://h/docs?grpc=1")
    with pytest.raises(UsageError, match="key"):
        parse_target("qdrant://h/docs?api_key=secret")
    with pytest.raises(UsageError):
        parse_target("qdrant-local://./x/docs")


# ------------------------------------------------------------------------------ REST flows


def test_create_list_delete_and_full(stand: QdrantStandIn, tmp_path: Path) -> None:
    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
        assert snap and snap["checksum"] and snap["size"] > 200_000
        assert [s["name"] for s in c.list()] == [snap["name"]]
        assert c.create(wait=False) is None  # accepted, made in the background
        assert c.delete(snap["name"])
        assert snap["name"] not in [s["name"] for s in c.list()]
        with pytest.raises(InputError, match="no snapshot named"):
            c.download("nope.snapshot", tmp_path / "x")
    with SnapshotClient(f"qdrant://127.0.0.1:{stand.port}") as full:
        snap = full.create()
        got = full.download(snap["name"], tmp_path / "full.snapshot")
        assert got["verified"] and got["sha256"] == snap["checksum"]
        with pytest.raises(UsageError, match="storage-snapshot"):
            full.upload(tmp_path / "full.snapshot")
        with pytest.raises(UsageError, match="full-instance"):
            full.recover("http://127.0.0.1:1/x")


def test_download_checksum_mismatch_detected(stand: QdrantStandIn, tmp_path: Path) -> None:
    out = tmp_path / "s.snapshot"
    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
        stand.add_fault(Fault("snapshot_download", "corrupt"))
        with pytest.raises(ChecksumMismatchError, match=snap["checksum"]) as err:
            c.download(snap["name"], out)
        assert err.value.exit_code == 4
        assert not out.exists() and not Path(str(out) + PART_SUFFIX).exists()
        # the next attempt is clean
        assert c.download(snap["name"], out)["verified"]
        assert hashlib.sha256(out.read_bytes()).hexdigest() == snap["checksum"]


def test_interrupted_download_resumes_with_range(stand: QdrantStandIn, tmp_path: Path) -> None:
    out = tmp_path / "s.snapshot"
    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
        stand.add_fault(Fault("snapshot_download", "truncate"))
        got = c.download(snap["name"], out, chunk_size=4096)
        assert got["verified"] and got["resumed_at"] and got["resumed_at"][0] > 0
        ranges = [e["range"] for e in stand.snapshot_log if e["op"] == "snapshot_download"]
        assert ranges == [None, f"bytes={got['resumed_at'][0]}-"]
        assert hashlib.sha256(out.read_bytes()).hexdigest() == snap["checksum"]

        # a partial left by an earlier run is continued, not fetched again
        data = out.read_bytes()
        out2 = tmp_path / "t.snapshot"
        Path(str(out2) + PART_SUFFIX).write_bytes(data[:100_000])
        got = c.download(snap["name"], out2)
        assert got["resumed_from"] == 100_000 and out2.read_bytes() == data
        assert stand.snapshot_log[-1]["range"] == "bytes=100000-"

        # a damaged partial from an earlier run: detected, and fetched again from the start
        out3 = tmp_path / "u.snapshot"
        Path(str(out3) + PART_SUFFIX).write_bytes(b"\xff" * 1000)
        assert c.download(snap["name"], out3)["verified"] and out3.read_bytes() == data

        with pytest.raises(OutputExistsError):
            c.download(snap["name"], out3)


def test_download_without_range_support_restarts(stand: QdrantStandIn, tmp_path: Path) -> None:
    stand.snapshot_ranges = False
    out = tmp_path / "s.snapshot"
    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
        stand.add_fault(Fault("snapshot_download", "truncate"))
        got = c.download(snap["name"], out)
        assert got["verified"] and not got["range_supported"]
        assert hashlib.sha256(out.read_bytes()).hexdigest() == snap["checksum"]


def test_download_checks_disk_space(stand: QdrantStandIn, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import vecferry.snapshots as snapshots

    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
        monkeypatch.setattr(snapshots.shutil, "disk_usage",
                            lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
        with pytest.raises(TargetError, match="not enough disk space"):
            c.download(snap["name"], tmp_path / "s.snapshot")


def test_multipart_upload_with_checksum_and_priority(stand: QdrantStandIn,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "s.snapshot"
    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
        c.download(snap["name"], out)
    with QdrantStandIn() as other, SnapshotClient(other.location("restored")) as d:
        seen: list[tuple[str, int, int | None]] = []
        got = d.upload(out, priority="snapshot", progress=lambda *a: seen.append(a))
        entry = other.snapshot_log[-1]
        assert entry["content_type"].startswith("multipart/form-data; boundary=")
        assert entry["query"] == {"wait": "true", "priority": "snapshot",
                                  "checksum": snap["checksum"]}
        assert got["sha256"] == snap["checksum"]
        assert d.count() == 37
        assert ("upload", out.stat().st_size, out.stat().st_size) in seen
        assert dump_stream(other.location("restored")) == dump_stream(stand.location("docs"))
        # "restored" holds points now: a second recovery would replace them
        with pytest.raises(OutputExistsError) as held:
            d.upload(out)
        assert str(held.value) == (
            f"{other.location('restored')}: the collection exists and holds 37 points, which "
            "recovering a snapshot replaces (pass --overwrite to replace it, or recover into a "
            "new collection)")
        assert d.upload(out, overwrite=True)["sha256"] == snap["checksum"]
        # a damaged upload is refused by the server through the checksum
        with pytest.raises(ChecksumMismatchError):
            d.upload(out, checksum="0" * 64, overwrite=True)
        with pytest.raises(UsageError, match="priority"):
            d.upload(out, priority="sideways")


def test_recover_from_url(stand: QdrantStandIn) -> None:
    with SnapshotClient(stand.location("docs")) as c:
        snap = c.create()
        url = c.target.url_of(snap["name"])
    with QdrantStandIn() as other, SnapshotClient(other.location("docs")) as d:
        d.recover(url, priority="replica", checksum=snap["checksum"])
        assert other.snapshot_log[-1]["priority"] == "replica"
        assert d.count() == 37
        with pytest.raises(OutputExistsError):
            d.recover(url)
        with pytest.raises(ChecksumMismatchError):
            d.recover(url, checksum="1" * 64, overwrite=True)


def test_copy_counts_and_cleans_up(stand: QdrantStandIn, tmp_path: Path) -> None:
    steps: set[str] = set()
    with QdrantStandIn() as other:
        work = tmp_path / "work"
        work.mkdir()
        report = copy_collection(stand.location("docs"), other.location("copy"),
                                 workdir=work, progress=lambda s, d, t: steps.add(s))
        assert report["ok"] and report["source_count"] == report["destination_count"] == 37
        assert steps >= {"count", "create", "download", "upload"}
        assert list(work.iterdir()) == []  # local file removed
        assert stand.snapshots["docs"] == {}  # snapshot on the source removed
        uploads = [e for e in other.snapshot_log if e["op"] == "snapshot_upload"]
        assert uploads[-1]["query"]["priority"] == "snapshot"
        # "copy" holds points now: a second copy is refused before a snapshot is made
        with pytest.raises(OutputExistsError):
            copy_collection(stand.location("docs"), other.location("copy"), workdir=work)
        assert stand.snapshots["docs"] == {} and list(work.iterdir()) == []
        again = copy_collection(stand.location("docs"), other.location("copy"), workdir=work,
                                overwrite=True)
        assert again["ok"] and again["destination_count"] == 37
        # --keep: the downloaded file stays in the work directory, nothing else does
        kept = copy_collection(stand.location("docs"), other.location("copy"), workdir=work,
                               overwrite=True, keep=True)["kept"]
        assert list(work.iterdir()) == [Path(kept["file"])]
        assert Path(kept["file"]).stat().st_size > 0 and kept["snapshot"] in stand.snapshots["docs"]


def test_copy_count_mismatch_is_a_verification_error(stand: QdrantStandIn,
                                                     tmp_path: Path) -> None:
    with QdrantStandIn() as other:
        # the source changes between the count and the snapshot: the copy lacks a point
        stand.add_fault(Fault("snapshot_create", "delay", seconds=0.0))
        original = stand.engine.count

        def fake_count(*a: Any, **k: Any) -> Any:
            result = original(*a, **k)
            return type(result)(count=result.count + 1)

        stand.engine.count = fake_count  # type: ignore[method-assign]
        with pytest.raises(VerificationError, match="holds 37 points"):
            copy_collection(stand.location("docs"), other.location("copy"), workdir=tmp_path)


def test_errors_permission_version_and_retries(stand: QdrantStandIn, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with SnapshotClient(stand.location("docs")) as c:
        stand.add_fault(Fault("snapshot_create", "403", message="Forbidden: read-only key"))
        with pytest.raises(TargetError, match="HTTP 403") as err:
            c.create()
        assert "API key" in (err.value.hint or "")
        stand.add_fault(Fault("snapshot_create", "503", times=2))
        assert c.create()["name"]
        snap = c.create()
        out = tmp_path / "s.snapshot"
        c.download(snap["name"], out)
        stand.add_fault(Fault("snapshot_upload", "400",
                              message="Wrong input: Snapshot is not compatible with this "
                                      "Qdrant version"))
        with pytest.raises(TargetError, match="version") as err:
            c.upload(out, overwrite=True)
        assert "version" in (err.value.hint or "")
    stand.add_fault(Fault("snapshot_list", "503", times=None))
    with pytest.raises(TargetError, match="failed after"), \
            SnapshotClient(stand.location("docs"), max_retries=1) as c:
        c.list()


def test_api_key_in_header_only(local_src: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    with QdrantStandIn(api_key=secret) as server:
        monkeypatch.setenv("QDRANT_API_KEY", secret)
        vecferry.convert(local_src, server.location("docs"))
        with SnapshotClient(server.location("docs")) as c:
            assert c.create()["name"]
        monkeypatch.setenv("OTHER_KEY", "wrong-" + secret)
        with pytest.raises(TargetError) as err, \
                SnapshotClient(server.location("docs"), api_key_env="OTHER_KEY") as c:
            c.list()
        assert secret not in str(err.value) and secret not in repr(err.value.as_dict())
        assert all(secret not in json.dumps(e) for e in server.snapshot_log)


def test_cli_flow_and_exit_codes(stand: QdrantStandIn, tmp_path: Path) -> None:
    runner = CliRunner()
    loc = stand.location("docs")
    r = runner.invoke(main, ["snapshot", "create", loc, "--json"])
    assert r.exit_code == 0, r.output
    name = json.loads(r.stdout)["snapshot"]["name"]
    r = runner.invoke(main, ["snapshot", "list", loc])
    assert r.exit_code == 0 and name in r.stdout
    out = tmp_path / "b.snapshot"
    r = runner.invoke(main, ["snapshot", "download", loc, name, "--out", str(out), "-q"])
    assert r.exit_code == 0 and out.exists()
    stand.add_fault(Fault("snapshot_download", "corrupt"))
    r = runner.invoke(main, ["snapshot", "download", loc, name, "--out", str(tmp_path / "c")])
    assert r.exit_code == 4 and "SHA-256" in r.stderr
    r = runner.invoke(main, ["snapshot", "download", loc, name, "--out", str(out)])
    assert r.exit_code == 2  # exists
    with QdrantStandIn() as other:
        r = runner.invoke(main, ["snapshot", "upload", str(out), other.location("up"),
                                 "--priority", "no_sync"])
        assert r.exit_code == 0, r.output
        assert other.snapshot_log[-1]["query"]["priority"] == "no_sync"
        r = runner.invoke(main, ["snapshot", "restore", other.location("up"), "--from",
                                 str(out)])
        assert r.exit_code == 2 and "upload" in r.stderr
        r = runner.invoke(main, ["snapshot", "copy", loc, other.location("cp"), "--workdir",
                                 str(tmp_path), "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["destination_count"] == 37
    r = runner.invoke(main, ["snapshot", "delete", loc, name])
    assert r.exit_code == 0
    r = runner.invoke(main, ["snapshot", "delete", loc, name])
    assert r.exit_code == 1


# ---------------------------------------------------------------- offline: archive building


def _tar_dir(stage: Path, out: Path, *, dense: bool = False) -> Path:
    """Archive ``stage`` as ``./...``: GNU tar with sparse members when available (fast and
    small), else (or with ``dense``) Python's tarfile writing every zero, as Qdrant does."""
    if not dense and shutil.which("tar"):
        subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(stage), "-cf", str(out),
                        "."], check=True)
    else:
        with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
            tar.add(stage, arcname=".")
    return out


def _stage_shard(shard: Path, stage: Path, *, streamable: bool = False,
                 dense: bool = False) -> None:
    """``stage`` laid out as Qdrant's shard snapshot of the Edge shard ``shard``."""
    (stage / "segments").mkdir(parents=True)
    (stage / "wal").mkdir()
    for seg in (shard / "segments").iterdir():
        if not seg.is_dir():
            continue
        if streamable:
            link_tree(seg, stage / "segments" / seg.name / "files")
        else:
            inner = stage.parent / f"seg-{seg.name}"
            link_tree(seg, inner / "snapshot" / "files")
            _tar_dir(inner, stage / "segments" / f"{seg.name}.tar", dense=dense)
    (stage / "shard_config.json").write_text('{"type":"Local"}')
    (stage / "replica_state.json").write_text('{"this_peer_id":1,"peers":{"1":"Active"}}')
    (stage / "newest_clocks.json").write_text('{"clocks":[]}')


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return edge_shards(tmp_path_factory.mktemp("edge"), whole=True)


def _collection_config() -> dict[str, Any]:
    return {"params": {"vectors": {"d": {"size": 8, "distance": "Dot"}}, "shard_number": 2,
                       "replication_factor": 1, "on_disk_payload": True},
            "hnsw_config": {"m": 24, "ef_construct": 64, "full_scan_threshold": 10000},
            "optimizer_config": {"indexing_threshold": 20000},
            "wal_config": {"wal_capacity_mb": 32}, "quantization_config": None}


def _collection_archive(tmp: Path, shard_dirs: list[Path], mapping: Any = None,
                        **kw: Any) -> Path:
    stage = tmp / "coll"
    for i, shard in enumerate(shard_dirs):
        _stage_shard(shard, stage / str(i), **kw)
    (stage / "config.json").write_text(json.dumps(_collection_config()))
    (stage / "version.info").write_text("1.15.0")
    (stage / "payload_index.json").write_text(json.dumps({"schema": {"lang": "keyword"}}))
    (stage / "shard_key_mapping.json").write_text(json.dumps({} if mapping is None
                                                             else mapping))
    return _tar_dir(stage, tmp / "backup.snapshot", dense=kw.get("dense", False))


# ---------------------------------------------------------------------- offline: reading


def test_shard_snapshot_python_tar_dense(shards: dict[str, Any], tmp_path: Path) -> None:
    """Qdrant writes every zero of its preallocated files; extraction keeps them sparse."""
    stage = tmp_path / "stage"
    _stage_shard(shards["all"], stage, dense=True)
    archive = _tar_dir(stage, tmp_path / "shard.snapshot", dense=True)
    out = tmp_path / "out.parquet"
    report = vecferry.convert(str(archive), str(out))
    assert report["written"] == 37
    assert dump_stream(str(out)) == normalize(shards["points"])

    from vecferry.converters.snapshot import SnapshotArchive

    arch = SnapshotArchive(str(archive))
    try:
        dest = arch.extract_shard(arch.shards[0], tmp_path / "x")
    finally:
        arch.close()
    big = [p for p in dest.rglob("*") if p.is_file() and p.stat().st_size >= 1 << 20]
    assert big and all(p.stat().st_blocks * 512 < p.stat().st_size // 4 for p in big)
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_collection_snapshot_two_shards(shards: dict[str, Any], tmp_path: Path) -> None:
    archive = _collection_archive(tmp_path, [shards["ints"], shards["uuids"]])
    from vecferry.converters import open_reader

    reader = open_reader(str(archive))
    try:
        m = reader.manifest
        assert m.count == 37 and m.id_kind == "mixed"
        assert m.source["snapshot"] == "collection" and m.source["shards"] == [0, 1]
        assert m.collection["hnsw_config"]["m"] == 24
        assert m.collection["shard_number"] == 2
        assert m.collection["payload_schema"]["lang"]["data_type"] == "keyword"
        # resume in the second shard
        tail = sum(b.num_rows for b in reader.batches(5, start=shards["n_ints"] + 2))
        assert tail == 37 - shards["n_ints"] - 2
        # one shard on disk at a time
        assert len(list(reader.tmp.iterdir())) <= 1
    finally:
        reader.close()
    assert not reader.tmp.exists()
    out = tmp_path / "out.jsonl"
    vecferry.convert(str(archive), str(out), batch_size=7)
    assert dump_stream(str(out)) == normalize(shards["points"])

    from vecferry.inspect import inspect_location

    info = inspect_location(str(archive), sample=10)
    assert info["format"] == "snapshot" and info["count"] == 37


@pytest.mark.parametrize("mapping", [
    [{"key": "en", "shard_ids": [0]}, {"key": 7, "shard_ids": [1]}],  # keeps integer keys
    {"en": [0], "7": [1]},  # the older format: keys as text
])
def test_a_custom_sharded_snapshot_names_each_points_shard_key(
        shards: dict[str, Any], tmp_path: Path, mapping: Any) -> None:
    from vecferry.converters import open_reader
    from vecferry.converters.qdrant import SHARD_KEY_FIELD

    archive = _collection_archive(tmp_path, [shards["ints"], shards["uuids"]], mapping=mapping)
    second = 7 if isinstance(mapping, list) else "7"
    reader = open_reader(str(archive))
    try:
        assert reader.manifest.collection["sharding_method"] == "custom"
        assert reader.manifest.collection["shard_keys"] == ["en", second]
    finally:
        reader.close()
    out = tmp_path / "out.jsonl"
    vecferry.convert(str(archive), str(out), batch_size=7)
    want = source_points()
    for p in want:
        p["payload"] = {**p["payload"],
                        SHARD_KEY_FIELD: "en" if isinstance(p["id"], int) else second}
    assert dump_stream(str(out)) == normalize(want)
    # a server collection restored from it gets the keys, each point in its own
    with QdrantStandIn() as server:
        report = vecferry.convert(str(out), server.location("docs"), workers=1)
        assert report["shard_keys"] == ["en", second]
        assert server.point_keys["docs"] == {
            str(p["id"]): "en" if isinstance(p["id"], int) else second for p in want}


def test_a_damaged_shard_key_mapping_is_named(shards: dict[str, Any], tmp_path: Path) -> None:
    from vecferry.converters import open_reader

    archive = _collection_archive(tmp_path, [shards["ints"]], mapping=[{"key": "en"}])
    with pytest.raises(InputError) as info:
        open_reader(str(archive))
    assert str(info.value) == (f"{archive}: shard_key_mapping.json is not a shard key mapping "
                               "('shard_ids') (the snapshot may be damaged; take it again)")


def test_streamable_segments_and_full_snapshot(shards: dict[str, Any], tmp_path: Path) -> None:
    coll = _collection_archive(tmp_path, [shards["all"]], streamable=True)
    out = tmp_path / "a.parquet"
    vecferry.convert(str(coll), str(out))
    assert dump_stream(str(out)) == normalize(shards["points"])

    full = tmp_path / "full"
    full.mkdir()
    os.link(coll, full / "docs.snapshot")
    (full / "config.json").write_text('{"collections": {"docs": {}}, "aliases": {}}')
    archive = _tar_dir(full, tmp_path / "full.snapshot")
    out2 = tmp_path / "b.parquet"
    vecferry.convert(str(archive), str(out2))
    assert dump_stream(str(out2)) == normalize(shards["points"])


def test_cli_convert_and_inspect_snapshot(shards: dict[str, Any], tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    _stage_shard(shards["all"], stage)
    archive = _tar_dir(stage, tmp_path / "backup.snapshot")
    runner = CliRunner()
    r = runner.invoke(main, ["inspect", str(archive), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == 37
    r = runner.invoke(main, ["convert", str(archive), str(tmp_path / "o.parquet"), "-q"])
    assert r.exit_code == 0, r.output


# -------------------------------------------------------------------------- offline: safety


def _evil(tmp_path: Path, add: Any) -> Path:
    path = tmp_path / "evil.snapshot"
    with tarfile.open(path, "w") as tar:
        seg = tarfile.TarInfo("segments")
        seg.type = tarfile.DIRTYPE
        tar.addfile(seg)
        add(tar)
    return path


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _dev(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("segments/null")
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


@pytest.mark.parametrize("add, message", [
    (lambda t: _file(t, "../outside"), "leaves the extraction"),
    (lambda t: _file(t, "/etc/evil"), "absolute path"),
    (lambda t: _file(t, "segments/../../x"), "leaves the extraction"),
    (lambda t: _link(t, "segments/l", "../../../etc/passwd", tarfile.SYMTYPE), "outside"),
    (lambda t: _link(t, "segments/l", "/etc/passwd", tarfile.SYMTYPE), "absolute"),
    (lambda t: _link(t, "segments/h", "../x", tarfile.LNKTYPE), "outside"),
    (_dev, "device"),
], ids=["dotdot", "absolute", "nested-dotdot", "symlink-escape", "symlink-absolute",
        "hardlink-escape", "device"])
def test_unsafe_archives_refused(tmp_path: Path, add: Any, message: str) -> None:
    from vecferry.converters import open_reader
    from vecferry.converters.snapshot import UnsafeArchiveError

    path = _evil(tmp_path, add)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        open_reader(str(path), workdir=str(work))
    assert list(work.iterdir()) == []
    assert not (tmp_path / "outside").exists()


def test_unsafe_member_inside_a_segment_tar_refused(tmp_path: Path) -> None:
    from vecferry.converters.snapshot import SnapshotArchive, UnsafeArchiveError

    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as t:
        _link(t, "snapshot/files/l", "../../../../../etc/passwd", tarfile.SYMTYPE)
    path = _evil(tmp_path, lambda t: _file(t, f"segments/{uuid.uuid4()}.tar",
                                           inner.getvalue()))
    arch = SnapshotArchive(str(path))
    try:
        with pytest.raises(UnsafeArchiveError, match="outside"):
            arch.extract_shard(arch.shards[0], tmp_path / "x")
    finally:
        arch.close()


def test_internal_links_become_copies(tmp_path: Path) -> None:
    from vecferry.converters.snapshot import SnapshotArchive

    def add(t: tarfile.TarFile) -> None:
        _file(t, "segments/a/data", b"hello")
        _link(t, "segments/a/sym", "data", tarfile.SYMTYPE)
        _link(t, "segments/a/hard", "segments/a/data", tarfile.LNKTYPE)

    arch = SnapshotArchive(str(_evil(tmp_path, add)))
    try:
        dest = arch.extract_shard(arch.shards[0], tmp_path / "x")
    finally:
        arch.close()
    for name in ("sym", "hard"):
        p = dest / "segments" / "a" / name
        assert not p.is_symlink() and p.read_bytes() == b"hello"


def test_links_inside_a_collection_snapshot_and_a_streamable_segment(tmp_path: Path) -> None:
    # links name their targets by archive name ("0/segments/...", ".../files/..."), while the
    # files are written without the shard's "0/" and the streamable "files/" level
    from vecferry.converters.snapshot import SnapshotArchive

    path = tmp_path / "coll.snapshot"
    with tarfile.open(path, "w") as tar:
        _file(tar, "config.json", json.dumps(_collection_config()).encode())
        _file(tar, "0/segments/a/data", b"hello")
        _link(tar, "0/segments/a/sym", "data", tarfile.SYMTYPE)
        _link(tar, "0/segments/a/hard", "0/segments/a/data", tarfile.LNKTYPE)
        _file(tar, "0/segments/b/files/data", b"world")
        _link(tar, "0/segments/b/files/sym", "data", tarfile.SYMTYPE)
        _link(tar, "0/segments/b/files/hard", "0/segments/b/files/data", tarfile.LNKTYPE)
    arch = SnapshotArchive(str(path))
    try:
        dest = arch.extract_shard(arch.shards[0], tmp_path / "x")
    finally:
        arch.close()
    for seg, text in (("a", b"hello"), ("b", b"world")):
        for name in ("data", "sym", "hard"):
            p = dest / "segments" / seg / name
            assert not p.is_symlink() and p.read_bytes() == text


def test_a_member_inside_a_file_member_is_refused(tmp_path: Path) -> None:
    from vecferry.converters.snapshot import SnapshotArchive

    def add(t: tarfile.TarFile) -> None:
        _file(t, "segments/a", b"a file")
        _file(t, "segments/a/data", b"inside it")

    path = _evil(tmp_path, add)
    arch = SnapshotArchive(str(path))
    try:
        with pytest.raises(InputError) as info:
            arch.extract_shard(arch.shards[0], tmp_path / "x")
    finally:
        arch.close()
    assert str(info.value) == (f"{path}: archive member 'segments/a/data' is inside a path that "
                               "is a file (the snapshot file is damaged; download it again)")


def test_rocksdb_segment_refused_clearly(tmp_path: Path) -> None:
    from vecferry.converters import open_reader

    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as t:
        _file(t, "snapshot/files/segment.json", b"{}")
        _file(t, "snapshot/payload_index_backup/CURRENT", b"MANIFEST-000001\n")
    path = _evil(tmp_path, lambda t: _file(t, f"segments/{uuid.uuid4()}.tar",
                                           inner.getvalue()))
    with pytest.raises(UnsupportedError, match="RocksDB") as err:
        open_reader(str(path))
    assert "convert" in (err.value.hint or "")


def test_unreadable_segment_is_a_clear_error(tmp_path: Path) -> None:
    from vecferry.converters import open_reader

    path = _evil(tmp_path, lambda t: _file(t, f"segments/{uuid.uuid4()}/segment.json",
                                           b'{"version": 999, "config": "garbage"}'))
    with pytest.raises(UnsupportedError, match="Qdrant Edge cannot load"):
        open_reader(str(path))


def test_not_a_snapshot_and_space_check(shards: dict[str, Any], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from vecferry.converters import open_reader

    bogus = tmp_path / "x.snapshot"
    bogus.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InputError, match="not a tar"):
        open_reader(str(bogus))
    plain = tmp_path / "y.snapshot"
    with tarfile.open(plain, "w") as t:
        _file(t, "hello.txt")
    with pytest.raises(InputError, match="not a Qdrant snapshot"):
        open_reader(str(plain))

    stage = tmp_path / "stage"
    _stage_shard(shards["all"], stage)
    archive = _tar_dir(stage, tmp_path / "s.snapshot")
    import vecferry.converters.snapshot as snap_mod

    monkeypatch.setattr(snap_mod.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    with pytest.raises(TargetError, match="not enough temporary space"):
        open_reader(str(archive))


def test_choosing_a_collection_in_a_snapshot(shards: dict[str, Any], tmp_path: Path) -> None:
    from vecferry.converters import open_reader

    coll = _collection_archive(tmp_path, [shards["all"]])
    with pytest.raises(UsageError) as info:
        open_reader(str(coll), collection="docs")
    assert str(info.value) == (f"{coll}: --snapshot-collection (the reader option collection) "
                               "applies to full-instance snapshots only; this is a collection "
                               "snapshot (drop --snapshot-collection)")
    full = tmp_path / "full"
    full.mkdir()
    for name in ("docs", "news"):
        os.link(coll, full / f"{name}.snapshot")
    (full / "config.json").write_text('{"collections": {"docs": {}, "news": {}}, "aliases": {}}')
    archive = _tar_dir(full, tmp_path / "full.snapshot")
    with pytest.raises(UsageError) as info:
        open_reader(str(archive))
    assert str(info.value) == (f"{archive}: a full-instance snapshot holding 2 collections "
                               "(docs, news) (choose one with --snapshot-collection NAME, or the "
                               "reader option collection=NAME)")
    with pytest.raises(InputError) as info:
        open_reader(str(archive), collection="nope")
    assert str(info.value) == (f"{archive}: the full snapshot holds no collection 'nope' "
                               "(it holds: docs, news)")
    out = tmp_path / "news.parquet"
    vecferry.convert(str(archive), str(out), reader_options={"collection": "news"})
    assert dump_stream(str(out)) == normalize(shards["points"])
    with pytest.raises(InputError) as info:
        open_reader(str(full), format="snapshot")
    assert str(info.value) == (f"{full}: a snapshot is a file, not a directory (for an Edge "
                               "shard directory use qdrant-edge://PATH)")
    with pytest.raises(UsageError) as info:
        open_reader(str(coll), workdir=str(tmp_path / "nowhere"))
    assert str(info.value) == f"{tmp_path}/nowhere: work directory does not exist"


def test_damaged_or_empty_snapshots_are_named(shards: dict[str, Any], tmp_path: Path) -> None:
    from vecferry.converters import open_reader

    coll = _collection_archive(tmp_path, [shards["all"]])
    cut = tmp_path / "cut.snapshot"
    cut.write_bytes(coll.read_bytes()[: coll.stat().st_size // 2])
    with pytest.raises(InputError) as info:
        open_reader(str(cut))
    assert str(info.value).startswith(f"{cut}: the snapshot archive is damaged: ")
    assert str(info.value).endswith("(the file may be truncated; download it again)")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(_collection_config()))
    archive = _tar_dir(bare, tmp_path / "bare.snapshot")
    with pytest.raises(InputError) as info:
        open_reader(str(archive))
    assert str(info.value) == (
        f"{archive}: the collection snapshot holds no local shard data (in a cluster, each "
        "node's snapshot holds only its own shards; take the snapshot on a node that has them)")
    (bare / "config.json").write_text("{not json")
    archive = _tar_dir(bare, tmp_path / "bad.snapshot")
    with pytest.raises(InputError) as info:
        open_reader(str(archive))
    assert str(info.value).startswith(f"{archive}: config.json is not JSON: ")


def test_search_parity_over_several_shards_is_skipped(shards: dict[str, Any],
                                                      tmp_path: Path) -> None:
    from vecferry.verification import verify

    two = _collection_archive(tmp_path, [shards["ints"], shards["uuids"]])
    report = verify(str(two), str(two), queries=3)
    assert report["ok"] and "search" not in report
    assert report["warnings"] == [f"search parity skipped: {two} is a snapshot of 2 shards, "
                                  "which cannot be searched as one"]


# --------------------------------------------------------------------------- real server

URL = os.environ.get("QDRANT_URL")


@pytest.mark.server
@pytest.mark.skipif(not URL, reason="set QDRANT_URL to test a real Qdrant server")
def test_real_server_snapshot_round_trip(tmp_path: Path) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(URL or "")
    scheme = "qdrants" if parts.scheme == "https" else "qdrant"
    base = f"{scheme}://{parts.hostname}:{parts.port or 6333}"
    name = f"vecferry_snap_{uuid.uuid4().hex[:8]}"
    copy_name = name + "_copy"
    src = f"{base}/{name}"
    vecferry.convert(make_local(tmp_path / "src"), src)
    try:
        with SnapshotClient(src) as c:
            snap = c.create()
            out = tmp_path / "real.snapshot"
            got = c.download(snap["name"], out)
            assert got["verified"]
            c.delete(snap["name"])
        try:
            back = tmp_path / "back.parquet"
            vecferry.convert(str(out), str(back))
            assert dump_stream(str(back)) == normalize(source_points())
        except UnsupportedError as exc:  # a storage format Edge cannot read: said clearly
            pytest.skip(f"offline read not possible for this server's snapshot: {exc}")
        report = copy_collection(src, f"{base}/{copy_name}", workdir=tmp_path)
        assert report["destination_count"] == 37
    finally:
        from qdrant_client import QdrantClient

        client = QdrantClient(url=URL, api_key=os.environ.get("QDRANT_API_KEY"))
        for n in (name, copy_name):
            client.delete_collection(n)
        client.close()


SNAPSHOT_USAGE = [
    (lambda tmp: parse_target("qdrant://db:6333", shard=1),
     "qdrant://db:6333: --shard needs a collection (qdrant://HOST:PORT/COLLECTION)"),
    (lambda tmp: parse_target("qdrant://db:6333/docs", shard=-1),
     "qdrant://db:6333/docs: a shard id is a non-negative integer"),
    (lambda tmp: SnapshotClient("qdrant://db:6333/docs", timeout=0),
     "--timeout must be a positive number of seconds, not 0"),
    (lambda tmp: SnapshotClient("qdrant://db:6333").count(),
     "counting needs a collection"),
    (lambda tmp: copy_collection("qdrant://db:6333", "qdrant://db2:6333/docs"),
     "qdrant://db:6333: snapshot copy moves one collection "
     "(give qdrant://HOST:PORT/COLLECTION on both sides)"),
    (lambda tmp: copy_collection("qdrant://db:6333/a", "qdrant://db2:6333/b", priority="now"),
     "unknown priority 'now' (one of snapshot, replica, no_sync)"),
    (lambda tmp: copy_collection("qdrant://db:6333/a", "qdrant://db2:6333/b",
                                 workdir=tmp / "nowhere"),
     "{tmp}/nowhere: work directory does not exist"),
]


@pytest.mark.parametrize(("call", "message"), SNAPSHOT_USAGE)
def test_snapshot_usage_errors_need_no_server(tmp_path, call, message):
    with pytest.raises(UsageError) as info:
        call(tmp_path)
    assert str(info.value) == message.format(tmp=tmp_path)
