"""``convert()``: one reader, one writer, and everything between them.

The pipeline rebatches the reader's stream, applies ``limit``, feeds the writer, writes rejected
records to a rejects file, keeps a resume state for writers that acknowledge batches, counts
duplicate ids with bounded memory, and returns a report (the same dict the CLI prints with
``--json``). It never prints: progress goes to the ``progress`` object the caller passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson

from vecferry import scaleout
from vecferry.converters import open_reader, resolve
from vecferry.converters.base import REJECT_KEY, Context, abort_notice_of
from vecferry.errors import (
    InputError,
    Location,
    OutputExistsError,
    RecordError,
    UsageError,
    add_notice,
    add_warnings,
    writing_to,
)
from vecferry.fileio import loads_reject_line
from vecferry.ledger import IdLedger
from vecferry.mapping import narrowed_values, non_finite
from vecferry.parallel import _interrupts_held
from vecferry.plan import take_rows
from vecferry.storage import in_this_context, is_remote, with_storage_options
from vecferry.stream import manifest_of, rebatch

DEFAULT_BATCH_SIZE = 2048

#: what the notice of a run stopped once its output was in place, whole, says of it (the
#: command line tells such a notice apart by these words, as it does ``storage.MOVE_FINISHED``)
OUTPUT_WHOLE = "holds this run's whole output"
#: what such a notice says the run did not get to, stopped before its report was made
STOPPED_BEFORE_REPORT = ("the run was stopped after the output was put in place, before its "
                         "report was made")


def output_whole_notice(dst: str, written: int, rejected: int, rejects: str | None,
                        after: str) -> str:
    """The notice of a run stopped after its output ``dst`` was put in place, whole: the
    points it holds, the records set aside in ``rejects``, and what the run did not get to
    (``after``)."""
    held = f"{written} point(s) written"
    if rejected:
        held += f", {rejected} rejected to {rejects}"
    return f"{dst} {OUTPUT_WHOLE} ({held}): {after}"


def count_narrowed(report: dict[str, Any], read_whole: bool = True) -> None:
    """Give a run's report ``narrowed_values``, the float64 (or integer) vector values that
    changed when narrowed to float32, from its readers' warnings (``mapping.narrowed_values``;
    0 when the run narrowed values and none changed). Left out when nothing was narrowed, and
    when a read cut short (``read_whole`` False: a ``limit``) reported no count."""
    found = narrowed_values(report["warnings"], counted=read_whole)
    if found is not None:
        report["narrowed_values"] = found


class _WriterContext(Context):
    """The writer's side of a run's ``Context`` (as ``Context.sibling``: the same policy,
    sink and warnings, rejects counted apart, since the reader rejects from its own thread).

    A reject the writer makes of a point of the batch it was handed, marked with its row there
    (``RecordError.batch_row``, and ``vector``: the JSONL writer's NaN), is named where the
    source holds the point when the reader can say (``locate``, the numpy reader): the user
    fixes the source, which the output that refused it never held. Failing, the error names
    the source's file and row; skipping, its rejects line goes on naming the output that
    refused it (``verify --rejects`` leaves out the points a target refused by that name)
    and adds the source's place as ``source_location``. ``rows_before`` is the number of
    points of the read handed to the writer before the batch it writes."""

    def __init__(self, context: Context, reader: Any):
        super().__init__(context.on_error, context.sink, context.warnings)
        self._locate = getattr(reader, "locate", None)
        self.rows_before = 0

    def reject(self, error: RecordError) -> None:
        row = getattr(error, "batch_row", None)
        if row is not None and self._locate is not None:
            where = self._locate(self.rows_before + row, getattr(error, "vector", None))
            if self.on_error == "fail":
                error.location = Location(source=where.source, line=where.line, row=where.row,
                                          point_id=error.location.point_id)
            else:
                error.source_location = where
        super().reject(error)


class Progress(Protocol):
    """What the pipeline needs of a progress bar (``tqdm`` fits)."""

    total: int | None

    def update(self, n: int) -> Any: ...

    def refresh(self) -> Any: ...


class RejectsFile:
    """Rejected records as JSONL, one per line, in the input's own point shape.

    Each line is the original point (when it could be parsed) plus ``_vecferry_reject`` with the
    reason and location; the JSONL reader ignores that key, so a user fixes the lines and feeds
    the file back to ``vecferry convert``. An unparseable line is kept verbatim under ``_raw``.
    The file is created on the first reject only; it replaces the rejects of an earlier run,
    unless ``append`` (a resumed run adds to its own earlier rejects). Appending, a record the
    file already holds (same reason and place) is not written again, and the call returns
    False, so ``Context`` does not count it: a resumed run reads again records the run before
    it rejected (the lines before its position, or those read ahead of what was acknowledged).
    """

    def __init__(self, path: str | os.PathLike[str], append: bool = False):
        self.path = Path(path)
        self.append = append
        self._fh = None
        self.count = 0
        self._lock = threading.Lock()  # the reader (prefetch thread) and writer both reject
        self._seen: set[bytes] | None = None  # the notes in the file, once appending to it

    def __call__(self, error: RecordError) -> bool:
        with self._lock:
            return self._write(error)

    def _earlier(self) -> set[bytes]:
        """The reject notes of the lines an earlier run wrote (compared as sorted JSON)."""
        seen: set[bytes] = set()
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    record = loads_reject_line(line)
                    if isinstance(record, dict) and isinstance(record.get(REJECT_KEY), dict):
                        seen.add(_reject_key(record))
        return seen

    def _write(self, error: RecordError) -> bool:
        note = {"reason": error.message, **error.location.as_dict()}
        found = getattr(error, "source_location", None)
        if found is not None:  # a point the output refused: where the source holds it
            note["source_location"] = found.as_dict()
        raw = error.raw
        record: dict[str, Any]
        if isinstance(raw, dict):
            record = {k: v for k, v in raw.items() if k != REJECT_KEY}
        else:
            record = {"_raw": raw if isinstance(raw, str) else repr(raw)}
        record[REJECT_KEY] = note
        if self.append:
            if self._seen is None:
                self._seen = self._earlier()
            key = _reject_key(record)
            if key in self._seen:
                return False
            self._seen.add(key)
        if self._fh is None:
            self._fh = open(self.path, "ab" if self.append else "wb")  # noqa: SIM115
        if non_finite(record) is not None:
            # orjson writes NaN and infinity as null, and a re-run left unfixed would then
            # take null for them; written as they are (NaN, Infinity), the re-run names them
            line = _stdlib_line(record)
        else:
            try:
                line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
            except (orjson.JSONEncodeError, TypeError):
                # integers past 64 bits (often the very reason for the reject): stdlib is exact
                line = _stdlib_line(record)
        self._fh.write(line + b"\n")
        self.count += 1
        return True

    def flush(self) -> None:
        """Hand what was written to the system, so a killed process loses none of it."""
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def start_over(self) -> None:
        """Replace, not extend, an earlier run's rejects (a ``--resume`` that starts over)."""
        if self._fh is None:
            self.append = False

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _reject_key(record: dict[str, Any]) -> bytes:
    """What tells one reject from another: its note, when the note names a line or row (a
    record read again names the same one); else the whole record too, since a target's note
    names only the id, and two records of a repeated id refused for one reason are two
    rejects, not one written twice."""
    note = record[REJECT_KEY]
    if isinstance(note, dict) and ("line" in note or "row" in note):
        record = note
    return json.dumps(record, sort_keys=True, default=_plain).encode("utf-8", "surrogatepass")


def _check_rejects_path(path: str, src: str, dst: str) -> None:
    """Refuse a rejects file that is the input or the output, or any existing file that is not
    a rejects file: it would be written over (or, after a clean run, removed)."""
    from vecferry.storage import is_remote

    if path.lower().endswith((".gz", ".zst", ".bz2", ".xz")):
        # written plain, it would not read back under that name
        raise UsageError("the rejects file is plain JSONL, not compressed",
                         location=Location(source=str(path)),
                         hint="name it .jsonl, and compress it afterwards if need be")
    mine = os.path.realpath(path)
    for role, other in (("input", src), ("output", dst)):
        if not is_remote(other) and os.path.realpath(other) == mine:
            raise UsageError(f"--rejects names the {role} ({other})",
                             hint="give the rejects file a name of its own")
    if (os.path.lexists(path) and not _is_rejects_file(Path(path))):
        raise UsageError("the rejects file exists and is not one vecferry wrote (its first line "
                         "is not a rejected record)", location=Location(source=str(path)),
                         hint="give the rejects file a new name (--rejects FILE), or move that "
                              "file away")


def _refuse_dropping_the_source(src: str, dst: str, src_fmt: str, dst_fmt: str,
                                overwriting: bool) -> None:
    """``UsageError`` for an overwrite of the collection being read: it would be dropped
    before a point of it was read, and the run would end "identical" with nothing left."""
    if not (overwriting and src_fmt == dst_fmt == "qdrant"):
        return
    from vecferry.converters.qdrant import same_collection

    if same_collection(src, dst):
        raise UsageError("the source and the target are the same collection: overwriting it "
                         "would drop it before it is read", location=Location(source=dst),
                         hint="copy into another collection, or drop --overwrite / "
                              "--mode overwrite")


def _is_rejects_file(path: Path) -> bool:
    """Whether ``path`` is a regular file that is empty or starts with a rejected record
    (a JSON object holding ``_vecferry_reject``), so replacing or removing it loses nothing
    of the user's."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first:
        return True
    try:
        record = loads_reject_line(first)
    except ValueError:
        return False
    return isinstance(record, dict) and REJECT_KEY in record


def settle_rejects(path: str | os.PathLike[str], rejected: int, appended: bool,
                   manifest: Any) -> None:
    """After a successful run, leave the rejects file at ``path`` as this run's.

    A run that rejected nothing removes the file an earlier run left (and its manifest):
    beside a fresh output it would read as this run's rejects; kept when the run added to it
    (a resumed run whose earlier part rejected records). A run that rejected records gives the
    file the source's schema as its manifest sidecar, so a re-run reads its lines against the
    source's vectors and id kind: inferred from the lines instead, an unfixed record (a vector
    of the wrong size, first in the file) set the schema, and the fixed records after it were
    refused. No count or digest: the user edits the file."""
    side = Path(f"{path}.manifest.json")
    if rejected == 0 and not appended:
        for stale in (Path(path), side):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                stale.unlink()
    elif rejected and Path(path).is_file():
        import dataclasses

        side.write_bytes(dataclasses.replace(manifest, count=None, digest=None).to_json())


def _stdlib_line(record: dict[str, Any]) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"),
                          default=_plain).encode()
    except UnicodeEncodeError:
        # a lone surrogate (in a key or value) has no UTF-8: escaped, the line stays JSON and
        # a re-run reads the same string back, to be refused again until it is fixed
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"),
                          default=_plain).encode()


def _plain(value: Any) -> Any:
    """numpy values for the stdlib JSON encoder."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead.

    Readers spend their time in Python (parsing) and writers in C (compression, I/O, network
    waits) that releases the GIL, so overlapping them uses a second core with memory bounded
    by ``depth`` batches. An exception in the reader is re-raised here, in order.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer and re-raised there
            put(_Failure(exc))

    # in a copy of the caller's context: a reader opening a file as it goes must use the
    # caller's storage options (``storage.using``), which a new thread would not see
    worker = threading.Thread(target=in_this_context(run), name="vecferry-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def _beside(dst: str, suffix: str) -> str:
    """A local file named after the output: next to a file, in the working directory for a
    URI (``qdrant://h/c`` -> ``h_c<suffix>``; ``qdrant-local://./q/c`` -> ``q_c<suffix>``, not a
    hidden ``._q_c``)."""
    if "://" not in dst:
        return dst.rstrip("/") + suffix
    return dst.rstrip("/").split("://")[-1].lstrip("./").replace("/", "_") + suffix


def default_rejects_path(dst: str) -> str:
    return _beside(dst, ".rejects.jsonl")


def default_state_path(dst: str) -> str:
    return _beside(dst, ".vecferry-state.json")


#: options that change how a run goes, not what it writes: a resumed run may change them
#: (``mode`` too: what it does to an existing collection is never done while resuming)
RUN_ONLY_OPTIONS = frozenset({"api_key_env", "timeout", "page_size", "parallel", "max_retries",
                              "batch_bytes", "workers", "mmap", "bulk", "mode"})


def output_options(reader_options: dict[str, Any] | None,
                   writer_options: dict[str, Any] | None) -> dict[str, Any]:
    """The reader and writer options that decide what a run writes, as JSON values, for a
    resumed run to compare with the run it continues: one that writes other points (another
    --id-field, --distance, mapping) into the same output would leave it half one, half the
    other."""
    picked = {side: {k: v for k, v in (options or {}).items() if k not in RUN_ONLY_OPTIONS}
              for side, options in (("reader", reader_options), ("writer", writer_options))}
    return orjson.loads(orjson.dumps(picked, default=str, option=orjson.OPT_SORT_KEYS))


def options_changed(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The options (by name) whose value differs between two ``output_options``."""
    names = []
    for side in ("reader", "writer"):
        old, new = saved.get(side) or {}, now.get(side) or {}
        names += [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
                  and k not in names]
    return names


def changed_options_error(names: list[str], where: str) -> UsageError:
    shown = ", ".join("--" + n.replace("_", "-") for n in names)
    return UsageError(
        f"the run this would resume wrote with other options: {shown} changed",
        location=Location(where),
        hint="resume with the options of that run; or, to write with the new ones, run "
             "without --resume (with --overwrite or --mode overwrite to replace what it wrote)")


def _file_state(location: Any) -> list[Any] | None:
    """Size and modification time of a local file, or of each file under a local directory;
    the size and ETag (or time) of a remote object; None when ``location`` is not a path."""
    from vecferry.storage import is_remote

    if is_remote(location):
        from vecferry.storage import StoragePath

        with contextlib.suppress(Exception):  # an unreachable store: no stamp, no check
            info = StoragePath(str(location)).info() or {}
            return [info.get("size"), str(info.get("ETag") or info.get("etag")
                                          or info.get("LastModified") or info.get("mtime"))]
        return None
    path = Path(str(location))
    if path.is_file():
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    if path.is_dir():
        return [[str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns]
                for f in sorted(path.rglob("*")) if f.is_file()]
    return None


def _refuse_resuming_a_finished_output(src: str, dst: str, dst_spec: Any) -> None:
    """``OutputExistsError`` saying so when ``--resume`` names a file output that exists with
    no interrupted run of it left (no staging directory): its run finished, or another wrote
    it. A resume does not replace an output, and cannot tell this one whole from here."""
    from vecferry.scaleout import staging_dir

    if getattr(dst_spec.load("writer"), "resumable", False) or is_remote(dst):
        return
    target = Path(dst)
    if not (target.exists() or target.is_symlink()) or staging_dir(dst).exists():
        return
    raise OutputExistsError(
        "output exists and no interrupted run of it is left to resume: its run finished, or "
        "another wrote it", location=Location(source=dst),
        hint=f"check it with: vecferry verify {src} {dst}; pass --overwrite to write it again")


def source_state(src: str, reader: Any, reader_options: dict[str, Any]) -> str:
    """A digest of what a source holds now: its files' sizes and modification times (with
    the ``--ids`` / ``--payloads`` files it reads), or, for a collection, its point count.

    A resumed run compares it with the one its state recorded: a source regenerated under
    the same name must not be resumed at the old position (that would skip its new rows)."""
    files = {"src": _file_state(src)}
    for key, value in sorted(reader_options.items()):
        if isinstance(value, str) and key in ("ids", "payloads"):
            files[key] = _file_state(value)
    if files["src"] is None:
        with contextlib.suppress(Exception):  # a count that fails now fails the run later
            files["count"] = reader.count()
    return hashlib.sha1(orjson.dumps(files, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class ResumeState:
    """Source position and counts after the last acknowledged batch, rewritten atomically.

    ``source`` (``source_state``) is recorded with them: ``load`` returns None, the run
    starting from the beginning, when the source has changed since."""

    def __init__(self, path: str | os.PathLike[str], src: str, dst: str,
                 source: str | None = None, rejects: RejectsFile | None = None,
                 options: dict[str, Any] | None = None):
        self.path = Path(path)
        self.src, self.dst = src, dst
        self.source = source
        #: ``output_options`` of the run: a resume with others is refused (``load``)
        self.options = options
        # flushed before each save: a state counting rejects the file lost (the process
        # killed with them in its buffer) would never write them again
        self.rejects = rejects
        #: set by ``load`` when the saved state was for other contents of the source
        self.changed = False

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = orjson.loads(self.path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InputError("resume state is not valid JSON", location=Location(str(self.path)),
                             hint="delete it to start from the beginning") from exc
        if not isinstance(state, dict):
            raise InputError("resume state is not a JSON object",
                             location=Location(str(self.path)),
                             hint="delete it to start from the beginning")
        if state.get("src") != self.src or state.get("dst") != self.dst:
            raise UsageError(
                f"resume state belongs to {state.get('src')} -> {state.get('dst')}",
                location=Location(str(self.path)),
                hint="pass --state with another file, or delete it",
            )
        if self.source is not None and state.get("source", self.source) != self.source:
            self.changed = True
            return None
        # a state written before options were recorded has none to compare
        if self.options is not None and state.get("options") is not None:
            changed = options_changed(state["options"], self.options)
            if changed:
                raise changed_options_error(changed, str(self.path))
        return state

    def save(self, position: int, written: int, rejected: int, done: bool = False,
             note: dict[str, Any] | None = None) -> None:
        """Record the position; ``note`` is what the writer asks a resumed run to be told
        (``resume_note``: a Qdrant ``--bulk`` load's original HNSW m)."""
        if self.rejects is not None:
            self.rejects.flush()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(orjson.dumps({
            "src": self.src, "dst": self.dst, "source": self.source, "position": position,
            "written": written, "rejected": rejected, "done": done, "updated": time.time(),
            **({"options": self.options} if self.options is not None else {}),
            **({"note": note} if note else {}),
        }))
        os.replace(tmp, self.path)


@with_storage_options
def convert(
    src: str,
    dst: str,
    *,
    from_format: str | None = None,
    to_format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit: int | None = None,
    overwrite: bool = False,
    on_error: str = "fail",
    rejects: str | None = None,
    resume: bool = False,
    state: str | None = None,
    check_duplicates: bool = True,
    progress: Progress | None = None,
    reader_options: dict[str, Any] | None = None,
    writer_options: dict[str, Any] | None = None,
    workers: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    partition_size: int | str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Convert ``src`` into ``dst`` and return the run report.

    ``dry_run`` opens the source and the target and runs every check made before the first
    write (formats, options, what the target cannot hold, an existing output or collection,
    its config), then stops: nothing is written, and the report says how many points would go
    and, for a Qdrant target, what would be done to the collection (``target``).

    Raises a ``VecferryError`` subclass on failure, after removing any partial output (file
    targets write under a temporary name). Stopped once its output
    was put in place, whole (an interrupt, or an error, while the run counts repeated ids or
    settles its rejects file), the exception says so: ``output_whole_notice`` as a
    ``KeyboardInterrupt``'s argument or in a ``VecferryError``'s hint. With
    ``on_error="skip"`` bad records go to ``rejects`` (default ``<dst>.rejects.jsonl``) and
    the run carries on; the report always satisfies ``read == written + rejected``, and
    counts in ``narrowed_values`` the float64 values narrowing to float32 changed. With
    ``resume=True`` and a writer that acknowledges batches (Qdrant), the run continues after
    the position saved in ``state``.
    ``storage_options`` (e.g. ``{"endpoint_url": ...}``) apply to ``s3://``, ``gs://`` and
    ``az://`` locations on both ends (see ``vecferry.storage``).

    ``workers`` processes (default: the cores there are) or ``engine="ray"`` run the
    conversion as a plan of partitions of about ``partition_size`` bytes when the source cuts
    into several and the target takes parts (see ``vecferry.scaleout``); ``resume`` then skips
    the partitions an earlier run completed.
    """
    _check_arguments(batch_size=batch_size, limit=limit, overwrite=overwrite, resume=resume,
                     check_duplicates=check_duplicates, dry_run=dry_run,
                     reader_options=reader_options, writer_options=writer_options)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        # 0 ran on every core and -3 in one process: a count the CLI refuses
        raise UsageError(f"workers must be a positive integer or None, not {workers!r}",
                         hint="None (the default) uses the cores there are")
    for role, location in (("input", src), ("output", dst)):
        if location == "-":
            # not a file named "-": a script meaning stdin or stdout would get one
            raise UsageError(f"'-' ({'stdin' if role == 'input' else 'stdout'}) is not a "
                             f"vecferry {role}: it needs a file, a directory or a collection",
                             hint="name a file; a JSONL file can be piped afterwards")
    started = time.perf_counter()
    src_spec = resolve(src, from_format, role="reader")
    dst_spec = resolve(dst, to_format, role="writer")
    _refuse_dropping_the_source(src, dst, src_spec.name, dst_spec.name,
                                overwrite or (writer_options or {}).get("mode") == "overwrite")
    if resume and not overwrite:
        _refuse_resuming_a_finished_output(src, dst, dst_spec)
    rejects_path = rejects or default_rejects_path(dst)
    _check_rejects_path(rejects_path, src, dst)
    sink = RejectsFile(rejects_path, append=resume)
    context = Context(on_error=on_error, sink=sink)
    #: (points written, rejected) once the output is in place, whole: whatever stops the
    #: run after that says so, instead of leaving the user to think nothing was written
    whole: tuple[int, int] | None = None
    try:
        reader = open_reader(src, format=src_spec.name, context=context,
                             **(reader_options or {}))
        # the writer's rejects of the points it was handed are named where the source
        # holds them, when the reader can say
        writer_context = _WriterContext(context, reader)
        writer = None
        stream = None
        ledger = None
        resume_state = None
        note = None
        position = 0
        written_before = rejected_before = 0
        try:
            schema = reader.schema
            manifest = manifest_of(schema)
            asked = (writer_options or {}).get("distance")
            kept = [f"{v.name or '(unnamed)'} {v.distance}" for v in manifest.vectors
                    if asked and v.distance and v.distance != asked]
            if kept:
                context.warn(f"--distance {asked} is for vectors whose source records no distance; "
                             f"these keep the source's: {', '.join(kept)}")
            writer_cls = dst_spec.load("writer")
            if dry_run:
                with writing_to(dst):
                    writer = writer_cls(dst, schema, context=writer_context, overwrite=overwrite,
                                        **(writer_options or {}))
                plan = writer.plan() if hasattr(writer, "plan") else None
                opened_writer, writer = writer, None
                opened_writer.abort()  # nothing was written: this removes what opening made
                report = _report(src, dst, src_spec.name, dst_spec.name, manifest, started, 0, 0,
                                 rejects_path, context.warnings)
                report.update(dry_run=True, points=reader.count())
                if limit is not None and report["points"] is not None:
                    report["points"] = min(report["points"], limit)
                if plan is not None:
                    report["target"] = plan
                return report
            chosen = scaleout.choose(
                reader, src=src, src_fmt=src_spec.name, reader_options=reader_options or {},
                dst=dst, dst_fmt=dst_spec.name, writer_options=writer_options or {},
                workers=workers, engine=engine, partition_size=partition_size, limit=limit,
                batch_size=batch_size, on_error=on_error, check_duplicates=check_duplicates,
                state=state)
            if chosen is not None:
                plan, job, n = chosen
                opened, reader = reader, None
                opened.close()  # the tasks open their own; the driver holds no data
                finished = (ResumeState(default_state_path(dst), src, dst, plan.source_state,
                                        options=output_options(reader_options, writer_options))
                            if resume and getattr(writer_cls, "resumable", False) else None)
                saved = finished.load() if finished is not None else None
                if finished is not None and finished.changed:
                    context.warn(f"{src} has changed since the run recorded in {finished.path}: "
                                 "this run started from the beginning")
                if saved and saved.get("done"):
                    # the load this resumes finished: like a single-process run, nothing is sent
                    # again (which would undo what was changed in the collection since)
                    report = _report(src, dst, src_spec.name, dst_spec.name, manifest, started,
                                     0, 0, rejects_path, context.warnings)
                    report.update(resumed_from=int(saved["position"]),
                                  written_total=int(saved["written"]),
                                  rejected_total=int(saved.get("rejected", 0)))
                    if report["rejected_total"] and Path(rejects_path).is_file():
                        report["rejects_file"] = str(rejects_path)
                    count_narrowed(report)
                    return report
                part_report = scaleout.convert_partitioned(
                    plan, job, workers=n, engine=engine, ray_address=ray_address,
                    overwrite=overwrite, resume=resume, rejects_path=rejects_path,
                    progress=progress)
                whole = (part_report.get("written_total", part_report["written"]),
                         part_report.get("rejected_total", part_report["rejected"]))
                report = _report(src, dst, src_spec.name, dst_spec.name, manifest, started,
                                 part_report.pop("written"), part_report.pop("rejected"),
                                 rejects_path, context.warnings)
                report["warnings"] += [w for w in part_report.pop("warnings", [])
                                       if w not in report["warnings"]]
                report.update(part_report)
                duplicate_warning(report, order_lost=bool(report.pop("order_not_restored", False)))
                # the partitioned run replaced the file with the whole load's rejects
                rejected_total = report.get("rejected_total", report["rejected"])
                settle_rejects(rejects_path, rejected_total, appended=False, manifest=manifest)
                if finished is not None:
                    # what a single-process run leaves: the same command with --resume sends
                    # nothing twice while the source is unchanged
                    written_total = report.get("written_total", report["written"])
                    finished.save(written_total + rejected_total, written_total, rejected_total,
                                  done=True)
                count_narrowed(report)
                return report
            resumable = bool(getattr(writer_cls, "resumable", False))
            if resume and not resumable:
                # An interrupted run of a whole-or-nothing output left nothing to continue from,
                # so scripts that always pass --resume get a run from the beginning, not an error.
                context.warn(f"nothing to resume: {dst_spec.name} output written by one process "
                             "appears whole or not at all, so this run started from the beginning")
                sink.start_over()
            if resumable and (resume or state):
                resume_state = ResumeState(state or default_state_path(dst), src, dst,
                                           source_state(src, reader, reader_options or {}),
                                           rejects=sink,
                                           options=output_options(reader_options, writer_options))
                saved = resume_state.load() if resume else None
                if resume_state.changed:
                    context.warn(f"{src} has changed since the run recorded in "
                                 f"{resume_state.path}: this run started from the beginning")
                if saved:
                    position = int(saved["position"])
                    written_before = int(saved["written"])
                    rejected_before = int(saved["rejected"])
                    note = saved.get("note")
                else:
                    sink.start_over()  # no earlier run of this job: older rejects are not its own
            wopts = dict(writer_options or {})
            if resumable:
                wopts["resuming"] = position > 0
                if note:
                    wopts["resume_note"] = note
            with writing_to(dst):
                writer = writer_cls(dst, schema, context=writer_context, overwrite=overwrite,
                                    **wopts)
            stale = getattr(writer, "stale_resume", None)
            why = stale(written_before) if position and stale is not None else None
            if why:
                # continuing would skip the points that run wrote and that are gone with the
                # collection: this run loads everything again
                context.warn(f"{resume_state.path if resume_state else 'the state file'} records "
                             f"{written_before} point(s) written to {dst}, but {why}: this run "
                             "started from the beginning")
                position = written_before = rejected_before = 0
                note = None
                sink.start_over()
            total = reader.count()
            if total is not None and limit is not None:
                total = min(total, limit)
            if progress is not None:
                progress.total = total
                if position:
                    progress.update(min(position, total or position))
            ledger = IdLedger(manifest.id_kind) if check_duplicates else None
            written = 0
            consumed = 0  # stream rows handed to the writer, the unit of the resume position
            # (consumed, written) after each batch not yet acknowledged: the state records the
            # points of the acknowledged rows, not of those still in flight, which a resumed run
            # sends again (and counts then)
            handed: deque[tuple[int, int]] = deque()
            acked_written = 0

            def written_by(acked: int | None) -> int:
                """Points this run wrote in its first ``acked`` stream rows (all when None: a
                writer that has nothing in flight)."""
                nonlocal acked_written
                if acked is None:
                    return written
                while handed and handed[0][0] <= acked:
                    acked_written = handed.popleft()[1]
                return acked_written
            remaining = None if limit is None else max(0, limit - position)
            # A limit below the batch size reads batches of the limit, and no batch is read once
            # it is reached: records past it are not read (nor rejected), bar the rest of the
            # last batch of a limit above the batch size.
            read_size = batch_size if remaining is None else max(1, min(batch_size, remaining))
            rows = rebatch(reader.batches(read_size, start=position), read_size)
            stream = prefetch(rows if remaining is None else take_rows(rows, remaining))
            for batch in stream:
                if remaining is not None:
                    if remaining <= 0:
                        break
                    if batch.num_rows > remaining:
                        batch = batch.slice(0, remaining)
                    remaining -= batch.num_rows
                before = writer_context.rejected
                writer_context.rows_before = consumed
                with writing_to(dst):
                    writer.write_batch(batch)
                written += batch.num_rows - (writer_context.rejected - before)
                consumed += batch.num_rows
                handed.append((consumed, written))
                if ledger is not None:
                    ledger.add(batch.column("id"))
                if resume_state is not None:
                    # A writer with requests in flight says how many stream rows are acknowledged;
                    # only those may be skipped by a later --resume.
                    acked = getattr(writer, "acknowledged_rows", None)
                    resume_state.save(position + (consumed if acked is None else acked),
                                      written_before + written_by(acked),
                                      rejected_before + context.rejected + writer_context.rejected,
                                      note=getattr(writer, "resume_note", None))
                if progress is not None:
                    progress.update(batch.num_rows)
            if progress is not None:
                progress.refresh()
            with writing_to(dst):
                writer_report = writer.close() or {}
            whole = (written_before + written,
                     rejected_before + context.rejected + writer_context.rejected)
            if resume_state is not None:
                resume_state.save(position + consumed, written_before + written,
                                  rejected_before + context.rejected + writer_context.rejected,
                                  done=True)
        except BaseException as exc:
            if writer is not None:
                acked = None
                if resume_state is not None:
                    # requests acknowledged since the last save (all of them when closing failed
                    # after the last one): a later --resume need not send them again
                    with contextlib.suppress(Exception):
                        acked = getattr(writer, "acknowledged_rows", None)
                writer.abort()
                if acked:
                    resume_state.save(position + acked, written_before + written_by(acked),
                                      rejected_before + context.rejected + writer_context.rejected,
                                      note=getattr(writer, "resume_note", None))
                if whole is None:  # a closed writer's output is whole: said below
                    add_notice(exc, abort_notice_of(writer))
            add_warnings(exc, context.warnings)
            if ledger is not None:
                ledger.discard()  # its id spill would otherwise stay in the temp directory
            raise
        finally:
            if stream is not None:
                stream.close()  # stops the prefetch thread before the reader's files close
            if reader is not None:
                reader.close()
            sink.close()
        rejected = context.rejected + writer_context.rejected
        with _interrupts_held():
            # the rejects file of the output just put in place goes with it at once: an
            # earlier run's, left beside a run that rejected nothing, would read as its own
            settle_rejects(rejects_path, rejected_before + rejected if position else rejected,
                           appended=position > 0, manifest=manifest)
        duplicates = ledger.finish() if ledger is not None else None
        report = _report(src, dst, src_spec.name, dst_spec.name, manifest, started, written,
                         rejected, rejects_path, context.warnings)
        if position:
            report["resumed_from"] = position
            report["written_total"] = written_before + written
            # the load as a whole: the run resumed rejected records this one does not read
            # again (those it had read ahead of its saved position are left out, not counted)
            report["rejected_total"] = rejected_before + report["rejected"]
            if report["rejected_total"] and Path(rejects_path).is_file():
                report["rejects_file"] = str(rejects_path)
        if duplicates is not None:
            report["duplicate_ids"] = duplicates
            duplicate_warning(report)
        report.update(writer_report)
        # a read stopped by ``limit`` may not have counted the values it narrowed
        count_narrowed(report, read_whole=remaining is None or remaining > 0)
        if limit is None:
            # parts an earlier partitioned run of this output left for --resume: the output is
            # whole now (a --limit trial run leaves them, for the full run to resume)
            scaleout.remove_staging(dst)
        return report
    except BaseException as exc:
        if whole is not None:
            add_notice(exc, output_whole_notice(dst, *whole, rejects_path,
                                                STOPPED_BEFORE_REPORT))
        raise


def _check_arguments(*, batch_size: Any, limit: Any, overwrite: Any, resume: Any,
                     check_duplicates: Any, dry_run: Any, reader_options: Any,
                     writer_options: Any) -> None:
    """``UsageError`` naming the argument of ``convert`` that has the wrong type or value,
    what it was given and what it takes, before anything is opened.

    A flag must be a real bool: ``overwrite="no"`` is a true value, and overwrote. A count
    must be an int (not a bool, a float or a digit string), which otherwise failed deep
    inside with a bare ``TypeError``, or did something else (``batch_size=2.5``)."""
    for name, value in (("overwrite", overwrite), ("resume", resume),
                        ("check_duplicates", check_duplicates), ("dry_run", dry_run)):
        if not isinstance(value, bool):
            raise UsageError(f"{name} must be True or False, not {value!r}",
                             hint=f"pass {name}=True or {name}=False")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise UsageError(f"batch_size must be a positive integer, not {batch_size!r}",
                         hint=f"the default is {DEFAULT_BATCH_SIZE}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise UsageError(f"limit must be a non-negative integer or None, not {limit!r}",
                         hint="None (the default) converts every point")
    for name, value in (("reader_options", reader_options),
                        ("writer_options", writer_options)):
        if value is not None and not isinstance(value, dict):
            raise UsageError(f"{name} must be a dict of option names to values, or None, not "
                             f"{type(value).__name__}",
                             hint=f'e.g. {name}={{"id_kind": "mixed"}}'
                             if name == "reader_options" else
                             f'e.g. {name}={{"distance": "Cosine"}}')
        bad = [k for k in value or {} if not isinstance(k, str)]
        if bad:
            raise UsageError(f"{name} keys are option names (text), not {bad[0]!r}",
                             hint=f'e.g. {name}={{"distance": "Cosine"}}')


def _report(src: str, dst: str, src_fmt: str, dst_fmt: str, manifest: Any, started: float,
            written: int, rejected: int, rejects_path: str, warnings: list[str]
            ) -> dict[str, Any]:
    """The fields every run report has (``read == written + rejected``)."""
    seconds = time.perf_counter() - started
    return {
        "source": src,
        "destination": dst,
        "from": src_fmt,
        "to": dst_fmt,
        "read": written + rejected,
        "written": written,
        "rejected": rejected,
        "rejects_file": str(rejects_path) if rejected else None,
        "seconds": round(seconds, 3),
        "points_per_second": round(written / seconds, 1) if seconds > 0 else None,
        "id_kind": manifest.id_kind,
        "vectors": [{"name": v.name, "kind": v.kind, "size": v.size, "datatype": v.datatype,
                     "distance": v.distance} for v in manifest.vectors],
        "warnings": list(warnings),
    }


def duplicate_warning(report: dict[str, Any], order_lost: bool = False) -> None:
    """Add the warning about repeated ids to a report that counted them; ``order_lost``: a
    partitioned run into a collection could not send the last records again (too many ids
    repeated across partitions), so "last" is the last written, not the last read."""
    duplicates = report.get("duplicate_ids")
    if duplicates and duplicates["count"]:
        shown = ", ".join(repr(i) for i in duplicates["examples"])
        text = (f"{duplicates['count']} id(s) occur more than once ({shown}); every record was "
                "kept, but a Qdrant target keeps only the last point of each id")
        if order_lost:
            text += (" (here the last written: too many ids repeat across partitions to send "
                     "their last records again, so such an id may keep an earlier record; run "
                     "with --workers 1 to keep the last one in the source)")
        report["warnings"].append(text)
