"""The committed sample_data/ is what make_samples.py makes, and `make demo` works on it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from vecferry.cli import main


def _committed(samples):
    return {p.relative_to(samples).as_posix(): p.read_bytes() for p in samples.rglob("*")
            if p.is_file() and p.name != "make_samples.py" and "__pycache__" not in p.parts}


def test_samples_regenerate_byte_identical(samples, tmp_path):
    spec = importlib.util.spec_from_file_location("make_samples_copy",
                                                  samples / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = tmp_path
    assert module.main() == 0
    made = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*")
            if p.is_file()}
    committed = _committed(samples)
    assert sorted(made) == sorted(committed)
    differ = [name for name in made if made[name] != committed[name]]
    assert differ == []


def test_demo_chain(samples, tmp_path):
    runner = CliRunner()
    parquet, jsonl = str(tmp_path / "points.parquet"), str(tmp_path / "points.jsonl")
    r = runner.invoke(main, ["convert", str(samples / "vectors.npy"), parquet, "--ids",
                             str(samples / "ids.npy"), "--payloads",
                             str(samples / "payloads.jsonl")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["convert", parquet, jsonl])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["inspect", jsonl, "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    ids = np.load(samples / "ids.npy")
    assert info["format"] == "jsonl"
    assert info["count"] == 200
    assert info["id_kind"] == "int"
    assert info["vectors"][0]["size"] == 64
    assert info["first_ids"] == [int(i) for i in ids[:5]]
    assert list(info["payload_keys"]) == ["title", "lang", "tags", "score", "views", "author",
                                          "draft", "note", "extra"]
    lines = Path(jsonl).read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    expected = json.loads((samples / "payloads.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["payload"] == expected and first["payload"]["views"] == 2**53
    vec = np.array(first["vector"], dtype=np.float32)
    assert vec.view(np.uint32).tolist() == np.load(samples / "vectors.npy")[0].view(
        np.uint32).tolist()
    text = runner.invoke(main, ["inspect", jsonl])
    assert text.exit_code == 0 and "points:    200" in text.stdout
