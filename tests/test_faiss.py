"""FAISS reader and writer on real indexes built here (N=37, dim 8, batches of 10)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from faiss_helpers import (
    EXACT,
    IDS,
    LOSSY,
    D,
    N,
    binary_vectors,
    build,
    build_binary,
    by_id,
    converted_index,
    read_all,
    vectors,
)
from vecferry.cli import main
from vecferry.converters import faiss_index
from vecferry.converters.base import Context
from vecferry.converters.faiss_index import FaissReader, FaissWriter
from vecferry.errors import (
    InputError,
    OutputExistsError,
    RecordError,
    TargetError,
    UnsupportedError,
    UsageError,
)
from vecferry.pipeline import convert
from vecferry.stream import Manifest, VectorSpec

# ------------------------------------------------------------------------------ exact types


@pytest.mark.parametrize("kind", sorted(EXACT))
def test_exact_types_give_every_vector_and_id_bit_for_bit(tmp_path, kind):
    factory, with_ids = EXACT[kind]
    x = vectors()
    _, path = build(tmp_path / "i.faiss", factory, with_ids=with_ids, x=x)
    ids, vecs, payloads, reader, sizes = read_all(path, batch_size=10)
    expected_ids = IDS if with_ids else np.arange(N)
    assert sizes == [10, 10, 10, 7]
    assert sorted(ids.tolist()) == sorted(int(i) for i in expected_ids)
    got = by_id(ids, vecs)
    for i, v in zip(expected_ids, x, strict=True):
        assert np.array_equal(np.frombuffer(got[int(i)], np.uint32), v.view(np.uint32))
    assert payloads == [None] * N
    facts = reader.manifest.extra["faiss"]
    assert facts["lossy"] is False
    assert reader.manifest.vectors[0].distance == "Euclid"
    assert reader.manifest.count == N
    assert reader.schema.field("id").type == pa.uint64()


def test_flat_keeps_storage_order_and_index_type(tmp_path):
    x = vectors()
    _, path = build(tmp_path / "i.faiss", "IDMap2,Flat", x=x)
    ids, vecs, _, reader, _ = read_all(path, batch_size=4)
    assert ids.astype(np.int64).tolist() == IDS.tolist()
    assert np.array_equal(vecs.view(np.uint32), x.view(np.uint32))
    assert reader.manifest.extra["faiss"]["index_type"] == "IndexIDMap2(IndexFlatL2)"
    assert reader.manifest.extra["faiss"]["ids"] == "id_map"


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IVF3,Flat", "IDMap,IVF3,Flat"])
def test_start_resumes_at_the_same_stream_row(tmp_path, factory):
    _, path = build(tmp_path / "i.faiss", factory)
    full_ids, full_vecs, *_ = read_all(path, batch_size=N)
    reader = FaissReader(path, context=Context())
    batches = list(reader.batches(10, start=13))
    assert [b.num_rows for b in batches] == [10, 10, 4]
    ids = np.concatenate([b.column("id").to_numpy() for b in batches])
    assert np.array_equal(ids, full_ids[13:])
    vecs = np.concatenate([b.column("vector").flatten().to_numpy() for b in batches])
    assert np.array_equal(vecs.view(np.uint32), full_vecs[13:].reshape(-1).view(np.uint32))


def test_ivf_lists_are_memory_mapped_and_walked_without_reconstruct(tmp_path, monkeypatch):
    _, path = build(tmp_path / "i.faiss", "IVF3,Flat")

    def forbidden(*args, **kwargs):
        raise AssertionError("reconstruct must not be used")

    monkeypatch.setattr(faiss.IndexIVFFlat, "reconstruct", forbidden)
    monkeypatch.setattr(faiss.IndexIVFFlat, "reconstruct_n", forbidden)
    reader = FaissReader(path, context=Context())
    assert type(reader.plan.storage.invlists).__name__ == "OnDiskInvertedLists"
    assert sum(b.num_rows for b in reader.batches(10)) == N


@pytest.mark.parametrize("kind", ["flat", "idmap2", "ivf", "hnsw"])
def test_binary_indexes_travel_as_packed_uint8(tmp_path, kind):
    xb = binary_vectors()
    _, path = build_binary(tmp_path / "b.faiss", kind, xb)
    ids, vecs, _, reader, sizes = read_all(path)
    spec = reader.manifest.vectors[0]
    assert (spec.datatype, spec.size, spec.distance) == ("uint8", 8, None)
    assert reader.manifest.extra["faiss"]["binary_bits"] == 64
    assert reader.manifest.extra["faiss"]["metric"] == "Hamming"
    assert sizes == [10, 10, 10, 7]
    expected = IDS if kind in ("idmap2", "ivf") else np.arange(N)
    got = by_id(ids, vecs)
    want = {i: v.tobytes() for i, v in zip(expected, xb, strict=True)}
    assert {i: got[int(i)] for i in expected} == want


# -------------------------------------------------------------------------------- distance


def test_inner_product_with_unit_vectors_is_cosine(tmp_path):
    _, path = build(tmp_path / "i.faiss", "Flat", with_ids=False, x=vectors(unit=True),
                    metric=faiss.METRIC_INNER_PRODUCT)
    reader = FaissReader(path, context=Context())
    assert reader.manifest.vectors[0].distance == "Cosine"
    decided = reader.manifest.extra["faiss"]["distance_decided_by"]
    assert decided.startswith("inner product and all 37 vectors have unit length")


def test_inner_product_with_other_vectors_is_dot(tmp_path):
    _, path = build(tmp_path / "i.faiss", "IVF3,Flat", metric=faiss.METRIC_INNER_PRODUCT)
    reader = FaissReader(path, context=Context())
    assert reader.manifest.vectors[0].distance == "Dot"
    assert "not all vectors have unit length" in \
        reader.manifest.extra["faiss"]["distance_decided_by"]
    assert reader.manifest.extra["faiss"]["metric"] == "inner_product"


def test_l1_is_manhattan_and_empty_index_reads_nothing(tmp_path):
    _, path = build(tmp_path / "i.faiss", "Flat", with_ids=False, metric=faiss.METRIC_L1)
    assert FaissReader(path, context=Context()).manifest.vectors[0].distance == "Manhattan"
    empty = faiss.IndexFlatIP(D)
    faiss.write_index(empty, str(tmp_path / "e.faiss"))
    _, _, _, reader, sizes = read_all(str(tmp_path / "e.faiss"))
    assert sizes == [] and reader.count() == 0
    assert reader.manifest.extra["faiss"]["distance_decided_by"].endswith("nothing to look at")


def _ip_index_with_one_long_vector(tmp_path, n: int = 3000, at: int = 1) -> str:
    """Unit vectors but one, at a position an evenly spread sample of 1,024 does not take."""
    x = vectors(n=n, unit=True)
    x[at] *= 2
    index = faiss.IndexFlatIP(D)
    index.add(x)
    faiss.write_index(index, str(tmp_path / "ip.faiss"))
    return str(tmp_path / "ip.faiss")


def test_every_vector_is_looked_at_before_calling_an_index_cosine(tmp_path):
    """One long vector makes it Dot: Cosine would have Qdrant normalize it, and search
    otherwise than the index. A sample (the old way) missed it."""
    path = _ip_index_with_one_long_vector(tmp_path)
    reader = FaissReader(path, context=Context())
    assert reader.manifest.vectors[0].distance == "Dot"
    assert reader.manifest.extra["faiss"]["distance_decided_by"] == (
        "inner product and not all vectors have unit length (vector id 1 has norm 2; all 3000 "
        "looked at)")


def test_a_sample_decides_past_the_size_limit_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_index, "NORM_CHECK_BYTES", 0)
    reader = FaissReader(_ip_index_with_one_long_vector(tmp_path), context=Context())
    assert reader.manifest.vectors[0].distance == "Cosine"
    assert reader.manifest.extra["faiss"]["distance_decided_by"].startswith(
        "inner product and a sample of 1024 of the 3000 vectors have unit length (max |norm-1| "
        "= ")
    assert reader.manifest.extra["faiss"]["distance_decided_by"].endswith(
        "; pass --distance to decide")


@pytest.mark.parametrize("wanted", ["Dot", "Cosine"])
def test_distance_option_decides_for_an_inner_product_index(tmp_path, wanted):
    reader = FaissReader(_ip_index_with_one_long_vector(tmp_path), context=Context(),
                         distance=wanted)
    assert reader.manifest.vectors[0].distance == wanted
    assert reader.manifest.extra["faiss"]["distance_decided_by"] == (
        f"inner product; {wanted} as --distance says")


def test_distance_option_that_would_search_otherwise_is_refused(tmp_path):
    ip = _ip_index_with_one_long_vector(tmp_path)
    with pytest.raises(UsageError) as err:
        FaissReader(ip, context=Context(), distance="Euclid")
    assert str(err.value) == (
        f"{ip}: --distance Euclid on an index that ranks by inner_product (Dot): the vectors "
        "would be searched otherwise than the index searches them (drop --distance to keep "
        "Dot)")
    _, l2 = build(tmp_path / "l2.faiss", "Flat", with_ids=False, x=vectors(n=50))
    with pytest.raises(UsageError) as err:
        FaissReader(l2, context=Context(), distance="Cosine")
    assert str(err.value).startswith(f"{l2}: --distance Cosine on an L2 index: vector id 0 has "
                                     "norm ")
    assert str(err.value).endswith(", so Cosine would rank the vectors otherwise than the index "
                                   "does (drop --distance to keep Euclid)")
    _, unit = build(tmp_path / "u.faiss", "Flat", with_ids=False, x=vectors(n=50, unit=True))
    reader = FaissReader(unit, context=Context(), distance="Cosine")
    assert reader.manifest.vectors[0].distance == "Cosine"
    assert reader.manifest.extra["faiss"]["distance_decided_by"] == (
        "metric L2 and all 50 vectors have unit length, so Cosine (as --distance says) ranks "
        "them as L2 does")


def test_cli_routes_distance_to_a_faiss_source(tmp_path):
    ip = _ip_index_with_one_long_vector(tmp_path)
    out = tmp_path / "o.faiss"
    result = CliRunner().invoke(main, ["convert", ip, str(out), "--distance", "Cosine",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o.faiss.manifest.json").read_text())
    assert manifest["vectors"][0]["distance"] == "Cosine"


def test_distance_option_kept_from_a_source_that_records_one_says_so(tmp_path):
    _, l2 = build(tmp_path / "l2.faiss", "Flat", with_ids=False, x=vectors(n=20))
    convert(l2, str(tmp_path / "p.parquet"))
    report = convert(str(tmp_path / "p.parquet"), str(tmp_path / "o.faiss"),
                     writer_options={"distance": "Dot"})
    assert ("--distance Dot is for vectors whose source records no distance; these keep the "
            "source's: (unnamed) Euclid") in report["warnings"]


# ----------------------------------------------------------------------------------- lossy


@pytest.mark.parametrize("kind", sorted(LOSSY))
def test_lossy_types_are_refused_without_the_flag(tmp_path, kind):
    _, path = build(tmp_path / "i.faiss", LOSSY[kind], with_ids=kind.startswith(("idmap", "iv")))
    with pytest.raises(UnsupportedError) as err:
        FaissReader(path, context=Context())
    assert "stores lossy codes" in err.value.message
    assert err.value.hint == "pass --allow-lossy to export the decoded vectors anyway"


@pytest.mark.parametrize("kind", sorted(LOSSY))
def test_lossy_types_decode_like_faiss_with_the_flag(tmp_path, kind):
    with_ids = kind.startswith(("idmap", "iv"))
    index, path = build(tmp_path / "i.faiss", LOSSY[kind], with_ids=with_ids)
    context = Context()
    ids, vecs, _, reader, sizes = read_all(path, context=context, allow_lossy=True)
    assert sizes == [10, 10, 10, 7]
    assert reader.manifest.extra["faiss"]["lossy"] is True
    assert any("is lossy" in w for w in context.warnings)
    expected_ids = IDS if with_ids else np.arange(N)
    assert sorted(ids.tolist()) == sorted(int(i) for i in expected_ids)
    # FAISS's own (slow, per-id) reconstruction is the reference for the decoded values
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    got = dict(zip(ids.tolist(), vecs, strict=True))
    for pos, i in enumerate(expected_ids):
        key = int(i) if (ivf is not None and not kind.startswith("idmap")) else pos
        ref = (index.index if kind.startswith("idmap") else index).reconstruct(key)
        np.testing.assert_allclose(got[int(i)], ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad inputs


def test_unsupported_type_names_it_and_the_supported_ones(tmp_path):
    index = faiss.IndexLSH(D, 16)
    index.add(vectors())
    faiss.write_index(index, str(tmp_path / "lsh.faiss"))
    with pytest.raises(UnsupportedError) as err:
        FaissReader(str(tmp_path / "lsh.faiss"), context=Context(), allow_lossy=True)
    assert err.value.message == "FAISS index type IndexLSH is not supported"
    assert str(err.value).startswith(f"{tmp_path / 'lsh.faiss'}: FAISS index type IndexLSH ")
    assert "IndexIVFFlat" in err.value.hint and "--allow-lossy also IndexPQ" in err.value.hint


def test_inverted_lists_of_another_type_name_the_file(tmp_path):
    index = faiss.index_factory(D, "IVF2,Flat")
    index.train(vectors())
    ivf = faiss.extract_index_ivf(index)
    blocks = faiss.BlockInvertedLists(2, 32, D * 4 * 32)
    ivf.replace_invlists(blocks, True)
    blocks.this.disown()  # the index owns it now
    path = tmp_path / "block.faiss"
    faiss.write_index(index, str(path))
    with pytest.raises(UnsupportedError) as err:
        vecferry.open_reader(str(path))
    assert str(err.value) == (f"{path}: IndexIVFFlat with inverted lists of type "
                              "BlockInvertedLists is not supported (supported inverted lists: "
                              "ArrayInvertedLists, OnDiskInvertedLists)")


def test_an_index_that_cannot_be_written_is_named_with_advice(tmp_path):
    out = tmp_path / "gone" / "o.faiss"
    out.parent.mkdir()
    schema = Manifest(vectors=[VectorSpec("", size=D, distance="Euclid")]).schema()
    writer = vecferry.open_writer(str(out), schema)
    x = vectors()
    writer.write_batch(pa.RecordBatch.from_arrays(
        [pa.array(np.arange(len(x), dtype=np.uint64)),
         pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D),
         pa.array([None] * len(x), pa.string())], schema=schema))
    out.parent.rename(tmp_path / "moved")  # the directory goes away before the index is saved
    with pytest.raises(TargetError) as err:
        writer.close()
    writer.abort()
    text = str(err.value)
    assert text.startswith(f"{out}: cannot write the index: could not open {out.parent}/.o.faiss")
    assert text.endswith(" for writing: No such file or directory (check that the output's "
                         "directory exists, is writable and has free space)")
    assert "failed:" not in text


@pytest.mark.parametrize("factory,cut", [("IDMap2,Flat", 200), ("IDMap2,Flat", 3),
                                         ("PCA4,IDMap,Flat", 5),
                                         ("IVF3,Flat", 1), ("HNSW4", 100), ("Flat", -20)])
def test_truncated_file_is_a_clear_input_error(tmp_path, factory, cut):
    _, path = build(tmp_path / "i.faiss", factory, with_ids="IDMap" in factory or "IVF" in factory)
    data = (tmp_path / "i.faiss").read_bytes()
    # cut > 0 drops that many bytes from the end; cut < 0 keeps only the first -cut bytes
    (tmp_path / "i.faiss").write_bytes(data[:-cut])
    with pytest.raises(InputError) as err:
        FaissReader(path, context=Context())
    assert err.value.message.startswith(
        "cannot read FAISS index, the file is truncated or corrupt")
    assert "faiss.write_index" in err.value.hint
    assert err.value.location.source == path
    # FAISS notices most cuts; a cut inside the last id is caught by vecferry's own check
    assert (isinstance(err.value.__cause__, RuntimeError)
            or err.value.message.endswith("its id map of 37 ids does not end the file"))


def test_garbage_and_empty_files_are_clear_input_errors(tmp_path):
    (tmp_path / "g.faiss").write_bytes(b"this is not an index at all")
    with pytest.raises(InputError) as err:
        FaissReader(str(tmp_path / "g.faiss"), context=Context())
    assert "not a FAISS index this faiss" in err.value.message
    assert '("this") not recognized' in err.value.message
    (tmp_path / "e.faiss").write_bytes(b"")
    with pytest.raises(InputError, match="the file is empty or truncated"):
        FaissReader(str(tmp_path / "e.faiss"), context=Context())
    with pytest.raises(InputError, match="no such file or directory"):
        FaissReader(str(tmp_path / "missing.faiss"), context=Context())
    with pytest.raises(UsageError, match="does not take option"):
        FaissReader(str(tmp_path / "g.faiss"), context=Context(), bogus=1)


def test_negative_id_is_a_record_error_naming_it(tmp_path):
    ids = IDS.copy()
    ids[5] = -5
    _, path = build(tmp_path / "i.faiss", "IDMap,Flat", ids=ids)
    with pytest.raises(RecordError) as err:
        read_all(path)
    assert err.value.message.startswith("id -5 is negative")
    assert err.value.location.row == 5
    context = Context(on_error="skip")
    got, *_ = read_all(path, context=context)
    assert len(got) == N - 1 and context.rejected == 1


# -------------------------------------------------------------------------------- payloads


def _payload(i: int) -> dict:
    return {"title": f"doc {i}", "n": int(i), "big": 2**60 + int(i) % 7, "tags": ["a", str(i % 3)]}


@pytest.mark.parametrize(("fmt", "streamed"), [
    *((f, False) for f in ("json", "json_array", "jsonl", "parquet", "parquet_json",
                           "json_bom", "jsonl_bom")),
    # a .json file past WHOLE_JSON_BYTES is streamed, not parsed whole
    *((f, True) for f in ("json", "json_array", "json_bom"))])
def test_payloads_are_joined_by_id(tmp_path, monkeypatch, fmt, streamed):
    if streamed:
        pytest.importorskip("ijson")
        monkeypatch.setattr(faiss_index, "WHOLE_JSON_BYTES", 0)  # stream even a small file
    _, path = build(tmp_path / "i.faiss", "IVF3,Flat")
    chosen = [int(i) for i in IDS[::2]]
    target = tmp_path / ("p.parquet" if fmt.startswith("parquet") else
                         "p.jsonl" if fmt.startswith("jsonl") else "p.json")
    # a byte order mark, as Windows tools write, is not part of the JSON
    bom = b"\xef\xbb\xbf" if fmt.endswith("_bom") else b""
    if fmt in ("json", "json_bom"):
        target.write_bytes(bom + orjson.dumps({str(i): _payload(i) for i in chosen}))
    elif fmt == "json_array":
        target.write_bytes(orjson.dumps([{"id": i, **_payload(i)} for i in chosen]))
    elif fmt.startswith("jsonl"):
        target.write_bytes(bom + b"".join(orjson.dumps({"id": i, "payload": _payload(i)})
                                          + b"\n" for i in chosen))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist([{"id": i, **_payload(i)} for i in chosen]), target)
    else:
        pq.write_table(pa.table({"id": pa.array(chosen, pa.uint64()),
                                 "payload": [json.dumps(_payload(i)) for i in chosen]}), target)
    ids, _, payloads, _, _ = read_all(str(path), payloads=str(target))
    got = dict(zip(ids.tolist(), payloads, strict=True))
    for i in IDS.tolist():
        if i in chosen:
            assert json.loads(got[i]) == _payload(i)
        else:
            assert got[i] is None


def test_payload_entries_without_a_vector_are_rejected_not_dropped(tmp_path):
    _, path = build(tmp_path / "i.faiss", "IDMap,Flat")
    side = tmp_path / "meta.json"
    side.write_bytes(orjson.dumps({"12345": {"orphan": True}, str(IDS[0]): {"ok": 1}}))
    with pytest.raises(RecordError) as err:
        read_all(str(path), payloads=str(side))
    assert err.value.message == "payload for id 12345 has no vector in the FAISS index"
    report = vecferry.convert(str(path), str(tmp_path / "o.jsonl"), on_error="skip",
                              reader_options={"payloads": str(side)})
    assert (report["written"], report["rejected"]) == (N, 1)
    reject = orjson.loads((tmp_path / "o.jsonl.rejects.jsonl").read_bytes())
    assert reject["id"] == 12345 and reject["payload"] == {"orphan": True}
    assert reject["_vecferry_reject"]["reason"].startswith("payload for id 12345")


def test_resumed_read_does_not_call_earlier_payloads_unmatched(tmp_path):
    _, path = build(tmp_path / "i.faiss", "IVF3,Flat")
    side = tmp_path / "meta.json"
    side.write_bytes(orjson.dumps({str(i): {"i": int(i)} for i in IDS}))
    reader = FaissReader(path, context=Context(), payloads=str(side))
    rows = [r for b in reader.batches(10, start=20) for r in b.column("payload").to_pylist()]
    assert len(rows) == N - 20 and None not in rows


def test_bad_payload_entries_are_rejected_with_their_reason(tmp_path):
    _, path = build(tmp_path / "i.faiss", "IDMap,Flat")
    side = tmp_path / "p.jsonl"
    first = int(IDS[0])
    side.write_text(f'{{"id": {first}, "payload": {{"a": 1}}}}\n{{"id": {first}, "b": 2}}\n'
                    '{"x": 1}\n[1, 2]\nnot json\n')
    context = Context(on_error="skip")
    reasons = []
    context.sink = reasons.append
    read_all(str(path), context=context, payloads=str(side))
    messages = [e.message for e in reasons]
    assert messages[0] == f"payload id {IDS[0]} is given more than once; the first is kept"
    assert messages[1:3] == ["payload record has no 'id' field"] * 2
    assert messages[3].startswith("not JSON")
    assert [e.location.line for e in reasons] == [2, 3, 4, 5]
    (tmp_path / "m.json").write_bytes(orjson.dumps({str(IDS[0]): [1], "x y": {"a": 1}}))
    reasons.clear()
    read_all(str(path), context=context, payloads=str(tmp_path / "m.json"))
    assert [e.message for e in reasons] == [
        f"payload for id {IDS[0]} is not a JSON object",
        "payload for id 'x y' has no vector in the FAISS index"]
    with pytest.raises(UsageError, match=r"cannot read payloads from p\.csv"):
        (tmp_path / "p.csv").write_text("id\n1\n")
        FaissReader(path, context=Context(), payloads=str(tmp_path / "p.csv"))


@pytest.mark.parametrize(("kind", "streamed"), [("json", False), ("json", True),
                                               ("jsonl", False)])
def test_payload_integers_past_64_bits_stay_exact(tmp_path, monkeypatch, kind, streamed):
    if streamed:
        pytest.importorskip("ijson")
        monkeypatch.setattr(faiss_index, "WHOLE_JSON_BYTES", 0)
    _, path = build(tmp_path / "i.faiss", "IDMap,Flat")
    huge = 2**70 + 1  # orjson alone reads it as a float
    side = tmp_path / f"m.{kind}"
    payload = {"huge": huge, "f": 0.1}
    side.write_text(json.dumps({str(int(IDS[0])): payload}) if kind == "json"
                    else json.dumps({"id": int(IDS[0]), "payload": payload}) + "\n")
    ids, _, payloads, _, _ = read_all(str(path), payloads=str(side))
    got = dict(zip(ids.tolist(), payloads, strict=True))
    assert json.loads(got[int(IDS[0])]) == {"huge": huge, "f": 0.1}


def test_a_streamed_payloads_file_that_is_not_json_is_an_input_error(tmp_path, monkeypatch):
    pytest.importorskip("ijson")
    monkeypatch.setattr(faiss_index, "WHOLE_JSON_BYTES", 0)
    _, path = build(tmp_path / "i.faiss", "IDMap,Flat")
    side = tmp_path / "m.json"
    side.write_text('{"1": {"a": 1}, "2": {"b": ')
    with pytest.raises(InputError) as info:
        read_all(str(path), payloads=str(side))
    assert str(info.value).startswith(f"{side}: payloads file is not valid JSON: ")


@pytest.mark.parametrize("streamed", [False, True])
def test_payload_files_of_the_wrong_shape_are_named(tmp_path, monkeypatch, streamed):
    from vecferry.converters.faiss_index import load_payloads

    if streamed:
        pytest.importorskip("ijson")
        monkeypatch.setattr(faiss_index, "WHOLE_JSON_BYTES", 0)
    scalar = tmp_path / "m.json"
    scalar.write_text("42")
    with pytest.raises(InputError) as info:
        load_payloads(str(scalar), Context())
    assert str(info.value) == (f"{scalar}: payloads JSON must be an object keyed by id or an "
                               "array of records")
    table = tmp_path / "m.parquet"
    pq.write_table(pa.table({"doc": [1, 2], "payload": ["{}", "{}"]}), table)
    with pytest.raises(InputError) as info:
        load_payloads(str(table), Context())
    assert str(info.value) == (f"{table}: payloads Parquet has no 'id' column "
                               "(columns: doc, payload)")
    broken = tmp_path / "b.parquet"
    broken.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    with pytest.raises(InputError) as info:
        load_payloads(str(broken), Context())
    assert str(info.value).startswith(f"{broken}: cannot read payloads: ")


def test_a_directory_is_not_an_index(tmp_path):
    with pytest.raises(InputError) as info:
        FaissReader(str(tmp_path), context=Context())
    assert str(info.value) == (
        f"{tmp_path}: is a directory, not a FAISS index file (no *.faiss file) (name the index "
        "file; a LangChain store is FOLDER/NAME.faiss with NAME.pkl beside it)")


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_payloads_are_not_held_in_memory(tmp_path, monkeypatch, fmt):
    """50k payloads of ~120 bytes were ~12 MB of Python strings in a dict; the table keeps
    them on disk, so the Python heap does not grow with the file."""
    import tracemalloc

    from vecferry.converters.faiss_index import load_payloads

    if fmt == "json":
        pytest.importorskip("ijson")
        monkeypatch.setattr(faiss_index, "WHOLE_JSON_BYTES", 0)
    side = tmp_path / f"m.{fmt}"
    entries = {i: {"title": f"document number {i}", "text": "x" * 80} for i in range(50_000)}
    if fmt == "jsonl":
        side.write_text("".join(json.dumps({"id": i, "payload": p}) + "\n"
                                for i, p in entries.items()))
    else:
        side.write_text(json.dumps({str(i): p for i, p in entries.items()}))
    tracemalloc.start()
    try:
        table = load_payloads(str(side), Context())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        assert len(table) == 50_000
        assert peak < 4 << 20, f"{peak / 2**20:.1f} MB"
        assert [json.loads(t) for t in table.take(["17", "49999", "x"]) if t] == [
            entries[17], entries[49_999]]
        assert [k for k, _ in table.unused()][:3] == ["0", "1", "2"]
        assert "17" not in {k for k, _ in table.unused()}
    finally:
        table.close()


KILLED_MID_JOIN = """
import os, signal
from vecferry.payloadjoin import PayloadTable, RowsById
table, rows = PayloadTable(), RowsById(["id", "payload"])
for i in range(100_000):
    table.add(str(i), "x" * 200)
