"""``vecferry verify``: counts, digests, the per-id diff, tolerance, search parity, archives, CLI.

Every difference is made on purpose in a copy written here (N=37, dim 8) and must be found and
named by id; every correct copy must pass. Digests must agree across formats, batch sizes and
point order. Qdrant sides use local mode and Edge in ``tmp_path``.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from roundtrip import NS, Dataset, batches_of, make_jsonl_without_sidecar, write_points
from vecferry.cli import main
from vecferry.converters import open_reader
from vecferry.converters.base import Context
from vecferry.digest import StreamDigest, canonical_payload
from vecferry.errors import InputError, UsageError
from vecferry.stream import MANIFEST_KEY, VectorSpec, manifest_of, rebatch
from vecferry.verification import iter_diff, verify

N, DIM, MDIM = 37, 8, 3
KINDS = ("missing_in_destination", "extra_in_destination", "vector_differs", "payload_differs")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_qdrant = pytest.mark.skipif(not (has("qdrant_client") and has("qdrant_edge")),
                                  reason="needs qdrant-client and qdrant-edge")


# ------------------------------------------------------------------------------------ datasets


def f32(values: Any) -> list[float]:
    return [float(x) for x in np.asarray(values, dtype=np.float32)]


def ulp(value: float) -> float:
    """The next float32 after ``value``: the smallest change a vector can have."""
    return float(np.nextafter(np.float32(value), np.float32(np.inf)))


def pid(i: int, strings: bool = False) -> Any:
    """Mixed ids: non-sequential integers and UUIDs (one starting with digits); or strings
    that are not UUIDs (Qdrant keeps them as UUIDv5 with the original in the payload)."""
    if strings:
        return ["007", "ü-ñ-山", "with space"][i] if i < 3 else f"doc-{i:03d}"
    if i % 3:
        return i * 7919 + 2**33
    return "12345678-1234-4234-8234-123456789abc" if i == 3 else str(uuid.uuid5(NS, f"v{i}"))


def full(n: int = N, seed: int = 11, dense_only: bool = False,
         strings: bool = False) -> Dataset:
    """Named dense ``d`` (Dot) on every point, sparse ``s`` on odd points, multi ``mv`` on
    every fifth; mixed int + UUID ids; payloads with a big integer, nesting and text. Every part
    of it survives Qdrant local mode and Edge exactly."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        vec: dict[str, Any] = {"d": f32(rng.standard_normal(DIM))}
        if not dense_only:
            if i % 2:
                vec["s"] = {"indices": [1, 5 + i, 100 + 3 * i],
                            "values": f32(rng.standard_normal(3))}
            if i % 5 == 0:
                vec["mv"] = [f32(r) for r in rng.standard_normal((1 + i % 3, MDIM))]
        payload = {"i": i, "tag": "abc"[i % 3], "big": 2**63 + i, "nested": {"a": [1, {"b": None}]},
                   "t": "é" * (i % 4)}
        points.append({"id": pid(i, strings), "vector": vec, "payload": payload})
    points[1]["vector"]["d"][0] = 0.0  # for the -0.0 case
    specs = [VectorSpec("d", "dense", DIM, distance="Dot")]
    if not dense_only:
        specs += [VectorSpec("s", "sparse"), VectorSpec("mv", "multi", MDIM, distance="Euclid")]
    return Dataset("dense" if dense_only else "full", specs,
                   "string" if strings else "mixed", points)


def changed(ds: Dataset, **changes: Any) -> Dataset:
    """A deep copy of ``ds`` with points dropped (``drop``), added (``add``) or edited
    (``edit``: {row: function(point)})."""
    out = copy.deepcopy(ds)
    for row, fn in changes.get("edit", {}).items():
        fn(out.points[row])
    drop = set(changes.get("drop", ()))
    out.points = [p for i, p in enumerate(out.points) if i not in drop] + changes.get("add", [])
    return out


def new_point(key: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(NS, key)), "vector": {"d": [0.25] * DIM},
            "payload": {"new": key}}


def write(ds: Dataset, location: str) -> str:
    write_points(location, ds)
    return location


def canonical(point: dict[str, Any]) -> str:
    """JSON that tells 1 from 1.0 and 0.0 from -0.0."""
    return json.dumps(point, sort_keys=True)


def rewrite_parquet(table: pa.Table, like: str, out: str) -> None:
    """Write ``table`` with the manifest (and so the digest) ``like`` records, as a tool that
    edits a vecferry Parquet file and keeps its key-value metadata would."""
    manifest = pq.read_metadata(like).metadata[MANIFEST_KEY]
    pq.write_table(table.replace_schema_metadata({MANIFEST_KEY: manifest}), out)


def diff_lines(path: Path) -> list[tuple[Any, str]]:
    return sorted(((d["id"], d["status"]) for d in iter_diff(str(path))), key=repr)


def pair(tmp_path: Path, dst: Dataset, src_ext: str = ".parquet", dst_ext: str = ".jsonl"
         ) -> tuple[str, str]:
    return (write(full(), f"{tmp_path}/src{src_ext}"), write(dst, f"{tmp_path}/dst{dst_ext}"))


# ---------------------------------------------------------------------------------- the diff


