"""Custom sharding (user-defined shard keys) travels with the points: a custom-sharded
collection is read one shard key at a time, each point naming its key in the payload field
``_vecferry_shard_key``; files keep that field; a custom-sharded target takes it back out and
writes each point to its key. Run against the loopback stand-in (``tests/qdrant_standin.py``),
which plays a server's custom sharding in front of an embedded engine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("qdrant_client")

import vecferry
from qdrant_helpers import DIM, MDIM, N, dump_local, dump_stream, normalize, source_points
from qdrant_standin import Fault, QdrantStandIn
from vecferry.converters import open_reader
from vecferry.converters.qdrant import SHARD_KEY_FIELD
from vecferry.errors import TargetError
from vecferry.verification import verify

KEYS = ["en", "de", 7]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")


@pytest.fixture
def server():
    with QdrantStandIn() as s:
        yield s


def key_of(i: int) -> Any:
    return KEYS[i % 3]


def client(server: QdrantStandIn) -> Any:
    from qdrant_client import QdrantClient

    return QdrantClient(host="127.0.0.1", port=server.port, check_compatibility=False)


def create(c: Any, name: str, custom: bool) -> None:
    """A collection with the vectors of ``source_points``, custom-sharded or not."""
    from qdrant_client import models

    c.create_collection(
        name,
        vectors_config={
            "d": models.VectorParams(size=DIM, distance="Dot"),
            "mv": models.VectorParams(size=MDIM, distance="Euclid",
                                      multivector_config=models.MultiVectorConfig(
                                          comparator="max_sim")),
        },
        sparse_vectors_config={"s": models.SparseVectorParams()},
        sharding_method=models.ShardingMethod.CUSTOM if custom else None)


def make_sharded(server: QdrantStandIn, name: str = "src", keys: list[Any] | None = None,
                 points: list[dict[str, Any]] | None = None) -> str:
    """A custom-sharded collection on the stand-in: every vector kind, mixed ids, point i
    under shard key ``key_of(i)``."""
    from qdrant_client import models

    c = client(server)
    create(c, name, custom=True)
    for key in KEYS if keys is None else keys:
        c.create_shard_key(name, key)
    for i, p in enumerate(source_points() if points is None else points):
        vec = {k: models.SparseVector(**v) if isinstance(v, dict) else v.tolist()
               for k, v in p["vector"].items()}
        c.upsert(name, [models.PointStruct(id=p["id"], vector=vec, payload=p["payload"])],
                 shard_key_selector=key_of(i))
    c.close()
    return server.location(name)


def with_keys() -> dict[Any, Any]:
    """The source's points as a reader of the sharded collection gives them."""
    points = source_points()
    for i, p in enumerate(points):
        p["payload"] = {**p["payload"], SHARD_KEY_FIELD: key_of(i)}
    return normalize(points)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_copy_keeps_shard_keys_and_each_points_key(server: QdrantStandIn, workers: int
                                                     ) -> None:
    src = make_sharded(server)
    report = vecferry.convert(src, server.location("copy"), workers=workers)
    assert report["written"] == N
    assert report["shard_keys"] == KEYS and report["shard_keys_created"] == []
    assert server.shard_keys["copy"] == KEYS
    assert server.point_keys["copy"] == server.point_keys["src"]
    assert len(server.point_keys["copy"]) == N
    assert dump_stream(server.location("copy")) == dump_stream(src) == with_keys()
    result = verify(src, server.location("copy"))
    assert result["ok"] and result["verdict"] == "identical"


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_an_archive_restores_the_sharding(server: QdrantStandIn, tmp_path: Path,
                                          suffix: str) -> None:
    src = make_sharded(server)
    archive = str(tmp_path / f"archive.{suffix}")
    vecferry.convert(src, archive, workers=1)
    assert dump_stream(archive) == with_keys()
    reader = open_reader(archive)
    try:
        collection = reader.manifest.collection
    finally:
        reader.close()
    assert (collection["sharding_method"], collection["shard_keys"]) == ("custom", KEYS)
    report = vecferry.convert(archive, server.location("restored"))
    assert report["written"] == N and report["shard_keys"] == KEYS
    assert server.shard_keys["restored"] == KEYS
    assert server.point_keys["restored"] == server.point_keys["src"]
    assert dump_stream(server.location("restored")) == with_keys()


