"""numpy: ``.npy`` matrices, ``.npz`` archives and directories of per-vector ``.npy`` files.

Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html

Sources:

* ``vectors.npy``: an (N, D) matrix of float32 (float16 and uint8 kept as they are; float64 is
  narrowed to float32 with a warning counting the values that changed, and a point holding a
  value float32 cannot hold, which would become infinity, is a bad point). Optional ``ids`` (an
  ``.npy`` of N unsigned integers or strings) and ``payloads`` (JSONL of one object per line, or
  Parquet, aligned by row). The matrix is memory-mapped and read one batch at a time.
  An ``.npz`` given as ``ids`` is refused: its ``ids`` array is read by converting the archive.
* ``.npz``: arrays ``vectors`` and optional ``ids``, streamed from the archive member (stored or
  deflated), never loaded whole; a warning names the arrays it holds beside them, not read.
* a directory written by ``NpyWriter`` (``manifest.json``, ``vectors.npy`` / ``vectors.<name>.npy``,
  ``ids.npy``, ``payloads.jsonl``), read back exactly; its payloads file must hold one line
  per point. Its ``manifest.json`` holds ``format_version``: one that does not (a model card of
  the user's) marks no such directory, and is a file the layouts below do not read.
* a directory of ``.npy`` shards, as embedding pipelines write them: numbered (N_i, D) matrices
  (``emb_0.npy``, ``emb_1.npy``, ... or ``0.npy``, ``1.npy``, ...), read in shard-number order as
  one source. Optional per shard, matched by number: an ids ``.npy`` (a 1-D group whose name
  starts with ``id``, e.g. ``ids_0.npy``) and a metadata Parquet (``metadata_0.parquet``; every
  column becomes payload by the rules of ``vecferry.mapping``). Several matrix groups
  (``img_emb_0.npy`` and ``text_emb_0.npy``) become vectors named after their prefix. Without
  ids, the ids are row numbers across the shards. A directory is read as shards when, among
  its first 16 name prefixes, one names a 2-D matrix of more than one row. Any other file there
  is an ``InputError`` naming it.
* any other directory: one vector per ``<id>.npy`` file, with an optional ``<id>.json`` payload
  sidecar (extensions in any letter case); the id is the file stem (an integer when every stem
  is one; a number past 2^64-1 is then a bad point, not an id). Anything else there (a sidecar
  without its ``.npy``, an ``.npz``, a subdirectory, another file) is an ``InputError`` naming
  it; names starting with ``.``, or with ``_`` but for ``_<id>.npy`` and its sidecar, are left
  out. Each file holds one vector: shape ``(D,)``, or ``(1, D)``. ``ids`` and ``payloads``
  are refused (``UsageError``): the file names are the ids, the sidecars the payloads.

A structured (record) array is refused naming its fields: vectors come from plain matrices.

Bad points: a negative id, an empty string id or one holding a lone surrogate (no UTF-8), a
payload line (or ``<id>.json`` sidecar) that is not a JSON object, a float64 value beyond
float32's range, a per-vector file that cannot be read, holds no vector or more than one,
another size or dtype than the first readable one or is named by a number past 2^64-1.
Each is one ``RecordError`` through ``context.reject`` naming the file and row: the run fails
there, or, with ``on_error="skip"``, the point goes to the rejects file (its id, vector when
readable and payload as the input holds them) and the others are written. Whatever concerns
every point (shape, dtype, row counts) fails the run when the source is opened.

The writer produces the directory layout above; a numpy matrix cannot hold sparse or multi
vectors, and a vector name that cannot name its file (``/``, NUL, too long, or differing from
another only in letter case) cannot be kept: both are said before anything is written. A
string id ending in a NUL character is a bad point of the writer (``context.reject``): numpy's
fixed-width strings drop trailing NULs, so it would be written as another id.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import mmap
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecferry.converters.base import (
    NOT_DATA,
    AtomicPath,
    ClosingReader,
    ClosingWriter,
    Context,
    fsync_path,
    input_path,
    reject_unknown_options,
    unread_files_error,
)
from vecferry.digest import StreamDigest
from vecferry.errors import (
    InputError,
    Location,
    RecordError,
    SchemaError,
    UnsupportedError,
    UsageError,
)
from vecferry.fileio import (
    NAN_HINT,
    PAYLOAD_CHUNK,
    iter_lines,
    iter_payload_chunks,
    loads_exact,
    nonstandard_constant,
    open_read,
    parquet_payload_rows,
    payload_marks,
    payload_texts,
    seek_to_mark,
    without_bom,
)
from vecferry.plan import pack, row_blocks
from vecferry.points import dumps_payload, point_from_row
from vecferry.storage import RangedArray, as_path, is_remote, open_binary
from vecferry.stream import (
    ID_COLUMN,
    PAYLOAD_COLUMN,
    Manifest,
    VectorSpec,
    is_uuid,
    manifest_of,
    merge_id_kinds,
    rebatch,
    record_error,
    with_distance,
)

MANIFEST_NAME = "manifest.json"
HEADER_BYTES = 128  # fixed .npy header length, so the final shape can be patched in place
_SUPPORTED = {"<f4": "float32", "<f2": "float16", "|u1": "uint8", "<f8": "float32"}
ID_HINT = "ids must be unsigned integers, UUIDs or strings"
EMPTY_ID_HINT = "ids must be unsigned integers, UUIDs or non-empty strings"
MAX_UINT64 = 2**64 - 1
BIG_STEM_HINT = ("rename the file to a number below 2^64; file names that are all numbers are "
                 "read as integer ids, names that are not make every id of the directory a "
                 "string")
OVERFLOW_HINT = ("vectors are stored as float32: fix the value, or scale the vectors to "
                 "magnitudes below about 3.4e38")
PAYLOAD_LINE_HINT = "each line must be a JSON object or null"
SIDECAR_HINT = "make the file one JSON object (or null), or delete it"


def _datatype(dtype: np.dtype, where: str) -> str:
    key = dtype.newbyteorder("<").str if dtype.byteorder == ">" else dtype.str
    if key not in _SUPPORTED:
        raise UnsupportedError(
            f"unsupported dtype {dtype} for vectors", location=Location(where),
            hint="vectors must be float32, float16, uint8 or float64 (narrowed to float32)")
    return _SUPPORTED[key]


class _NpyHeader:
    """Shape, dtype and data offset of an ``.npy`` stream, read with numpy's own parser."""

    def __init__(self, fh: IO[bytes], where: str):
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"not a valid .npy file: {exc}", location=Location(where),
                             hint="the file may be truncated or not numpy") from exc
        if dtype.hasobject:
            raise UnsupportedError("array holds Python objects (pickled)",
                                   location=Location(where),
                                   hint="save numeric arrays; vecferry never unpickles")
        if dtype.names:
            message, hint = _structured(dtype)
            raise UnsupportedError(message, location=Location(where), hint=hint)
        self.shape, self.fortran, self.dtype = shape, fortran, dtype
        self.offset = fh.tell()


def _structured(dtype: np.dtype) -> tuple[str, str]:
    """(message, hint) refusing a structured dtype (a record array): its fields, and how to
    save the field that looks like the vectors (numbers of one dimension) as a plain array."""
    fields = []
    vector_field = None
    for name in dtype.names:
        sub = dtype.fields[name][0]
        base, shape = sub.base, sub.shape
        fields.append(f"{name!r} ({'x'.join(map(str, shape))} x {base})" if shape
                      else f"{name!r} ({sub})")
        if vector_field is None and len(shape) == 1 and base.kind in "fiu":
            vector_field = name
    field = vector_field or dtype.names[0]
    return (f"the array is structured (a record array) with fields {', '.join(fields)}; "
            "vectors are read from a plain (N, D) matrix of numbers",
            f"save the vector field as its own .npy, e.g. np.save('vectors.npy', "
            f"arr[{field!r}]), and the ids, if a field holds them, as ids.npy (--ids)")


def _open_matrix(path: Path, empty_ok: bool = False) -> np.ndarray:
    """Memory-map an (N, D) ``.npy`` matrix, checking that the file holds all its bytes. No
    rows is an error unless ``empty_ok`` (a directory vecferry wrote of no points)."""
    where = str(path)
    with open_binary(path) as fh:
        h = _NpyHeader(fh, where)
    if len(h.shape) != 2:
        raise InputError(f"expected a 2-D matrix (points x dimensions), found shape {h.shape}",
                         location=Location(where),
                         hint="reshape to (N, D) or use a directory of per-vector files")
    _check_width(h.shape, where)
    _datatype(h.dtype, where)
    need = h.offset + int(np.prod(h.shape)) * h.dtype.itemsize
    have = path.stat().st_size
    if have < need:
        raise InputError(
            f"file is truncated: the header says {h.shape[0]} x {h.shape[1]} {h.dtype} "
            f"({need - h.offset} bytes of data) but the file holds {have - h.offset}",
            location=Location(where), hint="re-create or re-copy the file")
    if h.shape[0] == 0:
        if empty_ok:
            return np.empty(h.shape, dtype=h.dtype)  # nothing to map
        raise InputError("input is empty: the matrix has no rows", location=Location(where))
    if is_remote(path):  # no memory map of an object: each batch is one ranged read
        return _remote_array(path, h, where)
    return np.memmap(path, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape,
                     order="F" if h.fortran else "C")


