"""The command line through click's CliRunner: exit codes, messages, --json, --quiet, inspect."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import vecferry
from roundtrip import leftovers
from vecferry.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_convert_ok_prints_a_summary_on_stderr(samples, tmp_path):
    out = tmp_path / "out.parquet"
    result = run("convert", str(samples / "points_rich.jsonl"), str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "40 points jsonl -> parquet in " in result.stderr
    assert result.stderr.rstrip().endswith(f": {out}")
    assert out.exists()


def test_quiet_prints_nothing(samples, tmp_path):
    result = run("convert", str(samples / "points_rich.jsonl"), str(tmp_path / "o.jsonl"), "-q")
    assert (result.exit_code, result.output) == (0, "")


def test_json_alone_prints_no_summary_or_bar(samples, tmp_path):
    result = run("convert", str(samples / "points_rich.jsonl"), str(tmp_path / "o.parquet"),
                 "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True
    assert result.stderr == ""


def test_json_report_matches_the_python_report(samples, tmp_path):
    src = str(samples / "points_rich.jsonl")
    result = run("convert", src, str(tmp_path / "cli.parquet"), "--json", "--quiet")
    assert result.exit_code == 0
    cli = json.loads(result.stdout)
    api = vecferry.convert(src, str(tmp_path / "api.parquet"))
    assert cli.pop("ok") is True
    assert set(cli) == set(api)
    for key in ("read", "written", "rejected", "id_kind", "vectors", "from", "to",
                "duplicate_ids", "warnings", "rejects_file"):
        assert cli[key] == api[key], key


def test_failed_exit_1(samples, tmp_path):
    src = str(samples / "bad" / "wrong_dim.jsonl")
    result = run("convert", src, str(tmp_path / "o.parquet"))
    assert result.exit_code == 1
    # the sample's disagreement, warned before the run, explains the record that stops it
    assert result.stderr == (
        f"warning: {src}: the unnamed vector: the 6 points sampled to infer the vectors hold 5 "
        "of size 8, 1 of size 7; size 8, which most hold, is taken, so points of size 7 (first "
        "at line 4) are bad records\n"
        f"error: {src}, line 4, id 3: vector has 7 dimensions, expected 8 (fix the record, or "
        "pass --on-error skip to go on past such records: convert and copy set them aside in a "
        "rejects file)\n")
    assert result.stdout == ""
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.parquet").exists()


def test_failed_with_json(samples, tmp_path):
    src = str(samples / "bad" / "wrong_dim.jsonl")
    result = run("convert", src, str(tmp_path / "o.parquet"), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "ok": False, "error": "RecordError", "message": "vector has 7 dimensions, expected 8",
        "hint": "fix the record, or pass --on-error skip to go on past such records: convert "
                "and copy set them aside in a rejects file",
        "location": {"uri": src, "line": 4, "point_id": 3},
        "warnings": [f"{src}: the unnamed vector: the 6 points sampled to infer the vectors "
                     "hold 5 of size 8, 1 of size 7; size 8, which most hold, is taken, so "
                     "points of size 7 (first at line 4) are bad records"]}


def test_rejects_exit_3(samples, tmp_path):
    src = str(samples / "bad" / "wrong_dim.jsonl")
    out = tmp_path / "o.jsonl"
    result = run("convert", src, str(out), "--on-error", "skip")
    assert result.exit_code == 3
    rejects = f"{out}.rejects.jsonl"
    assert result.stderr.splitlines()[-1] == (
        f"1 record(s) rejected: {rejects} (fix them and convert that file again)")
    assert len(Path(rejects).read_text().splitlines()) == 1


def test_unknown_format_exit_2_names_known_formats(samples, tmp_path):
    result = run("convert", str(samples / "points_rich.jsonl"), str(tmp_path / "o.x"),
                 "--to", "csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown format 'csv' (known formats: jsonl, parquet, "
                                    "npy, faiss, qdrant, qdrant-edge")


def test_unknown_extension_exit_2(samples, tmp_path):
    out = str(tmp_path / "o.csv")
    result = run("convert", str(samples / "points_rich.jsonl"), out)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {out}: cannot tell the format of {out!r} (pass "
                                    "--to FORMAT; known: jsonl (.jsonl .ndjson")


def test_existing_output_exit_2(samples, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("x")
    result = run("convert", str(samples / "points_rich.jsonl"), str(out))
    assert result.exit_code == 2
    assert result.stderr == (f"error: {out}: output exists (pass --overwrite to replace it, or "
                             "choose another output)\n")
    assert out.read_text() == "x"
    assert run("convert", str(samples / "points_rich.jsonl"), str(out), "--overwrite",
               "-q").exit_code == 0


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--on-error", "maybe"], ["--bogus"],
                                  ["--limit", "-1"]])
def test_bad_option_exit_2(samples, tmp_path, args):
    result = run("convert", str(samples / "points_rich.jsonl"), str(tmp_path / "o.jsonl"), *args)
    assert result.exit_code == 2
    assert "Error: " in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_argument_exit_2():
    result = run("convert", "only-one.jsonl")
    assert result.exit_code == 2
    assert "Missing argument 'DST'" in result.stderr


def test_npy_options_reach_the_reader(samples, tmp_path):
    out = tmp_path / "o.parquet"
    result = run("convert", str(samples / "vectors.npy"), str(out), "--ids",
                 str(samples / "ids.npy"), "--payloads", str(samples / "payloads.jsonl"),
                 "--json", "-q")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["written"] == 200


def test_inspect_text(samples):
    path = str(samples / "points_rich.jsonl")
    result = run("inspect", path)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"location:  {path}"
    assert lines[1] == "format:    jsonl"
    assert lines[2] == "points:    unknown (not counted cheaply)"
    assert lines[3] == "id kind:   mixed"
    assert lines[5:9] == ["vectors:", "  - text: dense float32 size=16",
                          "  - keywords: sparse float32", "  - colbert: multi float32 size=8"]
    assert lines[9].startswith("payload keys (first 40 points): title (40), lang (40)")
    assert lines[10].startswith("first ids: '") and ", 1000, '" in lines[10]


def test_inspect_json(samples, tmp_path):
    out = str(tmp_path / "p.parquet")
    vecferry.convert(str(samples / "vectors.npy"), out,
                     reader_options={"ids": str(samples / "ids.npy")})
    result = run("inspect", out, "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    import numpy as np

    ids = np.load(samples / "ids.npy")
    assert info["format"] == "parquet"
    assert info["count"] == 200
    assert info["id_kind"] == "int"
    assert info["vectors"] == [{"name": "", "kind": "dense", "size": 64, "datatype": "float32",
                                "distance": None}]
    assert info["payload_keys"] == {}
    assert info["first_ids"] == [int(i) for i in ids[:5]]


def test_inspect_says_a_jsonl_count_is_recorded_and_a_cut_line(samples, tmp_path):
    """A JSONL file's count is its manifest sidecar's: a file cut short after it was written
    shows it unchanged, so inspect says where it comes from, and warns of a cut last line."""
    whole = str(tmp_path / "whole.jsonl")
    vecferry.convert(str(samples / "vectors.npy"), whole)
    lines = run("inspect", whole).stdout.splitlines()
    assert lines[2] == (f"points:    200 (as its manifest records; vecferry verify {whole} "
                        "reads them all)")
    info = json.loads(run("inspect", whole, "--json").stdout)
    assert (info["count"], info["count_recorded"], info["warnings"]) == (200, True, [])
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(Path(whole).read_bytes()[:5000])
    Path(f"{cut}.manifest.json").write_bytes(Path(f"{whole}.manifest.json").read_bytes())
    result = run("inspect", str(cut))
    assert result.exit_code == 0
    assert result.stderr == (f"warning: the file does not end with a newline: its last line "
                             f"may be cut short (vecferry verify {cut} reads it whole)\n")
    assert run("verify", str(cut)).exit_code != 0  # which says what is wrong
    # a count read from the file itself (Parquet's footer) is shown as it is
    parquet = str(tmp_path / "p.parquet")
    vecferry.convert(whole, parquet)
    assert run("inspect", parquet).stdout.splitlines()[2] == "points:    200"


def test_inspect_missing_file_exit_1(tmp_path):
    path = str(tmp_path / "none.jsonl")
    result = run("inspect", path)
    assert result.exit_code == 1
    assert result.stderr == f"error: {path}: no such file or directory (check the path)\n"


def test_formats_text_and_json():
    text = run("formats")
    assert text.exit_code == 0
    rows = text.stdout.splitlines()
    assert rows[0].split()[:4] == ["format", "rw", "installed", "recognised"]
    assert rows[1].startswith("jsonl        rw  yes        .jsonl .ndjson .jsonl.gz")
    as_json = run("formats", "--json")
    assert as_json.exit_code == 0
    data = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert list(data)[:3] == ["jsonl", "parquet", "npy"]
    assert data["parquet"]["extensions"] == [".parquet", ".pq"]
    assert data["qdrant"]["schemes"] == ["qdrant://", "qdrants://", "qdrant-local://"]
    for r in data.values():
        assert r["installed"] == (r["install"] is None)


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip().endswith(vecferry.__version__)


def test_python_dash_m_help():
    proc = subprocess.run([sys.executable, "-m", "vecferry", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "Exit codes: 0 done, 1 failed, 2 usage error, 3 done with rejected" in proc.stdout
    for command in ("convert", "copy", "inspect", "formats"):
        assert command in proc.stdout


def test_cli_import_stays_light():
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from vecferry.cli import main\n"
            "r = CliRunner().invoke(main, ['--help'])\n"
            "assert r.exit_code == 0, r.output\n"
            "heavy = {'numpy', 'pyarrow', 'faiss', 'qdrant_client', 'orjson', 'tqdm'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["convert", "verify", "inspect"])
def test_commands_do_not_import_pandas_but_pyarrow_can_still_use_it(tmp_path, command):
    pytest.importorskip("pandas")
    samples = Path(__file__).parent.parent / "sample_data"
    npy = [str(samples / "vectors.npy"), "--ids", str(samples / "ids.npy"), "--payloads",
           str(samples / "payloads.jsonl")]
    args = {"convert": ["convert", *npy[:1], str(tmp_path / "o.parquet"), *npy[1:], "--quiet"],
            "verify": ["verify", str(samples / "points_rich.jsonl"),
                       str(samples / "points_rich.jsonl"), "--quiet"],
            "inspect": ["inspect", *npy]}[command]
    code = ("import runpy, sys\n"
            f"sys.argv = {['vecferry', *args]!r}\n"
            "try:\n    runpy.run_module('vecferry', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print('pyarrow' in sys.modules, 'pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split()[-2:] == ["True", "False"]


def test_pyarrow_still_imports_pandas_when_asked_for_it_after_the_probe_was_skipped():
    pytest.importorskip("pandas")
    code = ("import sys; from vecferry.stream import skip_pandas_probe; skip_pandas_probe(); "
            "import pyarrow as pa; pa.array(['x']); assert 'pandas' not in sys.modules; "
            "df = pa.table({'a': [7]}).to_pandas(); print(type(df).__module__, df['a'][0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["pandas", "7"]


def _refuse(number: int):
    """A stand-in for a call the operating system refuses with ``number``."""
    def refuse(*args, **kwargs):
        raise OSError(number, "refused by the test")
    return refuse


def test_a_full_disk_is_a_message_naming_the_output_not_a_traceback(samples, tmp_path,
                                                                     monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq.ParquetWriter, "write_table", _refuse(errno.ENOSPC))
    out = tmp_path / "o.parquet"
    result = run("convert", str(samples / "points_rich.jsonl"), str(out))
    assert result.exit_code == 1
    assert (f"error: {out}: cannot write: No space left on device (free space there or write "
            "to another place, then run the conversion again)") in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the partial file was removed


@pytest.mark.parametrize(("number", "said"), [
    (errno.EROFS, "Read-only file system (check that the output's directory is writable)"),
    (errno.EIO, "[Errno 5] refused by the test (run the conversion again once the cause is "
                "fixed)"),
])
def test_a_write_the_system_refuses_names_the_output_and_what_to_do(samples, tmp_path,
                                                                    monkeypatch, number, said):
    from vecferry.errors import TargetError

    monkeypatch.setattr("vecferry.converters.jsonl.open_write", _refuse(number))
    out = tmp_path / "o.jsonl"
    with pytest.raises(TargetError) as info:
        vecferry.convert(str(samples / "points_rich.jsonl"), str(out), workers=1)
    assert str(info.value) == f"{out}: cannot write: {said}"
    assert isinstance(info.value.__cause__, OSError)


def test_any_other_system_error_is_a_message_and_exit_code_1(samples, tmp_path, monkeypatch):
    monkeypatch.setattr("vecferry.pipeline.convert", _refuse(errno.EIO))
    result = run("convert", str(samples / "points_rich.jsonl"), str(tmp_path / "o.jsonl"),
                 "--json")
    assert result.exit_code == 1
    assert "error: [Errno 5] refused by the test" in result.output
    report = json.loads(result.output[:result.output.index("\n}") + 2])
    assert report == {"ok": False, "error": "OSError", "message": "[Errno 5] refused by the test"}
    assert "Traceback" not in result.output



CLI_USAGE = [
    (["outdir/", "--to", "npy", "--max-part-size", "1MB"],
     "error: --max-part-size applies to parquet and jsonl targets, not npy (drop "
     "--max-part-size, or choose a parquet or jsonl directory target (ending in /))"),
    (["out.parquet", "--jsonl-compression", "zstd"],
     "error: --jsonl-compression applies to jsonl targets, not parquet (drop "
     "--jsonl-compression, or choose a jsonl directory target (ending in /))"),
    (["out.parquet", "--storage-option", "endpoint_url"],
     "error: --storage-option takes KEY=VALUE (e.g. --storage-option "
     "endpoint_url=http://127.0.0.1:9000)"),
    (["out.parquet", "--storage-option", "secret=abc"],
     "error: storage option 'secret' holds a credential and is not taken from the command "
     "line (use the provider's environment variables or config files: s3: "),
    (["https://example.com/x.parquet"],
     "error: https://example.com/x.parquet: https:// locations are read-only (write to s3://, "
     "gs:// or az://, or to a local file)"),
]


@pytest.mark.parametrize(("args", "message"), CLI_USAGE)
def test_options_that_do_not_fit_the_target_are_usage_errors(samples, tmp_path, args, message):
    target, *rest = args
    dst = target if "://" in target else str(tmp_path / target)
    result = run("convert", str(samples / "points_rich.jsonl"), dst, *rest)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(message.replace(target, dst, 1)
                                            if "://" in target else message)
    assert "abc" not in result.stderr  # a credential given anyway is never echoed
    assert list(tmp_path.iterdir()) == []


def test_a_ram_budget_must_be_positive(samples):
    result = run("inspect", str(samples / "points_rich.jsonl"), "--ram-budget", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: the RAM budget must be a positive number of bytes"


# ------------------------------------------------- verify and inspect read with a mapping


def _foreign_parquet(path: Path) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(9)
    pq.write_table(pa.table({
        "doc_id": [f"d{i}" for i in range(50)],
        "embedding": pa.array(rng.standard_normal((50, 8)).astype(np.float32).tolist(),
                              pa.list_(pa.float32())),
        "title": [f"t{i}" for i in range(50)],
        "meta": [json.dumps({"n": i}) for i in range(50)],
    }), path)
    return path


MAPPING = ["--id-column", "doc_id", "--vector-column", "embedding", "--json-columns", "meta"]


def test_verify_reads_a_foreign_source_with_the_mapping_convert_used(tmp_path):
    src = _foreign_parquet(tmp_path / "pandas.parquet")
    out = tmp_path / "out.jsonl"
    assert run("convert", str(src), str(out), "-q", *MAPPING).exit_code == 0
    ok = run("verify", str(src), str(out), *MAPPING)
    assert ok.exit_code == 0, ok.stderr
    assert ok.stderr.splitlines()[-1] == "verified: identical"
    # without the mapping the source is not readable, and the message names the flags
    bare = run("verify", str(src), str(out))
    assert bare.exit_code == 1
    assert bare.stderr.strip().endswith(
        "(read it with a mapping, e.g. --id-column doc_id --vector-column embedding "
        "--json-columns meta)")
    # a different mapping reads other points: verify says they differ (exit 4)
    other = run("verify", str(src), str(out), "--id-column", "title", "--vector-column",
                "embedding", "--json-columns", "meta", "-q")
    assert other.exit_code == 4
    assert "differs:" in other.stderr


def test_verify_reads_a_foreign_jsonl_with_its_keys(tmp_path):
    src = tmp_path / "other.jsonl"
    src.write_text("".join(json.dumps({"key": f"k{i}", "emb": [0.5, float(i)],
                                       "meta": {"i": i}}) + "\n" for i in range(20)))
    keys = ["--id-key", "key", "--vector-key", "emb", "--payload-key", "meta"]
    out = tmp_path / "out.parquet"
    assert run("convert", str(src), str(out), "-q", *keys).exit_code == 0
    ok = run("verify", str(src), str(out), "-q", *keys)
    assert ok.exit_code == 0, ok.stderr


def test_inspect_takes_an_explicit_mapping(tmp_path):
    src = _foreign_parquet(tmp_path / "pandas.parquet")
    info = json.loads(run("inspect", str(src), "--json", "--id-column", "title",
                          "--vector-column", "embedding", "--payload-columns", "meta").stdout)
    assert info["first_ids"][:2] == ["t0", "t1"]
    assert info["payload_keys"] == {"meta": 50}


def test_inspect_takes_the_qdrant_connection_options(monkeypatch):
    # a refused connection fails at once when asked for no retries (it took ~20 s of retries)
    monkeypatch.setenv("MY_KEY", "secret-value-123")
    result = run("inspect", "qdrant://127.0.0.1:1/x", "--timeout", "1", "--max-retries", "0",
                 "--api-key-env", "MY_KEY")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: qdrant://127.0.0.1:1/x: checking the collection "
                                    "failed after 1 attempt(s): connection error: ")
    assert "secret-value-123" not in result.output


def test_an_interrupted_run_exits_130_saying_what_is_left(samples, tmp_path, monkeypatch):
    import vecferry.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vecferry.pipeline, "convert", interrupted)
    out = tmp_path / "o.parquet"
    result = run("convert", str(samples / "points_rich.jsonl"), str(out))
    assert result.exit_code == 130
    assert result.stderr == (f"interrupted: {out} was not written (an output appears only "
                             "when complete)\n")
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    result = run("convert", str(samples / "points_rich.jsonl"), dst, "--json")
    assert result.exit_code == 130
    # --json: one document on stdout, as for any other failure
    message = (f"interrupted: {dst} keeps the points it acknowledged, but a run without "
               "--resume records no position: the same command run again sends every point "
               "again (upserted by id, so none is doubled); pass --resume to continue where a "
               "run stops")
    assert json.loads(result.stdout) == {"ok": False, "error": "Interrupted",
                                         "signal": "SIGINT", "message": message}
    assert result.stderr == message + "\n"


def test_an_interrupted_verify_says_nothing_was_written(samples, monkeypatch):
    import vecferry.verification

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vecferry.verification, "verify", interrupted)
    src = str(samples / "points_rich.jsonl")
    result = run("verify", src, src, "--json")
    assert result.exit_code == 130
    assert json.loads(result.stdout)["message"] == "interrupted: nothing was written"
    assert result.stderr == "interrupted: nothing was written\n"


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    # timeout, systemd and docker stop send SIGTERM: the unfinished file goes, exit 143
    import signal
    import time

    import numpy as np

    np.save(tmp_path / "v.npy", np.random.default_rng(3).standard_normal(
        (400_000, 64)).astype(np.float32))
    out = tmp_path / "o.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "vecferry", "convert", str(tmp_path / "v.npy"),
                             str(out), "--workers", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(".o.jsonl.vftmp-") and not p.name.endswith(".lock")
               for p in tmp_path.iterdir()):
            time.sleep(0.2)  # well inside the writing
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run ended before it could be stopped")
    assert proc.returncode == 143, err.decode()
    assert err.decode().startswith(f"terminated: {out} was not written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy"]


@pytest.mark.parametrize("terminated", [True, False])
def test_a_signal_while_click_parses_exits_as_that_signal(monkeypatch, capsys, terminated):
    """click turns an interrupt during its parsing into Abort; SIGTERM's still exits 143."""
    from vecferry import cli

    def parse_args(self, ctx, args):
        raise cli._Terminated if terminated else KeyboardInterrupt

    monkeypatch.setattr(click.Command, "parse_args", parse_args)
    with pytest.raises(SystemExit) as stop:
        cli.main(["formats"])
    assert stop.value.code == (143 if terminated else 130)
    assert capsys.readouterr().err.strip() == ("terminated" if terminated else "Aborted!")


