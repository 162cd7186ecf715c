"""Qdrant local mode and Qdrant Edge: locations, ids, round trips, filters, config, modes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import orjson
import pytest

pytest.importorskip("qdrant_client")
pytest.importorskip("qdrant_edge")

import vecferry
from qdrant_helpers import (
    N,
    dump_edge,
    dump_local,
    dump_stream,
    make_local,
    normalize,
    source_points,
)
from roundtrip import read_points
from vecferry.converters import open_reader, open_writer
from vecferry.converters.qdrant import (
    DEFAULT_ID_FIELD,
    ID_NAMESPACE,
    count_points,
    original_id,
    parse_location,
    qdrant_id,
)
from vecferry.errors import (
    InputError,
    OutputExistsError,
    RecordError,
    TargetError,
    UnsupportedError,
    UsageError,
)
from vecferry.stream import Manifest, VectorSpec


@pytest.fixture
def src(tmp_path: Path) -> str:
    return make_local(tmp_path / "src_data")


def expected() -> dict:
    return normalize(source_points())


# ------------------------------------------------------------------------------ locations


def test_locations_parse() -> None:
    loc = parse_location("qdrant://db.example:7000/docs")
    assert (loc.host, loc.port, loc.collection, loc.grpc) == ("db.example", 7000, "docs", False)
    loc = parse_location("qdrants://db.example/docs?grpc=1")
    assert (loc.port, loc.grpc, loc.scheme) == (6334, True, "qdrants")
    assert parse_location("qdrant://h/docs").port == 6333
    loc = parse_location("qdrant-local://./qdrant_data/docs")
    assert (loc.path, loc.collection) == ("./qdrant_data", "docs")
    loc = parse_location("qdrant-local:///srv/qdrant_data/docs")
    assert (loc.path, loc.collection) == ("/srv/qdrant_data", "docs")


@pytest.mark.parametrize("bad", [
    "qdrant://h:6333/", "qdrant://h/a/b", "qdrant-local://docs", "qdrant://h/docs?x=1",
])
def test_bad_locations(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_location(bad)


def test_api_key_in_uri_is_refused_and_not_echoed() -> None:
    with pytest.raises(UsageError) as err:
        parse_location("qdrant://h/docs?api_key=s3cr3t")
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(UsageError) as err:
        parse_location("qdrant://user:s3cr3t@h/docs")
    assert "s3cr3t" not in str(err.value)


# ------------------------------------------------------------------------------------ ids


def test_id_mapping_is_deterministic_and_reversible() -> None:
    assert qdrant_id(5) == (5, False)
    u = str(uuid.uuid4())
    assert qdrant_id(u) == (u, False)
    mapped, was = qdrant_id("doc-1")
    assert was and mapped == str(uuid.uuid5(ID_NAMESPACE, "doc-1"))
    # a UUID Qdrant would rewrite (upper case) keeps its spelling through the payload
    upper = u.upper()
    assert qdrant_id(upper)[1] is True
    assert original_id(mapped, {DEFAULT_ID_FIELD: "doc-1"}, DEFAULT_ID_FIELD) == ("doc-1", True)
    # a payload field that does not map to the id is left alone
    assert original_id(mapped, {DEFAULT_ID_FIELD: "other"}, DEFAULT_ID_FIELD) == (mapped, False)


# ------------------------------------------------------------------------------ round trips


def test_reader_schema_and_config(src: str) -> None:
    reader = open_reader(src)
    try:
        m = reader.manifest
        assert m.id_kind == "mixed"
        assert reader.count() == N
        kinds = {v.name: (v.kind, v.size, v.distance) for v in m.vectors}
        assert kinds == {"d": ("dense", 8, "Dot"), "mv": ("multi", 3, "Euclid"),
                         "s": ("sparse", None, None)}
        d = m.vector("d")
        assert d.extra["on_disk"] is True
        assert m.vector("mv").extra["multivector_config"] == {"comparator": "max_sim"}
        assert m.vector("s").extra["modifier"] == "idf"
        # local mode reports Qdrant's defaults for HNSW (it builds no graph)
        assert m.collection["hnsw_config"]["m"] == 16
        assert m.collection["engine"] == "local"
        assert "payload_schema" in m.collection and "shard_number" in m.collection
    finally:
        reader.close()


def test_reader_batches_and_start(src: str) -> None:
    reader = open_reader(src, page_size=5)
    try:
        sizes = [b.num_rows for b in reader.batches(10)]
        assert sizes == [10, 10, 10, 7]
        all_ids = [i for b in reader.batches(10) for i in b.column("id").to_pylist()]
        tail = [i for b in reader.batches(10, start=13) for i in b.column("id").to_pylist()]
        assert tail == all_ids[13:]
        assert list(reader.batches(10, start=N)) == []
    finally:
        reader.close()


def test_local_edge_local_exact(tmp_path: Path, src: str) -> None:
    edge = tmp_path / "shard"
    r1 = vecferry.convert(src, f"qdrant-edge://{edge}", batch_size=10)
    assert r1["written"] == N and r1["points_in_collection"] == N
    assert dump_edge(edge) == expected()
    back = tmp_path / "back"
    r2 = vecferry.convert(f"qdrant-edge://{edge}", f"qdrant-local://{back}/copy", batch_size=9)
    assert r2["points_in_collection"] == N
    assert dump_local(back, "copy") == expected()


@pytest.mark.parametrize("middle", ["points.parquet", "points.jsonl"])
@pytest.mark.parametrize("target", ["local", "edge"])
def test_round_trip_through_files_exact(tmp_path: Path, src: str, middle: str,
                                        target: str) -> None:
    pytest.importorskip("vecferry.converters.parquet" if middle.endswith("parquet")
                        else "vecferry.converters.jsonl")
    mid = str(tmp_path / middle)
    vecferry.convert(src, mid, batch_size=8)
    dst = (f"qdrant-edge://{tmp_path / 'shard'}" if target == "edge"
           else f"qdrant-local://{tmp_path / 'dst'}/docs")
    report = vecferry.convert(mid, dst, batch_size=8)
    assert report["points_in_collection"] == N
    got = dump_edge(tmp_path / "shard") if target == "edge" else dump_local(tmp_path / "dst")
    assert got == expected()
    # and the collection config travelled with the file
    reader = open_reader(dst)
    try:
        assert reader.manifest.vector("s").extra["modifier"] == "idf"
        assert reader.manifest.vector("mv").kind == "multi"
        assert reader.manifest.collection["hnsw_config"]["m"] == 16
    finally:
        reader.close()


def test_string_ids_map_to_uuid5_and_back(tmp_path: Path) -> None:
    pytest.importorskip("vecferry.converters.jsonl")
    lines = []
    for i in range(N):
        pid = f"doc-{i}" if i % 2 else str(uuid.UUID(int=i + 1)).upper()
        lines.append({"id": pid, "vector": [float(i), 0.5, -1.25, 2.0],
                      "payload": {"n": i}})
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in lines))
    for dst in (f"qdrant-local://{tmp_path / 'q'}/docs", f"qdrant-edge://{tmp_path / 'e'}"):
        vecferry.convert(str(src), dst, batch_size=10)
        reader = open_reader(dst)
        try:
            assert reader.manifest.id_kind == "string"
        finally:
            reader.close()
        out = tmp_path / f"out-{dst.split(':')[0]}.jsonl"
        vecferry.convert(dst, str(out))
        got = [json.loads(x) for x in out.read_text().splitlines()]
        assert {p["id"] for p in got} == {p["id"] for p in lines}
        assert all(DEFAULT_ID_FIELD not in p["payload"] for p in got)
    # inside Qdrant the ids are UUIDv5 with the original in the payload
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        rec = client.retrieve("docs", [str(uuid.uuid5(ID_NAMESPACE, "doc-1"))])
        assert rec[0].payload == {"n": 1, DEFAULT_ID_FIELD: "doc-1"}
    finally:
        client.close()


@pytest.mark.parametrize("engine", ["local", "edge"])
def test_filter_exports_a_subset(tmp_path: Path, src: str, engine: str) -> None:
    loc = src
    if engine == "edge":
        loc = f"qdrant-edge://{tmp_path / 'shard'}"
        vecferry.convert(src, loc)
    flt = json.dumps({"must": [{"key": "lang", "match": {"value": "de"}}],
                      "must_not": [{"key": "i", "range": {"lt": 10}}]})
    want = {k: v for k, v in expected().items()
            if orjson.loads(v[1])["lang"] == "de" and orjson.loads(v[1])["i"] >= 10}
    reader = open_reader(loc, filter=flt, page_size=3)
    try:
        assert reader.count() == len(want) > 0
    finally:
        reader.close()
    assert dump_stream(loc, filter=flt, page_size=3) == want
    with pytest.raises(UsageError):
        open_reader(loc, filter="{not json")


def test_missing_sources_are_input_errors(tmp_path: Path, src: str) -> None:
    with pytest.raises(InputError, match="collection not found"):
        open_reader(src.rsplit("/", 1)[0] + "/nope")
    with pytest.raises(InputError, match="no such local-mode folder"):
        open_reader(f"qdrant-local://{tmp_path / 'missing'}/docs")
    with pytest.raises(InputError):
        open_reader(f"qdrant-edge://{tmp_path / 'missing'}")
    with pytest.raises(InputError, match="collection not found"):
        count_points(src.rsplit("/", 1)[0] + "/nope")
    assert count_points(src) == N


# ------------------------------------------------------------------------------ writer modes


def _schema(size: int = 8, distance: str = "Dot"):
    return Manifest(vectors=[VectorSpec("d", size=size, distance=distance)]).schema()


@pytest.mark.parametrize("engine", ["local", "edge"])
def test_modes_and_config_diff(tmp_path: Path, src: str, engine: str) -> None:
    dst = (f"qdrant-edge://{tmp_path / 'shard'}" if engine == "edge"
           else f"qdrant-local://{tmp_path / 'dst'}/docs")
    vecferry.convert(src, dst)
    # append into a collection whose vector differs: refused, with the differences
    from vecferry.converters.base import Context

    with pytest.raises(TargetError) as err:
        open_writer(dst, _schema(size=16, distance="Cosine"), context=Context())
    text = str(err.value)
    assert "vector 'd': size 8 in the target, 16 in the source" in text
    assert "distance Dot in the target, Cosine in the source" in text
    with pytest.raises(OutputExistsError):
        open_writer(dst, _schema(), context=Context(), mode="fail-if-exists")
    with pytest.raises(UsageError):
        open_writer(dst, _schema(), context=Context(), mode="sideways")
    # a failed run's abort keeps the collection
    with open_reader(src) as r:
        same = r.schema  # the source's vectors: a stream lacking some would be refused
    w = open_writer(dst, same, context=Context(), mode="append")
    w.abort()
    assert count_points(dst) == N
    # resuming an overwrite continues: no drop
    w = open_writer(dst, same, context=Context(), mode="append", resuming=True)
    assert w.close()["points_in_collection"] == N
    # append of the same points is idempotent
    report = vecferry.convert(src, dst, writer_options={"mode": "append"})
    assert report["points_in_collection"] == N and not report["created"]
    # overwrite drops and recreates
    report = vecferry.convert(src, dst, overwrite=True, limit=5)
    assert report["dropped"] and report["points_in_collection"] == 5
    report = vecferry.convert(src, dst, writer_options={"mode": "overwrite"}, limit=7,
                              resume=True, state=str(tmp_path / "st.json"))
    assert report["points_in_collection"] == 7


@pytest.mark.parametrize("engine", ["local", "edge"])
def test_a_source_lacking_named_vectors_of_a_filled_target_is_refused(tmp_path: Path,
                                                                      engine: str) -> None:
    """An upsert replaces the whole point: appending points that carry only some of the
    target's named vectors silently deleted the others from every point it updated."""
    rich = Path(__file__).resolve().parent.parent / "sample_data" / "points_rich.jsonl"
    dst = (f"qdrant-edge://{tmp_path / 'shard'}" if engine == "edge"
           else f"qdrant-local://{tmp_path / 'dst'}/docs")
    vecferry.convert(str(rich), dst)
    text_only = tmp_path / "text_only.jsonl"
    with text_only.open("w") as out:
        for line in rich.read_text().splitlines():
            point = json.loads(line)
            point["vector"] = {"text": point["vector"]["text"]}
            out.write(json.dumps(point) + "\n")
    with pytest.raises(TargetError) as err:
        vecferry.convert(str(text_only), dst)
    assert ("vector(s) 'colbert', 'keywords': in the target, not in the source; an upsert "
            "replaces the whole point, so each point the source updates would lose them"
            ) in str(err.value)
    _, before = read_points(str(rich))
    _, after = read_points(dst)
    assert len(after) == len(before)
    assert all(set(p["vector"]) == {"text", "keywords", "colbert"} for p in after)
    # an empty collection has nothing to lose: the same source loads into it
    empty = (f"qdrant-edge://{tmp_path / 'shard2'}" if engine == "edge"
             else f"qdrant-local://{tmp_path / 'dst'}/empty")
    vecferry.convert(str(rich), empty, limit=0)
    assert vecferry.convert(str(text_only), empty)["written"] == len(before)


