"""LlamaIndex folders persisted from a FaissVectorStore: read with their docstore.

The folders under ``tests/data/llamaindex/`` were written by LlamaIndex itself (see the script
there), and ``faiss.expected.json`` holds the payload LlamaIndex's ``node_to_metadata_dict``
makes of each node; LlamaIndex is not needed to read them. Faults are made by editing copies of
the JSON stores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from roundtrip import read_points
from vecferry import llamaindex_store
from vecferry.errors import InputError, UsageError
from vecferry.pipeline import convert
from vecferry.verification import verify

faiss = pytest.importorskip("faiss")

DATA = Path(__file__).resolve().parent / "data" / "llamaindex"


def folder_copy(tmp_path: Path, name: str = "faiss") -> Path:
    out = tmp_path / name
    shutil.copytree(DATA / name, out)
    return out


def nodes_dict(folder: Path) -> dict[str, str]:
    data = json.loads((folder / "index_store.json").read_text())
    (entry,) = data["index_store/data"].values()
    return json.loads(entry["__data__"])["nodes_dict"]


def edit_nodes_dict(folder: Path, change) -> None:
    path = folder / "index_store.json"
    data = json.loads(path.read_text())
    (entry,) = data["index_store/data"].values()
    struct = json.loads(entry["__data__"])
    change(struct["nodes_dict"])
    entry["__data__"] = json.dumps(struct)
    path.write_text(json.dumps(data))


BAD_RECORD_HINT = ("(persist the index again with LlamaIndex (index.storage_context.persist), "
                   "or use --on-error skip to write such points (with their vectors) to the "
                   "rejects file and carry on)")


def first_failure(folder: Path, tmp_path: Path) -> str:
    """The message of a default (--on-error fail) conversion of ``folder``."""
    with pytest.raises(InputError) as err:
        convert(str(folder), str(tmp_path / "fails.jsonl"))
    assert not (tmp_path / "fails.jsonl").exists()
    return str(err.value)


def edit_docstore(folder: Path, change) -> None:
    path = folder / "docstore.json"
    data = json.loads(path.read_text())
    change(data["docstore/data"])
    path.write_text(json.dumps(data))


def test_reads_node_ids_llamaindex_payloads_and_exact_vectors(tmp_path):
    folder = folder_copy(tmp_path)
    manifest, points = read_points(str(folder), batch_size=3)
    order = nodes_dict(folder)
    assert manifest.id_kind == "uuid"
    assert [p["id"] for p in points] == [order[str(i)] for i in range(len(order))]
    expected = json.loads((DATA / "faiss.expected.json").read_text())
    assert {p["id"]: p["payload"] for p in points} == expected
    index = faiss.read_index(str(folder / "default__vector_store.json"))
    want = index.reconstruct_n(0, index.ntotal)
    got = np.array([p["vector"] for p in points], dtype=np.float32)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()
    facts = manifest.extra["faiss"]
    assert facts["ids"] == "LlamaIndex node ids (nodes_dict)"
    assert (facts["docstore"]["format"], facts["docstore"]["documents"]) == ("llamaindex", 8)
    assert manifest.vectors[0].distance == "Euclid"


def test_inner_product_folder_and_the_index_file_named_directly(tmp_path):
    folder = folder_copy(tmp_path, "faiss_ip")
    manifest, points = read_points(str(folder / "default__vector_store.json"), format="faiss")
    assert manifest.vectors[0].distance == "Dot"
    assert sorted(p["payload"]["doc_id"] for p in points) == ["doc-1", "doc-2"]
    assert sorted(p["payload"]["k"] for p in points) == [1, 2]


def test_big_docstore_is_streamed(tmp_path, monkeypatch):
    folder = folder_copy(tmp_path)
    _, whole = read_points(str(folder))
    monkeypatch.setattr(llamaindex_store, "WHOLE_JSON_BYTES", 0)
    _, streamed = read_points(str(folder))
    assert [(p["id"], p["payload"]) for p in streamed] == [(p["id"], p["payload"]) for p in whole]


def test_to_local_qdrant_and_verify(tmp_path):
    folder = folder_copy(tmp_path)
    target = f"qdrant-local://{tmp_path}/q/nodes"
    assert convert(str(folder), target)["written"] == 8
    assert verify(str(folder), target)["ok"]
    _, back = read_points(target)
    expected = json.loads((DATA / "faiss.expected.json").read_text())
    assert {p["id"]: p["payload"] for p in back} == expected


def test_simple_vector_store_is_refused_by_name(tmp_path):
    folder = folder_copy(tmp_path, "simple")
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value) == (
        f"{folder}: is a LlamaIndex folder whose vectors are in its SimpleVectorStore "
        "(default__vector_store.json holds JSON), not in a FAISS index (vecferry reads "
        "LlamaIndex folders persisted from a FaissVectorStore)")


def test_faults_are_bad_records(tmp_path):
    folder = folder_copy(tmp_path)
    order = nodes_dict(folder)
    gone = order["2"]
    edit_docstore(folder, lambda nodes: nodes.pop(gone))
    edit_nodes_dict(folder, lambda nd: (nd.pop("5"), nd.update({"40": order["5"]})))
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    reasons = sorted(json.loads(line)["_vecferry_reject"]["reason"]
                     for line in rejects.read_text().splitlines())
    assert reasons == sorted([
        f"docstore.json has no node {gone!r} (nodes_dict names it for FAISS id 2)",
        "FAISS id 5 is in no nodes_dict of index_store.json, so it has no node",
        f"node {order['5']!r} has no vector in the FAISS index: nodes_dict names it for FAISS "
        "id 40, which the index does not hold",
    ])
    assert (report["written"], report["rejected"]) == (6, 3)
    assert first_failure(folder, tmp_path) == (
        f"{folder / 'docstore.json'}, row 2, id {gone!r}: docstore.json has no node {gone!r} "
        f"(nodes_dict names it for FAISS id 2) {BAD_RECORD_HINT}")


def test_nodes_of_other_indexes_are_counted_not_read(tmp_path):
    folder = folder_copy(tmp_path)

    def add(nodes):
        node = dict(next(iter(nodes.values())))
        node["__data__"] = dict(node["__data__"], id_="other-node", text="not in this index")
        nodes["other-node"] = node

    edit_docstore(folder, add)
    report = convert(str(folder), str(tmp_path / "o.jsonl"))
    assert report["written"] == 8 and report.get("rejected", 0) == 0
    assert (f"{folder / 'docstore.json'}: 1 of its 9 nodes are in no vector index of "
            "index_store.json (a docstore can serve several indexes); they have no vector "
            "here and are not read") in report["warnings"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("docstore.json", b'{"docstore/data": {"a": ', "not JSON: "),
    ("docstore.json", b'{"nodes": {}}', 'has no "docstore/data" object, as LlamaIndex writes it'),
    ("index_store.json", b"[]", 'has no "index_store/data" object, as LlamaIndex writes it'),
    ("index_store.json",
     b'{"index_store/data": {"i1": {"__type__": "vector_store", "__data__": "{}"}}}',
     "index 'i1' has no readable nodes_dict: KeyError: 'nodes_dict'"),
    ("index_store.json",
     b'{"index_store/data": {"i1": {"__type__": "vector_store", '
     b'"__data__": "{\\"nodes_dict\\": {\\"0\\": 7}}"}}}',
     "index 'i1' has no readable nodes_dict: ValueError: FAISS id 0 names the node 7, which is "
     "not a node id (non-empty text)"),
    ("index_store.json",
     b'{"index_store/data": {"i1": {"__type__": "vector_store", '
     b'"__data__": {"nodes_dict": {"0": ""}}}}}',
     "index 'i1' has no readable nodes_dict: ValueError: FAISS id 0 names the node '', which "
     "is not a node id (non-empty text)"),
])
def test_damaged_store_files(tmp_path, name, content, message):
    folder = folder_copy(tmp_path)
    (folder / name).write_bytes(content)
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value).startswith(f"{folder / name}: {message}")


def test_payloads_option_conflicts_with_the_docstore(tmp_path):
    folder = folder_copy(tmp_path)
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"0": {"a": 1}}))
    with pytest.raises(UsageError) as err:
        convert(str(folder), str(tmp_path / "o.jsonl"), reader_options={"payloads": str(meta)})
    assert str(err.value) == (
        f"{folder / 'default__vector_store.json'}: --payloads {meta} and the LlamaIndex "
        "docstore beside the index would both give the payloads (the docstore gives each point "
        f"its node id, text and metadata; to join {meta} by FAISS id instead, copy the index "
        "file elsewhere)")


def test_bucket_folder(tmp_path, opts, s3, bucket):
    folder = folder_copy(tmp_path)
    for f in folder.iterdir():
        s3.put(str(f), f"{bucket}/li/{f.name}")
    report = convert(f"s3://{bucket}/li/", str(tmp_path / "o.jsonl"), storage_options=opts)
    assert report["written"] == 8
    _, got = read_points(str(tmp_path / "o.jsonl"))
    expected = json.loads((DATA / "faiss.expected.json").read_text())
    assert {p["id"]: p["payload"] for p in got} == expected


def test_inspect_names_the_docstore(tmp_path):
    from click.testing import CliRunner

    from vecferry.cli import main

    folder = folder_copy(tmp_path)
    result = CliRunner().invoke(main, ["inspect", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"docstore:  {folder / 'docstore.json'} (LlamaIndex, 8 nodes; payload keys " \
           "<metadata>, _node_content, _node_type, document_id, doc_id, ref_doc_id)" \
           in result.output


def _nan_metadata(folder: Path) -> tuple[str, str]:
    """Give two indexed nodes NaN / -Infinity metadata, written as LlamaIndex's json.dump
    writes them; returns their node ids."""
    order = nodes_dict(folder)
    first, second = order["1"], order["4"]

    def change(nodes):
        nodes[first]["__data__"]["metadata"]["score"] = float("nan")
        nodes[second]["__data__"]["metadata"]["rank"] = [1, float("-inf")]

    path = folder / "docstore.json"
    data = json.loads(path.read_text())
    change(data["docstore/data"])
    path.write_text(json.dumps(data))  # allow_nan: NaN and -Infinity as bare words
    assert "NaN" in path.read_text() and "-Infinity" in path.read_text()
    return first, second


def test_nan_metadata_makes_its_node_a_bad_record(tmp_path):
    folder = folder_copy(tmp_path)
    first, second = _nan_metadata(folder)
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (6, 2)
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted(r["_vecferry_reject"]["reason"] for r in lines) == sorted([
        f"node {first!r} holds NaN at metadata.score, which JSON cannot express",
        f"node {second!r} holds -Infinity at metadata.rank[1], which JSON cannot express"])
    kept = {r["id"]: r for r in lines}
    assert np.isnan(kept[first]["payload"]["score"])
    assert kept[second]["payload"]["rank"] == [1, float("-inf")]
    assert len(kept[first]["vector"]) == 8
    assert first_failure(folder, tmp_path) == (
        f"{folder / 'docstore.json'}, row 1, id {first!r}: node {first!r} holds NaN at "
        f"metadata.score, which JSON cannot express {BAD_RECORD_HINT}")


def test_nan_in_a_streamed_docstore_is_a_clear_error(tmp_path, monkeypatch):
    folder = folder_copy(tmp_path)
    _nan_metadata(folder)
    monkeypatch.setattr(llamaindex_store, "WHOLE_JSON_BYTES", 0)
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value).startswith(
        f"{folder / 'docstore.json'}: holds NaN or Infinity (LlamaIndex writes them for such "
        "metadata values; JSON has no such values), which vecferry reads only in a "
        "docstore.json of up to 0 MB (it streams bigger ones): lexical error")
    assert "(replace NaN and infinite metadata values (with None) in LlamaIndex and persist " \
           "the index again)" in str(err.value)
