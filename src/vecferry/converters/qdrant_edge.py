"""Qdrant Edge shards: Qdrant's own engine in-process, through ``qdrant-edge-py``.

Location: ``qdrant-edge://PATH``, the shard directory (``qdrant-edge://./shard``,
``qdrant-edge:///srv/shard``). A shard holds one collection's worth of points and keeps its
configuration in ``PATH/edge_config.json`` in Qdrant's REST shape, which is what the reader puts
in the manifest. Docs: https://qdrant.tech/documentation/edge/ and the package's type stubs
(``qdrant_edge/__init__.pyi``).

The reader and writer are the Qdrant ones (``vecferry.converters.qdrant``) over an
``EdgeBackend``; what differs:

* no network, so no API key, timeout or request-size limit, and one request at a time
  (the engine call is the work; threads gain nothing);
* Edge builds HNSW graphs only when ``optimize()`` is called, never behind a load, so ``--bulk``
  has nothing to switch off; the writer flushes at the end and leaves optimizing to the user;
* payload indexes are recreated with their type and every parameter Edge's classes hold (a
  text index's tokenizer, case, token lengths, stopwords, stemmer, ...), read back in
  Qdrant's REST shape; a parameter Edge cannot hold, or an index type it lacks, is named in a
  warning before writing. A shard keeps no collection metadata: a load that creates one
  warns of it, as local mode warns of the settings it drops;
* ``edge_config.json`` keeps a sparse vector's index settings beside its modifier: they are
  read into Qdrant's shape (``{"index": {...}, "modifier": "idf"}``);
* a filter (``--filter``) is translated from Qdrant's JSON filter into Edge's classes; the
  conditions Edge has (match value/text/any/except/phrase/text_any/prefix/substring, range,
  values_count, is_empty, is_null, has_id, has_vector, nested, min_should) are supported,
  geo conditions are refused with a ``UsageError``, and so are booleans in ``any`` /
  ``except`` (as Qdrant refuses them).

Edge takes a lock on the shard: one ``EdgeShard`` per path per process, shared here by reader
and writer; another process holding it is reported as a ``TargetError`` / ``InputError``.

Damaged shard files make Edge fail with an error, or panic (an assertion or ``unwrap`` in the
engine): every call into Edge goes through ``EdgeBackend._engine``, which turns both into an
``InputError`` (reading) or ``TargetError`` (writing), chained to Edge's exception
(``engine_failure`` tells it). Rust's panic hook prints the panic to stderr before Python sees
it; no Edge API silences it.
"""

from __future__ import annotations

import math
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vecferry.converters.base import listing, reject_unknown_options
from vecferry.converters.qdrant import Backend, QdrantReader, QdrantWriter, loads_payload
from vecferry.errors import InputError, Location, TargetError, UsageError
from vecferry.stream import ID_COLUMN, PAYLOAD_COLUMN, decode_ids

CONFIG_FILE = "edge_config.json"
#: The optimizer settings of Qdrant's ``optimizer_config`` an Edge shard keeps (it has no
#: flush interval, optimization threads or memmap threshold: those are a server's).
EDGE_OPTIMIZER_KEYS = ("deleted_threshold", "vacuum_min_vector_number", "default_segment_number",
                       "max_segment_size", "indexing_threshold", "prevent_unoptimized")
#: what Qdrant Edge (and a shard snapshot unpacked into it) keeps in a shard directory; only a
#: directory holding nothing else is deleted by ``--overwrite``
SHARD_ENTRIES = frozenset({CONFIG_FILE, "segments", "wal", "shard_config.json",
                           "replica_state.json", "newest_clocks.json", "applied_seq.json"})

_SHARDS: dict[str, list[Any]] = {}
_SHARDS_LOCK = threading.Lock()


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic raised through PyO3 (``pyo3_runtime.PanicException``).

    It derives from ``BaseException``, so ``except Exception`` lets it through, and it cannot
    be imported by name: PyO3 makes the ``pyo3_runtime`` module at run time. So it is told by
    its class's name and module, along the class's bases (a subclass is one too)."""
    return any(cls.__name__ == "PanicException" and cls.__module__ == "pyo3_runtime"
               for cls in type(exc).__mro__)


def engine_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Edge saying it could not do what it was asked: a panic, or the bare
    ``Exception`` the binding raises for the engine's errors. Anything else (a ``TypeError``
    of a wrong argument, ``KeyboardInterrupt``, ``SystemExit``) is not its to explain."""
    return type(exc) is Exception or is_panic(exc)


def engine_text(exc: BaseException) -> str:
    """What Edge said, with the panic named as one (its message alone reads like an error of
    the data, e.g. "assertion failed: byte_offset < page_size_bytes")."""
    return f"Qdrant Edge panicked: {exc}" if is_panic(exc) else str(exc)


def edge_path(location: str) -> str:
    """The shard directory of a ``qdrant-edge://PATH`` location."""
    scheme, sep, rest = location.partition("://")
    if not sep or scheme.lower() != "qdrant-edge" or not rest.strip("/"):
        raise UsageError("not a Qdrant Edge location", location=Location(source=location),
                         hint="use qdrant-edge://PATH (the shard directory)")
    return rest.rstrip("/") or "/"


def _enum_name(value: Any) -> str:
    """``Distance.Dot`` -> ``Dot`` (Edge enums have no ``.name``)."""
    return str(value).rsplit(".", 1)[-1]


