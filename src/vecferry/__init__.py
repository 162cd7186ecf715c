"""vecferry: move vector data between numpy, FAISS, JSONL, Parquet and Qdrant, losslessly.

``convert(src, dst, **options)`` runs a conversion and returns its report; ``verify(src, dst)``
compares two locations (or a file with its recorded digest); ``open_reader`` / ``open_writer``
give the point streams to scripts that want them. The warnings of a report are also issued as
``vecferry.errors.VecferryWarning`` (Python's ``warnings`` module).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "convert", "open_reader", "open_writer", "verify"]


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str],
            **options: Any) -> dict[str, Any]:
    """Convert ``src`` to ``dst`` (locations, or ``pathlib`` paths); see
    ``vecferry.pipeline.convert`` for the options.

    Raises ``UsageError`` when called while a worker process starts: worker processes run
    the calling script again, so a call at its top level (not under
    ``if __name__ == "__main__":``) would start the whole conversion again in each worker.
    """
    from vecferry.parallel import refuse_while_bootstrapping
    from vecferry.pipeline import convert as _convert

    refuse_while_bootstrapping("vecferry.convert")
    options = _paths_as_text(options)
    for key in ("reader_options", "writer_options"):
        if isinstance(options.get(key), dict):  # anything else: convert's UsageError
            options[key] = _paths_as_text(options[key])
    report = _convert(os.fspath(src), os.fspath(dst), **options)
    _issue(report)
    return report


def verify(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None,
           **options: Any) -> dict[str, Any]:
    """Compare ``src`` with ``dst`` (locations, or ``pathlib`` paths), or ``src`` alone with
    the digest it records, and return the report (``report["ok"]``); see
    ``vecferry.verification.verify`` for the options. Differences are reported, not raised;
    unreadable input raises the readers' errors."""
    from vecferry.verification import verify as _verify

    report = _verify(src, dst, **options)
    _issue(report)
    return report


def _issue(report: dict[str, Any]) -> None:
    """Issue a report's warnings through Python's ``warnings`` module, as a library's
    warnings reach its caller (shown once per place by default, filtered, or made errors in
    tests); the report keeps them in its ``warnings`` list too. The command line does not
    come here: it prints the report's list itself."""
    from vecferry.errors import VecferryWarning

    for text in report.get("warnings") or ():
        # stacklevel 3: the line of the caller of convert() or verify()
        warnings.warn(text, VecferryWarning, stacklevel=3)


def _paths_as_text(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``pathlib`` paths (``rejects``, ``state``, ``ids``, ``payloads``, ...)
    as the text the library works with."""
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}


def open_reader(location: str | os.PathLike[str], **options: Any):
    """A reader of ``location`` (see ``vecferry.converters.open_reader``); refused while a
    worker process starts, as ``convert`` is."""
    from vecferry.converters import open_reader as _open
    from vecferry.parallel import refuse_while_bootstrapping

    refuse_while_bootstrapping("vecferry.open_reader")
    return _open(os.fspath(location), **_paths_as_text(options))


def open_writer(location: str | os.PathLike[str], schema: Any, **options: Any):
    """A writer to ``location`` (see ``vecferry.converters.open_writer``); refused while a
    worker process starts, as ``convert`` is."""
    from vecferry.converters import open_writer as _open
    from vecferry.parallel import refuse_while_bootstrapping

    refuse_while_bootstrapping("vecferry.open_writer")
    import pyarrow as pa

    if not isinstance(schema, pa.Schema):  # one without a manifest: the writer's SchemaError
        from vecferry.errors import UsageError

        raise UsageError(f"open_writer takes a stream schema, not {type(schema).__name__}",
                         hint="pass a reader's .schema, or Manifest(...).schema()")
    return _open(os.fspath(location), schema, **options)
