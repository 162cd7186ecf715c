"""Bad points of numpy sources: a negative id, a bad ``--payloads`` line, a bad ``<id>.json``
sidecar, a per-vector file that is unreadable or of another size or dtype.

With ``on_error="fail"`` each fails the run with its whole message (location first, then what
is wrong, then the hint in parentheses) and leaves no output; with ``on_error="skip"`` the
point goes to the rejects file (id, vector when readable, payload as the input holds it, and
``_vecferry_reject``), the others are written, ``read == written + rejected``, and a fixed
rejects file converts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import vecferry
from failing import fails_converting
from roundtrip import read_points
from vecferry.converters.base import Context
from vecferry.errors import InputError, RecordError
from vecferry.fileio import MARK_ROWS, NAN_HINT, PAYLOAD_CHUNK

F32 = np.float32
ID_HINT = "ids must be unsigned integers, UUIDs or strings"
LINE_HINT = "each line must be a JSON object or null"
SIDECAR_HINT = "make the file one JSON object (or null), or delete it"
SIZE_HINT = "every file must hold one vector of the same size and dtype"


def _orjson_error(text: bytes) -> str:
    """What orjson says about ``text``: the end of a "not JSON" message."""
    with pytest.raises(orjson.JSONDecodeError) as info:
        orjson.loads(text)
    return str(info.value)


def _rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _row(i: int, dim: int = 4) -> list[float]:
    return [float(i * dim + k) for k in range(dim)]


def _matrix(tmp_path: Path, rows: int = 6, dim: int = 4) -> str:
    path = tmp_path / "v.npy"
    np.save(path, np.arange(rows * dim, dtype=F32).reshape(rows, dim))
    return str(path)


def _skip(src: str, tmp_path: Path, **options: Any) -> tuple[dict[str, Any], Path]:
    """Convert ``src`` to ``out.jsonl`` skipping bad points: the report and the rejects file."""
    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(src, str(tmp_path / "out.jsonl"), on_error="skip",
                              rejects=str(rejects), batch_size=2, reader_options=options)
    assert report["read"] == report["written"] + report["rejected"]
    assert report["rejected"] == len(_rejects(rejects))
    assert report["written"] == len(read_points(str(tmp_path / "out.jsonl"))[1])
    return report, rejects


def _fails(cls: type[Any], src: str, tmp_path: Path, **options: Any) -> str:
    return fails_converting(cls, src, tmp_path / "fail.parquet", **options)


def _convert_fixed(rejects: Path, tmp_path: Path, fix: Any) -> list[dict[str, Any]]:
    """Apply ``fix`` to each line of the rejects file, convert it, return the points read."""
    lines = _rejects(rejects)
    for line in lines:
        fix(line)  # the reject note stays: the JSONL reader ignores it
    rejects.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = vecferry.convert(str(rejects), str(tmp_path / "fixed.jsonl"))
    assert (report["written"], report["rejected"]) == (len(lines), 0)
    return read_points(str(tmp_path / "fixed.jsonl"))[1]


# ------------------------------------------------------------------------ negative ids


def _negative_ids(tmp_path: Path) -> tuple[str, str]:
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([10, -1, 12, 13, -7, 15], dtype=np.int64))
    return _matrix(tmp_path), str(ids)


def test_negative_ids_fail_the_run_when_opened(tmp_path):
    src, ids = _negative_ids(tmp_path)
    text = _fails(InputError, src, tmp_path, ids=ids)
    assert text == f"{ids}, row 1: id -1 is negative ({ID_HINT})"


def test_negative_ids_are_rejected_points_when_skipping(tmp_path):
    src, ids = _negative_ids(tmp_path)
    report, rejects = _skip(src, tmp_path, ids=ids)
    assert (report["read"], report["written"], report["rejected"]) == (6, 4, 2)
    assert _rejects(rejects) == [
        {"id": -1, "vector": _row(1), "payload": None,
         "_vecferry_reject": {"reason": "id -1 is negative", "source": ids, "row": 1}},
        {"id": -7, "vector": _row(4), "payload": None,
         "_vecferry_reject": {"reason": "id -7 is negative", "source": ids, "row": 4}},
    ]
    _, points = read_points(str(tmp_path / "out.jsonl"))
    assert [(p["id"], p["vector"].tolist()) for p in points] == [
        (10, _row(0)), (12, _row(2)), (13, _row(3)), (15, _row(5))]
    fixed = _convert_fixed(rejects, tmp_path, lambda line: line.update(id=-line["id"]))
    assert [(p["id"], p["vector"].tolist()) for p in fixed] == [(1, _row(1)), (7, _row(4))]


def test_negative_ids_inside_an_npz_archive(tmp_path):
    src = tmp_path / "v.npz"
    np.savez(src, vectors=np.arange(24, dtype=F32).reshape(6, 4),
             ids=np.array([0, 1, 2, -3, 4, 5]))
    text = _fails(InputError, str(src), tmp_path)
    assert text == f"{src}, row 3: id -3 is negative ({ID_HINT})"
    report, rejects = _skip(str(src), tmp_path)
    assert (report["read"], report["written"], report["rejected"]) == (6, 5, 1)
    assert _rejects(rejects) == [
        {"id": -3, "vector": _row(3), "payload": None,
         "_vecferry_reject": {"reason": "id -3 is negative", "source": str(src), "row": 3}}]


def test_negative_ids_of_a_shard_directory_are_rejected_when_skipping(tmp_path):
    d = tmp_path / "sh"
    d.mkdir()
    np.save(d / "emb_0.npy", np.arange(12, dtype=F32).reshape(3, 4))
    np.save(d / "emb_1.npy", np.arange(12, 24, dtype=F32).reshape(3, 4))
    np.save(d / "ids_0.npy", np.array([0, 1, 2]))
    np.save(d / "ids_1.npy", np.array([3, -4, 5]))
    report, rejects = _skip(str(d), tmp_path)
    assert (report["read"], report["written"], report["rejected"]) == (6, 5, 1)
    assert _rejects(rejects) == [
        {"id": -4, "vector": _row(4), "payload": None,
         "_vecferry_reject": {"reason": "id -4 is negative", "source": str(d / "ids_1.npy"),
                              "row": 1}}]
    assert [p["id"] for p in read_points(str(tmp_path / "out.jsonl"))[1]] == [0, 1, 2, 3, 5]


# ------------------------------------------------------------------- --payloads lines


PAYLOAD_LINES = [
    # (line, message after "<file>, line L, row R, id I: ", its hint)
    (b'{"x": NaN}', "payload line holds NaN, which JSON cannot express", NAN_HINT),
    (b'{"x": -Infinity}', "payload line holds -Infinity, which JSON cannot express", NAN_HINT),
    (b"[1, 2]", "payload must be a JSON object, not list", LINE_HINT),
    (b'"text"', "payload must be a JSON object, not str", LINE_HINT),
    (b'{"x": 1', "payload line is not JSON: " + _orjson_error(b'{"x": 1'), LINE_HINT),
]


def _payloads(tmp_path: Path, bad: bytes) -> str:
    """Six payload rows, a byte order mark and a blank line first; row 3 (line 5) is ``bad``."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 0}\n\n{"a": 1}\nnull\n' + bad + b'\n{"a": 4}\n'
                     b'{"a": 5}\n')
    return str(path)


