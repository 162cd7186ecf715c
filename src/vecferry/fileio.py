"""Byte streams for local files, with gzip / zstd chosen by extension, and row-aligned sidecars."""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import itertools
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from vecferry.errors import InputError, Location, MissingDependencyError, RecordError

#: what to do about NaN / Infinity in JSON text
NAN_HINT = ("write null or a number instead; Python's json.dumps writes NaN and Infinity "
            "unless given allow_nan=False")
#: what to do about NaN / infinity in a float column of a Parquet payloads file
PARQUET_NAN_HINT = "write null for a missing value"
#: the UTF-8 byte order mark Windows tools (Notepad, PowerShell) put at the start of text files
UTF8_BOM = b"\xef\xbb\xbf"
#: what reading a damaged or cut compressed stream raises: gzip's ``BadGzipFile`` and zstd's
#: errors (as ``_ZstdReader`` raises them) are ``OSError``s, a cut stream ``EOFError``, and
#: damaged deflate data inside a gzip member zlib's own ``zlib.error``
STREAM_ERRORS = (OSError, EOFError, zlib.error)


def without_bom(data: bytes) -> bytes:
    """``data`` (the start of a file) without a UTF-8 byte order mark: JSON has none, and
    orjson refuses one."""
    return data[3:] if data.startswith(UTF8_BOM) else data


# 19 digits: a negative integer below -2^63 has only 19 (orjson turns it into a float).
_LONG_RUN = b"0" * 19
_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def has_long_number(text: bytes | str, start: int = 0) -> bool:
    """Whether ``text`` (from ``start``) holds a run of 19+ digits: an integer that orjson may
    turn into a float. ``bytes.translate`` and a substring test cost a tenth of a regex."""
    data = text.encode() if isinstance(text, str) else text
    return _LONG_RUN in (data[start:] if start else data).translate(_AS_ZERO)


def _zstd(path: str | Path | None = None) -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise MissingDependencyError(
            "reading or writing .zst files needs the zstandard package",
            location=Location(source=str(path)) if path is not None else None,
            hint="pip install 'vecferry[zstd]'",
        ) from exc
    return zstandard


class _ZstdReader(io.RawIOBase):
    """Decompresses a zstd stream of one or more frames, and notices when it is cut short.

    zstandard's ``stream_reader`` ends quietly when the input stops inside a frame, so a
    truncated ``.jsonl.zst`` would read as a shorter file. Here the end of the input inside a
    frame raises ``EOFError`` and damaged data ``OSError``, as ``gzip`` does, which the line
    readers turn into an ``InputError`` naming the file.
    """

    def __init__(self, raw: IO[bytes], zstandard: Any):
        self.raw = raw
        self.zstandard = zstandard
        self.decoder = zstandard.ZstdDecompressor().decompressobj()
        self.in_frame = False  # bytes of the current frame were fed and its end not seen yet
        self.pending = memoryview(b"")
        #: the error met after the data in ``pending``, raised once that data is handed out
        self.failed: OSError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            if self.failed is not None:
                raise self.failed
            chunk = self.raw.read(1 << 17)
            if not chunk:
                if self.in_frame:
                    raise EOFError("the zstd stream ends inside a frame: the file is cut short")
                return 0
            self.pending = memoryview(self._decompress(chunk))
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        """The data of ``data``'s frames. A damaged frame after good ones in the same chunk
        still gives the good frames' data: the error waits in ``failed`` until that data is
        read, so the lines before the damage are handed out (and counted) first."""
        out = []
        try:
            while data:
                if self.decoder.eof:  # the next frame of a multi-frame file
                    self.decoder = self.zstandard.ZstdDecompressor().decompressobj()
                out.append(self.decoder.decompress(data))
                data = self.decoder.unused_data if self.decoder.eof else b""
        except self.zstandard.ZstdError as exc:
            error = OSError(f"zstd: {exc}")
            error.__cause__ = exc
            if not any(out):
                raise error from exc
            self.failed = error
        self.in_frame = not self.decoder.eof
        return b"".join(out)

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


class _GzipRaw(io.RawIOBase):
    """A ``gzip.GzipFile`` read as a raw stream that hands out what was decompressed before
    an error, and raises the error on the next read.

    ``io.BufferedReader`` over the ``GzipFile`` itself filled its buffer with ``readinto``,
    which raises as soon as one of its reads fails: a damaged member after good ones dropped
    the good members' data with it, so a line count said no line was read before the damage.
    """

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.failed: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.failed is not None:
            raise self.failed
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view):
            try:
                n = self.stream.readinto1(view[got:])  # type: ignore[attr-defined]
            except STREAM_ERRORS as exc:
                if not got:
                    raise
                self.failed = exc
                break
            if not n:
                break
            got += n
        return got

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
        super().close()


