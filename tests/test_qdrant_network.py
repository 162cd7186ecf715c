"""Network faults between vecferry and a Qdrant server, through the loopback stand-in
(``tests/qdrant_standin.py``) in front of a real embedded engine: retries, Retry-After,
halving, fail-fast on 4xx, API keys, and the exact final contents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("qdrant_client")

import vecferry
from qdrant_helpers import N, dump_stream, make_local, normalize, source_points
from qdrant_standin import Fault, QdrantStandIn
from vecferry.errors import TargetError, UsageError
from vecferry.retry import RetryPolicy, classify


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")


@pytest.fixture
def src(tmp_path: Path) -> str:
    return make_local(tmp_path / "src_data")


@pytest.fixture
def server():
    with QdrantStandIn() as s:
        yield s


def upserts(server: QdrantStandIn) -> list:
    return [e for e in server.log if e.op == "upsert"]


def test_transient_faults_are_retried_and_nothing_is_lost(src: str, server: QdrantStandIn
                                                          ) -> None:
    server.add_fault(Fault("upsert", "503", times=2))
    server.add_fault(Fault("upsert", "drop", times=2))
    server.add_fault(Fault("scroll", "503", times=1))
    report = vecferry.convert(src, server.location("docs"), batch_size=10,
                              writer_options={"parallel": 2, "timeout": 5})
    assert report["points_in_collection"] == N
    assert report["retries"] == 4 and report["halvings"] == 0
    outcomes = [e.outcome for e in upserts(server)]
    assert outcomes.count("503") == 2 and outcomes.count("drop") == 2
    assert dump_stream(server.location("docs"), page_size=6) == normalize(source_points())


def test_429_honours_retry_after(src: str, server: QdrantStandIn) -> None:
    server.add_fault(Fault("upsert", "429", times=1, seconds=1))
    report = vecferry.convert(src, server.location("docs"), batch_size=40,
                              writer_options={"parallel": 1})
    assert report["points_in_collection"] == N and report["retries"] == 1
    limited, retried = upserts(server)[:2]
    assert limited.outcome == "429" and retried.outcome == "ok"
    assert retried.at - limited.at >= 1.0


def test_batches_that_keep_timing_out_are_halved(src: str, server: QdrantStandIn) -> None:
    # any request of more than 8 points takes longer than the client waits (qdrant-client
    # rounds timeouts up to whole seconds, so 1 s is the shortest)
    server.add_fault(Fault("upsert", "delay", times=None, seconds=1.3,
                           when=lambda body: len(body["points"]) > 8))
    report = vecferry.convert(src, server.location("docs"), batch_size=10,
                              writer_options={"parallel": 3, "timeout": 1})
    assert report["halvings"] == 3  # three batches of 10, each split once
    assert sorted(e.points for e in upserts(server) if e.outcome == "ok") == [5] * 6 + [7]
    assert dump_stream(server.location("docs")) == normalize(source_points())


def test_a_point_that_always_times_out_is_named(src: str, server: QdrantStandIn) -> None:
    bad = source_points()[7]["id"]
    server.add_fault(Fault("upsert", "delay", times=None, seconds=1.2,
                           when=lambda body: any(p["id"] == bad for p in body["points"])))
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"), batch_size=2,
                         writer_options={"parallel": 1, "timeout": 1, "max_retries": 1})
    text = str(err.value)
    assert "1 point(s) could not be written" in text and f"failed ids: {bad!r}" in text
    # the other point of its request went in: halving isolated the one that fails. (The
    # stand-in, like a server, may still apply a request whose client gave up waiting.)
    stored = {k[1] for k in dump_stream(server.location("docs"))}
    assert 88 in stored  # scroll order pairs 77 with 88 in a request of two
    assert any(e.points == 1 and e.ids == [bad] for e in upserts(server))


def test_4xx_fails_at_once_with_the_server_message(src: str, server: QdrantStandIn) -> None:
    server.add_fault(Fault("upsert", "400", times=None,
                           message="Wrong input: Vector dimension error: expected dim: 8"))
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"), batch_size=10,
                         writer_options={"parallel": 1})
    assert "HTTP 400: Wrong input: Vector dimension error: expected dim: 8" in str(err.value)
    assert "ids 0 .. " in str(err.value) or "ids " in str(err.value)
    assert err.value.hint == (
        "a refusal is not retried: fix what the server names (the collection's config, a "
        "payload or vector of those points), then run the same command with --resume to send "
        "the rest")
    assert len(upserts(server)) == 1


def test_api_key_from_environment_never_shown(src: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with QdrantStandIn(api_key="k3y-s3cr3t") as server:
        monkeypatch.setenv("MY_QDRANT_KEY", "k3y-s3cr3t")
        report = vecferry.convert(src, server.location("docs"),
                                  writer_options={"api_key_env": "MY_QDRANT_KEY"})
        assert report["points_in_collection"] == N
        assert "k3y-s3cr3t" not in repr(report)
        monkeypatch.setenv("QDRANT_API_KEY", "wrong-k3y")
        with pytest.raises(TargetError) as err:
            vecferry.convert(src, server.location("docs"))
        assert "401" in str(err.value) and "k3y" not in str(err.value)
        with pytest.raises(UsageError, match="NOT_SET_VAR"):
            vecferry.convert(src, server.location("docs"),
                             writer_options={"api_key_env": "NOT_SET_VAR"})


def test_two_servers_with_two_keys_each_get_only_their_own(
        src: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from vecferry.cli import main

    monkeypatch.setenv("CLOUD_KEY", "cl0ud-k3y")
    monkeypatch.setenv("HOME_KEY", "h0me-k3y")
    with QdrantStandIn(api_key="cl0ud-k3y") as cloud, QdrantStandIn(api_key="h0me-k3y") as home:
        vecferry.convert(src, cloud.location("docs"), writer_options={"api_key_env": "CLOUD_KEY"})
        result = CliRunner().invoke(main, [
            "copy", cloud.location("docs"), home.location("docs"), "--api-key-env", "CLOUD_KEY",
            "--dst-api-key-env", "HOME_KEY", "--quiet"])
        assert result.exit_code == 0, result.output
        assert "k3y" not in result.output
        assert cloud.keys_seen == {"cl0ud-k3y"} and home.keys_seen == {"h0me-k3y"}
        assert dump_stream(home.location("docs"), api_key_env="HOME_KEY") == normalize(
            source_points())
        result = CliRunner().invoke(main, [
            "verify", cloud.location("docs"), home.location("docs"), "--api-key-env",
            "CLOUD_KEY", "--dst-api-key-env", "HOME_KEY", "--quiet"])
        assert result.exit_code == 0, result.output
        assert cloud.keys_seen == {"cl0ud-k3y"} and home.keys_seen == {"h0me-k3y"}
        # one key for both: the target refuses it, and says so without showing it
        result = CliRunner().invoke(main, [
            "copy", cloud.location("docs"), home.location("again"), "--api-key-env",
            "CLOUD_KEY", "--quiet"])
        assert result.exit_code == 1
        assert result.output == (
            f"error: {home.location('again')}: checking the collection: HTTP 401: Must provide "
            "an API key (the server did not take the key in CLOUD_KEY: check that it is this "
            "server's key; it goes in QDRANT_API_KEY, or in the variable named with "
            "--api-key-env NAME (--dst-api-key-env NAME for the target's own key, when the "
            "source is a Qdrant server with another))\n")


def test_bulk_switches_hnsw_off_and_restores_it(src: str, server: QdrantStandIn) -> None:
    report = vecferry.convert(src, server.location("docs"), writer_options={"bulk": True})
    assert report["points_in_collection"] == N
    assert server.hnsw_updates == [0, 16]


def test_payload_indexes_and_config_travel_server_to_server(src: str, server: QdrantStandIn,
                                                            tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    vecferry.convert(src, server.location("a"))
    client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
    client.create_payload_index("a", "lang", "keyword")
    client.create_payload_index("a", "i", {"type": "integer", "lookup": True, "range": False})
    # a strict mode whose limits would refuse the load's own requests if set first
    strict = models.StrictModeConfig(enabled=True, upsert_max_batchsize=1, max_query_limit=50)
    client.update_collection("a", metadata={"team": "search", "v": 2},
                             strict_mode_config=strict)
    client.close()
    report = vecferry.convert(server.location("a"), server.location("b"),
                              reader_options={"page_size": 5}, batch_size=10)
    assert sorted(report["payload_indexes"]) == ["i", "lang"]
    assert server.indexes["b"]["i"]["params"]["range"] is False
    assert dump_stream(server.location("b")) == normalize(source_points())
    client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
    config = client.get_collection("b").config
    client.close()
    assert config.metadata == {"team": "search", "v": 2}
    assert report["strict_mode_applied"] is True
    assert (config.strict_mode_config.enabled, config.strict_mode_config.upsert_max_batchsize,
            config.strict_mode_config.max_query_limit) == (True, 1, 50)
    # set after the last upsert, in one update
    last_upsert = max(i for i, e in enumerate(server.log) if e.op == "upsert")
    updates = [i for i, e in enumerate(server.log) if e.op == "update"]
    assert server.strict_mode_updates == ["a", "b"] and updates[-1] > last_upsert
    # an existing collection keeps a strict mode of its own; local mode is told it has none
    report = vecferry.convert(server.location("a"), server.location("b"),
                              writer_options={"mode": "append"})
    assert "strict_mode_applied" not in report and server.strict_mode_updates == ["a", "b"]
    local = f"qdrant-local://{tmp_path / 'local'}/docs"
    report = vecferry.convert(server.location("a"), local)
    assert report["strict_mode_applied"] is False
    assert "strict mode not kept: local mode enforces none" in report["warnings"]
    client = QdrantClient(path=str(tmp_path / "local"))
    assert client.get_collection("docs").config.metadata == {"team": "search", "v": 2}
    client.close()


def test_aliases_travel_to_a_new_collection_and_taken_ones_stay(src: str, server: QdrantStandIn,
                                                                tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    vecferry.convert(src, server.location("a"))
    client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
    client.update_collection_aliases([
        models.CreateAliasOperation(create_alias=models.CreateAlias(
            collection_name="a", alias_name=alias)) for alias in ("prod", "latest", "c")])
    client.close()
    with QdrantStandIn() as other:
        other.engine.create_collection("c", vectors_config={})  # no alias may take its name
        report = vecferry.convert(server.location("a"), other.location("b"))
        assert report["aliases"] == ["latest", "prod"]
        assert report["warnings"] == [
            "alias 'c' not created: creating alias 'c': HTTP 400: Wrong input: Collection c "
            "already exists"]
        owners = {a.alias_name: a.collection_name for a in other.engine.get_aliases().aliases}
        assert owners == {"latest": "b", "prod": "b"}
        # a later append to the collection leaves aliases alone
        report = vecferry.convert(server.location("a"), other.location("b"))
        assert "aliases" not in report and report["warnings"] == []
    # on the source's own server the aliases name the source: they stay there
    report = vecferry.convert(server.location("a"), server.location("copy"))
    assert report["aliases"] == []
    assert report["warnings"] == [
        f"alias {alias!r} names collection 'a' on the target and is left as it is (point it "
        "at 'copy' when you switch over: POST /collections/aliases)"
        for alias in ("c", "latest", "prod")]
    assert {a.alias_name: a.collection_name for a in server.engine.get_aliases().aliases} == {
        "prod": "a", "latest": "a", "c": "a"}
    local = f"qdrant-local://{tmp_path / 'local'}/docs"
    assert vecferry.convert(server.location("a"), local)["aliases"] == ["c", "latest", "prod"]
    client = QdrantClient(path=str(tmp_path / "local"))
    assert client.get_collection_aliases("docs").aliases[0].alias_name == "c"
    client.close()
    if importlib.util.find_spec("qdrant_edge") is not None:
        report = vecferry.convert(server.location("a"), f"qdrant-edge://{tmp_path / 'edge'}")
        assert report["aliases"] == [] and report["warnings"] == [
            "aliases 'c', 'latest', 'prod' not kept: a Qdrant Edge shard has "
            "no aliases"]


def test_retry_policy_backoff_is_full_jitter_and_capped() -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=3.0, sleep=waits.append)
    calls = []

    def flaky():
        calls.append(1)
        raise ConnectionResetError("reset")

    with pytest.raises(Exception, match="after 4 attempt"):
        policy.call(flaky)
    assert len(calls) == 4 and len(waits) == 3
    assert 0 <= waits[0] <= 1 and 0 <= waits[1] <= 2 and 0 <= waits[2] <= 3
    assert policy.delay(0, retry_after=7) == 3.0  # Retry-After honoured up to the cap
    assert classify(ValueError("x")) is None


def test_a_server_that_stays_unavailable_is_named_after_the_retries(
        src: str, server: QdrantStandIn, tmp_path: Path) -> None:
    # the collection is first asked for by the writer (does it exist?) and by the reader
    # (its config); a server that answers 503 every time ends the run with vecferry's error
    server.add_fault(Fault("exists", "503", times=None))
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"), writer_options={"max_retries": 2})
    kept_failing = ("the server kept failing: check its health and logs, then run again; "
                    "--max-retries N keeps trying longer")
    assert str(err.value) == (f"{server.location('docs')}: checking the collection failed after "
                              "3 attempt(s): HTTP 503: Service Unavailable (stand-in) "
                              f"({kept_failing})")
    server.faults.clear()
    vecferry.convert(src, server.location("docs"))
    server.add_fault(Fault("get", "503", times=None))
    with pytest.raises(TargetError) as err:
        vecferry.convert(server.location("docs"), str(tmp_path / "o.parquet"),
                         reader_options={"max_retries": 2})
    assert str(err.value) == (f"{server.location('docs')}: reading the collection config failed "
                              "after 3 attempt(s): HTTP 503: Service Unavailable (stand-in) "
                              f"({kept_failing})")


def test_bulk_says_when_it_cannot_switch_indexing_back_on(src: str, server: QdrantStandIn,
                                                          tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the state file goes to the working directory
    # the server takes m=0 but keeps refusing m=16: the points are in, the index is not
    server.add_fault(Fault("update", "503", times=None,
                           when=lambda body: (body.get("hnsw_config") or {}).get("m") == 16))
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"), resume=True,
                         writer_options={"bulk": True, "max_retries": 1})
    message = str(err.value)
    assert message.startswith(f"{server.location('docs')}: the points are written, but "
                              "restoring HNSW indexing failed: ")
    assert message.endswith(
        "(HNSW indexing of collection 'docs' is still off (m=0, set by --bulk) and switching "
        "it back to m=16 failed, so searches scan every point: set it with PATCH "
        '/collections/docs {"hnsw_config": {"m": 16}}, or run again with --resume --bulk if '
        "this run had --resume)")
    assert server.hnsw_m["docs"] == 0
    assert dump_stream(server.location("docs")) == normalize(source_points())

    # the same command again, the server answering again: indexing comes back
    server.faults.clear()
    report = vecferry.convert(src, server.location("docs"), resume=True,
                              writer_options={"bulk": True})
    assert report["points_in_collection"] == N and report["warnings"] == []
    # every point was acknowledged before closing failed: none is sent again
    assert (report["resumed_from"], report["written"]) == (N, 0)
    assert server.hnsw_m["docs"] == 16


def test_bulk_on_a_collection_kept_at_m0_leaves_it_so(src: str, server: QdrantStandIn) -> None:
    # m=0 is also a deliberate setting (multitenancy indexes per tenant with payload_m)
    from qdrant_client import QdrantClient, models

    vecferry.convert(src, server.location("docs"), limit=5)
    client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
    client.update_collection("docs", hnsw_config=models.HnswConfigDiff(m=0, payload_m=16))
    client.close()
    server.hnsw_updates.clear()
    report = vecferry.convert(src, server.location("docs"), writer_options={"bulk": True})
    assert report["points_in_collection"] == N
    assert server.hnsw_updates == [] and server.hnsw_m["docs"] == 0
    assert report["warnings"] == [
        f"{server.location('docs')}: HNSW m is already 0, so --bulk leaves indexing as it is "
        "and does not switch it on afterwards"]


def test_an_interrupted_bulk_load_says_indexing_is_still_off(src: str, server: QdrantStandIn,
                                                             monkeypatch) -> None:
    from click.testing import CliRunner

    from vecferry.cli import main
    from vecferry.converters.qdrant import QdrantWriter

    def ctrl_c(self):
        raise KeyboardInterrupt

    # Ctrl-C while the last requests finish, and the server refusing m=16 for a while
    monkeypatch.setattr(QdrantWriter, "_drain", ctrl_c)
    server.add_fault(Fault("update", "503", times=None,
                           when=lambda body: (body.get("hnsw_config") or {}).get("m") == 16))
    result = CliRunner().invoke(main, ["convert", src, server.location("docs"), "--bulk",
                                       "--max-retries", "0", "--quiet"])
    assert result.exit_code == 130
    assert result.stderr.splitlines()[1] == (
        "warning: HNSW indexing of collection 'docs' is still off (m=0, set by --bulk) and "
        "switching it back to m=16 failed, so searches scan every point: set it with PATCH "
        '/collections/docs {"hnsw_config": {"m": 16}}, or run again with --resume --bulk if '
        "this run had --resume")
    assert server.hnsw_m["docs"] == 0


def test_a_resumed_bulk_load_restores_the_m_the_collection_had(src: str, server: QdrantStandIn,
                                                                tmp_path: Path,
                                                                monkeypatch) -> None:
    # the run that switched m off died before restoring it (its state recorded m=32): the
    # resumed run restores 32, not Qdrant's default 16
    from qdrant_client import QdrantClient, models

    monkeypatch.chdir(tmp_path)
    client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
    vecferry.convert(src, server.location("docs"), limit=3)
    client.update_collection("docs", hnsw_config=models.HnswConfigDiff(m=32))
    client.close()
    server.add_fault(Fault("update", "503", times=None,
                           when=lambda body: (body.get("hnsw_config") or {}).get("m") == 32))
    with pytest.raises(TargetError):
        vecferry.convert(src, server.location("docs"), resume=True,
                         writer_options={"bulk": True, "max_retries": 0})
    assert server.hnsw_m["docs"] == 0
    server.faults.clear()
    vecferry.convert(src, server.location("docs"), resume=True, writer_options={"bulk": True})
    assert server.hnsw_m["docs"] == 32


def test_a_resumed_run_restores_recorded_m_even_without_bulk_and_keeps_a_chosen_m0(
        src: str, server: QdrantStandIn, tmp_path: Path, monkeypatch) -> None:
    from qdrant_client import QdrantClient, models

    monkeypatch.chdir(tmp_path)
    # a --bulk run that died before restoring m=16 (its state recorded it); the run resumed
    # without --bulk restores it all the same
    server.add_fault(Fault("update", "503", times=None,
                           when=lambda body: (body.get("hnsw_config") or {}).get("m") == 16))
    with pytest.raises(TargetError):
        vecferry.convert(src, server.location("docs"), resume=True,
                         writer_options={"bulk": True, "max_retries": 0})
    assert server.hnsw_m["docs"] == 0
    server.faults.clear()
    vecferry.convert(src, server.location("docs"), resume=True)
    assert server.hnsw_m["docs"] == 16

    # a collection kept at m=0 on purpose: --bulk --resume runs record no m, and leave it
    vecferry.convert(src, server.location("tenants"), limit=3)
    client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
    client.update_collection("tenants", hnsw_config=models.HnswConfigDiff(m=0, payload_m=16))
    client.close()
    server.hnsw_updates.clear()
    for _ in range(2):
        vecferry.convert(src, server.location("tenants"), resume=True,
                         writer_options={"bulk": True})
    assert server.hnsw_updates == [] and server.hnsw_m["tenants"] == 0


def test_a_repeated_id_keeps_its_last_record_with_requests_in_flight(
        tmp_path: Path, server: QdrantStandIn) -> None:
    """With several requests in flight, a later request holding an id must not overtake an
    earlier one holding it: the server would keep the earlier record. The request with the
    first record is slowed (well within the timeout) so that, unguarded, the second lands first.
    """
    import json

    lines = [{"id": i, "vector": [float(i), 1.0], "payload": {"n": i}} for i in range(40)]
    lines[25] = {"id": 3, "vector": [3.0, 2.0], "payload": {"n": "last"}}
    src = tmp_path / "dup.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in lines))
    server.add_fault(Fault("upsert", "delay", times=1, seconds=1.5,
                           when=lambda body: any(p["id"] == 3 for p in body["points"])))
    report = vecferry.convert(str(src), server.location("docs"), batch_size=10,
                              writer_options={"parallel": 4, "timeout": 10})
    assert report["points_in_collection"] == 39
    assert report["duplicate_ids"]["count"] == 1
    stored = dump_stream(server.location("docs"))
    assert json.loads(stored[("int", 3)][1]) == {"n": "last"}


def test_tls_to_a_plain_http_port_fails_at_once_naming_the_scheme():
    """qdrants:// against a server speaking plain HTTP failed the same way seven times over
    (the retries) before it said so, as a bare SSL error."""
    import http.server
    import threading

    connections = []

    class Plain(http.server.BaseHTTPRequestHandler):
        def setup(self) -> None:
            connections.append(1)
            super().setup()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    location = f"qdrants://127.0.0.1:{server.server_address[1]}/docs"
    try:
        with pytest.raises(TargetError) as info:
            vecferry.open_reader(location, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert str(info.value) == (
        f"{location}: checking the collection: TLS handshake failed: the server does not "
        "speak TLS there (is it plain HTTP? use qdrant:// instead of qdrants://) "
        "(WRONG_VERSION_NUMBER)")
    assert len(connections) == 1
