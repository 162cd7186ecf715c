"""Network review fixes on the Qdrant server path, through the loopback stand-in
(``tests/qdrant_standin.py``) in front of a real embedded engine: a late unanswered upsert
and repeated ids, Retry-After as a date or a fraction, a create whose answer is lost, the
resume state's count with requests in flight, keys in URIs, and the hints of refusals."""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("qdrant_client")

import vecferry
from qdrant_standin import Fault, QdrantStandIn
from vecferry.converters.qdrant import collection_names, parse_location, server_root
from vecferry.errors import TargetError, UsageError
from vecferry.retry import classify, parse_retry_after

WRITER_401_OPTION = ("--api-key-env NAME (--dst-api-key-env NAME for the target's own key, "
                     "when the source is a Qdrant server with another)")
CREATE_HINT = ("the server refused the collection's settings: fix what it names; "
               "--collection-config changes the settings of a collection vecferry creates "
               "(--dry-run shows them), or create it yourself and load into it")
TOO_LARGE_HINT = ("a request was larger than the server takes: lower --batch-bytes (default "
                  "8 MiB) or --batch-size, then run the same command with --resume to send "
                  "the rest")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)


@pytest.fixture
def server():
    with QdrantStandIn() as s:
        yield s


def point(pid: int, scale: float = 1.0, payload: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    return {"id": pid, "vector": [scale * (pid + 1), 0.5, -1.0, 2.0],
            "payload": payload if payload is not None else {"i": pid}}


def write_jsonl(path: Path, points: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(p) + "\n" for p in points))
    return str(path)


def last_records(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last: dict[Any, dict[str, Any]] = {}
    for p in points:
        last[p["id"]] = p
    return list(last.values())


def stored(server: QdrantStandIn, name: str = "docs") -> dict[Any, tuple[Any, Any]]:
    records, _ = server.engine.scroll(name, limit=10_000, with_payload=True, with_vectors=True)
    return {r.id: (r.payload, [round(x, 4) for x in r.vector]) for r in records}


def expected(points: list[dict[str, Any]]) -> dict[Any, tuple[Any, Any]]:
    return {p["id"]: (p["payload"], [round(float(x), 4) for x in p["vector"]])
            for p in last_records(points)}


def upserts(server: QdrantStandIn) -> list:
    return [e for e in server.log if e.op == "upsert"]


# ------------------------------------------------- A: a late upsert and a repeated id


@pytest.mark.parametrize("parallel", [1, 3])
def test_a_late_unanswered_upsert_does_not_undo_a_repeated_ids_last_record(
        server: QdrantStandIn, tmp_path: Path, parallel: int) -> None:
    # id 5 comes twice; the request holding its first record times out at the client, and
    # the server carries it out 1.6 s after it arrived, after the later record went in
    points = [point(i) for i in range(40)]
    points.insert(30, point(5, scale=3.0, payload={"newer": True}))
    src = write_jsonl(tmp_path / "dup.jsonl", points)
    server.add_fault(Fault("upsert", "delay", times=1, seconds=1.6,
                           when=lambda body: any(p["id"] == 5 for p in body["points"])))
    report = vecferry.convert(src, server.location("docs"), batch_size=10,
                              writer_options={"distance": "Dot", "timeout": 1,
                                              "parallel": parallel})
    late = next(e for e in server.log if e.outcome == "delay")
    time.sleep(max(0.0, late.at + 1.9 - time.monotonic()))  # the late upsert has landed
    assert report["resent_after_no_answer"] == 1
    assert report["duplicate_ids"]["count"] == 1
    assert stored(server) == expected(points)
    assert server.engine.retrieve("docs", [5])[0].payload == {"newer": True}


def test_an_unanswered_upsert_without_repeated_ids_sends_nothing_again(
        server: QdrantStandIn, tmp_path: Path) -> None:
    points = [point(i) for i in range(40)]
    src = write_jsonl(tmp_path / "once.jsonl", points)
    server.add_fault(Fault("upsert", "lose", times=1))
    report = vecferry.convert(src, server.location("docs"), batch_size=10,
                              writer_options={"distance": "Dot", "parallel": 2})
    assert "resent_after_no_answer" not in report
    assert [e.outcome for e in upserts(server)].count("lose") == 1
    assert len(upserts(server)) == 5  # four batches, one of them twice
    assert stored(server) == expected(points)


# ---------------------------------------------- B1: Retry-After as a date or a fraction


def test_retry_after_values_qdrant_client_cannot_read_are_read_here() -> None:
    now = time.time()
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 20, usegmt=True), now=now) == \
        pytest.approx(20, abs=1)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after("nan") is None
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse

    with pytest.raises(Exception) as err:
        ResourceExhaustedResponse("slow down", "1.5")  # what qdrant-client does with it
    failure = classify(err.value)
    assert failure is not None and failure.transient and failure.status == 429
    assert failure.retry_after == 1.5
    assert failure.message == "HTTP 429: rate limited (Retry-After: 1.5)"


