"""Review fixes of the JSONL / Parquet writers: a cut JSONL source read in partitions, an
interrupted ``--overwrite`` of a directory, ``--max-part-size`` in output bytes (partitioned
runs, big batches into Parquet, compressed JSONL parts), the Arrow schema of a Parquet file
holding the final manifest, and the line count of a damaged compressed stream."""

from __future__ import annotations

import gzip
import json
import os
import signal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from failing import fails, read_all
from roundtrip import leftovers
from scaleout_faults import InterruptAfterPart
from vecferry.cli import main
from vecferry.converters import base
from vecferry.errors import InputError
from vecferry.storage import MOVE_FINISHED

PARTS = {"workers": 2, "partition_size": "8KB"}


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # staging directories of URI targets go here


def _jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "vector": [0.5, float(i)],
                                        "payload": {"i": i}}) + "\n" for i in range(n)))
    return path


def _cut(tmp_path: Path, n: int = 2000, keep: int = 1500, bad: int | None = None
         ) -> tuple[Path, str]:
    """A JSONL file vecferry wrote (``n`` points, sidecar), cut to its first ``keep`` lines;
    line ``bad`` (0-based) made a bad record. The message of the unpartitioned read."""
    cut = tmp_path / "cut.jsonl"
    vecferry.convert(_jsonl(tmp_path / "p.jsonl", n), cut)
    lines = cut.read_bytes().splitlines(keepends=True)[:keep]
    if bad is not None:
        lines[bad] = b"not json\n"
    cut.write_bytes(b"".join(lines))
    return cut, CUT_MESSAGE.format(cut=cut, held=f"{keep:,}", recorded=f"{n:,}")


# the same text as test_storage_vdf_review_fixes.CUT_MESSAGE
CUT_MESSAGE = ("{cut}: the file holds {held} record(s) (lines, bad ones included), but its "
               "manifest {cut}.manifest.json records {recorded} point(s) (the file was cut short "
               "(an interrupted copy or download?) or edited after vecferry wrote it: copy it "
               "again from where it came from; if it was edited on purpose, delete "
               "{cut}.manifest.json to read it as it is)")


def _nothing_left(tmp_path: Path, *names: str) -> None:
    for name in names:
        assert not (tmp_path / name.rstrip("/")).exists(), name
        assert not Path(f"{tmp_path / name.rstrip('/')}.manifest.json").exists()
    assert not list(tmp_path.glob(".*.vfparts")) and not leftovers(tmp_path)


# -- 1. a cut JSONL file read in partitions fails as a whole read does ------------------------

@pytest.mark.parametrize("dst", ["c2.jsonl", "c3.jsonl.gz", "dir/", "one.parquet"])
def test_a_partitioned_read_of_a_cut_jsonl_file_is_refused(tmp_path: Path, dst: str) -> None:
    cut, message = _cut(tmp_path)
    # the same source, whole, goes in partitions
    whole = vecferry.convert(tmp_path / "p.jsonl", tmp_path / "whole/", to_format="parquet",
                             **PARTS)
    assert whole["partitions"] > 1
    fmt = "parquet" if dst in ("dir/", "one.parquet") else None
    text = fails(InputError, lambda: vecferry.convert(str(cut), str(tmp_path / dst),
                                                      to_format=fmt, **PARTS))
    assert text == message
    _nothing_left(tmp_path, dst)


