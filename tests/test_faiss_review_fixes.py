"""FAISS indexes changed or built outside vecferry: sidecars beside an index faiss changed, IVF
indexes on OnDiskInvertedLists (faiss's merge_ondisk), IDMap2 around IVF after remove_ids; and
the FAISS writer's messages (factory of the other kind, ids past 2^63-1) and recorded distance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from faiss.contrib.ondisk import merge_ondisk

import vecferry
from faiss_helpers import IDS, N, build_binary, converted_index, read_all, vectors
from vecferry.cli import main
from vecferry.converters.base import Context
from vecferry.converters.faiss_index import BIG_ID_HINT, FaissReader, FaissWriter, _Plan, _plan
from vecferry.errors import InputError, RecordError, UsageError
from vecferry.inspect import inspect_location
from vecferry.stream import Manifest, VectorSpec

# ------------------------------------------- 1. sidecars beside an index faiss changed


def _add_with_faiss(index: str, ids: list[int]) -> None:
    """Add points to ``index`` with faiss itself, as a user would after vecferry wrote it."""
    held = faiss.read_index(index)
    held.add_with_ids(vectors(seed=7, n=len(ids)), np.array(ids, dtype=np.int64))
    faiss.write_index(held, index)


def _remove_with_faiss(index: str, ids: list[int]) -> None:
    held = faiss.read_index(index)
    held.remove_ids(np.array(ids, dtype=np.int64))
    faiss.write_index(held, index)


@pytest.mark.parametrize("change", ["add", "remove"])
def test_sidecars_beside_an_index_faiss_changed_stop_the_read(tmp_path: Path,
                                                              change: str) -> None:
    """Read on without its sidecars, the index gave ids 0..n-1 and no payloads, exit 0."""
    index = converted_index(tmp_path, ids="strings", payloads=True)
    if change == "add":
        _add_with_faiss(index, [N])
    else:
        _remove_with_faiss(index, [0, 1])
    held = N + 1 if change == "add" else N - 2
    message = (
        f"{index}: the index changed after vecferry wrote it: it holds {held} points, but its "
        f"manifest sidecar {index}.manifest.json describes the {N} points vecferry wrote, and "
        f"the payload sidecar {index}.payloads.parquet written with them holds their original "
        "string ids and payloads and no longer fits the index: read on, the points would get "
        "FAISS ids and no payloads (write the index again with vecferry from its source, the "
        "points added since included; to read the index as it is, with its FAISS ids and no "
        f"payloads, move {index}.manifest.json and {index}.payloads.parquet away)")
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == message
    out = tmp_path / "back.jsonl"
    result = CliRunner().invoke(main, ["convert", index, str(out)])
    assert result.exit_code == 1, result.output
    assert f"error: {message}" in result.output
    assert not out.exists()
    # what the hint says: moved away, the index reads with its FAISS ids
    for suffix in (".manifest.json", ".payloads.parquet"):
        Path(index + suffix).rename(tmp_path / f"aside{suffix}")
    ids, _, payloads, _, _ = read_all(index)
    assert len(ids) == held and payloads == [None] * held


def test_a_changed_index_whose_payload_sidecar_is_gone_says_so(tmp_path: Path) -> None:
    index = converted_index(tmp_path, ids="integers", payloads=True)
    _add_with_faiss(index, [10**15])
    Path(index + ".payloads.parquet").unlink()
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == (
        f"{index}: the index changed after vecferry wrote it: it holds {N + 1} points, but its "
        f"manifest sidecar {index}.manifest.json describes the {N} points vecferry wrote, and "
        f"the payload sidecar {index}.payloads.parquet written with them, which held their "
        "payloads, is missing: read on, the points would get FAISS ids and no payloads (write "
        "the index again with vecferry from its source, the points added since included; to "
        f"read the index as it is, with its FAISS ids and no payloads, move {index}.manifest.json"
        " away)")


def test_a_changed_index_with_nothing_beside_its_manifest_reads_with_a_warning(
        tmp_path: Path) -> None:
    """Integer ids and no payloads: the index holds everything vecferry wrote, so the
    manifest alone is set aside, with a warning, as before."""
    index = converted_index(tmp_path, ids="integers", payloads=False)
    assert not Path(index + ".payloads.parquet").exists()
    _add_with_faiss(index, [10**15])
    context = Context()
    ids, _, payloads, _, _ = read_all(index, context=context)
    assert sorted(ids.tolist()) == sorted([*IDS.tolist(), 10**15])
    assert payloads == [None] * (N + 1)
    assert context.warnings == [
        f"{index}.manifest.json: ignored, it describes {N} points but the index holds {N + 1} "
        "(the index changed after vecferry wrote it)"]


def test_a_payload_sidecar_beside_a_manifest_that_does_not_parse_stops_the_read(
        tmp_path: Path) -> None:
    index = converted_index(tmp_path, ids="strings", payloads=True)
    Path(index + ".manifest.json").write_text("{")
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == (
        f"{index}: the manifest sidecar {index}.manifest.json is not a vecferry manifest: the "
        f"payloads (and any original ids) in {index}.payloads.parquet cannot be applied without "
        f"it (put {index}.manifest.json back beside the index, as vecferry wrote it; to read "
        f"the index with its FAISS ids and no payloads, move {index}.manifest.json and "
        f"{index}.payloads.parquet away)")


# ------------------------------------------------- 2. IVF on OnDiskInvertedLists


ON_DISK_N = 500
ON_DISK_IDS = np.random.default_rng(3).choice(2**40, ON_DISK_N, replace=False).astype(np.int64)


def _on_disk(folder: Path, factory: str, name: str) -> tuple[str, np.ndarray]:
    """An index whose lists faiss's merge_ondisk put in ``od/<name>.ivfdata`` (a relative
    path, as the index records it: run from ``folder``), built from two blocks of
    ``ON_DISK_N`` points with ``ON_DISK_IDS``; returns (the index's path, the vectors)."""
    x = vectors(seed=11, n=ON_DISK_N, d=16)
    (folder / "od").mkdir(exist_ok=True)
    trained = faiss.index_factory(16, factory)
    trained.train(x)
    faiss.write_index(trained, f"od/{name}.trained")
    blocks = []
    for b, rows in enumerate((slice(0, 250), slice(250, ON_DISK_N))):
        block = faiss.read_index(f"od/{name}.trained")
        block.add_with_ids(x[rows], ON_DISK_IDS[rows])
        faiss.write_index(block, f"od/{name}.block{b}")
        blocks.append(f"od/{name}.block{b}")
    index = faiss.read_index(f"od/{name}.trained")
    merge_ondisk(index, blocks, f"od/{name}.ivfdata")
    faiss.write_index(index, f"od/{name}.index")
    return f"od/{name}.index", x


def _faiss_values(path: str) -> dict[int, np.ndarray]:
    """{id: the vector faiss reconstructs} of an IVF index, from its own lists."""
    index = faiss.read_index(path)
    ivf = faiss.extract_index_ivf(index)  # a view into ``index``, which must stay alive
    out = {}
    for listno in range(ivf.nlist):
        for offset in range(ivf.invlists.list_size(listno)):
            v = np.zeros(ivf.d, dtype=np.float32)
            ivf.reconstruct_from_offset(listno, offset, faiss.swig_ptr(v))
            out[int(ivf.invlists.get_single_id(listno, offset))] = v
    return out


def test_an_ivfflat_index_on_disk_reads_exact(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    index, x = _on_disk(tmp_path, "IVF8,Flat", "flat")
    reader = FaissReader(index, context=Context())
    try:
        storage = reader.plan.storage
        assert type(storage.invlists).__name__ == "OnDiskInvertedLists"
        # mapped read-only: faiss otherwise opens the .ivfdata for writing
        assert storage.invlists.read_only
    finally:
        reader.close()
    ids, vecs, _, _, _ = read_all(index, batch_size=40)
    by = {int(i): v for i, v in zip(ids, vecs, strict=True)}
    assert sorted(by) == sorted(ON_DISK_IDS.tolist())
    for i, fid in enumerate(ON_DISK_IDS):
        assert by[int(fid)].tobytes() == x[i].tobytes()
    result = CliRunner().invoke(main, ["inspect", index])
    assert result.exit_code == 0, result.output
    assert "IndexIVFFlat" in result.output
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["convert", index, str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(pq.read_table(out).column("id").to_pylist()) == sorted(ON_DISK_IDS.tolist())


def test_an_on_disk_index_reads_in_partitions(tmp_path: Path, monkeypatch: Any) -> None:
    """Each worker opens the index again, from the caller's working directory, where the
    relative path of its .ivfdata leads."""
    monkeypatch.chdir(tmp_path)
    index, x = _on_disk(tmp_path, "IVF8,Flat", "flat")
    out = tmp_path / "parts.jsonl"
    report = vecferry.convert(index, str(out), workers=2, partition_size="4KB")
    assert report["partitions"] > 2 and report["written"] == ON_DISK_N
    back = {p["id"]: p["vector"] for p in map(orjson.loads, out.read_bytes().splitlines())}
    for i, fid in enumerate(ON_DISK_IDS):
        assert np.array(back[int(fid)], dtype=np.float32).tobytes() == x[i].tobytes()


@pytest.mark.parametrize("factory", ["IVF4,PQ4x4", "IVF4,SQ8"])
def test_a_lossy_ivf_index_on_disk_reads_what_faiss_reconstructs(
        tmp_path: Path, monkeypatch: Any, factory: str) -> None:
    monkeypatch.chdir(tmp_path)
    index, _ = _on_disk(tmp_path, factory, "lossy")
    want = _faiss_values(index)
    ids, vecs, _, _, _ = read_all(index, batch_size=64, allow_lossy=True)
    assert sorted(ids.tolist()) == sorted(ON_DISK_IDS.tolist())
    for fid, v in zip(ids, vecs, strict=True):
        assert v.tobytes() == want[int(fid)].tobytes()
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["convert", index, str(out), "--allow-lossy", "-q"])
    assert result.exit_code == 0, result.output


def test_an_on_disk_index_without_its_data_file_names_the_path_it_records(
        tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    _on_disk(tmp_path, "IVF8,Flat", "flat")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    index = str(tmp_path / "od" / "flat.index")
    message = (
        f"{index}: cannot read FAISS index: its inverted-list data file od/flat.ivfdata (the "
        "path the index records; a relative path is opened from the working directory, "
        f"{elsewhere}) was not found (the index keeps its inverted lists in that file, as "
        "faiss's merge_ondisk writes them: run vecferry from the directory the path is "
        "relative to, or put the file at that path)")
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == message
    result = CliRunner().invoke(main, ["convert", index, str(tmp_path / "o.parquet")])
    assert result.exit_code == 1 and f"error: {message}" in result.output


def test_an_on_disk_index_with_a_short_data_file_is_an_error_not_a_crash(
        tmp_path: Path, monkeypatch: Any) -> None:
    """faiss maps the index's size of the file: past its end, a read kills the process."""
    monkeypatch.chdir(tmp_path)
    index, _ = _on_disk(tmp_path, "IVF8,Flat", "flat")
    data = tmp_path / "od" / "flat.ivfdata"
    size = data.stat().st_size
    with open(data, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(InputError) as info:
        FaissReader(index, context=Context())
    assert str(info.value) == (
        f"{index}: cannot read FAISS index: its inverted-list data file od/flat.ivfdata holds "
        f"{size // 2} bytes, the index says {size}: the file is truncated or not this index's "
        "(put back, whole, the od/flat.ivfdata that faiss's merge_ondisk wrote with the index)")


def test_inverted_lists_left_unopened_are_refused_not_wrapped(tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    """IO_FLAG_MMAP includes IO_FLAG_SKIP_IVF_DATA: on-disk lists read so point nowhere."""
    monkeypatch.chdir(tmp_path)
    index, _ = _on_disk(tmp_path, "IVF8,Flat", "flat")
    skipped = faiss.read_index(index, faiss.IO_FLAG_MMAP)
    with pytest.raises(InputError) as info:
        _plan(skipped, _Plan())
    assert str(info.value) == (
        "cannot read FAISS index: its inverted lists were not opened (read with "
        "faiss.IO_FLAG_SKIP_IVF_DATA) (read the index without that flag)")


# ------------------------------------------- 3. IDMap2 around IVF after remove_ids


def _idmap_ivf(path: Path, wrapper: str = "IDMap2") -> Any:
    x = vectors(seed=4, n=300, d=16)
    index = faiss.index_factory(16, f"{wrapper},IVF4,Flat")
    index.train(x)
    index.add_with_ids(x, np.arange(300, dtype=np.int64) * 7 + 2**33)
    return index, x


HINT_3 = ("which id each vector has is lost: build the index again from its source; to remove "
          "ids later, use the IVF index without the IDMap, whose lists keep the ids themselves")


@pytest.mark.parametrize("wrapper", ["IDMap2", "IDMap"])
def test_an_id_map_the_lists_point_past_is_named(tmp_path: Path, wrapper: str) -> None:
    index, _ = _idmap_ivf(tmp_path, wrapper)
    index.remove_ids(np.arange(0, 30, dtype=np.int64) * 7 + 2**33)  # the first 30 added
    path = str(tmp_path / "removed.faiss")
    faiss.write_index(index, path)
    reader = FaissReader(path, context=Context())
    try:
        with pytest.raises(InputError) as info:
            list(reader.batches(1000))
    finally:
        reader.close()
    message = str(info.value)
    prefix = (f"{path}: FAISS index Index{wrapper}(IndexIVFFlat) is inconsistent: its inverted "
              "lists hold position ")
    assert message.startswith(prefix)
    position = int(message[len(prefix):].split(" ", 1)[0])
    assert 270 <= position < 300
    assert message == (
        f"{prefix}{position} into its id map of 270 entries: the id map and the lists "
        "disagree, as faiss's remove_ids on an IDMap or IDMap2 around an IVF index leaves "
        f"them ({HINT_3})")
    result = CliRunner().invoke(main, ["convert", path, str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and f"error: {message}" in result.output


def test_an_id_map_position_held_twice_is_named(tmp_path: Path) -> None:
    """Removed, then as many added: every position is in bounds again, some held twice."""
    index, x = _idmap_ivf(tmp_path)
    index.remove_ids(np.arange(0, 30, dtype=np.int64) * 7 + 2**33)
    index.add_with_ids(x[:30], np.arange(30, dtype=np.int64) + 5)
    path = str(tmp_path / "readded.faiss")
    faiss.write_index(index, path)
    with pytest.raises(InputError) as info:
        read_all(path)
    message = str(info.value)
    prefix = (f"{path}: FAISS index IndexIDMap2(IndexIVFFlat) is inconsistent: its inverted "
              "lists hold position ")
    position = int(message[len(prefix):].split(" ", 1)[0])
    assert 270 <= position < 300
    assert message == (
        f"{prefix}{position} into its id map for two vectors: the id map and the lists "
        "disagree, as faiss's remove_ids on an IDMap or IDMap2 around an IVF index leaves "
        f"them ({HINT_3})")


def test_an_id_map_left_consistent_by_remove_ids_still_reads(tmp_path: Path) -> None:
    """The last points removed: the positions left are 0..n-1, as the id map says."""
    index, x = _idmap_ivf(tmp_path)
    index.remove_ids(np.arange(270, 300, dtype=np.int64) * 7 + 2**33)
    path = str(tmp_path / "tail.faiss")
    faiss.write_index(index, path)
    ids, vecs, _, _, _ = read_all(path)
    by = {int(i): v.tobytes() for i, v in zip(ids, vecs, strict=True)}
    assert by == {i * 7 + 2**33: x[i].tobytes() for i in range(270)}


# ------------------------------------------------------------------- 4. writer messages


def _stream(tmp_path: Path, binary: bool = False) -> str:
    """A stream file to write from: float vectors, or a binary index's packed bits."""
    if binary:
        _, src = build_binary(tmp_path / "b.faiss", "flat")
        return src
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"id": i, "vector": v.tolist()}) + b"\n"
                             for i, v in enumerate(vectors())))
    return str(src)


def test_a_binary_factory_on_float_vectors_says_which_kind_to_use(tmp_path: Path) -> None:
    out = str(tmp_path / "o.faiss")
    schema = Manifest(vectors=[VectorSpec("", "dense", 8, "float32", "Euclid")]).schema()
    with pytest.raises(UsageError) as info:
        FaissWriter(out, schema, context=Context(), index_factory="BFlat")
    message = (
        f"{out}: index factory 'BFlat' builds a binary index, but the stream holds float "
        "vectors (float32[8]) (use a float factory: 'IDMap2,Flat' (the default), 'HNSW32', "
        "'IVF1024,Flat', ...; see https://github.com/facebookresearch/faiss/wiki/"
        "The-index-factory)")
    assert str(info.value) == message
    result = CliRunner().invoke(main, ["convert", _stream(tmp_path), out, "--index-factory",
                                       "BFlat", "-q"])
    assert result.exit_code == 2 and f"error: {message}" in result.output


def test_a_float_factory_on_packed_bits_says_which_kind_to_use(tmp_path: Path) -> None:
    out = str(tmp_path / "o.faiss")
    result = CliRunner().invoke(main, ["convert", _stream(tmp_path, binary=True), out,
                                       "--index-factory", "Flat", "-q"])
    assert result.exit_code == 2, result.output
    assert (
        f"error: {out}: index factory 'Flat' builds a float index, but the stream holds packed "
        "bits (uint8[8], the 64 bits of a binary FAISS index's vectors) (use a binary factory, "
        "whose names start with B: 'IDMap2,BFlat' (the default), 'BHNSW32', 'BIVF1024', ...; "
        "see https://github.com/facebookresearch/faiss/wiki/The-index-factory)"
    ) in result.output


def test_a_factory_of_neither_kind_keeps_faiss_s_message(tmp_path: Path) -> None:
    out = str(tmp_path / "o.faiss")
    schema = Manifest(vectors=[VectorSpec("", "dense", 8, "float32", "Euclid")]).schema()
    with pytest.raises(UsageError) as info:
        FaissWriter(out, schema, context=Context(), index_factory="Nope")
    assert str(info.value) == (
        f"{out}: FAISS cannot build index factory 'Nope': could not parse index string Nope "
        "(see https://github.com/facebookresearch/faiss/wiki/The-index-factory)")


def test_the_default_distance_is_recorded_in_the_manifest(tmp_path: Path) -> None:
    out = str(tmp_path / "o.faiss")
    report = vecferry.convert(_stream(tmp_path), out)
    assert report["warnings"] == [
        f"{out}: the stream has no distance; the index uses L2 (Euclid); pass --distance NAME "
        '(in Python: writer_options={"distance": NAME}) to choose']
    written = json.loads(Path(out + ".manifest.json").read_text())
    assert written["vectors"][0]["distance"] == "Euclid"
    assert written["extra"]["faiss_writer"]["distance"] == (
        "Euclid, the default (the stream had none)")
    assert faiss.read_index(out).metric_type == faiss.METRIC_L2
    assert FaissReader(out, context=Context()).manifest.vectors[0].distance == "Euclid"


def test_an_id_past_int64_says_how_to_keep_it(tmp_path: Path) -> None:
    big = 2**63 + 5
    src = tmp_path / "big.jsonl"
    src.write_text(f'{{"id": {big}, "vector": [1.0, 2.0]}}\n{{"id": 3, "vector": [1.0, 3.0]}}\n')
    out = str(tmp_path / "big.faiss")
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), out)
    assert str(info.value) == (
        f"{out}, id {big}: id {big} does not fit FAISS's int64 ids (max 2^63-1) "
        f"({BIG_ID_HINT})")
    assert BIG_ID_HINT == (
        "read a JSONL, mapped Parquet or VDF source with --id-kind mixed (in Python: "
        'reader_options={"id_kind": "mixed"}): its ids are then stored as 0..n-1 in the index, '
        "with the originals in its payload sidecar, and read back as they were; or use "
        '--on-error skip (on_error="skip") to leave such points in the rejects file')
    # what the hint says works
    vecferry.convert(str(src), out, reader_options={"id_kind": "mixed"})
    back = tmp_path / "back.jsonl"
    vecferry.convert(out, str(back))
    assert [p["id"] for p in map(orjson.loads, back.read_bytes().splitlines())] == [big, 3]



def test_inspect_sizes_an_index_with_the_files_it_reads_beside_it(tmp_path: Path,
                                                                  monkeypatch: Any) -> None:
    # an on-disk IVF index is mostly its .ivfdata; a vecferry index has its sidecars
    monkeypatch.chdir(tmp_path)
    index, _ = _on_disk(tmp_path, "IVF8,Flat", "flat")
    info = inspect_location(index)
    assert info["size_bytes"] == (Path(index).stat().st_size
                                  + (tmp_path / "od/flat.ivfdata").stat().st_size)
    out = tmp_path / "copy.faiss"
    vecferry.convert(index, str(out), writer_options={"index_factory": "IVF8,Flat"})
    sidecars = [Path(f"{out}.manifest.json"), Path(f"{out}.payloads.parquet")]
    assert sidecars[0].is_file()
    assert inspect_location(str(out))["size_bytes"] == out.stat().st_size + sum(
        p.stat().st_size for p in sidecars if p.is_file())
