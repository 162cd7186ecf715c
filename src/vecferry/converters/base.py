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
  one batch of ``schema`` (``ClosingWriter`` refuses any other); ``close()`` makes the output
  visible (atomic rename, final flush, last acknowledgement) and returns a dict merged into the
  run report; ``abort()`` removes whatever a failed run left behind. ``ClosingWriter`` makes
  both run once, and refuses batches after either.

Options a format does not understand are an error (``reject_unknown_options``), so a typo in a
script never silently changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import shutil
import stat
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from vecferry.errors import (
    InputError,
    Location,
    OutputExistsError,
    RecordError,
    SchemaError,
    UnknownOptionsError,
    UsageError,
)

#: key of a rejects-file line holding why and where the record was rejected; readers ignore it
REJECT_KEY = "_vecferry_reject"


def abort_notice_of(writer: Any) -> str | None:
    """What an aborted ``writer`` left that needs the user: its own ``abort_notice``, else the
    notice of an output it wrote through (an ``AtomicPath`` it holds, whose remote output may
    have finished a move into place or left part of an output)."""
    own = getattr(writer, "abort_notice", None)
    if own:
        return own
    for value in vars(writer).values() if hasattr(writer, "__dict__") else ():
        if isinstance(value, AtomicPath) and value.abort_notice:
            return value.abort_notice
    return None


