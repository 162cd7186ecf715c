"""Qdrant Edge, after review: what a shard holds of payload indexes, sparse vectors and
collection metadata travels in and out in Qdrant's REST shape (or is named before writing),
and a boolean ``--filter`` matches booleans.

* A text index's tokenizer, lowercase, token lengths, stopwords, stemmer, scoring, ... and a
  geo index's on_disk were dropped on the way into Edge and on the way out, and a copy
  matched other points under a text filter while ``copy`` said the shards were identical.
* The binding reads a Python ``True`` as the integer 1, so ``match: {"value": true}`` matched
  nothing, and ``any`` / ``except`` of booleans matched the integers 1 and 0.
* ``edge_config.json`` keeps a sparse vector's index settings beside its modifier; read as
  they were, a copy or an export out of Edge lost ``on_disk`` and ``full_scan_threshold``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import vecferry
from vecferry.cli import main
from vecferry.converters import open_reader, open_writer
from vecferry.converters.base import Context
from vecferry.errors import UsageError

qe = pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")

from qdrant_helpers import dump_edge, dump_stream  # noqa: E402 - needs both engines

#: the reviewer's text index: "Hello World" does not match "hello" in it
TEXT = {"type": "text", "tokenizer": "whitespace", "min_token_len": 2, "max_token_len": 10,
        "lowercase": False}
#: every other text index setting the binding has, in Qdrant's REST shape
TEXT_MORE = {"type": "text", "tokenizer": "word", "ascii_folding": True,
             "phrase_matching": True, "stopwords": {"languages": ["english"], "custom": ["foo"]},
             "stemmer": {"type": "snowball", "language": "english"},
             "scoring": {"type": "bm25"}, "enable_hnsw": False, "memory": "cached"}
TEXT_LANG = {"type": "text", "tokenizer": "word", "stopwords": "german",
             "stemmer": {"type": "none"}, "on_disk": True}
NESTED = {"type": "keyword", "nested": "offers", "prefix": True}
GEO = {"type": "geo", "on_disk": True}
SCHEMA = {"txt": {"data_type": "text", "params": TEXT},
          "txt_more": {"data_type": "text", "params": TEXT_MORE},
          "txt_lang": {"data_type": "text", "params": TEXT_LANG},
          "offers[].k": {"data_type": "keyword", "params": NESTED},
          "loc": {"data_type": "geo", "params": GEO},
          "plain": {"data_type": "text", "params": None}}

HELLO = {"must": [{"key": "txt", "match": {"text": "hello"}}]}


def make_shard(path: Path) -> str:
    """An Edge shard made by qdrant-edge itself, with the indexes of ``SCHEMA``."""
    shard = qe.EdgeShard.create(str(path), qe.EdgeConfig(
        vectors={"v": qe.EdgeVectorParams(size=2, distance=qe.Distance.Dot)}))
    shard.update(qe.UpdateOperation.upsert_points([
        qe.Point(1, {"v": [1.0, 2.0]}, {"txt": "Hello World", "loc": {"lon": 13.4, "lat": 52.5},
                                        "offers": [{"k": "a"}]}),
        qe.Point(2, {"v": [1.0, 0.0]}, {"txt": "hello there", "txt_more": "running foxes"}),
    ]))
    indexes = {
        "txt": qe.TextIndexParams(tokenizer=qe.TokenizerType.Whitespace, lowercase=False,
                                  min_token_len=2, max_token_len=10),
        "txt_more": qe.TextIndexParams(
            ascii_folding=True, phrase_matching=True,
            stopwords=qe.StopwordsSet(languages={qe.Language.English}, custom={"foo"}),
            stemmer=qe.SnowballParams(qe.SnowballLanguage.English), scoring=True,
            enable_hnsw=False, memory=qe.Memory.Cached),
        "txt_lang": qe.TextIndexParams(stopwords=qe.Language.German,
                                       stemmer=qe.DisabledStemmer(), on_disk=True),
        "offers[].k": qe.KeywordIndexParams(nested="offers", prefix=True),
        "loc": qe.GeoIndexParams(on_disk=True),
        "plain": qe.PayloadSchemaType.Text,
    }
    for field, schema in indexes.items():
        shard.update(qe.UpdateOperation.create_field_index(field, schema))
    shard.flush()
    shard.close()
    return f"qdrant-edge://{path}"


def collection_config(location: str, key: str) -> Any:
    """One part of the collection config the reader of ``location`` gives in its manifest."""
    reader = open_reader(location)
    try:
        return reader.manifest.collection[key]
    finally:
        reader.close()


def payload_schema(location: str) -> dict[str, Any]:
    return collection_config(location, "payload_schema")


def matching(location: str, flt: dict[str, Any]) -> list[Any]:
    return sorted(key for key in dump_stream(location, filter=json.dumps(flt)))


# ------------------------------------------------------------------------ payload indexes


def test_reading_an_edge_shard_gives_its_index_settings_in_rest_shape(tmp_path: Path) -> None:
    assert payload_schema(make_shard(tmp_path / "a")) == SCHEMA


def test_copy_between_edge_shards_keeps_text_and_geo_index_settings(tmp_path: Path) -> None:
    src = make_shard(tmp_path / "a")
    dst = f"qdrant-edge://{tmp_path / 'b'}"
    result = CliRunner().invoke(main, ["copy", src, dst])
    assert result.exit_code == 0, result.output
    assert payload_schema(dst) == SCHEMA
    # the copy's text index keeps case: "Hello World" is not a match for "hello" there either
    assert matching(src, HELLO) == matching(dst, HELLO) == [("int", 2)]
    shard = qe.EdgeShard.load(str(tmp_path / "b"))
    try:
        params = shard.info().payload_schema["txt"].params
        assert (params.lowercase, params.min_token_len, params.max_token_len) == (False, 2, 10)
        assert shard.info().payload_schema["loc"].params.on_disk is True
    finally:
        shard.close()


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_edge_index_settings_go_through_a_file_and_back(tmp_path: Path, suffix: str) -> None:
    src = make_shard(tmp_path / "a")
    archive = tmp_path / f"x.{suffix}"
    vecferry.convert(src, archive)
    assert payload_schema(str(archive)) == SCHEMA
    dst = f"qdrant-edge://{tmp_path / 'b'}"
    report = vecferry.convert(archive, dst)
    assert sorted(report["payload_indexes"]) == sorted(SCHEMA)
    assert report["warnings"] == []
    assert payload_schema(dst) == SCHEMA
    assert matching(dst, HELLO) == [("int", 2)]


def test_index_settings_edge_cannot_hold_are_named_before_writing(tmp_path: Path) -> None:
    src = make_shard(tmp_path / "a")
    archive = tmp_path / "x.jsonl"
    vecferry.convert(src, archive)
    sidecar = Path(f"{archive}.manifest.json")
    manifest = json.loads(sidecar.read_text())
    schema = manifest["collection"]["payload_schema"]
    schema["txt"]["params"].update(tokenizer="klingon", future_knob=3)
    schema["txt_lang"]["params"]["stopwords"] = "elvish"
    schema["shape"] = {"data_type": "hyperbolic"}
    sidecar.write_text(json.dumps(manifest))
    dst = f"qdrant-edge://{tmp_path / 'b'}"
    reader = open_reader(str(archive))
    context = Context()
    writer = open_writer(dst, reader.schema, context=context)
    # named once the writer is open, before any point is written
    assert sorted(context.warnings) == sorted([
        f"{dst}: payload index on 'txt': future_knob 3, tokenizer \"klingon\" not kept: "
        "Qdrant Edge's text index has no such setting, so the index gets Edge's defaults for "
        "them (filters on it may match other points than the source's), as does a copy out "
        "of this shard; give them again with --collection-config '{\"payload_schema\": "
        "...}' when copying it out",
        f"{dst}: payload index on 'txt_lang': stopwords \"elvish\" not kept: Qdrant Edge's "
        "text index has no such setting, so the index gets Edge's defaults for them (filters "
        "on it may match other points than the source's), as does a copy out of this shard; "
        "give them again with --collection-config '{\"payload_schema\": ...}' when copying "
        "it out",
        f"{dst}: payload index on 'shape' not created: Qdrant Edge has no 'hyperbolic' index "
        "(it has keyword, integer, float, bool, geo, text, datetime, uuid), so filters on "
        "'shape' scan every point; give it again with --collection-config "
        "'{\"payload_schema\": ...}' when copying this shard out",
    ])
    try:
        for batch in reader.batches(16):
            writer.write_batch(batch)
        report = writer.close()
    finally:
        reader.close()
    assert sorted(report["payload_indexes"]) == sorted(SCHEMA)
    assert len(context.warnings) == 3  # none again at the end
    got = payload_schema(dst)
    # the rest of each index is kept
    assert got["txt"]["params"] == {**TEXT, "tokenizer": "word"}
    assert got["txt_lang"]["params"] == {k: v for k, v in TEXT_LANG.items()
                                         if k != "stopwords"}


def test_an_index_edge_already_has_is_not_named(tmp_path: Path) -> None:
    src = make_shard(tmp_path / "a")
    archive = tmp_path / "x.jsonl"
    vecferry.convert(src, archive)
    sidecar = Path(f"{archive}.manifest.json")
    manifest = json.loads(sidecar.read_text())
    manifest["collection"]["payload_schema"]["txt"]["params"]["future_knob"] = 3
    sidecar.write_text(json.dumps(manifest))
    # the target has its own "txt" index, which the load leaves as it is
    report = vecferry.convert(archive, src)
    assert report["warnings"] == []
    assert payload_schema(src) == SCHEMA


# ------------------------------------------------------------------------------ metadata


def _local_with_metadata(tmp_path: Path) -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        client.create_collection(
            "docs", vectors_config=models.VectorParams(size=2, distance="Dot"),
            metadata={"owner": "team-a"})
        client.upsert("docs", [models.PointStruct(id=1, vector=[1.0, 2.0], payload={"n": 1})])
    finally:
        client.close()
    return f"qdrant-local://{tmp_path / 'q'}/docs"


METADATA_LOST = ("{dst}: metadata {{\"owner\":\"team-a\"}} not kept: a Qdrant Edge shard keeps "
                 "no collection metadata, so a copy out of this shard has none; give it again "
                 "with --collection-config when copying it out")


@pytest.mark.parametrize("dry_run", [False, True])
def test_metadata_into_edge_is_named(tmp_path: Path, dry_run: bool) -> None:
    src = _local_with_metadata(tmp_path)
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    report = vecferry.convert(src, dst, dry_run=dry_run)
    assert report["warnings"] == [METADATA_LOST.format(dst=dst)]
    # appending to a shard this run did not create says nothing of it
    if not dry_run:
        assert vecferry.convert(src, dst)["warnings"] == []


# ----------------------------------------------------------------------- boolean filters

FLAGS = [{"flag": True}, {"flag": False}, {"flag": 1}, {"flag": 0}, {}, {"flag": [True, False]},
         {"flag": [True]}, {"flag": "true"}, {"flag": None}]


def _local_flags(tmp_path: Path) -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        client.create_collection("docs", vectors_config=models.VectorParams(size=2,
                                                                            distance="Dot"))
        client.upsert("docs", [models.PointStruct(id=i, vector=[1.0, float(i)], payload=p)
                               for i, p in enumerate(FLAGS)])
    finally:
        client.close()
    return f"qdrant-local://{tmp_path / 'q'}/docs"


@pytest.mark.parametrize("indexed", [False, True])
def test_a_boolean_match_on_edge_matches_as_local_mode(tmp_path: Path, indexed: bool) -> None:
    local = _local_flags(tmp_path)
    edge = f"qdrant-edge://{tmp_path / 'e'}"
    vecferry.convert(local, edge)
    if indexed:
        shard = qe.EdgeShard.load(str(tmp_path / "e"))
        shard.update(qe.UpdateOperation.create_field_index("flag", qe.PayloadSchemaType.Bool))
        shard.close()
    for value in (True, False):
        for clause in ("must", "must_not"):
            flt = {clause: [{"key": "flag", "match": {"value": value}}]}
            got = matching(edge, flt)
            assert got == matching(local, flt), flt
            assert 0 < len(got) < len(FLAGS)
    # nested in a should, too, and the integers still match integers only
    either = {"should": [{"key": "flag", "match": {"value": True}},
                         {"key": "flag", "match": {"value": 0}}]}
    assert matching(edge, either) == matching(local, either)
    assert matching(edge, {"must": [{"key": "flag", "match": {"value": True}}]}) == [
        ("int", 0), ("int", 5), ("int", 6)]


@pytest.mark.parametrize("key", ["any", "except"])
def test_booleans_in_any_or_except_are_refused_on_edge(tmp_path: Path, key: str) -> None:
    local = _local_flags(tmp_path)
    edge = f"qdrant-edge://{tmp_path / 'e'}"
    vecferry.convert(local, edge)
    with pytest.raises(UsageError) as err:
        open_reader(edge, filter=json.dumps(
            {"must": [{"key": "flag", "match": {key: [True, False]}}]}))
    assert err.value.message == (
        f"--filter: match {key} takes a list of strings or of integers, not booleans (as in "
        "Qdrant); match a boolean with {\"value\": true} or {\"value\": false}, several with "
        f"\"should\": {{\"{key}\":[true,false]}}")
    # integers alone are still taken, and match integers only
    ints = {"must": [{"key": "flag", "match": {key: [1]}}]}
    assert matching(edge, ints) == matching(local, ints)
    assert (("int", 2) in matching(edge, ints)) is (key == "any")


# ------------------------------------------------------------------------- sparse vectors

SPARSE = {"kw": {"index": {"full_scan_threshold": 500, "on_disk": True}, "modifier": "idf"},
          "kw2": {},
          "kw3": {"index": {"memory": "cached", "datatype": "float16"}}}


def _sparse_shard(path: Path) -> str:
    """A shard made by qdrant-edge, which keeps the sparse settings flat in its config."""
    shard = qe.EdgeShard.create(str(path), qe.EdgeConfig(
        vectors={"d": qe.EdgeVectorParams(size=2, distance=qe.Distance.Dot)},
        sparse_vectors={
            "kw": qe.EdgeSparseVectorParams(full_scan_threshold=500, on_disk=True,
                                            modifier=qe.Modifier.Idf),
            "kw2": qe.EdgeSparseVectorParams(),
            "kw3": qe.EdgeSparseVectorParams(datatype=qe.VectorStorageDatatype.Float16,
                                             memory=qe.Memory.Cached)}))
    shard.update(qe.UpdateOperation.upsert_points([
        qe.Point(i, {"d": [1.0, float(i)], "kw": qe.SparseVector([1, 7 + i], [0.5, 0.25]),
                     "kw3": qe.SparseVector([2], [1.5])}, {"i": i}) for i in range(5)]))
    shard.flush()
    shard.close()
    flat = json.loads((path / "edge_config.json").read_text())["sparse_vectors"]
    assert flat["kw"] == {"full_scan_threshold": 500, "on_disk": True, "modifier": "idf"}
    return f"qdrant-edge://{path}"


def sparse_config(location: str) -> dict[str, Any]:
    return collection_config(location, "sparse_vectors")


def test_sparse_settings_leave_edge_in_qdrant_shape(tmp_path: Path) -> None:
    src = _sparse_shard(tmp_path / "a")
    assert sparse_config(src) == SPARSE
    archive = tmp_path / "x.parquet"
    vecferry.convert(src, archive)
    assert sparse_config(str(archive)) == SPARSE
    # Edge -> Edge, and Parquet -> Edge: the copy's shard holds them as the source's does
    for source, name in ((src, "b"), (str(archive), "c")):
        dst = f"qdrant-edge://{tmp_path / name}"
        report = vecferry.convert(source, dst)
        assert report["warnings"] == []
        assert sparse_config(dst) == SPARSE
        flat = json.loads((tmp_path / name / "edge_config.json").read_text())["sparse_vectors"]
        assert flat == json.loads((tmp_path / "a" / "edge_config.json").read_text()
                                  )["sparse_vectors"]
        assert dump_edge(tmp_path / name) == dump_edge(tmp_path / "a")


def test_sparse_settings_edge_cannot_hold_are_named(tmp_path: Path) -> None:
    src = _sparse_shard(tmp_path / "a")
    archive = tmp_path / "x.jsonl"
    vecferry.convert(src, archive)
    sidecar = Path(f"{archive}.manifest.json")
    manifest = json.loads(sidecar.read_text())
    manifest["collection"]["sparse_vectors"]["kw3"]["index"]["memory"] = "hot"
    for spec in manifest["vectors"]:
        if spec["name"] == "kw3":
            spec["extra"]["index"]["memory"] = "hot"
    sidecar.write_text(json.dumps(manifest))
    dst = f"qdrant-edge://{tmp_path / 'b'}"
    report = vecferry.convert(archive, dst, dry_run=True)
    assert report["warnings"] == [
        f"{dst}: sparse vector 'kw3' index memory \"hot\" not kept: Qdrant Edge has no such "
        "sparse vector setting, so the shard gets Edge's default, and so does a copy out of "
        "it; give them again with --collection-config when copying it out"]