rows.add_many((i, str(i), "y" * 200) for i in range(100_000))
assert table.take(["7"]) == ["x" * 200] and rows.take([7]) == [("7", "y" * 200)]
here = os.environ["TMPDIR"]
links = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
         if os.path.islink(f"/proc/self/fd/{fd}")]
print([link for link in links if link.startswith(here)], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_scratch_tables_spill_to_tmpdir_and_leave_nothing_when_killed(tmp_path):
    """40 MB of payloads spill from SQLite's cache to files in $TMPDIR, unlinked as soon as
    they are opened: a worker killed mid-run (the OOM killer) leaves no scratch behind."""
    import ast
    import os
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_TMPDIR"} | {"TMPDIR": str(scratch)}
    run = subprocess.run([sys.executable, "-c", KILLED_MID_JOIN], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == -9, run.stderr
    open_files = ast.literal_eval(run.stdout.strip())
    assert len(open_files) >= 2 and all(f.endswith(" (deleted)") for f in open_files)
    assert list(scratch.iterdir()) == []


# ---------------------------------------------------------------------------------- writer


def _search(index, queries, k=5):
    distances, labels = index.search(queries, k)
    return distances, labels


@pytest.mark.parametrize("kind", sorted(EXACT))
@pytest.mark.parametrize("via", ["parquet", "jsonl"])
def test_round_trip_through_parquet_or_jsonl_restores_vectors_ids_and_top_k(tmp_path, kind, via):
    factory, with_ids = EXACT[kind]
    x = vectors()
    _, src = build(tmp_path / "src.faiss", factory, with_ids=with_ids, x=x)
    mid, dst = str(tmp_path / f"mid.{via}"), str(tmp_path / "dst.faiss")
    vecferry.convert(src, mid)
    report = vecferry.convert(mid, dst)
    assert report["index_type"] == "IndexIDMap2(IndexFlat)"
    a_ids, a_vecs, *_ = read_all(src)
    b_ids, b_vecs, *_ = read_all(dst)
    assert by_id(a_ids, a_vecs) == by_id(b_ids, b_vecs)
    # the exact search over the original data, with its ids, is what the copy must answer
    truth = faiss.IndexIDMap(faiss.IndexFlatL2(D))
    truth.add_with_ids(x, IDS if with_ids else np.arange(N))
    queries = vectors(seed=5, n=6)
    copy = faiss.read_index(dst)
    d1, l1 = _search(truth, queries)
    d2, l2 = _search(copy, queries)
    assert np.array_equal(l1, l2) and np.array_equal(d1, d2)
    if kind in ("flat", "idmap_flat", "idmap2_flat"):
        d0, l0 = _search(faiss.read_index(src), queries)
        assert np.array_equal(l0, l2) and np.array_equal(d0, d2)


def test_binary_round_trip_rebuilds_a_binary_index(tmp_path):
    xb = binary_vectors()
    _, src = build_binary(tmp_path / "b.faiss", "idmap2", xb)
    vecferry.convert(src, str(tmp_path / "b.parquet"))
    report = vecferry.convert(str(tmp_path / "b.parquet"), str(tmp_path / "c.faiss"))
    assert report["index_type"].startswith("IndexBinaryIDMap2")
    copy = faiss.read_index_binary(str(tmp_path / "c.faiss"))
    orig = faiss.read_index_binary(src)
    q = binary_vectors(seed=3, n=4)
    assert [a.tolist() for a in orig.search(q, 5)] == [a.tolist() for a in copy.search(q, 5)]


@pytest.mark.parametrize(("factory", "index_type"), [
    ("BFlat", "IndexBinaryIDMap2"), ("BHNSW8", "IndexBinaryIDMap2"),
    ("BIVF4", "IndexBinaryIVF")])
def test_a_binary_factory_that_takes_no_ids_is_wrapped(tmp_path, factory, index_type):
    # as for float indexes: the ids of the stream survive, whatever the factory
    xb = binary_vectors()
    _, src = build_binary(tmp_path / "b.faiss", "idmap2", xb)
    vecferry.convert(src, str(tmp_path / "b.parquet"))
    report = vecferry.convert(str(tmp_path / "b.parquet"), str(tmp_path / "c.faiss"),
                              writer_options={"index_factory": factory})
    assert report["index_type"].startswith(index_type)
    back = vecferry.convert(str(tmp_path / "c.faiss"), str(tmp_path / "back.parquet"))
    assert back["written"] == len(xb)
    orig = pq.read_table(tmp_path / "b.parquet").sort_by("id")
    copy = pq.read_table(tmp_path / "back.parquet").sort_by("id")
    assert copy.column("id").equals(orig.column("id"))
    assert copy.column("vector").equals(orig.column("vector"))


def test_string_ids_and_payloads_survive_faiss_and_back(tmp_path):
    src = tmp_path / "in.jsonl"
    x = vectors()
    points = [{"id": f"doc-{i}" if i % 3 else str(__import__("uuid").UUID(int=i + 1)),
               "vector": v.tolist(), "payload": {"i": i} if i % 2 else None}
              for i, v in enumerate(x)]
    src.write_bytes(b"".join(orjson.dumps({k: v for k, v in p.items() if v is not None})
                             + b"\n" for p in points))
    report = vecferry.convert(str(src), str(tmp_path / "i.faiss"))
    assert (tmp_path / "i.faiss.payloads.parquet").exists()
    assert report["written"] == N
    side = pq.read_table(tmp_path / "i.faiss.payloads.parquet")
    assert side.column("faiss_id").to_pylist() == list(range(N))
    index = faiss.read_index(str(tmp_path / "i.faiss"))
    assert index.ntotal == N
    vecferry.convert(str(tmp_path / "i.faiss"), str(tmp_path / "out.jsonl"))
    back = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [p["id"] for p in back] == [p["id"] for p in points]
    assert [p.get("payload") for p in back] == [p["payload"] for p in points]
    got = np.array([p["vector"] for p in back], dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), x.view(np.uint32))


@pytest.mark.parametrize("held", ["memory", "disk"])
@pytest.mark.parametrize("ids", ["strings", "integers"])
def test_payload_sidecar_is_joined_by_id_in_any_read_order(tmp_path, monkeypatch, held, ids):
    """An IVF index is read list by list, not in the order its sidecar was written; with
    integer ids the sidecar holds only the rows that have a payload. A sidecar past
    SIDECAR_MEMORY_BYTES is looked up in a scratch table."""
    if held == "disk":
        monkeypatch.setattr(faiss_index, "SIDECAR_MEMORY_BYTES", 0)
    n = 400
    x = vectors(n=n, seed=4)
    points = [{"id": f"doc-{i}" if ids == "strings" else i * 7 + 2**40, "vector": v.tolist(),
               **({"payload": {"i": i, "t": "é" * (i % 4)}} if i % 3 else {})}
              for i, v in enumerate(x)]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in points))
    index = str(tmp_path / "i.faiss")
    vecferry.convert(str(src), index, batch_size=64,
                     writer_options={"index_factory": "IVF4,Flat", "train_rows": 200})
    side = pq.read_table(index + ".payloads.parquet")
    assert side.num_rows == (n if ids == "strings" else sum(1 for p in points if "payload" in p))
    reader = FaissReader(index, context=Context())
    try:
        assert reader._sidecar._fid is None and reader._sidecar._disk is None  # footer only
        got = [p for batch in reader.batches(50) for p in batch.to_pylist()]
        assert (reader._sidecar._disk is not None) == (held == "disk")
        assert [p["id"] for p in got] != [p["id"] for p in points]  # IVF order
    finally:
        reader.close()
    out = tmp_path / "out.jsonl"
    vecferry.convert(index, str(out))
    back = {p["id"]: p for p in map(orjson.loads, out.read_bytes().splitlines())}
    assert len(back) == n
    for i, p in enumerate(points):
        assert back[p["id"]].get("payload") == p.get("payload")
        got = np.array(back[p["id"]]["vector"], dtype=np.float32)
        assert np.array_equal(got.view(np.uint32), x[i].view(np.uint32))