class EdgeBackend(Backend):
    """One Edge shard; ``create`` makes it, ``drop`` deletes its directory."""

    engine = "edge"
    max_parallel = 1
    limited_requests = False
    # shard.update releases the GIL while the engine works: the next batch's points are
    # built meanwhile (one request in flight, so upserts stay in order)
    overlap = True
    row_views = True

    def __init__(self, path: str, *, for_reading: bool):
        import qdrant_edge as qe

        self.qe = qe
        self.path = Path(path)
        self.key = str(self.path.resolve())
        self.label = f"qdrant-edge://{path}"
        self.name = None
        self.shard: Any = None
        #: whether a failure of the engine is the input's (InputError) or the target's
        self.for_reading = for_reading
        if for_reading and not self.exists():
            what = ("no such directory" if not self.path.exists()
                    else f"not a Qdrant Edge shard (no {CONFIG_FILE})")
            raise InputError(what, location=Location(self.label),
                             hint="check the path; it is the directory EdgeShard.load() opens")
        if not for_reading and not self.path.parent.is_dir():
            raise UsageError("the parent of the shard directory does not exist",
                             location=Location(self.label), hint="create it first")
        if not for_reading and not self.exists():
            self._refuse_foreign_directory()
        #: why a shard that is there cannot be opened, for a writer: ``--overwrite`` still
        #: replaces it; anything that needs its points or config raises this
        self.broken: TargetError | None = None
        if self.exists():
            try:
                self._attach(lambda: qe.EdgeShard.load(str(self.path)), for_reading)
            except TargetError as exc:
                if "WouldBlock" in str(exc.__cause__):
                    raise
                self.broken = exc

    # -- shard handles shared within the process

    def _attach(self, opener: Any, for_reading: bool) -> None:
        with _SHARDS_LOCK:
            entry = _SHARDS.get(self.key)
            if entry is None:
                try:
                    shard = opener()
                except BaseException as exc:
                    if not (isinstance(exc, Exception) or is_panic(exc)):
                        raise
                    # Edge locks a shard's WAL: WouldBlock means another process has it open;
                    # anything else (a panic too) is a file of the shard it cannot read
                    locked = "WouldBlock" in str(exc)
                    cls = InputError if for_reading else TargetError
                    raise cls(f"cannot open the shard: {engine_text(exc)}",
                              location=Location(self.label),
                              hint="another process has it open; Edge allows one at a time"
                              if locked else "the shard's files are damaged or incomplete; "
                              "restore it from a copy or a snapshot"
                              + ("" if for_reading else
                                 ", or run again with --overwrite to replace it")) from exc
                entry = [shard, 0]
                _SHARDS[self.key] = entry
            entry[1] += 1
            self.shard = entry[0]

    def _detach(self) -> None:
        if self.shard is None:
            return
        with _SHARDS_LOCK:
            entry = _SHARDS.get(self.key)
            self.shard = None
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del _SHARDS[self.key]
                self._engine(entry[0].close, "closing the shard")

    def _engine(self, fn: Any, what: str) -> Any:
        """``fn()``, a call into Edge, with its failures (``engine_failure``) raised as a
        ``InputError`` when reading, a ``TargetError`` when writing, naming the shard.
        A panic is what a damaged file makes of most calls, and it is a ``BaseException``
        that ``except Exception`` (the retry loop, the callers) would let through as a
        traceback."""
        try:
            return fn()
        except BaseException as exc:
            if not engine_failure(exc):
                raise
            raise self._failed(exc, what) from exc

    def _failed(self, exc: BaseException, what: str) -> InputError | TargetError:
        """The error for Edge's failure ``exc`` while ``what``."""
        message = f"Qdrant Edge {'panicked' if is_panic(exc) else 'failed'} while {what}: {exc}"
        if self.for_reading:
            return InputError(
                f"the shard's data is damaged or unreadable: {message}",
                location=Location(self.label),
                hint="restore the shard from a copy or a snapshot")
        return TargetError(
            message, location=Location(self.label),
            hint="the shard's files may be damaged; run again with --overwrite to write it "
                 "anew, or restore it from a copy or a snapshot")

    # -- Backend

    def exists(self) -> bool:
        return (self.path / CONFIG_FILE).is_file()

    def _opened(self) -> None:
        if self.shard is None and self.broken is not None:
            raise self.broken

    def config(self) -> dict[str, Any]:
        self._opened()
        raw = orjson.loads((self.path / CONFIG_FILE).read_bytes())
        schema = {}
        info_ = self._engine(self.shard.info, "reading the shard's info")
        for field, info in info_.payload_schema.items():
            schema[field] = {"data_type": _enum_name(info.data_type).lower(),
                             "params": _index_params(info.params)}
        return {
            "engine": "edge",
            "name": None,
            "vectors": raw.get("vectors") or {},
            "sparse_vectors": {name: _sparse_params(params) for name, params
                               in (raw.get("sparse_vectors") or {}).items()},
            "hnsw_config": raw.get("hnsw_config"),
            "quantization_config": raw.get("quantization_config"),
            "optimizer_config": {k: v for k, v in (raw.get("optimizers") or {}).items()
                                 if v is not None} or None,
            "on_disk_payload": raw.get("on_disk_payload"),
            "payload_schema": schema,
            "points_count": self.count(),
        }

    def create(self, config: dict[str, Any]) -> None:
        qe = self.qe
        vectors = {n: self._vector_params(p) for n, p in (config.get("vectors") or {}).items()}
        sparse = {}
        for n, p in (config.get("sparse_vectors") or {}).items():
            modifier = (p or {}).get("modifier")
            index = (p or {}).get("index") or {}
            # a value Edge has no member for was named before writing (sparse_losses)
            sparse[n] = qe.EdgeSparseVectorParams(
                full_scan_threshold=index.get("full_scan_threshold"),
                on_disk=index.get("on_disk"),
                modifier=qe.Modifier.Idf if modifier == "idf" else None,
                datatype=_member(qe.VectorStorageDatatype, index.get("datatype")),
                memory=_member(qe.Memory, index.get("memory")))
        cfg = qe.EdgeConfig(
            vectors=vectors or None, sparse_vectors=sparse or None,
            on_disk_payload=config.get("on_disk_payload"),
            hnsw_config=self._hnsw(config.get("hnsw_config")),
            quantization_config=self._quantization(config.get("quantization_config")),
            optimizers=self._optimizers(config.get("optimizer_config")),
        )
        existed = self.path.is_dir()  # then empty: see _refuse_foreign_directory
        with _SHARDS_LOCK:
            try:
                shard = qe.EdgeShard.create(str(self.path), cfg)
            except BaseException as exc:
                if not (isinstance(exc, Exception) or is_panic(exc)):
                    raise
                # Edge may fail half-way, leaving a config and segments it cannot load again
                # (which a later run would take for a damaged shard): nothing is kept
                self._clear(existed)
                raise TargetError(f"cannot create the shard: {engine_text(exc)}",
                                  location=Location(self.label),
                                  hint="nothing was left in its place; check that the "
                                       "directory is writable and has room, then run again"
                                  ) from exc
            _SHARDS[self.key] = [shard, 1]
        self.shard = shard
        self.broken = None

    def _clear(self, keep_directory: bool) -> None:
        """Remove what a failed ``EdgeShard.create`` left (the directory too, unless it was
        there before)."""
        if not keep_directory:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for entry in self.path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _vector_params(self, p: dict[str, Any]) -> Any:
        qe = self.qe
        datatype = {"float32": qe.VectorStorageDatatype.Float32,
                    "float16": qe.VectorStorageDatatype.Float16,
                    "uint8": qe.VectorStorageDatatype.Uint8}.get(p.get("datatype") or "float32")
        multi = None
        if p.get("multivector_config"):
            multi = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
        return qe.EdgeVectorParams(
            size=int(p["size"]), distance=getattr(qe.Distance, p["distance"]),
            on_disk=p.get("on_disk"), multivector_config=multi, datatype=datatype,
            quantization_config=self._quantization(p.get("quantization_config")),
            hnsw_config=self._hnsw(p.get("hnsw_config")))

    def _optimizers(self, o: dict[str, Any] | None) -> Any:
        # the settings Edge has no member for are named before writing (_warn_local_losses)
        kept = {k: o[k] for k in EDGE_OPTIMIZER_KEYS if (o or {}).get(k) is not None}
        return self.qe.EdgeOptimizersConfig(**kept) if kept else None

    def _hnsw(self, h: dict[str, Any] | None) -> Any:
        if not h:
            return None
        return self.qe.HnswIndexConfig(
            m=int(h.get("m", 16)), ef_construct=int(h.get("ef_construct", 100)),
            full_scan_threshold=int(h.get("full_scan_threshold", 10000)),
            max_indexing_threads=int(h.get("max_indexing_threads") or 0),
            on_disk=h.get("on_disk"), payload_m=h.get("payload_m"))

    def _quantization(self, q: dict[str, Any] | None) -> Any:
        qe = self.qe
        if not q:
            return None
        if "scalar" in q:
            s = q["scalar"]
            return qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=s.get("quantile"),
                                               always_ram=s.get("always_ram"))
        if "product" in q:
            p = q["product"]
            ratio = getattr(qe.CompressionRatio, str(p.get("compression", "x16")).upper())
            return qe.ProductQuantizationConfig(ratio, always_ram=p.get("always_ram"))
        if "binary" in q:
            return qe.BinaryQuantizationConfig(always_ram=q["binary"].get("always_ram"))
        return None

    def _refuse_foreign_directory(self) -> None:
        """A new shard goes into a new or empty directory only: Edge would create its files
        among the user's, and a later ``--overwrite`` would delete the whole directory."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError("this is a file, not a shard directory",
                             location=Location(self.label),
                             hint="name a new or empty directory for the shard")
        if self.path.is_dir():
            entries = sorted(e.name for e in self.path.iterdir())
            if entries:
                raise UsageError(
                    f"the directory is not a Qdrant Edge shard and is not empty (it holds "
                    f"{listing(entries)})", location=Location(self.label),
                    hint="name a new or empty directory for the shard")

    def drop(self) -> None:
        if not self.exists():
            return
        foreign = sorted(e.name for e in self.path.iterdir() if e.name not in SHARD_ENTRIES)
        if foreign:
            # --overwrite replaces a shard, not the user's files kept beside it
            raise TargetError("the shard directory also holds files that are not Qdrant "
                              f"Edge's: {listing(foreign)}", location=Location(self.label),
                              hint="move those out, or delete the directory yourself, then run "
                                   "again with --overwrite")
        self._detach()
        with _SHARDS_LOCK:
            if self.key in _SHARDS:
                raise TargetError("cannot drop a shard this process is also reading",
                                  location=Location(self.label),
                                  hint="close the reader of this shard first, or write to "
                                       "another shard")
        shutil.rmtree(self.path)

    def _point(self, p: dict[str, Any]) -> Any:
        qe = self.qe
        vec = p["vector"]
        if isinstance(vec, dict):
            out = {}
            for name, value in vec.items():
                if isinstance(value, dict):
                    out[name] = qe.SparseVector(value["indices"], value["values"])
                else:
                    out[name] = value
            vec = out[""] if list(out) == [""] else out
        pid = p["id"]
        return qe.Point(uuid.UUID(pid) if isinstance(pid, str) else pid, vec, p.get("payload"))

    def prepare(self, points: list[Any]) -> list[Any]:
        point_cls = self.qe.Point
        return [p if isinstance(p, point_cls) else self._point(p) for p in points]

    def point(self, pid: Any, vector: Any, payload: dict[str, Any] | None) -> Any:
        return self.qe.Point(uuid.UUID(pid) if isinstance(pid, str) else pid, vector, payload)

    def upsert(self, points: list[Any]) -> None:
        point_cls = self.qe.Point
        op = self.qe.UpdateOperation.upsert_points(
            [p if isinstance(p, point_cls) else self._point(p) for p in points])
        try:
            self.shard.update(op)
        except BaseException as exc:
            # Edge's errors are the writer's to report (with the ids it sent); a panic is a
            # BaseException the writer's retry loop would let through
            if not is_panic(exc):
                raise
            raise self._failed(exc, "writing points") from exc

    def count(self, flt: Any = None) -> int:
        self._opened()
        request = self.qe.CountRequest(exact=True, filter=flt)
        return int(self._engine(lambda: self.shard.count(request), "counting points"))

    def scroll(self, offset: Any, limit: int, flt: Any, vectors: bool, payload: bool):
        qe = self.qe
        if isinstance(offset, str):
            offset = uuid.UUID(offset)
        request = qe.ScrollRequest(offset=offset, limit=limit, filter=flt,
                                   with_payload=payload, with_vector=vectors)
        records, nxt = self._engine(lambda: self.shard.scroll(request), "scrolling points")
        return (self._engine(lambda: [self._record(r, vectors, payload) for r in records],
                             "reading points"),
                str(nxt) if isinstance(nxt, uuid.UUID) else nxt)

    def retrieve(self, ids: list[Any]) -> list[tuple[Any, dict[str, Any], Any]]:
        wanted = [uuid.UUID(i) if isinstance(i, str) else i for i in ids]
        records = self._engine(lambda: self.shard.retrieve(wanted, with_payload=True,
                                                           with_vector=True),
                               "retrieving points")
        return self._engine(lambda: [self._record(r, True, True) for r in records],
                            "reading points")

    def scroll_page(self, offset: Any, limit: int, flt: Any) -> tuple[Any, Any]:
        """A page converted one record at a time as it is iterated: the engine hands each
        vector over as a new list of Python floats, and a page of them alive at once
        (~25 MB at 1024 x 768) costs memory and the garbage collector's time."""
        qe = self.qe
        if isinstance(offset, str):
            offset = uuid.UUID(offset)
        request = qe.ScrollRequest(offset=offset, limit=limit, filter=flt, with_payload=True,
                                   with_vector=True)
        records, nxt = self._engine(lambda: self.shard.scroll(request), "scrolling points")
        return _Page(records, self), (str(nxt) if isinstance(nxt, uuid.UUID) else nxt)

    def _record(self, r: Any, vectors: bool, payload: bool, vec: Any = None
                ) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
        """``(id, {name: vector}, payload)`` of one record; ``vec`` is ``r.vector`` when the
        caller has already read it (each read converts the vector anew)."""
        pid = r.id
        if isinstance(pid, uuid.UUID):
            pid = str(pid)
        vd: dict[str, Any] = {}
        if vectors:
            if vec is None:
                vec = r.vector
            if vec is None:
                pass
            elif not isinstance(vec, dict):
                vd[""] = vec
            else:
                for name, value in vec.items():
                    if isinstance(value, self.qe.SparseVector):
                        vd[name] = {"indices": list(value.indices),
                                    "values": [float(x) for x in value.values]}
                    else:
                        vd[name] = value
        return pid, vd, r.payload if payload else None

    def parse_filter(self, flt: dict[str, Any]) -> Any:
        return EdgeFilter(self.qe).filter(flt)

    def search(self, vector: list[float], using: str, k: int) -> list[tuple[Any, Any]]:
        qe = self.qe
        request = qe.QueryRequest(limit=k, query=qe.Query.Nearest(vector, using=using or None),
                                  with_payload=True)
        return self._engine(lambda: [
            (str(h.id) if isinstance(h.id, uuid.UUID) else h.id, h.payload)
            for h in self.shard.query(request)], "searching")

    def create_index(self, field: str, index: dict[str, Any]) -> bool:
        """Create the payload index ``index`` (REST-shaped, as in a manifest) on ``field``,
        with every parameter Edge holds; the others were named before writing
        (``EdgeWriter._warn_index_losses``). ``TargetError`` for a type Edge has no index
        of (the writer leaves such an index out, with a warning, before writing)."""
        schema, _ = edge_index(self.qe, index)
        if schema is None:
            raise TargetError(f"payload index on {field!r} not created: Qdrant Edge has no "
                              f"{index.get('data_type')!r} index",
                              location=Location(self.label),
                              hint=f"Edge's payload indexes: {', '.join(INDEX_TYPES)}")
        op = self.qe.UpdateOperation.create_field_index(field, schema)
        self._engine(lambda: self.shard.update(op), f"creating the payload index on {field!r}")
        return True

    def flush(self) -> None:
        if self.shard is not None:
            self._engine(self.shard.flush, "flushing the shard")

    def close(self) -> None:
        self._detach()


