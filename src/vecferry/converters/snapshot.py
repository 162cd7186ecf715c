"""Qdrant snapshot files (``.snapshot``) read offline, without a server, through Qdrant Edge.

A snapshot is a plain tar archive. The layouts read here are Qdrant's own
(https://qdrant.tech/documentation/concepts/snapshots/, and Qdrant's ``Collection::
create_snapshot`` / ``LocalShard`` snapshot code):

* **collection snapshot**: ``config.json`` (the collection config), ``version.info``,
  ``payload_index.json``, ``shard_key_mapping.json``, and one directory per shard (``0/``,
  ``1/``, ...) holding ``shard_config.json``, ``replica_state.json``, ``wal/``,
  ``newest_clocks.json`` and ``segments/``;
* **shard snapshot** (``/collections/{name}/shards/{id}/snapshot``, what Qdrant Edge is seeded
  from): the content of one such shard directory at the root;
* **full-instance snapshot**: ``config.json`` and one collection snapshot per collection
  (``NAME.snapshot``); pass ``collection=NAME`` (``--snapshot-collection NAME`` on the
  command line) unless it holds exactly one.

Inside ``segments/`` each segment is either ``<uuid>.tar`` (the regular format: a nested tar
whose ``snapshot/files/`` holds the segment directory) or ``<uuid>/files/...`` (the streamable
format). A segment backed by RocksDB (older servers; its backup sits beside ``files/``) cannot
be read by Qdrant Edge and is refused with ``UnsupportedError`` naming it.

Each shard is extracted into a temporary directory (``workdir``, default the system's), turned
into the directory ``EdgeShard.load`` opens (which derives the shard config from its segments),
read with the Edge reader, and removed before the next shard is extracted, so one shard at a
time is on disk. With several shards each is extracted twice: once when the reader opens (to
learn its count and id kinds, which the stream schema needs up front) and once when it is read.

Extraction is defensive: every member is checked before anything is written (no absolute
paths, no ``..``, no device files or FIFOs; a symbolic or hard link is refused when it points
outside the archive, and otherwise materialised as a copy of the file it names, so no link is
ever created on disk); file modes from the archive are not applied; the free space of the
temporary directory is compared with the sum of the member sizes first; and runs of zero bytes
are skipped with ``seek`` so sparse files (Qdrant preallocates its mmap files) stay sparse.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import posixpath
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from vecferry.converters.base import (
    ClosingReader,
    Context,
    ScratchDir,
    input_path,
    reject_unknown_options,
)
from vecferry.converters.qdrant import SHARD_KEY_FIELD, loads_payload
from vecferry.converters.qdrant_edge import engine_failure, engine_text, is_panic
from vecferry.errors import (
    InputError,
    Location,
    SchemaError,
    TargetError,
    UnsupportedError,
    UsageError,
    VecferryError,
)
from vecferry.points import dumps_payload
from vecferry.storage import LocalCopy, is_remote
from vecferry.stream import PAYLOAD_COLUMN, Manifest, describe_vectors

CHUNK = 1 << 16
_ZERO = bytes(CHUNK)
#: files whose presence in a segment directory means RocksDB storage
_ROCKSDB_MARKERS = ("CURRENT", "IDENTITY", "LOCK")
#: members of a collection snapshot's root that are not shards
_COLLECTION_FILES = ("config.json", "version.info", "payload_index.json",
                     "shard_key_mapping.json")


#: what to do when a shard does not fit the system's temporary directory: TMPDIR moves it,
#: and with it every other spill of the run (a verify's comparison, duplicate-id counts)
SPACE_HINT = "free space, or set TMPDIR to a directory with room for it"


class UnsafeArchiveError(InputError):
    """The archive holds a member that could write outside the extraction directory."""


# --------------------------------------------------------------------------- member checks


def clean_name(name: str) -> str:
    """A member name without leading ``./``; ``UnsafeArchiveError`` for absolute or ``..``."""
    raw = name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member has an absolute path: {raw!r}")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member leaves the extraction directory: {raw!r}")
    return "/".join(parts)


def _link_target(member: tarfile.TarInfo, name: str) -> str:
    """The archive path a link member names; ``UnsafeArchiveError`` when it leaves."""
    link = member.linkname
    if link.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"link {member.name!r} points to an absolute path {link!r}")
    base = posixpath.dirname(name) if member.issym() else ""
    joined = posixpath.normpath(posixpath.join(base, link.replace("\\", "/")))
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        raise UnsafeArchiveError(f"link {member.name!r} -> {link!r} points outside the archive")
    return clean_name(joined)


def check_member(member: tarfile.TarInfo) -> str:
    """Validate one member (see the module docstring); its cleaned name."""
    name = clean_name(member.name)
    if member.isdev() or not (member.isreg() or member.isdir() or member.issym()
                              or member.islnk()):
        raise UnsafeArchiveError(f"archive member {member.name!r} is a device, FIFO or "
                                 "other special file")
    if member.issym() or member.islnk():
        _link_target(member, name)
    return name


def _write_sparse(src: BinaryIO, dest: Path, size: int) -> int:
    """Copy ``size`` bytes from ``src`` to a new file ``dest``, seeking over zero blocks so
    the file stays sparse; returns the bytes actually written."""
    written = 0
    with open(dest, "wb") as out:
        remaining = size
        while remaining > 0:
            chunk = src.read(min(CHUNK, remaining))
            if not chunk:
                raise InputError("archive member is truncated", location=Location(str(dest)),
                                 hint="the snapshot file is incomplete; download it again")
            remaining -= len(chunk)
            if chunk == _ZERO[:len(chunk)]:
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
                written += len(chunk)
        out.truncate(size)
    return written


class _Extractor:
    """Writes checked members under ``root``; never creates links, never applies modes."""

    def __init__(self, root: Path, label: str):
        self.root = root.resolve()
        self.label = label
        self.files: dict[str, Path] = {}

    def _dest(self, rel: str) -> Path:
        dest = self.root / rel
        parent = dest.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise InputError(f"archive member {rel!r} is inside a path that is a file",
                             location=Location(self.label),
                             hint="the snapshot file is damaged; download it again") from exc
        real = Path(os.path.realpath(parent))
        if real != self.root and self.root not in real.parents:
            raise UnsafeArchiveError(f"archive member {rel!r} would be written outside the "
                                     "extraction directory", location=Location(self.label))
        return dest

    def directory(self, rel: str) -> None:
        if rel:
            self._dest(rel + "/x").parent.mkdir(parents=True, exist_ok=True)

    def file(self, rel: str, src: BinaryIO, size: int) -> None:
        dest = self._dest(rel)
        if dest.is_dir():
            raise InputError(f"archive member {rel!r} is both a directory and a file",
                             location=Location(self.label))
        _write_sparse(src, dest, size)
        self.files[rel] = dest

    def link(self, rel: str, target_rel: str, what: str) -> None:
        source = self.files.get(target_rel)
        if source is None:
            raise UnsafeArchiveError(f"{what} {rel!r} -> {target_rel!r} does not name a file "
                                     "extracted before it", location=Location(self.label))
        dest = self._dest(rel)
        with open(source, "rb") as src:
            _write_sparse(src, dest, source.stat().st_size)
        self.files[rel] = dest


# ---------------------------------------------------------------------------------- archive


@dataclass
class ShardEntry:
    id: int | None
    prefix: str  # "" or "N/"
    members: list[tuple[str, tarfile.TarInfo]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(m.size for _, m in self.members if m.isreg())


class SnapshotArchive:
    """A snapshot's tar archive, checked whole on opening; see the module docstring."""

    def __init__(self, path: str, *, collection: str | None = None,
                 fileobj: BinaryIO | None = None, label: str | None = None):
        self.path = path
        self.label = label or path
        where = Location(self.label)
        try:
            self.tar = tarfile.open(  # noqa: SIM115 - closed by close()
                path if fileobj is None else None, mode="r:*", fileobj=fileobj)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"not a Qdrant snapshot (not a tar archive: {exc})", location=where,
                             hint="a snapshot is the .snapshot file Qdrant serves; download it "
                                  "with `vecferry snapshot download`") from exc
        self.inner: SnapshotArchive | None = None
        try:
            self._scan(collection)
        except BaseException:
            self.close()
            raise

    def _scan(self, collection: str | None) -> None:
        where = Location(self.label)
        try:
            members = self.tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"the snapshot archive is damaged: {exc}", location=where,
                             hint="the file may be truncated; download it again") from exc
        self.members: list[tuple[str, tarfile.TarInfo]] = []
        for m in members:
            try:
                name = check_member(m)
            except UnsafeArchiveError as exc:
                raise UnsafeArchiveError(exc.message, location=where,
                                         hint="refusing to extract anything from it") from None
            if name:
                self.members.append((name, m))
        self._check_end()
        names = {n for n, _ in self.members}
        tops = {n.split("/", 1)[0] for n in names}
        self.config: dict[str, Any] | None = None
        self.payload_index: dict[str, Any] | None = None
        #: shard id -> shard key, for a custom-sharded collection (empty otherwise)
        self.shard_keys: dict[int, Any] = {}
        nested = sorted(n for n in names if "/" not in n and n.endswith(".snapshot"))
        if "segments" in tops:
            self.kind = "shard"
            self.shards = [ShardEntry(None, "", list(self.members))]
        elif "config.json" in names and nested:
            self._open_nested(nested, collection)
        elif "config.json" in names:
            self.kind = "collection"
            self.config = self._json("config.json")
            if "payload_index.json" in names:
                self.payload_index = self._json("payload_index.json")
            if "shard_key_mapping.json" in names:
                self.shard_keys = self._shard_key_mapping(self._json("shard_key_mapping.json"))
            ids = sorted(int(t) for t in tops if t.isdigit()
                         and any(n.startswith(f"{t}/segments") for n in names))
            if not ids:
                raise InputError("the collection snapshot holds no local shard data",
                                 location=where,
                                 hint="in a cluster, each node's snapshot holds only its own "
                                      "shards; take the snapshot on a node that has them")
            self.shards = []
            for sid in ids:
                prefix = f"{sid}/"
                entry = ShardEntry(sid, prefix, [(n[len(prefix):], m) for n, m in self.members
                                                 if n.startswith(prefix)])
                self.shards.append(entry)
        else:
            raise InputError("not a Qdrant snapshot: no segments/ (shard snapshot) nor "
                             "config.json (collection snapshot)", location=where,
                             hint="give a .snapshot file made by Qdrant")
        if self.inner is None and collection is not None:
            raise UsageError("--snapshot-collection (the reader option collection) applies to "
                             f"full-instance snapshots only; this is a {self.kind} snapshot",
                             location=where, hint="drop --snapshot-collection")

    def _check_end(self) -> None:
        """``InputError`` unless the end-of-archive marker (two 512-byte zero blocks) follows
        the last member. ``tarfile`` ends its listing quietly where a header is missing, cut
        short or invalid past the first member, so a file cut at a member boundary (or inside
        a header) would read as a smaller collection. Every writer of snapshots ends with the
        marker: Qdrant (the Rust ``tar`` crate's ``Builder::finish``, also run on drop) writes
        exactly it, GNU tar and Python's ``tarfile`` write it and then pad with zeros to their
        record size, which a cut may shorten harmlessly."""
        end = self.tar.offset  # where the listing stopped: just past the last member's data
        f = self.tar.fileobj
        try:
            f.seek(end)
            tail = f.read(2 * tarfile.BLOCKSIZE)
        except (OSError, EOFError) as exc:
            raise InputError(f"the snapshot archive is damaged: {exc}",
                             location=Location(self.label),
                             hint="the file may be truncated; download it again") from exc
        if tail == bytes(2 * tarfile.BLOCKSIZE):
            return
        after = f" after {self.members[-1][0]!r}" if self.members else ""
        if not tail.strip(b"\0"):
            raise InputError(f"the snapshot file is truncated: it ends at byte "
                             f"{end + len(tail):,}{after}, without tar's end-of-archive marker",
                             location=Location(self.label),
                             hint="the snapshot file is incomplete; download it again")
        raise InputError(f"the snapshot archive is damaged: the entry header at byte {end:,}"
                         f"{after} is cut short or invalid", location=Location(self.label),
                         hint="the file may be truncated; download it again")

    def _open_nested(self, nested: list[str], collection: str | None) -> None:
        where = Location(self.label)
        names = [n[: -len(".snapshot")] for n in nested]
        if collection is None and len(names) > 1:
            raise UsageError(f"a full-instance snapshot holding {len(names)} collections "
                             f"({', '.join(names)})", location=where,
                             hint="choose one with --snapshot-collection NAME, or the reader "
                                  "option collection=NAME")
        pick = collection if collection is not None else names[0]
        if pick not in names:
            raise InputError(f"the full snapshot holds no collection {pick!r}", location=where,
                             hint=f"it holds: {', '.join(names)}")
        member = dict(self.members)[f"{pick}.snapshot"]
        fileobj = self.tar.extractfile(member)
        if fileobj is None:  # pragma: no cover - checked to be a regular file
            raise InputError(f"cannot read {pick}.snapshot", location=where)
        self.inner = SnapshotArchive(self.path, fileobj=fileobj,  # type: ignore[arg-type]
                                     label=f"{self.label} [{pick}.snapshot]")
        self.kind = "full"
        self.collection = pick
        self.config = self.inner.config
        self.payload_index = self.inner.payload_index
        self.shard_keys = self.inner.shard_keys
        self.shards = self.inner.shards

    def _shard_key_mapping(self, data: Any) -> dict[int, Any]:
        """Shard id -> key from ``shard_key_mapping.json``, in either format Qdrant writes:
        ``{"key": [shard ids]}`` (older; keys as text) or ``[{"key": k, "shard_ids": [...]}]``
        (which keeps integer keys). ``InputError`` for anything else."""
        out: dict[int, Any] = {}
        try:
            if isinstance(data, dict):
                pairs = list(data.items())
            elif isinstance(data, list):
                pairs = [(entry["key"], entry["shard_ids"]) for entry in data]
            else:
                raise TypeError(type(data).__name__)
            for key, ids in pairs:
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise TypeError(f"key {key!r}")
                for sid in ids:
                    out[int(sid)] = key
        except (TypeError, KeyError, ValueError) as exc:
            raise InputError(f"shard_key_mapping.json is not a shard key mapping ({exc})",
                             location=Location(self.label),
                             hint="the snapshot may be damaged; take it again") from exc
        return out

    def _json(self, name: str, prefix: str = "") -> Any:
        member = dict(self.members).get(prefix + name)
        if member is None or not member.isreg():
            return None
        try:
            f = self.tar.extractfile(member)
            return orjson.loads(f.read()) if f is not None else None
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{prefix}{name} is not JSON: {exc}",
                             location=Location(self.label)) from exc

    @property
    def source_tar(self) -> tarfile.TarFile:
        return self.inner.tar if self.inner is not None else self.tar

    def extract_shard(self, shard: ShardEntry, dest: Path, *,
                      space_hint: str = SPACE_HINT) -> Path:
        """Extract one shard into the new directory ``dest`` and make it loadable by Edge;
        ``TargetError`` with ``space_hint`` when the free space there is short of its size."""
        where = Location(self.label)
        need = shard.size
        dest.mkdir(parents=True)
        free = shutil.disk_usage(dest).free
        if need > free:
            which = f"shard {shard.id}" if shard.id is not None else "the shard"
            raise TargetError(
                f"not enough temporary space to extract {which}: needs {need:,} bytes, "
                f"{free:,} free", location=Location(str(dest)), hint=space_hint)
        tar = self.source_tar
        out = _Extractor(dest, self.label)
        streamable: dict[str, set[str]] = {}
        for rel, _m in shard.members:
            parts = rel.split("/")
            if len(parts) >= 4 and parts[0] == "segments" and parts[2] == "files":
                streamable.setdefault(parts[1], set())
        def stored_as(rel: str) -> str:
            """Where the shard-relative member ``rel`` is written: a streamable segment's
            ``files/`` level is dropped."""
            parts = rel.split("/")
            if (len(parts) >= 4 and parts[0] == "segments" and parts[1] in streamable
                    and parts[2] == "files"):
                return "/".join(["segments", parts[1], *parts[3:]])
            return rel

        try:
            for rel, m in shard.members:
                parts = rel.split("/")
                if (len(parts) == 2 and parts[0] == "segments" and parts[1].endswith(".tar")
                        and m.isreg()):
                    self._segment_tar(tar, m, parts[1][: -len(".tar")], out)
                    continue
                if len(parts) >= 2 and parts[0] == "segments" and parts[1] in streamable:
                    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "files"):
                        continue
                    if parts[2] != "files":
                        raise UnsupportedError(
                            f"segment {parts[1]} keeps data in RocksDB ({'/'.join(parts[2:])}), "
                            "which Qdrant Edge cannot read", location=where, hint=_ROCKS_HINT)
                # a link names its target by its archive name (in a collection snapshot under
                # the shard's "N/"): the target is looked up where it was written
                full = clean_name(m.name)
                prefix = full[: len(full) - len(rel)] if full.endswith(rel) else ""

                def target_of(name: str, prefix: str = prefix) -> str:
                    return stored_as(name[len(prefix):]) if name.startswith(prefix) else name

                self._member(tar, m, stored_as(rel), out, target_of)
        except (tarfile.TarError, EOFError) as exc:
            raise InputError(f"the snapshot archive is damaged: {exc}", location=where,
                             hint="download it again") from exc
        self._check_segments(dest)
        return dest

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str,
                out: _Extractor, target_of: Any = None) -> None:
        """Write member ``m`` as ``rel``; ``target_of`` maps a link's target (an archive
        name) to where that target was written."""
        if m.isdir():
            out.directory(rel)
        elif m.issym() or m.islnk():
            target = (_link_target(m, clean_name(m.name)) if m.issym()
                      else clean_name(m.linkname))
            out.link(rel, target_of(target) if target_of else target,
                     "symbolic link" if m.issym() else "hard link")
        else:
            src = tar.extractfile(m)
            if src is None:  # pragma: no cover - regular member
                return
            out.file(rel, src, m.size)

    def _segment_tar(self, tar: tarfile.TarFile, m: tarfile.TarInfo, segment: str,
                     out: _Extractor) -> None:
        where = Location(f"{self.label} [segments/{segment}.tar]")
        src = tar.extractfile(m)
        try:
            inner = tarfile.open(fileobj=src, mode="r:")  # noqa: SIM115 - with below
        except tarfile.TarError as exc:
            raise InputError(f"segment {segment} is not a tar archive: {exc}",
                             location=where) from exc
        with inner:
            members = []
            for im in inner.getmembers():
                try:
                    name = check_member(im)
                except UnsafeArchiveError as exc:
                    raise UnsafeArchiveError(exc.message, location=where,
                                             hint="refusing to extract it") from None
                if not name or name == "snapshot" or name == "snapshot/files":
                    continue
                if not name.startswith("snapshot/files/"):
                    raise UnsupportedError(
                        f"segment {segment} keeps data in RocksDB ({name}), which Qdrant Edge "
                        "cannot read", location=where, hint=_ROCKS_HINT)
                members.append((name, im))
            for name, im in members:
                rel = f"segments/{segment}/" + name[len("snapshot/files/"):]
                # links inside a segment archive name members of that archive
                if im.issym() or im.islnk():
                    target = (_link_target(im, name) if im.issym() else clean_name(im.linkname))
                    if not target.startswith("snapshot/files/"):
                        raise UnsafeArchiveError(f"link {im.name!r} leaves the segment",
                                                 location=where)
                    out.link(rel, f"segments/{segment}/" + target[len("snapshot/files/"):],
                             "symbolic link" if im.issym() else "hard link")
                else:
                    self._member(inner, im, rel, out)

    def _check_segments(self, dest: Path) -> None:
        segments = dest / "segments"
        if not segments.is_dir():
            raise InputError("the shard has no segments/ directory",
                             location=Location(self.label))
        for seg in segments.iterdir():
            if not seg.is_dir():
                continue
            names = {p.name for p in seg.rglob("*")}
            if any(n in names for n in _ROCKSDB_MARKERS) or any(n.endswith(".sst")
                                                                 for n in names):
                raise UnsupportedError(f"segment {seg.name} keeps data in RocksDB, which Qdrant "
                                       "Edge cannot read", location=Location(self.label),
                                       hint=_ROCKS_HINT)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        self.tar.close()


