"""Partition plans of a Qdrant server collection: id ranges cut at sampled ids, shard keys,
and a partitioned export equal to a single-process one (through the loopback stand-in)."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from qdrant_standin import Fault, QdrantStandIn
from vecferry.converters import open_reader
from vecferry.converters.qdrant import DEFAULT_ID_FIELD, SHARD_KEY_FIELD, id_order
from vecferry.pipeline import convert
from vecferry.verification import verify

N, DIM = 1500, 16
#: partition size that cuts N points of DIM floats (about 400 kB estimated) into several
SMALL = 64 << 10
LANG_DE = json.dumps({"must": [{"key": "lang", "match": {"value": "de"}}]})


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")


def _points(ids: list[Any], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    mat = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    return [{"id": pid, "vector": [float(x) for x in mat[i]],
             "payload": {"i": i, "lang": ["en", "de", "fr"][i % 3]}}
            for i, pid in enumerate(ids)]


def _load(tmp: Path, server: QdrantStandIn, name: str, ids: list[Any], seed: int) -> str:
    src = tmp / f"{name}.jsonl"
    with open(src, "w") as f:
        for p in _points(ids, seed):
            f.write(json.dumps(p) + "\n")
    loc = server.location(name)
    convert(str(src), loc, workers=1, writer_options={"distance": "Euclid"})
    return loc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("qdrant_scaleout")
    rng = np.random.default_rng(5)
    with QdrantStandIn() as s:
        ints = sorted({int(x) for x in rng.integers(0, 1 << 40, N * 2)})[:N]
        rng.shuffle(ints)
        _load(tmp, s, "ints", [int(x) for x in ints], 1)
        # canonical UUIDs are stored as they are, other strings as UUIDv5 of themselves
        strings = [str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | i)) if i % 2
                   else f"doc-{i}" for i in range(N)]
        _load(tmp, s, "uuids", strings, 2)
        # integers and UUIDs in one collection: a range may span the switch from one to other
        from qdrant_client import models
        s.engine.create_collection("mixed", vectors_config=models.VectorParams(
            size=DIM, distance=models.Distance.EUCLID))
        mixed = [i * 13 if i % 2 else str(uuid.UUID(int=i * 7919 << 80)) for i in range(N)]
        s.engine.upsert("mixed", [models.PointStruct(**p) for p in _points(mixed, 3)])
        yield s


def _ids(batches: Any) -> list[Any]:
    return [pid for b in batches for pid in b.column("id").to_pylist()]


def _rows(batches: Any) -> dict[Any, tuple[Any, str]]:
    out = {}
    for b in batches:
        for row in b.to_pylist():
            out[row["id"]] = (row.get("vector"), row["payload"])
    return out


@pytest.mark.parametrize("name", ["ints", "uuids", "mixed"])
@pytest.mark.parametrize("page_size", [None, 7])
def test_id_ranges_tile_the_collection(server: QdrantStandIn, name: str,
                                       page_size: int | None) -> None:
    reader = open_reader(server.location(name), page_size=page_size)
    try:
        parts = reader.partitions(SMALL)
        assert parts is not None and len(parts) >= 3
        specs = [p["spec"] for p in parts]
        assert specs[0]["from"] is None and specs[-1]["to"] is None
        for a, b in itertools.pairwise(specs):
            assert a["to"] == b["from"] and id_order(a["to"]) > id_order(a["from"] or 0)
        assert sum(p["rows"] for p in parts) == N
        json.dumps(specs)  # specs travel to workers and into the staged plan
        whole = list(reader.batches(100))
        pieces = [list(reader.read_partition(s, 100)) for s in specs]
    finally:
        reader.close()
    got = [pid for piece in pieces for pid in _ids(piece)]
    assert len(got) == N and len(set(got)) == N
    assert sorted(map(str, got)) == sorted(map(str, _ids(whole)))
    # pieces hold the same points as the whole stream: ids restored, the id field dropped
    assert _rows(b for piece in pieces for b in piece) == _rows(whole)
    assert all(DEFAULT_ID_FIELD not in payload for _, payload in _rows(whole).values())
    if name == "uuids":
        assert "doc-0" in got


def test_reading_a_spec_twice_gives_the_same_rows(server: QdrantStandIn) -> None:
    reader = open_reader(server.location("mixed"), page_size=11)
    try:
        specs = [p["spec"] for p in reader.partitions(SMALL)]
        middle = specs[len(specs) // 2]
        first = list(reader.read_partition(middle, 50))
        again = list(reader.read_partition(middle, 50))
    finally:
        reader.close()
    assert _ids(first) == _ids(again) and len(_ids(first)) > 0
    assert [b.to_pylist() for b in first] == [b.to_pylist() for b in again]


def test_the_filter_is_honoured(server: QdrantStandIn) -> None:
    reader = open_reader(server.location("uuids"), filter=LANG_DE)
    try:
        parts = reader.partitions(SMALL // 4)
        assert parts is not None and len(parts) >= 3
        assert sum(p["rows"] for p in parts) == reader.count() == N // 3
        whole = _rows(reader.batches(100))
        pieces = [b for p in parts for b in reader.read_partition(p["spec"], 100)]
    finally:
        reader.close()
    ids = _ids(pieces)
    assert len(ids) == len(set(ids)) == N // 3
    assert _rows(pieces) == whole
    assert {json.loads(payload)["lang"] for _, payload in whole.values()} == {"de"}
    # the sample was drawn through the filter too: every boundary is a point of the subset
    bounds = [p["spec"]["from"] for p in parts[1:]]
    found = server.engine.retrieve("uuids", ids=bounds, with_payload=True)
    assert len(found) == len(bounds) and {r.payload["lang"] for r in found} == {"de"}


def test_a_small_collection_is_one_partition(server: QdrantStandIn) -> None:
    reader = open_reader(server.location("ints"))
    try:
        assert reader.partitions(64 << 20) is None
    finally:
        reader.close()


def test_without_random_sampling_the_collection_is_one_partition(server: QdrantStandIn
                                                                 ) -> None:
    fault = server.add_fault(Fault("query", "400", times=None,
                                   message="Format error in JSON body: unknown variant `sample`"))
    reader = open_reader(server.location("ints"))
    try:
        assert reader.partitions(SMALL) is None
    finally:
        reader.close()
        fault.times = fault.fired  # spent: later tests sample again
    assert fault.fired == 1  # a refusal is not retried


def test_local_mode_is_one_partition(tmp_path: Path, server: QdrantStandIn) -> None:
    local = f"qdrant-local://{tmp_path / 'data'}/docs"
    convert(server.location("ints"), local, workers=1)
    reader = open_reader(local)
    try:
        assert reader.count() == N
        assert reader.partitions(1) is None
    finally:
        reader.close()


def test_one_partition_per_shard_key(server: QdrantStandIn, tmp_path: Path) -> None:
    """A custom-sharded collection (the stand-in plays a server's custom sharding): one
    partition per key, read with that key's selector, each point naming its key."""
    from qdrant_client import QdrantClient, models

    c = QdrantClient(host="127.0.0.1", port=server.port, check_compatibility=False)
    c.create_collection("tenants", vectors_config=models.VectorParams(size=DIM,
                                                                      distance="Euclid"),
                        sharding_method=models.ShardingMethod.CUSTOM)
    c.close()
    src = tmp_path / "tenants.jsonl"
    with open(src, "w") as f:
        for p in _points(list(range(N)), 3):
            p["payload"][SHARD_KEY_FIELD] = p["payload"]["lang"]
            f.write(json.dumps(p) + "\n")
    report = convert(str(src), server.location("tenants"), workers=1)
    assert report["shard_keys_created"] == ["en", "de", "fr"]
    reader = open_reader(server.location("tenants"))
    try:
        parts = reader.partitions(SMALL)
        assert [p["spec"] for p in parts] == [{"shard_key": k} for k in ("en", "de", "fr")]
        assert [p["rows"] for p in parts] == [N // 3] * 3
        pieces = [list(reader.read_partition(p["spec"], 100)) for p in parts]
        whole = _rows(reader.batches(100))
    finally:
        reader.close()
    for key, piece in zip(("en", "de", "fr"), pieces, strict=True):
        payloads = [json.loads(r["payload"]) for b in piece for r in b.to_pylist()]
        assert {(p[SHARD_KEY_FIELD], p["lang"]) for p in payloads} == {(key, key)}
    ids = [pid for piece in pieces for pid in _ids(piece)]
    assert len(ids) == len(set(ids)) == N
    assert _rows(b for piece in pieces for b in piece) == whole


def test_a_partitioned_export_equals_a_single_process_one(server: QdrantStandIn,
                                                          tmp_path: Path) -> None:
    for name in ("uuids", "mixed"):
        loc = server.location(name)
        (tmp_path / name).mkdir()
        out = str(tmp_path / name / "out") + "/"
        report = convert(loc, out, to_format="parquet", workers=2, partition_size=SMALL)
        assert report["partitions"] >= 3 and report["written"] == N
        single = str(tmp_path / name / "single.parquet")
        convert(loc, single, workers=1)
        got, want = verify(out)["source"], verify(single)["source"]
        assert (got["count"], got["digest"]) == (want["count"], want["digest"])
        assert want["count"] == N
