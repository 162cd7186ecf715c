"""Bad-input and failure paths of the snapshot code: damaged or hostile snapshot archives read
offline (``vecferry.converters.snapshot``), and a misbehaving server, a full disk or a bucket
met by ``vecferry.snapshots``. Each test drives the public API (or the CLI) into one path and
asserts the whole ``str(exc)``: location first, then what is wrong, then the hint in
parentheses, plus what must (not) be left behind.

Servers are the loopback stand-in (``qdrant_standin``), or a bare loopback HTTP server
(``_answering``) for answers Qdrant never gives; archives are built with ``tarfile`` (around
real Edge shards, with the helpers of ``test_snapshots``) in ``tmp_path`` in Qdrant's layout
(``segments/<uuid>.tar`` holding ``snapshot/files/...``, or the streamable
``segments/<uuid>/files/...``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import vecferry
from qdrant_helpers import create_snapshot
from qdrant_standin import Fault, QdrantStandIn
from vecferry.cli import main
from vecferry.converters import open_reader
from vecferry.converters.snapshot import UnsafeArchiveError
from vecferry.errors import (
    InputError,
    SchemaError,
    TargetError,
    UnsupportedError,
    UsageError,
    VecferryError,
)
from vecferry.snapshots import PART_SUFFIX, SnapshotClient, copy_collection

pytest.importorskip("qdrant_client")  # the stand-in's engine
pytest.importorskip("qdrant_edge")  # the offline snapshot reader

try:  # moto and s3fs for the S3 fixtures of conftest (absent: those tests skip)
    import test_storage as _s3
except (ImportError, pytest.skip.Exception):
    _s3 = None
needs_s3 = pytest.mark.skipif(_s3 is None, reason="needs moto[server] and s3fs")

#: a location that is never contacted: these paths fail before any request
NOWHERE = "qdrant://db.invalid:6333/docs"
SEG = "0b4c7d2e-6f1a-4e59-9a8b-3c2d1e0f9a7b"
ROCKS_HINT = ("recover the snapshot into a Qdrant server and convert from there (vecferry "
              "convert qdrant://HOST/COLLECTION ...), or let a recent Qdrant migrate the "
              "collection to mmap storage and take a new snapshot")
GAVE_UP = "the server kept failing; is it up and reachable?"
CUT_SHORT = ("the connection kept dropping, or the server's file is shorter than it lists: run "
             "the download again, or list the snapshots to check the size")
DISK_FULL = "disk full while downloading (free space and run again: the download resumes where " \
    "it stopped)"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.001")


def _fails(cls: type[VecferryError], action: Callable[[], object]) -> VecferryError:
    """Run ``action``, which must raise exactly ``cls``; return the error."""
    with pytest.raises(cls) as info:
        action()
    assert type(info.value) is cls
    return info.value


# ----------------------------------------------------------------------- archive building


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    tar.addfile(info)


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _tar_bytes(*adds: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for add in adds:
            add(tar)
    return buf.getvalue()


def _segment_tar(*adds: Callable[[tarfile.TarFile], None]) -> Callable[[tarfile.TarFile], None]:
    """A regular-format segment ``segments/SEG.tar`` whose members ``adds`` writes."""
    data = _tar_bytes(lambda t: _file(t, "snapshot/files/segment.json", b"{}"), *adds)
    return lambda t: _file(t, f"segments/{SEG}.tar", data)


def _truncated_segment(t: tarfile.TarFile) -> None:
    whole = _tar_bytes(lambda i: _file(i, "snapshot/files/segment.json", b"{}" * 1000))
    _file(t, f"segments/{SEG}.tar", whole[:1200])  # the header, and 688 of 2000 bytes


# (builder of a shard snapshot, error class, str(exc) with {p} for the archive's path)
DAMAGED_ARCHIVES = {
    "member-both-directory-and-file": (
        lambda t: (_dir(t, "segments"), _dir(t, f"segments/{SEG}"),
                   _file(t, f"segments/{SEG}")),
        InputError, f"{{p}}: archive member 'segments/{SEG}' is both a directory and a file"),
    "symlink-to-missing-member": (
        lambda t: (_dir(t, "segments"), _file(t, f"segments/{SEG}/segment.json", b"{}"),
                   _link(t, f"segments/{SEG}/version.info", "gone", tarfile.SYMTYPE)),
        UnsafeArchiveError,
        f"{{p}}: symbolic link 'segments/{SEG}/version.info' -> 'segments/{SEG}/gone' does "
        "not name a file extracted before it"),
    "hard-link-to-later-member": (
        lambda t: (_dir(t, "segments"),
                   _link(t, f"segments/{SEG}/a", f"segments/{SEG}/b", tarfile.LNKTYPE),
                   _file(t, f"segments/{SEG}/b")),
        UnsafeArchiveError,
        f"{{p}}: hard link 'segments/{SEG}/a' -> 'segments/{SEG}/b' does not name a file "
        "extracted before it"),
    "segments-is-a-file": (
        lambda t: _file(t, "segments", b"not a directory"),
        InputError, "{p}: the shard has no segments/ directory"),
    "empty-segment-tar": (
        lambda t: _file(t, f"segments/{SEG}.tar", b""),
        InputError, f"{{p}} [segments/{SEG}.tar]: segment {SEG} is not a tar archive: empty "
                    "file"),
    "truncated-segment-tar": (
        _truncated_segment,
        InputError, "{p}: the snapshot archive is damaged: unexpected end of data (download it "
                    "again)"),
    "symlink-leaves-segment": (
        _segment_tar(lambda t: _link(t, "snapshot/files/id_tracker", "../version.info",
                                     tarfile.SYMTYPE)),
        UnsafeArchiveError,
        f"{{p}} [segments/{SEG}.tar]: link 'snapshot/files/id_tracker' leaves the segment"),
    "hard-link-leaves-segment": (
        _segment_tar(lambda t: _link(t, "snapshot/files/id_tracker", "snapshot/x",
                                     tarfile.LNKTYPE)),
        UnsafeArchiveError,
        f"{{p}} [segments/{SEG}.tar]: link 'snapshot/files/id_tracker' leaves the segment"),
    "rocksdb-beside-files": (
        lambda t: (_file(t, f"segments/{SEG}/files/segment.json", b"{}"),
                   _file(t, f"segments/{SEG}/rocksdb_backup/CURRENT", b"MANIFEST-000005\n")),
        UnsupportedError,
        f"{{p}}: segment {SEG} keeps data in RocksDB (rocksdb_backup/CURRENT), which Qdrant "
        f"Edge cannot read ({ROCKS_HINT})"),
    "rocksdb-in-files": (
        lambda t: (_file(t, f"segments/{SEG}/files/segment.json", b"{}"),
                   _file(t, f"segments/{SEG}/files/CURRENT", b"MANIFEST-000005\n"),
                   _file(t, f"segments/{SEG}/files/000004.sst", b"\0" * 64)),
        UnsupportedError,
        f"{{p}}: segment {SEG} keeps data in RocksDB, which Qdrant Edge cannot read "
        f"({ROCKS_HINT})"),
}


def _archive(tmp_path: Path, build: Callable[[tarfile.TarFile], Any]) -> Path:
    path = tmp_path / "damaged.snapshot"
    path.write_bytes(_tar_bytes(build))
    return path


@pytest.mark.parametrize("case", sorted(DAMAGED_ARCHIVES))
def test_damaged_snapshot_archive_is_refused(tmp_path: Path, case: str) -> None:
    build, cls, message = DAMAGED_ARCHIVES[case]
    path = _archive(tmp_path, build)
    work = tmp_path / "work"
    work.mkdir()
    err = _fails(cls, lambda: open_reader(str(path), workdir=str(work)))
    assert str(err) == message.format(p=path)
    assert list(work.iterdir()) == []  # the partial extraction was removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.snapshot", "work"]


def test_cli_convert_of_a_damaged_snapshot(tmp_path: Path) -> None:
    build, _, message = DAMAGED_ARCHIVES["truncated-segment-tar"]
    path = _archive(tmp_path, build)
    out = tmp_path / "out.parquet"
    r = CliRunner().invoke(main, ["convert", str(path), str(out), "-q"])
    assert r.exit_code == 1, r.output
    assert r.stderr.endswith(f"error: {message.format(p=path)}\n")
    assert not out.exists()


def test_shards_holding_different_vectors(tmp_path: Path) -> None:
    """Two real Edge shards whose vector 'd' differs in size, in a collection snapshot."""
    from test_snapshots import _collection_archive

    shard_dirs = []
    for i, dim in enumerate((4, 8)):
        points = tmp_path / f"points-{i}.jsonl"
        points.write_text("".join(json.dumps({"id": 10 * i + k, "vector": {"d": [0.5] * dim},
                                              "payload": {}}) + "\n" for k in range(3)))
        vecferry.convert(str(points), f"qdrant-edge://{tmp_path / f'edge-{i}'}")
        shard_dirs.append(tmp_path / f"edge-{i}")
    archive = _collection_archive(tmp_path, shard_dirs)
    work = tmp_path / "work"
    work.mkdir()
    err = _fails(SchemaError, lambda: open_reader(str(archive), workdir=str(work)))
    assert str(err) == (f"{archive}: the shards of this snapshot hold different vectors: shard "
                        "1 holds vector 'd' (dense, 8 dims), shard 0 holds vector 'd' (dense, 4 "
                        "dims) (the shards come from different collections; take the snapshot "
                        "again from one collection)")
    assert list(work.iterdir()) == []


# ------------------------------------------------------------------- the server misbehaving


@pytest.fixture
def stand():
    from qdrant_client import models

    with QdrantStandIn() as server:
        server.engine.create_collection("docs", vectors_config=models.VectorParams(
            size=4, distance=models.Distance.DOT))
        server.snapshot_padding = 120_000  # several chunks
        yield server


def _server_file(stand: QdrantStandIn, snap: dict[str, Any]) -> Path:
    return Path(stand.snapshots["docs"][snap["name"]])


def _calls(stand: QdrantStandIn, op: str) -> int:
    return sum(e["op"] == op for e in stand.snapshot_log)


SPACE = "Service internal error: No space left on device (os error 28)"
VERSION = "Service internal error: Snapshot is not compatible with the current Qdrant version"
REFUSED = "Bad request: Snapshot recovery from a file path is not allowed"


# (op, fault status, server message, call on the client, str(exc) after the location)
SERVER_ERRORS = {
    "out-of-space-is-not-retried": (
        "snapshot_create", "503", SPACE, lambda c, f: c.create(),
        f"creating a snapshot: HTTP 503: {SPACE} (the server is out of disk space; free some, "
        "or delete old snapshots (`vecferry snapshot delete`))"),
    "other-version-is-not-retried": (
        "snapshot_upload", "503", VERSION, lambda c, f: c.upload(f),
        f"uploading s.snapshot: HTTP 503: {VERSION} (the snapshot was made by another Qdrant "
        "version; recover it into a server of the same version)"),
    "refusal-carries-the-server-message": (
        "snapshot_recover", "400", REFUSED, lambda c, f: c.recover("file:///x.snapshot"),
        f"recovering from a snapshot: HTTP 400: {REFUSED}"),
}


@pytest.mark.parametrize("case", sorted(SERVER_ERRORS))
def test_server_error_names_the_call_and_says_what_to_do(stand: QdrantStandIn, tmp_path: Path,
                                                         case: str) -> None:
    op, status, message, call, expected = SERVER_ERRORS[case]
    snapshot = tmp_path / "s.snapshot"
    snapshot.write_bytes(b"snapshot bytes")
    stand.add_fault(Fault(op, status, times=None, message=message))
    with SnapshotClient(stand.location("docs")) as c:
        err = _fails(TargetError, lambda: call(c, snapshot))
    assert str(err) == f"{stand.location('docs')}: {expected}"
    assert _calls(stand, op) == 1  # a terminal answer, even as 503: asked once


def test_cli_create_on_a_full_server(stand: QdrantStandIn) -> None:
    stand.add_fault(Fault("snapshot_create", "503", times=None, message=SPACE))
    r = CliRunner().invoke(main, ["snapshot", "create", stand.location("docs"), "-q"])
    assert r.exit_code == 1, r.output
    assert r.stderr == (f"error: {stand.location('docs')}: creating a snapshot: HTTP 503: "
                        f"{SPACE} (the server is out of disk space; free some, or delete old "
                        "snapshots (`vecferry snapshot delete`))\n")


def test_retried_failure_names_the_step_once(stand: QdrantStandIn) -> None:
    stand.add_fault(Fault("snapshot_list", "503", times=None))
    with SnapshotClient(stand.location("docs"), max_retries=1) as c:
        err = _fails(TargetError, c.list)
    assert str(err) == (f"{stand.location('docs')}: listing snapshots failed after 2 "
                        "attempt(s): HTTP 503: Wrong input: injected by the stand-in "
                        f"({GAVE_UP})")
    assert _calls(stand, "snapshot_list") == 2


Answer = tuple[int, str, bytes]


@contextmanager
def _answering(answer: Callable[[str, str], Answer]) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server (not Qdrant) answering each request with ``answer(method,
    path)``: status, content type, body. Yields its ``qdrant://127.0.0.1:PORT`` and the log of
    the "METHOD PATH" it was asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            asked.append(f"{self.command} {self.path.split('?')[0]}")
            status, kind, body = answer(self.command, self.path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"qdrant://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_answer_that_is_not_json(tmp_path: Path) -> None:
    """Another service on the port: a web page for every request, which is not retried."""
    def answer(method: str, path: str) -> Answer:
        return 200, "text/html; charset=utf-8", b"<html><body>It works!</body></html>"

    with _answering(answer) as (server, asked), SnapshotClient(f"{server}/docs") as c:
        err = _fails(TargetError, c.list)
    assert str(err) == (f"{server}/docs: listing snapshots: the server answered HTTP 200 with "
                        "text/html, not JSON (is this Qdrant's REST port (6333 by default)? a "
                        "proxy or another service may be answering)")
    assert asked == ["GET /collections/docs/snapshots"]


@pytest.mark.parametrize("result", [True, {"creation_time": "2025-01-01T00:00:00"}],
                         ids=["no-description", "no-name"])
def test_copy_when_the_server_does_not_describe_its_snapshot(tmp_path: Path,
                                                             result: Any) -> None:
    def answer(method: str, path: str) -> Answer:
        if path.startswith("/collections/docs/points/count"):
            return 200, "application/json", b'{"result": {"count": 3}, "status": "ok"}'
        if path.startswith("/collections/copy/points/count"):  # no such collection yet
            return 404, "application/json", b'{"status": {"error": "Not found"}}'
        body = {"result": result, "status": "ok", "time": 0.01}
        return 200, "application/json", json.dumps(body).encode()

    with _answering(answer) as (server, asked):
        err = _fails(TargetError, lambda: copy_collection(f"{server}/docs", f"{server}/copy",
                                                          workdir=tmp_path))
    assert str(err) == (
        f"{server}/docs: the server did not describe the snapshot it created (nothing was "
        f"copied; a snapshot may be left on the source (`vecferry snapshot list {server}/docs`): "
        f"copy it by hand with `vecferry snapshot download {server}/docs NAME --out FILE`, then "
        f"`vecferry snapshot upload FILE {server}/copy`)")
    assert asked == ["POST /collections/copy/points/count",
                     "POST /collections/docs/points/count", "POST /collections/docs/snapshots"]
    assert list(tmp_path.iterdir()) == []


def test_download_longer_than_the_server_listed(stand: QdrantStandIn, tmp_path: Path) -> None:
    snap = create_snapshot(stand)
    with open(_server_file(stand, snap), "ab") as f:  # the file changed after it was listed
        f.write(b"\x01" * 1000)
    out = tmp_path / "s.snapshot"
    with SnapshotClient(stand.location("docs")) as c:
        err = _fails(TargetError, lambda: c.download(snap["name"], out, expected=snap))
    assert str(err) == (f"{out}: downloaded {snap['size'] + 1000} bytes, the server listed "
                        f"{snap['size']} (run the download again)")
    assert not out.exists()


def test_download_shorter_than_the_server_listed(stand: QdrantStandIn, tmp_path: Path) -> None:
    """Each answer ends cleanly but early: the resume is refused (416, the partial is
    dropped), the fresh start ends early again, until the retries run out."""
    snap = create_snapshot(stand)
    short = snap["size"] - 5000
    os.truncate(_server_file(stand, snap), short)
    out = tmp_path / "s.snapshot"
    with SnapshotClient(stand.location("docs"), max_retries=2) as c:
        err = _fails(TargetError, lambda: c.download(snap["name"], out, expected=snap))
    what = f"downloading snapshot {snap['name']}"
    part = Path(str(out) + PART_SUFFIX)
    assert str(err) == (f"{stand.location('docs')}: {what} failed after 3 attempt(s): "
                        f"connection closed after {short} of {snap['size']} bytes ({CUT_SHORT}; "
                        f"the partial file {part} keeps the {short:,} bytes received: the same "
                        "command run again resumes from there)")
    ranges = [e["range"] for e in stand.snapshot_log if e["op"] == "snapshot_download"]
    assert ranges == [None, f"bytes={short}-", None]
    assert not out.exists()
    assert Path(str(out) + PART_SUFFIX).stat().st_size == short  # kept for a later resume


def test_refused_resume_drops_the_stale_partial(stand: QdrantStandIn, tmp_path: Path) -> None:
    """An older server lists no size; a partial from an earlier run is longer than the file,
    so the server refuses its Range (416): the partial is removed and the next try starts
    afresh."""
    snap = create_snapshot(stand)
    info = {"name": snap["name"], "checksum": snap["checksum"]}  # no size
    out = tmp_path / "s.snapshot"
    part = Path(str(out) + PART_SUFFIX)
    stale = snap["size"] + 100
    part.write_bytes(b"\xff" * stale)
    with SnapshotClient(stand.location("docs"), max_retries=0) as c:
        err = _fails(TargetError, lambda: c.download(snap["name"], out, expected=info))
    what = f"downloading snapshot {snap['name']}"
    assert str(err) == (f"{stand.location('docs')}: {what} failed after 1 attempt(s): the "
                        "server refused the resume range (the partial file did not fit the "
                        "server's file and was removed; run the download again to fetch it "
                        "from the start)")
    assert not part.exists() and not out.exists()

    part.write_bytes(b"\xff" * stale)
    with SnapshotClient(stand.location("docs")) as c:  # with retries: starts over, verified
        got = c.download(snap["name"], out, expected=info)
    assert got["verified"] and out.stat().st_size == snap["size"]
    ranges = [e["range"] for e in stand.snapshot_log if e["op"] == "snapshot_download"]
    assert ranges == [f"bytes={stale}-"] * 2 + [None]


# ------------------------------------------------------------------------ local files


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs /dev/full")
def test_download_onto_a_full_disk(stand: QdrantStandIn, tmp_path: Path) -> None:
    snap = create_snapshot(stand)
    out = tmp_path / "s.snapshot"
    part = Path(str(out) + PART_SUFFIX)
    part.symlink_to("/dev/full")  # every write fails with ENOSPC
    with SnapshotClient(stand.location("docs")) as c:
        err = _fails(TargetError, lambda: c.download(snap["name"], out))
    assert str(err) == f"{part}: {DISK_FULL}"
    assert not out.exists()


class _OverQuota(io.FileIO):
    def write(self, data: Any) -> int:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


def test_download_over_the_disk_quota(stand: QdrantStandIn, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A quota has no device to stand in for it, as /dev/full does for ENOSPC: the download's
    writes fail with EDQUOT instead. Not retried: the disk will not empty itself."""
    import vecferry.snapshots as snapshots

    snap = create_snapshot(stand)
    out = tmp_path / "s.snapshot"
    part = Path(str(out) + PART_SUFFIX)

    def quota_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode in ("wb", "ab"):
            return _OverQuota(file, mode[0])
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(snapshots, "open", quota_open, raising=False)
    with SnapshotClient(stand.location("docs")) as c:
        err = _fails(TargetError, lambda: c.download(snap["name"], out))
    assert str(err) == f"{part}: {DISK_FULL}"
    assert not out.exists()
    assert _calls(stand, "snapshot_download") == 1