def test_unsupported_streams_refused_before_writing(tmp_path: Path) -> None:
    from vecferry.converters.base import Context

    unnamed_sparse = Manifest(vectors=[VectorSpec("", kind="sparse")]).schema()
    with pytest.raises(UnsupportedError, match="sparse vectors must be named"):
        open_writer(f"qdrant-local://{tmp_path / 'q'}/docs", unnamed_sparse, context=Context())
    mixed = Manifest(vectors=[VectorSpec("", size=4), VectorSpec("a", size=4)]).schema()
    with pytest.raises(UnsupportedError, match="unnamed vector next to named"):
        open_writer(f"qdrant-edge://{tmp_path / 'e'}", mixed, context=Context())
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("datatype", ["float16", "uint8"])
@pytest.mark.parametrize("engine", ["local", "edge"])
def test_datatypes_round_trip(tmp_path: Path, datatype: str, engine: str) -> None:
    import numpy as np
    import pyarrow as pa

    from vecferry.converters.base import Context

    manifest = Manifest(vectors=[VectorSpec("", size=4, datatype=datatype, distance="Euclid")])
    schema = manifest.schema()
    np_type = np.float16 if datatype == "float16" else np.uint8
    values = (np.arange(N * 4) % 251).astype(np_type).reshape(N, 4)
    if datatype == "float16":
        values = (values / np.float16(7)).astype(np.float16)
    col = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 4)
    batch = pa.RecordBatch.from_arrays(
        [pa.array(range(N), pa.uint64()), col, pa.array([None] * N, pa.string())],
        schema=schema)
    dst = (f"qdrant-edge://{tmp_path / 'e'}" if engine == "edge"
           else f"qdrant-local://{tmp_path / 'q'}/docs")
    writer = open_writer(dst, schema, context=Context())
    writer.write_batch(batch)
    writer.close()
    reader = open_reader(dst)
    try:
        assert reader.manifest.vectors[0].datatype == datatype
        got = pa.Table.from_batches(list(reader.batches(100))).column("vector").combine_chunks()
    finally:
        reader.close()
    flat = got.flatten().to_numpy(zero_copy_only=False)
    assert flat.dtype == np_type and (flat.reshape(N, 4) == values).all()


