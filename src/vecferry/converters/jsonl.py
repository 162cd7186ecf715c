"""JSON Lines: one point per line in the shape of a Qdrant REST point.

Spec: https://jsonlines.org/ ; point shape: https://api.qdrant.tech/api-reference/points/upsert-points

    {"id": 7, "vector": [0.1, 0.2], "payload": {"title": "x"}}
    {"id": "4f1c...", "vector": {"text": [...], "bm25": {"indices": [3], "values": [0.5]},
     "colbert": [[...], [...]]}, "payload": null}

``.jsonl`` / ``.ndjson``, optionally ``.gz`` or ``.zst`` compressed. The manifest is a sidecar
``<file>.manifest.json``; without one the reader infers the vectors and id kind from the first
batch of points (``id_kind`` overrides the id kind). float32 values are written in their shortest
round-trip form, so a float32 vector read back is bit-identical. NaN and infinity cannot be held by
JSON: such points are refused (or sent to the rejects file with ``on_error="skip"``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import shlex
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from vecferry.converters.base import (
    NOT_DATA,
    REJECT_KEY,
    SHOWN,
    AtomicPath,
    ClosingReader,
    ClosingWriter,
    Context,
    Writeback,
    fsync_path,
    input_path,
    output_size,
    reject_unknown_options,
    unread_files_error,
)
from vecferry.converters.parts import (
    DIR_MANIFEST,
    PartLog,
    directory_manifest_path,
    directory_only,
    listed_parts,
    parse_part_size,
    read_directory_manifest,
)
from vecferry.digest import StreamDigest, point_hashes, point_parts
from vecferry.errors import InputError, Location, RecordError, SchemaError, UsageError
from vecferry.fileio import (
    NAN_HINT,
    STREAM_ERRORS,
    constant_and_id,
    corrupt_stream,
    gc_paused,
    iter_lines,
    loads_exact,
    open_read,
    open_write,
    without_bom,
)
from vecferry.mapping import KeyMapping, UnmappedRecord, suggest_records
from vecferry.parallel import WorkerGate
from vecferry.points import (
    BOTH_VECTOR_KEYS,
    BOTH_VECTOR_KEYS_HINT,
    BatchBuilder,
    has_both_vector_keys,
    infer_manifest,
    infer_vector_spec,
    iter_points,
    non_finite_rows,
    reject_from_row,
    vector_value,
    vectors_of,
)
from vecferry.storage import is_remote, output_path
from vecferry.stream import (
    ID_COLUMN,
    ID_KINDS,
    PAYLOAD_COLUMN,
    Manifest,
    decode_ids,
    encode_id,
    manifest_of,
    record_error,
    with_distance,
)

PEEK_POINTS = 1000
#: the key of a manifest's ``source`` marking a stream without vectors because its source's
#: lines gave none to infer them from (every line was rejected), not because it has none
VECTORS_UNKNOWN = "vectors_unknown"
_SUGGEST = "`vecferry inspect FILE` suggests a mapping"
#: text a parse chunk holds at most: with a few chunks in flight to the parsing workers, this
#: (not the line count) bounds the reader's memory when lines are long (768-dim lines are ~9 kB)
CHUNK_BYTES = 4 << 20


def manifest_path(path: str | Path) -> Path:
    from vecferry.storage import as_path  # s3:// ... stays a URL: a StoragePath

    return as_path(f"{path}.manifest.json")  # type: ignore[return-value]


def read_manifest_sidecar(path: str | Path) -> Manifest | None:
    side = manifest_path(path)
    if not side.exists():
        return None
    try:
        return Manifest.from_json(side.read_bytes())
    except (orjson.JSONDecodeError, TypeError, SchemaError) as exc:
        raise InputError(f"manifest sidecar is not valid: {exc}", location=Location(str(side)),
                         hint="fix or delete it; without it the schema is inferred") from exc


class JsonlReader(ClosingReader):
    """Streams points from a JSONL file; memory bounded by the batch size.

    Lines are parsed in chunks of ``batch_size``, in worker processes once the file proves big
    enough (``workers``, default: up to 2). Fails with ``InputError`` when the file is missing,
    empty, or truncated, or a directory holds files it would not read (``_jsonl_parts``); each
    bad line is a ``RecordError`` naming file and line, raised or rejected through ``context``
    in line order. Each ``batches`` call reads from the first line again.

    A read that reaches the last line of a source whose manifest records a count compares it
    with the records read (good and rejected lines): an ``InputError`` naming both when they
    differ (a file cut at a line boundary, or edited), raised after the last batch, so a run
    writes no output; a read stopped earlier (``--limit``) checks nothing.
    ``check_recorded_count = False`` leaves the comparison to the caller (``verify`` reports
    it as a difference).
    """

    #: compare the records read with the count the manifest records (see the class docstring)
    check_recorded_count = True

    def __init__(self, location: str, *, context: Context, id_kind: str | None = None,
                 workers: int | None = None, id_key: str | None = None,
                 vector_key: Any = None, sparse_key: Any = None, payload_key: str | None = None,
                 **options: Any):
        reject_unknown_options("jsonl", options)
        self.location = location
        self.context = context
        self.path = input_path(location)
        # a directory of parts (``part-*.jsonl[.gz|.zst]``, ``_manifest.json``) reads as one
        self.files, dir_manifest = _jsonl_parts(self.path, location)
        if id_kind is not None and id_kind not in ID_KINDS:
            raise SchemaError(f"unknown id kind {id_kind!r}", hint=f"one of {', '.join(ID_KINDS)}")
        # Foreign records (keys other than id / vector / payload) are read by a key mapping.
        self.mapping = KeyMapping.from_options(id_key=id_key, vector_key=vector_key,
                                               sparse_key=sparse_key, payload_key=payload_key)
        if self.files == [self.path]:
            manifest = read_manifest_sidecar(self.path)
            if manifest is not None and manifest.source.get(VECTORS_UNKNOWN):
                # the rejects of a source that gave no vectors: their shape comes from the
                # lines, fixed now (the sidecar's "none" would refuse each fixed vector)
                manifest = None
            self._manifest_at = str(manifest_path(self.path))
        else:
            manifest = dir_manifest
            self._manifest_at = str(directory_manifest_path(self.path))
        self._sidecar_count = manifest.count if manifest else None
        self._fh: Any = open_read(self.files[0])  # fails fast (missing codec, unreadable)
        self._lines = self._all_lines()
        self._peeked: list[tuple[str, int, bytes, bool]] = []
        #: whether a read began: the next one starts again from the first line
        self._read_begun = False
        #: no line gave a point to infer the vectors from: reading rejects every line
        self._no_schema = False
        self._mapping_json: bytes | None = None
        if manifest is None or self.mapping is not None:
            # A mapped file's manifest (a foreign source's rejects file has one) still gives
            # the vectors and id kind, once the mapping is resolved against the records: taken
            # from the lines instead, an unfixed record first in the file set the shape.
            manifest = self._infer(manifest)
        if id_kind:
            manifest.id_kind = id_kind
        manifest.source = {"format": "jsonl", "location": location}
        if self._no_schema:
            manifest.source[VECTORS_UNKNOWN] = True
        if self.mapping is not None:
            manifest.source["mapping"] = self.mapping.as_dict()
        self.manifest = manifest
        self.schema = manifest.schema()
        self._gate = WorkerGate(workers, [__name__])

    def _all_lines(self) -> Iterator[tuple[str, int, bytes, bool]]:
        """(file, line number, line, has newline) over the file or the parts in order; the
        first file is the one open already, if one is."""
        single = self.files == [self.path]
        for i, path in enumerate(self.files):
            source = self.location if single else str(path)
            if i or self._fh is None:
                self._fh = open_read(path)
            try:
                for number, line, newline in iter_lines(self._fh, source):
                    yield source, number, line, newline
            finally:
                self._fh.close()
                self._fh = None

    def _infer(self, known: Manifest | None = None) -> Manifest:
        """Vectors and id kind from the first points; the lines are kept to be read again.

        A stream without vectors is inferred only when every sampled point says it has none
        (``"vector": {}``, as Qdrant shows such a point; a rejects file of a collection without
        vectors has no manifest sidecar). Raises ``InputError`` ("no point has a vector") when
        the sampled points lack the vector key: foreign records more likely keep their vector
        under another key, which the hint names when it finds one. Mapped records lacking
        their vectors raise the ``RecordError`` of the first of them (line, id, the key).

        With a mapping, the mapping is resolved against the sampled records; a ``known``
        manifest (the file's own) then gives the vectors and id kind (``_mapped_manifest``).

        When no sampled line is a point (none is JSON, an object, or, each holding the vector
        key, a vector value that tells its shape), there is no schema: ``_without_schema``
        raises the first line's ``RecordError``, or, skipping bad records, has every line
        rejected when the batches are read.
        """
        points = []
        lines: list[int] = []  # the line of each point, for a message about it
        for item in self._lines:
            self._peeked.append(item)
            line = item[2]
            try:
                value = loads_exact(line, 0 if self.mapping else line.find(b'"payload"'))
            except ValueError:
                continue  # reported with its line number when the batches are read
            if isinstance(value, dict) and REJECT_KEY in value:
                # a rejects-file line: the record it holds, without vecferry's note
                if "_raw" in value:
                    continue  # reported with its line when the lines are read
                value = {k: v for k, v in value.items() if k != REJECT_KEY}
            if isinstance(value, dict):
                points.append(value)
                lines.append(item[1])
            if len(points) >= PEEK_POINTS:
                break
        if not points:
            if not self._peeked:
                raise InputError("input is empty: no points", location=Location(self.location),
                                 hint="check that the file holds one JSON point per line")
            return self._without_schema()
        first_bad: RecordError | None = None
        if self.mapping is not None:
            self.mapping = self.mapping.resolve(points, self.location)
            self._mapping_json = orjson.dumps(self.mapping.as_dict())
            if known is not None:
                return self._mapped_manifest(known)
            pairs = self.mapping.pairs()
            mapped = []
            for i, p in enumerate(points):
                try:
                    mapped.append(self.mapping.to_point(p, i, pairs))
                except UnmappedRecord as exc:
                    # reported with its line when the batches are read, unless no record
                    # makes a point to tell the vectors from: then the first refused says why
                    if first_bad is None and exc.point_id is not None:
                        first_bad = record_error(str(exc), source=self.location, line=lines[i],
                                                 point_id=exc.point_id, hint=exc.hint, raw=p)
                        first_bad.__cause__ = exc
            points = mapped
        disagreements: list[str] = []
        # mapped points have no line each (a record the mapping refused is left out)
        manifest = infer_manifest(points, disagreements,
                                  lines if self.mapping is None else None)
        if not manifest.vectors and self.mapping is None and all(
                vector_value(p) == {} for p in points):
            return manifest
        if not manifest.vectors and self.mapping is not None:
            if first_bad is not None:
                raise first_bad
            keys = ", ".join(repr(k) for _, k in self.mapping.pairs())
            raise InputError(f"no record holds a vector under {keys}",
                             location=Location(self.location),
                             hint="vectors are lists of numbers (sparse ones "
                                  '{"indices": [...], "values": [...]}); check the '
                                  f"--vector-key / --sparse-key given; {_SUGGEST}")
        if not manifest.vectors and all(vector_value(p) is not None for p in points):
            # every point has its vectors' key, none a value that tells their shape: the
            # lines are bad points, not foreign records
            return self._without_schema()
        if not manifest.vectors:
            hint = 'each line needs "vector": [...] or {"name": [...]}'
            if self.mapping is None:
                suggestion = suggest_records(points)
                if suggestion["vector_keys"] or suggestion["sparse_keys"]:
                    hint += f", or read foreign records with a mapping: {suggestion['flags']}"
            raise InputError("no point has a vector", location=Location(self.location),
                             hint=hint)
        for text in disagreements:
            self.context.warn(f"{self.location}: {text}")
        return manifest

    def _without_schema(self) -> Manifest:
        """The stream of a source whose sampled lines give no point to infer the vectors from
        (none is JSON, an object, or holds a vector value that tells its shape): with
        ``on_error="fail"`` the first line's ``RecordError``; skipping bad records, a stream
        without vectors, whose reading rejects every line (``_reject_every_line``), with a
        warning saying so."""
        source, number, line, newline = self._peeked[0]
        if self.context.on_error == "fail":
            raise self._line_problem(source, number, line, newline, 0)
        self._no_schema = True
        self.context.warn(f"none of the lines sampled from {self.location} is a point to "
                          "infer the vectors from, so the stream has none: every line is "
                          "rejected")
        return Manifest(vectors=[])

    def _line_problem(self, source: str, number: int, line: bytes, newline: bool,
                      numbered: int) -> RecordError:
        """Why a line of a source without a schema (``_without_schema``) is no point:
        ``numbered`` is its record number, the id of a record when records are numbered."""
        id_key = self.mapping.id_key if self.mapping is not None else "id"
        try:
            value = loads_exact(line)
        except ValueError as exc:
            return _line_error(source, number, line, newline, exc, id_key, numbered)
        if isinstance(value, dict) and REJECT_KEY in value:
            if "_raw" in value:
                return record_error(
                    "rejected line still holds the unparseable original under _raw",
                    source=source, line=number, raw=value.get("_raw"),
                    hint="replace the line with the corrected point")
            value = {k: v for k, v in value.items() if k != REJECT_KEY}
        message, hint = _no_point(value)
        point_id = value.get("id") if isinstance(value, dict) else None
        return record_error(message, source=source, line=number, raw=value,
                            point_id=point_id, hint=hint)

    def _reject_every_line(self) -> None:
        """Reject each line in order, through the context (the source gave no schema)."""
        peeked, self._peeked = self._peeked, []
        records = 0
        for i, item in enumerate(itertools.chain(peeked, self._lines)):
            self.context.reject(self._line_problem(*item, i))
            records = i + 1
        self._check_count(records)

    def _check_count(self, records: int) -> None:
        """``InputError`` when the manifest records a count other than the ``records`` (every
        non-blank line, good or rejected) the whole source holds."""
        check = self.whole_read_check()
        if check is not None:
            check(records)

    def whole_read_check(self) -> Callable[[int], None] | None:
        """What checks the records of a whole read of the source (every non-blank line, good
        or rejected) against the count its manifest records: a picklable callable raising
        the ``InputError`` of ``_check_count``, or None when there is nothing to compare (no
        recorded count, or ``check_recorded_count`` is off). A partitioned run, whose
        partition readers each read a part of the source, calls it with their sum."""
        recorded = self._sidecar_count
        if (not self.check_recorded_count or not isinstance(recorded, int)
                or isinstance(recorded, bool)):
            return None
        return functools.partial(check_record_count, self.location, self.files == [self.path],
                                 self._manifest_at, recorded)

    def _mapped_manifest(self, known: Manifest) -> Manifest:
        """The vectors and id kind of ``known`` (the file's manifest) for the resolved mapping,
        whose vector names must be the manifest's: the same flags as the run that wrote the
        file (a foreign source's rejects) name them so. ``UsageError`` otherwise, with the
        flags that match when the manifest keeps the source's mapping."""
        assert self.mapping is not None
        specs = {v.name: v for v in known.vectors}
        mapped = {name: key for name, key in self.mapping.pairs()}
        sparse = {spec.split("=", 1)[0] for spec in self.mapping.sparse_keys}
        problems = []
        if set(mapped) != set(specs):
            shown = [f"{n!r} (key {k!r})" if n else f"the unnamed vector (key {k!r})"
                     for n, k in mapped.items()]
            held = [repr(n) if n else "the unnamed vector" for n in specs]
            problems.append(f"the mapping gives {', '.join(shown)}, but the manifest holds "
                            f"{', '.join(held) or 'no vector'}")
        else:
            for name, key in mapped.items():
                if (specs[name].kind == "sparse") != (name in sparse):
                    flag = "--sparse-key" if name in sparse else "--vector-key"
                    problems.append(f"{flag} maps key {key!r} to vector {name!r}, which the "
                                    f"manifest holds as {specs[name].kind}")
        if problems:
            flags = _source_flags(known.source.get("mapping"))
            hint = (f"map the keys as the source was mapped: {flags}" if flags else
                    "map the keys to the manifest's vectors")
            raise UsageError(
                f"the records do not fit the file's manifest ({self._manifest_at}, the shape "
                f"of the source it came from): {'; '.join(problems)}",
                location=Location(self.location),
                hint=f"{hint}; or delete the manifest to take the shape from the lines")
        return dataclasses.replace(known, vectors=list(known.vectors),
                                   source=dict(known.source))

    def count(self) -> int | None:
        return self._sidecar_count

    @property
    def count_recorded(self) -> bool:
        """Whether ``count`` is what the manifest sidecar records rather than a count of the
        lines: a file cut short after it was written still shows the recorded number (until
        a read reaches its end, which refuses it: see the class docstring)."""
        return self._sidecar_count is not None

    def _chunks(self, size: int
                ) -> Iterator[tuple[int, str, list[tuple[int, bytes, bool]]]]:
        """(number of the chunk's first record, its file, its lines); numbers count non-blank
        lines across all parts. A chunk holds lines of one file only, at most ``size`` lines
        and about ``CHUNK_BYTES`` of text."""
        # The peeked lines go through the same cut: a first chunk larger than ``size`` would
        # break the reader's "at most batch_size rows" contract.
        peeked, self._peeked = self._peeked, []
        chunk: list[tuple[int, bytes, bool]] = []
        first = text = 0
        current = self.location
        for source, *item in itertools.chain(peeked, self._lines):
            if chunk and source != current:
                yield first, current, chunk
                first += len(chunk)
                chunk, text = [], 0
            current = source
            chunk.append(tuple(item))  # type: ignore[arg-type]
            text += len(item[1])
            if len(chunk) >= size or text >= CHUNK_BYTES:
                yield first, current, chunk
                first += len(chunk)
                chunk, text = [], 0
        if chunk:
            yield first, current, chunk

    def _rewind(self) -> None:
        """Start the lines again from the first line of the first file."""
        self._lines.close()  # closes the file it has open, once it began
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._peeked = []
        self._lines = self._all_lines()

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        """The points from the ``start``-th on, ``batch_size`` lines a batch at most; each call
        reads from the first line again (the lines peeked when the reader was opened are
        the first call's)."""
        if self._read_begun:
            self._rewind()
        self._read_begun = True
        if self._no_schema:
            self._reject_every_line()
            return
        manifest_json = self.manifest.to_json()
        skip = start  # resuming: the first ``start`` points were written by an earlier run
        # every line is read (the skipped ones too), so the count is the whole source's
        records = 0
        try:
            for first, source, chunk in self._chunks(batch_size):
                records += len(chunk)
                pool = self._gate.pool_for(len(chunk))
                args = (chunk, manifest_json, source, self._mapping_json, first)
                results = ([parse_chunk(*args)] if pool is None
                           else pool.submit(parse_chunk, *args))
                for result in results:
                    batch, skip = self._deliver(result, skip)
                    if batch is not None:
                        yield batch
            if self._gate.pool is not None:
                for result in self._gate.pool.drain():
                    batch, skip = self._deliver(result, skip)
                    if batch is not None:
                        yield batch
            self._check_count(records)
        finally:
            self._gate.close(cancel=True)

    def partitions(self, target_bytes: int) -> list[dict[str, Any]] | None:
        """Byte ranges of about ``target_bytes`` of each plain local file (a range owns the
        lines that start in it); a compressed or remote file is one partition. Records
        numbered for want of an id key cannot be cut: the source is then one partition, as is
        one whose lines gave no point to infer the vectors from (each line is rejected)."""
        if self._no_schema or (self.mapping is not None and self.mapping.id_key is None):
            return None
        out: list[dict[str, Any]] = []
        for i, path in enumerate(self.files):
            if is_remote(path) or str(path).endswith((".gz", ".zst")):
                out.append({"spec": {"file": i, "lo": 0, "hi": None}})
                continue
            size = path.stat().st_size
            for lo in range(0, size, target_bytes):
                hi = min(lo + target_bytes, size)
                out.append({"spec": {"file": i, "lo": lo, "hi": hi}, "bytes": hi - lo})
        return out

    def read_partition(self, spec: dict[str, Any], batch_size: int
                       ) -> Iterator[pa.RecordBatch]:
        """The points of the lines starting in bytes ``spec["lo"]`` to ``spec["hi"]`` of file
        ``spec["file"]`` (the whole file when ``hi`` is None), parsed inline."""
        path = self.files[int(spec["file"])]
        source = self.location if self.files == [self.path] else str(path)
        lo, hi = int(spec["lo"]), spec["hi"]
        manifest_json = self.manifest.to_json()
        start = [lo]  # where the first whole line begins, once found
        compressed = hi is None and str(path).endswith(COMPRESSION_SUFFIXES)

        def lines() -> Iterator[tuple[int, bytes, bool]]:
            with (open(path, "rb") if hi is not None else open_read(path)) as fh:
                pos = lo
                if lo:
                    fh.seek(lo - 1)
                    if fh.read(1) != b"\n":
                        pos += len(fh.readline())  # the line began in the range before
                start[0] = pos
                number = 0
                try:
                    for number, raw in enumerate(fh, 1):
                        if hi is not None and pos >= hi:
                            return
                        at_start, pos = pos == 0, pos + len(raw)
                        line = (without_bom(raw) if at_start else raw).strip()
                        if line:
                            yield number, line, raw.endswith(b"\n")
                except STREAM_ERRORS as exc:
                    if not compressed:
                        raise
                    # a damaged .gz / .zst part names its file, as a whole read does
                    raise corrupt_stream(exc, source, number) from exc

        items = lines()
        while True:
            chunk = list(itertools.islice(items, batch_size))
            if not chunk:
                return
            batch, errors = parse_chunk(chunk, manifest_json, source, self._mapping_json, 0)
            if errors:
                # Line numbers so far count from the range's first line; the lines before it
                # are counted only now, when a message needs them.
                before = _lines_before(path, start[0])
                for err in errors:
                    if err.location.line is not None:
                        err.location = dataclasses.replace(err.location,
                                                           line=err.location.line + before)
                    self.context.reject(err)
            if batch is not None:
                yield batch

    def _deliver(self, result: tuple[pa.RecordBatch | None, list[RecordError]], skip: int
                 ) -> tuple[pa.RecordBatch | None, int]:
        batch, errors = result
        for err in errors:
            self.context.reject(err)
        return _skip(batch, skip)

    def close(self) -> None:
        self._gate.close(cancel=True)
        self._lines.close()  # closes the open file
        if self._fh is not None:
            self._fh.close()


def check_record_count(location: str, single: bool, manifest_at: str, recorded: int,
                       records: int) -> None:
    """``InputError`` when the ``records`` a whole read of ``location`` (one file, or a
    directory's files) met differ from the count ``recorded`` in its manifest ``manifest_at``.
    """
    if records == recorded:
        return
    held = "the file holds" if single else "its files hold"
    raise InputError(
        f"{held} {records:,} record(s) (lines, bad ones included), but its manifest "
        f"{manifest_at} records {recorded:,} point(s)", location=Location(location),
        hint=f"{'the file was' if single else 'a file was'} cut short (an interrupted copy or "
             "download?) or edited after vecferry wrote it: copy it again from where it came "
             f"from; if it was edited on purpose, delete {manifest_at} to read it as it is")


def _source_flags(mapping: Any) -> str | None:
    """The key-mapping flags that read the records a mapped source's rejects file holds: its
    columns (``--id-column`` ...) or keys (``--id-key`` ...) are the records' keys."""
    if not isinstance(mapping, dict):
        return None
    flags: list[str] = []
    id_key = mapping.get("id_column", mapping.get("id_key"))
    if id_key:
        flags += ["--id-key", str(id_key)]
    for option, flag in (("vector", "--vector-key"), ("sparse", "--sparse-key")):
        for spec in mapping.get(f"{option}_columns", mapping.get(f"{option}_keys")) or ():
            # a resolved key mapping writes an unnamed vector as "=key"
            flags += [flag, str(spec)[1:] if str(spec).startswith("=") else str(spec)]
    # a Parquet column of objects read as the payload itself is the records' payload key
    payload_key = mapping.get("payload_key", mapping.get("payload_column"))
    if payload_key:
        flags += ["--payload-key", str(payload_key)]
    return shlex.join(flags) if "--vector-key" in flags or "--sparse-key" in flags else None


def _lines_before(path: Path, offset: int) -> int:
    """Newlines in the first ``offset`` bytes of a plain file."""
    count = 0
    with open(path, "rb") as fh:
        while offset > 0:
            block = fh.read(min(offset, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            offset -= len(block)
    return count


#: the endings of the JSONL files a directory source reads: the format's extensions in any
#: letter case, a compression suffix in lower case only (``.gz`` and ``.zst`` pick the
#: decompressor, in lower case; ``.GZ`` would be read as plain text)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
COMPRESSION_SUFFIXES = (".gz", ".zst")
def _jsonl_name(name: str) -> str | None:
    """How a directory reads the file ``name``: ``"read"`` (JSONL by its extension), or why it
    does not: ``"case"`` (JSONL compressed, the compression suffix not in lower case),
    ``"json"`` (``.json``, plain or compressed); None for any other name."""
    lower = name.lower()
    for suffix in ("", *COMPRESSION_SUFFIXES):
        if lower.endswith(suffix) and lower[:len(lower) - len(suffix)].endswith(JSONL_SUFFIXES):
            return "read" if name.endswith(suffix) else "case"
    if lower.endswith(tuple(".json" + c for c in ("", *COMPRESSION_SUFFIXES))):
        return "json"
    return None


def _jsonl_parts(path: Any, location: str) -> tuple[list[Any], Manifest | None]:
    """The files of a JSONL location: itself, or a directory's files (as its ``_manifest.json``
    lists them, else every ``.jsonl`` / ``.ndjson`` file (any letter case; plain, ``.gz``,
    ``.zst``) in natural name order), with the directory's manifest.

    Hidden and ``_``-prefixed names (Spark's ``_SUCCESS``, vecferry's ``_manifest.json`` and
    ``.<name>.vftmp-*`` temporaries) and ``base.NOT_DATA`` are left out. ``InputError``
    naming them when anything else is there (a ``.json`` file, a subdirectory, a ``.GZ``
    suffix, any other file): nothing in a source directory is skipped unsaid.
    """
    if not path.is_dir():
        return [path], None
    from vecferry.converters.parquet import natural_key

    local = not is_remote(path)
    found: list[Any] = []
    unread: list[tuple[Any, str]] = []  # (entry, why: "case", "json", "dir" or "other")
    for child in path.iterdir():
        name = child.name
        if name.startswith((".", "_")) or NOT_DATA.fullmatch(name):
            continue
        # a remote listing answers is_dir one request per name: there, only names that are
        # no JSONL are asked about (when shown)
        if local and child.is_dir():
            unread.append((child, "dir"))
            continue
        kind = _jsonl_name(name)
        if kind == "read":
            found.append(child)
        else:
            unread.append((child, kind or "other"))
    found.sort(key=natural_key)
    listed = read_directory_manifest(path)
    if listed is not None and listed[1]:
        # a part the manifest lists is read whatever its name
        names = {part["name"] for part in listed[1]}
        unread = [(p, why) for p, why in unread if p.name not in names]
    if unread:
        raise _unread_jsonl(location, unread)
    if listed is not None and listed[1]:
        return listed_parts(path, listed[1], found), listed[0]
    if not found:
        raise InputError("is a directory, not a JSONL file", location=Location(location),
                         hint="a JSONL directory holds part-00000.jsonl, ... (and _manifest.json)"
                         if listed is not None else None)
    return found, listed[0] if listed is not None else None


#: what to do about each kind of file a JSONL directory does not read
_UNREAD_HINTS = {
    "json": "a .json file is read as JSONL only when named .jsonl or .ndjson (Spark names "
            "its JSON Lines .json): rename it if it holds one point per line",
    "case": "rename a compressed file to end in lower-case .gz or .zst",
    "dir": "subdirectories are not read: convert each as a source of its own",
}


def _unread_jsonl(location: str, unread: list[tuple[Any, str]]) -> InputError:
    from vecferry.converters.parquet import natural_key

    unread = sorted(unread, key=lambda item: natural_key(item[0]))
    # a remote listing tells its directories only when asked, one request a name: those shown
    unread = [(p, "dir" if i < SHOWN and why == "other" and is_remote(p) and p.is_dir()
               else why) for i, (p, why) in enumerate(unread)]
    kinds = {why for _, why in unread}
    names = [p.name + ("/" if why == "dir" else "") for p, why in unread]
    hints = [_UNREAD_HINTS[k] for k in ("json", "case", "dir") if k in kinds]
    return unread_files_error(
        location, names, "that are not JSONL by name",
        "; ".join([*hints, "or move them out of the directory, or give them a leading _ or . "
                   "(which vecferry and Spark skip)"]))


VECTOR_VALUE_HINT = ('a vector holds numbers: [0.1, 0.2, ...] (sparse: {"indices": [...], '
                     '"values": [...]}, multi: [[...], [...]])')


def _no_point(value: Any) -> tuple[str, str]:
    """(message, hint) of a JSON value read from a source that gave no schema: why it is no
    point, or, when it could be one, that the lines before it gave no vectors' shape."""
    if not isinstance(value, dict):
        return (f"a point must be a JSON object, not {type(value).__name__}",
                'each line is one point: {"id": ..., "vector": [...], "payload": {...}}')
    if has_both_vector_keys(value):
        return BOTH_VECTOR_KEYS, BOTH_VECTOR_KEYS_HINT
    vecs = vectors_of(value)
    if not vecs:
        return "point has no vector", 'each line needs "vector": [...] or {"name": [...]}'
    for name, vec in vecs.items():
        label = "vector" if name == "" else f"vector {name!r}"
        if isinstance(vec, list) and not vec:
            return f"{label} is empty", VECTOR_VALUE_HINT
        try:
            infer_vector_spec(name, vec)
        except ValueError:
            return f"{label} must be a list of numbers, not {type(vec).__name__}", VECTOR_VALUE_HINT
    return ("no point read before it tells the vectors' shape (without a manifest sidecar "
            "it comes from the first points)",
            "fix the lines before it, or add a manifest sidecar declaring the vectors")


def _line_error(source: str, number: int, line: bytes, newline: bool, exc: Exception,
                id_key: str | None = "id", numbered: int | None = None) -> RecordError:
    """The error of a line that is not JSON; one that is JSON but for NaN / Infinity is named
    by its id too: the record's ``id_key``, or ``numbered`` when records are numbered."""
    text = line.decode("utf-8", "replace")
    if not newline:
        err = record_error("the last line is cut short (file truncated?)", source=source,
                           line=number, raw=text,
                           hint="the file may still be downloading or was cut; re-create it")
    elif (found := constant_and_id(line, id_key)) is not None:
        err = record_error(f"line holds {found[0]}, which JSON cannot express", source=source,
                           line=number, raw=text, hint=NAN_HINT,
                           point_id=found[1] if id_key is not None else numbered)
    else:
        err = record_error(f"line is not valid JSON: {exc}", source=source, line=number,
                           raw=text, hint="fix or remove the line")
    err.__cause__ = exc
    return err


@lru_cache(maxsize=4)
def _manifest(manifest_json: bytes) -> Manifest:
    return Manifest.from_json(manifest_json)


@lru_cache(maxsize=4)
def _key_mapping(mapping_json: bytes) -> tuple[KeyMapping, list[tuple[str, str]]]:
    d = orjson.loads(mapping_json)
    m = KeyMapping(d["id_key"], tuple(d["vector_keys"]), tuple(d["sparse_keys"]),
                   d["payload_key"])
    return m, m.pairs()


@gc_paused()
def parse_chunk(chunk: list[tuple[int, bytes, bool]], manifest_json: bytes, source: str,
                mapping_json: bytes | None = None, first: int = 0,
                ) -> tuple[pa.RecordBatch | None, list[RecordError]]:
    """Parse (line number, line, ends with newline) items into a batch and the errors met.

    With ``mapping_json`` (a resolved ``KeyMapping``) each record is mapped to a point first;
    ``first`` is the number of the chunk's first record (ids when there is no id key). Runs
    inline or in a worker process, so it rejects nothing itself: the reader replays the errors
    through its context in line order.
    """
    if mapping_json is None:
        batch = _fast_batch(chunk, _manifest(manifest_json))
        if batch is not None:
            return batch, []
    errors: list[RecordError] = []
    mapping = _key_mapping(mapping_json) if mapping_json is not None else None
    # A mapped record refused as a point goes to the rejects file as it was read (line ->
    # record), so the fixed line runs again with the same mapping flags.
    records: dict[int, Any] = {}

    def refuse(error: RecordError) -> None:
        if error.location.line in records:
            error.raw = records[error.location.line]
        errors.append(error)

    builder = BatchBuilder(_manifest(manifest_json), Context("skip", refuse), source)
    for offset, (number, line, newline) in enumerate(chunk):
        try:
            # Only the payload can hold integers orjson would round; -1 (none) skips the scan.
            # Mapped records may hold them under any key.
            value = loads_exact(line, 0 if mapping else line.find(b'"payload"'))
        except ValueError as exc:
            id_key = mapping[0].id_key if mapping is not None else "id"
            errors.append(_line_error(source, number, line, newline, exc, id_key,
                                      first + offset))
            continue
        # A rejects-file line is read as the record it holds, mapped or not.
        note = None
        if isinstance(value, dict) and REJECT_KEY in value:
            if "_raw" in value:
                errors.append(record_error(
                    "rejected line still holds the unparseable original under _raw",
                    source=source, line=number, raw=value.get("_raw"),
                    hint="replace the line with the corrected point"))
                continue
            note = value[REJECT_KEY]
            value = {k: v for k, v in value.items() if k != REJECT_KEY}
        if mapping is not None:
            try:
                point = mapping[0].to_point(value, first + offset, mapping[1], note)
            except UnmappedRecord as exc:
                error = record_error(str(exc), source=source, line=number, raw=value,
                                     point_id=exc.point_id, hint=exc.hint)
                error.__cause__ = exc
                errors.append(error)
                continue
            records[number], value = value, point
        elif isinstance(value, dict):
            extra = [k for k, v in value.items() if k not in _LINE_KEYS and v is not None]
            if extra:
                # a point holds nothing else: written on, these values would be lost unseen
                errors.append(record_error(
                    f"point has {', '.join(map(repr, extra))} beside id, vector and payload, "
                    "which a point cannot hold", source=source, line=number, raw=value,
                    point_id=value.get("id"),
                    hint='move them into "payload", or read the file as records with a '
                         "mapping (--id-key, --vector-key, --payload-key)"))
                continue
        builder.add(value, line=number)
    return builder.flush(), errors


_POINT_KEYS = frozenset(("id", "vector", "payload"))
#: the keys a point's line may have ("vectors" as Qdrant's batch shape names them); others
#: are refused unless null (Qdrant's records carry "shard_key": null, "order_value": null)
_LINE_KEYS = _POINT_KEYS | {"vectors"}
_simd = threading.local()


def _fast_batch(chunk: list[tuple[int, bytes, bool]], manifest: Manifest
                ) -> pa.RecordBatch | None:
    """The batch of a chunk of plain points (``{"id", "vector", "payload"}``, one unnamed
    float32 vector) parsed with simdjson, whose arrays of numbers come out as one buffer of
    doubles instead of hundreds of Python floats: 3x faster than orjson + numpy on
    768-dim points. None, and nothing half done, when simdjson is not installed, the stream
    has another shape, or any line is not such a point: the chunk then goes through the
    general parser, which reports each bad line. What comes out equals the general parser's
    batch: ids and payload objects are the same Python values (payloads re-encoded by
    orjson), vectors the same doubles (both parsers round correctly) cast the same way."""
    specs = manifest.vectors
    if len(specs) != 1 or specs[0].name != "" or specs[0].kind != "dense" \
            or specs[0].datatype != "float32":
        return None
    parser = getattr(_simd, "parser", None)
    if parser is None:
        try:
            import simdjson
        except ImportError:
            return None
        parser = _simd.parser = simdjson.Parser()
    size, kind = specs[0].size, manifest.id_kind
    ids: list[Any] = []
    payloads: list[str | None] = []
    buffers: list[bytes] = []
    for _, line, _ in chunk:
        # Anything unexpected (a parse error, a key, a type) hands the chunk back; simdjson
        # raises ValueError, RuntimeError, UnicodeDecodeError or KeyError for what it refuses.
        try:
            doc = parser.parse(line)
            keys = list(doc.keys())
            if len(keys) != len(set(keys)) or not _POINT_KEYS.issuperset(keys) \
                    or "vector" not in keys:
                return None
            pid = doc["id"]
            vector = doc["vector"]
            payload = doc.get("payload")
            if type(pid) not in (int, str) or len(vector) != size:
                return None
            buffers.append(vector.as_buffer(of_type="d"))
            text = None if payload is None else orjson.dumps(payload.as_dict()).decode()
            ids.append(encode_id(pid, kind))
        except Exception:  # every refusal means "use the general parser"
            return None
        finally:
            # simdjson refuses to parse again while a proxy of the last document lives
            doc = vector = payload = None
        payloads.append(text)
    mat = np.frombuffer(b"".join(buffers), dtype=np.float64).reshape(-1, size)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = mat.astype(np.float32)
    if not (np.isfinite(mat).all() and np.isfinite(cast).all()):
        return None
    schema = manifest.schema()
    columns = {
        ID_COLUMN: pa.array(ids, type=schema.field(ID_COLUMN).type),
        specs[0].column: pa.FixedSizeListArray.from_arrays(pa.array(cast.reshape(-1)), size),
        PAYLOAD_COLUMN: pa.array(payloads, type=pa.string()),
    }
    return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)


def _skip(batch: pa.RecordBatch | None, skip: int) -> tuple[pa.RecordBatch | None, int]:
    """Drop the first ``skip`` rows (counted the way they were counted when first emitted)."""
    if batch is None or skip == 0:
        return batch, skip
    if batch.num_rows <= skip:
        return None, skip - batch.num_rows
    return batch.slice(skip), 0


def render_lines(batch: pa.RecordBatch, manifest_json: bytes) -> tuple[bytes, np.ndarray]:
    """A batch as JSONL bytes, and each point's digest hash (``vecferry.digest``).

    Runs inline or in a worker process; the hashing goes along, since in the writing process
    it would cost about as much as the printing.
    """
    manifest = _manifest(manifest_json)
    hashes = point_hashes(*point_parts(batch, manifest))
    names = [v.name for v in manifest.vectors]
    fast = names == [""] and manifest.vectors[0].kind == "dense"
    if fast and batch.column(manifest.vectors[0].column).null_count == 0:
        return _fast_lines(batch, manifest), hashes
    return _lines(batch, manifest), hashes


def _fast_lines(batch: pa.RecordBatch, manifest: Manifest) -> bytes:
    """The common case (one unnamed dense vector) without building a dict per point."""
    n = batch.num_rows
    spec = manifest.vectors[0]
    mat = batch.column(spec.column).flatten().to_numpy(zero_copy_only=False).reshape(n, spec.size)
    ids = batch.column(ID_COLUMN)
    if manifest.id_kind == "int":
        id_texts = [str(i).encode() for i in ids.to_pylist()]
    else:
        id_texts = [orjson.dumps(i) for i in decode_ids(ids, manifest.id_kind)]
    payloads = batch.column(PAYLOAD_COLUMN).to_pylist()
    dumps = orjson.dumps
    opt = orjson.OPT_SERIALIZE_NUMPY
    parts = []
    for i in range(n):
        p = payloads[i]
        tail = b"}\n" if p is None else b',"payload":' + p.encode() + b"}\n"
        parts.append(b'{"id":' + id_texts[i] + b',"vector":' + dumps(mat[i], option=opt) + tail)
    return b"".join(parts)


def _lines(batch: pa.RecordBatch, manifest: Manifest) -> bytes:
    opt = orjson.OPT_SERIALIZE_NUMPY
    out = []
    # The payload goes out as the stream's own JSON text: orjson cannot encode integers
    # past 64 bits, which a payload may hold.
    texts = batch.column(PAYLOAD_COLUMN).to_pylist()
    for point, text in zip(iter_points(batch, manifest), texts, strict=True):
        del point["payload"]
        line = orjson.dumps(point, option=opt)
        if text is not None:
            line = line[:-1] + b',"payload":' + text.encode() + b"}"
        out.append(line + b"\n")
    return b"".join(out)


#: bytes a compressed part keeps free of its ``max_part_size`` for what compression adds
#: to incompressible data (gzip's and zstd's headers, block headers, trailer and checksum)
COMPRESSED_SLACK = 64
#: compression of the parts of a JSONL directory -> their name suffix
PART_COMPRESSION = {"none": "", "gzip": ".gz", "zstd": ".zst"}
PART_NAME = "part-{:05d}.jsonl"


class JsonlWriter(ClosingWriter):
    """Writes points as JSONL (+ manifest sidecar) under a temporary name, renamed on close.

    Batches are printed in worker processes once the run proves big enough (``workers``,
    default: up to 2), written in order. Refuses rows holding NaN or infinity (JSON cannot
    express them) through ``context``.

    A location ending in ``/`` or naming an existing directory is written as a directory of
    parts, ``part-00000.jsonl``, ... (``part_compression`` ``none`` (default), ``gzip`` or
    ``zstd`` adds ``.gz`` / ``.zst``; a file's own extension picks its compression), with one
    ``_manifest.json`` for all parts (``converters.parts``) and no sidecar. With
    ``max_part_size`` (bytes or a size text such as ``512MB``) a new part starts before a line
    would take the current one past the size, counted in the bytes of the part file: a
    compressed part in compressed bytes (``_fit``: measured by flushing the compressor, so a
    part may pass the size by what its last lines compress worse than the part did); a single
    line longer than the size gets a part of its own. The directory appears whole on commit.
    """

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, workers: int | None = None,
                 max_part_size: int | str | None = None, part_compression: str | None = None,
                 durable: bool = True, distance: str | None = None, **options: Any):

        reject_unknown_options("jsonl", options)
        schema = with_distance(schema, distance)
        self.location = location
        # ``durable=False``: a partitioned run's staging part, copied into the output before
        # it counts, needs no fsync (the output gets one)
        self.durable = durable
        self.context = context
        self.manifest = manifest_of(schema)
        self._manifest_json = self.manifest.to_json()
        self.directory = location.endswith("/") or output_path(location).is_dir()
        self.max_part_size = parse_part_size(max_part_size)
        if self.max_part_size and not self.directory:
            raise directory_only("JSONL", location)
        if part_compression is not None and part_compression not in PART_COMPRESSION:
            raise UsageError(f"unknown part compression {part_compression!r}",
                             location=Location(location),
                             hint="part_compression (--jsonl-compression) takes one of "
                                  f"{', '.join(PART_COMPRESSION)}")
        if part_compression is not None and not self.directory:
            raise UsageError("--jsonl-compression picks the compression of a directory's "
                             "parts; a JSONL file's extension picks its own",
                             location=Location(location),
                             hint="name the file .jsonl.gz or .jsonl.zst, or end the location "
                                  "with / to write a directory of parts")
        self._gate = WorkerGate(workers, [__name__])
        self.digest = StreamDigest(self.manifest)
        self.count = 0
        self._fh: Any = None
        if self.directory:
            self.out = AtomicPath(location.rstrip("/") or location, overwrite=overwrite,
                                  directory=True)
            self.side: AtomicPath | None = None
            self._suffix = PART_COMPRESSION[part_compression or "none"]
            #: compressed / uncompressed bytes of the last compressed part measured
            self._ratio = 1.0
            self.log = PartLog()
            self._open_part()
            # parts are fsynced one by one as they close; early writeback is for one big file
            self._writeback = Writeback(None)
        else:
            self.out = AtomicPath(location, overwrite=overwrite)
            self.side = AtomicPath(manifest_path(location), overwrite=True)
            try:
                self._fh = open_write(self.out.temp, location)
            except BaseException:
                # e.g. .zst without zstandard: the temporaries' locks go with them
                self.out.abort()
                self.side.abort()
                raise
            self._writeback = Writeback(self._fh if durable else None)

    def _open_part(self) -> None:
        self._part_name = PART_NAME.format(len(self.log.parts)) + self._suffix
        self._part_path = self.out.temp / self._part_name
        self._fh = open_write(self._part_path, self._part_name)
        self._part_rows = self._part_bytes = self._part_total = 0
        # a compressed part: its compressed bytes at the last flush of the compressor, and
        # the (uncompressed) bytes written since
        self._part_compressed = self._part_unflushed = 0

    def _measure(self) -> None:
        """Flush the compressor of the current part (a sync flush: the stream goes on, the
        bytes so far are out) and take the part's compressed size and ratio from it."""
        self._fh.flush()
        raw = getattr(self._fh, "fileobj", None)  # gzip's file; a zstd writer tells its own
        self._part_compressed = int((raw if raw is not None else self._fh).tell())
        self._part_unflushed = 0
        if self._part_bytes:
            self._ratio = min(2.0, max(0.01, self._part_compressed / self._part_bytes))

    def _fit(self, ends: np.ndarray, pos: int, row: int) -> int:
        """How many of the lines from ``row`` on (the batch's line ``ends``; line ``row``
        starts at ``pos``) go into the current part now: at least one; 0 when the part is
        full, which is then closed and a new one opened.

        A plain part holds lines while their bytes fit in ``max_part_size``. A compressed
        part counts its compressed bytes: lines are written without a look while they would
        fit uncompressed; past that the compressor is flushed to measure the part, and lines
        are written up to 90% of the room left at the part's compression ratio, then measured
        again, until no line fits."""
        limit = self.max_part_size
        assert limit is not None

        def fitting(room: float) -> int:
            return int(np.searchsorted(ends, pos + room, side="right")) - row

        if not self._suffix:
            k = fitting(limit - self._part_bytes)
        else:
            # sure to fit, whatever compression does (its headers and trailer included)
            k = fitting(limit - COMPRESSED_SLACK - self._part_compressed - self._part_unflushed)
            if k <= 0:
                if self._part_unflushed:
                    self._measure()
                k = fitting((limit - COMPRESSED_SLACK - self._part_compressed)
                            / self._ratio * 0.9)
        if k > 0:
            return k
        if self._part_rows:
            self._close_part()
            self._open_part()
            return 0
        return 1  # one line longer than the size: a part of its own

    def _close_part(self) -> None:
        self._fh.close()
        fsync_path(self._part_path)
        self.log.add(self._part_name, self._part_rows, self._part_total,
                     output_size(self._part_path))

    def write_batch(self, batch: pa.RecordBatch) -> None:
        bad = non_finite_rows(batch, self.manifest)
        if bad:
            for row, name in sorted(bad.items()):
                label = "vector" if name == "" else f"vector {name!r}"
                err = reject_from_row(batch, row, self.manifest,
                                      f"{label} holds NaN or infinity, which JSON cannot hold",
                                      self.location)
                err.hint = ("fix the source vector, or pass --on-error skip to write the rest "
                            "and keep this point in the rejects file")
                # the row of the batch handed in, and its vector: a conversion names the
                # record where its source holds it, where the NaN can be fixed (``convert``'s
                # writer context), rather than in this output, which never held it
                err.batch_row, err.vector = row, name
                self.context.reject(err)
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[list(bad)] = False
            batch = batch.filter(pa.array(keep))
        if batch.num_rows == 0:
            return
        pool = self._gate.pool_for(batch.num_rows)
        if pool is None:
            self._write(*render_lines(batch, self._manifest_json))
        else:
            for data, hashes in pool.submit(render_lines, batch, self._manifest_json):
                self._write(data, hashes)
        self.count += batch.num_rows

    def _write(self, data: bytes, hashes: np.ndarray) -> None:
        """Write one rendered batch (in batch order), into parts when writing a directory;
        ``hashes`` are its points' digest hashes (per row: lines are split among parts)."""
        with np.errstate(over="ignore"):
            self.digest.add(int(hashes.sum(dtype=np.uint64)), len(hashes))
        if not self.directory:
            self._fh.write(data)
            self._writeback.wrote(len(data))
            return
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
        if len(ends) != len(hashes):  # cannot happen: one line per point
            raise RuntimeError(f"rendered {len(ends)} lines for {len(hashes)} points")
        pos = row = 0
        n = len(hashes)
        while row < n:
            k = self._fit(ends, pos, row) if self.max_part_size else n - row
            if not k:
                continue
            end = int(ends[row + k - 1])
            self._fh.write(data[pos:end])
            with np.errstate(over="ignore"):
                self._part_total = (self._part_total
                                    + int(hashes[row:row + k].sum(dtype=np.uint64))) % 2**64
            self._part_bytes += end - pos
            self._part_unflushed += end - pos
            self._part_rows += k
            pos, row = end, row + k

    def close(self) -> dict[str, Any]:
        if self._gate.pool is not None:
            for data, hashes in self._gate.pool.drain():
                self._write(data, hashes)
        self._gate.close()
        self.manifest.count = self.count
        self.manifest.digest = self.digest.as_dict()
        if self.directory:
            self._close_part()
            (self.out.temp / DIR_MANIFEST).write_bytes(self.log.manifest_json(self.manifest))
            from vecferry.storage import is_remote

            if not is_remote(self.out.temp):
                fsync_path(self.out.temp / DIR_MANIFEST)
            self.out.commit()
            return {"bytes_written": self.log.bytes, "parts": len(self.log.parts),
                    "manifest": str(self.out.target / DIR_MANIFEST)}
        assert self.side is not None
        self._writeback.close()  # before the descriptor closes
        self._fh.close()
        if self.durable:
            fsync_path(self.out.temp)
        self.side.temp.write_bytes(self.manifest.to_json())
        from vecferry.parallel import _interrupts_held

        # the file and its manifest go into place together, or neither: an interrupt between
        # them would leave the new file beside the manifest of the one it replaced
        with _interrupts_held():
            self.out.commit()
            self.side.commit()
        return {"bytes_written": output_size(self.location),
                "manifest": str(manifest_path(self.location))}

    def abort(self) -> None:
        self._gate.close(cancel=True)
        self._writeback.close()
        try:
            if self._fh is not None:
                self._fh.close()
        finally:
            self.out.abort()
            if self.side is not None:
                self.side.abort()
