"""Review fixes for the docstores read beside a FAISS index: hostile or malformed LangChain
pickles (payloads a few bytes stand for, values containing themselves, sizes asked for) and
malformed LlamaIndex nodes.

The pickles are made here with stand-in classes under LangChain's module names (as in
``test_langchain.py``); the LlamaIndex folders are edited copies of ``tests/data/llamaindex``.
"""

from __future__ import annotations

import decimal
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from roundtrip import read_points
from test_langchain import _fake_langchain
from vecferry.errors import InputError
from vecferry.pipeline import convert

faiss = pytest.importorskip("faiss")

LLAMA = Path(__file__).resolve().parent / "data" / "llamaindex"
HINT = ("(fix the store in LangChain and save it again, or use --on-error skip to write such "
        "points (with their vectors) to the rejects file and carry on)")
REBUILD = ("(save the store again with FAISS.save_local, or move the file away to read the "
           "index without texts and metadata)")
TOO_BIG = ("(counting a value once for each reference to it in the pickle; a payload may take "
           "up to 64 MB)")


def _store(tmp_path: Path, monkeypatch, metadata: object, orphan: object = None,
           protocol: int = 4) -> Path:
    """A LangChain store of two vectors: document "a" (plain) and "b" holding ``metadata``;
    with ``orphan``, a document "c" holding it that no FAISS id names."""
    docstore, document = _fake_langchain(monkeypatch)
    folder = tmp_path / "store"
    folder.mkdir()
    index = faiss.IndexFlatL2(4)
    index.add(np.arange(8, dtype=np.float32).reshape(2, 4))
    faiss.write_index(index, str(folder / "index.faiss"))
    docs = {"a": document("fine", {"k": 1}), "b": document("odd", metadata)}
    if orphan is not None:
        docs["c"] = document("orphan", orphan)
    (folder / "index.pkl").write_bytes(pickle.dumps((docstore(docs), {0: "a", 1: "b"}),
                                                    protocol=protocol))
    return folder


def _fails(folder: Path, tmp_path: Path) -> str:
    with pytest.raises(InputError) as err:
        convert(str(folder), str(tmp_path / "fails.jsonl"))
    assert not (tmp_path / "fails.jsonl").exists()
    return str(err.value)


def _skipped(folder: Path, tmp_path: Path) -> tuple[list[dict], list[dict]]:
    """(points written, rejects lines) of an --on-error skip run."""
    rejects = tmp_path / "rejects.jsonl"
    convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip", rejects=str(rejects))
    lines = [json.loads(x) for x in rejects.read_text().splitlines()] if rejects.exists() else []
    return read_points(str(tmp_path / "o.jsonl"))[1], lines


def _bomb(levels: int) -> list:
    x: list = ["a"]
    for _ in range(levels):
        x = [x, x]
    return x


# ------------------------------------------------------------ B4: payloads a pickle multiplies


def test_shared_references_bomb_is_a_bad_record_found_early(tmp_path, monkeypatch):
    """A few hundred bytes of pickle standing for 2**32 leaves: refused in a few steps (the
    walk counts a shared list's size, it does not expand it), naming the document."""
    folder = _store(tmp_path, monkeypatch, {"bomb": _bomb(32)})
    assert (folder / "index.pkl").stat().st_size < 1000
    where = "metadata.bomb" + "[0]" * 9  # the first list past 64 MB: 2**23 leaves
    assert _fails(folder, tmp_path) == (
        f"{folder / 'index.pkl'}, row 1, id 'b': document 'b' holds more than 64 MB of JSON at "
        f"{where} {TOO_BIG} {HINT}")
    points, lines = _skipped(folder, tmp_path)
    assert [p["id"] for p in points] == ["a"]
    (line,) = lines
    assert line["id"] == "b" and "payload" not in line and line["vector"] == [4, 5, 6, 7]
    assert line["_vecferry_reject"]["reason"] == (
        f"document 'b' holds more than 64 MB of JSON at {where} {TOO_BIG}")


