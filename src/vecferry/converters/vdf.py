"""vector-io's Vector Dataset Format (VDF): a folder of ``VDF_META.json`` plus Parquet.

Spec: https://github.com/AI-Northstar-Tech/vector-io#universal-vector-dataset-format-vdf-specification

``VDF_META.json`` holds ``version``, ``file_structure``, ``author``, ``exported_from``,
``exported_at``, an optional ``id_column`` (default ``id``) and ``indexes``: ``{index name:
[{namespace, index_name, total_vector_count, exported_vector_count, dimensions, model_name,
vector_columns, data_path, metric, index_config}]}``. Each namespace's ``data_path`` (relative
to the folder) is a Parquet file or a directory of them (vector-io numbers them ``1.parquet``,
``2.parquet``, ...), with the id column, the vector columns (lists of numbers) and one column per
metadata key.

Reading: one (index, namespace) per run; when the folder holds several, ``index`` picks one
(``NAME`` or ``NAME/NAMESPACE``; the error lists them). A single vector column is the unnamed
vector, several are named after their columns; the metric becomes the distance, ``model_name``
and the index / namespace names go to the manifest's ``extra["vdf"]``. Every other column is
payload, read by the rules of ``vecferry.mapping`` (files may differ in their metadata columns,
as vector-io writes each file from its own DataFrame). A folder that lost part of its data is
refused (``InputError`` naming VDF_META.json): a Parquet file ``file_structure`` lists in the
namespace's folder is missing, or the rows differ from the count of the manifest vecferry
recorded; a damaged recorded manifest is refused the same way. vector-io's own
``exported_vector_count`` differing from the rows is only a warning (its exporters count
what they fetched).

Writing: ``VDF_META.json`` and ``<index>/1.parquet``, ``2.parquet``, ... (about 64 MB each, so
memory stays bounded): ``id``, one ``list<float32>`` column per dense vector (``vector`` for the
unnamed one, else the vector's name) and one column per top-level payload key. A key whose values
in a file are all strings, booleans, int64 or floats gets that type; any other key (objects,
lists, explicit nulls, integers past 64 bits, mixed types) is JSON text, listed in the file's
key-value metadata ``vecferry.json_columns`` so vecferry reads it back exactly. The stream's
manifest is kept under ``VDF_META.json["vecferry"]``. VDF has no sparse or multi vectors, and a
dataset of it has vector columns: those vectors, and a stream without any vector, are refused
before anything is written. A remote folder (``s3://`` ...) is written as a Parquet directory
is: each data file streamed up under the output's hidden prefix as it is written, the folder
moved into place on commit, VDF_META.json last (``storage.RemoteOutput``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from vecferry.converters.base import (
    AtomicPath,
    ClosingReader,
    ClosingWriter,
    Context,
    fsync_path,
    input_path,
    listing,
    reject_unknown_options,
)
from vecferry.converters.parquet import _open, natural_key
from vecferry.digest import StreamDigest
from vecferry.errors import InputError, Location, SchemaError, UnsupportedError, UsageError
from vecferry.fileio import loads_exact
from vecferry.mapping import Mapping, TableMapper, narrowed_warning
from vecferry.storage import arrow_sink
from vecferry.stream import (
    ID_COLUMN,
    PAYLOAD_COLUMN,
    Manifest,
    decode_ids,
    describe_vectors,
    json_type_problem,
    manifest_of,
    with_distance,
)

META_NAME = "VDF_META.json"
JSON_COLUMNS_KEY = b"vecferry.json_columns"
FILE_BYTES = 64 << 20
_METRICS = {
    "cosine": "Cosine", "euclid": "Euclid", "euclidean": "Euclid", "l2": "Euclid",
    "dot": "Dot", "dotproduct": "Dot", "ip": "Dot", "inner_product": "Dot",
    "manhattan": "Manhattan", "l1": "Manhattan",
}
_FLAG = "VDF_META.json ({} column)"


def distance_of(metric: Any) -> str | None:
    """The vecferry distance for a VDF metric (Qdrant's names; others' aliases), or None."""
    if not isinstance(metric, str):
        return None
    return _METRICS.get(metric.lower().replace("distance.", "").replace(" ", "_"))


def read_meta(root: Path) -> dict[str, Any]:
    path = root / META_NAME
    if not path.exists():
        raise InputError(f"not a VDF folder: no {META_NAME}", location=Location(str(root)),
                         hint="a vector-io export folder holds VDF_META.json and Parquet files")
    try:
        meta = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{META_NAME} is not valid JSON: {exc}",
                         location=Location(str(path))) from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("indexes"), dict) \
            or not meta["indexes"]:
        raise InputError(f"{META_NAME} has no 'indexes'", location=Location(str(path)),
                         hint="it must map index names to lists of namespaces")
    return meta


def _choose(meta: dict[str, Any], index: str | None, where: str
            ) -> tuple[str, dict[str, Any]]:
    """The (index name, namespace entry) to read: the only one, or the one ``index`` names
    (``NAME`` or ``NAME/NAMESPACE``). ``UsageError`` naming those there are, and the value to
    pass, when ``index`` is needed or names none or several; ``InputError`` when the file
    lists none."""
    if index is not None and not isinstance(index, str):
        raise UsageError(f"vdf_index takes an index name (text), not {type(index).__name__}",
                         location=Location(where),
                         hint="--vdf-index NAME or NAME/NAMESPACE (in Python: "
                              "reader_options={\"vdf_index\": \"NAME\"})")
    entries = [(name, ns) for name, namespaces in meta["indexes"].items()
               for ns in (namespaces or []) if isinstance(ns, dict)]
    labels = [f"{name}/{ns.get('namespace') or ''}".rstrip("/") for name, ns in entries]
    if not entries:
        raise InputError(f"{META_NAME} lists no namespace under its indexes "
                         f"({', '.join(map(str, meta['indexes']))})",
                         location=Location(where),
                         hint="each index maps to a list of namespace entries")
    if index is not None:
        # the full label first: an index's unnamed namespace is labelled by the index's name,
        # which its named namespaces share
        picked = [(e, label) for e, label in zip(entries, labels, strict=True) if index == label]
        if len(picked) != 1:
            picked = [(e, label) for e, label in zip(entries, labels, strict=True)
                      if index in (label, e[0])]
    else:
        picked = list(zip(entries, labels, strict=True))
    if len(picked) == 1:
        return picked[0][0]
    shown = listing([label for _, label in picked] or labels, 10)
    if index is None:
        message = (f"{META_NAME} holds {len(entries)} index namespaces ({shown}), and vecferry "
                   "reads one per run")
        example = labels[0]
    elif picked:
        message = (f"index {index!r} of {META_NAME} has {len(picked)} namespaces ({shown}), "
                   "and vecferry reads one per run")
        example = picked[0][1]
    else:
        message = f"{META_NAME} has no index or namespace {index!r}; it holds {shown}"
        example = labels[0]
    raise UsageError(message, location=Location(where),
                     hint=f"name one with --vdf-index INDEX/NAMESPACE, e.g. --vdf-index "
                          f"{example} (in Python: reader_options={{\"vdf_index\": "
                          f"{orjson.dumps(example).decode()}}}); an index's unnamed namespace, "
                          "or its only one, is named by the index's name alone")


def _plain_name(name: str) -> bool:
    """Whether ``name`` can be a folder of the output and nothing else: one path component,
    not ``.`` or ``..``, no separator or NUL, not the metadata file's name."""
    return (bool(name) and name not in (".", "..", META_NAME)
            and not any(c in name for c in ("/", "\\", "\0")))


