"""Against a real Qdrant server: runs when ``QDRANT_URL`` (e.g. ``http://localhost:6333``) is
set, skips otherwise. Uses a collection name unique to the run and drops it afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

URL = os.environ.get("QDRANT_URL")
pytestmark = [pytest.mark.server,
              pytest.mark.skipif(not URL, reason="set QDRANT_URL to test a real Qdrant server")]


@pytest.mark.parametrize("grpc", [False, True])
def test_server_round_trip_exact(tmp_path: Path, grpc: bool) -> None:
    import vecferry
    from qdrant_helpers import N, dump_edge, make_local, normalize, source_points

    name = f"vecferry_test_{uuid.uuid4().hex[:8]}"
    dst = _location(name, grpc)
    src = make_local(tmp_path / "src")
    try:
        report = vecferry.convert(src, dst, batch_size=10, writer_options={"bulk": True})
        assert report["points_in_collection"] == N
        vecferry.convert(dst, f"qdrant-edge://{tmp_path / 'back'}",
                         reader_options={"page_size": 7})
        assert dump_edge(tmp_path / "back") == normalize(source_points())
    finally:
        from qdrant_client import QdrantClient

        client = QdrantClient(url=URL, api_key=os.environ.get("QDRANT_API_KEY"))
        client.delete_collection(name)
        client.close()


def _location(name: str, grpc: bool) -> str:
    parts = urlsplit(URL or "")
    scheme = "qdrants" if parts.scheme == "https" else "qdrant"
    port = 6334 if grpc else (parts.port or 6333)
    return f"{scheme}://{parts.hostname}:{port}/{name}" + ("?grpc=1" if grpc else "")


@pytest.mark.parametrize("grpc", [False, True])
def test_server_copy_keeps_shard_keys_strict_mode_and_metadata(grpc: bool) -> None:
    from qdrant_client import QdrantClient, models

    import vecferry
    from qdrant_helpers import DIM, source_points
    from vecferry.verification import verify

    keys = ["en", "de", 7]
    tag = uuid.uuid4().hex[:8]
    src, dst = f"vecferry_test_{tag}_src", f"vecferry_test_{tag}_dst"
    client = QdrantClient(url=URL, api_key=os.environ.get("QDRANT_API_KEY"))
    try:
        try:
            client.create_collection(
                src, vectors_config={"d": models.VectorParams(size=DIM, distance="Dot")},
                sharding_method=models.ShardingMethod.CUSTOM)
            for key in keys:
                client.create_shard_key(src, key)
        except Exception as exc:  # a server without custom sharding in this deployment
            pytest.skip(f"the server takes no custom sharding here: {exc}")
        for i, p in enumerate(source_points()):
            client.upsert(src, [models.PointStruct(id=p["id"],
                                                   vector={"d": p["vector"]["d"].tolist()},
                                                   payload=p["payload"])],
                          shard_key_selector=keys[i % 3])
        client.update_collection(src, metadata={"team": "search"},
                                 strict_mode_config=models.StrictModeConfig(
                                     enabled=True, max_query_limit=50))
        report = vecferry.convert(_location(src, grpc), _location(dst, grpc), workers=1)
        assert sorted(map(str, report["shard_keys"])) == sorted(map(str, keys))
        assert report["strict_mode_applied"] is True
        config = client.get_collection(dst).config
        assert config.params.sharding_method == models.ShardingMethod.CUSTOM
        assert config.metadata == {"team": "search"}
        assert config.strict_mode_config.max_query_limit == 50
        for key in keys:
            assert (client.count(dst, shard_key_selector=key).count
                    == client.count(src, shard_key_selector=key).count > 0)
        result = verify(_location(src, grpc), _location(dst, grpc), queries=0)
        assert result["ok"] and result["verdict"] == "identical"
    finally:
        for name in (src, dst):
            client.delete_collection(name)
        client.close()


def test_server_aliases_collection_config_and_shard_key_option(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    import vecferry
    from qdrant_helpers import make_local

    tag = uuid.uuid4().hex[:8]
    first, second, alias = (f"vecferry_test_{tag}_{s}" for s in ("a", "b", "alias"))
    client = QdrantClient(url=URL, api_key=os.environ.get("QDRANT_API_KEY"))
    src = make_local(tmp_path / "src")
    try:
        report = vecferry.convert(src, _location(first, False), writer_options={
            "collection_config": {"shard_number": 1, "aliases": [alias],
                                  "payload_schema": {"lang": "keyword"}}})
        assert report["aliases"] == [alias] and report["payload_indexes"] == ["lang"]
        info = client.get_collection(first)
        assert info.config.params.shard_number == 1
        assert {a.alias_name for a in client.get_collection_aliases(first).aliases} == {alias}
        try:
            report = vecferry.convert(src, _location(second, False),
                                      writer_options={"shard_key": "acme"})
        except Exception as exc:  # a server without custom sharding in this deployment
            pytest.skip(f"the server takes no custom sharding here: {exc}")
        assert report["shard_keys_created"] == ["acme"]
        assert client.count(second, shard_key_selector="acme").count == report["written"]
    finally:
        with contextlib.suppress(Exception):
            client.update_collection_aliases([models.DeleteAliasOperation(
                delete_alias=models.DeleteAlias(alias_name=alias))])
        for name in (first, second):
            client.delete_collection(name)
        client.close()
