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

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from vecferry.converters.base import (
    REJECT_KEY,
    AtomicPath,
    Context,
    fsync_path,
    input_path,
    reject_unknown_options,
)
from vecferry.errors import InputError, Location, SchemaError
from vecferry.fileio import iter_lines, loads_exact, open_read, open_write
from vecferry.points import BatchBuilder, infer_manifest, iter_points, non_finite_rows
from vecferry.stream import (
    ID_COLUMN,
    ID_KINDS,
    PAYLOAD_COLUMN,
    Manifest,
    manifest_of,
    record_error,
)

PEEK_POINTS = 1000


def manifest_path(path: str | Path) -> Path:
    return Path(f"{path}.manifest.json")


def read_manifest_sidecar(path: str | Path) -> Manifest | None:
    side = manifest_path(path)
    if not side.exists():
        return None
    try:
        return Manifest.from_json(side.read_bytes())
    except (orjson.JSONDecodeError, TypeError, SchemaError) as exc:
        raise InputError(f"manifest sidecar is not valid: {exc}", location=Location(str(side)),
                         hint="fix or delete it; without it the schema is inferred") from exc


class JsonlReader:
    """Streams points from a JSONL file; memory bounded by the batch size.

    Fails with ``InputError`` when the file is missing, empty, or truncated; each bad line is a
    ``RecordError`` naming file and line, raised or rejected through ``context``.
    """

    def __init__(self, location: str, *, context: Context, id_kind: str | None = None,
                 **options: Any):
        reject_unknown_options("jsonl", options)
        self.location = location
        self.context = context
        self.path = input_path(location)
        if self.path.is_dir():
            raise InputError("is a directory, not a JSONL file", location=Location(location))
        if id_kind is not None and id_kind not in ID_KINDS:
            raise SchemaError(f"unknown id kind {id_kind!r}", hint=f"one of {', '.join(ID_KINDS)}")
        manifest = read_manifest_sidecar(self.path)
        self._sidecar_count = manifest.count if manifest else None
        self._fh = open_read(self.path)
        self._lines = iter_lines(self._fh, location)
        self._peeked: list[tuple[int, Any, bytes, bool]] = []
        if manifest is None:
            manifest = self._infer()
        if id_kind:
            manifest.id_kind = id_kind
        manifest.source = {"format": "jsonl", "location": location}
        self.manifest = manifest
        self.schema = manifest.schema()

    def _infer(self) -> Manifest:
        points = []
        for number, line, newline in self._lines:
            value = self._parse(number, line, newline, during_peek=True)
            self._peeked.append((number, value, line, newline))
            if isinstance(value, dict):
                points.append(value)
            if len(points) >= PEEK_POINTS:
                break
        if not points:
            if not self._peeked:
                raise InputError("input is empty: no points", location=Location(self.location),
                                 hint="check that the file holds one JSON point per line")
            raise InputError("no valid point to infer the schema from",
                             location=Location(self.location),
                             hint="fix the lines reported, or add a manifest sidecar")
        manifest = infer_manifest(points)
        if not manifest.vectors:
            raise InputError("no point has a vector", location=Location(self.location),
                             hint='each line needs "vector": [...] or {"name": [...]}')
        return manifest

    def _parse(self, number: int, line: bytes, newline: bool, during_peek: bool = False) -> Any:
        """Parsed line, or ``_BAD`` after rejecting it (a bad line during inference is kept)."""
        try:
            return loads_exact(line)
        except ValueError as exc:
            if during_peek:
                return _Bad(exc)
            return self._bad_line(number, line, newline, exc)

    def _bad_line(self, number: int, line: bytes, newline: bool, exc: Exception) -> Any:
        text = line.decode("utf-8", "replace")
        if not newline:
            err = record_error("the last line is cut short (file truncated?)",
                               source=self.location, line=number, raw=text,
                               hint="the file may still be downloading or was cut; re-create it")
        else:
            err = record_error(f"line is not valid JSON: {exc}", source=self.location,
                               line=number, raw=text, hint="fix or remove the line")
        err.__cause__ = exc
        self.context.reject(err)
        return _BAD

    def count(self) -> int | None:
        return self._sidecar_count

    def _records(self) -> Iterator[tuple[int, Any]]:
        for number, value, line, newline in self._peeked:
            if isinstance(value, _Bad):
                value = self._bad_line(number, line, newline, value.exc)
            yield number, value
        self._peeked = []
        for number, line, newline in self._lines:
            yield number, self._parse(number, line, newline)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        builder = BatchBuilder(self.manifest, self.context, self.location)
        skip = start  # resuming: the first ``start`` points were written by an earlier run
        for number, value in self._records():
            if value is _BAD:
                continue
            if isinstance(value, dict) and REJECT_KEY in value:
                if "_raw" in value:
                    self.context.reject(record_error(
                        "rejected line still holds the unparseable original under _raw",
                        source=self.location, line=number, raw=value.get("_raw"),
                        hint="replace the line with the corrected point"))
                    continue
                value = {k: v for k, v in value.items() if k != REJECT_KEY}
            if builder.add(value, line=number) and len(builder) >= batch_size:
                batch, skip = _skip(builder.flush(), skip)
                if batch is not None:
                    yield batch
        batch, skip = _skip(builder.flush(), skip)
        if batch is not None:
            yield batch

    def close(self) -> None:
        self._fh.close()