@pytest.mark.parametrize("held", ["memory", "disk"])
def test_a_payload_sidecar_that_does_not_fit_the_index_is_named(tmp_path, monkeypatch, held):
    if held == "disk":
        monkeypatch.setattr(faiss_index, "SIDECAR_MEMORY_BYTES", 0)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"id": f"doc-{i}", "vector": v.tolist()}) + b"\n"
                             for i, v in enumerate(vectors())))
    index = str(tmp_path / "i.faiss")
    vecferry.convert(str(src), index)
    side = index + ".payloads.parquet"
    table = pq.read_table(side)
    # as many rows as the index has points (a short sidecar stops the open, see below), but
    # FAISS id 5 is not among them
    fids = pa.compute.if_else(pa.compute.equal(table.column("faiss_id"), 5), 1000,
                              table.column("faiss_id"))
    pq.write_table(table.set_column(0, "faiss_id", fids), side)
    with pytest.raises(InputError) as info:
        vecferry.convert(index, str(tmp_path / "o.jsonl"))
    assert str(info.value) == (
        f"{side}: id mapping sidecar has no entry for FAISS id 5 (the index changed after "
        "vecferry wrote it; delete the sidecars to read plain FAISS ids)")
    pq.write_table(table.drop_columns(["faiss_id"]), side)
    with pytest.raises(InputError, match="payload sidecar has no 'faiss_id' column"):
        vecferry.convert(index, str(tmp_path / "o.jsonl"))
    Path(side).write_bytes(b"PAR1 not really")
    with pytest.raises(InputError) as info:
        vecferry.convert(index, str(tmp_path / "o.jsonl"))
    assert str(info.value).startswith(f"{side}: cannot read the payload sidecar: ")
    assert str(info.value).endswith("(delete or fix it; it was written next to the index)")