def _check_width(shape: tuple[int, ...], where: str) -> None:
    """Refuse a 2-D matrix of no columns, naming its file: its vectors would hold no value."""
    if shape[1] == 0:
        raise InputError(f"the matrix has shape {shape}: its vectors hold no values",
                         location=Location(where),
                         hint="a vector needs at least one value: check that the array saved "
                              "is the embeddings")


def _remote_array(path: Any, h: _NpyHeader, where: str) -> RangedArray:
    if h.fortran:
        raise UnsupportedError("a Fortran-ordered matrix cannot be read by rows from object "
                               "storage", location=Location(where),
                               hint="save it with np.ascontiguousarray, or copy it locally")
    return RangedArray(as_path(path), h.dtype, h.offset, h.shape)


class _ZipMatrix:
    """An ``.npz`` member read sequentially in row blocks (works for deflated members too)."""

    def __init__(self, archive: zipfile.ZipFile, member: str, where: str):
        self.archive, self.member, self.where = archive, member, where
        with archive.open(member) as fh:
            h = _NpyHeader(fh, f"{where}:{member}")
        self.shape, self.dtype, self.fortran = h.shape, h.dtype, h.fortran
        if self.fortran:
            raise UnsupportedError("Fortran-ordered arrays inside .npz cannot be streamed",
                                   location=Location(f"{where}:{member}"),
                                   hint="save with np.ascontiguousarray, or as a plain .npy")

    def blocks(self, rows: int, start: int = 0) -> Iterator[np.ndarray]:
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with self.archive.open(self.member) as fh:
            _NpyHeader(fh, self.where)
            if start:
                fh.seek(fh.tell() + start * row_bytes)
            left = self.shape[0] - start
            while left > 0:
                n = min(rows, left)
                data = fh.read(n * row_bytes)
                if len(data) < n * row_bytes:
                    raise InputError("archive member is truncated",
                                     location=Location(f"{self.where}:{self.member}"))
                yield np.frombuffer(data, dtype=self.dtype).reshape((n, *self.shape[1:]))
                left -= n


def _written_manifest(path: Path) -> bool:
    """Whether ``path``, a directory's ``manifest.json``, makes the directory one vecferry
    wrote: a JSON object holding ``format_version``, as every manifest vecferry writes does.

    A file that is not JSON at all counts as vecferry's, damaged (reading it says so, naming
    it). Any other JSON (``{"model": "bge", "dim": 4}``) is the user's own file: the directory
    is read by its other files, which then name it as a file they do not read.
    """
    if not path.is_file():
        return False
    try:
        value = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return True
    return isinstance(value, dict) and "format_version" in value


def _foreign_manifest(p: Path) -> bool:
    """Whether directory entry ``p`` is a ``manifest.json`` vecferry did not write: met where
    a directory is read by its files, its own would have made it a written directory. Names
    ``base.NOT_DATA`` leaves out, but read as nothing its contents would go unsaid."""
    return p.name.lower() == MANIFEST_NAME


def _id_kind_of_strings(values: np.ndarray) -> str:
    return merge_id_kinds("uuid" if is_uuid(str(v)) else "string" for v in values)


