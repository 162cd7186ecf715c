"""LangChain FAISS stores (``index.faiss`` + ``index.pkl``): read with their docstore.

The stores under ``tests/data/langchain/`` were saved by LangChain itself (see the script
there); LangChain is not needed to read them. The pickles the security tests need (a class that
would run a command) are made here, with stand-in modules under LangChain's names.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from roundtrip import read_points
from vecferry.cli import main
from vecferry.errors import InputError, UsageError
from vecferry.pipeline import convert
from vecferry.verification import verify

faiss = pytest.importorskip("faiss")

DATA = Path(__file__).resolve().parent / "data" / "langchain"
UUID_RE = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def store(tmp_path: Path, name: str) -> Path:
    """A copy of a fixture store (tests never write beside the originals)."""
    out = tmp_path / name
    shutil.copytree(DATA / name, out)
    return out


def index_vectors(path: Path) -> np.ndarray:
    index = faiss.read_index(str(path))
    return index.reconstruct_n(0, index.ntotal)


def rows(points: list[dict]) -> list[tuple]:
    """(id, payload, vector bytes) of each point, in order."""
    return [(p["id"], p.get("payload"), np.asarray(p["vector"], np.float32).tobytes())
            for p in points]


def expected_metadata(i: int) -> dict:
    """The metadata make_fixtures.py gave document i, as JSON holds it."""
    return {"source": f"s{i}.txt", "page": i, "nested": {"a": [1, None, {"b": "c"}]},
            "none": None, "big": 2**60 + i, "when": f"2024-05-01T12:30:0{i}",
            "price": "12.50", "tags": ["x", "y"], "score": 0.25}


# ------------------------------------------------------------------------------ reading


def test_folder_reads_ids_texts_metadata_and_exact_vectors(tmp_path):
    folder = store(tmp_path, "current")
    manifest, points = read_points(str(folder), batch_size=2)
    # LangChain's uuid4 ids, in the order the docstore spells them (its insertion order, which
    # is the FAISS order here: the deleted second document shifted the rest down by one)
    spelled = re.findall(UUID_RE, (folder / "index.pkl").read_bytes())
    uuids = list(dict.fromkeys(m.decode() for m in spelled))
    assert manifest.id_kind == "uuid"
    assert [p["id"] for p in points] == uuids and len(uuids) == 5
    assert [p["payload"] for p in points] == [
        {"page_content": f"text {i} ünï ✓", "metadata": expected_metadata(i)} for i in range(5)]
    got = np.array([p["vector"] for p in points], dtype=np.float32)
    assert got.view(np.uint32).tolist() == index_vectors(folder / "index.faiss").view(
        np.uint32).tolist()
    assert manifest.vectors[0].distance == "Euclid"
    facts = manifest.extra["faiss"]
    assert facts["docstore"]["documents"] == 5
    assert facts["docstore"]["location"] == str(folder / "index.pkl")
    assert manifest.source["location"] == str(folder / "index.faiss")


def test_custom_index_name_and_string_ids(tmp_path):
    folder = store(tmp_path, "custom_ids")
    manifest, points = read_points(str(folder / "docs.faiss"))
    assert manifest.id_kind == "string"
    assert [p["id"] for p in points] == ["a-1", "b-2", "c-3"]
    assert [p["payload"]["page_content"] for p in points] == [f"text {i} ünï ✓" for i in range(3)]
    assert manifest.vectors[0].distance == "Dot"  # inner product, vectors not unit length
    # the folder finds docs.faiss too: it is the only index there
    assert [p["id"] for p in read_points(str(folder))[1]] == ["a-1", "b-2", "c-3"]


def test_legacy_pydantic1_store(tmp_path):
    folder = store(tmp_path, "legacy")
    manifest, points = read_points(str(folder))
    assert manifest.id_kind == "uuid"
    assert [p["payload"] for p in points] == [
        {"page_content": f"old text {i}", "metadata": {"source": f"s{i}.txt", "page": i}}
        for i in range(3)]


def test_inspect_names_the_docstore(tmp_path):
    folder = store(tmp_path, "current")
    result = CliRunner().invoke(main, ["inspect", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"docstore:  {folder / 'index.pkl'} (LangChain, 5 documents; payload keys " \
           "page_content, metadata)" in result.output
    assert "index:     IndexFlatL2; distance: metric L2" in result.output


# ---------------------------------------------------------------------- into Qdrant and back


def test_to_local_qdrant_verifies_and_keeps_langchain_shape(tmp_path):
    folder = store(tmp_path, "current")
    target = f"qdrant-local://{tmp_path}/q/docs"
    report = convert(str(folder), target)
    assert report["written"] == 5
    assert verify(str(folder), target)["ok"]
    _, src = read_points(str(folder))
    _, back = read_points(target)
    assert {p["id"]: p["payload"] for p in back} == {p["id"]: p["payload"] for p in src}
    # langchain_qdrant reads the text and metadata from these two keys by default
    assert all(set(p["payload"]) == {"page_content", "metadata"} for p in back)


def test_round_trip_through_parquet_back_to_faiss(tmp_path):
    folder = store(tmp_path, "custom_ids")
    convert(str(folder), str(tmp_path / "p.parquet"))
    convert(str(tmp_path / "p.parquet"), str(tmp_path / "again.faiss"))
    _, first = read_points(str(folder))
    _, again = read_points(str(tmp_path / "again.faiss"))
    assert rows(again) == rows(first)


def _digest(location: str) -> tuple[int, str]:
    result = verify(location)
    return result["source"]["count"], result["source"]["digest"]


def test_a_store_runs_in_one_process(tmp_path):
    """Each process would unpickle the whole docstore, which costs more than the index: the
    plan is one partition, whatever --workers says, and the result is the same."""
    folder = store(tmp_path, "broken")
    one = convert(str(folder), str(tmp_path / "one.parquet"), workers=1, on_error="skip",
                  rejects=str(tmp_path / "one.rejects.jsonl"))
    many = convert(str(folder), str(tmp_path / "many") + "/", to_format="parquet", workers=2,
                   partition_size=64, on_error="skip",
                   rejects=str(tmp_path / "many.rejects.jsonl"))
    assert "partitions" not in many, many
    assert _digest(str(tmp_path / "many") + "/") == _digest(str(tmp_path / "one.parquet"))
    assert (one["written"], one["rejected"]) == (many["written"], many["rejected"]) == (2, 5)
    # the same index without its docstore is cut into partitions
    (folder / "index.pkl").unlink()
    plain = convert(str(folder), str(tmp_path / "plain") + "/", to_format="parquet", workers=2,
                    partition_size=64)
    assert plain.get("partitions", 0) > 1, plain


# ------------------------------------------------------------------------------ bad input


def test_broken_store_fails_at_the_first_bad_point(tmp_path):
    folder = store(tmp_path, "broken")
    with pytest.raises(InputError) as err:
        convert(str(folder), str(tmp_path / "o.jsonl"))
    assert str(err.value) == (
        f"{folder / 'index.pkl'}, row 1, id 1: FAISS id 1 has no entry in index_to_docstore_id, "
        "so it has no docstore id or document (fix the store in LangChain and save it again, or "
        "use --on-error skip to write such points (with their vectors) to the rejects file and "
        "carry on)")
    assert not (tmp_path / "o.jsonl").exists()


def test_broken_store_rejects_each_fault_and_the_fixed_lines_convert(tmp_path):
    folder = store(tmp_path, "broken")
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (2, 5)
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    by_reason = {ln["_vecferry_reject"]["reason"]: ln for ln in lines}
    vectors = index_vectors(folder / "index.faiss")
    missing_entry = by_reason["FAISS id 1 has no entry in index_to_docstore_id, so it has no "
                              "docstore id or document"]
    assert missing_entry["id"] == 1 and missing_entry["vector"] == vectors[1].tolist()
    no_doc = [ln for r, ln in by_reason.items() if r.startswith("the docstore has no document ")]
    assert len(no_doc) == 1 and no_doc[0]["_vecferry_reject"]["reason"].endswith(
        "(index_to_docstore_id names it for FAISS id 2)")
    nan = [ln for r, ln in by_reason.items() if r.endswith(
        "holds NaN at metadata.score, which JSON cannot express")]
    assert len(nan) == 1 and nan[0]["vector"] == vectors[3].tolist()
    assert "NaN" in rejects.read_text()  # kept as it was, so an unfixed re-run names it again
    orphans = sorted(ln["payload"]["page_content"] for r, ln in by_reason.items()
                     if r.endswith("has no vector in the FAISS index: no entry of "
                                   "index_to_docstore_id names it"))
    assert orphans == ["no vector", "text 1 ünï ✓"]
    # fix the NaN line, drop the lines without vectors, and convert the rejects file
    fixed = tmp_path / "fixed.jsonl"
    keep = []
    for ln in lines:
        if "vector" not in ln:
            continue
        if "payload" in ln:
            ln["payload"]["metadata"]["score"] = None
        ln.pop("_vecferry_reject")
        keep.append(json.dumps(ln))
    fixed.write_text("\n".join(keep) + "\n")
    again = convert(str(fixed), str(tmp_path / "fixed.parquet"))
    assert again["written"] == 3


def test_foreign_class_costs_its_document_not_the_store(tmp_path):
    folder = store(tmp_path, "foreign_class")
    with pytest.raises(InputError) as err:
        convert(str(folder), str(tmp_path / "o.jsonl"))
    reason = (
        "document {!r} holds a pathlib.PurePosixPath object at metadata.path, which vecferry "
        "does not load from a pickle (loading a class runs its code); it loads str, numbers, "
        "lists, dicts, datetime (with zoneinfo or pytz zones), Decimal, UUID, sets, numpy and "
        "pandas values")
    spelled = re.findall(UUID_RE, (folder / "index.pkl").read_bytes())
    doc_id = spelled[0].decode()
    assert str(err.value) == (
        f"{folder / 'index.pkl'}, row 0, id {doc_id!r}: {reason.format(doc_id)} (fix the store "
        "in LangChain and save it again, or use --on-error skip to write such points (with "
        "their vectors) to the rejects file and carry on)")
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (0, 1)
    (line,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert line["payload"] == {"page_content": "path",
                               "metadata": {"path": "<pathlib.PurePosixPath object>"}}


def _fake_langchain(monkeypatch) -> tuple[type, type]:
    """Classes pickled under LangChain's module names, without LangChain."""
    store_mod = types.ModuleType("langchain_community.docstore.in_memory")
    doc_mod = types.ModuleType("langchain_core.documents.base")

    class InMemoryDocstore:
        def __init__(self, docs):
            self._dict = docs

    class Document:
        def __init__(self, text, metadata):
            self.page_content, self.metadata = text, metadata

        def __getstate__(self):
            return {"__dict__": dict(self.__dict__)}

    InMemoryDocstore.__module__, Document.__module__ = store_mod.__name__, doc_mod.__name__
    InMemoryDocstore.__qualname__, Document.__qualname__ = "InMemoryDocstore", "Document"
    store_mod.InMemoryDocstore, doc_mod.Document = InMemoryDocstore, Document
    for name in ("langchain_community", "langchain_community.docstore", store_mod.__name__,
                 "langchain_core", "langchain_core.documents", doc_mod.__name__):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, store_mod.__name__, store_mod)
    monkeypatch.setitem(sys.modules, doc_mod.__name__, doc_mod)
    return InMemoryDocstore, Document