def test_writer_trains_on_a_sample_and_keeps_ids(tmp_path):
    x = vectors(n=300, seed=2)
    ids = np.arange(300, dtype=np.int64) * 1_000_003 + 2**33
    _, src = build(tmp_path / "s.faiss", "IDMap2,Flat", x=x, ids=ids)
    report = vecferry.convert(src, str(tmp_path / "ivf.faiss"), batch_size=64,
                              writer_options={"index_factory": "IVF2,Flat", "train_rows": 100})
    assert report["trained_on"] == 128 and report["index_type"] == "IndexIVFFlat"
    a = by_id(*read_all(src)[:2])
    b = by_id(*read_all(str(tmp_path / "ivf.faiss"))[:2])
    assert a == b
    report = vecferry.convert(src, str(tmp_path / "h.faiss"),
                              writer_options={"index_factory": "HNSW8"})
    assert report["index_type"] == "IndexIDMap2(IndexHNSWFlat)"
    assert by_id(*read_all(str(tmp_path / "h.faiss"))[:2]) == a


def test_cosine_stream_is_normalized_into_an_inner_product_index(tmp_path):
    x = vectors()
    x[:5] *= 3.0  # not unit length: these get normalized
    unit = x.copy()
    unit[5:] /= np.linalg.norm(unit[5:], axis=1, keepdims=True)
    manifest = Manifest(vectors=[VectorSpec(name="", size=D, distance="Cosine")])
    schema = manifest.schema()
    writer = FaissWriter(str(tmp_path / "c.faiss"), schema, context=Context())
    batch = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(N, dtype=np.uint64)),
         pa.FixedSizeListArray.from_arrays(pa.array(unit.reshape(-1)), D),
         pa.nulls(N, pa.string())], schema=schema)
    writer.write_batch(batch)
    report = writer.close()
    assert report["normalized"] == 5
    index = faiss.read_index(str(tmp_path / "c.faiss"))
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    _, vecs, _, reader, _ = read_all(str(tmp_path / "c.faiss"))
    assert reader.manifest.vectors[0].distance == "Cosine"
    assert np.array_equal(vecs[5:].view(np.uint32), unit[5:].view(np.uint32))
    np.testing.assert_allclose(np.linalg.norm(vecs[:5], axis=1), 1.0, rtol=1e-6)