def test_the_cli_refuses_a_cut_file_with_the_default_workers(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """``vecferry convert cut.jsonl c2.jsonl``: partitioned by default (workers = cores), it
    stops as the single-process run does, with the same message and exit code."""
    cut, message = _cut(tmp_path)
    monkeypatch.setenv("VECFERRY_WORKERS", "2")
    for args in (["--partition-size", "8KB"], ["--workers", "1"]):
        result = CliRunner().invoke(main, ["convert", str(cut), "c2.jsonl", *args])
        assert result.exit_code == 1, result.output
        assert f"error: {message}" in result.output
    _nothing_left(tmp_path, "c2.jsonl")


def test_limit_checks_nothing_and_an_intact_file_converts(tmp_path: Path) -> None:
    cut, _ = _cut(tmp_path)
    report = vecferry.convert(cut, "lim.jsonl", limit=100, **PARTS)
    assert report["written"] == 100
    intact = tmp_path / "intact.jsonl"
    vecferry.convert(tmp_path / "p.jsonl", intact)
    report = vecferry.convert(intact, "all.jsonl", **PARTS)
    assert report["written"] == 2000 and report["partitions"] > 1


def test_rejected_lines_count_as_records_in_partitions(tmp_path: Path) -> None:
    """A bad line is one of the recorded records: skipped, the rest is read and the count
    matches; cut as well, the message counts it."""
    arch = tmp_path / "arch.jsonl"
    vecferry.convert(_jsonl(tmp_path / "p.jsonl", 2000), arch)
    lines = arch.read_bytes().splitlines(keepends=True)
    lines[1700] = b"not json\n"
    arch.write_bytes(b"".join(lines))
    report = vecferry.convert(arch, "o.jsonl", on_error="skip", **PARTS)
    assert (report["written"], report["rejected"], report["partitions"] > 1) == (1999, 1, True)
    cut, message = _cut(tmp_path, bad=1200)
    assert fails(InputError, lambda: vecferry.convert(cut, "o2.jsonl", on_error="skip",
                                                      **PARTS)) == message




def test_a_resumed_run_counts_the_records_of_both_runs(tmp_path: Path) -> None:
    """The parts the interrupted run did (one holding a rejected line) and those the resume
    does make up the count: the resume is refused with the whole file's."""
    cut, message = _cut(tmp_path, bad=3)
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(cut, "out/", to_format="parquet", on_error="skip",
                         progress=InterruptAfterPart(), **PARTS)
    staging = tmp_path / ".out.vfparts"
    done = sorted((staging / "done").glob("*.json"))
    assert done[0].name == "part-00000.parquet.json"
    assert (staging / "rejects" / "part-00000.parquet.read.jsonl").is_file()
    for record in done[len(done) // 2:]:
        record.unlink()  # as if the run had stopped sooner: the resume does these again
    assert len(json.loads((staging / "plan.json").read_bytes())["partitions"]) > len(done) // 2
    text = fails(InputError, lambda: vecferry.convert(cut, "out/", to_format="parquet",
                                                      on_error="skip", resume=True, **PARTS))
    assert text == message
    _nothing_left(tmp_path, "out/")


def test_a_jsonl_directory_with_a_part_cut_short(tmp_path: Path) -> None:
    src = tmp_path / "parts"
    vecferry.convert(_jsonl(tmp_path / "p.jsonl", 2000), f"{src}/", to_format="jsonl",
                     writer_options={"max_part_size": "30KB"}, workers=1)
    names = sorted(p.name for p in src.glob("part-*.jsonl"))
    assert len(names) > 2
    part = src / names[1]
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join(lines[:-10]))
    message = (f"{src}: its files hold 1,990 record(s) (lines, bad ones included), but its "
               f"manifest {src}/_manifest.json records 2,000 point(s) (a file was cut short "
               "(an interrupted copy or download?) or edited after vecferry wrote it: copy it "
               "again from where it came from; if it was edited on purpose, delete "
               f"{src}/_manifest.json to read it as it is)")
    assert fails(InputError, lambda: vecferry.convert(src, "one.jsonl", workers=1)) == message
    assert fails(InputError, lambda: vecferry.convert(src, "two.jsonl", **PARTS)) == message
    _nothing_left(tmp_path, "one.jsonl", "two.jsonl")


# -- 2. an interrupted --overwrite of a directory keeps one whole output ----------------------

def _points(tmp_path: Path, n: int, name: str) -> Path:
    rng = np.random.default_rng(n)
    path = tmp_path / name
    np.save(path, rng.standard_normal((n, 4)).astype(np.float32))
    return path


def _count(location: Path, fmt: str | None = None) -> int:
    reader = vecferry.open_reader(str(location), format=fmt)
    try:
        return sum(b.num_rows for b in reader.batches(1000))
    finally:
        reader.close()


def _overwrite(tmp_path: Path, fmt: str) -> tuple[Path, Path]:
    """An output directory of 30 points, and a source of 50 to replace it with."""
    old, new = _points(tmp_path, 30, "old.npy"), _points(tmp_path, 50, "new.npy")
    out = tmp_path / "out"
    vecferry.convert(old, f"{out}/", to_format=fmt)
    return new, out


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("exchange", [True, False])
def test_an_interrupt_while_the_old_directory_is_removed(tmp_path: Path, fmt: str,
                                                         exchange: bool,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Stopped while the replaced directory is removed: the new output is whole in place,
    the message says so, and what is left of the old one is hidden and swept by the next
    run. ``exchange=False``: a file system without ``RENAME_EXCHANGE``."""
    new, out = _overwrite(tmp_path, fmt)
    if not exchange:
        monkeypatch.setattr(base.AtomicPath, "_exchange", staticmethod(lambda a, b: False))
    real = base._remove_temp

    def interrupted(path: Path) -> bool:
        if path.name.startswith(".out.vftmp-") and (path / "_manifest.json").exists():
            (path / "_manifest.json").unlink()  # part of it is gone
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(base, "_remove_temp", interrupted)
    result = CliRunner().invoke(main, ["convert", str(new), f"{out}/", "--to", fmt,
                                       "--overwrite", "--workers", "1"])
    assert result.exit_code == 130, result.output
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.vftmp-")
            and not p.name.endswith(".lock")]
    message = (f"interrupted: {out} holds this run's whole output: the run was stopped as its "
               f"output was put in place, and {MOVE_FINISHED}")
    if exchange:
        # swapped with the run's own temporary, which the run's abort removes
        assert left == []
    else:
        assert len(left) == 1
        message += (f" (what is left of the output it replaced, {left[0].name}, is removed "
                    "by the next run to this output)")
    assert result.output.splitlines()[-1] == message
    assert _count(out, fmt) == 50 and vecferry.verify(str(new), str(out))["ok"]
    monkeypatch.setattr(base, "_remove_temp", real)
    vecferry.convert(new, f"{out}/", to_format=fmt, overwrite=True)
    assert leftovers(tmp_path) == [] and _count(out, fmt) == 50


@pytest.mark.parametrize("target", ["out/", "out.jsonl", "out.parquet"])
def test_a_signal_during_the_renames_waits_for_them(tmp_path: Path, target: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT sent as the output is renamed into place is taken once the renames are done:
    the new output (and a file's manifest sidecar) is whole, and the message says so."""
    old, new = _points(tmp_path, 30, "old.npy"), _points(tmp_path, 50, "new.npy")
    fmt = "jsonl" if target != "out.parquet" else "parquet"
    out = tmp_path / target.rstrip("/")
    vecferry.convert(old, f"{tmp_path}/{target}", to_format=fmt)
    real_exchange, real_replace = base.AtomicPath._exchange, os.replace

    def signalled(rename: Any) -> Any:
        def call(a: Any, b: Any) -> Any:
            if Path(b) == out and not Path(a).name.endswith("manifest.json"):
                os.kill(os.getpid(), signal.SIGINT)
            return rename(a, b)
        return call

    monkeypatch.setattr(base.AtomicPath, "_exchange", staticmethod(signalled(real_exchange)))
    monkeypatch.setattr(base.os, "replace", signalled(real_replace))
    result = CliRunner().invoke(main, ["convert", str(new), f"{tmp_path}/{target}", "--to", fmt,
                                       "--overwrite", "--workers", "1"])
    assert result.exit_code == 130, result.output
    assert result.output.splitlines()[-1] == (
        f"interrupted: {out} holds this run's whole output: the run was stopped as its output "
        f"was put in place, and {MOVE_FINISHED}")
    assert _count(out, fmt) == 50 and vecferry.verify(str(new), str(out))["ok"]
    assert leftovers(tmp_path) == []


def test_an_interrupt_before_the_renames_keeps_the_old_output(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    new, out = _overwrite(tmp_path, "parquet")

    def stop(target: Path, directory: bool) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "_check_replaceable", stop)
    result = CliRunner().invoke(main, ["convert", str(new), f"{out}/", "--to", "parquet",
                                       "--overwrite", "--workers", "1"])
    assert result.exit_code == 130
    assert result.output.splitlines()[-1] == (
        f"interrupted: {out}/ was not written (an output appears only when complete)")
    assert _count(out, "parquet") == 30 and leftovers(tmp_path) == []


def test_a_partitioned_directory_interrupted_once_in_place(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The parts strategy's output, stopped while the old directory is removed: whole, said
    so, and no staging directory is left to resume."""
    src = _jsonl(tmp_path / "p.jsonl", 2000)
    out = tmp_path / "out"
    vecferry.convert(_jsonl(tmp_path / "q.jsonl", 10), f"{out}/", to_format="parquet")
    real = base._remove_temp

    def interrupted(path: Path) -> bool:
        if path.name.startswith(".out.vftmp-"):
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(base, "_remove_temp", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        vecferry.convert(src, f"{out}/", to_format="parquet", overwrite=True, **PARTS)
    assert MOVE_FINISHED in info.value.args[0]
    assert _count(out, "parquet") == 2000 and not list(tmp_path.glob(".*.vfparts"))


# -- 3. --max-part-size counts output bytes in every mode -------------------------------------

def _parts(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "_manifest.json").read_bytes())["parts"]


def test_a_partitioned_run_cuts_parts_at_the_size(tmp_path: Path) -> None:
    """npy -> JSONL directory in partitions: parts of at most the size in output bytes
    (they were a partition's whole output, 6x the size), numbered in order."""
    src = _points(tmp_path, 20_000, "big.npy")
    for fmt, options in (("jsonl", {"max_part_size": "50KB"}),
                         ("jsonl", {"max_part_size": "50KB", "part_compression": "gzip"}),
                         ("parquet", {"max_part_size": "50KB"})):
        out = tmp_path / f"{fmt}-{len(options)}"
        report = vecferry.convert(src, f"{out}/", to_format=fmt, writer_options=options,
                                  workers=2, partition_size="100KB")
        assert report["partitions"] > 2
        parts = _parts(out)
        sizes = [p["bytes"] for p in parts]
        assert max(sizes) <= 50 * 1024 and len(parts) > report["partitions"], sizes
        ext = {"jsonl": ".jsonl", "parquet": ".parquet"}[fmt] + (
            ".gz" if "part_compression" in options else "")
        assert sorted(f.name for f in out.iterdir()) == sorted(
            [f"part-{i:05d}{ext}" for i in range(len(parts))] + ["_manifest.json"])
        assert [os.path.getsize(out / p["name"]) for p in parts] == sizes
        assert vecferry.verify(str(src), str(out))["ok"] and vecferry.verify(str(out))["ok"]


def test_parquet_parts_do_not_pass_the_size_by_a_batch(tmp_path: Path) -> None:
    src = _points(tmp_path, 20_000, "big.npy")
    out = tmp_path / "pq"
    report = vecferry.convert(src, f"{out}/", to_format="parquet", batch_size=20_000,
                              writer_options={"max_part_size": "40KB"}, workers=1)
    sizes = [p["bytes"] for p in _parts(out)]
    assert report["parts"] > 5 and max(sizes) <= 40 * 1024, sizes
    assert vecferry.verify(str(src), str(out))["ok"]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_jsonl_parts_count_compressed_bytes(tmp_path: Path, compression: str
                                                       ) -> None:
    src = _points(tmp_path, 5000, "v.npy")
    out = tmp_path / compression
    vecferry.convert(src, f"{out}/", to_format="jsonl", workers=1,
                     writer_options={"max_part_size": "50KB", "part_compression": compression})
    sizes = [p["bytes"] for p in _parts(out)]
    # all but the last within the size and near it (they were a quarter of it)
    assert max(sizes) <= 50 * 1024 and min(sizes[:-1]) > 40 * 1024, sizes
    assert vecferry.verify(str(src), str(out))["ok"]


# -- 4. the Arrow schema of a Parquet file holds the final manifest ---------------------------

def _schema_manifest(path: Path) -> dict[str, Any]:
    return json.loads(pq.read_schema(path).metadata[b"vecferry.manifest"])


def _footer_manifests(path: Path) -> list[dict[str, Any]]:
    rows = duckdb.sql(f"select key, value from parquet_kv_metadata('{path}')").fetchall()
    return [json.loads(v) for k, v in rows if k == b"vecferry.manifest"]


@pytest.mark.parametrize("how", ["one", "assembled", "parts", "split"])
def test_pyarrow_and_pandas_see_the_final_manifest(tmp_path: Path, how: str) -> None:
    src = _jsonl(tmp_path / "p.jsonl", 1003)
    kw: dict[str, Any] = {"one": {"workers": 1}, "assembled": PARTS, "parts": PARTS,
                          "split": {**PARTS, "writer_options": {"max_part_size": "9KB"}}}[how]
    dst = tmp_path / ("o.parquet" if how in ("one", "assembled") else "o")
    vecferry.convert(src, str(dst) + ("/" if dst.suffix == "" else ""), to_format="parquet",
                     batch_size=154, **kw)
    files = [dst] if dst.is_file() else sorted(dst.glob("part-*.parquet"))
    assert len(files) == 1 if how in ("one", "assembled") else len(files) > 1
    total = 0
    for f in files:
        kv = pq.ParquetFile(f).metadata.metadata
        footer = json.loads(kv[b"vecferry.manifest"])
        assert footer["count"] == pq.ParquetFile(f).metadata.num_rows and footer["digest"]
        assert _schema_manifest(f) == footer == _footer_manifests(f)[0]
        assert len(_footer_manifests(f)) == 1
        assert json.loads(pq.read_table(f).schema.metadata[b"vecferry.manifest"]) == footer
        assert json.loads(pq.ParquetFile(f).schema_arrow.metadata[b"vecferry.manifest"]) == footer
        # the Arrow types are kept (a fixed-size list is not read back as a list)
        assert str(pq.read_schema(f).field("vector").type) == (
            "fixed_size_list<element: float>[2]")
        total += footer["count"]
    assert total == 1003
    assert vecferry.verify(str(src), str(dst))["ok"] and vecferry.verify(str(dst))["ok"]
    assert _count(dst, "parquet") == 1003


# -- 5. a damaged compressed stream counts the lines read before the damage -------------------

def _lines(n: int) -> bytes:
    return b"".join(json.dumps({"id": i, "vector": [0.5, float(i)]}).encode() + b"\n"
                    for i in range(n))


def test_a_damaged_zstd_frame_counts_the_lines_of_the_good_ones(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    good = zstandard.ZstdCompressor(write_checksum=True).compress(_lines(20))
    second = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(_lines(50)))
    second[-2] ^= 0xFF  # its checksum no longer matches
    path = tmp_path / "badframe.jsonl.zst"
    path.write_bytes(good + bytes(second))
    text = fails(InputError, lambda: read_all(str(path)))
    assert text == (f"{path}: compressed stream is corrupt or truncated (20 lines read before "
                    "the error): zstd: zstd decompressor error: Restored data doesn't match "
                    "checksum (re-create or re-download the file)")


def test_a_damaged_gzip_member_is_an_input_error_after_the_good_lines(tmp_path: Path) -> None:
    """Damaged deflate data raised zlib.error (no vecferry error: a traceback), and the count
    said no line was read."""
    second = bytearray(gzip.compress(_lines(500)))
    second[30:40] = b"x" * 10
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(_lines(20)) + bytes(second))
    text = fails(InputError, lambda: read_all(str(path)))
    assert text.startswith(f"{path}: compressed stream is corrupt or truncated (20 lines read "
                           "before the error): Error -3 while decompressing data")
    result = CliRunner().invoke(main, ["convert", str(path), str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and "20 lines read before the error" in result.output
