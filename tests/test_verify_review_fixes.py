"""Review fixes in ``verify`` and ``inspect``: a distance that differs is a difference; a file
destination is compared record by record (repeated ids too) and digests that differ are never
passed unexplained under ``--tolerance``; the comparison's memory is bounded in bytes; the
config of an exported file is the one it recorded; one location that is a collection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import vecferry
from vecferry.cli import main
from vecferry.errors import UsageError
from vecferry.inspect import inspect_location
from vecferry.sizing import estimate
from vecferry.stream import Manifest, VectorSpec
from vecferry.verification import iter_diff, verify

needs_edge = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("qdrant_edge") is None,
    reason="needs qdrant-edge")
needs_client = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("qdrant_client") is None,
    reason="needs qdrant-client")


NOTE = " (the points are compared; a collection loaded from each would search differently)"

def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def jsonl(path: Path, points: list[dict[str, Any]]) -> str:
    """A JSONL file as another tool writes it: no sidecar, no distance."""
    path.write_text("".join(json.dumps(p) + "\n" for p in points))
    return str(path)


POINTS = [{"id": 1, "vector": [1, 2]}, {"id": 2, "vector": [3, -4]},
          {"id": 3, "vector": [-5, 6]}]


# ----------------------------------------------------------------------------- A1: distance


@needs_edge
def test_a_changed_distance_is_warned_though_search_agrees(tmp_path: Path) -> None:
    """A Dot file copied into a Manhattan shard holds the same bits and searches alike by
    the shard's metric, but a load of each builds a different collection: a warning, since
    the points are the same and --distance changes the distance on purpose."""
    src = jsonl(tmp_path / "p.jsonl", POINTS)
    dot = str(tmp_path / "p.parquet")
    vecferry.convert(src, dot, writer_options={"distance": "Dot"})
    man = f"qdrant-edge://{tmp_path}/e_man"
    vecferry.convert(src, man, writer_options={"distance": "Manhattan"})
    report = verify(dot, man, queries=3)
    assert report["ok"] is True and report["problems"] == []
    assert report["warnings"] == [
        "vector distance differs: source Dot, destination Manhattan" + NOTE]
    assert report["digests_match"] is True and report["search"]["recall"] == 1.0
    result = run("verify", dot, man)
    assert result.exit_code == 0
    assert ("warning: vector distance differs: source Dot, destination Manhattan" + NOTE
            in result.stderr)
    # a side that records no distance differs from none
    assert verify(src, man, queries=3)["ok"] is True


@needs_edge
def test_a_dot_source_is_not_normalised_against_a_cosine_shard(tmp_path: Path) -> None:
    """Tolerance compares unit vectors only when the destination is under Cosine and the
    source is too or records no distance: a Dot source's lengths are its data."""
    src = jsonl(tmp_path / "p.jsonl", POINTS)
    dot = str(tmp_path / "p.parquet")
    vecferry.convert(src, dot, writer_options={"distance": "Dot"})
    cos = f"qdrant-edge://{tmp_path}/e_cos"
    vecferry.convert(src, cos, writer_options={"distance": "Cosine"})
    report = verify(dot, cos, queries=0, tolerance=1e-6)
    assert report["ok"] is False
    assert report["problems"] == ["3 vector differs: 1, 2, 3"]
    assert report["warnings"] == [
        "vector distance differs: source Dot, destination Cosine" + NOTE]
    # [-5, 6] beside its unit vector [-0.64, 0.77]
    assert report["diff"]["max_abs_error"] == pytest.approx(6 - 6 / np.hypot(5, 6), rel=1e-6)
    # the source the shard was loaded from records no distance: the Cosine was chosen for its
    # vectors, and only their direction is kept
    plain = verify(src, cos, queries=0, tolerance=1e-6)
    assert plain["ok"] is True, plain["problems"]
    assert plain["verdict"].startswith("equal within tolerance 1e-06")


def _dot_and_edited(tmp_path: Path, points: list[dict[str, Any]], name: str,
                    distance: str) -> tuple[str, str]:
    """``points`` written as a Dot JSONL file, and a copy whose sidecar records ``distance``
    for vector ``name`` instead."""
    src = jsonl(tmp_path / f"{name or 'p'}.jsonl", points)
    dot, edited = str(tmp_path / f"{name}_dot.jsonl"), str(tmp_path / f"{name}_edited.jsonl")
    vecferry.convert(src, dot, writer_options={"distance": "Dot"})
    shutil.copy(dot, edited)
    sidecar = json.loads(Path(dot + ".manifest.json").read_text())
    spec = next(v for v in sidecar["vectors"] if v["name"] == name)
    assert spec["distance"] == "Dot"
    spec["distance"] = distance
    Path(edited + ".manifest.json").write_text(json.dumps(sidecar))
    return dot, edited


