"""``inspect``: what a location holds, read from its metadata and a small sample of points."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import orjson

from vecferry.converters import open_reader, resolve
from vecferry.converters.base import Context, source_size
from vecferry.mapping import suggest_mapping
from vecferry.sizing import DEFAULT_RAM_BUDGET, SampleStats, estimate
from vecferry.stream import ID_COLUMN, PAYLOAD_COLUMN, decode_ids, manifest_of

FIRST_IDS = 5


def inspect_location(location: str, *, from_format: str | None = None, sample: int = 1000,
                     reader_options: dict[str, Any] | None = None,
                     ram_budget: int = DEFAULT_RAM_BUDGET) -> dict[str, Any]:
    """Format, count, vectors, id kind, payload keys (over ``sample`` points), size, first ids,
    and ``sizing`` (``vecferry.sizing.estimate`` from the sampled payload sizes and sparse /
    multivector lengths, judged against ``ram_budget`` bytes).

    Reads at most ``sample`` points; raises the reader's errors (missing file, bad header).
    ``warnings`` holds the reader's, as a conversion reports them (arrays of an archive not
    read, float64 narrowed to float32), and any about the file itself.
    """
    spec = resolve(location, from_format)
    # Inspection must not stop at a bad record in the sample: it reports the shape it sees.
    context = Context(on_error="skip")
    options = dict(reader_options or {})
    # A foreign Parquet / JSONL source given no mapping is described as the suggested mapping
    # reads it; ``suggested_mapping["flags"]`` are the options to pass to convert.
    suggested = None if options else suggest_mapping(location, spec.name)
    if suggested is not None:
        options.update(suggested["options"])
    reader = open_reader(location, format=spec.name, context=context, **options)
    if getattr(reader, "check_recorded_count", False):
        # a sample that happens to reach the end of a file holding other than its recorded
        # count is described, not refused: `verify` is the check
        reader.check_recorded_count = False
    try:
        manifest = manifest_of(reader.schema)
        keys: Counter[str] = Counter()
        stats = SampleStats(manifest)
        first_ids: list[Any] = []
        seen = 0
        for batch in reader.batches(min(sample, 4096)):
            take = batch.slice(0, sample - seen)
            stats.add(take)
            if len(first_ids) < FIRST_IDS:
                first_ids += decode_ids(take.column(ID_COLUMN).slice(0, FIRST_IDS
                                                                     - len(first_ids)),
                                        manifest.id_kind)
            for text in take.column(PAYLOAD_COLUMN).to_pylist():
                if text:
                    keys.update(orjson.loads(text).keys())
            seen += take.num_rows
            if seen >= sample:
                break
        count = reader.count()
        recorded = bool(getattr(reader, "count_recorded", False))
        companions = list(getattr(reader, "companion_files", ()))
    finally:
        reader.close()
    # the reader's warnings first (those a conversion reports), then those about the file
    warnings = list(context.warnings)
    if spec.name == "jsonl" and _cut_mid_line(location):
        warnings.append("the file does not end with a newline: its last line may be cut short "
                        f"(vecferry verify {location} reads it whole)")
    return {
        "location": location,
        "format": spec.name,
        "count": count,
        # recorded, not counted: a file cut short after it was written shows it unchanged
        "count_recorded": recorded,
        "warnings": warnings,
        "id_kind": manifest.id_kind,
        "vectors": [{"name": v.name, "kind": v.kind, "size": v.size, "datatype": v.datatype,
                     "distance": v.distance, **({"extra": v.extra} if v.extra else {})}
                    for v in manifest.vectors],
        "payload_keys": dict(keys.most_common()),
        "sampled": seen,
        "first_ids": first_ids,
        "size_bytes": source_size(location, companions) if "://" not in location else None,
        "source": manifest.source,
        "collection": manifest.collection,
        "extra": manifest.extra,
        "rejected_in_sample": context.rejected,
        "modified": os.path.getmtime(location) if os.path.exists(location) else None,
        "sizing": estimate(manifest, count, stats.payload_sizes,
                           vector_stats=stats.vector_stats(), payload_keys=keys,
                           ram_budget=ram_budget, location_format=spec.name),
        **({"suggested_mapping": suggested} if suggested is not None else {}),
    }


def _cut_mid_line(location: str) -> bool:
    """Whether a local, uncompressed JSONL file ends without a newline (every line vecferry
    writes ends with one; a file cut short rarely does). Compressed files and directories are
    not looked at: their ends say nothing without reading them whole."""
    if "://" in location or not location.endswith((".jsonl", ".ndjson")):
        return False
    try:
        with open(location, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False