def test_download_past_the_file_size_limit(stand: QdrantStandIn, tmp_path: Path) -> None:
    """A file system (or ulimit -f) that caps file sizes: EFBIG, not a traceback."""
    snap = create_snapshot(stand)
    out = tmp_path / "s.snapshot"
    limit = 50_000
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with SnapshotClient(stand.location("docs")) as c:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # Python ignores SIGXFSZ
        try:
            err = _fails(TargetError, lambda: c.download(snap["name"], out))
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    part = Path(str(out) + PART_SUFFIX)
    assert str(err) == f"{part}: cannot write the download: [Errno 27] File too large"
    assert not out.exists() and part.stat().st_size <= limit


def test_download_into_a_missing_directory(tmp_path: Path) -> None:
    with SnapshotClient(NOWHERE) as c:
        err = _fails(UsageError, lambda: c.download("s.snapshot", tmp_path / "no" / "s.snapshot"))
    assert str(err) == f"{tmp_path}/no: output directory does not exist (create it first)"
    assert not (tmp_path / "no").exists()


def test_upload_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.snapshot"
    with SnapshotClient(NOWHERE) as c:
        err = _fails(InputError, lambda: c.upload(missing))
    assert str(err) == f"{missing}: no such file (check the path)"


def test_upload_of_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "snapshots"
    folder.mkdir()
    (folder / "docs.snapshot").write_bytes(b"snapshot bytes")
    with SnapshotClient(NOWHERE) as c:
        err = _fails(InputError, lambda: c.upload(folder))
    assert str(err) == f"{folder}: is a directory, not a snapshot file (pass the .snapshot file " \
        "itself)"