def _data_files(root: Path, data_path: Any, where: str
                ) -> tuple[list[Path], tuple[str, ...] | None]:
    """The Parquet files of a namespace's ``data_path``, and the folder holding them relative
    to ``root`` as path components (None when ``data_path`` names one file). ``root`` may be a
    ``storage.StoragePath``: paths are joined with ``/`` only."""
    if data_path is not None and not isinstance(data_path, str):
        raise InputError(f"data_path is not a path but {type(data_path).__name__} "
                         f"({data_path!r:.80})", location=Location(where),
                         hint="data_path is relative to the folder holding VDF_META.json")
    rel = _components(data_path or ".")
    candidates = [rel, rel[-1:]]
    if len(rel) > 1:  # vector-io writes paths that start with the export folder's name
        candidates.append(rel[1:])
    for parts in candidates:
        c = root / "/".join(parts) if parts else root
        if c.is_file() and c.suffix == ".parquet":
            return [c], None
        if c.is_dir():
            files = sorted((p for p in c.glob("*.parquet") if not p.name.startswith((".", "_"))),
                           key=natural_key)
            if files:
                return files, parts
    raise InputError(f"data_path {data_path!r} names no Parquet file or folder of them",
                     location=Location(where),
                     hint="data_path is relative to the folder holding VDF_META.json")


