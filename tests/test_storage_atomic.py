"""Object-storage outputs stay whole when a run is interrupted or fails part way, the
destination's errors name the destination, and storage options are checked.

Against moto's S3 server on loopback (``conftest.s3_endpoint``). Every S3 request vecferry
sends goes through ``S3FileSystem._call_s3``; ``Requests`` wraps it to log requests, to fail
one, or to interrupt the run while one is in flight: SIGUSR1 reaches the main thread (whose
handler raises ``KeyboardInterrupt``, as the command line's SIGTERM handler does) and the
request goes on a moment later, as behind a proxy that holds requests. The run then ends
before its request is answered, which is what a SIGTERM mid-upload does.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import vecferry
from conftest import S3_SECRET, open_uploads
from conftest import bucket_keys as keys
from failing import fails
from roundtrip import read_points
from vecferry import storage
from vecferry.cli import main
from vecferry.converters.base import AtomicPath
from vecferry.errors import InputError, OutputExistsError, TargetError, UsageError

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

NPY_FILES = ["ids.npy", "manifest.json", "payloads.jsonl", "vectors.npy"]


def _points(path: Path, n: int, shift: float = 0.0) -> str:
    path.write_text("".join(json.dumps({"id": i, "vector": [0.5 + shift, float(i)],
                                        "payload": {"i": i, "shift": shift}}) + "\n"
                            for i in range(n)))
    return str(path)


def _content(remote: str, opts: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
    """The points at ``remote`` (id, vector, payload), read whole: raises if it is not an
    output (a missing manifest, a truncated file)."""
    with storage.using(opts):
        manifest, got = read_points(remote)
    assert manifest.count == len(got)
    return [(p["id"], list(p["vector"]), p["payload"]) for p in got]


def _expected(src: str) -> list[tuple[Any, Any, Any]]:
    return [(d["id"], d["vector"], d["payload"])
            for d in map(json.loads, Path(src).read_text().splitlines())]


class Requests:
    """Every S3 request of the test, logged as (operation, [keys]); ``on`` makes the nth
    request matching an operation and key fail or be interrupted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        from fsspec.asyn import sync_wrapper

        self.log: list[tuple[str, list[str]]] = []
        self._rules: list[dict[str, Any]] = []
        real = s3fs.S3FileSystem._call_s3
        main_thread = threading.main_thread().ident

        async def call_s3(fs: Any, method: str, *args: Any, **kwargs: Any) -> Any:
            names = ([kwargs["Key"]] if "Key" in kwargs else
                     [o["Key"] for o in kwargs.get("Delete", {}).get("Objects", [])])
            self.log.append((method, names))
            for rule in self._rules:
                if rule["op"] == method and any(rule["key"](k) for k in names):
                    rule["seen"] += 1
                    if rule["seen"] == rule["nth"]:
                        if rule["action"] == "fail":
                            raise PermissionError(f"Access Denied ({method})")
                        signal.pthread_kill(main_thread, signal.SIGUSR1)
                        await asyncio.sleep(0.3)  # answered after the run was interrupted
            return await real(fs, method, *args, **kwargs)

        monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", call_s3)
        # S3File's requests go through the sync wrapper, made from the original function
        monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", sync_wrapper(call_s3))

    def on(self, op: str, key: Any, *, nth: int = 1, action: str = "interrupt") -> None:
        match = key if callable(key) else (lambda k, key=key: k == key)
        self._rules.append({"op": op, "key": match, "nth": nth, "action": action, "seen": 0})

    def writes(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` made or deleted, in order ("-key" for a deletion)."""
        out = []
        for op, names in self.log:
            for k in names:
                if k.startswith(prefix):
                    if op in ("put_object", "copy_object", "complete_multipart_upload"):
                        out.append(k)
                    elif op == "delete_objects" or op == "delete_object":
                        out.append("-" + k)
        return out


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Requests:
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated (test)")

    old = signal.signal(signal.SIGUSR1, interrupt)
    try:
        yield Requests(monkeypatch)
    finally:
        signal.signal(signal.SIGUSR1, old)


def _interrupted(action: Any) -> None:
    with pytest.raises(KeyboardInterrupt):
        action()
    time.sleep(0.8)  # a request left in flight would land by now


# ------------------------------------------------------------------- one object + sidecar


@pytest.mark.parametrize("key", ["k/T.jsonl", "k/T.jsonl.manifest.json"])
def test_an_interrupted_jsonl_object_is_not_left_behind(tmp_path, opts, s3, bucket,
                                                        requests, key):
    """Under 5 MB the data is one PUT at commit, then the sidecar's PUT: an interrupt while
    either is in flight leaves neither (it used to leave T.jsonl without its sidecar, or both
    after a run reported as terminated)."""
    src = _points(tmp_path / "in.jsonl", 10)
    requests.on("put_object", key)
    _interrupted(lambda: vecferry.convert(src, f"s3://{bucket}/k/T.jsonl",
                                          storage_options=opts))
    assert keys(s3, bucket) == []


def test_a_refused_sidecar_removes_its_data_object(tmp_path, opts, s3, bucket, requests):
    src = _points(tmp_path / "in.jsonl", 10)
    requests.on("put_object", "k/T.jsonl.manifest.json", action="fail")
    text = fails(TargetError, lambda: vecferry.convert(src, f"s3://{bucket}/k/T.jsonl",
                                                       storage_options=opts))
    assert text.startswith(f"s3://{bucket}/k/T.jsonl.manifest.json: S3 refused access: the "
                           "credentials are missing, wrong, or not allowed to write here "
                           "(Access Denied (put_object))")
    assert keys(s3, bucket) == []


def test_an_interrupted_multipart_completion_is_removed(tmp_path, opts, s3, bucket,
                                                        requests):
    src = tmp_path / "big.jsonl"
    vec = ",".join(["0.123456789"] * 256)
    src.write_text("".join(f'{{"id": {i}, "vector": [{vec}], "payload": {{}}}}\n'
                           for i in range(3000)))  # ~8 MB: two 5 MB parts
    requests.on("complete_multipart_upload", "big.jsonl")
    _interrupted(lambda: vecferry.convert(
        str(src), f"s3://{bucket}/big.jsonl", batch_size=500,
        storage_options={**opts, "default_block_size": 5 * 2**20}))
    assert keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []


def test_overwrite_interrupted_leaves_no_data_without_its_sidecar(tmp_path, opts, s3, bucket,
                                                                  requests):
    remote = f"s3://{bucket}/k/T.jsonl"
    vecferry.convert(_points(tmp_path / "a.jsonl", 10), remote, storage_options=opts)
    requests.on("put_object", "k/T.jsonl")
    _interrupted(lambda: vecferry.convert(_points(tmp_path / "b.jsonl", 7, 1.0), remote,
                                          overwrite=True, storage_options=opts))
    # the replaced object goes with the run (a store keeps no old version); never the new
    # data beside the old run's sidecar
    assert "k/T.jsonl" not in keys(s3, bucket)


def test_an_interrupted_faiss_upload_leaves_nothing(tmp_path, opts, s3, bucket, requests):
    pytest.importorskip("faiss")
    src = _points(tmp_path / "in.jsonl", 10)
    requests.on("put_object", "k/T.faiss")
    _interrupted(lambda: vecferry.convert(src, f"s3://{bucket}/k/T.faiss",
                                          storage_options=opts))
    assert keys(s3, bucket) == []


# ------------------------------------------------------------------------- directories


def _in_temp(k: str) -> bool:
    return ".npd.vftmp-" in k


def test_npy_upload_interrupted_leaves_nothing(tmp_path, opts, s3, bucket, requests):
    src = _points(tmp_path / "in.jsonl", 10)
    requests.on("put_object", lambda k: k.startswith("m/"), nth=2)
    _interrupted(lambda: vecferry.convert(src, f"s3://{bucket}/m/npd/", to_format="npy",
                                          storage_options=opts))
    assert keys(s3, bucket) == []


def test_npy_upload_refused_leaves_nothing(tmp_path, opts, s3, bucket, requests):
    src = _points(tmp_path / "in.jsonl", 10)
    requests.on("put_object", lambda k: k.startswith("m/"), nth=2, action="fail")
    with pytest.raises(TargetError, match="not allowed to write here"):
        vecferry.convert(src, f"s3://{bucket}/m/npd/", to_format="npy", storage_options=opts)
    assert keys(s3, bucket) == []


def test_npy_overwrite_interrupted_in_upload_keeps_the_old_output(tmp_path, opts, s3, bucket,
                                                                  requests):
    remote = f"s3://{bucket}/m/npd/"
    old = _points(tmp_path / "a.jsonl", 10)
    vecferry.convert(old, remote, to_format="npy", storage_options=opts)
    before = {k: s3.cat_file(f"{bucket}/{k}") for k in keys(s3, bucket)}
    assert sorted(before) == [f"m/npd/{n}" for n in NPY_FILES]
    requests.on("put_object", lambda k: k.startswith("m/"), nth=2)
    _interrupted(lambda: vecferry.convert(_points(tmp_path / "b.jsonl", 7, 1.0), remote,
                                          to_format="npy", overwrite=True,
                                          storage_options=opts))
    assert keys(s3, bucket) == sorted(before)
    assert all(s3.cat_file(f"{bucket}/{k}") == v for k, v in before.items())
    assert _content(remote, opts) == _expected(old)


@pytest.mark.parametrize("replacing", [False, True])
def test_npy_interrupted_while_moving_in_leaves_one_whole_output(tmp_path, opts, s3, bucket,
                                                                 requests, replacing):
    """Interrupted between two copies into place: over an old output (whose manifest went
    first) the move is finished; onto nothing, what was copied is taken back."""
    remote = f"s3://{bucket}/m/npd/"
    if replacing:
        vecferry.convert(_points(tmp_path / "a.jsonl", 10), remote, to_format="npy",
                         storage_options=opts)
    new = _points(tmp_path / "b.jsonl", 7, 1.0)
    requests.on("copy_object", lambda k: k.startswith("m/npd/"), nth=2)
    _interrupted(lambda: vecferry.convert(new, remote, to_format="npy", overwrite=replacing,
                                          storage_options=opts))
    if replacing:
        assert keys(s3, bucket) == [f"m/npd/{n}" for n in NPY_FILES]
        assert _content(remote, opts) == _expected(new)
    else:
        assert keys(s3, bucket) == []


def test_an_interrupt_during_a_move_it_finished_says_the_output_is_whole(tmp_path, opts,
                                                                         s3_endpoint, bucket,
                                                                         requests):
    """The command line's message says what is there: the new output, whole (the move the
    cleanup finished), not that the output was not written."""
    remote = f"s3://{bucket}/m/npd/"
    vecferry.convert(_points(tmp_path / "a.jsonl", 10), remote, to_format="npy",
                     storage_options=opts)
    new = _points(tmp_path / "b.jsonl", 7, 1.0)
    requests.on("copy_object", lambda k: k.startswith("m/npd/"), nth=2)
    result = CliRunner().invoke(main, ["convert", new, remote, "--to", "npy", "--overwrite",
                                       "--storage-option", f"endpoint_url={s3_endpoint}",
                                       "--json"])
    time.sleep(0.8)
    assert result.exit_code == 130, result.output
    said = (f"{remote.rstrip('/')} holds this run's whole output: the run was stopped while "
            "its output replaced the earlier one, and the move into place was finished")
    assert result.stderr == f"interrupted: {said}\n"
    doc = json.loads(result.stdout)
    assert doc["message"] == f"interrupted: {said}" and doc["complete"] is True
    assert _content(remote, opts) == _expected(new)


def test_npy_manifest_is_moved_in_last(tmp_path, opts, s3, bucket, requests):
    remote = f"s3://{bucket}/m/npd/"
    vecferry.convert(_points(tmp_path / "a.jsonl", 10), remote, to_format="npy",
                     storage_options=opts)
    first = requests.writes("m/npd/")
    assert first[-1] == "m/npd/manifest.json"  # nothing written there before the move
    assert sorted(first) == [f"m/npd/{n}" for n in NPY_FILES]
    requests.log.clear()
    new = _points(tmp_path / "b.jsonl", 7, 1.0)
    vecferry.convert(new, remote, to_format="npy", overwrite=True, storage_options=opts)
    # the old manifest goes first, the new one comes last: a reader never finds a manifest
    # beside data it does not describe
    assert requests.writes("m/npd/") == ["-m/npd/manifest.json", "m/npd/ids.npy",
                                         "m/npd/payloads.jsonl", "m/npd/vectors.npy",
                                         "m/npd/manifest.json"]
    assert keys(s3, bucket) == [f"m/npd/{n}" for n in NPY_FILES]
    assert _content(remote, opts) == _expected(new)


def test_parquet_directory_interrupted_while_moving_in_is_finished(tmp_path, opts, s3, bucket,
                                                                   requests):
    remote = f"s3://{bucket}/out/"
    vecferry.convert(_points(tmp_path / "a.jsonl", 10), remote, to_format="parquet",
                     storage_options=opts)
    new = _points(tmp_path / "b.jsonl", 7, 1.0)
    requests.on("copy_object", lambda k: k.startswith("out/"))
    _interrupted(lambda: vecferry.convert(new, remote, to_format="parquet", overwrite=True,
                                          storage_options=opts))
    assert keys(s3, bucket) == ["out/_manifest.json", "out/part-00000.parquet"]
    assert _content(remote, opts) == _expected(new)


def test_a_refused_copy_onto_nothing_leaves_nothing(tmp_path, opts, s3, bucket, requests):
    """The second copy into place is refused: the first is taken back (it used to be the
    manifest, left there without its data)."""
    requests.on("copy_object", lambda k: k.startswith("out/"), nth=2, action="fail")
    text = fails(TargetError, lambda: vecferry.convert(
        _points(tmp_path / "a.jsonl", 10), f"s3://{bucket}/out/", to_format="parquet",
        storage_options=opts))
    assert text.startswith(f"s3://{bucket}/out: S3 refused access: the credentials are "
                           "missing, wrong, or not allowed to write here")
    assert keys(s3, bucket) == []


def test_an_output_written_meanwhile_is_not_replaced(tmp_path, opts, s3, bucket):
    """Two runs to one new prefix: the later to finish stops (as for a local output) and the
    other's objects stay, rather than being deleted to make room."""
    with storage.using(opts):
        out = AtomicPath(f"s3://{bucket}/out", directory=True)
        (out.temp / "part-00000.parquet").write_bytes(b"this run")
        for name in ("part-00000.parquet", "_manifest.json"):
            s3.pipe(f"{bucket}/out/{name}", b"the other run")
        text = fails(OutputExistsError, out.commit)
    assert text == (f"s3://{bucket}/out: output appeared while this run was writing it "
                    "(another run to the same place?); it is left as it is (pass --overwrite "
                    "to replace it, or choose another output)")
    assert keys(s3, bucket) == ["out/_manifest.json", "out/part-00000.parquet"]
    assert s3.cat_file(f"{bucket}/out/part-00000.parquet") == b"the other run"


# ------------------------------------------------------------- the destination's errors



def _cli_json(args: list[str], endpoint: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(main, ["convert", *args, "--json", "--storage-option",
                                       f"endpoint_url={endpoint}"])
    out = result.output
    # stdout holds the one document; stderr's warnings may quote JSON of their own
    return result.exit_code, json.loads(result.stdout), out


@pytest.mark.parametrize(("dst", "fmt"), [("npd/", "npy"), ("out/", "parquet"),
                                          ("out/", "jsonl")])
def test_a_refused_destination_is_a_target_error(tmp_path, s3_endpoint, bucket, enforce_auth,
                                                 dst, fmt):
    src = _points(tmp_path / "in.jsonl", 5)
    code, doc, out = _cli_json([src, f"s3://{bucket}/{dst}", "--to", fmt], s3_endpoint)
    assert code == 1
    assert doc["error"] == "TargetError"
    assert doc["message"] == ("S3 refused access: the credentials are missing, wrong, or not "
                              "allowed to write here (Forbidden)")
    assert doc["location"] == {"uri": f"s3://{bucket}/{dst.rstrip('/')}"}
    assert "AWS_ACCESS_KEY_ID" in doc["hint"]
    assert S3_SECRET not in out


def test_a_refused_source_is_still_an_input_error(tmp_path, s3_endpoint, bucket,
                                                  enforce_auth):
    code, doc, _ = _cli_json([f"s3://{bucket}/in.jsonl", str(tmp_path / "o.jsonl")],
                             s3_endpoint)
    assert code == 1
    assert doc["error"] == "InputError"
    assert "not allowed to read here" in doc["message"]


def test_output_path_probes_as_a_destination(opts, bucket, enforce_auth):
    with storage.using(opts):
        text = fails(TargetError, storage.output_path(f"s3://{bucket}/x.jsonl").exists)
        assert "not allowed to write here" in text
        assert "not allowed to read here" in fails(
            InputError, storage.as_path(f"s3://{bucket}/x.jsonl").exists)


@pytest.mark.parametrize("name", ["x.jsonl", "x.parquet", "x.faiss"])
def test_a_refused_file_destination_is_a_target_error(tmp_path, s3_endpoint, bucket,
                                                      enforce_auth, name):
    if name.endswith(".faiss"):
        pytest.importorskip("faiss")
    src = _points(tmp_path / "in.jsonl", 5)
    _, doc, _ = _cli_json([src, f"s3://{bucket}/{name}"], s3_endpoint)
    assert doc["error"] == "TargetError"


# ------------------------------------------------------------------------ storage options


def test_an_unknown_storage_option_is_a_usage_error(tmp_path, s3_endpoint, bucket):
    src = _points(tmp_path / "in.jsonl", 5)
    result = CliRunner().invoke(main, ["convert", src, f"s3://{bucket}/y.jsonl", "--json",
                                       "--storage-option", f"endpoint_url={s3_endpoint}",
                                       "--storage-option", "foo=bar"])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["error"] == "UsageError"
    assert doc["message"] == "--storage-option foo is not a setting of s3:// locations"
    assert doc["hint"].startswith("s3fs takes ")
    taken = doc["hint"][len("s3fs takes "):doc["hint"].index(" (see")].split(", ")
    assert {"endpoint_url", "client_kwargs", "anon", "profile", "use_listings_cache"} <= set(
        taken)
    assert not set(taken) & {"key", "secret", "token", "password", "loop"}
    assert "Traceback" not in result.output
    assert keys_of(bucket, s3_endpoint) == []


def keys_of(bucket: str, endpoint: str) -> list[str]:
    return keys(s3fs.S3FileSystem(endpoint_url=endpoint), bucket)


def test_unknown_storage_options_from_python(tmp_path, opts, bucket):
    src = _points(tmp_path / "in.jsonl", 5)
    text = fails(UsageError, lambda: vecferry.convert(
        src, f"s3://{bucket}/y.jsonl", storage_options={**opts, "foo": 1, "bar": 2}))
    assert text.startswith(f"s3://{bucket}/y.jsonl: --storage-option bar, --storage-option "
                           "foo are not settings of s3:// locations (s3fs takes ")


def test_an_unknown_nested_storage_option_is_a_usage_error(tmp_path, opts, bucket):
    src = _points(tmp_path / "in.jsonl", 5)
    text = fails(UsageError, lambda: vecferry.convert(
        src, f"s3://{bucket}/y.jsonl",
        storage_options={**opts, "client_kwargs": {"foo": "bar"}}))
    assert text.startswith(f"s3://{bucket}/y.jsonl: a storage option is not taken by s3fs: ")
    assert "'foo'" in text
    assert text.endswith("(check the --storage-option keys (see the provider's "
                         "documentation))")


def test_known_storage_options_still_work(tmp_path, opts, s3, bucket):
    src = _points(tmp_path / "in.jsonl", 5)
    report = vecferry.convert(src, f"s3://{bucket}/y.jsonl", storage_options={
        **opts, "use_listings_cache": False, "max_concurrency": 2,
        "client_kwargs": {"region_name": "us-east-1"}})
    assert report["written"] == 5
    assert keys(s3, bucket) == ["y.jsonl", "y.jsonl.manifest.json"]