def _skip(batch: pa.RecordBatch | None, skip: int) -> tuple[pa.RecordBatch | None, int]:
    """Drop the first ``skip`` rows (counted the way they were counted when first emitted)."""
    if batch is None or skip == 0:
        return batch, skip
    if batch.num_rows <= skip:
        return None, skip - batch.num_rows
    return batch.slice(skip), 0


class _Bad:
    def __init__(self, exc: Exception):
        self.exc = exc


_BAD = _Bad(ValueError("bad line"))


class JsonlWriter:
    """Writes points as JSONL (+ manifest sidecar) under a temporary name, renamed on close.

    Refuses rows holding NaN or infinity (JSON cannot express them) through ``context``.
    """

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, **options: Any):
        reject_unknown_options("jsonl", options)
        self.location = location
        self.context = context
        self.manifest = manifest_of(schema)
        self.manifest.source = self.manifest.source or {}
        self.out = AtomicPath(location, overwrite=overwrite)
        self.side = AtomicPath(manifest_path(location), overwrite=True)
        self._fh = open_write(self.out.temp, location)
        self.count = 0
        names = [v.name for v in self.manifest.vectors]
        self._fast = names == [""] and self.manifest.vectors[0].kind == "dense"

    def write_batch(self, batch: pa.RecordBatch) -> None:
        bad = non_finite_rows(batch, self.manifest)
        if bad:
            from vecferry.points import reject_from_row

            for row, name in sorted(bad.items()):
                label = "vector" if name == "" else f"vector {name!r}"
                err = reject_from_row(batch, row, self.manifest,
                                      f"{label} holds NaN or infinity, which JSON cannot hold",
                                      self.location)
                err.hint = ("fix the source vector, or pass --on-error skip to write the rest "
                            "and keep this point in the rejects file")
                self.context.reject(err)
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[list(bad)] = False
            batch = batch.filter(pa.array(keep))
        if batch.num_rows == 0:
            return
        data = self._fast_lines(batch) if self._fast else self._lines(batch)
        self._fh.write(data)
        self.count += batch.num_rows

    def _fast_lines(self, batch: pa.RecordBatch) -> bytes:
        """The common case (one unnamed dense vector) without building a dict per point."""
        n = batch.num_rows
        spec = self.manifest.vectors[0]
        col = batch.column(spec.column)
        if col.null_count:
            return self._lines(batch)
        mat = col.flatten().to_numpy(zero_copy_only=False).reshape(n, spec.size)
        ids = batch.column(ID_COLUMN)
        if self.manifest.id_kind == "int":
            id_texts = [str(i).encode() for i in ids.to_pylist()]
        else:
            from vecferry.stream import decode_ids

            id_texts = [orjson.dumps(i) for i in decode_ids(ids, self.manifest.id_kind)]
        payloads = batch.column(PAYLOAD_COLUMN).to_pylist()
        dumps = orjson.dumps
        opt = orjson.OPT_SERIALIZE_NUMPY
        parts = []
        for i in range(n):
            p = payloads[i]
            tail = b"}\n" if p is None else b',"payload":' + p.encode() + b"}\n"
            parts.append(b'{"id":' + id_texts[i] + b',"vector":' + dumps(mat[i], option=opt)
                         + tail)
        return b"".join(parts)

    def _lines(self, batch: pa.RecordBatch) -> bytes:
        opt = orjson.OPT_SERIALIZE_NUMPY
        out = []
        for point in iter_points(batch, self.manifest):
            payload = point.pop("payload")
            if payload is not None:
                point["payload"] = payload
            out.append(orjson.dumps(point, option=opt | orjson.OPT_APPEND_NEWLINE))
        return b"".join(out)

    def close(self) -> dict[str, Any]:
        self._fh.close()
        fsync_path(self.out.temp)
        self.manifest.count = self.count
        self.side.temp.write_bytes(self.manifest.to_json())
        self.out.commit()
        self.side.commit()
        return {"bytes_written": os.path.getsize(self.location),
                "manifest": str(manifest_path(self.location))}

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            self.out.abort()
            self.side.abort()