@pytest.mark.parametrize(("metadata", "where"), [
    # one 1 MB text under 100 keys: 100 MB written, 1 MB in the pickle
    ({f"k{i}": "y" * 1_000_000 for i in range(100)}, "metadata"),
    # a decimal's exponent stands for its zeros: written with all of them
    ({"d": decimal.Decimal("1e100000000")}, "metadata.d"),
    # an array a pickle only shaped is not even in memory; its list would be
    ({"arr": np.ndarray((6000, 6000))}, "metadata.arr"),
])
def test_other_payloads_past_the_limit(tmp_path, monkeypatch, metadata, where):
    if "k0" in metadata:  # the same str object each time, as a pickle memo makes it
        text = metadata["k0"]
        metadata = {k: text for k in metadata}
    folder = _store(tmp_path, monkeypatch, metadata)
    assert _fails(folder, tmp_path) == (
        f"{folder / 'index.pkl'}, row 1, id 'b': document 'b' holds more than 64 MB of JSON at "
        f"{where} {TOO_BIG} {HINT}")


def test_shared_values_within_the_limit_are_written_each_time(tmp_path, monkeypatch):
    shared = {"x": [1, 2, {"y": "z"}]}
    folder = _store(tmp_path, monkeypatch, {"a": shared, "b": [shared, shared], "s": {1, 2}})
    _, points = read_points(str(folder))
    assert points[1]["payload"]["metadata"] == {
        "a": shared, "b": [shared, shared], "s": [1, 2]}


# ------------------------------------------------------- B5: values containing themselves, depth


def test_self_reference_is_a_bad_record(tmp_path, monkeypatch):
    s: list = []
    s.append(s)
    d: dict = {"ok": 1}
    d["me"] = d
    folder = _store(tmp_path, monkeypatch, {"self": s}, orphan={"inner": d})
    assert _fails(folder, tmp_path) == (
        f"{folder / 'index.pkl'}, row 1, id 'b': document 'b' holds a value that contains "
        f"itself at metadata.self[0] (it refers back to metadata.self), which JSON cannot "
        f"express {HINT}")
    points, lines = _skipped(folder, tmp_path)
    assert [p["id"] for p in points] == ["a"]
    reasons = {ln["id"]: ln["_vecferry_reject"]["reason"] for ln in lines}
    assert reasons == {
        "b": "document 'b' holds a value that contains itself at metadata.self[0] (it refers "
             "back to metadata.self), which JSON cannot express",
        "c": "document 'c' has no vector in the FAISS index: no entry of index_to_docstore_id "
             "names it (its payload is left out: it holds a value that contains itself at "
             "metadata.inner.me (it refers back to metadata.inner), which JSON cannot express)"}
    assert all("payload" not in ln or ln["payload"] is None for ln in lines)


def _nested(levels: int) -> object:
    x: object = 1
    for _ in range(levels):
        x = [x]
    return x


def test_nesting_past_what_json_writers_take_is_a_bad_record(tmp_path, monkeypatch):
    # the payload's dict, the metadata dict and 252 lists: orjson's 254 levels, written
    folder = _store(tmp_path, monkeypatch, {"x": _nested(252)})
    _, points = read_points(str(folder))
    assert points[1]["payload"]["metadata"] == {"x": _nested(252)}
    shutil.rmtree(folder)
    # deep enough for Python's own recursion limit, which crashed the reader before
    folder = _store(tmp_path, monkeypatch, {"x": _nested(253)})
    message = f"{folder / 'index.pkl'}, row 1, id 'b': document 'b' nests lists and dicts " \
              "more than 254 levels deep at metadata.x" + "[0]" * 11 + "..., deeper than " \
              f"vecferry writes JSON {HINT}"
    assert _fails(folder, tmp_path) == message
    shutil.rmtree(folder)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # pickle.dumps recurses too
    try:
        folder = _store(tmp_path, monkeypatch, {"x": _nested(2000)})
    finally:
        sys.setrecursionlimit(limit)
    assert _fails(folder, tmp_path) == message


def test_integer_longer_than_python_writes_is_a_bad_record(tmp_path, monkeypatch):
    digits = sys.get_int_max_str_digits()
    folder = _store(tmp_path, monkeypatch, {"n": 2 ** 20000, "tuple_key": {(1, 2): 3}})
    assert _fails(folder, tmp_path) == (
        f"{folder / 'index.pkl'}, row 1, id 'b': document 'b' holds an integer of more than "
        f"{digits} digits at metadata.n, more than Python writes as text {HINT}")


# --------------------------------------------------------------------- B6: sizes a pickle asks