def _one_vector_index(folder: Path) -> None:
    folder.mkdir()
    index = faiss.IndexFlatL2(4)
    index.add(np.ones((1, 4), dtype=np.float32))
    faiss.write_index(index, str(folder / "index.faiss"))


class _RunsCommand:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_class_that_would_run_code_is_never_run(tmp_path, monkeypatch):
    docstore, document = _fake_langchain(monkeypatch)
    marker = tmp_path / "ran"
    folder = tmp_path / "store"
    _one_vector_index(folder)
    doc = document("text", {"x": _RunsCommand(str(marker))})
    (folder / "index.pkl").write_bytes(pickle.dumps((docstore({"a": doc}), {0: "a"})))
    with pytest.raises(InputError) as err:
        convert(str(folder), str(tmp_path / "o.jsonl"))
    assert f"document 'a' holds a {os.system.__module__}.system object at metadata.x" in \
        str(err.value)
    assert not marker.exists()
    # plain pickle.load would have run it: the file is what the test says it is
    pickle.loads((folder / "index.pkl").read_bytes())
    assert marker.exists()


def test_integer_docstore_ids_stay_integers(tmp_path, monkeypatch):
    docstore, document = _fake_langchain(monkeypatch)
    folder = tmp_path / "store"
    _one_vector_index(folder)
    (folder / "index.pkl").write_bytes(pickle.dumps(
        (docstore({7: document("seven", {})}), {0: 7})))
    manifest, points = read_points(str(folder))
    assert manifest.id_kind == "int"
    assert points[0]["id"] == 7 and points[0]["payload"] == {"page_content": "seven",
                                                              "metadata": {}}


