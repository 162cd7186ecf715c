"""Sizing: the RAM and disk a Qdrant collection of some data needs, in each layout.

Sources (Qdrant documentation):

* capacity planning, ``memory_size = number_of_vectors * vector_dimension * 4 bytes * 1.5``,
  the 1.5 covering point metadata and the temporary segments of optimization
  https://qdrant.tech/documentation/capacity-planning/ ;
* quantization (scalar int8: 1 byte per dimension; binary: 1 bit per dimension; originals kept
  beside the quantized copy, on disk with ``on_disk: true`` and the copy in RAM with
  ``always_ram: true``) https://qdrant.tech/documentation/manage-data/quantization/ ;
* storage (in-memory vs memmap vectors, ``on_disk_payload``, default true)
  https://qdrant.tech/documentation/manage-data/storage/ ;
* indexing (HNSW ``m``, default 16, ``m: 0`` disables the graph; ``indexing_threshold``,
  default 20,000 kB of vectors, below which a segment is searched by full scan; payload
  indexes) https://qdrant.tech/documentation/manage-data/indexing/ .

Every formula is here, in one place. ``N`` is the number of points, ``n`` the number holding a
vector (``N`` x the share of sampled points that hold it), ``d`` its dimension, ``b`` bytes per
value of its datatype (float32 4, float16 2, uint8 1):

* dense: ``raw = n*d*b``; scalar int8 copy ``n*d``; binary copy ``n*ceil(d/8)``;
* multivector: the same with ``S = round(n * mean sub-vectors per point)`` in place of ``n``
  (the HNSW graph has one node per point, ``n``);
* HNSW graph: 4-byte links, ``2m`` on level 0 and, with Qdrant's level distribution
  (``P(level >= l) = m**-l``), ``m/(m-1)`` expected on the levels above:
  ``hnsw = ceil(n * 4 * (2m + m/(m-1)))``; ``m = 0`` means no graph (0 bytes);
* sparse: ``T = round(n * mean non-zeros)``; storage ``8T`` (u32 index + f32 value) and an
  inverted index of ``8T`` (u32 point offset + f32 weight); no quantization, no HNSW;
* payload: the bytes of each point's payload JSON text (0 without a payload); ``mean``, ``p99``
  (nearest rank over the sample) and ``max`` per point; ``total = round(mean * N)``.

Layouts: ``ram`` (vectors in RAM, ``on_disk: false``) and ``disk`` (``on_disk: true``, memmap),
each with quantization ``none``, ``scalar`` or ``binary``. What stays resident:

* ``ram``: originals + quantized copy (if any) + HNSW graph;
* ``disk``: quantized copy (if any, ``always_ram: true``) + HNSW graph; originals in the page
  cache only;
* sparse vectors: storage + inverted index in ``ram``; nothing in ``disk``;
* payload: resident only with ``on_disk_payload: false``.

``ram = ceil(1.5 * resident)`` (the capacity-planning factor, applied to every resident
structure); ``disk = raw + quantized copy + graph (+ inverted index) + payload``: Qdrant persists
everything, whatever is kept in RAM. WAL and snapshots are not counted. These are planning
figures, within tens of percent of what a server reports, not measurements.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vecferry.converters.qdrant import SHARD_KEY_FIELD
from vecferry.errors import UsageError
from vecferry.stream import PAYLOAD_COLUMN, Manifest

#: Capacity-planning factor of Qdrant's documentation (metadata + optimization segments).
OVERHEAD = 1.5
#: HNSW ``m`` when neither the vector nor the collection sets one (Qdrant's default).
DEFAULT_M = 16
#: Qdrant's default ``optimizer_config.indexing_threshold`` in kB (1 kB = 1024 bytes).
DEFAULT_INDEXING_THRESHOLD_KB = 20_000
#: RAM the collection may use before the recommendation moves vectors to disk and quantizes:
#: 1 GiB, a modest share of a small node. Pass ``ram_budget`` (``--ram-budget``) for yours.
DEFAULT_RAM_BUDGET = 1 << 30
#: Bytes per stored value by datatype.
VALUE_BYTES = {"float32": 4, "float16": 2, "uint8": 1}
#: Bytes per sparse non-zero: u32 index + f32 value (storage) and the same in the index.
SPARSE_ENTRY_BYTES = 8
LINK_BYTES = 4
LAYOUTS = ("ram", "disk")
_QDRANT_FORMATS = ("qdrant", "qdrant-edge")
QUANTIZATIONS = ("none", "scalar", "binary")


# ------------------------------------------------------------------------------ sampling


class SampleStats:
    """Per-point figures gathered over the sampled batches: payload JSON bytes, and for each
    vector how many points hold it and their non-zeros (sparse) or sub-vectors (multi)."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.payload_sizes: list[int] = []
        self.sampled = 0
        self._present = {v.name: 0 for v in manifest.vectors}
        self._lengths = {v.name: 0 for v in manifest.vectors}

    def add(self, batch: pa.RecordBatch) -> None:
        payloads = batch.column(PAYLOAD_COLUMN)
        lengths = pc.binary_length(payloads).fill_null(0)
        self.payload_sizes += lengths.to_pylist()
        self.sampled += batch.num_rows
        for spec in self.manifest.vectors:
            column = batch.column(spec.column)
            present = batch.num_rows - column.null_count
            self._present[spec.name] += present
            if spec.kind == "sparse":
                indices = pc.struct_field(column, "indices")
                self._lengths[spec.name] += int(pc.sum(pc.list_value_length(indices)).as_py()
                                                or 0)
            elif spec.kind == "multi":
                self._lengths[spec.name] += int(pc.sum(pc.list_value_length(column)).as_py()
                                                or 0)

    def vector_stats(self) -> dict[str, dict[str, Any]]:
        """{name: {"sampled", "present", "mean"}}; ``mean`` is non-zeros (sparse) or
        sub-vectors (multi) per point holding the vector, ``None`` for dense."""
        out = {}
        for spec in self.manifest.vectors:
            present = self._present[spec.name]
            mean = None
            if spec.kind != "dense":
                mean = self._lengths[spec.name] / present if present else 0.0
            out[spec.name] = {"sampled": self.sampled, "present": present, "mean": mean}
        return out