#: Qdrant's payload index types (REST ``type``) -> Edge's class of their parameters
INDEX_TYPES = {"keyword": "KeywordIndexParams", "integer": "IntegerIndexParams",
               "float": "FloatIndexParams", "bool": "BoolIndexParams", "geo": "GeoIndexParams",
               "text": "TextIndexParams", "datetime": "DatetimeIndexParams",
               "uuid": "UuidIndexParams"}
_COMMON_PARAMS = ("on_disk", "enable_hnsw", "memory", "nested")
#: the REST parameters of each index type that Edge's class holds, by the same names
_PARAM_ATTRS = {
    "keyword": ("is_tenant", "prefix", *_COMMON_PARAMS),
    "integer": ("lookup", "range", "is_principal", *_COMMON_PARAMS),
    "float": ("is_principal", *_COMMON_PARAMS),
    "bool": _COMMON_PARAMS,
    "geo": _COMMON_PARAMS,
    "text": ("tokenizer", "min_token_len", "max_token_len", "lowercase", "ascii_folding",
             "phrase_matching", "stopwords", "stemmer", "scoring", *_COMMON_PARAMS),
    "datetime": ("is_principal", *_COMMON_PARAMS),
    "uuid": ("is_tenant", *_COMMON_PARAMS),
}
_FLAG_PARAMS = frozenset({"on_disk", "enable_hnsw", "is_tenant", "prefix", "lookup", "range",
                          "is_principal", "lowercase", "ascii_folding", "phrase_matching"})