def test_payload_indexes_recreated_on_edge(tmp_path: Path, src: str) -> None:
    import qdrant_edge as qe

    first = tmp_path / "a"
    vecferry.convert(src, f"qdrant-edge://{first}")
    shard = qe.EdgeShard.load(str(first))
    shard.update(qe.UpdateOperation.create_field_index(
        "i", qe.IntegerIndexParams(lookup=True, range=True)))
    shard.update(qe.UpdateOperation.create_field_index("lang", qe.PayloadSchemaType.Keyword))
    shard.close()
    cfg = json.loads((first / "edge_config.json").read_text())
    cfg["hnsw_config"]["m"] = 24  # as if created with m=24: must travel to the copy
    (first / "edge_config.json").write_text(json.dumps(cfg))
    report = vecferry.convert(f"qdrant-edge://{first}", f"qdrant-edge://{tmp_path / 'b'}",
                              writer_options={"bulk": True})
    assert sorted(report["payload_indexes"]) == ["i", "lang"]
    reader = open_reader(f"qdrant-edge://{tmp_path / 'b'}")
    try:
        schema = reader.manifest.collection["payload_schema"]
        assert schema["lang"]["data_type"] == "keyword"
        assert schema["i"]["params"]["range"] is True
        assert reader.manifest.collection["hnsw_config"]["m"] == 24
    finally:
        reader.close()
    # local mode keeps no payload indexes: each is named in the warnings, with how to get
    # it back when copying the collection out
    report = vecferry.convert(f"qdrant-edge://{tmp_path / 'b'}",
                              f"qdrant-local://{tmp_path / 'q'}/docs")
    assert report["payload_indexes"] == []
    for field in ("i", "lang"):
        assert (f"payload index on {field!r} not created: local mode keeps no payload indexes "
                "(it filters by scanning every point); give it again with --collection-config "
                "'{\"payload_schema\": ...}' when copying this collection out"
                ) in report["warnings"]