@pytest.mark.parametrize(("bad", "message", "hint"), PAYLOAD_LINES)
def test_a_bad_payload_line_fails_the_run(tmp_path, bad, message, hint):
    payloads = _payloads(tmp_path, bad)
    text = _fails(RecordError, _matrix(tmp_path), tmp_path, payloads=payloads)
    assert text == f"{payloads}, line 5, row 3, id 3: {message} ({hint})"


@pytest.mark.parametrize(("bad", "message", "hint"), PAYLOAD_LINES)
def test_a_bad_payload_line_is_a_rejected_point_when_skipping(tmp_path, bad, message, hint):
    payloads = _payloads(tmp_path, bad)
    report, rejects = _skip(_matrix(tmp_path), tmp_path, payloads=payloads)
    assert (report["read"], report["written"], report["rejected"]) == (6, 5, 1)
    as_kept = json.loads(bad) if bad in (b"[1, 2]", b'"text"') else bad.decode()
    assert _rejects(rejects) == [
        {"id": 3, "vector": _row(3), "payload": as_kept,
         "_vecferry_reject": {"reason": message, "source": payloads, "line": 5, "row": 3,
                              "point_id": 3}}]
    _, points = read_points(str(tmp_path / "out.jsonl"))
    assert [(p["id"], p["payload"]) for p in points] == [
        (0, {"a": 0}), (1, {"a": 1}), (2, None), (4, {"a": 4}), (5, {"a": 5})]
    fixed = _convert_fixed(rejects, tmp_path, lambda line: line.update(payload={"a": 3}))
    assert [(p["id"], p["vector"].tolist(), p["payload"]) for p in fixed] == [
        (3, _row(3), {"a": 3})]