@pytest.mark.parametrize(("op", "header"), [
    ("upsert", "1.5"), ("create", "date"), ("scroll", "1.5"), ("get", "date"),
    ("list", "1.5")])
def test_a_429_with_a_date_or_fraction_is_waited_out_on_every_request(
        server: QdrantStandIn, tmp_path: Path, op: str, header: str) -> None:
    points = [point(i) for i in range(30)]
    src = write_jsonl(tmp_path / "s.jsonl", points)
    if op in ("scroll", "get", "list"):
        vecferry.convert(src, server.location("docs"), writer_options={"distance": "Dot"})
    value = (email.utils.formatdate(time.time() + 3, usegmt=True) if header == "date"
             else header)
    server.add_fault(Fault(op, "429", times=1, retry_after=value))
    if op == "list":
        assert collection_names(f"qdrant://127.0.0.1:{server.port}") == ["docs"]
    elif op in ("scroll", "get"):
        out = tmp_path / "out.jsonl"
        report = vecferry.convert(server.location("docs"), str(out))
        assert report["written"] == 30
    else:
        report = vecferry.convert(src, server.location("docs"), batch_size=10,
                                  writer_options={"distance": "Dot", "parallel": 1})
        assert stored(server) == expected(points)
    entries = [e for e in server.log if e.op == op]
    limited = next(i for i, e in enumerate(entries) if e.outcome == "429")
    waited = entries[limited + 1].at - entries[limited].at
    # an HTTP date has whole seconds: 3 s ahead is at least 2 s ahead
    assert waited >= (1.5 if header == "1.5" else 1.0)


# ------------------------------------------------ B2: a create whose answer is lost


def keyed_source(server: QdrantStandIn, tmp_path: Path) -> list[dict[str, Any]]:
    """A collection ``docs`` on ``server`` with a payload index, an alias and a strict mode."""
    from qdrant_client import QdrantClient, models

    points = [point(i) for i in range(25)]
    vecferry.convert(write_jsonl(tmp_path / "k.jsonl", points), server.location("docs"),
                     writer_options={"distance": "Dot"})
    client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
    try:
        client.create_payload_index("docs", "i", "integer")
        client.update_collection_aliases([models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="docs", alias_name="prod"))])
        client.update_collection("docs", strict_mode_config=models.StrictModeConfig(
            enabled=True, max_query_limit=50))
    finally:
        client.close()
    return points


@pytest.mark.parametrize("fault", [Fault("create", "lose"),
                                   Fault("create", "delay", seconds=1.3)])
