"""Shared fixtures, kept generic: the path to the committed samples, a loopback web server."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture
def samples() -> Path:
    """The committed ``sample_data/`` directory (read only: copy a file before changing it)."""
    return SAMPLES


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on loopback (Python's own server: no range requests),
    and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


#: the fake secret the S3 fixtures put in the environment (tests check it is never printed)
S3_SECRET = "fake-secret-value-7c1e2f"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback and fake credentials in the environment."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                  "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(k, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "AKIAVECFERRYTEST")
        mp.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/vecferry-test-aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/vecferry-test-aws-credentials")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def opts(s3_endpoint: str) -> dict[str, Any]:
    """Storage options reaching the moto server."""
    return {"endpoint_url": s3_endpoint}


@pytest.fixture
def s3(opts: dict[str, Any]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(**opts)


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new, empty bucket."""
    import uuid

    name = f"vf-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


def bucket_keys(s3: Any, bucket: str) -> list[str]:
    """Every object key of ``bucket``, fresh (no cached listing), in name order."""
    s3.invalidate_cache()
    return sorted(k[len(bucket) + 1:] for k in s3.find(bucket))


def open_uploads(s3: Any, bucket: str) -> list[Any]:
    """The multipart uploads begun in ``bucket`` and neither completed nor aborted."""
    return s3.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])


@pytest.fixture
def enforce_auth():
    """Make moto check credentials: the fake keys are then unknown, i.e. wrong."""
    from moto import settings

    old = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = old


# -- a stand-in server holding a collection 'docs' (snapshot tests; a module may define its own)


@pytest.fixture(scope="module")
def local_src(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local-mode collection of ``qdrant_helpers.source_points()``."""
    from qdrant_helpers import make_local

    return make_local(tmp_path_factory.mktemp("local") / "q")


@pytest.fixture
def stand(local_src: str) -> Iterator[Any]:
    """The loopback stand-in with ``local_src`` loaded as 'docs', its snapshots padded to
    several download chunks."""
    import vecferry
    from qdrant_standin import QdrantStandIn

    with QdrantStandIn() as server:
        server.snapshot_padding = 200_000
        vecferry.convert(local_src, server.location("docs"))
        yield server
