"""``vecferry copy SERVER SERVER``: every collection of one server to another, one after
another, each verified; one that fails does not stop the rest. Between two loopback
stand-ins (``tests/qdrant_standin.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("qdrant_client")

import vecferry
from qdrant_helpers import dump_stream, make_local, normalize, source_points
from qdrant_standin import QdrantStandIn
from vecferry.cli import main


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")


def root(server: QdrantStandIn) -> str:
    return f"qdrant://127.0.0.1:{server.port}"


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # --resume keeps its state files in the working directory
    src = make_local(tmp_path / "src_data")
    with QdrantStandIn() as a, QdrantStandIn() as b:
        vecferry.convert(src, a.location("docs"))
        vecferry.convert(src, a.location("news"), limit=10)
        yield a, b


def test_every_collection_is_copied_and_verified(servers: tuple[QdrantStandIn, ...]) -> None:
    a, b = servers
    result = CliRunner().invoke(main, ["copy", root(a), root(b) + "/", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and sorted(report["collections"]) == ["docs", "news"]
    assert [r["verify"]["verdict"] for r in report["collections"].values()] == ["identical"] * 2
    assert dump_stream(b.location("docs")) == normalize(source_points())
    assert dump_stream(b.location("news")) == dump_stream(a.location("news"))
    assert len(dump_stream(b.location("news"))) == 10
    result = CliRunner().invoke(main, ["copy", root(a), root(b), "--resume"])
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == "2 of 2 collection(s) copied and verified"


def test_one_that_fails_does_not_stop_the_rest(servers: tuple[QdrantStandIn, ...]) -> None:
    a, b = servers
    b.engine.create_collection("docs", vectors_config={})  # no vectors: cannot take them
    result = CliRunner().invoke(main, ["copy", root(a), root(b), "--quiet"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {b.location('docs')}: collection exists with a config "
                               "the source does not fit:")
    assert lines[-1] == ("1 of 2 collection(s) copied and verified; not: docs (run the same "
                         "command again with --resume)")
    assert dump_stream(b.location("news")) == dump_stream(a.location("news"))


def test_two_servers_or_two_collections(servers: tuple[QdrantStandIn, ...],
                                        tmp_path: Path) -> None:
    a, b = servers
    for args, message in [
        ([root(a), b.location("docs")], "copy takes two collections, or two servers (to copy "
         "every collection) (e.g. qdrant://a:6333/docs qdrant://b/docs, or qdrant://a:6333 "
         "qdrant://b)"),
        ([root(a), root(b), "--state", str(tmp_path / "s.json")], "--state names one "
         "collection's state file; a copy of every collection keeps one per collection (drop "
         "--state (--resume works without it))"),
        ([root(a) + "?api_key=x", root(b)], "qdrant://127.0.0.1: an API key does not belong "
         "in the URI (put it in QDRANT_API_KEY or pass --api-key-env NAME)"),
    ]:
        result = CliRunner().invoke(main, ["copy", *args])
        assert (result.exit_code, result.output) == (2, f"error: {message}\n")


def test_an_empty_server_copies_nothing(servers: tuple[QdrantStandIn, ...]) -> None:
    a, b = servers
    result = CliRunner().invoke(main, ["copy", root(b), root(a)])
    assert result.exit_code == 0
    assert result.stderr == f"{root(b)} holds no collections: nothing to copy\n"


def test_a_dry_run_checks_every_collection_and_creates_none(
        servers: tuple[QdrantStandIn, ...]) -> None:
    a, b = servers
    result = CliRunner().invoke(main, ["copy", root(a), root(b), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == "2 of 2 collection(s) checked (dry run)"
    assert "collection 'news' would be created" in result.stderr
    assert b.engine.get_collections().collections == []
    assert not [e for e in b.log if e.op in ("create", "upsert")]


def test_inspect_of_a_server_lists_its_collections(servers: tuple[QdrantStandIn, ...]) -> None:
    from qdrant_client import models

    a, _ = servers
    a.engine.update_collection_aliases([models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name="news", alias_name="latest"))])
    result = CliRunner().invoke(main, ["inspect", root(a)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"server:      {root(a)}",
        "collections: 2",
        "  docs: 37 points; vectors d (dense 8 Dot), mv (multi 3 Euclid), s (sparse)",
        "  news: 10 points; vectors d (dense 8 Dot), mv (multi 3 Euclid), s (sparse); "
        "aliases latest"]
    result = CliRunner().invoke(main, ["inspect", root(a), "--json"])
    listed = json.loads(result.stdout)
    assert [(c["name"], c["points"], c["aliases"]) for c in listed["collections"]] == [
        ("docs", 37, []), ("news", 10, ["latest"])]