def test_a_create_whose_answer_is_lost_is_this_runs_collection(
        tmp_path: Path, fault: Fault) -> None:
    with QdrantStandIn() as a, QdrantStandIn() as b:
        points = keyed_source(a, tmp_path)
        b.add_fault(fault)
        report = vecferry.convert(a.location("docs"), b.location("docs"),
                                  writer_options={"timeout": 1})
        time.sleep(0.5)  # a late create, if any, has been refused by now
        assert report["created"] is True
        assert report["aliases"] == ["prod"] and report["strict_mode_applied"] is True
        assert report["payload_indexes"] == ["i"]
        assert [e.op for e in b.log].count("create") == 2
        assert b.strict_mode["docs"]["max_query_limit"] == 50
        assert [a_.alias_name for a_ in b.engine.get_aliases().aliases] == ["prod"]
        assert stored(b) == expected(points)


def test_a_lost_create_that_finds_another_config_is_refused(
        server: QdrantStandIn, tmp_path: Path) -> None:
    from qdrant_client import models

    def meanwhile(body: dict[str, Any]) -> bool:
        # another process creates the collection, with other vectors, while this run's
        # request is lost on the way
        server.engine.create_collection("docs", vectors_config=models.VectorParams(
            size=3, distance="Cosine"))
        return True

    server.add_fault(Fault("create", "drop", when=meanwhile))
    src = write_jsonl(tmp_path / "s.jsonl", [point(i) for i in range(5)])
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"), writer_options={"distance": "Dot"})
    assert err.value.message == (
        "creating the collection: the answer to this run's request was lost, and retrying it "
        "found the collection made, but with a config the source does not fit (another "
        "process created it meanwhile?):\n  vector (unnamed): size 3 in the target, 4 in the "
        "source\n  vector (unnamed): distance Cosine in the target, Dot in the source")
    assert err.value.hint == ("load into another collection, or drop this one (--mode "
                              "overwrite drops it, its points with it) to create it anew")


def test_a_refused_create_says_what_to_do(server: QdrantStandIn, tmp_path: Path) -> None:
    server.add_fault(Fault("create", "400", message="Wrong input: injected refusal"))
    src = write_jsonl(tmp_path / "s.jsonl", [point(i) for i in range(5)])
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"), writer_options={"distance": "Dot"})
    assert err.value.message == "creating the collection: HTTP 400: Wrong input: injected refusal"
    assert err.value.hint == CREATE_HINT


# ------------------------------------- C1: the state counts acknowledged points only


def test_the_state_counts_only_the_points_acknowledged_with_requests_in_flight(
        server: QdrantStandIn, tmp_path: Path) -> None:
    points = [point(i) for i in range(100)]
    # the fourth batch repeats an id of each of the first two, so it goes once they are
    # acknowledged (a request waits for earlier ones holding its ids)
    points[30] = point(5, scale=2.0, payload={"again": 5})
    points[31] = point(15, scale=2.0, payload={"again": 15})
    src = write_jsonl(tmp_path / "s.jsonl", points)
    state = tmp_path / "state.json"
    # the third batch is slow (no timeout), the fourth refused: the run stops with the
    # third in flight, so only the first two are acknowledged
    server.add_fault(Fault("upsert", "delay", seconds=1.0,
                           when=lambda body: any(p["id"] == 25 for p in body["points"])))
    server.add_fault(Fault("upsert", "400",
                           when=lambda body: any(p["id"] == 35 for p in body["points"])))
    options = {"distance": "Dot", "parallel": 4}
    with pytest.raises(TargetError):
        vecferry.convert(src, server.location("docs"), batch_size=10, state=str(state),
                         resume=True, writer_options=options)
    saved = json.loads(state.read_text())
    # the refusal is seen while the third batch is in flight, or once it is acknowledged
    # (closing waits for it); by then the fourth batch at least was handed to the writer
    assert saved["position"] in (20, 30) and not saved["done"]
    assert saved["written"] == saved["position"]
    server.faults.clear()
    report = vecferry.convert(src, server.location("docs"), batch_size=10, state=str(state),
                              resume=True, writer_options=options)
    assert report["resumed_from"] == saved["position"]
    assert report["written"] == 100 - saved["position"] and report["written_total"] == 100
    assert json.loads(state.read_text())["written"] == 100
    assert stored(server) == expected(points)


