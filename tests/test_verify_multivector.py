"""``vecferry verify --tolerance`` on multivectors under Cosine, and ``verify --json`` output.

Qdrant normalizes a Cosine multivector sub-vector by sub-vector when it stores it, so an exact
copy into Edge differs in every bit of those values; with a tolerance it must pass, while a
changed direction or a changed number of sub-vectors is still a difference.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

import vecferry
from roundtrip import Dataset, write_points
from vecferry.cli import main
from vecferry.stream import VectorSpec
from vecferry.verification import iter_diff, verify

N, DIM, MDIM = 23, 6, 4

needs_edge = pytest.mark.skipif(importlib.util.find_spec("qdrant_edge") is None,
                                reason="needs qdrant-edge")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def multi_dataset(distance: str = "Cosine", n: int = N, seed: int = 3) -> Dataset:
    """Dense ``d`` and multi ``mv`` (1 to 3 sub-vectors, far from unit length) under
    ``distance``; every seventh point has no ``mv``."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        vec: dict[str, Any] = {"d": [float(x) for x in
                                     (rng.standard_normal(DIM) * 4).astype(np.float32)]}
        if i % 7 != 3:
            rows = (rng.standard_normal((1 + i % 3, MDIM)) * 5).astype(np.float32)
            vec["mv"] = [[float(x) for x in row] for row in rows]
        points.append({"id": i + 1, "vector": vec, "payload": {"i": i}})
    specs = [VectorSpec("d", "dense", DIM, distance=distance),
             VectorSpec("mv", "multi", MDIM, distance=distance)]
    return Dataset(f"multi-{distance}", specs, "int", points)


def with_points(ds: Dataset, edit: Callable[[dict[str, Any]], Any]) -> Dataset:
    out = copy.deepcopy(ds)
    for p in out.points:
        edit(p)
    return out


def scaled(point: dict[str, Any]) -> None:
    """Each sub-vector scaled by its own factor: the same directions, other lengths."""
    for j, row in enumerate(point["vector"].get("mv", [])):
        point["vector"]["mv"][j] = [float(np.float32(x * (0.25 + j))) for x in row]


def mv_count(ds: Dataset) -> int:
    return sum("mv" in p["vector"] for p in ds.points)


@needs_edge
def test_cosine_multivector_copy_in_edge_passes_with_tolerance(tmp_path: Path) -> None:
    ds = multi_dataset()
    src = f"{tmp_path}/src.jsonl"
    write_points(src, ds)
    edge = f"qdrant-edge://{tmp_path}/shard"
    vecferry.convert(src, edge)

    exact = verify(src, edge, queries=0)
    # Edge stores each Cosine sub-vector (and dense vector) at unit length: every point differs
    assert not exact["ok"] and exact["diff"]["vector_differs"] == N

    diff = tmp_path / "diff.jsonl"
    close = verify(src, edge, tolerance=1e-5, diff=str(diff))
    assert close["ok"], close["problems"]
    assert close["diff"]["vector_differs"] == 0 and close["diff"]["max_abs_error"] <= 1e-5
    assert close["verdict"].startswith("equal within tolerance 1e-05 (largest error ")
    assert list(iter_diff(str(diff))) == []
    # search parity runs on the dense vector next to the multivector
    assert close["search"]["recall"] == 1.0 and close["search"]["distance"] == "Cosine"

    result = run("verify", src, edge, "--tolerance", "1e-5", "--queries", "0")
    assert result.exit_code == 0, result.stderr
    assert "verified: equal within tolerance 1e-05 (largest error " in result.stderr
    assert "vector differs" not in result.stderr