def test_truncated_docstore(tmp_path):
    folder = store(tmp_path, "current")
    data = (folder / "index.pkl").read_bytes()
    (folder / "index.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value).startswith(
        f"{folder / 'index.pkl'}: cannot read the LangChain docstore, the file is truncated or "
        "corrupt: ")
    assert str(err.value).endswith(
        "(save the store again with FAISS.save_local, or move the file away to read the index "
        "without texts and metadata)")


def test_unrelated_pickle_beside_the_index_is_left_alone_with_a_warning(tmp_path):
    folder = store(tmp_path, "current")
    (folder / "index.pkl").write_bytes(pickle.dumps({"not": "a docstore"}))
    report = convert(str(folder), str(tmp_path / "o.jsonl"))
    assert f"{folder / 'index.pkl'}: not read, it is not LangChain's FAISS docstore" in \
        report["warnings"]
    _, points = read_points(str(tmp_path / "o.jsonl"))
    assert [p["id"] for p in points] == [0, 1, 2, 3, 4]
    assert all(p["payload"] is None for p in points)


def test_payloads_option_conflicts_with_the_docstore(tmp_path):
    folder = store(tmp_path, "current")
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"0": {"a": 1}}))
    with pytest.raises(UsageError) as err:
        convert(str(folder), str(tmp_path / "o.jsonl"), reader_options={"payloads": str(meta)})
    assert str(err.value) == (
        f"{folder / 'index.faiss'}: --payloads {meta} and the LangChain docstore "
        f"{folder / 'index.pkl'} would both give the payloads (the docstore gives each point its "
        f"docstore id and its text and metadata; to join {meta} by FAISS id instead, move "
        f"{folder / 'index.pkl'} away)")


