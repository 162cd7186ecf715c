"""A loopback stand-in for a Qdrant server, for network fault tests. NOT a Qdrant server.

It speaks Qdrant's REST shapes (https://api.qdrant.tech/api-reference) for the endpoints
vecferry's Qdrant reader and writer call, and executes them on a real embedded engine
(qdrant-client local mode, in memory). Between the client and the engine it injects the faults
a test scripts: a delay past the client's timeout (the operation still happens afterwards, as on
a real server whose client gave up), 503, 429 with ``Retry-After``, a dropped connection (the
operation does not happen) and a 400 with Qdrant's error body.

Local mode keeps no payload indexes and ignores HNSW updates, so the stand-in records those
itself and reports them in ``GET /collections/{name}`` the way a server would.

Usage::

    with QdrantStandIn() as server:
        server.add_fault(Fault("upsert", "503", times=2))
        url = server.location("docs")            # qdrant://127.0.0.1:PORT/docs
"""

from __future__ import annotations

import contextlib
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
    """One scripted fault for requests of ``op`` (upsert, scroll, count, get, exists, create,
    index, update): ``kind`` is ``delay``, ``503``, ``429``, ``drop`` or ``400``.

    It fires ``times`` times (None: every time) on requests for which ``when(body)`` is true.
    ``seconds`` is the delay, or the ``Retry-After`` of a 429.
    """

    op: str
    kind: str
    times: int | None = 1
    seconds: float = 0.0
    when: Callable[[dict[str, Any]], bool] | None = None
    message: str = "Wrong input: injected by the stand-in"
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
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self.indexes: dict[str, dict[str, Any]] = {}
        self.hnsw_m: dict[str, int] = {}
        self.hnsw_updates: list[int] = []
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
            body = self._body()
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
                               {"Retry-After": f"{fault.seconds:g}"})
                    return
                elif fault.kind == "400":
                    self._send(400, {"status": {"error": fault.message}, "time": 0.0})
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
    if len(segs) < 2 or segs[0] != "collections":
        return None, None
    name = segs[1]
    rest = segs[2:]
    table = {
        ("GET", ()): "get", ("PUT", ()): "create", ("DELETE", ()): "delete",
        ("PATCH", ()): "update", ("GET", ("exists",)): "exists",
        ("PUT", ("points",)): "upsert", ("POST", ("points", "scroll")): "scroll",
        ("POST", ("points", "count")): "count", ("PUT", ("index",)): "index",
    }
    return table.get((method, tuple(rest))), name


def _execute(server: QdrantStandIn, models: Any, op: str, name: str, body: dict[str, Any],
             query: dict[str, list[str]]) -> Any:
    eng = server.engine
    if op == "exists":
        return {"exists": eng.collection_exists(name)}
    if op == "get":
        if not eng.collection_exists(name):
            raise KeyError(f"Collection `{name}` doesn't exist!")
        info = eng.get_collection(name).model_dump(mode="json")
        info["payload_schema"] = server.indexes.get(name, {})
        if name in server.hnsw_m:
            info["config"]["hnsw_config"]["m"] = server.hnsw_m[name]
        return info
    if op == "create":
        req = models.CreateCollection.model_validate(body)
        eng.create_collection(
            name, vectors_config=req.vectors, sparse_vectors_config=req.sparse_vectors,
            hnsw_config=req.hnsw_config, optimizers_config=req.optimizers_config,
            quantization_config=req.quantization_config, on_disk_payload=req.on_disk_payload)
        if req.hnsw_config is not None and req.hnsw_config.m is not None:
            server.hnsw_m[name] = req.hnsw_config.m
        server.indexes[name] = {}
        return True
    if op == "delete":
        server.indexes.pop(name, None)
        server.hnsw_m.pop(name, None)
        return eng.delete_collection(name)
    if op == "update":
        req = models.UpdateCollection.model_validate(body)
        if req.hnsw_config is not None and req.hnsw_config.m is not None:
            server.hnsw_m[name] = req.hnsw_config.m
            server.hnsw_updates.append(req.hnsw_config.m)
        return True
    if not eng.collection_exists(name):
        raise KeyError(f"Collection `{name}` doesn't exist!")
    if op == "upsert":
        req = models.PointsList.model_validate(body)
        eng.upsert(name, points=req.points)
        return {"operation_id": len(server.log), "status": "completed"}
    if op == "scroll":
        req = models.ScrollRequest.model_validate(body)
        records, nxt = eng.scroll(name, scroll_filter=req.filter, limit=req.limit or 10,
                                  offset=req.offset, with_payload=req.with_payload,
                                  with_vectors=req.with_vector)
        return {"points": [r.model_dump(mode="json") for r in records],
                "next_page_offset": nxt}
    if op == "count":
        req = models.CountRequest.model_validate(body)
        return {"count": eng.count(name, count_filter=req.filter, exact=True).count}
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
