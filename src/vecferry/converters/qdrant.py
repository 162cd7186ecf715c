"""Qdrant collections: a server (REST or gRPC) or qdrant-client's local-mode folder.

Locations:

* ``qdrant://HOST[:PORT]/COLLECTION`` - REST over HTTP (port 6333 unless given);
  ``qdrants://`` for HTTPS; ``?grpc=1`` to talk gRPC (port 6334 unless given).
  The API key comes from ``QDRANT_API_KEY`` or the variable named by ``api_key_env``; a key in
  the URI is refused, and no key is ever put in a message or report.
* ``qdrant-local://PATH/COLLECTION`` - the folder a ``QdrantClient(path=PATH)`` opens
  (``qdrant-local://./qdrant_data/docs``, ``qdrant-local:///srv/qdrant_data/docs``).

Qdrant's Edge engine (``qdrant-edge://``) lives in ``qdrant_edge.py`` and reuses the reader and
writer here through the small ``Backend`` interface; only the engine calls differ.

API references: points and scroll (``next_page_offset``)
https://qdrant.tech/documentation/concepts/points/ , collections
https://qdrant.tech/documentation/concepts/collections/ , payload indexes
https://qdrant.tech/documentation/concepts/indexing/ , bulk upload (``hnsw_config.m = 0``)
https://qdrant.tech/documentation/database-tutorials/bulk-upload/ , local mode
https://github.com/qdrant/qdrant-client#local-mode .

Ids. Qdrant holds unsigned 64-bit integers and UUIDs. Integer ids and UUIDs in canonical form
(lower-case, hyphenated) are written as they are. Any other id (a string, or a UUID spelled in
another form, which Qdrant would rewrite) becomes ``uuid5(ID_NAMESPACE, str(id))`` and the
original is kept in the payload field ``_vecferry_id`` (``id_field``). The reader reverses this
for every point whose id is exactly the UUIDv5 of that field, and drops the field, so a round
trip restores the ids and their types.

The manifest's ``collection`` (see ``collection_config``) records the collection as Qdrant
describes it (REST field names): vectors, sparse vectors, distance, datatype, on_disk, HNSW,
quantization, optimizer and WAL settings, shard number, replication factor and payload indexes.
The writer recreates the collection from it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import sqlite3
import struct
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import numpy as np
import orjson
import pyarrow as pa

from vecferry.converters.base import (
    ClosingReader,
    ClosingWriter,
    Context,
    listing,
    reject_unknown_options,
)
from vecferry.errors import (
    InputError,
    Location,
    OutputExistsError,
    RecordError,
    TargetError,
    TransientError,
    UnsupportedError,
    UsageError,
    VecferryError,
)
from vecferry.points import (
    BatchBuilder,
    dumps_payload,
    huge_int_path,
    iter_points,
    non_finite_rows,
    reject_from_row,
)
from vecferry.retry import Failure, RetryPolicy, classify
from vecferry.stream import (
    ID_COLUMN,
    MAX_UINT64,
    PAYLOAD_COLUMN,
    Manifest,
    VectorSpec,
    decode_ids,
    encode_id,
    manifest_of,
    merge_id_kinds,
    record_error,
)

#: Fixed namespace of the UUIDv5 ids vecferry gives ids Qdrant cannot hold
#: (``uuid5(NAMESPACE_URL, "https://github.com/vecferry/vecferry/ids")``).
ID_NAMESPACE = uuid.UUID("ca82d95a-9505-516b-a453-b0daee8359fe")
DEFAULT_ID_FIELD = "_vecferry_id"
#: Payload field that carries a point's shard key out of a collection with custom sharding
#: (formats and collections without shard keys keep it there; a custom-sharded target takes
#: it back out and writes the point to that key).
SHARD_KEY_FIELD = "_vecferry_shard_key"
NIL_UUID = "00000000-0000-0000-0000-000000000000"

DEFAULT_PAGE_SIZE = 256
#: Bytes per request against a server: well under Qdrant's 32 MB default
#: (``service.max_request_size_mb``), leaving room for JSON's expansion of our estimate.
DEFAULT_BATCH_BYTES = 8 << 20
DEFAULT_TIMEOUT = 60.0
DEFAULT_PARALLEL_SERVER = 4
#: Consecutive timeouts of one request before it is split in two.
HALVE_AFTER_TIMEOUTS = 2
#: JSON bytes per float in a REST request (``-0.123456789012345678``), for the bytes budget.
_JSON_FLOAT_BYTES = 20
#: Sampled ids per id-range partition: enough for quantiles within a few percent of even.
SAMPLES_PER_PARTITION = 8
#: Ids per sample request, so a large plan's sample stays a modest response.
_SAMPLE_REQUEST = 10_000
#: Bytes of a point beyond its dense vectors (id, payload, framing), for partition sizes.
_POINT_OVERHEAD = 200
_MODES = ("append", "overwrite", "fail-if-exists")
_SHOW_IDS = 20
#: ids of unanswered requests kept to send their later records again (see
#: ``QdrantWriter._resend_last``); past it, the run warns instead
UNANSWERED_IDS_KEPT = 1_000_000


# ------------------------------------------------------------------------------------ ids


def qdrant_id(original: Any) -> tuple[int | str, bool]:
    """The id Qdrant stores for ``original`` and whether it was mapped (UUIDv5)."""
    if isinstance(original, int) and not isinstance(original, bool):
        return original, False
    text = str(original)
    try:
        if str(uuid.UUID(text)) == text:
            return text, False
    except ValueError:
        pass
    return str(uuid.uuid5(ID_NAMESPACE, text)), True


def id_order(point_id: Any) -> tuple[int, int]:
    """Where ``point_id`` comes in a scroll: unsigned integers in numeric order, then UUIDs by
    their 128-bit value (the order of their lower-case hex form)."""
    if isinstance(point_id, int):
        return 0, point_id
    return 1, uuid.UUID(str(point_id)).int


def original_id(point_id: Any, payload: dict[str, Any] | None, id_field: str) -> tuple[Any, bool]:
    """Reverse ``qdrant_id``: the original id when ``payload[id_field]`` maps to ``point_id``."""
    if payload and isinstance(payload.get(id_field), str):
        text = payload[id_field]
        if str(uuid.uuid5(ID_NAMESPACE, text)) == str(point_id):
            return text, True
    return point_id, False


#: a run of 19 digits: maybe an integer orjson would turn into a float (past -2^63 or 2^64-1)
_LONG_DIGITS = re.compile(r"[0-9]{19}")


def loads_payload(text: str) -> Any:
    """``json.loads``, through orjson when that gives the same values: not when the text holds
    19 digits in a row (orjson reads integers past 64 bits as floats); the stdlib also reads
    what orjson refuses (NaN and infinite literals, lone surrogates)."""
    if _LONG_DIGITS.search(text):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# ---------------------------------------------------------------- payloads read from Qdrant

#: a lone surrogate: local mode keeps any Python string, but JSON text, Arrow and Parquet hold
#: UTF-8 only
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _payload_refusal(payload: dict[str, Any], exc: BaseException | None
                     ) -> tuple[str, str | None, Any]:
    """(message, hint, payload as a rejects file can keep it) for a payload of a point read
    from Qdrant that JSON text cannot hold: ``exc`` is what ``dumps_payload`` raised, None
    when it returned text holding a lone surrogate."""
    from vecferry.mapping import surrogate_at

    path = surrogate_at(payload, key_repr=False)
    if path is not None:
        # the rejects file is UTF-8 too: it keeps the payload as JSON text, surrogate escaped
        return (f"payload field {path!r} holds a lone surrogate (half of a UTF-16 pair), "
                "which is not text: JSON, Arrow and Parquet cannot hold it",
                "fix the string in the collection, or pass --on-error skip to export the "
                "other points (the rejects file keeps this payload as JSON text, the "
                "surrogate escaped)",
                json.dumps(payload, ensure_ascii=True))
    if isinstance(exc, VecferryError):
        return exc.message, exc.hint, payload
    return (f"payload cannot be written as JSON: {exc}",
            "fix the value in the collection, or pass --on-error skip to leave the point out",
            payload)


def _json_safe_vectors(vectors: Any) -> Any:
    """A scrolled point's vectors as a rejects file writes them (numpy rows as lists)."""
    if isinstance(vectors, np.ndarray):
        return vectors.tolist()
    if isinstance(vectors, dict):
        return {k: _json_safe_vectors(v) for k, v in vectors.items()}
    if isinstance(vectors, list):
        return [_json_safe_vectors(v) for v in vectors]
    return vectors


def _unwritable_payload(source: str, point: dict[str, Any], row: int | None,
                        exc: BaseException | None) -> RecordError:
    """The reject of a point read from Qdrant whose payload JSON text cannot hold."""
    message, hint, payload = _payload_refusal(point.get("payload") or {}, exc)
    vectors = point.get("vector")
    if isinstance(vectors, dict) and list(vectors) == [""]:
        vectors = vectors[""]  # an unnamed vector, as a JSONL point holds it
    raw = {"id": point.get("id"), "vector": _json_safe_vectors(vectors), "payload": payload}
    return record_error(message, source=source, row=row, point_id=point.get("id"), hint=hint,
                        raw=raw)


def _payload_text(payload: dict[str, Any]) -> str:
    """``dumps_payload`` of a payload read from Qdrant, raising ``ValueError`` when the text
    cannot be written (a lone surrogate; whatever ``dumps_payload`` refuses). A text of ASCII
    only (the usual case) is accepted at the cost of a flag test."""
    text = dumps_payload(payload)
    if not text.isascii() and _SURROGATE.search(text):
        raise ValueError("lone surrogate")
    return text


# ------------------------------------------------------------------------------ locations


@dataclass
class QdrantLocation:
    """A parsed ``qdrant://``, ``qdrants://`` or ``qdrant-local://`` location."""

    scheme: str
    collection: str
    host: str | None = None
    port: int | None = None
    grpc: bool = False
    path: str | None = None

    @property
    def engine(self) -> str:
        return "local" if self.scheme == "qdrant-local" else "server"

    def display(self) -> str:
        if self.engine == "local":
            return f"qdrant-local://{self.path}/{self.collection}"
        grpc = "?grpc=1" if self.grpc else ""
        return f"{self.scheme}://{self.host}:{self.port}/{self.collection}{grpc}"


def same_collection(a: str, b: str) -> bool:
    """Whether two Qdrant locations name one collection: the same local-mode folder, or the
    same port and collection on hosts that resolve to a common address (``localhost`` and
    ``127.0.0.1``)."""
    try:
        la, lb = parse_location(a), parse_location(b)
    except VecferryError:
        return False
    if la.collection != lb.collection or la.engine != lb.engine:
        return False
    if la.engine == "local":
        return os.path.realpath(la.path or ".") == os.path.realpath(lb.path or ".")
    return la.port == lb.port and bool(_addresses(la.host) & _addresses(lb.host))


def _addresses(host: str | None) -> set[str]:
    import socket

    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)} | {str(host)}
    except OSError:
        return {str(host)}


#: the URI query parameters a location may have; their values are shown in messages
_PARAMETERS = ("grpc",)
#: parameter names taken for an API key put in the URI
_KEY_WORDS = ("key", "token", "secret", "password", "auth")


def shown_location(location: str) -> str:
    """``location`` as messages and reports show it: credentials, the fragment, and in the
    query every value but ``grpc``'s and any text without a name are ``***``, since any of
    them may hold an API key (``?token=...``, ``?KEY``); keys never appear in messages."""
    base, hashed, _ = location.partition("#")
    base, asked, query = base.partition("?")
    scheme, sep, rest = base.partition("://")
    if sep:
        netloc, slash, path = rest.partition("/")
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        base = f"{scheme}://{netloc}{slash}{path}"
    pieces = []
    for piece in query.split("&") if asked else []:
        name, eq, _ = piece.partition("=")
        known = name.lower() in _PARAMETERS
        pieces.append(piece if known else f"{name}=***" if eq else "***")
    return (base + (f"?{'&'.join(pieces)}" if asked else "")
            + ("#***" if hashed else ""))


def parse_location(location: str, *, shown: str | None = None) -> QdrantLocation:
    """Parse a Qdrant location; ``UsageError`` says what is wrong with a bad one, naming it as
    ``shown_location`` shows it (``shown``: the location to name instead)."""
    scheme, sep, rest = location.partition("://")
    scheme = scheme.lower()
    where = Location(source=shown_location(shown or location))
    if not sep or scheme not in ("qdrant", "qdrants", "qdrant-local"):
        raise UsageError("not a Qdrant location", location=where,
                         hint="use qdrant://HOST[:PORT]/COLLECTION, qdrants://... or "
                              "qdrant-local://PATH/COLLECTION")
    if scheme == "qdrant-local":
        rest = rest.split("?", 1)[0].rstrip("/")
        folder, slash, collection = rest.rpartition("/")
        if not slash or not folder or not collection:
            raise UsageError("a local-mode location needs a folder and a collection name",
                             location=where,
                             hint="e.g. qdrant-local://./qdrant_data/docs")
        return QdrantLocation(scheme, collection, path=folder)
    parts = urlsplit(location)
    if parts.username or parts.password:
        raise UsageError("credentials do not belong in the URI", location=Location(
            source=f"{scheme}://{parts.hostname}"),
            hint="put the API key in QDRANT_API_KEY or pass --api-key-env NAME")
    query = parse_qs(parts.query, keep_blank_values=True)
    # text without "=" is shown as *** (it may be a key pasted in), a name=value by its name
    unknown = sorted({p.partition("=")[0] if "=" in p or p in _PARAMETERS else "***"
                      for p in parts.query.split("&") if p} - set(_PARAMETERS))
    if unknown:
        if any(w in k.lower() for k in unknown for w in _KEY_WORDS):
            raise UsageError("an API key does not belong in the URI",
                             location=Location(source=f"{scheme}://{parts.hostname}"),
                             hint="put it in QDRANT_API_KEY or pass --api-key-env NAME")
        raise UsageError(f"unknown URI parameter(s): {', '.join(unknown)}", location=where,
                         hint="the only one is ?grpc=1; an API key goes in QDRANT_API_KEY "
                              "or the variable --api-key-env NAME names")
    grpc = query.get("grpc", ["0"])[-1].lower() in ("1", "true", "yes")
    collection = parts.path.strip("/")
    if not parts.hostname or not collection or "/" in collection:
        raise UsageError("a Qdrant server location needs a host and one collection name",
                         location=where, hint="e.g. qdrant://localhost:6333/docs")
    try:
        port = parts.port
    except ValueError as exc:
        given = parts.netloc.rsplit(":", 1)[-1]
        raise UsageError(f"port {given!r} is not a port number (0-65535)", location=where,
                         hint="e.g. qdrant://localhost:6333/docs; leave the port out for "
                              "Qdrant's default (6333, or 6334 with ?grpc=1)") from exc
    if port is None:
        port = 6334 if grpc else 6333
    return QdrantLocation(scheme, collection, host=parts.hostname, port=port, grpc=grpc)


def validation_summary(exc: BaseException) -> str:
    """A pydantic validation error of qdrant-client's models in one line: the problems of the
    reading that got furthest into the value (a union such as a filter condition is tried as
    every kind it may be, dozens of errors, most about kinds the user never meant). Other
    errors are their text."""
    try:
        errors = exc.errors()  # type: ignore[attr-defined]
        deepest = max(len(e["loc"]) for e in errors)
    except Exception:  # not a pydantic error, or one without locations
        return str(exc)
    chosen = [e for e in errors if len(e["loc"]) == deepest][:2]
    shown = "; ".join(
        ".".join(str(p) for p in e["loc"] if "[" not in str(p)) + f": {e['msg']}"
        for e in chosen)
    title = getattr(exc, "title", None)
    more = len(errors) - len(chosen)
    return ((f"{title}: " if title else "") + shown
            + (f" (and {more} problem(s) of other readings of it)" if more else ""))


