"""A manifest whose fields have the wrong JSON type is refused naming the field and the file,
whichever file carries it (a JSONL sidecar, a numpy directory's manifest.json, a Parquet
file's metadata), instead of a TypeError naming no field or a wrong value taken as it is."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from vecferry.errors import InputError, SchemaError
from vecferry.stream import MANIFEST_KEY, Manifest, manifest_problem

POINTS = '{"id": 1, "vector": [1.0, 2.0]}\n{"id": 2, "vector": [3.0, 4.0]}\n'


def _jsonl_with_sidecar(tmp_path, sidecar: str):
    src = tmp_path / "p.jsonl"
    src.write_text(POINTS)
    side = tmp_path / "p.jsonl.manifest.json"
    side.write_text(sidecar)
    return src, side


@pytest.mark.parametrize("sidecar, problem", [
    ('{"vectors": "x"}', "'vectors' must be a list, not text"),
    ('{"vectors": [{"name": "", "size": 2}], "count": "x"}',
     "'count' must be an integer or null, not text"),
    ('[1, 2]', "it must be an object, not a list"),
    ('{"vectors": [7]}', "vectors[0] must be an object, not an integer"),
    ('{"vectors": [{"size": 2}]}', "vectors[0] has no 'name'"),
    ('{"vectors": [{"name": "", "size": 2, "dims": 2}]}', "vectors[0] holds unknown key(s) 'dims'"),
    ('{"vectors": [{"name": "", "size": true}]}',
     "vectors[0].size must be an integer or null, not true or false"),
    ('{"vectors": [{"name": "", "size": 2, "distance": ["Dot"]}]}',
     "vectors[0].distance must be text or null, not a list"),
    ('{"vectors": [{"name": "", "size": 2}], "count": -1}', "'count' must not be negative (-1)"),
])
def test_jsonl_sidecar_field_of_the_wrong_type_is_named(tmp_path, sidecar, problem):
    src, side = _jsonl_with_sidecar(tmp_path, sidecar)
    with pytest.raises(InputError) as info:
        vecferry.convert(str(src), str(tmp_path / "o.parquet"))
    assert str(info.value) == (f"{side}: manifest sidecar is not valid: {problem} "
                               "(fix or delete it; without it the schema is inferred)")
    assert not (tmp_path / "o.parquet").exists()


def test_manifest_from_dict_refuses_what_manifest_problem_names():
    with pytest.raises(SchemaError) as info:
        Manifest.from_dict({"vectors": [], "id_kind": 3})
    assert info.value.message == "'id_kind' must be text, not an integer"
    # what vecferry writes passes the same check, so every file it wrote stays readable
    written = Manifest.from_dict({"vectors": [{"name": "t", "size": 3, "distance": "Dot",
                                               "extra": {"on_disk": True}}], "count": 2})
    assert manifest_problem(written.to_dict()) is None
    assert Manifest.from_json(written.to_json()) == written


def test_numpy_directory_manifest_of_the_wrong_type_is_named(tmp_path):
    out = tmp_path / "npdir"
    src, _ = _jsonl_with_sidecar(tmp_path, "{}")
    (tmp_path / "p.jsonl.manifest.json").unlink()
    vecferry.convert(str(src), str(out), to_format="npy")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["vectors"][0]["kind"] = ["dense"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError) as info:
        vecferry.convert(str(out), str(tmp_path / "o.jsonl"), from_format="npy")
    assert str(info.value) == (f"{out / 'manifest.json'}: manifest is not valid: "
                               "vectors[0].kind must be text, not a list")


def test_parquet_manifest_metadata_of_the_wrong_type_is_named(tmp_path):
    path = tmp_path / "p.parquet"
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(4, dtype=np.float32)), 2)
    meta = {MANIFEST_KEY: json.dumps({"vectors": [{"name": "", "size": 2}],
                                      "digest": "abc"}).encode()}
    table = pa.table({"id": pa.array([1, 2], pa.uint64()), "vector": vec,
                      "payload": pa.array(["{}", "{}"])}).replace_schema_metadata(meta)
    pq.write_table(table, path)
    with pytest.raises(SchemaError) as info:
        vecferry.convert(str(path), str(tmp_path / "o.jsonl"))
    assert str(info.value) == (f"{path}: 'digest' must be an object or null, not text (the "
                               "file's vecferry manifest metadata is damaged; export the file "
                               "again)")