def test_upload_of_an_unreadable_file(tmp_path: Path) -> None:
    locked = tmp_path / "locked.snapshot"
    locked.write_bytes(b"snapshot bytes")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("this process reads any file (root with CAP_DAC_OVERRIDE)")
        with SnapshotClient(NOWHERE) as c:
            err = _fails(InputError, lambda: c.upload(locked))
    finally:
        locked.chmod(0o600)
    assert str(err) == f"{locked}: permission denied (check the file's permissions)"


# ------------------------------------------------------------------------------ buckets


@needs_s3
def test_upload_of_a_bucket_prefix(opts: dict[str, Any], s3: Any, bucket: str) -> None:
    from vecferry import storage

    s3.pipe(f"{bucket}/snaps/docs.snapshot", b"snapshot bytes")
    with SnapshotClient(NOWHERE) as c, storage.using(opts):
        err = _fails(InputError, lambda: c.upload(f"s3://{bucket}/snaps"))
    assert str(err) == f"s3://{bucket}/snaps: is a prefix, not a snapshot object"


@needs_s3
def test_bucket_download_shorter_than_listed(stand: QdrantStandIn, opts: dict[str, Any],
                                             s3: Any, bucket: str) -> None:
    from vecferry import storage

    snap = create_snapshot(stand)
    short = snap["size"] - 5000
    os.truncate(_server_file(stand, snap), short)
    url = f"s3://{bucket}/s.snapshot"
    with SnapshotClient(stand.location("docs"), max_retries=0) as c, storage.using(opts):
        err = _fails(TargetError, lambda: c.download(snap["name"], url, expected=snap))
    what = f"downloading snapshot {snap['name']}"
    assert str(err) == (f"{stand.location('docs')}: {what} failed after 1 attempt(s): "
                        f"connection closed after {short} of {snap['size']} bytes ({CUT_SHORT})")
    assert _s3.keys(s3, bucket) == [] and _s3.open_uploads(s3, bucket) == []