def server_root(location: str) -> str | None:
    """``scheme://host:port`` (``?grpc=1`` kept) when ``location`` names a Qdrant server and
    no collection (``qdrant://HOST[:PORT][/]``), else None."""
    scheme = location.partition("://")[0].lower()
    if scheme not in ("qdrant", "qdrants"):
        return None
    parts = urlsplit(location)
    if parts.path.strip("/") or not parts.hostname:
        return None
    probe = parse_location(urlunsplit(parts._replace(path="/_")),  # checks port, key, query
                           shown=location)
    return f"{probe.scheme}://{probe.host}:{probe.port}" + ("?grpc=1" if probe.grpc else "")


def collection_location(root: str, name: str) -> str:
    """The location of collection ``name`` on the server ``root`` (see ``server_root``)."""
    base, _, query = root.partition("?")
    return f"{base}/{name}" + (f"?{query}" if query else "")


def collection_names(root: str, *, api_key_env: str | None = None,
                     timeout: float | None = None, max_retries: int | None = None) -> list[str]:
    """The names of the collections on the server ``root``, sorted; the request is retried
    as any other (``TargetError`` with the server's message when it is refused)."""
    backend = open_backend(collection_location(root, "_"), api_key_env=api_key_env,
                           timeout=timeout, for_reading=True)
    try:
        policy = RetryPolicy(max_retries=6 if max_retries is None else max_retries)
        listed = policy.call(backend.client.get_collections, what="listing collections",
                             on_terminal=lambda failure, exc: TargetError(
                                 f"listing collections: {failure.message}",
                                 location=Location(root),
                                 hint=refusal_hint(backend, failure)))
    except TransientError as exc:
        raise TargetError(exc.message, location=Location(root),
                          hint=retry_hint(exc.message)) from exc
    finally:
        backend.close()
    return sorted(c.name for c in listed.collections)


def server_overview(root: str, *, api_key_env: str | None = None,
                    timeout: float | None = None, max_retries: int | None = None
                    ) -> list[dict[str, Any]]:
    """Every collection of the server ``root``: its name, point count, vectors (name, kind,
    size, distance, datatype), aliases and shard keys (under custom sharding)."""
    names = collection_names(root, api_key_env=api_key_env, timeout=timeout,
                             max_retries=max_retries)
    out = []
    for name in names:
        backend = open_backend(collection_location(root, name), api_key_env=api_key_env,
                               timeout=timeout, for_reading=True)
        try:
            policy = RetryPolicy(max_retries=6 if max_retries is None else max_retries)
            config = policy.call(backend.config, what="reading the collection config",
                                 on_terminal=_target_error(backend, "reading the config"))
        finally:
            backend.close()
        entry: dict[str, Any] = {
            "name": name, "points": config.get("points_count"),
            "vectors": [{"name": v.name, "kind": v.kind, "size": v.size,
                         "datatype": v.datatype, "distance": v.distance}
                        for v in specs_from_config(config)],
            "aliases": config.get("aliases", [])}
        if config.get("sharding_method") == "custom":
            entry["shard_keys"] = config.get("shard_keys", [])
        out.append(entry)
    return out


def api_key_from_env(api_key_env: str | None) -> str | None:
    """The API key from ``api_key_env`` (when given, it must be set) or ``QDRANT_API_KEY``.

    Surrounding whitespace is dropped: it is never part of a key, and ``echo KEY | base64``,
    a file read with its newline or a pasted key bring it along. ``UsageError`` naming the
    variable (never the value) for a key that still holds a character neither an HTTP header
    nor gRPC metadata can carry (a line break, a control or non-ASCII character), since every
    request would otherwise fail in the HTTP library with the key in its message."""
    name = api_key_env or "QDRANT_API_KEY"
    value = (os.environ.get(name) or "").strip()
    if not value:
        if api_key_env:
            raise UsageError(f"environment variable {api_key_env} is not set or empty",
                             hint="export it, or drop --api-key-env to use QDRANT_API_KEY")
        return None
    bad = next((c for c in value if not " " <= c <= "~"), None)
    if bad is not None:
        what = ("a line break" if bad in "\r\n" else
                "a non-ASCII character" if ord(bad) > 127 else "a control character")
        raise UsageError(f"the API key in environment variable {name} holds {what}, which an "
                         "HTTP header cannot carry",
                         hint=f"set {name} to the key alone: printable ASCII, on one line")
    return value


# --------------------------------------------------------------------- collection config


def _dump(model: Any) -> Any:
    if model is None:
        return None
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", exclude_none=True)
    return model


def _vector_extra(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items()
            if k not in ("size", "distance", "datatype") and v is not None}


def specs_from_config(config: dict[str, Any]) -> list[VectorSpec]:
    """Vector specs of a collection described by ``collection_config``-shaped ``config``."""
    specs: list[VectorSpec] = []
    for name, params in (config.get("vectors") or {}).items():
        kind = "multi" if params.get("multivector_config") else "dense"
        specs.append(VectorSpec(name=name, kind=kind, size=int(params["size"]),
                                datatype=params.get("datatype") or "float32",
                                distance=params.get("distance"),
                                extra=_vector_extra(params)))
    for name, params in (config.get("sparse_vectors") or {}).items():
        specs.append(VectorSpec(name=name, kind="sparse",
                                extra={k: v for k, v in (params or {}).items() if v is not None}))
    return specs


def config_from_manifest(manifest: Manifest, distance: str | None
                         ) -> tuple[dict[str, Any], list[str]]:
    """The collection config to create for a stream: vectors from the specs, the rest from the
    manifest's recorded collection when there is one; and the vectors whose distance neither
    the source nor ``distance`` gave (Dot is put there: it stores vectors exactly)."""
    base = dict(manifest.collection or {})
    vectors: dict[str, Any] = {}
    sparse: dict[str, Any] = {}
    names = [v.name for v in manifest.vectors]
    if "" in names and len(names) > 1:
        raise UnsupportedError(
            "Qdrant cannot hold an unnamed vector next to named ones "
            f"(vectors: {[n or '(unnamed)' for n in names]})",
            hint="name every vector in the source")
    guessed: list[str] = []
    for spec in manifest.vectors:
        extra = dict(spec.extra or {})
        if spec.kind == "sparse":
            if spec.name == "":
                raise UnsupportedError("Qdrant sparse vectors must be named",
                                       hint="give the sparse vector a name in the source")
            sparse[spec.name] = {k: v for k, v in extra.items() if k in ("modifier", "index")}
            continue
        dist = spec.distance or distance
        if dist is None:
            dist = "Dot"
            guessed.append(spec.name)
        if dist not in ("Cosine", "Euclid", "Dot", "Manhattan"):
            raise UnsupportedError(f"vector {spec.name!r}: Qdrant has no distance {dist!r}")
        params = {"size": spec.size, "distance": dist}
        if spec.datatype != "float32":
            params["datatype"] = spec.datatype
        for key in ("on_disk", "hnsw_config", "quantization_config", "multivector_config"):
            if extra.get(key) is not None:
                params[key] = extra[key]
        if spec.kind == "multi" and "multivector_config" not in params:
            params["multivector_config"] = {"comparator": "max_sim"}
        vectors[spec.name] = params
    base["vectors"] = vectors
    base["sparse_vectors"] = sparse
    return base, guessed


#: what ``--collection-config`` may set for a collection vecferry creates (the rest, and each
#: vector's size, distance, datatype and kind, come from the source)
CONFIG_OVERRIDES = ("aliases", "hnsw_config", "metadata", "on_disk_payload", "optimizer_config",
                    "payload_schema", "quantization_config", "replication_factor",
                    "shard_number", "sparse_vectors", "strict_mode_config", "vectors",
                    "wal_config", "write_consistency_factor")
_VECTOR_OVERRIDES = ("hnsw_config", "on_disk", "quantization_config")
_SPARSE_OVERRIDES = ("index",)