def test_a_correct_copy_passes(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    report = verify(src, dst, diff=str(tmp_path / "diff.jsonl"))
    assert report["ok"] is True and report["problems"] == [] and report["warnings"] == []
    assert report["digests_match"] and report["counts_match"]
    assert report["source"]["count"] == report["destination"]["count"] == N
    assert report["source"]["digest"] == report["destination"]["digest"]
    assert "diff" not in report
    assert report["search"]["recall"] == 1.0 and report["search"]["vector"] == "d"
    # asking for a diff file always leaves one: empty when nothing differs
    assert (tmp_path / "diff.jsonl").read_text() == ""
    result = run("verify", src, dst)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "verified: identical" in result.stderr


def test_missing_extra_ulp_and_payload_are_each_named(tmp_path: Path) -> None:
    ds = full()
    missing, ulp_row, payload_row = ds.points[4]["id"], 7, 9
    extra = new_point("extra")

    def nudge(p: dict[str, Any]) -> None:
        p["vector"]["d"][3] = ulp(p["vector"]["d"][3])

    def retag(p: dict[str, Any]) -> None:
        p["payload"]["tag"] = "changed"

    src, dst = pair(tmp_path, changed(ds, drop=[4], add=[extra],
                                      edit={ulp_row: nudge, payload_row: retag}))
    diff_file = tmp_path / "diff.jsonl"
    report = verify(src, dst, diff=str(diff_file), queries=0)
    assert report["ok"] is False and report["counts_match"] and not report["digests_match"]
    d = report["diff"]
    assert {k: d[k] for k in KINDS} == dict.fromkeys(KINDS, 1)
    assert d["examples"] == {"missing_in_destination": [missing],
                             "extra_in_destination": [extra["id"]],
                             "vector_differs": [ds.points[ulp_row]["id"]],
                             "payload_differs": [ds.points[payload_row]["id"]]}
    assert report["diff_file"] == str(diff_file)
    assert diff_lines(diff_file) == sorted([
        (missing, "missing_in_destination"), (extra["id"], "extra_in_destination"),
        (ds.points[ulp_row]["id"], "vector_differs"),
        (ds.points[payload_row]["id"], "payload_differs")], key=repr)
    assert f"1 missing in destination: {missing!r}" in report["problems"]
    assert f"1 vector differs: {ds.points[ulp_row]['id']!r}" in report["problems"]

    result = run("verify", src, dst, "--diff", str(tmp_path / "cli.jsonl"), "--queries", "0")
    assert result.exit_code == 4
    assert diff_lines(tmp_path / "cli.jsonl") == diff_lines(diff_file)
    assert f"differs: 1 extra in destination: {extra['id']!r}" in result.stderr
    assert "verification FAILED" in result.stderr


def _set(path: tuple, value: Any):
    def edit(p: dict[str, Any]) -> None:
        target = p
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return edit


#: one change each, in the row given: what verify must call it
SINGLE = {
    "ulp_dense": (7, _set(("vector", "d", 5), ulp), "vector_differs"),
    "negative_zero": (1, _set(("vector", "d", 0), -0.0), "vector_differs"),
    "ulp_sparse_value": (5, _set(("vector", "s", "values", 1), ulp), "vector_differs"),
    "sparse_index": (5, _set(("vector", "s", "indices", 2), lambda x: x + 1), "vector_differs"),
    "ulp_multi": (10, _set(("vector", "mv", 0, 2), ulp), "vector_differs"),
    "multi_row_order": (2 * 5, _set(("vector", "mv"), lambda rows: rows[::-1]),
                        "vector_differs"),
    "vector_dropped": (3, lambda p: p["vector"].pop("s"), "vector_differs"),
    "int_becomes_float": (6, _set(("payload", "i"), float), "payload_differs"),
    "nested_value": (8, _set(("payload", "nested", "a", 0), 2), "payload_differs"),
    "payload_removed": (12, _set(("payload",), None), "payload_differs"),
    "key_added": (13, _set(("payload", "extra"), True), "payload_differs"),
}


@pytest.mark.parametrize("case", sorted(SINGLE))
def test_one_change_is_found_and_named(tmp_path: Path, case: str) -> None:
    row, edit, status = SINGLE[case]
    ds = full()
    dst = changed(ds, edit={row: edit})
    assert canonical(dst.points[row]) != canonical(ds.points[row])
    src, dst_loc = pair(tmp_path, dst)
    report = verify(src, dst_loc, queries=0, diff=str(tmp_path / "d.jsonl"))
    assert report["ok"] is False and report["counts_match"]
    assert report["diff"]["examples"] == {status: [ds.points[row]["id"]]}
    assert diff_lines(tmp_path / "d.jsonl") == [(ds.points[row]["id"], status)]


def test_payload_key_order_and_missing_vs_empty_payload_are_not_differences(
        tmp_path: Path) -> None:
    ds = full()

    def reorder(p: dict[str, Any]) -> None:
        p["payload"] = dict(reversed(list(p["payload"].items())))

    src = changed(ds, edit={0: _set(("payload",), {})})
    dst = changed(ds, edit={0: _set(("payload",), None), 1: reorder})
    a, b = write(src, f"{tmp_path}/a.jsonl"), write(dst, f"{tmp_path}/b.parquet")
    assert verify(a, b, queries=0)["ok"] is True


def test_a_stale_diff_file_is_replaced(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    stale = tmp_path / "diff.jsonl"
    stale.write_text('{"id":1,"status":"vector_differs"}\n')
    assert verify(src, dst, diff=str(stale), queries=0)["ok"] is True
    assert stale.read_text() == ""


def test_duplicates_in_a_file_destination_are_compared_record_by_record(
        tmp_path: Path) -> None:
    """A file keeps every record: a repeated id's records beyond the source's are extra
    (a later record equal to the source's still leaves the earlier one extra)."""
    ds = full()
    dup = copy.deepcopy(ds.points[2])
    dup["payload"]["tag"] = "second"
    first_dup = copy.deepcopy(ds.points[11])
    src, dst = pair(tmp_path, changed(ds, add=[first_dup, dup]))
    report = verify(src, dst, queries=0)
    assert report["ok"] is False
    assert report["problems"][0] == f"counts differ: source {N}, destination {N + 2}"
    assert report["diff"]["examples"] == {"extra_in_destination": sorted(
        [ds.points[2]["id"], ds.points[11]["id"]], key=lambda i: (isinstance(i, str), i))}
    assert report["diff"]["extra_in_destination"] == 2
    assert report["destination"]["duplicate_ids"] == 2
    assert sorted(report["destination"]["duplicate_examples"], key=repr) == sorted(
        [ds.points[2]["id"], ds.points[11]["id"]], key=repr)
    assert any("2 duplicate id(s) in the destination" in w for w in report["warnings"])


@needs_qdrant
@pytest.mark.parametrize("target", ["local", "edge", "parquet"])
def test_repeated_ids_into_a_collection_verify_by_their_last_record(
        tmp_path: Path, target: str) -> None:
    """A collection holds one point per id: a source with a repeated id verifies against it
    when the collection holds each id's last record, and a file (which keeps every record)
    still has to hold them all."""
    rng = np.random.default_rng(8)
    points = [{"id": i, "vector": rng.standard_normal(4).tolist(), "payload": {"n": i}}
              for i in range(40)]
    points += [dict(points[5], payload={"n": "again"}), dict(points[9], payload={"n": 1}),
               dict(points[5], payload={"n": "last"})]
    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in points))
    dst = {"parquet": f"{tmp_path}/d.parquet", "edge": f"qdrant-edge://{tmp_path}/e",
           "local": f"qdrant-local://{tmp_path}/q/docs"}[target]
    vecferry.convert(str(src), dst, workers=1)
    report = verify(str(src), dst, queries=0)
    assert report["ok"] is True, report["problems"]
    assert report["counts_match"] is (target == "parquet")
    if target != "parquet":
        assert report["source"]["duplicate_ids"] == 2
        assert report["verdict"] == ("identical to the source's last record of each id (the "
                                     "destination holds one point per id)")
        assert report["destination"]["count"] == 40

    # a spot check samples ids, each with its last record, and counts the repeats
    spot = verify(str(src), dst, queries=0, sample=40)
    assert spot["ok"] is True, spot["problems"]
    assert spot["sample"]["size"] == 40
    if target != "parquet":
        assert spot["source"]["duplicate_ids"] == 2
        assert spot["verdict"] == ("spot check of 40 sampled points passed (the destination "
                                   "holds one point per id: each sampled id's last record in "
                                   "the source was compared)")
        assert ("2 duplicate id(s) in the source (compared by their last record): 5, 9"
                in spot["warnings"])

    # a collection holding an earlier record of a repeated id is a difference
    points[-1]["payload"] = {"n": "changed after the copy"}
    src.write_text("".join(json.dumps(p) + "\n" for p in points))
    report = verify(str(src), dst, queries=0)
    assert report["ok"] is False
    assert report["diff"]["examples"] == {"payload_differs": [5]}
    if target != "parquet":
        assert report["problems"][0] == "counts differ: source 43, destination 40"
    spot = verify(str(src), dst, queries=0, sample=40)
    assert spot["problems"] == ["1 of 40 sampled points payload differs: 5"]


# -------------------------------------------------------------------------------- memory cap


def _big_pair(n: int = 500) -> tuple[Dataset, Dataset]:
    ds = full(n=n, seed=3, dense_only=True)

    def nudge(p: dict[str, Any]) -> None:
        p["vector"]["d"][0] = ulp(p["vector"]["d"][0])

    edits: dict[int, Any] = {i: nudge for i in range(10, 400, 25)}  # 16: more than examples
    edits.update({i: _set(("payload", "tag"), "x") for i in (7, 77, 177)})
    dst = changed(ds, drop=[3, 33, 333], add=[new_point("e1"), new_point("e2")], edit=edits)
    return ds, dst


@pytest.mark.parametrize("layout", ["counted", "uncounted"])
def test_the_diff_under_a_memory_cap_equals_the_uncapped_diff(tmp_path: Path,
                                                               layout: str) -> None:
    ds, dst = _big_pair()
    if layout == "counted":
        a = write(ds, f"{tmp_path}/a.parquet")
        b = write(dst, f"{tmp_path}/b.parquet")
    else:  # JSONL from another tool: no sidecar, so no count before reading
        a, _ = make_jsonl_without_sidecar(ds, tmp_path / "a")
        b, _ = make_jsonl_without_sidecar(dst, tmp_path / "b")
    whole = verify(a, b, queries=0, diff=str(tmp_path / "whole.jsonl"))
    capped = verify(a, b, queries=0, diff=str(tmp_path / "capped.jsonl"), memory_rows=40,
                    batch_size=64)
    if layout == "counted":
        assert whole["diff"]["largest_partition_rows"] >= 500
    assert 0 < capped["diff"]["largest_partition_rows"] <= 40
    assert capped["diff"]["vector_differs"] == 16 and capped["diff"]["payload_differs"] == 3
    assert capped["diff"]["missing_in_destination"] == 3
    assert capped["diff"]["extra_in_destination"] == 2
    for report in (whole, capped):
        del report["diff"]["largest_partition_rows"], report["seconds"], report["diff_file"]
    assert capped == whole  # examples too: the lowest ids, however the ids were partitioned
    assert whole["diff"]["examples"]["vector_differs"] == [
        pid(i) for i in range(10, 400, 25) if isinstance(pid(i), int)][:10]
    assert diff_lines(tmp_path / "capped.jsonl") == diff_lines(tmp_path / "whole.jsonl")
    assert len(diff_lines(tmp_path / "whole.jsonl")) == 24


# --------------------------------------------------------------------------------- tolerance


def _float16_copy(ds: Dataset) -> Dataset:
    out = copy.deepcopy(ds)
    out.vectors = [VectorSpec("d", "dense", DIM, "float16", "Dot")]
    for p in out.points:
        p["vector"]["d"] = [float(x) for x in np.asarray(p["vector"]["d"], np.float16)]
    return out


