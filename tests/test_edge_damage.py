"""Damaged Qdrant Edge shards and snapshots, the settings a local-mode collection cannot keep,
and the resume state a finished run leaves.

* A damaged file makes Qdrant Edge fail, or panic: PyO3 raises a panic as
  ``pyo3_runtime.PanicException``, a ``BaseException`` that ``except Exception`` let through as
  a Python traceback (after Rust's own report). Each is now a typed error naming the shard, or
  the snapshot file the user gave, never the directory vecferry extracted it to. Real damage
  (bytes of a snapshot flipped) and a stand-in panic (an ``EdgeShard`` whose method raises one)
  are both tried.
* Local mode keeps no collection-wide HNSW or quantization settings nor ``on_disk_payload``:
  a copy into it says so, as it does for payload indexes and strict mode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import vecferry
from vecferry.cli import main
from vecferry.converters import open_reader
from vecferry.errors import InputError, TargetError, UnsupportedError, VecferryError

qe = pytest.importorskip("qdrant_edge")

from test_snapshots import _stage_shard, _tar_dir  # noqa: E402 - needs qdrant_edge
from vecferry.converters.qdrant import local_mode_losses  # noqa: E402
from vecferry.converters.qdrant_edge import is_panic  # noqa: E402
from vecferry.converters.snapshot import DAMAGED_HINT  # noqa: E402

#: what PyO3 raises for a Rust panic: its class lives in the ``pyo3_runtime`` module PyO3
#: makes at run time, and derives from BaseException
PanicException = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

SHARD_HINT = "restore the shard from a copy or a snapshot"
WRITE_HINT = ("the shard's files may be damaged; run again with --overwrite to write it anew, "
              "or restore it from a copy or a snapshot")


def _jsonl(path: Path, n: int) -> str:
    rng = np.random.default_rng(1)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "vector": rng.standard_normal(4).tolist(),
                                "payload": {"text": f"lorem ipsum {i} " * 20}}) + "\n")
    return str(path)


def _edge(tmp: Path, n: int) -> Path:
    """A new Edge shard of ``n`` points with payloads."""
    vecferry.convert(_jsonl(tmp / "points.jsonl", n), f"qdrant-edge://{tmp / 'edge'}",
                     writer_options={"distance": "Dot"})
    return tmp / "edge"


def _segment(shard: Path) -> Path:
    (seg,) = [p for p in (shard / "segments").iterdir() if p.is_dir()]
    return seg


def _flip(path: Path, offset: int, n: int = 64) -> None:
    """Flip ``n`` bytes of ``path`` from ``offset``, as a bad disk or download does."""
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _snapshot(shard: Path, tmp: Path) -> str:
    """A shard snapshot of ``shard`` in Qdrant's layout (as ``test_snapshots`` builds them)."""
    _stage_shard(shard, tmp / "stage")
    return str(_tar_dir(tmp / "stage", tmp / "bad.snapshot"))


class _Shard:
    """A real ``EdgeShard`` whose method ``fail`` raises ``exc``, as Edge does on a damaged
    file (the binding's classes cannot be given attributes, so it is wrapped)."""

    def __init__(self, shard: Any, fail: str, exc: BaseException):
        self._shard, self._fail, self._exc = shard, fail, exc

    def __getattr__(self, name: str) -> Any:
        if name == self._fail:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise self._exc
            return fail
        return getattr(self._shard, name)


def _failing(monkeypatch: pytest.MonkeyPatch, method: str, exc: Any) -> None:
    """Make every shard Edge opens or creates raise ``exc`` from ``method`` (``load``: opening
    raises it; ``exc`` may be a function of the shard's path)."""
    real = qe.EdgeShard

    def make(path: str) -> BaseException:
        return exc(path) if callable(exc) and not isinstance(exc, BaseException) else exc

    class EdgeShard:
        @staticmethod
        def load(path: str, *args: Any, **kwargs: Any) -> Any:
            if method == "load":
                raise make(path)
            return _Shard(real.load(path, *args, **kwargs), method, make(path))

        @staticmethod
        def create(path: str, *args: Any, **kwargs: Any) -> Any:
            return _Shard(real.create(path, *args, **kwargs), method, make(path))

    monkeypatch.setattr(qe, "EdgeShard", EdgeShard)


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    return _edge(tmp_path, 50)