def test_unfixed_payload_rejects_are_rejected_again(tmp_path):
    """A payload kept as its text (NaN) is no object: converted unfixed, it is refused."""
    payloads = _payloads(tmp_path, b'{"x": NaN}')
    _, rejects = _skip(_matrix(tmp_path), tmp_path, payloads=payloads)
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(rejects), str(tmp_path / "again.jsonl"))
    assert str(info.value) == (f"{rejects}, line 1, id 3: payload must be a JSON object, not "
                               "str (the payload is the text it was read from, which was not "
                               "JSON: fix it into an object)")


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_payload_lines_far_in_a_long_file(tmp_path, workers):
    """Bad lines in several chunks and past the first seek marks: each one rejected, every
    other point written once, in one process or in row-range partitions."""
    n = 2 * MARK_ROWS + 300
    bad_rows = {7, PAYLOAD_CHUNK + 1, PAYLOAD_CHUNK + 2, MARK_ROWS + 5, 2 * MARK_ROWS + 9}
    lines = [b"[0]" if r in bad_rows else b'{"r": %d}' % r for r in range(n)]
    payloads = tmp_path / "p.jsonl"
    payloads.write_bytes(b"\n".join(lines) + b"\n")
    src = tmp_path / "v.npy"
    np.save(src, np.arange(n * 2, dtype=F32).reshape(n, 2))
    rejects = tmp_path / "rejects.jsonl"
    out = tmp_path / "out"
    report = vecferry.convert(str(src), f"{out}/", to_format="parquet", on_error="skip",
                              rejects=str(rejects), workers=workers, partition_size=4096,
                              batch_size=500, reader_options={"payloads": str(payloads)})
    if workers > 1:
        assert report["partitions"] > 1
    assert (report["read"], report["written"], report["rejected"]) == (n, n - 5, 5)
    got = sorted((r["_vecferry_reject"]["row"], r["_vecferry_reject"]["line"], r["id"],
                  r["payload"]) for r in _rejects(rejects))
    assert got == [(r, r + 1, r, [0]) for r in sorted(bad_rows)]
    _, points = read_points(str(out))
    assert sorted(p["id"] for p in points) == [r for r in range(n) if r not in bad_rows]
    assert all(p["payload"] == {"r": p["id"]} for p in points)


# --------------------------------------------------------------- per-vector directories


def _per_vector(tmp_path: Path, **bad: bytes | np.ndarray) -> Path:
    """Files 0.npy .. 5.npy of 4 float32 values (i*4 ... i*4+3), each with an ``{"i": i}``
    sidecar; a keyword ``npy_<i>`` or ``json_<i>`` replaces that file's contents."""
    d = tmp_path / "pv"
    d.mkdir()
    for i in range(6):
        np.save(d / f"{i}.npy", np.array(_row(i), dtype=F32))
        (d / f"{i}.json").write_text(json.dumps({"i": i}))
    for key, value in bad.items():
        kind, i = key.split("_")
        path = d / f"{i}.{kind}"
        if isinstance(value, np.ndarray):
            np.save(path, value)
        else:
            path.write_bytes(value)
    return d