def open_read(path: str | Path) -> IO[bytes]:
    """A buffered binary reader, decompressing ``.gz`` and ``.zst`` transparently."""
    p = str(path)
    from vecferry import storage

    if storage.is_remote(path):
        return _open_remote_read(path)
    try:
        if p.endswith(".gz"):
            return io.BufferedReader(_GzipRaw(gzip.open(p, "rb")),  # type: ignore[arg-type]
                                     buffer_size=1 << 20)
        if p.endswith(".zst"):
            zstandard = _zstd(p)
            raw = open(p, "rb")  # noqa: SIM115 - owned by the returned stream
            return io.BufferedReader(_ZstdReader(raw, zstandard), buffer_size=1 << 20)
        return open(p, "rb", buffering=1 << 20)
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", location=Location(source=p),
                         hint="check the path and permissions") from exc


def _open_remote_read(path: Any) -> IO[bytes]:
    """A remote file streamed by ranged reads, decompressed like the local ones."""
    from vecferry import storage

    raw = storage.as_path(path).open_input()
    p = str(path)
    if p.endswith(".gz"):
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
        gz.myfileobj = raw  # closing the gzip stream closes the remote reader
        return io.BufferedReader(_GzipRaw(gz),  # type: ignore[arg-type]
                                 buffer_size=1 << 20)
    if p.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(raw, _zstd(p)), buffer_size=1 << 20)
    return raw


def open_write(path: str | Path, compress_as: str) -> IO[bytes]:
    """A binary writer to ``path``, compressing like the extension of ``compress_as`` says.

    A remote ``path`` is the ``temp`` of an ``AtomicPath``: the bytes stream into its upload.
    """
    from vecferry import storage

    if storage.is_remote(path):
        raw = storage.as_path(path).open_output()  # type: ignore[union-attr]
        if compress_as.endswith(".gz"):
            gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)  # type: ignore[arg-type]
            gz.myfileobj = raw  # type: ignore[assignment]
            return gz
        if compress_as.endswith(".zst"):
            return _zstd(compress_as).ZstdCompressor(
                level=3, threads=-1, write_checksum=True).stream_writer(raw, closefd=True)
        return raw  # type: ignore[return-value]
    if compress_as.endswith(".gz"):
        # Level 6 is gzip's own default: level 9 costs ~3x the time for ~2% smaller vector data.
        return gzip.open(path, "wb", compresslevel=6)
    if compress_as.endswith(".zst"):
        zstandard = _zstd(compress_as)  # before the file exists, so none is left behind
        raw = open(path, "wb")  # noqa: SIM115 - owned by the returned stream
        # the checksum lets a reader tell damaged data from data (the zstd tool writes one too)
        return zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True).stream_writer(
            raw, closefd=True)
    return open(path, "wb", buffering=1 << 20)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while a batch of JSON is parsed or built
    (a ``with`` block, or ``@gc_paused()`` on a function).

    Parsing a batch creates thousands of dicts and lists that stay alive, which sets the
    collector off while it runs (JSONL -> Parquet, 100k points: 0.56 s of the main process in
    collections, 0.24 s with this). JSON values cannot form cycles, so nothing is left for it
    to find; it runs again as usual once the block ends.
    Left off when it was already off, so nesting (or another thread) keeps the caller's choice.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def loads_exact(line: bytes, scan_from: int = 0) -> Any:
    """Parse one JSON document exactly: integers of any size stay integers; NaN is refused.

    orjson is fast but turns an integer past 64 bits into a float. A run of 20+ digits at or
    after ``scan_from`` (where the payload starts; vector digits before it do not matter and are
    slow to scan), or a point whose id comes out a float, sends the line to the stdlib parser,
    which keeps such integers exact. Raises
    ``ValueError`` (``orjson.JSONDecodeError`` is one) when the text is not JSON.
    """
    if scan_from < 0 or not has_long_number(line, scan_from):
        value = orjson.loads(line)
        # an id before the scanned part may be the integer orjson rounded: a float id is
        # refused anyway, but its message and rejects line must show the number as written
        if type(value) is not dict or type(value.get("id")) is not float:
            return value
    return json.loads(line, parse_constant=_no_constants)