def test_a_target_without_shard_keys_is_told_and_keeps_them_in_the_payload(
        server: QdrantStandIn, tmp_path: Path) -> None:
    src = make_sharded(server)

    def told(target: str, what: str) -> list[str]:
        return [f"{target}: the source collection uses custom sharding (shard keys: 'en', 'de', "
                f"7), and {what}: each point keeps its shard key in the payload field "
                "'_vecferry_shard_key' (a custom-sharded collection loaded from this one later "
                "takes it back out)"]

    local = f"qdrant-local://{tmp_path / 'local'}/docs"
    report = vecferry.convert(src, local, workers=1)
    assert report["warnings"] == told(local, "local mode has no shard keys")
    assert dump_local(tmp_path / "local") == with_keys()
    if importlib.util.find_spec("qdrant_edge") is not None:
        edge = f"qdrant-edge://{tmp_path / 'shard'}"
        report = vecferry.convert(src, edge, workers=1)
        assert report["warnings"] == told(edge, "a Qdrant Edge shard has no shard keys")
        assert dump_stream(edge) == with_keys()
    # an existing collection with automatic sharding is told the same, before any point
    create(client(server), "auto", custom=False)
    server.add_fault(Fault("create", "400"))  # nothing may create it again
    report = vecferry.convert(src, server.location("auto"), workers=1,
                              writer_options={"mode": "append"}, on_error="fail")
    assert report["warnings"] == told(server.location("auto"),
                                      "the target collection uses automatic sharding")
    assert "auto" not in server.shard_keys
    assert dump_stream(server.location("auto")) == with_keys()


def test_points_without_a_usable_shard_key_are_rejected(server: QdrantStandIn,
                                                        tmp_path: Path) -> None:
    from qdrant_client import models

    c = client(server)
    c.create_collection("tenants", vectors_config=models.VectorParams(size=2, distance="Dot"),
                        sharding_method=models.ShardingMethod.CUSTOM)
    c.create_shard_key("tenants", "en")
    c.close()
    lines = [{"id": 1, "vector": [1.0, 2.0], "payload": {SHARD_KEY_FIELD: "en", "a": 1}},
             {"id": 2, "vector": [1.0, 2.0], "payload": {"a": 2}},
             {"id": 3, "vector": [1.0, 2.0], "payload": {SHARD_KEY_FIELD: 1.5}},
             {"id": 4, "vector": [1.0, 2.0], "payload": {SHARD_KEY_FIELD: "de"}},
             {"id": 5, "vector": [1.0, 2.0], "payload": {SHARD_KEY_FIELD: ""}},
             {"id": 6, "vector": [1.0, 2.0], "payload": {SHARD_KEY_FIELD: 3}}]
    src = tmp_path / "points.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(str(src), server.location("tenants"), on_error="skip",
                              rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (3, 3)
    assert report["shard_keys_created"] == ["de", 3]
    assert server.shard_keys["tenants"] == ["en", "de", 3]
    assert server.point_keys["tenants"] == {"1": "en", "4": "de", "6": 3}
    reasons = [json.loads(line)["_vecferry_reject"] for line in rejects.read_text().splitlines()]
    assert [r["reason"] for r in reasons] == [
        "the point has no shard key (payload field '_vecferry_shard_key'), and the collection "
        "uses custom sharding",
        "payload field '_vecferry_shard_key' holds 1.5, which is not a shard key (a non-empty "
        "string or an unsigned integer), and the collection uses custom sharding",
        "payload field '_vecferry_shard_key' holds '', which is not a shard key (a non-empty "
        "string or an unsigned integer), and the collection uses custom sharding"]
    # the payload that reaches the server has the key taken out
    stored = dump_stream(server.location("tenants"))
    assert stored[("int", 1)][1] == b'{"_vecferry_shard_key":"en","a":1}'
    c = client(server)
    assert c.retrieve("tenants", [1])[0].payload == {"a": 1}
    c.close()


def test_a_resumed_sharded_copy_has_no_gaps_or_duplicates(server: QdrantStandIn,
                                                          tmp_path: Path) -> None:
    """Batches of 5 hold 'en' points 0-4, 5-9, then 10-12 with 2 of 'de' (one request per
    key); the request of those 2 is refused, so the resumed run reads from point 10, part way
    through the first shard key (``test_reading_from_point_n_crosses_shard_keys`` starts in
    the others)."""
    src = make_sharded(server)
    state = str(tmp_path / "state.json")
    sent: list[int] = []

    def fourth(body: dict[str, Any]) -> bool:
        sent.append(1)
        return len(sent) == 4

    def written(since: int) -> list[Any]:
        return [i for e in server.log[since:] if e.op == "upsert" and e.outcome == "ok"
                for i in e.ids]

    mark = len(server.log)
    server.add_fault(Fault("upsert", "400", when=fourth))
    with pytest.raises(TargetError, match=r"Qdrant refused 2 point\(s\)"):
        vecferry.convert(src, server.location("dst"), batch_size=5, resume=True,
                         state=state, writer_options={"parallel": 1})
    acknowledged = written(mark)[:10]
    mark = len(server.log)
    report = vecferry.convert(src, server.location("dst"), batch_size=5, resume=True,
                              state=state, writer_options={"parallel": 1})
    assert report["resumed_from"] == 10
    rest = written(mark)
    assert len(rest) == len(set(rest)) == N - 10
    assert len(set(acknowledged) | set(rest)) == N
    assert server.point_keys["dst"] == server.point_keys["src"]
    assert dump_stream(server.location("dst")) == with_keys()