# (name, bad contents, message after "<file>, row R: " or "<file>, row R: " + prefix, payload
#  or vector as the rejects file keeps it)
PER_VECTOR = {
    "sidecar_not_json": ({"json_2": b'{"i": '}, "2.json",
                         "payload sidecar is not JSON: " + _orjson_error(b'{"i": '),
                         SIDECAR_HINT, {"payload": '{"i":'}),
    "sidecar_nan": ({"json_2": b'{"i": NaN}'}, "2.json",
                    "payload sidecar holds NaN, which JSON cannot express", NAN_HINT,
                    {"payload": '{"i": NaN}'}),
    "sidecar_not_object": ({"json_2": b"[1, 2]"}, "2.json",
                           "payload sidecar must hold a JSON object, not list", SIDECAR_HINT,
                           {"payload": [1, 2]}),
    "another_size": ({"npy_2": np.arange(3, dtype=F32)}, "2.npy",
                     "vector has shape (3,) and dtype float32, but the first file has 4 values "
                     "of float32", SIZE_HINT, {"vector": [0.0, 1.0, 2.0]}),
    "another_dtype": ({"npy_2": np.arange(4, dtype=np.float64)}, "2.npy",
                      "vector has shape (4,) and dtype float64, but the first file has 4 values "
                      "of float32", SIZE_HINT, {"vector": [0.0, 1.0, 2.0, 3.0]}),
    # not kept in the rejects file: flat, it would convert from there as a vector of 8
    "a_matrix": ({"npy_2": np.ones((2, 4), dtype=F32)}, "2.npy",
                 "file holds an array of shape (2, 4), not one vector",
                 "save each vector as a 1-D array of its values", {}),
}


UNREADABLE_HINT = "the file may be truncated; re-create it, or move it out of the directory"


def _numpy_error(path: Path) -> str:
    """What numpy says about reading ``path`` (a file with the magic string)."""
    with pytest.raises(ValueError) as info, open(path, "rb") as fh:
        np.lib.format.read_array(fh, allow_pickle=False)
    return str(info.value)


@pytest.mark.parametrize("name", sorted(PER_VECTOR))
def test_a_bad_per_vector_point_fails_the_run(tmp_path, name):
    bad, file, message, hint, _ = PER_VECTOR[name]
    d = _per_vector(tmp_path, **bad)
    text = _fails(RecordError, str(d), tmp_path)
    assert text == f"{d / file}, row 2, id 2: {message} ({hint})"


@pytest.mark.parametrize("name", sorted(PER_VECTOR))
def test_a_bad_per_vector_point_is_rejected_when_skipping(tmp_path, name):
    bad, file, message, _, kept = PER_VECTOR[name]
    d = _per_vector(tmp_path, **bad)
    report, rejects = _skip(str(d), tmp_path)
    assert (report["read"], report["written"], report["rejected"]) == (6, 5, 1)
    point = {"id": 2, "vector": _row(2), "payload": {"i": 2}, **kept,
             "_vecferry_reject": {"reason": message, "source": str(d / file), "row": 2,
                                  "point_id": 2}}
    if name == "a_matrix":
        del point["vector"]
    assert _rejects(rejects) == [point]
    _, points = read_points(str(tmp_path / "out.jsonl"))
    assert [(p["id"], p["vector"].tolist(), p["payload"]) for p in points] == [
        (i, _row(i), {"i": i}) for i in (0, 1, 3, 4, 5)]
    fixed = _convert_fixed(rejects, tmp_path,
                           lambda line: line.update(vector=_row(2), payload={"i": 2}))
    assert [(p["id"], p["vector"].tolist(), p["payload"]) for p in fixed] == [
        (2, _row(2), {"i": 2})]