def _stream(schema, n=N, vector=None, ids=None):
    cols = []
    for f in schema:
        if f.name == "id":
            cols.append(pa.array(ids if ids is not None else np.arange(n), pa.uint64()))
        elif f.name == "payload":
            cols.append(pa.nulls(n, pa.string()))
        else:
            cols.append(pa.FixedSizeListArray.from_arrays(
                pa.array((vector if vector is not None else vectors(n=n)).reshape(-1)), D))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def test_writer_refuses_what_faiss_cannot_hold(tmp_path):
    out = str(tmp_path / "o.faiss")
    sparse = Manifest(vectors=[VectorSpec(name="s", kind="sparse")]).schema()
    with pytest.raises(UnsupportedError) as refused:
        FaissWriter(out, sparse, context=Context())
    assert str(refused.value) == ("a FAISS index cannot hold these vectors: s (sparse) "
                                  "(convert to Parquet or JSONL instead)")
    two = Manifest(vectors=[VectorSpec(name="a", size=D), VectorSpec(name="b", size=D)])
    with pytest.raises(UnsupportedError) as err:
        FaissWriter(out, two.schema(), context=Context())
    assert err.value.message == ("the stream has 2 dense vectors ('a', 'b'); a FAISS index "
                                 "holds one")
    assert 'writer_options={"vector": NAME}' in err.value.hint
    context = Context()
    writer = FaissWriter(out, two.schema(), context=context, vector="b")
    writer.write_batch(_stream(two.schema()))
    writer.close()
    assert "dropped: 'a'" in context.warnings[0]
    assert faiss.read_index(out).ntotal == N
    with pytest.raises(UsageError, match="FAISS cannot build index factory 'IVF,Nope'"):
        FaissWriter(str(tmp_path / "p.faiss"), two.schema(), context=Context(), vector="a",
                    index_factory="IVF,Nope")
    assert not list(tmp_path.glob(".p.faiss*"))
    with pytest.raises(OutputExistsError):
        FaissWriter(out, two.schema(), context=Context(), vector="a")