# --------------------------------------------------------------- C2: keys in the URI


@pytest.mark.parametrize(("uri", "shown", "names"), [
    ("qdrant://127.0.0.1:1/docs?foo=S3CRET", "qdrant://127.0.0.1:1/docs?foo=***", "foo"),
    ("qdrants://127.0.0.1:1/docs?S3CRET", "qdrants://127.0.0.1:1/docs?***", "***"),
    ("qdrant://127.0.0.1:1/docs?grpc=1&x=S3CRET#S3CRET",
     "qdrant://127.0.0.1:1/docs?grpc=1&x=***#***", "x"),
])
def test_an_unknown_query_parameter_is_named_without_its_value(
        uri: str, shown: str, names: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_location(uri)
    assert str(err.value) == (
        f"{shown}: unknown URI parameter(s): {names} (the only one is ?grpc=1; an API key goes "
        "in QDRANT_API_KEY or the variable --api-key-env NAME names)")


@pytest.mark.parametrize("query", ["token=S3CRET", "access_token=S3CRET", "api-token=S3CRET",
                                   "apiKey=S3CRET"])
def test_a_key_like_query_parameter_is_taken_for_a_key(query: str) -> None:
    for uri in (f"qdrant://127.0.0.1:1/docs?{query}", f"qdrant://127.0.0.1:1/?{query}"):
        with pytest.raises(UsageError) as err:
            server_root(uri) if "/?" in uri else parse_location(uri)
        assert str(err.value) == ("qdrant://127.0.0.1: an API key does not belong in the URI "
                                  "(put it in QDRANT_API_KEY or pass --api-key-env NAME)")


def test_a_servers_root_with_an_unknown_parameter_is_named_as_given() -> None:
    with pytest.raises(UsageError) as err:
        server_root("qdrant://127.0.0.1:1/?x=S3CRET")
    assert err.value.location.source == "qdrant://127.0.0.1:1/?x=***"


@pytest.mark.parametrize("command", ["convert", "inspect", "copy", "verify"])
def test_no_command_shows_a_key_in_the_query(tmp_path: Path, command: str) -> None:
    from click.testing import CliRunner

    from vecferry.cli import main

    src = write_jsonl(tmp_path / "s.jsonl", [point(i) for i in range(3)])
    for uri in ("qdrant://127.0.0.1:1/docs?sig=S3CRET", "qdrants://127.0.0.1:1/docs?S3CRET",
                "qdrant://127.0.0.1:1/?sig=S3CRET"):
        args = {"convert": ["convert", src, uri, "--json"], "inspect": ["inspect", uri],
                "copy": ["copy", uri, f"qdrant-local://{tmp_path}/x/docs", "--json"],
                "verify": ["verify", src, uri]}[command]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "S3CRET" not in result.output and "***" in result.output


# ------------------------------------------------- C3, C4, C6: what a refusal says


@pytest.mark.parametrize("fault", [
    Fault("upsert", "413"),
    Fault("upsert", "400", message="Payload error: JSON payload (40000000 bytes) is larger "
                                   "than allowed (limit: 33554432 bytes).")])
def test_a_request_too_large_says_to_lower_the_batch(
        server: QdrantStandIn, tmp_path: Path, fault: Fault) -> None:
    server.add_fault(fault)
    src = write_jsonl(tmp_path / "s.jsonl", [point(i) for i in range(5)])
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"), writer_options={"distance": "Dot"})
    assert err.value.message == "Qdrant refused 5 point(s) (ids 0 .. 4): " + (
        "HTTP 413: 413 Request Entity Too Large" if fault.kind == "413" else
        "HTTP 400: Payload error: JSON payload (40000000 bytes) is larger than allowed "
        "(limit: 33554432 bytes).")
    assert err.value.hint == TOO_LARGE_HINT


def test_a_missing_or_refused_key_names_the_variable_and_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_jsonl(tmp_path / "s.jsonl", [point(i) for i in range(5)])
    with QdrantStandIn(api_key="r1ght") as server:
        with pytest.raises(TargetError) as err:
            vecferry.convert(src, server.location("docs"), writer_options={"distance": "Dot"})
        assert str(err.value) == (
            f"{server.location('docs')}: checking the collection: HTTP 401: Must provide an "
            "API key (no API key was sent: put this server's key in QDRANT_API_KEY, or name "
            f"the variable that holds it with {WRITER_401_OPTION})")
        monkeypatch.setenv("HOME_KEY", "wr0ng")
        with pytest.raises(TargetError) as err:
            vecferry.convert(src, server.location("docs"),
                             writer_options={"distance": "Dot", "api_key_env": "HOME_KEY"})
        assert err.value.hint == (
            "the server did not take the key in HOME_KEY: check that it is this server's key; "
            f"it goes in QDRANT_API_KEY, or in the variable named with {WRITER_401_OPTION}")
        assert "wr0ng" not in str(err.value)
        # the source's side names only the source's option
        monkeypatch.setenv("QDRANT_API_KEY", "r1ght")
        vecferry.convert(src, server.location("docs"), writer_options={"distance": "Dot"})
        monkeypatch.setenv("QDRANT_API_KEY", "wr0ng")
        with pytest.raises(TargetError) as err:
            vecferry.convert(server.location("docs"), str(tmp_path / "o.jsonl"))
        assert err.value.hint == (
            "the server did not take the key in QDRANT_API_KEY: check that it is this "
            "server's key; it goes in QDRANT_API_KEY, or in the variable named with "
            "--api-key-env NAME")
        monkeypatch.setenv("QDRANT_API_KEY", "r1ght")
        server.add_fault(Fault("upsert", "403", message="Forbidden: read-only access"))
        with pytest.raises(TargetError) as err:
            vecferry.convert(src, server.location("docs"), writer_options={"distance": "Dot"})
        assert err.value.message == ("Qdrant refused 5 point(s) (ids 0 .. 4): HTTP 403: "
                                     "Forbidden: read-only access")
        assert err.value.hint == (
            "the key in QDRANT_API_KEY may not do this (a read-only or collection-scoped "
            "key?): give a key with write access to this collection, in QDRANT_API_KEY or the "
            f"variable named with {WRITER_401_OPTION}")


def test_a_listing_refused_for_want_of_a_key_says_so() -> None:
    with QdrantStandIn(api_key="r1ght") as server:
        root = f"qdrant://127.0.0.1:{server.port}"
        with pytest.raises(TargetError) as err:
            collection_names(root)
        assert str(err.value) == (
            f"{root}: listing collections: HTTP 401: Must provide an API key (no API key was "
            "sent: put this server's key in QDRANT_API_KEY, or name the variable that holds "
            "it with --api-key-env NAME)")


def test_points_that_keep_failing_are_named_by_what_was_tried(
        server: QdrantStandIn, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "s.jsonl", [point(i) for i in range(5)])
    server.add_fault(Fault("upsert", "503", times=None))
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"),
                         writer_options={"distance": "Dot", "max_retries": 1, "parallel": 1})
    assert err.value.message == (
        "5 point(s) could not be written after 2 attempt(s): HTTP 503: Service Unavailable "
        "(stand-in); failed ids: 0, 1, 2, 3, 4")
    server.faults.clear()
    server.add_fault(Fault("upsert", "delay", times=None, seconds=1.2,
                           when=lambda body: any(p["id"] == 3 for p in body["points"])))
    with pytest.raises(TargetError) as err:
        vecferry.convert(src, server.location("docs"),
                         writer_options={"distance": "Dot", "max_retries": 1, "parallel": 1,
                                         "timeout": 1})
    assert err.value.message == (
        "1 point(s) could not be written after 2 attempt(s) (the request that held them was "
        "halved after timing out): request timed out (ReadTimeout); failed ids: 3")

