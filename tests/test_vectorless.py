"""Points without vectors: Qdrant's named vectors are each optional, and a collection may have no
vectors at all. Such points travel through every format that can hold them; the others refuse
before writing, naming what they cannot hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

pytest.importorskip("qdrant_client")

import vecferry
from roundtrip import DATASETS, FORMATS, leftovers
from vecferry.cli import main
from vecferry.errors import RecordError, TargetError, UnsupportedError
from vecferry.verification import verify


def _client_collections(folder):
    """Two collections made by qdrant-client itself, the way a user's application makes them."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    try:
        client.create_collection("tags", vectors_config={})
        client.upsert("tags", [models.PointStruct(id=i, vector={}, payload={"tag": f"t{i}"})
                               for i in range(4)])
        client.create_collection("docs", vectors_config={
            "text": models.VectorParams(size=3, distance="Dot"),
            "image": models.VectorParams(size=2, distance="Euclid")})
        client.upsert("docs", [
            models.PointStruct(id=1, vector={"text": [0.5, 1.0, 2.0]}, payload={"k": 1}),
            models.PointStruct(id=2, vector={"text": [1.0, 0.0, 0.25], "image": [3.0, 4.0]}),
            models.PointStruct(id=3, vector={}, payload={"draft": True}),
        ])
    finally:
        client.close()


def test_collections_made_by_qdrant_client_export_every_point(tmp_path):
    _client_collections(tmp_path / "q")
    for name, expected in [
        ("tags", [{"id": i, "vector": {}, "payload": {"tag": f"t{i}"}} for i in range(4)]),
        ("docs", [{"id": 1, "vector": {"text": [0.5, 1.0, 2.0]}, "payload": {"k": 1}},
                  {"id": 2, "vector": {"text": [1.0, 0.0, 0.25], "image": [3.0, 4.0]}},
                  {"id": 3, "vector": {}, "payload": {"draft": True}}]),
    ]:
        out = tmp_path / f"{name}.jsonl"
        report = vecferry.convert(f"qdrant-local://{tmp_path / 'q'}/{name}", str(out))
        n = len(expected)
        assert (report["read"], report["written"], report["rejected"]) == (n, n, 0)
        assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == expected

        # back into a new collection, whose config keeps the vectors it had (none for tags)
        back = f"qdrant-local://{tmp_path / 'q2'}/{name}"
        vecferry.convert(str(out), back)
        verdict = verify(f"qdrant-local://{tmp_path / 'q'}/{name}", back)
        assert verdict["verdict"] == "identical", verdict

    from qdrant_client import QdrantClient
    client = QdrantClient(path=str(tmp_path / "q2"))
    try:
        assert client.get_collection("tags").config.params.vectors == {}
        assert sorted(client.get_collection("docs").config.params.vectors) == ["image", "text"]
    finally:
        client.close()


def test_inspect_says_a_collection_has_no_vectors(tmp_path):
    _client_collections(tmp_path / "q")
    result = CliRunner().invoke(main, ["inspect", f"qdrant-local://{tmp_path / 'q'}/tags"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "vectors:   none (the points carry ids and payloads only)" in lines
    assert "first ids: 0, 1, 2, 3" in lines
    assert "payload keys (first 4 points): tag (4)" in lines


@pytest.mark.parametrize(("dst", "message"), [
    ("npy", "{out}: the stream has no vectors (its points carry ids and payloads only); the numpy "
            "layout holds vectors (write Parquet or JSONL instead)"),
    ("faiss", "{out}: the stream has no vectors (its points carry ids and payloads only); a FAISS "
              "index holds vectors (convert to Parquet or JSONL instead)"),
    ("qdrant-edge", "{out}: the stream has no vectors (its points carry ids and payloads only); "
                    "a Qdrant Edge shard needs at least one vector (load it into a Qdrant server "
                    "or a qdrant-local:// folder, or write Parquet or JSONL)"),
])
def test_targets_without_room_for_vectorless_points_refuse_before_writing(tmp_path, dst,
                                                                           message):
    fmt = FORMATS[dst]
    if fmt.missing():
        pytest.skip(f"{dst} needs {', '.join(fmt.missing())}")
    src, _ = FORMATS["parquet"].make(DATASETS["no_vectors"](), tmp_path, "src")
    out = fmt.location(tmp_path, "dst")
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(src, out)
    assert str(info.value) == message.format(out=out)
    assert sorted(os.listdir(tmp_path)) == ["src.parquet"]
    assert leftovers(tmp_path) == []


def test_a_line_without_its_vector_key_is_not_taken_for_a_vectorless_point(tmp_path):
    # "vector": {} says a point has none; a line without the key more likely names its vector
    # otherwise ("embedding"), and is refused with the line, id and the key it has instead
    ds = DATASETS["gaps"]()
    src, _ = FORMATS["jsonl"].make(ds, tmp_path, "src")
    path = Path(src)
    lines = path.read_bytes().splitlines()
    lines[2] = json.dumps({"id": 14, "embedding": [1.0, 2.0]}).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "out.parquet"))
    assert str(info.value) == (
        f"{src}, line 3, id 14: point has 'embedding' beside id, vector and payload, which a "
        'point cannot hold (move them into "payload", or read the file as records with a '
        "mapping (--id-key, --vector-key, --payload-key))")
    lines[2] = json.dumps({"id": 14}).encode()  # nothing else: the vector is missing
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "out.parquet"))
    assert str(info.value) == (
        f'{src}, line 3, id 14: point has no vector (give the point its vectors, or "vector": {{}} '
        "for a point that has none; named vectors are each optional)")


def test_foreign_parquet_rows_follow_the_same_rule(tmp_path):
    # named vector columns are each optional; a row of an unnamed vector column is not
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"key": pa.array([5, 6, 7], pa.uint64()),
                             "t": [[1.0, 2.0], None, None], "i": [None, [3.0], None],
                             "title": ["a", "b", "c"]}), src)
    out = tmp_path / "o.jsonl"
    report = vecferry.convert(str(src), str(out), reader_options={
        "id_column": "key", "vector_column": ["text=t", "image=i"]})
    assert (report["written"], report["rejected"]) == (3, 0)
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == [
        {"id": 5, "vector": {"text": [1.0, 2.0]}, "payload": {"title": "a"}},
        {"id": 6, "vector": {"image": [3.0]}, "payload": {"title": "b"}},
        {"id": 7, "vector": {}, "payload": {"title": "c"}}]

    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "u.jsonl"),
                         reader_options={"id_column": "key", "vector_column": ["t"]})
    assert str(info.value) == (f"{src}, row 1, id 6: point has no vector "
                               "(every vector cell is null)")


def test_vectorless_points_are_refused_by_a_collection_with_an_unnamed_vector(tmp_path):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection("u", vectors_config=models.VectorParams(size=3, distance="Dot"))
    client.close()
    src, _ = FORMATS["jsonl"].make(DATASETS["no_vectors"](), tmp_path, "src")
    dst = f"qdrant-local://{tmp_path / 'q'}/u"
    with pytest.raises(TargetError) as info:
        vecferry.convert(src, dst)
    assert str(info.value) == (
        f"{dst}: collection exists with a config the source does not fit:\n  vector (unnamed): "
        "the target needs it on every point, and the source's points have no vectors ("
        "load into another collection, or check the source: without a manifest, sizes come "
        "from its first points; --mode overwrite drops the collection, its points with it, "
        "and creates it anew)")
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        assert client.count("u").count == 0
    finally:
        client.close()