def loads_reject_line(line: bytes) -> Any:
    """Parse a rejects-file line: JSON, or JSON holding the ``NaN`` / ``Infinity`` a record was
    refused for (written as it was read, see ``mapping.jsonable``). Raises ``ValueError`` for
    anything else."""
    try:
        return loads_exact(line)
    except ValueError:
        return json.loads(line)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_with_constants(text: bytes) -> tuple[Any, list[str]]:
    """``text`` parsed by the stdlib parser, which reads NaN / Infinity / -Infinity as floats,
    and those of them it met, in order. Raises ``ValueError`` for anything else not JSON."""
    found: list[str] = []

    def note(name: str) -> float:
        found.append(name)
        return float(name)

    return json.loads(text, parse_constant=note), found


def nonstandard_constant(line: bytes) -> str | None:
    """The first of NaN / Infinity / -Infinity in ``line`` when they are all that keeps it from
    being JSON (the stdlib parser reads them; orjson, rightly, does not)."""
    found = constant_and_id(line, None)
    return found[0] if found else None


def constant_and_id(line: bytes, id_key: str | None = "id") -> tuple[str, Any] | None:
    """(the first of NaN / Infinity / -Infinity in ``line``, the record's id) when those
    constants are all that keeps ``line`` from being JSON, else None.

    The id is the integer or string under ``id_key`` of the object the line holds (None when
    there is none, or ``id_key`` is None): the stdlib parser that reads the constants reads the
    rest of the line too, so a line refused for NaN can still be named by its id. Integers of
    any size stay exact.
    """
    try:
        value, found = loads_with_constants(line)
    except ValueError:
        return None
    if not found:
        return None
    pid = value.get(id_key) if id_key is not None and isinstance(value, dict) else None
    if isinstance(pid, bool) or not isinstance(pid, (int, str)):
        pid = None  # not an id (a NaN id among them): the line is named by its number alone
    return found[0], pid