@needs_s3
def test_bucket_download_when_the_server_has_fewer_bytes(stand: QdrantStandIn,
                                                         opts: dict[str, Any], s3: Any,
                                                         bucket: str) -> None:
    """The body ends early; the resume asks past the end of the file on the server, which
    refuses the range (416). The streamed bytes cannot be taken back: no retry, no object."""
    from vecferry import storage

    snap = create_snapshot(stand)
    short = snap["size"] - 5000
    os.truncate(_server_file(stand, snap), short)
    url = f"s3://{bucket}/s.snapshot"
    with SnapshotClient(stand.location("docs"), max_retries=3) as c, storage.using(opts):
        err = _fails(TargetError, lambda: c.download(snap["name"], url, expected=snap))
    assert str(err) == (f"{stand.location('docs')}: downloading snapshot {snap['name']}: the "
                        f"server has only {short} of the {snap['size']} bytes it listed (the "
                        "snapshot changed or is incomplete on the server; list it and download "
                        "it again)")
    ranges = [e["range"] for e in stand.snapshot_log if e["op"] == "snapshot_download"]
    assert ranges == [None, f"bytes={short}-"]
    assert _s3.keys(s3, bucket) == [] and _s3.open_uploads(s3, bucket) == []


@needs_s3
def test_bucket_download_longer_than_listed(stand: QdrantStandIn, opts: dict[str, Any],
                                            s3: Any, bucket: str) -> None:
    from vecferry import storage

    snap = create_snapshot(stand)
    with open(_server_file(stand, snap), "ab") as f:
        f.write(b"\x01" * 1000)
    url = f"s3://{bucket}/s.snapshot"
    with SnapshotClient(stand.location("docs")) as c, storage.using(opts):
        err = _fails(TargetError, lambda: c.download(snap["name"], url, expected=snap))
    assert str(err) == (f"{url}: downloaded {snap['size'] + 1000} bytes, the server listed "
                        f"{snap['size']} (run the download again)")
    assert _s3.keys(s3, bucket) == [] and _s3.open_uploads(s3, bucket) == []