#: what to do about a snapshot whose shard Qdrant Edge found damaged; the archive holds no
#: checksum of its own (Qdrant keeps the SHA-256 beside it, NAME.snapshot.checksum, and lists it)
DAMAGED_HINT = ("the snapshot file is damaged: download it again (`vecferry snapshot download` "
                "checks it against the SHA-256 checksum Qdrant lists for it), or compare its "
                "SHA-256 with that checksum; Qdrant Edge's own report of the failure may be "
                "printed above")


def _damaged(exc: VecferryError) -> bool:
    """Whether the Edge reader's ``exc`` is Edge failing on the shard's files (its cause is
    Edge's own exception, or a panic): then the snapshot file is what is damaged."""
    return isinstance(exc, InputError) and engine_failure(exc.__cause__)


def _scrub(text: str, dest: Path) -> str:
    """``text`` (Edge's message) with the shard directory vecferry extracted to left out:
    its files named as in the shard (``segments/...``)."""
    for d in dict.fromkeys((str(dest.resolve()), str(dest))):
        text = text.replace(d + "/", "").replace(d, "the shard")
    return text


_ROCKS_HINT = ("recover the snapshot into a Qdrant server and convert from there "
               "(vecferry convert qdrant://HOST/COLLECTION ...), or let a recent Qdrant "
               "migrate the collection to mmap storage and take a new snapshot")


