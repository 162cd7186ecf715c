"""A JSONL file without a manifest has its vectors inferred from the first 1,000 points, as
the README says: the shape most of them hold, not the first line's (a first line of another
size made every other point a bad record, and nothing said the sample disagreed). A sample
that disagrees is named before writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vecferry
from failing import fails
from vecferry.errors import RecordError


def _write(path: Path, sizes: list[int]) -> Path:
    with open(path, "w") as f:
        for i, size in enumerate(sizes):
            f.write(json.dumps({"id": i + 1, "vector": [0.5] * size}) + "\n")
    return path


def test_the_size_most_sampled_points_hold_is_taken(tmp_path: Path) -> None:
    # 200 of the first 1,000 (line 1 among them) at 5, the other 800 and the rest at 6
    sizes = [5 if i % 5 == 0 else 6 for i in range(1000)] + [6] * 500 + [5] * 3
    src = _write(tmp_path / "p.jsonl", sizes)
    report = vecferry.convert(src, tmp_path / "o.parquet", on_error="skip")
    assert (report["written"], report["rejected"]) == (1300, 203)
    assert report["vectors"][0]["size"] == 6
    assert report["warnings"][0] == (
        f"{src}: the unnamed vector: the 1000 points sampled to infer the vectors hold 800 of "
        "size 6, 200 of size 5; size 6, which most hold, is taken, so points of size 5 (first "
        "at line 1) are bad records")


def test_stopping_at_the_first_point_of_the_other_size(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.jsonl", [3, 4, 4])
    text = fails(RecordError, lambda: vecferry.convert(src, tmp_path / "o.parquet"))
    assert text == f"{src}, line 1, id 1: vector has 3 dimensions, expected 4"


def test_named_vectors_and_kinds_are_each_decided_by_the_sample(tmp_path: Path) -> None:
    src = tmp_path / "p.jsonl"
    lines = [{"id": 1, "vector": {"a": [[1.0, 2.0]], "b": [1.0]}}]
    lines += [{"id": i, "vector": {"a": [1.0, 2.0, 3.0], "b": [1.0]}} for i in range(2, 5)]
    src.write_text("".join(json.dumps(p) + "\n" for p in lines))
    report = vecferry.convert(src, tmp_path / "o.jsonl", on_error="skip")
    assert [(v["name"], v["kind"], v["size"]) for v in report["vectors"]] == [
        ("a", "dense", 3), ("b", "dense", 1)]
    assert report["rejected"] == 1
    assert report["warnings"] == [
        f"{src}: vector 'a': the 4 points sampled to infer the vectors hold 3 of size 3, 1 of "
        "multivectors of size 2; size 3, which most hold, is taken, so points of multivectors "
        "of size 2 (first at line 1) are bad records"]


@pytest.mark.parametrize("sizes", [[4, 4, 4], [3, 4]])
def test_a_tie_takes_the_first_seen_and_agreement_says_nothing(tmp_path: Path,
                                                               sizes: list[int]) -> None:
    # a tie takes the first seen, as before, and is named
    src = _write(tmp_path / "p.jsonl", sizes)
    report = vecferry.convert(src, tmp_path / "o.parquet", on_error="skip")
    assert report["vectors"][0]["size"] == sizes[0]
    assert len(report["warnings"]) == (len(set(sizes)) - 1)
