"""What a Qdrant target cannot hold, or would change, is said before it is written; what a
collection holds that a file cannot is refused by point, naming the collection and the id.

Local mode (qdrant-client) and Edge (qdrant-edge-py) run in-process; a server is the
stand-in of ``qdrant_standin``.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("qdrant_client")

import vecferry
from failing import fails
from vecferry.errors import InputError, RecordError, TargetError, UnsupportedError


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a collection's rejects file goes to the working directory
    monkeypatch.chdir(tmp_path)


def _jsonl(path: Path, points: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(p) + "\n" for p in points))
    return str(path)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _export(location: str, out: Path, **reader_options: Any) -> list[dict[str, Any]]:
    vecferry.convert(location, str(out), overwrite=True, reader_options=reader_options or None)
    return _lines(out)


def _edge() -> None:
    pytest.importorskip("qdrant_edge")


# ----------------------------------------------------------------- the id field is taken


TAKEN = ("payload field '{field}' is taken: Qdrant cannot hold the id {pid!r}, so vecferry "
         "keeps it in that field, and an export would take the field for its own and drop it "
         "(pass --id-field with a name no payload uses, and the same --id-field when reading "
         "the collection back)")


@pytest.mark.parametrize("engine", ["local", "edge"])
def test_a_payload_holding_the_id_field_is_refused_when_vecferry_would_write_it(
        tmp_path: Path, engine: str) -> None:
    if engine == "edge":
        _edge()
    dst = (f"qdrant-local://{tmp_path / 'q'}/c" if engine == "local"
           else f"qdrant-edge://{tmp_path / 'e'}")
    # the same value as the id was taken, and dropped by the export: {"x": 1} came back
    src = _jsonl(tmp_path / "s.jsonl", [
        {"id": "doc-1", "vector": [1.0, 1.0], "payload": {"_vecferry_id": "doc-1", "x": 1}}])
    message = fails(RecordError, lambda: vecferry.convert(src, dst))
    assert message == f"{dst}, id 'doc-1': " + TAKEN.format(field="_vecferry_id", pid="doc-1")
    # nothing was written: no collection, no shard
    assert not (tmp_path / "e").exists()
    if engine == "local":
        assert not (tmp_path / "q").exists()
    # another field for the ids keeps the payload whole
    vecferry.convert(src, dst, writer_options={"id_field": "_orig"})
    assert _export(dst, tmp_path / "b.jsonl", id_field="_orig") == [
        {"id": "doc-1", "vector": [1.0, 1.0], "payload": {"_vecferry_id": "doc-1", "x": 1}}]


def test_a_payload_holding_the_field_named_by_id_field_is_refused_naming_it(tmp_path: Path
                                                                             ) -> None:
    src = _jsonl(tmp_path / "s.jsonl", [
        {"id": 1, "vector": [1.0, 2.0], "payload": {"orig": "x"}},
        {"id": "a b", "vector": [1.0, 2.0], "payload": {"orig": "something else"}}])
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    message = fails(RecordError, lambda: vecferry.convert(
        src, dst, writer_options={"id_field": "orig"}))
    assert message == f"{dst}, id 'a b': " + TAKEN.format(field="orig", pid="a b")
    # skipped, it goes to the rejects file as it was read; the integer id keeps its field
    report = vecferry.convert(src, dst, on_error="skip", writer_options={"id_field": "orig"})
    assert (report["written"], report["rejected"]) == (1, 1)
    rejects = _lines(Path(report["rejects_file"]))
    assert [{k: v for k, v in r.items() if k != "_vecferry_reject"} for r in rejects] == [
        {"id": "a b", "vector": [1.0, 2.0], "payload": {"orig": "something else"}}]
    assert _export(dst, tmp_path / "b.jsonl", id_field="orig") == [
        {"id": 1, "vector": [1.0, 2.0], "payload": {"orig": "x"}}]


def test_exports_of_mapped_ids_load_again_and_copies_keep_working(tmp_path: Path) -> None:
    """An export restores the original ids and drops the field, so loading it again (and a
    collection-to-collection copy) never meets a payload holding the field."""
    points = [{"id": f"doc-{i}", "vector": [float(i), 1.0], "payload": {"i": i}}
              for i in range(5)]
    points.append({"id": 7, "vector": [1.0, 2.0], "payload": {"_vecferry_id": "not mapped"}})
    src = _jsonl(tmp_path / "s.jsonl", points)
    first = f"qdrant-local://{tmp_path / 'q'}/a"
    vecferry.convert(src, first)
    exported = _export(first, tmp_path / "e.jsonl")
    assert sorted(exported, key=str) == sorted(points, key=str)
    second = f"qdrant-local://{tmp_path / 'q'}/b"
    vecferry.convert(str(tmp_path / "e.jsonl"), second)  # the export, loaded again
    third = f"qdrant-local://{tmp_path / 'q'}/c"
    vecferry.convert(second, third)  # a copy
    assert sorted(_export(third, tmp_path / "c.jsonl"), key=str) == sorted(points, key=str)


# ------------------------------------------------------ payloads a file cannot hold (reading)


def _local_collection(folder: Path, points: list[Any], vectors: Any = None,
                      sparse: Any = None) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    try:
        client.create_collection(
            "c", vectors_config=vectors if vectors is not None else models.VectorParams(
                size=2, distance="Dot"), sparse_vectors_config=sparse)
        client.upsert("c", points)
    finally:
        client.close()


LONE = "lone \ud800 x"
SURROGATE = ("payload field {path!r} holds a lone surrogate (half of a UTF-16 pair), which is "
             "not text: JSON, Arrow and Parquet cannot hold it (fix the string in the "
             "collection, or pass --on-error skip to export the other points (the rejects file "
             "keeps this payload as JSON text, the surrogate escaped))")


@pytest.mark.parametrize("layout", ["unnamed", "named", "sparse"])
def test_a_lone_surrogate_in_a_local_mode_payload_is_a_bad_record(tmp_path: Path,
                                                                   layout: str) -> None:
    """Local mode keeps any Python string; JSON text, Arrow and Parquet hold UTF-8 only. The
    export failed with a UnicodeEncodeError traceback naming no point."""
    from qdrant_client import models

    if layout == "unnamed":  # the column-wise path's quickest case
        vectors, sparse, vec = None, None, [1.0, 2.0]
    elif layout == "named":  # the column-wise path, UUIDs and named vectors
        vectors = {"a": models.VectorParams(size=2, distance="Dot")}
        sparse, vec = None, {"a": [1.0, 2.0]}
    else:  # BatchBuilder's path
        vectors = {}
        sparse = {"s": models.SparseVectorParams()}
        vec = {"s": models.SparseVector(indices=[3], values=[0.5])}
    pid = 2 if layout != "named" else "9ee71b4c-0a6f-5d75-8470-26b1351aca2f"
    points = [models.PointStruct(id=1 if layout != "named" else
                                 "0f0e0d0c-0b0a-4908-8706-050403020100",
                                 vector=vec, payload={"s": "fine é"}),
              models.PointStruct(id=pid, vector=vec, payload={"k": [{"t": LONE}], "n": 1})]
    _local_collection(tmp_path / "q", points, vectors, sparse)
    src = f"qdrant-local://{tmp_path / 'q'}/c"
    out = tmp_path / "o.jsonl"
    message = fails(RecordError, lambda: vecferry.convert(src, str(out)))
    assert message == f"{src}, row 1, id {pid!r}: " + SURROGATE.format(path="k[0].t")
    report = vecferry.convert(src, str(out), on_error="skip", overwrite=True)
    assert (report["written"], report["rejected"]) == (1, 1)
    assert _lines(out)[0]["payload"] == {"s": "fine é"}
    reject = _lines(Path(report["rejects_file"]))[0]
    assert reject["id"] == pid
    assert reject["payload"] == '{"k": [{"t": "lone \\ud800 x"}], "n": 1}'
    assert json.loads(reject["payload"]) == {"k": [{"t": LONE}], "n": 1}  # nothing lost
    assert reject["_vecferry_reject"]["source"] == src
    if layout == "unnamed":
        assert reject["vector"] == [1.0, 2.0]


def test_a_lone_surrogate_in_a_payload_key_is_named(tmp_path: Path) -> None:
    from qdrant_client import models

    _local_collection(tmp_path / "q", [
        models.PointStruct(id=5, vector=[1.0, 2.0], payload={"a": {f"k{LONE}": 1}})])
    src = f"qdrant-local://{tmp_path / 'q'}/c"
    message = fails(RecordError, lambda: vecferry.convert(src, str(tmp_path / "o.parquet")))
    assert message == f"{src}, row 0, id 5: " + SURROGATE.format(path=f"a.k{LONE}")
    assert "\\ud800" in message and LONE not in message  # printable: the CLI writes it


@pytest.mark.parametrize("layout", ["unnamed", "sparse"])
def test_a_payload_dumps_payload_refuses_is_a_bad_record_of_the_collection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """``dumps_payload`` may refuse a payload (NaN and infinity, which JSON cannot hold): the
    point is a bad record named by collection and id, not an uncaught error."""
    from qdrant_client import models

    import vecferry.converters.qdrant as qdrant_module
    import vecferry.points as points_module

    if layout == "unnamed":
        vectors, sparse, vec = None, None, [1.0, 2.0]
    else:
        vectors, sparse = {}, {"s": models.SparseVectorParams()}
        vec = {"s": models.SparseVector(indices=[3], values=[0.5])}
    _local_collection(tmp_path / "q", [
        models.PointStruct(id=1, vector=vec, payload={"v": 1.0}),
        models.PointStruct(id=2, vector=vec, payload={"v": float("nan")})], vectors, sparse)
    real = points_module.dumps_payload

    def refusing(payload: Any) -> str:
        if any(isinstance(v, float) and math.isnan(v) for v in payload.values()):
            raise ValueError("payload field 'v' holds NaN, which JSON cannot hold")
        return real(payload)

    monkeypatch.setattr(qdrant_module, "dumps_payload", refusing)
    monkeypatch.setattr(points_module, "dumps_payload", refusing)
    src = f"qdrant-local://{tmp_path / 'q'}/c"
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "o.jsonl"))
    assert info.value.location.source == src and info.value.location.point_id == 2
    assert "payload field 'v' holds NaN" in str(info.value)
    report = vecferry.convert(src, str(tmp_path / "o.jsonl"), on_error="skip", overwrite=True)
    assert (report["written"], report["rejected"]) == (1, 1)


def test_a_digit_string_id_in_a_collection_with_integer_ids_says_what_to_do(
        tmp_path: Path) -> None:
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    vecferry.convert(_jsonl(tmp_path / "i.jsonl", [{"id": 1, "vector": [1.0, 1.0]}]), dst)
    vecferry.convert(_jsonl(tmp_path / "s.jsonl", [{"id": "2", "vector": [2.0, 1.0]}]), dst)
    message = fails(RecordError, lambda: vecferry.convert(dst, str(tmp_path / "o.jsonl")))
    assert message == (
        f"{dst}, row 1, id '2': string id '2' looks like an integer and cannot be told apart "
        "from one in a stream that mixes integer and string ids: the collection holds integer "
        "ids too, and keeps this point's original id in the payload field '_vecferry_id' "
        "(read with --id-field OTHER to export such points under their Qdrant UUIDs, the "
        "original ids kept in the payload field '_vecferry_id'; or pass --on-error skip to "
        "leave them out)")
    # what the hint says works
    assert _export(dst, tmp_path / "o.jsonl", id_field="other") == [
        {"id": 1, "vector": [1.0, 1.0]},
        {"id": "9ee71b4c-0a6f-5d75-8470-26b1351aca2f", "vector": [2.0, 1.0],
         "payload": {"_vecferry_id": "2"}}]


# ------------------------------------------------------------ Cosine vectors too long


COSINE = ("{what} too long for the Cosine distance: Qdrant stores such a vector divided by its "
          "length, whose square overflows float32, so it would be stored as all zeros (scale "
          "the vector down (Cosine does not depend on a vector's length), or load it into a "
          "collection with another distance)")


def test_a_cosine_vector_whose_length_overflows_float32_is_refused(tmp_path: Path) -> None:
    _edge()
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    src = _jsonl(tmp_path / "s.jsonl", [
        {"id": 1, "vector": [3.0, 4.0, 0.0]},
        {"id": 3, "vector": [3e38, 3e38, 0.0]},  # finite float32 values: stored as zeros
        {"id": 4, "vector": [2e19, 0.0, 0.0]},  # its square alone overflows
        {"id": 5, "vector": [0.0, 0.0, 0.0]},  # stored as it is
        {"id": 6, "vector": [1e-30, 0.0, 0.0]},  # too short to divide: stored as it is
        {"id": 7, "vector": [1.8e19, 0.0, 0.0]},  # 3.24e38: still fits
    ])
    options = {"distance": "Cosine"}
    message = fails(RecordError, lambda: vecferry.convert(src, dst, writer_options=options))
    assert message == f"{dst}, id 3: " + COSINE.format(
        what="vector has length 4.243e+38, which is")
    assert not (tmp_path / "e").exists()  # refused before the shard was made
    report = vecferry.convert(src, dst, on_error="skip", writer_options=options)
    assert (report["written"], report["rejected"]) == (4, 2)
    reasons = [r["_vecferry_reject"]["reason"] for r in _lines(Path(report["rejects_file"]))]
    assert reasons[1] == COSINE.format(what="vector has length 2e+19, which is").split(" (")[0]
    got = {p["id"]: p["vector"] for p in _export(dst, tmp_path / "b.jsonl")}
    assert got == {1: [0.6, 0.8, 0.0], 5: [0.0, 0.0, 0.0], 6: [1e-30, 0.0, 0.0],
                   7: [1.0, 0.0, 0.0]}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # qdrant-client's
def test_local_mode_keeps_such_vectors_as_given(tmp_path: Path) -> None:
    """Local mode divides Cosine vectors in memory only; its files keep them as given."""
    src = _jsonl(tmp_path / "s.jsonl", [{"id": 3, "vector": [3e38, 3e38, 0.0]}])
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    report = vecferry.convert(src, dst, writer_options={"distance": "Cosine"})
    assert report["rejected"] == 0
    assert _export(dst, tmp_path / "b.jsonl") == [{"id": 3, "vector": [3e38, 3e38, 0.0]}]


def test_other_distances_keep_such_vectors(tmp_path: Path) -> None:
    _edge()
    src = _jsonl(tmp_path / "s.jsonl", [{"id": 3, "vector": [3e38, 3e38, 0.0]}])
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    vecferry.convert(src, dst, writer_options={"distance": "Euclid"})
    assert _export(dst, tmp_path / "b.jsonl") == [{"id": 3, "vector": [3e38, 3e38, 0.0]}]


def test_a_cosine_multivector_sub_vector_too_long_is_named(tmp_path: Path) -> None:
    _edge()
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    src = _jsonl(tmp_path / "s.jsonl", [
        {"id": 1, "vector": {"m": [[1.0, 0.0], [0.0, 2.0]], "d": [1.0, 1.0]}},
        {"id": 2, "vector": {"m": [[1.0, 0.0], [3e38, 3e38]], "d": [1.0, 1.0]}}])
    message = fails(RecordError, lambda: vecferry.convert(
        src, dst, writer_options={"distance": "Cosine"}))
    assert message == f"{dst}, id 2: " + COSINE.format(
        what="vector 'm' has a sub-vector (number 2) of length 4.243e+38, which is")


# ------------------------------------------------------------------ vector names


BAD_NAME = ("{kind} name {name!r} {why}, which Qdrant does not allow (rename the vector in the "
            "source: a Qdrant vector name is at most 200 bytes, is not '.' or '..', and has "
            "none of < > : \" / \\ | ? * NUL 0x1F)")


@pytest.mark.parametrize(("name", "why"), [
    ("../evil", "holds '/'"), ("a:b", "holds ':'"), (".", "is a directory name"),
    ("x" * 201, "is 201 bytes long (at most 200)"), ("a\u0000b", "holds NUL")])
@pytest.mark.parametrize("engine", ["local", "edge"])
def test_a_vector_name_qdrant_does_not_allow_is_refused_before_anything_is_made(
        tmp_path: Path, engine: str, name: str, why: str) -> None:
    if engine == "edge":
        _edge()
    dst = (f"qdrant-local://{tmp_path / 'q'}/c" if engine == "local"
           else f"qdrant-edge://{tmp_path / 'e'}")
    src = _jsonl(tmp_path / "s.jsonl", [{"id": 1, "vector": {name: [1.0, 2.0]}}])
    message = fails(UnsupportedError, lambda: vecferry.convert(src, dst))
    assert message == f"{dst}: " + BAD_NAME.format(kind="vector", name=name, why=why)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]  # nothing left


def test_a_sparse_vector_name_is_checked_too(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "s.jsonl", [
        {"id": 1, "vector": {"a|b": {"indices": [1], "values": [0.5]}}}])
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    assert fails(UnsupportedError, lambda: vecferry.convert(src, dst)) == (
        f"{dst}: " + BAD_NAME.format(kind="sparse vector", name="a|b", why="holds '|'"))


def test_names_at_the_limits_load(tmp_path: Path) -> None:
    _edge()
    names = ["é" * 100, "..a", "a b", "-x"]  # 200 bytes; dots inside; a space
    src = _jsonl(tmp_path / "s.jsonl", [{"id": 1, "vector": {n: [1.0, 2.0] for n in names}}])
    for dst in (f"qdrant-local://{tmp_path / 'q'}/c", f"qdrant-edge://{tmp_path / 'e'}"):
        vecferry.convert(src, dst)
        assert _export(dst, tmp_path / "b.jsonl") == [
            {"id": 1, "vector": {n: [1.0, 2.0] for n in names}}]


def test_overwrite_keeps_a_shard_when_the_source_has_a_bad_name(tmp_path: Path) -> None:
    _edge()
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    vecferry.convert(_jsonl(tmp_path / "ok.jsonl", [{"id": 1, "vector": [1.0, 2.0]}]), dst)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": 1, "vector": {"../evil": [1.0, 2.0]}}])
    fails(UnsupportedError, lambda: vecferry.convert(bad, dst, overwrite=True))
    assert _export(dst, tmp_path / "b.jsonl") == [{"id": 1, "vector": [1.0, 2.0]}]


def test_a_shard_edge_could_not_open_again_is_replaced_by_overwrite(tmp_path: Path) -> None:
    """What an earlier version left: Edge writes a config and segments, then fails on a vector
    name it refuses (``../evil``)."""
    _edge()
    import qdrant_edge as qe

    shard = tmp_path / "e"
    cfg = qe.EdgeConfig(vectors={"../evil": qe.EdgeVectorParams(size=2,
                                                                distance=qe.Distance.Dot)})
    with pytest.raises(Exception, match="must not escape"):
        qe.EdgeShard.create(str(shard), cfg)
    assert (shard / "edge_config.json").is_file()
    dst = f"qdrant-edge://{shard}"
    src = _jsonl(tmp_path / "ok.jsonl", [{"id": 1, "vector": [1.0, 2.0]}])
    message = fails(TargetError, lambda: vecferry.convert(src, dst))
    assert re.fullmatch(
        re.escape(f"{dst}: cannot open the shard: ") + ".*" + re.escape(
            " (the shard's files are damaged or incomplete; restore it from a copy or a "
            "snapshot, or run again with --overwrite to replace it)"), message), message
    # reading it still says what it said
    read = fails(InputError, lambda: vecferry.convert(dst, str(tmp_path / "o.jsonl")))
    assert read.endswith("(the shard's files are damaged or incomplete; restore it from a copy "
                         "or a snapshot)")
    vecferry.convert(src, dst, overwrite=True)
    assert _export(dst, tmp_path / "b.jsonl") == [{"id": 1, "vector": [1.0, 2.0]}]


def test_a_shard_edge_fails_to_create_leaves_nothing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _edge()
    import qdrant_edge as qe

    class HalfWay:
        """``EdgeShard`` whose ``create`` writes part of a shard, then fails."""

        @staticmethod
        def create(path: str, config: Any) -> Any:
            Path(path, "segments", "x").mkdir(parents=True)
            Path(path, "edge_config.json").write_text("{}")
            raise OSError("No space left on device (os error 28)")

    monkeypatch.setattr(qe, "EdgeShard", HalfWay)
    src = _jsonl(tmp_path / "ok.jsonl", [{"id": 1, "vector": [1.0, 2.0]}])
    (tmp_path / "empty").mkdir()
    for shard in (tmp_path / "new", tmp_path / "empty"):
        dst = f"qdrant-edge://{shard}"
        assert fails(TargetError, lambda dst=dst: vecferry.convert(src, dst)) == (
            f"{dst}: cannot create the shard: No space left on device (os error 28) (nothing "
            "was left in its place; check that the directory is writable and has room, then "
            "run again)")
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "empty").iterdir()) == []  # the user's empty directory stays


# ------------------------------------------------------------- Edge and payload floats


def test_edge_float_is_what_edge_gives_back() -> None:
    """``edge_float`` emulates Edge's reading of payload floats exactly: checked here on
    floats of every exponent, integral floats written in full, subnormals and extremes."""
    _edge()
    import qdrant_edge as qe

    from vecferry.converters.qdrant_edge import edge_float

    rng = random.Random(11)
    values = [4311915534309327.5, 3.8000000000000003, 0.1, 5e-324, 1.7976931348623157e308,
              1234567890123456.0, 9007199254740993.0, 2.2250738585072014e-308, 1e22, 1e23]
    while len(values) < 3000:
        f = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(f):
            values.append(f)
        values.append(float(rng.randrange(1, 10 ** 17)))
        values.append(rng.random() * 10 ** rng.randint(-320, 300))
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        cfg = qe.EdgeConfig(vectors={"": qe.EdgeVectorParams(size=1, distance=qe.Distance.Dot)})
        shard = qe.EdgeShard.create(folder, cfg)
        try:
            shard.update(qe.UpdateOperation.upsert_points(
                [qe.Point(i, [1.0], {"f": v, "l": [-v]}) for i, v in enumerate(values)]))
            records, _ = shard.scroll(qe.ScrollRequest(limit=len(values), with_payload=True,
                                                       with_vector=False))
        finally:
            shard.close()
    got = {r.id: r.payload for r in records}
    assert all(got[i] == {"f": edge_float(v), "l": [edge_float(-v)]}
               for i, v in enumerate(values))
    assert sum(edge_float(v) != v for v in values) > 300  # the case is not rare


def test_every_float_edge_changes_is_caught_by_the_cheap_text_test() -> None:
    from vecferry.converters.qdrant_edge import _MAYBE_CHANGED, edge_float

    pattern = re.compile(_MAYBE_CHANGED)
    rng = random.Random(3)
    changed = 0
    for _ in range(30000):
        x = rng.choice([rng.random() * 10 ** rng.randint(-40, 40),
                        float(rng.randrange(1, 10 ** 17)),
                        struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]])
        if not math.isfinite(x) or edge_float(x) == x:
            continue
        changed += 1
        for text in (orjson.dumps({"a": [1, x]}).decode(), json.dumps({"a": x})):
            assert pattern.search(text), text
    assert changed > 5000
    # ordinary payloads are not parsed at all
    for text in ('{"price":12.5,"n":3,"tags":["3e5f","x"]}', '{"t":"1234567890123456789"}',
                 '{"id":"a1e5"}', '{"v":0.1}'):
        assert not pattern.search(text), text


FLOATS = ("{dst}: {n} point(s) hold payload floats that Qdrant Edge gives back one unit in the "
          "last place off (it reads them back without exact rounding), the first id {pid!r}, "
          "whose payload field {path!r} holds {value!r}, given back as {back!r}: keep numbers "
          "that must stay exact as strings in the payload (qdrant-local:// keeps floats "
          "exactly)")


def test_edge_warns_once_before_writing_floats_it_would_change(tmp_path: Path) -> None:
    _edge()
    points = [
        {"id": 1, "vector": [1.0], "payload": {"price": 12.5, "n": 2**63, "s": "3.8e5"}},
        {"id": 2, "vector": [1.0], "payload": {"m": {"x": [1, 4311915534309327.5]}}},
        {"id": 3, "vector": [1.0], "payload": {"a": 0.1, "b": 1e300, "c": 5e-324}},
        {"id": 4, "vector": [1.0], "payload": {"f": 3.8000000000000003}},
    ]
    src = _jsonl(tmp_path / "s.jsonl", points)
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    report = vecferry.convert(src, dst, batch_size=2, writer_options={"distance": "Dot"})
    assert report["warnings"] == [FLOATS.format(
        dst=dst, n=2, pid=2, path="m.x[1]", value=4311915534309327.5, back=4311915534309327.0)]
    back = {p["id"]: p.get("payload") for p in _export(dst, tmp_path / "b.jsonl")}
    assert back[2] == {"m": {"x": [1, 4311915534309327.0]}} and back[4] == {"f": 3.8}
    assert back[1] == points[0]["payload"] and back[3] == points[2]["payload"]
    # local mode keeps them, and says nothing
    report = vecferry.convert(src, f"qdrant-local://{tmp_path / 'q'}/c",
                              writer_options={"distance": "Dot"})
    assert report["warnings"] == []


# ------------------------------------------------------------- the distance warning


DISTANCE = ("the source does not say which distance its vectors use; the collection uses Dot, "
            "which stores vectors exactly (pass --distance to choose)")


def test_no_distance_warning_for_a_stream_whose_points_have_no_vectors(tmp_path: Path) -> None:
    # a manifest declares vector "a" (no distance); none of the points has it
    declared = _jsonl(tmp_path / "d.jsonl", [{"id": 1, "vector": {"a": [1.0]}},
                                             {"id": 2, "vector": {}}])
    vecferry.convert(declared, str(tmp_path / "m.jsonl"))
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    (tmp_path / "m.jsonl").write_text(lines[1] + "\n")
    manifest = json.loads((tmp_path / "m.jsonl.manifest.json").read_text())
    manifest.update(count=None, digest=None)
    (tmp_path / "m.jsonl.manifest.json").write_text(json.dumps(manifest))
    report = vecferry.convert(str(tmp_path / "m.jsonl"), f"qdrant-local://{tmp_path / 'q'}/a")
    assert report["written"] == 1 and report["warnings"] == []
    # no vectors at all, without a manifest
    bare = _jsonl(tmp_path / "b.jsonl", [{"id": 1, "vector": {}, "payload": {"a": 1}}])
    report = vecferry.convert(bare, f"qdrant-local://{tmp_path / 'q'}/b")
    assert report["warnings"] == []
    # a point with the vector gets the warning, once, however late it comes
    report = vecferry.convert(declared, f"qdrant-local://{tmp_path / 'q'}/c", batch_size=1)
    assert report["warnings"] == [DISTANCE]
    # a dry run reads no points: it warns as the config it shows holds Dot
    report = vecferry.convert(str(tmp_path / "m.jsonl"), f"qdrant-local://{tmp_path / 'q'}/d",
                              dry_run=True)
    assert report["warnings"] == [DISTANCE]


# ------------------------------------------------------------------ hints


def test_a_missing_local_mode_collection_names_those_the_folder_holds(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    src = _jsonl(tmp_path / "s.jsonl", [{"id": 1, "vector": [1.0, 2.0]}])
    for name in ("docs", "notes"):
        vecferry.convert(src, f"qdrant-local://{folder}/{name}")
    missing = f"qdrant-local://{folder}/doc"
    assert fails(InputError, lambda: vecferry.convert(missing, str(tmp_path / "o.jsonl"))) == (
        f"{missing}: collection not found (check the collection name; this local-mode folder "
        "holds docs, notes)")
    (tmp_path / "empty").mkdir()
    missing = f"qdrant-local://{tmp_path / 'empty'}/docs"
    assert fails(InputError, lambda: vecferry.convert(missing, str(tmp_path / "o.jsonl"))) == (
        f"{missing}: collection not found (check the path: this local-mode folder holds no "
        "collection)")


def test_a_missing_server_collection_names_the_command_that_lists_them(tmp_path: Path) -> None:
    from qdrant_standin import QdrantStandIn

    with QdrantStandIn() as server:
        missing = server.location("nope")
        root = missing.rsplit("/", 1)[0]
        assert fails(InputError, lambda: vecferry.convert(
            missing, str(tmp_path / "o.jsonl"))) == (
            f"{missing}: collection not found (check the collection name; `vecferry inspect "
            f"{root}` lists the server's)")


UNREACHABLE = ("check that the Qdrant server is running and reachable at that host and port "
               "(REST listens on 6333 by default, gRPC on 6334 with ?grpc=1; qdrants:// is for "
               "HTTPS), then run again; --max-retries N keeps trying longer")


def test_a_refused_connection_says_what_to_do(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "s.jsonl", [{"id": 1, "vector": [1.0, 2.0]}])
    dst = "qdrant://127.0.0.1:1/docs"
    message = fails(TargetError, lambda: vecferry.convert(
        src, dst, writer_options={"max_retries": 0}))
    assert message.startswith(f"{dst}: checking the collection failed after 1 attempt(s): "
                              "connection error: ")
    assert message.endswith(f" ({UNREACHABLE})")
    message = fails(TargetError, lambda: vecferry.convert(
        dst, str(tmp_path / "o.jsonl"), reader_options={"max_retries": 0}))
    assert message.endswith(f" ({UNREACHABLE})")
    from vecferry.converters.qdrant import collection_names

    message = fails(TargetError, lambda: collection_names("qdrant://127.0.0.1:1",
                                                          max_retries=0))
    assert message.startswith("qdrant://127.0.0.1:1: listing collections failed after 1 ")
    assert message.endswith(f" ({UNREACHABLE})")


@pytest.mark.parametrize("src_idf,dst_idf", [(True, False), (False, True), (True, True)])
def test_a_target_scoring_a_sparse_vector_with_another_modifier_is_warned_of(
        tmp_path: Path, src_idf: bool, dst_idf: bool) -> None:
    """IDF or none acts at query time, so the points load the same and verify cannot see the
    difference: the load says so before writing."""
    from qdrant_client import QdrantClient, models

    def make(path: Path, idf: bool) -> None:
        client = QdrantClient(path=str(path))
        client.create_collection("c", vectors_config={}, sparse_vectors_config={
            "kw": models.SparseVectorParams(modifier=models.Modifier.IDF if idf else None)})
        client.close()

    make(tmp_path / "src", src_idf)
    client = QdrantClient(path=str(tmp_path / "src"))
    client.upsert("c", [models.PointStruct(id=i, payload={"i": i}, vector={
        "kw": models.SparseVector(indices=[i, 7], values=[1.0, 0.5])}) for i in range(4)])
    client.close()
    vecferry.convert(f"qdrant-local://{tmp_path / 'src'}/c", str(tmp_path / "s.parquet"))
    make(tmp_path / "dst", dst_idf)
    report = vecferry.convert(str(tmp_path / "s.parquet"), f"qdrant-local://{tmp_path / 'dst'}/c")
    assert report["written"] == 4
    said = [w for w in report["warnings"] if "modifier" in w]
    if src_idf == dst_idf:
        assert said == []
    else:
        have, want = ("idf", "none") if dst_idf else ("none", "idf")
        assert said == [
            f"qdrant-local://{tmp_path / 'dst'}/c: sparse vector 'kw': modifier {have} in the "
            f"target, {want} in the source, so searches there score these vectors "
            "differently (load into a new collection to keep the source's)"]
