"""What --overwrite (and --rejects) may replace: only an output vecferry wrote.

An output is written under a temporary name and renamed over the target, and a directory
output replaces the old directory whole: a link, a device or FIFO, or a directory holding the
user's other files must be refused, never replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import vecferry
from failing import fails
from vecferry.errors import OutputExistsError, UsageError


def _points(path: Path, n: int = 5) -> str:
    path.write_text("".join(json.dumps({"id": i, "vector": [0.5, float(i)],
                                        "payload": {"i": i}}) + "\n" for i in range(n)))
    return str(path)


DIR_HINT = ("(--overwrite replaces a directory vecferry wrote; choose a new or empty directory, "
            "or move those files out first)")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "npy", "vdf"])
def test_a_directory_holding_other_files_is_not_replaced(tmp_path, fmt):
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "sub" / "main.py").write_text("code")
    src = _points(proj / "in.jsonl")
    text = fails(UsageError, lambda: vecferry.convert(src, f"{proj}/", to_format=fmt,
                                                      overwrite=True))
    assert text == (f"{proj}: the output directory holds files vecferry did not write: "
                    f"in.jsonl, sub/ {DIR_HINT}")
    assert sorted(p.name for p in proj.iterdir()) == ["in.jsonl", "sub"]
    assert (proj / "sub" / "main.py").read_text() == "code"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "npy", "vdf"])
def test_a_directory_vecferry_wrote_is_replaced(tmp_path, fmt):
    src = _points(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    vecferry.convert(src, f"{out}/", to_format=fmt)
    written = sorted(p.name for p in out.iterdir())
    report = vecferry.convert(_points(tmp_path / "in2.jsonl", 7), f"{out}/", to_format=fmt,
                              overwrite=True)
    assert report["written"] == 7
    assert sorted(p.name for p in out.iterdir()) == written
    # ... but not once the user has put a file of their own in it
    (out / "notes.txt").write_text("mine")
    text = fails(UsageError, lambda: vecferry.convert(src, f"{out}/", to_format=fmt,
                                                      overwrite=True))
    assert text == f"{out}: the output directory holds files vecferry did not write: " \
        f"notes.txt {DIR_HINT}"


def test_a_partitioned_directory_output_is_replaced(tmp_path):
    src = _points(tmp_path / "in.jsonl", 3000)
    out = tmp_path / "parts"
    kw = {"to_format": "parquet", "workers": 2, "partition_size": "16kB"}
    first = vecferry.convert(src, f"{out}/", **kw)
    assert first["partitions"] > 1
    again = vecferry.convert(src, f"{out}/", overwrite=True, **kw)
    assert again["written"] == 3000


def test_a_fifo_is_not_replaced(tmp_path):
    fifo = tmp_path / "myfifo"
    os.mkfifo(fifo)
    text = fails(UsageError, lambda: vecferry.convert(_points(tmp_path / "in.jsonl"), str(fifo),
                                                      to_format="jsonl", overwrite=True))
    assert text == (f"{fifo}: the output is not a regular file (a device, FIFO or socket) "
                    "(write to a regular file, then copy it there)")
    assert fifo.is_fifo()


def test_a_symbolic_link_is_not_replaced(tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    src = _points(tmp_path / "in.jsonl")
    text = fails(UsageError, lambda: vecferry.convert(src, str(link), overwrite=True))
    assert text == (f"{link}: the output is a symbolic link; replacing it would replace the link, "
                    "not write where it points (name the real path, or remove the link)")
    assert link.is_symlink() and real.read_text() == "old\n"
    # a dangling link is an output that exists too
    real.unlink()
    fails(OutputExistsError, lambda: vecferry.convert(src, str(link)))


def test_a_file_format_does_not_replace_a_directory(tmp_path):
    d = tmp_path / "index.faiss"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    pytest.importorskip("faiss")
    text = fails(UsageError, lambda: vecferry.convert(_points(tmp_path / "in.jsonl"), str(d),
                                                      overwrite=True))
    assert text == (f"{d}: the output is a directory, and this format writes a file (name a "
                    "file, or remove the directory first)")
    assert (d / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------- --rejects


def _with_bad_line(path: Path) -> str:
    _points(path)
    with open(path, "a") as fh:
        fh.write('{"id": 9, "vector": [0.5]}\n')  # one dimension short
    return str(path)


REJECTS_REFUSED = ("the rejects file exists and is not one vecferry wrote (its first line is "
                   "not a rejected record) (give the rejects file a new name (--rejects FILE), "
                   "or move that file away)")


@pytest.mark.parametrize("bad_input", [False, True])
def test_rejects_never_replace_or_remove_a_file_of_the_users(tmp_path, bad_input):
    # a clean run removes an earlier run's rejects file; a run with rejects replaces it
    precious = tmp_path / "important.jsonl"
    precious.write_text("precious\n")
    src = (_with_bad_line if bad_input else _points)(tmp_path / "in.jsonl")
    text = fails(UsageError, lambda: vecferry.convert(src, str(tmp_path / "out.jsonl"),
                                                      on_error="skip", rejects=str(precious),
                                                      overwrite=True))
    assert text == f"{precious}: {REJECTS_REFUSED}"
    assert precious.read_text() == "precious\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_an_earlier_rejects_file_is_still_replaced_and_removed(tmp_path):
    src = _with_bad_line(tmp_path / "in.jsonl")
    rejects = tmp_path / "r.jsonl"
    out = str(tmp_path / "out.jsonl")
    vecferry.convert(src, out, on_error="skip", rejects=str(rejects))
    assert len(rejects.read_text().splitlines()) == 1
    vecferry.convert(src, out, on_error="skip", rejects=str(rejects), overwrite=True)
    assert len(rejects.read_text().splitlines()) == 1  # replaced, not appended
    vecferry.convert(_points(tmp_path / "clean.jsonl"), out, on_error="skip",
                     rejects=str(rejects), overwrite=True)
    assert not rejects.exists()  # a clean run leaves no stale rejects beside its output
    rejects.write_text("")  # an empty file holds nothing to lose
    vecferry.convert(src, out, on_error="skip", rejects=str(rejects), overwrite=True)
    assert len(rejects.read_text().splitlines()) == 1


# ---------------------------------------------------------------- Qdrant: --mode overwrite


def _count(loc: str) -> int:
    reader = vecferry.open_reader(loc)
    try:
        return sum(b.num_rows for b in reader.batches(64))
    finally:
        reader.close()


@pytest.mark.parametrize("engine", ["local", "edge"])
def test_overwrite_keeps_the_collection_when_the_source_fails_first(tmp_path, engine):
    pytest.importorskip("qdrant_client" if engine == "local" else "qdrant_edge")
    loc = (f"qdrant-local://{tmp_path}/q/docs" if engine == "local"
           else f"qdrant-edge://{tmp_path}/shard")
    vecferry.convert(_points(tmp_path / "old.jsonl", 8), loc)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "vector": [1, 2]}\n{"id": 2, "vector": [1]}\n')
    from vecferry.errors import RecordError

    fails(RecordError, lambda: vecferry.convert(str(bad), loc, overwrite=True))
    assert _count(loc) == 8  # not dropped: no point of the new source was ready to write
    # a source whose first batch is good replaces it
    vecferry.convert(_points(tmp_path / "new.jsonl", 3), loc, overwrite=True)
    assert _count(loc) == 3


def test_a_collection_is_not_created_for_a_run_that_writes_nothing(tmp_path):
    pytest.importorskip("qdrant_client")
    src = tmp_path / "taken.jsonl"
    # ids that are not UUIDs keep the original in the payload's _vecferry_id, which is taken
    src.write_text('{"id": "a", "vector": [1, 2], "payload": {"_vecferry_id": 1}}\n')
    folder = tmp_path / "q"
    from vecferry.errors import VecferryError

    with pytest.raises(VecferryError):
        vecferry.convert(str(src), f"qdrant-local://{folder}/docs")
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(folder))
    try:
        assert not client.collection_exists("docs")
    finally:
        client.close()


def test_overwriting_the_collection_being_read_is_refused(tmp_path):
    pytest.importorskip("qdrant_client")
    loc = f"qdrant-local://{tmp_path}/q/c"
    vecferry.convert(_points(tmp_path / "in.jsonl", 6), loc)
    same = f"qdrant-local://{tmp_path}/q/../q/c"  # the same folder, spelled otherwise
    message = (f"{same}: the source and the target are the same collection: overwriting it "
               "would drop it before it is read (copy into another collection, or drop "
               "--overwrite / --mode overwrite)")
    assert fails(UsageError, lambda: vecferry.convert(loc, same, overwrite=True)) == message
    assert fails(UsageError, lambda: vecferry.convert(
        loc, same, writer_options={"mode": "overwrite"})) == message
    assert _count(loc) == 6


def test_server_locations_naming_one_collection_are_recognised():
    from vecferry.converters.qdrant import same_collection

    assert same_collection("qdrant://127.0.0.1:6333/c", "qdrant://localhost:6333/c")
    assert not same_collection("qdrant://127.0.0.1:6333/c", "qdrant://127.0.0.1:6333/d")
    assert not same_collection("qdrant://127.0.0.1:6333/c", "qdrant://127.0.0.1:7333/c")
    assert not same_collection("qdrant://127.0.0.1:6333/c", "qdrant-local://./q/c")


@pytest.mark.parametrize("out", ["o.jsonl", "o.parquet", "dir/"])
def test_a_run_does_not_replace_an_output_another_run_finished_meanwhile(tmp_path, out):
    # both runs found no output when they started; the later to finish replaced the other's
    src = _points(tmp_path / "s.jsonl")
    batches, schema = _batches(src)
    dst = f"{tmp_path}/{out}"  # not a Path: its trailing '/' asks for a directory
    kw = {"format": "parquet"} if out.endswith("/") else {}
    first = vecferry.open_writer(dst, schema, **kw)
    second = vecferry.open_writer(dst, schema, **kw)
    for b in batches:
        first.write_batch(b)
        second.write_batch(b.slice(0, 2))
    second.close()
    with pytest.raises(OutputExistsError) as info:
        first.close()
    first.abort()
    assert str(info.value) == (
        f"{dst.rstrip('/')}: output appeared while this run was writing it (another run to the "
        "same place?); it is left as it is (pass --overwrite to replace it, or choose another "
        "output)")
    assert vecferry.convert(dst, str(tmp_path / "back.jsonl"))["written"] == 2
    assert not [p for p in tmp_path.iterdir() if ".vftmp" in p.name]


def test_overwrite_checks_the_output_again_before_removing_it(tmp_path):
    src = _points(tmp_path / "s.jsonl")
    out = tmp_path / "out"
    vecferry.convert(src, str(out) + "/", to_format="parquet")
    batches, schema = _batches(src)
    writer = vecferry.open_writer(str(out) + "/", schema, format="parquet", overwrite=True)
    for b in batches:
        writer.write_batch(b)
    (out / "notes.txt").write_text("put there while the run wrote")
    with pytest.raises(UsageError) as info:
        writer.close()
    writer.abort()
    assert str(info.value) == (f"{out}: the output directory holds files vecferry did not "
                               f"write: notes.txt {DIR_HINT}")
    assert (out / "notes.txt").exists() and (out / "part-00000.parquet").exists()


def _batches(src: str):
    with vecferry.open_reader(src) as reader:
        return list(reader.batches(10)), reader.schema