def test_a_distance_edited_in_a_sidecar_is_warned(tmp_path: Path) -> None:
    """The digest covers points, not the manifest: the distance is compared on its own."""
    dot, edited = _dot_and_edited(tmp_path, POINTS, "", "Euclid")
    report = verify(dot, edited, queries=0)
    assert report["ok"] is True and report["digests_match"] is True
    assert report["warnings"] == ["vector distance differs: source Dot, destination Euclid" + NOTE]
    # named vectors are named; vectors of one distance on both sides are not a difference
    named = [{"id": i, "vector": {"a": [i, 1.0], "b": [1.0, i]}} for i in range(4)]
    first, second = _dot_and_edited(tmp_path, named, "b", "Cosine")
    assert verify(first, second, queries=0)["warnings"] == [
        "vector 'b' distance differs: source Dot, destination Cosine" + NOTE]


# -------------------------------------------------------------------------- A2 / C1: repeats


REPEATED_SRC = [{"id": 1, "vector": [1, 2], "payload": {"v": "a"}},
                {"id": 7, "vector": [3, 4], "payload": {"v": "old"}},
                {"id": 7, "vector": [5, 6], "payload": {"v": "new"}}]


def test_a_lost_earlier_record_of_a_repeated_id_is_named(tmp_path: Path) -> None:
    """A file keeps every record: a destination holding the later record of id 7 twice
    lost the earlier one, with or without a tolerance, and the id is named."""
    src = jsonl(tmp_path / "src.jsonl", REPEATED_SRC)
    dst = jsonl(tmp_path / "dst.jsonl", [REPEATED_SRC[0], REPEATED_SRC[2], REPEATED_SRC[2]])
    for tolerance in (0.0, None):
        diff = tmp_path / f"diff-{tolerance}.jsonl"
        report = verify(src, dst, queries=0, tolerance=tolerance, diff=str(diff))
        assert report["ok"] is False and report["digests_match"] is False
        assert report["problems"] == ["1 vector differs: 7", "1 payload differs: 7"]
        assert sorted((d["id"], d["status"]) for d in iter_diff(str(diff))) == [
            (7, "payload_differs"), (7, "vector_differs")]
        assert report["warnings"] == [
            "1 duplicate id(s) in the source (each record compared): 7",
            "1 duplicate id(s) in the destination (each record compared): 7"]
    result = run("verify", src, dst, "--tolerance", "0")
    assert result.exit_code == 4
    assert "differs: 1 vector differs: 7\ndiffers: 1 payload differs: 7\n" in result.stderr
    # a record missing from a repeated id is a missing record
    short = jsonl(tmp_path / "short.jsonl", REPEATED_SRC[:2])
    report = verify(src, short, queries=0, tolerance=0.0)
    assert report["problems"] == ["counts differ: source 3, destination 2",
                                  "1 missing in destination: 7"]


def test_repeated_ids_in_another_order_or_within_tolerance_still_pass(tmp_path: Path) -> None:
    """Records of a repeated id equal on both sides pair up whatever their order; a copy
    whose vectors moved within the tolerance passes it (its digest differs legitimately)."""
    src = jsonl(tmp_path / "src.jsonl", REPEATED_SRC)
    swapped = jsonl(tmp_path / "swapped.jsonl", [REPEATED_SRC[2], REPEATED_SRC[0],
                                                 REPEATED_SRC[1]])
    assert verify(src, swapped, queries=0)["verdict"] == "identical"
    nudged = [dict(p, vector=[x + 1e-3 for x in p["vector"]]) for p in REPEATED_SRC]
    near = jsonl(tmp_path / "near.jsonl", nudged)
    report = verify(src, near, queries=0, tolerance=0.01)
    assert report["ok"] is True, report["problems"]
    assert report["digests_match"] is False and report["diff"]["within_tolerance"] == 3
    assert report["verdict"].startswith("equal within tolerance 0.01 (largest error 0.001")
    tight = verify(src, near, queries=0, tolerance=1e-4)
    assert tight["problems"] == ["3 vector differs: 1, 7"]


# ------------------------------------------------------------------------------ B1: memory