@needs_edge
def test_tolerance_still_finds_a_changed_multivector_in_edge(tmp_path: Path) -> None:
    ds = multi_dataset()
    src = f"{tmp_path}/src.jsonl"
    write_points(src, ds)
    bad = copy.deepcopy(ds)
    bad.points[1]["vector"]["mv"][0][0] += 3.0  # another direction, not just another length
    bad.points[2]["vector"]["mv"].pop()  # one sub-vector fewer
    bad.points[4]["vector"].pop("mv")  # no multivector at all
    copied = f"{tmp_path}/bad.jsonl"
    write_points(copied, bad)
    edge = f"qdrant-edge://{tmp_path}/shard"
    vecferry.convert(copied, edge)

    diff = tmp_path / "diff.jsonl"
    report = verify(src, edge, tolerance=1e-5, queries=0, diff=str(diff))
    assert not report["ok"]
    assert report["diff"]["vector_differs"] == 3
    assert report["diff"]["examples"] == {"vector_differs": [2, 3, 5]}
    assert sorted(row["id"] for row in iter_diff(str(diff))) == [2, 3, 5]


def test_cosine_multivector_is_compared_by_direction_within_tolerance(tmp_path: Path) -> None:
    """No Qdrant needed: a copy whose sub-vectors have other lengths, as after an engine's
    normalization, equals its source under Cosine within a tolerance, and only then."""
    ds = multi_dataset()
    src, dst = f"{tmp_path}/src.parquet", f"{tmp_path}/dst.jsonl"
    write_points(src, ds)
    write_points(dst, with_points(ds, scaled))

    exact = verify(src, dst, queries=0)
    assert not exact["ok"] and exact["diff"]["vector_differs"] == mv_count(ds)
    close = verify(src, dst, tolerance=1e-5, queries=3)
    assert close["ok"], close["problems"]
    assert 0 <= close["diff"]["max_abs_error"] <= 1e-5

    changes = {
        "direction": lambda p: p["vector"]["mv"][-1].__setitem__(1, p["vector"]["mv"][-1][1] + 1),
        "fewer": lambda p: p["vector"]["mv"].pop(0),
        "more": lambda p: p["vector"]["mv"].append(list(p["vector"]["mv"][0])),
        "dropped": lambda p: p["vector"].pop("mv"),
        "order": lambda p: p["vector"]["mv"].reverse(),
    }
    for what, change in changes.items():
        other = with_points(ds, scaled)
        change(other.points[5])  # point 5 has 3 distinct sub-vectors
        loc = f"{tmp_path}/{what}.jsonl"
        write_points(loc, other)
        report = verify(src, loc, tolerance=1e-5, queries=0)
        assert report["diff"]["examples"] == {"vector_differs": [6]}, what


def test_other_multivectors_are_still_compared_exactly(tmp_path: Path) -> None:
    """Only Cosine ignores length: a scaled Euclid multivector is a difference at any
    tolerance that does not cover the change itself."""
    ds = multi_dataset("Euclid")
    src, dst = f"{tmp_path}/src.parquet", f"{tmp_path}/dst.jsonl"
    write_points(src, ds)
    write_points(dst, with_points(ds, scaled))
    report = verify(src, dst, tolerance=1e-5, queries=0)
    assert not report["ok"] and report["diff"]["vector_differs"] == mv_count(ds)


def test_verify_json_prints_no_human_summary(tmp_path: Path) -> None:
    """As convert --json: stdout holds the report, stderr only warnings and differences."""
    ds = multi_dataset()
    src, dst = f"{tmp_path}/src.parquet", f"{tmp_path}/dst.jsonl"
    write_points(src, ds)
    write_points(dst, ds)
    ok = run("verify", src, dst, "--json")
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["verdict"] == "identical"
    assert ok.stderr == ""

    within = f"{tmp_path}/scaled.jsonl"
    write_points(within, with_points(ds, scaled))
    loose = run("verify", src, within, "--json", "--tolerance", "1e-5")
    assert loose.exit_code == 0
    assert json.loads(loose.stdout)["verdict"].startswith("equal within tolerance")
    assert loose.stderr == ""

    other = copy.deepcopy(ds)
    other.points = other.points[1:]
    missing = f"{tmp_path}/missing.jsonl"
    write_points(missing, other)
    bad = run("verify", src, missing, "--json", "--queries", "0")
    assert bad.exit_code == 4
    assert json.loads(bad.stdout)["ok"] is False
    assert bad.stderr.splitlines() == [f"differs: counts differ: source {N}, destination "
                                       f"{N - 1}", "differs: 1 missing in destination: 1"]