class _Unkept(ValueError):
    """A REST index parameter value Edge has no counterpart for."""


def _member(enum: Any, value: Any) -> Any:
    """The member of the Edge enum ``enum`` that Qdrant's REST API names ``value``
    (``"cached"`` -> ``Memory.Cached``); None when it has none (Edge enums cannot be
    iterated, so their attributes are searched)."""
    if not isinstance(value, str):
        return None
    for name in dir(enum):
        if name.lower() == value.lower() and isinstance(getattr(enum, name), enum):
            return getattr(enum, name)
    return None


def _edge_member(enum: Any, value: Any) -> Any:
    member = _member(enum, value)
    if member is None:
        raise _Unkept(value)
    return member


def _edge_value(qe: Any, attr: str, value: Any) -> Any:
    """Edge's value for the REST index parameter ``attr``; ``_Unkept`` when it has none."""
    if attr in _FLAG_PARAMS:
        if type(value) is not bool:
            raise _Unkept(value)
        return value
    if attr in ("min_token_len", "max_token_len"):
        if type(value) is not int or not 0 <= value < 2**64:
            raise _Unkept(value)
        return value
    if attr == "nested":
        if not isinstance(value, str) or not value:
            raise _Unkept(value)
        return value
    if attr == "memory":
        return _edge_member(qe.Memory, value)
    if attr == "tokenizer":
        return _edge_member(qe.TokenizerType, value)
    if attr == "stopwords":
        # a language's list, or {"languages": [...], "custom": [...]}
        if isinstance(value, str):
            return _edge_member(qe.Language, value)
        if (not isinstance(value, dict) or set(value) - {"languages", "custom"}
                or not all(v is None or (isinstance(v, list)
                                         and all(isinstance(x, str) for x in v))
                           for v in value.values())):
            raise _Unkept(value)
        languages, custom = value.get("languages"), value.get("custom")
        return qe.StopwordsSet(
            languages=None if languages is None
            else {_edge_member(qe.Language, x) for x in languages},
            custom=None if custom is None else set(custom))
    if attr == "stemmer":
        if value == {"type": "none"}:
            return qe.DisabledStemmer()
        if (isinstance(value, dict) and set(value) == {"type", "language"}
                and value["type"] == "snowball"):
            return qe.SnowballParams(_edge_member(qe.SnowballLanguage, value["language"]))
        raise _Unkept(value)
    if attr == "scoring":
        if type(value) is bool:
            return value
        if isinstance(value, dict) and set(value) == {"type"}:
            return qe.TextScoringParams(type=_edge_member(qe.TextScoringType, value["type"]))
        raise _Unkept(value)
    raise _Unkept(value)


