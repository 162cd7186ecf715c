"""Partitioned conversions: a ``plan.Plan`` run on a local process pool or on Ray Data.

Every partition is read and written by one task into the staging directory next to the
output (``.<name>.vfparts/``); the driver makes the output from the parts, by strategy:

* ``parts``: a Parquet / JSONL directory target; each partition is a part file
  (``part-00007.parquet``), and ``_manifest.json`` lists them with the combined digest;
* ``concat``: a plain or gzip JSONL file; the parts are appended in order as they finish
  (gzip members concatenate into one valid stream);
* ``shared``: a Qdrant server; partitions upsert into the collection the driver prepared
  (ids are deterministic, so a retried partition writes the same points again), and the
  driver finishes it (payload indexes, bulk setting);
* ``assemble``: any other target (numpy, FAISS, one Parquet file, embedded Qdrant); partitions
  are staged as Arrow IPC files and streamed into one writer by the driver, in order, as they
  finish.

A part is written under a temporary name and renamed when complete; ``done/<part>.json``
then records its count and digest. A task killed midway leaves no part, so running it again
(a retry, or ``--resume`` of a later run, which skips parts already done) writes it once.
Rejected records go to ``rejects/<part>.{read,write}.jsonl`` and end in the run's rejects file
in partition order. The library never prints: progress goes to the caller's bar as parts end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vecferry.converters import get_format, open_reader
from vecferry.converters.base import (
    AtomicPath,
    Context,
    abort_notice_of,
    fsync_path,
    source_size,
)
from vecferry.errors import Location, TargetError, UsageError, add_notice, writing_to
from vecferry.mapping import merge_narrowed
from vecferry.parallel import (
    check_workers,
    lost_worker_hint,
    owned_pool,
    raise_if_script_reran,
    script_rerunnable,
    submit,
    worker_pool,
)
from vecferry.plan import Partition, Plan, read_partition
from vecferry.storage import MOVE_FINISHED, current_options, using
from vecferry.stream import manifest_of, rebatch, with_distance

#: attempts of a partition whose worker process died before giving up the run
MAX_ATTEMPTS = 3
ENGINES = ("local", "ray")
#: partitions per worker a run aims at when the source is small (for an even finish)
BALANCE = 4
MIN_PARTITION_BYTES = 8 << 20
#: partitions a run takes at most (see ``_check_partition_count``)
MAX_PARTITIONS = 100_000


def default_workers() -> int:
    """Processes for a partitioned run: the cores there are (env ``VECFERRY_WORKERS``); 1
    when worker processes cannot start (``parallel.script_rerunnable``)."""
    if not script_rerunnable():
        return 1
    env = os.environ.get("VECFERRY_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, os.cpu_count() or 1)


def strategy_for(dst: str, dst_fmt: str) -> str | None:
    """How a partitioned run writes ``dst`` (see the module docstring); None: it cannot."""
    from vecferry import storage

    if storage.is_remote(dst):
        return None  # object stores have no rename for parts; one process streams there
    directory = dst.endswith("/") or Path(dst).is_dir()
    if dst_fmt in ("parquet", "jsonl") and directory:
        return "parts"
    if dst_fmt == "jsonl" and dst.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        return "concat"
    if dst_fmt == "qdrant" and dst.split("://", 1)[0] in ("qdrant", "qdrants"):
        return "shared"
    return "assemble"


@dataclass(frozen=True)
class Job:
    """What every task of a run needs; picklable, sent to each worker."""

    src: str
    src_fmt: str
    reader_options: dict[str, Any]
    dst: str
    dst_fmt: str
    writer_options: dict[str, Any]
    schema: pa.Schema
    strategy: str
    staging: str
    batch_size: int
    on_error: str
    check_duplicates: bool
    ext: str = field(default="")
    #: tells one run's tasks from another's (see ``_reader``)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: the caller's ``storage_options`` (an S3 endpoint), which a worker process does not
    #: inherit: without them its reader of a remote source went to the provider's default
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: the source reader's ``whole_read_check`` (a JSONL source whose manifest records its
    #: count): the driver calls it with the records all partitions read, before the output is
    #: made, as a whole read makes it after its last line
    whole_read_check: Callable[[int], None] | None = None

    @property
    def root(self) -> Path:
        return Path(self.staging)

    def part_name(self, index: int, first: int = 0) -> str:
        suffix = f"-{first:010d}" if first else ""
        return f"part-{index:05d}{suffix}{self.ext}"


def part_extension(strategy: str, dst: str, dst_fmt: str, writer_options: dict[str, Any]
                   ) -> str:
    if strategy == "assemble":
        return ".arrow"
    if dst_fmt == "parquet":
        return ".parquet"
    if strategy == "concat":
        return ".jsonl.gz" if dst.endswith(".gz") else ".jsonl"
    compression = writer_options.get("part_compression")
    return {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}.get(compression or "", ".jsonl")


def choose(reader: Any, *, src: str, src_fmt: str, reader_options: dict[str, Any], dst: str,
           dst_fmt: str, writer_options: dict[str, Any], workers: int | None, engine: str,
           partition_size: int | str | None, limit: int | None, batch_size: int,
           on_error: str, check_duplicates: bool, state: str | None = None
           ) -> tuple[Plan, Job, int] | None:
    """The plan, job and process count of a partitioned run, or None for a single-process run.

    A run is partitioned when more than one process is asked for (``workers``, default all
    cores), the source cuts into more than one partition and the target takes parts; a target
    assembled by the driver (numpy, FAISS, one Parquet file, embedded Qdrant) only when
    ``workers`` is given. ``engine="ray"`` always runs the plan on Ray. A run given a resume
    ``state`` file (``--state``, which a partitioned run does not keep) runs in one process.
    """
    from vecferry.converters.parts import parse_part_size
    from vecferry.plan import PARTITION_BYTES, make_plan

    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", hint=f"one of {', '.join(ENGINES)}")
    ray = engine == "ray"
    if limit is not None:
        if ray:
            raise UsageError("--limit takes the first points in order, which a partitioned "
                             "run has not", hint="drop --limit or --engine ray")
        return None
    if state is not None:
        if ray:
            raise UsageError("--state names the resume state of a single-process run; a "
                             "partitioned run keeps its own next to the output",
                             hint="drop --state (--resume still works) or --engine ray")
        return None
    if not ray:  # Ray's workers do not run the calling script again
        check_workers(workers)
    n = workers or default_workers()
    if n <= 1 and not ray:
        return None
    strategy = strategy_for(dst, dst_fmt)
    if strategy is None:
        if ray:
            raise UsageError("--engine ray writes parts next to the output, which an object "
                             "store location cannot hold", location=Location(dst),
                             hint="write to a local or shared file system, then copy")
        return None
    if strategy == "assemble" and workers is None and not ray:
        return None
    flag = "--partition-size" if partition_size is not None else "--max-part-size"
    target = parse_part_size(partition_size, "--partition-size")
    if target is None:
        # Each partition's part is cut into files of --max-part-size (output bytes), its last
        # one smaller: a partition of at least that much source keeps those few, and below
        # the default size the default (balanced) plan does.
        largest = parse_part_size(writer_options.get("max_part_size"))
        if largest is not None and largest > PARTITION_BYTES:
            target = largest
    if target is not None:
        _check_partition_count(src, target, flag, source_bytes(src))
    plan = make_plan(reader, src, src_fmt, reader_options, target or PARTITION_BYTES)
    if target is not None:
        # a source whose size was not known beforehand (a bucket, a collection)
        _check_partition_count(src, target, flag, None, len(plan.partitions))
    sizes = [p.bytes for p in plan.partitions]
    if target is None and None not in sizes and len(sizes) < BALANCE * n:
        # A source of a few partitions would leave workers idle while the last ones run:
        # smaller partitions (not below MIN_PARTITION_BYTES) keep every worker busy.
        smaller = max(MIN_PARTITION_BYTES, sum(sizes) // (BALANCE * n))  # type: ignore[arg-type]
        if smaller < PARTITION_BYTES:
            plan = make_plan(reader, src, src_fmt, reader_options, smaller)
    if len(plan.partitions) < 2 and not ray:
        return None
    from vecferry.pipeline import source_state

    plan.source_state = source_state(src, reader, reader_options)
    # what the driver's reader decided (``worker_options``) the workers' readers take as given
    opened_with = {**reader_options, **getattr(reader, "worker_options", dict)()}
    whole_read_check = getattr(reader, "whole_read_check", None)
    job = Job(src=src, src_fmt=src_fmt, reader_options=opened_with, dst=dst,
              dst_fmt=dst_fmt, writer_options=dict(writer_options),
              # the driver writes the output's manifest from this schema
              schema=with_distance(plan.schema, writer_options.get("distance")),
              strategy=strategy, staging=str(staging_dir(dst)), batch_size=batch_size,
              on_error=on_error, check_duplicates=check_duplicates,
              ext=part_extension(strategy, dst, dst_fmt, writer_options),
              storage_options=current_options(),
              whole_read_check=whole_read_check() if whole_read_check is not None else None)
    return plan, job, n


def source_bytes(src: str) -> int | None:
    """The bytes of a local source file or directory (its files'), None when not local or
    not readable (the reader then says why)."""
    try:
        return source_size(src)
    except OSError:
        return None


def _check_partition_count(src: str, target: int, flag: str, nbytes: int | None,
                           partitions: int | None = None) -> None:
    """``UsageError`` when a partition size of ``target`` bytes cuts ``src`` (``nbytes``
    long, or planned into ``partitions``) into more than ``MAX_PARTITIONS`` partitions.

    Each partition costs the driver a task, a record in ``plan.json`` and files in the staging
    directory: ``--partition-size 1`` (one byte, where 1 MB was likely meant) cut an 8 MB
    source into 8 million partitions, gigabytes of memory, a plan of 682 MB, and a run that
    took no SIGTERM. The check is made before planning where the source's size is known."""
    from vecferry.sizing import human

    n = partitions if partitions is not None else (
        None if nbytes is None else -(-nbytes // target))
    if n is None or n <= MAX_PARTITIONS:
        return
    smallest = -(-(nbytes if nbytes is not None else target * n) // MAX_PARTITIONS)
    raise UsageError(
        f"{flag} {target} cuts the source into {n:,} partitions, more than the "
        f"{MAX_PARTITIONS:,} a run takes: the smallest size for this source is "
        f"{human(smallest)} ({smallest} bytes)", location=Location(src),
        hint="a size is in bytes unless it has a unit: e.g. 64MB")


# -- tasks (run in worker processes) --------------------------------------------------------

#: the reader a worker process opened for its last partition, kept for its next one of the
#: same run: opening can cost more than a partition (a FAISS index and its payloads, a
#: sidecar's row count), and every partition of a run reads the same source
_open_reader: dict[str, Any] = {}


def _reader(job: Job, context: Context) -> Any:
    """An open reader of the job's source, rejecting through ``context``."""
    cached = _open_reader.get(job.run_id)
    if cached is not None:
        cached.context = context
        return cached
    for old in _open_reader.values():
        with contextlib.suppress(Exception):
            old.close()  # an earlier run's, in a long-lived (Ray) worker
    _open_reader.clear()
    opts = dict(job.reader_options)
    if job.src_fmt == "jsonl":
        opts["workers"] = 1  # the run's processes are the partitions
    reader = open_reader(job.src, format=job.src_fmt, context=context, **opts)
    _open_reader[job.run_id] = reader
    return reader


def _drop_reader(job: Job) -> None:
    """Close the cached reader after a failure: the next attempt starts from a fresh one."""
    reader = _open_reader.pop(job.run_id, None)
    if reader is not None:
        with contextlib.suppress(Exception):
            reader.close()


def _rejects(job: Job, name: str, side: str) -> Any:
    from vecferry.pipeline import RejectsFile

    path = job.root / "rejects" / f"{name}.{side}.jsonl"
    path.unlink(missing_ok=True)  # a retried task starts its rejects over
    return RejectsFile(path)


def partition_batches(job: Job, partition: Partition, name: str,
                      warnings: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The batches of one partition, its reader's rejects in ``rejects/<name>.read.jsonl``.

    The reader's warnings go to ``warnings`` (shared with the part's writer), or, when the
    reading runs apart from the writing (Ray), to ``warnings/<name>.json`` for the driver.
    """
    sink = _rejects(job, name, "read")
    own = warnings if warnings is not None else []
    try:
        with using(job.storage_options or None):
            reader = _reader(job, Context(job.on_error, sink, own))
            yield from rebatch(read_partition(reader, partition, job.batch_size),
                               job.batch_size)
    except BaseException:
        _drop_reader(job)
        raise
    finally:
        sink.close()
    if warnings is None and own:
        (job.root / "warnings" / f"{name}.json").write_bytes(orjson.dumps(own))


class _IpcPart:
    """An Arrow IPC file staged for assembly (uncompressed: written and read at disk speed)."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.temp = path.with_name(f".{path.name}.tmp")
        self._sink = pa.OSFile(str(self.temp), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)
        self.count = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.count += batch.num_rows

    def close(self) -> dict[str, Any]:
        self._writer.close()
        self._sink.close()
        os.replace(self.temp, self.path)
        return {}

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
            self._sink.close()
        self.temp.unlink(missing_ok=True)


def _part_writer(job: Job, name: str, context: Context) -> Any:
    if job.strategy == "assemble":
        return _IpcPart(job.root / "out" / name, job.schema)
    cls = get_format(job.dst_fmt).load("writer")
    opts = {k: v for k, v in job.writer_options.items()
            if k not in ("max_part_size", "part_compression")}
    if _splits(job):
        # the partition's part is a directory of files of at most --max-part-size (output
        # bytes), numbered across the partitions when the output is made (``_Parts``)
        opts["max_part_size"] = job.writer_options["max_part_size"]
        if job.writer_options.get("part_compression") is not None:
            opts["part_compression"] = job.writer_options["part_compression"]
        if job.dst_fmt == "jsonl":
            opts["workers"] = 1
        return cls(f"{job.root / 'out' / name}/", job.schema, context=context,
                   overwrite=True, **opts)
    if job.dst_fmt == "jsonl":
        opts["workers"] = 1
        if job.strategy == "concat":
            opts["durable"] = False  # copied into the output, which is synced once
    if job.strategy == "shared":
        # the driver created (or checked) the collection and owns bulk mode and indexes
        opts.update(mode="append", bulk=False)
        opts.pop("collection_config", None)
        return cls(job.dst, job.schema, context=context, **opts)
    return cls(str(job.root / "out" / name), job.schema, context=context, overwrite=True, **opts)


def _splits(job: Job) -> bool:
    """Whether each part of a ``parts`` run is a directory of files cut at
    ``--max-part-size``."""
    return job.strategy == "parts" and job.writer_options.get("max_part_size") is not None


def write_part(job: Job, name: str, batches: Iterable[pa.RecordBatch],
               warnings: list[str] | None = None) -> dict[str, Any]:
    """Write ``batches`` as part ``name`` and record it in ``done/<name>.json``."""
    from vecferry.ledger import IdLedger

    sink = _rejects(job, name, "write")
    context = Context(job.on_error, sink, warnings)
    ledger = (IdLedger(manifest_of(job.schema).id_kind, path=str(job.root / "ids" / name))
              if job.check_duplicates else None)
    # The part, its id spill and its record live next to the output, on the output's disk:
    # a full disk there is reported as the output's (reading errors are the reader's own).
    with writing_to(job.dst):
        writer = _part_writer(job, name, context)
    rows = 0
    try:
        for batch in batches:
            with writing_to(job.dst):
                writer.write_batch(batch)
                if ledger is not None:
                    ledger.add(batch.column("id"))
            rows += batch.num_rows
        with writing_to(job.dst):
            report = writer.close() or {}
    except BaseException:
        writer.abort()
        raise
    finally:
        sink.close()
    digest = getattr(writer, "digest", None)
    result = {"name": name, "rows": rows, "written": rows - context.rejected,
              "total": digest.total if digest is not None else None,
              "bytes": report.get("bytes_written"), "warnings": context.warnings}
    if _splits(job):
        # the files of the part's directory: name, count, digest and bytes of each
        result["files"] = list(writer.log.parts)
    done = job.root / "done" / f"{name}.json"
    tmp = done.with_name(f".{done.name}.tmp")
    with writing_to(job.dst):
        if ledger is not None:
            ledger.seal()
        tmp.write_bytes(orjson.dumps(result))
        os.replace(tmp, done)
    return result


def run_partition(job: Job, partition: Partition) -> dict[str, Any]:
    """One task of the local pool: read a partition and write it as one part."""
    name = job.part_name(partition.index)
    warnings: list[str] = []
    return write_part(job, name, partition_batches(job, partition, name, warnings), warnings)


# -- driver ---------------------------------------------------------------------------------

def staging_dir(dst: str) -> Path:
    """Where a partitioned run of ``dst`` keeps its parts and state (next to a file target,
    in the working directory for a URI)."""
    from vecferry.pipeline import _beside

    base = Path(_beside(dst, ".vfparts"))
    return base.with_name("." + base.name)


class DoneRecords:
    """The ``done/<part>.json`` records of a run, as ``{part name: record}``. Each ``poll``
    reads only the records that appeared since the last one: the watchers poll a few times a
    second, and a run of thousands of partitions must not re-read them all each time."""

    def __init__(self, job: Job):
        self.directory = job.root / "done"
        self.records: dict[str, dict[str, Any]] = {}

    def poll(self) -> dict[str, dict[str, Any]]:
        for entry in os.scandir(self.directory):
            name = entry.name.removesuffix(".json")
            if entry.name.endswith(".json") and not entry.name.startswith(".") \
                    and name not in self.records:
                self.records[name] = orjson.loads(Path(entry.path).read_bytes())
        return self.records


def _done(job: Job) -> dict[str, dict[str, Any]]:
    return DoneRecords(job).poll()


def _stamp(job: Job, plan: Plan) -> dict[str, Any]:
    """What a staging directory was made for, which a resumed run must match: the source as
    read (its reader options, bar those that change how it is read and not what, such as
    ``workers`` or ``timeout``: a resume may change them), the target, its format and how it
    is written."""
    from vecferry.pipeline import RUN_ONLY_OPTIONS

    reading = {k: v for k, v in plan.reader_options.items() if k not in RUN_ONLY_OPTIONS}
    return {"source": replace(plan, reader_options=reading).identity(), "dst": job.dst,
            "to": job.dst_fmt, "strategy": job.strategy}


def _prepare_staging(job: Job, plan: Plan, resume: bool) -> tuple[int, str | None]:
    """A fresh staging directory, or (``resume``) the one an earlier run of the same source,
    options and target left, whose plan then replaces ``plan``'s partitions (a Qdrant plan
    samples its boundaries, so planning again could cut elsewhere); returns the parts done,
    and a warning when the source has changed since that run (which then starts over)."""
    root = job.root
    marker = root / "plan.json"
    from vecferry.pipeline import changed_options_error, options_changed, output_options

    options = output_options(job.reader_options, job.writer_options)
    stamp = _stamp(job, plan)
    warning = None
    if resume and marker.exists():
        saved = orjson.loads(marker.read_bytes())
        # parts written with other options (--distance, --id-field, a mapping) would make
        # an output half one, half the other; a marker from before options were kept has none
        changed = options_changed(saved.get("options") or options, options)
        if changed:
            raise changed_options_error(changed, str(root))
        before = (saved.get("stamp") or {}).get("to", job.dst_fmt)
        if before != job.dst_fmt:
            # its parts are of the other format: the output would hold both kinds
            raise UsageError(f"the run this would resume wrote {before}, and this one writes "
                             f"{job.dst_fmt}", location=Location(str(root)),
                             hint=f"resume with --to {before}, or run without --resume to "
                                  "start over")
        # a marker written before the stamp left out run-only options and named the format
        legacy = {"source": plan.identity(), "dst": job.dst, "strategy": job.strategy}
        if saved.get("stamp") not in (stamp, legacy):
            raise UsageError("the partial output of an earlier run was made from another "
                             "source, options or target", location=Location(str(root)),
                             hint="run without --resume to start over, or with the same options")
        if saved.get("source_state", plan.source_state) == plan.source_state:
            plan.partitions = [Partition(p["index"], p["spec"], p["rows"], p["bytes"])
                               for p in saved["partitions"]]
            return len(_done(job)), None
        # a source regenerated under the same name: its old parts are not this source's
        warning = (f"{plan.src} has changed since the run whose parts are kept in {root}: "
                   "this run started from the beginning")
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("out", "done", "rejects", "ids", "warnings"):
        (root / sub).mkdir(parents=True)
    marker.write_bytes(orjson.dumps({"stamp": stamp, "options": options,
                                     "source_state": plan.source_state,
                                     "partitions": [
        {"index": p.index, "spec": p.spec, "rows": p.rows, "bytes": p.bytes}
        for p in plan.partitions]}))
    return 0, warning


class _ProgressWatch:
    """Moves the caller's bar as parts are recorded done (by any process, any engine)."""

    def __init__(self, job: Job, progress: Any, seen: set[str]):
        self.done, self.progress, self.seen = DoneRecords(job), progress, set(seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vecferry-progress", daemon=True)
        if progress is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()

    def poll(self) -> None:
        for name, result in self.done.poll().items():
            if name not in self.seen:
                self.seen.add(name)
                self.progress.update(result["rows"])

    def close(self) -> None:
        if self.progress is not None:
            self._stop.set()
            self._thread.join()
            self.poll()
            self.progress.refresh()


def _tracked(task: Callable[[Job, Partition], Any], job: Job, partition: Partition) -> Any:
    """Run ``task`` in a pool worker, leaving ``running/<index>.<pid>`` first: when a worker
    dies, the pool fails every pending task alike, and this tells the run which ones had
    started, and in which process (``run_local``)."""
    (job.root / "running" / f"{partition.index}.{os.getpid()}").touch()
    return task(job, partition)


def _started(job: Job) -> dict[int, set[int]]:
    """``{partition index: pids of the workers that started it}`` from ``running/``."""
    started: dict[int, set[int]] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(job.root / "running"):
            index, _, pid = entry.name.partition(".")
            if index.isdigit() and pid.isdigit():
                started.setdefault(int(index), set()).add(int(pid))
    return started


def _dead_pids(processes: dict[int, Any]) -> set[int]:
    """The pool's worker processes that ended by themselves: the pool ends the others of a
    broken pool with SIGTERM (CPython), so those did not cause the loss."""
    import signal

    dead = set()
    for pid, process in processes.items():
        code = getattr(process, "exitcode", None)
        if code is not None and code != -signal.SIGTERM:
            dead.add(pid)
    return dead


def run_local(job: Job, partitions: list[Partition], workers: int,
              task: Callable[[Job, Partition], Any] = run_partition) -> int:
    """Run ``task`` (a module-level function, sent by name) for ``partitions`` on ``workers``
    processes; a partition whose process died is run again, up to ``MAX_ATTEMPTS`` times in
    all (then ``TargetError``). Returns how many partitions were run again after they had
    started in a pool that lost a worker.

    A dead worker breaks the whole pool, which fails every task not finished, running or only
    queued: an attempt counts against the partitions that were running in the process that
    died (the others are run again at no cost, and those queued only run for the first time).
    When that process cannot be told (it died before noting its partition), every partition
    that had started counts, and when none had, every one lost: a worker that cannot even
    start still ends the run."""
    attempts = dict.fromkeys((p.index for p in partitions), 0)
    todo = list(partitions)
    retried = 0
    running = job.root / "running"
    while todo:
        shutil.rmtree(running, ignore_errors=True)
        running.mkdir(parents=True, exist_ok=True)
        lost: list[Partition] = []
        processes: dict[int, Any] = {}
        # interrupted, the workers are killed, not waited for: the parts done stay for --resume
        with owned_pool(worker_pool(min(workers, len(todo)), ["vecferry.scaleout"])) as pool:
            futures = {}
            for p in todo:
                try:
                    futures[submit(pool, _tracked, task, job, p)] = p
                except BrokenProcessPool:  # a process died already: the pool takes no more
                    lost.append(p)
                processes.update(getattr(pool, "_processes", None) or {})
            for fut in as_completed(futures):
                try:
                    fut.result()
                except BrokenProcessPool:
                    lost.append(futures[fut])
        if lost:
            raise_if_script_reran()  # each new worker would run the script's call again
        started = _started(job)
        dead = _dead_pids(processes)
        charged = [p for p in lost if started.get(p.index, set()) & dead]
        if lost and not charged:
            charged = [p for p in lost if p.index in started] or list(lost)
        for p in charged:
            attempts[p.index] += 1
            if attempts[p.index] >= MAX_ATTEMPTS:
                raise TargetError(f"partition {p.index} ({p.spec}) was lost with its worker "
                                  f"process {attempts[p.index]} times",
                                  location=Location(job.src),
                                  hint=lost_worker_hint(
                                      "check memory limits (a killed process is often out of "
                                      "memory); run again with --resume to keep the parts done"))
        retried += sum(1 for p in lost if p.index in started)
        todo = sorted(lost, key=lambda p: p.index)
    shutil.rmtree(running, ignore_errors=True)
    return retried


def _read_rejects(job: Job) -> int:
    """The records the partitions' readers rejected (``rejects/<part>.read.jsonl``, one line
    each): with the rows they handed on, the records they read."""
    count = 0
    for f in (job.root / "rejects").glob("*.read.jsonl"):
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                count += block.count(b"\n")
    return count


#: the key of the driver's own rejects in ``_concat_rejects``'s counts
_DRIVER = "~driver"


def _stem(name: str) -> str:
    """A part's name without its extension (``part-00007``), as its rejects files start."""
    return name.split(".")[0]


def _concat_rejects(job: Job, path: str) -> dict[str, int]:
    """Write the run's rejects to ``path``, replacing what is there: part by part, each part's
    reader's rejects before its writer's, the driver's last. Returns the lines by part stem
    (``_DRIVER`` for the driver's); nothing is written, and ``path`` is left, when none."""
    files = sorted((job.root / "rejects").glob("*.jsonl"),
                   key=lambda f: (_stem(f.name), f.name.endswith(".write.jsonl")))
    counts: dict[str, int] = {}
    out = None
    try:
        for f in files:
            data = f.read_bytes()
            if not data:
                continue
            if out is None:
                out = open(path, "wb")  # noqa: SIM115
            out.write(data)
            counts[_stem(f.name)] = counts.get(_stem(f.name), 0) + data.count(b"\n")
    finally:
        if out is not None:
            out.close()
    return counts


class _InOrder:
    """Hands finished parts to a consumer in partition order while later ones still run, so
    the output is assembled (and reaches the disk) during the run, not after it.

    ``consume`` runs in a thread of its own; its first error stops it and is raised by
    ``finish``, which also hands over what is left (in name order: Ray may split a partition
    into parts named by their first row).
    """

    def __init__(self, job: Job, partitions: list[Partition], consumer: Any):
        self.done = DoneRecords(job)
        self.names = [job.part_name(p.index) for p in sorted(partitions, key=lambda p: p.index)]
        self.consumer = consumer
        self.pos = 0
        self.taken: set[str] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vecferry-assemble",
                                        daemon=True)
        self._thread.start()

    def _take(self, part: dict[str, Any]) -> None:
        self.consumer.consume(part)
        self.taken.add(part["name"])

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.2):
                done = self.done.poll()
                while self.pos < len(self.names) and self.names[self.pos] in done:
                    self._take(done[self.names[self.pos]])
                    self.pos += 1
        except BaseException as exc:  # raised by finish(), in the driver's thread
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def finish(self) -> None:
        self.stop()
        if self.error is not None:
            raise self.error
        done = self.done.poll()
        for name in sorted(done):
            if name not in self.taken:
                self._take(done[name])


class _Concatenated:
    """The JSONL file of a ``concat`` run, grown part by part in the staging directory.

    Each part is copied in the kernel (``copy_file_range``) and deleted; ``concat.json``
    records the parts appended and the size, so ``--resume`` cuts the file back to the last
    whole part and carries on. Early writeback (``Writeback``) keeps the final fsync short.
    """

    def __init__(self, job: Job, resume: bool):
        from vecferry.converters.base import Writeback

        self.job = job
        self.path = job.root / "concat.out"
        self.state = job.root / "concat.json"
        saved = orjson.loads(self.state.read_bytes()) if resume and self.state.exists() else {}
        self.appended: list[str] = saved.get("parts", [])
        self.size = int(saved.get("bytes", 0))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self.fd, self.size)
        self.writeback = Writeback(self.fd)

    def consume(self, part: dict[str, Any]) -> None:
        if part["name"] in self.appended:
            return
        src = self.job.root / "out" / part["name"]
        with open(src, "rb") as fh:
            left = os.fstat(fh.fileno()).st_size
            offset = 0
            while left > 0:
                try:
                    n = os.copy_file_range(fh.fileno(), self.fd, left, offset, self.size)
                except OSError:
                    n = 0  # another file system, an old kernel: copy through user space
                if n == 0:
                    data = os.pread(fh.fileno(), min(left, 8 << 20), offset)
                    n = os.pwrite(self.fd, data, self.size)
                offset += n
                self.size += n
                left -= n
                self.writeback.wrote(n)
        self.appended.append(part["name"])
        tmp = self.state.with_name(".concat.json.tmp")
        tmp.write_bytes(orjson.dumps({"parts": self.appended, "bytes": self.size}))
        os.replace(tmp, self.state)
        src.unlink()  # its pages need never reach the disk

    def commit(self, done: list[dict[str, Any]], overwrite: bool) -> dict[str, Any]:
        from vecferry.converters.jsonl import manifest_path
        from vecferry.converters.parts import PartLog

        self.writeback.close()
        os.fsync(self.fd)
        os.close(self.fd)
        log = PartLog()
        for part in done:
            log.add(part["name"], part["written"], part["total"] or 0, part["bytes"] or 0)
        manifest = manifest_of(self.job.schema)
        manifest.count = log.count
        manifest.digest = log.digest()
        self.out = target = AtomicPath(self.job.dst, overwrite=overwrite)
        self.side = side = AtomicPath(manifest_path(self.job.dst), overwrite=True)
        Path(side.temp).write_bytes(manifest.to_json())
        from vecferry.parallel import _interrupts_held

        # the file and its manifest go into place together, or neither
        with _interrupts_held():
            os.replace(self.path, target.temp)
            target.commit()
            side.commit()
        return {"bytes_written": self.size, "manifest": str(manifest_path(self.job.dst))}

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)  # the file stays in the staging directory for --resume


class _Assembled:
    """The single output of an ``assemble`` run (numpy, FAISS, one Parquet file, embedded
    Qdrant), written by one writer from the staged Arrow IPC parts, in order."""

    def __init__(self, job: Job, overwrite: bool, context: Context):
        cls = get_format(job.dst_fmt).load("writer")
        self.job = job
        self.writer = cls(job.dst, job.schema, context=context, overwrite=overwrite,
                          **job.writer_options)

    def consume(self, part: dict[str, Any]) -> None:
        with pa.memory_map(str(self.job.root / "out" / part["name"])) as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                self.writer.write_batch(reader.get_batch(i))

    def commit(self, done: list[dict[str, Any]], overwrite: bool) -> dict[str, Any]:
        return self.writer.close() or {}

    def abort(self) -> None:
        self.writer.abort()

    @property
    def abort_notice(self) -> str | None:
        return abort_notice_of(self.writer)


class _Parts:
    """The output of a ``parts`` run: the part files and ``_manifest.json``, renamed into
    place as one directory once every part is done."""

    def __init__(self, job: Job):
        self.job = job
        self.out: AtomicPath | None = None

    def commit(self, done: list[dict[str, Any]], overwrite: bool) -> dict[str, Any]:
        from vecferry.converters.parts import DIR_MANIFEST, PartLog

        job = self.job
        out = job.root / "out"
        log = PartLog()
        for f in out.iterdir():
            if f.name.startswith(".") or f.name.endswith(".manifest.json"):
                # debris of killed attempts, per-part sidecars
                if f.is_dir() and not f.is_symlink():
                    shutil.rmtree(f)
                else:
                    f.unlink()
        if _splits(job):
            # each part is a directory of files: linked into one directory, numbered in
            # order (the parts stay as they are, for a run that stops before the output is
            # made and is resumed)
            made = job.root / "made"
            shutil.rmtree(made, ignore_errors=True)
            made.mkdir()
            for part in done:
                if "files" not in part:
                    # a part file of a run before parts were cut (resumed): as it is
                    name = f"part-{len(log.parts):05d}{job.ext}"
                    os.link(out / part["name"], made / name)
                    log.add(name, part["written"], part["total"] or 0, part["bytes"] or 0)
                    continue
                for f in part["files"]:
                    name = f"part-{len(log.parts):05d}{job.ext}"
                    os.link(out / part["name"] / f["name"], made / name)
                    log.add(name, f["count"], int(f["digest"], 16), f["bytes"])
            out = made
        else:
            for part in done:
                log.add(part["name"], part["written"], part["total"] or 0, part["bytes"] or 0)
        (out / DIR_MANIFEST).write_bytes(log.manifest_json(manifest_of(job.schema)))
        fsync_path(out / DIR_MANIFEST)
        self.out = AtomicPath(job.dst.rstrip("/"), overwrite=overwrite, directory=True)
        from vecferry.parallel import _interrupts_held

        # an interrupt between these would leave the parts in a temporary no run resumes
        with _interrupts_held():
            self.out.temp.rmdir()
            os.replace(out, self.out.temp)
            self.out.commit()
        return {"bytes_written": log.bytes, "parts": len(log.parts),
                "manifest": str(self.out.target / DIR_MANIFEST)}

    def abort(self) -> None:
        pass  # the parts stay in the staging directory, for --resume


class StagingLock:
    """An exclusive ``flock`` on ``<staging>.lock`` beside a run's staging directory, held
    while the run uses it: two runs to one output would share (and mix, or delete) one
    another's parts. ``UsageError`` when a live run holds it; the kernel drops the lock of a
    killed run. Where the file system keeps no locks, the run goes unlocked."""

    def __init__(self, root: Path, dst: str):
        from vecferry.converters.base import _same_file

        self.path = root.with_name(root.name + ".lock")
        self.fd: int | None = None
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                return  # no such directory: the output's own check says so
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(
                    "another run is writing this output (its parts are in "
                    f"{root})", location=Location(dst),
                    hint="wait for it to finish, or write to another place") from None
            except OSError:
                os.close(fd)
                return
            if _same_file(fd, self.path):
                self.fd = fd
                return
            os.close(fd)  # the run that held it removed it as it ended: take a fresh one

    @classmethod
    def try_take(cls, root: Path, dst: str) -> StagingLock | None:
        """The lock, or None when a live run holds it."""
        try:
            return cls(root, dst)
        except UsageError:
            return None

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # under the lock, so no run takes the file being removed
        os.close(self.fd)
        self.fd = None


#: ids repeated across parts whose last records a run sends again (see ``_resend_last_records``)
RESEND_LIMIT = 1_000_000


def _resend_last_records(job: Job, plan: Plan, done: list[dict[str, Any]], target: Any
                         ) -> int | None:
    """Send again, in order, the records of ids repeated across parts from the part that
    holds them last; the number of ids, or None when more than ``RESEND_LIMIT`` are repeated.

    Parts land in a shared collection in no set order, and a collection keeps the record an id
    was given last: without this, an id in two parts could keep its earlier record, where a
    single-process run keeps the source's last. Each part holding a last record is read again
    (its partition), keeping the rows of those ids; what its reader or the target refuses
    now was counted (or failed the run) when the part was written, so it is not counted again.
    """
    from vecferry.ledger import last_holders

    holders = last_holders([job.root / "ids" / p["name"] for p in done], RESEND_LIMIT)
    if not holders:
        return None if holders is None else 0
    by_index = {p.index: p for p in plan.partitions}
    quiet = Context("skip", lambda error: False)
    reader = _reader(job, quiet)
    own_context = target.context
    target.context = quiet
    try:
        for i in sorted(holders):
            # "part-00012.jsonl" or, split by Ray, "part-00012-0000004096.jsonl": the index
            partition = by_index[int(re.match(r"part-(\d+)", done[i]["name"]).group(1))]
            wanted = holders[i]
            for batch in read_partition(reader, partition, job.batch_size):
                keep = batch.filter(pc.is_in(batch.column("id"), value_set=wanted))
                if keep.num_rows:
                    target.write_batch(keep)
    finally:
        target.context = own_context
        _drop_reader(job)
    return sum(len(ids) for ids in holders.values())


def remove_staging(dst: str) -> None:
    """Remove the parts an earlier partitioned run of ``dst`` left, unless a live run is
    using them."""
    root = staging_dir(dst)
    if not root.exists():
        return
    lock = StagingLock.try_take(root, dst)
    if lock is None:
        return
    try:
        shutil.rmtree(root, ignore_errors=True)
    finally:
        lock.release()


def convert_partitioned(plan: Plan, job: Job, *, workers: int, engine: str = "local",
                        ray_address: str | None = None, overwrite: bool = False,
                        resume: bool = False, rejects_path: str, progress: Any = None
                        ) -> dict[str, Any]:
    """Run ``plan`` into ``job.dst``; the report's writer and count fields (see
    ``pipeline.convert``). Leaves the staging directory for ``--resume`` when it fails after
    some part was done; a run that did none removes it. ``UsageError`` when another live run
    is writing the same output (``StagingLock``)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", hint=f"one of {', '.join(ENGINES)}")
    lock = StagingLock(job.root, job.dst)
    existed = job.root.exists()  # an earlier run's parts, refused or not, are not ours to drop
    try:
        return _convert_partitioned(plan, job, workers=workers, engine=engine,
                                    ray_address=ray_address, overwrite=overwrite,
                                    resume=resume, rejects_path=rejects_path,
                                    progress=progress)
    except BaseException:
        if not existed and not any((job.root / "done").glob("*.json")):
            shutil.rmtree(job.root, ignore_errors=True)  # nothing there to resume
        raise
    finally:
        lock.release()


def _convert_partitioned(plan: Plan, job: Job, *, workers: int, engine: str,
                         ray_address: str | None, overwrite: bool, resume: bool,
                         rejects_path: str, progress: Any) -> dict[str, Any]:
    root = job.root
    if job.strategy != "shared" and "://" not in job.dst:
        # refuse an existing output or a missing directory before any work, as a
        # single-process run does (an embedded collection's writer checks its own)
        AtomicPath(job.dst.rstrip("/"), overwrite=overwrite, directory=True).abort()
    from vecferry.pipeline import RejectsFile

    with writing_to(job.dst):
        resumed, changed = _prepare_staging(job, plan, resume)
    if changed:
        resume = False  # nothing of the earlier run is kept: a target starts over too
    # The driver's own rejects (the assembling or preparing writer's) go with the parts',
    # after them. An assembled target is written again from all its parts, so its writer
    # rejects again every record it rejected before the run was interrupted: its file starts
    # over, or the records it held already were left out of the count (and the written count
    # was that much too high). A shared collection keeps what it took: it adds to its file.
    late_path = root / "rejects" / "~driver.write.jsonl"
    rebuilt = job.strategy == "assemble"
    if rebuilt:
        late_path.unlink(missing_ok=True)
    late = RejectsFile(late_path, append=not rebuilt)
    context = Context(job.on_error, late)
    target: Any = None
    if job.strategy == "shared":
        cls = get_format(job.dst_fmt).load("writer")
        # what the writer of the run being resumed asked to be told (a --bulk load's m)
        note_file = root / "writer-note.json"
        note = orjson.loads(note_file.read_bytes()) if resume and note_file.exists() else None
        # creates or checks the collection (mode, config diff, bulk) before any partition
        target = cls(job.dst, job.schema, context=context, overwrite=overwrite,
                     resuming=resume, **job.writer_options,
                     **({"resume_note": note} if note else {}))
        target.ready()
        if getattr(target, "resume_note", None):
            note_file.write_bytes(orjson.dumps(target.resume_note))
    elif job.strategy == "concat":
        target = _Concatenated(job, resume)
    elif job.strategy == "assemble":
        target = _Assembled(job, overwrite, context)
    else:
        target = _Parts(job)
    done_before = _done(job)
    todo = [p for p in plan.partitions if job.part_name(p.index) not in done_before]
    if progress is not None:
        progress.total = plan.rows
        progress.update(sum(r["rows"] for r in done_before.values()))
    watch = _ProgressWatch(job, progress, set(done_before))
    follow = (_InOrder(job, plan.partitions, target)
              if job.strategy in ("concat", "assemble") else None)
    retried = 0
    #: the run failed for what its parts hold (the source's records): none is worth resuming
    discard = False
    try:
        try:
            if engine == "ray":
                from vecferry.ray_engine import run_ray

                run_ray(job, todo, workers=workers, address=ray_address)
            elif todo:
                retried = run_local(job, todo, workers)
        finally:
            watch.close()
            if follow is not None:
                follow.stop()
        with writing_to(job.dst):
            if follow is not None:
                follow.finish()
            records = _done(job)
            done = [records[name] for name in sorted(records)]  # in output order
            if job.whole_read_check is not None:
                # every partition was read: the records of the whole source are known now,
                # before any output is made (a source cut short fails as a whole read does)
                discard = True
                job.whole_read_check(sum(p["rows"] for p in done) + _read_rejects(job))
                discard = False
            duplicates = None
            if job.check_duplicates:
                from vecferry.ledger import count_sealed

                duplicates = count_sealed([root / "ids" / p["name"] for p in done],
                                          manifest_of(job.schema).id_kind)
            resent: int | None = 0
            if job.strategy == "shared":
                if duplicates is not None and duplicates["count"]:
                    resent = _resend_last_records(job, plan, done, target)
                writer_report = target.close() or {}
            else:
                writer_report = target.commit(done, overwrite)
    except BaseException as exc:
        if target is not None:
            target.abort()
            notice = abort_notice_of(target)
            add_notice(exc, notice)
            if notice and MOVE_FINISHED in notice:
                # stopped once the output was in place: it is whole, nothing is to resume
                discard = True
        kept = False
        with contextlib.suppress(Exception):  # the notice is a courtesy to the error
            kept = (not discard and not isinstance(exc, KeyboardInterrupt)
                    and bool(_done(job)))
        if discard:
            # nothing to resume: the output is in place, or the parts hold a source that
            # is refused as a whole (a --resume would read the same records again), which
            # leaves nothing, as a single-process run does
            shutil.rmtree(root, ignore_errors=True)
        if kept:
            # the parts done are kept: the user should know a rerun need not redo them
            add_notice(exc, _kept_notice(root))
        late.close()
        raise
    late.close()
    # The rejects file at rejects_path is never this run's to extend: the run being resumed
    # kept its rejects here, in the staging directory, so the file is an earlier finished
    # run's (whose rejects a resume would repeat), or nobody's
    by_part = _concat_rejects(job, rejects_path)
    read_warnings = [w for f in sorted((root / "warnings").glob("*.json"))
                     for w in orjson.loads(f.read_bytes())]
    shutil.rmtree(root, ignore_errors=True)
    driver_total = by_part.pop(_DRIVER, 0)
    rejected = sum(by_part.values()) + driver_total
    written = sum(p["written"] for p in done) - driver_total
    report: dict[str, Any] = {
        "read": written + rejected,
        "rejects_file": rejects_path if rejected else None,
        "written": written,
        "rejected": rejected,
        "partitions": len(plan.partitions),
        "workers": workers,
        "engine": engine,
    }
    if resumed:
        # a resumed partitioned run counts the whole load in written and rejected too (its
        # output is made of all the parts, whichever run wrote them); the totals say so in
        # the fields a single-process resume reports the whole load in
        report["written_total"] = written
        report["rejected_total"] = rejected
    if retried:
        report["retried_partitions"] = retried
    if resumed:
        report["resumed_partitions"] = resumed
    if duplicates is not None:
        report["duplicate_ids"] = duplicates
    if resent:
        report["resent_for_order"] = resent
    elif resent is None:
        report["order_not_restored"] = True
    # every partition counts the float64 values it narrowed: the run reports their sum
    report["warnings"] = list(dict.fromkeys(merge_narrowed(
        ([changed] if changed else []) + [w for p in done for w in p.get("warnings", [])]
        + read_warnings + context.warnings)))
    # the writer's report may name an engine of its own (an embedded collection's "edge" or
    # "local"): the run's engine is the one that ran the partitions
    own_engine = writer_report.pop("engine", None)
    report.update(writer_report)
    if own_engine is not None and own_engine != engine:
        report["writer_engine"] = own_engine
    return report


def _kept_notice(root: Path) -> str:
    """What a failed run that kept finished parts tells the user about ``--resume``: it does
    the rest only while the source is unchanged, so a record stopping the run is skipped
    (``--on-error skip``) rather than fixed in place, which makes a changed source that starts
    over."""
    return (f"the finished parts are kept in {root}: with the source unchanged, run again "
            "with --resume to do only the rest (for a bad record, with --on-error skip, which "
            "puts it in the rejects file); a fixed source starts over")