class _SizedBytearray:
    def __reduce__(self):
        return bytearray, (10 ** 13,)


class _HugeArray:
    def __reduce__(self):
        return np.ndarray, ((10 ** 7, 10 ** 7),)


def test_bytearray_by_size_is_refused_naming_the_file(tmp_path, monkeypatch):
    folder = _store(tmp_path, monkeypatch, {"x": _SizedBytearray()})
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value) == (
        f"{folder / 'index.pkl'}: cannot read the LangChain docstore: it asks for a bytearray "
        f"of {10 ** 13} zero bytes, which no pickled bytearray does (a pickle holds the bytes "
        f"themselves) {REBUILD}")


def test_array_past_memory_is_an_input_error_naming_the_file(tmp_path, monkeypatch):
    folder = _store(tmp_path, monkeypatch, {"x": _HugeArray()})
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    message = str(err.value)
    assert message.startswith(
        f"{folder / 'index.pkl'}: cannot read the LangChain docstore: it asks for more memory "
        "than there is (MemoryError: Unable to allocate ")
    assert message.endswith(f") {REBUILD}")


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_pickled_bytearrays_still_load(tmp_path, monkeypatch, protocol):
    folder = _store(tmp_path, monkeypatch, {"x": bytearray(b"\x00ab")}, protocol=protocol)
    _, points = read_points(str(folder))
    assert points[1]["payload"]["metadata"] == {"x": "AGFi"}


# ---------------------------------------------------------------- B7: malformed LlamaIndex nodes


def _llama_copy(tmp_path: Path, change) -> tuple[Path, str]:
    """A copy of the LlamaIndex fixture whose first node ``change`` edited, and its id."""
    folder = tmp_path / "li"
    shutil.copytree(LLAMA / "faiss", folder)
    path = folder / "docstore.json"
    data = json.loads(path.read_text())
    node_id = next(iter(data["docstore/data"]))
    change(data["docstore/data"][node_id])
    path.write_text(json.dumps(data))
    return folder, node_id


def test_node_data_text_that_is_not_json(tmp_path):
    folder, node_id = _llama_copy(tmp_path, lambda e: e.__setitem__("__data__", "{not json"))
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value) == (
        f"{folder / 'docstore.json'}: node {node_id!r} has \"__data__\" text that is not JSON: "
        "unexpected character, expected a string key: line 1 column 2 (char 1) (persist the "
        "index again with LlamaIndex)")


@pytest.mark.parametrize(("key", "value", "kind"), [
    ("metadata", "hello", "string"),
    ("metadata", ["ab", "cd"], "array"),  # dict() made {"a": "b", "c": "d"} of it
    ("relationships", [1, 2], "array"),
])
def test_node_fields_that_are_not_objects_are_bad_records(tmp_path, key, value, kind):
    folder, node_id = _llama_copy(tmp_path, lambda e: e["__data__"].__setitem__(key, value))
    reason = f"node {node_id!r} has {key} of JSON type {kind}, not an object as LlamaIndex " \
             "writes it"
    fix = ("(persist the index again with LlamaIndex (index.storage_context.persist), or use "
           "--on-error skip to write such points (with their vectors) to the rejects file and "
           "carry on)")
    message = _fails(folder, tmp_path)
    assert message.startswith(f"{folder / 'docstore.json'}, row ")
    assert message.endswith(f", id {node_id!r}: {reason} {fix}")
    points, lines = _skipped(folder, tmp_path)
    assert node_id not in [p["id"] for p in points] and len(points) == 7
    (line,) = lines
    assert line["id"] == node_id and "payload" not in line and len(line["vector"]) == 8
    assert line["_vecferry_reject"]["reason"] == reason
    assert line["_vecferry_reject"]["source"] == str(folder / "docstore.json")


# ------------------------------------------------------- C3: one warning for a foreign pickle


def test_foreign_pickle_warns_once_not_also_that_there_is_none(tmp_path, monkeypatch):
    folder = _store(tmp_path, monkeypatch, {})
    (folder / "index.pkl").write_bytes(pickle.dumps({"not": "a docstore"}))
    report = convert(str(folder), str(tmp_path / "o.jsonl"))
    assert report["warnings"] == [
        f"{folder / 'index.pkl'}: not read, it is not LangChain's FAISS docstore"]