def _components(path: str) -> tuple[str, ...]:
    """The components of a path as VDF_META.json writes it (``/`` or ``\\``), without a
    root or ``.``."""
    return tuple(c for c in PurePosixPath(path.replace("\\", "/")).parts if c not in ("/", "."))


def _missing_files(meta: dict[str, Any], folder: tuple[str, ...], found: set[str]
                   ) -> list[str]:
    """The Parquet files ``file_structure`` lists in the namespace's data ``folder`` (relative
    to the folder of VDF_META.json) that are not among the ``found`` names, as listed.

    vector-io lists paths from where the export ran (``vdf_<stamp>/<index>/1.parquet``, and
    ``vdf_<stamp>/VDF_META.json``): the listed VDF_META.json's folder is the export's root, or
    when it is not listed, the entry itself or without its first component. Entries in other
    folders are other namespaces' files, not checked here."""
    listed = meta.get("file_structure")
    if not isinstance(listed, list):
        return []
    entries = [(e, _components(e)) for e in listed if isinstance(e, str)]
    roots = [parts[:-1] for _, parts in entries if parts and parts[-1] == META_NAME]
    missing = []
    for entry, parts in entries:
        if not parts or not parts[-1].lower().endswith(".parquet"):
            continue
        if roots:
            forms = [parts[len(r):] for r in roots if parts[:len(r)] == r]
        else:
            forms = [parts, parts[1:]]
        if any(f[:-1] == folder for f in forms) and parts[-1] not in found:
            missing.append(entry)
    return missing


def _recorded_manifest(meta: dict[str, Any], where: str) -> Manifest | None:
    """The stream manifest vecferry keeps under ``VDF_META.json["vecferry"]["manifest"]``,
    None when there is none (vector-io's own exports). ``InputError`` naming ``where`` (the
    VDF_META.json) when one is there but is not a manifest: a field of the wrong type, an
    unknown id kind, vector kind or datatype, a format version newer than this vecferry's."""
    ours = meta.get("vecferry")
    if ours is None:
        return None
    if not isinstance(ours, dict):
        raise _invalid_manifest(where, json_type_problem("'vecferry'", ours, (dict,)))
    recorded = ours.get("manifest")
    if recorded is None or recorded == {}:
        return None
    try:
        return Manifest.from_dict(recorded)
    except SchemaError as exc:  # from_dict checks every field's type: nothing else escapes
        raise _invalid_manifest(where, exc.message, exc.hint) from exc


def _invalid_manifest(where: str, problem: str | None, hint: str | None = None) -> InputError:
    return InputError(
        f"the stream manifest vecferry keeps under \"vecferry\" -> \"manifest\" is not valid: "
        f"{problem}", location=Location(where),
        hint=(f"{hint}; or " if hint else "") + "restore the file as vecferry wrote it, or "
             "remove its \"vecferry\" key to read the folder as a vector-io export (the "
             "index entry then gives the vectors and metric)")