def test_writer_names_a_missing_or_sparse_vector_and_an_untrainable_empty_stream(tmp_path):
    mixed = Manifest(vectors=[VectorSpec(name="a", size=D), VectorSpec(name="s", kind="sparse")])
    with pytest.raises(UsageError) as missing:
        FaissWriter(str(tmp_path / "m.faiss"), mixed.schema(), context=Context(), vector="b")
    assert str(missing.value) == "no vector named 'b' in the stream (vectors: 'a', 's')"
    with pytest.raises(UnsupportedError) as sparse:
        FaissWriter(str(tmp_path / "s.faiss"), mixed.schema(), context=Context(), vector="s")
    assert str(sparse.value) == "vector 's' is sparse; a FAISS index holds dense vectors only"
    one = Manifest(vectors=[VectorSpec(name="", size=D, distance="Euclid")]).schema()
    out = str(tmp_path / "ivf.faiss")
    writer = FaissWriter(out, one, context=Context(), index_factory="IVF4,Flat")
    with pytest.raises(TargetError) as empty:
        writer.close()
    assert str(empty.value) == (f"{out}: index 'IVF4,Flat' needs training and the stream is "
                                "empty (use the default flat index for an empty stream)")


def test_writer_rejects_ids_beyond_int64_and_missing_vectors(tmp_path):
    schema = Manifest(vectors=[VectorSpec(name="", size=D, distance="Euclid")]).schema()
    context = Context(on_error="skip")
    writer = FaissWriter(str(tmp_path / "o.faiss"), schema, context=context)
    ids = np.arange(N, dtype=np.uint64)
    ids[3] = 2**63 + 1
    batch = _stream(schema, ids=ids)
    rows = [None if i == 7 else v.tolist() for i, v in enumerate(vectors())]
    batch = batch.set_column(1, "vector", pa.array(rows, type=pa.list_(pa.float32(), D)))
    errors = []
    context.sink = errors.append
    writer.write_batch(batch)
    writer.close()
    assert sorted(e.message for e in errors) == [
        f"id {2**63 + 1} does not fit FAISS's int64 ids (max 2^63-1)", "point has no vector"]
    assert faiss.read_index(str(tmp_path / "o.faiss")).ntotal == N - 2


def test_overwrite_removes_a_stale_payload_sidecar(tmp_path):
    _, src = build(tmp_path / "s.faiss", "IDMap,Flat")
    side = tmp_path / "m.json"
    side.write_bytes(orjson.dumps({str(i): {"i": int(i)} for i in IDS}))
    out = str(tmp_path / "o.faiss")
    vecferry.convert(src, out, reader_options={"payloads": str(side)})
    assert (tmp_path / "o.faiss.payloads.parquet").exists()
    _, _, payloads, *_ = read_all(out)
    assert sorted(json.loads(p)["i"] for p in payloads) == sorted(IDS.tolist())
    vecferry.convert(src, out, overwrite=True)
    assert not (tmp_path / "o.faiss.payloads.parquet").exists()
    assert read_all(out)[2] == [None] * N