def test_vecferry_sidecars_come_before_a_pickle(tmp_path):
    folder = store(tmp_path, "current")
    convert(str(folder), str(tmp_path / "o.parquet"))
    out = tmp_path / "idx"
    out.mkdir()
    convert(str(tmp_path / "o.parquet"), str(out / "index.faiss"))
    shutil.copy(folder / "index.pkl", out / "index.pkl")
    report = convert(str(out / "index.faiss"), str(tmp_path / "back.jsonl"))
    assert any(w.startswith(f"{out / 'index.pkl'}: not read; the index has vecferry's sidecars")
               for w in report["warnings"])
    _, back = read_points(str(tmp_path / "back.jsonl"))
    _, src = read_points(str(folder))
    assert [(p["id"], p["payload"]) for p in back] == [(p["id"], p["payload"]) for p in src]


def test_folder_with_several_indexes_needs_a_name(tmp_path):
    folder = store(tmp_path, "custom_ids")
    shutil.copy(folder / "docs.faiss", folder / "other.faiss")
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value) == (
        f"{folder}: is a directory, not a FAISS index file (docs.faiss, other.faiss) (name the "
        "index file; a LangChain store is FOLDER/NAME.faiss with NAME.pkl beside it)")


def test_bucket_store(tmp_path, opts, s3, bucket):
    folder = store(tmp_path, "current")
    for name in ("index.faiss", "index.pkl"):
        s3.put(str(folder / name), f"{bucket}/lc/{name}")
    report = convert(f"s3://{bucket}/lc/index.faiss", str(tmp_path / "o.jsonl"),
                     storage_options=opts)
    assert report["written"] == 5
    _, got = read_points(str(tmp_path / "o.jsonl"))
    _, src = read_points(str(folder))
    assert rows(got) == rows(src)


@pytest.mark.parametrize(("docs", "mapping", "message"), [
    ({"a": ("A", {}), "b": ("B", {})}, {0: "a", 5: "b"},
     "document 'b' has no vector in the FAISS index: index_to_docstore_id names it for FAISS "
     "id 5, which the index does not hold"),
    ({"": ("A", {})}, {0: ""},
     "docstore id '' of FAISS id 0 cannot be a point id: id is an empty string"),
    ({"12": ("A", {}), 3: ("B", {})}, {0: "12", 1: 3},
     "docstore id '12' of FAISS id 0 cannot be a point id: string id '12' looks like an integer "
     "and cannot be told apart from one in a stream that mixes integer and string ids"),
])
def test_docstore_faults_made_by_hand(tmp_path, monkeypatch, docs, mapping, message):
    docstore, document = _fake_langchain(monkeypatch)
    folder = tmp_path / "store"
    _one_vector_index(folder)
    if len(mapping) > 1 and 1 in mapping:  # a second vector for FAISS id 1
        index = faiss.read_index(str(folder / "index.faiss"))
        index.add(np.full((1, 4), 2, dtype=np.float32))
        faiss.write_index(index, str(folder / "index.faiss"))
    pickled = {k: document(text, meta) for k, (text, meta) in docs.items()}
    (folder / "index.pkl").write_bytes(pickle.dumps((docstore(pickled), mapping)))
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    assert report["rejected"] == 1
    assert json.loads(rejects.read_text())["_vecferry_reject"]["reason"] == message


