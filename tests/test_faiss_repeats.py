"""Ids given to several points, through a FAISS index and its payload sidecar; and LlamaIndex
docstores whose nodes hold what JSON or UTF-8 cannot (read from the same FAISS folders).

Duplicate ids are data (README): every point of a repeated id keeps its own payload. The payload
sidecar records each point's position in the order the points were added, which an index read
in that order (flat, HNSW, anything in an id map) joins on; bare inverted lists are read list by
list, by id alone, so the writer refuses a later point of an id there when a payload is involved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from failing import fails
from vecferry.converters import faiss_index
from vecferry.converters.base import Context
from vecferry.errors import InputError, RecordError
from vecferry.pipeline import convert
from vecferry.verification import verify

faiss = pytest.importorskip("faiss")

IVF_HINT = ("(keep one point per id (the first is written), or choose an index read back in the "
            "order written, which keeps each point of an id with its own payload: 'IDMap2,Flat' "
            "(the default), 'HNSW32', or the IVF inside an IDMap2 ('IDMap2,IVF1024,Flat'))")


def ivf_reason(pid: int, index_type: str = "IndexIVFFlat") -> str:
    return (f"id {pid} was given to an earlier point too, and {index_type} is read back list "
            "by list, where the points of one id cannot be told apart: their payloads would be "
            "mixed up")


def write_jsonl(path: Path, points: list[dict]) -> str:
    path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in points))
    return str(path)


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def key(p: dict) -> tuple:
    """A point as a sortable key: the whole record, compared exactly (the vector as the
    float32 bits FAISS holds, however the JSON text wrote them)."""
    return (p["id"], np.asarray(p["vector"], dtype=np.float32).tobytes(),
            orjson.dumps(p.get("payload"), option=orjson.OPT_SORT_KEYS))


def repeated_points(n: int = 300, every: int = 4, seed: int = 0) -> list[dict]:
    """``n`` points whose ids repeat (id ``i // every``... spread so repeats span batches),
    each with its own payload but some without one, and distinct vectors."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    out = []
    for i in range(n):
        p = {"id": (i * 7) % (n // every), "vector": x[i].tolist()}
        if i % 5:
            p["payload"] = {"i": i, "t": "é" * (i % 3)}
        out.append(p)
    return out


# ---------------------------------------------------------------------------- the reported case


def test_the_reported_case_reads_back_each_records_payload_and_verifies(tmp_path):
    """The reviewer's three lines: id 1 twice, with payloads {"a": 1} and {"a": 2}. The second
    point came back with {"a": 1}, a record that never existed, and verify failed."""
    from click.testing import CliRunner

    from vecferry.cli import main

    points = [{"id": 1, "vector": [1, 2], "payload": {"a": 1}},
              {"id": 1, "vector": [3, 4], "payload": {"a": 2}},
              {"id": 2, "vector": [5, 6], "payload": {"a": 3}}]
    src = write_jsonl(tmp_path / "dup.jsonl", points)
    index, back = str(tmp_path / "dup.faiss"), tmp_path / "back.jsonl"
    run = CliRunner()
    for args in (["convert", src, index, "--distance", "Euclid", "-q"],
                 ["convert", index, str(back), "-q"]):
        result = run.invoke(main, args)
        assert result.exit_code == 0, result.output
    assert read_jsonl(back) == [{"id": 1, "vector": [1.0, 2.0], "payload": {"a": 1}},
                                {"id": 1, "vector": [3.0, 4.0], "payload": {"a": 2}},
                                {"id": 2, "vector": [5.0, 6.0], "payload": {"a": 3}}]
    result = run.invoke(main, ["verify", index])
    assert result.exit_code == 0, result.output
    assert "verified: identical" in result.output


# ------------------------------------------------------------- indexes read in insertion order


ORDERED = {
    "default": None,               # IDMap2,Flat
    "flat": "Flat",                # wrapped in IDMap2 to take the ids
    "hnsw": "HNSW8",
    "refine": "IVF2,PQ2x4,RFlat",  # read through its flat refinement index
    "idmap_ivf": "IDMap2,IVF2,Flat",  # the IVF holds positions into the id map
}


@pytest.mark.parametrize("held", ["memory", "disk"])
@pytest.mark.parametrize("factory", list(ORDERED))
def test_every_point_of_a_repeated_id_keeps_its_own_payload(tmp_path, monkeypatch, factory,
                                                            held):
    if held == "disk":
        monkeypatch.setattr(faiss_index, "SIDECAR_MEMORY_BYTES", 0)
    points = repeated_points()
    src = write_jsonl(tmp_path / "in.jsonl", points)
    index = str(tmp_path / "i.faiss")
    options = {"train_rows": 300, "distance": "Euclid",
               **({"index_factory": ORDERED[factory]} if ORDERED[factory] else {})}
    report = convert(src, index, batch_size=32, writer_options=options)
    assert report["written"] == len(points) and report["rejected"] == 0
    side = pq.read_table(index + ".payloads.parquet")
    assert side.column_names == ["faiss_id", "position", "payload"]
    # each row names its point's place in the order written, payload-less points skipped
    assert side.column("position").to_pylist() == [i for i, p in enumerate(points)
                                                   if "payload" in p]
    out = tmp_path / "out.jsonl"
    convert(index, str(out), batch_size=17)
    got = read_jsonl(out)
    assert sorted(map(key, got)) == sorted(map(key, points))
    if factory != "idmap_ivf":  # storage read in the order written
        assert [key(p) for p in got] == [key(p) for p in points]
    assert verify(index)["ok"] is True


def test_positions_join_in_partitioned_reads_and_writes(tmp_path):
    """Partitions read storage ranges: positions are the storage's own, wherever a range
    starts. A partitioned write streams its parts into one writer, in order."""
    points = repeated_points(n=2000, every=3, seed=5)
    src = write_jsonl(tmp_path / "in.jsonl", points)
    index = str(tmp_path / "i.faiss")
    report = convert(src, index, workers=2, partition_size="20KB",
                     writer_options={"distance": "Dot"})
    assert report["partitions"] > 2
    reader = vecferry.open_reader(index)
    try:
        parts = reader.partitions(20_000)
        assert len(parts) > 2
        got = [p for part in parts for b in reader.read_partition(part["spec"], 64)
               for p in b.to_pylist()]
    finally:
        reader.close()
    assert [(p["id"], json.loads(p["payload"]) if p["payload"] else None) for p in got] == [
        (p["id"], p.get("payload")) for p in points]
    out = tmp_path / "out.jsonl"
    report = convert(index, str(out), workers=2, partition_size="20KB")
    assert (report["written"], report["partitions"]) == (len(points), 4)
    assert sorted(map(key, read_jsonl(out))) == sorted(map(key, points))


def test_repeated_string_ids_were_already_exact(tmp_path):
    """Ids that are not integers are mapped to 0..n-1, each point its own FAISS id, with the
    original id in the sidecar: a repeated one is no problem there, in any index."""
    points = [{**p, "id": f"doc-{p['id']}"} for p in repeated_points(n=200)]
    src = write_jsonl(tmp_path / "in.jsonl", points)
    for factory in ("IDMap2,Flat", "IVF2,Flat"):
        index = str(tmp_path / f"{factory}.faiss")
        report = convert(src, index, writer_options={"index_factory": factory,
                                                     "train_rows": 200, "distance": "Euclid"})
        assert report["rejected"] == 0
        side = pq.read_table(index + ".payloads.parquet")
        assert side.column_names == ["faiss_id", "id", "payload"]
        out = tmp_path / f"{factory}.jsonl"
        convert(index, str(out))
        assert sorted(map(key, read_jsonl(out))) == sorted(map(key, points))


# ------------------------------------------------------------------------- inverted lists


def refusals(points: list[dict]) -> list[int]:
    """The points an index of inverted lists refuses, by the rule: a later point of an id is
    refused when it or the id's written point has a payload."""
    written: dict[int, bool] = {}  # id -> whether its written point has a payload
    out = []
    for i, p in enumerate(points):
        if p["id"] not in written:
            written[p["id"]] = "payload" in p
        elif written[p["id"]] or "payload" in p:
            out.append(i)
    return out


def test_inverted_lists_refuse_a_later_point_of_an_id_where_a_payload_is_involved(tmp_path):
    """Read list by list, by id alone, an IVF index cannot tell an id's points apart: a later
    point is refused before anything is written when it or the id's written point has a
    payload. Points without a payload after one without stay: they read back as written."""
    x = np.random.default_rng(3).standard_normal((12, 4)).astype(np.float32).tolist()
    points = [
        {"id": 1, "vector": x[0], "payload": {"a": 1}},
        {"id": 1, "vector": x[1], "payload": {"a": 2}},   # refused: both have one
        {"id": 2, "vector": x[2]},
        {"id": 2, "vector": x[3]},                        # kept: neither has one
        {"id": 2, "vector": x[4], "payload": {"a": 5}},   # refused: it has one
        {"id": 3, "vector": x[5], "payload": {"a": 6}},
        {"id": 3, "vector": x[6]},                        # refused: the written one has one
        {"id": 4, "vector": x[7]},
        {"id": 5, "vector": x[8], "payload": {"a": 9}},
        {"id": 4, "vector": x[9]},                        # kept, in a later batch
        {"id": 5, "vector": x[10], "payload": {"a": 11}},  # refused, in a later batch
        {"id": 6, "vector": x[11], "payload": {"a": 12}},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", points)
    index, rejects = str(tmp_path / "ivf.faiss"), tmp_path / "rejects.jsonl"
    options = {"index_factory": "IVF2,Flat", "train_rows": 12, "distance": "Euclid"}
    report = convert(src, index, batch_size=8, on_error="skip", rejects=str(rejects),
                     writer_options=options)
    refused = [1, 4, 6, 10]
    assert (report["written"], report["rejected"]) == (8, 4)
    lines = read_jsonl(rejects)
    assert [r["_vecferry_reject"]["reason"] for r in lines] == [
        ivf_reason(points[i]["id"]) for i in refused]
    # the whole point, as it came, so the rejects file converts once the ids are fixed
    assert [key(r) for r in lines] == [key(points[i]) for i in refused]
    assert refused == refusals(points)
    out = tmp_path / "out.jsonl"
    convert(index, str(out))
    kept = [p for i, p in enumerate(points) if i not in refused]
    assert sorted(map(key, read_jsonl(out))) == sorted(map(key, kept))
    assert verify(index)["ok"] is True
    # the default stops at the first such point, naming it, and writes nothing
    failed = tmp_path / "failed.faiss"
    text = fails(RecordError, lambda: convert(src, str(failed), writer_options=options))
    assert text == f"{failed}, id 1: {ivf_reason(1)} {IVF_HINT}"
    assert not list(tmp_path.glob("failed.faiss*"))


def test_inverted_lists_keep_repeated_ids_without_payloads(tmp_path):
    """npy vectors with repeated ids and no payloads: nothing to tell apart, all written."""
    points = [{k: v for k, v in p.items() if k != "payload"} for p in repeated_points(n=400)]
    src = write_jsonl(tmp_path / "in.jsonl", points)
    index = str(tmp_path / "ivf.faiss")
    report = convert(src, index, batch_size=50, writer_options={
        "index_factory": "IVF4,Flat", "train_rows": 400, "distance": "Euclid"})
    assert (report["written"], report["rejected"]) == (400, 0)
    assert not Path(index + ".payloads.parquet").exists()
    assert verify(index)["ok"] is True


def test_a_lossy_ivf_names_its_type_in_the_refusal(tmp_path):
    points = repeated_points(n=300, every=2)
    src = write_jsonl(tmp_path / "in.jsonl", points)
    index = tmp_path / "pq.faiss"
    text = fails(RecordError, lambda: convert(
        src, str(index), writer_options={"index_factory": "OPQ2,IVF2,PQ2x4", "train_rows": 300,
                                         "allow_lossy": True, "distance": "Euclid"}))
    first = refusals(points)[0]
    assert text == (f"{index}, id {points[first]['id']}: "
                    f"{ivf_reason(points[first]['id'], 'IndexPreTransform(IndexIVFPQ)')} "
                    f"{IVF_HINT}")


def test_binary_inverted_lists_refuse_too_and_binary_flat_keeps_every_point(tmp_path):
    """Binary points (packed bits) come from a binary index: repeated ids given payloads
    through a JSONL copy of it."""
    xb = np.random.default_rng(7).integers(0, 256, (40, 8), dtype=np.uint8)
    ids = np.arange(40, dtype=np.int64) % 25
    idx = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(64))
    idx.add_with_ids(xb, ids)
    faiss.write_index_binary(idx, str(tmp_path / "b.faiss"))
    copy = tmp_path / "b.jsonl"
    convert(str(tmp_path / "b.faiss"), str(copy))
    lines = read_jsonl(copy)
    for i, p in enumerate(lines):
        p["payload"] = {"i": i}
    write_jsonl(copy, lines)
    (tmp_path / "b.jsonl.manifest.json").write_text(json.dumps(
        {**json.loads((tmp_path / "b.jsonl.manifest.json").read_text()), "digest": None}))
    flat = str(tmp_path / "flat.faiss")
    assert convert(str(copy), flat)["written"] == 40
    out = tmp_path / "out.jsonl"
    convert(flat, str(out))
    assert read_jsonl(out) == lines
    text = fails(RecordError, lambda: convert(
        str(copy), str(tmp_path / "bivf.faiss"),
        writer_options={"index_factory": "BIVF2", "train_rows": 40}))
    assert text == f"{tmp_path / 'bivf.faiss'}, id 0: {ivf_reason(0, 'IndexBinaryIVF')} " \
                   f"{IVF_HINT}"


def test_id_set_answers_like_a_python_set():
    rng = np.random.default_rng(11)
    ids, seen = faiss_index._IdSet(), set()
    for _ in range(60):
        batch = rng.integers(-(2**62), 2**62, size=int(rng.integers(0, 300)), dtype=np.int64)
        batch = np.concatenate([batch, rng.choice(np.array(sorted(seen) or [0], np.int64),
                                                  size=20)])
        assert ids.contains(batch).tolist() == [int(i) in seen for i in batch]
        new = np.unique(batch[~ids.contains(batch)])
        ids.add(new)
        seen.update(new.tolist())
    assert len(ids._runs) <= 2 * int(np.log2(len(seen))) + 1


# ------------------------------------------------------------- sidecars from before positions


def _without_positions(index: str) -> None:
    side = index + ".payloads.parquet"
    pq.write_table(pq.read_table(side).drop_columns(["position"]), side)


@pytest.mark.parametrize("held", ["memory", "disk"])
def test_a_sidecar_without_positions_reads_as_before_and_says_what_it_cannot_tell(
        tmp_path, monkeypatch, held):
    """An older vecferry wrote one row per point with a payload, keyed by FAISS id alone: it
    still reads, every point of an id with the first row's payload, and a warning says so."""
    if held == "disk":
        monkeypatch.setattr(faiss_index, "SIDECAR_MEMORY_BYTES", 0)
    points = [{"id": 7, "vector": [1.0, 2.0], "payload": {"a": 1}},
              {"id": 7, "vector": [3.0, 4.0], "payload": {"a": 2}},
              {"id": 9, "vector": [5.0, 6.0], "payload": {"a": 3}},
              {"id": 9, "vector": [7.0, 8.0], "payload": {"a": 4}},
              {"id": 9, "vector": [9.0, 1.0], "payload": {"a": 5}}]
    index = str(tmp_path / "old.faiss")
    convert(write_jsonl(tmp_path / "in.jsonl", points), index,
            writer_options={"distance": "Euclid"})
    _without_positions(index)
    warnings: list[str] = []
    got = _ids_and_payloads(index, warnings, 2)
    assert got == [(7, {"a": 1}), (7, {"a": 1}), (9, {"a": 3}), (9, {"a": 3}), (9, {"a": 3})]
    assert warnings == [
        f"{index}.payloads.parquet: 3 of its rows give a FAISS id an earlier row gives (FAISS "
        "id 7 among them), and it records no positions to tell the points of such an id apart "
        "(an older vecferry wrote it): each of them is read with the first row's payload, and "
        "the later rows' payloads are not read; write the index again from its source to keep "
        "them"]


def test_a_sidecar_without_positions_and_no_repeats_reads_without_a_word(tmp_path):
    points = [{"id": i * 3, "vector": [float(i), 1.0], "payload": {"i": i}} for i in range(20)]
    index = str(tmp_path / "old.faiss")
    convert(write_jsonl(tmp_path / "in.jsonl", points), index,
            writer_options={"distance": "Euclid"})
    _without_positions(index)
    warnings: list[str] = []
    got = _ids_and_payloads(index, warnings, 6)
    assert got == [(p["id"], p["payload"]) for p in points] and warnings == []


@pytest.mark.parametrize("held", ["memory", "disk"])
def test_a_sidecar_row_naming_another_id_than_the_index_holds_there_is_named(
        tmp_path, monkeypatch, held):
    """The row at a point's position must name the FAISS id the index holds there: else the
    index is not the one written with the sidecar, and the payload would be another point's."""
    if held == "disk":
        monkeypatch.setattr(faiss_index, "SIDECAR_MEMORY_BYTES", 0)
    points = [{"id": 10 + i, "vector": [float(i), 0.5], "payload": {"i": i}} for i in range(8)]
    index = str(tmp_path / "i.faiss")
    convert(write_jsonl(tmp_path / "in.jsonl", points), index,
            writer_options={"distance": "Euclid"})
    side = index + ".payloads.parquet"
    table = pq.read_table(side)
    fids = pa.compute.if_else(pa.compute.equal(table.column("position"), 5), 99,
                              table.column("faiss_id"))
    pq.write_table(table.set_column(0, "faiss_id", fids), side)
    text = fails(InputError, lambda: convert(index, str(tmp_path / "o.jsonl")))
    assert text == (
        f"{side}: payload sidecar has the row of FAISS id 99 for the point at position 5 of "
        "the index, which holds FAISS id 15 there (the index changed after vecferry wrote it: "
        "write it again from its source, or move the sidecars away to read it with its FAISS "
        "ids and no payloads)")
    assert not (tmp_path / "o.jsonl").exists()


def test_rows_by_id_counts_the_rows_of_a_key_it_had():
    from vecferry.payloadjoin import RowsById

    rows = RowsById(["payload"])
    try:
        rows.add_many(iter([(5, "a"), (3, "b"), (5, "c"), (3, "d"), (5, "e"), (8, "f")]))
        assert rows.take([5, 3, 8, 4]) == [("a",), ("b",), ("f",), None]
        assert rows.repeats() == (3, 3)
    finally:
        rows.close()
    rows = RowsById(["payload"])
    try:
        rows.add_many(iter([(1, "a")]))
        assert rows.repeats() == (0, None)
    finally:
        rows.close()


# ---------------------------------------------------------------- LlamaIndex nodes, one by one


LLAMA = Path(__file__).resolve().parent / "data" / "llamaindex" / "faiss"
LLAMA_HINT = ("(persist the index again with LlamaIndex (index.storage_context.persist), or use "
              "--on-error skip to write such points (with their vectors) to the rejects file "
              "and carry on)")


def llama_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "store"
    shutil.copytree(LLAMA, folder)
    data = json.loads((folder / "index_store.json").read_text())
    (entry,) = data["index_store/data"].values()
    return folder, json.loads(entry["__data__"])["nodes_dict"]


def edit_docstore(folder: Path, change) -> str:
    path = folder / "docstore.json"
    data = json.loads(path.read_text())
    change(data["docstore/data"])
    text = json.dumps(data)  # as LlamaIndex writes it: NaN bare, a lone surrogate escaped
    path.write_text(text)
    return text


def unicode_reason(node: str, at: str) -> str:
    return (f"node {node!r} holds text that is not valid Unicode at {at} (a lone surrogate, "
            "which UTF-8 cannot encode)")


def test_nan_in_one_node_and_a_lone_surrogate_in_another_reject_each_node_alone(tmp_path):
    """The reported case: with NaN in the file, the stdlib parser read the lone surrogate
    into the text too, and SQLite stopped the run with a UnicodeEncodeError."""
    folder, order = llama_folder(tmp_path)
    nan_node, bad_node = order["3"], order["6"]

    def change(nodes):
        nodes[nan_node]["__data__"]["metadata"]["score"] = float("nan")
        nodes[bad_node]["__data__"]["text"] = "bad \ud800 text"

    text = edit_docstore(folder, change)
    assert "NaN" in text and "\\ud800" in text
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (6, 2)
    lines = {r["id"]: r for r in (json.loads(line) for line in
                                  rejects.read_text().splitlines())}
    assert lines[nan_node]["_vecferry_reject"]["reason"] == (
        f"node {nan_node!r} holds NaN at metadata.score, which JSON cannot express")
    assert lines[bad_node]["_vecferry_reject"]["reason"] == unicode_reason(bad_node, "text")
    assert json.loads(lines[bad_node]["payload"]["_node_content"])["text"] == "bad \ud800 text"
    assert len(lines[bad_node]["vector"]) == 8
    written = {p["id"] for p in read_jsonl(tmp_path / "o.jsonl")}
    assert written == set(order.values()) - {nan_node, bad_node}
    text = fails(RecordError, lambda: convert(str(folder), str(tmp_path / "f.jsonl")))
    assert text == (f"{folder / 'docstore.json'}, row 3, id {nan_node!r}: node {nan_node!r} "
                    f"holds NaN at metadata.score, which JSON cannot express {LLAMA_HINT}")


def test_a_lone_surrogate_alone_rejects_its_node_alone(tmp_path):
    """It made the whole docstore "not JSON"; a NaN beside it made it a traceback. Either way
    the node is the bad record, in its text or in a metadata key."""
    folder, order = llama_folder(tmp_path)
    in_text, in_key = order["0"], order["5"]

    def change(nodes):
        nodes[in_text]["__data__"]["text"] = "half of a pair: \udc01"
        nodes[in_key]["__data__"]["metadata"]["k\ud83d"] = 1
        # a whole pair, as json.dump escapes any character past U+FFFF: fine
        nodes[order["2"]]["__data__"]["text"] = "smile \U0001F600"

    edit_docstore(folder, change)
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (6, 2)
    reasons = sorted(json.loads(line)["_vecferry_reject"]["reason"]
                     for line in rejects.read_text().splitlines())
    assert reasons == sorted([unicode_reason(in_text, "text"),
                              unicode_reason(in_key, "metadata.'k\\ud83d'")])
    smile = {p["id"]: p for p in read_jsonl(tmp_path / "o.jsonl")}[order["2"]]
    assert json.loads(smile["payload"]["_node_content"])["text"] == "smile \U0001F600"
    text = fails(RecordError, lambda: convert(str(folder), str(tmp_path / "f.jsonl")))
    assert text == (f"{folder / 'docstore.json'}, row 0, id {in_text!r}: "
                    f"{unicode_reason(in_text, 'text')} {LLAMA_HINT}")


def test_a_lone_surrogate_in_a_streamed_docstore_is_a_clear_error(tmp_path, monkeypatch):
    """ijson's C parser, which streams a big docstore.json, reads a lone high surrogate as
    "?" (the node would change without a word) and fails on a low one with a
    UnicodeDecodeError: refused, as NaN is there, naming the escape."""
    from vecferry import llamaindex_store

    monkeypatch.setattr(llamaindex_store, "WHOLE_JSON_BYTES", 0)
    for half in ("\ud800", "\udc00"):
        folder, order = llama_folder(tmp_path / half.encode("unicode_escape").decode()[2:])

        def change(nodes, half=half, node=order["4"]):
            nodes[node]["__data__"]["text"] = f"x{half}y"

        text = edit_docstore(folder, change)
        escape = half.encode("unicode_escape").decode()
        at = text.index(escape)
        message = fails(InputError, lambda folder=folder: convert(str(folder),
                                                                  str(folder / "o.jsonl")))
        assert message == (
            f"{folder / 'docstore.json'}: holds text with a lone surrogate escape (half of a "
            "UTF-16 pair, which UTF-8 cannot encode; LlamaIndex's json.dump writes it for such "
            "text), which vecferry reads only in a docstore.json of up to 0 MB (it streams "
            f"bigger ones): {escape} at byte {at} (remove the lone surrogates from the nodes' "
            "text in LlamaIndex and persist the index again)")


@pytest.mark.parametrize("streamed", [False, True])
def test_a_docstore_holding_bytes_that_are_not_utf8_is_not_json(tmp_path, monkeypatch, streamed):
    """Bytes that are not UTF-8 are not lone surrogate escapes: the guard leaves them to the
    parsers, which refuse them as they did."""
    from vecferry import llamaindex_store

    if streamed:
        monkeypatch.setattr(llamaindex_store, "WHOLE_JSON_BYTES", 0)
    folder, _ = llama_folder(tmp_path)
    path = folder / "docstore.json"
    text = path.read_bytes()
    at = text.index(b'"text": "') + len(b'"text": "')
    path.write_bytes(text[:at] + b"\xff\xfe" + text[at:])
    message = fails(InputError, lambda: convert(str(folder), str(tmp_path / "o.jsonl")))
    assert message.startswith(f"{path}: not JSON: ")
    assert message.endswith("(persist the index again with LlamaIndex)")


def test_a_streamed_docstore_keeps_surrogate_pairs_and_escaped_backslashes(tmp_path,
                                                                          monkeypatch):
    from vecferry import llamaindex_store

    monkeypatch.setattr(llamaindex_store, "WHOLE_JSON_BYTES", 0)
    folder, order = llama_folder(tmp_path)
    texts = {order["1"]: "smile \U0001F600 " * 50, order["7"]: "a literal \\ud800 in code"}

    def change(nodes):
        for node, text in texts.items():
            nodes[node]["__data__"]["text"] = text

    edit_docstore(folder, change)
    convert(str(folder), str(tmp_path / "o.jsonl"))
    got = {p["id"]: json.loads(p["payload"]["_node_content"])["text"]
           for p in read_jsonl(tmp_path / "o.jsonl")}
    assert {k: got[k] for k in texts} == texts


def test_the_surrogate_guard_reads_any_block_size():
    """A block boundary may cut an escape, a pair or a run of backslashes."""
    import io

    from vecferry.llamaindex_store import _lone_surrogate, _LoneSurrogate, _SurrogateGuard

    rng = np.random.default_rng(2)
    parts = ["a", "\\", "\ud800", "\udc00", "\U0001F600", "u", "d8", "\\ud800", "\udbff"]
    for _ in range(3000):
        value = "".join(parts[i] for i in rng.integers(0, len(parts), int(rng.integers(0, 9))))
        text = json.dumps({"k": value}).encode()
        try:
            json.loads(text)["k"].encode()
            lone = False
        except UnicodeEncodeError:
            lone = True
        assert (_lone_surrogate(text, len(text))[0] is not None) == lone, text
        guard, size, raised = _SurrogateGuard(io.BytesIO(text)), int(rng.integers(1, 16)), False
        try:
            while guard.read(size):
                pass
        except _LoneSurrogate:
            raised = True
        assert raised == lone, (text, size)


def test_a_node_id_with_a_lone_surrogate_in_nodes_dict_is_named(tmp_path):
    """``__data__`` may be an object rather than JSON text; read leniently for its lone
    surrogate, a node id holding one could name no point."""
    folder, _ = llama_folder(tmp_path)
    path = folder / "index_store.json"
    data = json.loads(path.read_text())
    (index_id, entry), = data["index_store/data"].items()
    struct = json.loads(entry["__data__"])
    struct["nodes_dict"]["2"] = "node-\ud800"
    entry["__data__"] = struct
    path.write_text(json.dumps(data))
    text = fails(InputError, lambda: convert(str(folder), str(tmp_path / "o.jsonl")))
    assert text == (f"{path}: index {index_id!r} has no readable nodes_dict: ValueError: FAISS "
                    "id 2 names the node 'node-\\ud800', which is not valid Unicode (a lone "
                    "surrogate) (persist the index again with LlamaIndex)")


def _ids_and_payloads(index: str, warnings: list[str], batch: int) -> list[tuple[Any, Any]]:
    """(id, payload) of each point an index reads back, its warnings added to ``warnings``."""
    reader = faiss_index.FaissReader(index, context=Context(warnings=warnings))
    try:
        return [(p["id"], json.loads(p["payload"])) for b in reader.batches(batch)
                for p in b.to_pylist()]
    finally:
        reader.close()