def _shown(key: str, value: Any) -> str:
    return f"{key} {orjson.dumps(value, default=str).decode()}"


def edge_index(qe: Any, index: dict[str, Any]) -> tuple[Any, list[str]]:
    """Edge's schema for the REST-shaped payload index ``index`` (``{"data_type": "text",
    "params": {"type": "text", "tokenizer": "word", ...}}``), a ``PayloadSchemaType`` when it
    has no parameters; and the parameters Edge cannot hold, each as ``name value`` (left out
    of the schema). The schema is None when Edge has no index of that type."""
    dtype = str(index.get("data_type") or "keyword").lower()
    if dtype not in INDEX_TYPES:
        return None, []
    params = index.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        return getattr(qe.PayloadSchemaType, dtype.capitalize()), [_shown("params", params)]
    allowed = _PARAM_ATTRS[dtype]
    kwargs: dict[str, Any] = {}
    lost: list[str] = []
    for key, value in params.items():
        if value is None or (key == "type" and value == dtype):
            continue
        if key not in allowed:
            lost.append(_shown(key, value))
            continue
        try:
            kwargs[key] = _edge_value(qe, key, value)
        except _Unkept:
            lost.append(_shown(key, value))
    if not kwargs:
        return getattr(qe.PayloadSchemaType, dtype.capitalize()), lost
    return getattr(qe, INDEX_TYPES[dtype])(**kwargs), lost