class Context:
    """What a run shares with its reader and writer: the error policy, rejects and warnings.

    ``on_error="fail"`` makes ``reject`` raise the error; ``"skip"`` hands it to ``sink`` (the
    rejects file) and counts it, unless the sink returns False (a record it already holds,
    rejected again by a resumed run). Warnings are collected for the report, never printed
    here.
    """

    def __init__(self, on_error: str = "fail",
                 sink: Callable[[RecordError], bool | None] | None = None,
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
        if self.sink is not None and self.sink(error) is False:
            return
        self.rejected += 1

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


class ClosingReader:
    """Lets a reader be used in a ``with`` block, which closes it (its files, a local-mode
    folder's lock) however the block ends.

    A closed reader refuses to read: ``batches`` and ``read_partition`` called after ``close``,
    or a batch iterator still read after it, raise ``UsageError``. (Closed files gave every
    answer before: no rows, as if the source were empty, all of them again, or an error
    calling the file corrupt.) Subclasses get this by defining those methods and ``close``.
    """

    _closed = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("batches", "read_partition"):
            method = cls.__dict__.get(name)
            if method is not None:
                setattr(cls, name, _reads_while_open(method))
        close = cls.__dict__.get("close")
        if close is not None:
            cls.close = _marks_closed(close)  # type: ignore[method-assign]

    def close(self) -> None:  # each reader has its own
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _closed_error(reader: Any) -> UsageError:
    where = getattr(reader, "location", None)
    return UsageError("the reader is closed", location=Location(str(where)) if where else None,
                      hint="open a new reader to read again")


def _marks_closed(close: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(close)
    def marking(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return close(self, *args, **kwargs)
        finally:
            self._closed = True

    return marking


def _reads_while_open(read: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(read)
    def reading(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if self._closed:
            raise _closed_error(self)
        return _while_open(self, read(self, *args, **kwargs))

    return reading


def _while_open(reader: Any, batches: Iterator[Any]) -> Iterator[Any]:
    """``batches`` until the reader is closed: then ``UsageError``, whatever its closed files
    answered (an end, as if the source had no more rows, or an error)."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            if reader._closed:
                raise _closed_error(reader) from None
            return
        except Exception as exc:
            if reader._closed:
                raise _closed_error(reader) from exc
            raise
        if reader._closed:
            raise _closed_error(reader)
        yield batch


class ClosingWriter:
    """Lets a writer be used in a ``with`` block: the output is closed (completed) when the
    block ends normally, aborted (nothing that looks complete left) when it raises, or when
    closing it fails.

    Every subclass also gets, around its own methods (wrapped in ``__init_subclass__``, as
    ``ClosingReader`` wraps its readers):

    * ``write_batch`` checks the batch against the stream schema the writer was opened with
      (its ``schema`` argument): ``SchemaError`` naming the column when the batch's columns
      differ from the schema's in name, order or type (schema metadata and nullability aside),
      ``RecordError`` naming the row when an id is null, ``UsageError`` for what is not a
      ``pyarrow.RecordBatch``. A batch of the schema is passed on as it is; one that differs
      only in nullability or metadata, relabelled with the schema (the same arrays). The check
      costs a comparison of the few fields and the id column's null count, not a pass over the
      rows.
    * ``close`` runs once: called again it returns the first call's summary, so a ``close()``
      inside a ``with`` block is not run a second time at its end. ``abort`` after ``close``,
      or a second ``abort``, does nothing (an output once completed is never removed by it).
    * ``write_batch`` after ``close`` or ``abort`` is a ``UsageError`` ("the writer is
      closed"), not a batch silently lost; ``close`` after ``abort`` is one too.

    A ``close`` that raises leaves the writer to be aborted: it takes no more batches and
    is not closed again.
    """

    #: "open", then "closed" (close returned), "failed" (close raised) or "aborted"
    _lifecycle = "open"
    _summary: dict[str, Any] | None = None
    #: the ``schema`` the writer was opened with: what ``write_batch`` must be given
    _stream_schema: pa.Schema | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, wrap in (("__init__", _keeps_schema), ("write_batch", _checks_batches),
                           ("close", _closes_once), ("abort", _aborts_once)):
            method = cls.__dict__.get(name)
            if method is not None:
                setattr(cls, name, wrap(method))

    def close(self) -> dict[str, Any]:  # each writer has its own
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            # the block's output is not complete: nothing that looks complete may stay
            self.abort()
            raise


def _keeps_schema(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def keeping(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # ``Writer(location, schema, ...)``; a subclass's ``__init__`` calling its base's
        # returns last, so the schema its caller gave is the one kept
        schema = args[1] if len(args) > 1 else kwargs.get("schema")
        if isinstance(schema, pa.Schema):
            self._stream_schema = schema

    return keeping


def _writer_closed(writer: Any) -> UsageError:
    where = getattr(writer, "location", None)
    hint = {"aborted": "abort() removed what it wrote; open a new writer to write again",
            "failed": "closing it failed, and what it wrote is not complete; abort() it and "
                      "write again with a new writer"}.get(
        writer._lifecycle, "close() completed its output; open a new writer to write more, "
                           "with overwrite=True to replace it")
    return UsageError("the writer is closed", location=Location(str(where)) if where else None,
                      hint=hint)


def _checks_batches(write: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(write)
    def checking(self: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
        if self._lifecycle != "open":
            raise _writer_closed(self)
        if self._stream_schema is not None:
            batch = check_batch(batch, self._stream_schema, getattr(self, "location", None))
        return write(self, batch, *args, **kwargs)

    return checking


def _closes_once(close: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(close)
    def closing(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self._lifecycle == "closed":
            # a copy: a caller adding to the first summary does not change the later ones
            return None if self._summary is None else dict(self._summary)
        if self._lifecycle != "open":
            error = _writer_closed(self)
            if self._lifecycle == "aborted":
                error.hint = "abort() removed what it wrote: there is nothing to close"
            raise error
        try:
            summary = close(self, *args, **kwargs)
        except BaseException:
            if self._lifecycle == "open":  # not when it aborted itself
                self._lifecycle = "failed"
            raise
        self._lifecycle, self._summary = "closed", dict(summary) if summary else summary
        return summary

    return closing


def _aborts_once(abort: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(abort)
    def aborting(self: Any, *args: Any, **kwargs: Any) -> None:
        if self._lifecycle in ("closed", "aborted"):
            return
        try:
            abort(self, *args, **kwargs)
        finally:
            self._lifecycle = "aborted"

    return aborting


def check_batch(batch: Any, schema: pa.Schema, location: str | None = None) -> pa.RecordBatch:
    """``batch`` as a batch of ``schema``, or an error: ``SchemaError`` naming the first column
    missing, extra, out of place or of another type (expected and given type); ``RecordError``
    naming the first row whose id is null; ``UsageError`` for what is not a record batch.

    Metadata and nullability are not compared: a batch built with ``pa.record_batch`` has
    nullable fields and none of the manifest, and is the same stream. Such a batch is
    returned relabelled with ``schema`` (the same arrays, not copied), as writers build tables
    of their schema from it; a batch of ``schema`` itself is returned as it is."""
    where = Location(str(location)) if location else None
    hint = ("write batches of the schema the writer was opened with: a reader's batches, or "
            "pa.record_batch(arrays, schema=schema)")
    if not isinstance(batch, pa.RecordBatch):
        raise UsageError(f"write_batch takes a pyarrow.RecordBatch, not "
                         f"{type(batch).__module__}.{type(batch).__qualname__}", location=where,
                         hint="a table's batches are table.to_batches()"
                         if isinstance(batch, pa.Table) else hint)
    given = batch.schema
    if given.names != schema.names:
        wanted = ", ".join(schema.names)
        missing = [n for n in schema.names if n not in given.names]
        extra = [n for n in given.names if n not in schema.names]
        if missing:
            text = f"the batch has no column {missing[0]!r}"
        elif extra:
            text = f"the batch has a column {extra[0]!r} the stream schema does not"
        else:
            text = f"the batch's columns are in another order ({', '.join(given.names)})"
        raise SchemaError(f"{text}; the stream's columns are {wanted}", location=where,
                          hint=hint)
    for field, want in zip(given, schema, strict=True):
        if not field.type.equals(want.type):
            raise SchemaError(f"column {field.name!r} is {field.type}, but the stream schema "
                              f"says {want.type}", location=where, hint=hint)
    from vecferry.stream import ID_COLUMN

    if ID_COLUMN in given.names:
        ids = batch.column(ID_COLUMN)
        if ids.null_count:
            import pyarrow.compute as pc

            row = pc.index(ids.is_null(), True).as_py()
            raise RecordError(f"the id of row {row} of the batch is null "
                              f"({ids.null_count} null id(s) in {batch.num_rows} rows)",
                              location=where, hint="every point needs an id")
    if given.equals(schema, check_metadata=True):
        return batch
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def reject_unknown_options(fmt: str, options: dict[str, Any]) -> None:
    """Raise an ``UnknownOptionsError`` naming the options a format was given but does not
    use."""
    unknown = sorted(k for k, v in options.items() if v is not None)
    if unknown:
        raise UnknownOptionsError(fmt, unknown)


class AtomicPath:
    """A file or directory written under a temporary name next to ``target``, renamed on commit.

    An interrupted run leaves only ``.<name>.vftmp-<random>`` behind, never something that
    looks complete. Refuses to start when ``target`` exists unless ``overwrite`` is set.
    A local ``temp`` is locked for as long as it is written (``<temp>.lock``, released by
    ``commit`` or ``abort``), and opening a target first removes the temporaries a killed run
    left for the same target, which ``swept`` lists (see ``sweep_stale_temps``).
    A remote target (``s3://`` ...) is written as ``storage.RemoteOutput`` says; ``staged``
    asks for a local ``temp`` there (for writers that seek back into their output).
    """

    @property
    def abort_notice(self) -> str | None:
        """What an aborted output left that needs the user: a remote one's ``RemoteOutput``
        notice (a move into place finished, or part of an output left); a local one's once
        ``commit`` put the output in place (the run was stopped after that: the output is
        this run's, whole, and ``abort`` leaves it), naming what is left of the output it
        replaced, if anything is."""
        if self._remote is not None:
            return self._remote.abort_notice
        if not self._placed:
            return None
        from vecferry.storage import MOVE_FINISHED

        notice = (f"{self.target} holds this run's whole output: the run was stopped as its "
                  f"output was put in place, and {MOVE_FINISHED}")
        if self._replaced is not None and os.path.lexists(self._replaced):
            notice += (f" (what is left of the output it replaced, {self._replaced.name}, is "
                       "removed by the next run to this output)")
        return notice

    def __init__(self, target: str | os.PathLike[str], *, overwrite: bool = False,
                 directory: bool = False, staged: bool = False):
        from vecferry import storage

        self.directory = directory
        self.overwrite = overwrite
        self._remote: storage.RemoteOutput | None = None
        #: ``commit`` has put ``temp`` in place (see ``abort_notice``)
        self._placed = False
        #: where ``commit`` moved the directory output it replaced, until it is removed
        self._replaced: Path | None = None
        self._aside: _TempLock | None = None
        if storage.is_remote(target):
            # An object store has no rename: see storage.RemoteOutput (multipart upload
            # completed on commit, temporary prefix for directories, ``staged`` local copy).
            self._remote = storage.RemoteOutput(target, overwrite=overwrite,
                                                directory=directory, staged=staged)
            self.target, self.temp = self._remote.target, self._remote.temp
            self.swept: list[Path] = []
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
        self.swept = sweep_stale_temps(self.target)
        self._lock = _TempLock(parent, self.target.name)
        self.temp = self._lock.temp
        if directory:
            try:
                self.temp.mkdir()
            except BaseException:
                self._lock.release()
                raise

    def commit(self) -> None:
        """Put ``temp`` in place. Without ``overwrite`` an output that appeared while this run
        wrote (another run to the same place) is not replaced: ``OutputExistsError``, and
        ``temp`` stays for the caller's ``abort``. With it, what is there is checked again, as
        at open, before it is replaced.

        At every instant the earlier output or the new one is whole at ``target``. A file is
        replaced by one rename. A directory is swapped with ``temp`` in one call
        (``renameat2(RENAME_EXCHANGE)``), so ``temp`` then holds the earlier output, which is
        removed after; where the file system cannot swap, the earlier directory is renamed to
        a locked temporary of the target first and the new one renamed into place. Ctrl-C and
        SIGTERM wait for the renames (``parallel._interrupts_held``): stopped before them,
        the earlier output stays and ``temp`` is the caller's to ``abort``; after them, the
        output is this run's, whole, and ``abort_notice`` says so. Stopped while the earlier
        output is removed, what is left of it keeps its temporary name (``.<name>.vftmp-*``),
        which the next run to ``target`` sweeps (``sweep_stale_temps``)."""
        if self._remote is not None:
            self._remote.commit()
            return
        from vecferry.parallel import _interrupts_held

        try:
            with _interrupts_held():
                self._replaced = self._put_in_place()
                self._placed = True
            if self._replaced is not None:
                # what cannot be removed now stays hidden, for the next run's sweep
                _remove_temp(self._replaced)
        finally:
            if self._aside is not None:
                self._aside.release()  # its lock file stays while anything is left there
            if self._placed and not os.path.lexists(self.temp):
                # (the output it replaced, left at ``temp``, keeps the lock for ``abort``)
                self._lock.release()

    def _put_in_place(self) -> Path | None:
        """Rename ``temp`` to ``target`` (see ``commit``); where the output it replaced is
        now, when it is to be removed, or None."""
        if not self.overwrite:
            try:
                _rename_no_replace(self.temp, self.target)
            except FileExistsError:
                raise OutputExistsError(
                    "output appeared while this run was writing it (another run to the same "
                    "place?); it is left as it is", location=Location(source=str(self.target)),
                    hint="pass --overwrite to replace it, or choose another output") from None
            return None
        if self.target.is_symlink() or self.target.exists():
            _check_replaceable(self.target, self.directory)  # it may have changed meanwhile
            if self.directory or self.target.is_dir():
                # a directory output, or a file a directory output replaces: no single
                # rename replaces either
                if self._exchange(self.temp, self.target):
                    return self.temp
                aside = _TempLock(self.target.parent, self.target.name)
                try:
                    os.rename(self.target, aside.temp)
                except BaseException:
                    aside.release()
                    raise
                self._aside = aside
                try:
                    os.rename(self.temp, self.target)
                except BaseException:
                    os.rename(aside.temp, self.target)  # the earlier output back
                    raise
                return aside.temp
        os.replace(self.temp, self.target)
        return None

    @staticmethod
    def _exchange(a: Path, b: Path) -> bool:
        """Swap the two existing paths ``a`` and ``b`` in one step (``renameat2`` with
        ``RENAME_EXCHANGE``, Linux 3.15+); False where the kernel, its C library or the file
        system cannot, ``OSError`` for any other failure."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is None:
            return False
        at_cwd, rename_exchange = -100, 2
        if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            return False
        raise OSError(err, os.strerror(err), str(a))

    def abort(self) -> None:
        if self._remote is not None:
            self._remote.abort()
            return
        if self.temp.is_dir():
            shutil.rmtree(self.temp, ignore_errors=True)
        elif self.temp.exists():
            self.temp.unlink()
        self._lock.release()


#: renameat2's flag: fail with EEXIST rather than replace (Linux 3.15+, most local file
#: systems)
_RENAME_NOREPLACE = 1


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, raising ``FileExistsError`` when ``dst`` exists, atomically
    where the kernel and file system can (``renameat2``); else a file is linked into place
    (which fails on an existing name just as well) and a directory renamed after a check."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_cwd = -100
        if renameat2(at_cwd, os.fsencode(src), at_cwd, os.fsencode(dst),
                     _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src))
    if src.is_dir():
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
        os.rename(src, dst)
        return
    os.link(src, dst)
    os.unlink(src)


#: what follows ``.<name>.vftmp-`` in the name of a temporary (group 1) or of its lock
_TEMP_TOKEN = re.compile(r"([0-9a-f]+)(\.lock)?\Z")
#: tries at a fresh lock before writing a temporary without one (see ``_TempLock``)
_LOCK_ATTEMPTS = 100
#: paths of the temporary locks this process holds, guarded by ``_TEMP_GUARD``
_HELD_LOCKS: set[str] = set()
# Taking a lock (create .. registered) and testing one (registry .. lock .. inode check) never
# interleave within a process: where flock is emulated by POSIX record locks (NFS), a
# process's own locks never conflict with it, so only the registry tells its live temps.
_TEMP_GUARD = threading.Lock()


def _new_guard_after_fork() -> None:
    # a thread of the parent may have held the guard at the fork; the child has no such thread
    global _TEMP_GUARD
    _TEMP_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_new_guard_after_fork)


def _try_lock(fd: int) -> bool | None:
    """Take the exclusive flock of ``fd`` without waiting: True, False when another open file
    holds it, None when the file system keeps no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a sweeper may have unlinked it)."""
    try:
        named = os.lstat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _close_lock(fd: int, path: str, temp: str) -> None:
    """Drop a temporary's lock; its file goes too once the temporary is gone. A temporary still
    there keeps its lock file, unlocked from now on: the next sweep of its target removes both."""
    with _TEMP_GUARD:
        if not os.path.lexists(temp):
            # unlinked while still locked: a sweeper that opened it first finds it held
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)
        _HELD_LOCKS.discard(path)


class _TempLock:
    """The lock marking ``.<name>.vftmp-<token>`` (``temp``) as written by a live process: the
    empty file ``<temp>.lock`` beside it, ``flock``ed from before ``temp`` exists until after it
    is gone (see ``sweep_stale_temps``).

    The file is created (``O_EXCL``) under a fresh token, then locked without waiting, then
    checked to still be linked under its name: a sweeper that caught it between the creation
    and the lock has it locked (the lock fails) or has already removed it (the check fails),
    and either way another token is tried, so ``temp`` is never named before its lock is
    held. On a file system that keeps no locks the lock file is removed again and ``temp``
    has none: a temporary without a lock is never swept. Released by ``release()`` (the
    writer's commit or abort) or, failing that, when the object is garbage collected.
    """

    def __init__(self, parent: Path, name: str):
        self._release: Callable[[], Any] | None = None
        # Bounded: on a file system whose locks or inode numbers are not what they seem, every
        # attempt could fail; the temporary is then written without a lock (never swept).
        for _ in range(_LOCK_ATTEMPTS):
            temp = parent / f".{name}.vftmp-{uuid.uuid4().hex[:8]}"
            path = Path(f"{temp}.lock")
            with _TEMP_GUARD:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue
                locked = _try_lock(fd)
                if locked is None:
                    os.close(fd)
                    os.unlink(path)
                    self.temp = temp
                    return
                if not locked or not _same_file(fd, path):
                    # a sweeper caught the new file: the name is given up, and the file too
                    # (made by O_EXCL, it is this attempt's unless the sweeper unlinked it)
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    os.close(fd)
                    continue
                _HELD_LOCKS.add(str(path))
            self.temp = temp
            self._release = weakref.finalize(self, _close_lock, fd, str(path), str(temp))
            return
        self.temp = parent / f".{name}.vftmp-{uuid.uuid4().hex[:8]}"

    def release(self) -> None:
        if self._release is not None:
            self._release()


def _remove_temp(temp: Path) -> bool:
    """Remove a stale temporary (a link or file is unlinked, never followed); False if some of
    it could not be removed."""
    try:
        mode = os.lstat(temp).st_mode
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        if stat.S_ISDIR(mode):
            shutil.rmtree(temp)
        else:
            os.unlink(temp)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def sweep_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``target`` (``.<name>.vftmp-<token>`` beside it) that no live
    process is writing, and their locks; return the temporaries removed.

    A writer holds an ``flock`` on ``<temp>.lock`` for as long as ``temp`` may exist
    (``_TempLock``). The kernel drops the lock when the last descriptor of its holder closes,
    so also when the holder is killed (SIGKILL, OOM killer), and a crashed machine holds no
    locks after it restarts; the lock, unlike a PID written in the name, cannot outlive its
    process or be mistaken for a later process given the same PID. A temporary is stale when
    its lock can be taken here: it is removed while the lock is held, then the lock file is
    unlinked. So a sweep never removes the temporary of a run still going, be it another
    process (its lock is held), a partitioned run's worker on the same part, or a writer of
    this process (listed in ``_HELD_LOCKS``, which is checked first because where flock is
    emulated by record locks, as on NFS, a process never conflicts with its own locks).

    Temporaries without a lock file (written by an older vecferry, or on a file system that
    keeps no locks) and lock files that cannot be tested are left alone: whether their writer
    lives is unknown. The sweep costs one listing of the target's directory, and it never
    fails: anything it cannot list or remove stays, for the next sweep.
    """
    target = Path(target)
    parent, prefix = target.parent, f".{target.name}.vftmp-"
    temps: set[str] = set()
    locks: set[str] = set()
    try:
        with os.scandir(parent) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    token = _TEMP_TOKEN.match(entry.name, len(prefix))
                    if token is not None:
                        (locks if token.group(2) else temps).add(token.group(1))
    except OSError:
        return []
    removed = []
    for token in sorted(locks):
        temp = parent / f"{prefix}{token}"
        lock = Path(f"{temp}.lock")
        with _TEMP_GUARD:
            if str(lock) in _HELD_LOCKS:
                continue
            try:
                # not blocking on a FIFO, not following a link planted under a lock's name
                fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
        try:
            if not (stat.S_ISREG(os.fstat(fd).st_mode) and _try_lock(fd)
                    and _same_file(fd, lock)):
                continue
            if token in temps and not _remove_temp(temp):
                continue  # the lock file stays, so the next sweep tries again
            with contextlib.suppress(OSError):
                os.unlink(lock)
            if token in temps:
                removed.append(temp)
        finally:
            os.close(fd)
    return removed


def _remove_scratch(path: str, lock: _TempLock) -> None:
    shutil.rmtree(path, ignore_errors=True)
    lock.release()


class ScratchDir:
    """A private working directory (spills, staged copies) in ``directory`` (default: the
    system's temporary directory) that a killed run does not leave behind for good.

    It is a temporary in the sense of ``sweep_stale_temps``: ``.vecferry-<kind>.vftmp-<token>``,
    locked through ``<that>.lock`` for as long as it exists. Making one first removes the
    scratch directories of that kind whose process is gone (SIGKILL, the OOM killer), which
    could otherwise fill the disk a run at a time. ``path`` is the directory (mode 0700);
    removed by ``remove()``, or when the object is garbage collected. Raises ``OSError`` when
    the directory cannot be made.
    """

    def __init__(self, kind: str, directory: str | os.PathLike[str] | None = None):
        import tempfile

        parent = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        name = f"vecferry-{kind}"
        sweep_stale_temps(parent / name)
        lock = _TempLock(parent, name)
        try:
            lock.temp.mkdir(mode=0o700)
        except BaseException:
            lock.release()
            raise
        self.path: Path = lock.temp
        self._finalizer = weakref.finalize(self, _remove_scratch, str(self.path), lock)

    def remove(self) -> None:
        self._finalizer()


#: what vecferry's writers put in a directory output (parts, manifests, numpy files, VDF)
_OWN_FILES = re.compile(r"(_?manifest\.json|VDF_META\.json|part-\d+\.(parquet|jsonl(\.gz|\.zst)?)"
                        r"|vectors(\..+)?\.npy|ids\.npy|payloads\.jsonl"
                        r"|\..+\.vftmp-\w+(\.lock)?)\Z")


#: how many names a message shows before it counts the rest
SHOWN = 5


def listing(names: list[str], most: int = SHOWN) -> str:
    """``"a, b, c, d, e and 3 more"``: the first ``most`` names, for a message."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


#: files a source directory may hold beside its data that are no data, read by no reader:
#: vecferry's directory manifest under its old name, its manifest sidecars
#: (``<file>.manifest.json``), and Hadoop's checksums (``.crc``; Hadoop hides them with a
#: leading dot, copies made by other tools do not always)
NOT_DATA = re.compile(r"manifest\.json|.*\.manifest\.json|.*\.crc", re.IGNORECASE)


def unread_files_error(location: str, names: list[str], what: str, hint: str) -> InputError:
    """The ``InputError`` of a directory source holding ``names`` (files, and directories with
    a trailing ``/``), ``what`` they are, which its reader would leave unread: the first
    ``SHOWN`` named, the others counted (``listing``)."""
    return InputError(f"directory holds {len(names)} file(s) {what}, which would not be read: "
                      f"{listing(names)}", location=Location(location), hint=hint)


def foreign_keys(keys: list[str]) -> list[str]:
    """The entries of an object-store "directory" vecferry did not write, named as
    ``_check_replaceable`` names them (``notes.txt``, ``sub/``), in name order.

    ``keys`` are the paths of every object under the prefix, relative to it; a key ending in
    ``/`` is a folder marker, an empty folder. The rules are the local ones: a top-level
    object is vecferry's when its name is one vecferry writes, a folder when it holds only
    Parquet files (a VDF index).
    """
    foreign: dict[str, str] = {}
    for key in keys:
        head, sep, rest = key.partition("/")
        if not head:
            continue  # the prefix's own folder marker
        if not sep:
            if not _OWN_FILES.match(head):
                foreign[head] = head
        elif rest and ("/" in rest or PurePosixPath(rest).suffix != ".parquet"):
            foreign[head] = head + "/"
    return [foreign[name] for name in sorted(foreign)]


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


def source_size(location: str, companions: Any = ()) -> int | None:
    """Bytes of a local source on disk: the file with the files its reader reads beside it
    (``companions``: a FAISS index's sidecars and ``.ivfdata``), or a directory's files; None
    when it is neither (a URI, a missing path). A file that cannot be looked at raises
    ``OSError``."""
    p = Path(location)
    if p.is_file():
        return p.stat().st_size + sum(Path(f).stat().st_size for f in companions
                                      if Path(f).is_file())
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return None


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