def iter_lines(fh: IO[bytes], source: str, number: int = 0
               ) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, stripped line, has_newline) for each non-blank line of ``fh``; ``number``
    lines come before ``fh``'s position (0: the start of the file, where a byte order mark is
    dropped)."""
    at_start = number == 0
    try:
        for raw in fh:
            number += 1
            if at_start:
                raw, at_start = without_bom(raw), False
            line = raw.strip()
            if line:
                yield number, line, raw.endswith(b"\n")
    except STREAM_ERRORS as exc:
        raise corrupt_stream(exc, source, number) from exc


def corrupt_stream(exc: Exception, source: str, number: int) -> InputError:
    """The error of a cut or damaged compressed stream after ``number`` lines were handed out.
    The readers of ``open_read`` hand out every line decompressed before the damage (see
    ``_ZstdReader``, ``_GzipRaw``), so that many lines are good; the damage is in the
    compressed block after them."""
    return InputError(f"compressed stream is corrupt or truncated ({number} lines read "
                      f"before the error): {exc}", location=Location(source=source),
                      hint="re-create or re-download the file")


#: rows between the marks ``payload_marks`` records
MARK_ROWS = 4096


def payload_marks(path: str) -> tuple[int, list[tuple[int, int]] | None]:
    """Rows of a payload sidecar and, for a plain local JSONL file, where every
    ``MARK_ROWS``-th row starts: (byte offset, lines before it), so a reader starting at a
    later row seeks there instead of reading every line before it."""
    if path.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        from vecferry.storage import arrow_source

        return pq.ParquetFile(arrow_source(path)).metadata.num_rows, None
    plain = not path.endswith((".gz", ".zst")) and "://" not in path
    marks: list[tuple[int, int]] | None = [] if plain else None
    rows = pos = lines = 0
    with open_read(path) as fh:
        try:
            for raw in fh:
                if raw.strip():
                    if marks is not None and rows % MARK_ROWS == 0:
                        marks.append((pos, lines))
                    rows += 1
                pos += len(raw)
                lines += 1
        except STREAM_ERRORS as exc:
            raise corrupt_stream(exc, path, lines) from exc
    return rows, marks


def seek_to_mark(fh: IO[bytes], marks: list[tuple[int, int]] | None, row: int
                 ) -> tuple[int, int]:
    """Seek ``fh`` to the last of ``marks`` (from ``payload_marks``) at or before ``row``;
    returns (the row there, the lines before it), (0, 0) when there is none to use."""
    if marks and row >= MARK_ROWS:
        mark = min(row // MARK_ROWS, len(marks) - 1)
        offset, number = marks[mark]
        fh.seek(offset)
        return mark * MARK_ROWS, number
    return 0, 0


#: lines of a JSONL payload sidecar read and checked at a time
PAYLOAD_CHUNK = 2048


def iter_payload_chunks(path: str, start: int = 0, marks: list[tuple[int, int]] | None = None
                        ) -> Iterator[list[str | None]]:
    """Payload JSON texts (None: no payload) of a sidecar aligned by row, from row ``start``,
    in chunks of at most ``PAYLOAD_CHUNK`` rows (``marks`` from ``payload_marks`` let a plain
    JSONL file be entered near ``start`` directly).

    JSONL: one JSON object (or ``null``) per line; blank lines are no rows. Parquet: a
    ``payload`` column of JSON text, or else every column of a row becomes the payload object.
    Raises ``RecordError`` for a line that is not a JSON object, naming the file and line, or
    a Parquet row that cannot be one (see ``parquet_payload_rows``), naming the file and row.
    """
    if path.endswith((".parquet", ".pq")):
        for texts, bad in parquet_payload_rows(path, start):
            if bad:
                raise bad[min(bad)]
            yield texts
        return
    with open_read(path) as fh:
        row, number = seek_to_mark(fh, marks, start)
        at_start = number == 0
        while True:
            try:
                raws = list(itertools.islice(fh, PAYLOAD_CHUNK))
            except STREAM_ERRORS as exc:
                raise corrupt_stream(exc, path, number) from exc
            if not raws:
                return
            if at_start:
                raws[0], at_start = without_bom(raws[0]), False
            lines = [raw.strip() for raw in raws]
            numbers: Sequence[int] = range(number + 1, number + 1 + len(lines))
            if not all(lines):
                numbers = [n for n, line in zip(numbers, lines, strict=True) if line]
                lines = [line for line in lines if line]
            number += len(raws)
            # Rows before ``start`` (read by another partition or an earlier run) are counted,
            # not parsed.
            skip = min(len(lines), max(0, start - row))
            row += len(lines)
            if skip:
                lines, numbers = lines[skip:], numbers[skip:]
            if lines:
                yield payload_line_texts(lines, numbers, path)


#: how ``payload_texts`` words its errors for a sidecar's lines and for a Parquet ``payload``
#: column's cells: (what holds the text, "which JSON cannot ...", hint for text that is not JSON,
#: hint for a value that is not an object, whether the error keeps the text / value as ``raw``)
PAYLOAD_TEXT_WORDS = {
    "line": ("payload line", "express", "each line must be a JSON object or null", None, False),
    "cell": ("column 'payload'", "hold", "each cell must hold a JSON object or null",
             "each cell must hold a JSON object or null", True),
}


@gc_paused()
def payload_texts(texts: Sequence[bytes | None], locate: Callable[[int], Location], unit: str
                   ) -> tuple[list[str | None], dict[int, RecordError], dict[int, RecordError]]:
    """Payload texts checked: each JSON text must be an object or null (a None text is no
    payload). Returns the texts to keep (None: no payload, or bad), and the bad ones by offset:
    those that are not JSON (NaN and Infinity named), then those whose value is not an object.
    ``locate`` gives an offset's location, ``unit`` the wording (``PAYLOAD_TEXT_WORDS``)."""
    holder, verb, not_json_hint, not_object_hint, keep_raw = PAYLOAD_TEXT_WORDS[unit]
    # One scan of the chunk for long integers and one C-level parse per text: the per-text
    # exact parser (with its error naming the place) runs only for a chunk that needs it.
    whole = None not in texts  # a sidecar's lines: map() keeps the parse loop in C
    present = texts if whole else [t for t in texts if t is not None]
    values: list[Any] | None = None
    if not has_long_number(b"\n".join(present)):  # type: ignore[arg-type]
        try:
            values = (list(map(orjson.loads, texts)) if whole else
                      [None if t is None else orjson.loads(t) for t in texts])
        except orjson.JSONDecodeError:
            values = None
    unparsed: dict[int, RecordError] = {}
    if values is None:
        values = []
        for i, text in enumerate(texts):
            if text is None:
                values.append(None)
                continue
            try:
                values.append(loads_exact(text))
            except ValueError as exc:
                constant = nonstandard_constant(text)
                raw = text.decode("utf-8", "replace") if keep_raw else None
                err = (RecordError(f"{holder} holds {constant}, which JSON cannot {verb}",
                                   location=locate(i), hint=NAN_HINT, raw=raw)
                       if constant is not None else
                       RecordError(f"{holder} is not JSON: {exc}", location=locate(i),
                                   hint=not_json_hint, raw=raw))
                err.__cause__ = exc
                unparsed[i] = err
                values.append(None)
    not_object = {
        i: RecordError(f"payload must be a JSON object, not {type(value).__name__}",
                       location=locate(i), hint=not_object_hint,
                       raw=value if keep_raw else None)
        for i, value in enumerate(values)
        if i not in unparsed and value is not None and type(value) is not dict}
    # Each text is valid JSON for exactly its object: keep it, not a re-encoding.
    kept = [None if value is None or i in not_object or text is None else text.decode()
            for i, (value, text) in enumerate(zip(values, texts, strict=True))]
    return kept, unparsed, not_object