def _error(cls: type[VecferryError], action: Any) -> Any:
    """The error ``action`` raises, which must be exactly a ``cls`` (what the CLI reports)."""
    with pytest.raises(cls) as info:
        action()
    assert type(info.value) is cls
    return info.value


def _read_all(location: str, **options: Any) -> int:
    reader = open_reader(location, **options)
    try:
        return sum(b.num_rows for b in reader.batches(1000))
    finally:
        reader.close()


# ------------------------------------------------------------------------------ is_panic


def test_a_panic_is_told_by_its_class_name_and_module() -> None:
    assert is_panic(PanicException("boom"))
    assert is_panic(type("Sub", (PanicException,), {})("boom"))  # a subclass is one too
    elsewhere = type("PanicException", (BaseException,), {"__module__": "mylib"})
    for exc in (Exception("x"), KeyboardInterrupt(), SystemExit(1), elsewhere("x")):
        assert not is_panic(exc)


# ------------------------------------------------------------------- snapshots, real damage


def test_a_damaged_snapshot_that_panics_edge_is_an_input_error_naming_it(
        tmp_path: Path) -> None:
    """The reviewer's case: bytes of the payload storage flipped make Edge panic while
    reading (its tracker points past the page); a traceback of ``PanicException`` before."""
    shard = _edge(tmp_path, 3000)
    _flip(_segment(shard) / "payload_storage" / "tracker.dat", 436)
    snap = _snapshot(shard, tmp_path)
    err = _error(InputError, lambda: _read_all(snap))
    assert "panicked" in err.message, "this damage no longer panics Qdrant Edge"
    assert str(err) == (
        f"{snap}: the shard's data is damaged or unreadable: Qdrant Edge panicked while "
        f"scrolling points: assertion failed: byte_offset < page_size_bytes ({DAMAGED_HINT})")
    # the command line: the error, not a traceback (Rust's own report goes to the real
    # stderr, before it)
    result = CliRunner().invoke(main, ["convert", snap, str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.strip() == f"error: {err}"


def test_a_damaged_snapshot_edge_fails_on_is_an_input_error_naming_it(tmp_path: Path) -> None:
    """Flipped bytes of a compressed payload: Edge's error (a plain ``Exception``) went
    through the reader's retry loop, unclassified, as a traceback."""
    shard = _edge(tmp_path, 500)
    _flip(_segment(shard) / "payload_storage" / "page_0.dat", 1000)
    snap = _snapshot(shard, tmp_path)
    err = _error(InputError, lambda: _read_all(snap))
    assert str(err) == (
        f"{snap}: the shard's data is damaged or unreadable: Qdrant Edge failed while "
        "scrolling points: Service runtime error: Failed to decode value: Failed to decompress "
        "LZ4 value: the offset to copy is not contained in the decompressed buffer "
        f"({DAMAGED_HINT})")


def test_a_snapshot_edge_cannot_load_names_the_file_and_says_it_may_be_damaged(
        tmp_path: Path) -> None:
    """Edge's message named vecferry's extraction directory, and the hint spoke of storage
    formats only: damage is as likely."""
    shard = _edge(tmp_path, 50)
    segment = _segment(shard)
    _flip(segment / "segment.json", 8, 4)
    snap = _snapshot(shard, tmp_path)
    err = _error(UnsupportedError, lambda: open_reader(snap, workdir=str(tmp_path)))
    text = str(err)
    assert text.startswith(
        f"{snap}: Qdrant Edge cannot load this shard: Service runtime error: failed to load "
        f"segment segments/{segment.name}: ")
    assert f"segments/{segment.name}/segment.json" in text
    assert ".vecferry-snapshot" not in text and "shard-0" not in text
    assert err.hint.startswith(
        "the snapshot file may be damaged: download it again (`vecferry snapshot download` "
        "checks it against the SHA-256 checksum Qdrant lists for it); or it uses a storage "
        "format Edge does not read (RocksDB-backed segments of older servers) or comes from a "
        "newer Qdrant: recover the snapshot into a Qdrant server")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vecferry")]


# --------------------------------------------------------------- snapshots, stand-in panics


@pytest.fixture
def snap(shard: Path, tmp_path: Path) -> str:
    return _snapshot(shard, tmp_path)


def test_a_panic_counting_a_snapshot_shard_is_an_input_error(
        snap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's traceback: ``count`` (opening the shard) panicked."""
    _failing(monkeypatch, "count", PanicException("Payload storage is corrupted"))
    err = _error(InputError, lambda: open_reader(snap, workdir=str(tmp_path)))
    assert str(err) == (
        f"{snap}: cannot read the shard: the shard's data is damaged or unreadable: Qdrant Edge "
        f"panicked while counting points: Payload storage is corrupted ({DAMAGED_HINT})")
    assert isinstance(err.__cause__, InputError)  # the shard's own, chained
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vecferry")]
    result = CliRunner().invoke(main, ["convert", snap, str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1 and result.stderr.strip() == f"error: {err}"


def test_a_panic_loading_a_snapshot_shard_is_an_input_error(
        snap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, "load", PanicException("Failed to decompress LZ4"))
    err = _error(InputError, lambda: open_reader(snap))
    assert str(err) == (f"{snap}: Qdrant Edge cannot load this shard: Qdrant Edge "
                        f"panicked: Failed to decompress LZ4 ({DAMAGED_HINT})")


def test_an_edge_error_naming_the_extracted_shard_names_the_snapshot(
        snap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, "scroll", lambda path: Exception(
        f"Service runtime error: failed to read {path}/segments/abc/payload_storage/page_0.dat"))
    err = _error(InputError, lambda: open_reader(snap))
    assert str(err) == (
        f"{snap}: cannot read the shard: the shard's data is damaged or unreadable: Qdrant Edge "
        "failed while scrolling points: Service runtime error: failed to read "
        f"segments/abc/payload_storage/page_0.dat ({DAMAGED_HINT})")


def test_a_panic_reading_a_snapshot_after_opening_it_is_an_input_error(
        snap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = open_reader(snap)
    try:
        reader._open_shard(0).backend.shard = _Shard(reader._open_shard(0).backend.shard,
                                                     "scroll", PanicException("boom"))
        err = _error(InputError, lambda: list(reader.batches(10)))
        assert str(err) == (f"{snap}: the shard's data is damaged or unreadable: Qdrant "
                            f"Edge panicked while scrolling points: boom ({DAMAGED_HINT})")
        queries = np.ones((1, 4), dtype=np.float32)
        reader._open_shard(0).backend.shard._fail = "query"
        err = _error(InputError, lambda: reader.search(queries, 3, ""))
        assert str(err) == (f"{snap}: the shard's data is damaged or unreadable: Qdrant Edge "
                            f"panicked while searching: boom ({DAMAGED_HINT})")
    finally:
        reader.close()


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_an_interrupt_inside_edge_is_not_taken_for_damage(
        snap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    _failing(monkeypatch, "count", exc)
    with pytest.raises(type(exc)):
        open_reader(snap, workdir=str(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vecferry")]


# ------------------------------------------------------------------ Edge shards, stand-ins


def test_a_panic_opening_an_edge_shard_is_an_input_error(
        shard: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, "load", PanicException("boom"))
    loc = f"qdrant-edge://{shard}"
    err = _error(InputError, lambda: open_reader(loc))
    assert str(err) == (f"{loc}: cannot open the shard: Qdrant Edge panicked: boom (the "
                        "shard's files are damaged or incomplete; restore it from a copy "
                        "or a snapshot)")


@pytest.mark.parametrize(("method", "what"), [("count", "counting points"),
                                              ("scroll", "scrolling points"),
                                              ("info", "reading the shard's info")])
def test_a_panic_reading_an_edge_shard_is_an_input_error(
        shard: Path, monkeypatch: pytest.MonkeyPatch, method: str, what: str) -> None:
    _failing(monkeypatch, method, PanicException("boom"))
    loc = f"qdrant-edge://{shard}"
    err = _error(InputError, lambda: open_reader(loc))
    assert str(err) == (f"{loc}: the shard's data is damaged or unreadable: Qdrant Edge "
                        f"panicked while {what}: boom ({SHARD_HINT})")


def test_a_panic_converting_a_page_of_records_is_an_input_error(shard: Path) -> None:
    """Records are converted as they are iterated (``_Page``): a panic there is one too."""
    class Record:
        id = 1

        @property
        def vector(self) -> Any:
            raise PanicException("bad vector")

    loc = f"qdrant-edge://{shard}"
    reader = open_reader(loc)
    try:
        from vecferry.converters.qdrant_edge import _Page

        err = _error(InputError, lambda: list(_Page([Record()], reader.backend)))
        assert str(err) == (f"{loc}: the shard's data is damaged or unreadable: Qdrant "
                            f"Edge panicked while reading points: bad vector "
                            f"({SHARD_HINT})")
    finally:
        reader.close()


@pytest.mark.parametrize(("method", "what"), [("update", "writing points"),
                                              ("count", "counting points"),
                                              ("flush", "flushing the shard")])
def test_a_panic_writing_an_edge_shard_is_a_target_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, what: str) -> None:
    src = _jsonl(tmp_path / "in.jsonl", 20)
    _failing(monkeypatch, method, PanicException("boom"))
    loc = f"qdrant-edge://{tmp_path / 'out'}"
    err = _error(TargetError,
                 lambda: vecferry.convert(src, loc, writer_options={"distance": "Dot"}))
    assert str(err) == f"{loc}: Qdrant Edge panicked while {what}: boom ({WRITE_HINT})"


def test_an_edge_error_writing_points_still_names_the_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only panics of an upsert are turned into errors there: Edge's own errors are the
    writer's to report, with the ids it sent."""
    src = _jsonl(tmp_path / "in.jsonl", 20)
    _failing(monkeypatch, "update", Exception("Wrong input: no"))
    loc = f"qdrant-edge://{tmp_path / 'out'}"
    with pytest.raises(TargetError, match=r"Qdrant refused 20 point\(s\) \(ids 0 \.\. 19\): "
                                          r"Exception: Wrong input: no"):
        vecferry.convert(src, loc, writer_options={"distance": "Dot"})


def test_a_panic_creating_a_payload_index_is_a_warning_like_other_failures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A payload index Edge fails to create is a warning; a panic was a traceback."""
    from vecferry.converters.qdrant_edge import EdgeBackend

    src = _jsonl(tmp_path / "in.jsonl", 5)
    loc = f"qdrant-edge://{tmp_path / 'out'}"
    original = EdgeBackend.create_index

    def create_index(self: EdgeBackend, field: str, index: dict[str, Any]) -> bool:
        real = self.shard  # points are written: only the index's update panics
        self.shard = _Shard(real, "update", PanicException("index boom"))
        try:
            return original(self, field, index)
        finally:
            self.shard = real

    monkeypatch.setattr(EdgeBackend, "create_index", create_index)
    report = vecferry.convert(src, loc, writer_options={
        "distance": "Dot", "collection_config": '{"payload_schema": {"text": "keyword"}}'})
    assert report["payload_indexes"] == []
    assert ("payload index on 'text' not created: Qdrant Edge panicked while creating the "
            "payload index on 'text': index boom") in report["warnings"]


# ------------------------------------------------------------------------ local mode config


EDGE_CONFIG = {"hnsw_config": {"m": 24, "ef_construct": 77},
               "quantization_config": {"scalar": {"type": "int8", "quantile": 0.95,
                                                  "always_ram": True}}}


def _lost(loc: str, what: str) -> str:
    return (f"{loc}: {what} not kept: local mode keeps no HNSW, quantization "
            "or storage settings (it searches by scanning every point), so a copy out of this "
            "collection gets Qdrant's defaults; give them again with --collection-config when "
            "copying it out")


def test_a_copy_into_local_mode_says_which_settings_it_cannot_keep(tmp_path: Path) -> None:
    """The reviewer's case: Edge -> local mode -> Edge lost m, ef_construct and the
    quantization without a word."""
    src = _jsonl(tmp_path / "int.jsonl", 20)
    edge = f"qdrant-edge://{tmp_path / 'edgeq'}"
    vecferry.convert(src, edge, writer_options={"distance": "Dot",
                                                "collection_config": json.dumps(EDGE_CONFIG)})
    local = f"qdrant-local://{tmp_path / 'locq'}/q"
    plan = vecferry.convert(edge, local, dry_run=True)
    lost = _lost(local, "HNSW config (ef_construct 77, m 24), quantization config (scalar)")
    assert lost in plan["warnings"]
    report = vecferry.convert(edge, local)
    assert report["warnings"] == [lost]
    # what the warning is about: the copy out gets Qdrant's defaults
    back = tmp_path / "edgeq3"
    vecferry.convert(local, f"qdrant-edge://{back}")
    config = json.loads((back / "edge_config.json").read_text())
    assert config["hnsw_config"]["m"] == 16 and "quantization_config" not in config


def test_local_mode_keeps_per_vector_settings_and_warns_of_nothing_then(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "int.jsonl", 20)
    local = f"qdrant-local://{tmp_path / 'loc'}/q"
    per_vector = {"vectors": {"": {"hnsw_config": {"m": 24},
                                   "quantization_config": {"scalar": {"type": "int8"}}}}}
    report = vecferry.convert(src, local, writer_options={
        "distance": "Dot", "collection_config": json.dumps(per_vector)})
    assert report["warnings"] == []
    reader = open_reader(local)
    vector = reader.manifest.collection["vectors"][""]
    reader.close()
    assert vector["hnsw_config"]["m"] == 24
    assert vector["quantization_config"] == {"scalar": {"type": "int8"}}
    # a local-mode source reports Qdrant's defaults: a copy of it loses nothing
    report = vecferry.convert(local, f"qdrant-local://{tmp_path / 'loc2'}/q")
    assert report["warnings"] == []


def test_payload_storage_and_optimizer_settings_given_for_local_mode_are_named(
        tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "int.jsonl", 5)
    local = f"qdrant-local://{tmp_path / 'loc'}/q"
    over = {"on_disk_payload": False, "optimizer_config": {"indexing_threshold": 5},
            "hnsw_config": {"payload_m": 8, "on_disk": True}}
    report = vecferry.convert(src, local, writer_options={
        "distance": "Dot", "collection_config": json.dumps(over)})
    assert report["warnings"] == [_lost(
        local, "HNSW config (payload_m 8, on_disk true), on_disk_payload false, "
               "optimizer_config (from --collection-config)")]


def test_local_mode_losses_leave_out_qdrants_defaults() -> None:
    server = {"hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                              "max_indexing_threads": 0, "on_disk": False, "payload_m": None,
                              "inline_storage": None},
              "quantization_config": None, "on_disk_payload": True,
              "optimizer_config": {"indexing_threshold": 10000}, "wal_config": {}}
    assert local_mode_losses(server) == []
    assert local_mode_losses({}) == []
    assert local_mode_losses({"hnsw_config": {"m": 0}, "on_disk_payload": None,
                              "quantization_config": {"binary": {}}},
                             {"wal_config": {"wal_capacity_mb": 1}}) == [
        "HNSW config (m 0)", "quantization config (binary)",
        "wal_config (from --collection-config)"]


# ---------------------------------------------------------------------------- resume state


def test_a_finished_resumable_run_keeps_its_default_state_marked_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept, the state lets the same command run again with --resume send nothing twice (a
    script that always passes --resume); the README says so, and how to start over."""
    monkeypatch.chdir(tmp_path)  # the state file of a URI target goes to the working directory
    src = _jsonl(tmp_path / "in.jsonl", 30)
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    report = vecferry.convert(src, dst, resume=True, batch_size=10,
                              writer_options={"distance": "Dot"})
    assert report["written"] == 30
    (state,) = tmp_path.glob("*.vecferry-state.json")
    assert json.loads(state.read_text())["done"] is True
    again = vecferry.convert(src, dst, resume=True, batch_size=10,
                             writer_options={"distance": "Dot"})
    assert (again["resumed_from"], again["written"]) == (30, 0)


def test_a_named_state_file_is_kept_when_the_run_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = _jsonl(tmp_path / "in.jsonl", 30)
    state = tmp_path / "mine.json"
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    vecferry.convert(src, dst, resume=True, state=str(state), batch_size=10,
                     writer_options={"distance": "Dot"})
    saved = json.loads(state.read_text())
    assert (saved["done"], saved["position"], saved["written"]) == (True, 30, 30)
    again = vecferry.convert(src, dst, resume=True, state=str(state), batch_size=10,
                             writer_options={"distance": "Dot"})
    assert (again["resumed_from"], again["written"]) == (30, 0)