def test_failed_run_leaves_nothing_behind(tmp_path):
    _, src = build(tmp_path / "s.faiss", "Flat", with_ids=False, x=vectors(n=N))
    with pytest.raises(Exception, match="could not train"):
        vecferry.convert(src, str(tmp_path / "o.faiss"),
                         writer_options={"index_factory": "IVF64,Flat"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.faiss"]


@pytest.mark.parametrize("factory", [None, "IVF2,Flat"])
def test_written_index_proves_itself_and_a_changed_one_fails(tmp_path, factory):
    from vecferry.verification import verify

    rng = np.random.default_rng(5)
    src = tmp_path / "src.npy"
    np.save(src, rng.standard_normal((37, 8)).astype(np.float32))
    out = str(tmp_path / "out.faiss")
    vecferry.convert(str(src), out, writer_options={"index_factory": factory} if factory else None)
    report = verify(out)
    assert report["ok"], report["problems"]
    assert report["recorded_digest"]["count"] == 37
    index = faiss.read_index(out)
    vec = np.zeros((1, 8), dtype=np.float32)
    index.add_with_ids(vec, np.array([10_000], dtype=np.int64))
    faiss.write_index(index, out)
    changed = verify(out)
    assert not changed["ok"]
    assert changed["problems"][0] == "count differs: manifest says 37, file holds 38"


# -------------------------------------------------------------------------- sidecars lost


def test_an_index_whose_id_sidecar_is_missing_is_refused_naming_it(tmp_path):
    """QA: an index copied without its payload sidecar read back with ids 0..n-1 and no
    payloads, exit 0; the original ids and payloads were silently gone."""
    index = converted_index(tmp_path)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for suffix in ("", ".manifest.json"):
        shutil.copy(index + suffix, moved / ("i.faiss" + suffix))
    copy = str(moved / "i.faiss")
    with pytest.raises(InputError) as info:
        vecferry.convert(copy, str(moved / "o.jsonl"))
    assert str(info.value) == (
        f"{copy}: payload sidecar {copy}.payloads.parquet is missing: the index holds ids "
        "0..n-1 in place of the original ids (string) of its 37 points, which are in that file "
        f"with their payloads (put {copy}.payloads.parquet back beside the index, as vecferry "
        f"wrote it; if it is lost, moving {copy}.manifest.json away reads the index without "
        "them, with its FAISS ids)")
    assert sorted(p.name for p in moved.iterdir()) == ["i.faiss", "i.faiss.manifest.json"]
    # what the hint says holds: the sidecar put back restores the ids and payloads ...
    shutil.copy(index + ".payloads.parquet", copy + ".payloads.parquet")
    vecferry.convert(copy, str(moved / "o.jsonl"))
    back = [orjson.loads(line) for line in (moved / "o.jsonl").read_bytes().splitlines()]
    assert [(p["id"], p["payload"]) for p in back] == [(f"doc-{i}", {"i": i}) for i in range(N)]
    # ... and without both sidecars the index reads with its own ids
    for suffix in (".payloads.parquet", ".manifest.json"):
        Path(copy + suffix).unlink()
    _, _, payloads, reader, _ = read_all(copy)
    assert reader.manifest.id_kind == "int" and payloads == [None] * N


def test_a_missing_sidecar_of_integer_ids_with_payloads_is_refused(tmp_path):
    index = converted_index(tmp_path, ids="integers")
    side = index + ".payloads.parquet"
    manifest = orjson.loads(Path(index + ".manifest.json").read_bytes())
    assert manifest["extra"]["faiss_writer"]["payload_sidecar_rows"] == N
    Path(side).unlink()
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == (
        f"{index}: payload sidecar {side} is missing: its manifest sidecar says the payloads of "
        f"37 points are in that file (put {side} back beside the index, as vecferry wrote it; "
        f"if it is lost, moving {index}.manifest.json away reads the index without them, with "
        "its FAISS ids)")
    # integer ids and no payloads: no sidecar is written, none is looked for
    bare = converted_index(tmp_path, ids="integers", payloads=False, name="bare.faiss")
    assert not Path(bare + ".payloads.parquet").exists()
    ids, _, payloads, _, _ = read_all(bare)
    assert sorted(ids.tolist()) == sorted(IDS.tolist()) and payloads == [None] * N


@pytest.mark.parametrize("ids", ["strings", "integers"])
@pytest.mark.parametrize("recorded", [True, False])
def test_a_payload_sidecar_cut_short_is_refused_at_open(tmp_path, ids, recorded):
    """A sidecar with fewer rows than vecferry wrote: for mapped ids, manifests written before
    the row count was recorded are checked against the point count."""
    index = converted_index(tmp_path, ids=ids)
    side = index + ".payloads.parquet"
    pq.write_table(pq.read_table(side).slice(0, N - 1), side)
    if not recorded:
        manifest = orjson.loads(Path(index + ".manifest.json").read_bytes())
        del manifest["extra"]["faiss_writer"]["payload_sidecar_rows"]
        Path(index + ".manifest.json").write_bytes(orjson.dumps(manifest))
    if ids == "integers" and not recorded:
        # nothing says how many points had a payload: the rows there are are joined
        _, _, payloads, _, _ = read_all(index)
        assert sum(p is not None for p in payloads) == N - 1
        return
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    rows = ("one per point, with its original id (string) and payload" if ids == "strings"
            else "one per point with a payload")
    assert str(info.value) == (
        f"{side}: payload sidecar holds 36 rows, but vecferry wrote 37 with this index: {rows} "
        "(it belongs to another index or was cut short; put back the sidecar written with this "
        "index)")


def test_a_payload_sidecar_without_the_original_ids_is_refused(tmp_path):
    index = converted_index(tmp_path)
    side = index + ".payloads.parquet"
    pq.write_table(pq.read_table(side).drop_columns(["id"]), side)
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == (
        f"{side}: payload sidecar has no 'id' column, but the index's manifest sidecar says the "
        "original ids (string) are there (it belongs to another index; put back the sidecar "
        "written with this index)")


def test_a_payload_sidecar_without_its_manifest_is_refused(tmp_path):
    index = converted_index(tmp_path)
    Path(index + ".manifest.json").unlink()
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == (
        f"{index}: payload sidecar {index}.payloads.parquet has no manifest sidecar "
        f"{index}.manifest.json beside it: the payloads (and any original ids) it holds cannot "
        f"be applied without it (put {index}.manifest.json back beside the index, as vecferry "
        "wrote it)")


# --------------------------------------------------------------------------- lossy targets


def _points_schema(distance: str | None = "Euclid") -> pa.Schema:
    return Manifest(vectors=[VectorSpec(name="", size=D, distance=distance)]).schema()


def _write(out: str, n: int = N, context: Context | None = None,
           stream_distance: str | None = "Euclid", x: np.ndarray | None = None,
           **options) -> dict:
    """Write ``n`` points whose vector has ``stream_distance``; ``options`` go to the writer."""
    schema = _points_schema(stream_distance)
    writer = FaissWriter(out, schema, context=context or Context(), **options)
    writer.write_batch(_stream(schema, n=n, vector=vectors(n=n) if x is None else x))
    return writer.close()


def _sidecar_manifest(out: str) -> dict:
    return orjson.loads(Path(out + ".manifest.json").read_bytes())


@pytest.mark.parametrize(("factory", "index_type", "lossy"), [
    ("PQ2x4", "IndexIDMap2(IndexPQ)", "IndexPQ keeps"),
    ("SQ8", "IndexIDMap2(IndexScalarQuantizer)", "IndexScalarQuantizer keeps"),
    ("PCA4,Flat", "IndexIDMap2(IndexPreTransform(IndexFlat))",
     "IndexPreTransform (PCAMatrix) keeps"),
    ("IVF3,PQ2x4", "IndexIVFPQ", "IndexIVFPQ keeps"),
    ("OPQ2,PQ2x4", "IndexIDMap2(IndexPreTransform(IndexPQ))",
     "IndexPreTransform (OPQMatrix), IndexPQ keep"),
])
def test_a_lossy_index_factory_needs_allow_lossy(tmp_path, factory, index_type, lossy):
    """QA: `--index-factory PQ8` wrote approximations with exit 0, no warning, lossy: false."""
    src = tmp_path / "in.parquet"
    vecferry.convert(build(tmp_path / "s.faiss", "IDMap2,Flat")[1], str(src))
    out = tmp_path / "o.faiss"
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(str(src), str(out), writer_options={"index_factory": factory})
    assert str(info.value) == (
        f"{out}: index factory {factory!r} builds a lossy index, {index_type}: {lossy} "
        "approximations of the vectors, not the vectors (pass --allow-lossy to write it anyway, "
        "or choose an exact index such as 'IDMap2,Flat', 'HNSW32' or 'IVF1024,Flat')")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "s.faiss"]


def test_a_lossy_index_written_with_allow_lossy_says_so(tmp_path):
    out = str(tmp_path / "pq.faiss")
    context = Context()
    x = vectors(n=300, seed=3)
    _write(out, n=300, x=x, context=context, index_factory="PQ2x4", allow_lossy=True)
    assert context.warnings == [
        f"{out}: index 'PQ2x4' is lossy (IndexPQ); it keeps approximations of the vectors, read "
        "back only with --allow-lossy"]
    manifest = _sidecar_manifest(out)
    assert manifest["extra"]["faiss"] == {
        "index_type": "IndexIDMap2(IndexPQ)", "metric": "L2", "lossy": True,
        "lossy_components": ["IndexPQ"], "faiss_version": faiss.__version__}
    assert manifest["digest"] is None  # approximations would not match a digest of the input
    with pytest.raises(UnsupportedError, match="stores lossy codes"):
        FaissReader(out, context=Context())
    ids, vecs, _, reader, _ = read_all(out, allow_lossy=True)
    assert ids.tolist() == list(range(300)) and reader.manifest.extra["faiss"]["lossy"] is True
    assert not np.array_equal(vecs, x)


def test_a_source_index_s_facts_do_not_describe_the_written_one(tmp_path):
    # the stream comes from a lossy index (facts lossy: true); the exact index written from it
    # is described as what it is
    _, src = build(tmp_path / "s.faiss", "IDMap,SQ8")
    vecferry.convert(src, str(tmp_path / "m.parquet"), reader_options={"allow_lossy": True})
    out = str(tmp_path / "o.faiss")
    vecferry.convert(str(tmp_path / "m.parquet"), out)
    assert _sidecar_manifest(out)["extra"]["faiss"] == {
        "index_type": "IndexIDMap2(IndexFlat)", "metric": "L2", "lossy": False,
        "faiss_version": faiss.__version__}


@pytest.mark.parametrize(("factory", "built", "unsupported"), [
    ("LSH", "IndexIDMap2(IndexLSH)", "IndexLSH"),
    ("PQ2x4fs", "IndexIDMap2(IndexPQFastScan)", "IndexPQFastScan"),
    ("NSG8,Flat", "IndexIDMap2(IndexNSGFlat)", "IndexNSGFlat"),
])
def test_an_index_the_reader_cannot_read_back_is_refused_before_writing(tmp_path, factory,
                                                                        built, unsupported):
    out = str(tmp_path / "o.faiss")
    with pytest.raises(UnsupportedError) as info:
        FaissWriter(out, _points_schema(), context=Context(), index_factory=factory,
                    allow_lossy=True)
    assert str(info.value) == (
        f"{out}: index factory {factory!r} builds {built}, which vecferry cannot read back "
        f"(FAISS index type {unsupported} is not supported) (choose another --index-factory; "
        f"{faiss_index._supported_hint()})")
    assert list(tmp_path.iterdir()) == []


def test_a_refined_index_keeps_exact_vectors_and_is_not_lossy(tmp_path):
    # its PQ codes are a search shortcut; the refinement index holds the vectors themselves
    out = str(tmp_path / "r.faiss")
    x = vectors(n=300, seed=4)
    _write(out, n=300, x=x, index_factory="IVF3,PQ2x4,RFlat")
    manifest = _sidecar_manifest(out)
    assert manifest["extra"]["faiss"]["lossy"] is False and manifest["digest"] is not None
    ids, vecs, *_ = read_all(out)
    assert np.array_equal(vecs[np.argsort(ids)].view(np.uint32), x.view(np.uint32))


# ---------------------------------------------------------------------------- distance


@pytest.mark.parametrize(("distance", "metric"), [
    ("Cosine", faiss.METRIC_INNER_PRODUCT), ("Dot", faiss.METRIC_INNER_PRODUCT),
    ("Euclid", faiss.METRIC_L2), ("Manhattan", faiss.METRIC_L1)])
def test_distance_option_applies_when_the_stream_has_none(tmp_path, distance, metric):
    """QA: `--distance` was refused for FAISS targets though --help offers it."""
    out = str(tmp_path / "o.faiss")
    context = Context()
    x = vectors()
    report = _write(out, x=x, context=context, stream_distance=None, distance=distance)
    assert faiss.read_index(out).metric_type == metric
    manifest = _sidecar_manifest(out)
    assert manifest["vectors"][0]["distance"] == distance
    assert manifest["extra"]["faiss_writer"]["distance"] == (
        f"{distance}, given as an option (the stream had none)")
    _, vecs, _, reader, _ = read_all(out)
    assert reader.manifest.vectors[0].distance == distance
    if distance == "Cosine":  # normalized into an inner-product index, as for Cosine streams
        assert report["normalized"] == N
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-6)
        assert context.warnings == [f"{out}: 37 vector(s) were not unit length and were "
                                    "normalized for the Cosine distance"]
    else:
        assert np.array_equal(vecs.view(np.uint32), x.view(np.uint32))
        assert context.warnings == []


