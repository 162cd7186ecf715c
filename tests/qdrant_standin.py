"""A loopback stand-in for a Qdrant server, for network fault tests. NOT a Qdrant server.

It speaks Qdrant's REST shapes (https://api.qdrant.tech/api-reference) for the endpoints
vecferry's Qdrant reader and writer call, and executes them on a real embedded engine
(qdrant-client local mode, in memory). Between the client and the engine it injects the faults
a test scripts: a delay past the client's timeout (the operation still happens afterwards, as on
a real server whose client gave up), 503, 429 with ``Retry-After`` (seconds, or any text a
test gives: an HTTP date, a fraction), a dropped connection (the operation does not happen), a
lost answer (the operation happens, then the connection drops instead of the 200) and a 400
with Qdrant's error body.

Snapshots: the REST snapshot endpoints (create, list, download with ``Range``, delete, multipart
upload with ``checksum`` and ``priority``, recover from a URL or ``file://``; collection and
full-instance). Their files are tar archives of the stand-in's own (a JSON dump of the
collection), NOT Qdrant's snapshot layout: they exercise the transport, not the format.
Extra fault kinds for the ``snapshot_*`` ops: ``403``, ``truncate`` (a download stops half way)
and ``corrupt`` (a download has one byte changed).

Local mode keeps no payload indexes, strict mode or shard settings and ignores HNSW updates,
so the stand-in records those itself and reports them in ``GET /collections/{name}`` the way a
server would.

Custom sharding (``"sharding_method": "custom"``), which local mode lacks, is played by a table
of each point's shard key: create / list shard keys (``PUT`` / ``GET .../shards``; with
``list_shard_keys_endpoint = False`` the listing is a 404, as on servers older than it, and
the keys are in ``GET .../cluster``), upserts that need a known key, and scroll / count with
``shard_key``. Records name their key, as a server's do. Unlike a server, a point id lives in
one key only: upserting it under another key moves it.

Usage::

    with QdrantStandIn() as server:
        server.add_fault(Fault("upsert", "503", times=2))
        url = server.location("docs")            # qdrant://127.0.0.1:PORT/docs
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass
class Fault:
    """One scripted fault for requests of ``op`` (upsert, scroll, count, query, get, exists,
    create, index, update, retrieve, shard_create, shard_list, cluster, aliases, aliases_all,
    aliases_update, list): ``kind`` is
    ``delay``, ``503``, ``429``, ``drop``, ``lose`` (carried out, the answer lost), ``400``,
    ``403`` (with ``message``) or ``413`` (a proxy's HTML page, as nginx sends one).

    It fires ``times`` times (None: every time) on requests for which ``when(body)`` is true.
    ``seconds`` is the delay, or the ``Retry-After`` of a 429; ``retry_after``, when given, is
    that header's text as sent instead (an HTTP date, ``1.5``).
    """

    op: str
    kind: str
    times: int | None = 1
    seconds: float = 0.0
    when: Callable[[dict[str, Any]], bool] | None = None
    message: str = "Wrong input: injected by the stand-in"
    retry_after: str | None = None
    fired: int = 0


@dataclass
class Logged:
    op: str
    at: float
    outcome: str
    points: int = 0
    ids: list[Any] = field(default_factory=list)


class QdrantStandIn:
    """Serve on 127.0.0.1 (a free port) until ``close``; see the module docstring."""

    def __init__(self, api_key: str | None = None):
        from qdrant_client import QdrantClient

        self.engine = QdrantClient(":memory:")
        self.api_key = api_key
        #: every api-key header value received (None: requests without one)
        self.keys_seen: set[str | None] = set()
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self.indexes: dict[str, dict[str, Any]] = {}
        self.hnsw_m: dict[str, int] = {}
        #: custom-sharded collections: name -> shard keys, and name -> point id -> its key
        self.shard_keys: dict[str, list[Any]] = {}
        self.point_keys: dict[str, dict[str, Any]] = {}
        self.list_shard_keys_endpoint = True
        #: strict mode configs (local mode keeps none), and the collections updated with one
        self.strict_mode: dict[str, dict[str, Any]] = {}
        self.strict_mode_updates: list[str] = []
        #: shard number, replication and write consistency asked at creation (local mode
        #: has no such settings)
        self.params: dict[str, dict[str, int]] = {}
        self.hnsw_updates: list[int] = []
        # snapshots (see "Snapshots" at the end of this module)
        self.snapshot_dir = tempfile.mkdtemp(prefix="standin-snapshots-")
        self.snapshots: dict[str | None, dict[str, str]] = {}
        self.snapshot_ranges = True
        self.snapshot_padding = 0
        self.snapshot_log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.engine_lock = threading.Lock()
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def location(self, collection: str) -> str:
        return f"qdrant://127.0.0.1:{self.port}/{collection}"

    def add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def pick_fault(self, op: str, body: dict[str, Any]) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.op != op or (f.times is not None and f.fired >= f.times):
                    continue
                if f.when is not None and not f.when(body):
                    continue
                f.fired += 1
                return f
        return None

    def record(self, entry: Logged) -> None:
        with self.lock:
            self.log.append(entry)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.engine.close()
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)

    def __enter__(self) -> QdrantStandIn:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _ok(result: Any) -> dict[str, Any]:
    return {"result": result, "status": "ok", "time": 0.0}


def _make_handler(server: QdrantStandIn) -> type[BaseHTTPRequestHandler]:
    from qdrant_client import models

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            return orjson.loads(raw) if raw else {}

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            segs = [s for s in parts.path.split("/") if s]
            query = parse_qs(parts.query)
            if _snapshot_op(method, segs) is not None:
                _serve_snapshot(server, self, method, segs, query)
                return
            body = self._body()
            with server.lock:
                server.keys_seen.add(self.headers.get("api-key"))
            if server.api_key is not None and self.headers.get("api-key") != server.api_key:
                self._send(401, {"status": {"error": "Must provide an API key"}})
                return
            op, name = _op(method, segs)
            if op is None:
                self._send(404, {"status": {"error": f"no route {method} {parts.path}"}})
                return
            ids = [p.get("id") for p in body.get("points", [])] if op == "upsert" else []
            entry = Logged(op, time.monotonic(), "ok", len(ids), ids)
            fault = server.pick_fault(op, body)
            if fault is not None:
                entry.outcome = fault.kind
                server.record(entry)
                if fault.kind == "delay":
                    time.sleep(fault.seconds)  # past the client's timeout; then carry on
                elif fault.kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                elif fault.kind == "503":
                    self._send(503, {"status": {"error": "Service Unavailable (stand-in)"}})
                    return
                elif fault.kind == "429":
                    self._send(429, {"status": {"error": "Too many requests (stand-in)"}},
                               {"Retry-After": fault.retry_after or f"{fault.seconds:g}"})
                    return
                elif fault.kind in ("400", "403"):
                    self._send(int(fault.kind), {"status": {"error": fault.message},
                                                 "time": 0.0})
                    return
                elif fault.kind == "413":
                    page = (b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>"
                            b"\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1>"
                            b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
                    self.send_response(413)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
            else:
                server.record(entry)
            try:
                with server.engine_lock:
                    result = _execute(server, models, op, name, body, query)
            except KeyError as exc:
                self._send(404, {"status": {"error": f"Not found: {exc}"}})
                return
            except ValueError as exc:
                self._send(400, {"status": {"error": f"Wrong input: {exc}"}})
                return
            if fault is not None and fault.kind == "lose":
                # done, but the client never hears so: it can only try again
                self.close_connection = True
                self.connection.shutdown(2)
                return
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(200, _ok(result))

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    return Handler


def _op(method: str, segs: list[str]) -> tuple[str | None, str | None]:
    if (method, segs) == ("GET", ["aliases"]):
        return "aliases_all", None
    if (method, segs) == ("GET", ["collections"]):
        return "list", None
    if (method, segs) == ("POST", ["collections", "aliases"]):
        return "aliases_update", None
    if len(segs) < 2 or segs[0] != "collections":
        return None, None
    name = segs[1]
    rest = segs[2:]
    table = {
        ("GET", ()): "get", ("PUT", ()): "create", ("DELETE", ()): "delete",
        ("PATCH", ()): "update", ("GET", ("exists",)): "exists",
        ("PUT", ("points",)): "upsert", ("POST", ("points", "scroll")): "scroll",
        ("POST", ("points", "count")): "count", ("PUT", ("index",)): "index",
        ("POST", ("points", "query")): "query",
        ("PUT", ("shards",)): "shard_create", ("GET", ("shards",)): "shard_list",
        ("GET", ("cluster",)): "cluster", ("POST", ("points",)): "retrieve",
        ("GET", ("aliases",)): "aliases",
    }
    return table.get((method, tuple(rest))), name


def _execute(server: QdrantStandIn, models: Any, op: str, name: str, body: dict[str, Any],
             query: dict[str, list[str]]) -> Any:
    eng = server.engine
    if op == "list":
        return eng.get_collections().model_dump(mode="json")
    if op == "aliases_all":
        return eng.get_aliases().model_dump(mode="json")
    if op == "aliases_update":
        req = models.ChangeAliasesOperation.model_validate(body)
        return eng.update_collection_aliases(req.actions)
    if op == "aliases":
        return eng.get_collection_aliases(name).model_dump(mode="json")
    if op == "exists":
        return {"exists": eng.collection_exists(name)}
    if op == "get":
        if not eng.collection_exists(name):
            raise KeyError(f"Collection `{name}` doesn't exist!")
        info = eng.get_collection(name).model_dump(mode="json")
        info["payload_schema"] = server.indexes.get(name, {})
        if name in server.hnsw_m:
            info["config"]["hnsw_config"]["m"] = server.hnsw_m[name]
        if name in server.shard_keys:
            info["config"]["params"]["sharding_method"] = "custom"
        if name in server.strict_mode:
            info["config"]["strict_mode_config"] = server.strict_mode[name]
        info["config"]["params"].update(server.params.get(name, {}))
        return info
    if op == "create":
        req = models.CreateCollection.model_validate(body)
        eng.create_collection(
            name, vectors_config=req.vectors, sparse_vectors_config=req.sparse_vectors,
            hnsw_config=req.hnsw_config, optimizers_config=req.optimizers_config,
            quantization_config=req.quantization_config, on_disk_payload=req.on_disk_payload,
            metadata=req.metadata)
        if req.strict_mode_config is not None:
            server.strict_mode[name] = req.strict_mode_config.model_dump(mode="json")
        server.params[name] = {k: getattr(req, k) for k in (
            "shard_number", "replication_factor", "write_consistency_factor")
            if getattr(req, k) is not None}
        if req.hnsw_config is not None and req.hnsw_config.m is not None:
            server.hnsw_m[name] = req.hnsw_config.m
        server.indexes[name] = {}
        if req.sharding_method == models.ShardingMethod.CUSTOM:
            server.shard_keys[name] = []
            server.point_keys[name] = {}
        return True
    if op == "delete":
        server.indexes.pop(name, None)
        server.hnsw_m.pop(name, None)
        server.shard_keys.pop(name, None)
        server.point_keys.pop(name, None)
        server.strict_mode.pop(name, None)
        server.params.pop(name, None)
        return eng.delete_collection(name)
    if op == "update":
        req = models.UpdateCollection.model_validate(body)
        if req.hnsw_config is not None and req.hnsw_config.m is not None:
            server.hnsw_m[name] = req.hnsw_config.m
            server.hnsw_updates.append(req.hnsw_config.m)
        if req.strict_mode_config is not None:
            server.strict_mode[name] = req.strict_mode_config.model_dump(mode="json")
            server.strict_mode_updates.append(name)
        if req.metadata is not None:
            eng.update_collection(name, metadata=req.metadata)
        return True
    if not eng.collection_exists(name):
        raise KeyError(f"Collection `{name}` doesn't exist!")
    if op in ("shard_create", "shard_list", "cluster"):
        return _sharding(server, models, op, name, body)
    if op == "upsert":
        req = models.PointsList.model_validate(body)
        keys = server.point_keys.get(name)
        if keys is not None:
            if req.shard_key is None:
                raise ValueError("Shard key not specified")
            if req.shard_key not in server.shard_keys[name]:
                raise ValueError(f"Shard key {req.shard_key} not found")
        elif req.shard_key is not None:
            raise ValueError("Shard key specified, but the collection uses automatic sharding")
        eng.upsert(name, points=req.points)
        if keys is not None:
            keys.update((str(p.id), req.shard_key) for p in req.points)
        return {"operation_id": len(server.log), "status": "completed"}
    if op == "scroll":
        req = models.ScrollRequest.model_validate(body)
        records, nxt = eng.scroll(name, scroll_filter=_of_key(server, models, name, req),
                                  limit=req.limit or 10, offset=req.offset,
                                  with_payload=req.with_payload, with_vectors=req.with_vector)
        points = [r.model_dump(mode="json") for r in records]
        keys = server.point_keys.get(name)
        for p in points if keys is not None else []:
            p["shard_key"] = keys.get(str(p["id"]))
        return {"points": points, "next_page_offset": nxt}
    if op == "query":
        req = models.QueryRequest.model_validate(body)
        # a server returns neither payloads nor vectors unless asked
        res = eng.query_points(name, query=req.query, using=req.using, query_filter=req.filter,
                               limit=req.limit or 10, with_payload=req.with_payload or False,
                               with_vectors=req.with_vector or False)
        return res.model_dump(mode="json")
    if op == "retrieve":
        req = models.PointRequest.model_validate(body)
        records = eng.retrieve(name, ids=req.ids, with_payload=req.with_payload,
                               with_vectors=req.with_vector)
        points = [r.model_dump(mode="json") for r in records]
        keys = server.point_keys.get(name)
        for p in points if keys is not None else []:
            p["shard_key"] = keys.get(str(p["id"]))
        return points
    if op == "count":
        req = models.CountRequest.model_validate(body)
        return {"count": eng.count(name, count_filter=_of_key(server, models, name, req),
                                   exact=True).count}
    if op == "index":
        req = models.CreateFieldIndex.model_validate(body)
        schema = req.field_schema
        if hasattr(schema, "model_dump"):
            dumped = schema.model_dump(mode="json", exclude_none=True)
            entry = {"data_type": dumped.get("type"), "params": dumped, "points": 0}
        else:
            entry = {"data_type": getattr(schema, "value", schema), "points": 0}
        server.indexes.setdefault(name, {})[req.field_name] = entry
        return {"operation_id": 0, "status": "completed"}
    raise KeyError(op)


def _of_key(server: QdrantStandIn, models: Any, name: str, req: Any) -> Any:
    """``req.filter``, narrowed to the points of ``req.shard_key`` when it names one."""
    if req.shard_key is None:
        return req.filter
    keys = server.point_keys.get(name)
    if keys is None:
        raise ValueError("Shard key specified, but the collection uses automatic sharding")
    if req.shard_key not in server.shard_keys[name]:
        raise ValueError(f"Shard key {req.shard_key} not found")
    ids = [int(i) if i.isdigit() else i for i, k in keys.items() if k == req.shard_key]
    only = models.HasIdCondition(has_id=ids)
    return models.Filter(must=[only] if req.filter is None else [only, req.filter])


def _sharding(server: QdrantStandIn, models: Any, op: str, name: str,
              body: dict[str, Any]) -> Any:
    keys = server.shard_keys.get(name)
    if keys is None:
        raise ValueError("the collection uses automatic sharding")
    if op == "shard_create":
        req = models.CreateShardingKey.model_validate(body)
        if req.shard_key in keys:
            raise ValueError(f"Shard key {req.shard_key} already exists")
        keys.append(req.shard_key)
        return True
    if op == "shard_list":
        if not server.list_shard_keys_endpoint:
            raise KeyError("no route GET /collections/{name}/shards (an older server)")
        return {"shard_keys": [{"key": k} for k in keys]}
    return {"peer_id": 1, "shard_count": len(keys), "remote_shards": [],
            "shard_transfers": [],
            "local_shards": [{"shard_id": i, "shard_key": k, "points_count": 0,
                              "state": "Active"} for i, k in enumerate(keys)]}


# ------------------------------------------------------------------------------- snapshots


def _snapshot_op(method: str, segs: list[str]) -> str | None:
    """``snapshot_create|list|download|delete|upload|recover`` for snapshot routes, else None."""
    if segs[:1] == ["snapshots"]:
        rest = segs[1:]
    elif len(segs) >= 3 and segs[0] == "collections" and segs[2] == "snapshots":
        rest = segs[3:]
    else:
        return None
    if not rest:
        return {"POST": "snapshot_create", "GET": "snapshot_list"}.get(method)
    if len(rest) == 1:
        if segs[0] == "collections" and method == "POST" and rest[0] == "upload":
            return "snapshot_upload"
        if segs[0] == "collections" and method == "PUT" and rest[0] == "recover":
            return "snapshot_recover"
        return {"GET": "snapshot_download", "DELETE": "snapshot_delete"}.get(method)
    return None


def _dump_collection(server: QdrantStandIn, name: str) -> dict[str, Any]:
    eng = server.engine
    info = eng.get_collection(name)
    records, offset = [], None
    while True:
        page, offset = eng.scroll(name, limit=256, offset=offset, with_payload=True,
                                  with_vectors=True)
        records += [r.model_dump(mode="json") for r in page]
        if offset is None:
            break
    return {"collection": name, "params": info.config.params.model_dump(mode="json"),
            "points": records, "indexes": server.indexes.get(name, {}),
            "hnsw_m": server.hnsw_m.get(name)}


def _restore_collection(server: QdrantStandIn, models: Any, dump: dict[str, Any],
                        name: str) -> None:
    eng = server.engine
    params = models.CollectionParams.model_validate(dump["params"])
    if eng.collection_exists(name):
        eng.delete_collection(name)
    eng.create_collection(name, vectors_config=params.vectors,
                          sparse_vectors_config=params.sparse_vectors)
    points = [models.PointStruct(id=r["id"], vector=r.get("vector") or {},
                                 payload=r.get("payload")) for r in dump["points"]]
    if points:
        eng.upsert(name, points=points)
    server.indexes[name] = dict(dump.get("indexes") or {})
    if dump.get("hnsw_m") is not None:
        server.hnsw_m[name] = dump["hnsw_m"]


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _read_dump(data: bytes) -> dict[str, Any]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            f = tar.extractfile("vecferry-standin.json")
            assert f is not None
            return orjson.loads(f.read())
    except (tarfile.TarError, KeyError, AssertionError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"Snapshot is not compatible with this stand-in: {exc}") from exc


def _serve_snapshot(server: QdrantStandIn, h: Any, method: str, segs: list[str],
                    query: dict[str, list[str]]) -> None:
    from qdrant_client import models

    op = _snapshot_op(method, segs)
    assert op is not None
    collection = segs[1] if segs[0] == "collections" else None
    length = int(h.headers.get("Content-Length") or 0)
    raw = h.rfile.read(length) if length else b""
    entry = {"op": op, "collection": collection, "range": h.headers.get("Range"),
             "query": {k: v[-1] for k, v in query.items()}, "bytes": len(raw),
             "content_type": h.headers.get("Content-Type")}
    server.snapshot_log.append(entry)
    if server.api_key is not None and h.headers.get("api-key") != server.api_key:
        h._send(401, {"status": {"error": "Must provide an API key"}})
        return
    fault = server.pick_fault(op, entry)
    if fault is not None:
        server.record(Logged(op, time.monotonic(), fault.kind))
        if fault.kind == "delay":
            time.sleep(fault.seconds)
        elif fault.kind == "drop":
            h.close_connection = True
            h.connection.shutdown(2)
            return
        elif fault.kind in ("503", "429", "400", "403"):
            status = int(fault.kind)
            headers = {"Retry-After": f"{fault.seconds:g}"} if status == 429 else None
            h._send(status, {"status": {"error": fault.message}, "time": 0.0}, headers)
            return
    else:
        server.record(Logged(op, time.monotonic(), "ok"))
    store = server.snapshots.setdefault(collection, {})
    try:
        if op == "snapshot_create":
            with server.engine_lock:
                if collection is None:
                    members = {f"{c.name}.json": orjson.dumps(_dump_collection(server, c.name))
                               for c in server.engine.get_collections().collections}
                else:
                    if not server.engine.collection_exists(collection):
                        raise KeyError(f"Collection `{collection}` doesn't exist!")
                    members = {"vecferry-standin.json":
                               orjson.dumps(_dump_collection(server, collection))}
            if server.snapshot_padding:
                members["padding.bin"] = bytes(
                    (i * 7 + 3) % 251 for i in range(server.snapshot_padding))
            data = _tar_bytes(members)
            stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
            name = f"{collection or 'full-snapshot'}-{stamp}-{len(server.snapshot_log)}.snapshot"
            path = f"{server.snapshot_dir}/{collection or '_full'}-{name}"
            with open(path, "wb") as f:
                f.write(data)
            store[name] = path
            if query.get("wait", ["true"])[-1] == "false":
                h._send(202, {"result": None, "status": "accepted", "time": 0.0})
                return
            h._send(200, _ok(_describe(name, path)))
        elif op == "snapshot_list":
            h._send(200, _ok([_describe(n, p) for n, p in store.items()]))
        elif op == "snapshot_delete":
            path = store.pop(segs[-1])
            with contextlib.suppress(OSError):
                os.unlink(path)
            h._send(200, _ok(True))
        elif op == "snapshot_download":
            _send_file(server, h, store[segs[-1]], fault)
        elif op == "snapshot_upload":
            data = _multipart_file(raw, h.headers.get("Content-Type") or "", "snapshot")
            _check_sum(data, query.get("checksum", [None])[-1])
            with server.engine_lock:
                _restore_collection(server, models, _read_dump(data), collection or "")
            h._send(200, _ok(True))
        elif op == "snapshot_recover":
            body = orjson.loads(raw) if raw else {}
            data = _fetch_location(server, body.get("location") or "")
            _check_sum(data, body.get("checksum"))
            entry["priority"] = body.get("priority")
            with server.engine_lock:
                _restore_collection(server, models, _read_dump(data), collection or "")
            h._send(200, _ok(True))
    except KeyError as exc:
        h._send(404, {"status": {"error": f"Not found: {exc}"}})
    except ValueError as exc:
        h._send(400, {"status": {"error": f"Wrong input: {exc}"}})


def _describe(name: str, path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = f.read()
    return {"name": name, "creation_time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "size": len(data), "checksum": hashlib.sha256(data).hexdigest()}


def _check_sum(data: bytes, checksum: str | None) -> None:
    if checksum and hashlib.sha256(data).hexdigest() != checksum:
        raise ValueError(f"Snapshot checksum mismatch: expected {checksum}, "
                         f"got {hashlib.sha256(data).hexdigest()}")


def _send_file(server: QdrantStandIn, h: Any, path: str, fault: Fault | None) -> None:
    with open(path, "rb") as f:
        data = f.read()
    start = 0
    wanted = h.headers.get("Range")
    status = 200
    headers = {"Content-Type": "application/octet-stream"}
    if server.snapshot_ranges:
        headers["Accept-Ranges"] = "bytes"
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes="):-1])
            if start >= len(data):
                h._send(416, {"status": {"error": "Range Not Satisfiable"}},
                        {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    body = data[start:]
    if fault is not None and fault.kind == "corrupt" and body:
        body = body[:-1] + bytes([body[-1] ^ 0xFF])
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if fault is not None and fault.kind == "truncate":
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        for i in range(0, len(body), 1 << 16):
            h.wfile.write(body[i:i + (1 << 16)])


def _multipart_file(raw: bytes, content_type: str, field_name: str) -> bytes:
    marker = "boundary="
    if "multipart/form-data" not in content_type or marker not in content_type:
        raise ValueError("expected multipart/form-data")
    boundary = content_type.split(marker, 1)[1].split(";")[0].strip().strip('"').encode()
    for part in raw.split(b"--" + boundary):
        head, sep, content = part.partition(b"\r\n\r\n")
        if sep and f'name="{field_name}"'.encode() in head:
            return content[:-2] if content.endswith(b"\r\n") else content
    raise ValueError(f"no `{field_name}` field in the form")


def _fetch_location(server: QdrantStandIn, location: str) -> bytes:
    if location.startswith("file://"):
        with open(location[len("file://"):], "rb") as f:
            return f.read()
    parts = urlsplit(location)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"the stand-in fetches only loopback URLs, not {location}")
    if parts.port == server.port:
        segs = [s for s in parts.path.split("/") if s]
        collection = segs[1] if segs[0] == "collections" else None
        with open(server.snapshots[collection][segs[-1]], "rb") as f:
            return f.read()
    import httpx

    response = httpx.get(location, timeout=30)
    if response.status_code != 200:
        raise ValueError(f"cannot fetch {location}: HTTP {response.status_code}")
    return response.content