# ----------------------------------------------------------------------------------- reader


def _merge_kinds(kinds: list[str]) -> str:
    if len(set(kinds)) <= 1:
        return kinds[0] if kinds else "int"
    if any(k in ("int", "mixed") for k in kinds):
        return "mixed"
    return "string"


def _server_collection(config: dict[str, Any] | None,
                       payload_index: dict[str, Any] | None) -> dict[str, Any]:
    """What a collection snapshot's ``config.json`` says, in the shape of the Qdrant reader's
    ``collection`` (REST field names)."""
    if not config:
        return {}
    params = config.get("params") or {}
    out: dict[str, Any] = {}
    for key in ("hnsw_config", "quantization_config", "optimizer_config", "wal_config"):
        if config.get(key) is not None:
            out[key] = config[key]
    for key in ("on_disk_payload", "shard_number", "replication_factor",
                "write_consistency_factor"):
        if params.get(key) is not None:
            out[key] = params[key]
    schema = (payload_index or {}).get("schema")
    if isinstance(schema, dict) and schema:
        out["payload_schema"] = {
            k: ({"data_type": v.get("type"), "params": v} if isinstance(v, dict)
                else {"data_type": v})
            for k, v in schema.items()}
    return out


_NO_KEY = object()


def _with_shard_key(batch: pa.RecordBatch, key: Any) -> pa.RecordBatch:
    """``batch`` with ``key`` in every payload's ``SHARD_KEY_FIELD``, as the Qdrant reader
    names the shard key of each point of a custom-sharded collection."""
    texts = batch.column(PAYLOAD_COLUMN).to_pylist()
    out = []
    for text in texts:
        payload = {} if text is None else loads_payload(text)
        payload[SHARD_KEY_FIELD] = key
        out.append(dumps_payload(payload))
    i = batch.schema.get_field_index(PAYLOAD_COLUMN)
    field = batch.schema.field(i)
    return batch.set_column(i, field, pa.array(out, type=field.type))