def _rest_value(attr: str, value: Any) -> Any:
    """The REST form of an Edge index parameter's value; None for one it has not set."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        # Edge gives a nested index's array back as "offers[]"; Qdrant's REST API names it
        # "offers" (and Edge takes either)
        return value.removesuffix("[]") if attr == "nested" else value
    kind = type(value).__name__
    if kind == "StopwordsSet":
        out: dict[str, Any] = {}
        if value.languages is not None:
            out["languages"] = sorted(_enum_name(x).lower() for x in value.languages)
        if value.custom is not None:
            out["custom"] = sorted(value.custom)
        return out
    if kind == "SnowballParams":
        return {"type": "snowball", "language": _enum_name(value.language).lower()}
    if kind == "DisabledStemmer":
        return {"type": "none"}
    if kind == "TextScoringParams":
        return {"type": _enum_name(value.type).lower()}
    return _enum_name(value).lower()  # Memory, TokenizerType, Language


def _index_params(params: Any) -> dict[str, Any] | None:
    """Edge index parameters as REST-shaped JSON (``{"type": "text", "tokenizer":
    "whitespace", "lowercase": false, ...}``, as a server reports them); None when none is
    set."""
    if params is None:
        return None
    cls = type(params).__name__
    rest = next((t for t, c in INDEX_TYPES.items() if c == cls), None)
    if rest is None:
        return None
    out: dict[str, Any] = {}
    for attr in _PARAM_ATTRS[rest]:
        value = _rest_value(attr, getattr(params, attr, None))
        if value is not None:
            out[attr] = value
    return {"type": rest, **out} if out else None


#: where Edge keeps a sparse vector's index settings in ``edge_config.json``, all beside the
#: modifier; Qdrant's REST shape has them under ``index``
_SPARSE_INDEX_KEYS = ("full_scan_threshold", "on_disk", "memory", "datatype")


def _sparse_params(params: Any) -> dict[str, Any]:
    """A sparse vector's config from ``edge_config.json`` (``{"full_scan_threshold": 500,
    "on_disk": true, "modifier": "idf"}``) in Qdrant's REST shape (``{"index":
    {"full_scan_threshold": 500, "on_disk": true}, "modifier": "idf"}``), which
    ``EdgeBackend.create`` and the server writer read. One already in that shape is kept as
    it is; a key of neither stays where it is."""
    if not isinstance(params, dict):
        return {}
    out = {k: v for k, v in params.items() if k not in _SPARSE_INDEX_KEYS and v is not None}
    index = dict(params["index"]) if isinstance(params.get("index"), dict) else {}
    index.update({k: params[k] for k in _SPARSE_INDEX_KEYS if params.get(k) is not None})
    if index:
        out["index"] = index
    return out


def sparse_losses(qe: Any, sparse: dict[str, Any]) -> list[str]:
    """The settings of the REST-shaped sparse vector configs ``sparse`` an Edge shard
    cannot hold, each as ``sparse vector 'NAME' setting value``."""
    lost = []
    for name, params in sparse.items():
        if not isinstance(params, dict):
            continue
        for key, value in params.items():
            if key == "modifier":
                if str(value).lower() not in ("idf", "none"):
                    lost.append(f"sparse vector {name!r} {_shown(key, value)}")
            elif key == "index" and isinstance(value, dict):
                for k, v in value.items():
                    ok = (v is None or (k in ("full_scan_threshold", "on_disk")) or
                          (k == "memory" and _member(qe.Memory, v) is not None) or
                          (k == "datatype" and _member(qe.VectorStorageDatatype, v) is not None))
                    if not ok:
                        lost.append(f"sparse vector {name!r} index {_shown(k, v)}")
            elif value is not None:
                lost.append(f"sparse vector {name!r} {_shown(key, value)}")
    return lost


_EDGE_CONDITIONS = ("match (value, text, text_any, phrase, prefix, substring, any, except), "
                    "range, values_count, is_empty, is_null, has_id, has_vector, nested")
_FILTER_HINT = (f"Qdrant Edge filters by {_EDGE_CONDITIONS}, combined with must, should, "
                "must_not and min_should; rewrite the filter with those, or copy without "
                "--filter and filter the copy")


def _refuse(what: str, fragment: Any) -> UsageError:
    """The error for a part of a ``--filter`` Edge cannot take, showing that part as JSON."""
    shown = orjson.dumps(fragment, default=str).decode()
    return UsageError(f"--filter: {what}: {shown}", hint=_FILTER_HINT)


class EdgeFilter:
    """Qdrant's JSON filter (https://qdrant.tech/documentation/concepts/filtering/) as Edge
    classes. ``UsageError`` names, as JSON, the part Edge cannot express or that is not
    shaped like a Qdrant filter."""

    def __init__(self, qe: Any):
        self.qe = qe

    def filter(self, f: dict[str, Any]) -> Any:
        if not isinstance(f, dict):
            raise _refuse("a filter must be an object", f)
        unknown = set(f) - {"must", "should", "must_not", "min_should"}
        if unknown:
            raise _refuse(f"unknown filter clause(s) {', '.join(sorted(unknown))}", f)
        kwargs: dict[str, Any] = {}
        for clause in ("must", "should", "must_not"):
            if f.get(clause) is not None:
                items = f[clause] if isinstance(f[clause], list) else [f[clause]]
                kwargs[clause] = [self.condition(c) for c in items]
        if f.get("min_should"):
            ms = f["min_should"]
            if (not isinstance(ms, dict) or not isinstance(ms.get("conditions"), list)
                    or type(ms.get("min_count")) is not int):
                raise _refuse("min_should needs a list of conditions and an integer "
                              "min_count", ms)
            kwargs["min_should"] = self.qe.MinShould(
                [self.condition(c) for c in ms["conditions"]], ms["min_count"])
        return self.qe.Filter(**kwargs)

    def condition(self, c: dict[str, Any]) -> Any:
        qe = self.qe
        if not isinstance(c, dict):
            raise _refuse("a filter condition must be an object", c)
        if {"must", "should", "must_not", "min_should"} & set(c):
            return self.filter(c)
        if "has_id" in c:
            return qe.HasIdCondition({self._point_id(i, c) for i in self._list(c, "has_id")})
        if "has_vector" in c:
            if not isinstance(c["has_vector"], str):
                raise _refuse("has_vector takes a vector name", c)
            return qe.HasVectorCondition(c["has_vector"])
        if "is_empty" in c:
            return qe.IsEmptyCondition(self._key(c, "is_empty"))
        if "is_null" in c:
            return qe.IsNullCondition(self._key(c, "is_null"))
        if "nested" in c:
            nested = c["nested"]
            if not isinstance(nested, dict) or "filter" not in nested:
                raise _refuse("nested takes a key and a filter", c)
            return qe.NestedCondition(self._key(c, "nested"), self.filter(nested["filter"]))
        if not isinstance(c.get("key"), str):
            raise _refuse("condition not supported by Qdrant Edge", c)
        kwargs: dict[str, Any] = {}
        if "match" in c:
            kwargs["match"] = self.match(c["match"])
        if "range" in c:
            kwargs["range"] = self.range(c)
        if "values_count" in c:
            kwargs["values_count"] = self.bounds(c, "values_count", qe.ValuesCount, (int,))
        for flag in ("is_empty", "is_null"):
            if flag in c:
                kwargs[flag] = c[flag]
        unknown = set(c) - {"key", "match", "range", "values_count", "is_empty", "is_null"}
        if unknown or not kwargs:
            raise _refuse("condition not supported by Qdrant Edge", c)
        return qe.FieldCondition(c["key"], **kwargs)

    def match(self, m: dict[str, Any]) -> Any:
        qe = self.qe
        table = {"value": qe.MatchValue, "text": qe.MatchText, "text_any": qe.MatchTextAny,
                 "phrase": qe.MatchPhrase, "prefix": qe.MatchPrefix,
                 "substring": qe.MatchSubstring, "any": qe.MatchAny, "except": qe.MatchExcept}
        if not isinstance(m, dict) or len(m) != 1 or next(iter(m)) not in table:
            raise _refuse("match not supported by Qdrant Edge", m)
        key, value = next(iter(m.items()))
        if key == "value" and type(value) is bool:
            # the binding tries an integer before a boolean, and a Python bool is an int:
            # True would match the integer 1, never true. numpy's bool is no int, so it
            # reaches the boolean (as qdrant-client matches it)
            return qe.MatchValue(np.bool_(value))
        if key in ("any", "except") and isinstance(value, list) and any(
                type(v) is bool for v in value):
            # Edge would take the booleans as the integers 1 and 0; Qdrant refuses them
            raise _refuse(f"match {key} takes a list of strings or of integers, not booleans "
                          '(as in Qdrant); match a boolean with {"value": true} or '
                          '{"value": false}, several with "should"', m)
        try:
            return table[key](value)
        except TypeError as exc:  # the binding's message lists its Rust variants
            takes = {"value": "a string, an integer or a boolean",
                     "any": "a list of strings or of integers",
                     "except": "a list of strings or of integers"}.get(key, "a string")
            raise _refuse(f"match {key} takes {takes}", m) from exc

    def range(self, c: dict[str, Any]) -> Any:
        r = c["range"]
        if isinstance(r, dict) and any(isinstance(v, str) for v in r.values()):
            return self.bounds(c, "range", self.qe.RangeDateTime, (str,))
        return self.bounds(c, "range", self.qe.RangeFloat, (int, float))

    @staticmethod
    def bounds(c: dict[str, Any], field: str, cls: Any, types: tuple[type, ...]) -> Any:
        """``cls(gt=..., gte=..., lt=..., lte=...)`` from ``c[field]``, checked first: Edge's
        classes raise TypeError, which would not say which condition was wrong."""
        b = c[field]
        if (not isinstance(b, dict) or not b or set(b) - {"gt", "gte", "lt", "lte"}
                or any(v is not None and (type(v) is bool or not isinstance(v, types))
                       for v in b.values())):
            raise _refuse(f"{field} takes gt, gte, lt and lte bounds", c)
        try:
            return cls(**b)
        except (TypeError, ValueError) as exc:  # e.g. a date-time Edge cannot parse
            raise _refuse(f"{field} bounds Qdrant Edge cannot take ({exc})", c) from exc

    @staticmethod
    def _key(c: dict[str, Any], field: str) -> str:
        value = c[field]
        if not isinstance(value, dict) or not isinstance(value.get("key"), str):
            raise _refuse(f"{field} takes an object with a payload key", c)
        return value["key"]

    @staticmethod
    def _list(c: dict[str, Any], field: str) -> list[Any]:
        if not isinstance(c[field], list):
            raise _refuse(f"{field} takes a list", c)
        return c[field]

    @staticmethod
    def _point_id(i: Any, c: dict[str, Any]) -> Any:
        if type(i) is int and i >= 0:
            return i
        if isinstance(i, str):
            try:
                return uuid.UUID(i)
            except ValueError:
                pass
        raise _refuse(f"has_id holds {orjson.dumps(i, default=str).decode()}, which is not a "
                      "point id (an unsigned integer or a UUID)", c)


class _Page:
    """Scroll records, converted to ``Backend.scroll`` tuples as they are iterated."""

    def __init__(self, records: list[Any], backend: EdgeBackend):
        self.records = records
        self.backend = backend

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Any:
        record = self.backend._record
        try:
            for r in self.records:
                # each attribute read converts the engine's value anew
                pid, vec = r.id, r.vector
                if type(pid) is int and type(vec) is list:  # the common case, inline
                    yield pid, {"": vec}, r.payload
                else:
                    yield record(r, True, True, vec)
        except BaseException as exc:
            if not engine_failure(exc):
                raise
            raise self.backend._failed(exc, "reading points") from exc


def open_edge_backend(location: str, *, for_reading: bool) -> EdgeBackend:
    return EdgeBackend(edge_path(location), for_reading=for_reading)


class EdgeReader(QdrantReader):
    """Stream an Edge shard (see ``QdrantReader``); no API key or timeout."""

    format_name = "qdrant-edge"

    def __init__(self, location: str, *, context: Any, api_key_env: str | None = None,
                 timeout: float | None = None, **options: Any):
        reject_unknown_options(self.format_name,
                               {"api_key_env": api_key_env, "timeout": timeout})
        super().__init__(location, context=context, **options)

    def _open(self, location: str, **kw: Any) -> Backend:
        return open_edge_backend(location, for_reading=True)


# ------------------------------------------------------------------------ payload floats

#: powers of ten as serde_json's table holds them (Rust literals: correctly rounded)
_POW10 = tuple(float(f"1e{i}") for i in range(309))
#: integers from here on are not all exactly doubles
_EXACT_INTEGERS = 2**53
#: in a payload's JSON text, a number Edge may give back changed (see ``edge_float``): one in
#: exponent form, or with 16 digits or more. Others always come back exactly
_MAYBE_CHANGED = r"[:,\[]\s*-?(?:[0-9][0-9.]*[eE]|[0-9.]{17})"


def edge_float(x: float) -> float:
    """The float Qdrant Edge gives back for a payload float ``x``.

    Edge keeps a payload as JSON text: it writes a float with the shortest digits that read
    back as it (Ryu; as Python's ``repr``, in full up to 16 integer digits: ``1200.0``) and
    reads it with serde_json's fast parser, not its exact one (the ``float_roundtrip``
    feature): the digits as an integer (rounded to a double once they pass 2^53), then
    multiplied or divided by a power of ten (inexact past 1e22). Where both steps are exact
    the result is ``x``; else it may be one unit in the last place off: about one in five
    floats of 17 digits (``3.8000000000000003`` comes back as ``3.8``). Checked against
    Edge (qdrant-edge-py 0.9) on 85,000 floats, subnormals and extremes among them.
    """
    if x == 0.0 or not math.isfinite(x):
        return x
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    frac = frac.rstrip("0")
    digits = (whole + frac).lstrip("0")
    k = (int(exp) if exp else 0) - len(frac)
    shortest = digits.rstrip("0")
    k += len(digits) - len(shortest)
    if k >= 0 and len(shortest) + k <= 16:
        # written in full with ".0": read as all its digits, the zeros and the ".0" too
        significand, e = int(shortest) * 10 ** (k + 1), -1
    else:
        significand, e = int(shortest), k
    if significand < _EXACT_INTEGERS and -22 <= e <= 22:
        return x  # one correctly rounded operation on exact numbers
    f = float(significand)
    while e < -308:
        if f == 0.0:
            break
        f /= 1e308
        e += 308
    else:
        f = f * _POW10[e] if e >= 0 else f / _POW10[-e]
    return math.copysign(f, x)


def changed_float(value: Any, path: str = "") -> tuple[str, float, float] | None:
    """(path, float, what Edge gives back) of the first float of a payload Edge would give
    back changed, else None."""
    from vecferry.mapping import find_first

    def changed(item: Any, at: str) -> tuple[str, float, float] | None:
        if type(item) is not float:
            return None
        back = edge_float(item)
        return None if back == item else (at, item, back)

    return find_first(value, changed, path)


class EdgeWriter(QdrantWriter):
    """Load a stream into an Edge shard (see ``QdrantWriter``), creating it when missing.

    ``mode="overwrite"`` deletes the shard directory and creates it again; ``--bulk`` is
    accepted and does nothing (Edge indexes only in ``optimize()``). Payload floats Edge
    would give back changed (see ``edge_float``) are named, before they are written, in one
    warning counting the points that hold them.
    """

    format_name = "qdrant-edge"

    def __init__(self, location: str, schema: Any, *, context: Any,
                 api_key_env: str | None = None, timeout: float | None = None,
                 batch_bytes: int | None = None, **options: Any):
        reject_unknown_options(self.format_name,
                               {"api_key_env": api_key_env, "timeout": timeout})
        #: points whose payload floats Edge changes, the first of them, and the warning
        self._changed_points = 0
        self._first_changed: tuple[Any, str, float, float] | None = None
        self._float_warning: str | None = None
        super().__init__(location, schema, context=context, batch_bytes=batch_bytes, **options)

    def _open(self, location: str, **kw: Any) -> Backend:
        return open_edge_backend(location, for_reading=False)

    def _prepare(self, bulk: bool) -> None:
        super()._prepare(bulk)
        self._warn_index_losses()

    def _warn_index_losses(self) -> None:
        """Name, before writing, what of the payload indexes this run will create a shard
        cannot hold: a parameter Edge has no counterpart for (the index is created without
        it), or a whole index of a type Edge lacks (left out of ``wanted``, so none is
        tried). Indexes the shard already has are left as they are, so are not named."""
        schema = self.wanted.get("payload_schema") or {}
        if not schema:
            return
        creating = bool(self._pending and self._pending[0])
        have = {} if creating else (self._rpc(self.backend.config, "reading the collection "
                                              "config").get("payload_schema") or {})
        qe = self.backend.qe
        kept = {}
        for field, index in schema.items():
            if field in have or not isinstance(index, dict):
                kept[field] = index
                continue
            made, lost = edge_index(qe, index)
            if made is None:
                self.context.warn(
                    f"{self.location}: payload index on {field!r} not created: Qdrant Edge "
                    f"has no {index.get('data_type')!r} index (it has "
                    f"{', '.join(INDEX_TYPES)}), so filters on {field!r} scan every point; "
                    "give it again with --collection-config '{\"payload_schema\": ...}' when "
                    "copying this shard out")
                continue
            kept[field] = index
            if lost:
                self.context.warn(
                    f"{self.location}: payload index on {field!r}: {', '.join(lost)} not "
                    f"kept: Qdrant Edge's {index.get('data_type') or 'keyword'} index has no "
                    "such setting, so the index gets Edge's defaults for them (filters on it "
                    "may match other points than the source's), as does a copy out of this "
                    "shard; give them again with --collection-config '{\"payload_schema\": "
                    "...}' when copying it out")
        if len(kept) != len(schema):
            self.wanted["payload_schema"] = kept  # a new dict: the manifest's stays whole

    def _warn_local_losses(self) -> None:
        """Edge's counterpart of local mode's warning (``QdrantWriter._warn_local_losses``,
        at the same points: a dry run's plan, and a shard this run created): the settings
        of the new shard Edge cannot hold, which a copy out of it would silently lack."""
        metadata = self.wanted.get("metadata")
        if metadata:
            self.context.warn(
                f"{self.location}: {_shown('metadata', metadata)} not kept: a Qdrant Edge "
                "shard keeps no collection metadata, so a copy out of this shard has none; "
                "give it again with --collection-config when copying it out")
        lost = sparse_losses(self.backend.qe, self.wanted.get("sparse_vectors") or {})
        if lost:
            self.context.warn(
                f"{self.location}: {', '.join(lost)} not kept: Qdrant Edge has no such "
                "sparse vector setting, so the shard gets Edge's default, and so does a copy "
                "out of it; give them again with --collection-config when copying it out")
        # only settings given with --collection-config are named: a server reports its own
        # optimizer settings for every collection, which were not chosen for this one
        optimizers = (self._overrides or {}).get("optimizer_config") or {}
        lost = [_shown(k, v) for k, v in optimizers.items()
                if k not in EDGE_OPTIMIZER_KEYS and v is not None]
        if (self._overrides or {}).get("wal_config"):
            lost.append("wal_config")
        if lost:
            self.context.warn(
                f"{self.location}: {', '.join(lost)} (from --collection-config) not kept: a "
                f"Qdrant Edge shard keeps only the optimizer settings "
                f"{', '.join(EDGE_OPTIMIZER_KEYS)}")

    def _check_payloads(self, batch: pa.RecordBatch) -> None:
        """Count the points of ``batch`` holding a payload float Edge would change, and keep
        the warning saying so up to date. Only the payloads whose text holds a number that
        may change (``_MAYBE_CHANGED``, tested by Arrow on the whole column) are parsed."""
        texts = batch.column(PAYLOAD_COLUMN)
        if not batch.num_rows or texts.null_count == batch.num_rows:
            return
        maybe = pc.match_substring_regex(texts, _MAYBE_CHANGED).fill_null(False)
        rows = np.flatnonzero(maybe.to_numpy(zero_copy_only=False))
        if not len(rows):
            return
        picked = pa.array(rows)
        found = 0
        for row, text in zip(rows, texts.take(picked).to_pylist(), strict=True):
            change = changed_float(loads_payload(text))
            if change is None:
                continue
            found += 1
            if self._first_changed is None:
                pid = decode_ids(batch.column(ID_COLUMN).slice(int(row), 1),
                                 self.manifest.id_kind)[0]
                self._first_changed = (pid, *change)
        if found:
            self._changed_points += found
            self._warn_changed_floats()

    def _warn_changed_floats(self) -> None:
        assert self._first_changed is not None
        pid, path, value, back = self._first_changed
        n = self._changed_points
        text = (f"{self.location}: {n} point(s) hold payload floats that Qdrant Edge gives "
                f"back one unit in the last place off (it reads them back without exact "
                f"rounding), the first id {pid!r}, whose payload field {path!r} holds "
                f"{value!r}, given back as {back!r}: keep numbers that must stay exact as "
                "strings in the payload (qdrant-local:// keeps floats exactly)")
        warnings = self.context.warnings
        if self._float_warning in warnings:
            warnings[warnings.index(self._float_warning)] = text
        else:
            self.context.warn(text)
        self._float_warning = text