def payload_line_texts(lines: list[bytes], numbers: Sequence[int], path: str) -> list[str | None]:
    """The payload texts of sidecar ``lines`` (line ``numbers[i]`` each), checked: a
    ``RecordError`` names the first line that is not JSON, else the first that is not an
    object."""
    texts, unparsed, not_object = payload_texts(
        lines, lambda i: Location(source=path, line=numbers[i]), "line")
    for bad in (unparsed, not_object):
        if bad:
            raise bad[min(bad)]
    return texts


def parquet_payload_rows(path: str, start: int = 0
                         ) -> Iterator[tuple[list[str | None], dict[int, RecordError]]]:
    """Payload texts (None: no payload) of a Parquet payloads file aligned by row, from row
    ``start``, a chunk at a time, with the errors of the chunk's bad rows by offset (their texts
    None; each names the file and row, ``raw`` is the payload as read, NaN included).

    A ``payload`` column alone holds JSON text: a cell that is not JSON, holds NaN or Infinity
    or is not an object (or null) is bad. Otherwise every column of a row becomes the payload
    object, and a row holding NaN or infinity in a float column (nested too) is bad: as null it
    would read as a value, and JSON has no other way to write it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vecferry.mapping import column_values, jsonable
    from vecferry.points import dumps_payload
    from vecferry.storage import arrow_source

    pf = pq.ParquetFile(arrow_source(path))
    schema = pf.schema_arrow
    has_text = schema.names == ["payload"] and (pa.types.is_string(schema.field(0).type)
                                                or pa.types.is_large_string(schema.field(0).type))
    floats = float_columns(schema)
    groups, first = [], 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if first + n <= start and not groups:
            first += n  # skipped by its footer entry, never decoded
            continue
        groups.append(g)
    for batch in pf.iter_batches(batch_size=PAYLOAD_CHUNK, row_groups=groups):
        skip = min(batch.num_rows, max(0, start - first))
        row0, first = first + skip, first + batch.num_rows
        if skip == batch.num_rows:
            continue
        batch = batch.slice(skip)
        bad: dict[int, RecordError] = {}
        if has_text:
            cells = [None if c is None else c.encode()
                     for c in batch.column("payload").to_pylist()]
            texts, unparsed, not_object = payload_texts(
                cells, lambda i, row0=row0: Location(source=path, row=row0 + i), "cell")
            bad = {**unparsed, **not_object}
        else:
            # column by column as a mapped Parquet source reads them: to_pylist fails on a
            # timestamp in nanoseconds or past year 9999, and gives decimals and bytes that
            # JSON has no words for
            names = batch.schema.names
            rows = [dict(zip(names, values, strict=True)) for values in zip(
                *(column_values(batch.column(c)) for c in names), strict=True)]
            texts = []
            for i, row in enumerate(rows):
                reason = non_finite_column(row, floats) if floats else None
                if reason is None:
                    texts.append(dumps_payload(jsonable(row)))
                    continue
                bad[i] = RecordError(reason, location=Location(source=path, row=row0 + i),
                                     hint=PARQUET_NAN_HINT,
                                     raw=jsonable(row, keep_non_finite=True))
                texts.append(None)
        yield texts, bad


def float_columns(schema: Any) -> list[str]:
    """The columns of an Arrow ``schema`` whose values can hold a float, nested too."""
    from vecferry.mapping import holds_floats

    return [f.name for f in schema if holds_floats(f.type)]


def non_finite_column(row: dict[str, Any], columns: Sequence[str]) -> str | None:
    """Why a Parquet row read as a payload cannot be JSON: the first of ``columns`` holding NaN
    or infinity, nested too, worded as the Parquet points reader words it; None when none
    does."""
    from vecferry.mapping import non_finite

    for name in columns:
        found = non_finite(row.get(name))
        if found is not None:
            what, at = found
            return (f"column {name!r} holds {what}{f' at {at}' if at else ''}, which JSON "
                    "cannot hold")
    return None