def test_resumed_read_does_not_reject_documents_read_before(tmp_path):
    """A run resumed at row 3 rejects what rows 3.. and the unnamed documents hold, not the
    documents of rows 0..2 (an earlier run wrote or rejected those)."""
    from vecferry.converters.base import Context
    from vecferry.converters.faiss_index import FaissReader

    folder = store(tmp_path, "broken")
    seen = []
    reader = FaissReader(str(folder), context=Context("skip", seen.append))
    try:
        rows = sum(b.num_rows for b in reader.batches(2, start=3))
    finally:
        reader.close()
    assert rows == 1  # row 4; row 3 holds NaN
    reasons = [e.message for e in seen]
    nan = [r for r in reasons if r.endswith("holds NaN at metadata.score, which JSON cannot "
                                            "express")]
    unnamed = [r for r in reasons if r.endswith("has no vector in the FAISS index: no entry of "
                                                "index_to_docstore_id names it")]
    assert (len(nan), len(unnamed), len(reasons)) == (1, 2, 3), reasons


def test_fast_and_careful_payload_writing_agree():
    """Most documents are written by orjson directly; the rest (nulls, NaN, odd keys, huge
    integers) through the careful walk. Where the fast path answers, both must give the same
    text."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from vecferry.langchain_docstore import _Document, _dumps, _payload
    from vecferry.points import dumps_payload

    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
        st.text(max_size=8), st.datetimes(), st.dates(),
        st.decimals(allow_nan=False, allow_infinity=False, places=3),
        st.binary(max_size=4), st.sets(st.integers(0, 9), max_size=3),
        st.floats(width=32).map(np.float32), st.integers(0, 2**31).map(np.int64))
    values = st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 5)), inner, max_size=3)),
        max_leaves=8)

    @settings(max_examples=400, deadline=None)
    @given(st.text(max_size=20), st.dictionaries(st.text(max_size=6), values, max_size=4))
    def check(text, metadata):
        doc = _Document()
        doc.page_content, doc.metadata = text, metadata
        fast = _dumps(doc)
        if fast is not None:
            answered.append(1)
            assert fast == dumps_payload(_payload(doc))

    answered: list[int] = []
    check()
    assert len(answered) > 50  # the fast path was compared, not only skipped


def _store_of(tmp_path, monkeypatch, metadata: dict, text: str = "t",
              fakes: tuple[type, type] | None = None) -> Path:
    docstore, document = fakes or _fake_langchain(monkeypatch)
    folder = tmp_path / "store"
    _one_vector_index(folder)
    (folder / "index.pkl").write_bytes(pickle.dumps(
        (docstore({"a": document(text, metadata)}), {0: "a"})))
    return folder


def test_values_only_a_pickle_holds(tmp_path, monkeypatch):
    import datetime as dt
    import zoneinfo

    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    fakes = _fake_langchain(monkeypatch)
    document = fakes[1]
    metadata = {
        "ns": np.datetime64("2024-01-01T12:00:00.123456789"),
        "day": np.datetime64("2024-01-02"),
        "nat": np.datetime64("NaT"),
        "span": np.timedelta64(1500, "ms"),
        "td": dt.timedelta(minutes=1),
        "long": np.longdouble(0.5),
        "clong": np.clongdouble(1 + 2j),
        "mixed": {None, "b", "a", 3},
        "zoned": dt.datetime(2024, 7, 1, 12, 0, tzinfo=berlin),
        "parent": document("parent text", {"k": 1}),
        None: "none key", True: "true key", 7: "int key",
    }
    folder = _store_of(tmp_path, monkeypatch, metadata, fakes=fakes)
    _, points = read_points(str(folder))
    got = points[0]["payload"]["metadata"]
    assert got == {
        "ns": "2024-01-01T12:00:00.123456789", "day": "2024-01-02", "nat": None, "span": 1.5,
        "td": 60.0, "long": 0.5, "clong": [1.0, 2.0],
        "mixed": sorted([None, "b", "a", 3], key=lambda v: (type(v).__name__, repr(v))),
        "zoned": "2024-07-01T12:00:00+02:00",
        "parent": {"page_content": "parent text", "metadata": {"k": 1}},
        "null": "none key", "true": "true key", "7": "int key",
    }
    # the set's order does not depend on the process's string hashing
    again = tmp_path / "again"
    shutil.copytree(folder, again)
    assert read_points(str(again))[1][0]["payload"] == points[0]["payload"]


def test_pytz_zones_and_pandas_timestamps(tmp_path, monkeypatch):
    """Pickled as pytz's and pandas' own functions, which neither package need be installed
    for: built here from the opcodes those functions' pickles hold."""
    folder = _store_of(tmp_path, monkeypatch, {"when": "x", "stamp": "y"})
    data = (folder / "index.pkl").read_bytes()
    # swap the two placeholder strings for pickled calls, as pytz and pandas write them
    pytz_dt = (b"cdatetime\ndatetime\n(C\n\x07\xe8\x07\x01\x0c\x00\x00\x00\x00\x00"
               b"cpytz\n_p\n(VEurope/Berlin\nI7200\nI3600\nVCEST\ntRtR")
    stamp = (b"cpandas._libs.tslibs.timestamps\n_unpickle_timestamp\n"
             b"(I1704110400123456789\nNNI10\ntR")
    data = data.replace(b"\x8c\x01x\x94", pytz_dt, 1).replace(b"\x8c\x01y\x94", stamp, 1)
    (folder / "index.pkl").write_bytes(data)
    _, points = read_points(str(folder))
    assert points[0]["payload"]["metadata"] == {
        "when": "2024-07-01T12:00:00+02:00", "stamp": "2024-01-01T12:00:00.123456789"}