def parse_collection_config(value: Any) -> dict[str, Any]:
    """``--collection-config``: a JSON object (text, ``@FILE``, or a dict from Python) of
    settings over the source's, checked against ``CONFIG_OVERRIDES``. ``UsageError`` names a
    setting that cannot be overridden and says why."""
    if isinstance(value, dict):
        data: Any = value
    else:
        text = str(value)
        where = "--collection-config"
        if text.startswith("@"):
            where = text[1:]
            try:
                text = Path(where).read_text()
            except OSError as exc:
                raise UsageError(f"--collection-config: cannot read {where}: "
                                 f"{exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{where} is not JSON: {exc}",
                             hint='e.g. --collection-config \'{"shard_number": 1}\'') from exc
    if not isinstance(data, dict):
        raise UsageError("--collection-config takes a JSON object of collection settings")
    unknown = sorted(set(data) - set(CONFIG_OVERRIDES))
    if unknown:
        raise UsageError(f"--collection-config cannot set {', '.join(unknown)}",
                         hint=f"it sets {', '.join(CONFIG_OVERRIDES)}; vector sizes, "
                              "distances and datatypes come from the source")
    for key, allowed in (("vectors", _VECTOR_OVERRIDES), ("sparse_vectors", _SPARSE_OVERRIDES)):
        per_vector = data.get(key)
        if per_vector is None:
            continue
        if not isinstance(per_vector, dict) or not all(
                isinstance(v, dict) for v in per_vector.values()):
            raise UsageError(f'--collection-config: "{key}" maps vector names to settings, '
                             'e.g. {"' + key + '": {"NAME": {...}}}')
        for name, params in per_vector.items():
            bad = sorted(set(params) - set(allowed))
            if bad:
                label = "(unnamed)" if name == "" else repr(name)
                raise UsageError(f"--collection-config cannot set {', '.join(bad)} of vector "
                                 f"{label}", hint=f"it sets {', '.join(allowed)}; the rest "
                                                  "comes from the source")
    aliases = data.get("aliases")
    if aliases is not None and (not isinstance(aliases, list) or not all(
            isinstance(a, str) and a for a in aliases)):
        raise UsageError('--collection-config: "aliases" is a list of alias names, e.g. '
                         '{"aliases": ["docs"]}')
    schema = data.get("payload_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise UsageError('--collection-config: "payload_schema" maps fields to indexes, '
                             'e.g. {"payload_schema": {"lang": "keyword"}}')
        data = dict(data, payload_schema={
            field: ({"data_type": index} if isinstance(index, str) else index)
            for field, index in schema.items()})
        for field, index in data["payload_schema"].items():
            if index is not None and not (isinstance(index, dict)
                                          and isinstance(index.get("data_type"), str)):
                raise UsageError(f"--collection-config: the index of payload field {field!r} "
                                 "is a type name or an object with data_type",
                                 hint='e.g. "keyword", or {"data_type": "integer", '
                                      '"params": {"type": "integer", "range": true}}')
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` (objects key by key; null drops a key)."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_collection_config(wanted: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``wanted`` (``config_from_manifest``) with the checked ``over`` applied; a vector
    ``over`` names must be one the stream has."""
    for key in ("vectors", "sparse_vectors"):
        missing = sorted(set(over.get(key) or {}) - set(wanted.get(key) or {}))
        if missing:
            have = ", ".join(repr(n) if n else "(unnamed)" for n in (wanted.get(key) or {}))
            raise UsageError(f"--collection-config names {key.replace('_', ' ')} the source "
                             f"does not have: {', '.join(map(repr, missing))}",
                             hint=f"the source has: {have or 'none'}")
    return _merge(wanted, over)


#: Qdrant's HNSW defaults (a server's and Edge's, and what local mode reports for every
#: collection): settings at these lose nothing in local mode, which keeps none
_HNSW_DEFAULTS = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                  "max_indexing_threads": 0}


def local_mode_losses(config: dict[str, Any], overrides: dict[str, Any] | None = None
                      ) -> list[str]:
    """The collection-wide settings of ``config`` a qdrant-client local-mode collection does
    not keep, each as a phrase; only those a copy out of it would not get back as Qdrant's
    defaults.

    Local mode keeps vectors (with their own HNSW and quantization settings), sparse vectors
    and metadata from ``create_collection``, ignores the rest, and reports Qdrant's defaults
    for it (HNSW m 16, ef_construct 100, no quantization, ``on_disk_payload`` unset, which a
    server and Edge take as true). Optimizer and WAL settings are named only when
    ``overrides`` (``--collection-config``) set them: a server reports its own either way,
    which cannot be told from one chosen for this collection."""
    lost = []
    hnsw = config.get("hnsw_config")
    if isinstance(hnsw, dict):
        # an unknown setting counts as set unless it is off (None, False, 0)
        changed = [f"{k} {orjson.dumps(v).decode()}" for k, v in hnsw.items()
                   if v is not None and v != _HNSW_DEFAULTS.get(k, False)]
        if changed:
            lost.append(f"HNSW config ({', '.join(changed)})")
    quantization = config.get("quantization_config")
    if quantization:
        kinds = ", ".join(quantization) if isinstance(quantization, dict) else quantization
        lost.append(f"quantization config ({kinds})")
    if config.get("on_disk_payload") is False:
        lost.append("on_disk_payload false")
    for key in ("optimizer_config", "wal_config"):
        if (overrides or {}).get(key):
            lost.append(f"{key} (from --collection-config)")
    return lost


_NARROWER = {("float32", "float16"), ("float32", "uint8"), ("float16", "uint8")}


def config_diff(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Why an existing collection cannot take the stream (empty when it can)."""
    diff: list[str] = []
    have = existing.get("vectors") or {}
    for name, params in (wanted.get("vectors") or {}).items():
        label = "(unnamed)" if name == "" else repr(name)
        if name not in have:
            if name == "" and have:
                diff.append(f"vector (unnamed): the target has named vectors {sorted(have)}")
            elif name != "" and "" in have:
                diff.append(f"vector {label}: the target has a single unnamed vector")
            else:
                diff.append(f"vector {label}: missing in the target")
            continue
        got = have[name]
        if got.get("size") != params["size"]:
            diff.append(f"vector {label}: size {got.get('size')} in the target, "
                        f"{params['size']} in the source")
        if got.get("distance") != params["distance"]:
            diff.append(f"vector {label}: distance {got.get('distance')} in the target, "
                        f"{params['distance']} in the source")
        if bool(got.get("multivector_config")) != bool(params.get("multivector_config")):
            kinds = ("multivector", "single vector")
            diff.append(f"vector {label}: "
                        f"{kinds[not got.get('multivector_config')]} in the target, "
                        f"{kinds[not params.get('multivector_config')]} in the source")
        src_dt = params.get("datatype") or "float32"
        dst_dt = got.get("datatype") or "float32"
        if (src_dt, dst_dt) in _NARROWER:
            diff.append(f"vector {label}: datatype {dst_dt} in the target cannot hold the "
                        f"source's {src_dt} exactly")
    have_sparse = existing.get("sparse_vectors") or {}
    for name in wanted.get("sparse_vectors") or {}:
        if name not in have_sparse:
            diff.append(f"sparse vector {name!r}: missing in the target")
    if "" in have and not wanted.get("vectors") and not wanted.get("sparse_vectors"):
        # every point of the target needs its unnamed vector (local mode would take the
        # points anyway, leaving them unsearchable)
        diff.append("vector (unnamed): the target needs it on every point, and the source's "
                    "points have no vectors")
    # An upsert replaces the whole point: a point of the target the source updates would lose
    # the vectors the source does not have (an empty target has nothing to lose).
    lacking = [repr(n) for n in have if n != "" and n not in (wanted.get("vectors") or {})]
    lacking += [repr(n) for n in have_sparse if n not in (wanted.get("sparse_vectors") or {})]
    if lacking and existing.get("points_count"):
        diff.append(f"vector(s) {', '.join(lacking)}: in the target, not in the source; an "
                    "upsert replaces the whole point, so each point the source updates would "
                    "lose them")
    return diff


def modifier_diff(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Sparse vectors the target scores with another modifier (IDF or none) than the source.
    The points load the same either way (the modifier acts at query time), so this warns
    rather than refuses; ``verify`` compares points and cannot see it."""
    have = existing.get("sparse_vectors") or {}
    lines = []
    for name, params in (wanted.get("sparse_vectors") or {}).items():
        if not isinstance(have.get(name), dict):
            continue
        src = str((params or {}).get("modifier") or "none").lower()
        dst = str(have[name].get("modifier") or "none").lower()
        if src != dst:
            lines.append(f"sparse vector {name!r}: modifier {dst} in the target, {src} in the "
                         "source, so searches there score these vectors differently (load "
                         "into a new collection to keep the source's)")
    return lines


# -------------------------------------------------------------------------------- backends


class Backend:
    """What the reader and writer need of an engine. Methods raise the engine's own errors
    (classified by ``vecferry.retry``); ``label`` names the target in messages."""

    engine = "?"
    label = "?"
    name: str | None = None
    #: requests the engine can usefully take at once
    max_parallel = 1
    #: whether requests have a size limit worth batching by bytes for
    limited_requests = False
    #: whether the engine call releases the GIL, so the next batch's points can be built
    #: while one request runs (in-process engines; one request in flight)
    overlap = False
    #: whether ``prepare`` takes dense vectors as float32 ``memoryview`` rows
    row_views = False
    #: the environment variable the API key came from (None: no key is sent), and whether
    #: this is the side written to: what the hint of a refused key names (``refusal_hint``)
    key_env: str | None = None
    writing = False

    def prepare(self, points: list[dict[str, Any]]) -> list[Any]:
        """The engine's objects for ``points``, built by the caller's thread before the
        request; ``upsert`` takes what this returns."""
        return points

    def point(self, pid: Any, vector: Any, payload: dict[str, Any] | None) -> Any:
        """One point for ``prepare`` / ``upsert`` (the engine's own object when it has one)."""
        return {"id": pid, "vector": vector, "payload": payload}

    def exists(self) -> bool: raise NotImplementedError
    def config(self) -> dict[str, Any]: raise NotImplementedError
    def create(self, config: dict[str, Any]) -> None: raise NotImplementedError
    def drop(self) -> None: raise NotImplementedError
    def upsert(self, points: list[dict[str, Any]], shard_key: Any = None) -> None:
        """Write ``points`` (to shard key ``shard_key`` of a custom-sharded collection)."""
        raise NotImplementedError
    def create_shard_key(self, key: Any) -> None:
        """Add shard key ``key`` to a custom-sharded collection."""
        raise NotImplementedError
    def count(self, flt: Any = None) -> int: raise NotImplementedError
    def scroll(self, offset: Any, limit: int, flt: Any, vectors: bool, payload: bool
               ) -> tuple[list[tuple[Any, dict[str, Any], dict[str, Any] | None]], Any]:
        raise NotImplementedError
    def scroll_page(self, offset: Any, limit: int, flt: Any) -> tuple[Any, Any]:
        """``scroll`` with vectors and payloads: a sized iterable of its tuples, and the next
        offset (an engine may convert records lazily, as they are iterated)."""
        return self.scroll(offset, limit, flt, True, True)
    def parse_filter(self, flt: dict[str, Any]) -> Any: raise NotImplementedError
    def sample_ids(self, k: int, flt: Any) -> list[Any]:
        """Ids of up to ``k`` points of ``flt``'s subset picked at random by the engine."""
        raise NotImplementedError
    def create_index(self, field: str, index: dict[str, Any]) -> bool: raise NotImplementedError
    def search(self, vector: list[float], using: str, k: int) -> list[tuple[Any, Any]]:
        """(id, payload) of the ``k`` nearest points to ``vector`` in vector ``using``."""
        raise NotImplementedError
    def retrieve(self, ids: list[Any]) -> list[tuple[Any, dict[str, Any], Any]]:
        """``scroll``'s records for the points with these (Qdrant) ids; absent ones left out."""
        raise NotImplementedError
    def get_hnsw_m(self) -> int | None: return None
    def set_hnsw_m(self, m: int) -> bool: return False
    def set_strict_mode(self, config: dict[str, Any]) -> bool:
        """Apply a strict mode config; False when the engine has none."""
        return False
    #: whether the engine has collection aliases (``alias_owners``, ``create_alias``)
    has_aliases = False
    def alias_owners(self) -> dict[str, str]:
        """Every alias of the engine -> the collection it names."""
        raise NotImplementedError
    def create_alias(self, alias: str) -> None:
        """Make ``alias`` name this collection."""
        raise NotImplementedError
    def begin_load(self) -> None: pass
    def end_load(self) -> None: pass
    def flush(self) -> None: pass
    def close(self) -> None: pass


# qdrant-client local mode locks its folder: one client per folder per process, shared by
# the reader and the writer of a local-to-local copy.
_LOCAL_CLIENTS: dict[str, list[Any]] = {}
_LOCAL_LOCK = threading.Lock()


def _close_local_clients() -> None:
    """Close the local-mode clients a script left open (a reader it did not close): closed
    by qdrant-client's own finaliser at interpreter exit, they print a traceback."""
    with _LOCAL_LOCK:
        entries = list(_LOCAL_CLIENTS.values())
        _LOCAL_CLIENTS.clear()
    for entry in entries:
        with contextlib.suppress(Exception):
            entry[0].close()


#: points past which qdrant-client advises a server over local mode (it warns on each upsert)
LOCAL_MODE_POINTS = 20_000


def _open_local(path: str) -> tuple[Any, threading.Lock]:
    from qdrant_client import QdrantClient

    key = str(Path(path).resolve())
    with _LOCAL_LOCK:
        entry = _LOCAL_CLIENTS.get(key)
        if entry is None:
            if not _LOCAL_CLIENTS:
                atexit.unregister(_close_local_clients)  # registered once at a time
                atexit.register(_close_local_clients)
                # qdrant-client repeats this advice as a raw UserWarning (file and source
                # line) on every upsert past LOCAL_MODE_POINTS; the writer gives it once, in
                # the report's warnings (QdrantWriter.close)
                warnings.filterwarnings("ignore", message="Local mode is not recommended",
                                        category=UserWarning)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                client = QdrantClient(path=key)
            entry = [client, threading.Lock(), 0]
            _LOCAL_CLIENTS[key] = entry
        entry[2] += 1
        return entry[0], entry[1]


def _release_local(path: str) -> None:
    key = str(Path(path).resolve())
    with _LOCAL_LOCK:
        entry = _LOCAL_CLIENTS.get(key)
        if entry is None:
            return
        entry[2] -= 1
        if entry[2] <= 0:
            del _LOCAL_CLIENTS[key]
            entry[0].close()


def _model(cls: Any, data: dict[str, Any] | None) -> Any:
    """A qdrant-client model from a REST-shaped dict, ignoring keys this client does not know
    (a newer server may report settings an older client cannot send back)."""
    if data is None:
        return None
    fields = cls.model_fields
    return cls(**{k: v for k, v in data.items() if k in fields and v is not None})


def _quantization(models: Any, data: dict[str, Any] | None) -> Any:
    if not data:
        return None
    for key, cls in (("scalar", "ScalarQuantization"), ("product", "ProductQuantization"),
                     ("binary", "BinaryQuantization")):
        if key in data:
            return getattr(models, cls).model_validate({key: data[key]})
    return None


_INDEX_PARAMS = {"keyword": "KeywordIndexParams", "integer": "IntegerIndexParams",
                 "float": "FloatIndexParams", "geo": "GeoIndexParams", "text": "TextIndexParams",
                 "bool": "BoolIndexParams", "datetime": "DatetimeIndexParams",
                 "uuid": "UuidIndexParams"}


class ClientBackend(Backend):
    """A collection through qdrant-client: a server (REST/gRPC) or local mode."""

    has_aliases = True

    def __init__(self, loc: QdrantLocation, *, api_key: str | None, timeout: float | None,
                 for_reading: bool):
        from qdrant_client import QdrantClient, models

        self.models = models
        self.loc = loc
        self.name = loc.collection
        self.label = loc.display()
        self.engine = loc.engine
        self._lock: threading.Lock | None = None
        if loc.engine == "local":
            folder = Path(loc.path or ".")
            if folder.exists() and not folder.is_dir():
                raise (InputError if for_reading else UsageError)(
                    "this is a file, not a local-mode folder", location=Location(str(folder)),
                    hint="name the folder QdrantClient(path=...) opens, then the collection: "
                         "qdrant-local://FOLDER/COLLECTION")
            if for_reading and not folder.is_dir():
                raise InputError("no such local-mode folder", location=Location(str(folder)),
                                 hint="check the path; it is the folder QdrantClient(path=...) "
                                      "opens")
            if not for_reading and not folder.parent.is_dir():
                raise UsageError("the parent of the local-mode folder does not exist",
                                 location=Location(str(folder)), hint="create it first")
            #: the folder, when this backend made it by opening it (qdrant-client creates it):
            #: a run that creates no collection in it removes it again
            self.made_folder = None if folder.exists() else str(folder)
            try:
                self.client, self._lock = _open_local(str(folder))
            except RuntimeError as exc:
                raise (InputError if for_reading else TargetError)(
                    f"cannot open the local-mode folder: {exc}", location=Location(str(folder)),
                    hint="another process has it open; local mode allows one") from exc
            except json.JSONDecodeError as exc:
                # qdrant-client rewrites meta.json in place: a process killed meanwhile (a
                # collection being created) leaves it cut short, and the folder unreadable
                raise (InputError if for_reading else TargetError)(
                    f"the local-mode folder's meta.json is not valid JSON ({exc}): it was cut "
                    "short, most likely by a process killed while qdrant-client rewrote it",
                    location=Location(str(folder)),
                    hint="qdrant-client cannot open the folder so: restore meta.json from a "
                         "copy, or delete the folder and load it again") from exc
            self._folder = str(folder)
            self.max_parallel = 1
        else:
            self.limited_requests = True
            self.max_parallel = 16
            kwargs: dict[str, Any] = {
                "host": loc.host, "https": loc.scheme == "qdrants", "api_key": api_key,
                "timeout": timeout if timeout is not None else DEFAULT_TIMEOUT,
                "check_compatibility": False,
            }
            if loc.grpc:
                kwargs.update(prefer_grpc=True, grpc_port=loc.port)
            else:
                kwargs.update(port=loc.port)
            with warnings.catch_warnings():
                # "Api key is used with an insecure connection": the user chose http.
                warnings.simplefilter("ignore")
                self.client = QdrantClient(**kwargs)

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._lock is None:
            return fn()
        with self._lock:
            return fn()

    def exists(self) -> bool:
        return bool(self._call(lambda: self.client.collection_exists(self.name)))

    def config(self) -> dict[str, Any]:
        m = self.models
        info = self._call(lambda: self.client.get_collection(self.name))
        cfg = info.config
        params = cfg.params
        vectors = params.vectors
        if vectors is None:
            vec: dict[str, Any] = {}
        elif isinstance(vectors, dict):
            vec = {k: _dump(v) for k, v in vectors.items()}
        else:
            vec = {"": _dump(vectors)}
        out: dict[str, Any] = {
            "engine": self.engine,
            "name": self.name,
            "vectors": vec,
            "sparse_vectors": {k: _dump(v) or {} for k, v in (params.sparse_vectors or {}).items()},
            "hnsw_config": _dump(cfg.hnsw_config),
            "quantization_config": _dump(cfg.quantization_config),
            "optimizer_config": _dump(cfg.optimizer_config),
            "wal_config": _dump(cfg.wal_config),
            "on_disk_payload": params.on_disk_payload,
            "shard_number": params.shard_number,
            "replication_factor": params.replication_factor,
            "write_consistency_factor": params.write_consistency_factor,
            "payload_schema": {
                field: {"data_type": _dump(info_.data_type),
                        "params": _dump(info_.params)}
                for field, info_ in (info.payload_schema or {}).items()
            },
            "points_count": info.points_count,
        }
        aliases = self._aliases()
        if aliases:
            out["aliases"] = aliases
        if cfg.metadata:
            out["metadata"] = cfg.metadata
        strict = _dump(cfg.strict_mode_config)
        if strict and strict.get("enabled"):
            out["strict_mode_config"] = strict
        if self.engine == "server" and params.sharding_method == m.ShardingMethod.CUSTOM:
            out["sharding_method"] = "custom"
            out["shard_keys"] = self._list_shard_keys()
        return out

    def _aliases(self) -> list[str]:
        """The aliases naming this collection; none when the API key may not list them (a
        key scoped to collections) or the server cannot, as they only matter to a copy."""
        try:
            listed = self._call(lambda: self.client.get_collection_aliases(self.name))
        except Exception as exc:
            failure = classify(exc)
            if failure is not None and (failure.status in (401, 403, 404) or any(
                    failure.message.startswith(f"gRPC {code}") for code in (
                        "PERMISSION_DENIED", "UNAUTHENTICATED", "UNIMPLEMENTED"))):
                return []
            raise
        return sorted(a.alias_name for a in listed.aliases or [])

    def alias_owners(self) -> dict[str, str]:
        listed = self._call(self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in listed.aliases or []}

    def create_alias(self, alias: str) -> None:
        m = self.models
        self._call(lambda: self.client.update_collection_aliases([m.CreateAliasOperation(
            create_alias=m.CreateAlias(collection_name=self.name, alias_name=alias))]))

    def _list_shard_keys(self) -> list[Any]:
        """The shard keys of a custom-sharded collection. Servers before the listing endpoint
        (``GET /collections/{name}/shards``) name them in the collection's cluster info."""
        try:
            listed = self._call(lambda: self.client.list_shard_keys(self.name))
            return [d.key for d in listed.shard_keys or []]
        except Exception as exc:
            if not _missing_endpoint(exc):
                raise
        info = self._call(lambda: self.client.collection_cluster_info(self.name))
        keys: list[Any] = []
        for shard in [*(info.local_shards or []), *(info.remote_shards or [])]:
            if shard.shard_key is not None and shard.shard_key not in keys:
                keys.append(shard.shard_key)
        return keys

    def create(self, config: dict[str, Any]) -> None:
        m = self.models
        vectors = config.get("vectors") or {}
        if list(vectors) == [""]:
            vectors_config: Any = self._vector_params(vectors[""])
        else:
            vectors_config = {n: self._vector_params(p) for n, p in vectors.items()}
        sparse = {n: _model(m.SparseVectorParams, {
            "modifier": p.get("modifier"),
            "index": _model(m.SparseIndexParams, p.get("index")),
        }) for n, p in (config.get("sparse_vectors") or {}).items()}
        kwargs: dict[str, Any] = {
            "vectors_config": vectors_config,
            "sparse_vectors_config": sparse or None,
            "hnsw_config": _model(m.HnswConfigDiff, config.get("hnsw_config")),
            "optimizers_config": _model(m.OptimizersConfigDiff, config.get("optimizer_config")),
            "wal_config": _model(m.WalConfigDiff, config.get("wal_config")),
            "quantization_config": _quantization(m, config.get("quantization_config")),
            "on_disk_payload": config.get("on_disk_payload"),
        }
        if config.get("metadata"):
            kwargs["metadata"] = config["metadata"]
        custom = self.engine == "server" and config.get("sharding_method") == "custom"
        if self.engine == "server":
            for key in ("shard_number", "replication_factor", "write_consistency_factor"):
                kwargs[key] = config.get(key)
            if custom:
                kwargs["sharding_method"] = m.ShardingMethod.CUSTOM
        self._call(lambda: self.client.create_collection(self.name, **kwargs))

    def create_shard_key(self, key: Any) -> None:
        self._call(lambda: self.client.create_shard_key(self.name, key))

    def _vector_params(self, p: dict[str, Any]) -> Any:
        m = self.models
        return m.VectorParams(
            size=p["size"], distance=p["distance"], on_disk=p.get("on_disk"),
            datatype=p.get("datatype"),
            hnsw_config=_model(m.HnswConfigDiff, p.get("hnsw_config")),
            quantization_config=_quantization(m, p.get("quantization_config")),
            multivector_config=_model(m.MultiVectorConfig, p.get("multivector_config")),
        )

    def drop(self) -> None:
        self._call(lambda: self.client.delete_collection(self.name))

    def _struct(self, p: dict[str, Any]) -> Any:
        m = self.models
        vec = p["vector"]
        if isinstance(vec, dict):
            out: Any = {}
            for name, value in vec.items():
                if isinstance(value, dict):
                    out[name] = m.SparseVector(indices=value["indices"], values=value["values"])
                elif isinstance(value, list):
                    out[name] = [v.tolist() for v in value]
                else:
                    out[name] = value.tolist()
            if list(out) == [""]:
                out = out[""]
        elif isinstance(vec, list):
            out = [v.tolist() for v in vec]
        else:
            out = vec.tolist()
        return m.PointStruct(id=p["id"], vector=out, payload=p.get("payload"))

    def upsert(self, points: list[dict[str, Any]], shard_key: Any = None) -> None:
        structs = [self._struct(p) for p in points]
        # local mode knows no shard keys: the selector is only sent when there is one
        kw = {} if shard_key is None else {"shard_key_selector": shard_key}
        self._call(lambda: self.client.upsert(self.name, points=structs, wait=True, **kw))
        if self._wal is not None:
            self._sync_wal()

    # -- local mode: one disk sync per request, not per point

    _wal: tuple[Any, str, int, Path] | None = None

    def _sqlite(self) -> Any:
        """The SQLite connection local mode keeps this collection in, or None when this
        qdrant-client lays it out otherwise (then nothing below changes anything)."""
        try:
            conn = self.client._client.collections[self.name].storage.storage
        except (AttributeError, KeyError, TypeError):
            return None
        return conn if isinstance(conn, sqlite3.Connection) else None

    def begin_load(self) -> None:
        """Local mode commits every point on its own, and each commit waits for the disk
        (rollback journal, ``synchronous=FULL``): that wait, not Python, is most of its time.
        For the load, the collection's SQLite file goes to write-ahead logging with
        ``synchronous=NORMAL`` (commits still atomic, the file never corrupt, commits no longer
        synced one by one) and ``upsert`` syncs the log once per request before returning, so
        whatever is acknowledged is on disk exactly as before. ``end_load`` puts the journal
        mode back, which checkpoints the log into the file."""
        if self.engine != "local" or self._wal is not None:
            return
        conn = self._sqlite()
        if conn is None:
            return
        try:
            if conn.in_transaction:
                return
            journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])
            if not journal.isalpha() or str(
                    conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() != "wal":
                return
            conn.execute("PRAGMA synchronous=NORMAL")
            path = Path(conn.execute("PRAGMA database_list").fetchone()[2] + "-wal")
        except sqlite3.Error:
            return
        self._wal = (conn, journal, synchronous, path)

    def _sync_wal(self) -> None:
        assert self._wal is not None
        path = self._wal[3]
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def end_load(self) -> None:
        if self._wal is None:
            return
        conn, journal, synchronous, _ = self._wal
        self._wal = None
        try:
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute(f"PRAGMA journal_mode={journal}")
        except sqlite3.Error:
            pass  # the file stays in WAL mode: as valid and durable, the log already synced

    def parse_filter(self, flt: dict[str, Any]) -> Any:
        return self.models.Filter.model_validate(flt)

    def count(self, flt: Any = None, shard_key: Any = None) -> int:
        kw = {} if shard_key is None else {"shard_key_selector": shard_key}
        return int(self._call(lambda: self.client.count(self.name, count_filter=flt,
                                                        exact=True, **kw)).count)

    def scroll(self, offset: Any, limit: int, flt: Any, vectors: bool, payload: bool,
               shard_key: Any = None):
        """``Backend.scroll``, of one shard key's points when ``shard_key`` is given."""
        # local mode knows no shard keys: the selector is only sent when there is one
        kw = {} if shard_key is None else {"shard_key_selector": shard_key}
        records, nxt = self._call(lambda: self.client.scroll(
            self.name, scroll_filter=flt, limit=limit, offset=offset, with_payload=payload,
            with_vectors=vectors, **kw))
        return self._records(records), nxt

    def sample_ids(self, k: int, flt: Any) -> list[Any]:
        m = self.models
        res = self._call(lambda: self.client.query_points(
            self.name, query=m.SampleQuery(sample=m.Sample.RANDOM), query_filter=flt, limit=k,
            with_payload=False, with_vectors=False))
        return [p.id for p in res.points]

    def retrieve(self, ids: list[Any]) -> list[tuple[Any, dict[str, Any], Any]]:
        return self._records(self._call(lambda: self.client.retrieve(
            self.name, ids=ids, with_payload=True, with_vectors=True)))

    def _records(self, records: list[Any]) -> list[tuple[Any, dict[str, Any], Any]]:
        out = []
        for r in records:
            vec = r.vector
            if vec is None:
                vd: dict[str, Any] = {}
            elif isinstance(vec, dict):
                vd = {k: ({"indices": v.indices, "values": v.values}
                          if isinstance(v, self.models.SparseVector) else v)
                      for k, v in vec.items()}
            else:
                vd = {"": vec}
            payload = r.payload
            if getattr(r, "shard_key", None) is not None:
                payload = {**(payload or {}), SHARD_KEY_FIELD: r.shard_key}
            out.append((r.id, vd, payload))
        return out

    def search(self, vector: list[float], using: str, k: int) -> list[tuple[Any, Any]]:
        res = self._call(lambda: self.client.query_points(
            self.name, query=vector, using=using or None, limit=k, with_payload=True))
        return [(p.id, p.payload) for p in res.points]

    def create_index(self, field: str, index: dict[str, Any]) -> bool:
        if self.engine == "local":
            # Local mode keeps no payload indexes (qdrant-client warns and ignores them).
            return False
        m = self.models
        dtype = index.get("data_type")
        params = index.get("params")
        schema: Any = dtype
        if params and dtype in _INDEX_PARAMS:
            schema = _model(getattr(m, _INDEX_PARAMS[dtype]), params)
        self._call(lambda: self.client.create_payload_index(
            self.name, field_name=field, field_schema=schema, wait=True))
        return True

    def get_hnsw_m(self) -> int | None:
        info = self._call(lambda: self.client.get_collection(self.name))
        return info.config.hnsw_config.m

    def set_strict_mode(self, config: dict[str, Any]) -> bool:
        if self.engine == "local":
            return False  # local mode enforces no strict mode
        model = self.models.StrictModeConfig.model_validate(config)
        self._call(lambda: self.client.update_collection(self.name, strict_mode_config=model))
        return True

    def set_hnsw_m(self, m_value: int) -> bool:
        if self.engine == "local":
            return False  # local mode builds no HNSW graph: nothing to switch off
        self._call(lambda: self.client.update_collection(
            self.name, hnsw_config=self.models.HnswConfigDiff(m=m_value)))
        return True

    def close(self) -> None:
        if self.engine == "local":
            _release_local(self._folder)
        else:
            self.client.close()


def open_backend(location: str, *, api_key_env: str | None, timeout: float | None,
                 for_reading: bool) -> Backend:
    loc = parse_location(location)
    key = api_key_from_env(api_key_env) if loc.engine == "server" else None
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    backend = ClientBackend(loc, api_key=key, timeout=timeout, for_reading=for_reading)
    backend.key_env = (api_key_env or "QDRANT_API_KEY") if key else None
    backend.writing = not for_reading
    return backend


def _shard_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be a Qdrant shard key (a string or an unsigned integer), or None."""
    if key is None:
        return f"the point has no shard key (payload field {SHARD_KEY_FIELD!r})"
    if (isinstance(key, str) and key) or (type(key) is int and 0 <= key < 2**64):
        return None
    return (f"payload field {SHARD_KEY_FIELD!r} holds {key!r}, which is not a shard key "
            "(a non-empty string or an unsigned integer)")


def parse_shard_key(value: Any) -> Any:
    """``--shard-key``: an unsigned integer or a non-empty string, read as JSON when it is
    (``7`` is the integer key, ``'"7"'`` the text one), else taken as text."""
    key = value
    if isinstance(value, str):
        try:
            key = json.loads(value)
        except ValueError:
            key = value
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            key = value
    problem = _shard_key_problem(key)
    if problem:
        raise UsageError(f"--shard-key {value!r} is not a shard key (a non-empty string or an "
                         "unsigned integer)")
    return key


def _missing_endpoint(exc: BaseException) -> bool:
    """Whether ``exc`` says the server lacks the endpoint called (an older server)."""
    failure = classify(exc)
    return failure is not None and (failure.status in (404, 405)
                                    or failure.message.startswith("gRPC UNIMPLEMENTED"))


def retry_hint(message: str) -> str:
    """What to do about a request that kept failing with ``message`` (a ``Failure``'s)."""
    if "timed out" in message or "DEADLINE_EXCEEDED" in message:
        return ("the server did not answer in time: check that it is up and not overloaded, "
                "then run again, with a longer --timeout or more --max-retries")
    if "connection error" in message or "gRPC UNAVAILABLE" in message:
        return ("check that the Qdrant server is running and reachable at that host and port "
                "(REST listens on 6333 by default, gRPC on 6334 with ?grpc=1; qdrants:// is "
                "for HTTPS), then run again; --max-retries N keeps trying longer")
    return ("the server kept failing: check its health and logs, then run again; "
            "--max-retries N keeps trying longer")


def missing_collection_hint(backend: Backend) -> str:
    """What to do about a collection ``backend`` does not find: the collections a local-mode
    folder holds, or the command that lists a server's."""
    if isinstance(backend, ClientBackend) and backend.engine == "local":
        try:
            listed = backend._call(backend.client.get_collections)
            names = sorted(c.name for c in listed.collections)
        except Exception:  # the listing is a courtesy: the error is the missing collection
            return "check the collection name and the folder"
        if not names:
            return "check the path: this local-mode folder holds no collection"
        return (f"check the collection name; this local-mode folder holds "
                f"{listing(names, most=10)}")
    loc = getattr(backend, "loc", None)
    if isinstance(loc, QdrantLocation) and loc.engine == "server":
        root = f"{loc.scheme}://{loc.host}:{loc.port}" + ("?grpc=1" if loc.grpc else "")
        return f"check the collection name; `vecferry inspect {root}` lists the server's"
    return "check the collection name"


def refusal_hint(backend: Backend, failure: Failure) -> str | None:
    """What to do about a request the server refused with ``failure``, when that depends on
    vecferry's options: an API key missing, refused or short of rights (naming the variable
    the key came from and the option of the side refused), a request past the server's size
    limit. None for any other refusal."""
    text = failure.message
    if failure.status == 413 or (failure.status == 400 and "larger than allowed" in text):
        return ("a request was larger than the server takes: lower --batch-bytes (default "
                "8 MiB) or --batch-size, then run the same command with --resume to send the "
                "rest")
    denied = failure.status == 403 or text.startswith("gRPC PERMISSION_DENIED")
    if not denied and failure.status != 401 and not text.startswith("gRPC UNAUTHENTICATED"):
        return None
    option = ("--api-key-env NAME (--dst-api-key-env NAME for the target's own key, when "
              "the source is a Qdrant server with another)" if backend.writing
              else "--api-key-env NAME")
    env = backend.key_env
    if env is None:
        return ("no API key was sent: put this server's key in QDRANT_API_KEY, or name the "
                f"variable that holds it with {option}")
    if denied:
        return (f"the key in {env} may not do this (a read-only or collection-scoped key?): "
                f"give a key with {'write' if backend.writing else 'read'} access to this "
                f"collection, in QDRANT_API_KEY or the variable named with {option}")
    return (f"the server did not take the key in {env}: check that it is this server's key; "
            f"it goes in QDRANT_API_KEY, or in the variable named with {option}")


def _target_error(backend: Backend, what: str, hint: str | None = None
                  ) -> Callable[[Failure, BaseException], Exception]:
    """A refusal of ``what`` as a ``TargetError``: hinted by ``refusal_hint``, else ``hint``."""
    def make(failure: Failure, exc: BaseException) -> Exception:
        return TargetError(f"{what}: {failure.message}", location=Location(backend.label),
                           hint=refusal_hint(backend, failure) or hint)
    return make


def _parse_filter_json(flt: Any) -> dict[str, Any] | None:
    if flt is None or flt == "":
        return None
    if isinstance(flt, (str, bytes)):
        try:
            flt = orjson.loads(flt)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"--filter is not valid JSON: {exc}",
                             hint="pass a Qdrant filter, e.g. "
                                  '\'{"must": [{"key": "lang", "match": {"value": "en"}}]}\''
                             ) from exc
    if not isinstance(flt, dict):
        raise UsageError("--filter must be a JSON object (a Qdrant filter)")
    return flt


# ----------------------------------------------------------------- columns from scroll pages


class _Irregular(Exception):
    """A point the column-wise path does not take; ``BatchBuilder`` decides what it is."""


class ReadBuilder(BatchBuilder):
    """``BatchBuilder`` for points read from a collection: a point whose payload JSON text
    cannot hold (a lone surrogate, which local mode keeps; a value ``dumps_payload`` refuses)
    is rejected, named by collection and id, rather than failing the whole batch."""

    def add(self, point: Any, *, line: int | None = None, row: int | None = None) -> bool:
        n = len(self)
        try:
            if not super().add(point, line=line, row=row):
                return False
        except (ValueError, RecordError) as exc:
            if isinstance(exc, RecordError) and exc.location.source is not None:
                raise  # a reject the builder made itself (on_error="fail")
            self._truncate(n)
            self.context.reject(_unwritable_payload(self.source, point, row, exc))
            return False
        text = self.payloads[-1]
        if text is None or text.isascii() or not _SURROGATE.search(text):
            return True
        self._truncate(n)
        self.context.reject(_unwritable_payload(self.source, point, row, None))
        return False

    def _truncate(self, n: int) -> None:
        """Forget what ``add`` appended past the first ``n`` points."""
        for acc in (self.ids, self.payloads, self.where, self.points, *self.vectors.values()):
            del acc[n:]


class DenseColumns:
    """``BatchBuilder``'s interface for streams whose vectors are all dense float32: column-wise
    batches straight from scroll records, without a per-point numpy round trip.

    Each vector is packed to float32 bytes as it arrives (the engine's list of floats is then
    dropped), ids are encoded and payloads dumped once. Anything out of the ordinary (an id of
    another kind, an unknown vector name, a wrong length, a value that is not a number or is
    outside float32, NaN or infinity, a payload that is not an object) hands the whole pending
    batch to a ``BatchBuilder``, replayed point by point, so rejections, their messages and the
    batches are exactly what ``BatchBuilder`` makes of the same points.
    """

    @staticmethod
    def fits(manifest: Manifest) -> bool:
        return bool(manifest.vectors) and all(
            v.kind == "dense" and v.datatype == "float32" for v in manifest.vectors)

    def __init__(self, manifest: Manifest, context: Context, source: str):
        self.manifest = manifest
        self.context = context
        self.source = source
        self.schema = manifest.schema()
        self.id_type = self.schema.field(ID_COLUMN).type
        self.specs = list(manifest.vectors)
        self.packers = {v.name: struct.Struct(f"<{v.size}f") for v in self.specs}
        # the common case, one unnamed vector and integer ids, skips the general checks
        self._single = (self.packers[""] if [v.name for v in self.specs] == [""]
                        and manifest.id_kind == "int" else None)
        self._builder: BatchBuilder | None = None
        self._reset()

    def _reset(self) -> None:
        self.pids: list[Any] = []
        self.ids: list[Any] = []
        self.payloads: list[str | None] = []
        self.rows: list[int | None] = []
        self.vectors: dict[str, list[bytes | None]] = {v.name: [] for v in self.specs}

    def __len__(self) -> int:
        return len(self._builder) if self._builder is not None else len(self.ids)

    def add(self, point: dict[str, Any], *, row: int | None = None) -> bool:
        if self._builder is not None:
            return self._builder.add(point, row=row)
        if self._single is not None:
            pid, vecs, payload = point["id"], point["vector"], point.get("payload")
            if (type(pid) is int and 0 <= pid <= MAX_UINT64 and type(vecs) is dict
                    and len(vecs) == 1 and type(vecs.get("")) is list
                    and (payload is None or type(payload) is dict)):
                try:
                    packed = self._single.pack(*vecs[""])
                except (struct.error, OverflowError):
                    pass
                else:
                    try:
                        text = None if payload is None else _payload_text(payload)
                    except (ValueError, RecordError) as exc:
                        self.context.reject(_unwritable_payload(self.source, point, row, exc))
                        return False
                    self.pids.append(pid)
                    self.ids.append(pid)
                    self.payloads.append(text)
                    self.rows.append(row)
                    self.vectors[""].append(packed)
                    return True
        try:
            pid = point["id"]
            sid = encode_id(pid, self.manifest.id_kind)
            vecs = point["vector"]
            payload = point.get("payload")
            if (not isinstance(vecs, dict) or (not vecs and not self.manifest.vectors_optional)
                    or (payload is not None and not isinstance(payload, dict))):
                raise _Irregular
            packed = {}
            for name, value in vecs.items():
                if type(value) is not list:
                    raise _Irregular
                packed[name] = self.packers[name].pack(*value)
        except (_Irregular, ValueError, KeyError, TypeError, OverflowError, struct.error):
            self._hand_over()
            assert self._builder is not None
            return self._builder.add(point, row=row)
        try:
            text = None if payload is None else _payload_text(payload)
        except (ValueError, RecordError) as exc:
            self.context.reject(_unwritable_payload(self.source, point, row, exc))
            return False
        self.pids.append(pid)
        self.ids.append(sid)
        self.payloads.append(text)
        self.rows.append(row)
        for name, acc in self.vectors.items():
            acc.append(packed.get(name))
        return True

    def _hand_over(self) -> None:
        """Replay the pending points into a ``BatchBuilder`` (vectors as the floats they were:
        float32 bytes widen back exactly)."""
        builder = ReadBuilder(self.manifest, self.context, source=self.source)
        for i, pid in enumerate(self.pids):
            vecs = {}
            for name, acc in self.vectors.items():
                if acc[i] is not None:
                    vecs[name] = np.frombuffer(acc[i], dtype="<f4").tolist()
            text = self.payloads[i]
            builder.add({"id": pid, "vector": vecs,
                         "payload": None if text is None else json.loads(text)},
                        row=self.rows[i])
        self._reset()
        self._builder = builder

    def flush(self) -> pa.RecordBatch | None:
        if self._builder is not None:
            batch = self._builder.flush()
            self._builder = None
            self._reset()
            return batch
        n = len(self.ids)
        if not n:
            return None
        columns = []
        for spec in self.specs:
            chunks = self.vectors[spec.name]
            present = [i for i, c in enumerate(chunks) if c is not None]
            flat = np.frombuffer(b"".join([c for c in chunks if c is not None]), dtype="<f4")
            if not np.isfinite(flat).all():
                self._hand_over()
                return self.flush()
            col: pa.Array = pa.FixedSizeListArray.from_arrays(pa.array(flat), spec.size)
            if len(present) < n:
                take = np.full(n, -1, dtype=np.int64)
                take[present] = np.arange(len(present))
                col = col.take(pa.array(take, mask=take < 0))
            columns.append((spec.column, col))
        arrays = dict(columns)
        arrays[ID_COLUMN] = pa.array(self.ids, type=self.id_type)
        arrays[PAYLOAD_COLUMN] = pa.array(self.payloads, type=pa.string())
        batch = pa.RecordBatch.from_arrays([arrays[f.name] for f in self.schema],
                                           schema=self.schema)
        self._reset()
        return batch


# --------------------------------------------------------------------------------- reader


class QdrantReader(ClosingReader):
    """Stream a collection with scroll, ``page_size`` points per request, never whole.

    Opens the collection, reads its config and tells the id kind up front with three cheap
    probes (Qdrant scrolls integer ids before UUIDs, so the first point and the first point
    after the nil UUID say which kinds exist; a count on ``id_field`` says whether mapped ids
    exist). ``InputError`` when the folder or collection is missing; ``UsageError`` for a bad
    location or filter; ``TargetError`` (server message) when the server refuses a request.
    """

    format_name = "qdrant"

    def __init__(self, location: str, *, context: Context, api_key_env: str | None = None,
                 timeout: float | None = None, page_size: int | None = None,
                 filter: Any = None, id_field: str | None = None,
                 max_retries: int | None = None, **options: Any):
        reject_unknown_options(self.format_name, options)
        self.location = location
        self.context = context
        if page_size is not None and page_size <= 0:
            raise UsageError(f"--page-size must be a positive integer, not {page_size}")
        self.page_size = page_size
        self.id_field = id_field or DEFAULT_ID_FIELD
        self.retry = RetryPolicy(max_retries=6 if max_retries is None else max_retries)
        self.backend = self._open(location, api_key_env=api_key_env, timeout=timeout)
        try:
            self._setup(_parse_filter_json(filter))
        except BaseException:
            self.backend.close()
            raise

    def _open(self, location: str, **kw: Any) -> Backend:
        return open_backend(location, for_reading=True, **kw)

    def _rpc(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return self.retry.call(fn, what=what,
                                   on_terminal=_target_error(self.backend, what))
        except TransientError as exc:
            raise TargetError(exc.message, location=Location(self.backend.label),
                              hint=retry_hint(exc.message)) from exc

    def _setup(self, flt: dict[str, Any] | None) -> None:
        b = self.backend
        if not self._rpc(b.exists, "checking the collection"):
            raise InputError("collection not found", location=Location(b.label),
                             hint=missing_collection_hint(b))
        self.collection = self._rpc(b.config, "reading the collection config")
        try:
            self.filter = b.parse_filter(flt) if flt is not None else None
        except VecferryError:
            raise
        except Exception as exc:
            raise UsageError(f"--filter is not a valid Qdrant filter: "
                             f"{validation_summary(exc)}",
                             hint="see Qdrant's filtering docs; e.g. "
                                  '{"must": [{"key": "lang", "match": {"value": "en"}}]}'
                             ) from exc
        self.filter_json = flt
        #: the shard keys of a custom-sharded collection, read one key at a time so each point
        #: carries its key (``SHARD_KEY_FIELD``); None under automatic sharding
        self.shard_keys: list[Any] | None = (
            list(self.collection.get("shard_keys") or [])
            if self.collection.get("sharding_method") == "custom" else None)
        specs = specs_from_config(self.collection)
        self.manifest = Manifest(
            vectors=specs,
            id_kind=self._probe_id_kind(),
            count=self.count(),
            source={"format": self.format_name, "location": b.label, "engine": b.engine,
                    **({"filter": flt} if flt is not None else {})},
            collection={k: v for k, v in self.collection.items() if k != "points_count"},
        )
        self.schema: pa.Schema = self.manifest.schema()

    def _probe_id_kind(self) -> str:
        b = self.backend
        first, _ = self._rpc(lambda: b.scroll(None, 1, None, False, False), "scrolling")
        if not first:
            return "int"
        kinds = set()
        if isinstance(first[0][0], int):
            kinds.add("int")
        after, _ = self._rpc(lambda: b.scroll(NIL_UUID, 1, None, False, False), "scrolling")
        if after and not isinstance(after[0][0], int):
            kinds.add("uuid")
            mapped = b.parse_filter({"must_not": [{"is_empty": {"key": self.id_field}}]})
            if self._rpc(lambda: b.count(mapped), "counting") > 0:
                kinds.add("string")
        return merge_id_kinds(kinds)

    def count(self) -> int:
        """Exact number of points (of the filter's subset when there is a filter)."""
        flt = self.filter
        return int(self._rpc(lambda: self.backend.count(flt), "counting points"))

    def _skip(self, start: int, shard_key: Any = None) -> tuple[Any, bool]:
        """The scroll offset of point number ``start`` (of shard key ``shard_key`` when
        given; ids only, no vectors fetched)."""
        b, offset, remaining = self.backend, None, start
        kw = {} if shard_key is None else {"shard_key": shard_key}
        while remaining > 0:
            limit = min(remaining, 10_000) + 1
            recs, nxt = self._rpc(
                lambda off=offset, lim=limit: b.scroll(off, lim, self.filter, False, False, **kw),
                "scrolling")
            if len(recs) > remaining:
                return recs[remaining][0], False
            remaining -= len(recs)
            if nxt is None:
                return None, True
            offset = nxt
        return offset, False

    def batches(self, batch_size: int, start: int = 0) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` points, from point number ``start``.

        A custom-sharded collection is read one shard key after another, in the order the
        server lists them (a batch never spans two keys), each point's key in its payload.
        """
        if self.shard_keys is not None:
            yield from self._sharded_batches(batch_size, start)
            return
        offset, done = self._skip(start) if start else (None, False)
        if done:
            return
        yield from self._scroll_batches(batch_size, offset, row=start)

    def _sharded_batches(self, batch_size: int, start: int) -> Iterator[pa.RecordBatch]:
        row = 0
        for key in self.shard_keys or []:
            offset = None
            if start > row:
                n = int(self._rpc(lambda key=key: self.backend.count(self.filter, shard_key=key),
                                  "counting points"))
                if start >= row + n:
                    row += n
                    continue
                offset, done = self._skip(start - row, shard_key=key)
                row = start
                if done:
                    continue
            for batch in self._scroll_batches(batch_size, offset, row=row, shard_key=key):
                row += batch.num_rows
                yield batch

    def partitions(self, target_bytes: int) -> list[dict[str, Any]] | None:
        """Pieces of a server collection of about ``target_bytes`` each, from metadata only.

        Custom sharding: one partition per shard key, ``{"shard_key": key}`` (exact counts).
        Otherwise id ranges ``{"from": id or None, "to": id or None}`` (Qdrant ids, ``from``
        included, ``to`` excluded, in scroll order: see ``id_order``; None is the start or the
        end), cut at quantiles of ids the server samples at random from the filter's subset,
        so two plans of one collection differ; their ``rows`` are estimates that add up to the
        exact count. The size of a point is estimated from the manifest's vector sizes.

        None (the whole collection is one partition) in local mode and Edge, whose folder one
        process holds, for a collection of at most ``target_bytes``, and when the server cannot
        sample (an older server or client).
        """
        b = self.backend
        if b.engine != "server":
            return None
        point_bytes = _POINT_OVERHEAD + sum(4 * (v.size or 0) for v in self.manifest.vectors)
        keys = self.shard_keys
        if keys:
            out = []
            for key in keys:
                n = int(self._rpc(lambda key=key: b.count(self.filter, shard_key=key),
                                  "counting points"))
                out.append({"spec": {"shard_key": key}, "rows": n, "bytes": n * point_bytes})
            return out
        total = int(self.manifest.count or 0)
        parts = min(total, -(-total * point_bytes // max(1, target_bytes)))
        if parts < 2:
            return None
        try:
            sample = self._sample(parts * SAMPLES_PER_PARTITION)
        except Exception:
            return None
        if len(sample) < 2:
            return None
        parts = min(parts, len(sample))
        # quantile i starts range i; a repeated index (a small sample) would be an empty range
        cuts = sorted({i * len(sample) // parts for i in range(1, parts)})
        edges = [0, *cuts, len(sample)]
        out = []
        for lo, hi in itertools.pairwise(edges):
            rows = round(total * hi / len(sample)) - round(total * lo / len(sample))
            out.append({"spec": {"from": sample[lo] if lo else None,
                                 "to": sample[hi] if hi < len(sample) else None},
                        "rows": rows, "bytes": rows * point_bytes})
        return out

    def _sample(self, k: int) -> list[Any]:
        """About ``k`` distinct ids of the filter's subset, at random, in scroll order."""
        got: dict[tuple[int, int], Any] = {}
        for _ in range(-(-k // _SAMPLE_REQUEST)):
            ids = self._rpc(lambda: self.backend.sample_ids(
                min(_SAMPLE_REQUEST, k - len(got)), self.filter), "sampling ids")
            got.update((id_order(i), i) for i in ids)
            if len(got) >= k or not ids:
                break
        return [got[key] for key in sorted(got)]

    def read_partition(self, spec: dict[str, Any], batch_size: int
                       ) -> Iterator[pa.RecordBatch]:
        """The points of one spec of ``partitions`` (all of a shard key's, or those from id
        ``spec["from"]`` up to id ``spec["to"]``), through the filter and built exactly as
        ``batches`` builds them. Rejects carry the point id but no row: a partition does not
        know how many points come before it."""
        if "shard_key" in spec:
            return self._scroll_batches(batch_size, None, shard_key=spec["shard_key"])
        return self._scroll_batches(batch_size, spec.get("from"), stop=spec.get("to"))

    def _scroll_batches(self, batch_size: int, offset: Any, *, row: int | None = None,
                        stop: Any = None, shard_key: Any = None) -> Iterator[pa.RecordBatch]:
        """Batches of the points scrolled from ``offset`` (a Qdrant id; None: the start) up to
        the first with an id at or after ``stop`` (None: the end), of shard key ``shard_key``
        when given (each point's payload then names it in ``SHARD_KEY_FIELD``); ``row``
        numbers the first point for rejects (None: unnumbered)."""
        b = self.backend
        page = self.page_size or (DEFAULT_PAGE_SIZE if b.engine == "server"
                                  else max(1, min(batch_size, 4096)))
        if shard_key is None:
            def fetch(off: Any) -> tuple[Any, Any]:
                return b.scroll_page(off, page, self.filter)
        else:
            # only a ClientBackend lists shard keys, so only its scroll is asked for one
            def fetch(off: Any) -> tuple[Any, Any]:
                return b.scroll(off, page, self.filter, True, True, shard_key=shard_key)
        stop_at = None if stop is None else id_order(stop)
        builder: BatchBuilder | DenseColumns
        if DenseColumns.fits(self.manifest):
            builder = DenseColumns(self.manifest, self.context, source=b.label)
        else:
            builder = ReadBuilder(self.manifest, self.context, source=b.label)
        while True:
            recs, nxt = self._rpc(lambda off=offset: fetch(off), "scrolling")
            id_field = self.id_field
            add = builder.add
            pending = len(builder)
            for pid, vectors, payload in recs:
                if stop_at is not None and id_order(pid) >= stop_at:
                    nxt = None
                    break
                if payload and id_field in payload:
                    pid, mapped = original_id(pid, payload, id_field)
                    if mapped:
                        payload = {k: v for k, v in payload.items() if k != id_field}
                        if self.manifest.id_kind == "mixed" and not self._fits_mixed(
                                pid, vectors, payload, row):
                            if row is not None:
                                row += 1
                            continue
                if shard_key is not None:
                    payload = {**(payload or {}), SHARD_KEY_FIELD: shard_key}
                add({"id": pid, "vector": vectors, "payload": payload or None}, row=row)
                if row is not None:
                    row += 1
                pending += 1
                if pending >= batch_size and len(builder) >= batch_size:
                    batch = builder.flush()
                    pending = 0
                    if batch is not None:
                        yield batch
            if nxt is None or not recs:
                break
            offset = nxt
        batch = builder.flush()
        if batch is not None:
            yield batch

    def _fits_mixed(self, pid: str, vectors: Any, payload: dict[str, Any], row: int | None
                    ) -> bool:
        """Whether the original string id ``pid`` of a collection holding integer ids too can
        travel as a string id; rejects its point (saying what to do) when it cannot: a
        stream mixing integer and string ids cannot tell the string ``'2'`` from ``2``."""
        try:
            encode_id(pid, "mixed")
        except ValueError as exc:
            self.context.reject(record_error(
                f"{exc}: the collection holds integer ids too, and keeps this point's "
                f"original id in the payload field {self.id_field!r}",
                source=self.backend.label, row=row, point_id=pid,
                hint=f"read with --id-field OTHER to export such points under their Qdrant "
                     f"UUIDs, the original ids kept in the payload field {self.id_field!r}; "
                     "or pass --on-error skip to leave them out",
                raw={"id": pid, "vector": _json_safe_vectors(vectors),
                     "payload": payload or None}))
            return False
        return True

    def search(self, queries: np.ndarray, k: int, vector: str) -> list[list[Any]]:
        """Ids of the ``k`` nearest points to each query, best first, original ids restored.

        Used by ``verify`` for search parity and latency; goes through the engine's own index
        (HNSW on a server), exactly as an application's queries would.
        """
        out = []
        for q in np.asarray(queries, dtype=np.float32):
            hits = self._rpc(lambda q=q: self.backend.search(q.tolist(), vector, k), "searching")
            out.append([original_id(pid, payload, self.id_field)[0] for pid, payload in hits])
        return out

    def retrieve(self, ids: list[Any]) -> pa.RecordBatch:
        """The points with these (original) ids as one batch; ids not found are left out.

        Lets ``verify --sample`` fetch a sample by id instead of scrolling the collection.
        """
        wanted = [qdrant_id(i)[0] for i in ids]
        records = self._rpc(lambda: self.backend.retrieve(wanted), "retrieving points")
        builder = ReadBuilder(self.manifest, self.context, source=self.backend.label)
        for row, (pid, vectors, payload) in enumerate(records):
            pid, mapped = original_id(pid, payload, self.id_field)
            if mapped:
                payload = {k: v for k, v in payload.items() if k != self.id_field}
                if self.manifest.id_kind == "mixed" and not self._fits_mixed(
                        pid, vectors, payload, row):
                    continue
            builder.add({"id": pid, "vector": vectors, "payload": payload or None}, row=row)
        batch = builder.flush()
        if batch is None:  # none of the ids is in the collection
            batch = pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in self.schema],
                                               schema=self.schema)
        return batch

    def close(self) -> None:
        self.backend.close()


