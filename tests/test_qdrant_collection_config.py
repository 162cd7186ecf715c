"""``--collection-config``: settings for a collection vecferry creates, over the source's
(moving to hardware or a topology of its own: one node, vectors in RAM, other quantization).
Against the loopback stand-in, whose create requests the tests read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("qdrant_client")

import vecferry
from qdrant_helpers import dump_stream, make_local, normalize, source_points
from qdrant_standin import Fault, QdrantStandIn
from vecferry.cli import main
from vecferry.converters import open_reader


@pytest.fixture
def src(tmp_path: Path) -> str:
    return make_local(tmp_path / "src_data")  # d: on disk, HNSW m=24; mv; sparse s


@pytest.fixture
def server():
    with QdrantStandIn() as s:
        yield s


def created(server: QdrantStandIn) -> list[dict[str, Any]]:
    """Records the body of every create request (a fault that never fires)."""
    bodies: list[dict[str, Any]] = []
    server.add_fault(Fault("create", "400", times=None,
                           when=lambda body: bodies.append(body) and False))
    return bodies


def test_settings_override_the_source_config_when_creating(src: str, server: QdrantStandIn,
                                                           tmp_path: Path) -> None:
    bodies = created(server)
    over = {"shard_number": 1, "replication_factor": 1, "hnsw_config": {"m": 32},
            "vectors": {"d": {"on_disk": False,
                              "quantization_config": {"scalar": {"type": "int8"}}}},
            "payload_schema": {"lang": "keyword"}, "aliases": ["docs"]}
    report = vecferry.convert(src, server.location("a"),
                              writer_options={"collection_config": json.dumps(over)})
    (body,) = bodies
    assert (body["shard_number"], body["replication_factor"]) == (1, 1)
    reader = open_reader(src)
    source_hnsw = reader.manifest.collection["hnsw_config"]
    reader.close()
    assert body["hnsw_config"] == {**source_hnsw, "m": 32}  # merged, not replaced
    assert body["vectors"]["d"]["on_disk"] is False
    assert body["vectors"]["d"]["quantization_config"] == {"scalar": {"type": "int8"}}
    assert body["vectors"]["d"]["size"] == 8 and body["vectors"]["mv"]["distance"] == "Euclid"
    assert report["payload_indexes"] == ["lang"] and report["aliases"] == ["docs"]
    assert dump_stream(server.location("a")) == normalize(source_points())
    # from a file, and null drops a setting the source has
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hnsw_config": None, "vectors": {"d": {"on_disk": None}}}))
    vecferry.convert(src, server.location("b"), writer_options={"collection_config": f"@{path}"})
    assert "hnsw_config" not in bodies[1] and "on_disk" not in bodies[1]["vectors"]["d"]


def test_an_existing_collection_is_left_as_it_is(src: str, server: QdrantStandIn) -> None:
    vecferry.convert(src, server.location("a"))
    bodies = created(server)
    report = vecferry.convert(src, server.location("a"),
                              writer_options={"collection_config": '{"shard_number": 1}'})
    assert bodies == []
    assert report["warnings"] == [
        f"{server.location('a')}: the collection exists, so --collection-config is not "
        "applied (it sets up a collection vecferry creates)"]


@pytest.mark.parametrize(("value", "message"), [
    ('{"vectors_config": {}}', "--collection-config cannot set vectors_config (it sets "
     "aliases, hnsw_config, metadata, on_disk_payload, optimizer_config, payload_schema, "
     "quantization_config, replication_factor, shard_number, sparse_vectors, "
     "strict_mode_config, vectors, wal_config, write_consistency_factor; vector sizes, "
     "distances and datatypes come from the source)"),
    ('{"vectors": {"d": {"size": 16, "on_disk": true}}}', "--collection-config cannot set "
     "size of vector 'd' (it sets hnsw_config, on_disk, quantization_config; the rest comes "
     "from the source)"),
    ('{"sparse_vectors": {"s": {"modifier": "none"}}}', "--collection-config cannot set "
     "modifier of vector 's' (it sets index; the rest comes from the source)"),
    ('{"vectors": {"x": {"on_disk": true}}}', "--collection-config names vectors the source "
     "does not have: 'x' (the source has: 'd', 'mv')"),
    ('{"vectors": [1]}', '--collection-config: "vectors" maps vector names to settings, e.g. '
     '{"vectors": {"NAME": {...}}}'),
    ("[1, 2]", "--collection-config takes a JSON object of collection settings"),
    ('{"aliases": "docs"}', '--collection-config: "aliases" is a list of alias names, e.g. '
     '{"aliases": ["docs"]}'),
    ('{"payload_schema": {"lang": 5}}', "--collection-config: the index of payload field "
     "'lang' is a type name or an object with data_type (e.g. \"keyword\", or {\"data_type\": "
     "\"integer\", \"params\": {\"type\": \"integer\", \"range\": true}})"),
    ("{shard_number: 1}", "--collection-config is not JSON: Expecting property name enclosed "
     "in double quotes: line 1 column 2 (char 1) (e.g. --collection-config "
     "'{\"shard_number\": 1}')"),
    ("@/nonexistent/config.json", "--collection-config: cannot read /nonexistent/config.json: "
     "No such file or directory"),
])
def test_bad_settings_are_refused_before_anything_is_written(
        src: str, server: QdrantStandIn, value: str, message: str) -> None:
    result = CliRunner().invoke(main, ["convert", src, server.location("a"),
                                       "--collection-config", value, "--quiet"])
    assert result.exit_code == 2
    assert result.output == f"error: {message}\n"
    assert not [e for e in server.log if e.op in ("create", "upsert")]


def test_a_file_target_does_not_take_it(src: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["convert", src, str(tmp_path / "out.jsonl"),
                                       "--collection-config", "{}"])
    assert result.exit_code == 2
    assert result.output == "error: format 'jsonl' does not take --collection-config\n"