def test_lone_surrogate_is_a_bad_record(tmp_path, monkeypatch):
    folder = _store_of(tmp_path, monkeypatch, {"k": "ok"}, text="bad \udc80 text")
    rejects = tmp_path / "rejects.jsonl"
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip",
                     rejects=str(rejects))
    assert (report["written"], report["rejected"]) == (0, 1)
    (line,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert line["_vecferry_reject"]["reason"] == (
        "document 'a' holds text that is not valid Unicode at page_content (a lone surrogate, "
        "which UTF-8 cannot encode)")
    assert line["payload"]["page_content"] == "bad \\udc80 text"


@pytest.mark.parametrize("damage", ["decimal digits", "half"])
def test_damaged_pickle_values_are_a_clear_error(tmp_path, monkeypatch, damage):
    import decimal

    folder = _store_of(tmp_path, monkeypatch, {"price": decimal.Decimal("12.50")})
    data = (folder / "index.pkl").read_bytes()
    data = data.replace(b"12.50", b"1x.50") if damage == "decimal digits" else \
        data[: len(data) // 2]
    (folder / "index.pkl").write_bytes(data)
    with pytest.raises(InputError) as err:
        read_points(str(folder))
    assert str(err.value).startswith(
        f"{folder / 'index.pkl'}: cannot read the LangChain docstore, the file is truncated or "
        "corrupt: ")


def test_folder_warnings_and_inspect_counts_bad_records(tmp_path):
    folder = store(tmp_path, "broken")
    shutil.copy(folder / "index.faiss", folder / "other.faiss")
    report = convert(str(folder), str(tmp_path / "o.jsonl"), on_error="skip")
    assert (f"{folder}: read index.faiss; the folder also holds other.faiss (name the index "
            "file to read another)") in report["warnings"]
    result = CliRunner().invoke(main, ["inspect", str(folder)])
    assert result.exit_code == 0, result.output
    assert ("bad:       5 bad record(s) among the first read (convert stops at the first; "
            "--on-error skip writes them to a rejects file)") in result.output

    (folder / "index.pkl").unlink()
    (folder / "other.faiss").unlink()
    report = convert(str(folder), str(tmp_path / "o2.jsonl"))
    assert (f"{folder}: no index.pkl beside index.faiss, so the points get FAISS ids and no "
            "payloads (LangChain's FAISS.save_local keeps the texts and metadata in that "
            "file)") in report["warnings"]
