"""Against a real Qdrant server: runs when ``QDRANT_URL`` (e.g. ``http://localhost:6333``) is
set, skips otherwise. Uses a collection name unique to the run and drops it afterwards."""

from __future__ import annotations

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

    parts = urlsplit(URL or "")
    scheme = "qdrants" if parts.scheme == "https" else "qdrant"
    name = f"vecferry_test_{uuid.uuid4().hex[:8]}"
    port = 6334 if grpc else (parts.port or 6333)
    dst = f"{scheme}://{parts.hostname}:{port}/{name}" + ("?grpc=1" if grpc else "")
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