def test_distance_option_does_not_override_the_stream_s_distance(tmp_path):
    out = str(tmp_path / "o.faiss")
    context = Context()
    _write(out, context=context, stream_distance="Euclid", distance="Dot")
    assert context.warnings == [f"{out}: distance Dot (--distance) is not used: the stream "
                                "records Euclid"]
    assert faiss.read_index(out).metric_type == faiss.METRIC_L2
    assert _sidecar_manifest(out)["vectors"][0]["distance"] == "Euclid"
    assert "distance" not in _sidecar_manifest(out)["extra"]["faiss_writer"]
    quiet = Context()
    _write(str(tmp_path / "same.faiss"), context=quiet, distance="Euclid")
    assert quiet.warnings == []


def test_distance_option_on_binary_vectors_and_unknown_distances(tmp_path):
    xb = binary_vectors()
    _, src = build_binary(tmp_path / "b.faiss", "idmap2", xb)
    vecferry.convert(src, str(tmp_path / "b.parquet"))
    reader = vecferry.open_reader(str(tmp_path / "b.parquet"))
    out = str(tmp_path / "c.faiss")
    context = Context()
    writer = FaissWriter(out, reader.schema, context=context, distance="Cosine")
    for batch in reader.batches(N):
        writer.write_batch(batch)
    writer.close()
    assert context.warnings == [
        f"{out}: distance Cosine (--distance) is not used: the vectors are packed bits, and a "
        "binary index compares them by Hamming distance"]
    assert _sidecar_manifest(out)["vectors"][0]["distance"] is None
    with pytest.raises(UsageError) as info:
        FaissWriter(str(tmp_path / "d.faiss"), _points_schema(None), context=Context(),
                    distance="cosine")
    assert str(info.value) == ("unknown distance 'cosine' (choose one of Euclid, Dot, Cosine, "
                               "Manhattan)")
    assert not (tmp_path / "d.faiss").exists()


def test_cli_distance_reaches_a_faiss_target_and_a_lossy_factory_is_refused(tmp_path):
    from click.testing import CliRunner

    from vecferry.cli import main

    src = tmp_path / "in.parquet"  # another tool's Parquet: no distance recorded
    x = vectors()
    pq.write_table(pa.table({"id": pa.array(np.arange(N, dtype=np.uint64)),
                             "vector": pa.FixedSizeListArray.from_arrays(
                                 pa.array(x.reshape(-1)), D)}), src)
    out = tmp_path / "o.faiss"
    result = CliRunner().invoke(main, ["convert", str(src), str(out), "--distance", "Dot", "-q"],
                                catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (0, "")
    assert faiss.read_index(str(out)).metric_type == faiss.METRIC_INNER_PRODUCT
    lossy = tmp_path / "pq.faiss"
    result = CliRunner().invoke(main, ["convert", str(src), str(lossy), "--index-factory",
                                       "SQ8", "-q"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr == (
        # the warning the run gave before it stopped comes first
        f"warning: {lossy}: the stream has no distance; the index uses L2 (Euclid); pass "
        '--distance NAME (in Python: writer_options={"distance": NAME}) to choose\n'
        f"error: {lossy}: index factory 'SQ8' builds a lossy index, "
        "IndexIDMap2(IndexScalarQuantizer): IndexScalarQuantizer keeps approximations of the "
        "vectors, not the vectors (pass --allow-lossy to write it anyway, or choose an exact "
        "index such as 'IDMap2,Flat', 'HNSW32' or 'IVF1024,Flat')\n")
    assert not lossy.exists()


def test_partition_workers_take_the_drivers_distance_and_look_at_no_vector(tmp_path,
                                                                          monkeypatch):
    """Deciding Dot or Cosine can read every vector: done once by the driver, not again by
    each worker (``worker_options``)."""
    from vecferry import scaleout

    path = _ip_index_with_one_long_vector(tmp_path)
    reader = FaissReader(path, context=Context())
    assert reader.worker_options() == {"distance": "Dot"}
    try:
        _, job, _ = scaleout.choose(
            reader, src=path, src_fmt="faiss", reader_options={}, dst=str(tmp_path / "p") + "/",
            dst_fmt="parquet", writer_options={}, workers=2, engine="local",
            partition_size=4096, limit=None, batch_size=256, on_error="fail",
            check_duplicates=False)
    finally:
        reader.close()
    assert job.reader_options == {"distance": "Dot"}

    def no_pass(self):
        raise AssertionError("a worker looked at the vectors again")

    monkeypatch.setattr(FaissReader, "_norms", no_pass)
    worker_reader = scaleout._reader(job, Context())
    try:
        assert worker_reader.manifest.vectors[0].distance == "Dot"
    finally:
        scaleout._drop_reader(job)
    monkeypatch.undo()
    report = vecferry.convert(path, str(tmp_path / "p") + "/", to_format="parquet", workers=2,
                              partition_size=4096)
    assert report["written"] == 3000 and report.get("partitions", 0) > 1


def test_an_l2_index_gives_workers_nothing_to_take(tmp_path):
    path = str(tmp_path / "l2.faiss")
    index = faiss.IndexFlatL2(4)
    index.add(np.ones((3, 4), dtype=np.float32))
    faiss.write_index(index, path)
    with FaissReader(path, context=Context()) as reader:
        assert reader.worker_options() == {}