# --------------------------------------------------------------------------------- writer

DISTANCE_GUESSED = ("the source does not say which distance its vectors use; the collection "
                    "uses Dot, which stores vectors exactly (pass --distance to choose)")

#: characters a Qdrant vector (or collection) name cannot hold: the server's rule, which
#: qdrant-client's local mode applies too (``_validate_new_vector_name``)
_NAME_CHARS = ("<", ">", ":", '"', "/", "\\", "|", "?", "*", "\0", "\x1f")
_NAME_CHARS_SHOWN = ("<", ">", ":", '"', "/", "\\", "|", "?", "*", "NUL", "0x1F")
#: bytes of UTF-8 a vector name may take
MAX_VECTOR_NAME_BYTES = 200


def vector_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Qdrant vector name (None when it can; '' is the unnamed
    vector): the rules Qdrant and qdrant-client's local mode apply when a collection is
    created. Edge checks less, and fails half-way (``../x``) or on the file system."""
    if name in (".", ".."):
        return "is a directory name"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_VECTOR_NAME_BYTES:
        return f"is {size} bytes long (at most {MAX_VECTOR_NAME_BYTES})"
    for char, shown in zip(_NAME_CHARS, _NAME_CHARS_SHOWN, strict=True):
        if char in name:
            return f"holds {shown!r}" if len(shown) == 1 else f"holds {shown}"
    return None


def _overflowing_lengths(column: pa.Array, spec: VectorSpec) -> dict[int, str]:
    """{row: what} for rows of a float32 dense or multivector column holding a finite vector
    whose sum of squares overflows float32 (as Qdrant sums them for the Cosine distance)."""
    size = spec.size or 0
    label = "vector" if spec.name == "" else f"vector {spec.name!r}"
    n = len(column)
    if not n or not size:
        return {}
    if spec.kind == "multi":
        counts = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        subs = column.flatten()
        mat = subs.flatten().to_numpy(zero_copy_only=False).reshape(len(subs), size)
        owner = np.repeat(np.arange(n), counts)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    else:
        if column.null_count:
            column = column.fill_null(pa.scalar([0.0] * size, column.type))
        mat = column.flatten().to_numpy(zero_copy_only=False).reshape(n, size)
        owner = first = None
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->i", mat, mat, dtype=np.float32)
    over = ~np.isfinite(squares)
    if not over.any():
        return {}
    over &= np.isfinite(mat).all(axis=1)  # NaN and infinity are refused as such elsewhere
    out: dict[int, str] = {}
    for i in np.flatnonzero(over):
        length = float(np.linalg.norm(mat[i].astype(np.float64)))
        if owner is None or first is None:
            out.setdefault(int(i), f"{label} has length {length:.4g}, which is")
        else:
            row = int(owner[i])
            out.setdefault(row, f"{label} has a sub-vector (number {int(i - first[row]) + 1}) "
                                f"of length {length:.4g}, which is")
    return out


@dataclass
class _Ticket:
    """One ``write_batch`` call: its stream rows count as acknowledged when all its
    requests are."""

    rows: int
    futures: list[Future]


class QdrantWriter(ClosingWriter):
    """Load a stream into a collection, creating it from the manifest when missing.

    Before the first write it checks the target: ``mode="fail-if-exists"`` refuses an existing
    collection (``OutputExistsError``); ``"overwrite"`` drops and recreates it (never while
    resuming); ``"append"`` (default) checks names, sizes, distance and datatype and refuses
    with the differences (``TargetError``). ``UnsupportedError`` when the stream holds
    something a collection cannot (an unnamed sparse vector, an unnamed vector next to named
    ones).

    ``write_batch`` splits a batch into requests by bytes (``batch_bytes``, servers only) and
    keeps up to ``parallel`` requests in flight; ``acknowledged_rows`` counts the stream rows
    whose requests have all been acknowledged (``wait=true``), in order, which is what the
    resume state may skip. Transient failures are retried with backoff and jitter; a request
    that keeps timing out is halved down to single points; what still fails raises a
    ``TargetError`` naming the ids. A 4xx fails at once with the server's message.
    """

    format_name = "qdrant"
    resumable = True

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, resuming: bool = False, mode: str | None = None,
                 api_key_env: str | None = None, timeout: float | None = None,
                 parallel: int | None = None, max_retries: int | None = None,
                 id_field: str | None = None, bulk: bool = False,
                 batch_bytes: int | None = None, distance: str | None = None,
                 collection_config: Any = None, shard_key: Any = None,
                 resume_note: dict[str, Any] | None = None, **options: Any):
        reject_unknown_options(self.format_name, options)
        if mode is None:
            mode = "overwrite" if overwrite else "append"
        elif overwrite and mode != "overwrite":
            raise UsageError(f"--overwrite conflicts with --mode {mode}")
        if mode not in _MODES:
            raise UsageError(f"unknown mode {mode!r}", hint=f"one of {', '.join(_MODES)}")
        if parallel is not None and parallel <= 0:
            raise UsageError("--parallel must be a positive integer")
        if max_retries is not None and max_retries < 0:
            raise UsageError("--max-retries must not be negative")
        if batch_bytes is not None and batch_bytes < 1024:
            raise UsageError("--batch-bytes must be at least 1024")
        self.location = location
        self.context = context
        self.mode = mode
        self.resuming = resuming
        self.id_field = id_field or DEFAULT_ID_FIELD
        self.manifest = manifest_of(schema)
        self.wanted, self._guessed = config_from_manifest(self.manifest, distance)
        self._overrides = (parse_collection_config(collection_config)
                           if collection_config is not None else None)
        #: --shard-key: every point goes to this key of a custom-sharded collection
        self.shard_key = parse_shard_key(shard_key) if shard_key is not None else None
        if self._overrides:
            self.wanted = apply_collection_config(self.wanted, self._overrides)
        self.retry = RetryPolicy(max_retries=6 if max_retries is None else max_retries)
        self.halvings = 0
        self.retried_requests = 0
        self._stats_lock = threading.Lock()
        self.backend = self._open(location, api_key_env=api_key_env, timeout=timeout)
        b = self.backend
        #: how long a request may have gone on before the client gave up (qdrant-client
        #: rounds the timeout up to whole seconds)
        self._request_timeout = math.ceil(timeout if timeout is not None else DEFAULT_TIMEOUT)
        self.parallel = min(parallel or (DEFAULT_PARALLEL_SERVER if b.engine == "server" else 1),
                            b.max_parallel)
        self.batch_bytes = batch_bytes or (DEFAULT_BATCH_BYTES if b.limited_requests else None)
        self.created = self.dropped = False
        self._bulk_restore: int | None = None
        #: what a failed or interrupted run left that the user must know (see ``abort``)
        self.abort_notice: str | None = None
        #: what a resumed run must be told (kept in its state): the HNSW m a --bulk load
        #: switched off, to restore it even when the run that switched it off was killed
        self.resume_note: dict[str, Any] | None = resume_note
        self._tickets: deque[_Ticket] = deque()
        #: id -> the request that holds it, while requests may be in flight (see _submit)
        self._sent_ids: dict[Any, Future] = {}
        #: the ids of requests that got no answer (timed out, connection lost): the server
        #: may carry such a request out after a later record of one of its ids (see
        #: ``_resend_last``), which the later record must then overwrite again
        self._unanswered: set[Any] = set()
        self._unanswered_at = 0.0
        self._unanswered_overflow = False
        #: id -> its last record sent after a request without an answer held the id
        self._resend: dict[Any, tuple[dict[str, Any], Any]] = {}
        self.resent_after_no_answer = 0
        self._acked = 0
        self._failure: BaseException | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._shard_keys: list[Any] | None = None
        try:
            self._prepare(bulk)
        except BaseException:
            self._restore_bulk(quiet=True)
            with contextlib.suppress(Exception):
                b.end_load()
            b.close()
            self._remove_made_folder()
            raise
        if self.parallel > 1 or b.overlap:
            self._executor = ThreadPoolExecutor(self.parallel, thread_name_prefix="vecferry-up")

    def _open(self, location: str, **kw: Any) -> Backend:
        return open_backend(location, for_reading=False, **kw)

    def _rpc(self, fn: Callable[[], Any], what: str, hint: str | None = None) -> Any:
        """``fn`` retried; ``TargetError`` when refused (``hint``: what to do about a refusal
        ``refusal_hint`` has nothing for) or still failing after the retries."""
        try:
            return self.retry.call(fn, what=what,
                                   on_terminal=_target_error(self.backend, what, hint))
        except TransientError as exc:
            raise TargetError(exc.message, location=Location(self.backend.label),
                              hint=retry_hint(exc.message)) from exc

    # -- before the first write

    def _prepare(self, bulk: bool) -> None:
        """Check the target at open; what changes it (drop, create, bulk) waits for ``ready``,
        so a run whose source fails before its first batch leaves the target as it was."""
        b = self.backend
        where = Location(b.label)
        exists = self._rpc(b.exists, "checking the collection")
        self._drop_first = False
        existing: dict[str, Any] = {}
        # what an earlier run's state is checked against (``stale_resume``)
        self._found = exists
        self._found_points = (self._rpc(b.count, "counting the points")
                              if exists and self.resuming else None)
        if exists and not self.resuming:
            if self.mode == "fail-if-exists":
                raise OutputExistsError("collection exists", location=where,
                                        hint="use --mode append to add to it or --mode "
                                             "overwrite to replace it")
            if self.mode == "overwrite":
                self._drop_first, exists = True, False
        if exists:
            if self._overrides and not self.resuming:
                self.context.warn(f"{self.location}: the collection exists, so "
                                  "--collection-config is not applied (it sets up a "
                                  "collection vecferry creates)")
            existing = self._rpc(b.config, "reading the collection config")
            have = existing.get("vectors") or {}
            for name in self._guessed:
                # the source says no distance: the collection's own is taken, not refused
                if isinstance(have.get(name), dict) and have[name].get("distance"):
                    self.wanted["vectors"][name]["distance"] = have[name]["distance"]
            diff = config_diff(existing, self.wanted)
            if diff:
                raise TargetError(
                    "collection exists with a config the source does not fit:\n  "
                    + "\n  ".join(diff), location=where,
                    hint="load into another collection, or check the source: without a "
                         "manifest, sizes come from its first points; --mode overwrite drops "
                         "the collection, its points with it, and creates it anew")
            for line in modifier_diff(existing, self.wanted):
                self.context.warn(f"{self.location}: {line}")
        self._sharding(existing if exists else None)
        if not exists and not self.manifest.vectors and b.engine == "edge":
            raise UnsupportedError(
                "the stream has no vectors (its points carry ids and payloads only); a Qdrant "
                "Edge shard needs at least one vector", location=where,
                hint="load it into a Qdrant server or a qdrant-local:// folder, "
                     "or write Parquet or JSONL")
        if not exists:
            self._refuse_bad_vector_names()
        #: the collection gets Dot for vectors whose distance the source does not say: the
        #: warning comes with the first point that has such a vector (none may, as in a
        #: stream of points without vectors), or with a dry run's plan
        self._distance_unsaid = not exists and bool(self._guessed)
        self._pending: tuple[bool, bool] | None = (not exists, bulk)

    def _refuse_bad_vector_names(self) -> None:
        """Refuse, before anything is created, a vector name Qdrant cannot hold (Qdrant keeps
        a vector's files in a directory named after it; Edge would leave a shard it cannot
        open again)."""
        for key, kind in (("vectors", "vector"), ("sparse_vectors", "sparse vector")):
            for name in self.wanted.get(key) or {}:
                problem = vector_name_problem(name)
                if problem:
                    raise UnsupportedError(
                        f"{kind} name {name!r} {problem}, which Qdrant does not allow",
                        location=Location(self.backend.label),
                        hint="rename the vector in the source: a Qdrant vector name is at "
                             "most 200 bytes, is not '.' or '..', and has none of "
                             + " ".join(_NAME_CHARS_SHOWN))

    def stale_resume(self, written: int) -> str | None:
        """Why the state of an earlier run that wrote ``written`` points cannot be continued
        here: the collection it loaded is gone, or holds no points (deleted and made again).
        None when it can. On a reason the writer forgets that run (its ``--bulk`` note too)
        and loads as a fresh run, which the caller starts from the source's beginning."""
        if not self.resuming or written <= 0:
            return None
        if not self._found:
            why = "the collection it loaded no longer exists"
        elif self._found_points == 0:
            why = "the collection it loaded holds no points now"
        else:
            return None
        self.resuming, self.resume_note = False, None
        return why

    def _sharding(self, existing: dict[str, Any] | None) -> None:
        """Decide where shard keys go: ``_shard_keys`` is the target's list of keys when it
        is (or will be created) custom-sharded, else None; a custom-sharded source whose
        target has no shard keys is told, before writing, that the keys stay in the payload.
        """
        b = self.backend
        if self.shard_key is not None:
            self._one_shard_key(existing)
            return
        source = self.wanted.get("sharding_method") == "custom"
        source_keys = list(self.wanted.get("shard_keys") or [])
        if existing is not None:
            custom = existing.get("sharding_method") == "custom"
            self._shard_keys = list(existing.get("shard_keys") or []) if custom else None
        elif source and b.engine == "server":
            self._shard_keys = source_keys
        else:
            self._shard_keys = None
            self.wanted.pop("sharding_method", None)
            self.wanted.pop("shard_keys", None)
        self.shard_keys_created: list[Any] = []
        if source and self._shard_keys is None:
            what = ("the target collection uses automatic sharding" if existing is not None
                    else "a Qdrant Edge shard has no shard keys" if b.engine == "edge"
                    else "local mode has no shard keys")
            keys = ", ".join(repr(k) for k in source_keys[:_SHOW_IDS])
            self.context.warn(
                f"{self.location}: the source collection uses custom sharding (shard keys: "
                f"{keys or 'none'}), and {what}: each point keeps its shard key in the "
                f"payload field {SHARD_KEY_FIELD!r} (a custom-sharded collection loaded from "
                "this one later takes it back out)")

    def _one_shard_key(self, existing: dict[str, Any] | None) -> None:
        """``--shard-key``: the target is (or is created) custom-sharded, and every point
        goes to that key, whatever shard key its payload names."""
        where = Location(self.backend.label)
        if self.backend.engine != "server":
            raise UsageError("--shard-key needs a Qdrant server: local mode and Edge have no "
                             "shard keys", location=where)
        if existing is not None and existing.get("sharding_method") != "custom":
            raise UsageError("--shard-key needs a collection with custom sharding; this one "
                             "uses automatic sharding", location=where,
                             hint="drop --shard-key, or load into a new collection (created "
                                  "with custom sharding)")
        if existing is not None:
            self._shard_keys = list(existing.get("shard_keys") or [])
        else:
            self.wanted["sharding_method"] = "custom"
            self._shard_keys = list(self.wanted.get("shard_keys") or [])
        self.shard_keys_created = []

    def _add_shard_keys(self, keys: Any, *, found: bool) -> None:
        """Create the shard ``keys`` the target lacks, each request retried on its own
        (another process of a partitioned run may have just created one: the target's list
        is read again then). ``found``: keys met in the points, not listed by the source, go
        to ``shard_keys_created``."""
        assert self._shard_keys is not None
        for key in dict.fromkeys(keys):
            if key in self._shard_keys:
                continue
            try:
                self._rpc(lambda key=key: self.backend.create_shard_key(key),
                          f"creating shard key {key!r}")
            except TargetError:
                have = self._rpc(self.backend.config, "reading the collection config")
                if key not in (have.get("shard_keys") or []):
                    raise
            else:
                if found:
                    self.shard_keys_created.append(key)
            self._shard_keys.append(key)

    def plan(self) -> dict[str, Any]:
        """What a run would do to the target, for a dry run (before ``ready``): ``action``
        (``create``, ``drop and create`` or ``append``), the ``config`` a created collection
        gets, its ``shard_keys`` when custom-sharded, whether ``bulk`` indexing is used."""
        if self._distance_unsaid:  # the config shown holds the guess
            self.context.warn(DISTANCE_GUESSED)
        create, bulk = self._pending or (False, False)
        b = self.backend
        out: dict[str, Any] = {
            "collection": b.name, "engine": b.engine,
            "action": ("drop and create" if self._drop_first else
                       "create" if create else "append")}
        if create:
            out["config"] = {k: v for k, v in self.wanted.items()
                             if k not in ("engine", "name", "points_count")}
            self._warn_local_losses()
        if self._shard_keys is not None:
            out["shard_keys"] = list(self._shard_keys)
        if bulk:
            out["bulk"] = True
        return out

    def ready(self) -> None:
        """Make the target ready for points: drop (``--mode overwrite``) and create the
        collection, switch indexing off for ``--bulk``. Runs once, at the first batch that
        has points to write, or at ``close``; a partitioned run's driver calls it before its
        workers start."""
        if self._pending is None:
            return
        create, bulk = self._pending
        self._pending = None
        b = self.backend
        where = Location(b.label)
        if self._drop_first:
            self._rpc(b.drop, "dropping the collection")
            self.dropped = True
        if create:
            try:
                self._create()
            except VecferryError:
                raise
            except Exception as exc:
                raise TargetError(f"cannot create the collection: {validation_summary(exc)}",
                                  location=where) from exc
            self.created = True
            self._warn_local_losses()
            if self._shard_keys is not None:  # the source's keys, in its order
                keys, self._shard_keys = self._shard_keys, []
                self._add_shard_keys(keys, found=False)
        # the m an interrupted --bulk run switched off (its state recorded it): m=0 now is
        # that run's setting, restored at the end even by a run without --bulk
        noted = (self.resume_note or {}).get("hnsw_m") if self.resuming else None
        if bulk or noted:
            current = self._rpc(b.get_hnsw_m, "reading the HNSW config")
            if current == 0 and noted:
                current = int(noted)
            elif current == 0:
                # m=0 is also a deliberate setting (multitenant collections index per tenant
                # with payload_m): with no m of its own recorded, a run leaves it as it is
                self.context.warn(f"{self.location}: HNSW m is already 0, so --bulk leaves "
                                  "indexing as it is and does not switch it on afterwards")
                current = None
            elif not bulk:
                current = None  # indexing is on already: nothing of the old run to undo
            if current and self._rpc(lambda: b.set_hnsw_m(0), "switching HNSW indexing off"):
                self._bulk_restore = current
                self.resume_note = {"hnsw_m": current}
        b.begin_load()

    def _create(self) -> None:
        """Create the collection, retried as any request. An attempt whose answer was lost
        (a timeout, a dropped connection) may have created it: a retry refused with "already
        exists" has found this run's own collection, taken as created (so it gets the
        source's aliases and strict mode) when its config fits the source, else
        ``TargetError`` with the differences (another process created it meanwhile)."""
        b = self.backend
        tries = 0

        def create() -> bool:
            nonlocal tries
            tries += 1
            try:
                b.create(self.wanted)
            except Exception as exc:
                failure = classify(exc)
                if (tries > 1 and failure is not None and not failure.transient
                        and "already exists" in failure.message):
                    return False
                raise
            return True

        if self._rpc(create, "creating the collection", hint=(
                "the server refused the collection's settings: fix what it names; "
                "--collection-config changes the settings of a collection vecferry creates "
                "(--dry-run shows them), or create it yourself and load into it")):
            return
        existing = self._rpc(b.config, "reading the collection config")
        diff = config_diff(existing, self.wanted)
        custom = self.wanted.get("sharding_method") == "custom"
        if custom != (existing.get("sharding_method") == "custom"):
            diff.append("sharding: " + ("custom in the source, automatic in the target"
                                        if custom else
                                        "custom in the target, automatic in the source"))
        if diff:
            raise TargetError(
                "creating the collection: the answer to this run's request was lost, and "
                "retrying it found the collection made, but with a config the source does "
                "not fit (another process created it meanwhile?):\n  " + "\n  ".join(diff),
                location=Location(b.label),
                hint="load into another collection, or drop this one (--mode overwrite drops "
                     "it, its points with it) to create it anew")

    def _warn_local_losses(self) -> None:
        """Say which settings of a local-mode collection this run creates are lost (see
        ``local_mode_losses``): as with payload indexes and strict mode, the collection is
        created without them, and a copy out of it would silently get Qdrant's defaults."""
        if self.backend.engine != "local":
            return
        lost = local_mode_losses(self.wanted, self._overrides)
        if lost:
            self.context.warn(
                f"{self.location}: {', '.join(lost)} not kept: local mode "
                "keeps no HNSW, quantization or storage settings (it searches by scanning "
                "every point), so a copy out of this collection gets Qdrant's defaults; give "
                "them again with --collection-config when copying it out")

    def _restore_bulk(self, quiet: bool = False) -> None:
        """Switch HNSW indexing back on after ``--bulk``. When that fails the collection is
        left with m=0 (every search a full scan): ``abort_notice`` says so and how to mend it,
        and unless ``quiet`` a ``TargetError`` says it too."""
        if self._bulk_restore is None:
            return
        m_value = self._bulk_restore
        try:
            self._rpc(lambda: self.backend.set_hnsw_m(m_value), "restoring HNSW indexing")
            self._bulk_restore = None
        except BaseException as exc:  # Ctrl-C while restoring leaves m=0 as well
            self._bulk_restore = None  # tried: abort need not wait out the retries again
            name = self.backend.name
            self.abort_notice = (
                f"HNSW indexing of collection {name!r} is still off (m=0, set by --bulk) and "
                f"switching it back to m={m_value} failed, so searches scan every point: set "
                f'it with PATCH /collections/{name} {{"hnsw_config": {{"m": {m_value}}}}}, or '
                "run again with --resume --bulk if this run had --resume")
            if not isinstance(exc, Exception):
                raise
            if not quiet:
                reason = exc.message if isinstance(exc, VecferryError) else str(exc)
                raise TargetError(f"the points are written, but restoring HNSW indexing "
                                  f"failed: {reason}", location=Location(self.backend.label),
                                  hint=self.abort_notice) from exc

    # -- writing

    @property
    def acknowledged_rows(self) -> int:
        """Stream rows (from this run's start) whose points are all acknowledged, in order."""
        self._reap(block=False)
        return self._acked

    def _refuse_huge_ints(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` without the points whose payload holds an integer Qdrant would round.

        Qdrant's engine (servers, Edge) keeps payload numbers as 64-bit values, so an integer
        outside -2^63..2^64-1 would come back as a float: such a point is refused, named by
        id and field, rather than changed. Local mode stores Python objects and keeps them.
        """
        if self.backend.engine == "local":
            return batch
        texts = batch.column(PAYLOAD_COLUMN).to_pylist()
        bad = [(row, path) for row, text in enumerate(texts) if (path := huge_int_path(text))]
        if not bad:
            return batch
        keep = np.ones(batch.num_rows, dtype=bool)
        for row, path in bad:
            keep[row] = False
            err = reject_from_row(batch, row, self.manifest,
                                  f"payload field {path!r} holds an integer outside "
                                  "-2^63..2^64-1, which Qdrant stores as a rounded float",
                                  self.location)
            err.hint = "store such numbers as strings in the payload"
            self.context.reject(err)
        return batch.filter(pa.array(keep))

    def _check_payloads(self, batch: pa.RecordBatch) -> None:
        """Warn of payload values the engine would change (Edge overrides it)."""

    def _has_unsaid_vectors(self, batch: pa.RecordBatch) -> bool:
        """Whether a point of ``batch`` has a vector whose distance vecferry chose."""
        return any(batch.column(self.manifest.vector(name).column).null_count < batch.num_rows
                   for name in self._guessed)

    def _refuse_cosine_overflow(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` without the points holding a Cosine vector Qdrant would store as zeros.

        Under the Cosine distance Qdrant's engine (servers, Edge) stores a vector divided by
        its length, the sum of squares taken in float32: a vector whose sum overflows float32
        (a value past about 1.8e19) comes back as all zeros. Such a point is refused, named by
        id and vector. A zero vector, or one too short to divide, is stored as it is and
        passes; so does every vector in local mode, whose files keep vectors as given (it
        divides them in memory only).
        """
        if self.backend.engine == "local":
            return batch
        cosine = [spec for spec in self.manifest.vectors
                  if spec.kind in ("dense", "multi") and spec.datatype == "float32"
                  and ((self.wanted.get("vectors") or {}).get(spec.name) or {}).get(
                      "distance") == "Cosine"]
        bad: dict[int, str] = {}
        for spec in cosine:
            for row, what in _overflowing_lengths(batch.column(spec.column), spec).items():
                bad.setdefault(row, what)
        if not bad:
            return batch
        keep = np.ones(batch.num_rows, dtype=bool)
        for row, what in sorted(bad.items()):
            keep[row] = False
            err = reject_from_row(
                batch, row, self.manifest,
                f"{what} too long for the Cosine distance: Qdrant stores such a vector divided "
                "by its length, whose square overflows float32, so it would be stored as all "
                "zeros", self.location)
            err.hint = ("scale the vector down (Cosine does not depend on a vector's "
                        "length), or load it into a collection with another distance")
            self.context.reject(err)
        return batch.filter(pa.array(keep))

    def _points(self, batch: pa.RecordBatch) -> list[tuple[dict[str, Any], Any]]:
        """(Qdrant point, original id) for every row that can be written; rejects the rest.

        For a custom-sharded target each point's ``shard_key`` is taken out of its payload
        (``SHARD_KEY_FIELD``); a point without a valid one is rejected."""
        sharded = self._shard_keys is not None
        if self.backend.row_views and not sharded:
            fast = self._row_view_points(batch)
            if fast is not None:
                return fast
        bad = non_finite_rows(batch, self.manifest)
        out = []
        for row, point in enumerate(iter_points(batch, self.manifest)):
            if row in bad:
                label = "vector" if bad[row] == "" else f"vector {bad[row]!r}"
                self.context.reject(reject_from_row(
                    batch, row, self.manifest,
                    f"{label} holds NaN or infinity, which Qdrant cannot store",
                    self.location))
                continue
            original = point["id"]
            qid, mapped = qdrant_id(original)
            payload = point.get("payload")
            if sharded:
                key = (self.shard_key if self.shard_key is not None
                       else (payload or {}).get(SHARD_KEY_FIELD))
                problem = _shard_key_problem(key)
                if problem:
                    err = reject_from_row(
                        batch, row, self.manifest,
                        f"{problem}, and the collection uses custom sharding", self.location)
                    err.hint = (f"give each point its shard key in the payload field "
                                f"{SHARD_KEY_FIELD!r}, or load into a collection with "
                                "automatic sharding")
                    self.context.reject(err)
                    continue
                payload = {k: v for k, v in (payload or {}).items()
                           if k != SHARD_KEY_FIELD} or None
                point["shard_key"] = key
            if mapped:
                if payload and self.id_field in payload:
                    self.context.reject(self._id_field_taken(batch, row, original))
                    continue
                payload = {**(payload or {}), self.id_field: str(original)}
            point["id"] = qid
            point["payload"] = payload
            out.append((point, original))
        return out

    def _id_field_taken(self, batch: pa.RecordBatch, row: int, original: Any) -> RecordError:
        """The reject of a point whose id Qdrant cannot hold (so vecferry keeps it in the
        payload field ``id_field``) and whose payload already has that field: reading the
        collection back would take the field for vecferry's own and drop it."""
        err = reject_from_row(
            batch, row, self.manifest,
            f"payload field {self.id_field!r} is taken: Qdrant cannot hold the id "
            f"{original!r}, so vecferry keeps it in that field, and an export would take the "
            "field for its own and drop it", self.location)
        err.hint = ("pass --id-field with a name no payload uses, and the same --id-field "
                    "when reading the collection back")
        return err

    def _row_view_points(self, batch: pa.RecordBatch
                         ) -> list[tuple[dict[str, Any], Any]] | None:
        """``_points`` for an engine that takes ``memoryview`` rows (Edge), when every vector
        is dense float32 and finite and no mapped id's payload already holds ``id_field``:
        each vector is a view of the batch's own buffer (no numpy row objects), each payload
        parsed once. None when the batch needs ``_points``'s general path, which rejects."""
        m = self.manifest
        if not DenseColumns.fits(m):
            return None
        n = batch.num_rows
        views: dict[str, tuple[memoryview, Any, int]] = {}
        for spec in m.vectors:
            col = batch.column(spec.column)
            size = spec.size or 0
            values = col.values.slice(col.offset * size, n * size)
            if values.null_count:
                return None
            flat = values.to_numpy(zero_copy_only=False)
            valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None
            ok = np.isfinite(flat.reshape(n, size)).all(axis=1)
            if valid is not None:
                ok |= ~valid
            if not ok.all():
                return None
            views[spec.name] = (memoryview(np.ascontiguousarray(flat)), valid, size)
        ids = decode_ids(batch.column(ID_COLUMN), m.id_kind)
        texts = batch.column(PAYLOAD_COLUMN).to_pylist()
        single = views.get("") if list(views) == [""] else None
        make = self.backend.point
        out = []
        for i, original in enumerate(ids):
            if type(original) is int:
                qid: Any = original
                mapped = False
            else:
                qid, mapped = qdrant_id(original)
            text = texts[i]
            payload = None if text is None else loads_payload(text)
            if mapped:
                if payload and self.id_field in payload:
                    return None
                payload = {**(payload or {}), self.id_field: str(original)}
            if single is not None:
                mv, _, size = single
                vector: Any = mv[i * size:(i + 1) * size]
            else:
                vector = {name: mv[i * size:(i + 1) * size]
                          for name, (mv, valid, size) in views.items()
                          if valid is None or valid[i]}
            out.append((make(qid, vector, payload), original))
        return out

    def _size(self, point: dict[str, Any]) -> int:
        n = 64
        vec = point["vector"]
        values = vec.values() if isinstance(vec, dict) else [vec]
        for v in values:
            if isinstance(v, dict):
                n += len(v["indices"]) * 32
            elif isinstance(v, list):
                n += sum(x.size for x in v) * _JSON_FLOAT_BYTES
            else:
                n += v.size * _JSON_FLOAT_BYTES
        if point.get("payload"):
            n += len(orjson.dumps(point["payload"], option=orjson.OPT_SERIALIZE_NUMPY)) \
                if self.batch_bytes else 0
        return n

    def _requests(self, items: list[tuple[dict[str, Any], Any]]
                  ) -> Iterator[list[tuple[dict[str, Any], Any]]]:
        """Requests of ``items``: within ``batch_bytes``, each of one shard key."""
        if not self.batch_bytes:
            if self._shard_keys is not None:
                for _, group in itertools.groupby(items, key=lambda it: it[0]["shard_key"]):
                    yield list(group)
            elif items:
                yield items
            return
        chunk: list[tuple[dict[str, Any], Any]] = []
        size = 0
        sharded = self._shard_keys is not None
        for item in items:
            n = self._size(item[0])
            if chunk and (size + n > self.batch_bytes
                          or (sharded and item[0]["shard_key"] != chunk[0][0]["shard_key"])):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            yield chunk

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Queue one batch; raises the failure of any earlier request first."""
        self._raise_failure()
        rows = batch.num_rows  # acknowledged in stream rows, refused ones included
        batch = self._refuse_cosine_overflow(self._refuse_huge_ints(batch))
        self._check_payloads(batch)
        if self._distance_unsaid and self._has_unsaid_vectors(batch):
            self._distance_unsaid = False
            self.context.warn(DISTANCE_GUESSED)
        items = self._points(batch)
        if items:
            prepared = self.backend.prepare([p for p, _ in items])
            items = list(zip(prepared, (o for _, o in items), strict=True))
            self.ready()
            if self._shard_keys is not None:
                self._add_shard_keys((p["shard_key"] for p, _ in items), found=True)
                # one request per key; the sort is stable, so each key's points keep order
                order = {k: i for i, k in enumerate(self._shard_keys)}
                items.sort(key=lambda item: order[item[0]["shard_key"]])
        ticket = _Ticket(rows=rows, futures=[])
        self._tickets.append(ticket)
        for chunk in self._requests(items):
            if self._executor is None:
                fut: Future = Future()
                self._note_repeats(chunk)
                try:
                    self._send(chunk)
                    fut.set_result(None)
                except BaseException as exc:
                    fut.set_exception(exc)
                ticket.futures.append(fut)
            else:
                ticket.futures.append(self._submit(chunk))
        self._reap(block=False)
        self._raise_failure()

    def _submit(self, chunk: list[tuple[dict[str, Any], Any]]) -> Future:
        """Send ``chunk`` on the executor once a request is free and no request in flight
        holds one of its ids.

        Requests in flight may land in any order, and a collection keeps the point an id got
        last: a repeated id's later record overtaking its earlier one would leave the earlier
        one stored. So a chunk waits for the requests that hold its ids.
        """
        assert self._executor is not None
        ids = [o for _, o in chunk] if self.parallel > 1 else []  # one at a time: in order
        earlier = {f for i in ids if (f := self._sent_ids.get(i)) is not None and not f.done()}
        for f in earlier:
            f.exception()  # waits; a failure is raised by the caller's checks
        while self._in_flight() >= self.parallel:
            self._reap(block=True)
        self._note_repeats(chunk)  # every earlier request holding its ids is done now
        fut = self._executor.submit(self._send, chunk)
        if ids:
            if len(self._sent_ids) > 4 * len(ids) * self.parallel:
                # bounded: ids of finished requests can no longer be overtaken
                self._sent_ids = {i: f for i, f in self._sent_ids.items() if not f.done()}
            self._sent_ids.update(dict.fromkeys(ids, fut))
        return fut

    def _in_flight(self) -> int:
        return sum(1 for t in self._tickets for f in t.futures if not f.done())

    def _reap(self, block: bool) -> None:
        """Move fully acknowledged tickets off the front; with ``block``, wait for one."""
        if block:
            for t in self._tickets:
                pending = [f for f in t.futures if not f.done()]
                if pending:
                    pending[0].exception()  # waits
                    break
        while self._tickets:
            t = self._tickets[0]
            if not all(f.done() for f in t.futures):
                break
            for f in t.futures:
                exc = f.exception()
                if exc is not None and self._failure is None:
                    self._failure = exc
            if self._failure is not None:
                break
            self._tickets.popleft()
            self._acked += t.rows

    def _raise_failure(self) -> None:
        if self._failure is None:
            for t in self._tickets:
                for f in t.futures:
                    if f.done() and f.exception() is not None:
                        self._failure = f.exception()
                        break
        if self._failure is not None:
            raise self._failure

    def _note_repeats(self, chunk: list[tuple[dict[str, Any], Any]]) -> None:
        """Keep the records of ``chunk`` whose id a request without an answer held before
        (every such request is done by now: see ``_submit``), to send them again at the end.
        Nothing to look up while no request went unanswered."""
        if self._unanswered:
            for item in chunk:
                if item[1] in self._unanswered:
                    self._resend[item[1]] = item

    def _note_unanswered(self, chunk: list[tuple[dict[str, Any], Any]]) -> None:
        """Remember the ids of a request that got no answer: the server may still carry it
        out, and a later record of one of those ids must come after it."""
        with self._stats_lock:
            self._unanswered_at = time.monotonic()
            if len(self._unanswered) + len(chunk) > UNANSWERED_IDS_KEPT:
                self._unanswered_overflow = True
            else:
                self._unanswered.update(o for _, o in chunk)

    def _resend_last(self) -> None:
        """Once every request is acknowledged, send again the last record of each id that a
        request without an answer held and a later request held again. A server carries out
        a request whose client gave up (a timeout does not stop it, nor does a lost answer),
        possibly after the later record, which the collection would then lose. The server
        had such a request for ``--timeout`` already when the client gave up: the records go
        once as long again has passed since the last one, so a request it finishes within
        twice the timeout lands before them. Qdrant cannot cancel a request: one it holds
        longer can still land after them."""
        if self._unanswered_overflow:
            self.context.warn(
                f"{self.location}: more than {UNANSWERED_IDS_KEPT:,} points were in requests "
                "that got no answer (timed out, connection lost), which the server may carry "
                "out late: an id repeated in the source after such a request may keep an "
                "earlier record (the report's duplicate_ids names the ids that repeat)")
        if not self._resend:
            return
        items = list(self._resend.values())
        self._resend = {}
        if self._shard_keys is not None:
            order = {k: i for i, k in enumerate(self._shard_keys)}
            items.sort(key=lambda item: order[item[0]["shard_key"]])
        delay = self._unanswered_at + self._request_timeout - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for chunk in self._requests(items):
            self._send(chunk)
        self.resent_after_no_answer += len(items)

    def _send(self, chunk: list[tuple[dict[str, Any], Any]]) -> None:
        failed: list[Any] = []
        reasons: list[str] = []
        halved: list[bool] = []
        self._send_chunk(chunk, failed, reasons, halved)
        if failed:
            shown = ", ".join(repr(i) for i in failed[:_SHOW_IDS])
            more = f" and {len(failed) - _SHOW_IDS} more" if len(failed) > _SHOW_IDS else ""
            how = (" (the request that held them was halved after timing out)"
                   if halved else "")
            raise TargetError(
                f"{len(failed)} point(s) could not be written after "
                f"{self.retry.max_retries + 1} attempt(s){how}: {reasons[-1]}; failed ids: "
                f"{shown}{more}",
                location=Location(self.backend.label),
                hint="check the server's health and rerun with --resume; upserts are "
                     "idempotent, nothing is duplicated")

    def _send_chunk(self, chunk: list[tuple[dict[str, Any], Any]], failed: list[Any],
                    reasons: list[str], halved: list[bool]) -> None:
        """Send ``chunk``, retried, halved after timeouts; the ids still failing go to
        ``failed``, their last failure to ``reasons``; ``halved`` gets an entry per split."""
        points = [p for p, _ in chunk]
        kw = {} if self._shard_keys is None else {"shard_key": points[0]["shard_key"]}
        attempt = timeouts = 0
        while True:
            try:
                self.backend.upsert(points, **kw)
                return
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    if isinstance(exc, VecferryError):
                        raise
                    failure = Failure(False, f"{type(exc).__name__}: {exc}")
                if not failure.transient:
                    ids = [o for _, o in chunk]
                    span = repr(ids[0]) if len(ids) == 1 else f"{ids[0]!r} .. {ids[-1]!r}"
                    raise TargetError(
                        f"Qdrant refused {len(ids)} point(s) (ids {span}): {failure.message}",
                        location=Location(self.backend.label),
                        hint=refusal_hint(self.backend, failure) or (
                            "a refusal is not retried: fix what the server names (the "
                            "collection's config, a payload or vector of those points), then "
                            "run the same command with --resume to send the rest")) from exc
                if failure.status is None or failure.status in (502, 504):
                    # no answer from Qdrant (a gateway's 502/504 neither): it may carry the
                    # request out yet
                    self._note_unanswered(chunk)
                timeouts = timeouts + 1 if failure.timeout else 0
                can_halve = failure.timeout and len(chunk) > 1
                if can_halve and (timeouts >= HALVE_AFTER_TIMEOUTS
                                  or attempt >= self.retry.max_retries):
                    with self._stats_lock:
                        self.halvings += 1
                    mid = len(chunk) // 2
                    halved.append(True)
                    self._send_chunk(chunk[:mid], failed, reasons, halved)
                    self._send_chunk(chunk[mid:], failed, reasons, halved)
                    return
                if attempt >= self.retry.max_retries:
                    failed.extend(o for _, o in chunk)
                    reasons.append(failure.message)
                    return
                if attempt == 0:
                    with self._stats_lock:
                        self.retried_requests += 1
                self.retry.wait(attempt, failure.retry_after)
                attempt += 1

    # -- the end

    def _drain(self) -> None:
        for t in list(self._tickets):
            for f in t.futures:
                f.exception()
        self._reap(block=False)
        self._raise_failure()

    def close(self) -> dict[str, Any]:
        """Wait for every request, restore indexing, recreate payload indexes, report."""
        b = self.backend
        try:
            self.ready()  # an empty stream still leaves the collection it asked for
            self._drain()
            self._resend_last()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._restore_bulk()
            b.end_load()
            indexes = self._create_indexes()
            strict = self._apply_strict_mode()
            aliases = self._create_aliases()
            b.flush()
            count = self._rpc(lambda: b.count(None), "counting points")
        except BaseException:
            # a failure or Ctrl-C while closing still needs what abort does (indexing back on)
            self.abort()
            raise
        self._closed = True
        b.close()
        if b.engine == "local" and count > LOCAL_MODE_POINTS:
            self.context.warn(
                f"{self.location} holds {count} points; qdrant-client's local mode is meant for "
                f"up to {LOCAL_MODE_POINTS:,} (each search scans every point): for more, load a "
                "Qdrant server (qdrant://) or a Qdrant Edge shard (qdrant-edge://)")
        report: dict[str, Any] = {
            "collection": b.name,
            "engine": b.engine,
            "mode": self.mode,
            "created": self.created,
            "dropped": self.dropped,
            "points_in_collection": count,
            "retries": self.retry.retries,
            "halvings": self.halvings,
            "payload_indexes": indexes,
        }
        if strict is not None:
            report["strict_mode_applied"] = strict
        if self.resent_after_no_answer:
            report["resent_after_no_answer"] = self.resent_after_no_answer
        if aliases is not None:
            report["aliases"] = aliases
        if self._shard_keys is not None:
            report["shard_keys"] = list(self._shard_keys)
            report["shard_keys_created"] = self.shard_keys_created
        return report

    def _create_indexes(self) -> list[str]:
        schema = self.wanted.get("payload_schema") or {}
        if not schema:
            return []
        made = []
        existing = {}
        try:
            existing = self._rpc(self.backend.config, "reading the collection config"
                                 ).get("payload_schema") or {}
        except TargetError:
            existing = {}
        for field, index in schema.items():
            if field in existing:
                made.append(field)
                continue
            try:
                done = self._rpc(lambda f=field, i=index: self.backend.create_index(f, i),
                                 f"creating the payload index on {field!r}")
            except TargetError as exc:
                self.context.warn(f"payload index on {field!r} not created: {exc.message}")
                continue
            if done:
                made.append(field)
            else:
                # nothing keeps it: a copy out of this collection has no such index
                self.context.warn(f"payload index on {field!r} not created: "
                                  f"{self.backend.engine} mode keeps no payload indexes (it "
                                  "filters by scanning every point); give it again with "
                                  "--collection-config '{\"payload_schema\": ...}' when "
                                  "copying this collection out")
        return made

    def _apply_strict_mode(self) -> bool | None:
        """Give a collection this run created (or resumed) the source's strict mode, after
        the load, as payload indexes are: its limits (rate, batch size, point count) could
        refuse the load itself. A collection with a strict mode of its own keeps it. None when
        the source has none; False when it could not be applied (with a warning)."""
        wanted = self.wanted.get("strict_mode_config")
        if not wanted or not (self.created or self.resuming):
            return None
        try:
            have = self._rpc(self.backend.config, "reading the collection config")
            if have.get("strict_mode_config"):
                return False
            done = self._rpc(lambda: self.backend.set_strict_mode(wanted),
                             "setting the strict mode")
        except TargetError as exc:
            self.context.warn(f"strict mode not set: {exc.message}")
            return False
        if not done:
            self.context.warn(f"strict mode not kept: {self.backend.engine} "
                              "mode enforces none")
        return done

    def _create_aliases(self) -> list[str] | None:
        """Give a collection this run created (or resumed) the source collection's aliases,
        so applications that query by alias find it; an alias the target already has for
        another collection is left as it is, with a warning (moving it is the user's switch
        over). The aliases that name the collection now; None when the source has none."""
        wanted = self.wanted.get("aliases")
        if not wanted or not (self.created or self.resuming):
            return None
        b = self.backend
        if not b.has_aliases:
            self.context.warn(f"aliases {', '.join(map(repr, wanted))} not kept: a Qdrant "
                              "Edge shard has no aliases")
            return []
        try:
            owners = self._rpc(b.alias_owners, "listing aliases")
        except TargetError as exc:
            self.context.warn(f"aliases not created: {exc.message}")
            return []
        made = []
        for alias in wanted:
            owner = owners.get(alias)
            if owner is not None and owner != b.name:
                self.context.warn(
                    f"alias {alias!r} names collection {owner!r} on the target and is left as "
                    f"it is (point it at {b.name!r} when you switch over: POST "
                    "/collections/aliases)")
                continue
            if owner is None:
                try:
                    self._rpc(lambda alias=alias: b.create_alias(alias),
                              f"creating alias {alias!r}")
                except TargetError as exc:
                    self.context.warn(f"alias {alias!r} not created: {exc.message}")
                    continue
            made.append(alias)
        return made

    def abort(self) -> None:
        """Stop after a failure: cancel queued requests, restore indexing, keep the data.

        Never drops the collection: what was acknowledged stays, so ``--resume`` continues.
        When ``--bulk`` indexing cannot be switched back on, ``abort_notice`` says so.
        """
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._restore_bulk(quiet=True)
        with contextlib.suppress(Exception):  # best effort: we are failing already
            self.backend.end_load()
        with contextlib.suppress(Exception):
            self.backend.flush()
        self.backend.close()
        self._remove_made_folder()

    def _remove_made_folder(self) -> None:
        """A dry run, or a run that failed before its first point, leaves no local-mode
        folder behind that it made (opening one creates it)."""
        made = getattr(self.backend, "made_folder", None)
        if made and not self.created:
            shutil.rmtree(made, ignore_errors=True)


def count_points(location: str, *, api_key_env: str | None = None,
                 timeout: float | None = None, **_: Any) -> int:
    """Exact number of points in the collection at ``location`` (for ``vecferry copy``).

    ``InputError`` when it does not exist. Accepts (and ignores) the other reader options so
    the CLI can pass the same keyword arguments it gives the reader.
    """
    from vecferry.converters import resolve

    if resolve(location).name == "qdrant-edge":
        from vecferry.converters.qdrant_edge import open_edge_backend

        backend = open_edge_backend(location, for_reading=True)
    else:
        backend = open_backend(location, api_key_env=api_key_env, timeout=timeout,
                               for_reading=True)
    where = Location(backend.label)
    try:
        policy = RetryPolicy()
        if not policy.call(backend.exists, what="checking the collection"):
            raise InputError("collection not found", location=where,
                             hint=missing_collection_hint(backend))
        return int(policy.call(lambda: backend.count(None), what="counting points"))
    except TransientError as exc:
        raise TargetError(exc.message, location=where, hint=retry_hint(exc.message)) from exc
    finally:
        backend.close()