def test_tolerance_passes_a_float16_copy_that_fails_without_it(tmp_path: Path) -> None:
    ds = full(dense_only=True)
    src = write(ds, f"{tmp_path}/src.parquet")
    dst = write(_float16_copy(ds), f"{tmp_path}/half.jsonl")
    strict = verify(src, dst, queries=0)
    assert strict["ok"] is False and strict["diff"]["vector_differs"] >= N - 2
    loose = verify(src, dst, tolerance=0.01)
    assert loose["ok"] is True, loose["problems"]
    err = loose["diff"]["max_abs_error"]
    assert 0 < err <= 0.01
    assert loose["search"]["recall"] >= 0.99
    too_tight = verify(src, dst, tolerance=err / 2, queries=0)
    assert too_tight["ok"] is False and too_tight["diff"]["vector_differs"] >= 1
    assert too_tight["diff"]["max_abs_error"] == err
    result = run("verify", src, dst, "--tolerance", "0.01", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["diff"]["max_abs_error"] == err
    assert run("verify", src, dst, "--queries", "0").exit_code == 4


def test_tolerance_with_a_vector_missing_on_both_sides(tmp_path: Path) -> None:
    """A point without ``b`` on both sides compares its ``a`` within the tolerance."""
    rng = np.random.default_rng(5)
    points = [{"id": i, "vector": {"a": f32(rng.standard_normal(DIM)),
                                   **({} if i % 4 == 1 else {"b": f32(rng.standard_normal(3))})},
               "payload": {"i": i}} for i in range(N)]
    specs = [VectorSpec("a", "dense", DIM), VectorSpec("b", "dense", 3)]
    src = Dataset("gaps", specs, "int", points)
    dst = copy.deepcopy(src)
    for p in dst.points:
        p["vector"]["a"] = f32(np.asarray(p["vector"]["a"], np.float32) + np.float32(1e-4))
    a, b = write(src, f"{tmp_path}/a.parquet"), write(dst, f"{tmp_path}/b.parquet")
    assert verify(a, b, queries=0)["diff"]["vector_differs"] == N
    report = verify(a, b, tolerance=1e-3, queries=0)
    assert report["ok"] is True, report["problems"]
    # a vector present on one side only is a difference whatever the tolerance
    gone = changed(dst, edit={0: lambda p: p["vector"].pop("b")})
    c = write(gone, f"{tmp_path}/c.parquet")
    report = verify(a, c, tolerance=1e-3, queries=0)
    assert report["diff"]["examples"] == {"vector_differs": [0]}


def test_tolerance_on_uint8_with_missing_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    specs = [VectorSpec("a", "dense", DIM, "uint8"), VectorSpec("b", "dense", 2, "uint8")]
    points = [{"id": i, "vector": {"a": [int(x) for x in rng.integers(0, 255, DIM)],
                                   **({} if i % 3 else {"b": [i, 255 - i]})}} for i in range(N)]
    src = Dataset("u8", specs, "int", points)
    dst = changed(src, edit={4: _set(("vector", "a", 0), lambda x: x + 1)})
    a, b = write(src, f"{tmp_path}/a.parquet"), write(dst, f"{tmp_path}/b.jsonl")
    assert verify(a, b, tolerance=1, queries=0)["ok"] is True
    report = verify(a, b, tolerance=0.5, queries=0)
    assert report["diff"]["examples"] == {"vector_differs": [4]}
    assert report["diff"]["max_abs_error"] == 1.0


@pytest.mark.parametrize("case", ["ulp_sparse_value", "sparse_index", "ulp_multi",
                                  "vector_dropped"])
def test_tolerance_does_not_hide_sparse_or_multi_changes(tmp_path: Path, case: str) -> None:
    """Tolerance applies to dense vectors; any other vector change is still a difference."""
    row, edit, _ = SINGLE[case]
    ds = full()
    src, dst = pair(tmp_path, changed(ds, edit={row: edit}))
    report = verify(src, dst, tolerance=0.5, queries=0)
    assert report["ok"] is False
    assert report["diff"]["examples"] == {"vector_differs": [ds.points[row]["id"]]}


# ---------------------------------------------------------------------------------- digests


def _qdrant_locations(tmp_path: Path, src: str) -> list[str]:
    locs = [f"qdrant-local://{tmp_path}/local/docs", f"qdrant-edge://{tmp_path}/edge"]
    for loc in locs:
        vecferry.convert(src, loc, batch_size=10)
    return locs


@needs_qdrant
@pytest.mark.parametrize(("dense_only", "strings"), [(False, False), (True, False),
                                                     (False, True)],
                         ids=["named-sparse-multi", "dense", "string-ids"])
def test_digests_agree_across_every_format(tmp_path: Path, dense_only: bool,
                                           strings: bool) -> None:
    ds = full(dense_only=dense_only, strings=strings)
    suffixes = [".jsonl", ".jsonl.gz", ".parquet", ".parquet/"]
    if dense_only:
        suffixes.append(".npy")  # a directory of .npy files: dense vectors only
    files = [write(ds, f"{tmp_path}/p{i}{s}") for i, s in enumerate(suffixes)]
    locations = files + _qdrant_locations(tmp_path, files[0])
    digests = {}
    for loc in locations:
        report = verify(files[0], loc, queries=3, k=5)
        assert report["ok"] is True, (loc, report["problems"])
        digests[loc] = report["destination"]["digest"]
        assert report["destination"]["count"] == N
    assert len(set(digests.values())) == 1, digests
    # what each file writer recorded is that same digest
    for loc in files:
        reader = open_reader(loc)
        try:
            recorded = reader.manifest.digest
        finally:
            reader.close()
        assert recorded["value"] == digests[loc] and recorded["count"] == N


def _digest(location: str, batch_size: int) -> str:
    reader = open_reader(location)
    try:
        d = StreamDigest(manifest_of(reader.schema))
        for batch in reader.batches(batch_size):
            d.update(batch)
    finally:
        reader.close()
    return d.as_dict()["value"]


def test_digest_is_independent_of_batch_size_and_order(tmp_path: Path) -> None:
    ds = full()
    src = write(ds, f"{tmp_path}/a.parquet")
    values = {_digest(src, b) for b in (1, 4, 10, 36, 37, 1000)}
    assert len(values) == 1
    # sliced batches (as rebatch cuts them) hash as whole ones
    d = StreamDigest(ds.manifest())
    for batch in rebatch(batches_of(ds, 7), 3):
        d.update(batch)
    assert {d.as_dict()["value"]} == values
    # the rows of the Parquet file shuffled, the manifest (and its digest) kept
    table = pq.read_table(src)
    perm = np.random.default_rng(0).permutation(table.num_rows)
    shuffled = f"{tmp_path}/shuffled.parquet"
    rewrite_parquet(table.take(perm), src, shuffled)
    assert pq.read_table(shuffled).column("id").to_pylist() != table.column("id").to_pylist()
    assert {_digest(shuffled, 5)} == values
    assert verify(shuffled)["ok"] is True
    report = verify(src, shuffled, batch_size=3)
    assert report["ok"] is True and report["source"]["digest"] in values
    # and from a list of points in another order, through another writer
    rev = copy.deepcopy(ds)
    rev.points.reverse()
    assert verify(src, write(rev, f"{tmp_path}/rev.jsonl.gz"), queries=0)["ok"] is True


def test_points_that_differ_only_by_id_type_have_different_digests(tmp_path: Path) -> None:
    a = Dataset("i", [VectorSpec("", "dense", 2)], "int",
                [{"id": 5, "vector": [1.0, 2.0]}])
    b = Dataset("s", [VectorSpec("", "dense", 2)], "string",
                [{"id": "5", "vector": [1.0, 2.0]}])
    report = verify(write(a, f"{tmp_path}/a.jsonl"), write(b, f"{tmp_path}/b.jsonl"),
                    queries=0)
    assert report["ok"] is False
    assert report["diff"]["examples"] == {"missing_in_destination": [5],
                                          "extra_in_destination": ["5"]}


def test_payload_canonical_form(tmp_path: Path) -> None:
    """Texts of the same JSON value hash alike whichever parser reads them; what only Python's
    json reads (a lone surrogate, integers past 64 bits) hashes instead of failing. (A payload
    cell holding NaN or Infinity is a bad record: see test_payload_checks.py.)"""
    same = [('{"a":1,"b":[0.1,-0.0]}', '{ "b" : [1e-1, -0.0], "a" : 1 }'),
            ('{"x":0.1}', '{"x":0.1000000000000000055511151231257827}'),
            ('{"n":18446744073709551616}', '{"n": 18446744073709551616}'),
            ('{"t":"\\u00e9"}', '{"t":"é"}'), ('{}', None), ('{}', '{ }')]
    for x, y in same:
        assert canonical_payload(x) == canonical_payload(y), (x, y)
    differ = [('{"a":1}', '{"a":1.0}'), ('{"a":0.0}', '{"a":-0.0}'),
              ('{"n":18446744073709551616}', '{"n":18446744073709551617}'),
              ('{"n":-9223372036854775809}', '{"n":-9223372036854775808}')]
    for x, y in differ:
        assert canonical_payload(x) != canonical_payload(y), (x, y)
    # a Parquet file from another tool, its payload column holding what orjson refuses
    texts = ['{"x": 1.5}', '{"s": "\\ud800"}', '{"i": 2, "big": 123456789012345678901}',
             None]
    table = pa.table({"id": pa.array(range(4), pa.uint64()),
                      "vector": pa.array([[float(i), 1.0] for i in range(4)],
                                         pa.list_(pa.float32(), 2)),
                      "payload": pa.array(texts, pa.string())})
    pq.write_table(table, tmp_path / "other.parquet")
    src = str(tmp_path / "other.parquet")
    vecferry.convert(src, f"{tmp_path}/copy.parquet")
    report = verify(src, f"{tmp_path}/copy.parquet")
    assert report["ok"] is True, report["problems"]
    assert verify(f"{tmp_path}/copy.parquet")["ok"] is True


# ------------------------------------------------------------------------------ search parity


def test_search_parity_by_brute_force_fails_when_vectors_move_between_ids(
        tmp_path: Path) -> None:
    ds = full(dense_only=True)
    moved = copy.deepcopy(ds)
    vecs = [p["vector"] for p in moved.points]
    for p, v in zip(moved.points, vecs[1:] + vecs[:1], strict=True):
        p["vector"] = v
    a, b = write(ds, f"{tmp_path}/a.parquet"), write(moved, f"{tmp_path}/b.parquet")
    report = verify(a, b, k=5)
    assert report["search"]["recall"] < 0.5 and report["search"]["ok"] is False
    assert "latency_ms" not in report["search"]  # no index on either side
    assert any(p.startswith("search parity: recall@5 ") for p in report["problems"])
    assert report["diff"]["vector_differs"] == N


@pytest.mark.parametrize("target", ["parquet", "edge", "local"])
def test_duplicate_vectors_do_not_fail_search_parity(tmp_path: Path, target: str) -> None:
    """Equal vectors under several ids tie; a copy may rank the tie in another order."""
    if target != "parquet" and not (has("qdrant_client") and has("qdrant_edge")):
        pytest.skip("needs qdrant-client and qdrant-edge")
    ds = full(dense_only=True, n=60)
    for i, p in enumerate(ds.points):
        p["vector"] = copy.deepcopy(ds.points[i % 4]["vector"])  # 15 copies of each
    src = write(ds, f"{tmp_path}/src.parquet")
    dst = {"parquet": f"{tmp_path}/dst.parquet", "edge": f"qdrant-edge://{tmp_path}/e",
           "local": f"qdrant-local://{tmp_path}/q/docs"}[target]
    vecferry.convert(src, dst, batch_size=7)
    report = verify(src, dst, queries=8, k=10)
    assert report["ok"] is True, report["problems"]
    assert report["search"]["recall"] == 1.0
    # ... but a copy whose vectors moved between ids still fails
    moved = copy.deepcopy(ds)
    for i, p in enumerate(moved.points):
        p["vector"] = copy.deepcopy(ds.points[(i + 1) % 4]["vector"])
    report = verify(src, write(moved, f"{tmp_path}/moved.parquet"), queries=8, k=10)
    assert report["search"]["ok"] is False


@needs_qdrant
def test_faiss_to_qdrant_search_parity(tmp_path: Path) -> None:
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(21)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = np.array([(i * 7919 + 13) % 100_000 for i in range(N - 2)] + [2**40 + 3, 2**62 + 9],
                   dtype=np.int64)
    index = faiss.IndexIDMap(faiss.IndexFlatL2(DIM))
    index.add_with_ids(x, ids)
    src = str(tmp_path / "x.faiss")
    faiss.write_index(index, src)

    good = f"qdrant-edge://{tmp_path / 'good'}"
    vecferry.convert(src, good)
    report = verify(src, good)
    assert report["ok"] is True, report["problems"]
    s = report["search"]
    assert (s["recall"], s["distance"], s["queries"], s["k"]) == (1.0, "Euclid", 10, 10)
    assert "destination" in s["latency_ms"]

    # the same ids and the same set of vectors, but each vector under another id
    mid = tmp_path / "mid.parquet"
    vecferry.convert(src, str(mid))
    table = pq.read_table(mid)
    col = table.column("vector").combine_chunks()
    rolled = pa.concat_arrays([col.slice(1), col.slice(0, 1)])
    pq.write_table(table.set_column(1, "vector", rolled), tmp_path / "moved.parquet")
    bad = f"qdrant-edge://{tmp_path / 'bad'}"
    vecferry.convert(str(tmp_path / "moved.parquet"), bad)
    report = verify(src, bad, diff=str(tmp_path / "d.jsonl"))
    assert report["ok"] is False
    assert report["search"]["ok"] is False and report["search"]["recall"] < 0.5
    assert any(p.startswith("search parity: recall@10 ") for p in report["problems"])
    assert report["diff"]["vector_differs"] == N
    assert {d["id"] for d in iter_diff(str(tmp_path / "d.jsonl"))} == {int(i) for i in ids}
    assert {d["status"] for d in iter_diff(str(tmp_path / "d.jsonl"))} == {"vector_differs"}


@needs_qdrant
def test_latency_percentiles_for_qdrant_sides(tmp_path: Path) -> None:
    src = write(full(), f"{tmp_path}/src.parquet")
    local, edge = _qdrant_locations(tmp_path, src)
    report = verify(local, edge, queries=12, k=4)
    assert report["ok"] is True, report["problems"]
    latency = report["search"]["latency_ms"]
    assert set(latency) == {"source", "destination"}
    for side in latency.values():
        assert set(side) == {"p50", "p95", "p99"}
        assert 0 <= side["p50"] <= side["p95"] <= side["p99"]
    assert report["search"]["queries"] == 12 and report["search"]["recall"] == 1.0
    result = run("verify", local, edge, "--k", "4")
    assert result.exit_code == 0
    assert "destination latency p50/p95/p99 " in result.stderr


# ---------------------------------------------------------------------------------- archives


def test_an_archive_written_by_vecferry_verifies_alone(tmp_path: Path) -> None:
    for i, suffix in enumerate((".jsonl", ".jsonl.gz", ".parquet", ".parquet/", ".npy")):
        ds = full(dense_only=suffix == ".npy")
        loc = write(ds, f"{tmp_path}/a{i}{suffix}")
        report = verify(loc)
        assert report["ok"] is True, (suffix, report["problems"])
        assert report["recorded_digest"]["value"] == report["source"]["digest"]
        assert report["recorded_digest"]["count"] == N
    result = run("verify", f"{tmp_path}/a0.jsonl")
    assert result.exit_code == 0 and "verified: identical" in result.stderr


def test_an_edited_jsonl_archive_fails_naming_the_digest(tmp_path: Path) -> None:
    loc = write(full(), f"{tmp_path}/a.jsonl")
    lines = Path(loc).read_bytes().splitlines(keepends=True)
    point = orjson.loads(lines[6])
    point["vector"]["d"][2] = ulp(point["vector"]["d"][2])
    lines[6] = orjson.dumps(point) + b"\n"
    Path(loc).write_bytes(b"".join(lines))
    report = verify(loc)
    assert report["ok"] is False
    assert len(report["problems"]) == 1
    assert report["problems"][0].startswith(
        f"digest differs: manifest says {report['recorded_digest']['value']}, data gives "
        f"{report['source']['digest']}")
    result = run("verify", loc)
    assert result.exit_code == 4 and "differs: digest differs" in result.stderr
    # a line removed: the count says so too
    Path(loc).write_bytes(b"".join(lines[:-1]))
    problems = verify(loc)["problems"]
    assert problems[0] == f"count differs: manifest says {N}, file holds {N - 1}"


def test_an_archive_with_an_earlier_digest_algorithm_says_what_to_do(tmp_path: Path) -> None:
    loc = write(full(), f"{tmp_path}/a.jsonl")
    side = Path(loc + ".manifest.json")
    manifest = orjson.loads(side.read_bytes())
    manifest["digest"]["algorithm"] = "vecferry-sum64-v1"
    side.write_bytes(orjson.dumps(manifest))
    with pytest.raises(UsageError) as err:
        verify(loc)
    assert str(err.value) == (f"{loc}: the file records a digest of an earlier vecferry "
                              "(vecferry-sum64-v1), which this version does not compute "
                              "(compare it with its source: vecferry verify SRC DST)")
    manifest["digest"]["algorithm"] = "vecferry-sum128-v9"
    side.write_bytes(orjson.dumps(manifest))
    with pytest.raises(UsageError, match="unknown algorithm 'vecferry-sum128-v9'"):
        verify(loc)


@pytest.mark.parametrize("texts", [
    ['{"b":1,"a":[1,2]}', None, "{}", '{"x":{"z":null,"y":"é"}}'],
    ['{"big":123456789012345678901234567890}', '{"a":1}'],  # past 64 bits: exact path
    ['{"n":NaN}', '{"a":1}'],                                # only json reads NaN
    [None, None],
])
def test_batch_payload_hashes_equal_one_by_one_canonical_hashes(texts: list) -> None:
    from vecferry.digest import _bytes_hash, payload_hashes

    got = payload_hashes(pa.array(texts, pa.string())).tolist()
    assert got == [_bytes_hash(canonical_payload(t)) for t in texts]


def test_an_edited_parquet_archive_fails(tmp_path: Path) -> None:
    loc = write(full(), f"{tmp_path}/a.parquet")
    table = pq.read_table(loc)
    payloads = table.column("payload").to_pylist()
    payloads[3] = payloads[3].replace('"tag":"a"', '"tag":"z"')
    assert payloads[3] != table.column("payload")[3].as_py()
    edited = table.set_column(table.schema.get_field_index("payload"), "payload",
                              pa.array(payloads, pa.string()))
    rewrite_parquet(edited, loc, loc)
    assert manifest_of(pq.read_schema(loc)).digest is not None
    report = verify(loc)
    assert report["ok"] is False and report["problems"][0].startswith("digest differs: ")


def test_an_edited_npy_archive_fails(tmp_path: Path) -> None:
    loc = write(full(dense_only=True), f"{tmp_path}/a.npy")
    matrices = [p for p in Path(loc).rglob("*.npy") if np.load(p).ndim == 2]
    assert matrices
    mat = np.load(matrices[0])
    mat[0, 0] = np.nextafter(mat[0, 0], np.float32(np.inf))
    np.save(matrices[0], mat)
    assert verify(loc)["problems"][0].startswith("digest differs: ")


def test_duplicate_ids_in_an_archive_are_warnings(tmp_path: Path) -> None:
    ds = full()
    twice = changed(ds, add=[copy.deepcopy(ds.points[4]), copy.deepcopy(ds.points[0])])
    loc = write(twice, f"{tmp_path}/dup.jsonl")
    report = verify(loc)
    assert report["ok"] is True  # the file is what was written
    assert report["source"]["count"] == N + 2
    assert report["source"]["duplicate_ids"] == 2
    assert len(report["warnings"]) == 1 and report["warnings"][0].startswith("2 duplicate id(s)")
    for i in (0, 4):
        assert repr(ds.points[i]["id"]) in report["warnings"][0]
    result = run("verify", loc)
    assert result.exit_code == 0 and "warning: 2 duplicate id(s)" in result.stderr
    # the same under a memory cap smaller than the file
    capped = verify(loc, memory_rows=4)
    assert (capped["ok"], capped["warnings"]) == (True, report["warnings"])


def test_a_file_without_a_digest_is_a_usage_error_with_what_to_do(tmp_path: Path) -> None:
    """Nothing differs, so not exit 4: there is nothing to compare the file with."""
    loc, _ = make_jsonl_without_sidecar(full(), tmp_path / "other")
    expected = (f"{loc}: the file records no digest (vecferry did not write it, or wrote it "
                "before digests were recorded), so it cannot be verified on its own (compare "
                "it with its source: vecferry verify SRC DST)")
    with pytest.raises(UsageError) as err:
        verify(loc)
    assert str(err.value) == expected
    result = run("verify", loc)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"error: {expected}\n"
    assert "None" not in result.stderr


# --------------------------------------------------------------------------------------- CLI


def test_cli_verify_json(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    result = run("verify", src, dst, "--json", "--quiet")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["source"]["format"] == "parquet"
    assert report["destination"]["format"] == "jsonl"
    assert result.stderr == ""
    other = write(changed(full(), drop=[0]), f"{tmp_path}/other.jsonl")
    result = run("verify", src, other, "--json", "--quiet", "--queries", "3")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["diff"]["examples"] == {"missing_in_destination": [pid(0)]}
    assert report["search"]["queries"] == 3
    lines = result.stderr.splitlines()  # --quiet: the differences only
    assert lines[:2] == [f"differs: counts differ: source {N}, destination {N - 1}",
                         f"differs: 1 missing in destination: {pid(0)!r}"]
    assert all(line.startswith("differs: search parity") for line in lines[2:])


def test_convert_verify_adds_the_report(tmp_path: Path) -> None:
    src = write(full(), f"{tmp_path}/src.jsonl")
    result = run("convert", src, f"{tmp_path}/out.parquet", "--verify", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verify"]["ok"] is True and report["verify"]["counts_match"]
    assert report["verify"]["destination"]["count"] == N
    result = run("convert", src, f"{tmp_path}/out2.jsonl.gz", "--verify")
    assert result.exit_code == 0 and "verified: identical" in result.stderr


@needs_qdrant
def test_convert_verify_into_a_collection_holding_other_points_exits_4(
        tmp_path: Path) -> None:
    other = write(changed(full(), drop=range(1, N), add=[new_point("old")]),
                  f"{tmp_path}/old.jsonl")
    dst = f"qdrant-edge://{tmp_path}/shard"
    vecferry.convert(other, dst)
    src = write(full(), f"{tmp_path}/src.jsonl")
    result = run("convert", src, dst, "--verify", "--json", "--quiet")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["verify"]["diff"]["examples"] == {"extra_in_destination": [
        new_point("old")["id"]]}


@needs_qdrant
def test_copy_between_qdrant_collections_verifies(tmp_path: Path) -> None:
    src = write(full(), f"{tmp_path}/src.parquet")
    local = f"qdrant-local://{tmp_path}/q/docs"
    vecferry.convert(src, local)
    for dst in (f"qdrant-local://{tmp_path}/q2/copy", f"qdrant-edge://{tmp_path}/e"):
        result = run("copy", local, dst, "--json", "--quiet")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["verify"]["ok"] is True and report["verify"]["search"]["recall"] == 1.0
        assert report["verify"]["destination"]["count"] == N
    result = run("copy", src, f"qdrant-edge://{tmp_path}/e2")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: copy moves Qdrant collections; {src} is not a "
                                    "Qdrant location")
    assert not (tmp_path / "e2").exists()


# -------------------------------------------------------------------------------- bad inputs


def test_missing_location_exits_1_naming_it(tmp_path: Path) -> None:
    src = write(full(), f"{tmp_path}/src.jsonl")
    missing = f"{tmp_path}/nope.parquet"
    for args in ((src, missing), (missing, src), (missing,)):
        result = run("verify", *args)
        assert result.exit_code == 1, args
        assert result.stderr.startswith("error: ") and missing in result.stderr
    with pytest.raises(InputError):
        verify(src, missing)


@needs_qdrant
def test_a_failed_verify_releases_a_local_mode_source(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    local = f"qdrant-local://{tmp_path}/q/docs"
    vecferry.convert(write(full(), f"{tmp_path}/a.parquet"), local)
    with pytest.raises(InputError, match=r"nope\.parquet"):
        verify(local, f"{tmp_path}/nope.parquet")
    client = QdrantClient(path=str(tmp_path / "q"))  # the folder lock was released
    try:
        assert client.count("docs").count == N
    finally:
        client.close()


def test_unknown_vector_is_a_usage_error_listing_dense_vectors(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    result = run("verify", src, dst, "--vector", "nope")
    assert result.exit_code == 2
    assert "no dense vector named 'nope' (dense vectors: ['d'])" in result.stderr
    for name in ("nope", "s", "mv"):  # sparse and multi vectors cannot be searched
        with pytest.raises(UsageError, match=r"dense vectors: \['d'\]"):
            verify(src, dst, vector=name)
        with pytest.raises(UsageError, match=r"dense vectors: \['d'\]"):
            verify(src, dst, vector=name, queries=0)
    with pytest.raises(UsageError):
        verify(src, dst, k=0)


def test_a_vector_the_destination_lacks_is_a_usage_error(tmp_path: Path) -> None:
    ds = full(dense_only=True)
    two = copy.deepcopy(ds)
    two.vectors = [*ds.vectors, VectorSpec("e", "dense", 2)]
    for p in two.points:
        p["vector"]["e"] = [1.0, 2.0]
    a, b = write(two, f"{tmp_path}/a.parquet"), write(ds, f"{tmp_path}/b.parquet")
    with pytest.raises(UsageError, match="destination"):
        verify(a, b, vector="e")
    report = verify(a, b)  # without --vector: the one both sides hold
    assert report["search"]["vector"] == "d" and report["ok"] is False


def test_convert_limit_with_verify_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from vecferry.cli import main

    src = str(Path(__file__).resolve().parent.parent / "sample_data" / "points_rich.jsonl")
    out = tmp_path / "o.parquet"
    result = CliRunner().invoke(main, ["convert", src, str(out), "--limit", "5", "--verify"])
    assert result.exit_code == 2
    assert "--verify compares the whole source with the output, so it cannot follow a run " \
           "cut short by --limit" in result.output
    assert not out.exists()


def test_cosine_copy_normalized_by_qdrant_passes_with_tolerance(tmp_path):
    pytest.importorskip("qdrant_edge")
    from vecferry.converters.base import Context
    from vecferry.converters.parquet import ParquetWriter
    from vecferry.stream import Manifest, VectorSpec

    rng = np.random.default_rng(11)
    mat = (rng.standard_normal((37, 8)) * 5).astype(np.float32)  # far from unit length
    manifest = Manifest(vectors=[VectorSpec("", "dense", 8, distance="Cosine")])
    src = str(tmp_path / "cos.parquet")
    writer = ParquetWriter(src, manifest.schema(), context=Context())
    writer.write_batch(pa.RecordBatch.from_arrays(
        [pa.array(np.arange(37, dtype=np.uint64)),
         pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 8),
         pa.nulls(37, pa.string())], schema=manifest.schema()))
    writer.close()
    dst = f"qdrant-edge://{tmp_path}/shard"
    vecferry.convert(src, dst)
    exact = verify(src, dst, queries=0)
    assert not exact["ok"] and exact["diff"]["vector_differs"] == 37
    close = verify(src, dst, queries=0, tolerance=1e-6)
    assert close["ok"], close["problems"]
    assert close["diff"]["max_abs_error"] <= 1e-6
    # a spot check fetched by id compares the same way: exactly it fails, within tolerance not
    spot_exact = verify(src, dst, queries=0, sample=10)
    assert spot_exact["sample"]["vector_differs"] == 10 and spot_exact["sample"]["fetched_by_id"]
    spot = verify(src, dst, queries=0, sample=10, tolerance=1e-6)
    assert spot["ok"], spot["problems"]
    assert 0 <= spot["sample"]["max_abs_error"] <= 1e-6
    assert spot["verdict"].startswith("spot check of 10 sampled points passed, within tolerance")


def test_spot_check_compares_sampled_points_by_id(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    report = verify(src, dst, sample=10, queries=0)
    assert report["ok"], report["problems"]
    assert report["sample"]["size"] == 10 and report["sample"]["fetched_by_id"] is False
    assert report["digests_match"] is None and report["counts_match"] is True
    # every payload changed: whichever points are sampled, each one is named
    ds = full()
    for p in ds.points:
        p["payload"] = {"changed": True}
    other = write(ds, f"{tmp_path}/other.jsonl")
    bad = verify(src, other, sample=5, queries=0)
    assert not bad["ok"]
    assert bad["sample"]["payload_differs"] == 5 and bad["sample"]["vector_differs"] == 0
    assert bad["problems"][0].startswith("5 of 5 sampled points payload differs: ")
    again = verify(src, other, sample=5, queries=0)
    assert again["sample"]["examples"] == bad["sample"]["examples"]  # seeded: reruns agree


def test_spot_check_refuses_one_location(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    with pytest.raises(UsageError, match="--sample takes a positive number and two locations"):
        verify(src, None, sample=3)
    with pytest.raises(UsageError, match="--sample takes a positive number and two locations"):
        verify(src, dst, sample=0)


def test_spot_check_within_tolerance(tmp_path: Path) -> None:
    """--sample with --tolerance compares the sampled vectors as the full comparison does."""
    ds = full(dense_only=True)
    src = write(ds, f"{tmp_path}/src.parquet")
    dst = write(_float16_copy(ds), f"{tmp_path}/half.jsonl")
    strict = verify(src, dst, sample=8, queries=0)
    assert strict["sample"]["vector_differs"] >= 6 and not strict["ok"]
    loose = verify(src, dst, sample=8, queries=0, tolerance=0.01)
    assert loose["ok"], loose["problems"]
    err = loose["sample"]["max_abs_error"]
    assert 0 < err <= 0.01
    assert loose["verdict"] == (f"spot check of 8 sampled points passed, within tolerance 0.01 "
                                f"(largest error {err:.3g})")
    tight = verify(src, dst, sample=8, queries=0, tolerance=err / 2)
    assert not tight["ok"] and tight["sample"]["vector_differs"] >= 1
    assert tight["sample"]["max_abs_error"] == err
    # a point whose vector is gone on one side is a difference whatever the tolerance
    gone = changed(_float16_copy(ds), edit={i: lambda p: p.update(vector={})
                                            for i in range(len(ds.points))})
    none = write(gone, f"{tmp_path}/none.jsonl")
    report = verify(src, none, sample=8, queries=0, tolerance=1e9)
    assert report["sample"]["vector_differs"] == 8
    result = run("verify", src, dst, "--sample", "8", "--tolerance", "0.01", "--json",
                 "--queries", "0")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sample"]["max_abs_error"] == err


def test_spot_check_fetches_a_qdrant_sample_by_id(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_edge")
    src = write(full(), f"{tmp_path}/src.parquet")
    dst = f"qdrant-edge://{tmp_path}/shard"
    vecferry.convert(src, dst)
    report = verify(src, dst, sample=N, queries=0)
    assert report["ok"], report["problems"]
    assert report["sample"]["fetched_by_id"] is True and report["sample"]["size"] == N
    assert report["destination"]["digest"] is None  # the collection was not read whole
    ds = full()
    for p in ds.points:
        p["payload"] = {"changed": True}
    vecferry.convert(write(ds, f"{tmp_path}/changed.jsonl"), dst)  # upserts over the same ids
    bad = verify(src, dst, sample=4, queries=0)
    assert bad["sample"]["payload_differs"] == 4 and not bad["ok"]


# ------------------------------------------- FAISS search parity, vector sizes, lossy, verdicts


needs_faiss = pytest.mark.skipif(not has("faiss"), reason="needs faiss")


def _binary_index(path: Path, kind: str, n: int = 500) -> str:
    """A FAISS binary index of ``n`` random 64-bit codes: flat, or IVF with 8 lists."""
    import faiss

    codes = np.random.default_rng(3).integers(0, 256, (n, 8), dtype=np.uint8)
    if kind == "flat":
        index = faiss.IndexBinaryFlat(64)
    else:
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(64), 64, 8)
        index.train(codes)
    index.add(codes)
    faiss.write_index_binary(index, str(path))
    return str(path)


def _matrix_parquet(tmp_path: Path, name: str, mat: np.ndarray) -> str:
    """``mat`` as a vecferry Parquet file (ids 0..n-1, one unnamed vector)."""
    np.save(tmp_path / f"{name}.npy", mat)
    out = str(tmp_path / f"{name}.parquet")
    vecferry.convert(str(tmp_path / f"{name}.npy"), out)
    return out


def _pq_index(tmp_path: Path, mat: np.ndarray) -> str:
    """A lossy FAISS IndexPQ of ``mat`` (ids 0..n-1, like the Parquet made of the same
    matrix), built by faiss itself."""
    import faiss

    index = faiss.index_factory(mat.shape[1], "PQ2x4")
    index.train(mat)
    index.add(mat)
    faiss.write_index(index, str(tmp_path / "pq.faiss"))
    return str(tmp_path / "pq.faiss")


def _search_problem(report: dict[str, Any], why: str = "") -> str:
    s = report["search"]
    text = f"search parity: recall@{s['k']} {s['recall']:.4f} < {s['min_recall']}"
    return text + (f" ({why}, so even an exact copy can miss true neighbours: lower "
                   "--min-recall for it)" if why else "")


@needs_faiss
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_binary_faiss_copies_are_searched_by_hamming_distance(tmp_path: Path,
                                                              kind: str) -> None:
    """Packed bits compared by Euclid on bytes gave recall 0.2 on an exact copy."""
    index = _binary_index(tmp_path / "bin.faiss", kind)
    copy_ = str(tmp_path / "bin.parquet")
    vecferry.convert(index, copy_)
    for a, b in ((index, copy_), (copy_, index)):
        report = verify(a, b)
        assert report["ok"] is True, report["problems"]
        assert (report["search"]["distance"], report["search"]["recall"]) == ("Hamming", 1.0)
        assert report["search"].get("ivf_nprobe") == (
            None if kind == "flat" else {"source" if a == index else "destination": 8})
    # the same codes, each under another id: Hamming parity still catches it
    table = pq.read_table(copy_)
    col = table.column("vector").combine_chunks()
    moved = str(tmp_path / "moved.parquet")
    rewrite_parquet(table.set_column(table.schema.get_field_index("vector"), "vector",
                                     pa.concat_arrays([col.slice(1), col.slice(0, 1)])),
                    copy_, moved)
    report = verify(index, moved)
    assert report["search"]["distance"] == "Hamming" and report["search"]["recall"] < 0.5
    assert report["problems"] == ["500 vector differs: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9",
                                  _search_problem(report)]


@needs_faiss
def test_an_ivf_index_is_searched_in_every_list(tmp_path: Path) -> None:
    """At nprobe 1 an exact IVF16 copy scored about 0.3 and failed."""
    from vecferry.converters.faiss_index import FaissReader

    mat = np.random.default_rng(8).standard_normal((700, 8)).astype(np.float32)
    src = _matrix_parquet(tmp_path, "x", mat)
    ivf = str(tmp_path / "ivf.faiss")
    vecferry.convert(src, ivf, writer_options={"index_factory": "IVF16,Flat"})
    report = verify(src, ivf, queries=20)
    assert report["ok"] is True, report["problems"]
    assert report["search"]["recall"] == 1.0
    assert report["search"]["ivf_nprobe"] == {"destination": 16}
    assert "approximate" not in report["search"]
    result = run("convert", src, str(tmp_path / "ivf2.faiss"), "--index-factory", "IVF16,Flat",
                 "--verify")
    assert result.exit_code == 0, result.stderr
    assert "search parity: recall@10 1.0000 over 10 queries (Euclid)" in result.stderr
    # the index is put back as it was: only the parity search sees every list
    reader = FaissReader(ivf, context=Context())
    try:
        queries = mat[:50]
        exact = np.argsort(((queries[:, None, :] - mat[None, :, :]) ** 2).sum(axis=2),
                           axis=1, kind="stable")[:, :10].tolist()
        with reader.every_list_searched() as nprobe:
            assert nprobe == 16
            assert [sorted(r) for r in reader.search(queries, 10, "")] == \
                [sorted(r) for r in exact]
        with pytest.raises(RuntimeError), reader.every_list_searched():
            raise RuntimeError("a search failed")
        after = reader.search(queries, 10, "")  # nprobe 1 again, as the file says
        assert [sorted(r) for r in after] != [sorted(r) for r in exact]
    finally:
        reader.close()
    flat = str(tmp_path / "flat.faiss")
    vecferry.convert(src, flat)
    reader = FaissReader(flat, context=Context())
    try:
        with reader.every_list_searched() as nprobe:
            assert nprobe is None
    finally:
        reader.close()


def _id_index(path: Path, mat: np.ndarray, ids: np.ndarray, order: np.ndarray,
              factory: str = "IDMap,Flat") -> str:
    """A FAISS index of ``mat`` under ``ids``, the points added in ``order``: where distances
    tie, FAISS returns the point it was given first."""
    import faiss

    index = faiss.index_factory(mat.shape[1], factory)
    if not index.is_trained:
        index.train(np.concatenate([mat] * 20) + np.random.default_rng(1).standard_normal(
            (20 * len(mat), mat.shape[1])).astype(np.float32) * 0.01)
    index.add_with_ids(mat[order], ids[order])
    faiss.write_index(index, str(path))
    return str(path)


def _groups_of_duplicates() -> tuple[np.ndarray, np.ndarray]:
    """30 random vectors, 4 copies of each under 120 ids: the top 10 of a query holds whole
    groups of equal distance, the 10th a group cut in two."""
    base = np.random.default_rng(5).standard_normal((30, DIM)).astype(np.float32)
    return np.repeat(base, 4, axis=0), np.arange(120, dtype=np.int64) * 7 + 3


@needs_faiss
@pytest.mark.parametrize("target", ["faiss", "faiss_ivf", "local", "edge"])
def test_tied_distances_between_two_indexes_are_not_misses(tmp_path: Path,
                                                           target: str) -> None:
    """Two indexes holding the same points broke ties in their own orders: recall 0.87 to
    0.96 on identical data (each index reported only ids, so no tie was seen)."""
    if target in ("local", "edge") and not (has("qdrant_client") and has("qdrant_edge")):
        pytest.skip("needs qdrant-client and qdrant-edge")
    mat, ids = _groups_of_duplicates()
    src = _id_index(tmp_path / "src.faiss", mat, ids, np.arange(len(ids)))
    shuffled = np.random.default_rng(2).permutation(len(ids))

    def destination(name: str, vectors: np.ndarray) -> str:
        if target == "faiss_ivf":
            return _id_index(tmp_path / f"{name}.faiss", vectors, ids, shuffled, "IVF4,Flat")
        index = _id_index(tmp_path / f"{name}.faiss", vectors, ids, shuffled)
        if target == "faiss":
            return index
        out = {"local": f"qdrant-local://{tmp_path}/{name}/docs",
               "edge": f"qdrant-edge://{tmp_path}/{name}"}[target]
        vecferry.convert(index, out)
        return out

    report = verify(src, destination("same", mat), queries=20, k=10)
    assert report["ok"] is True, report["problems"]
    assert report["digests_match"] is True
    s = report["search"]
    assert s["recall"] == 1.0
    assert s["tied_ids"] > 0  # the ids did differ: ties, not luck, made the recall
    # the FAISS source cannot fetch points by id, Qdrant can
    assert s["tie_vectors_from"] == ("source" if target.startswith("faiss") else "destination")
    if target == "faiss":
        dst = str(tmp_path / "same.faiss")
        result = CliRunner().invoke(main, ["verify", src, dst, "--queries", "20"])
        assert result.exit_code == 0, result.stderr
        assert (f"search parity: recall@10 1.0000 over 20 queries (Euclid); {s['tied_ids']} "
                "tied ids counted as found") in result.stderr

    # the same ids with each vector moved a little: real neighbours change, and parity fails
    # even though the copies of a vector still tie on the source's side
    noise = np.random.default_rng(6).standard_normal(mat.shape).astype(np.float32) * 0.3
    report = verify(src, destination("moved", mat + noise), queries=20, k=10)
    assert report["search"]["ok"] is False and report["search"]["recall"] < 0.95
    assert _search_problem(report) in report["problems"]


@needs_faiss
def test_near_ties_within_float32_rounding_are_not_misses(tmp_path: Path) -> None:
    """Points on a line off the origin: the neighbours either side of a point are at the same
    distance up to float32 rounding of their coordinates, an engine may rank them either way,
    and exact float64 distances alone (no rounding bound) gave recall 0.9933."""
    u = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    mat = (np.arange(200, dtype=np.float32)[:, None] * u * np.float32(0.1)
           + np.float32(3)).astype(np.float32)
    ids = np.arange(200, dtype=np.int64)
    a = _id_index(tmp_path / "a.faiss", mat, ids, ids)
    b = _id_index(tmp_path / "b.faiss", mat, ids, ids[::-1].copy())
    report = verify(a, b, queries=150, k=2, min_recall=1.0)
    assert report["ok"] is True, report["problems"]
    assert report["search"]["recall"] == 1.0


def test_only_a_tie_at_the_other_sides_kth_distance_is_found() -> None:
    """The tie rule itself: an id one float32 step from the other side's k-th one ties with
    it; one a thousandth nearer or further does not (missed, or should not have been
    returned); a short list (all a side holds) has no k-th to tie with."""
    from vecferry.verification import _exact_scores, _found

    q = np.full(DIM, 0.5)
    kth = q + np.eye(DIM)[0]
    step, nearer, further = kth.copy(), kth.copy(), kth.copy()
    step[0] = float(np.nextafter(np.float32(kth[0]), np.float32(2)))
    nearer[0] -= 1e-3
    further[0] += 1e-3
    stored = {"best": q + 0.1, "kth": kth, "dup": kth.copy(), "step": step, "nearer": nearer,
              "further": further}
    for distance in ("Euclid", "Manhattan", "Dot", "Cosine"):
        exact = _exact_scores(q, list(stored), stored, distance)
        best = max(stored, key=lambda i: exact[i][0])
        theirs = [best, "kth"]
        assert exact["kth"] == min(exact[i] for i in theirs) and exact["dup"] == exact["kth"]
        assert _found([best, "step"], theirs, set(theirs), 2, exact) == 2, distance
        assert _found([best, "dup"], theirs, set(theirs), 2, exact) == 2, distance
        assert _found([best, "step"], theirs, set(theirs), 3, exact) == 1, distance
        if distance in ("Euclid", "Manhattan"):
            for other in ("nearer", "further"):
                assert _found([best, other], theirs, set(theirs), 2, exact) == 1, other


@needs_faiss
def test_an_hnsw_copy_below_min_recall_says_why(tmp_path: Path) -> None:
    """As the README says: HNSW returns approximate neighbours; the failure says what to do."""
    mat = np.random.default_rng(3).standard_normal((2000, 16)).astype(np.float32)
    src = _matrix_parquet(tmp_path, "x", mat)
    hnsw = str(tmp_path / "hnsw.faiss")
    vecferry.convert(src, hnsw, writer_options={"index_factory": "IDMap2,HNSW4"})
    report = verify(src, hnsw, queries=50)
    assert report["source"]["digest"] == report["destination"]["digest"]
    assert report["search"]["recall"] < 0.99
    assert report["search"]["approximate"] == [f"{hnsw} searches an approximate HNSW graph"]
    assert report["problems"] == [
        _search_problem(report, f"{hnsw} searches an approximate HNSW graph")]
    assert verify(src, hnsw, queries=50, min_recall=0.5)["ok"] is True


@needs_faiss
def test_a_lossy_faiss_destination_is_read_with_allow_lossy_and_tolerance(
        tmp_path: Path) -> None:
    from vecferry.errors import UnsupportedError

    mat = np.random.default_rng(4).standard_normal((300, 8)).astype(np.float32)
    src = _matrix_parquet(tmp_path, "x", mat)
    lossy = _pq_index(tmp_path, mat)
    with pytest.raises(UnsupportedError) as info:
        verify(src, lossy)
    assert str(info.value) == (
        f"{lossy}: FAISS index IndexPQ stores lossy codes (IndexPQ); the vectors read back "
        "are approximations, not the originals (pass --allow-lossy to export the decoded "
        "vectors anyway)")
    warning = (f"{lossy}: IndexPQ is lossy (IndexPQ); exported vectors are decoded "
               "approximations of the originals")
    exact = verify(src, lossy, allow_lossy=True, queries=0)
    assert exact["problems"] == ["300 vector differs: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"]
    assert exact["warnings"] == [warning]
    for kw in ({"allow_lossy": True}, {"dst_options": {"allow_lossy": True}}):
        close = verify(src, lossy, tolerance=10.0, min_recall=0.0, **kw)
        assert close["ok"] is True, close["problems"]
        err = close["diff"]["max_abs_error"]
        assert 0 < err <= 10.0
        assert close["verdict"] == f"equal within tolerance 10.0 (largest error {err:.3g})"
        assert close["search"]["approximate"] == [f"{lossy} holds lossy codes"]
    strict = verify(src, lossy, tolerance=10.0, min_recall=1.0, allow_lossy=True)
    assert strict["search"]["recall"] < 1.0
    assert strict["problems"] == [_search_problem(strict, f"{lossy} holds lossy codes")]
    # either side: a lossy source, and a lossy archive alone
    assert verify(lossy, src, tolerance=10.0, min_recall=0.0, allow_lossy=True)["ok"] is True
    # read alone (allow_lossy reaches it), it records no digest to compare with
    with pytest.raises(UsageError, match="the file records no digest"):
        verify(lossy, allow_lossy=True)


def test_allow_lossy_without_a_faiss_side_is_a_usage_error(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    with pytest.raises(UsageError) as info:
        verify(src, dst, allow_lossy=True)
    assert str(info.value) == (f"--allow-lossy applies to FAISS indexes, not to {src} "
                               f"(parquet) or {dst} (jsonl) (drop --allow-lossy)")
    with pytest.raises(UsageError) as info:
        verify(src, allow_lossy=True)
    assert str(info.value) == (f"--allow-lossy applies to FAISS indexes, not to {src} "
                               "(parquet) (drop --allow-lossy)")


def test_vectors_of_different_sizes_are_a_difference_not_a_crash(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    src = _matrix_parquet(tmp_path, "x", rng.standard_normal((300, 16)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.standard_normal((300, 6)).astype(np.float32))
    dst = str(tmp_path / "y.npy")
    size = "vector size differs: source 16, destination 6"
    skipped = f"{size}, so source queries cannot search the destination"
    report = verify(src, dst)
    assert report["ok"] is False
    assert report["problems"] == [size, "300 vector differs: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"]
    assert "search" not in report and report["search_skipped"] == skipped
    assert report["warnings"] == [f"search parity skipped: {skipped}"]
    tolerant = verify(src, dst, tolerance=100.0)
    assert tolerant["problems"] == report["problems"]
    spot = verify(src, dst, sample=4)
    shown = ", ".join(map(repr, spot["sample"]["examples"]["vector_differs"]))
    assert spot["problems"] == [size, f"4 of 4 sampled points vector differs: {shown}"]
    result = run("verify", src, dst)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[:3] == [
        f"warning: search parity skipped: {skipped}", f"differs: {size}",
        "differs: 300 vector differs: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"]
    # a named vector is named; without queries there is nothing to skip
    small = full(dense_only=True)
    small.vectors = [VectorSpec("d", "dense", 3, distance="Dot")]
    for p in small.points:
        p["vector"]["d"] = p["vector"]["d"][:3]
    named = verify(write(full(dense_only=True), f"{tmp_path}/d8.parquet"),
                   write(small, f"{tmp_path}/d3.jsonl"), queries=0)
    assert named["problems"][0] == "vector 'd' size differs: source 8, destination 3"
    assert "search_skipped" not in named and named["warnings"] == []


def test_the_verdict_says_what_was_proven(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    assert verify(src, dst)["verdict"] == "identical"
    assert verify(src, dst, sample=10, queries=0)["verdict"] == (
        "spot check of 10 sampled points passed")
    assert verify(src)["verdict"] == "identical"
    other = write(changed(full(), drop=[0]), f"{tmp_path}/other.jsonl")
    assert verify(src, other, sample=10, queries=0)["verdict"] == "differences found"
    assert verify(src, other, queries=0)["verdict"] == "differences found"


def test_cli_spot_check_does_not_claim_identical(tmp_path: Path) -> None:
    src, dst = pair(tmp_path, full())
    result = run("verify", src, dst, "--sample", "10", "--queries", "0")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "verified: spot check of 10 sampled points passed"
    result = run("verify", src, dst, "--queries", "0")
    assert result.stderr.splitlines()[-1] == "verified: identical"


@needs_faiss
def test_cli_allow_lossy_reads_a_lossy_faiss_destination(tmp_path: Path) -> None:
    mat = np.random.default_rng(4).standard_normal((300, 8)).astype(np.float32)
    src = _matrix_parquet(tmp_path, "x", mat)
    lossy = _pq_index(tmp_path, mat)
    result = run("verify", src, lossy, "--allow-lossy", "--tolerance", "10", "--min-recall",
                 "0", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    err = report["diff"]["max_abs_error"]
    assert report["verdict"] == f"equal within tolerance 10.0 (largest error {err:.3g})"
    # --json: the verdict is in the report; stderr keeps the lossy warning alone
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["warning"]
    result = run("verify", src, lossy, "--allow-lossy", "--tolerance", "10", "--min-recall",
                 "0")
    assert result.stderr.splitlines()[-1] == (
        f"verified: equal within tolerance 10.0 (largest error {err:.3g})")
    result = run("verify", src, str(tmp_path / "x.npy"), "--allow-lossy")
    assert result.exit_code == 2
    assert result.stderr == (f"error: --allow-lossy applies to FAISS indexes, not to {src} "
                             f"(parquet) or {tmp_path / 'x.npy'} (npy) (drop --allow-lossy)\n")


def test_a_conversion_with_rejects_verifies_what_it_wrote(tmp_path: Path) -> None:
    """--on-error skip --verify exited 1: verify read the source again in fail mode and
    stopped at the first bad record; a point the target refused would be called missing."""
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": 1, "vector": [1.0, 2.0]}\n{"id": 2, "vector": [1.0]}\n'
                   '{"id": 3, "vector": [3.0, 4.0]}\n')
    out, rejects = tmp_path / "o.parquet", tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["convert", str(src), str(out), "--on-error", "skip",
                                       "--rejects", str(rejects), "--verify", "--json"])
    assert result.exit_code == 3, result.stderr
    report = json.loads(result.stdout)["verify"]
    assert (report["ok"], report["verdict"]) == (True, "identical")
    assert (report["source_rejected"], report["source_excluded"]) == (1, 0)
    assert report["warnings"] == [
        f"{src}: the unnamed vector: the 3 points sampled to infer the vectors hold 2 of size "
        "2, 1 of size 1; size 2, which most hold, is taken, so points of size 1 (first at "
        "line 2) are bad records",
        "1 source record(s) the conversion rejected are not compared (1 bad in the source, 0 "
        "refused by the destination)"]

    # NaN in a numpy matrix: the JSONL target refuses the point (its rejects line names the
    # target); plain verify leaves it out given the rejects file, and calls it missing without
    mat = np.arange(8, dtype=np.float32).reshape(4, 2)
    mat[2, 0] = np.nan
    np.save(tmp_path / "v.npy", mat)
    jl, rj = tmp_path / "o.jsonl", tmp_path / "rj.jsonl"
    vecferry.convert(str(tmp_path / "v.npy"), str(jl), on_error="skip", rejects=str(rj))
    assert json.loads(rj.read_text())["_vecferry_reject"]["source"] == str(jl)
    ok = run("verify", str(tmp_path / "v.npy"), str(jl), "--on-error", "skip", "--rejects",
             str(rj))
    assert ok.exit_code == 0, ok.stderr
    assert "1 source record(s) the conversion rejected are not compared (0 bad in the " \
           "source, 1 refused by the destination)" in ok.stderr
    missing = run("verify", str(tmp_path / "v.npy"), str(jl), "--queries", "0")
    assert missing.exit_code == 4
    assert "1 missing in destination: 2" in missing.stderr


def test_duplicate_ids_do_not_fail_search_parity(tmp_path: Path) -> None:
    """An id held twice came back twice from brute force, and recall was counted over the
    raw list: 0.97 on two identical files."""
    rng = np.random.default_rng(4)
    lines = [json.dumps({"id": i, "vector": rng.standard_normal(4).tolist()}) for i in range(50)]
    lines.append(lines[8])
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines) + "\n")
    vecferry.convert(str(src), str(tmp_path / "d.parquet"))
    report = verify(str(src), str(tmp_path / "d.parquet"), queries=30, k=10)
    assert report["ok"] is True, report["problems"]
    assert report["search"]["recall"] == 1.0


@needs_faiss
def test_points_a_faiss_source_rejected_are_not_searched_for(tmp_path: Path) -> None:
    """The index still returns the points whose payloads were rejected: parity failed where
    the digests proved the copy."""
    import faiss

    mat = np.random.default_rng(5).standard_normal((60, 8)).astype(np.float32)
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(8))
    index.add_with_ids(mat, np.arange(1000, 1060, dtype=np.int64))
    faiss.write_index(index, str(tmp_path / "i.faiss"))
    meta = {str(1000 + i): ("not an object" if i % 7 == 3 else {"i": i}) for i in range(60)}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    out, rejects = tmp_path / "o.parquet", tmp_path / "r.jsonl"
    report = vecferry.convert(str(tmp_path / "i.faiss"), str(out), on_error="skip",
                              rejects=str(rejects),
                              reader_options={"payloads": str(tmp_path / "meta.json")})
    assert report["rejected"] == 9
    result = verify(str(tmp_path / "i.faiss"), str(out), queries=20, k=10, on_error="skip",
                    rejects=str(rejects), src_options={"payloads": str(tmp_path / "meta.json")})
    assert result["ok"] is True, result["problems"]
    assert (result["source_rejected"], result["search"]["recall"]) == (9, 1.0)


@needs_faiss
def test_sides_recording_different_distances_are_warned_not_failed_by_search(
        tmp_path: Path) -> None:
    """A FAISS index (L2 by default) and a collection (Dot by default) loaded from one source
    without a distance hold the same points under different distances: a warning (a load of
    each builds a different collection); their neighbours differ by the distance alone, which
    verify says instead of failing on recall."""
    pytest.importorskip("qdrant_client")
    mat = (np.random.default_rng(9).standard_normal((200, 8)) * [1, 2, 3, 4, 5, 6, 7, 8]
           ).astype(np.float32)
    src = _matrix_parquet(tmp_path, "m", mat)
    index, coll = str(tmp_path / "m.faiss"), f"qdrant-local://{tmp_path}/q/m"
    vecferry.convert(src, index)
    vecferry.convert(src, coll)
    report = verify(index, coll, queries=10)
    assert report["ok"] is True and report["problems"] == []
    assert ("vector distance differs: source Euclid, destination Dot (the points are compared; "
            "a collection loaded from each would search differently)") in report["warnings"]
    assert report["digests_match"] is True
    assert report["search"]["ok"] is None and report["search"]["recall"] < 0.99
    assert report["search"]["distances_differ"] == ("the source searches by Euclid and the "
                                                    "destination by Dot")
    assert [w for w in report["warnings"] if w.startswith("search parity not compared")] == [
        f"search parity not compared: recall@10 {report['search']['recall']:.4f}, but the "
        "source searches by Euclid and the destination by Dot, so their neighbours differ "
        "whatever the data (the digests compare the data)"]
    # the same distance on both sides is compared as before
    same = verify(index, src, queries=10)
    assert same["ok"] is True and same["search"]["ok"] is True


@needs_faiss
def test_a_vector_one_side_lacks_is_one_problem_and_a_chosen_one_is_compared_alone(
        tmp_path: Path) -> None:
    """A FAISS index holds one vector: converting a named dense + sparse + multi source with
    --vector d and --verify compares by d (the others named as not compared); verifying
    the two alone names the vectors the index lacks once, not each point as differing."""
    from click.testing import CliRunner

    from vecferry.cli import main

    ds = full()
    src = write(ds, f"{tmp_path}/src.parquet")
    index = f"{tmp_path}/one.faiss"
    result = CliRunner().invoke(main, ["convert", src, index, "--vector", "d", "--verify",
                                       "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)["verify"]
    assert checked["ok"] is True and checked["verdict"] == "identical"
    others = [v.name for v in ds.vectors if v.name != "d"]
    assert f"not compared: vector(s) {', '.join(map(repr, others))}" in checked["warnings"]
    alone = verify(src, index, queries=0)
    kinds = {v.name: v.kind for v in ds.vectors}
    assert alone["problems"] == ["the destination holds no vector " + ", ".join(
        f"{n!r} ({kinds[n]})" for n in others)]
    assert "diff" not in alone or not alone["diff"]["vector_differs"]
    assert verify(src, index, queries=0, only_vectors=["d"])["ok"] is True
    with pytest.raises(UsageError, match="not held by both sides: 's'"):
        verify(src, index, only_vectors=["s"])