@pytest.mark.parametrize("start", [0, 1, 12, 13, 25, N - 1, N])
def test_reading_from_point_n_crosses_shard_keys(server: QdrantStandIn, start: int) -> None:
    src = make_sharded(server)
    reader = open_reader(src)
    try:
        whole = [r for b in reader.batches(5) for r in b.to_pylist()]
        tail = [r for b in reader.batches(5, start=start) for r in b.to_pylist()]
    finally:
        reader.close()
    assert len(whole) == N and tail == whole[start:]
    # one key after another, in the order the server lists them
    keys = [json.loads(r["payload"])[SHARD_KEY_FIELD] for r in whole]
    assert keys == sorted(keys, key=KEYS.index)


def test_older_servers_name_their_shard_keys_in_cluster_info(server: QdrantStandIn,
                                                             tmp_path: Path) -> None:
    src = make_sharded(server)
    server.list_shard_keys_endpoint = False
    out = str(tmp_path / "out.jsonl")
    vecferry.convert(src, out, workers=1)
    assert dump_stream(out) == with_keys()
    assert any(e.op == "shard_list" for e in server.log)
    assert any(e.op == "cluster" for e in server.log)



def test_creating_a_shard_key_is_retried_on_its_own(server: QdrantStandIn) -> None:
    src = make_sharded(server)
    server.add_fault(Fault("shard_create", "503", times=2))
    report = vecferry.convert(src, server.location("copy"), workers=1)
    assert report["retries"] == 2 and server.shard_keys["copy"] == KEYS
    assert [e.outcome for e in server.log if e.op == "create"][-1] == "ok"
    assert len([e for e in server.log if e.op == "create"]) == 2  # src's and copy's, once
    assert dump_stream(server.location("copy")) == with_keys()


def test_shard_key_option_puts_every_point_under_one_key(server: QdrantStandIn,
                                                        tmp_path: Path) -> None:
    src = tmp_path / "tenant.jsonl"
    src.write_text("".join(json.dumps({"id": i, "vector": [float(i), 1.0], "payload": p}) + "\n"
                           for i, p in enumerate([{"a": 1}, None,
                                                  {SHARD_KEY_FIELD: "other", "b": 2}])))
    report = vecferry.convert(str(src), server.location("tenants"),
                              writer_options={"shard_key": "acme", "distance": "Dot"})
    assert report["shard_keys_created"] == ["acme"] and server.shard_keys["tenants"] == ["acme"]
    assert server.point_keys["tenants"] == {"0": "acme", "1": "acme", "2": "acme"}
    c = client(server)
    assert [r.payload for r in c.retrieve("tenants", [0, 1, 2])] == [{"a": 1}, {}, {"b": 2}]
    c.close()
    # 7 is the integer key, '"7"' the text one; both go into the existing collection
    vecferry.convert(str(src), server.location("tenants"), writer_options={"shard_key": "7"})
    vecferry.convert(str(src), server.location("tenants"),
                     writer_options={"shard_key": '"7"'})
    assert server.shard_keys["tenants"] == ["acme", 7, "7"]


@pytest.mark.parametrize(("target", "key", "message"), [
    ("local", "acme", "{loc}: --shard-key needs a Qdrant server: local mode and Edge have no "
     "shard keys"),
    ("auto", "acme", "{loc}: --shard-key needs a collection with custom sharding; this one "
     "uses automatic sharding (drop --shard-key, or load into a new collection (created with "
     "custom sharding))"),
    ("new", "", "--shard-key '' is not a shard key (a non-empty string or an unsigned "
     "integer)"),
    ("new", "-1", "--shard-key '-1' is not a shard key (a non-empty string or an unsigned "
     "integer)"),
])
def test_shard_key_option_refusals(server: QdrantStandIn, tmp_path: Path, target: str,
                                   key: str, message: str) -> None:
    from click.testing import CliRunner

    from vecferry.cli import main

    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"id": 1, "vector": [1.0, 2.0]}) + "\n")
    if target == "auto":
        client(server).create_collection("auto", vectors_config=models_params())
    loc = {"local": f"qdrant-local://{tmp_path / 'qd'}/docs", "auto": server.location("auto"),
           "new": server.location("new")}[target]
    mark = len(server.log)
    result = CliRunner().invoke(main, ["convert", str(src), loc, "--shard-key", key])
    assert (result.exit_code, result.output) == (2, f"error: {message.format(loc=loc)}\n")
    assert not [e for e in server.log[mark:] if e.op in ("create", "upsert")]
    assert not (tmp_path / "qd").exists()  # nor is a local-mode folder left behind


def models_params() -> Any:
    from qdrant_client import models

    return models.VectorParams(size=2, distance="Dot")
