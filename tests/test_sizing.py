"""Sizing (``vecferry.sizing``): every figure checked against arithmetic done by hand, the
recommendation at its thresholds, warnings on a real local-mode collection, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import vecferry
from vecferry.cli import main
from vecferry.errors import UsageError
from vecferry.inspect import inspect_location
from vecferry.sizing import (
    DEFAULT_RAM_BUDGET,
    estimate,
    hnsw_bytes,
    human,
    parse_bytes,
    percentile_nearest_rank,
    text_lines,
)
from vecferry.stream import Manifest, VectorSpec

M1 = 1_000_000
# 98 points with 100 payload bytes, one with 500, one with 1000: sum 11,300, mean 113.0,
# p99 = sorted[ceil(0.99 * 100) - 1] = sorted[98] = 500, max 1000.
PAYLOADS = [100] * 98 + [500, 1000]

# 1,000,000 x 768 float32, m = 16, by hand:
RAW = 3_072_000_000          # 1e6 * 768 * 4
SCALAR = 768_000_000         # 1e6 * 768 * 1
BINARY = 96_000_000          # 1e6 * ceil(768 / 8) = 1e6 * 96
HNSW = 132_266_667           # ceil(1e6 * 4 * (2*16 + 16/15)) = ceil(1,984,000,000 / 15)
PAYLOAD_TOTAL = 113_000_000  # 113.0 * 1e6


def big(collection=None, **spec):
    return Manifest(vectors=[VectorSpec(name="", size=768, distance="Cosine", **spec)],
                    count=M1, collection=collection)


def test_dense_float32_against_the_arithmetic():
    sz = estimate(big(), M1, PAYLOADS)
    v = sz["vectors"][0]
    assert (v["points"], v["values"], v["m"]) == (M1, M1, 16)
    assert v["raw_bytes"] == RAW
    assert v["quantized_bytes"] == {"none": 0, "scalar": SCALAR, "binary": BINARY}
    assert v["hnsw_bytes"] == HNSW
    lay = v["layouts"]
    # vectors in RAM: originals (+ quantized copy) + graph resident; RAM = ceil(1.5 x resident)
    assert lay["ram"]["none"] == {"resident": 3_204_266_667, "ram": 4_806_400_001,
                                  "disk": 3_204_266_667}
    assert lay["ram"]["scalar"] == {"resident": 3_972_266_667, "ram": 5_958_400_001,
                                    "disk": 3_972_266_667}
    assert lay["ram"]["binary"]["resident"] == RAW + BINARY + HNSW == 3_300_266_667
    # vectors on disk: only the quantized copy and the graph stay resident
    assert lay["disk"]["none"] == {"resident": HNSW, "ram": 198_400_001,
                                   "disk": 3_204_266_667}
    assert lay["disk"]["scalar"] == {"resident": 900_266_667, "ram": 1_350_400_001,
                                     "disk": 3_972_266_667}
    assert lay["disk"]["binary"] == {"resident": 228_266_667, "ram": 342_400_001,
                                     "disk": 3_300_266_667}
    p = sz["payload"]
    assert (p["sampled"], p["mean"], p["p99"], p["max"], p["total"]) == (100, 113.0, 500, 1000,
                                                                         PAYLOAD_TOTAL)
    assert p["on_disk"] is True and p["resident"] == 0   # Qdrant's default on_disk_payload
    t = sz["totals"]
    assert (t["raw_bytes"], t["hnsw_bytes"], t["payload_bytes"]) == (RAW, HNSW, PAYLOAD_TOTAL)
    # disk holds the payload as well
    assert t["layouts"]["ram"]["none"] == {"resident": 3_204_266_667, "ram": 4_806_400_001,
                                           "disk": 3_317_266_667}
    assert t["layouts"]["disk"]["scalar"]["disk"] == 3_972_266_667 + PAYLOAD_TOTAL
    assert "configured" not in t and sz["warnings"] == [] and sz["config"] is None


def test_payload_in_ram_counts_in_ram():
    sz = estimate(big({"on_disk_payload": False}), M1, PAYLOADS)
    assert sz["payload"]["resident"] == PAYLOAD_TOTAL
    cell = sz["totals"]["layouts"]["disk"]["binary"]
    assert cell["resident"] == 228_266_667 + 113_000_000 == 341_266_667
    assert cell["ram"] == math.ceil(341_266_667 * 1.5) == 511_900_001


@pytest.mark.parametrize(("datatype", "raw"), [("float16", 200_000), ("uint8", 100_000)])
def test_narrow_datatypes(datatype, raw):
    # 1,000 x 100: float16 2 bytes/dim, uint8 1; scalar always 1 byte/dim; binary
    # ceil(100 / 8) = 13 bytes per vector
    m = Manifest(vectors=[VectorSpec(name="v", size=100, datatype=datatype)])
    v = estimate(m, 1000, [])["vectors"][0]
    assert v["raw_bytes"] == raw
    assert v["quantized_bytes"] == {"none": 0, "scalar": 100_000, "binary": 13_000}


def test_hnsw_m_zero_one_and_overrides():
    assert hnsw_bytes(1000, 0) == 0
    assert hnsw_bytes(1000, 1) == 8_000                # 2 links x 4 bytes
    assert hnsw_bytes(1000, 16) == 132_267             # ceil(132,266.67)
    assert hnsw_bytes(1000, 32) == 260_130             # ceil(4000 * 2016 / 31) = ceil(260,129.03)
    manifest = Manifest(
        vectors=[VectorSpec(name="a", size=8),
                 VectorSpec(name="b", size=8, extra={"hnsw_config": {"m": 32}})],
        collection={"hnsw_config": {"m": 0}})
    a, b = estimate(manifest, 1000, [])["vectors"]
    assert (a["m"], a["hnsw_bytes"]) == (0, 0)          # the collection's m = 0: no graph
    assert (b["m"], b["hnsw_bytes"]) == (32, 260_130)   # the vector's own m wins
    assert a["layouts"]["disk"]["none"]["resident"] == 0


def test_sparse_from_sampled_non_zeros():
    # 5 of 10 sampled points hold it, 3.5 non-zeros each: 1000 points -> 500 vectors,
    # 1,750 entries; storage and inverted index 8 bytes per entry each
    m = Manifest(vectors=[VectorSpec(name="s", kind="sparse")])
    sz = estimate(m, 1000, [], vector_stats={"s": {"sampled": 10, "present": 5, "mean": 3.5}})
    v = sz["vectors"][0]
    assert (v["points"], v["values"], v["raw_bytes"], v["index_bytes"], v["hnsw_bytes"]) == (
        500, 1750, 14_000, 14_000, 0)
    for q in ("none", "scalar", "binary"):   # quantization does not apply to sparse vectors
        assert v["layouts"]["ram"][q] == {"resident": 28_000, "ram": 42_000, "disk": 28_000}
        assert v["layouts"]["disk"][q] == {"resident": 0, "ram": 0, "disk": 28_000}


def test_multivector_from_sampled_sub_vectors():
    # 1000 points x 10.25 sub-vectors = 10,250 sub-vectors of 128 float32; graph over points
    m = Manifest(vectors=[VectorSpec(name="mv", kind="multi", size=128)])
    v = estimate(m, 1000, [], vector_stats={"mv": {"sampled": 4, "present": 4,
                                                   "mean": 10.25}})["vectors"][0]
    assert (v["points"], v["values"]) == (1000, 10_250)
    assert v["raw_bytes"] == 10_250 * 128 * 4 == 5_248_000
    assert v["quantized_bytes"] == {"none": 0, "scalar": 1_312_000, "binary": 164_000}
    assert v["hnsw_bytes"] == 132_267


def test_missing_stats_and_unknown_count_are_said():
    m = Manifest(vectors=[VectorSpec(name="s", kind="sparse")])
    sz = estimate(m, None, [10, 20])
    assert sz["count"] == 2
    assert sz["vectors"][0]["raw_bytes"] == 0
    assert any("not known cheaply" in n for n in sz["notes"])
    assert any("sized as empty" in n for n in sz["notes"])


def test_recommendation_switches_at_the_thresholds():
    full, scalar, binary = 4_806_400_001, 1_350_400_001, 342_400_001   # from the test above

    def first(budget):
        return estimate(big(), M1, PAYLOADS, ram_budget=budget)["recommendation"][0]

    assert first(full).startswith("Keep vectors and the HNSW graph in RAM")
    assert first(full - 1).startswith("Quantization pays: originals on disk (on_disk: true) "
                                      "with scalar int8")
    assert first(scalar).startswith("Quantization pays: originals on disk (on_disk: true) "
                                    "with scalar int8")
    assert "with binary quantization" in first(scalar - 1)
    assert "with binary quantization" in first(binary)
    assert first(binary - 1).endswith("add RAM or shard it over about 2 nodes.")
    assert first(binary // 3).endswith("about 4 nodes.")   # ceil(342,400,001 / 114,133,333)
    # where quantization starts to pay: budget / RAM per point (4,806.400001 bytes)
    lines = estimate(big(), M1, PAYLOADS, ram_budget=8 << 30)["recommendation"]
    per_point = full / M1
    assert f"above ~{int((8 << 30) // per_point):,} points" in lines[1]
    assert f"above ~{int((8 << 30) // per_point):,} points" == "above ~1,787,186 points"
    assert lines[2].startswith("Payload: ~107.8 MiB in all (per point mean 113, p99 500, "
                               "max 1,000 bytes), kept on disk")


def test_small_collection_is_below_the_indexing_threshold():
    # 37 x 8 float32 = 1,184 bytes, far under 20,000 kB
    m = Manifest(vectors=[VectorSpec(name="d", size=8)])
    lines = estimate(m, 37, [])["recommendation"]
    assert lines[0].startswith("Keep vectors and the HNSW graph in RAM")
    assert any(line.startswith("Below Qdrant's indexing threshold (20,000 kB of vectors per "
                               "segment) searches are exact full scans") for line in lines)
    assert estimate(m, 0, [])["recommendation"] == ["The collection is empty: nothing to size."]


def test_config_warnings_from_the_pure_function():
    collection = {"hnsw_config": {"m": 0}, "on_disk_payload": True,
                  "payload_schema": {"lang": {"data_type": "keyword"},
                                     "meta.author": {"data_type": "keyword"}}}
    sz = estimate(big(collection, extra={"on_disk": True}), M1, PAYLOADS,
                  payload_keys=["lang", "meta", "title", "views"], ram_budget=64 << 30)
    assert sz["config"] == "recorded"   # not read from a Qdrant location
    warnings = sz["warnings"]
    assert warnings[0].startswith("vector (unnamed) is on disk (on_disk: true) although the "
                                  "whole collection fits in RAM")
    assert warnings[1].startswith("vector (unnamed) has no HNSW graph (m: 0) above the "
                                  "indexing threshold: every search scans all 1,000,000")
    assert warnings[2] == ("payload fields without an index: title, views; filters on them "
                           "read every payload")
    assert len(warnings) == 3
    assert sz["totals"]["configured"] == {"resident": 0, "ram": 0,
                                          "disk": RAW + PAYLOAD_TOTAL}
    # the same vectors on disk are fine when all in RAM does not fit the budget
    small = estimate(big(collection, extra={"on_disk": True}), M1, [], ram_budget=1 << 30)
    assert not any("is on disk" in w for w in small["warnings"])


def test_the_shard_key_a_reader_names_needs_no_index():
    """A custom-sharded collection's reader puts each point's shard key in its payload; the
    collection does not store that field, so no index on it is advised."""
    keys = ["lang", "_vecferry_shard_key"]
    custom = {"sharding_method": "custom", "shard_keys": ["en"],
              "payload_schema": {"lang": {"data_type": "keyword"}}}
    assert estimate(big(custom), M1, PAYLOADS, payload_keys=keys)["warnings"] == []
    # where the field is stored (a collection without shard keys), it is a field like others
    stored = {"payload_schema": {"lang": {"data_type": "keyword"}}}
    assert estimate(big(stored), M1, PAYLOADS, payload_keys=keys)["warnings"] == [
        "payload fields without an index: _vecferry_shard_key; filters on them read every "
        "payload"]


def test_quantization_warning_and_product_quantization():
    q = {"scalar": {"type": "int8", "always_ram": True}}
    sz = estimate(big({"quantization_config": q}), M1, [], ram_budget=8 << 30)
    assert sz["vectors"][0]["configured"] == {"layout": "ram", "quantization": "scalar"}
    assert sz["warnings"] == [
        "vector (unnamed) has scalar quantization although the collection fits in RAM "
        "unquantized (~4.5 GiB of the 8.0 GiB budget): it costs recall and saves no memory "
        "that is needed"]
    assert sz["totals"]["configured"]["resident"] == RAW + SCALAR + HNSW
    assert estimate(big({"quantization_config": q}), M1, [])["warnings"] == []   # 1 GiB budget
    product = estimate(big({"quantization_config": {"product": {"compression": "x16"}}}), M1,
                       [])
    assert product["totals"]["configured"] is None


def test_helpers():
    assert percentile_nearest_rank([], 0.99) == 0
    assert percentile_nearest_rank([5], 0.99) == 5
    assert percentile_nearest_rank(list(range(1, 201)), 0.99) == 198
    assert parse_bytes("8GiB") == 8 << 30
    assert parse_bytes("512M") == 512 << 20
    assert parse_bytes("1.5g") == 3 << 29
    assert parse_bytes("1000") == 1000
    with pytest.raises(UsageError, match="not a size"):
        parse_bytes("lots")
    with pytest.raises(UsageError, match="positive"):
        estimate(big(), M1, [], ram_budget=0)
    assert (human(1000), human(1536), human(3 << 30)) == ("1000 B", "1.5 KiB", "3.0 GiB")
    assert DEFAULT_RAM_BUDGET == 1 << 30


# -------------------------------------------------------------- real data and Qdrant local


def test_inspect_samples_payload_sizes_and_vector_lengths(samples):
    path = samples / "points_rich.jsonl"
    points = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    sz = inspect_location(str(path))["sizing"]
    sizes = [len(orjson.dumps(p["payload"])) if p.get("payload") else 0 for p in points]
    n = len(points)
    assert sz["payload"]["max"] == max(sizes)
    assert sz["payload"]["mean"] == round(sum(sizes) / n, 1)
    assert sz["payload"]["total"] == sum(sizes)   # count unknown: the sample is the data
    by_name = {v["name"]: v for v in sz["vectors"]}
    holding = [p["vector"]["keywords"] for p in points if p["vector"].get("keywords")]
    nnz = sum(len(s["indices"]) for s in holding)
    assert by_name["keywords"]["points"] == len(holding)
    assert by_name["keywords"]["raw_bytes"] == nnz * 8
    subs = sum(len(p["vector"]["colbert"]) for p in points if p["vector"].get("colbert"))
    assert by_name["colbert"]["values"] == subs
    assert by_name["colbert"]["raw_bytes"] == subs * 8 * 4
    lines = text_lines(sz)
    assert f"  keywords: sparse, {len(holding)} vectors x {nnz / len(holding):g} non-zeros: " \
           f"{human(nnz * 8)} + index {human(nnz * 8)}" in lines
    assert any(line.startswith(f"  colbert: {n} x {subs / n:g} sub-vectors x 8 float32: raw ")
               for line in lines)
    assert lines[-2:] == ["notes:", "  - the point count is not known cheaply: sized for the "
                                    f"{n} sampled points (a lower bound)"]


def make_collection(folder: Path, n: int = 50) -> str:
    """A local-mode collection: dense ``d`` on disk with scalar quantization, payloads."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    try:
        client.create_collection("docs", vectors_config={
            "d": models.VectorParams(
                size=8, distance="Cosine", on_disk=True,
                quantization_config=models.ScalarQuantization(
                    scalar=models.ScalarQuantizationConfig(type="int8", always_ram=True)))})
        client.upsert("docs", [
            models.PointStruct(id=i, vector={"d": [float(i + k) for k in range(8)]},
                               payload={"lang": "en", "n": i, "title": "x" * (i % 7)})
            for i in range(n)])
    finally:
        client.close()
    return f"qdrant-local://{folder}/docs"


