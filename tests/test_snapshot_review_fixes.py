"""Fixes from the review of the snapshot area: a snapshot cut at an entry boundary, verify of a
multi-shard snapshot, API keys with stray whitespace, downloads over a directory, choosing a
collection of a full-instance snapshot from the CLI, unverified downloads under -q, and what
interrupted or failed downloads and copies say they left.

Snapshots are built in Qdrant's layout from real Edge shards (as tests/test_snapshots.py does)
with GNU tar (sparse: Edge preallocates its files), and ended as each writer ends them; the
server is the loopback stand-in (``qdrant_standin``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import qdrant_standin
import vecferry
from qdrant_helpers import (
    create_snapshot,
    dump_stream,
    edge_shards,
    link_tree,
    normalize,
)
from qdrant_standin import Fault, QdrantStandIn
from vecferry.cli import main
from vecferry.errors import InputError, TargetError
from vecferry.snapshots import PART_SUFFIX, SnapshotClient, copy_collection

pytest.importorskip("qdrant_edge")
if shutil.which("tar") is None:  # Python's tarfile writes every preallocated zero (GBs)
    pytest.skip("GNU tar builds the sparse snapshot archives", allow_module_level=True)

KEY = "sekret-KEY-123abc"
VECFERRY = str(Path(sys.executable).with_name("vecferry"))


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.001")


def _cli(*args: Any, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


# ---------------------------------------------------------------------- archive building


def _end_as_qdrant(path: Path) -> Path:
    """``path`` ended as Qdrant's writer (the Rust ``tar`` crate) ends it: the two zero blocks
    of the end-of-archive marker right after the last member, no record padding."""
    with tarfile.open(path) as tar:
        tar.getmembers()
        end = tar.offset
    os.truncate(path, end + 1024)
    assert path.read_bytes()[end:] == bytes(1024)
    return path


def _tar(stage: Path, out: Path, writer: str) -> Path:
    """``stage`` archived by GNU tar (zero padding up to its 10240-byte record) or ended as
    Qdrant ends it (``writer`` "gnu" or "qdrant")."""
    subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(stage), "-cf", str(out), "."],
                   check=True)
    return _end_as_qdrant(out) if writer == "qdrant" else out


def _stage_shard(shards: list[Path], stage: Path, writer: str) -> None:
    """``stage`` laid out as a shard snapshot holding the segments of every Edge shard of
    ``shards``, each a nested segment tar."""
    (stage / "segments").mkdir(parents=True)
    (stage / "wal").mkdir()
    for shard in shards:
        for seg in sorted((shard / "segments").iterdir()):
            inner = stage.parent / f"seg-{stage.name}-{seg.name}"
            link_tree(seg, inner / "snapshot" / "files")
            _tar(inner, stage / "segments" / f"{seg.name}.tar", writer)
    (stage / "shard_config.json").write_text('{"type":"Local"}')


def _shard_snapshot(shards: list[Path], out: Path, writer: str = "gnu") -> Path:
    stage = out.with_suffix(".stage")
    _stage_shard(shards, stage, writer)
    return _tar(stage, out, writer)


def _collection_snapshot(shards: list[Path], out: Path, writer: str = "gnu") -> Path:
    stage = out.with_suffix(".stage")
    for i, shard in enumerate(shards):
        _stage_shard([shard], stage / str(i), writer)
    (stage / "config.json").write_text(json.dumps(
        {"params": {"vectors": {"d": {"size": 8, "distance": "Dot"}},
                    "shard_number": len(shards), "replication_factor": 1}}))
    (stage / "version.info").write_text("1.15.0")
    (stage / "payload_index.json").write_text('{"schema": {}}')
    (stage / "shard_key_mapping.json").write_text("{}")
    return _tar(stage, out, writer)


def _full_snapshot(collections: dict[str, Path], out: Path, writer: str = "gnu") -> Path:
    """A full-instance snapshot: one collection snapshot per collection, and config.json."""
    stage = out.with_suffix(".stage")
    stage.mkdir()
    for name, shard in collections.items():
        _collection_snapshot([shard], stage / f"{name}.snapshot", writer)
    (stage / "config.json").write_text(json.dumps(
        {"collections": {n: {} for n in collections}, "aliases": {}}))
    for tmp in stage.glob("*.stage"):
        shutil.rmtree(tmp)
    for tmp in stage.glob("seg-*"):
        shutil.rmtree(tmp)
    return _tar(stage, out, writer)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return edge_shards(tmp_path_factory.mktemp("edge"))


# -------------------------------------------------- A1: the end-of-archive marker is required


def test_a_snapshot_cut_at_the_second_entrys_header_is_truncated(shards: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    whole = _shard_snapshot([shards["ints"], shards["uuids"]], tmp_path / "two.snapshot")
    with tarfile.open(whole) as tar:
        members = tar.getmembers()
    segments = [i for i, m in enumerate(members) if m.name.endswith(".tar")]
    assert len(segments) == 2
    second = members[segments[1]]
    before = members[segments[1] - 1].name.removeprefix("./")
    data = whole.read_bytes()
    assert dump_stream(str(whole)) == normalize(shards["points"])

    cut = tmp_path / "cut.snapshot"
    cut.write_bytes(data[:second.offset])
    # before the fix: read as the 13 points of the first segment, exit 0
    with pytest.raises(InputError) as info:
        vecferry.open_reader(cut)
    assert str(info.value) == (
        f"{cut}: the snapshot file is truncated: it ends at byte {second.offset:,} after "
        f"{before!r}, without tar's end-of-archive marker (the snapshot file is incomplete; "
        "download it again)")
    r = _cli("convert", cut, tmp_path / "out.parquet", "-q")
    assert r.exit_code == 1 and r.stderr == f"error: {info.value}\n"
    assert not (tmp_path / "out.parquet").exists()

    inside = tmp_path / "inside.snapshot"
    inside.write_bytes(data[:second.offset + 100])
    with pytest.raises(InputError) as info:
        vecferry.open_reader(inside)
    assert str(info.value) == (
        f"{inside}: the snapshot archive is damaged: the entry header at byte "
        f"{second.offset:,} after {before!r} is cut short or invalid (the file may be "
        "truncated; download it again)")


@pytest.mark.parametrize("writer", ["qdrant", "gnu"])
def test_snapshots_as_their_writers_end_them_still_read(shards: dict[str, Any], tmp_path: Path,
                                                       writer: str) -> None:
    """Qdrant ends an archive with the marker alone (and so its collection snapshots nested
    in a full-instance one, and its segment tars); GNU tar and Python's tarfile pad on to
    their record size."""
    shard = _shard_snapshot([shards["ints"], shards["uuids"]], tmp_path / "s.snapshot", writer)
    coll = _collection_snapshot([shards["ints"], shards["uuids"]], tmp_path / "c.snapshot",
                                writer)
    full = _full_snapshot({"docs": shards["ints"], "news": shards["uuids"]},
                          tmp_path / "f.snapshot", writer)
    assert dump_stream(str(shard)) == normalize(shards["points"])
    assert dump_stream(str(coll)) == normalize(shards["points"])
    assert dump_stream(str(full), collection="news") == normalize(shards["uuid_points"])

    with tarfile.open(coll) as tar:
        tar.getmembers()
        marker = tar.offset
    padding = coll.stat().st_size - marker - 1024
    assert (padding == 0) == (writer == "qdrant")
    if padding:
        # the zero padding after the marker is nothing lost
        os.truncate(coll, marker + 1024 + padding // 2)
        assert dump_stream(str(coll)) == normalize(shards["points"])
    # a cut into the marker is a cut file
    os.truncate(coll, marker + 1000)
    with pytest.raises(InputError, match="the snapshot file is truncated: it ends at byte "
                                         f"{marker + 1000:,} after "):
        vecferry.open_reader(coll)


# ------------------------------------------- B1: verify of a multi-shard snapshot, no search


def test_verify_of_a_multi_shard_snapshot_skips_search_parity(shards: dict[str, Any],
                                                              tmp_path: Path) -> None:
    two = _collection_snapshot([shards["ints"], shards["uuids"]], tmp_path / "two.snapshot")
    skipped = f"{two} is a snapshot of 2 shards, which cannot be searched as one"
    out = tmp_path / "out.parquet"
    r = _cli("convert", two, out, "--verify")
    assert r.exit_code == 0, r.output
    assert f"warning: search parity skipped: {skipped}\n" in r.stderr
    assert r.stderr.endswith("verified: identical\n")

    r = _cli("verify", two, out, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["ok"] and report["verdict"] == "identical" and "search" not in report
    assert report["search_skipped"] == skipped
    assert report["warnings"] == [f"search parity skipped: {skipped}"]
    # either side
    r = _cli("verify", out, two, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["search_skipped"] == skipped


# --------------------------------------------------------------- B2: API keys and whitespace


@pytest.fixture
def keyed(local_src: str, monkeypatch: pytest.MonkeyPatch):
    with QdrantStandIn(api_key=KEY) as server:
        monkeypatch.setenv("QDRANT_API_KEY", KEY)
        vecferry.convert(local_src, server.location("docs"))
        server.keys_seen.clear()
        server.snapshot_log.clear()
        yield server


@pytest.mark.parametrize("value", [KEY + "\n", " " + KEY, "\t" + KEY + "\r\n"])
def test_whitespace_around_an_api_key_is_dropped(keyed: QdrantStandIn, value: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"QDRANT_API_KEY": value}
    r = _cli("snapshot", "create", keyed.location("docs"), "--json", env=env)
    assert r.exit_code == 0, r.output
    r = _cli("inspect", keyed.location("docs"), "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == 37
    r = _cli("snapshot", "list", keyed.location("docs"), "--api-key-env", "K2",
             env={"K2": value, "QDRANT_API_KEY": "unused"})
    assert r.exit_code == 0, r.output
    assert keyed.keys_seen == {KEY}
    monkeypatch.setenv("K2", value)
    with SnapshotClient(keyed.location("docs"), api_key_env="K2") as c:
        assert c.http.headers["api-key"] == KEY


def test_grpc_gets_the_cleaned_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """What qdrant-client sends over gRPC, as a gRPC server receives it."""
    grpc = pytest.importorskip("grpc")
    from vecferry.converters.qdrant import open_backend

    seen: list[dict[str, str]] = []

    class Capture(grpc.GenericRpcHandler):
        def service(self, details: Any) -> Any:
            seen.append(dict(details.invocation_metadata))

            def refuse(request: Any, context: Any) -> None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "captured")

            return grpc.unary_unary_rpc_method_handler(refuse)

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((Capture(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("QDRANT_API_KEY", f"  {KEY}\n")
        backend = open_backend(f"qdrant://127.0.0.1:{port}/docs?grpc=1", api_key_env=None,
                               timeout=5, for_reading=True)
        try:
            with pytest.raises(Exception, match="captured"):
                backend.exists()
        finally:
            backend.close()
    finally:
        server.stop(None)
    assert seen and seen[0]["api-key"] == KEY


@pytest.mark.parametrize(("value", "what"), [
    (KEY + "é", "a non-ASCII character"),
    (KEY + "\r\nX-Evil: 1", "a line break"),
    ("sekret\x07" + KEY, "a control character"),
])
def test_an_api_key_no_header_can_carry_is_refused_at_once(keyed: QdrantStandIn, value: str,
                                                           what: str, tmp_path: Path) -> None:
    said = (f"the API key in environment variable {{v}} holds {what}, which an HTTP header "
            "cannot carry (set {v} to the key alone: printable ASCII, on one line)")
    loc = keyed.location("docs")
    for args, env, var in [
        (["snapshot", "list", loc], {"QDRANT_API_KEY": value}, "QDRANT_API_KEY"),
        (["snapshot", "create", loc, "--api-key-env", "K2"], {"K2": value}, "K2"),
        (["inspect", loc], {"QDRANT_API_KEY": value}, "QDRANT_API_KEY"),
        (["convert", loc, tmp_path / "x.parquet"], {"QDRANT_API_KEY": value},
         "QDRANT_API_KEY"),
    ]:
        r = _cli(*args, env=env)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr == f"error: {said.format(v=var)}\n"
        assert KEY not in r.output and "sekret" not in r.output
    r = _cli("snapshot", "create", loc, "--json", env={"QDRANT_API_KEY": value})
    assert r.exit_code == 2 and json.loads(r.stdout) == {
        "ok": False, "error": "UsageError", "hint": "set QDRANT_API_KEY to the key alone: "
        "printable ASCII, on one line", "location": {},
        "message": f"the API key in environment variable QDRANT_API_KEY holds {what}, which "
                   "an HTTP header cannot carry"}
    # refused before any request: nothing retried, nothing sent
    assert keyed.keys_seen == set() and keyed.snapshot_log == []
    r = _cli("snapshot", "list", loc, "--api-key-env", "K2", env={"K2": " \n"})
    assert r.exit_code == 2
    assert r.stderr == ("error: environment variable K2 is not set or empty (export it, or "
                        "drop --api-key-env to use QDRANT_API_KEY)\n")


# --------------------------------------------------------------- snapshot downloads (server)



def test_download_over_a_directory_is_refused_before_fetching(stand: QdrantStandIn,
                                                              tmp_path: Path) -> None:
    snap = create_snapshot(stand)
    folder = tmp_path / "backups"
    folder.mkdir()
    stand.snapshot_log.clear()
    for extra in ([], ["--overwrite"]):
        r = _cli("snapshot", "download", stand.location("docs"), snap["name"], "--out", folder,
                 *extra)
        assert r.exit_code == 2, r.output
        assert r.stderr == (f"error: {folder}: the output is a directory; a snapshot downloads "
                            f"to a file (name the file, e.g. --out {folder / snap['name']})\n")
    assert stand.snapshot_log == []  # not even listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups"]
    assert list(folder.iterdir()) == []


def test_an_unverified_download_warns_even_quiet(stand: QdrantStandIn, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An older server lists no checksum: the file is kept, and -q does not hide that."""
    listed = qdrant_standin._describe

    def without_checksum(name: str, path: str) -> dict[str, Any]:
        info = listed(name, path)
        info.pop("checksum")
        return info

    monkeypatch.setattr(qdrant_standin, "_describe", without_checksum)
    snap = create_snapshot(stand)
    sha = hashlib.sha256(Path(stand.snapshots["docs"][snap["name"]]).read_bytes()).hexdigest()
    warning = (f"snapshot {snap['name']} was not verified: the server lists no checksum for it "
               f"(older Qdrant versions); its SHA-256 as received is {sha}")
    r = _cli("snapshot", "download", stand.location("docs"), snap["name"], "--out",
             tmp_path / "a.snapshot", "-q")
    assert r.exit_code == 0 and r.stderr == f"warning: {warning}\n"
    r = _cli("snapshot", "download", stand.location("docs"), snap["name"], "--out",
             tmp_path / "b.snapshot", "-q", "--json")
    assert r.exit_code == 0 and r.stderr == f"warning: {warning}\n"
    got = json.loads(r.stdout)
    assert got["verified"] is False and got["warnings"] == [warning]
    r = _cli("snapshot", "download", stand.location("docs"), snap["name"], "--out",
             tmp_path / "c.snapshot")
    assert r.exit_code == 0
    assert r.stderr.startswith(f"warning: {warning}\ndownloaded {snap['name']} -> ")
    assert r.stderr.endswith(f"sha256 NOT verified (see the warning): {sha}\n")
    # a copy through such a download says so too
    report = copy_collection(stand.location("docs"), stand.location("copy"))
    assert report["warnings"] == [warning.replace(snap["name"], report["steps"]["create"]["name"])]