class NpyReader(ClosingReader):
    """Reads a numpy source (see the module docstring) in batches of rows."""

    def __init__(self, location: str, *, context: Context, ids: str | None = None,
                 payloads: str | None = None, **options: Any):
        reject_unknown_options("npy", options)
        self.location = location
        self.context = context
        path = input_path(location)
        self._ids_path = ids
        self._payloads_path = payloads
        self._payload_marks: list[tuple[int, int]] | None = None
        self._per_vector: list[Path] | None = None
        #: the ``<id>.json`` payload sidecar of each per-vector file, by the file's stem
        self._sidecars: dict[str, Path] = {}
        self._shards: _Shards | None = None
        self._zip: zipfile.ZipFile | None = None
        self._ids: np.ndarray | _ZipMatrix | None = None
        self._narrowed = 0
        #: the row the current read started at, and the rows it rejected (ascending): what
        #: ``locate`` counts past
        self._read_from = 0
        self._passed: list[int] = []
        #: the file each vector's matrix is read from, where it is not ``location`` itself
        self._files: dict[str, str] = {}
        manifest: Manifest | None = None
        self.matrices: dict[str, Any] = {}
        written_by_us = path.is_dir() and _written_manifest(path / MANIFEST_NAME)
        # Skipping bad points, a negative id is one rejected point (met while reading), not a
        # failure of the whole source when it is opened.
        self._negative_ok = context.on_error == "skip"
        shards = (None if written_by_us or not path.is_dir()
                  else _find_shards(path, self._negative_ok))
        if shards is not None and (ids is not None or payloads is not None):
            raise UsageError("--ids and --payloads apply to one matrix; a directory of shards "
                             "takes ids and metadata per shard (ids_0.npy, metadata_0.parquet)",
                             location=Location(location))
        if (path.is_dir() and not written_by_us and shards is None
                and (ids is not None or payloads is not None)):
            # read as nothing, they would leave the file names as ids and the points without
            # the payloads asked for, unsaid
            raise UsageError("--ids and --payloads apply to one matrix; a directory of "
                             "per-vector files takes each id from its file name (<id>.npy) "
                             "and its payload from its <id>.json sidecar",
                             location=Location(location))
        if written_by_us:
            manifest = self._open_written_dir(path)
        elif shards is not None:
            self._shards = shards
            manifest = shards.manifest()
        elif path.is_dir():
            manifest = self._open_per_vector_dir(path)
        elif path.suffix.lower() == ".npz":
            manifest = self._open_npz(path)
        else:
            self.matrices[""] = _open_matrix(path)
            manifest = Manifest(vectors=[VectorSpec("", "dense", self.matrices[""].shape[1],
                                                    _datatype(self.matrices[""].dtype,
                                                              location))])
        if self._shards is not None:
            self._rows = self._shards.rows
            if self._shards.narrowing:
                context.warn("float64 vectors are narrowed to float32 (Qdrant, FAISS and the "
                             "stream store float32); the report counts values that changed")
        elif self._per_vector is None:
            self._rows = next(iter(self.matrices.values())).shape[0]
            if ids is not None:
                self._ids = _open_ids(Path(ids))
            if self._ids is not None:
                kind = self._check_ids()
                # A manifest we wrote knows a 'mixed' stream that the strings alone cannot show.
                if not written_by_us:
                    manifest.id_kind = kind
        else:
            self._rows = len(self._per_vector)
        if self._payloads_path is not None:
            # the --payloads file, or the payloads.jsonl of a directory vecferry wrote: lines
            # lost or added there would misalign every payload after them
            payloads = self._payloads_path
            input_path(payloads)
            n, self._payload_marks = payload_marks(payloads)
            if n != self._rows:
                raise InputError(f"payloads file has {n} rows but the vectors have {self._rows}",
                                 location=Location(payloads),
                                 hint="payloads are matched to vectors by row: one per vector")
        for spec in manifest.vectors:
            matrix = self.matrices.get(spec.name)
            if spec.datatype == "float32" and matrix is not None and \
                    matrix.dtype.kind == "f" and matrix.dtype.itemsize == 8:
                context.warn("float64 vectors are narrowed to float32 (Qdrant, FAISS and the "
                             "stream store float32); the report counts values that changed")
        manifest.count = self._rows
        manifest.source = manifest.source or {"format": "npy", "location": location}
        self.manifest = manifest
        self.schema = manifest.schema()

    # -- source layouts ------------------------------------------------------------------

    def _open_written_dir(self, path: Path) -> Manifest:
        if self._payloads_path is None and (path / "payloads.jsonl").exists():
            self._payloads_path = str(path / "payloads.jsonl")
        if self._ids_path is None and (path / "ids.npy").exists():
            self._ids_path = str(path / "ids.npy")
        try:
            manifest = Manifest.from_json((path / MANIFEST_NAME).read_bytes())
        except (ValueError, TypeError, SchemaError) as exc:
            raise InputError(f"manifest is not valid: {exc}",
                             location=Location(str(path / MANIFEST_NAME))) from exc
        if not manifest.vectors:
            raise InputError("manifest lists no vectors, so no vectors.npy to read",
                             location=Location(str(path / MANIFEST_NAME)),
                             hint="the numpy writer always lists its vectors; re-create the "
                                  "directory, or restore its manifest.json")
        for spec in manifest.vectors:
            why = _unfit_name(spec.name)
            if why is not None:
                # such a name would have it read a file outside the layout (or none)
                raise InputError(f"manifest names vector {spec.name!r}, which {why}",
                                 location=Location(str(path / MANIFEST_NAME)),
                                 hint="the numpy writer never writes such a name; fix the "
                                      "manifest's vector names")
            name = "vectors.npy" if spec.name == "" else f"vectors.{spec.name}.npy"
            self._files[spec.name] = str(path / name)
            # its manifest says how many points it holds: none is a valid output
            self.matrices[spec.name] = _open_matrix(input_path(str(path / name)),
                                                    empty_ok=manifest.count == 0)
        if self._ids_path is not None:
            self._ids = _open_ids(Path(self._ids_path))
        return manifest

    def _open_npz(self, path: Path) -> Manifest:
        try:
            self._zip = zipfile.ZipFile(open_binary(path) if is_remote(path) else path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"not a valid .npz archive: {exc}", location=Location(str(path)),
                             hint="the file may be truncated") from exc
        names = {n.removesuffix(".npy"): n for n in self._zip.namelist()}
        if "vectors" not in names:
            raise InputError(f"archive has no 'vectors' array (arrays: {sorted(names)})",
                             location=Location(str(path)),
                             hint="save it as np.savez(f, vectors=..., ids=...)")
        mat = _ZipMatrix(self._zip, names["vectors"], str(path))
        if len(mat.shape) != 2:
            raise InputError(f"'vectors' must be 2-D, found shape {mat.shape}",
                             location=Location(str(path)))
        _check_width(mat.shape, str(path))
        if mat.shape[0] == 0:  # as for an .npy: a source of no points is a mistake's sign
            raise InputError("input is empty: the matrix has no rows",
                             location=Location(str(path)))
        self.matrices[""] = mat
        if "ids" in names and self._ids_path is None:
            self._ids = _ZipMatrix(self._zip, names["ids"], str(path))
        unread = sorted(n for n in names if n not in ("vectors", "ids"))
        if unread:
            # their values (labels, texts, a second embedding) would be lost unsaid
            self.context.warn(
                f"{path}: array(s) {', '.join(map(repr, unread))} of the archive are not read "
                "(an .npz gives 'vectors' and 'ids'): to keep them, write them to a JSONL "
                "or Parquet file aligned by row and pass it with --payloads")
        if "ids" in names and self._ids_path is not None:
            self.context.warn(f"{path}: the archive's 'ids' array is not read: --ids gives "
                              "the ids")
        return Manifest(vectors=[VectorSpec("", "dense", mat.shape[1],
                                            _datatype(mat.dtype, str(path)))])

    def _open_per_vector_dir(self, path: Path) -> Manifest:
        files, self._sidecars = _per_vector_files(path)
        if not files:
            raise InputError("directory holds no .npy files", location=Location(str(path)))
        stems = [p.stem for p in files]
        if all(s.isascii() and s.isdigit() for s in stems):
            files.sort(key=lambda p: int(p.stem))
            kind = "int"
            # zero-padded names (000123.npy) are the numbers they spell; two names of one
            # number would be two files read as one id
            for a, b in itertools.pairwise(files):
                if int(a.stem) == int(b.stem):
                    raise InputError(
                        f"{a.name} and {b.name} both name id {int(a.stem)}",
                        location=Location(str(path)),
                        hint="rename or remove one of them (file names that are numbers are "
                             "read as integer ids)")
        else:
            files.sort(key=lambda p: p.stem)
            kind = merge_id_kinds("uuid" if is_uuid(s) else "string" for s in stems)
        # The first readable file sets the size and dtype. Skipping bad points, an unreadable
        # file before it is one rejected point (when the batches reach it), not the end.
        first: np.ndarray | None = None
        for row, f in enumerate(files):
            first, error = _load_vector(f, row, int(f.stem) if kind == "int" else f.stem)
            if first is not None:
                break
            if self.context.on_error == "fail":
                raise error
        if first is None:
            raise InputError("no .npy file in the directory can be read",
                             location=Location(str(path)),
                             hint="they may be truncated or not numpy; re-create them")
        self._per_vector = files
        self._dim, self._dtype = int(first.shape[-1]), first.dtype
        return Manifest(vectors=[VectorSpec("", "dense", self._dim,
                                            _datatype(first.dtype, str(files[row])))],
                        id_kind=kind)

    def _check_ids(self) -> str:
        """Validate the ids against the vectors; return the id kind they hold."""
        ids = self._ids
        where = self._ids_path or self.location
        if len(ids.shape) != 1:  # an .npz's 'ids' array; an --ids file is checked when opened
            raise InputError(f"ids must be 1-D, found shape {ids.shape}", location=Location(where))
        n = ids.shape[0]
        if n != self._rows:
            raise InputError(f"ids file has {n} ids but the vectors have {self._rows} rows",
                             location=Location(where), hint="ids are matched to vectors by row")
        return _ids_kind(ids, where, self._negative_ok)

    # -- reading -------------------------------------------------------------------------

    def count(self) -> int:
        return self._rows

    def partitions(self, target_bytes: int) -> list[dict[str, Any]] | None:
        """Row ranges of about ``target_bytes`` of vectors (from the headers); an ``.npz``
        archive, which cannot be entered in the middle cheaply, is one partition."""
        if self._zip is not None:
            return None
        row_bytes = sum(v.size * 4 for v in self.manifest.vectors)
        return pack(row_blocks(self._rows, row_bytes, target_bytes), target_bytes)

    def read_partition(self, spec: dict[str, Any], batch_size: int
                       ) -> Iterator[pa.RecordBatch]:
        """The points of rows ``spec["start"]`` to ``spec["stop"]``: bounded by rows, not by
        points delivered, since a rejected row is one of them too."""
        return self._read(batch_size, int(spec["start"]), int(spec["stop"]))

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        return self._read(batch_size, start, self._rows)

    def locate(self, index: int, vector: str | None = None) -> Location:
        """Where the ``index``-th point the current read delivered (0 for its first) is in the
        source: the file holding ``vector`` (the first vector when None) at that point (its
        matrix, shard or per-vector file) and its row there. The rows the read rejected are
        counted past. For a writer's reject of a point it was handed (``convert`` names the
        record where it can be fixed, not in the output that refused it); called while the
        read goes on, for a point it has delivered."""
        row, passed = self._read_from + index, self._passed
        while True:  # the index-th row from the start that the read did not reject
            at = self._read_from + index + bisect.bisect_right(passed, row)
            if at == row:
                break
            row = at
        name = vector if vector is not None else self.manifest.vectors[0].name
        if self._per_vector is not None:
            return Location(source=str(self._per_vector[row]), row=row)
        if self._shards is not None:
            sh, number = self._shards, 0
            for num in sh.numbers:
                if row < number + sh.rows_of[num]:
                    files = sh.vectors.get(name) or next(iter(sh.vectors.values()))
                    return Location(source=str(files[num]), row=row - number)
                number += sh.rows_of[num]
        return Location(source=self._files.get(name, self.location), row=row)

    def _read(self, batch_size: int, start: int, stop: int) -> Iterator[pa.RecordBatch]:
        """The points of rows ``start`` to ``stop``, bad ones rejected in row order."""
        self._read_from, self._passed = start, []
        if self._shards is not None:
            yield from rebatch(self._shard_batches(batch_size, start, stop), batch_size)
            return
        payloads = self._payload_blocks(batch_size, start)
        if self._per_vector is not None:
            yield from self._per_vector_batches(batch_size, start, stop, payloads)
            return
        blocks = {name: (m.blocks(batch_size, start) if isinstance(m, _ZipMatrix) else None)
                  for name, m in self.matrices.items()}
        id_blocks = self._ids.blocks(batch_size, start) if isinstance(self._ids, _ZipMatrix) \
            else None
        id_source = self._ids_path or self.location
        # an archive member's stream, left open by a failed read, would keep the archive's
        # file open after ``close``
        streams = [it for it in (*blocks.values(), id_blocks) if it is not None]
        try:
            for lo in range(start, stop, batch_size):
                hi = min(lo + batch_size, stop)
                n = hi - lo
                columns: dict[str, pa.Array] = {}
                over: dict[int, dict[str, tuple[str, float, list[Any]]]] = {}
                for spec in self.manifest.vectors:
                    it = blocks[spec.name]
                    data = (next(it)[:n] if it is not None
                            else _rows(self.matrices[spec.name], lo, hi))
                    columns[spec.column], rows = self._vector_column(spec, data)
                    where = self._files.get(spec.name, self.location)
                    for i, (value, values) in rows.items():
                        over.setdefault(i, {})[spec.name] = (where, value, values)
                if self._ids is None:
                    ids = np.arange(lo, hi, dtype=np.uint64)
                else:
                    ids = np.asarray(next(id_blocks)[:n] if id_blocks is not None
                                     else _rows(self._ids, lo, hi))
                bad = {**_negative_ids(ids, id_source, lo),
                       **_bad_string_ids(ids, id_source, lo)}
                columns[ID_COLUMN] = self._id_column(ids, bad)
                texts: list[str | None] = [None] * n
                if payloads is not None:
                    texts, bad_lines = next(payloads)
                    texts = texts[:n]
                    for i, err in bad_lines.items():
                        if i < n:
                            bad.setdefault(i, _payload_line_error(err, lo + i, self._id_of(ids[i])))
                self._overflow_errors(bad, over, lo, ids)
                columns[PAYLOAD_COLUMN] = pa.array(texts, type=pa.string())
                batch = self._without(pa.RecordBatch.from_arrays(
                    [columns[f.name] for f in self.schema], schema=self.schema), bad, lo)
                if batch is not None:
                    yield batch
        finally:
            for it in streams:
                it.close()
        self._report_narrowing()

    def _shard_batches(self, batch_size: int, start: int, stop: int
                       ) -> Iterator[pa.RecordBatch]:
        sh = self._shards
        number = 0  # rows of the shards before this one
        for num in sh.numbers:
            rows = sh.rows_of[num]
            begin, end = max(0, start - number), min(rows, stop - number)
            if begin < end:
                yield from self._one_shard(num, batch_size, begin, end, number)
            number += rows
        self._report_narrowing()

    def _one_shard(self, num: int, batch_size: int, begin: int, end: int, number: int
                   ) -> Iterator[pa.RecordBatch]:
        """Rows ``begin`` to ``end`` of shard ``num``, whose first row is row ``number``."""
        sh = self._shards
        mats = {name: _open_matrix(files[num]) for name, files in sh.vectors.items()}
        ids = _open_ids(sh.ids[num]) if sh.ids is not None else None
        meta = sh.metadata_batches(num, batch_size, begin)
        for lo in range(begin, end, batch_size):
            hi = min(lo + batch_size, end)
            columns: dict[str, pa.Array] = {}
            over: dict[int, dict[str, tuple[str, float, list[Any]]]] = {}
            for spec in self.manifest.vectors:
                columns[spec.column], rows = self._vector_column(spec,
                                                                 _rows(mats[spec.name], lo, hi))
                for i, (value, values) in rows.items():
                    over.setdefault(i, {})[spec.name] = (str(sh.vectors[spec.name][num]),
                                                         value, values)
            block = (np.arange(number + lo, number + hi, dtype=np.uint64) if ids is None
                     else np.asarray(ids[lo:hi]))
            bad = ({} if ids is None else
                   {**_negative_ids(block, str(sh.ids[num]), lo),
                    **_bad_string_ids(block, str(sh.ids[num]), lo)})
            columns[ID_COLUMN] = self._id_column(block, bad)
            meta_bad: dict[int, tuple[str, str | None]] = {}
            meta_raw: dict[int, dict[str, Any]] = {}
            if meta is not None:
                texts, meta_bad, meta_raw = next(meta)
                columns[PAYLOAD_COLUMN] = texts.slice(0, hi - lo)
            else:
                columns[PAYLOAD_COLUMN] = pa.nulls(hi - lo, pa.string())
            for i, (reason, _) in sorted(meta_bad.items()):
                # the payload as read, NaN included, goes to the rejects: a re-run left
                # unfixed names the value again instead of taking the point without it
                bad.setdefault(i, record_error(
                    reason, source=str(sh.metadata[num]), row=lo + i,
                    point_id=self._id_of(block[i]),
                    hint="write null for a missing value in the metadata file",
                    raw={"payload": meta_raw[i]}))
            self._overflow_errors(bad, over, lo, block)
            batch = self._without(pa.RecordBatch.from_arrays(
                [columns[f.name] for f in self.schema], schema=self.schema), bad, number + lo)
            if batch is not None:
                yield batch

    def _without(self, batch: pa.RecordBatch, bad: dict[int, RecordError], first: int,
                 whole: bool = False) -> pa.RecordBatch | None:
        """``batch`` (whose first row is the source's row ``first``) without the rows in
        ``bad``, each rejected in row order (None when none is left). Each error's ``raw``
        holds what the row cannot (a negative id, a payload that is not an object, as the
        input has them); the rest of the point is taken from the row, unless the errors carry
        ``whole`` points."""
        if not bad:
            return batch
        for i in sorted(bad):
            err = bad[i]
            if not whole:
                point, extra = point_from_row(batch, i, self.manifest), err.raw or {}
                if isinstance(point.get("vector"), dict) and isinstance(extra.get("vector"),
                                                                        dict):
                    # the error's vectors replace those the row cannot hold, not the others
                    extra = {**extra, "vector": {**point["vector"], **extra["vector"]}}
                err.raw = {**point, **extra}
            self.context.reject(err)
            self._passed.append(first + i)  # skipped (failing, the reject raised)
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[list(bad)] = False
        out = batch.filter(pa.array(keep))
        return out if out.num_rows else None

    def _vector_column(self, spec: VectorSpec, data: np.ndarray
                       ) -> tuple[pa.Array, dict[int, tuple[float, list[Any]]]]:
        """The stream column of ``spec`` for a block of rows, and {offset: (the value, the
        row's values)} of the rows holding a finite float64 value too big for float32."""
        data = np.ascontiguousarray(data)
        over: dict[int, tuple[float, list[Any]]] = {}
        if data.dtype.kind == "f" and data.dtype.itemsize == 8:
            data, over, changed = _narrow(data)
            self._narrowed += changed
        elif data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        flat = pa.array(data.reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, spec.size), over

    def _overflow_errors(self, bad: dict[int, RecordError],
                         over: dict[int, dict[str, tuple[str, float, list[Any]]]],
                         lo: int, ids: Any) -> None:
        """Add to ``bad`` (errors by offset in a block from row ``lo``) one error per row
        of ``over`` ({offset: {vector name: (file, value, values)}}); a row rejected for
        another reason keeps that reason. Each error's ``raw`` holds the float64 values as the
        file has them: narrowed, the value would read back as infinity, not as the input."""
        named = [v.name for v in self.manifest.vectors] != [""]
        for i, vectors in sorted(over.items()):
            raw = {"vector": {n: v[2] for n, v in vectors.items()} if named
                   else vectors[""][2]}
            if i in bad:
                err = bad[i]
                err.raw = {**(err.raw or {}), **raw}
                continue
            name, (source, value, _) = next(iter(vectors.items()))
            bad[i] = _overflow_error(name, value, source, lo + i, self._id_of(ids[i]), raw)

    def _id_column(self, ids: np.ndarray, bad: dict[int, RecordError]) -> pa.Array:
        """The id column of a block; the rows in ``bad`` (rejected, their ids in the errors)
        hold a stand-in, as an id of theirs may be one Arrow cannot hold."""
        if self.manifest.id_kind == "int":
            return pa.array(ids.astype(np.uint64, copy=False), type=pa.uint64())
        return pa.array(["" if i in bad else str(v) for i, v in enumerate(ids)],
                        type=pa.string())

    def _id_of(self, value: Any) -> Any:
        """One id of an ids array as a message names it."""
        return int(value) if self.manifest.id_kind == "int" else str(value)

    def _payload_blocks(self, batch_size: int, start: int
                        ) -> Iterator[tuple[list[str | None], dict[int, RecordError]]] | None:
        """Payload texts from row ``start``, ``batch_size`` at a time, each block with the
        errors of its bad lines by offset (their texts are None)."""
        if self._payloads_path is None:
            return None

        def gen() -> Iterator[tuple[list[str | None], dict[int, RecordError]]]:
            block: list[str | None] = []
            bad: dict[int, RecordError] = {}
            for chunk, chunk_bad in _payload_rows(self._payloads_path, start,
                                                  self._payload_marks):
                bad.update((len(block) + i, err) for i, err in chunk_bad.items())
                block += chunk
                while len(block) >= batch_size:
                    yield block[:batch_size], {i: e for i, e in bad.items() if i < batch_size}
                    del block[:batch_size]
                    bad = {i - batch_size: e for i, e in bad.items() if i >= batch_size}
            if block:
                yield block, bad

        return gen()

    def _per_vector_batches(self, batch_size: int, start: int, stop: int,
                            payloads: Iterator[Any] | None,
                            ) -> Iterator[pa.RecordBatch]:
        spec = self.manifest.vectors[0]
        int_ids = self.manifest.id_kind == "int"
        for lo in range(start, stop, batch_size):
            chunk = self._per_vector[lo:min(lo + batch_size, stop)]
            mat = np.zeros((len(chunk), self._dim), dtype=self._dtype)
            ids: list[Any] = [int(f.stem) if int_ids else f.stem for f in chunk]
            texts: list[str | None] = []
            bad: dict[int, RecordError] = {}
            for i, f in enumerate(chunk):
                vector, error = _load_vector(f, lo + i, ids[i])
                if error is None:
                    error = self._misfit(vector, f, lo + i, ids[i])
                if error is None and vector.dtype.kind == "f" and vector.dtype.itemsize == 8:
                    _, over, _ = _narrow(vector.reshape(1, -1))
                    if over:
                        value, _ = over[0]
                        error = _overflow_error("", value, str(f), lo + i, ids[i], None)
                if int_ids and ids[i] > MAX_UINT64:
                    error = record_error(
                        f"id {ids[i]} (the file name) is outside 0..2^64-1; integer ids must "
                        "be unsigned 64-bit (as in Qdrant and FAISS)", source=str(f), row=lo + i,
                        point_id=ids[i], hint=BIG_STEM_HINT)
                elif not int_ids and not _utf8(ids[i]):
                    # a name of bytes that are no UTF-8, which Python spells with surrogates
                    error = record_error(
                        "the file name is not valid UTF-8, so it cannot be an id (ids are "
                        "written as UTF-8 text)", source=str(f), row=lo + i, point_id=ids[i],
                        hint="rename the file")
                text, payload, side_error = _sidecar(self._sidecars.get(f.stem), lo + i,
                                                     ids[i])
                error = error or side_error
                if error is None:
                    mat[i] = vector.reshape(-1)
                    texts.append(text)
                    continue
                # The point as a JSONL line, for the rejects file: what could be read of it.
                point: dict[str, Any] = {"id": ids[i]}
                values = None if vector is None else _json_values(vector)
                if values is not None:
                    point["vector"] = values
                point["payload"] = payload
                error.raw = point
                bad[i] = error
                texts.append(None)
            # the column cannot hold an id past 2^64-1, nor one that is no UTF-8; their rows
            # are rejected above
            ids = [(0 if int_ids else "") if i in bad else pid for i, pid in enumerate(ids)]
            id_col = pa.array(ids, type=self.schema.field(ID_COLUMN).type)
            vec_col, _ = self._vector_column(spec, mat)  # overflows were rejected above
            batch = self._without(pa.RecordBatch.from_arrays(
                [id_col, vec_col, pa.array(texts, type=pa.string())],
                schema=self.schema), bad, lo, whole=True)
            if batch is not None:
                yield batch
        self._report_narrowing()

    def _misfit(self, v: np.ndarray, f: Path, row: int, point_id: Any) -> RecordError | None:
        """Why a per-vector file's vector (one, ``_load_vector`` says) does not fit the first
        readable file's, or None."""
        if v.dtype == self._dtype and v.size == self._dim:
            return None
        return record_error(
            f"vector has shape {v.shape} and dtype {v.dtype}, but the first file has "
            f"{self._dim} values of {self._dtype}", source=str(f), row=row, point_id=point_id,
            hint="every file must hold one vector of the same size and dtype")

    def _report_narrowing(self) -> None:
        """Warn of the values narrowing changed in the read just ended, counted from zero
        again: a reader kept for the next partition (``scaleout``) or read twice reports each
        read's own count."""
        if self._narrowed:
            from vecferry.mapping import narrowed_warning

            self.context.warn(narrowed_warning(self._narrowed))
            self._narrowed = 0

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _rows(arr: Any, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` as an array of their own; a memory map drops those pages afterwards.

    Pages of a memory-mapped file count in the process's RSS until the kernel reclaims them;
    dropping each batch's pages (the page cache keeps them) keeps RSS bounded by the batch
    size instead of growing to the size of the file.
    """
    if isinstance(arr, _ZipMatrix):  # an .npz member cannot be sliced, only streamed
        return next(arr.blocks(hi - lo, lo), np.empty((0,), dtype=arr.dtype))
    block = np.array(arr[lo:hi])
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED") and arr.flags.c_contiguous:
        # numpy maps from the allocation-granularity boundary below the data offset
        base = arr.offset % mmap.ALLOCATIONGRANULARITY
        start = base + lo * arr.strides[0]
        first = start - start % mmap.PAGESIZE
        end = min(base + hi * arr.strides[0], len(mm))
        if end > first:
            mm.madvise(mmap.MADV_DONTNEED, first, end - first)
    return block


# ------------------------------------------------------------------------- bad points


def _negative_ids(ids: np.ndarray, where: str, lo: int) -> dict[int, RecordError]:
    """{offset: error} of the negative ids in ``ids``, the ids of rows ``lo``... of ``where``;
    each error's ``raw`` holds the id as the file has it."""
    if ids.dtype.kind != "i":
        return {}
    bad: dict[int, RecordError] = {}
    for i in np.flatnonzero(ids < 0):
        value = int(ids[i])
        bad[int(i)] = record_error(f"id {value} is negative", source=where, row=lo + int(i),
                                   hint=ID_HINT, raw={"id": value})
    return bad


def _utf8(text: str) -> bool:
    """Whether ``text`` has a UTF-8 encoding: holds no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_string_ids(ids: np.ndarray, where: str, lo: int) -> dict[int, RecordError]:
    """{offset: error} of the string ids in ``ids`` (rows ``lo``... of ``where``) that no
    point can carry: an empty string, which the JSONL reader refuses too, and one holding a
    lone surrogate (half of a UTF-16 pair), which has no UTF-8 and so no place in Arrow or
    any output. Each error's ``raw`` holds the id as the file has it."""
    if ids.dtype.kind != "U":
        return {}
    bad: dict[int, RecordError] = {}
    for i in np.flatnonzero(ids == ""):
        bad[int(i)] = record_error("id is an empty string", source=where, row=lo + int(i),
                                   point_id="", hint=EMPTY_ID_HINT, raw={"id": ""})
    if ids.dtype.itemsize:
        # numpy holds each character as one 32-bit code: the surrogates are found without
        # a string made of each id
        native = np.ascontiguousarray(ids, dtype=np.dtype(f"U{ids.dtype.itemsize // 4}"))
        codes = native.view(np.uint32).reshape(len(native), -1)
        lone = (codes >= 0xD800) & (codes <= 0xDFFF)
        for i in np.flatnonzero(lone.any(axis=1)):
            value = str(ids[i])
            at = int(np.argmax(lone[i]))
            bad[int(i)] = record_error(
                f"id is not valid Unicode: it holds a lone surrogate ({value[at]!r} at index "
                f"{at}), which UTF-8 cannot encode", source=where, row=lo + int(i),
                point_id=value, hint="ids are written as UTF-8 text: fix the id in the ids file",
                raw={"id": value})
    return bad


def _payload_rows(path: str, start: int, marks: list[tuple[int, int]] | None
                  ) -> Iterator[tuple[list[str | None], dict[int, RecordError]]]:
    """Payload texts of a sidecar aligned by row, from row ``start``, a chunk at a time, with
    the errors of the chunk's bad lines by offset (their texts None; ``raw``: the line's JSON
    value, or its text when it is not JSON).

    ``fileio.iter_payload_chunks`` stops at the first bad line; here a bad line is one bad
    point, which ``on_error="skip"`` leaves out while the others are read. Its chunks are used
    until one holds a bad line (they are checked whole before one is handed out); from that
    chunk on the lines are read here and checked by ``fileio`` too, so the messages are its own.
    A Parquet file has no lines to go back to: ``fileio`` checks it row by row as it goes.
    """
    if path.endswith((".parquet", ".pq")):
        yield from parquet_payload_rows(path, start)
        return
    row = start
    try:
        for chunk in iter_payload_chunks(path, start, marks):
            yield chunk, {}
            row += len(chunk)
        return
    except RecordError:
        pass
    with open_read(path) as fh:
        at, number = seek_to_mark(fh, marks, row)
        lines = iter_lines(fh, path, number)
        for _ in itertools.islice(lines, row - at):
            pass  # rows handed out already: counted, not parsed
        while chunk := list(itertools.islice(lines, PAYLOAD_CHUNK)):
            numbers = [n for n, _, _ in chunk]
            texts = [line for _, line, _ in chunk]
            good, unparsed, not_object = payload_texts(
                texts, lambda i, numbers=numbers: Location(source=path, line=numbers[i]), "line")
            bad = {**unparsed, **not_object}
            for i, err in bad.items():
                err.raw = _line_value(texts[i])
            yield good, bad


def _line_value(line: bytes) -> Any:
    """A rejected payload line as a rejects file keeps it: its JSON value (a list, say), or
    its text when it is not JSON (NaN included: as null it would read as fixed)."""
    try:
        return loads_exact(line)
    except ValueError:
        return line.decode("utf-8", "replace")


def _payload_line_error(err: RecordError, row: int, point_id: Any) -> RecordError:
    """A payload line's error (file and line) naming the row and id of its point, and what to
    do; ``raw`` is the payload as the line holds it."""
    out = record_error(err.message, source=err.location.source, line=err.location.line,
                       row=row, point_id=point_id, hint=err.hint or PAYLOAD_LINE_HINT,
                       raw={"payload": err.raw})
    out.__cause__ = err
    return out


ONE_VECTOR_HINT = "save each vector as a 1-D array of its values"


def _load_vector(f: Path, row: int, point_id: Any
                 ) -> tuple[np.ndarray | None, RecordError | None]:
    """The array of per-vector file ``f`` (row ``row``, id ``point_id``), or why it is not
    one vector: unreadable, or an array of another shape than ``(D,)`` or ``(1, D)`` (and the
    like: a batch of one, whose values are the same). Of a matrix or an empty array no values
    are handed to the rejects file: kept flat, they would convert from it as one vector."""
    try:
        # a file in a bucket is one ranged read of its own (a StoragePath, not a local path)
        with (open(f, "rb") if isinstance(f, Path) else open_read(f)) as fh:
            # np.load takes a file without the magic string for a pickle and says how to
            # unpickle it: advice vecferry does not give
            head = fh.read(6)
            if head != b"\x93NUMPY":
                raise ValueError(f"it starts with {head!r}, not with a .npy header")
            fh.seek(0)
            v = np.lib.format.read_array(fh, allow_pickle=False)
            if v.dtype.names:
                message, hint = _structured(v.dtype)
                return None, record_error(message, source=str(f), row=row,
                                          point_id=point_id, hint=hint)
            if v.ndim == 0:  # it has no size to set or compare (it crashed the open)
                return None, record_error(
                    f"file holds a single {v.dtype} number (a 0-d array), not a vector",
                    source=str(f), row=row, point_id=point_id, hint=ONE_VECTOR_HINT)
    except (ValueError, OSError, EOFError) as exc:
        err = record_error(f"not a readable .npy file: {exc}", source=str(f), row=row,
                           point_id=point_id,
                           hint="the file may be truncated; re-create it, or move it out of "
                                "the directory")
        err.__cause__ = exc
        return None, err
    if v.size == 0:  # as the first file, it would set a size of none: a stream of no vectors
        return None, record_error(
            f"file holds an empty array (shape {v.shape}), not a vector", source=str(f),
            row=row, point_id=point_id, hint=ONE_VECTOR_HINT)
    if v.size != v.shape[-1]:  # flattened, a matrix would pass for one longer vector
        return None, record_error(
            f"file holds an array of shape {v.shape}, not one vector", source=str(f), row=row,
            point_id=point_id, hint=ONE_VECTOR_HINT)
    return v, None


def _sidecar(side: Path | None, row: int, point_id: Any
             ) -> tuple[str | None, Any, RecordError | None]:
    """The payload text of a per-vector file's ``<id>.json`` sidecar ``side`` (None: no
    payload; ``row``, ``point_id``: its point's), the payload as a rejects file keeps it, and
    the error when it is not a JSON object."""
    if side is None:
        return None, None, None
    try:
        data = without_bom(side.read_bytes())
    except OSError as exc:
        err = record_error(f"cannot read the payload sidecar: {exc.strerror or exc}",
                           source=str(side), row=row, point_id=point_id,
                           hint="check the file's permissions")
        err.__cause__ = exc
        return None, None, err
    try:
        value = loads_exact(data)
    except ValueError as exc:
        if (constant := nonstandard_constant(data)) is not None:
            err = record_error(f"payload sidecar holds {constant}, which JSON cannot express",
                               source=str(side), row=row, point_id=point_id, hint=NAN_HINT)
        else:
            err = record_error(f"payload sidecar is not JSON: {exc}", source=str(side),
                               row=row, point_id=point_id, hint=SIDECAR_HINT)
        err.__cause__ = exc
        return None, data.decode("utf-8", "replace").strip(), err
    if value is not None and not isinstance(value, dict):
        return None, value, record_error(
            f"payload sidecar must hold a JSON object, not {type(value).__name__}",
            source=str(side), row=row, point_id=point_id, hint=SIDECAR_HINT)
    return (None if value is None else dumps_payload(value)), value, None


def _is_npy(p: Path) -> bool:
    """Whether a directory entry is an ``.npy`` file: by its extension, in any letter case
    (``.NPY`` is no other kind of file). Not asked of the file system: one that is a
    directory is a file that cannot be read, said when it is read."""
    return p.suffix.lower() == ".npy" and not p.name.startswith(".")


def _per_vector_files(path: Path) -> tuple[list[Path], dict[str, Path]]:
    """The ``<id>.npy`` files of a per-vector directory and their ``<id>.json`` payload
    sidecars by stem (extensions in any letter case).

    Names starting with ``.`` are left out, and so are other names starting with ``_``
    (Spark's ``_SUCCESS``; an ``_<id>.npy`` is a vector) and ``base.NOT_DATA``. ``InputError``
    naming the rest when anything else is there beside the ``.npy`` files: a sidecar without
    its ``.npy``, a second sidecar of one file, an ``.npz``, a subdirectory, any other file.
    Read as nothing, their points or payloads would be lost unsaid.
    """
    files: list[Path] = []
    jsons: list[Path] = []
    unread: list[tuple[str, str]] = []  # (name as shown, why: "side", "npz", "dir", "other")
    for p in sorted(path.iterdir(), key=lambda p: p.name):
        if _is_npy(p):
            files.append(p)
        elif p.name.startswith(".") or (NOT_DATA.fullmatch(p.name)
                                         and not _foreign_manifest(p)):
            continue
        elif p.suffix.lower() == ".json":
            jsons.append(p)  # the sidecar of _<id>.npy starts with _ too
        elif p.name.startswith("_"):
            continue
        elif p.is_dir():
            unread.append((p.name + "/", "dir"))
        else:
            unread.append((p.name, "npz" if p.suffix.lower() == ".npz" else "other"))
    stems = {p.stem for p in files}
    sidecars: dict[str, Path] = {}
    for p in jsons:
        if p.stem not in stems:
            if _foreign_manifest(p):
                unread.append((f"{p.name} (not a manifest vecferry wrote)", "manifest"))
            elif not p.name.startswith("_"):
                unread.append((f"{p.name} (no {p.stem}.npy beside it)", "side"))
        elif p.stem in sidecars:
            unread.append((f"{p.name} (a second sidecar of {p.stem}.npy, beside "
                           f"{sidecars[p.stem].name})", "side"))
        else:
            sidecars[p.stem] = p
    if unread and files:  # with no .npy file at all, that is the error to give
        raise _unread_per_vector(str(path), unread)
    return files, sidecars


#: what to do about each kind of file a per-vector directory does not read
_UNREAD_HINTS = {
    "side": "a payload sidecar <id>.json is read with its vector <id>.npy: add the vector "
            "file, or move the sidecar out",
    "npz": "an .npz archive is a source of its own: convert it by itself",
    "dir": "subdirectories are not read: convert each as a source of its own",
    "manifest": "a manifest.json without format_version is not vecferry's and is not read",
}


def _unread_per_vector(location: str, unread: list[tuple[str, str]]) -> InputError:
    unread.sort(key=lambda item: item[0])
    kinds = {why for _, why in unread}
    hints = [_UNREAD_HINTS[k] for k in ("side", "npz", "dir", "manifest") if k in kinds]
    return unread_files_error(
        location, [name for name, _ in unread],
        "that are not per-vector <id>.npy files or their <id>.json sidecars",
        "; ".join([*hints, "or move them out of the directory, or give them a leading _ or . "
                   "(which vecferry skips)"]))


def _narrow(data: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[float, list[Any]]], int]:
    """A float64 (N, D) block as float32; {row: (the value, the row's values)} of the rows
    holding a finite value float32 cannot hold; the number of values of the other rows the
    narrowing changed."""
    with np.errstate(over="ignore"):  # an overflow is a bad point, rejected by the caller
        narrowed = data.astype(np.float32)
    overflow = np.isinf(narrowed) & np.isfinite(data)
    rows = np.flatnonzero(overflow.any(axis=1))
    over = {int(r): (float(data[r][overflow[r]][0]), _json_values(data[r])) for r in rows}
    # a NaN stays a NaN: not a value the narrowing changed
    changed = (narrowed.astype(np.float64) != data) & ~np.isnan(data)
    changed[rows] = False  # those points are rejected, not written changed
    return narrowed, over, int(np.count_nonzero(changed))


def _overflow_error(name: str, value: float, source: str, row: int, point_id: Any,
                    raw: Any) -> RecordError:
    """The error of a point whose float64 vector ``name`` holds ``value``, which float32
    cannot hold (narrowed, it would be infinity)."""
    label = f"vector {name!r}" if name else "vector"
    return record_error(f"{label} holds {value!r}, outside float32 range (float64 vectors are "
                        "narrowed to float32, where it would become infinity)", source=source,
                        row=row, point_id=point_id, hint=OVERFLOW_HINT, raw=raw)


def _json_values(v: np.ndarray) -> list[Any] | None:
    """The values of an array as JSON numbers (NaN and infinity as null), for a rejects file;
    None for an array of something else than numbers."""
    flat = v.reshape(-1)
    if flat.dtype.kind in "iub":
        return flat.tolist()
    if flat.dtype.kind != "f":
        return None
    return [x if math.isfinite(x) else None for x in flat.astype(float).tolist()]


_SHARD_NAME = re.compile(r"(?P<prefix>.*?)[_\-.]?(?P<number>\d+)\Z")
MAX_SHARD_GROUPS = 16


def _groups(paths: list[Path]) -> dict[str, dict[int, Path]] | None:
    """{prefix: {shard number: file}}, or None when a name has no trailing number."""
    groups: dict[str, dict[int, Path]] = {}
    for p in paths:
        m = _SHARD_NAME.match(p.stem if p.suffix != ".gz" else Path(p.stem).stem)
        if m is None:
            return None
        files = groups.setdefault(m["prefix"], {})
        if int(m["number"]) in files:
            return None  # "01" and "1": not a numbering
        files[int(m["number"])] = p
    return groups


def _header(path: Path) -> _NpyHeader:
    with open_binary(path) as fh:
        return _NpyHeader(fh, str(path))


def _find_shards(path: Path, negative_ok: bool) -> _Shards | None:
    """The shard layout of a directory, or None when it is a per-vector directory.
    ``negative_ok``: a negative id is a point to reject while reading, not a bad source."""
    npys = [p for p in path.iterdir() if _is_npy(p)]
    groups = _groups(npys)
    if not groups or len(groups) > MAX_SHARD_GROUPS:
        return None
    firsts = {prefix: _first_header(files) for prefix, files in groups.items()}
    if not any(len(h.shape) == 2 and h.shape[0] > 1 for h in firsts.values()):
        return None
    return _Shards(path, groups, firsts, negative_ok)


def _first_header(files: dict[int, Path]) -> _NpyHeader:
    """The header of the first file of a numbered group that has one: the layout is told by
    the files that read; a broken file is then one bad point (per-vector) or a bad shard."""
    error: InputError | None = None
    for num in sorted(files):
        try:
            return _header(files[num])
        except InputError as exc:
            error = error or exc
    assert error is not None  # a group has a file
    raise error


class _Shards:
    """A directory of numbered ``.npy`` matrices with optional ids and metadata per shard."""

    def __init__(self, path: Path, groups: dict[str, dict[int, Path]],
                 firsts: dict[str, _NpyHeader], negative_ok: bool = False):
        self.path = path
        self.negative_ok = negative_ok
        where = str(path)
        vector_groups = {p: f for p, f in groups.items() if len(firsts[p].shape) == 2}
        id_groups = {p: f for p, f in groups.items()
                     if len(firsts[p].shape) == 1 and p.lower().startswith("id")}
        other = sorted(set(groups) - set(vector_groups) - set(id_groups))
        if other:
            raise InputError(
                f"1-D arrays {', '.join(groups[p][min(groups[p])].name for p in other)} are "
                "neither vector matrices nor ids", location=Location(where),
                hint="a shard directory holds (N, D) matrices, ids_<n>.npy and "
                "metadata_<n>.parquet; move other files out")
        if len(id_groups) > 1:
            raise InputError(f"several id groups: {', '.join(sorted(id_groups))}",
                             location=Location(where), hint="keep one ids_<n>.npy per shard")
        # sorted, so that which file a mismatch is reported against does not depend on the
        # order the directory lists its files in
        vector_groups = dict(sorted(vector_groups.items()))
        self.numbers = sorted(set().union(*vector_groups.values()))
        for prefix, files in vector_groups.items():
            missing = [n for n in self.numbers if n not in files]
            if missing:
                have = next(f[missing[0]] for f in vector_groups.values() if missing[0] in f)
                raise InputError(
                    f"vector group {prefix!r} has no matrix for shard(s) "
                    f"{', '.join(map(str, missing))} ({have.name} has no {prefix!r} partner)",
                    location=Location(where),
                    hint="every shard needs a matrix in every group: add the missing file, "
                         "or move that shard's other files out")
        names = {p: ("" if len(vector_groups) == 1 else p) for p in vector_groups}
        self.vectors = {names[p]: f for p, f in vector_groups.items()}
        self.ids = next(iter(id_groups.values())) if id_groups else None
        meta_files = [p for p in path.iterdir() if p.suffix.lower() == ".parquet"
                      and not p.name.startswith((".", "_"))]
        unread = [p.name + ("/" if p.is_dir() else "") for p in path.iterdir()
                  if not (_is_npy(p) or p in meta_files or p.name.startswith((".", "_"))
                          or (NOT_DATA.fullmatch(p.name) and not _foreign_manifest(p)))]
        if unread:
            raise unread_files_error(
                where, sorted(unread), "that are not shards (.npy) or their metadata "
                "(.parquet)", "a shard directory holds numbered (N, D) matrices, "
                "ids_<n>.npy and metadata_<n>.parquet: move the other files out of the "
                "directory, or give them a leading _ or . (which vecferry skips)")
        meta_groups = _groups(meta_files) if meta_files else {}
        if meta_groups is None or len(meta_groups) > 1:
            raise InputError("metadata Parquet files must be one numbered group "
                             "(metadata_0.parquet, metadata_1.parquet, ...)",
                             location=Location(where))
        self.metadata = next(iter(meta_groups.values())) if meta_groups else None
        self._check(where)

    def _check(self, where: str) -> None:
        self.rows_of: dict[int, int] = {}
        self.specs: dict[str, VectorSpec] = {}
        self.narrowing = False
        for name, files in self.vectors.items():
            first: _NpyHeader | None = None
            for num in self.numbers:
                h = _header(files[num])
                if len(h.shape) != 2:
                    raise InputError(f"expected a 2-D matrix, found shape {h.shape}",
                                     location=Location(str(files[num])))
                _check_width(h.shape, str(files[num]))
                if first is None:
                    first = h
                    dtype = _datatype(h.dtype, str(files[num]))
                    self.narrowing |= h.dtype.newbyteorder("<") == np.dtype("<f8")
                    self.specs[name] = VectorSpec(name, "dense", int(h.shape[1]), dtype)
                elif h.shape[1] != first.shape[1] or h.dtype != first.dtype:
                    raise InputError(
                        f"shard is {h.shape[1]}-dimensional {h.dtype} but "
                        f"{files[self.numbers[0]].name} is {first.shape[1]}-dimensional "
                        f"{first.dtype}", location=Location(str(files[num])),
                        hint="every shard holds vectors of one size and dtype")
                rows = self.rows_of.setdefault(num, int(h.shape[0]))
                if rows != h.shape[0]:
                    raise InputError(f"shard has {h.shape[0]} rows but "
                                     f"{self.vectors_file(num).name} has {rows}",
                                     location=Location(str(files[num])),
                                     hint="the matrices of one shard hold the same points, "
                                          "one row each")
        for label, group in (("ids", self.ids), ("metadata", self.metadata)):
            if group is None:
                continue
            for num in self.numbers:
                if num not in group:
                    raise InputError(f"shard {num} has no {label} file (others have)",
                                     location=Location(str(self.vectors_file(num))),
                                     hint=f"give every shard its {label}, or none")
                n = (_header(group[num]).shape[0] if label == "ids"
                     else pq.ParquetFile(group[num]).metadata.num_rows)
                if n != self.rows_of[num]:
                    raise InputError(f"{label} file has {n} rows but its shard "
                                     f"{self.vectors_file(num).name} has {self.rows_of[num]}",
                                     location=Location(str(group[num])),
                                     hint=f"{label} are matched to vectors by row")
        self.rows = sum(self.rows_of.values())
        self.id_kind = "int"
        if self.ids is not None:
            kinds = set()
            for num in self.numbers:
                ids = _open_ids(self.ids[num])
                kinds.add(_ids_kind(ids, str(self.ids[num]), self.negative_ok))
            self.id_kind = merge_id_kinds(kinds)

    def vectors_file(self, num: int) -> Path:
        return next(iter(self.vectors.values()))[num]

    def manifest(self) -> Manifest:
        return Manifest(vectors=list(self.specs.values()), id_kind=self.id_kind,
                        source={"format": "npy", "location": str(self.path),
                                "layout": "shards", "shards": len(self.numbers)})

    def metadata_batches(self, num: int, batch_size: int, start: int
                         ) -> Iterator[tuple[pa.Array, dict[int, tuple[str, str | None]],
                                             dict[int, dict[str, Any]]]] | None:
        """Payload blocks of shard ``num``'s metadata, from row ``start``, ``batch_size`` each,
        with the rows JSON cannot hold (NaN, infinity) as {offset: (reason, hint)} and those
        rows' payloads as read, NaN included, as {offset: payload}."""
        if self.metadata is None:
            return None
        from vecferry.mapping import payload_texts

        path = self.metadata[num]

        def from_start(pf: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
            skip = start
            for batch in pf.iter_batches(batch_size=batch_size):
                if skip:
                    cut = min(skip, batch.num_rows)
                    batch, skip = batch.slice(cut), skip - cut
                if batch.num_rows:
                    yield batch

        def gen() -> Iterator[tuple[pa.Array, dict[int, tuple[str, str | None]],
                                    dict[int, dict[str, Any]]]]:
            pf = pq.ParquetFile(path, memory_map=False, buffer_size=1 << 20)
            try:
                for block in rebatch(from_start(pf), batch_size):
                    bad: dict[int, tuple[str, str | None]] = {}
                    texts = payload_texts(block, block.schema.names, (), bad)
                    raw = {i: _raw_row(block, i) for i in bad}
                    yield texts, bad, raw
            finally:
                pf.close()

        return gen()


def _raw_row(block: pa.RecordBatch, i: int) -> dict[str, Any]:
    """Row ``i`` of a metadata block as a rejects file keeps it: its non-null cells as JSON
    can hold them, read as ``payload_texts`` reads them (``to_pylist`` fails on a timestamp
    in nanoseconds or past year 9999), NaN kept so that a re-run names it again."""
    from vecferry.mapping import column_values, jsonable

    row = {name: column_values(block.column(j).slice(i, 1))[0]
           for j, name in enumerate(block.schema.names)}
    return {k: jsonable(v, keep_non_finite=True) for k, v in row.items() if v is not None}


def _ids_kind(ids: Any, where: str, negative_ok: bool = False) -> str:
    """The id kind of an ids array; a negative id fails the source (before anything is
    written) unless ``negative_ok``, when reading rejects its point instead."""
    n = ids.shape[0]
    if ids.dtype.kind in "iu":
        if ids.dtype.kind == "i" and not negative_ok:
            for lo in range(0, n, 1 << 20):
                block = np.asarray(_rows(ids, lo, min(n, lo + (1 << 20))))
                neg = np.flatnonzero(block < 0)
                if neg.size:
                    raise InputError(f"id {int(block[neg[0]])} is negative",
                                     location=Location(where, row=lo + int(neg[0])),
                                     hint=ID_HINT)
        return "int"
    if ids.dtype.kind == "U":
        return merge_id_kinds(
            _id_kind_of_strings(np.asarray(_rows(ids, lo, min(n, lo + (1 << 16)))))
            for lo in range(0, n, 1 << 16))
    raise UnsupportedError(f"ids of dtype {ids.dtype} are not supported", location=Location(where),
                           hint="ids must be unsigned integers or unicode strings")


IDS_FILE_HINT = "ids must be a 1-D .npy of integers or unicode strings"


def _open_ids(path: Path) -> np.ndarray:
    """The ids array of an ``.npy`` file, memory-mapped. ``InputError`` for anything else: an
    ``.npz`` archive (whose ``ids`` are read by converting the archive itself), another file,
    an array that is not 1-D."""
    where = str(input_path(str(path)))
    try:
        with open_binary(path) as fh:
            head = fh.read(6)
    except OSError as exc:  # a directory, say
        raise InputError(f"cannot read the ids file: {exc.strerror or exc}",
                         location=Location(where), hint=IDS_FILE_HINT) from exc
    if head.startswith(b"PK\x03\x04"):
        raise InputError("ids file is an .npz archive, not an .npy file",
                         location=Location(where),
                         hint="save the ids array by itself with np.save('ids.npy', ids), or "
                              "convert the .npz itself, whose 'ids' array is used")
    if head != b"\x93NUMPY":
        # np.load takes such a file for a pickle and says how to unpickle it: advice vecferry
        # does not give
        what = f"it starts with {head!r}, not with a .npy header" if head else "it is empty"
        raise InputError(f"ids file is not a readable .npy array: {what}",
                         location=Location(where), hint=IDS_FILE_HINT)
    try:
        ids = (_remote_array(path, _header(path), where) if is_remote(path)
               else np.load(path, mmap_mode="r", allow_pickle=False))
    except ValueError as exc:
        raise InputError(f"ids file is not a readable .npy array: {exc}",
                         location=Location(where), hint=IDS_FILE_HINT) from exc
    if ids.ndim != 1:
        raise InputError(f"ids must be 1-D, found shape {ids.shape}", location=Location(where))
    return ids


# ------------------------------------------------------------------------------------ writer


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header padded to ``HEADER_BYTES``, so it can be rewritten."""
    body = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": shape}).encode("latin1")
    pad = HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise SchemaError("npy header does not fit its reserved space")
    header = body + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


class _NpyStream:
    """An ``.npy`` file appended row block by row block; the shape is patched in on close."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = path, dtype, row_shape
        self.fh = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self.fh.write(npy_header(dtype, (0, *row_shape)))
        self.rows = 0

    def append(self, block: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        self.fh.seek(0)
        self.fh.write(npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.fh.close()
        fsync_path(self.path)


#: the longest file name, in bytes, of the usual file systems (ext4, XFS, APFS: NAME_MAX)
NAME_MAX = 255
NAME_HINT = ("the numpy layout keeps each named vector in a file vectors.<name>.npy; write "
             "Parquet or JSONL instead, which keep any vector name")


def _unfit_name(name: str) -> str | None:
    """Why vector ``name`` cannot name its file ``vectors.<name>.npy``, or None."""
    if "/" in name:
        return "holds '/', a path separator"
    if "\0" in name:
        return "holds a NUL character"
    size = len(f"vectors.{name}.npy".encode("utf-8", "surrogateescape"))
    if size > NAME_MAX:
        return f"makes a file name of {size} bytes (vectors.<name>.npy), over {NAME_MAX}"
    return None


def _check_names(vectors: list[VectorSpec], location: str) -> None:
    """Refuse, before anything is written, vector names that cannot be file names or that
    differ only in letter case: on a file system that ignores case (macOS's, Windows') two such
    vectors would be written into one file."""
    seen: dict[str, str] = {}
    for v in vectors:
        why = _unfit_name(v.name)
        if why is not None:
            raise UnsupportedError(f"vector name {v.name!r} {why}, so it cannot name a file",
                                   location=Location(location), hint=NAME_HINT)
        other = seen.setdefault(v.name.casefold(), v.name)
        if other != v.name:
            raise UnsupportedError(
                f"vector names {other!r} and {v.name!r} differ only in letter case: where file "
                "names ignore case (macOS, Windows) their files would be one",
                location=Location(location), hint=NAME_HINT)


#: the most bytes of ids.npy built in memory at once when it is written
ID_BLOCK_BYTES = 4 << 20
NUL_ID_MESSAGE = ("id ends in a NUL character, which the numpy format's fixed-width strings "
                  "cannot hold (numpy drops trailing NULs, so the id would read back as "
                  "another)")
NUL_ID_HINT = "write Parquet or JSONL instead, which keep any id"


class NpyWriter(ClosingWriter):
    """Writes the numpy directory layout: one matrix per dense vector, ids, payloads, manifest.

    Raises ``UnsupportedError`` at open for sparse or multi vectors, or none. A point missing one of
    several named vectors cannot sit in a matrix: it is rejected (named by id) through
    ``context``.
    """

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, distance: str | None = None, **options: Any):
        reject_unknown_options("npy", options)
        schema = with_distance(schema, distance)
        if location.lower().endswith(".npz"):
            # Readers take ".npz" for a zip archive; a directory under that name would not read.
            raise UsageError(
                "the numpy writer writes a directory (vectors.npy, ids.npy, payloads.jsonl, "
                "manifest.json), not an .npz archive",
                location=Location(location), hint="give a directory name, e.g. out_dir")
        self.location = location
        self.context = context
        self.manifest = manifest_of(schema)
        if not self.manifest.vectors:
            raise UnsupportedError("the stream has no vectors (its points carry ids and "
                                   "payloads only); the numpy layout holds vectors",
                                   location=Location(location),
                                   hint="write Parquet or JSONL instead")
        cannot = [v for v in self.manifest.vectors if v.kind != "dense"]
        if cannot:
            names = ", ".join(f"{v.name or '(unnamed)'} ({v.kind})" for v in cannot)
            raise UnsupportedError(f"a numpy matrix cannot hold these vectors: {names}",
                                   location=Location(location),
                                   hint="write Parquet or JSONL instead, which hold every kind")
        _check_names(self.manifest.vectors, location)
        self.int_ids = self.manifest.id_kind == "int"
        self._max_id_len = 1
        self.digest = StreamDigest(self.manifest)
        self.count = 0
        self.vectors: dict[str, _NpyStream] = {}
        self.ids: _NpyStream | None = None
        self._str_ids: IO[bytes] | None = None
        self.payloads: IO[bytes] | None = None
        # staged: a remote target is written locally (headers are patched) and uploaded
        self.out = AtomicPath(location, overwrite=overwrite, directory=True, staged=True)
        d = self.out.temp
        try:
            for v in self.manifest.vectors:
                name = "vectors.npy" if v.name == "" else f"vectors.{v.name}.npy"
                self.vectors[v.name] = _NpyStream(d / name, np.dtype(v.datatype), (v.size,))
            if self.int_ids:
                self.ids = _NpyStream(d / "ids.npy", np.dtype(np.uint64), ())
            else:
                self._str_ids = open(d / ".ids.tmp", "wb")  # noqa: SIM115 - closed in close()
            self.payloads = open(d / "payloads.jsonl", "wb", buffering=1 << 20)  # noqa: SIM115
        except BaseException:
            # the caller gets no writer to abort: the temporary directory and its lock go here
            self.abort()
            raise

    def write_batch(self, batch: pa.RecordBatch) -> None:
        missing = np.zeros(batch.num_rows, dtype=bool)
        lacking: dict[int, list[str]] = {}
        for v in self.manifest.vectors:
            col = batch.column(v.column)
            if col.null_count:
                absent = ~col.is_valid().to_numpy(zero_copy_only=False)
                missing |= absent
                for row in np.flatnonzero(absent):
                    lacking.setdefault(int(row), []).append(repr(v.name) if v.name
                                                            else "(unnamed)")
        nul = np.zeros(batch.num_rows, dtype=bool)
        if not self.int_ids:
            # numpy's fixed-width strings end at the first trailing NUL: such an id would be
            # written as another one (two of them as one), so it is not written at all
            nul = pc.ends_with(batch.column(ID_COLUMN), "\0").to_numpy(zero_copy_only=False)
        if missing.any() or nul.any():
            from vecferry.points import reject_from_row

            for row in np.flatnonzero(missing | nul):
                if missing[row]:
                    names = lacking[int(row)]
                    self.context.reject(reject_from_row(
                        batch, int(row), self.manifest,
                        f"point lacks vector{'s' if len(names) > 1 else ''} {', '.join(names)}; "
                        "a numpy matrix needs a value in every row", self.location))
                else:
                    self.context.reject(reject_from_row(batch, int(row), self.manifest,
                                                        NUL_ID_MESSAGE, self.location,
                                                        hint=NUL_ID_HINT))
            batch = batch.filter(pa.array(~(missing | nul)))
        n = batch.num_rows
        if n == 0:
            return
        self.digest.update(batch)
        for v in self.manifest.vectors:
            flat = batch.column(v.column).flatten().to_numpy(zero_copy_only=False)
            self.vectors[v.name].append(flat.reshape(n, v.size))
        ids = batch.column(ID_COLUMN)
        if self.int_ids:
            self.ids.append(ids.to_numpy(zero_copy_only=False))
        else:
            values = ids.to_pylist()
            self._max_id_len = max(self._max_id_len, *(len(s) for s in values))
            self._str_ids.write(b"".join(orjson.dumps(s) + b"\n" for s in values))
        texts = batch.column(PAYLOAD_COLUMN).to_pylist()
        self.payloads.write(b"".join((b"null" if t is None else t.encode()) + b"\n"
                                     for t in texts))
        self.count += n

    def close(self) -> dict[str, Any]:
        d = self.out.temp
        for s in self.vectors.values():
            s.close()
        if self.ids is not None:
            self.ids.close()
        else:
            self._str_ids.close()
            self._write_string_ids(d)
        self.payloads.close()
        self.manifest.count = self.count
        self.manifest.digest = self.digest.as_dict()
        (d / MANIFEST_NAME).write_bytes(self.manifest.to_json())
        size = sum(f.stat().st_size for f in d.iterdir())
        self.out.commit()
        return {"bytes_written": size}

    def _write_string_ids(self, d: Path) -> None:
        """String ids need a fixed width known only at the end: stream the spill into ids.npy,
        in blocks of at most ``ID_BLOCK_BYTES`` (one row at least)."""
        dtype = np.dtype(f"<U{self._max_id_len}")
        # every row is as wide as the longest id: counted in rows, one long id among many
        # short ones would make each block that many times bigger
        rows = max(1, ID_BLOCK_BYTES // dtype.itemsize)
        out = _NpyStream(d / "ids.npy", dtype, ())
        spill = d / ".ids.tmp"
        try:
            with open(spill, "rb") as fh:
                block: list[str] = []
                for line in fh:
                    block.append(orjson.loads(line))
                    if len(block) == rows:
                        out.append(np.array(block, dtype=dtype))
                        block = []
                if block:
                    out.append(np.array(block, dtype=dtype))
            out.close()
        finally:
            out.fh.close()  # closed already unless this failed; abort then removes the file
        os.unlink(spill)

    def abort(self) -> None:
        """Remove the temporary directory (and its lock), whatever was opened or closed
        before: also after a failed open or close."""
        handles = [s.fh for s in self.vectors.values()]
        handles += [self.ids.fh if self.ids else self._str_ids, self.payloads]
        for fh in handles:
            if fh is not None:
                with contextlib.suppress(OSError):  # a full disk fails the flush; it goes anyway
                    fh.close()
        self.out.abort()

