"""Reader and Writer protocols, the run context they share, and atomic outputs.

A format module holds one ``...Reader`` and/or one ``...Writer`` class:

* ``Reader(location, *, context, **options)`` opens the source and fails fast (missing file,
  bad header) with an ``InputError``. ``schema`` is known as soon as the constructor returns, before
  the first batch. ``count()`` is the number of points when known cheaply, else ``None``.
  ``batches(batch_size, start=0)`` yields record batches of at most ``batch_size`` rows of that
  schema, beginning at point ``start`` (used to resume); bad records are passed to
  ``context.reject`` which raises or records them. ``close()`` releases files and connections.

* ``Writer(location, schema, *, context, overwrite=False, **options)`` checks, before anything
  is written, that the target can hold every column of ``schema`` (``UnsupportedError``
  otherwise) and that it may write there (``OutputExistsError``). ``write_batch(batch)`` writes
  one batch; ``close()`` makes the output visible (atomic rename, final flush, last
  acknowledgement) and returns a dict merged into the run report; ``abort()`` removes whatever
  a failed run left behind.

Options a format does not understand are an error (``reject_unknown_options``), so a typo in a
script never silently changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from vecferry.errors import Location, OutputExistsError, RecordError, UsageError

#: key of a rejects-file line holding why and where the record was rejected; readers ignore it
REJECT_KEY = "_vecferry_reject"


class Context:
    """What a run shares with its reader and writer: the error policy, rejects and warnings.

    ``on_error="fail"`` makes ``reject`` raise the error; ``"skip"`` hands it to ``sink`` (the
    rejects file) and counts it. Warnings are collected for the report, never printed here.
    """

    def __init__(self, on_error: str = "fail", sink: Callable[[RecordError], None] | None = None,
                 warnings: list[str] | None = None):
        if on_error not in ("fail", "skip"):
            raise UsageError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
        self.on_error = on_error
        self.sink = sink
        self.rejected = 0
        self.warnings: list[str] = [] if warnings is None else warnings

    def reject(self, error: RecordError) -> None:
        if self.on_error == "fail":
            raise error
        self.rejected += 1
        if self.sink is not None:
            self.sink(error)

    def sibling(self) -> Context:
        """A context sharing policy, sink and warnings but counting its own rejects.

        The reader runs in a prefetch thread; separate counters keep the writer's rejects
        (and so the written count) exact while both sides reject at once.
        """
        return Context(self.on_error, self.sink, self.warnings)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


@runtime_checkable
class Reader(Protocol):
    location: str
    schema: pa.Schema

    def count(self) -> int | None: ...

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


@runtime_checkable
class Writer(Protocol):
    location: str

    def write_batch(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> dict[str, Any]: ...

    def abort(self) -> None: ...


def reject_unknown_options(fmt: str, options: dict[str, Any]) -> None:
    """Raise a ``UsageError`` naming the options a format was given but does not use."""
    unknown = sorted(k for k, v in options.items() if v is not None)
    if unknown:
        raise UsageError(f"format {fmt!r} does not take option(s): {', '.join(unknown)}")


class AtomicPath:
    """A file or directory written under a temporary name next to ``target``, renamed on commit.

    An interrupted run leaves only ``.<name>.vftmp-<random>`` behind, never something that
    looks complete. Refuses to start when ``target`` exists unless ``overwrite`` is set.
    A remote target (``s3://`` ...) is written as ``storage.RemoteOutput`` says; ``staged``
    asks for a local ``temp`` there (for writers that seek back into their output).
    """

    def __init__(self, target: str | os.PathLike[str], *, overwrite: bool = False,
                 directory: bool = False, staged: bool = False):
        from vecferry import storage

        self.directory = directory
        self._remote: storage.RemoteOutput | None = None
        if storage.is_remote(target):
            # An object store has no rename: see storage.RemoteOutput (multipart upload
            # completed on commit, temporary prefix for directories, ``staged`` local copy).
            self._remote = storage.RemoteOutput(target, overwrite=overwrite,
                                                directory=directory, staged=staged)
            self.target, self.temp = self._remote.target, self._remote.temp
            return
        self.target = Path(target)
        if self.target.is_symlink() or self.target.exists():
            if not overwrite:
                raise OutputExistsError(
                    "output exists",
                    location=Location(source=str(self.target)),
                    hint="pass --overwrite to replace it, or choose another output",
                )
            _check_replaceable(self.target, directory)
        parent = self.target.parent
        if not parent.is_dir():
            raise UsageError(
                "output directory does not exist",
                location=Location(source=str(parent)),
                hint="create it first",
            )
        self.temp = parent / f".{self.target.name}.vftmp-{uuid.uuid4().hex[:8]}"
        if directory:
            self.temp.mkdir()

    def commit(self) -> None:
        if self._remote is not None:
            self._remote.commit()
            return
        if self.target.is_dir() and not self.target.is_symlink():
            shutil.rmtree(self.target)
        elif self.target.exists():
            self.target.unlink()
        os.replace(self.temp, self.target)

    def abort(self) -> None:
        if self._remote is not None:
            self._remote.abort()
            return
        if self.temp.is_dir():
            shutil.rmtree(self.temp, ignore_errors=True)
        elif self.temp.exists():
            self.temp.unlink()


#: what vecferry's writers put in a directory output (parts, manifests, numpy files, VDF)
_OWN_FILES = re.compile(r"(manifest\.json|VDF_META\.json|part-\d+\.(parquet|jsonl(\.gz|\.zst)?)"
                        r"|vectors(\..+)?\.npy|ids\.npy|payloads\.jsonl|\..+\.vftmp-\w+)\Z")


def listing(names: list[str], most: int = 5) -> str:
    """``"a, b, c, d, e and 3 more"``: the first ``most`` names, for a message."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _check_replaceable(target: Path, directory: bool) -> None:
    """Refuse to replace what ``--overwrite`` must not: an output is replaced by a rename, so
    a symbolic link or a device, FIFO or socket would be replaced, not written through (as
    root, ``/dev/null`` would become a file); and a directory is deleted whole, so only one
    holding nothing but what vecferry writes may go."""
    where = Location(source=str(target))
    if target.is_symlink():
        raise UsageError("the output is a symbolic link; replacing it would replace the link, "
                         "not write where it points", location=where,
                         hint="name the real path, or remove the link")
    if not (target.is_file() or target.is_dir()):
        raise UsageError("the output is not a regular file (a device, FIFO or socket)",
                         location=where, hint="write to a regular file, then copy it there")
    if not target.is_dir():
        return
    if not directory:
        raise UsageError("the output is a directory, and this format writes a file",
                         location=where, hint="name a file, or remove the directory first")
    foreign = []
    for entry in sorted(target.iterdir(), key=lambda e: e.name):
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            foreign.append(entry.name)
        elif entry.is_dir():  # a VDF index folder holds only numbered Parquet files
            if any(not (f.is_file() and f.suffix == ".parquet") for f in entry.iterdir()):
                foreign.append(entry.name + "/")
        elif not _OWN_FILES.match(entry.name):
            foreign.append(entry.name)
    if foreign:
        raise UsageError("the output directory holds files vecferry did not write: "
                         f"{listing(foreign)}",
                         location=where,
                         hint="--overwrite replaces a directory vecferry wrote; choose a new or "
                              "empty directory, or move those files out first")


def output_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a written (committed) output file, local or remote."""
    from vecferry import storage

    return storage.file_size(path)


class Writeback:
    """Starts the disk writing early for a large local output, in a background thread.

    The commit's fsync must wait for every dirty page; syncing each ``every`` bytes as the
    writing goes on lets the disk work while the CPU renders, so little is left at the end.
    Does nothing for outputs without a file descriptor (remote uploads, compressed wrappers);
    ``fh`` may be a file object or a descriptor.
    """

    def __init__(self, fh: Any, every: int = 256 << 20):
        try:
            self.fd: int | None = fh if isinstance(fh, int) else fh.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None
        self.every = every
        self.pending = 0
        self._thread: threading.Thread | None = None

    def wrote(self, n: int) -> None:
        if self.fd is None:
            return
        self.pending += n
        if self.pending >= self.every and (self._thread is None or not self._thread.is_alive()):
            self.pending = 0
            self._thread = threading.Thread(target=self._sync, daemon=True)
            self._thread.start()

    def _sync(self) -> None:
        # A failed early sync is not the commit's: the final fsync reports real errors.
        with contextlib.suppress(OSError):
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()


def fsync_path(path: Path) -> None:
    """Flush a written file to disk so a commit survives a crash right after the rename.

    A remote object needs nothing: it exists once its upload is completed on commit.
    """
    from vecferry import storage

    if storage.is_remote(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def input_path(location: str) -> Path:
    """The local path of a file location, with a clear error when it is missing or unreadable.

    A remote location (``s3://``, ``gs://``, ``az://``, ``https://``) gives a
    ``storage.StoragePath``, which answers the same questions (exists, is_dir, glob, /, name).
    """
    from vecferry import storage
    from vecferry.errors import InputError

    if storage.is_remote(location):
        return storage.input_path(location)  # type: ignore[return-value]
    path = Path(location)
    if not path.exists():
        raise InputError("no such file or directory", location=Location(source=location),
                         hint="check the path")
    if not os.access(path, os.R_OK):
        raise InputError("permission denied", location=Location(source=location),
                         hint="check the file's permissions")
    return path