def test_warnings_on_a_local_collection(tmp_path):
    loc = make_collection(tmp_path / "q")
    sz = inspect_location(loc)["sizing"]
    assert sz["config"] == "current"
    v = sz["vectors"][0]
    assert v["configured"] == {"layout": "disk", "quantization": "scalar"}
    assert v["raw_bytes"] == 50 * 8 * 4
    assert sz["warnings"][0].startswith("vector 'd' is on disk (on_disk: true) although the "
                                        "whole collection fits in RAM")
    assert sz["warnings"][1].startswith("vector 'd' has scalar quantization although the "
                                        "collection fits in RAM unquantized (~")
    assert "budget and under Qdrant's indexing threshold): it costs recall" in sz["warnings"][1]
    assert sz["warnings"][2] == (
        "payload fields without an index: lang, n, title; filters on them read every payload "
        "(local mode keeps no payload indexes: create them on the server)")
    assert sz["recommendation"][-1].startswith("This is a qdrant-client local-mode folder")
    # payload bytes per point: {"lang":"en","n":i,"title":"x"*(i%7)} as compact JSON text
    sizes = [len(orjson.dumps({"lang": "en", "n": i, "title": "x" * (i % 7)}))
             for i in range(50)]
    assert (sz["payload"]["max"], sz["payload"]["total"]) == (max(sizes), sum(sizes))
    assert sz["totals"]["configured"]["resident"] == 50 * 8 + hnsw_bytes(50, 16)


