"""The format registry: a literal table of ``FormatSpec`` entries.

Entries are data (strings only). The reader and writer classes are imported on first use, so
``vecferry --help`` never imports numpy, pyarrow, faiss or qdrant-client. Third-party packages add
formats through the ``vecferry.formats`` entry-point group; each entry point names a
``FormatSpec`` object.

A location resolves to a format in a fixed order: the explicit name (``--from`` / ``--to``),
then the URI scheme, then the file extension (longest suffix first, so ``.jsonl.gz`` wins over
``.gz``), then, for an existing directory, what it holds.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from vecferry.errors import FormatNotFoundError, Location, MissingDependencyError


@dataclass(frozen=True)
class FormatSpec:
    """One format: how it is recognised, where its classes live, what it needs installed."""

    name: str
    description: str
    extensions: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ()
    reader: str | None = None
    writer: str | None = None
    requires: tuple[str, ...] = ()
    extra: str | None = None
    #: files whose presence in a directory marks it as this format (e.g. ``*.parquet``)
    directory_markers: tuple[str, ...] = ()
    #: directories are matched against formats in this order (lowest first), so a folder with a
    #: ``VDF_META.json`` is VDF and ``.npy`` shards with metadata Parquet are numpy
    directory_priority: int = 50

    def missing(self) -> list[str]:
        """Modules this format needs that are not importable."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def load(self, role: str) -> type:
        """The reader or writer class; ``MissingDependencyError`` names the extra to install."""
        dotted = self.reader if role == "reader" else self.writer
        if dotted is None:
            raise FormatNotFoundError(f"format {self.name!r} cannot be a {role[:-1]} target"
                                      if role == "writer" else
                                      f"format {self.name!r} cannot be read")
        missing = self.missing()
        if missing:
            extra = f"pip install 'vecferry[{self.extra}]'" if self.extra else "install them"
            raise MissingDependencyError(
                f"format {self.name!r} needs {', '.join(missing)}, which is not installed",
                hint=extra,
            )
        module, _, attr = dotted.partition(":")
        return getattr(importlib.import_module(module), attr)


FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec(
        name="jsonl",
        description="JSON Lines, one Qdrant REST point per line (gzip / zstd by extension)",
        extensions=(".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst"),
        reader="vecferry.converters.jsonl:JsonlReader",
        writer="vecferry.converters.jsonl:JsonlWriter",
        # the reader takes either extension in any letter case (a compression suffix in
        # lower case: it picks the decompressor)
        directory_markers=tuple(f"*.{ext}{z}" for ext in ("[jJ][sS][oO][nN][lL]",
                                                          "[nN][dD][jJ][sS][oO][nN]")
                                for z in ("", ".gz", ".zst")),
        directory_priority=40,
    ),
    FormatSpec(
        name="parquet",
        description="Apache Parquet file or directory of parts, manifest in key-value metadata",
        extensions=(".parquet", ".pq"),
        reader="vecferry.converters.parquet:ParquetReader",
        writer="vecferry.converters.parquet:ParquetWriter",
        # parts may sit in subfolders (hive-style lang=en/... or plain ones), with either
        # extension in any letter case, as the Parquet reader takes them
        directory_markers=tuple(f"{depth}*.{ext}" for depth in ("", "*/**/")
                                for ext in ("[pP][aA][rR][qQ][uU][eE][tT]", "[pP][qQ]")),
        directory_priority=30,
    ),
    FormatSpec(
        name="npy",
        description="numpy .npy matrix (+ ids, payloads), .npz, or a directory of .npy files",
        extensions=(".npy", ".npz"),
        reader="vecferry.converters.npy:NpyReader",
        writer="vecferry.converters.npy:NpyWriter",
        directory_markers=("*.[nN][pP][yY]",),
        directory_priority=20,
    ),
    FormatSpec(
        name="faiss",
        description="FAISS index (flat, IDMap, HNSW, IVF, binary; lossy codes with a flag)",
        extensions=(".faiss", ".index"),
        # A folder LangChain's FAISS.save_local wrote (index.faiss with index.pkl), one
        # LlamaIndex persisted, or one holding vecferry's own index with its sidecars (one of
        # them is .parquet): the index is what such a folder is for, so it comes before the
        # file formats.
        directory_markers=("*.faiss", "default__vector_store.json"),
        directory_priority=15,
        reader="vecferry.converters.faiss_index:FaissReader",
        writer="vecferry.converters.faiss_index:FaissWriter",
        requires=("faiss",),
        extra="faiss",
    ),
    FormatSpec(
        name="qdrant",
        description="Qdrant collection: server (qdrant://, qdrants://) or local folder "
        "(qdrant-local://)",
        schemes=("qdrant", "qdrants", "qdrant-local"),
        reader="vecferry.converters.qdrant:QdrantReader",
        writer="vecferry.converters.qdrant:QdrantWriter",
        requires=("qdrant_client",),
        extra="qdrant",
    ),
    FormatSpec(
        name="qdrant-edge",
        description="Qdrant Edge shard, Qdrant's engine in-process (qdrant-edge://PATH)",
        schemes=("qdrant-edge",),
        reader="vecferry.converters.qdrant_edge:EdgeReader",
        writer="vecferry.converters.qdrant_edge:EdgeWriter",
        requires=("qdrant_edge",),
        extra="edge",
    ),
    FormatSpec(
        name="snapshot",
        description="Qdrant snapshot file (collection, shard or full), read offline through "
        "Qdrant Edge",
        extensions=(".snapshot",),
        reader="vecferry.converters.snapshot:SnapshotReader",
        requires=("qdrant_edge",),
        extra="edge",
    ),
    FormatSpec(
        name="vdf",
        description="vector-io export folder (VDF_META.json + Parquet), read and written",
        reader="vecferry.converters.vdf:VdfReader",
        writer="vecferry.converters.vdf:VdfWriter",
        directory_markers=("VDF_META.json",),
        directory_priority=10,
    ),
)