def _pair(tmp_path: Path, n: int, dim: int) -> tuple[str, str]:
    rng = np.random.default_rng(7)
    a = rng.standard_normal((n, dim)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    a[:, 0] += 1e-4
    np.save(tmp_path / "b.npy", a)
    return str(tmp_path / "a.npy"), str(tmp_path / "b.npy")


def test_the_tolerance_comparison_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Records spilled for a tolerance carry their values: partitions are sized by bytes,
    so a piece of 256-dim rows stays near the budget, and the report does not change."""
    a, b = _pair(tmp_path, 600, 256)
    whole = verify(a, b, queries=0, tolerance=1e-3)
    capped = verify(a, b, queries=0, tolerance=1e-3, memory_bytes=64 << 10)
    assert whole["diff"]["largest_partition_rows"] == 600
    # 64 KiB of ~1 KiB records: the hashing spreads them unevenly, but far below 600
    assert 0 < capped["diff"]["largest_partition_rows"] <= 100
    for report in (whole, capped):
        assert report["ok"] is True and report["diff"]["within_tolerance"] == 600
        del report["diff"]["largest_partition_rows"], report["seconds"]
    assert capped == whole


def test_a_partition_of_unknown_size_is_split_by_bytes(tmp_path: Path) -> None:
    """A JSONL without a sidecar has no count before reading: its partitions are split
    again when they outgrow the budget in bytes, and the diff is the same."""
    rng = np.random.default_rng(3)
    points = [{"id": i, "vector": rng.standard_normal(64).round(3).tolist()}
              for i in range(400)]
    src = jsonl(tmp_path / "a.jsonl", points)
    moved = [dict(p, vector=[p["vector"][0] + 0.5, *p["vector"][1:]]) if p["id"] % 50 == 0
             else p for p in points]
    dst = jsonl(tmp_path / "b.jsonl", moved[:-1])
    whole = verify(src, dst, queries=0, tolerance=0.1, diff=str(tmp_path / "w.jsonl"))
    capped = verify(src, dst, queries=0, tolerance=0.1, diff=str(tmp_path / "c.jsonl"),
                    memory_bytes=8 << 10, batch_size=32)
    assert capped["diff"]["largest_partition_rows"] < 40
    assert capped["problems"] == ["counts differ: source 400, destination 399",
                                  "1 missing in destination: 399",
                                  "8 vector differs: 0, 50, 100, 150, 200, 250, 300, 350"]
    for report in (whole, capped):
        del report["diff"]["largest_partition_rows"], report["seconds"], report["diff_file"]
    assert capped == whole
    assert sorted(map(str, iter_diff(str(tmp_path / "c.jsonl")))) == sorted(
        map(str, iter_diff(str(tmp_path / "w.jsonl"))))


def test_memory_bytes_must_be_positive(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, 3, 4)
    with pytest.raises(UsageError) as err:
        verify(a, b, memory_bytes=0)
    assert err.value.message == "memory_bytes must be positive"


# ------------------------------------------------------------------- C2: inspect's config


def _collection(folder: Path) -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    try:
        client.create_collection("c", vectors_config={
            "d": models.VectorParams(size=4, distance="Cosine", on_disk=True)})
        client.upsert("c", [models.PointStruct(id=i, vector={"d": [1.0 + i, 2, 3, 4]},
                                               payload={"n": i}) for i in range(20)])
    finally:
        client.close()
    return f"qdrant-local://{folder}/c"


@needs_client
def test_a_parquet_exported_from_a_collection_shows_its_recorded_config(
        tmp_path: Path) -> None:
    """A Parquet file keeps the collection it came from as its source; its config is still
    the one it recorded, not a current one, and it is no local-mode folder."""
    coll = _collection(tmp_path / "q")
    out = str(tmp_path / "cfg.parquet")
    vecferry.convert(coll, out)
    sizing = inspect_location(out)["sizing"]
    assert sizing["config"] == "recorded"
    assert not any("local-mode folder" in line for line in sizing["recommendation"])
    text = run("inspect", out).stdout
    assert "  as configured (recorded)" in text
    assert "\nwarnings (recorded collection config):\n" in text
    assert "current" not in text
    assert inspect_location(coll)["sizing"]["config"] == "current"


def test_the_location_format_decides_when_given() -> None:
    recorded = Manifest(vectors=[VectorSpec("d", "dense", 4)],
                        source={"format": "qdrant", "engine": "local"},
                        collection={"hnsw_config": {"m": 16}})
    assert estimate(recorded, 10, [])["config"] == "current"  # nothing says otherwise
    assert estimate(recorded, 10, [], location_format="parquet")["config"] == "recorded"
    assert estimate(recorded, 10, [], location_format="qdrant")["config"] == "current"


# ----------------------------------------------------------- C3: one location, a collection


@needs_client
@needs_edge
def test_verify_of_one_collection_says_it_needs_a_file_or_a_second_location(
        tmp_path: Path) -> None:
    coll = _collection(tmp_path / "q")
    edge = f"qdrant-edge://{tmp_path}/e"
    vecferry.convert(coll, edge)
    for loc, fmt in ((coll, "qdrant"), (edge, "qdrant-edge")):
        with pytest.raises(UsageError) as err:
            verify(loc)
        assert err.value.message == (f"a collection ({fmt}) is not a file: verify with one "
                                     "location checks a file vecferry wrote against the "
                                     "digest it records")
        assert err.value.hint == ("give a second location to compare the collection with: "
                                  "vecferry verify SRC DST")
    result = run("verify", coll)
    assert result.exit_code == 2
    assert "a collection (qdrant) is not a file" in result.stderr
    assert "records no digest" not in result.stderr