def test_the_python_api_takes_paths_and_with_blocks(tmp_path):
    import numpy as np

    np.save(tmp_path / "v.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    (tmp_path / "p.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    report = vecferry.convert(tmp_path / "v.npy", tmp_path / "o.parquet",  # pathlib paths
                              reader_options={"payloads": tmp_path / "p.jsonl"},
                              rejects=tmp_path / "r.jsonl")
    assert report["written"] == 3
    with vecferry.open_reader(tmp_path / "o.parquet") as reader:
        batches = list(reader.batches(2))
        schema = reader.schema
    assert sum(b.num_rows for b in batches) == 3
    with vecferry.open_writer(tmp_path / "w.parquet", schema) as writer:
        for b in batches:
            writer.write_batch(b)
    assert vecferry.convert(str(tmp_path / "w.parquet"), str(tmp_path / "w.jsonl"))[
        "written"] == 3
    # a block that raises aborts the output: nothing that looks complete is left
    with pytest.raises(RuntimeError), vecferry.open_writer(tmp_path / "x.parquet", schema) as w:
        w.write_batch(batches[0])
        raise RuntimeError("the script failed")
    assert not (tmp_path / "x.parquet").exists() and leftovers(tmp_path) == []


def test_a_local_collection_reader_left_open_exits_quietly(tmp_path):
    # qdrant-client's own finaliser printed a traceback at interpreter exit
    pytest.importorskip("qdrant_client")
    import numpy as np

    np.save(tmp_path / "v.npy", np.ones((3, 2), np.float32))
    vecferry.convert(str(tmp_path / "v.npy"), f"qdrant-local://{tmp_path / 'q'}/c")
    script = ("import vecferry, sys\n"
              f"r = vecferry.open_reader('qdrant-local://{tmp_path / 'q'}/c')\n"
              "print(r.count())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.decode().strip() == "3"
    assert done.stderr.decode() == ""


def test_a_usage_error_click_finds_is_json_on_stdout_with_json(tmp_path):
    # scripts read stdout: a mistyped option gave them nothing there
    result = run("convert", "a.jsonl", "b.parquet", "--bogus", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "ok": False, "error": "UsageError", "message": "No such option '--bogus'. Did you mean "
        "'--bulk'?", "hint": None, "location": {}}
    assert "No such option '--bogus'" in result.stderr
    plain = run("convert", "a.jsonl", "b.parquet", "--bogus")
    assert plain.exit_code == 2 and plain.stdout == ""


def test_a_closed_stdout_pipe_ends_the_command_quietly():
    """`vecferry inspect ... | head` printed "error: [Errno 32] Broken pipe"."""
    import subprocess
    import sys

    code = ("from vecferry.cli import _run\n"
            "def body():\n"
            "    raise BrokenPipeError(32, 'Broken pipe')\n"
            "_run(body, False)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (1, "", "")


@pytest.mark.parametrize("workers", [0, -3, "2", 1.5, True])
def test_the_library_refuses_a_worker_count_the_cli_refuses(tmp_path, workers):
    import numpy as np

    from vecferry.errors import UsageError

    np.save(tmp_path / "v.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    with pytest.raises(UsageError, match=f"workers must be a positive integer or None, not "
                                         f"{re.escape(repr(workers))}"):
        vecferry.convert(tmp_path / "v.npy", tmp_path / "o.parquet", workers=workers)
    assert not (tmp_path / "o.parquet").exists()


def test_open_writer_refuses_what_is_not_a_stream_schema(tmp_path):
    import pyarrow as pa

    from vecferry.errors import UsageError

    for schema in ("notaschema", [("id", pa.uint64())]):
        with pytest.raises(UsageError, match="open_writer takes a stream schema, not "):
            vecferry.open_writer(tmp_path / "o.parquet", schema)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet", "_dir", ".faiss"])
def test_a_closed_reader_refuses_to_read(tmp_path, suffix):
    """Closed, readers gave every answer: no rows (JSONL, as if the source had ended), all
    the rows again (numpy), an error calling the file corrupt (Parquet), AttributeError
    (FAISS). Each now says it is closed, for a new iterator and for one begun before."""
    import numpy as np

    from vecferry.errors import UsageError

    if suffix == ".faiss":
        pytest.importorskip("faiss")
    np.save(tmp_path / "v.npy", np.random.default_rng(1).standard_normal((5000, 4))
            .astype(np.float32))
    loc = tmp_path / f"src{suffix}"
    vecferry.convert(tmp_path / "v.npy", f"{loc}/" if suffix == "_dir" else loc,
                     to_format="npy" if suffix == "_dir" else None)
    reader = vecferry.open_reader(loc)
    begun = reader.batches(1000)
    assert next(begun).num_rows == 1000
    reader.close()
    for read in (lambda: next(begun), lambda: reader.batches(1000)):
        with pytest.raises(UsageError, match="the reader is closed"):
            read()
    reader.close()  # closing again is harmless
