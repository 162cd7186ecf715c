"""A source regenerated under the same name is not resumed at the old position: that skipped its
new rows with exit 0. The run starts over and says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vecferry
from roundtrip import read_points
from vecferry.errors import RecordError
from vecferry.pipeline import _beside


def _jsonl(path: Path, ids: range, bad_at: int | None = None) -> str:
    lines = [json.dumps({"id": i, "vector": [float(i), 1.0]}) for i in ids]
    if bad_at is not None:
        lines[bad_at] = '{"id": 1, "vector": [1.0, '
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_changed_source_starts_a_resumed_collection_load_over(tmp_path, monkeypatch):
    pytest.importorskip("qdrant_client")
    monkeypatch.chdir(tmp_path)  # the state file of a URI target goes to the working directory
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    src = _jsonl(tmp_path / "day.jsonl", range(0, 300))
    first = vecferry.convert(src, dst, resume=True, batch_size=50)
    assert first["written"] == 300
    # the same file again: everything was done, nothing is sent twice
    again = vecferry.convert(src, dst, resume=True, batch_size=50)
    assert (again["resumed_from"], again["written"]) == (300, 0)

    _jsonl(tmp_path / "day.jsonl", range(5000, 5350))  # the next day's file, same name
    report = vecferry.convert(src, dst, resume=True, batch_size=50)
    assert (report["read"], report["written"]) == (350, 350)
    assert "resumed_from" not in report
    state = _beside(dst, ".vecferry-state.json")
    assert report["warnings"][0] == (f"{src} has changed since the run recorded in {state}: "
                                     "this run started from the beginning")
    _, points = read_points(dst)
    assert {p["id"] for p in points} == set(range(300)) | set(range(5000, 5350))


def test_a_changed_source_starts_a_resumed_partitioned_run_over(tmp_path):
    out = str(tmp_path / "out") + "/"
    src = _jsonl(tmp_path / "big.jsonl", range(20000), bad_at=19990)
    with pytest.raises(RecordError):  # the last partition fails: the others stay for --resume
        vecferry.convert(src, out, to_format="parquet", workers=2, partition_size="64kB")
    _jsonl(tmp_path / "big.jsonl", range(100000, 121000))  # regenerated, longer
    report = vecferry.convert(src, out, to_format="parquet", workers=2, partition_size="64kB",
                              resume=True)
    assert report["warnings"][0].startswith(f"{src} has changed since the run whose parts are "
                                            "kept in ")
    assert report["warnings"][0].endswith(": this run started from the beginning")
    assert "resumed_partitions" not in report
    assert report["written"] == 21000
    _, points = read_points(out)
    assert [p["id"] for p in points] == list(range(100000, 121000))


def test_state_and_rejects_of_a_relative_local_collection_are_not_hidden_files():
    assert _beside("qdrant-local://./q/docs", ".rejects.jsonl") == "q_docs.rejects.jsonl"
    assert _beside("qdrant-local:///srv/q/docs", ".x") == "srv_q_docs.x"
    assert _beside("qdrant://localhost:6333/docs", ".x") == "localhost:6333_docs.x"
    assert _beside("out/", ".x") == "out.x"


def test_a_resumed_run_does_not_reject_a_record_twice(tmp_path, monkeypatch):
    # the resumed run reads again what the run before it rejected (JSONL lines before the
    # position are parsed again): those went to the rejects file a second time
    pytest.importorskip("qdrant_client")
    from vecferry.converters.qdrant import QdrantWriter

    monkeypatch.chdir(tmp_path)
    lines = [json.dumps({"id": i, "vector": [float(i), 1.0]} if i % 10 != 5 else
                        {"id": i, "vector": [1.0]}) for i in range(300)]
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines) + "\n")
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    rejects = tmp_path / "r.jsonl"
    calls = []
    write = QdrantWriter.write_batch

    def interrupted(self, batch):
        calls.append(batch.num_rows)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return write(self, batch)

    monkeypatch.setattr(QdrantWriter, "write_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(str(src), dst, resume=True, on_error="skip", rejects=str(rejects),
                         batch_size=50)
    first = len(rejects.read_text().splitlines())
    assert first >= 15
    monkeypatch.setattr(QdrantWriter, "write_batch", write)
    report = vecferry.convert(str(src), dst, resume=True, on_error="skip",
                              rejects=str(rejects), batch_size=50)
    assert report["resumed_from"] > 0
    notes = [json.loads(x)["_vecferry_reject"] for x in rejects.read_text().splitlines()]
    assert sorted(n["point_id"] for n in notes) == list(range(5, 300, 10))
    assert report["rejected"] == 30 - first
    assert report["points_in_collection"] == 270


def test_each_saved_state_finds_its_rejects_on_disk(tmp_path, monkeypatch):
    # the state counted rejects still in the process's buffer: a kill lost them for good
    # (a numpy source is not read again before the position, so they were never rewritten)
    pytest.importorskip("qdrant_client")
    import numpy as np

    from vecferry.pipeline import ResumeState

    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "v.npy", np.ones((400, 2), np.float32))
    ids = np.arange(400, dtype=np.int64)
    ids[::40] = -ids[::40] - 1  # 10 negative ids, rejected one by one
    np.save(tmp_path / "ids.npy", ids)
    rejects = tmp_path / "r.jsonl"
    seen = []
    save = ResumeState.save

    def checked(self, position, written, rejected, *args, **kwargs):
        save(self, position, written, rejected, *args, **kwargs)
        on_disk = len(rejects.read_text().splitlines()) if rejects.exists() else 0
        seen.append((rejected, on_disk))

    monkeypatch.setattr(ResumeState, "save", checked)
    vecferry.convert(str(tmp_path / "v.npy"), f"qdrant-local://{tmp_path / 'q'}/docs",
                     resume=True, on_error="skip", rejects=str(rejects), batch_size=50,
                     reader_options={"ids": str(tmp_path / "ids.npy")},
                     writer_options={"distance": "Dot"})
    assert len(seen) > 3 and seen[-1] == (10, 10)
    assert all(on_disk >= counted for counted, on_disk in seen)


@pytest.mark.parametrize("how", ["removed", "emptied"])
def test_a_resumed_load_whose_collection_is_gone_or_empty_loads_everything_again(
        tmp_path, monkeypatch, how):
    """The state of a finished load said "300 written"; a collection deleted since (or
    deleted and made again, empty) got none of them back with exit 0."""
    pytest.importorskip("qdrant_client")
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "q"
    dst = f"qdrant-local://{folder}/docs"
    src = _jsonl(tmp_path / "day.jsonl", range(300))
    assert vecferry.convert(src, dst, resume=True, batch_size=50)["written"] == 300
    if how == "removed":
        import shutil

        shutil.rmtree(folder)
    else:
        from qdrant_client import QdrantClient, models

        client = QdrantClient(path=str(folder))
        client.delete_collection("docs")
        client.create_collection("docs", vectors_config=models.VectorParams(
            size=2, distance=models.Distance.DOT))
        client.close()
    report = vecferry.convert(src, dst, resume=True, batch_size=50)
    assert (report["read"], report["written"]) == (300, 300)
    assert "resumed_from" not in report
    why = ("the collection it loaded no longer exists" if how == "removed"
           else "the collection it loaded holds no points now")
    state = _beside(dst, ".vecferry-state.json")
    assert (f"{state} records 300 point(s) written to {dst}, but {why}: this run started "
            "from the beginning") in report["warnings"]
    _, points = read_points(dst)
    assert sorted(p["id"] for p in points) == list(range(300))