def test_a_download_that_keeps_dropping_names_the_partial_it_keeps(stand: QdrantStandIn,
                                                                   tmp_path: Path) -> None:
    snap = create_snapshot(stand)
    out = tmp_path / "s.snapshot"
    part = Path(str(out) + PART_SUFFIX)
    half = snap["size"] // 2
    stand.add_fault(Fault("snapshot_download", "truncate", times=None))
    r = _cli("snapshot", "download", stand.location("docs"), snap["name"], "--out", out,
             "--max-retries", "0")
    assert r.exit_code == 1
    assert r.stderr == (
        f"error: {stand.location('docs')}: downloading snapshot {snap['name']} failed after 1 "
        "attempt(s): connection error: RemoteProtocolError: peer closed connection without "
        f"sending complete message body (received {half} bytes, expected {snap['size']}) (the "
        f"server kept failing; is it up and reachable?; the partial file {part} keeps the "
        f"{half:,} bytes received: the same command run again resumes from there)\n")
    assert part.stat().st_size == half
    stand.faults.clear()
    r = _cli("snapshot", "download", stand.location("docs"), snap["name"], "--out", out, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["resumed_from"] == half
    assert hashlib.sha256(out.read_bytes()).hexdigest() == snap["checksum"]


def test_restore_from_a_url_with_another_checksum(stand: QdrantStandIn, tmp_path: Path) -> None:
    snap = create_snapshot(stand)
    out = tmp_path / "s.snapshot"
    with SnapshotClient(stand.location("docs")) as c:
        c.download(snap["name"], out)
    r = _cli("snapshot", "restore", stand.location("r"), "--from", f"file://{out}",
             "--checksum", "0" * 64)
    assert r.exit_code == 4
    assert r.stderr == (
        f"error: {stand.location('r')}: recovering from a snapshot: HTTP 400: Wrong input: "
        f"Snapshot checksum mismatch: expected {'0' * 64}, got {snap['checksum']} (the file at "
        "that URL does not have the checksum given: check the URL and the checksum)\n")


# ---------------------------------------------------------------------------- snapshot copy


def test_copy_keep_whose_download_fails_names_the_snapshot_left(stand: QdrantStandIn,
                                                                tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src, dst = stand.location("docs"), stand.location("copy")
    stand.add_fault(Fault("snapshot_download", "truncate", times=None))
    r = _cli("snapshot", "copy", src, dst, "--keep", "--max-retries", "0", "--workdir", work)
    assert r.exit_code == 1
    (name,) = stand.snapshots["docs"]  # kept on the source
    size = Path(stand.snapshots["docs"][name]).stat().st_size
    (partial,) = work.iterdir()
    kept = partial.with_name(partial.name.removesuffix(PART_SUFFIX))
    assert re.fullmatch(rf"\.vecferry-copy-[0-9a-f]{{8}}-{re.escape(name)}{PART_SUFFIX}",
                        partial.name)
    assert r.stderr == (
        f"error: {src}: downloading snapshot {name} failed after 1 attempt(s): connection "
        "error: RemoteProtocolError: peer closed connection without sending complete message "
        f"body (received {size // 2} bytes, expected {size}) (the server kept failing; is it up "
        f"and reachable?; the snapshot {name} is kept on {src}: `vecferry snapshot download "
        f"{src} {name} --out {kept}` finishes its download (it resumes from the "
        f"{size // 2:,} bytes kept in {partial}), and `vecferry snapshot upload {kept} {dst}` "
        "then finishes the copy)\n")
    # what it says works
    stand.faults.clear()
    r = _cli("snapshot", "download", src, name, "--out", kept, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["resumed_from"] == size // 2
    r = _cli("snapshot", "upload", kept, dst)
    assert r.exit_code == 0, r.output
    assert dump_stream(dst) == dump_stream(src)


def test_copy_without_keep_whose_download_fails_promises_no_resume(stand: QdrantStandIn,
                                                                   tmp_path: Path) -> None:
    src, dst = stand.location("docs"), stand.location("copy")
    stand.add_fault(Fault("snapshot_download", "truncate", times=None))
    r = _cli("snapshot", "copy", src, dst, "--max-retries", "0", "--workdir", tmp_path)
    assert r.exit_code == 1
    assert r.stderr.endswith(
        "(the server kept failing; is it up and reachable?; the snapshot made on "
        f"{src} was deleted and the copy's download removed: snapshot copy does not resume, "
        "the same command run again starts over)\n")
    assert "partial file" not in r.stderr
    assert stand.snapshots["docs"] == {} and list(tmp_path.iterdir()) == []


def test_an_interrupted_copy_says_what_it_removed(stand: QdrantStandIn, tmp_path: Path) -> None:
    """Ctrl-C while the snapshot downloads: the copy removes its download and the snapshot
    it made, and says so (not that a download resumes)."""
    src, dst = stand.location("docs"), stand.location("copy")
    stand.add_fault(Fault("snapshot_download", "delay", seconds=5))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([VECFERRY, "snapshot", "copy", src, dst], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(e["op"] == "snapshot_download" for e in stand.snapshot_log):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err == (f"interrupted: the snapshot made on {src} was deleted and the copy's "
                   "download removed: snapshot copy does not resume, the same command run "
                   "again starts over\n")
    assert stand.snapshots["docs"] == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".vecferry")] == []


# ------------------------------------- C1: a collection of a full-instance snapshot, the CLI


def test_the_cli_chooses_a_collection_of_a_full_snapshot(shards: dict[str, Any],
                                                         tmp_path: Path) -> None:
    full = _full_snapshot({"docs": shards["ints"], "news": shards["uuids"]},
                          tmp_path / "full.snapshot")
    r = _cli("inspect", full)
    assert r.exit_code == 2
    assert r.stderr == (f"error: {full}: a full-instance snapshot holding 2 collections (docs, "
                        "news) (choose one with --snapshot-collection NAME, or the reader option "
                        "collection=NAME)\n")
    r = _cli("inspect", full, "--snapshot-collection", "news", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["count"] == len(shards["uuid_points"])
    out = tmp_path / "docs.jsonl"
    r = _cli("convert", full, out, "--snapshot-collection", "docs", "--verify", "-q")
    assert r.exit_code == 0, r.output
    assert dump_stream(str(out)) == normalize(shards["int_points"])
    r = _cli("verify", full, out, "--snapshot-collection", "docs", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["verdict"] == "identical"
    r = _cli("inspect", full, "--snapshot-collection", "nope")
    assert r.exit_code == 1
    assert r.stderr == (f"error: {full}: the full snapshot holds no collection 'nope' (it "
                        "holds: docs, news)\n")
    single = _collection_snapshot([shards["ints"]], tmp_path / "one.snapshot")
    r = _cli("inspect", single, "--snapshot-collection", "docs")
    assert r.exit_code == 2
    assert r.stderr == (f"error: {single}: --snapshot-collection (the reader option collection) "
                        "applies to full-instance snapshots only; this is a collection "
                        "snapshot (drop --snapshot-collection)\n")


def test_not_enough_temporary_space_says_what_moves_it(shards: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI has no workdir option for reading a snapshot: TMPDIR moves the extraction
    (with every other spill of the run); a reader given ``workdir`` is told about that."""
    import vecferry.converters.snapshot as snap_mod

    archive = _shard_snapshot([shards["ints"]], tmp_path / "s.snapshot")
    monkeypatch.setattr(snap_mod.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    with pytest.raises(TargetError) as info:
        vecferry.open_reader(archive)
    assert info.value.message.startswith("not enough temporary space to extract the shard: ")
    assert info.value.hint == "free space, or set TMPDIR to a directory with room for it"
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(TargetError) as info:
        vecferry.open_reader(archive, workdir=str(work))
    assert info.value.hint == "free space there, or choose another workdir"
    assert str(info.value.location.source).startswith(str(work))

