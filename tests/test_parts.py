"""Directories of parts (``--max-part-size``): Parquet and JSONL, local and on S3 (moto)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from roundtrip import Dataset, _floats, assert_same_points, leftovers, read_points, rich_payload
from vecferry import storage
from vecferry.cli import main
from vecferry.errors import InputError, UsageError
from vecferry.pipeline import convert
from vecferry.stream import VectorSpec
from vecferry.verification import verify

N, DIM = 300, 8

#: (format, part suffix, writer options): small sizes so 300 points make 3+ parts
CASES = [
    ("parquet", ".parquet", {"max_part_size": "8kB", "row_group_bytes": 4000}),
    ("jsonl", ".jsonl", {"max_part_size": "20kB"}),
    ("jsonl", ".jsonl.gz", {"max_part_size": 6_000, "part_compression": "gzip"}),
    ("jsonl", ".jsonl.zst", {"max_part_size": "6kB", "part_compression": "zstd"}),
]


def dataset() -> Dataset:
    rng = np.random.default_rng(11)
    mat = rng.standard_normal((N, DIM)).astype(np.float32)
    points = [{"id": 7 * i + 1, "vector": _floats(mat[i]),
               "payload": rich_payload(i) if i % 3 else None} for i in range(N)]
    return Dataset("p300", [VectorSpec("", "dense", DIM)], "int", points)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, str]:
    from roundtrip import write_points

    ds = dataset()
    path = str(tmp_path_factory.mktemp("src") / "src.parquet")
    write_points(path, ds)
    return ds, path


def _manifest(text: bytes | str) -> dict[str, Any]:
    return json.loads(text)


def _check_manifest(man: dict[str, Any], names: list[str], suffix: str) -> None:
    from test_schemas import check

    assert check(man, "manifest.schema.json") == []
    parts = man["parts"]
    assert [p["name"] for p in parts] == names
    assert len(parts) >= 3 and all(n.endswith(suffix) for n in names)
    assert names == [f"part-{i:05d}{suffix}" for i in range(len(names))]
    assert sum(p["count"] for p in parts) == man["count"] == N
    assert man["digest"]["count"] == N
    total = sum(int(p["digest"], 16) for p in parts) % 2**64
    assert f"{total:016x}" == man["digest"]["value"]


@pytest.mark.parametrize(("fmt", "suffix", "options"), CASES)
def test_local_directory_of_parts(tmp_path: Path, source: tuple[Dataset, str], fmt: str,
                                  suffix: str, options: dict[str, Any]) -> None:
    ds, src = source
    out = tmp_path / "out"
    report = convert(src, f"{out}/", to_format=fmt, writer_options=options, batch_size=32)
    assert report["written"] == N and report["parts"] >= 3
    names = sorted(p.name for p in out.iterdir() if p.name != "_manifest.json")
    man = _manifest((out / "_manifest.json").read_bytes())
    _check_manifest(man, names, suffix)
    # 8kB / 20kB / 6kB (binary multiples); compressed JSONL parts count compressed bytes
    limit = {".parquet": 8192, ".jsonl": 20_480, ".jsonl.gz": 6_000, ".jsonl.zst": 6_144}[suffix]
    assert all(p["bytes"] <= limit for p in man["parts"])
    assert report["bytes_written"] == sum(p["bytes"] for p in man["parts"]) == sum(
        (out / n).stat().st_size for n in names)
    manifest, got = read_points(str(out))
    assert_same_points(got, manifest, ds)
    assert manifest.count == N
    assert verify(str(out))["ok"]
    assert verify(src, str(out))["ok"]
    assert leftovers(tmp_path) == []

    # one part gone: the directory no longer matches its manifest
    os.remove(out / names[1])
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code != 0
    assert names[1] in result.stderr and "missing" in result.stderr
    with pytest.raises(InputError, match="missing"):
        read_points(str(out))


def test_changed_part_fails_verification(tmp_path: Path, source: tuple[Dataset, str]) -> None:
    _, src = source
    out = tmp_path / "out"
    convert(src, f"{out}/", to_format="jsonl", writer_options={"max_part_size": "20kB"},
            batch_size=64)
    part = out / "part-00001.jsonl"
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join(lines[1:]))  # one point less
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 4, result.output


def test_bad_line_names_its_part(tmp_path: Path, source: tuple[Dataset, str]) -> None:
    from vecferry.errors import RecordError

    _, src = source
    out = tmp_path / "out"
    convert(src, f"{out}/", to_format="jsonl", writer_options={"max_part_size": "20kB"})
    part = out / "part-00002.jsonl"
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join([*lines[:3], b"{not json\n", *lines[4:]]))
    with pytest.raises(RecordError) as err:
        read_points(str(out))
    assert err.value.location.source == str(part) and err.value.location.line == 4


def test_cli_max_part_size(tmp_path: Path, source: tuple[Dataset, str]) -> None:
    ds, src = source
    runner = CliRunner()
    result = runner.invoke(main, ["convert", src, f"{tmp_path}/pq/", "--to", "parquet",
                                  "--max-part-size", "8KiB", "--batch-size", "16", "-q"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pq").glob("part-*.parquet"))) >= 3
    result = runner.invoke(main, ["convert", f"{tmp_path}/pq", f"{tmp_path}/js/", "--to",
                                  "jsonl", "--max-part-size", "6000", "--jsonl-compression",
                                  "gzip", "-q", "--verify"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "js").glob("part-*.jsonl.gz"))) >= 3
    # a JSONL directory is recognised by its parts
    manifest, got = read_points(str(tmp_path / "js"))
    assert_same_points(got, manifest, ds)
    assert runner.invoke(main, ["verify", f"{tmp_path}/js"]).exit_code == 0
    shown = runner.invoke(main, ["inspect", f"{tmp_path}/js"])
    assert shown.exit_code == 0 and "points:    300" in shown.output, shown.output
    # sizes and targets that cannot be split
    bad = runner.invoke(main, ["convert", src, f"{tmp_path}/x.jsonl", "--max-part-size",
                               "1MB"])
    assert bad.exit_code == 2 and "directory" in bad.stderr
    bad = runner.invoke(main, ["convert", src, f"{tmp_path}/y/", "--to", "npy",
                               "--max-part-size", "1MB"])
    assert bad.exit_code == 2 and "--max-part-size applies to" in bad.stderr
    bad = runner.invoke(main, ["convert", src, f"{tmp_path}/z/", "--to", "parquet",
                               "--max-part-size", "lots"])
    assert bad.exit_code == 2 and "not a size" in bad.stderr
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "z").exists()


def test_single_part_directories_still_read(tmp_path: Path, source: tuple[Dataset, str]
                                            ) -> None:
    """Directories written without manifest.json: parts' own digests are combined."""
    from roundtrip import write_points

    ds, _ = source
    out = tmp_path / "shards"
    out.mkdir()
    half = Dataset(ds.name, ds.vectors, ds.id_kind, ds.points[:150])
    rest = Dataset(ds.name, ds.vectors, ds.id_kind, ds.points[150:])
    write_points(str(out / "part-00000.parquet"), half)
    write_points(str(out / "part-00001.parquet"), rest)
    manifest, got = read_points(str(out))
    assert_same_points(got, manifest, ds)
    assert manifest.digest and manifest.digest["count"] == N
    assert verify(str(out))["ok"]
    # without --max-part-size a directory target is one part plus _manifest.json
    convert(str(out), f"{tmp_path}/one/", to_format="parquet")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "_manifest.json", "part-00000.parquet"]
    assert verify(f"{tmp_path}/one")["ok"]


