"""Typed errors. Every error names where it happened and what to do about it.

The library raises these and never prints or exits; ``vecferry.cli`` maps them to
messages and exit codes. Each carries a location (file, line or row, point id) so a
user with a 50 GB input knows which record to look at, and chains its cause
(``raise ... from exc``) so a traceback still shows the underlying library error.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where a problem is: a file or URI, optionally a line (1-based), row (0-based) or point id."""

    source: str | None = None
    line: int | None = None
    row: int | None = None
    point_id: Any = None

    def __str__(self) -> str:
        parts = []
        if self.source:
            parts.append(str(self.source))
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.point_id is not None:
            parts.append(f"id {self.point_id!r}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class VecferryError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` what to do, ``location`` where."""

    #: exit code the CLI uses for this error class
    exit_code = 1

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None):
        self.message = message
        self.location = location or Location()
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.location)
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickles only ``args``; location, hint and raw must survive the trip back
        # from a worker process.
        return (_restore, (type(self), self.__dict__))

    def as_dict(self) -> dict[str, Any]:
        shown = {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            # "uri", not the field's name: the file or URI may be the destination
            "location": {("uri" if k == "source" else k): v
                         for k, v in self.location.as_dict().items()},
        }
        if getattr(self, "warnings", None):
            shown["warnings"] = list(self.warnings)
        return shown


class UsageError(VecferryError):
    """The call itself is wrong: unknown format, bad option, conflicting arguments."""

    exit_code = 2


class UnknownOptionsError(UsageError):
    """A format was given options it does not use; ``options`` holds their keyword names, which
    the CLI shows as the flags the user typed."""

    def __init__(self, fmt: str, options: list[str]):
        self.fmt = fmt
        self.options = options
        super().__init__(f"format {fmt!r} does not take option(s): {', '.join(options)}")

    def as_flags(self) -> UsageError:
        """The same error naming command-line flags (``--collection-config``)."""
        flags = ", ".join("--" + o.replace("_", "-") for o in self.options)
        return UsageError(f"format {self.fmt!r} does not take {flags}", location=self.location,
                          hint=self.hint)


class FormatNotFoundError(UsageError):
    """No format matches the name, URI scheme or extension given."""


class MissingDependencyError(VecferryError):
    """A format needs an optional dependency that is not installed; the hint names the extra."""


class InputError(VecferryError):
    """The input cannot be read as a whole: missing, unreadable, truncated, corrupt, empty."""


class RecordError(InputError):
    """One record is bad (not JSON, wrong dimension, NaN, missing vector, ...).

    With ``on_error="skip"`` the pipeline sends the record to the rejects file and carries on;
    ``raw`` holds the original record (a dict, or the raw text when it was not parseable).
    """

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None,
                 raw: Any = None):
        super().__init__(message, location=location, hint=hint)
        self.raw = raw


class SchemaError(VecferryError):
    """Data does not fit the stream schema it declared (id kind changed, dimension mismatch)."""


class UnsupportedError(VecferryError):
    """The target cannot hold something in the source (raised before anything is written)."""


class OutputExistsError(UsageError):
    """The output exists and ``overwrite`` was not given."""


class TargetError(VecferryError):
    """The destination refused the data (incompatible collection, server 4xx, disk full)."""


class EngineError(VecferryError):
    """The engine that runs the partitions (a Ray cluster) cannot be reached or refused the
    run; ``location.source`` is its address."""


class TransientError(VecferryError):
    """A failure worth retrying (timeout, connection reset, 5xx, 429). Carries ``retry_after``."""

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message, location=location, hint=hint)
        self.retry_after = retry_after


class VerificationError(VecferryError):
    """Source and destination differ; the report says how."""

    exit_code = 4


class VecferryWarning(UserWarning):
    """What a run did that the caller should know, though it succeeded (a distance not used,
    float64 values narrowed, settings a target does not keep). ``vecferry.convert`` and
    ``vecferry.verify`` issue each warning of their report as one of these, through Python's
    ``warnings`` module; the report's ``warnings`` list holds the same texts. Silence them
    with ``warnings.simplefilter("ignore", VecferryWarning)``."""


def _restore(cls: type[VecferryError], state: dict[str, Any]) -> VecferryError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, str(err))
    return err


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextlib.contextmanager
def writing_to(target: str) -> Iterator[None]:
    """Raise an operating-system error met while writing ``target`` (disk full, read-only file
    system, permissions) as a ``TargetError`` naming ``target`` and what to do, chained to it;
    a long run that fills the disk ends with that message, not a traceback."""
    try:
        yield
    except OSError as exc:
        number = exc.errno
        if number in _NO_SPACE or number in _NOT_WRITABLE:
            reason = os.strerror(number)  # pyarrow's text wraps it in its own words
            hint = ("free space there or write to another place, then run the conversion again"
                    if number in _NO_SPACE else "check that the output's directory is writable")
        else:
            reason, hint = str(exc), "run the conversion again once the cause is fixed"
        raise TargetError(f"cannot write: {reason}", location=Location(source=target),
                          hint=hint) from exc


def add_notice(exc: BaseException, notice: str | None) -> None:
    """Let a failing run's error also say what an aborted writer left behind that needs the
    user (``notice``): a vecferry error gets it in its hint, an interrupt as its argument
    (the CLI prints both)."""
    if not notice or notice in str(exc):
        return
    if isinstance(exc, VecferryError):
        exc.hint = f"{exc.hint}; {notice}" if exc.hint else notice
    elif isinstance(exc, KeyboardInterrupt):
        exc.args = (notice,)


def add_warnings(exc: BaseException, warnings: list[str]) -> None:
    """Let a failing run's error carry the warnings the run gave before it failed (a sample
    that disagreed on a vector's size often explains the bad record that stopped it): the
    CLI prints them before the error, ``as_dict`` lists them. Other exceptions are left as
    they are."""
    if isinstance(exc, VecferryError) and warnings:
        kept = getattr(exc, "warnings", None) or []
        exc.warnings = kept + [w for w in warnings if w not in kept]