@lru_cache(maxsize=1)
def all_formats() -> tuple[FormatSpec, ...]:
    """Built-in formats followed by those registered through the ``vecferry.formats`` group."""
    from importlib.metadata import entry_points

    extra: list[FormatSpec] = []
    for ep in entry_points(group="vecferry.formats"):
        spec = ep.load()
        if isinstance(spec, FormatSpec):
            extra.append(spec)
    return FORMATS + tuple(extra)


def get_format(name: str) -> FormatSpec:
    for spec in all_formats():
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in all_formats())
    raise FormatNotFoundError(f"unknown format {name!r}", hint=f"known formats: {known}")


#: URI schemes of object storage (see ``vecferry.storage``), resolved by file extension
_STORAGE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "http", "https"})


def scheme_of(location: str) -> str | None:
    head, sep, _ = location.partition("://")
    return head.lower() if sep and head.replace("-", "").replace("+", "").isalnum() else None


def resolve(location: str, explicit: str | None = None, *, role: str = "reader") -> FormatSpec:
    """The format of ``location``: explicit name, then URI scheme, then extension, then contents.

    Raises ``FormatNotFoundError`` naming the known formats when nothing matches.
    """
    if explicit:
        return get_format(explicit)
    formats = all_formats()
    scheme = scheme_of(location)
    # Object storage (s3://, gs://, az://, https://) holds files: their extension decides.
    storage_scheme = scheme in _STORAGE_SCHEMES and not any(scheme in f.schemes
                                                            for f in formats)
    if scheme and scheme != "file" and not storage_scheme:
        for spec in formats:
            if scheme in spec.schemes:
                return spec
        raise FormatNotFoundError(
            f"no format handles the {scheme}:// scheme",
            location=Location(source=location),
            hint="known schemes: " + ", ".join(s for f in formats for s in f.schemes),
        )
    path = location[len("file://"):] if scheme == "file" else location
    name = os.path.basename(path.rstrip("/")).lower()
    by_suffix = sorted(
        ((ext, spec) for spec in formats for ext in spec.extensions),
        key=lambda item: -len(item[0]),
    )
    for ext, spec in by_suffix:
        if name.endswith(ext):
            return spec
    if storage_scheme:
        from vecferry.storage import StoragePath, output_path

        p: Any = StoragePath(location) if role == "reader" else output_path(location)
    else:
        p = Path(path)
    if p.is_dir():
        for spec in sorted(formats, key=lambda f: f.directory_priority):
            if any(next(p.glob(m), None) is not None for m in spec.directory_markers):
                return spec
    # only the formats that can play the part asked for, each with how it is recognised
    usable = [f for f in formats if (f.reader if role == "reader" else f.writer) is not None]
    known = ", ".join(
        f.name + (f" ({' '.join(f.extensions)})" if f.extensions else
                  f" ({' '.join(s + '://' for s in f.schemes)})" if f.schemes else
                  f" (a directory holding {f.directory_markers[0]})" if f.directory_markers
                  else "")
        for f in usable)
    raise FormatNotFoundError(
        f"cannot tell the format of {location!r}",
        location=Location(source=location),
        hint=f"pass --{'from' if role == 'reader' else 'to'} FORMAT; known: {known}",
    )


def open_reader(location: str, *, format: str | None = None, **options: Any):
    """Open a reader for ``location`` (see ``converters.base.Reader``)."""
    from vecferry.converters.base import Context

    spec = resolve(location, format, role="reader")
    context = options.pop("context", None) or Context()
    return spec.load("reader")(location, context=context, **options)


def open_writer(location: str, schema: Any, *, format: str | None = None, **options: Any):
    """Open a writer for ``location`` taking streams of ``schema``."""
    from vecferry.converters.base import Context

    spec = resolve(location, format, role="writer")
    context = options.pop("context", None) or Context()
    return spec.load("writer")(location, schema, context=context, **options)