class VdfReader(ClosingReader):
    """Reads one namespace of a VDF folder (see the module docstring), file by file.

    ``InputError`` naming VDF_META.json, before anything is read, when the folder lost data
    (a listed file missing, rows other than vecferry's recorded count) or the manifest
    vecferry recorded there is damaged; ``UsageError`` when ``vdf_index`` is needed or names
    no namespace.
    """

    def __init__(self, location: str, *, context: Context, vdf_index: str | None = None,
                 id_kind: str | None = None, **options: Any):
        reject_unknown_options("vdf", options)
        self.location = location
        self.context = context
        root = input_path(location)
        meta = read_meta(root)
        meta_at = str(root / META_NAME)
        name, ns = _choose(meta, vdf_index, location)
        known = _recorded_manifest(meta, meta_at)
        self.parts, folder = _data_files(root, ns.get("data_path"), meta_at)
        if folder is not None:
            missing = _missing_files(meta, folder, {p.name for p in self.parts})
            if missing:
                raise InputError(
                    f"data file(s) that {META_NAME} lists (file_structure) are missing: "
                    f"{listing(missing)}", location=Location(meta_at),
                    hint="the folder was copied or downloaded in part: copy it again whole "
                         "(or, if the files were removed on purpose, take them out of "
                         "file_structure and the counts)")
        self._files = [_open(p) for p in self.parts]
        id_col = meta.get("id_column") or ID_COLUMN
        first = self._files[0].schema_arrow
        columns = ns.get("vector_columns") or ["vector"]
        if known is not None:
            specs = [f"{v.name}={v.name or 'vector'}" if v.name else "vector"
                     for v in known.vectors]
        else:
            specs = list(columns)
        self.mapping = Mapping(id_column=id_col if id_col in first.names else None,
                               vector_columns=tuple(specs))
        self._id_kind = id_kind
        self._known = known
        self._mappers: dict[int, TableMapper] = {}
        mapper = self._mapper(0)
        manifest = mapper.manifest
        distance = distance_of(ns.get("metric"))
        if known is None:
            for v in manifest.vectors:
                v.distance = distance
            dims = ns.get("dimensions")
            sizes = {v.size for v in manifest.vectors}
            if isinstance(dims, int) and dims > 0 and dims not in sizes:
                context.warn(f"{META_NAME} says {dims} dimensions but the vectors hold "
                             f"{', '.join(map(str, sorted(sizes)))}; the data wins")
            manifest.extra = {"vdf": {k: v for k, v in (
                ("index", name), ("namespace", ns.get("namespace")),
                ("model_name", ns.get("model_name")),
                ("exported_from", meta.get("exported_from")),
                ("metric", ns.get("metric"))) if v not in (None, "")}}
        else:
            manifest.extra = known.extra
            manifest.collection = known.collection
            manifest.digest = known.digest
        if mapper.narrowing_warning:
            context.warn(mapper.narrowing_warning)
        self._rows = sum(pf.metadata.num_rows for pf in self._files)
        self._check_count(known, ns, meta_at, name)
        manifest.count = self._rows
        manifest.source = {"format": "vdf", "location": location, "index": name,
                           "namespace": ns.get("namespace") or ""}
        self.manifest = manifest
        self.schema = manifest.schema()

    def _check_count(self, known: Manifest | None, ns: dict[str, Any], meta_at: str,
                     name: str) -> None:
        """The rows the data files hold against the count recorded: ``InputError`` when they
        differ from the count of vecferry's manifest (a file lost, cut or added); a warning
        when, without one, they differ from vector-io's ``exported_vector_count`` (which its
        exporters count as they fetch, before ids repeated across fetches are merged)."""
        label = f"{name}/{ns.get('namespace') or ''}".rstrip("/")
        if known is not None:
            if known.count is not None and known.count != self._rows:
                raise InputError(
                    f"{META_NAME} records {known.count:,} point(s) for {label!r}, but its data "
                    f"files hold {self._rows:,} ({listing([p.name for p in self.parts])})",
                    location=Location(meta_at),
                    hint="a data file was lost, cut short, replaced or added since vecferry "
                         "wrote the folder: copy it again whole")
            return
        exported = ns.get("exported_vector_count")
        if isinstance(exported, int) and not isinstance(exported, bool) and exported >= 0 \
                and exported != self._rows:
            self.context.warn(f"{META_NAME} says {exported:,} vector(s) of {label!r} were "
                              f"exported, but its data files hold {self._rows:,}; the data "
                              "wins (a file lost or added would explain it; so would ids an "
                              "exporter fetched twice)")

    def _mapper(self, i: int) -> TableMapper:
        """The mapper of file ``i``: files may differ in their payload columns."""
        if i in self._mappers:
            return self._mappers[i]
        pf = self._files[i]
        schema = pf.schema_arrow
        kv = pf.metadata.metadata or {}
        json_cols = tuple(orjson.loads(kv[JSON_COLUMNS_KEY])) if JSON_COLUMNS_KEY in kv else ()
        mapping = Mapping(self.mapping.id_column if self.mapping.id_column in schema.names
                          else None, self.mapping.vector_columns, json_columns=json_cols)
        wanted = [c for c in (mapping.id_column, *(s.split("=", 1)[-1]
                                                   for s in mapping.vector_columns))
                  if c is not None and c in schema.names]
        try:
            sample = (next(pf.iter_batches(batch_size=1024, columns=wanted), None)
                      if pf.metadata.num_rows else None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _undecodable(self.parts[i], exc) from exc
        forced = self._id_kind
        if i > 0:
            forced = self._mappers[0].manifest.id_kind
            if mapping.id_column is None and self.mapping.id_column is not None:
                raise InputError(f"file has no id column {self.mapping.id_column!r} but "
                                 f"{self.parts[0].name} has", location=Location(str(self.parts[i])))
        mapper = TableMapper(mapping, schema, str(self.parts[i]), sample, id_kind=forced,
                             manifest=self._known, flag=_FLAG)
        if i > 0:
            want = describe_vectors(self._mappers[0].manifest.vectors)
            have = describe_vectors(mapper.manifest.vectors)
            if want != have:
                raise InputError(f"this file holds {have}, but {self.parts[0].name} holds {want}",
                                 location=Location(str(self.parts[i])),
                                 hint="every file of a namespace holds the same vectors")
            mapper.manifest = self._mappers[0].manifest
        self._mappers[i] = mapper
        return mapper

    def count(self) -> int:
        return self._rows

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        number = 0
        narrowed = 0
        narrowed_type = None
        for i, (part, pf) in enumerate(zip(self.parts, self._files, strict=True)):
            total = pf.metadata.num_rows
            if start >= total:
                start, number = start - total, number + total
                continue
            mapper = self._mapper(i)
            row = 0
            try:
                for batch in pf.iter_batches(batch_size=batch_size, columns=mapper.columns):
                    if start:
                        skip = min(start, batch.num_rows)
                        batch, start, row = batch.slice(skip), start - skip, row + skip
                        if batch.num_rows == 0:
                            continue
                    out = mapper.convert(batch, row0=row, number0=number + row,
                                         source=str(part), context=self.context)
                    row += batch.num_rows
                    if out is not None:
                        yield out
            except (pa.ArrowInvalid, OSError) as exc:
                raise _undecodable(part, exc) from exc
            narrowed += mapper.narrowed
            narrowed_type = narrowed_type or mapper.narrowed_type
            mapper.narrowed = 0
            number += total
        if narrowed:
            self.context.warn(narrowed_warning(narrowed, narrowed_type or "float64"))

    def close(self) -> None:
        for pf in self._files:
            pf.close()


# ------------------------------------------------------------------------------------ writer


def _column_of(values: list[Any], present: list[bool]) -> tuple[pa.Array, bool]:
    """A typed column for one payload key (absent = null), and whether it is JSON text.

    An explicit JSON null forces JSON text, where it is the text ``null`` and absence is null.
    """
    vals = [v for v, p in zip(values, present, strict=True) if p]
    kinds = {type(v) for v in vals}
    typed = {bool: pa.bool_(), str: pa.string(), float: pa.float64(), int: pa.int64()}
    if len(kinds) == 1 and (t := next(iter(kinds))) in typed and not (
            t is int and any(not -(2**63) <= v < 2**63 for v in vals)):
        return pa.array([v if p else None for v, p in zip(values, present, strict=True)],
                        type=typed[t]), False
    from vecferry.points import dumps_payload

    return pa.array([dumps_payload(v) if p else None
                     for v, p in zip(values, present, strict=True)], type=pa.string()), True


def _undecodable(part: Path, exc: Exception) -> InputError:
    return InputError(f"cannot decode Parquet data: {exc}", location=Location(str(part)),
                      hint="the file may be truncated or corrupt")


class VdfWriter(ClosingWriter):
    """Writes a VDF folder (see the module docstring) under a temporary name, renamed on close
    (a remote one: under a hidden prefix, moved into place on close).

    ``UnsupportedError`` at open for a stream without vectors (ids and payloads only), sparse or
    multi vectors, or a vector whose column name would clash with the id; a payload key named
    like the id or a vector column is refused (``UnsupportedError`` naming it and the first
    point holding it) by ``write_batch`` for the batch holding it, before that batch's file is
    written.
    """

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, vdf_index: str | None = None,
                 distance: str | None = None, **options: Any):
        reject_unknown_options("vdf", options)
        schema = with_distance(schema, distance)
        self.location = location
        self.context = context
        self.manifest = manifest_of(schema)
        if not self.manifest.vectors:
            # VDF_META.json would say dimensions -1 and no vector columns, which vector-io
            # and vecferry's reader cannot import
            raise UnsupportedError("the stream has no vectors (its points carry ids and "
                                   "payloads only); a VDF dataset holds vectors",
                                   location=Location(location),
                                   hint="write Parquet or JSONL instead")
        cannot = [v for v in self.manifest.vectors if v.kind != "dense"]
        if cannot:
            names = ", ".join(f"{v.name or '(unnamed)'} ({v.kind})" for v in cannot)
            raise UnsupportedError(f"VDF holds dense vectors only; cannot hold: {names}",
                                   location=Location(location),
                                   hint="write Parquet or JSONL instead, which hold every kind")
        self.vector_columns = {v.name: v.name or "vector" for v in self.manifest.vectors}
        if ID_COLUMN in self.vector_columns.values():
            raise UnsupportedError("a vector named 'id' would clash with the id column",
                                   location=Location(location),
                                   hint="write Parquet or JSONL, which keep vectors apart from "
                                        "the id")
        self._reserved = [ID_COLUMN, *self.vector_columns.values()]
        self.index = self._index_name(vdf_index)
        # a remote folder is written under the output's hidden prefix, each data file
        # streamed up as it is written (as a Parquet directory is): nothing to make there
        self.out = AtomicPath(location.rstrip("/") or location, overwrite=overwrite,
                              directory=True)
        if isinstance(self.out.temp, Path):
            (self.out.temp / self.index).mkdir(parents=True)
        self.digest = StreamDigest(self.manifest)
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self.files: list[str] = []
        self.count = 0
        self.bytes = 0

    def _index_name(self, given: str | None) -> str:
        """The index (and data folder) name: ``vdf_index``, else the source's (a VDF source
        records it), else the output folder's name, else ``vectors``.

        The name becomes a folder of the output, so one that is not a plain name (``../x``,
        an absolute path, ``.``) would write outside it or over it: ``UsageError`` for the
        option, ``InputError`` naming the source for a name the source recorded. A source's
        name is refused rather than cleaned up: a cleaned-up name would not be the index
        name VDF_META.json records, and such a name is a damaged or hostile file, which the
        user should hear about; ``--vdf-index`` gives the run a name of its own."""
        if given is not None:
            if not isinstance(given, str) or not _plain_name(given):
                raise UsageError(f"--vdf-index {given!r} is not a plain name: the index is a "
                                 "folder inside the output, so its name is one path "
                                 "component (no '/', not '.' or '..')",
                                 location=Location(self.location),
                                 hint="e.g. --vdf-index vectors (in Python: "
                                      "writer_options={\"vdf_index\": \"vectors\"})")
            return given
        recorded = (self.manifest.extra.get("vdf") or {}).get("index")
        if recorded not in (None, ""):
            if not isinstance(recorded, str) or not _plain_name(recorded):
                source = self.manifest.source or {}
                where = source.get("location")
                if where and source.get("format") == "vdf":
                    where = f"{str(where).rstrip('/')}/{META_NAME}"
                raise InputError(f"the source's VDF index name {recorded!r} is not a plain "
                                 "name: written as the index folder, it would put files "
                                 "outside the output", location=Location(where or None),
                                 hint="name the index with --vdf-index NAME (in Python: "
                                      "writer_options={\"vdf_index\": NAME})")
            return recorded
        name = Path(self.location.rstrip("/")).name
        return name if _plain_name(name) else "vectors"

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._refuse_reserved_keys(batch)
        self.digest.update(batch)
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.count += batch.num_rows
        if self._pending_bytes >= FILE_BYTES:
            self._flush()

    def _refuse_reserved_keys(self, batch: pa.RecordBatch) -> None:
        """Refuse a batch whose payloads have a top-level key named like a VDF column.

        A substring scan finds the candidate rows in C; only those are parsed, to tell a
        top-level key from the same text in a value or a nested object.
        """
        import pyarrow.compute as pc

        texts = batch.column(PAYLOAD_COLUMN)
        hits = None
        for name in self._reserved:
            found = pc.match_substring(texts, orjson.dumps(name).decode())
            hits = found if hits is None else pc.or_(hits, found)
        for i in pc.indices_nonzero(pc.fill_null(hits, False)).to_pylist():
            payload = loads_exact(texts[i].as_py().encode())
            clash = next((k for k in self._reserved if isinstance(payload, dict)
                          and k in payload), None)
            if clash is not None:
                pid = decode_ids(batch.column(ID_COLUMN).slice(i, 1), self.manifest.id_kind)[0]
                raise self._clash(clash, pid)

    def _clash(self, key: str, point_id: Any = None) -> UnsupportedError:
        return UnsupportedError(
            f"payload key {key!r} has the name of the id or a vector column",
            location=Location(self.location, point_id=point_id),
            hint="VDF keeps payload keys as columns next to the id and vectors; rename the "
                 "key, or write Parquet or JSONL")

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending).combine_chunks()
        self._pending, self._pending_bytes = [], 0
        arrays: dict[str, pa.Array] = {ID_COLUMN: table.column(ID_COLUMN).chunk(0)}
        for v in self.manifest.vectors:
            # list<float32>, the type pandas-based tools (vector-io) write and read back;
            # float16 and uint8 values are exact in float32, the manifest restores the type
            col = table.column(v.column).chunk(0)
            arrays[self.vector_columns[v.name]] = col.cast(pa.list_(pa.float32()))
        texts = table.column(PAYLOAD_COLUMN).to_pylist()
        payloads = [None if t is None else loads_exact(t.encode()) for t in texts]
        keys: dict[str, None] = {}
        for p in payloads:
            if p:
                keys.update(dict.fromkeys(p))
        json_cols = []
        for key in keys:
            if key in arrays:  # a key the text scan missed, e.g. spelled with \u escapes
                raise self._clash(key)
            present = [bool(p) and key in p for p in payloads]
            values = [p[key] if ok else None for p, ok in zip(payloads, present, strict=True)]
            arr, is_json = _column_of(values, present)
            if is_json:
                json_cols.append(key)
            arrays[key] = arr
        out = pa.table(arrays)
        out = out.replace_schema_metadata({JSON_COLUMNS_KEY: orjson.dumps(json_cols)})
        rel = f"{self.index}/{len(self.files) + 1}.parquet"
        path = self.out.temp / rel
        if isinstance(path, Path):
            pq.write_table(out, path, compression="zstd")
            fsync_path(path)
            size = os.path.getsize(path)
        else:
            # the upload of an object under the hidden prefix (its output aborts it on failure)
            sink = arrow_sink(path)
            pq.write_table(out, sink, compression="zstd")
            size = sink.tell()
            sink.close()
        self.files.append(rel)
        self.bytes += size

    def close(self) -> dict[str, Any]:
        from vecferry import __version__

        self._flush()
        self.manifest.count = self.count
        self.manifest.digest = self.digest.as_dict()
        first = self.manifest.vectors[0] if self.manifest.vectors else None
        vdf = self.manifest.extra.get("vdf") or {}
        meta = {
            "version": __version__,
            "file_structure": [*self.files, META_NAME],
            "author": "vecferry",
            "exported_from": "vecferry",
            "indexes": {self.index: [{
                "namespace": "",
                "index_name": self.index,
                "total_vector_count": self.count,
                "exported_vector_count": self.count,
                "dimensions": first.size if first else -1,
                "model_name": vdf.get("model_name"),
                "vector_columns": list(self.vector_columns.values()),
                "data_path": self.index,
                "metric": first.distance if first else None,
                "index_config": self.manifest.collection,
            }]},
            "exported_at": dt.datetime.now().astimezone().isoformat(),
            "id_column": ID_COLUMN,
            "vecferry": {"manifest": self.manifest.to_dict()},
        }
        meta_path = self.out.temp / META_NAME
        text = orjson.dumps(meta, option=orjson.OPT_INDENT_2)
        meta_path.write_bytes(text)
        fsync_path(meta_path)
        self.out.commit()
        return {"bytes_written": self.bytes + len(text), "files": len(self.files)}

    def abort(self) -> None:
        self._pending = []
        self.out.abort()