def test_a_file_keeps_the_recorded_config(tmp_path):
    out = tmp_path / "docs.jsonl"
    vecferry.convert(make_collection(tmp_path / "q"), str(out))
    sz = inspect_location(str(out))["sizing"]
    assert sz["config"] == "recorded"
    assert any(w.startswith("vector 'd' is on disk") for w in sz["warnings"])
    assert not any("local-mode folder" in line for line in sz["recommendation"])


def test_cli_text_and_json(tmp_path):
    loc = make_collection(tmp_path / "q")
    runner = CliRunner()
    text = runner.invoke(main, ["inspect", loc], catch_exceptions=False)
    assert text.exit_code == 0
    out = text.stdout
    assert "sizing in Qdrant (50 points; RAM = 1.5 x resident bytes; budget 1.0 GiB):" in out
    assert "  d: 50 x 8 float32: raw 1.6 KiB, scalar 400 B, binary 50 B, HNSW m=16" in out
    assert "  vectors on disk (mmap) + scalar int8" in out
    assert "  as configured (current)" in out
    assert "\nrecommendation:\n  - Keep vectors and the HNSW graph in RAM" in out
    assert "\nwarnings (current collection config):\n  - vector 'd' is on disk" in out

    js = runner.invoke(main, ["inspect", loc, "--json", "--ram-budget", "2GiB"],
                       catch_exceptions=False)
    assert js.exit_code == 0
    sizing = json.loads(js.stdout)["sizing"]
    assert {"count", "assumptions", "vectors", "payload", "totals", "recommendation",
            "warnings", "notes", "config"} <= set(sizing)
    assert sizing["assumptions"]["ram_budget"] == 2 << 30
    assert set(sizing["payload"]) >= {"mean", "p99", "max", "total"}
    assert set(sizing["totals"]["layouts"]) == {"ram", "disk"}
    assert set(sizing["totals"]["layouts"]["disk"]) == {"none", "scalar", "binary"}

    bad = runner.invoke(main, ["inspect", loc, "--ram-budget", "lots"])
    assert bad.exit_code == 2
    assert "not a size: 'lots'" in bad.stderr