# ------------------------------------------------------------------------------ helpers


def hnsw_bytes(nodes: int, m: int) -> int:
    """Bytes of an HNSW graph over ``nodes`` points with ``m`` (0: no graph).

    ``ceil(nodes * 4 * (2m + m/(m-1)))``, computed exactly in integers; ``m = 1`` has no upper
    levels worth counting (``2`` links per node).
    """
    if m <= 0 or nodes <= 0:
        return 0
    if m == 1:
        return nodes * LINK_BYTES * 2
    numerator = nodes * LINK_BYTES * (2 * m * (m - 1) + m)
    return -(-numerator // (m - 1))


def ram_of(resident: int) -> int:
    """RAM to plan for ``resident`` bytes: ``ceil(1.5 * resident)``."""
    return -(-resident * 3 // 2)


def percentile_nearest_rank(values: Sequence[int], q: float) -> int:
    """The ``q`` quantile (0 < q <= 1) by nearest rank: ``sorted(values)[ceil(q*len) - 1]``."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def human(n: int | float | None) -> str:
    """Bytes in binary units, e.g. ``2.9 GiB``."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B?)\s*\Z", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"512M"``, ``"1.5G"``, ``"1000000"`` -> bytes (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"not a size: {text!r}", hint="e.g. 8GiB, 512MiB, 1073741824")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def _effective_m(extra: Mapping[str, Any], collection: Mapping[str, Any]) -> int:
    for source in (extra.get("hnsw_config"), collection.get("hnsw_config")):
        if isinstance(source, Mapping) and source.get("m") is not None:
            return int(source["m"])
    return DEFAULT_M


def _quantization_kind(config: Any) -> str | None:
    if not isinstance(config, Mapping) or not config:
        return None
    for kind in ("scalar", "binary", "product"):
        if kind in config:
            return kind
    return next(iter(config))


def _layouts(resident: dict[str, dict[str, int]], disk: dict[str, int]
             ) -> dict[str, dict[str, dict[str, int]]]:
    return {layout: {q: {"resident": resident[layout][q], "ram": ram_of(resident[layout][q]),
                         "disk": disk[q]} for q in QUANTIZATIONS} for layout in LAYOUTS}


# ----------------------------------------------------------------------------- estimate


def estimate(manifest: Manifest, count: int | None, payload_sizes: Sequence[int], *,
             vector_stats: Mapping[str, Mapping[str, Any]] | None = None,
             payload_keys: Iterable[str] = (), ram_budget: int = DEFAULT_RAM_BUDGET,
             location_format: str | None = None) -> dict[str, Any]:
    """RAM and disk of a Qdrant collection holding ``count`` points shaped like ``manifest``.

    ``payload_sizes``: payload JSON bytes of each sampled point. ``vector_stats``: as
    ``SampleStats.vector_stats()``; without it every point holds every dense vector and
    sparse / multi vectors count as empty (said in ``notes``). ``payload_keys``: the payload
    fields seen in the sample, checked against the collection's payload indexes.
    ``count=None`` (not known cheaply) sizes the sampled points, said in ``notes``.
    ``ram_budget`` (bytes) decides the recommendation and the on-disk warning.
    ``location_format``: the format of the location the manifest was read from; the
    collection config is its current one only for a Qdrant location (see ``_live``). Pure:
    reads nothing, raises ``UsageError`` only for a non-positive budget.
    """
    if ram_budget <= 0:
        raise UsageError("the RAM budget must be a positive number of bytes")
    collection: Mapping[str, Any] = manifest.collection or {}
    stats = vector_stats or {}
    notes: list[str] = []
    sampled = len(payload_sizes)
    if count is None:
        count = sampled
        notes.append(f"the point count is not known cheaply: sized for the {sampled} sampled "
                     "points (a lower bound)")
    n_points = count

    vectors = []
    for spec in manifest.vectors:
        st = stats.get(spec.name) or {}
        if st.get("sampled"):
            nodes = round(n_points * st.get("present", 0) / st["sampled"])
        else:
            nodes = n_points
        extra = spec.extra or {}
        row: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "dim": spec.size,
                               "datatype": spec.datatype, "points": nodes}
        if spec.kind != "dense":
            mean = st.get("mean")
            if mean is None:
                mean = 0.0
                if nodes:
                    notes.append(f"vector {spec.name or '(unnamed)'!r}: no sample of its "
                                 f"{'non-zeros' if spec.kind == 'sparse' else 'sub-vectors'}; "
                                 "sized as empty")
            row["mean_per_point"] = round(float(mean), 3)
        if spec.kind == "sparse":
            entries = round(nodes * float(row["mean_per_point"]))
            raw = entries * SPARSE_ENTRY_BYTES
            index = entries * SPARSE_ENTRY_BYTES
            row.update(values=entries, raw_bytes=raw, index_bytes=index, hnsw_bytes=0, m=None,
                       quantized_bytes={"none": 0, "scalar": 0, "binary": 0})
            row["layouts"] = _layouts(
                {"ram": dict.fromkeys(QUANTIZATIONS, raw + index),
                 "disk": dict.fromkeys(QUANTIZATIONS, 0)},
                dict.fromkeys(QUANTIZATIONS, raw + index))
            on_disk = (extra.get("index") or {}).get("on_disk")
            row["configured"] = {"layout": "disk" if on_disk else "ram", "quantization": "none"}
            vectors.append(row)
            continue
        dim = int(spec.size or 0)
        stored = nodes if spec.kind == "dense" else round(nodes * float(row["mean_per_point"]))
        raw = stored * dim * VALUE_BYTES[spec.datatype]
        quantized = {"none": 0, "scalar": stored * dim, "binary": stored * -(-dim // 8)}
        m = _effective_m(extra, collection)
        graph = hnsw_bytes(nodes, m)
        row.update(values=stored, raw_bytes=raw, hnsw_bytes=graph, m=m,
                   quantized_bytes=quantized)
        row["layouts"] = _layouts(
            {"ram": {q: raw + quantized[q] + graph for q in QUANTIZATIONS},
             "disk": {q: quantized[q] + graph for q in QUANTIZATIONS}},
            {q: raw + quantized[q] + graph for q in QUANTIZATIONS})
        qkind = _quantization_kind(extra.get("quantization_config")
                                   or collection.get("quantization_config"))
        row["configured"] = {"layout": "disk" if extra.get("on_disk") else "ram",
                             "quantization": qkind or "none"}
        vectors.append(row)

    payload_total = round(sum(payload_sizes) / sampled * n_points) if sampled else 0
    on_disk_payload = collection.get("on_disk_payload")
    payload_on_disk = True if on_disk_payload is None else bool(on_disk_payload)
    payload = {
        "sampled": sampled,
        "mean": round(sum(payload_sizes) / sampled, 1) if sampled else 0.0,
        "p99": percentile_nearest_rank(payload_sizes, 0.99),
        "max": max(payload_sizes, default=0),
        "total": payload_total,
        "on_disk": payload_on_disk,
        "resident": 0 if payload_on_disk else payload_total,
    }

    totals_layouts = {}
    for layout in LAYOUTS:
        totals_layouts[layout] = {}
        for q in QUANTIZATIONS:
            resident = sum(v["layouts"][layout][q]["resident"] for v in vectors)
            resident += payload["resident"]
            disk = sum(v["layouts"][layout][q]["disk"] for v in vectors) + payload_total
            totals_layouts[layout][q] = {"resident": resident, "ram": ram_of(resident),
                                         "disk": disk}
    totals: dict[str, Any] = {
        "raw_bytes": sum(v["raw_bytes"] for v in vectors),
        "hnsw_bytes": sum(v["hnsw_bytes"] for v in vectors),
        "payload_bytes": payload_total,
        "layouts": totals_layouts,
    }
    if collection:
        totals["configured"] = _configured_totals(vectors, payload)

    threshold_kb = ((collection.get("optimizer_config") or {}).get("indexing_threshold")
                    or DEFAULT_INDEXING_THRESHOLD_KB)
    result: dict[str, Any] = {
        "count": n_points,
        "assumptions": {"overhead": OVERHEAD, "default_m": DEFAULT_M,
                        "ram_budget": ram_budget, "indexing_threshold_kb": threshold_kb,
                        "payload_on_disk": payload_on_disk},
        "vectors": vectors,
        "payload": payload,
        "totals": totals,
    }
    live = _live(manifest, location_format)
    result["recommendation"] = _recommend(result, manifest, live)
    # The config of a Qdrant location is its current one; a file carries the one it recorded.
    result["config"] = None if not collection else "current" if live else "recorded"
    result["warnings"] = (_warnings(result, manifest, set(payload_keys)) if collection else [])
    result["notes"] = notes
    return result


def _configured_totals(vectors: list[dict[str, Any]], payload: dict[str, Any]
                       ) -> dict[str, Any] | None:
    """RAM and disk at the layout and quantization the collection is configured with (None
    when a vector uses a quantization these formulas do not cover, e.g. product)."""
    resident = disk = 0
    for v in vectors:
        cfg = v["configured"]
        if cfg["quantization"] not in QUANTIZATIONS:
            return None
        cell = v["layouts"][cfg["layout"]][cfg["quantization"]]
        resident += cell["resident"]
        disk += cell["disk"]
    resident += payload["resident"]
    return {"resident": resident, "ram": ram_of(resident), "disk": disk + payload["total"]}


def _below_indexing_threshold(result: dict[str, Any]) -> bool:
    """Whether every dense / multi vector's originals are under ``indexing_threshold``: Qdrant
    then searches by full scan and builds no HNSW graph (the threshold is per segment, so a
    collection above it may still have unindexed segments)."""
    limit = result["assumptions"]["indexing_threshold_kb"] * 1024
    dense = [v for v in result["vectors"] if v["kind"] != "sparse"]
    return bool(dense) and all(v["raw_bytes"] < limit for v in dense)


def _live(manifest: Manifest, location_format: str | None) -> bool:
    """Whether ``manifest`` is a Qdrant location's own, not one a file recorded.

    The format of the location read decides when known. Otherwise the manifest does: one
    recording a digest is a file's (only file writers record one; a collection's reader never
    does), else its source's format. A file exported from a collection keeps that collection
    as its source, so the source alone would call the file's recorded config current.
    """
    if location_format is not None:
        return location_format in _QDRANT_FORMATS
    if manifest.digest is not None:
        return False
    return (manifest.source or {}).get("format") in _QDRANT_FORMATS


def _recommend(result: dict[str, Any], manifest: Manifest, live: bool = True) -> list[str]:
    """Lines of advice. Thresholds: everything in RAM while ``layouts.ram.none.ram`` fits the
    budget; else originals on disk with scalar int8 in RAM while ``layouts.disk.scalar.ram``
    fits; else binary while ``layouts.disk.binary.ram`` fits; else more RAM or nodes."""
    n = result["count"]
    if not n:
        return ["The collection is empty: nothing to size."]
    budget = result["assumptions"]["ram_budget"]
    lay = result["totals"]["layouts"]
    full, scalar, binary = lay["ram"]["none"], lay["disk"]["scalar"], lay["disk"]["binary"]
    has_dense = any(v["kind"] != "sparse" for v in result["vectors"])
    lines = []
    if full["ram"] <= budget:
        lines.append(f"Keep vectors and the HNSW graph in RAM (on_disk: false, no "
                     f"quantization): ~{human(full['ram'])} RAM of the {human(budget)} budget, "
                     f"~{human(full['disk'])} disk.")
        if has_dense:
            per_point = full["ram"] / n
            lines.append(f"Quantization starts to pay above ~{int(budget // per_point):,} "
                         f"points of this shape, where keeping everything in RAM passes the "
                         f"{human(budget)} budget.")
    elif has_dense and scalar["ram"] <= budget:
        lines.append(f"Quantization pays: originals on disk (on_disk: true) with scalar int8 "
                     f"kept in RAM (always_ram: true): ~{human(scalar['ram'])} RAM instead of "
                     f"~{human(full['ram'])}, ~{human(scalar['disk'])} disk.")
    elif has_dense and binary["ram"] <= budget:
        lines.append(f"Quantization pays: originals on disk (on_disk: true) with binary "
                     f"quantization in RAM (always_ram: true): ~{human(binary['ram'])} RAM "
                     f"(scalar int8 would need ~{human(scalar['ram'])}); binary suits "
                     f"high-dimensional embeddings, check recall with rescoring and "
                     f"oversampling.")
    else:
        least = binary if has_dense else lay["disk"]["none"]
        nodes = max(2, math.ceil(least["ram"] / budget))
        lines.append(f"Even with originals on disk and binary quantization this needs "
                     f"~{human(least['ram'])} RAM, more than the {human(budget)} budget: add "
                     f"RAM or shard it over about {nodes} nodes.")
    if has_dense and _below_indexing_threshold(result):
        kb = result["assumptions"]["indexing_threshold_kb"]
        lines.append(f"Below Qdrant's indexing threshold ({kb:,} kB of vectors per segment) "
                     f"searches are exact full scans and no HNSW graph is built yet; the graph "
                     f"figures apply once the collection grows past it.")
    p = result["payload"]
    if p["total"]:
        where = ("on disk (on_disk_payload: true)" if p["on_disk"]
                 else "in RAM (on_disk_payload: false)")
        lines.append(f"Payload: ~{human(p['total'])} in all (per point mean {p['mean']:g}, "
                     f"p99 {p['p99']:,}, max {p['max']:,} bytes), kept {where}; index the "
                     f"fields you filter on (indexed values stay in RAM).")
    if live and (manifest.source or {}).get("engine") == "local":
        lines.append("This is a qdrant-client local-mode folder, which builds no HNSW graph "
                     "and keeps no payload indexes: the figures are for a Qdrant server "
                     "holding this data.")
    return lines


def _indexed(key: str, schema: Mapping[str, Any]) -> bool:
    """A sampled top-level field counts as indexed when it or a path under it is."""
    return any(f == key or f.startswith((key + ".", key + "[")) for f in schema)


def _warnings(result: dict[str, Any], manifest: Manifest, keys: set[str]) -> list[str]:
    """Problems in a collection's config for this data (current config of a Qdrant location,
    or the config a file recorded): vectors on disk although everything fits the RAM budget,
    quantization where it saves nothing needed, no HNSW graph above the indexing threshold,
    sampled payload fields without a payload index."""
    collection = manifest.collection or {}
    budget = result["assumptions"]["ram_budget"]
    full = result["totals"]["layouts"]["ram"]["none"]
    fits = full["ram"] <= budget
    tiny = _below_indexing_threshold(result)
    out = []
    for v in result["vectors"]:
        if v["kind"] == "sparse" or not v["points"]:
            continue
        label = repr(v["name"]) if v["name"] else "(unnamed)"
        cfg = v["configured"]
        if cfg["layout"] == "disk" and fits:
            out.append(f"vector {label} is on disk (on_disk: true) although the whole "
                       f"collection fits in RAM (~{human(full['ram'])} of the {human(budget)} "
                       f"budget): on_disk: false searches faster")
        if cfg["quantization"] != "none" and fits:
            out.append(f"vector {label} has {cfg['quantization']} quantization although the "
                       f"collection fits in RAM unquantized (~{human(full['ram'])} of the "
                       f"{human(budget)} budget"
                       + (" and under Qdrant's indexing threshold" if tiny else "")
                       + "): it costs recall and saves no memory that is needed")
        if v["m"] == 0 and not tiny:
            out.append(f"vector {label} has no HNSW graph (m: 0) above the indexing threshold: "
                       f"every search scans all {v['points']:,} vectors; if a bulk load left "
                       f"it, set m back ({DEFAULT_M} is Qdrant's default)")
    schema = collection.get("payload_schema") or {}
    if collection.get("sharding_method") == "custom":
        # each point's shard key, named by the reader: not a field the collection stores
        keys = keys - {SHARD_KEY_FIELD}
    missing = sorted(k for k in keys if not _indexed(k, schema))
    if missing:
        local = (" (local mode keeps no payload indexes: create them on the server)"
                 if collection.get("engine") == "local" else "")
        out.append(f"payload fields without an index: {', '.join(missing)}; filters on them "
                   f"read every payload{local}")
    return out


# --------------------------------------------------------------------------------- text


def text_lines(sz: dict[str, Any]) -> list[str]:
    """The ``estimate`` result as the lines ``vecferry inspect`` prints."""
    out: list[str] = []
    a = sz["assumptions"]
    out.append(f"sizing in Qdrant ({sz['count']:,} points; RAM = {a['overhead']:g} x resident "
               f"bytes; budget {human(a['ram_budget'])}):")
    for v in sz["vectors"]:
        name = v["name"] or "(unnamed)"
        if v["kind"] == "sparse":
            out.append(f"  {name}: sparse, {v['points']:,} vectors x {v['mean_per_point']:g} "
                       f"non-zeros: {human(v['raw_bytes'])} + index {human(v['index_bytes'])}")
            continue
        shape = (f"{v['points']:,} x {v['mean_per_point']:g} sub-vectors"
                 if v["kind"] == "multi" else f"{v['points']:,}")
        graph = f"HNSW m={v['m']} {human(v['hnsw_bytes'])}" if v["m"] else "no HNSW (m=0)"
        q = v["quantized_bytes"]
        out.append(f"  {name}: {shape} x {v['dim']} {v['datatype']}: raw "
                   f"{human(v['raw_bytes'])}, scalar {human(q['scalar'])}, binary "
                   f"{human(q['binary'])}, {graph}")
    p = sz["payload"]
    out.append(f"  payload per point: mean {p['mean']:g} B, p99 {p['p99']:,} B, max "
               f"{p['max']:,} B; total {human(p['total'])} "
               f"({'on disk' if p['on_disk'] else 'in RAM'})")
    lay = sz["totals"]["layouts"]
    out.append(f"  {'layout':38} {'RAM':>11} {'disk':>11}")
    quant = {"none": "", "scalar": " + scalar int8", "binary": " + binary"}
    rows = [(f"vectors {where}{quant[q]}", lay[layout][q])
            for layout, where in (("ram", "in RAM"), ("disk", "on disk (mmap)"))
            for q in ("none", "scalar", "binary")]
    if sz["totals"].get("configured"):
        rows.append((f"as configured ({sz['config']})", sz["totals"]["configured"]))
    for label, cell in rows:
        out.append(f"  {label:38} {human(cell['ram']):>11} {human(cell['disk']):>11}")
    for title, key in (("recommendation", "recommendation"),
                       (f"warnings ({sz.get('config')} collection config)", "warnings"),
                       ("notes", "notes")):
        if sz.get(key):
            out.append(f"{title}:")
            out.extend(f"  - {line}" for line in sz[key])
    return out