def _name(spec: Any) -> str:
    return spec.name


class SnapshotReader(ClosingReader):
    """Stream the points of a snapshot file, shard after shard (see the module docstring).

    Options: ``page_size``, ``filter`` and ``id_field`` as for Qdrant; ``workdir`` (where
    shards are extracted; default the system's temporary directory); ``collection`` (which
    collection of a full-instance snapshot).
    """

    format_name = "snapshot"

    def __init__(self, location: str, *, context: Context, page_size: int | None = None,
                 filter: Any = None, id_field: str | None = None,
                 workdir: str | None = None, collection: str | None = None,
                 **options: Any):
        reject_unknown_options(self.format_name, options)
        try:
            import qdrant_edge  # noqa: F401
        except ImportError as exc:  # pragma: no cover - the registry checks first
            from vecferry.errors import MissingDependencyError

            raise MissingDependencyError("reading snapshots needs qdrant-edge-py",
                                         hint="pip install 'vecferry[edge]'") from exc
        self.location = location
        self.context = context
        path = input_path(location)
        self._copy: LocalCopy | None = None
        if is_remote(path):
            # The archive is read shard by shard, with seeks: a local copy, streamed to disk.
            self._copy = LocalCopy(path)
            path = self._copy.path
        if path.is_dir():
            raise InputError("a snapshot is a file, not a directory",
                             location=Location(location),
                             hint="for an Edge shard directory use qdrant-edge://PATH")
        self._reader_options = {"page_size": page_size, "filter": filter, "id_field": id_field}
        if workdir is not None and not Path(workdir).is_dir():
            raise UsageError("work directory does not exist", location=Location(str(workdir)))
        self.archive = SnapshotArchive(str(path), collection=collection)
        self._workdir = workdir
        self._scratch = ScratchDir("snapshot", workdir)
        self.tmp = self._scratch.path
        self._open: tuple[int, Any] | None = None  # (shard index, EdgeReader)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- shards

    def _shard_label(self, i: int) -> str:
        sid = self.archive.shards[i].id
        return f"{self.location} shard {sid}" if sid is not None else self.location

    def _shard_name(self, i: int) -> str:
        sid = self.archive.shards[i].id
        return f"shard {sid if sid is not None else i}"

    def _open_shard(self, i: int) -> Any:
        if self._open is not None and self._open[0] == i:
            return self._open[1]
        self._close_shard()
        import qdrant_edge as qe

        from vecferry.converters.qdrant_edge import EdgeReader

        dest = self.tmp / f"shard-{i}"
        self.archive.extract_shard(
            self.archive.shards[i], dest,
            space_hint=SPACE_HINT if self._workdir is None
            else "free space there, or choose another workdir")
        where = Location(self._shard_label(i))
        try:
            # Load once to let Edge derive and persist the shard config (edge_config.json)
            # from the segments, as its documentation describes for unpacked snapshots.
            qe.EdgeShard.load(str(dest)).close()
        except BaseException as exc:
            # a panic (pyo3's PanicException) is a BaseException: a damaged file in a segment
            # makes Edge's loader panic as often as fail
            if is_panic(exc):
                raise InputError(
                    f"Qdrant Edge cannot load this shard: {_scrub(engine_text(exc), dest)}",
                    location=where, hint=DAMAGED_HINT) from exc
            if not isinstance(exc, Exception):
                raise
            # Edge's message alone cannot tell a damaged file from a format it does not read
            raise UnsupportedError(
                f"Qdrant Edge cannot load this shard: {_scrub(str(exc), dest)}", location=where,
                hint="the snapshot file may be damaged: download it again (`vecferry snapshot "
                     "download` checks it against the SHA-256 checksum Qdrant lists for it); "
                     "or it uses a storage format Edge does not read (RocksDB-backed segments "
                     "of older servers) or comes from a newer Qdrant: " + _ROCKS_HINT
            ) from exc
        try:
            reader = EdgeReader(f"qdrant-edge://{dest}", context=self.context,
                                **self._reader_options)
        except VecferryError as exc:
            if isinstance(exc, UsageError):
                raise
            raise InputError(f"cannot read the shard: {_scrub(exc.message, dest)}",
                             location=where,
                             hint=DAMAGED_HINT if _damaged(exc) else exc.hint) from exc
        self._open = (i, reader)
        return reader

    @contextlib.contextmanager
    def _told_of_snapshot(self, i: int) -> Iterator[None]:
        """Errors of the Edge reader of shard ``i`` naming the snapshot file, not the
        directory it was extracted to (vecferry's own, gone once the run ends)."""
        try:
            yield
        except VecferryError as exc:
            told = self._relabel(exc, i)
            if told is exc:
                raise
            raise told from exc

    def _relabel(self, exc: VecferryError, i: int) -> VecferryError:
        """``exc`` of the Edge reader of shard ``i`` located at the snapshot (``exc`` itself
        when it names nothing of the extracted shard); a damaged shard gets the snapshot's
        hint (download it again), not the shard directory's (restore it)."""
        dest = self.tmp / f"shard-{i}"
        source = str(exc.location.source or "")
        ours = source.startswith(f"qdrant-edge://{dest}")
        message = _scrub(exc.message, dest)
        if not ours and message == exc.message:
            return exc
        told = copy.copy(exc)  # VecferryError.__reduce__: the same class, its fields kept
        told.message = message
        if ours:
            told.location = dataclasses.replace(exc.location, source=self._shard_label(i))
        if _damaged(exc):
            told.hint = DAMAGED_HINT
        Exception.__init__(told, str(told))
        return told

    def _close_shard(self) -> None:
        if self._open is None:
            return
        i, reader = self._open
        self._open = None
        reader.close()
        shutil.rmtree(self.tmp / f"shard-{i}", ignore_errors=True)

    def _setup(self) -> None:
        shards = self.archive.shards
        kinds: list[str] = []
        self.counts: list[int] = []
        first: Manifest | None = None
        for i in range(len(shards)):
            reader = self._open_shard(i)
            m: Manifest = reader.manifest
            if first is None:
                first = m
                collection = dict(m.collection or {})
            elif sorted((v.name, v.kind, v.size or 0) for v in m.vectors) != \
                    sorted((v.name, v.kind, v.size or 0) for v in first.vectors):
                held, first_held = (describe_vectors(sorted(v, key=_name))
                                    for v in (m.vectors, first.vectors))
                raise SchemaError(
                    "the shards of this snapshot hold different vectors: "
                    f"{self._shard_name(i)} holds {held}, {self._shard_name(0)} holds "
                    f"{first_held}",
                    location=Location(self.location),
                    hint="the shards come from different collections; take the snapshot again "
                         "from one collection")
            kinds.append(m.id_kind)
            self.counts.append(int(m.count or 0))
            if len(shards) > 1:
                self._close_shard()
        assert first is not None
        collection.update(_server_collection(self.archive.config, self.archive.payload_index))
        mapping = self.archive.shard_keys
        if mapping:
            collection["sharding_method"] = "custom"
            collection["shard_keys"] = list(dict.fromkeys(mapping[i] for i in sorted(mapping)))
        collection["engine"] = "snapshot"
        if self.archive.kind == "full":
            collection["name"] = self.archive.collection
        source = {"format": self.format_name, "location": self.location,
                  "snapshot": self.archive.kind,
                  "shards": [s.id for s in shards if s.id is not None]}
        if self._reader_options.get("filter") is not None:
            source["filter"] = first.source.get("filter")
        self.manifest = Manifest(vectors=first.vectors, id_kind=_merge_kinds(kinds),
                                 count=sum(self.counts), source=source,
                                 collection=collection)
        self.schema: pa.Schema = self.manifest.schema()

    # -- Reader

    def count(self) -> int:
        return sum(self.counts)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        skip = start
        for i, n in enumerate(self.counts):
            if skip >= n:
                skip -= n
                continue
            reader = self._open_shard(i)
            reader.manifest = self.manifest
            reader.schema = self.schema
            key = self.archive.shard_keys.get(self.archive.shards[i].id, _NO_KEY)
            with self._told_of_snapshot(i):
                for batch in reader.batches(batch_size, start=skip):
                    yield batch if key is _NO_KEY else _with_shard_key(batch, key)
            skip = 0
            if len(self.counts) > 1:
                self._close_shard()

    @property
    def search_unsupported(self) -> str | None:
        """Why ``search`` cannot serve this snapshot (``verify`` then skips search parity with
        this as its warning), or None: each shard is an Edge shard of its own, opened one at a
        time, and the ids they return carry no scores to merge them by."""
        if len(self.counts) == 1:
            return None
        return (f"{self.location} is a snapshot of {len(self.counts)} shards, which cannot be "
                "searched as one")

    def search(self, queries: Any, k: int, vector: str) -> list[list[Any]]:
        """Exact-engine search parity (``verify``); single-shard snapshots only
        (``UnsupportedError`` else, see ``search_unsupported``)."""
        why = self.search_unsupported
        if why is not None:
            raise UnsupportedError("search over a multi-shard snapshot is not supported",
                                   location=Location(self.location),
                                   hint="verify skips search parity for it and compares the "
                                        "counts and digests")
        reader = self._open_shard(0)
        with self._told_of_snapshot(0):
            return reader.search(queries, k, vector)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._close_shard()
        if hasattr(self, "_scratch"):
            self._scratch.remove()
        if hasattr(self, "archive"):
            self.archive.close()
        if getattr(self, "_copy", None) is not None:
            self._copy.cleanup()


__all__ = ["SnapshotArchive", "SnapshotReader", "UnsafeArchiveError", "check_member",
           "clean_name"]