def test_interrupted_directory_leaves_nothing(tmp_path: Path, source: tuple[Dataset, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from vecferry.converters import jsonl

    _, src = source
    calls = {"n": 0}
    real = jsonl.JsonlWriter._open_part

    def failing(self: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(jsonl.JsonlWriter, "_open_part", failing)
    with pytest.raises(KeyboardInterrupt):
        convert(src, f"{tmp_path}/out/", to_format="jsonl",
                writer_options={"max_part_size": "20kB"}, batch_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_library_errors(tmp_path: Path, source: tuple[Dataset, str]) -> None:
    _, src = source
    with pytest.raises(UsageError, match="not a directory"):
        convert(src, f"{tmp_path}/a.parquet", writer_options={"max_part_size": 1000})
    with pytest.raises(UsageError, match="extension"):
        convert(src, f"{tmp_path}/a.jsonl", writer_options={"part_compression": "gzip"})
    with pytest.raises(UsageError, match="positive"):
        convert(src, f"{tmp_path}/d/", to_format="jsonl", writer_options={"max_part_size": 0})


# ---------------------------------------------------------------------------------- S3

# the S3 fixtures (a moto server) are conftest's; they skip without moto and s3fs
from conftest import bucket_keys, open_uploads  # noqa: E402


@pytest.mark.parametrize(("fmt", "suffix", "options"), [CASES[0], CASES[2]])
def test_s3_directory_of_parts(tmp_path: Path, source: tuple[Dataset, str], opts: Any,
                               s3: Any, bucket: str, fmt: str, suffix: str,
                               options: dict[str, Any]) -> None:
    ds, src = source
    remote = f"s3://{bucket}/exports/points"
    report = convert(src, remote + "/", to_format=fmt, writer_options=options, batch_size=32,
                     storage_options=opts)
    assert report["parts"] >= 3
    found = bucket_keys(s3, bucket)
    names = [k.rsplit("/", 1)[1] for k in found if not k.endswith("_manifest.json")]
    assert all(k.startswith("exports/points/") for k in found)  # no temporary prefix left
    man = _manifest(s3.cat_file(f"{bucket}/exports/points/_manifest.json"))
    _check_manifest(man, names, suffix)
    with storage.using(opts):
        manifest, got = read_points(remote)
        assert_same_points(got, manifest, ds)
        assert verify(remote)["ok"]
    s3.rm_file(f"{bucket}/exports/points/{names[-1]}")
    s3.invalidate_cache()
    with storage.using(opts), pytest.raises(InputError, match=names[-1]):
        verify(remote)
    assert open_uploads(s3, bucket) == []