def test_edge_reader_rejects_network_options(tmp_path: Path, src: str) -> None:
    vecferry.convert(src, f"qdrant-edge://{tmp_path / 'e'}")
    with pytest.raises(UsageError, match="timeout"):
        open_reader(f"qdrant-edge://{tmp_path / 'e'}", timeout=5)


def test_engine_refuses_payload_integers_it_would_round(tmp_path):
    """Qdrant's engine keeps payload numbers in 64 bits: such a point is refused by id and
    field (or sent to the rejects file), never stored changed; local mode keeps it."""
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": 1, "vector": [1.0, 2.0], '
                   '"payload": {"a": {"n": 18446744073709551616}}}\n'
                   '{"id": 2, "vector": [3.0, 4.0], "payload": {"n": 7}}\n')
    edge = f"qdrant-edge://{tmp_path}/shard"
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), edge, writer_options={"distance": "Dot"})
    assert "id 1: payload field 'a.n' holds an integer outside -2^63..2^64-1, which Qdrant " \
           "stores as a rounded float (store such numbers as strings in the payload)" \
        in str(info.value)
    report = vecferry.convert(str(src), edge, on_error="skip", overwrite=True,
                              rejects=str(tmp_path / "r.jsonl"),
                              writer_options={"distance": "Dot"})
    assert (report["written"], report["rejected"]) == (1, 1)
    local = f"qdrant-local://{tmp_path}/q/c"
    report = vecferry.convert(str(src), local, writer_options={"distance": "Dot"})
    assert (report["written"], report["rejected"]) == (2, 0)


