"""Hypothesis: random points survive JSONL -> Parquet -> JSONL exactly; id encoding inverts."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vecferry
from roundtrip import canonical, has_huge_int, read_points
from vecferry.stream import decode_ids, encode_id, is_uuid, kind_of_id, merge_id_kinds

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

int_ids = st.integers(0, 2**64 - 1)
uuid_ids = st.uuids().map(str)
string_ids = st.text(min_size=1, max_size=12).filter(lambda s: not is_uuid(s))
# In a stream mixing integers and strings, a string that reads as an integer is refused.
mixed_strings = st.one_of(uuid_ids, string_ids.filter(
    lambda s: not (s.isascii() and s.isdigit() and (s == "0" or s[0] != "0"))))

ID_LISTS = st.one_of(
    st.lists(int_ids, min_size=1, max_size=15),
    st.lists(uuid_ids, min_size=1, max_size=15),
    st.lists(string_ids, min_size=1, max_size=15),
    st.lists(st.one_of(int_ids, mixed_strings), min_size=1, max_size=15),
)

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
big_ints = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(
    [2**53 + 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, -(2**64) - 1, 10**40]))
json_leaves = st.one_of(st.none(), st.booleans(), big_ints,
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(json_leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=12)
payloads = st.one_of(st.none(), st.dictionaries(st.text(max_size=6), json_values, max_size=5))


@st.composite
def point_sets(draw):
    ids = draw(ID_LISTS)
    dim = draw(st.integers(1, 6))
    points = []
    for pid in ids:
        vec = draw(st.lists(float32s, min_size=dim, max_size=dim))
        point = {"id": pid, "vector": vec}
        payload = draw(payloads)
        if payload is not None or draw(st.booleans()):
            point["payload"] = payload
        points.append(point)
    return points


def _bits(vec) -> list[int]:
    return np.asarray(vec, dtype=np.float32).view(np.uint32).tolist()


@SETTINGS
@given(point_sets())
def test_jsonl_parquet_jsonl_is_exact(points):
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.jsonl"
        src.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in points),
                       encoding="utf-8")
        vecferry.convert(str(src), f"{d}/mid.parquet", check_duplicates=False, batch_size=4)
        report = vecferry.convert(f"{d}/mid.parquet", f"{d}/out.jsonl", check_duplicates=False,
                                  batch_size=3)
        assert report["written"] == len(points)
        manifest, got = read_points(f"{d}/out.jsonl", batch_size=5)
    assert manifest.id_kind == merge_id_kinds(kind_of_id(p["id"]) for p in points)
    assert [(type(g["id"]), g["id"]) for g in got] == [(type(p["id"]), p["id"]) for p in points]
    for g, p in zip(got, points, strict=True):
        assert _bits(g["vector"]) == _bits(p["vector"])
        assert canonical(g["payload"]) == canonical(p.get("payload"))


@SETTINGS
@given(st.one_of(
    st.tuples(st.just("int"), int_ids),
    st.tuples(st.just("uuid"), uuid_ids),
    st.tuples(st.just("string"), st.one_of(string_ids, uuid_ids)),
    st.tuples(st.just("mixed"), st.one_of(int_ids, mixed_strings)),
))
def test_encode_id_then_decode_ids_is_identity(case):
    kind, value = case
    stored = encode_id(value, kind)
    column = pa.array([stored], type=pa.uint64() if kind == "int" else pa.string())
    back = decode_ids(column, kind)
    assert back == [value]
    assert type(back[0]) is type(value)


@SETTINGS
@given(st.text(alphabet="0123456789abcdef-", min_size=1, max_size=40))
def test_mixed_stream_refuses_only_canonical_decimal_strings(text):
    # past 2^64 - 1 a decimal cannot be an integer id, so it is a string id like any other
    canonical_decimal = (text.isdigit() and (text == "0" or not text.startswith("0"))
                         and int(text) < 2**64)
    try:
        stored = encode_id(text, "mixed")
    except ValueError as exc:
        assert canonical_decimal, exc
        assert "looks like an integer" in str(exc)
    else:
        assert not canonical_decimal
        assert decode_ids(pa.array([stored]), "mixed") == [text]


@pytest.mark.parametrize("text", ["18446744073709551616", "12345678901234567890123"])
def test_a_decimal_past_64_bits_is_a_string_id_in_a_mixed_stream(text):
    assert decode_ids(pa.array([encode_id(text, "mixed"), encode_id(2**64 - 1, "mixed")]),
                      "mixed") == [text, 2**64 - 1]


def test_uuid_starting_with_zero_in_a_mixed_stream():
    u = "0a1b2c3d-0000-4000-8000-000000000001"
    assert decode_ids(pa.array([encode_id(u, "mixed"), encode_id(7, "mixed")]), "mixed") == [
        u, 7]
    assert str(uuid.UUID(u)) == u


def _chunk(lines: list[str]) -> list[tuple[int, bytes, bool]]:
    return [(i, line.encode(), True) for i, line in enumerate(lines, 1)]


@SETTINGS
@given(point_sets(), st.sampled_from([None, (", ", ": ")]))
def test_jsonl_fast_parse_equals_the_general_parser(points, separators):
    from vecferry.converters.jsonl import _fast_batch, parse_chunk
    from vecferry.points import infer_manifest

    manifest = infer_manifest(points)
    chunk = _chunk([json.dumps(p, separators=separators, ensure_ascii=False) for p in points])
    fast = _fast_batch(chunk, manifest)
    with mock.patch("vecferry.converters.jsonl._fast_batch", return_value=None):
        general, errors = parse_chunk(chunk, manifest.to_json(), "p.jsonl")
    if fast is not None:  # None: a payload integer past 64 bits, which simdjson refuses
        assert not errors and general is not None
        assert fast.equals(general) and fast.schema == general.schema
    else:
        assert any(has_huge_int(p.get("payload")) for p in points)


def test_jsonl_fast_parse_takes_plain_points_and_leaves_the_rest():
    from vecferry.converters.jsonl import _fast_batch
    from vecferry.points import infer_manifest

    plain = [{"id": i, "vector": [0.5, -1, 3e-39], "payload": {"k": "é", "n": 2**63}}
             for i in range(3)]
    manifest = infer_manifest(plain)
    lines = [json.dumps(p) for p in plain]
    batch = _fast_batch(_chunk(lines), manifest)
    assert batch is not None
    assert batch.column("id").to_pylist() == [0, 1, 2]
    assert batch.column("payload").to_pylist()[0] == '{"k":"é","n":9223372036854775808}'
    assert np.array(batch.column("vector").to_pylist()[0], dtype=np.float32).tolist() == \
        np.array([0.5, -1, 3e-39], dtype=np.float32).tolist()
    # each of these makes the chunk go to the general parser, which names the line
    for bad in ['{"id": 9, "vector": [1, 2, NaN]}', '{"id": 9, "vector": [1, 2]}',
                '{"id": 9, "vector": [1, 2, 1e39]}', '{"id": 9, "vector": [1, 2, true]}',
                '{"id": 9, "id": 8, "vector": [1, 2, 3]}', '{"id": 9, "vectors": [1, 2, 3]}',
                '{"id": 9.5, "vector": [1, 2, 3]}', '{"id": 9, "vector": [1, 2, 3], "x": 1}',
                '{"id": 9, "vector": [1, 2, 3], "payload": [1]}', '{"id": 9, "vector": [1, 2, 3]',
                '{"id": -1, "vector": [1, 2, 3]}', '{"id": 9, "vector": [1, 2, 3]} 5']:
        assert _fast_batch(_chunk([*lines, bad]), manifest) is None, bad


def test_jsonl_without_simdjson_parses_every_chunk_with_orjson(monkeypatch):
    import sys
    import threading

    from vecferry.converters import jsonl
    from vecferry.points import infer_manifest

    points = [{"id": i, "vector": [0.25, i], "payload": {"i": i}} for i in range(3)]
    manifest = infer_manifest(points)
    chunk = _chunk([json.dumps(p) for p in points])
    expected, _ = jsonl.parse_chunk(chunk, manifest.to_json(), "p.jsonl")
    monkeypatch.setitem(sys.modules, "simdjson", None)  # as if it were not installed
    monkeypatch.setattr(jsonl, "_simd", threading.local())  # no parser made yet
    assert jsonl._fast_batch(chunk, manifest) is None
    batch, errors = jsonl.parse_chunk(chunk, manifest.to_json(), "p.jsonl")
    assert not errors and batch.equals(expected)
    assert batch.column("payload").to_pylist() == ['{"i":0}', '{"i":1}', '{"i":2}']