def test_an_unreadable_per_vector_file(tmp_path):
    d = _per_vector(tmp_path, npy_3=b"garbage, not numpy")
    reason = "not a readable .npy file: it starts with b'garbag', not with a .npy header"
    text = _fails(RecordError, str(d), tmp_path)
    assert text == f"{d / '3.npy'}, row 3, id 3: {reason} ({UNREADABLE_HINT})"
    report, rejects = _skip(str(d), tmp_path)
    assert (report["read"], report["written"], report["rejected"]) == (6, 5, 1)
    # no vector to keep: the rejects line holds the id and payload for the vector to be added
    assert _rejects(rejects) == [
        {"id": 3, "payload": {"i": 3},
         "_vecferry_reject": {"reason": reason, "source": str(d / "3.npy"), "row": 3,
                              "point_id": 3}}]
    fixed = _convert_fixed(rejects, tmp_path, lambda line: line.update(vector=_row(3)))
    assert [(p["id"], p["vector"].tolist()) for p in fixed] == [(3, _row(3))]


def test_an_unreadable_first_per_vector_file(tmp_path):
    """The first file that reads sets size and dtype; failing, the first file is named when
    the directory is opened."""
    d = _per_vector(tmp_path, npy_0=b"\x93NUMPY cut")
    with pytest.raises(RecordError) as info:
        vecferry.open_reader(str(d), format="npy")
    assert str(info.value) == (f"{d / '0.npy'}, row 0, id 0: not a readable .npy file: "
                               f"{_numpy_error(d / '0.npy')} ({UNREADABLE_HINT})")
    report, rejects = _skip(str(d), tmp_path)
    assert (report["read"], report["written"], report["rejected"]) == (6, 5, 1)
    assert [r["id"] for r in _rejects(rejects)] == [0]


def test_a_directory_where_no_file_reads(tmp_path):
    d = tmp_path / "pv"
    d.mkdir()
    for name in ("a.npy", "b.npy"):
        (d / name).write_bytes(b"not numpy")
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(d), format="npy", context=Context("skip"))
    assert type(info.value) is InputError
    assert str(info.value) == (f"{d}: no .npy file in the directory can be read (they may be "
                               "truncated or not numpy; re-create them)")


def test_several_bad_per_vector_points_in_row_order(tmp_path):
    d = _per_vector(tmp_path, json_1=b"[1]", npy_4=np.arange(5, dtype=F32),
                    json_4=b"{oops", json_5=b"null")
    report, rejects = _skip(str(d), tmp_path)
    assert (report["read"], report["written"], report["rejected"]) == (6, 4, 2)
    # one reason a point: its vector's before its sidecar's
    assert [(r["id"], r["_vecferry_reject"]["source"], r.get("payload")) for r in
            _rejects(rejects)] == [(1, str(d / "1.json"), [1]), (4, str(d / "4.npy"), "{oops")]
    _, points = read_points(str(tmp_path / "out.jsonl"))
    assert [(p["id"], p["payload"]) for p in points] == [
        (0, {"i": 0}), (2, {"i": 2}), (3, {"i": 3}), (5, None)]


def test_bad_per_vector_points_in_partitions(tmp_path):
    """Read in row-range partitions by two processes, each bad point is rejected once and
    every other point written once."""
    d = tmp_path / "pv"
    d.mkdir()
    n, bad = 300, {3, 150, 151, 299}
    for i in range(n):
        np.save(d / f"{i}.npy", np.full(8 if i in bad else 4, i, dtype=F32))
        (d / f"{i}.json").write_text(json.dumps({"i": i}))
    rejects = tmp_path / "rejects.jsonl"
    out = tmp_path / "out"
    report = vecferry.convert(str(d), f"{out}/", to_format="parquet", on_error="skip",
                              rejects=str(rejects), workers=2, partition_size=1024,
                              batch_size=64)
    assert report["partitions"] > 1
    assert (report["read"], report["written"], report["rejected"]) == (n, n - 4, 4)
    assert sorted(r["id"] for r in _rejects(rejects)) == sorted(bad)
    _, points = read_points(str(out))
    assert sorted(p["id"] for p in points) == [i for i in range(n) if i not in bad]
    assert all(p["payload"] == {"i": p["id"]} for p in points)