def test_a_source_without_a_distance_takes_the_existing_collections(tmp_path: Path) -> None:
    # numpy says no distance: an existing Cosine collection was refused as "Dot in the source"
    import numpy as np
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("cos", vectors_config=models.VectorParams(size=4,
                                                                       distance="Cosine"))
    client.close()
    np.save(tmp_path / "v.npy", np.eye(4, dtype=np.float32) * 3)
    report = vecferry.convert(str(tmp_path / "v.npy"), f"qdrant-local://{tmp_path / 'q'}/cos")
    assert report["points_in_collection"] == 4 and report["warnings"] == []
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        assert client.get_collection("cos").config.params.vectors.distance == "Cosine"
    finally:
        client.close()
    # a new collection still gets Dot, and says so
    report = vecferry.convert(str(tmp_path / "v.npy"), f"qdrant-local://{tmp_path / 'q'}/new")
    assert report["warnings"] == ["the source does not say which distance its vectors use; the "
                                  "collection uses Dot, which stores vectors exactly (pass "
                                  "--distance to choose)"]


def test_local_mode_past_its_advised_size_warns_once_in_the_report(tmp_path: Path) -> None:
    """qdrant-client warns on every upsert past 20,000 local points, as a raw UserWarning with
    a source line; vecferry gives the advice once, as a report warning naming the fix."""
    import subprocess
    import sys

    import numpy as np

    from vecferry.converters.qdrant import LOCAL_MODE_POINTS

    n = LOCAL_MODE_POINTS + 1
    np.save(tmp_path / "v.npy", np.random.default_rng(2).standard_normal((n, 2)).astype("f4"))
    dst = f"qdrant-local://{tmp_path}/q/docs"
    run = subprocess.run([sys.executable, "-m", "vecferry", "convert", str(tmp_path / "v.npy"),
                          dst, "--distance", "Dot", "--quiet", "--batch-size", "4096"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "UserWarning" not in run.stderr
    assert run.stderr.splitlines() == [
        f"warning: {dst} holds {n} points; qdrant-client's local mode is meant for up to "
        "20,000 (each search scans every point): for more, load a Qdrant server (qdrant://) "
        "or a Qdrant Edge shard (qdrant-edge://)"]
