"""Every manifest and JSONL point vecferry writes fits its JSON Schema in vecferry/schemas/."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator

import vecferry
from roundtrip import DATASETS, FORMATS
from vecferry.stream import (
    DATATYPES,
    DISTANCES,
    ID_KINDS,
    MANIFEST_KEY,
    VECTOR_KINDS,
    manifest_of,
)

SCHEMAS = resources.files("vecferry") / "schemas"


def load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def check(value: Any, name: str) -> list[str]:
    """``"<path>: <failing keyword>"`` for each error of ``value`` under schema file ``name``."""
    validator = Draft202012Validator(load(name))
    out = []
    for e in validator.iter_errors(value):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                             for p in e.absolute_path)
        out.append(f"{path}: {e.validator}")
    return sorted(out)


def test_schemas_are_draft_2020_12_with_descriptions():
    for name in ("point.schema.json", "manifest.schema.json"):
        schema = load(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["description"]
        for prop in schema["properties"].values():
            assert prop["description"]


def test_manifest_enums_match_the_code():
    schema = load("manifest.schema.json")
    vector = schema["$defs"]["vector"]["properties"]
    assert schema["properties"]["id_kind"]["enum"] == list(ID_KINDS)
    assert vector["kind"]["enum"] == list(VECTOR_KINDS)
    assert vector["datatype"]["enum"] == list(DATATYPES)
    assert vector["distance"]["enum"] == [*DISTANCES, None]


def _written_manifests(fmt: str, location: str) -> list[dict[str, Any]]:
    path = Path(location.rstrip("/"))
    if fmt.startswith(("jsonl", "faiss")):
        return [json.loads(Path(f"{location}.manifest.json").read_text())]
    if fmt.startswith("qdrant"):
        # A collection keeps no manifest file: check the one its reader gives.
        reader = vecferry.open_reader(location)
        try:
            return [manifest_of(reader.schema).to_dict()]
        finally:
            reader.close()
    if fmt.startswith("parquet"):
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        return [json.loads(pq.ParquetFile(f).metadata.metadata[MANIFEST_KEY]) for f in files]
    return [json.loads((path / "manifest.json").read_text())]


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("fmt", [n for n, f in FORMATS.items() if f.can_write])
def test_every_written_manifest_validates(tmp_path, fmt, dataset):
    case, ds = FORMATS[fmt], DATASETS[dataset]()
    if case.missing() or case.cannot_hold(ds):
        pytest.skip("format cannot hold the dataset")
    location, _ = case.make(ds, tmp_path, "out")
    for manifest in _written_manifests(fmt, location):
        assert check(manifest, "manifest.schema.json") == []
        assert manifest["count"] == len(ds.points)
        assert manifest["created_by"].startswith("vecferry ")


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_written_jsonl_line_validates(tmp_path, dataset):
    ds = DATASETS[dataset]()
    location, _ = FORMATS["jsonl"].make(ds, tmp_path, "out")
    for line in Path(location).read_text(encoding="utf-8").splitlines():
        assert check(json.loads(line), "point.schema.json") == []


def test_samples_and_rejects_validate(samples, tmp_path):
    for line in (samples / "points_rich.jsonl").read_text(encoding="utf-8").splitlines():
        assert check(json.loads(line), "point.schema.json") == []
    import vecferry

    lines = []
    for name in ("not_json", "wrong_dim"):
        rejects = tmp_path / f"{name}.rejects.jsonl"
        vecferry.convert(str(samples / "bad" / f"{name}.jsonl"), str(tmp_path / f"{name}.jsonl"),
                         on_error="skip", rejects=str(rejects))
        lines += [json.loads(s) for s in rejects.read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert check(line, "point.schema.json") == []


@pytest.mark.parametrize(("value", "problem"), [
    ({"id": -1, "vector": [1.0]}, "$.id: oneOf"),
    ({"id": 1.5, "vector": [1.0]}, "$.id: oneOf"),
    ({"id": 1}, "$: anyOf"),
    ({"id": 1, "vector": {"s": {"indices": [1, 1], "values": [1, 2]}}}, "$.vector"),
    ({"id": 1, "vector": [1.0], "payload": [1]}, "$.payload: type"),
    ({"id": 1, "vector": [1.0], "score": 0.5}, "$: additionalProperties"),
])
def test_point_schema_refuses_what_the_reader_refuses(value, problem):
    assert any(e.startswith(problem) for e in check(value, "point.schema.json"))


def test_manifest_schema_refuses_bad_manifests():
    good = {"format_version": 1, "id_kind": "int", "vectors": [
        {"name": "", "kind": "dense", "size": 8, "datatype": "float32", "distance": None,
         "extra": {}}]}
    assert check(good, "manifest.schema.json") == []
    bad_kind = json.loads(json.dumps(good))
    bad_kind["vectors"][0]["kind"] = "binary"
    assert check(bad_kind, "manifest.schema.json") == ["$.vectors[0].kind: enum"]
    assert check({**good, "id_kind": "float"}, "manifest.schema.json") == ["$.id_kind: enum"]
    missing = {k: v for k, v in good.items() if k != "id_kind"}
    assert check(missing, "manifest.schema.json") == ["$: required"]
